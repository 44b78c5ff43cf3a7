"""``kiln.nn.utils.rnn`` against ``torch.nn.utils.rnn``: RNN, LSTM and GRU over a padded batch with unsorted lengths
(a full one and a length-1 one) give PyTorch's ``enforce_sorted=False`` packed results (padded outputs, final states,
every gradient), with the lengths a traced input or a constant; a compiled training step with per-batch lengths in
lockstep with PyTorch; ``pad_sequence`` and ``pad_packed_sequence``'s options; ONNX export; the errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
import kiln.nn.utils.rnn as rnn_utils
from layer_parity import assert_layer_matches_torch, normal, tolerances
from oracles import require

INPUT_SIZE, HIDDEN_SIZE, LENGTH = 3, 4, 5
LENGTHS = np.array([3, 5, 1, 4])
"""Unsorted, with a full-length and a length-1 sequence."""

KINDS = {"rnn_tanh": ("RNN", {}, 1), "lstm": ("LSTM", {}, 2), "gru": ("GRU", {}, 1)}
CASES = {
    "one_layer": {},
    "bidirectional": {"bidirectional": True},
    "two_layers_bidirectional_batch_first": {"num_layers": 2, "bidirectional": True, "batch_first": True},
}


def packed_call(library, states, batch_first, constant_lengths=None, **pad_options):
    """``call(module, x, lengths, *initial)`` for the parity harness (``library``: kiln or torch): pack (with
    ``enforce_sorted=False``: the lengths are unsorted), run, pad back; the padded output and final states as one
    vector."""
    utils, cat = library.nn.utils.rnn, F.cat if library is kiln else library.cat
    sorting = {"enforce_sorted": False}

    def call(module, x, lengths, *initial):
        lengths = lengths if constant_lengths is None else constant_lengths
        hx = None if not initial else initial[0] if states == 1 else tuple(initial)
        output, state = module(utils.pack_padded_sequence(x, lengths, batch_first=batch_first, **sorting), hx)
        padded, _ = utils.pad_packed_sequence(output, batch_first=batch_first, **pad_options)
        parts = [padded, *(state if isinstance(state, tuple) else (state,))]
        return cat([part.reshape(-1) for part in parts])

    return call


def layer_pair(torch, kind, options, dtype):
    name, extra, states = KINDS[kind]
    kiln.manual_seed(0)
    module = getattr(nn, name)(INPUT_SIZE, HIDDEN_SIZE, **extra, **options, dtype=dtype)
    reference = getattr(torch.nn, name)(INPUT_SIZE, HIDDEN_SIZE, **extra, **options)
    return module, (reference.double() if dtype == "float64" else reference), states


def packed_arrays(options, states, dtype, lengths=LENGTHS):
    """The padded input in the layer's layout, the lengths, and nonzero initial states."""
    batch, layers = len(lengths), (2 if options.get("bidirectional") else 1) * options.get("num_layers", 1)
    x_shape = (batch, LENGTH, INPUT_SIZE) if options.get("batch_first") else (LENGTH, batch, INPUT_SIZE)
    initial = [normal(layers, batch, HIDDEN_SIZE, dtype=dtype, seed=2 + index) for index in range(states)]
    return [normal(*x_shape, dtype=dtype) * 2, np.asarray(lengths, np.int64), *initial]


# Layers over a padded batch --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_packed_layer_matches_torch_with_lengths_as_an_input(kind, case, dtype):
    """Padded outputs, ``h_n`` (and ``c_n``), and the gradients of every parameter, the input and the initial states."""
    torch = require("torch")
    options = CASES[case]
    module, reference, states = layer_pair(torch, kind, options, dtype)
    batch_first = options.get("batch_first", False)
    assert_layer_matches_torch(torch, module, reference, packed_arrays(options, states, dtype), call=packed_call(kiln, states, batch_first),
                               torch_call=packed_call(torch, states, batch_first), **tolerances(dtype))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_constant_lengths_trim_the_padded_output_to_the_longest_as_torch(kind):
    """Lengths as a list are a constant: ``pad_packed_sequence`` returns ``max(lengths)`` steps, as PyTorch; with
    ``total_length`` and ``padding_value`` the padding is filled to that length."""
    torch = require("torch")
    lengths = [2, 4, 1]  # max 4 < LENGTH
    options = {"bidirectional": True, "batch_first": True}
    module, reference, states = layer_pair(torch, kind, options, "float64")
    arrays = packed_arrays(options, states, "float64", lengths)
    for pad_options in ({}, {"total_length": LENGTH + 2, "padding_value": -1.5}):
        assert_layer_matches_torch(torch, module, reference, arrays, call=packed_call(kiln, states, True, lengths, **pad_options),
                                   torch_call=packed_call(torch, states, True, **pad_options), **tolerances("float64"))
    graph = kiln.trace(lambda x: rnn_utils.pad_packed_sequence(module(rnn_utils.pack_padded_sequence(x, lengths, True, False))[0])[0],
                       kiln.TensorSpec((3, LENGTH, INPUT_SIZE), "float64"))
    assert tuple(graph.outputs[0].type.shape) == (4, 3, 2 * HIDDEN_SIZE)


@pytest.mark.parametrize("batch_first", [False, True])
def test_total_length_and_padding_value_with_traced_lengths_match_torch(batch_first):
    torch = require("torch")
    options = {"batch_first": batch_first}
    module, reference, states = layer_pair(torch, "lstm", options, "float64")
    pad_options = {"total_length": LENGTH + 3, "padding_value": 7.0}
    assert_layer_matches_torch(torch, module, reference, packed_arrays(options, states, "float64"),
                               call=packed_call(kiln, states, batch_first, **pad_options),
                               torch_call=packed_call(torch, states, batch_first, **pad_options), **tolerances("float64"))


def test_pack_sequence_of_traced_tensors_matches_torch():
    torch = require("torch")
    module, reference, _ = layer_pair(torch, "gru", {"bidirectional": True}, "float64")
    arrays = [normal(length, INPUT_SIZE, dtype="float64", seed=length) for length in (4, 2, 3)]

    def call(utils, cat):
        def run(module, *sequences):
            output, h_n = module(utils.pack_sequence(list(sequences), enforce_sorted=False), None)
            return cat([utils.pad_packed_sequence(output)[0].reshape(-1), h_n.reshape(-1)])
        return run

    assert_layer_matches_torch(torch, module, reference, arrays, call=call(rnn_utils, F.cat),
                               torch_call=call(torch.nn.utils.rnn, torch.cat), **tolerances("float64"))


def test_a_masked_output_is_zero_past_each_length_and_padding_refills_transformed_data():
    """With traced lengths (the masked form), ``PackedSequence.data`` is padded: a layer writes zeros past each
    length; a function of ``data`` rewrapped by ``_replace`` may write anything there, and ``pad_packed_sequence``
    fills ``padding_value`` afresh."""
    gru = nn.GRU(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True)

    def run(x, lengths):
        output, _ = gru(rnn_utils.pack_padded_sequence(x, lengths, enforce_sorted=False))
        shifted = output._replace(data=output.data + 1.0)
        return output.data, output.lengths, rnn_utils.pad_packed_sequence(shifted, padding_value=-3.0)[0]

    data, lengths, refilled = kiln.compile(run, batch_dim=(1, 0))(normal(LENGTH, 4, INPUT_SIZE), LENGTHS)
    running = np.arange(LENGTH)[:, None] < LENGTHS
    np.testing.assert_array_equal(lengths, LENGTHS)
    assert np.all(data[~running] == 0) and np.all(data[running] != 0)
    np.testing.assert_array_equal(refilled, np.where(running[..., None], data + 1.0, -3.0))


def test_the_unpacked_path_emits_no_masking_ops():
    """Masking costs ops (``where``, ``greater``) only when a PackedSequence comes in."""
    lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True)
    plain = kiln.trace(lambda x: lstm(x), kiln.TensorSpec((LENGTH, "N", INPUT_SIZE)))
    packed = kiln.trace(lambda x, lengths: lstm(rnn_utils.pack_padded_sequence(x, lengths))[0].data,
                        kiln.TensorSpec((LENGTH, "N", INPUT_SIZE)), kiln.TensorSpec(("N",), "int64"))
    plain_ops, packed_ops = [op.name for op in plain.ops], [op.name for op in packed.ops]
    assert "tensor.where" not in plain_ops and "tensor.greater" not in plain_ops
    assert packed_ops.count("tensor.greater") == LENGTH and packed_ops.count("tensor.where") == 2 * LENGTH * 3  # h, c, output


# Training with per-batch lengths ---------------------------------------------------------------------------------

VOCABULARY, CLASSES, TOKENS = 11, 3, 6


def packed_classifier(library):
    """Embedding -> packed LSTM -> Linear on the last layer's final ``h``: the same model in kiln and in PyTorch."""

    class Classifier(library.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = library.nn.Embedding(VOCABULARY, 5)
            self.lstm = library.nn.LSTM(5, 6, num_layers=2, batch_first=True)
            self.head = library.nn.Linear(6, CLASSES)

        def forward(self, tokens, lengths):
            packed = library.nn.utils.rnn.pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
            _, (h_n, _) = self.lstm(packed)
            return self.head(h_n[-1])

    return Classifier()


def padded_batch(step):
    """Tokens ``(N, TOKENS)`` with random junk past each length (masked, so it must not matter), lengths, labels."""
    rng = np.random.default_rng(step)
    batch = 5 + step % 2
    lengths = rng.integers(1, TOKENS + 1, batch)
    lengths[step % batch] = TOKENS
    return rng.integers(0, VOCABULARY, (batch, TOKENS)), lengths.astype(np.int64), rng.integers(0, CLASSES, batch)


def test_compiled_training_step_with_lengths_as_an_input_matches_torch_without_recompiling():
    torch = require("torch")
    kiln.manual_seed(0)
    model, reference = packed_classifier(kiln), packed_classifier(torch)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for index in range(4):
        tokens, lengths, labels = padded_batch(index)
        loss = float(step(tokens, lengths, labels))
        optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(reference(torch.tensor(tokens), torch.tensor(lengths)), torch.tensor(labels))
        torch_loss.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-5)
    assert step.compile_count == 1, "new lengths and batch sizes reuse the compiled step"
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


# pad_sequence ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_pad_sequence_of_arrays_and_of_traced_tensors_matches_torch(batch_first, padding_side):
    torch = require("torch")
    arrays = [normal(length, 2, seed=length) for length in (3, 1, 4)]
    options = dict(batch_first=batch_first, padding_value=-2.0, padding_side=padding_side)
    expected = torch.nn.utils.rnn.pad_sequence([torch.tensor(a) for a in arrays], **options).numpy()
    padded = rnn_utils.pad_sequence(arrays, **options)
    assert isinstance(padded, np.ndarray) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded, expected)
    traced = kiln.compile(lambda *sequences: rnn_utils.pad_sequence(list(sequences), **options), batch_dim=None)(*arrays)
    np.testing.assert_array_equal(traced, expected)
    integers = [np.arange(length) + 1 for length in (2, 5)]
    expected = torch.nn.utils.rnn.pad_sequence([torch.tensor(a) for a in integers], batch_first=batch_first, padding_side=padding_side)
    np.testing.assert_array_equal(rnn_utils.pad_sequence(integers, batch_first=batch_first, padding_side=padding_side), expected.numpy())


# ONNX export -----------------------------------------------------------------------------------------------------


class PackedEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)

    def forward(self, x, lengths):
        output, (h_n, c_n) = self.lstm(rnn_utils.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return rnn_utils.pad_packed_sequence(output, batch_first=True, total_length=LENGTH)[0], h_n, c_n


def test_packed_lstm_with_lengths_as_an_input_exports_to_onnx_and_matches_kiln(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    kiln.manual_seed(0)
    model = PackedEncoder()
    path = str(tmp_path / "packed_lstm.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", LENGTH, 4)), kiln.TensorSpec(("N",), "int64")], path)
    onnx.checker.check_model(proto, full_check=True)
    session, predict = ort.InferenceSession(path), kiln.compile(model)
    for lengths in ([5, 2, 1], [3, 4, 5, 1, 2, 5]):
        x, lengths = normal(len(lengths), LENGTH, 4, seed=len(lengths)), np.array(lengths, np.int64)
        for exported, expected in zip(session.run(None, {"x": x, "lengths": lengths}), predict(x, lengths)):
            np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-6)


# Errors ----------------------------------------------------------------------------------------------------------


def pack_into(module, lengths, spec=(LENGTH, 3, INPUT_SIZE)):
    """Trace ``module`` over ``pack_padded_sequence(x, lengths)``; traced lengths come as a spec."""
    specs = [kiln.TensorSpec(spec)] + ([lengths] if isinstance(lengths, kiln.TensorSpec) else [])
    fixed = None if isinstance(lengths, kiln.TensorSpec) else lengths
    return kiln.trace(lambda x, *traced: module(rnn_utils.pack_padded_sequence(x, fixed if fixed is not None else traced[0])), *specs)


def test_bad_lengths_are_trace_errors_that_say_what_to_do():
    lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE)
    for lengths in ([0, 2, 3], [2, 6, 1]):
        with pytest.raises(kiln.TraceError, match=r"every length must be in \[1, 5\] \(the padded length\), got \[" + str(lengths[0])):
            pack_into(lstm, lengths)
    with pytest.raises(kiln.TraceError, match=r"lengths must have shape \(3,\), one length per sequence of the batch, got 2"):
        pack_into(lstm, [2, 3])
    with pytest.raises(kiln.TraceError, match=r"lengths must have shape \(3,\), one length per sequence of the batch, got tensor<3x1xi64>"):
        pack_into(lstm, kiln.TensorSpec((3, 1), "int64"))
    with pytest.raises(kiln.TraceError, match=r"lengths must have shape \(N,\)"):
        pack_into(lstm, kiln.TensorSpec((3,), "int64"), spec=(LENGTH, "N", INPUT_SIZE))
    with pytest.raises(kiln.TraceError, match=r"lengths must be an integer tensor \(int64\), got tensor<3xf32>"):
        pack_into(lstm, kiln.TensorSpec((3,), "float32"))
    with pytest.raises(kiln.TraceError, match="constant lengths need a static batch.*pass the lengths as an input of the model"):
        pack_into(lstm, [2, 3, 1], spec=(LENGTH, "N", INPUT_SIZE))
    with pytest.raises(kiln.TraceError, match="padded length must be static"):
        pack_into(lstm, kiln.TensorSpec((3,), "int64"), spec=("L", 3, INPUT_SIZE))


def test_misused_packed_sequences_are_errors():
    spec, lengths = kiln.TensorSpec((LENGTH, 3, INPUT_SIZE)), kiln.TensorSpec((3,), "int64")
    with pytest.raises(kiln.TraceError, match=r"LSTMCell\(input_size=3\): a cell runs one time step and takes no PackedSequence.*run the "
                                              "sequence through LSTM"):
        kiln.trace(lambda x, n: nn.LSTMCell(INPUT_SIZE, HIDDEN_SIZE)(rnn_utils.pack_padded_sequence(x, n)), spec, lengths)
    with pytest.raises(kiln.TraceError, match=r"total_length must be an int of at least 5, the padded length L"):
        kiln.trace(lambda x, n: rnn_utils.pad_packed_sequence(rnn_utils.pack_padded_sequence(x, n), total_length=4)[0], spec, lengths)
    with pytest.raises(kiln.TraceError, match=r"total_length must be an int of at least 4, the longest length"):
        kiln.trace(lambda x: rnn_utils.pad_packed_sequence(rnn_utils.pack_padded_sequence(x, [4, 1, 2], enforce_sorted=False),
                                                     total_length=3)[0], spec)
    with pytest.raises(kiln.TraceError, match="pad_packed_sequence: expected a PackedSequence"):
        kiln.trace(lambda x: rnn_utils.pad_packed_sequence(x)[0], spec)
    with pytest.raises(kiln.TraceError, match=r"pack_padded_sequence: input must be a traced tensor \(L, N, \*\)"):
        rnn_utils.pack_padded_sequence(np.zeros((LENGTH, 3, INPUT_SIZE)), [1, 2, 3])
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right', got 'middle'"):
        rnn_utils.pad_sequence([np.zeros(2)], padding_side="middle")
    with pytest.raises(ValueError, match=r"the same trailing dims, got shapes \['\(2, 3\)', '\(1, 2\)'\]"):
        rnn_utils.pad_sequence([np.zeros((2, 3)), np.zeros((1, 2))])
