"""``pad_packed_sequence`` returns PyTorch's padded length, ``max(lengths)`` (or ``total_length``), whenever the lengths
are known: a list, an array, and an eager tensor (int64 or int32) too, which used to give the full padded length
``L``; for ``batch_first`` both ways, ``enforce_sorted=False``, and the outputs of packed RNN/LSTM/GRU layers, whose
values and gradients match torch in float64."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require

_LENGTHS = {"list": lambda lib, lengths: lengths, "array": lambda lib, lengths: np.array(lengths),
            "int64": lambda lib, lengths: lib.tensor(lengths), "int32": lambda lib, lengths: lib.tensor(lengths, dtype=lib.int32)}


@pytest.mark.parametrize("total_length", [None, 7])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("given_as", sorted(_LENGTHS))
@pytest.mark.parametrize("lengths", [[4, 2, 3], [5, 5, 1], [2, 2, 2]])
def test_padded_length_and_values_match_torch(lengths, given_as, batch_first, total_length):
    torch = require("torch")
    x = np.random.default_rng(0).standard_normal((3, 6, 4) if batch_first else (6, 3, 4))
    utils, theirs = nn.utils.rnn, torch.nn.utils.rnn
    packed = theirs.pack_padded_sequence(torch.tensor(x), _LENGTHS[given_as](torch, lengths), batch_first, enforce_sorted=False)
    expected, expected_lengths = theirs.pad_packed_sequence(packed, batch_first, total_length=total_length)
    ours = utils.pack_padded_sequence(kiln.tensor(x), _LENGTHS[given_as](kiln, lengths), batch_first, enforce_sorted=False)
    got, got_lengths = utils.pad_packed_sequence(ours, batch_first, total_length=total_length)
    assert tuple(got.shape) == tuple(expected.shape)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    np.testing.assert_array_equal(got_lengths.numpy(), expected_lengths.numpy())


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_packed_bidirectional_layer_with_eager_lengths_gives_torchs_output_and_gradient(cell, batch_first):
    torch = require("torch")
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cell)(4, 5, batch_first=batch_first, bidirectional=True).double()
    ours = getattr(nn, cell)(4, 5, batch_first=batch_first, bidirectional=True).double()
    ours.load_state_dict({name: value.detach().numpy() for name, value in theirs.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((3, 6, 4) if batch_first else (6, 3, 4))
    lengths = [4, 2, 3]
    expected_input = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(expected_input, torch.tensor(lengths), batch_first, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(theirs(packed)[0], batch_first)
    weights = np.random.default_rng(2).standard_normal(tuple(expected.shape))
    (expected * torch.tensor(weights)).sum().backward()

    def forward(t):
        packed = nn.utils.rnn.pack_padded_sequence(t, kiln.tensor(lengths), batch_first, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(ours(packed)[0], batch_first)[0]

    got = forward(kiln.tensor(x))
    assert tuple(got.shape) == tuple(expected.shape)
    np.testing.assert_allclose(got.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    gradient = kiln.grad(lambda t: (forward(t) * kiln.tensor(weights)).sum())(x)
    np.testing.assert_allclose(gradient, expected_input.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_eager_lengths_outside_the_padded_length_are_refused_as_list_lengths_are():
    """torch packs past the end without a word; kiln checks eager lengths as it checks a list."""
    x = np.zeros((4, 2, 3))
    with pytest.raises(kiln.compiler.errors.TraceError, match=r"every length must be in \[1, 4\].*\[5, 2\]"):
        nn.utils.rnn.pack_padded_sequence(kiln.tensor(x), kiln.tensor([5, 2]))
