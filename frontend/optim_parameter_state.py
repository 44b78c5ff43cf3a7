"""``optimizer.state`` as ``torch.optim.Optimizer``'s: a ``defaultdict(dict)`` a user's optimizer indexes by parameter.

Kiln's own optimizers key their state by ``id(parameter)`` (arrays: ``optim_base.py``); a ``torch.optim.Optimizer``
subclass written for PyTorch (Barlow Twins' and VICReg's ``LARS``, LAMB, Lion) writes ``param_state = self.state[p]``,
``if 'mu' not in param_state: param_state['mu'] = torch.zeros_like(p)``. Both index the same entry here: a tensor key
stands for its id, and a missing key gives a new empty dict, as PyTorch's ``defaultdict(dict)``.

Such a ``step`` traced by ``kiln.compile`` runs its Python once, as ``torch.compile`` traces it, so kiln does what
torch.compile does to keep it right at every call:

- a value the user's code reads from a parameter group (``group['lr']``, ``g['weight_decay_filter']``) is guarded
  (``ParamGroup``): a schedule changing ``lr`` traces the step again, up to the compile's ``recompile_limit``, then it
  runs eagerly (torch.compile recompiles on a changed float the same way; kiln's own optimizers feed ``lr`` instead);
- a state tensor made in the trace from constants only (``torch.zeros_like(p)``) is stored as an eager tensor of its
  values, so the step's in-place updates of it (``mu.mul_(m).add_(dp)``) are written back at each call as any
  closure tensor's; one computed from other values (SAM's ``self.state[p]["old_p"] = p.data.clone()``) is stored as
  an eager tensor the trace writes in place with it, so each call leaves the step's value there, as torch's state.

```python
state = ParameterState()
state[p]["mu"] = kiln.zeros_like(p)       # a user's optimizer
state[id(p)]["mu"]                          # the same entry, as kiln's optimizers read it
```
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from kiln.frontend.tensor import Tensor


def _key(key: Any) -> Any:
    """A tensor (a parameter) stands for its id, as kiln's optimizers key it."""
    return id(key) if isinstance(key, Tensor) else key


def _tracing() -> bool:
    from kiln.frontend.trace import TraceContext  # lazily: the trace builds on the tensor

    return TraceContext.active() and not TraceContext.current().eager


def _kept(key: Any, value: Any) -> Any:
    """What the state keeps of ``value`` set in a trace: a traced tensor of known values as an eager tensor of them;
    one of unknown values refused (it has no values after the trace)."""
    from kiln.frontend.eager_values import eager_leaf, eager_value  # lazily: eager values build on the tensor
    from kiln.frontend.module import Parameter
    from kiln.frontend.trace import TraceContext, located_error
    from kiln.frontend.trace_known_values import known_value

    if isinstance(value, dict):
        return {name: _kept(name, item) for name, item in value.items()}
    if not isinstance(value, Tensor) or isinstance(value, Parameter) or eager_value(value) is not None or not _tracing():
        return value
    if _written_in_place(value):  # an eager state tensor the step updated in place (mu.mul_(m); state['mu'] = mu)
        return value
    known = known_value(value)
    if known is not None:
        return eager_leaf(np.array(known))
    if TraceContext.current().lifting is None:  # a trace whose closure tensors are not written back (kiln.trace)
        raise located_error(
            f"an optimizer's state[...][{key!r}] set to a tensor computed from other tensors in this trace: it has no "
            "values after the trace; make it from constants (torch.zeros_like(p)) and update it in place, or call "
            "this optimizer.step() outside the traced function")
    return _written_back(value)


def _written_back(value: Any) -> Any:
    """A state tensor computed in a ``kiln.compile`` trace (SAM's ``self.state[p]["old_p"] = p.data.clone()``): an
    eager tensor of its shape that the trace writes in place (``copy_``), so each call leaves the step's value in it,
    as the step's in-place updates of a closure tensor are written back; the trace reads the value it was given."""
    from kiln.frontend.eager_values import eager_leaf  # lazily: eager values build on the tensor

    holder = eager_leaf(np.zeros(tuple(value.shape), value.dtype.numpy))
    holder.copy_(value)
    return holder


def _written_in_place(tensor: Any) -> bool:
    """Whether ``tensor`` is an eager tensor from outside the trace that it wrote in place: written back after each
    call (``frontend/lifted_tensors.py``), so it has its values then."""
    from kiln.frontend.trace import TraceContext

    lifting = TraceContext.current().lifting
    return lifting is not None and id(tensor) in lifting.written


class StateEntry(dict):
    """One parameter's state: a dict whose tensors set in a trace are kept as ``_kept`` says. Read by the user's
    code (not kiln's), a kiln optimizer's state array comes as a ``TorchArray`` of the same memory, so it answers as
    torch's state tensor does: ``state["exp_avg"].norm()``, and ``state["exp_avg"].mul_(0.5)`` writes the state."""

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, _kept(key, value))

    def __getitem__(self, key: Any) -> Any:
        return _as_read(dict.__getitem__(self, key), _read_by_user())

    def get(self, key: Any, default: Any = None) -> Any:
        return _as_read(dict.__getitem__(self, key), _read_by_user()) if key in self else default

    def values(self) -> Any:
        user = _read_by_user()
        return [_as_read(value, user) for value in dict.values(self)] if user else dict.values(self)

    def items(self) -> Any:
        user = _read_by_user()
        return [(key, _as_read(value, user)) for key, value in dict.items(self)] if user else dict.items(self)


def _as_read(value: Any, user: bool) -> Any:
    """``value``, a plain array seen as a ``TorchArray`` (the same memory) when the user's code reads it."""
    from kiln.frontend.torch_array import torch_array

    return torch_array(value) if user and type(value) is np.ndarray else value


class ParamGroup(dict):
    """An optimizer's parameter group: the values a user's code reads from it in a ``kiln.compile`` trace are guarded
    (the step traces again where one changed), as ``torch.compile`` guards them; kiln's own reads are not (its
    optimizers feed ``lr`` to the graph and guard their options by ``signature()``)."""

    def __getitem__(self, key: Any) -> Any:
        return self._read(key, dict.__getitem__(self, key))

    def get(self, key: Any, default: Any = None) -> Any:
        return self._read(key, dict.__getitem__(self, key)) if key in self else default

    def _read(self, key: Any, value: Any) -> Any:
        if _tracing() and _read_by_user(depth=3):
            _guard(self, key, value)
        return value


def _read_by_user(depth: int = 2) -> bool:
    """Whether the read comes from outside kiln (a user's optimizer's ``step``, a user reading ``state[p]``): the
    frame ``depth`` up from here, the caller of the ``__getitem__`` / ``get`` that asks (a ``StateEntry``'s calls
    this directly, a ``ParamGroup``'s through ``_read``: ``depth=3``)."""
    from kiln.frontend.trace import _inside_kiln

    return not _inside_kiln(sys._getframe(depth).f_code.co_filename)


def _guard(group: ParamGroup, key: Any, value: Any) -> None:
    """Make the traced step's variant hold only while ``group[key]`` is what the trace read."""
    from kiln.frontend.trace import TraceContext

    capture = TraceContext.current().step_capture
    if capture is None or key == "params" or (id(group), key) in capture.group_reads:
        return
    capture.group_reads.add((id(group), key))
    plain = value is None or isinstance(value, (bool, int, float, str, tuple))
    capture.guards.append(lambda: _same(dict.get(group, key, _ABSENT), value, plain))


_ABSENT = object()


def _same(current: Any, traced: Any, plain: bool) -> bool:
    """Equal plain values (numbers, strings, tuples of them), else the very object."""
    if current is traced:
        return True
    try:
        return plain and type(current) is type(traced) and bool(current == traced)
    except Exception:  # a tuple holding tensors: only itself
        return False


class ParameterState(dict):
    """A dict of per-parameter state keyed by ``id(parameter)``, indexed by the parameter too; a missing entry is a new
    empty dict (PyTorch's ``defaultdict(dict)``)."""

    def __init__(self, entries: Any = ()) -> None:
        dict.__init__(self)
        for key, value in dict(entries).items():
            self[key] = value

    def __missing__(self, key: Any) -> dict[str, Any]:
        entry = StateEntry()
        dict.__setitem__(self, key, entry)
        return entry

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, _key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, _key(key), StateEntry(_kept(key, value)) if isinstance(value, dict) else value)

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, _key(key))

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, _key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, _key(key), default)

    def pop(self, key: Any, *default: Any) -> Any:
        return dict.pop(self, _key(key), *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return dict.setdefault(self, _key(key), default)


__all__ = ["ParamGroup", "ParameterState", "StateEntry"]
