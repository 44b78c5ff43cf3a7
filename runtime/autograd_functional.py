"""``kiln.autograd.functional``: PyTorch's ``torch.autograd.functional`` over kiln's compiled transforms.

```python
from kiln.autograd.functional import jacobian, hessian, vjp, jvp, hvp
J = jacobian(model, x)                          # shape out.shape + x.shape
H = hessian(lambda w: loss(w), w)               # shape w.shape + w.shape
out, u_J = vjp(f, x, u)                         # out = f(x), u^T J
out, H_v = hvp(f, (a, b), (va, vb))             # a tuple of inputs gives tuples
```

Each is one of ``kiln.jacrev``/``hessian``/``vjp``/``jvp`` (compiled once per
signature), taking tensors or arrays and giving eager tensors, with PyTorch's
argument conventions: ``inputs`` is a tensor or a tuple of them, and so is
the result where PyTorch's is. With ``create_graph=True`` they run eagerly
instead, giving tensors that keep their chain, so a later ``backward()`` or
``kiln.autograd.grad`` differentiates through them
(``runtime/autograd_functional_graph.py``). ``strict``, ``vectorize`` and
``strategy`` change nothing (the Jacobian is always one vectorized pullback). Inside a trace (a
``kiln.compile``d step) ``vjp``, ``jvp``, ``hvp`` and ``vhp`` are traced as the graph-keeping ones (their compiled
transforms read arrays), the result detached without ``create_graph``; the graph-keeping ones read traced tensors.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kiln.runtime.autograd_functional_graph import (hessian_with_graph, in_trace, jacobian_with_graph, jvp_with_graph,
                                                    ones_for, vhp_with_graph, vjp_with_graph)
from kiln.runtime.eager_transforms import as_eager
from kiln.runtime.forward_mode import jvp as _jvp, vjp as _vjp
from kiln.runtime.grad import grad as _grad
from kiln.runtime.jacobian import hessian as _hessian, jacrev as _jacrev
from kiln.runtime.pytree import flatten, unflatten


def jacobian(func: Callable[..., Any], inputs: Any, create_graph: bool = False, strict: bool = False,
             vectorize: bool = False, strategy: str = "reverse-mode") -> Any:
    """d func / d inputs: for one input and one output, shape ``output.shape + input.shape``; a tuple of inputs
    gives a tuple per output (nested, as PyTorch's)."""
    args, single = _inputs(inputs)
    if create_graph:
        return jacobian_with_graph(func, args, single)
    return _kept(False, as_eager(_jacrev(func, 0 if single else tuple(range(len(args))))(*args)))


def hessian(func: Callable[..., Any], inputs: Any, create_graph: bool = False, strict: bool = False,
            vectorize: bool = False, outer_jacobian_strategy: str = "reverse-mode") -> Any:
    """The Hessian of scalar ``func``: shape ``input.shape + input.shape`` (``H[i][j]`` for a tuple of inputs)."""
    args, single = _inputs(inputs)
    if create_graph:
        return hessian_with_graph(func, args, single)
    return _kept(False, as_eager(_hessian(func, 0 if single else tuple(range(len(args))))(*args)))


def vjp(func: Callable[..., Any], inputs: Any, v: Any = None, create_graph: bool = False, strict: bool = False) -> Any:
    """``(func(inputs), v^T J)``; ``v`` may be omitted for a scalar output."""
    args, single = _inputs(inputs)
    if create_graph or in_trace():
        return _kept(create_graph, vjp_with_graph(func, args, single, v))
    outputs, pullback = _vjp(func, *args)
    cotangent = ones_for(outputs, "vjp") if v is None else _cast_like(v, outputs)
    grads = pullback(cotangent)
    return as_eager(outputs), as_eager(grads[0] if single else tuple(grads))


def jvp(func: Callable[..., Any], inputs: Any, v: Any = None, create_graph: bool = False, strict: bool = False) -> Any:
    """``(func(inputs), J v)``; ``v`` may be omitted for a single-element input."""
    args, single = _inputs(inputs)
    if create_graph or in_trace():
        return _kept(create_graph, jvp_with_graph(func, args, single, v))
    tangents = _cast_like(_inputs(v)[0], args) if v is not None else [ones_for(a, "jvp") for a in args]
    outputs, pushed = _jvp(func, tuple(args), tuple(tangents))
    return as_eager(outputs), as_eager(pushed)


def hvp(func: Callable[..., Any], inputs: Any, v: Any, create_graph: bool = False, strict: bool = False) -> Any:
    """``(func(inputs), H v)`` for scalar ``func``: forward mode over its gradient."""
    args, single = _inputs(inputs)
    if create_graph or in_trace():
        return _kept(create_graph, vhp_with_graph(func, args, single, v, "hvp"))  # H v = v^T H: the Hessian is symmetric
    tangents = _cast_like(_inputs(v)[0], args)
    argnums = 0 if single else tuple(range(len(args)))
    _, pushed = _jvp(_grad(func, argnums), tuple(args), tuple(tangents))
    return as_eager(func(*args)), as_eager(pushed)


def vhp(func: Callable[..., Any], inputs: Any, v: Any, create_graph: bool = False, strict: bool = False) -> Any:
    """``(func(inputs), v^T H)``: ``H v``, as the Hessian of a twice-differentiable function is symmetric."""
    return hvp(func, inputs, v, create_graph, strict)


def _kept(create_graph: bool, result: Any) -> Any:
    """A result as PyTorch gives it: with its chains with ``create_graph``, else detached (inside a trace the
    transforms' results have chains back to the parameters the function read)."""
    if create_graph:
        return result
    leaves, structure = flatten(result)
    return unflatten(structure, [leaf.detach() if hasattr(leaf, "detach") else leaf for leaf in leaves])


def _inputs(inputs: Any) -> tuple[list[Any], bool]:
    if isinstance(inputs, (tuple, list)):
        return list(inputs), False
    return [inputs], True


def _cast_like(given: Any, like: Any) -> Any:
    """``given`` (nested as ``like``) as arrays of ``like``'s dtypes: a float32 ``v`` for a float64 function, as
    PyTorch accepts it."""
    leaves, structure = flatten(given)
    targets = flatten(like)[0]
    if len(leaves) != len(targets):
        return given  # the transform says what is wrong
    return unflatten(structure, [np.asarray(a, dtype=np.asarray(t).dtype) for a, t in zip(leaves, targets)])


__all__ = ["hessian", "hvp", "jacobian", "jvp", "vhp", "vjp"]
