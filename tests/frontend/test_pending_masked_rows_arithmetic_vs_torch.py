"""Arithmetic on ``x[mask]`` written back under the same mask, in a ``kiln.compile(fullgraph=True)`` graph with a mask
known only when it runs, as PyTorch 2.13 computes it eagerly: Kaixhin/Rainbow's categorical projection writes
``l[(u > 0) * (l == u)] -= 1`` and ``u[(l < (atoms - 1)) * (l == u)] += 1``. The pending rows stay pending through
elementwise arithmetic and become one ``where`` (frontend/pending_masked_rows.py); before, the trace refused the ``-=``
("x[mask] has a data-dependent shape")."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries


def projection_fixes(torch, b, atoms=5):
    """agent.py's fix of the disappearing mass when ``b`` is integral (int64 in place, the second mask reading the
    first write)."""
    l, u = b.floor().to(torch.int64), b.ceil().to(torch.int64)
    l[(u > 0) * (l == u)] -= 1
    u[(l < (atoms - 1)) * (l == u)] += 1
    return l, u


def float_updates(torch, x, y):
    """Every operator on the rows: in place, out of place, reflected, with a number, a row-broadcast tensor and other
    rows under a mask computed alike; a mask over the leading dim."""
    x = x * 1
    x[x > 0] *= 2
    x[x < -1] /= 4
    x[x.abs() < 0.5] += y[x.abs() < 0.5] * 3 - 1
    x[x > 3] = 10 / x[x > 3]
    x[x < 0] = -x[x < 0] - y[x < 0]
    rows = x.sum(1) > 2
    x[rows] -= y[0]
    x[rows] = 2 - x[rows] + y[rows]
    return x


def _run(name, function, arrays, compiled, grad):
    torch, _, _ = libraries(name)
    inputs = [torch.tensor(array, requires_grad=grad) for array in arrays]
    run = kiln.compile(lambda *xs: function(torch, *xs), fullgraph=True) if compiled else (lambda *xs: function(torch, *xs))
    outputs = run(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    arrays = [np.array(out.detach().numpy()) for out in outputs]
    if grad:
        (outputs[0] * torch.tensor(np.arange(1.0, 1 + outputs[0].numel()).reshape(outputs[0].shape))).sum().backward()
        arrays += [np.array(x.grad.numpy()) for x in inputs]
    return arrays


B = np.array([[0.0, 1.5, 4.0, 2.0, 3.2], [4.0, 0.2, 1.0, 3.7, 0.0]])
X = np.array([[0.7, -2.0, 0.2, 3.0, -0.4], [1.9, -0.3, 0.1, -1.5, 2.5], [-0.2, 0.3, -3.0, 0.6, 1.0]])
Y = np.array([[0.5, 1.0, -1.0, 2.0, 0.25], [1.5, -0.5, 0.75, 1.0, -2.0], [0.1, 0.2, 0.3, 0.4, 0.5]])


@pytest.mark.parametrize("function, arrays, grad", [
    (projection_fixes, [B], False),
    (float_updates, [X, Y], True),
], ids=["rainbow-projection-fixes", "float-operators"])
def test_arithmetic_on_rows_written_back_under_the_same_mask_as_torch(float64_default, function, arrays, grad):
    theirs = _run("torch", function, arrays, compiled=False, grad=grad)
    for compiled in (False, True):
        ours = _run("kiln", function, arrays, compiled, grad)
        for mine, expected in zip(ours, theirs, strict=True):
            assert mine.dtype == expected.dtype
            np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)


def test_float_result_into_integer_rows_in_place_is_refused_as_torch():
    """``l[m] /= 2`` of an int64 ``l``: PyTorch's "result type Float can't be cast to the desired output type Long"."""
    torch, _, _ = libraries("torch")

    def halve(torch, l):
        l[l > 1] /= 2
        return l

    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        halve(torch, torch.tensor([1, 2, 3]))
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        kiln.compile(lambda l: halve(kiln, l), fullgraph=True)(kiln.tensor([1, 2, 3]))


def test_rows_reduced_broadcast_over_their_count_or_under_another_mask_are_refused_with_the_indexing_line():
    """What needs the rows' count stays the data-dependent-shape error naming the line that indexed, under a mask
    whose values cannot be specialized (made from a trained weight; one made from the inputs is specialized and
    guarded, and these compute or raise as torch: test_pending_masked_rows_traced_vs_torch.py and
    test_pending_masked_rows_made_rows_vs_torch.py): a reduction of the rows, a tensor broadcast along their count,
    rows under another mask."""
    weight = kiln.nn.Parameter(kiln.tensor(np.array([1.0, 1.0, 1.0])))

    def reduced(x, y):
        return (x[weight * x > 0] * 2).sum()

    def count_broadcast(x, y):
        x[weight * x > 0] += y
        return x

    def other_mask(x, y):
        x[weight * x > 0] = x[weight * x > 0] + y[weight * y > 0]
        return x

    for function in (reduced, count_broadcast, other_mask):
        run = kiln.compile(function, fullgraph=True)
        with pytest.raises(kiln.TraceError, match=r"(?s)test_pending_masked_rows_arithmetic_vs_torch.py:\d+ in "
                                                  r"(reduced|count_broadcast|other_mask).*x\[mask\] has a "
                                                  r"data-dependent shape"):
            run(kiln.tensor(np.array([1.0, -2.0, 3.0])), kiln.tensor(np.array([2.0, 1.0, -1.0])))
