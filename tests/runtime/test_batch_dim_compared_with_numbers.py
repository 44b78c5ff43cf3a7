"""``kiln.compile`` traces the batch dim as the symbol ``N``; a user's branch on it compared with a number (``if
x.shape[0] == 2``, ``x.shape == (2, 3)``, ``x.size(0) in (1, 2)``) is traced again with static shapes, one variant per
batch size, as torch.compile specializes a size it compares. Before, ``N == 2`` was a ``str`` comparison, False
whatever the batch: the branch was taken wrong silently (xLSTM's generation ``step`` asserted on its second call).
``int(x.shape[0])`` and ``float(...)`` of it are traced again the same way."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

BRANCHES = {
    "==": lambda x: x * 2 if x.shape[0] == 2 else x,
    "!=": lambda x: x * 2 if x.shape[0] != 2 else x,
    "shape tuple": lambda x: x * 2 if x.shape == (2, 3) else x,
    "in": lambda x: x * 2 if x.size(0) in (1, 2) else x,
    "numpy int": lambda x: x * 2 if x.shape[0] == np.int64(2) else x,
    "int()": lambda x: x * int(x.shape[0]),  # int("N") was a ValueError that failed the call
    "float()": lambda x: x / float(x.size(0)),
}


@pytest.mark.parametrize("branch", BRANCHES)
def test_a_branch_on_the_batch_size_is_taken_as_eagerly(branch):
    fn = BRANCHES[branch]
    compiled = kiln.compile(fn, fullgraph=True)
    for batch in (2, 3, 2, 1):
        x = kiln.ones(batch, 3)
        np.testing.assert_array_equal(compiled(x).numpy(), fn(x).numpy(), err_msg=f"batch {batch}")


def test_kilns_own_shape_checks_keep_one_symbolic_trace():
    model = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.LayerNorm(4), kiln.nn.Softmax(-1))
    compiled = kiln.compile(model)
    with kiln.no_grad():
        for batch in (2, 5, 7):
            compiled(kiln.ones(batch, 3))
    assert len(compiled.variants) == 1
