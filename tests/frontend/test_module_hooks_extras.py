"""``kiln.utils.hooks.RemovableHandle`` for hook registries of the user's own, as torch's: ``remove()`` and the
context manager take the hook (and its ``extra_dict`` entry) away; ``unserializable_hook`` marks a hook."""

from __future__ import annotations

from collections import OrderedDict

import kiln
from oracles import libraries


class _Registry(dict):
    """A dict torch can take a weak reference to (its handle holds its registries weakly)."""


def _registries_after(name):
    lib = libraries(name)[0]
    hooks, extra = OrderedDict(), _Registry()
    first = lib.utils.hooks.RemovableHandle(hooks, extra_dict=extra)
    hooks[first.id], extra[first.id] = print, True
    second = lib.utils.hooks.RemovableHandle(hooks)
    hooks[second.id] = repr
    with second:
        inside = (len(hooks), len(extra))
    after_context = (len(hooks), len(extra))
    first.remove()
    return inside, after_context, (len(hooks), len(extra)), first.id != second.id


def test_user_registries_as_torchs():
    assert _registries_after("kiln") == _registries_after("torch") == ((2, 1), (1, 1), (0, 0), True)


def test_unserializable_hook_marks_the_function():
    hook = kiln.utils.hooks.unserializable_hook(lambda grad: grad)
    assert hook.__torch_unserializable__ is True
