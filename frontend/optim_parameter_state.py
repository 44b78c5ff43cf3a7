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
  an eager tensor the trace writes in place with it, so each call leaves the step's value there, as torch's state;
  the input that read the entry's tensor before is fed from the entry at each call (Shampoo's
  ``state["momentum_buffer"] = grad``, read by the next step), as torch.compile reads the dict anew;
- what the trace saw of an entry is guarded, as torch.compile guards the dict (``_EntryGuard``): its keys (Lion's
  ``if len(state) == 0:`` initialisation runs in the first call's trace only, so the second call traces again), its
  plain values (transformers' Adafactor's ``state["step"]``, an int) and which tensors it holds (a
  ``load_state_dict`` replacing them); and what the trace stores in an entry is undone when it ends and stored
  again after each call (``state["step"] += 1``, a tensor the trace made), as torch.compile replays a dict's
  mutations, so a call that reuses the trace, running no Python, leaves the state as the Python would.

A kiln optimizer's entry also shows torch's ``state[p]["step"]`` to the user's code (``StateEntry``): computed from
the optimizer's count of the parameter's updates, which a write of ``step`` sets.

```python
state = ParameterState()
state[p]["mu"] = kiln.zeros_like(p)       # a user's optimizer
state[id(p)]["mu"]                          # the same entry, as kiln's optimizers read it
```
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import called_from_user


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
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.trace import TraceContext, located_error
    from kiln.frontend.trace_known_values import known_value

    if isinstance(value, dict):
        return {name: _kept(name, item) for name, item in value.items()}
    if not isinstance(value, Tensor) or isinstance(value, ArrayLeaf) or eager_value(value) is not None or not _tracing():
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


class StepCounter:
    """A kiln optimizer's per-parameter step counts, as torch's ``state[p]["step"]``: called with a parameter's key, the
    updates it made of that parameter, or None where torch's state keeps no ``step`` (SGD, Muon, L-BFGS, a user's
    optimizer that counts its own); ``set(key, n)`` makes that count ``n`` (``Optimizer.torch_step``,
    ``Optimizer.set_torch_step``). It holds the optimizer weakly: the optimizer holds its state."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = weakref.ref(optimizer)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied with the optimizer (a copied optimizer's state counts the copy's steps)."""
        return StepCounter, (self.optimizer(),)

    def __call__(self, key: Any) -> int | None:
        optimizer = self.optimizer()
        return None if optimizer is None else optimizer.torch_step(key)

    def set(self, key: Any, count: int) -> None:
        optimizer = self.optimizer()
        if optimizer is not None:
            optimizer.set_torch_step(key, count)

    def as_int(self) -> bool:
        """Whether torch keeps the count as a Python int (SparseAdam), not a 0-d float tensor."""
        return bool(getattr(self.optimizer(), "torch_step_is_int", False))


class StateEntry(dict):
    """One parameter's state: a dict whose tensors set in a trace are kept as ``_kept`` says. Read by the user's
    code (not kiln's), a kiln optimizer's state array comes as a ``TorchArray`` of the same memory, so it answers as
    torch's state tensor does: ``state["exp_avg"].norm()``, and ``state["exp_avg"].mul_(0.5)`` writes the state.

    The user's code sees torch's ``step`` too (a 0-d float tensor): kiln counts a parameter's updates once per
    optimizer (``Optimizer.step_count`` less its ``skipped_steps``), not per entry, so ``step`` is computed from that
    count (``counter``) when read, and a write sets the count. kiln's own code sees the arrays only, so its
    checkpoints and updates are unchanged."""

    counter: _BoundCounter | None = None
    """This parameter's own step count (``StepCounter`` bound to its key), set by the ``ParameterState`` holding it."""

    def __setitem__(self, key: Any, value: Any) -> None:
        user = _seen_by_user(self)
        if key == "step" and self._counts_steps():
            _set_step(self, value)
        else:
            kept = _kept(key, value)
            if user and _tracing():
                _stored_in_trace(self, key, value, kept)
            dict.__setitem__(self, key, kept)

    def __getitem__(self, key: Any) -> Any:
        user = _seen_by_user(self)
        if user and key == "step" and self._shows_step():
            return _step_tensor(self)
        return _as_read(dict.__getitem__(self, key), user)

    def get(self, key: Any, default: Any = None) -> Any:
        user = _seen_by_user(self)
        if user and key == "step" and self._shows_step():
            return _step_tensor(self)
        return _as_read(dict.__getitem__(self, key), user) if dict.__contains__(self, key) else default

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (key == "step" and _seen_by_user(self) and self._shows_step())

    def __iter__(self) -> Any:
        return iter(self._keys(_seen_by_user(self)))

    def __len__(self) -> int:
        return dict.__len__(self) + (_seen_by_user(self) and self._shows_step())

    def keys(self) -> Any:
        return self._keys(_seen_by_user(self))

    def values(self) -> Any:
        return [value for _, value in self._items(True)] if _seen_by_user(self) else dict.values(self)

    def items(self) -> Any:
        return self._items(True) if _seen_by_user(self) else dict.items(self)

    def __repr__(self) -> str:
        return repr(dict(self._items(True))) if called_from_user() else dict.__repr__(self)

    def _keys(self, user: bool) -> Any:
        return ["step", *dict.keys(self)] if user and self._shows_step() else dict.keys(self)

    def _items(self, user: bool) -> list[tuple[Any, Any]]:
        """The user's view: ``step`` first (torch's order), each array as a ``TorchArray``."""
        step = [("step", _step_tensor(self))] if user and self._shows_step() else []
        return step + [(key, _as_read(value, user)) for key, value in dict.items(self)]

    def _counts_steps(self) -> bool:
        return self.counter is not None and self.counter() is not None and not dict.__contains__(self, "step")

    def _shows_step(self) -> bool:
        """Whether torch's state would hold ``step``: a kiln optimizer counting steps that updated the parameter (its
        state exists from the first update on, as torch's)."""
        return dict.__len__(self) > 0 and self._counts_steps()


def _seen_by_user(entry: StateEntry) -> bool:
    """Whether the caller of ``entry``'s method (two frames up) is the user's code; if so, inside a ``kiln.compile``
    trace, the entry as it was before the trace is guarded (``_EntryGuard``)."""
    user = called_from_user(depth=3)
    if user and _tracing():
        _EntryGuard.of(entry)
    return user


class _EntryGuard:
    """What a trace saw of one state entry, checked before each call that would reuse the trace (``StepCapture``'s
    guards), as ``torch.compile`` guards a dict its code reads: the entry is still its optimizer's, with the keys,
    plain values and tensors it had when the trace first touched it (before any store of the trace). The keys whose
    tensor the trace replaced by one it computed are left out of the last (``follow``). When the trace ends the
    entry gets those contents back (``restore``: the call that traced runs the graph from them), and after each call
    the contents the trace left (``replay``)."""

    def __init__(self, entry: StateEntry) -> None:
        self.entry, self.before, self.followed = entry, dict(dict.items(entry)), set()
        self.after: dict[Any, Any] = self.before
        self.owner = _owner_now(entry)

    @staticmethod
    def of(entry: StateEntry) -> _EntryGuard | None:
        """The trace's guard of ``entry``, made (and added to the step's guards) on first touch; None outside a
        ``kiln.compile``d step."""
        from kiln.frontend.trace import TraceContext

        capture = TraceContext.current().step_capture
        if capture is None or not _of_users_optimizer(entry):
            return None
        guard = capture.state_entries.get(id(entry))
        if guard is None:
            guard = capture.state_entries[id(entry)] = _EntryGuard(entry)
            capture.guards.append(guard.holds)
            capture.after_call.append(guard.replay)
        return guard

    def restore(self) -> None:
        """At the trace's end: keep what it left in the entry, and give the entry its contents from before."""
        self.after = dict(dict.items(self.entry))
        _refill(self.entry, self.before)

    def replay(self) -> None:
        """After each call: the entry as the trace left it (its plain values, its tensors: the graph wrote their new
        values)."""
        _refill(self.entry, self.after)

    def follow(self, key: Any, old: Any) -> None:
        """The trace stored a tensor it computed at ``key``, in place of ``old``: an input that read ``old`` is fed
        from the entry at each call (the last call's tensor there), so the entry's tensor there is not guarded."""
        from kiln.frontend.trace import TraceContext

        self.followed.add(key)
        lifting = TraceContext.current().lifting
        if isinstance(old, Tensor) and lifting is not None:
            lifting.follow(old, lambda entry=self.entry: dict.get(entry, key))

    def describe(self) -> str:
        """What changed since the trace, for the recompile-limit message: the keys, or the values that differ."""
        optimizer = type(self.entry.counter.counter.optimizer()).__name__ if self.entry.counter is not None else "an optimizer"
        entry = f"{optimizer}'s state[p]"
        if dict.keys(self.entry) != self.before.keys():
            return f"the keys of {entry} ({sorted(map(str, self.before))}, now {sorted(map(str, dict.keys(self.entry)))})"
        changed = [key for key, value in self.before.items()
                   if key not in self.followed and not _same_item(dict.__getitem__(self.entry, key), value)]
        return ", ".join(f"{entry}[{key!r}] ({_shown(self.before[key])}, now {_shown(dict.__getitem__(self.entry, key))})"
                         for key in changed) or f"the optimizer holding {entry}"

    def holds(self) -> bool:
        entry = self.entry
        if _owner_now(entry) is not self.owner or dict.keys(entry) != self.before.keys():
            return False
        return all(key in self.followed or _same_item(dict.__getitem__(entry, key), value)
                   for key, value in self.before.items())


def _shown(value: Any) -> str:
    """A plain value as it is, a tensor or array by its type (``_EntryGuard.describe``)."""
    return repr(value) if value is None or isinstance(value, (bool, int, float, str)) else f"a new {type(value).__name__}"


def _refill(entry: StateEntry, contents: dict[Any, Any]) -> None:
    dict.clear(entry)
    dict.update(entry, contents)


def _of_users_optimizer(entry: StateEntry) -> bool:
    """Whether ``entry`` is the state of a user's optimizer (its ``step`` keeps what it likes there); a kiln
    optimizer's state arrays are the compiled update's inputs and outputs (``runtime/step_capture.py``)."""
    optimizer = entry.counter.counter.optimizer() if entry.counter is not None else None
    return optimizer is not None and optimizer.updates_in_own_step()


def _owner_now(entry: StateEntry) -> Any:
    """The optimizer state holding ``entry`` now (None: none; a ``load_state_dict`` makes new entries)."""
    counter = entry.counter
    optimizer = counter.counter.optimizer() if counter is not None else None
    state = getattr(optimizer, "state", None)
    return state if isinstance(state, dict) and dict.get(state, counter.key) is entry else None  # type: ignore[union-attr]


def _same_item(current: Any, traced: Any) -> bool:
    """A tensor or array: the very object; a plain value: an equal one (``_same``)."""
    if isinstance(traced, (Tensor, np.ndarray)):
        return current is traced
    return _same(current, traced, traced is None or isinstance(traced, (bool, int, float, str, tuple)))


def _stored_in_trace(entry: StateEntry, key: Any, value: Any, kept: Any) -> None:
    """The user's ``state[key] = value`` in a ``kiln.compile`` trace (``kept``: what the entry keeps): a tensor the
    trace computed (``_written_back``'s holder, which the graph writes at each call) is followed
    (``_EntryGuard.follow``)."""
    guard = _EntryGuard.of(entry)
    if guard is not None and isinstance(kept, Tensor) and kept is not value and _written_in_place(kept):
        guard.follow(key, dict.get(entry, key))


def _step_tensor(entry: StateEntry) -> Any:
    """The parameter's own step count as torch's ``state[p]["step"]``: a 0-d tensor in ``torch_scalar_dtype`` (float32,
    or float64 under a float64 default dtype) of the optimizer's live step array (``Optimizer.live_step``), which
    each later step rewrites as torch's in-place ``step`` update. Inside a ``kiln.compile`` trace it would be a
    constant of the traced count: refused there."""
    from kiln.frontend.eager_values import eager_leaf  # lazily: eager values build on the tensor

    _refuse_in_trace("read")
    counter = entry.counter
    assert counter is not None  # _shows_step said so
    return counter() if counter.as_int() else eager_leaf(counter.live())


def _set_step(entry: StateEntry, value: Any) -> None:
    """``state[p]["step"] = n`` (warm-restart code resetting Adam): the parameter's own count becomes ``n``, which its
    next update's bias correction reads, eager or compiled (``Optimizer.set_torch_step``)."""
    _refuse_in_trace("set")
    number = float(np.asarray(value.detach() if isinstance(value, Tensor) else value))
    if not number.is_integer() or number < 0:
        raise ValueError(f"optimizer.state[p]['step'] counts the parameter's updates: a whole number >= 0, got {value!r}")
    entry.counter.set(int(number))  # type: ignore[union-attr]  (_counts_steps said so)


def _refuse_in_trace(verb: str) -> None:
    from kiln.frontend.trace import located_error

    if _tracing():
        raise located_error(
            f"optimizer.state[p]['step'] {verb} inside a compiled function: kiln counts steps per optimizer, and the "
            "traced count would not change between calls; use it outside the compiled function (or read "
            "optimizer.step_count)")


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
        if _tracing() and called_from_user(depth=3):
            _guard(self, key, value)
        return value


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
    empty dict (PyTorch's ``defaultdict(dict)``). The user's code iterating it sees the parameters as keys, as
    torch's (``_seen_by_user``)."""

    def __init__(self, entries: Any = (), counter: StepCounter | None = None) -> None:
        dict.__init__(self)
        self.counter = counter
        """Each parameter's own step count, shown as its entry's ``step`` (``StateEntry``)."""
        for key, value in dict(entries).items():
            self[key] = value

    def __missing__(self, key: Any) -> dict[str, Any]:
        entry = self._linked(StateEntry(), key)
        dict.__setitem__(self, key, entry)
        return entry

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied as its entries and counter, so the entries are linked to the counter when rebuilt (a
        dict subclass's default rebuilds its items before its attributes)."""
        return ParameterState, ({key: dict(dict.items(entry)) if isinstance(entry, StateEntry) else entry
                                 for key, entry in dict.items(self)}, self.counter)

    def _linked(self, entry: Any, key: Any) -> Any:
        """``entry``, told how to count its parameter's steps."""
        if isinstance(entry, StateEntry) and self.counter is not None:
            entry.counter = _BoundCounter(self.counter, key)
            if dict.__contains__(entry, "step") and entry.counter() is not None:  # state[p] = {"step": ..., ...}
                StateEntry.__setitem__(entry, "step", dict.pop(entry, "step"))
        return entry

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, _key(key))

    def __iter__(self) -> Any:
        return iter(self._seen_by_user()) if called_from_user() else dict.__iter__(self)

    def keys(self) -> Any:
        return self._seen_by_user().keys() if called_from_user() else dict.keys(self)

    def items(self) -> Any:
        return self._seen_by_user().items() if called_from_user() else dict.items(self)

    def _seen_by_user(self) -> dict[Any, Any]:
        """The entries keyed as torch's ``defaultdict`` keys them, by parameter (``for p, s in
        optimizer.state.items()``); kiln's own code sees its ``id(parameter)`` keys. A key of no parameter of the
        optimizer stays as it is."""
        parameters = self._parameters_by_id()
        return {parameters.get(key, key): entry for key, entry in dict.items(self)}

    def _parameters_by_id(self) -> dict[int, Any]:
        optimizer = self.counter.optimizer() if self.counter is not None else None
        return {id(p): p for group in getattr(optimizer, "param_groups", ()) for p in group["params"]}

    def __setitem__(self, key: Any, value: Any) -> None:
        entry = StateEntry(_kept(key, value)) if isinstance(value, dict) else value
        dict.__setitem__(self, _key(key), self._linked(entry, _key(key)))

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


class _BoundCounter:
    """A ``StepCounter`` bound to one parameter's key: called, its count; ``set(n)``, a new count."""

    def __init__(self, counter: StepCounter, key: Any) -> None:
        self.counter, self.key = counter, key

    def __call__(self) -> int | None:
        return self.counter(self.key)

    def set(self, count: int) -> None:
        self.counter.set(self.key, count)

    def as_int(self) -> bool:
        return self.counter.as_int()

    def live(self) -> np.ndarray:
        """The optimizer's live step array of this parameter (``Optimizer.live_step``)."""
        return self.counter.optimizer().live_step(self.key)  # type: ignore[union-attr]  (counting: it is alive)


__all__ = ["ParamGroup", "ParameterState", "StateEntry", "StepCounter"]
