"""``Module._get_name`` (what ``repr`` starts with; a subclass overriding it renames its printout, as torch's) and the
``_version`` class attribute a ``_load_from_state_dict`` override reads, as torch's."""

from __future__ import annotations

from oracles import require_torch


def _printed(lib):
    class Renamed(lib.nn.Linear):
        def _get_name(self):
            return "Projection"

    return repr(lib.nn.Sequential(Renamed(2, 3))), lib.nn.Linear(1, 1)._get_name(), lib.nn.Module._version


def test_get_name_and_version_as_torch():
    import kiln

    assert _printed(kiln) == _printed(require_torch())
