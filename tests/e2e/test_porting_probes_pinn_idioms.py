"""Porting probe: the other ways PINN code differentiates its network by its inputs (``pinn_idioms_program.py``), in
lockstep with torch 2.13 from kiln's initial weights (``torch`` is torch or kiln): float64 to 1e-10, float32 as the
reference trains (``torch.tensor(X).float()``) at float32's level, and a trained PINN deployed through
``kiln.compile`` and ``kiln.onnx.export`` (onnxruntime), its PDE residual included (``autograd.grad`` in ``forward``;
``torch.onnx.export`` cannot trace that, so the ONNX residual is checked against torch's eager one).

- One ``autograd.grad(u, [t, x], ...)`` for both first derivatives; ``u.backward(ones, create_graph=True)`` reading
  ``t.grad``/``x.grad``; ``allow_unused=True``; ``torch.autograd.functional.jacobian``/``hessian`` with
  ``create_graph=True`` and ``torch.einsum("iaia->ia", H)``; ``is_grads_batched=True`` with ``torch.eye(n)``;
  ``torch.autograd.forward_ad``'s dual tensors for the first derivatives.
- DeepXDE's cached ``jacobian``/``hessian`` (tensors as dict keys, ``[:, j : j + 1]``, ``clear()`` per step).
- A sine activation written as a custom ``torch.autograd.Function`` (``save_for_backward``, a differentiable
  ``backward``), differentiated twice.
- Each trains a Burgers PINN with Adam eagerly, and as one ``kiln.compile(fullgraph=True)`` graph against torch's
  eager loop (the first derivatives' ``t.grad``/``x.grad`` of ``backward(create_graph=True)`` included).

What broke:
- ``torch.einsum("iaia->ia", H)`` was refused (a letter repeated within one operand: a diagonal); kiln's einsum now
  takes the diagonal first, as torch (``frontend/functional_einsum.py``,
  ``tests/frontend/test_einsum_diagonal_vs_torch.py``).
- In the compiled step, ``torch.zeros(1, requires_grad=True)`` ignored its flag, so ``autograd.grad(...,
  [x, unused], allow_unused=True)`` raised "does not require grad"; a factory's ``requires_grad=True`` now marks the
  traced tensor (``frontend/torch_functions.py``, ``tests/frontend/test_traced_factory_requires_grad_vs_torch.py``).
- In the compiled step, ``torch.autograd.functional.jacobian``/``hessian(..., create_graph=True)`` failed with
  "np.asarray() of a traced tensor" (its graph-keeping form took eager tensors only; ``vjp``/``jvp``/``hvp`` failed
  even without ``create_graph``); they now trace (``runtime/autograd_functional*.py``,
  ``tests/runtime/test_autograd_functional_in_compiled_step_vs_torch.py``).
- ``torch.autograd.forward_ad`` did not exist in kiln; it does now, a tangent computed when unpacked as the
  Jacobian-vector product (``runtime/forward_ad.py``, ``tests/frontend/test_torch_surface_forward_ad.py``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from e2e.pinn_idioms_program import IDIOMS, burgers_derivatives, deepxde_grad, residual_module, sine_activation_dnn
from e2e.pinn_score_program import burgers_dnn, heat_pinn_loss
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import require

NU = 0.01 / np.pi
POINTS = np.random.default_rng(0).uniform(-1, 1, (10, 2))
INITIAL = np.random.default_rng(1).uniform(-1, 1, (5, 1))


def burgers_loss(torch, dnn, t, x, x0, idiom):
    u, u_t, u_x, u_xx = burgers_derivatives(torch, dnn, t, x, idiom)
    u0 = dnn(torch.cat([torch.zeros_like(x0), x0], 1))
    return torch.mean((u_t + u * u_x - NU * u_xx) ** 2) + torch.mean((u0 + torch.sin(np.pi * x0)) ** 2), u_xx


def train_idiom(idiom, compiled, steps=3, cast=lambda t: t):
    def train(torch, nn, F, dnn):
        optimizer = torch.optim.Adam(dnn.parameters(), lr=1e-2)
        x0 = cast(torch.tensor(INITIAL))

        def step(points):
            t = points[:, 0:1].clone().requires_grad_(True)
            x = points[:, 1:2].clone().requires_grad_(True)
            loss, u_xx = burgers_loss(torch, dnn, t, x, x0, idiom)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss, u_xx

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "u_xx": []}
        for index in range(steps):
            loss, u_xx = run(cast(torch.tensor(POINTS)))
            record["losses"].append(loss.item())
            record["u_xx"].append(array(u_xx))
            if index == 0 and not compiled:
                record["first_gradients"] = gradients(dnn)
        return record | {"state": snapshot(dnn)}

    return train


@pytest.mark.parametrize("idiom", IDIOMS)
def test_derivative_idiom_trains_as_torch(idiom, float64_default):
    ours, theirs = run_in_lockstep(burgers_dnn, train_idiom(idiom, compiled=False))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("idiom", IDIOMS)
def test_derivative_idiom_in_a_compiled_step_as_torch(idiom, float64_default):
    ours, theirs = run_in_lockstep(burgers_dnn, train_idiom(idiom, compiled=True))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_custom_function_activation_differentiated_twice_as_torch(compiled, float64_default):
    """A sine activation as a custom ``autograd.Function`` whose ``backward`` is differentiable: the residual's
    second derivative and the loss's backward through it."""
    ours, theirs = run_in_lockstep(sine_activation_dnn, train_idiom("inputs-list", compiled))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_deepxde_cached_jacobians_and_hessians_as_torch(compiled, float64_default):
    """DeepXDE's Burgers ``pde(x, y)`` (``dde.grad.jacobian(y, x, i=0, j=0)``, ``j=1``, ``dde.grad.hessian(y, x, i=0,
    j=0)``) over its cached gradients, ``torch.mean(torch.square(f))``, Adam, ``clear()`` after each step."""

    def train(torch, nn, F, net):
        jacobian, hessian, clear = deepxde_grad(torch)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

        def pde(x, y):
            dy_x = jacobian(y, x, i=0, j=0)
            dy_t = jacobian(y, x, i=0, j=1)
            dy_xx = hessian(y, x, i=0, j=0)
            return dy_t + y * dy_x - 0.01 / np.pi * dy_xx

        def step(points):
            x = points.clone().requires_grad_()
            f = pde(x, net(x))
            loss = torch.mean(torch.square(f))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clear()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        return {"losses": [run(torch.tensor(POINTS)).item() for _ in range(3)], "state": snapshot(net)}

    ours, theirs = run_in_lockstep(burgers_dnn, train)
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_float32_pinn_as_the_reference_trains(compiled):
    """The reference's float32 (``torch.tensor(X_u[:, 0:1], requires_grad=True).float()``): losses, ``u_xx`` and the
    weights after Adam steps to float32's level."""
    ours, theirs = run_in_lockstep(burgers_dnn, train_idiom("inputs-list", compiled, cast=lambda t: t.float()))
    assert ours["losses"] and isinstance(ours["u_xx"][0], np.ndarray) and ours["u_xx"][0].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-6)


def test_trained_pinn_deployed_through_compile_and_onnx_as_torch():
    """A heat-equation PINN trained eagerly (float32), then its ``u`` and residual evaluated by torch eagerly, by kiln
    eagerly, through ``kiln.compile(fullgraph=True)``, and from ``kiln.onnx.export`` in onnxruntime (a dynamic batch)."""
    onnxruntime = require("onnxruntime")
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (12, 2)).astype(np.float32)
    Xq = rng.uniform(-1, 1, (7, 2)).astype(np.float32)
    X0 = np.hstack([np.zeros((4, 1)), rng.uniform(-1, 1, (4, 1))]).astype(np.float32)

    def train(torch, nn, F, dnn):
        optimizer = torch.optim.Adam(dnn.parameters(), lr=1e-2)
        for _ in range(3):
            optimizer.zero_grad()
            heat_pinn_loss(torch, dnn, torch.tensor(X), torch.tensor(X0), torch.sin(np.pi * torch.tensor(X0[:, 1:]))).backward()
            optimizer.step()
        dnn.eval()
        residual = residual_module(torch, nn, dnn)
        u, f = residual(torch.tensor(Xq))
        record = {"eager": {"u": array(u), "f": array(f)}}
        if torch is kiln:
            u_c, f_c = kiln.compile(residual, fullgraph=True)(torch.tensor(Xq))
            buffer = io.BytesIO()
            kiln.onnx.export(residual, (torch.tensor(Xq),), buffer, input_names=["X"], output_names=["u", "f"],
                             dynamic_axes={"X": {0: "N"}})
            session = onnxruntime.InferenceSession(buffer.getvalue())
            u_o, f_o = session.run(None, {"X": Xq})
            assert session.run(None, {"X": X})[1].shape == (12, 1)  # another batch size, one model
            record |= {"compiled": {"u": array(u_c), "f": array(f_c)}, "onnx": {"u": u_o, "f": f_o}}
        else:
            record |= {"compiled": record["eager"], "onnx": record["eager"]}
        return record | {"state": snapshot(dnn)}

    ours, theirs = run_in_lockstep(burgers_dnn, train)
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)
