"""Run a kiln layer and its PyTorch twin on the same weights and inputs; compare outputs and every gradient."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir.types import DType, TensorType
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext

RTOL, ATOL = 1e-5, 1e-6


def kiln_outputs_and_grads(module: Any, call: Callable[..., Any], arrays: Sequence[np.ndarray], weights: np.ndarray):
    """``(output, {parameter name: grad}, [input grads])`` of ``sum(call(module, *inputs) * weights)``."""
    with TraceContext("parity") as context:
        context.parameter_names.update({id(p): name for name, p in module.named_parameters()})
        inputs = [Tensor(context.graph.add_input(TensorType(a.shape, DType.of(a.dtype)), f"x{i}")) for i, a in enumerate(arrays)]
        float_inputs = [t.value for t in inputs if t.dtype.is_float]  # before the call: an inplace=True layer rebinds its input
        output = call(module, *inputs)
        loss = (output * weights).sum()
        named = list(module.named_parameters())
        wrt = [context.value_of(p) for _, p in named] + float_inputs
        grads = differentiate(context.graph, loss.value, wrt)
        context.graph.outputs = [output.value, *grads]
    results = NumpyBackend().compile(context.graph)(*arrays, *[p.data for p in context.parameters])
    return results[0], dict(zip([name for name, _ in named], results[1 : 1 + len(named)])), list(results[1 + len(named) :])


def assert_layer_matches_torch(torch, module: Any, reference: Any, arrays: Sequence[np.ndarray], call: Callable[..., Any] | None = None,
                               torch_call: Callable[..., Any] | None = None, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Copy ``module``'s weights into ``reference``, run both, compare the output and the parameter and input gradients."""
    call = call or (lambda m, *xs: m(*xs))
    torch_call = torch_call or call
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in module.state_dict().items()})
    probe = torch_call(reference, *[torch.tensor(a) for a in arrays]).detach().numpy()
    weights = np.random.default_rng(11).standard_normal(probe.shape).astype(probe.dtype)
    output, grads, input_grads = kiln_outputs_and_grads(module, call, arrays, weights)
    tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    reference.zero_grad()
    expected = torch_call(reference, *tensors)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(output, expected.detach().numpy(), rtol=rtol, atol=atol, err_msg="output")
    torch_params = dict(reference.named_parameters())
    assert set(grads) == set(torch_params), "parameter names differ from PyTorch's"
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, torch_params[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name)
    for grad, tensor in zip(input_grads, [t for t in tensors if t.requires_grad]):
        np.testing.assert_allclose(grad, tensor.grad.numpy(), rtol=rtol, atol=atol, err_msg="input gradient")


def sgd_losses_in_lockstep(torch, model: Any, reference: Any, x: np.ndarray, y: np.ndarray, lr: float, steps: int) -> list[float]:
    """Train ``model`` (compiled kiln step) and its PyTorch twin ``reference`` (weights copied in first) with SGD on
    one batch and cross-entropy, asserting every step's loss agrees; returns kiln's losses."""
    from lockstep import sgd_in_lockstep

    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return list(sgd_in_lockstep(torch, model, reference, [(x, y)] * steps, "cross_entropy", lr, rtol=1e-4))


def normal(*shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def tolerances(dtype):
    """The comparison tolerances of a dtype: the defaults in float32, 1e-10 relative in float64."""
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else {}


def randomize(module, seed=1):
    """Random parameters, so that a dropped, swapped or mis-broadcast weight or bias shows."""
    for index, parameter in enumerate(module.parameters()):
        parameter.data[...] = normal(*parameter.data.shape, dtype=parameter.data.dtype, seed=seed + index)
    return module


def as_dtype(reference, dtype):
    """A PyTorch module in ``dtype`` (its default float32, or float64)."""
    return reference.double() if dtype == "float64" else reference
