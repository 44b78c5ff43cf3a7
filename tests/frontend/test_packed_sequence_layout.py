"""``PackedSequence`` in PyTorch's layout wherever the lengths are known when packing (a list, an array, an eager
tensor, a traced constant): the four fields ``(data, batch_sizes, sorted_indices, unsorted_indices)`` equal torch
2.13's field by field for ``pack_padded_sequence`` and ``pack_sequence``, sorted and unsorted lengths (ties included),
``enforce_sorted`` both ways, and its error; ``unpad_sequence``/``unpack_sequence``; the "transform ``.data`` and
rewrap" idiom and ``.to``/``.double``...; a cross-entropy over packed data; bidirectional two-layer LSTM/GRU/RNN over
packed input (values and every gradient in float64, rtol 1e-10); a compiled training step and a compiled forward
trained against torch. With traced lengths (the masked form) the fields that cannot exist say why.

kiln's ``PackedSequence.data`` used to be the padded batch ``(L, N, *)`` whatever the lengths, with no
``batch_sizes`` or indices, so ``F.cross_entropy(packed_scores.data, packed_targets.data)`` failed.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.frontend import rnn_utils
from oracles import require_torch

UNSORTED = [3, 5, 3, 1, 5]
"""Unsorted, with ties (kept in batch order by both libraries up to 16 sequences)."""
SORTED = [5, 5, 3, 3, 1]
LENGTH, FEATURES = 6, 2


def assert_same_fields(ours, theirs):
    """``ours`` is a kiln PackedSequence holding ``theirs``' four fields: values, shapes, dtypes, ``None``s."""
    assert isinstance(ours, rnn_utils.PackedSequence) and isinstance(ours, tuple) and len(ours) == 4
    assert ours._fields == theirs._fields == ("data", "batch_sizes", "sorted_indices", "unsorted_indices")
    for name in theirs._fields:
        mine, reference = getattr(ours, name), getattr(theirs, name)
        if reference is None:
            assert mine is None, name
            continue
        expected = reference.detach().numpy()
        got = np.asarray(mine.detach().numpy())
        assert got.dtype == expected.dtype and got.shape == expected.shape, (name, got.dtype, got.shape, expected.dtype, expected.shape)
        np.testing.assert_array_equal(got, expected, err_msg=name)


def padded_input(lengths, batch_first, dtype="float64", seed=0):
    shape = (len(lengths), LENGTH, FEATURES) if batch_first else (LENGTH, len(lengths), FEATURES)
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


LENGTH_FORMS = {
    "list": lambda lib, lengths: list(lengths),
    "array": lambda lib, lengths: np.array(lengths),
    "int64_tensor": lambda lib, lengths: lib.tensor(lengths),
    "int32_tensor": lambda lib, lengths: lib.tensor(lengths, dtype=lib.int32),
}


@pytest.mark.parametrize("given_as", sorted(LENGTH_FORMS))
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths, enforce_sorted", [(SORTED, True), (SORTED, False), (UNSORTED, False)])
def test_pack_padded_sequence_has_torchs_fields(lengths, enforce_sorted, batch_first, given_as):
    torch = require_torch()
    x = padded_input(lengths, batch_first)
    theirs = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), LENGTH_FORMS[given_as](torch, lengths), batch_first, enforce_sorted)
    ours = nn.utils.rnn.pack_padded_sequence(kiln.tensor(x), LENGTH_FORMS[given_as](kiln, lengths), batch_first, enforce_sorted)
    assert_same_fields(ours, theirs)
    padded, got_lengths = nn.utils.rnn.pad_packed_sequence(ours, batch_first, padding_value=-1.0, total_length=LENGTH + 1)
    expected, expected_lengths = torch.nn.utils.rnn.pad_packed_sequence(theirs, batch_first, padding_value=-1.0, total_length=LENGTH + 1)
    np.testing.assert_array_equal(padded.numpy(), expected.numpy())
    np.testing.assert_array_equal(got_lengths.numpy(), expected_lengths.numpy())


@pytest.mark.parametrize("lengths, enforce_sorted", [(SORTED, True), (UNSORTED, False)])
def test_lengths_made_from_constants_in_a_compiled_function_give_torchs_fields(lengths, enforce_sorted):
    """``kiln.tensor(lengths)`` inside the traced function is a constant: PyTorch's layout, the fields as outputs."""
    torch = require_torch()
    x = padded_input(lengths, batch_first=True)
    theirs = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), True, enforce_sorted)

    def pack(x):
        packed = nn.utils.rnn.pack_padded_sequence(x, kiln.tensor(lengths), batch_first=True, enforce_sorted=enforce_sorted)
        assert (packed.sorted_indices is None) == enforce_sorted
        return tuple(field for field in packed if field is not None)

    ours = kiln.compile(pack, fullgraph=True)(x)
    expected = [field.numpy() for field in theirs if field is not None]
    assert len(ours) == len(expected)
    for got, reference in zip(ours, expected):
        assert got.dtype == reference.dtype
        np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize("lengths, enforce_sorted", [(SORTED, True), (SORTED, False), (UNSORTED, False)])
def test_pack_sequence_has_torchs_fields_and_unpacks_as_torch(lengths, enforce_sorted):
    torch = require_torch()
    arrays = [np.random.default_rng(index).standard_normal((length, FEATURES)) for index, length in enumerate(lengths)]
    theirs = torch.nn.utils.rnn.pack_sequence([torch.tensor(a) for a in arrays], enforce_sorted)
    ours = nn.utils.rnn.pack_sequence([kiln.tensor(a) for a in arrays], enforce_sorted)
    assert_same_fields(ours, theirs)
    for got, expected in zip(kiln.nn.utils.rnn.unpack_sequence(ours), torch.nn.utils.rnn.unpack_sequence(theirs), strict=True):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


@pytest.mark.parametrize("batch_first", [False, True])
def test_unpad_sequence_matches_torch(batch_first):
    torch = require_torch()
    x = padded_input(UNSORTED, batch_first)
    expected = torch.nn.utils.rnn.unpad_sequence(torch.tensor(x), torch.tensor(UNSORTED), batch_first)  # (torch transposes x in place)
    for lengths in (kiln.tensor(UNSORTED), UNSORTED):
        got = kiln.nn.utils.rnn.unpad_sequence(kiln.tensor(x), lengths, batch_first)
        assert len(got) == len(expected)
        for mine, reference in zip(got, expected):
            np.testing.assert_array_equal(mine.numpy(), reference.numpy())


@pytest.mark.parametrize("pack", ["pack_padded_sequence", "pack_sequence"])
def test_unsorted_lengths_with_enforce_sorted_raise_torchs_error(pack):
    torch = require_torch()

    def call(lib):
        utils = lib.nn.utils.rnn
        if pack == "pack_sequence":
            return utils.pack_sequence([lib.zeros(length, FEATURES) for length in UNSORTED])
        return utils.pack_padded_sequence(lib.zeros(LENGTH, len(UNSORTED), FEATURES), UNSORTED)

    with pytest.raises(RuntimeError) as theirs:
        call(torch)
    with pytest.raises(RuntimeError) as ours:
        call(kiln)
    assert "must be sorted in decreasing order when `enforce_sorted` is True" in str(theirs.value)
    assert str(theirs.value) in str(ours.value)


def test_data_transformed_and_rewrapped_keeps_torchs_layout():
    """``PackedSequence(f(ps.data), ps.batch_sizes, ps.sorted_indices, ps.unsorted_indices)``, the short forms
    (``unsorted_indices`` computed), ``_replace`` and the dtype/device conversions, each a PackedSequence as torch's."""
    torch = require_torch()
    x = padded_input(UNSORTED, batch_first=True)
    results = []
    for lib in (kiln, torch):
        utils = lib.nn.utils.rnn
        ps = utils.pack_padded_sequence(lib.tensor(x), UNSORTED, batch_first=True, enforce_sorted=False)
        results.append([utils.PackedSequence(ps.data * 2 + 1, ps.batch_sizes, ps.sorted_indices, ps.unsorted_indices),
                        utils.PackedSequence(-ps.data, ps.batch_sizes, ps.sorted_indices),
                        utils.PackedSequence((ps.data, ps.batch_sizes)),
                        ps._replace(data=ps.data - 1), ps.float(), ps.double(), ps.to(lib.float32), ps.long(), ps.cpu(),
                        utils.pad_packed_sequence(utils.PackedSequence(ps.data + 1, ps.batch_sizes, ps.sorted_indices,
                                                                       ps.unsorted_indices), batch_first=True)[0]])
    for index, (ours, theirs) in enumerate(zip(*results)):
        if isinstance(theirs, torch.Tensor):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=str(index))
        else:
            assert_same_fields(ours, theirs)


def test_cross_entropy_over_packed_scores_and_targets_matches_torch():
    """The report's example: scores and targets packed alike, their ``data`` rows paired."""
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        scores = lib.arange(24, dtype=lib.float32).reshape(2, 4, 3) / 10
        targets = lib.tensor([[1, 2, 0, 1], [2, 0, 0, 0]])
        s = lib.nn.utils.rnn.pack_padded_sequence(scores, [4, 2], batch_first=True).data
        t = lib.nn.utils.rnn.pack_padded_sequence(targets, [4, 2], batch_first=True).data
        results.append((tuple(s.shape), tuple(t.shape), lib.nn.functional.cross_entropy(s, t).item()))
    (ours_s, ours_t, ours_loss), (theirs_s, theirs_t, theirs_loss) = results
    assert ours_s == theirs_s == (6, 3) and ours_t == theirs_t == (6,)
    np.testing.assert_allclose(ours_loss, theirs_loss, rtol=1e-6)


# Recurrent layers over PyTorch's layout --------------------------------------------------------------------------

INPUT_SIZE, HIDDEN_SIZE = 3, 4


@pytest.mark.parametrize("lengths, enforce_sorted", [(UNSORTED, False), (SORTED, True)])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_packed_bidirectional_two_layer_layer_matches_torch_values_and_gradients(kind, lengths, enforce_sorted):
    """Eager, float64: the packed output's fields, ``h_n`` (``c_n``), and the gradients of every parameter, the input and
    the initial states, for a loss over the packed ``data`` and the final states."""
    torch = require_torch()
    options = dict(num_layers=2, bidirectional=True, batch_first=True)
    torch.manual_seed(0)
    reference = getattr(torch.nn, kind)(INPUT_SIZE, HIDDEN_SIZE, **options).double()
    module = getattr(nn, kind)(INPUT_SIZE, HIDDEN_SIZE, **options).double()
    module.load_state_dict({name: value.detach().numpy() for name, value in reference.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((len(lengths), LENGTH, INPUT_SIZE))
    states = [rng.standard_normal((4, len(lengths), HIDDEN_SIZE)) for _ in range(2 if kind == "LSTM" else 1)]
    data_weights = rng.standard_normal((sum(lengths), 2 * HIDDEN_SIZE))

    def run(lib, model):
        inputs = [lib.tensor(a, requires_grad=True) for a in (x, *states)]
        packed = lib.nn.utils.rnn.pack_padded_sequence(inputs[0], lengths, batch_first=True, enforce_sorted=enforce_sorted)
        output, final = model(packed, tuple(inputs[1:]) if kind == "LSTM" else inputs[1])
        finals = final if kind == "LSTM" else (final,)
        loss = (output.data * lib.tensor(data_weights)).sum() + sum((state * (index + 2)).sum() for index, state in enumerate(finals))
        loss.backward()
        return output, finals, [t.grad.numpy() for t in inputs], {name: p.grad.numpy() for name, p in model.named_parameters()}

    ours, theirs = run(kiln, module), run(torch, reference)
    np.testing.assert_allclose(ours[0].data.detach().numpy(), theirs[0].data.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert_same_fields(ours[0]._replace(data=kiln.tensor(theirs[0].data.detach().numpy())), theirs[0])
    for got, expected in zip(ours[1], theirs[1], strict=True):
        np.testing.assert_allclose(got.detach().numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, expected in zip(ours[2], theirs[2], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg="input gradient")
    assert set(ours[3]) == set(theirs[3])
    for name, grad in ours[3].items():
        np.testing.assert_allclose(grad, theirs[3][name], rtol=1e-10, atol=1e-12, err_msg=name)


# Training, compiled ----------------------------------------------------------------------------------------------

VOCABULARY, CLASSES, TOKENS = 11, 3, 6
FIXED_LENGTHS = [3, 6, 1, 4]


def classifier(lib, lengths_from_argument):
    """Embedding -> packed two-layer bidirectional LSTM -> a Linear over the packed ``data``, rewrapped and padded ->
    mean over each sequence's steps and the last layer's ``h_n`` -> Linear. The lengths are the fixed list, or read from
    the argument by ``lengths.tolist()``."""

    class Classifier(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = lib.nn.Embedding(VOCABULARY, 5)
            self.lstm = lib.nn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True)
            self.projection = lib.nn.Linear(12, 4)
            self.head = lib.nn.Linear(4 + 12, CLASSES)

        def forward(self, tokens, lengths=None):
            utils = lib.nn.utils.rnn
            lengths = lengths.tolist() if lengths_from_argument else FIXED_LENGTHS
            packed = utils.pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
            output, (h_n, _) = self.lstm(packed)
            projected = utils.PackedSequence(self.projection(output.data).tanh(), output.batch_sizes, output.sorted_indices,
                                             output.unsorted_indices)
            padded, steps = utils.pad_packed_sequence(projected, batch_first=True)
            mean = padded.sum(1) / steps.unsqueeze(1).to(padded.dtype)
            return self.head(lib.cat([mean, h_n[-2:].transpose(0, 1).reshape(len(lengths), 12)], 1))

    return Classifier()


def twins(torch, lengths_from_argument):
    kiln.manual_seed(0)
    model, reference = classifier(kiln, lengths_from_argument), classifier(torch, lengths_from_argument)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return model, reference


def batches(steps, lengths_from_argument):
    rng = np.random.default_rng(0)
    for step in range(steps):
        lengths = [6, 2, 2, 5] if lengths_from_argument and step == 1 else FIXED_LENGTHS
        yield rng.integers(0, VOCABULARY, (4, TOKENS)), np.array(lengths), rng.integers(0, CLASSES, 4)


def assert_same_parameters(model, reference):
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(np.asarray(model.state_dict()[name]), value.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_compiled_training_step_over_packed_input_matches_torch(float64_default):
    torch = float64_default
    model, reference = twins(torch, lengths_from_argument=False)
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5), batch_dim=None)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for tokens, _, labels in batches(3, lengths_from_argument=False):
        loss = float(step(tokens, labels))
        optimizer.zero_grad()
        expected = torch.nn.functional.cross_entropy(reference(torch.tensor(tokens)), torch.tensor(labels))
        expected.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, expected.item(), rtol=1e-10)
    assert step.compile_count == 1
    assert_same_parameters(model, reference)


def test_compiled_forward_with_lengths_read_by_tolist_trains_as_torch(float64_default):
    """``lengths.tolist()`` of the argument is specialized (guarded: other lengths trace again), so the packed layout
    and its gradient through ``.data`` hold in a ``kiln.compile``d forward trained by eager backward."""
    torch = float64_default
    model, reference = twins(torch, lengths_from_argument=True)
    forward = kiln.compile(model, fullgraph=True)
    optimizer, reference_optimizer = kiln.optim.SGD(model.parameters(), lr=0.5), torch.optim.SGD(reference.parameters(), lr=0.5)
    for tokens, lengths, labels in batches(3, lengths_from_argument=True):
        optimizer.zero_grad()
        loss = F.cross_entropy(forward(kiln.tensor(tokens), kiln.tensor(lengths)), kiln.tensor(labels))
        loss.backward()
        optimizer.step()
        reference_optimizer.zero_grad()
        expected = torch.nn.functional.cross_entropy(reference(torch.tensor(tokens), torch.tensor(lengths)), torch.tensor(labels))
        expected.backward()
        reference_optimizer.step()
        np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-10)
    assert_same_parameters(model, reference)


# The masked form: lengths known only when the compiled step runs -------------------------------------------------


def test_traced_lengths_keep_the_masked_form_and_its_missing_fields_say_why():
    lstm = nn.LSTM(FEATURES, HIDDEN_SIZE)
    seen = {}

    def run(x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, _ = lstm(packed)
        seen.update(has_batch_sizes=hasattr(output, "batch_sizes"), indices=(output.sorted_indices, output.unsorted_indices),
                    data_shape=tuple(output.data.shape), fields=len(output))
        for attempt in (lambda: output.batch_sizes, lambda: rnn_utils.unpack_sequence(output),
                        lambda: rnn_utils.unpad_sequence(output.data, lengths)):
            with pytest.raises(RuntimeError) as error:
                attempt()
            seen.setdefault("errors", []).append(str(error.value))
        assert isinstance(pytest.raises(AttributeError, lambda: output.batch_sizes).value, kiln.TraceError)
        return nn.utils.rnn.pad_packed_sequence(output._replace(data=output.data * 2), padding_value=-1.0)[0]

    x, lengths = np.random.default_rng(0).standard_normal((LENGTH, 3, FEATURES)).astype(np.float32), np.array([2, 6, 4])
    padded = kiln.compile(run, batch_dim=(1, 0), fullgraph=True)(x, lengths)
    assert seen["has_batch_sizes"] is False and seen["indices"] == (None, None) and seen["fields"] == 4
    assert seen["data_shape"][0] == LENGTH and seen["data_shape"][2] == HIDDEN_SIZE  # padded (L, N, H), not (sum(lengths), H)
    assert "batch_sizes does not exist here" in seen["errors"][0] and "ps._replace(data=f(ps.data))" in seen["errors"][0]
    assert "masked" in seen["errors"][1] and "lengths must be known while tracing" in seen["errors"][2]
    running = np.arange(LENGTH)[:, None] < lengths
    assert padded.shape == (LENGTH, 3, HIDDEN_SIZE)
    assert np.all(padded[~running] == -1.0) and np.all(padded[running] != -1.0)
