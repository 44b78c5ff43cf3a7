"""``kiln.func.jacrev``/``jacfwd`` (and ``grad``/``grad_and_value``, a 0-d output's Jacobian) with ``has_aux=True`` on
eager tensors: ``func`` called once per call, as torch's.

torch.func evaluates ``func`` once and takes the Jacobian and the aux from that one evaluation. kiln's Jacobians are
traced transforms (``runtime/jacobian.py``), which run ``func``'s Python while tracing (twice: the output types, then
the batched pullback) and not at all on a cached call; with an aux it called ``func`` once more, eagerly, for the aux:
a counter, a log or a random draw in ``func`` saw a different number of calls, and the aux came from another
evaluation than the Jacobian. Here, outside a trace, ``func`` runs once on the arguments (a differentiated argument
that does not require grad is given as a detached copy that does), and the Jacobian is that evaluation's
``kiln.autograd.grad`` with the identity's rows as batched cotangents (``is_grads_batched``); the same numbers as the
traced transform, for ``jacfwd`` too. Inside a trace (``vmap``, ``kiln.compile``) the traced transform serves.

With gradients enabled the Jacobian keeps a chain (``create_graph``) where it reaches a trained parameter or a tensor
that requires grad, as torch's results do (a PINN's loss on the derivatives trains the network); a result reached only
through the copies is detached, as torch's is a plain tensor then.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from kiln.frontend.autograd import grad as autograd_grad
from kiln.frontend.grad_mode import enable_grad, is_grad_enabled
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_functions import eye, zeros
from kiln.runtime.eager_backward import EagerChain, marked_tensors
from kiln.runtime.pytree import flatten, unflatten


def jacobian_with_aux(func: Callable[..., Any], argnums: int | tuple[int, ...], args: tuple[Any, ...],
                      pair: Callable[[Any], tuple[Any, Any]]) -> tuple[Any, Any]:
    """``(Jacobian of func's output w.r.t. args[argnums], aux)`` from one call of ``func`` (``pair`` checks its result)."""
    numbers = (argnums,) if isinstance(argnums, int) else argnums
    chained = is_grad_enabled()
    full, inputs, structures, copies = list(args), [], [], []
    for number in numbers:
        leaves, structure = flatten(args[number])
        differentiated = [_differentiable(leaf, copies) for leaf in leaves]
        full[number] = unflatten(structure, differentiated)
        inputs.extend(differentiated)
        structures.append((structure, len(leaves)))
    with enable_grad():
        output, aux = pair(func(*full))
    out_leaves, out_structure = flatten(output)
    per_output = [_rows(leaf, inputs, chained) for leaf in out_leaves]
    jacobians = [_by_argument(rows, structures, isinstance(argnums, int)) for rows in per_output]
    return _released(unflatten(out_structure, jacobians), copies), _released(aux, copies)


def _differentiable(leaf: Any, copies: list[Tensor]) -> Tensor:
    """The argument itself where it requires grad (the Jacobian's chain reaches it), else a detached copy that does."""
    tensor = leaf if isinstance(leaf, Tensor) else _as_tensor(leaf)
    if tensor.requires_grad:
        return tensor
    copy = tensor.detach().requires_grad_()
    copies.append(copy)
    return copy


def _as_tensor(value: Any) -> Tensor:
    from kiln.frontend.torch_functions import as_tensor

    return as_tensor(np.asarray(value))


def _rows(output: Tensor, inputs: Sequence[Tensor], chained: bool) -> list[Tensor]:
    """``d output / d input`` for each input, ``output.shape + input.shape``: one batched backward over the identity."""
    count = int(np.prod(output.shape, dtype=np.int64))
    basis = eye(count, dtype=output.dtype).reshape((count,) + tuple(output.shape))
    grads = autograd_grad(output, list(inputs), grad_outputs=basis, is_grads_batched=True, retain_graph=True,
                          create_graph=chained, allow_unused=True)
    return [(zeros((count,) + tuple(x.shape), dtype=output.dtype) if g is None else g).reshape(tuple(output.shape) + tuple(x.shape))
            for g, x in zip(grads, inputs)]


def _by_argument(rows: list[Tensor], structures: list[tuple[Any, int]], single: bool) -> Any:
    """One output's Jacobians nested as the differentiated arguments (a Tensor for an int ``argnums``)."""
    nested, start = [], 0
    for structure, count in structures:
        nested.append(unflatten(structure, rows[start:start + count]))
        start += count
    return nested[0] if single else tuple(nested)


def _released(tree: Any, copies: list[Tensor]) -> Any:
    """``tree``'s tensors detached where they reach nothing that requires grad but the copies (torch's are plain then)."""
    leaves, structure = flatten(tree)
    return unflatten(structure, [_detached_unless_chained(leaf, copies) for leaf in leaves])


def _detached_unless_chained(leaf: Any, copies: list[Tensor]) -> Any:
    if not isinstance(leaf, Tensor) or not leaf.requires_grad:
        return leaf
    own = {id(copy) for copy in copies}
    if id(leaf) in own:
        return leaf.detach()
    reached = EagerChain([leaf.value], None).trained or any(id(tensor) not in own for tensor, _ in marked_tensors(leaf.value))
    return leaf if reached else leaf.detach()


__all__ = ["jacobian_with_aux"]
