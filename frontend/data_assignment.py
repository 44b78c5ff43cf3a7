"""PyTorch's ``x.data = y`` on a tensor (a ``Parameter``'s is in ``frontend/module.py``).

Python runs ``x.data += y`` as ``alias = x.data; alias += y; x.data = alias`` (BigGAN's ``ortho`` writes
``param.grad.data += strength * grad``): the in-place add already wrote ``x`` through the alias (a view of ``x``),
so giving ``x`` its own alias back changes nothing. Any other tensor's values become ``x``'s, detached from the
graph, as PyTorch's; ``x`` keeps its identity and ``requires_grad``. Where the shape and dtype stay, the values
are copied in (PyTorch shares ``y``'s storage instead: a later write to ``y`` is not seen in ``x`` here, and ``x``'s
views follow the new values; in PyTorch they keep the old storage). With another shape or dtype ``x`` takes storage
of its own and its views keep the old one, as PyTorch's."""

from __future__ import annotations

from typing import Any

from kiln.frontend.legacy_variable import VariableDataError
from kiln.frontend.trace import located_error
from kiln.frontend.view_writes import own_storage, reshape_in_place


def assign_data(tensor: Any, new: Any) -> None:
    """``tensor.data = new``: ``new``'s values, shape and dtype, without its history."""
    if not hasattr(new, "detach") or not hasattr(new, "value"):
        raise located_error(f"Variable data has to be a tensor, but got {type(new).__name__} (PyTorch's TypeError; "
                            "assign a tensor: x.data = torch.tensor(value))", kind=VariableDataError)
    if _is_own_alias(tensor, new):
        return
    if tuple(new.shape) == tuple(tensor.shape) and new.dtype == tensor.dtype:
        tensor.data.copy_(new)  # through the alias: a write PyTorch's autograd does not see, as a rebinding
        return
    fresh = own_storage(new.detach(), new)  # another shape or dtype: storage of its own
    reshape_in_place(tensor, fresh)  # the views of tensor keep the old storage (their base is its old self now)
    own_storage(tensor, fresh)  # and tensor leaves their family, as PyTorch's, whose old views keep the old storage


def _is_own_alias(tensor: Any, new: Any) -> bool:
    """Whether ``new`` is a ``tensor.data`` (a write through it already reached ``tensor``)."""
    view_of = new.__dict__.get("_view_of")
    return "_data_alias" in new.__dict__ and view_of is not None and view_of.base is tensor
