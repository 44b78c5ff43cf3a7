"""A ``kiln.compile``'d function that writes, in place, a tensor it was not given (a closure's rollout buffer, a
running sum, SAC's ``alpha.copy_(log_alpha.exp())``) writes it at every call, as ``torch.compile`` writes a mutated
input back; reads after the write inside the function see the new values. It used to leave the tensor holding a
traced value: the next call failed ('expected tensor<1xf64>, got NoneType'), or the tensor was unusable."""

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()


def _buffers(lib):
    return lib.zeros(4, 3, dtype=lib.float64), lib.zeros(3, dtype=lib.float64), lib.tensor([0.5], dtype=lib.float64)


def _writer(lib, observations, total, alpha):
    def record(step, x):
        observations[step] = x * 2          # CleanRL's obs[step] = next_obs
        total.add_(x)                       # a running sum
        alpha.copy_(total[:1].exp() / 10)   # SAC's refresh
        return (observations.sum(0) * alpha).sum() + total.max()
    return record


@pytest.mark.parametrize("form", ["index", "number"])
def test_closure_tensors_written_in_place_are_written_at_each_call_as_torch(form):
    results = {}
    for lib in (torch, kiln):
        observations, total, alpha = _buffers(lib)
        record = _writer(lib, observations, total, alpha)
        compiled = kiln.compile(record, fullgraph=True) if lib is kiln else record
        outputs = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for step in range(4):
                x = lib.tensor(np.arange(3.0) + step, dtype=lib.float64)
                outputs.append(compiled(lib.tensor(step) if form == "index" else step, x).item())
        results[lib] = outputs, observations.numpy().copy(), total.numpy().copy(), alpha.numpy().copy()
    for got, expected in zip(results[kiln], results[torch]):
        np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_a_training_step_that_refreshes_a_closure_tensor_trains_as_torch():
    """LeanRL's SAC form: the temperature's value refreshed inside the compiled update, read by the next call."""
    results = {}
    for lib in (torch, kiln):
        lib.manual_seed(0)
        model = lib.nn.Linear(2, 1).double()
        with lib.no_grad():
            model.weight.copy_(lib.tensor([[0.3, -0.2]], dtype=lib.float64))
            model.bias.fill_(0.1)
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1)
        scale = lib.tensor([1.0], dtype=lib.float64)

        def update(x):
            optimizer.zero_grad()
            loss = (model(x) * scale).square().mean()
            loss.backward()
            optimizer.step()
            scale.copy_(scale * 0.5 + loss.detach())
            return loss

        step = kiln.compile(update, fullgraph=True) if lib is kiln else update
        losses = [step(lib.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=lib.float64) * (k + 1)).item() for k in range(3)]
        results[lib] = losses, scale.numpy().copy(), model.weight.detach().numpy().copy()
    for got, expected in zip(results[kiln], results[torch]):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_failed_trace_leaves_the_closure_tensor_as_it_was():
    total, weight = kiln.zeros(3), kiln.nn.Parameter(kiln.ones(3))

    def branchy(x):
        total.add_(x)
        return x * 2 if (total * weight).numpy().sum() > 1 else x  # NumPy reads a trained parameter: not traceable

    with pytest.raises(RuntimeError, match="numpy"):
        kiln.compile(branchy, fullgraph=True)(kiln.ones(3))
    assert total.tolist() == [0.0, 0.0, 0.0]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert kiln.compile(branchy)(kiln.ones(3)).tolist() == [2.0, 2.0, 2.0]  # ran eagerly, once
    assert total.tolist() == [1.0, 1.0, 1.0]


def test_graphs_that_cannot_write_it_back_refuse_and_leave_it_alone():
    total = kiln.zeros(3)

    def accumulate(x):
        total.add_(x)
        return x * 2

    with pytest.raises(RuntimeError, match="read from outside"):
        kiln.trace(accumulate, kiln.TensorSpec((3,)))
    assert total.tolist() == [0.0, 0.0, 0.0]
    weights = kiln.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad"):
        kiln.compile(lambda x: weights.mul_(2) * x, fullgraph=True)(kiln.ones(3))
    assert weights.requires_grad and weights.tolist() == [0.0, 0.0, 0.0]
