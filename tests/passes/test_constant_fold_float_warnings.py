"""constant-fold evaluates ops as the compiled step would, without NumPy's float warnings: T5's relative position
buckets take ``log(0)`` and cast ``-inf`` to int64 at the zero distance (``torch.where`` then picks the exact bucket),
which PyTorch computes silently; folding them warned 'divide by zero encountered in log' and 'invalid value encountered
in cast' at compile time. The folded values are torch's."""

from __future__ import annotations

import math
import warnings

import numpy as np

import kiln
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph
from kiln.compiler.passes.constant_fold import evaluate
from oracles import require_torch


def _buckets(torch, query_length, key_length, num_buckets=32, max_distance=128):
    """modeling_t5's bidirectional ``_relative_position_bucket`` over ``compute_bias``'s positions."""
    relative_position = torch.arange(key_length)[None, :] - torch.arange(query_length)[:, None]
    num_buckets //= 2
    buckets = (relative_position > 0).to(torch.long) * num_buckets
    relative_position = torch.abs(relative_position)
    max_exact = num_buckets // 2
    if_large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact)).to(torch.long)
    if_large = torch.min(if_large, torch.full_like(if_large, num_buckets - 1))
    return buckets + torch.where(relative_position < max_exact, relative_position, if_large)


def test_compiled_t5_buckets_fold_silently_to_torchs_values():
    torch = require_torch()
    compiled = kiln.compile(lambda offset: _buckets(kiln, 9, 300) + offset, fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = np.asarray(compiled(kiln.tensor(0)))
    theirs = _buckets(torch, 9, 300).numpy()
    assert ours.dtype == theirs.dtype == np.int64
    np.testing.assert_array_equal(ours, theirs)


def test_evaluate_log_of_zero_and_cast_of_inf_without_warnings():
    b = Builder(Graph("fold"))
    log = b.op("tensor.log", b.constant(np.zeros(2), "f64"))
    cast = b.op("tensor.cast", b.constant(np.array([-math.inf, 1.5]), "f64"), dtype="i64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (logged,), (casted,) = evaluate(log.producer), evaluate(cast.producer)
    assert logged.tolist() == [-math.inf, -math.inf]
    assert casted.dtype == np.int64 and casted[1] == 1  # -inf has no int64: whatever the step would give
