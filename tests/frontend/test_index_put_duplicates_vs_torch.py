"""``x[i, j] = v`` / ``index_put`` with repeated positions: the last write stays, as PyTorch's CPU kernel (and NumPy)
writes them in order; kiln wrote their mean, a value no torch run gives (YOLOv5's ``tobj[b, a, gj, gi] = iou`` where two
targets fall in one grid cell). Each value's gradient is the gradient at its position, duplicates' too, as torch's.
Eagerly, traced (``kiln.compile``) and in a compiled training step; values of every dtype; rows (trailing dims)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

ROWS, COLUMNS = np.array([0, 0, 1, 0, 1]), np.array([1, 1, 2, 1, 2])  # (0, 1) three times, (1, 2) twice
VALUES = np.array([0.1, 0.2, 0.3, 0.4, -0.5])
WEIGHTS = np.arange(6.0).reshape(2, 3) - 2.0


def _written(lib, x, values):
    return x.index_put((lib.tensor(ROWS), lib.tensor(COLUMNS)), values)


def _setitem(lib, x, values):
    y = x.clone()
    y[lib.tensor(ROWS), lib.tensor(COLUMNS)] = values
    return y


@pytest.mark.parametrize("write", [_written, _setitem])
def test_last_duplicate_write_stays_with_torch_gradients(write):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(np.ones((2, 3)), requires_grad=True)
        v = lib.tensor(VALUES, requires_grad=True)
        y = write(lib, x, v)
        (y * lib.tensor(WEIGHTS)).sum().backward()
        results.append([np.array(t.detach().numpy()) for t in (y, x.grad, v.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "bool"])
def test_last_duplicate_write_in_each_dtype(dtype):
    torch = require_torch()
    values = (VALUES * 10).astype(dtype)
    ours = _setitem(kiln, kiln.tensor(np.zeros((2, 3), dtype)), kiln.tensor(values))
    theirs = _setitem(torch, torch.tensor(np.zeros((2, 3), dtype)), torch.tensor(values))
    assert ours.dtype == getattr(kiln, str(theirs.dtype).removeprefix("torch."))
    np.testing.assert_array_equal(np.array(ours.numpy()), theirs.numpy())


def test_rows_written_at_repeated_indices():
    """``x[idx] = rows`` (index over the first dim, a row per write) and a scalar written at repeated places."""
    torch = require_torch()
    index, rows = np.array([2, 0, 2, 2, 1]), np.arange(15.0).reshape(5, 3)
    outs = []
    for lib in (kiln, torch):
        x = lib.zeros(4, 3, dtype=lib.float64)
        x[lib.tensor(index)] = lib.tensor(rows)
        y = lib.zeros(4, dtype=lib.float64)
        y[lib.tensor(index)] = 7.0
        outs.append((np.array(x.numpy()), np.array(y.numpy())))
    for ours, theirs in zip(*outs):
        np.testing.assert_array_equal(ours, theirs)


def test_compiled_write_and_training_step_as_torch():
    """Traced: the same values; in a compiled step the written values' gradient reaches the parameter that made them
    (every duplicate's), so SGD moves it as torch's eager step does."""
    torch = require_torch()
    compiled = kiln.compile(lambda x, v: _written(kiln, x, v) * 2)
    ours = compiled(kiln.tensor(np.ones((2, 3))), kiln.tensor(VALUES))
    np.testing.assert_array_equal(np.array(ours.numpy()), (_written(torch, torch.ones(2, 3, dtype=torch.float64),
                                                                    torch.tensor(VALUES)) * 2).numpy())
    params = []
    for lib in (kiln, torch):
        p = lib.nn.Parameter(lib.tensor(VALUES.copy()))
        optimizer = lib.optim.SGD([p], lr=0.1)

        def step(x):
            optimizer.zero_grad()
            loss = (_written(lib, x, p * 3) * lib.tensor(WEIGHTS)).sum()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        for _ in range(2):
            run(lib.tensor(np.ones((2, 3))))
        params.append(np.array(p.detach().numpy()))
    np.testing.assert_allclose(params[0], params[1], rtol=1e-15)


def test_accumulate_still_sums_duplicates():
    torch = require_torch()
    ours = kiln.zeros(2, 3, dtype=kiln.float64).index_put((kiln.tensor(ROWS), kiln.tensor(COLUMNS)), kiln.tensor(VALUES),
                                                          accumulate=True)
    theirs = torch.zeros(2, 3, dtype=torch.float64).index_put((torch.tensor(ROWS), torch.tensor(COLUMNS)),
                                                              torch.tensor(VALUES), accumulate=True)
    np.testing.assert_allclose(np.array(ours.numpy()), theirs.numpy(), rtol=1e-15)
