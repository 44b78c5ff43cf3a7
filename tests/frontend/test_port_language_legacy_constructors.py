"""PyTorch's legacy constructors, as word_language_model calls them: ``torch.Tensor([[word_idx]]).long()`` in
generate.py and ``torch.LongTensor(seq_len * batch_size).zero_().view(-1, batch_size)`` in main.py's export_onnx.
Values, dtypes and shapes against torch (sizes give zeros in kiln, uninitialized memory in torch: compared after
``zero_()``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

CALLS = [
    ("Tensor", ([[3]],)), ("Tensor", ([1, 2.5],)), ("Tensor", (np.arange(3),)), ("Tensor", ()), ("LongTensor", ([4, 5],)),
    ("DoubleTensor", ([[1, 2]],)), ("FloatTensor", (np.array([1.5], np.float64),)), ("IntTensor", ([7],)), ("BoolTensor", ([1, 0],)),
]
SIZES = [("Tensor", (2, 3)), ("LongTensor", (6,)), ("DoubleTensor", ((2, 2),)), ("BoolTensor", (3,))]


def _same(ours, theirs):
    assert ours.dtype == kiln.DType.of(str(theirs.dtype).replace("torch.", ""))
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("name, args", CALLS, ids=[f"{n}{a!r}" for n, a in CALLS])
def test_data_is_copied_and_cast_as_torchs(name, args):
    torch = require_torch()
    _same(getattr(kiln, name)(*args), getattr(torch, name)(*args))


@pytest.mark.parametrize("name, args", SIZES, ids=[f"{n}{a!r}" for n, a in SIZES])
def test_sizes_give_a_tensor_of_that_shape(name, args):
    torch = require_torch()
    args = tuple(torch.Size(a) if isinstance(a, tuple) else a for a in args)  # a plain tuple is data, as in torch
    _same(getattr(kiln, name)(*args).zero_(), getattr(torch, name)(*args).zero_())


def test_main_pys_dummy_input_and_generate_pys_word_tensor():
    torch = require_torch()
    _same(kiln.LongTensor(5 * 2).zero_().view(-1, 2), torch.LongTensor(5 * 2).zero_().view(-1, 2))
    _same(kiln.cat([kiln.tensor([[1]]), kiln.Tensor([[4]]).long()], 0), torch.cat([torch.tensor([[1]]), torch.Tensor([[4]]).long()], 0))
    assert isinstance(kiln.Tensor([1.0]), kiln.Tensor)


def test_inside_a_trace_a_legacy_tensor_is_a_constant():
    compiled = kiln.compile(lambda x: x + kiln.Tensor([[1.0, 2.0]]))
    np.testing.assert_array_equal(compiled(np.zeros((3, 2), np.float32)), np.tile([1.0, 2.0], (3, 1)))


def test_a_negative_size_is_refused():
    with pytest.raises(TraceError, match="non-negative"):
        kiln.LongTensor(2, -1)
