"""PyTorch keeps one version counter per storage: an in-place write through any view of a tensor (``m[1].div_(2)``)
counts on every view of it, including views the write left alone (``m[0]``) and views already collected whose values a
backward saved. ``backward()`` then refuses a graph that saved any of them before the write, and accepts one that read
them after it (``frontend/version_counter.py``'s ``counted_writes``). kiln counted only the views whose values changed,
so it computed gradients where torch refuses (timm's ``drop_path`` on popped rows of one mask tensor, written by
``div_``) and refused a view read after a disjoint write, where torch computes them."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

SPLITS = {
    "unbind": lambda m: list(m.unbind(0)),
    "index": lambda m: [m[0], m[1]],
    "slice": lambda m: [m[0:1], m[1:2]],
    "chunk": lambda m: list(m.chunk(2, 0)),
}


def _run(lib, split, program):
    """``program(x, pieces)`` on a leaf ``x`` requiring grad and the pieces of ``m`` (2 x 3): the loss's value and
    ``x.grad``, or the RuntimeError ``backward()`` raised."""
    m = lib.tensor(np.arange(1.0, 7.0).reshape(2, 3))
    x = lib.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    loss = program(lib, x, SPLITS[split](m))
    try:
        loss.backward()
    except RuntimeError as error:
        return error
    return loss.item(), np.array(x.grad.numpy()), np.array(m.numpy())


def written_view_collected_then_sibling_written(lib, x, pieces):
    """timm's drop_path with fed mask rows: each row popped, divided in place, multiplied in, then dropped."""
    y = x
    for _ in range(2):
        row = pieces.pop(0)
        row.div_(0.5)
        y = y * row
    return y.sum()


def written_view_kept_then_sibling_written(lib, x, pieces):
    a, b = pieces
    a.div_(2)
    y = (x * a).sum()
    b.div_(2)
    return y


def view_saved_then_sibling_written(lib, x, pieces):
    a, b = pieces
    y = (x * a).sum()
    b.mul_(3)
    return y


def view_read_after_sibling_written(lib, x, pieces):
    a, b = pieces
    b.div_(2)
    return (x * a).sum()


def written_view_read_after_sibling_written(lib, x, pieces):
    a, b = pieces
    a.div_(2)
    b.div_(2)
    return (x * a * b).sum()


def view_saved_then_base_written_then_read_again(lib, x, pieces):
    a, b = pieces
    b.add_(1)
    y = (x * a).sum()
    a.mul_(2)
    return (x * a).sum() + y.detach()


PROGRAMS = [written_view_collected_then_sibling_written, written_view_kept_then_sibling_written,
            view_saved_then_sibling_written, view_read_after_sibling_written, written_view_read_after_sibling_written,
            view_saved_then_base_written_then_read_again]
REFUSED = {written_view_collected_then_sibling_written, written_view_kept_then_sibling_written,
           view_saved_then_sibling_written}


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("program", PROGRAMS, ids=lambda program: program.__name__)
def test_backward_after_a_write_to_a_shared_storage_as_torch(split, program):
    torch = require_torch()
    ours, theirs = _run(kiln, split, program), _run(torch, split, program)
    assert isinstance(theirs, RuntimeError) == (program in REFUSED), theirs
    if isinstance(theirs, RuntimeError):
        assert isinstance(ours, RuntimeError), f"kiln computed {ours} where torch refused: {theirs}"
        assert "modified by an inplace operation" in str(ours)
        return
    assert not isinstance(ours, RuntimeError), ours
    for mine, torchs in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, torchs, rtol=1e-12)
