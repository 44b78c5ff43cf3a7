"""RNN (tanh, relu), LSTM, GRU and their cells against their ``torch.nn`` twins with copied weights: the output and the
final states, every parameter and input gradient (initial states included), f32 at rtol 1e-5 and f64 at rtol 1e-10,
over layers, directions, layouts, bias, initial states and unbatched inputs; ``state_dict`` keys and the
initialisation; dropout between layers; a compiled training step in lockstep with PyTorch; ONNX export; the errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import as_dtype, assert_layer_matches_torch, normal, sgd_losses_in_lockstep, tolerances
from oracles import require

DTYPES = ["float32", "float64"]
INPUT_SIZE, HIDDEN_SIZE, LENGTH, BATCH = 3, 4, 5, 2


# The kinds: kiln's class, PyTorch's, the constructor's extra arguments, and how many states (h, or h and c).
KINDS = {
    "rnn_tanh": ("RNN", {}, 1),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}, 1),
    "lstm": ("LSTM", {}, 2),
    "gru": ("GRU", {}, 1),
}


def flat(library, result):
    """``output, h_n`` (or ``output, (h_n, c_n)``) as one vector, so that one weighted sum checks them all."""
    output, state = result
    parts = [output, *(state if isinstance(state, tuple) else (state,))]
    return library.cat([part.reshape(-1) for part in parts])


def call_with_states(library, states):
    """``call(module, x, *initial states)`` for the parity harness: no ``hx``, ``h_0``, or ``(h_0, c_0)``."""

    def call(module, x, *initial):
        hx = None if not initial else initial[0] if states == 1 else tuple(initial)
        return flat(library, module(x, hx))

    return call


# Layers over a sequence ------------------------------------------------------------------------------------------

LAYER_CASES = {  # constructor options, batched, with an initial state
    "one_layer_with_state": ({}, True, True),
    "two_layers_bidirectional": ({"num_layers": 2, "bidirectional": True}, True, True),
    "batch_first_without_bias": ({"batch_first": True, "bias": False}, True, True),
    "bidirectional_batch_first": ({"bidirectional": True, "batch_first": True}, True, False),
    "unbatched": ({"num_layers": 2}, False, True),
    "unbatched_bidirectional": ({"bidirectional": True}, False, False),
}


def layer_arrays(options, batched, with_state, states, dtype, output_size=HIDDEN_SIZE):
    """The input in the layer's layout and, if asked, random nonzero initial states (a dropped h_0 or c_0 shows)."""
    directions_layers = (2 if options.get("bidirectional") else 1) * options.get("num_layers", 1)
    if not batched:
        x_shape, state_shapes = (LENGTH, INPUT_SIZE), [(directions_layers, output_size), (directions_layers, HIDDEN_SIZE)]
    else:
        x_shape = (BATCH, LENGTH, INPUT_SIZE) if options.get("batch_first") else (LENGTH, BATCH, INPUT_SIZE)
        state_shapes = [(directions_layers, BATCH, output_size), (directions_layers, BATCH, HIDDEN_SIZE)]
    initial = [normal(*shape, dtype=dtype, seed=2 + index) for index, shape in enumerate(state_shapes[:states])] if with_state else []
    return [normal(*x_shape, dtype=dtype) * 2, *initial]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(LAYER_CASES))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_layer_matches_torch(kind, case, dtype):
    torch = require("torch")
    name, extra, states = KINDS[kind]
    options, batched, with_state = LAYER_CASES[case]
    kiln.manual_seed(0)
    module = getattr(nn, name)(INPUT_SIZE, HIDDEN_SIZE, **extra, **options, dtype=dtype)
    reference = as_dtype(getattr(torch.nn, name)(INPUT_SIZE, HIDDEN_SIZE, **extra, **options), dtype)
    assert list(module.state_dict()) == list(reference.state_dict())
    arrays = layer_arrays(options, batched, with_state, states, dtype)
    assert_layer_matches_torch(torch, module, reference, arrays, call=call_with_states(F, states),
                               torch_call=call_with_states(torch, states), **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_lstm_with_projections_matches_torch(batched, dtype):
    """``proj_size``: ``h`` is projected by ``weight_hr``, so ``h_0`` and the output have ``proj_size`` features."""
    torch = require("torch")
    options = {"num_layers": 2, "bidirectional": True, "proj_size": 2}
    kiln.manual_seed(0)
    module = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, **options, dtype=dtype)
    reference = as_dtype(torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, **options), dtype)
    assert list(module.state_dict()) == list(reference.state_dict())
    assert module.weight_hr_l1_reverse.shape == (2, HIDDEN_SIZE) and module.weight_ih_l1.shape == (4 * HIDDEN_SIZE, 4)
    arrays = layer_arrays(options, batched, True, 2, dtype, output_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PyTorch: "LSTM with projections is not supported with oneDNN"
        assert_layer_matches_torch(torch, module, reference, arrays, call=call_with_states(F, 2), torch_call=call_with_states(torch, 2),
                                   **tolerances(dtype))


def test_layers_return_what_torch_returns():
    """Shapes and nesting: ``(output, h_n)``, an LSTM ``(output, (h_n, c_n))``, both directions in ``output``."""
    lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=3, bidirectional=True, batch_first=True)
    graph = kiln.trace(lambda x: lstm(x), kiln.TensorSpec(("N", LENGTH, INPUT_SIZE)))
    assert [tuple(value.type.shape) for value in graph.outputs] == [("N", LENGTH, 2 * HIDDEN_SIZE), (6, "N", HIDDEN_SIZE), (6, "N", HIDDEN_SIZE)]
    gru = nn.GRU(INPUT_SIZE, HIDDEN_SIZE)
    output, h_n = kiln.compile(lambda x: gru(x.transpose(0, 1)))(normal(BATCH, LENGTH, INPUT_SIZE))
    assert output.shape == (LENGTH, BATCH, HIDDEN_SIZE) and h_n.shape == (1, BATCH, HIDDEN_SIZE)
    np.testing.assert_array_equal(output[-1], h_n[0])


# Cells -----------------------------------------------------------------------------------------------------------

CELL_CASES = {  # batched, with an initial state, bias
    "with_state": (True, True, True),
    "without_state": (True, False, True),
    "without_bias": (True, True, False),
    "unbatched": (False, True, True),
}


def call_cell(library, states):
    def call(module, x, *initial):
        hx = None if not initial else initial[0] if states == 1 else tuple(initial)
        result = module(x, hx)
        return library.cat([part.reshape(-1) for part in result]) if isinstance(result, tuple) else result

    return call


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CELL_CASES))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cell_matches_torch(kind, case, dtype):
    torch = require("torch")
    name, extra, states = KINDS[kind]
    batched, with_state, bias = CELL_CASES[case]
    kiln.manual_seed(0)
    module = getattr(nn, name + "Cell")(INPUT_SIZE, HIDDEN_SIZE, bias=bias, **extra, dtype=dtype)
    reference = as_dtype(getattr(torch.nn, name + "Cell")(INPUT_SIZE, HIDDEN_SIZE, bias=bias, **extra), dtype)
    assert list(module.state_dict()) == list(reference.state_dict())
    batch = (BATCH,) if batched else ()
    initial = [normal(*batch, HIDDEN_SIZE, dtype=dtype, seed=2 + index) for index in range(states)] if with_state else []
    arrays = [normal(*batch, INPUT_SIZE, dtype=dtype) * 2, *initial]
    assert_layer_matches_torch(torch, module, reference, arrays, call=call_cell(F, states), torch_call=call_cell(torch, states),
                               **tolerances(dtype))


# Initialisation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"])
def test_initialisation_is_pytorchs_uniform_and_follows_kilns_seed(name):
    """U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight and bias, drawn from kiln's generator."""
    layer_options = {} if name.endswith("Cell") else {"num_layers": 2, "bidirectional": True}
    kiln.manual_seed(3)
    module = getattr(nn, name)(INPUT_SIZE, 16, **layer_options)
    values = np.concatenate([parameter.data.ravel() for parameter in module.parameters()])
    bound = 1 / math.sqrt(16)
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.95 * bound and abs(values.mean()) < 0.02
    np.testing.assert_allclose(values.std(), bound / math.sqrt(3), rtol=0.1)
    kiln.manual_seed(3)
    again = getattr(nn, name)(INPUT_SIZE, 16, **layer_options)
    for key, value in again.state_dict().items():
        np.testing.assert_array_equal(value, module.state_dict()[key], err_msg=key)


@pytest.mark.parametrize("options", [dict(num_layers=2, bidirectional=True, proj_size=2), dict(bias=False)],
                         ids=["projected-bidirectional", "no-bias"])
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_weight_name_lists_are_pytorchs(name, options):
    """``_all_weights``, ``_flat_weights_names``, ``_flat_weights`` and ``all_weights`` name and hold the parameters
    as torch 2.13's do; DeepAR (zhykoties/TimeSeries) sets the forget gates' biases to 1 through them, and kiln had
    none of them (AttributeError)."""
    torch = require("torch")
    options = {k: v for k, v in options.items() if k != "proj_size" or name == "LSTM"}
    ours, theirs = getattr(nn, name)(INPUT_SIZE, HIDDEN_SIZE, **options), getattr(torch.nn, name)(INPUT_SIZE, HIDDEN_SIZE, **options)
    assert ours._all_weights == theirs._all_weights
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [tuple(p.shape) for p in ours._flat_weights] == [tuple(p.shape) for p in theirs._flat_weights]
    assert [[tuple(p.shape) for p in ps] for ps in ours.all_weights] == [[tuple(p.shape) for p in ps] for ps in theirs.all_weights]
    for names in ours._all_weights:  # DeepAR's forget-gate initialisation, through .data
        for bias_name in filter(lambda n: "bias" in n, names):
            bias = getattr(ours, bias_name)
            n = bias.size(0)
            bias.data[n // 4:n // 2].fill_(1.)
            np.testing.assert_array_equal(bias.detach().numpy()[n // 4:n // 2], 1.0)


# Dropout between layers ------------------------------------------------------------------------------------------


def lstm_classifier(library, dropout=0.0, num_layers=2, bidirectional=True):
    """The same model in kiln and in PyTorch: an LSTM over ``(N, L, 4)``, then a linear head on the last step."""

    class Classifier(library.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = library.nn.LSTM(4, 6, num_layers=num_layers, batch_first=True, bidirectional=bidirectional, dropout=dropout)
            self.head = library.nn.Linear(12 if bidirectional else 6, 3)

        def forward(self, x):
            output, _ = self.lstm(x)
            return self.head(output[:, -1])

    return Classifier()


def test_dropout_between_layers_in_eval_mode_matches_torch():
    torch = require("torch")
    kiln.manual_seed(0)
    module = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=3, dropout=0.5)
    reference = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=3, dropout=0.5)
    arrays = layer_arrays({"num_layers": 3}, True, True, 2, "float32")
    assert_layer_matches_torch(torch, module.eval(), reference.eval(), arrays, call=call_with_states(F, 2), torch_call=call_with_states(torch, 2))
    eval_graph = kiln.trace(module, kiln.TensorSpec((LENGTH, "N", INPUT_SIZE)))
    train_graph = kiln.trace(module.train(), kiln.TensorSpec((LENGTH, "N", INPUT_SIZE)))
    assert [op.name for op in eval_graph.ops].count("nn.dropout") == 0
    assert [op.name for op in train_graph.ops].count("nn.dropout") == 2, "dropout after each layer but the last"


def _dropout_losses(dropout: float, seed: int, steps: int = 3) -> list[float]:
    """Losses of training steps with lr=0: only the dropout masks change between them."""
    kiln.manual_seed(0)
    model = lstm_classifier(kiln, dropout=dropout, num_layers=2, bidirectional=False)
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.0), seed=seed)
    x, y = normal(6, LENGTH, 4, seed=4), np.arange(6) % 3
    return [float(step(x, y)) for _ in range(steps)]


def test_dropout_between_layers_in_training_is_random_and_reproducible_given_the_seed():
    losses = _dropout_losses(0.5, seed=1)
    assert _dropout_losses(0.5, seed=1) == losses, "the same seed draws the same masks"
    assert len(set(losses)) == len(losses), "a fresh mask each step"
    undropped = _dropout_losses(0.0, seed=1)
    assert len(set(undropped)) == 1 and all(abs(loss - undropped[0]) > 1e-6 for loss in losses)


# Training and export ---------------------------------------------------------------------------------------------


def test_compiled_training_step_of_an_lstm_classifier_matches_torch_and_the_loss_decreases():
    """``compile_train_step`` makes the batch dim symbolic: the zero initial states are shaped from it."""
    torch = require("torch")
    kiln.manual_seed(0)
    model, reference = lstm_classifier(kiln), lstm_classifier(torch)
    x, y = normal(8, LENGTH, 4, seed=3), np.random.default_rng(3).integers(0, 3, 8)
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.5, steps=6)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])) and losses[-1] < 0.95 * losses[0], losses
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_lstm_exports_to_onnx_and_matches_kiln_and_torch(tmp_path):
    onnx, ort, torch = require("onnx"), require("onnxruntime"), require("torch")
    kiln.manual_seed(0)
    model = nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
    reference = torch.nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    path = str(tmp_path / "lstm.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", LENGTH, 4))], path)
    onnx.checker.check_model(proto, full_check=True)
    session, predict = ort.InferenceSession(path), kiln.compile(model)
    for batch in (1, 3):
        x = normal(batch, LENGTH, 4, seed=batch)
        output, (h_n, c_n) = reference(torch.tensor(x))
        expected = [output, h_n, c_n]
        for exported, kilns, torchs in zip(session.run(None, {"input": x}), predict(x), expected):
            np.testing.assert_allclose(exported, kilns, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(kilns, torchs.detach().numpy(), rtol=1e-5, atol=1e-6)


# Errors ----------------------------------------------------------------------------------------------------------


def test_wrong_inputs_are_trace_errors_that_say_what_to_do():
    lstm = nn.LSTM(4, 6, num_layers=2)
    with pytest.raises(kiln.TraceError, match=r"input.size\(-1\) must be equal to input_size. Expected 4, got 3"):
        kiln.trace(lstm, kiln.TensorSpec((LENGTH, 2, 3)))
    with pytest.raises(ValueError, match="LSTM: Expected input to be 2D or 3D, got 4D instead"):
        kiln.trace(lstm, kiln.TensorSpec((LENGTH, 2, 1, 4)))
    with pytest.raises(kiln.TraceError, match="sequence length must be static.*pass batch_dim=1.*batch_first=True"):
        kiln.trace(lstm, kiln.TensorSpec(("N", 2, 4)))
    with pytest.raises(kiln.TraceError, match="sequence length must be static"):
        kiln.trace(nn.GRU(4, 6, batch_first=True), kiln.TensorSpec((2, "L", 4)))
    with pytest.raises(kiln.TraceError, match=r"input has inconsistent input_size: got 3 expected 4"):
        kiln.trace(nn.GRUCell(4, 6), kiln.TensorSpec((2, 3)))


def test_wrong_initial_states_are_trace_errors_naming_the_expected_shape():
    spec = kiln.TensorSpec
    with pytest.raises(kiln.TraceError, match=r"Expected hidden size \(2, N, 6\), got \[1, N, 6\]"):
        kiln.trace(lambda x, h: nn.RNN(4, 6, num_layers=2)(x, h), spec((LENGTH, "N", 4)), spec((1, "N", 6)))
    with pytest.raises(kiln.TraceError, match=r"Expected hidden\[1\] size \(1, 2, 6\), got \[1, 2, 5\]"):
        kiln.trace(lambda x, h, c: nn.LSTM(4, 6)(x, (h, c)), spec((LENGTH, 2, 4)), spec((1, 2, 6)), spec((1, 2, 5)))
    with pytest.raises(kiln.TraceError, match=r"LSTM: hx must be the pair \(h_0, c_0\)"):
        kiln.trace(lambda x, h: nn.LSTM(4, 6)(x, h), spec((LENGTH, 2, 4)), spec((1, 2, 6)))
    with pytest.raises(kiln.TraceError, match=r"For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"):  # unbatched input, batched h_0
        kiln.trace(lambda x, h: nn.GRU(4, 6)(x, h), spec((LENGTH, 4)), spec((1, 1, 6)))
    with pytest.raises(kiln.TraceError, match=r"Input batch size 2 doesn't match hidden1 batch size 3"):
        kiln.trace(lambda x, h, c: nn.LSTMCell(4, 6)(x, (h, c)), spec((2, 4)), spec((2, 6)), spec((3, 6)))


def test_bad_constructor_arguments_are_value_errors():
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        nn.RNN(4, 6, nonlinearity="gelu")
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        nn.RNNCell(4, 6, nonlinearity="sigmoid")
    for dropout in (1.5, -0.1):  # 1.0 is allowed, as torch's (tests/layers/test_dropout_one_vs_torch.py)
        with pytest.raises(ValueError, match=r"dropout should be a number in range \[0, 1\]"):
            nn.GRU(4, 6, num_layers=2, dropout=dropout)
    with pytest.raises(ValueError, match="proj_size must be 0"):
        nn.LSTM(4, 6, proj_size=6)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        nn.LSTM(4, 0)
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        nn.GRU(4, 6, num_layers=0)
    with pytest.warns(UserWarning, match="dropout acts between layers only"):
        nn.LSTM(4, 6, dropout=0.2)


@pytest.mark.parametrize(("kind", "bias_adds"), [("LSTM", 2), ("RNN", 2), ("GRU", 7)])
def test_b_hh_joins_the_sequence_wide_projection_where_the_step_only_adds_it(kind, bias_adds):
    # LSTM and RNN: b_ih + b_hh once, in the input projection of all 6 steps (2 adds of a bias vector, not 1 + 6);
    # GRU keeps b_hh in each step, where its reset gate scales b_hn
    layer = getattr(nn, kind)(4, 8)
    graph = kiln.trace(lambda x: layer(x)[0], kiln.TensorSpec((6, 3, 4), "float32"))
    rows = layer.weight_hh_l0.shape[0]
    adds = [op for op in graph.ops if op.name == "tensor.add" and any(v.type.shape == (rows,) for v in op.operands)]
    assert len(adds) == bias_adds
