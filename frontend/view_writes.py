"""Writes through PyTorch's views that are not indexing: ``x.t().fill_(0)``, ``x.view(-1)[i] = v``,
``x.permute(1, 0, 2).mul_(2)``, ``x.unsqueeze(0).add_(1)``, ``cov.diagonal().add_(eps)``.

A view made by a movement op (transpose, reshape where torch's strides make it a view, squeeze, unsqueeze, expand, a
slice) or by ``diagonal`` records its base and how it was made (``ViewOf``). A write through it gives the base the
view's new values (``written_back``: the inverse transpose, a reshape back, a slice or diagonal scatter), which writes
the base's own base in turn; the base's other views go stale and are made again from the base when next read
(``refreshed``), so every view sees the write, as PyTorch's, and gradients flow through the ops that did it:

```
y = x.t(); y[0].fill_(1)     ->   %y.1 = where(row 0, 1, %y)           (x.t()[0] = 1, tensor_inplace.write_through_index)
                                  %x.1 = "tensor.transpose"(%y.1)      (y's write goes back to x)
z                              ->   %z.1 = <z's ops>(%x.1)              (any other view of x, when read)
```

An expanded view shares memory between its elements: writing it is torch's RuntimeError, except ``fill_``/``zero_``
(one value everywhere), as torch's; a write through part of it (``x.expand(3, 4)[1].fill_(2)``) is refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kiln.compiler.errors import TraceError
from kiln.frontend.inplace_leaf_checks import located, writes_a_grad_leaf
from kiln.frontend.tensor_strides import NOT_A_VIEW, UNKNOWN, layout, overlapping, reshape_layout, shapeless_reshape_layout
from kiln.frontend.trace import TraceContext, located_error

UNIFORM_WRITES = frozenset({"fill_", "zero_"})
"""In-place methods torch allows on an expanded tensor: they write one value to every element."""


class ViewOf(NamedTuple):
    """How a view was made from ``base``: ``op`` (a ``VIEW_OPS`` op name, or ``"diagonal"``) with ``attrs``."""

    base: Any
    op: str
    attrs: dict[str, Any]


class OverlappingWriteError(TraceError, RuntimeError):
    """An in-place write to an expanded tensor: a ``RuntimeError``, as PyTorch's."""


def record_view(view: Any, base: Any, op: str, attrs: dict[str, Any]) -> bool:
    """Remember that ``view`` is ``op(base, **attrs)``; False where PyTorch's op is a copy, not a view (a reshape
    the base's strides do not allow), which is then no view at all."""
    if op == "tensor.broadcast_to":
        return True  # linked, not followed: kiln broadcasts for its own fresh tensors too (new_full); see expanded_view
    if op == "tensor.reshape":
        base_layout = layout(base)
        found = shapeless_reshape_layout(base_layout)
        if found is None:
            found = reshape_layout(base_layout, tuple(base.shape), tuple(view.shape))
        if found == NOT_A_VIEW:
            view._reshape_copied = True
            return False
        if found == UNKNOWN:
            return True  # strides of a symbolic dim: linked, not followed (a write makes the others stale)
        view._layout = found
    view._view_of = ViewOf(base, op, attrs)
    return True


def expanded_view(result: Any, base: Any) -> Any:
    """``result`` (``base`` broadcast) as the view ``x.expand(...)`` gives, which a write follows (or refuses)."""
    if result is not base and "_family" in result.__dict__ and "_view_of" not in result.__dict__:
        result._view_of = ViewOf(base, "tensor.broadcast_to", {"shape": tuple(result.shape)})
    return result


def own_storage(result: Any, source: Any) -> Any:
    """``result`` of an op PyTorch computes into new memory (``F.pad``, ``repeat``, ``interpolate``) that kiln made by
    view ops of ``source``, or that is ``source`` itself: a write to it then leaves ``source`` alone, as torch's."""
    if result is source:
        return result.clone()
    family = result.__dict__.get("_family")
    if family is not None and not family.of_parameter:
        family.members.pop(id(result), None)
    for name in ("_family", "_view_of", "_layout", "_indexed_from", "_view_base"):
        result.__dict__.pop(name, None)
    return result


def derived(view_of: ViewOf) -> Any:
    """The view made again from its base's current values."""
    if view_of.op == "diagonal":
        from kiln.frontend.tensor_math import diagonal_values

        return diagonal_values(view_of.base, **view_of.attrs)
    from kiln.frontend.tensor import apply

    return apply(view_of.op, view_of.base, **view_of.attrs)


def refreshed(tensor: Any) -> bool:
    """Make a stale view again from its base (which refreshes in turn); False for a tensor that is no followed view."""
    view_of = tensor.__dict__.get("_view_of")
    if view_of is None:
        return False
    tensor._value = derived(view_of).value
    del tensor._stale  # fresh: ops read it on their fast path again
    return True


def check_overlap(tensor: Any, method: str) -> None:
    """torch's refusal of a write (other than ``fill_``/``zero_``) to a tensor whose elements share memory; and kiln's
    of a write to a copy that torch makes as a view kiln does not follow (``unfollowed``: why, and what to do)."""
    unfollowed = _unfollowed(tensor)
    if unfollowed is not None:
        raise located_error(f"{method}: {unfollowed}")
    if method not in UNIFORM_WRITES and "_view_of" in tensor.__dict__ and overlapping(tensor):
        raise located(OverlappingWriteError, f"{method}: unsupported operation: more than one element of the written-to "
                      f"tensor refers to a single memory location. Please clone() the tensor before performing the "
                      f"operation. ({tensor.type} is expanded: strides {layout(tensor)[0]})")


def _unfollowed(tensor: Any) -> str | None:
    """Why a write to ``tensor`` or to the tensor it is a view of (up the chain) would not reach torch's base."""
    while tensor is not None:
        reason = tensor.__dict__.get("_unfollowed_view")
        if reason is not None:
            return reason
        view_of, indexed_from = tensor.__dict__.get("_view_of"), tensor.__dict__.get("_indexed_from")
        tensor = view_of.base if view_of is not None else indexed_from[0] if indexed_from is not None else None
    return None


def write_through_view(view: Any, result: Any, method: str, written: Any) -> Any:
    """``view`` takes ``result``; its base takes the values that puts there (and so on up the chain); the base's other
    views go stale. ``written``: the index of ``view`` the write was to (None: all of it)."""
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.tensor_inplace import in_place, rebind

    view_of = view._view_of
    base = view_of.base
    if isinstance(base, ArrayLeaf) and not TraceContext.active():  # eagerly, under no_grad: the parameter's array
        in_place(base, method, lambda whole: written_back(view_of, whole, view, result, method, written))
    elif view_of.op == "tensor.stop_gradient" and (isinstance(base, ArrayLeaf) or writes_a_grad_leaf(base)):
        # traced p.detach().zero_(), Variable(x, requires_grad=True).data.add_(y), leaf[0].detach().fill_(v): the
        # leaf's values, written as PyTorch writes through a detached alias (no differentiable write of the leaf,
        # which stays the leaf backward() fills)
        from kiln.frontend.grad_mode import no_grad

        with no_grad():
            rebind(base, written_back(view_of, base, view, result, method, written), method)
    else:
        rebind(base, written_back(view_of, base, view, result, method, written), method)
    view._value = result.value
    view.__dict__.pop("_stale", None)
    return view


def written_back(view_of: ViewOf, base: Any, view: Any, result: Any, method: str, written: Any) -> Any:
    """``base`` with ``view``'s elements holding ``result``."""
    from kiln.frontend.tensor import apply

    op, attrs = view_of.op, view_of.attrs
    if op == "tensor.transpose":
        perm = attrs.get("perm") or tuple(reversed(range(result.ndim)))
        return apply("tensor.transpose", result, perm=tuple(sorted(range(len(perm)), key=perm.__getitem__)))
    if op == "tensor.slice":
        from kiln.frontend.tensor_setitem import assigned

        axis = attrs["axis"] % base.ndim
        return assigned(base, (slice(None),) * axis + (slice(attrs["start"], attrs["stop"], attrs["step"]),), result)
    if op == "diagonal":
        return base.diagonal_scatter(result, **attrs)
    if op == "tensor.stop_gradient":  # x.detach().zero_(), x.data.copy_(v): x takes the values, none of their gradient
        values = apply("tensor.stop_gradient", result)  # and keeps its own path, as torch's grad_fn (identity to it)
        return values + (base - apply("tensor.stop_gradient", base)) if base.requires_grad else values
    if op == "tensor.broadcast_to" and overlapping(view):
        return _expanded_written_back(base, view, result, method, written)
    return apply("tensor.reshape", result, shape=tuple(base.shape))  # reshape, squeeze, unsqueeze, a size-1 expand


def _expanded_written_back(base: Any, view: Any, result: Any, method: str, written: Any) -> Any:
    """``fill_``/``zero_`` of a whole expanded view: one value everywhere, so the base takes its first elements."""
    if written is not None or method not in UNIFORM_WRITES:
        raise located_error(f"{method} writes through part of an expanded tensor ({view.type}, expanded from "
                            f"{base.type}): kiln can't follow that write to the base; clone() the expanded tensor "
                            "first, or write the base itself")
    lead = view.ndim - base.ndim
    picked = (0,) * lead + tuple(slice(0, 1) if size == 1 else slice(None) for size in base.shape)
    from kiln.frontend.tensor import apply

    return apply("tensor.reshape", result[picked], shape=tuple(base.shape))


def reshape_in_place(tensor: Any, result: Any) -> None:
    """``tensor`` becomes ``result`` (a view of it: ``t_``, ``squeeze_``), keeping its storage: its old self lives on
    as the base of ``result`` and of the views made from it before, so writes still reach all of them."""
    old = object.__new__(type(tensor))
    old.__dict__.update(tensor.__dict__)
    family = tensor.__dict__.get("_family")
    if family is not None and not family.of_parameter:
        family.members[id(old)] = old
        for member in list(family.members.values()):
            _repoint(member, tensor, old)
    view_of = result.__dict__.get("_view_of")
    for name in ("_indexed_from", "_layout", "_view_of", "_stale"):
        tensor.__dict__.pop(name, None)
    tensor._value = result.value
    if view_of is not None:
        tensor._view_of = view_of._replace(base=old)


def _repoint(member: Any, tensor: Any, old: Any) -> None:
    view_of = member.__dict__.get("_view_of")
    if view_of is not None and view_of.base is tensor:
        member._view_of = view_of._replace(base=old)
    indexed_from = member.__dict__.get("_indexed_from")
    if indexed_from is not None and indexed_from[0] is tensor:
        member._indexed_from = (old, indexed_from[1])
