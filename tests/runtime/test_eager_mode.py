"""Eager mode: PyTorch's training loop (zero_grad, backward, step) outside a trace, against torch and kiln's compiled step."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.frontend.eager_values import ARRAYS
from kiln.runtime import eager_backward
from e2e.models import MLP, copy_into_torch, digit_batches, torch_mlp
from oracles import require_torch


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.norm(self.conv(x.reshape(-1, 1, 8, 8)))), 2)
        return self.fc(h.flatten(1))


def _torch_twin(torch, model):
    twin = torch_mlp(torch).double()
    copy_into_torch(torch, model, twin)
    return twin


def test_eager_forward_equals_the_compiled_function():
    kiln.manual_seed(0)
    for model in (MLP(), SmallCNN().eval()):
        x = digit_batches(1, 16)[0][0]
        eager = model(x)
        assert isinstance(eager, kiln.frontend.tensor.Tensor) and eager.shape == (16, 10)
        np.testing.assert_allclose(eager.numpy(), kiln.compile(model)(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make_optimizer", [
    lambda kiln_or_torch, params: kiln_or_torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda kiln_or_torch, params: kiln_or_torch.optim.Adam(params, lr=0.01),
    lambda kiln_or_torch, params: kiln_or_torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
    lambda kiln_or_torch, params: kiln_or_torch.optim.RMSprop(params, lr=0.01, momentum=0.5),
], ids=["sgd-nesterov", "adam", "adamw", "rmsprop"])
def test_pytorch_training_loop_matches_torch_in_float64(make_optimizer):
    torch = require_torch()
    kiln.manual_seed(1)
    model = MLP().double()
    twin = _torch_twin(torch, model)
    optimizer, torch_optimizer = make_optimizer(kiln, model.parameters()), make_optimizer(torch, twin.parameters())
    schedule = kiln.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    torch_schedule = torch.optim.lr_scheduler.StepLR(torch_optimizer, step_size=2, gamma=0.5)
    for x, y in digit_batches(5, 16):
        x = x.astype(np.float64)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        kiln.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y))
        torch_loss.backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0)
        torch_optimizer.step()
        torch_schedule.step()
        assert loss.item() == pytest.approx(torch_loss.item(), rel=1e-12)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_eager_loop_equals_the_compiled_training_step():
    kiln.manual_seed(2)
    eager_model, compiled_model = MLP(), MLP()
    compiled_model.load_state_dict(eager_model.state_dict())
    eager_opt = kiln.optim.Adam(eager_model.parameters(), lr=1e-3)
    step = kiln.compile_train_step(compiled_model, F.cross_entropy, kiln.optim.Adam(compiled_model.parameters(), lr=1e-3))
    for x, y in digit_batches(4, 32):
        eager_opt.zero_grad()
        loss = F.cross_entropy(eager_model(x), y)
        loss.backward()
        eager_opt.step()
        assert loss.item() == pytest.approx(step(x, y), rel=1e-5)
    for p, q in zip(eager_model.parameters(), compiled_model.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-5, atol=1e-6)


def test_gradients_accumulate_until_zero_grad():
    kiln.manual_seed(3)
    model = MLP()
    x, y = digit_batches(1, 8)[0]
    F.cross_entropy(model(x), y).backward()
    once = model.fc1.weight.grad.copy()
    F.cross_entropy(model(x), y).backward()
    # the first backward ran op by op, the second compiled (fused): float32 rounding differs at ~1e-6 relative
    np.testing.assert_allclose(model.fc1.weight.grad, 2 * once, rtol=2e-5, atol=1e-9)
    model.zero_grad(set_to_none=False)
    assert model.fc1.weight.grad is not None and not model.fc1.weight.grad.any()
    model.zero_grad()
    assert model.fc1.weight.grad is None


def test_backward_with_a_gradient_and_restricted_inputs_matches_torch():
    torch = require_torch()
    kiln.manual_seed(4)
    model = MLP().double()
    twin = _torch_twin(torch, model)
    x = digit_batches(1, 4)[0][0].astype(np.float64)
    weights = np.random.default_rng(0).normal(size=(4, 10))
    model(x).backward(gradient=weights, inputs=[model.fc2.weight])
    twin(torch.tensor(x)).backward(gradient=torch.tensor(weights), inputs=[twin.fc2.weight])
    np.testing.assert_allclose(model.fc2.weight.grad, twin.fc2.weight.grad.numpy(), rtol=1e-12)
    assert model.fc1.weight.grad is None and model.fc3.bias.grad is None


def test_batch_norm_buffers_and_values_follow_torch_in_training_mode():
    torch = require_torch()
    kiln.manual_seed(5)
    norm = nn.BatchNorm1d(6).double()
    torch_norm = torch.nn.BatchNorm1d(6).double()
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(10, 6))
    for _ in range(2):
        out = norm(x)
        torch_out = torch_norm(torch.tensor(x))
    np.testing.assert_allclose(out.numpy(), torch_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.running_mean.data, torch_norm.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(norm.running_var.data, torch_norm.running_var.numpy(), rtol=1e-12)


def test_values_drive_python_control_flow():
    x = kiln.nn.Parameter(np.array([1.0, -2.0, 3.0], np.float32))
    y = x * 2
    assert bool((y > 0).any()) and not (y > 0).all()
    assert (y == np.array([2.0, -4.0, 6.0], np.float32)).all()
    assert y.tolist() == [2.0, -4.0, 6.0] and float(y.sum()) == 4.0 and int(y[2]) == 6
    assert "tensor([ 2., -4.,  6.], grad_fn=<MulBackward0>)" == repr(y)  # as torch prints it
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(y)


def test_no_grad_results_keep_no_chain():
    kiln.manual_seed(6)
    model = MLP()
    x, y = digit_batches(1, 8)[0]
    with kiln.no_grad():
        loss = F.cross_entropy(model(x), y)
    assert loss.value.producer is None  # a leaf: nothing held for a backward
    with pytest.raises(kiln.TraceError, match="does not depend on any parameter"):
        loss.backward()


def test_dropout_draws_anew_and_repeats_with_manual_seed():
    drop = nn.Dropout(0.5)
    x = np.ones((4, 50), np.float32)
    kiln.manual_seed(7)
    first, second = drop(x).numpy(), drop(x).numpy()
    kiln.manual_seed(7)
    assert not np.array_equal(first, second) and np.array_equal(drop(x).numpy(), first)
    assert set(np.unique(first)) == {0.0, 2.0}
    drop.eval()
    assert np.array_equal(np.asarray(drop(x)), x)


def test_a_training_loop_compiles_its_backward_and_update_once():
    kiln.manual_seed(8)
    model = MLP()
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)
    eager_backward._COMPILED.clear()
    for x, y in digit_batches(3, 16):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert len(eager_backward._COMPILED) == 1


def test_an_iteration_frees_its_chain_without_the_cycle_collector():
    kiln.manual_seed(9)
    model = MLP()
    x, y = digit_batches(1, 8)[0]
    gc.collect()
    gc.disable()
    try:
        before = len(ARRAYS)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert len(ARRAYS) > before + 5
        del loss
        assert len(ARRAYS) == before  # reference counting alone freed every array of the chain
    finally:
        gc.enable()


def test_an_eager_tensor_used_in_a_trace_is_a_constant():
    scale = kiln.nn.Parameter(np.array([2.0], np.float32)) * 3  # an eager tensor
    np.testing.assert_allclose(kiln.compile(lambda x: x * scale)(np.ones((2, 1), np.float32)), [[6.0], [6.0]])


def test_backward_of_a_one_element_tensor_seeds_it_with_one_as_torch():
    from oracles import require_torch

    torch = require_torch()
    for shape in ((1,), (1, 1)):
        w, tw = kiln.nn.Parameter(np.full(shape, 1.5)), torch.full(shape, 1.5, dtype=torch.float64, requires_grad=True)
        (w * w * 3).backward()
        (tw * tw * 3).backward()
        np.testing.assert_array_equal(w.grad, tw.grad.numpy())
        x, tx = kiln.tensor(np.full(shape, 2.0)).requires_grad_(), torch.full(shape, 2.0, dtype=torch.float64, requires_grad=True)
        np.testing.assert_array_equal(kiln.autograd.grad(x.exp(), x)[0].numpy(), torch.autograd.grad(tx.exp(), tx)[0].numpy())


def test_errors_say_what_to_do():
    kiln.manual_seed(10)
    model = MLP()
    x = digit_batches(1, 4)[0][0]
    with pytest.raises(kiln.TraceError, match=r"(?s)test_eager_mode.py.*implicitly created only for scalar outputs"):
        model(x).backward()
    with pytest.raises(kiln.TraceError, match=r"the gradient \(gradient=\) has shape \(3, 10\), the tensor \(4, 10\)"):
        model(x).backward(gradient=np.ones((3, 10)))
    with pytest.raises(ValueError, match="40 elements cannot be converted"):
        model(x).item()
    kept = [1.0, 2.0]  # a list argument the trace empties and refills: no replay redoes that, refused, the list kept
    with pytest.raises(kiln.KilnError, match="stores into its argument 'kept'.*Return the new tensors instead"):
        kiln.compile(lambda t, kept: kept.clear() or kept.append(t * 2) or t * 2, fullgraph=True)(kiln.ones(3), kept)
    assert kept == [1.0, 2.0]


def test_lbfgs_takes_pytorchs_own_closure():
    torch = require_torch()
    kiln.manual_seed(11)
    model = MLP().double()
    twin = _torch_twin(torch, model)
    x, y = digit_batches(1, 64)[0]
    x = x.astype(np.float64)
    options = dict(history_size=3, max_iter=6, line_search_fn="strong_wolfe")
    optimizer = kiln.optim.LBFGS(model.parameters(), **options)
    torch_optimizer = torch.optim.LBFGS(twin.parameters(), **options)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def torch_closure():
        torch_optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        return loss

    for _ in range(3):
        assert optimizer.step(closure) == pytest.approx(torch_optimizer.step(torch_closure).item(), rel=1e-10)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-8, atol=1e-10)


def test_a_tensor_that_requires_grad_is_a_leaf_with_a_grad():
    torch = require_torch()
    x = kiln.tensor([[0.5, -1.0, 2.0]], dtype=kiln.float64, requires_grad=True)
    torch_x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    (x.tanh() * x).sum().backward()
    (torch_x.tanh() * torch_x).sum().backward()
    np.testing.assert_allclose(x.grad, torch_x.grad.numpy(), rtol=1e-13)
    with pytest.raises(kiln.TraceError, match="only floating-point tensors can require gradients"):
        kiln.tensor([1, 2], requires_grad=True)


@pytest.mark.filterwarnings("ignore:.*weight_norm.*deprecated:FutureWarning")  # torch's legacy form, the oracle of ours
@pytest.mark.parametrize("form", ["parametrizations", "legacy"])
def test_a_parametrized_weight_read_eagerly_passes_gradients_to_its_originals(form):
    torch = require_torch()
    kiln.manual_seed(12)
    if form == "legacy":
        layer, twin = nn.utils.weight_norm(nn.Linear(4, 3).double()), torch.nn.utils.weight_norm(torch.nn.Linear(4, 3).double())
    else:
        layer = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3).double())
        twin = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 3).double())
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in layer.state_dict().items()})
    x = np.random.default_rng(2).normal(size=(5, 4))
    (layer(x) ** 2).sum().backward()
    (twin(torch.tensor(x)) ** 2).sum().backward()
    theirs = dict(twin.named_parameters())
    for name, ours in layer.named_parameters():
        np.testing.assert_allclose(ours.grad, theirs[name].grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


def test_backward_after_a_step_that_rewrote_the_parameters_is_refused():
    kiln.manual_seed(13)
    model = MLP()
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)
    x, y = digit_batches(1, 8)[0]
    F.cross_entropy(model(x), y).backward()
    stale = F.cross_entropy(model(x), y)
    optimizer.step()
    with pytest.raises(kiln.TraceError, match=r"(?s)test_eager_mode.py.*parameter of shape \(10, 64\) was updated in place by optimizer.step\(\)"):
        stale.backward()
    F.cross_entropy(model(x), y).backward()  # a forward after the step is fine


def test_the_backward_recomputes_dropout_with_the_forwards_mask():
    kiln.manual_seed(14)
    w = kiln.tensor(np.full((8, 50), 3.0), dtype=kiln.float64, requires_grad=True)
    out = nn.Dropout(0.5)(w * 1.0)
    out.sum().backward()
    kept = out.numpy() != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_array_equal(w.grad, np.where(kept, 2.0, 0.0))  # the same elements, scaled by 1 / (1 - p)


def test_a_structures_first_backward_runs_op_by_op_and_its_second_compiles():
    kiln.manual_seed(6)
    model = MLP().double()
    x, y = digit_batches(1, 8)[0]
    x = x.astype(np.float64)
    eager_backward._COMPILED.clear()
    eager_backward._SEEN.clear()
    grads = []
    for steps in (1, 2, 3):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads.append(model.fc1.weight.grad.copy())
        assert len(eager_backward._COMPILED) == (0 if steps == 1 else 1)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-15)  # both ways give the same gradient
    np.testing.assert_array_equal(grads[1], grads[2])
