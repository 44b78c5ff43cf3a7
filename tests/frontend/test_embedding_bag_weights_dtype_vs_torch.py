"""``F.embedding_bag(indices, W_dec, per_sample_weights=top_acts, mode="sum")`` (a top-k SAE's decoder, EleutherAI/sae
style) with weights of another dtype than the table: torch refuses with a RuntimeError naming both tensor types; kiln
promoted silently, so a float64 table fed float32 activations ran here and failed in torch."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch


def _bag(L, table_dtype, weight_dtype):
    table = L.tensor(np.arange(12.0).reshape(4, 3), dtype=table_dtype)
    weights = L.tensor([[0.5, 2.0], [1.5, -1.0]], dtype=weight_dtype)
    return L.nn.functional.embedding_bag(L.tensor([[0, 2], [1, 3]]), table, per_sample_weights=weights, mode="sum")


@pytest.mark.parametrize("dtypes", [("float64", "float32"), ("float32", "float64")])
def test_per_sample_weights_of_another_dtype_refused_as_torch(dtypes):
    require_torch()
    messages = []
    for name in ("kiln", "torch"):
        L = libraries(name)[0]
        with pytest.raises(RuntimeError) as caught:
            _bag(L, *(getattr(L, d) for d in dtypes))
        messages.append(str(caught.value).strip().splitlines()[-1].strip())
    assert messages[0] == messages[1]


def test_per_sample_weights_of_the_tables_dtype_as_torch():
    require_torch()
    ours, theirs = (_bag(L, L.float64, L.float64) for L in (libraries(name)[0] for name in ("kiln", "torch")))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-15)
