"""``kiln.func``: ``torch.func``'s names and argument conventions over kiln's transforms.

```python
from kiln.func import functional_call, grad, vmap
params = {k: v.detach() for k, v in model.named_parameters()}
def loss(params, x, y):
    return F.cross_entropy(functional_call(model, params, (x[None],)), y[None])
per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)      # {name: (N, *shape)}
```

Each transform takes arrays or eager tensors (and nested tuples, lists and
dicts of them) and composes with the others, traced into one compiled graph
(``runtime/grad.py``, ``runtime/vmap.py``, ``runtime/jacobian.py``). The
differences from kiln's own names: ``vmap`` spells its axes ``in_dims`` and
``out_dims``; ``grad_and_value`` returns ``(grad, value)``; ``has_aux=True``
(``grad``, ``jacrev``, ``jacfwd``) returns the function's second result untouched.

In-place updates land as torch's do: a BatchNorm in training mode given its buffers through ``functional_call``
updates those tensors (``runtime/traced_transform.py``), batched under ``vmap`` as torch's (``runtime/vmap.py``). One
that updates the module's own buffers (closed over) writes them, where torch.func refuses ("mutate a captured
Tensor"). ``chunk_size`` (``vmap``, ``jacrev``) only bounds torch's memory: kiln accepts it and computes
the whole batch at once, the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from kiln.compiler.errors import KilnError
from kiln.frontend.functional_call import functional_call, stack_module_state
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext
from kiln.runtime.eager_jacobian import jacobian_with_aux
from kiln.runtime.forward_mode import jvp as _jvp, vjp as _vjp
from kiln.runtime.grad import GradFunction, grad as _grad, value_and_grad as _value_and_grad
from kiln.runtime.jacobian import hessian as _hessian, jacfwd as _jacfwd, jacrev as _jacrev
from kiln.runtime.traced_transform import Compiled, TracedTransform
from kiln.runtime.vmap import TORCH_SPELLING, VmapFunction


class ScalarOutputError(KilnError, RuntimeError):
    """``grad``'s function returned no scalar tensor: a ``RuntimeError``, as torch's."""


def grad(func: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable[..., Any]:
    """The gradient of scalar ``func`` w.r.t. ``argnums`` (a tensor, or a tuple/list/dict of them, per argument);
    with ``has_aux``, ``func`` returns ``(value, aux)`` and this returns ``(grad, aux)``."""
    if not has_aux:
        return _GradTransform(_grad(func, argnums))
    return lambda *args: _with_aux(func, argnums, args, value=False)


@dataclass
class _GradTransform(TracedTransform):
    """kiln's ``grad`` (``runtime/grad.py``) run as a ``TracedTransform``: on eager tensors the function's in-place
    writes to its arguments (the buffers given to ``functional_call``) land on them, as torch.func's do."""

    gradient: GradFunction
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], Compiled] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.__wrapped__, self.__name__ = self.gradient.fn, self.gradient.__name__

    def trace_into(self, *args: Any) -> Any:
        return self.gradient.trace_into(*args)


def grad_and_value(func: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable[..., Any]:
    """``(grad, value)`` (``(grad, (value, aux))`` with ``has_aux``), as ``torch.func.grad_and_value``."""
    if not has_aux:
        transform = _GradTransform(_value_and_grad(func, argnums))

        def run(*args: Any) -> Any:
            value, gradient = transform(*args)
            return gradient, value
        return run
    return lambda *args: _with_aux(func, argnums, args, value=True)


def _with_aux(func: Callable[..., Any], argnums: int | Sequence[int], args: tuple[Any, ...], value: bool) -> Any:
    """``grad`` of ``func``'s first result through ``vjp`` (which carries the second, ``aux``, out untouched); on eager
    tensors from one call of ``func``, as torch's (``runtime/eager_jacobian.py``: the Jacobian of a 0-d output)."""
    if _eager():
        return _eager_grad_with_aux(func, argnums, args, value)
    numbers = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def of_chosen(*chosen: Any) -> Any:
        full = list(args)
        for number, item in zip(numbers, chosen):
            full[number] = item
        result = func(*full)
        if not isinstance(result, tuple) or len(result) != 2:
            raise KilnError("grad(has_aux=True): func must return a pair (value, aux)")
        return result

    output, pullback, aux = _vjp(of_chosen, *[args[n] for n in numbers], has_aux=True)
    grads = pullback(1.0 if not hasattr(output, "shape") else _one_like(output))
    gradient = grads[0] if isinstance(argnums, int) else tuple(grads)
    return (gradient, (output, aux)) if value else (gradient, aux)


def _eager_grad_with_aux(func: Callable[..., Any], argnums: int | Sequence[int], args: tuple[Any, ...], value: bool) -> Any:
    """``(grad, aux)`` (``(grad, (value, aux))`` for ``grad_and_value``) from one eager call of ``func``."""
    who = "grad_and_value" if value else "grad"

    def scalar_pair(result: Any) -> tuple[Any, Any]:
        output, aux = _pair(result, f"{who}(has_aux=True)")
        if not isinstance(output, Tensor) or output.ndim != 0:  # torch's words, grad's too
            raise ScalarOutputError(f"grad_and_value(f)(*args): Expected f(*args) to return a scalar Tensor, got tensor "
                                    f"with {getattr(output, 'ndim', 0)} dims. Maybe you wanted to use the vjp or jacrev APIs instead?")
        return output, (output, aux)  # the output in the aux too: its value comes back released

    numbers = argnums if isinstance(argnums, int) else tuple(argnums)
    gradient, (output, aux) = jacobian_with_aux(func, numbers, args, scalar_pair)
    return (gradient, (output, aux)) if value else (gradient, aux)


def _eager() -> bool:
    """Outside any trace: the transforms' arguments are eager tensors and ``func`` may run on them as torch's does."""
    return not TraceContext.active() or TraceContext.current().eager


def _one_like(output: Any) -> Any:
    """The cotangent 1 of ``output``, an array of its shape and dtype: a traced tensor (``grad(has_aux=True)`` inside
    ``vmap`` or ``kiln.compile``) has no values to read, only its type."""
    import numpy as np

    if isinstance(output, Tensor):
        return np.ones(tuple(output.shape), output.type.dtype.numpy)
    return np.ones_like(np.asarray(output))


def vmap(func: Callable[..., Any], in_dims: Any = 0, out_dims: Any = 0, randomness: str = "error",
         *, chunk_size: int | None = None) -> Callable[..., Any]:
    """``func`` mapped over axis ``in_dims`` of its arguments, stacked along ``out_dims`` (an int, None, or a tuple
    nested as the results); keyword arguments pass through unmapped (``torch.func.vmap``). With ``randomness=
    'different'`` each example draws its own numbers (dropout: a mask per example); 'error' refuses random ops, as
    torch's, and 'same' (one draw shared by every example) still refuses them."""
    _check_randomness(randomness)
    if not (chunk_size is None or chunk_size > 0):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got {chunk_size})")
    return VmapFunction(func, in_dims, out_dims, spelling=TORCH_SPELLING, randomness=randomness)


def _check_randomness(randomness: str) -> None:
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got {randomness}")


def jacrev(func: Callable[..., Any], argnums: int | Sequence[int] = 0, *, has_aux: bool = False,
           chunk_size: int | None = None, _preallocate_and_copy: bool = False) -> Callable[..., Any]:
    """The Jacobian by reverse mode (``torch.func.jacrev``); every row at once whatever ``chunk_size``."""
    if not (chunk_size is None or chunk_size > 0):
        raise ValueError("jacrev: `chunk_size` should be greater than 0.")
    return _jacobian_with_aux(_jacrev, func, argnums, "jacrev") if has_aux else _jacrev(func, argnums)


def jacfwd(func: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False, *,
           randomness: str = "error") -> Callable[..., Any]:
    """The Jacobian by forward mode (``torch.func.jacfwd``); ``randomness`` is checked as torch's (see ``vmap``)."""
    _check_randomness(randomness)
    return _jacobian_with_aux(_jacfwd, func, argnums, "jacfwd") if has_aux else _jacfwd(func, argnums)


def _jacobian_with_aux(transform: Callable[..., Any], func: Callable[..., Any], argnums: int | Sequence[int],
                       who: str) -> Callable[..., Any]:
    """``has_aux=True``: ``func`` returns ``(output, aux)``; the result is ``(jacobian of output, aux)``, as torch's
    (a PINN's ``jacrev(lambda x: (f(x), f(x)), has_aux=True)`` gets the Jacobian and the value together). On eager
    tensors ``func`` runs once per call and both come from that call (``runtime/eager_jacobian.py``); inside a trace
    (``vmap``, ``kiln.compile``) the traced transform gives the Jacobian, and the aux is traced beside it."""
    jacobian = transform(lambda *args: _pair(func(*args), who)[0], argnums)
    numbers = argnums if isinstance(argnums, int) else tuple(argnums)

    def run(*args: Any) -> Any:
        if _eager():
            return jacobian_with_aux(func, numbers, args, lambda result: _pair(result, who))
        return jacobian(*args), _pair(func(*args), who)[1]

    return run


def _pair(result: Any, who: str) -> tuple[Any, Any]:
    if not isinstance(result, tuple) or len(result) != 2:
        raise KilnError(f"{who}(has_aux=True): func must return a pair (output, aux), got {type(result).__name__}")
    return result


def hessian(func: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    return _hessian(func, argnums)


def vjp(func: Callable[..., Any], *primals: Any, has_aux: bool = False) -> Any:
    """``(func(*primals), vjp_fn)``; ``vjp_fn`` evaluates ``func`` again (its pullback is traced from it), whose
    in-place writes, already made by the first evaluation, it drops (``runtime/forward_mode.py``'s ``replay_fn``)."""
    return _vjp(func, *primals, has_aux=has_aux)


def jvp(func: Callable[..., Any], primals: Any, tangents: Any, *, strict: bool = False, has_aux: bool = False) -> Any:
    return _jvp(func, primals, tangents, has_aux=has_aux)


__all__ = ["functional_call", "grad", "grad_and_value", "hessian", "jacfwd", "jacrev", "jvp", "stack_module_state",
           "vjp", "vmap"]
