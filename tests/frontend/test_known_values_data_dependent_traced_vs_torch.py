"""``unique``, ``unique_consecutive``, ``nonzero``, ``bincount`` in a ``kiln.compile``d function where the tensor depends
on no input (built from Python numbers or shapes): its values are known while tracing (``frontend/trace_known_values.py``),
so these data-dependent-shape ops give constants there, as torch's eager run gives them. DINO's ``MultiCropWrapper``
groups its crops by ``torch.cumsum(torch.unique_consecutive(torch.tensor([inp.shape[-1] for inp in x]),
return_counts=True)[1], 0)`` and slices the crop list with the results; kiln's trace refused it ("unique() has a
data-dependent shape"), so DINO's training step could not be one graph. On a tensor computed from an input they still
refuse, naming the line. Values vs torch 2.13.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def crop_groups(lib, crops):
    """MultiCropWrapper's grouping: each run of equal widths through one ``cat``, summed per group."""
    idx_crops = lib.cumsum(lib.unique_consecutive(lib.tensor([inp.shape[-1] for inp in crops]), return_counts=True)[1], 0)
    start_idx, output = 0, []
    for end_idx in idx_crops:
        output.append(lib.cat(crops[start_idx: end_idx]).sum() * len(crops[start_idx: end_idx]))
        start_idx = end_idx
    return lib.stack(output)


def known_value_ops(lib, x):
    """The other ops on tensors built from constants, each result used with the input ``x``."""
    labels = lib.tensor([3, 1, 3, 0, 1, 3])
    values, inverse, counts = lib.unique(labels, return_inverse=True, return_counts=True)
    rows, cols = (lib.arange(6).view(2, 3) % 2 == 0).nonzero(as_tuple=True)
    picked = x.view(2, 3)[rows, cols]
    return (x[:len(values)] * values + counts.sum(), x[inverse] + labels.bincount(minlength=5)[:1], picked,
            lib.unique_consecutive(labels.sort().values).float() + x[:3])


def _crops(lib):
    rng = np.random.default_rng(0)
    return [lib.tensor(rng.standard_normal((2, 3, size, size))) for size in (4, 4, 2, 2, 2)]


def test_multi_crop_grouping_traces_as_torch(float64_default):
    torch = float64_default
    ours = kiln.compile(lambda *crops: crop_groups(kiln, list(crops)), fullgraph=True)(*_crops(kiln))
    np.testing.assert_allclose(np.asarray(ours), crop_groups(torch, _crops(torch)).numpy(), rtol=1e-12)


def test_unique_nonzero_bincount_of_known_tensors_trace_as_torch(float64_default):
    torch = float64_default
    x = np.linspace(-1.0, 1.0, 6)
    ours = kiln.compile(lambda x: known_value_ops(kiln, x), fullgraph=True)(kiln.tensor(x))
    theirs = known_value_ops(torch, torch.tensor(x))
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(mine), reference.numpy(), rtol=1e-12)


def test_unique_of_an_input_is_still_refused_with_the_line():
    run = kiln.compile(lambda x: x.unique_consecutive(return_counts=True)[1].sum(), fullgraph=True)
    with pytest.raises(kiln.TraceError, match=r"(?s)test_known_values_data_dependent_traced_vs_torch.py:\d+"
                                              r".*unique\(\) has a data-dependent shape"):
        run(kiln.tensor(np.array([1, 1, 2])))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "traced"])
def test_unique_consecutive_of_one_element_as_torch(compiled, float64_default):
    """One crop size (a MultiCropWrapper called on one tensor, or an ONNX export of it): one run. kiln's eager
    ``unique_consecutive`` raised on a one-element tensor ('cannot reshape array of size 0')."""
    torch = float64_default

    def runs(lib, x):
        values, inverse, counts = lib.unique_consecutive(lib.tensor([x.shape[-1]]), return_inverse=True,
                                                         return_counts=True)
        rows, row_counts = lib.tensor([[1, 2]]).unique_consecutive(return_counts=True, dim=0)
        return x * values + inverse + counts + rows.sum() + row_counts

    fn = kiln.compile(lambda x: runs(kiln, x), fullgraph=True) if compiled else (lambda x: runs(kiln, x))
    ours = fn(kiln.tensor(np.arange(3.0)))
    np.testing.assert_array_equal(np.asarray(ours), runs(torch, torch.tensor(np.arange(3.0))).numpy())


def test_eager_results_stay_eager():
    """Outside a trace the results are eager tensors with their values, as before."""
    require_torch()
    values, counts = kiln.tensor([2, 2, 5]).unique_consecutive(return_counts=True)
    assert values.tolist() == [2, 5] and counts.tolist() == [2, 1]
