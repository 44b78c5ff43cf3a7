"""``stride()``, ``stride(dim)``, ``storage_offset()``, ``is_contiguous()`` answer as PyTorch's for kiln's views
(``frontend/tensor_strides.py``): contiguous tensors, transposes, slices, selects, expands (stride 0), unsqueezes,
diagonals, reshapes of views; ``.view()`` of a tensor whose strides forbid it is torch's RuntimeError, ``.reshape()``
then copies, and ``.contiguous()`` copies only a non-contiguous tensor. They answered True / row-major for all, and
``.view()`` reshaped anything. vs torch 2.13.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

VIEWS = {
    "contiguous": lambda x: x,
    "t": lambda x: x[0].t(),
    "transpose": lambda x: x.transpose(0, 2),
    "permute": lambda x: x.permute(1, 2, 0),
    "mT": lambda x: x.mT,
    "sliced": lambda x: x[:, 1:3],
    "stepped": lambda x: x[1:, ::2, 1::3],
    "select": lambda x: x[:, 2],
    "narrow": lambda x: x.narrow(2, 1, 3),
    "expand": lambda x: x[:, :1].expand(2, 3, 4, 5),
    "unsqueeze of transpose": lambda x: x.transpose(0, 1).unsqueeze(1).unsqueeze(-1),
    "squeeze": lambda x: x[:, 1:2].squeeze(1),
    "diagonal": lambda x: x.diagonal(1, 1, 2),
    "diagonal negative": lambda x: x[0].diagonal(-1),
    "view of a slice": lambda x: x[1:].view(2, 20),
    "view of a transpose's rows": lambda x: x.transpose(1, 2)[:, :, 1].reshape(3, 5),
    "flatten of leading dims": lambda x: x[:, :, ::2].flatten(0, 1),
    "empty": lambda x: x[:, 4:],
    "view of evenly stepped": lambda x: x[:, ::2, ::5].view(6),
    "scalar": lambda x: x[1, 2, 3],
    "movedim": lambda x: x.movedim(0, -1),
    "unflatten": lambda x: x.permute(2, 0, 1).unflatten(-1, (2, 2)),
}


def _answers(lib, name):
    view = VIEWS[name](lib.arange(60.0).reshape(3, 4, 5))
    by_dim = [view.stride(d) for d in range(-view.ndim, view.ndim)]
    return view.stride(), by_dim, view.storage_offset(), view.is_contiguous(), view.numpy().tolist()


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_strides_offsets_and_contiguity_as_torch(name):
    torch = require_torch()
    assert _answers(kiln, name) == _answers(torch, name)


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_strides_of_a_traced_static_tensor_as_torch(name):
    torch = require_torch()
    seen = []

    def program(x):
        view = VIEWS[name](x)
        seen.append((view.stride(), view.storage_offset(), view.is_contiguous()))
        return view * 1.0

    kiln.compile(program, fullgraph=True, batch_dim=None)(kiln.arange(60.0).reshape(3, 4, 5))
    assert seen and set(seen) == {_answers(torch, name)[0:1] + _answers(torch, name)[2:4]}


def test_stride_of_a_dim_out_of_range_is_torchs_index_error():
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
            lib.zeros(2, 3).stride(2)


@pytest.mark.parametrize("make, shape", [(lambda x: x.t(), (-1,)), (lambda x: x[:, 1:3], (6,)),
                                         (lambda x: x.transpose(0, 1), (2, 6)), (lambda x: x[:, :1].expand(3, 2), (6,))])
def test_view_of_a_tensor_whose_strides_forbid_it_is_torchs_runtime_error(make, shape):
    torch = require_torch()
    for lib in (torch, kiln):
        view = make(lib.arange(12.0).reshape(3, 4))
        with pytest.raises(RuntimeError, match=r"view size is not compatible with input tensor's size and stride .*"
                                               r"Use \.reshape\(\.\.\.\) instead"):
            view.view(*shape)


def test_reshape_of_such_a_tensor_copies_and_contiguous_copies_only_when_needed_as_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        base = lib.arange(12.0).reshape(3, 4)
        copied = base.t().reshape(-1)
        copied.fill_(-1.0)  # a copy: base keeps its values
        made = base.t().contiguous()
        made[0] = 100.0  # a copy too
        same = base.contiguous()
        same[0, 0] = 50.0  # the tensor itself
        flat = base.t().contiguous().view(-1)
        results.append((base.numpy().tolist(), copied.numpy().tolist(), made.stride(), flat.numpy().tolist(),
                        same is base, made.is_contiguous()))
    assert results[0] == results[1]


def test_channels_last_stays_logically_contiguous_in_kiln():
    """``frontend/memory_format.py``: a channels_last tensor is row-major in kiln, so its strides are (where torch's
    are NHWC's) and it is contiguous in every format."""
    torch = require_torch()
    ours = kiln.zeros(2, 3, 4, 5).contiguous(memory_format=kiln.channels_last)
    theirs = torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert theirs.stride() == (60, 1, 15, 3) and ours.stride() == (60, 20, 5, 1)
    assert ours.is_contiguous() and ours.is_contiguous(memory_format=kiln.channels_last)


def test_a_symbolic_batch_gives_no_strides_and_a_reshape_kiln_cannot_place_stays_refused():
    """With a symbolic batch the strides of a transpose depend on it: ``stride()`` says so, and whether a reshape of it
    is a view is unknown, so a write through it leaves the base stale (read: refused), never silently unchanged."""
    answers = {}

    def program(x):
        y = x * 1.0
        answers["contiguous"], answers["stride"] = y.is_contiguous(), y[:, 1:].stride()  # the batch leads: known
        moved = y.transpose(0, 1)
        answers["moved"] = moved.stride(), moved.is_contiguous()
        with pytest.raises(TraceError, match="depend on a symbolic dim"):
            moved.unsqueeze(1).stride()  # N times a stride
        moved.reshape(4, -1, 5).add_(1.0)
        return y.sum()

    with pytest.raises(TraceError, match=r"written in place at .*test_strides_vs_torch.py:\d+"):
        kiln.trace(program, kiln.TensorSpec(("N", 4, 5), "float64"))
    assert answers == {"contiguous": True, "stride": (20, 5, 1), "moved": ((5, 20, 1), False)}
