"""More index items than a tensor has dims: torch's ``IndexError`` with its words, under the user's line, for reads and
writes, basic and advanced indexing (``frontend/index_bounds_checks.py``: ``too_many_indices``). SAM's automatic mask
generator meets it when a crop keeps no mask: ``torch.tensor([])`` is 1-d and ``box_area`` reads ``boxes[:, 2]``;
kiln raised a ``TraceError`` (a ``RuntimeError``) naming its IR type, which ``except IndexError`` missed."""

from __future__ import annotations

import pytest

from oracles import libraries, require_torch


def _write(lib, shape, index):
    x = lib.zeros(shape)
    x[index] = 1.0


CASES = {
    "slice and int into 1-d": (lambda lib: lib.tensor([])[:, 2]),
    "three ints into 2-d": (lambda lib: lib.zeros(2, 3)[0, 1, 2]),
    "int into 0-d": (lambda lib: lib.tensor(1.0)[0]),
    "None then int into 0-d": (lambda lib: lib.tensor(1.0)[None, 0]),
    "ellipsis between ints": (lambda lib: lib.zeros(3)[0, ..., 1]),
    "two index lists into 1-d": (lambda lib: lib.zeros(3)[[0], [1]]),
    "write through a slice and int": (lambda lib: _write(lib, (3,), (slice(None), 1))),
    "write into 0-d": (lambda lib: _write(lib, (), 0)),
    "write through two index lists": (lambda lib: _write(lib, (3,), ([0], [1]))),
}


@pytest.mark.parametrize("case", CASES)
def test_too_many_indices_as_torch(case):
    require_torch()
    messages = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        with pytest.raises(IndexError) as raised:
            CASES[case](lib)
        messages[name] = str(raised.value)
    assert messages["kiln"].endswith(messages["torch"]), messages
    assert "test_too_many_indices_vs_torch.py" in messages["kiln"]
