"""``nonzero()`` inside ``kiln.compile`` of a tensor made from the call's inputs: its values are specialized and
guarded (``frontend/value_guards.py``, as ``masked_select``'s mask and ``item()``), the indices constants of that
trace, and another mask traces again; kiln refused it ('data-dependent shape'). HF Longformer's global attention
indexes by ``is_index_global_attn.nonzero(as_tuple=True)`` of the attention mask in every step. Against torch 2.13
eagerly."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

MASKS = [np.array([[2, 1, 1, 2, 0], [2, 1, 0, 0, 0]]), np.array([[1, 2, 1, 1, 1], [2, 2, 2, 1, 0]])]
X = np.arange(30.0).reshape(2, 5, 3)


def global_rows(torch, x, attention_mask):
    """Longformer's ``_get_global_attn_indices`` and the gather and write it drives."""
    is_index_global_attn = attention_mask > 1
    num_global_attn_indices = is_index_global_attn.long().sum(dim=1)
    max_num_global_attn_indices = num_global_attn_indices.max()
    is_index_global_attn_nonzero = is_index_global_attn.nonzero(as_tuple=True)
    is_local_index_global_attn = torch.arange(max_num_global_attn_indices) < num_global_attn_indices.unsqueeze(dim=-1)
    is_local_index_global_attn_nonzero = is_local_index_global_attn.nonzero(as_tuple=True)
    only_global = x.new_zeros(x.shape[0], max_num_global_attn_indices, x.shape[2])
    only_global[is_local_index_global_attn_nonzero] = x[is_index_global_attn_nonzero] * 2
    return only_global, is_index_global_attn.nonzero()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_global_indices_as_torch_for_each_mask(compiled):
    torch, nn, F = libraries("torch")
    def ours(x, mask):
        return global_rows(kiln, x, mask)

    run = kiln.compile(ours, fullgraph=True) if compiled else ours
    for mask in MASKS + MASKS[:1]:  # the first mask again: the first trace's guard holds
        ours = run(kiln.tensor(X), kiln.tensor(mask))
        theirs = global_rows(torch, torch.tensor(X), torch.tensor(mask))
        for mine, expected in zip(ours, theirs):
            assert tuple(mine.shape) == tuple(expected.shape)
            np.testing.assert_array_equal(np.array(mine.numpy()), expected.numpy())


def test_nonzero_of_a_traced_value_kiln_cannot_know_still_says_what_to_do():
    """Without kiln.compile's specialization (a plain trace), the refusal stands."""
    with pytest.raises(kiln.KilnError, match="nonzero\\(\\) has a data-dependent shape"):
        kiln.trace(lambda x: (x > 0).nonzero(), kiln.TensorSpec((3,)))
