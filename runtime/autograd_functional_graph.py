"""``kiln.autograd.functional.*(..., create_graph=True)``: results that keep their chain, as PyTorch's.

```python
H = hessian(loss_of, w, create_graph=True)      # an eager tensor with a chain back to w (and to the parameters
H.trace().backward()                            # loss_of reads): a third derivative lands in w.grad
out, Hv = hvp(f, x, v, create_graph=True)
```

Without ``create_graph`` the functions run kiln's compiled transforms (``runtime/autograd_functional.py``), whose
arrays have no chain. With it, ``func`` runs eagerly on the inputs themselves (a Parameter, an eager tensor with
its own chain, or an array made a leaf) and the derivatives come from ``kiln.autograd.grad(..., create_graph=True)``,
whose gradient ops run eagerly on the chain (``runtime/eager_grad.py``). Each follows ``torch.autograd.functional``'s
own construction: the Jacobian one backward per output element (its ``vectorize=False``); ``jvp`` as the VJP of
the VJP (the double-backward trick, with a zero cotangent as the variable); ``hessian`` the Jacobian of the Jacobian;
``vhp`` the gradient of ``v . grad``. ``hvp`` is that too: the Hessian of a twice-differentiable function is
symmetric, so ``H v = v^T H``. An input no output depends on gets zeros, as PyTorch's ``strict=False``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from kiln.frontend.autograd import differentiate as grad  # kiln's transforms: no requires_grad checks
from kiln.frontend.eager_values import eager_leaf, eager_value
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.op_dispatch import to_value
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_functions import stack
from kiln.frontend.trace import TraceContext, located_error
from kiln.runtime.eager_create_graph import eager_reading


def jacobian_with_graph(func: Callable[..., Any], args: Sequence[Any], single: bool) -> Any:
    """d func / d args with chains: per output, per input, shape ``output.shape + input.shape`` (nested as PyTorch's:
    a tuple of outputs outside, a tuple of inputs inside; a single one unwrapped)."""
    args = differentiable(args)
    outputs, single_output = _outputs(func(*args), "jacobian")
    per_output = [_jacobian_of(output, args) for output in outputs]
    per_output = [blocks[0] if single else tuple(blocks) for blocks in per_output]
    return per_output[0] if single_output else tuple(per_output)


def _jacobian_of(output: Any, args: Sequence[Any]) -> list[Any]:
    """The blocks d output / d arg, one backward (with a chain) per element of ``output``."""
    rows: list[list[Any]] = [[] for _ in args]
    eye = np.eye(max(output.numel(), 1), dtype=output.dtype.numpy)
    for element in range(output.numel()):
        seed = eye[element].reshape(tuple(output.shape))
        grads = grad([output], list(args), [seed], create_graph=True, allow_unused=True)
        for per_arg, row in zip(rows, _filled(grads, args)):
            per_arg.append(row)
    return [_stacked(per_arg, tuple(output.shape), arg) for per_arg, arg in zip(rows, args)]


def _stacked(rows: list[Any], output_shape: tuple[int, ...], arg: Any) -> Any:
    shape = output_shape + tuple(arg.shape)
    return stack(rows).reshape(shape) if rows else zeros_for(shape, arg.dtype.numpy)


def hessian_with_graph(func: Callable[..., Any], args: Sequence[Any], single: bool) -> Any:
    """The Hessian of scalar ``func`` with chains: the Jacobian of its gradient (``H[i][j]`` for a tuple of inputs)."""
    def gradient_of(*inner: Any) -> tuple[Any, ...]:
        output = _scalar_output(func(*inner), "hessian").reshape(())
        return tuple(_filled(grad([output], list(inner), create_graph=True, allow_unused=True), inner))

    blocks = jacobian_with_graph(gradient_of, args, single=False)
    return blocks[0][0] if single else blocks


def vjp_with_graph(func: Callable[..., Any], args: Sequence[Any], single: bool, v: Any) -> tuple[Any, Any]:
    """``(func(args), v^T J)`` with chains (``v``'s own chain too, where it is an eager tensor)."""
    args = differentiable(args)
    result = func(*args)
    outputs, single_output = _outputs(result, "vjp")
    seeds = [ones_for(o, "vjp") for o in outputs] if v is None else _matched(v, outputs, "v")
    grads = _filled(grad(outputs, list(args), seeds, create_graph=True, allow_unused=True), args)
    return result, grads[0] if single else tuple(grads)


def jvp_with_graph(func: Callable[..., Any], args: Sequence[Any], single: bool, v: Any) -> tuple[Any, Any]:
    """``(func(args), J v)`` with chains, as PyTorch's: the VJP ``u -> u^T J`` at a zero cotangent ``u`` (the
    variable), then its VJP with ``v`` as cotangent, which is ``J v``."""
    args = differentiable(args)
    result = func(*args)
    outputs, single_output = _outputs(result, "jvp")
    tangents = [ones_for(a, "jvp") for a in args] if v is None else _matched(v, args, "v")
    cotangents = [zeros_for(tuple(o.shape), o.dtype.numpy) for o in outputs]
    pulled = grad(outputs, list(args), cotangents, create_graph=True, allow_unused=True)
    used = [(g, t) for g, t in zip(pulled, tangents) if g is not None]
    pushed = grad([g for g, _ in used], cotangents, [t for _, t in used], create_graph=True, allow_unused=True) \
        if used else [None] * len(outputs)
    pushed = _filled(pushed, outputs)
    return result, pushed[0] if single_output else tuple(pushed)


def vhp_with_graph(func: Callable[..., Any], args: Sequence[Any], single: bool, v: Any,
                   who: str = "vhp") -> tuple[Any, Any]:
    """``(func(args), v^T H)`` with chains: the gradient of ``v . grad func`` (PyTorch's ``vhp``; ``hvp`` too, as
    ``H`` is symmetric)."""
    args = differentiable(args)
    result = func(*args)
    output = _scalar_output(result, who)
    directions = _matched(v, args, "v")
    first = grad([output], list(args), [ones_for(output, who)], create_graph=True, allow_unused=True)
    used = [(g, d) for g, d in zip(first, directions) if g is not None]
    second = grad([g for g, _ in used], list(args), [d for _, d in used], create_graph=True, allow_unused=True) \
        if used else [None] * len(args)
    second = _filled(second, args)
    return result, second[0] if single else tuple(second)


def differentiable(args: Sequence[Any]) -> list[Any]:
    """The inputs as tensors a gradient can be taken for: a Parameter or an eager tensor as it is (its chain, if
    any, stays: a later backward reaches what made it), anything else (an array, a number) as a new leaf. Inside a
    trace (``kiln.compile``), each as the trace's value for it (``traced_operand``)."""
    if in_trace():
        return [traced_operand(a) for a in args]
    return [a if isinstance(a, ArrayLeaf) or eager_value(a) is not None else eager_leaf(np.array(a)) for a in args]


def in_trace() -> bool:
    """Inside a trace (``kiln.compile``, a transform), not the eager context: the functions then build its graph."""
    return TraceContext.active() and not TraceContext.current().eager


def traced_operand(item: Any) -> Any:
    """``item`` as a tensor of the graph being traced: a traced tensor as it is; an eager tensor, a parameter or an
    array as the value the trace reads for it (one value, so a gradient can be taken for it)."""
    if isinstance(item, Tensor) and not isinstance(item, ArrayLeaf) and eager_value(item) is None:
        return item
    return Tensor(to_value(TraceContext.current(), item if isinstance(item, Tensor) else np.asarray(item), None))


def zeros_for(shape: tuple[Any, ...], dtype: np.dtype) -> Any:
    """Zeros of ``shape``: a constant of the graph inside a trace, an eager tensor outside."""
    array = np.zeros(shape, dtype=dtype)
    return Tensor(TraceContext.current().emit("tensor.constant", value=array)) if in_trace() else eager_leaf(array)


def _outputs(result: Any, who: str) -> tuple[list[Any], bool]:
    """``func``'s result as a list of eager tensors, and whether it was a single one."""
    outputs, single = (list(result), False) if isinstance(result, (tuple, list)) else ([result], True)
    for index, output in enumerate(outputs):
        if eager_value(output) is None and not (in_trace() and isinstance(output, Tensor)):
            raise located_error(f"kiln.autograd.functional.{who}(create_graph=True): the function's output {index} is "
                                f"{type(output).__name__}, not an eager tensor; return tensors computed from the inputs")
    return outputs, single


def _scalar_output(result: Any, who: str) -> Any:
    outputs, single = _outputs(result, who)
    if not single or outputs[0].numel() != 1:
        shape = tuple(outputs[0].shape) if single else f"a tuple of {len(outputs)}"
        raise located_error(f"kiln.autograd.functional.{who}: the function must return a single tensor with one element, "
                            f"not {shape}; reduce it (.sum()) first")
    return outputs[0]


def _matched(given: Any, like: Sequence[Any], name: str) -> list[Any]:
    """``given`` (a tensor, or a tuple of them, as ``like``) as a list of one entry per tensor of ``like``."""
    entries = list(given) if isinstance(given, (tuple, list)) else [given]
    if len(entries) != len(like):
        raise located_error(f"kiln.autograd.functional: {name} has {len(entries)} entries for {len(like)} tensors; give "
                            "one per tensor, in a tuple when there are several")
    return [_cast(entry, target) for entry, target in zip(entries, like)]


def _cast(entry: Any, target: Any) -> Any:
    """An eager tensor (or a parameter) of ``target``'s type as a tensor whose chain counts; anything else as an
    array of its dtype (a float32 ``v`` for a float64 function, as PyTorch accepts)."""
    tensor = traced_operand(entry) if in_trace() and isinstance(entry, Tensor) else eager_reading(entry)
    if tensor is not None and tensor.dtype == target.dtype and tuple(tensor.shape) == tuple(target.shape):
        return tensor
    array = np.asarray(entry, dtype=target.dtype.numpy)
    if array.shape != tuple(target.shape):
        raise located_error(f"kiln.autograd.functional: v has shape {array.shape} where the tensor it goes with has "
                            f"{tuple(target.shape)}; give v of that shape")
    return array


def ones_for(value: Any, who: str) -> np.ndarray:
    """The implicit ``v`` of a one-element ``value``: ones of its shape and dtype, or a clear error."""
    array = np.zeros(tuple(value.shape), value.dtype.numpy) if isinstance(value, Tensor) else np.asarray(value)
    if array.size != 1:
        raise located_error(f"kiln.autograd.functional.{who}: v can be omitted only when it has one element; the value "
                            f"has shape {array.shape}, so pass v of that shape")
    return np.ones_like(array)


def _filled(grads: Sequence[Any], like: Sequence[Any]) -> list[Any]:
    """Zeros (of the matching tensor's shape and dtype) where no gradient flowed, as PyTorch's ``strict=False``."""
    return [g if g is not None else zeros_for(tuple(t.shape), t.dtype.numpy) for g, t in zip(grads, like)]


__all__ = ["differentiable", "in_trace", "ones_for", "hessian_with_graph", "jacobian_with_graph", "jvp_with_graph", "vhp_with_graph",
           "vjp_with_graph"]
