"""An ``index_put`` source of another dtype than the destination's: torch's ``index_put_``/``index_put`` and an index
assignment with an advanced index (``t[idx] = src``: index tensors, lists, arrays, bool masks) refuse it with
"Index put requires the source and destination dtypes match, got Float for the destination and Double for the
source."; a basic index (``t[1:3] = src``, ``t[0] = src``) and one bool mask with a single value (torch's
``masked_fill_``) cast it (``frontend/index_put_dtype_checks.py``). kiln cast the source everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch


def _assign(t, index, source):
    t[index] = source
    return t


MASK = [True, False, True, False]
WRITES = {
    "index_put_": lambda lib, t, s: t.index_put_((lib.tensor([0, 2]),), s),
    "index_put": lambda lib, t, s: t.index_put((lib.tensor([0, 2]),), s),
    "torch.index_put": lambda lib, t, s: lib.index_put(t, (lib.tensor([0, 2]),), s),
    "index_put_accumulate": lambda lib, t, s: t.index_put_((lib.tensor([0, 0]),), s, accumulate=True),
    "index_put_mask": lambda lib, t, s: t.index_put_((lib.tensor(MASK),), s),
    "index_put_mask_one_value": lambda lib, t, s: t.index_put_((lib.tensor(MASK),), s[:1]),
    "index_put_one_value": lambda lib, t, s: t.index_put_((lib.tensor([0, 2]),), s[0]),
    "setitem_tensor": lambda lib, t, s: _assign(t, lib.tensor([0, 2]), s),
    "setitem_list": lambda lib, t, s: _assign(t, [0, 2], s),
    "setitem_array": lambda lib, t, s: _assign(t, np.array([0, 2]), s),
    "setitem_one_value": lambda lib, t, s: _assign(t, lib.tensor([0, 2]), s[0]),
    "setitem_mask": lambda lib, t, s: _assign(t, lib.tensor(MASK), s),
    "setitem_mask_one_value": lambda lib, t, s: _assign(t, lib.tensor(MASK), s[0]),
    "setitem_mask_tuple_one_value": lambda lib, t, s: _assign(t, (lib.tensor(MASK),), s[:1]),
    "setitem_slice": lambda lib, t, s: _assign(t, slice(1, 3), s),
    "setitem_int": lambda lib, t, s: _assign(t, 1, s[0]),
    "setitem_0d_index": lambda lib, t, s: _assign(t, lib.tensor(1), s[0]),
    "setitem_ellipsis": lambda lib, t, s: _assign(t, (Ellipsis, slice(0, 2)), s),
    "setitem_view": lambda lib, t, s: _assign(t[1:], slice(0, 2), s),
}
GRID_WRITES = {
    "setitem_rows_cols": lambda lib, t, s: _assign(t, (lib.tensor([0, 1]), lib.tensor([1, 2])), s),
    "setitem_rows_slice": lambda lib, t, s: _assign(t, (lib.tensor([0, 2]), slice(0, 2)), s),
    "setitem_slice_list": lambda lib, t, s: _assign(t, (slice(None), [0, 2]), s[0]),
    "setitem_int_rows": lambda lib, t, s: _assign(t, (0, lib.tensor([0, 2])), s),
    "setitem_mask_int_one_value": lambda lib, t, s: _assign(t, (lib.tensor([True, False, True]), 0), s[0]),
    "setitem_leading_mask": lambda lib, t, s: _assign(t, lib.tensor([True, False, True]), s),
}
DTYPES = [("float32", "float64"), ("float64", "float32"), ("int64", "float32"), ("float32", "int64"),
          ("int32", "int64"), ("float16", "float32"), ("bool", "float32"), ("float32", "float32")]


def _outcome(library: str, write, destination: str, source: str, shape: tuple[int, ...]):
    """The written values, or the error's type and message."""
    lib, _, _ = libraries(library)
    t = lib.zeros(*shape, dtype=getattr(lib, destination))
    s = lib.tensor([1.0, 2.0]).to(getattr(lib, source))
    try:
        written = write(lib, t, s)
    except RuntimeError as error:
        return "RuntimeError", str(error).splitlines()[-1].strip()
    return np.asarray(t if written is None else written).tolist()


@pytest.mark.parametrize("destination, source", DTYPES, ids=["-".join(pair) for pair in DTYPES])
@pytest.mark.parametrize("name", sorted(WRITES) + sorted(GRID_WRITES))
def test_a_source_of_another_dtype_is_refused_or_cast_as_torchs(name, destination, source):
    require_torch()
    write, shape = (WRITES[name], (4,)) if name in WRITES else (GRID_WRITES[name], (3, 2 if "rows_slice" in name
                                                                                      or "leading" in name else 3))
    kiln_outcome, torch_outcome = (_outcome(library, write, destination, source, shape) for library in ("kiln", "torch"))
    if isinstance(torch_outcome, tuple):  # torch's RuntimeError: kiln's says the same, then what to do
        assert isinstance(kiln_outcome, tuple) and kiln_outcome[1].startswith(torch_outcome[1]), (kiln_outcome, torch_outcome)
    else:
        assert kiln_outcome == torch_outcome


def test_accumulate_writes_no_masked_fill_so_one_value_of_another_dtype_is_refused_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        with pytest.raises(RuntimeError, match="got Float for the destination and Double for the source"):
            lib.zeros(4).index_put_((lib.tensor(MASK),), lib.tensor([1.5], dtype=lib.float64), accumulate=True)
