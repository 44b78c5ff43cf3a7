"""A row index outside ``[0, size)`` in ``F.embedding`` / ``nn.Embedding``, ``F.embedding_bag`` and ``index_select``
raises what PyTorch raises (``IndexError: index out of range in self``; embedding_bag's RuntimeError "Index 1 of input
takes value -1 which is not in the valid range [0, 5)"). kiln's eager lookup of -1 (pandas' code for a missing
category, fed to an FT-Transformer's categorical tokenizer) read the last row silently, and one past the end raised
NumPy's words. Not done: a traced index (in ``kiln.compile``) is not checked at run time (see
``frontend/index_range_checks.py``); valid traced indices still give torch's rows and one trace."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _table(lib):
    return lib.arange(10.0).reshape(5, 2)


def _embedding(lib):
    table = _table(lib)
    return lambda index: lib.nn.functional.embedding(index, table)


def _padded_embedding(lib):
    table = _table(lib)
    return lambda index: lib.nn.functional.embedding(index, table, padding_idx=0)


def _index_select(lib):
    table = _table(lib)
    return lambda index: table.index_select(0, index.reshape(-1))


def _torch_index_select(lib):
    table = _table(lib)
    return lambda index: lib.index_select(table, 0, index.reshape(-1))


# each builds its table (and module) once and gives the lookup of an index
LOOKUPS = {"F.embedding": _embedding, "F.embedding padding_idx": _padded_embedding,
           "nn.Embedding": lambda lib: lib.nn.Embedding.from_pretrained(_table(lib)),
           "index_select dim 0": _index_select, "torch.index_select": _torch_index_select}


@pytest.mark.parametrize("values", [[[0, -1]], [[4, 5]], [[-6, 1]]], ids=["-1", "size", "-size-1"])
@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
def test_a_row_index_out_of_range_is_torch_index_error(lookup, values):
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(IndexError, match="index out of range in self"):
            LOOKUPS[lookup](lib)(lib.tensor(values))


@pytest.mark.parametrize("values", [[[0, -1]], [[4, 5]]], ids=["-1", "size"])
def test_embedding_bag_index_out_of_range_is_torch_runtime_error(values):
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(RuntimeError, match=rf"Index 1 of input takes value {values[0][1]} which is not in the "
                                               r"valid range \[0, 5\)"):
            lib.nn.functional.embedding_bag(lib.tensor(values), _table(lib))


def test_the_error_names_the_user_line_and_what_to_do():
    with pytest.raises(IndexError) as raised:
        kiln.nn.functional.embedding(kiln.tensor([2, -1]), _table(kiln))
    message = str(raised.value)
    assert "test_index_range_vs_torch.py" in message and "index -1 at flat position 1" in message
    assert "map unknown or missing values to a row of their own" in message


@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
def test_rows_in_range_as_torch_eager_and_compiled(lookup):
    torch = require_torch()
    index = np.array([[4, 0, 2]])
    theirs = LOOKUPS[lookup](torch)(torch.tensor(index)).numpy()
    ours = LOOKUPS[lookup](kiln)
    np.testing.assert_array_equal(np.array(ours(kiln.tensor(index))), theirs)
    compiled = kiln.compile(ours, fullgraph=True)
    np.testing.assert_array_equal(np.array(compiled(kiln.tensor(index))), theirs)
    np.testing.assert_array_equal(np.array(compiled(kiln.tensor(index[:, ::-1].copy()))), theirs[..., ::-1, :])
    assert compiled.trace_count == 1, "reading the index values in the trace would trace again for new values"
