"""``kiln.nn.utils.parameters_to_vector`` as torch 2.13's ``torch.cat([p.view(-1) for p in parameters])``: a tensor
that is differentiable (an L2 penalty on it trains, eagerly and in a ``kiln.compile``d step) and that takes any tensors
(the ``.grad`` of each parameter, flattened as TRPO-style code does with ``p.grad.view(-1)``, which needs the eager
``.grad`` to be contiguous, as torch's is)."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries, require_torch

X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)


def _model(name):
    lib, nn, _ = libraries(name)
    lib.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    return lib, nn, model


def _twins():
    """kiln's model and torch's twin holding kiln's initial values."""
    torch = require_torch()
    _, _, ours = _model("kiln")
    _, _, theirs = _model("torch")
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.state_dict().items()})
    return torch, ours, theirs


def _penalised_loss(lib, model):
    vector = lib.nn.utils.parameters_to_vector(model.parameters())
    return model(lib.tensor(X)).pow(2).mean() + 0.1 * vector.pow(2).sum()


def test_l2_penalty_through_the_vector_trains_as_torch():
    torch, ours, theirs = _twins()
    for lib, model in ((kiln, ours), (torch, theirs)):
        _penalised_loss(lib, model).backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-15, err_msg=name)


def test_l2_penalty_through_the_vector_in_a_compiled_step_as_torch():
    torch, ours, theirs = _twins()
    losses = {}
    for lib, model in ((kiln, ours), (torch, theirs)):
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1)

        def step():
            optimizer.zero_grad()
            loss = _penalised_loss(lib, model)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        losses[lib.__name__] = [run().item() for _ in range(3)]
    np.testing.assert_allclose(losses["kiln"], losses["torch"], rtol=1e-12)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=name)


def test_flat_gradient_of_the_grads_as_torch():
    """``parameters_to_vector(p.grad ...)`` and ``p.grad.view(-1)``: a Linear's weight gradient (computed as a
    transposed product) is kept contiguous, as torch's."""
    torch, ours, theirs = _twins()
    flat = {}
    for lib, model in ((kiln, ours), (torch, theirs)):
        model(lib.tensor(X)).sum().backward()
        assert all(p.grad.is_contiguous() for p in model.parameters())
        flat[lib.__name__] = (np.array(lib.nn.utils.parameters_to_vector([p.grad for p in model.parameters()]).numpy()),
                              np.concatenate([np.array(p.grad.view(-1).numpy()) for p in model.parameters()]))
    for got, want in zip(flat["kiln"], flat["torch"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_vector_to_parameters_from_the_vector_as_torch():
    torch, ours, theirs = _twins()
    for lib, model in ((kiln, ours), (torch, theirs)):
        vector = lib.nn.utils.parameters_to_vector(model.parameters())
        lib.nn.utils.vector_to_parameters(vector.detach() * 2 - 1, model.parameters())
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-14, err_msg=name)


def test_vector_to_parameters_of_a_vector_a_compiled_step_computes_as_torch():
    """A flat update in a ``kiln.compile(fullgraph=True)``'d step (natural-gradient and line-search code): the
    vector is traced, written into the parameters at each call (it was refused: NumPy of a traced tensor)."""
    torch, ours, theirs = _twins()
    losses = {}
    for lib, model in ((kiln, ours), (torch, theirs)):

        def step():
            loss = model(lib.tensor(X)).pow(2).mean()
            grads = lib.autograd.grad(loss, list(model.parameters()))
            flat = lib.cat([g.reshape(-1) for g in grads])
            vector = lib.nn.utils.parameters_to_vector(model.parameters())
            lib.nn.utils.vector_to_parameters(vector - 0.5 * flat, model.parameters())
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        losses[lib.__name__] = [run().item() for _ in range(3)]
    np.testing.assert_allclose(losses["kiln"], losses["torch"], rtol=1e-12)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=name)
