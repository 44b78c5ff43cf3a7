"""``view_as_real(z)`` is a new tensor in kiln (the parts stacked), a view sharing z's memory in torch: a write to it
(or to a view or an index of it) changed z in torch and nothing in kiln, silently. kiln now refuses that write, saying
what to write instead (``frontend/view_writes.py``'s ``check_overlap``); reads, and writes to a ``clone()``, are
torch's. Checked against torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

WRITES = {
    "index assignment": lambda r: r.__setitem__((..., 1), 0.0),
    "add_": lambda r: r.add_(1),
    "fill_ of a row": lambda r: r[0].fill_(1),
    "index assignment through flatten": lambda r: r.flatten(1).__setitem__((0, 0), 1.0),
}


def _z(lib):
    return lib.view_as_complex(lib.arange(8.).reshape(2, 2, 2))


@pytest.mark.parametrize("write", WRITES)
def test_a_write_to_view_as_real_that_torch_follows_to_z_is_refused_saying_what_to_do(write):
    torch = require_torch()
    z = _z(torch)
    before = z.clone()
    WRITES[write](torch.view_as_real(z))
    assert not torch.equal(z, before)  # torch's write reached z; kiln's would not have
    with pytest.raises(kiln.TraceError, match=r"view_as_real\(z\) is a new tensor in kiln.*z\.real or z\.imag.*clone"):
        WRITES[write](kiln.view_as_real(_z(kiln)))


def test_reads_and_a_written_clone_are_torchs():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        z = _z(lib)
        copy = lib.view_as_real(z).clone()
        copy[..., 1] = 0.0
        reads = lib.view_as_real(z * 1j).flatten(1), copy, lib.view_as_real(z)
        results.append([np.asarray(t) for t in reads])
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)
