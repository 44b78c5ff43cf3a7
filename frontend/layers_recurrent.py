"""Recurrent layers with PyTorch's names, arguments, defaults, gate order and ``state_dict`` keys: ``RNN`` (tanh or
relu), ``LSTM`` and ``GRU`` over a sequence, and the one-step cells ``RNNCell``, ``LSTMCell`` and ``GRUCell``.

The time loop is unrolled at trace time, so the sequence length must be static; the batch may be symbolic. Each
layer and direction projects the whole sequence through ``weight_ih`` in one ``F.linear`` (as cuDNN does), then
each step adds ``F.linear(h, weight_hh, bias_hh)`` and applies its gates. A missing initial state is zeros broadcast
to the batch, built from the input so that a symbolic batch dim works. Given a ``PackedSequence``
(``frontend/rnn_utils.py``), the layers run its padded batch in the batch's order and mask: a row past its length
keeps its state and outputs zeros; the output is packed again in the input's layout. The step functions below are
the math of PyTorch's documentation, written once and shared by the layers and the cells:

    RNN:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)                     (relu instead of tanh with nonlinearity="relu")
    LSTM: i, f, g, o = chunks of W_ih x + b_ih + W_hh h + b_hh          (gate order i, f, g, o)
          c' = sigmoid(f) c + sigmoid(i) tanh(g),  h' = sigmoid(o) tanh(c')   (then h' = W_hr h' with proj_size)
    GRU:  r, z = sigmoid of chunks of W_ih x + b_ih + W_hh h + b_hh     (gate order r, z, n)
          n = tanh(W_in x + b_in + r (W_hn h + b_hn)),  h' = (1 - z) n + z h
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple, Sequence

from kiln.compiler.ir.types import format_shape
from kiln.frontend import layer_resets
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.functional_nn import _filled
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.rnn_utils import PackedSequence, repacked, step_masks, unpacked_batch
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error
from kiln.frontend.recurrent_shape_checks import (check_cell_input, check_cell_states, check_sequence_input,
                                                  check_sequence_states)

State = tuple[Tensor, ...]
"""``(h,)`` for RNN and GRU, ``(h, c)`` for LSTM; each ``(N, hidden)`` inside the layers (the batch made explicit)."""


@dataclass(frozen=True)
class DirectionWeights:
    """The parameters of one direction of one layer, or of a cell; ``None`` where PyTorch has none."""

    input: Tensor
    """``weight_ih``: ``(gates * hidden_size, input features)``."""
    hidden: Tensor
    """``weight_hh``: ``(gates * hidden_size, hidden features)`` (``proj_size`` features for a projected LSTM)."""
    input_bias: Tensor | None
    """``bias_ih``: ``(gates * hidden_size,)``, absent with ``bias=False``."""
    hidden_bias: Tensor | None
    """``bias_hh``: ``(gates * hidden_size,)``, absent with ``bias=False``."""
    projection: Tensor | None = None
    """``weight_hr`` of an LSTM with ``proj_size > 0``: ``(proj_size, hidden_size)``."""


# One time step: the input's share of the gates (W_ih x + b_ih, computed for the whole sequence at once), the state
# before the step and the weights give the state after it. --------------------------------------------------------


def tanh_step(input_gates: Tensor, state: State, weights: DirectionWeights) -> State:
    return (F.tanh(input_gates + F.linear(state[0], weights.hidden, weights.hidden_bias)),)


def relu_step(input_gates: Tensor, state: State, weights: DirectionWeights) -> State:
    return (F.relu(input_gates + F.linear(state[0], weights.hidden, weights.hidden_bias)),)


def lstm_step(input_gates: Tensor, state: State, weights: DirectionWeights) -> State:
    hidden, cell = state
    gates = input_gates + F.linear(hidden, weights.hidden, weights.hidden_bias)
    input_gate, forget_gate, candidate, output_gate = F.chunk(gates, 4, dim=1)
    cell = F.sigmoid(forget_gate) * cell + F.sigmoid(input_gate) * F.tanh(candidate)
    hidden = F.sigmoid(output_gate) * F.tanh(cell)
    return (hidden if weights.projection is None else F.linear(hidden, weights.projection)), cell


def gru_step(input_gates: Tensor, state: State, weights: DirectionWeights) -> State:
    (hidden,) = state
    input_reset, input_update, input_new = F.chunk(input_gates, 3, dim=1)
    hidden_reset, hidden_update, hidden_new = F.chunk(F.linear(hidden, weights.hidden, weights.hidden_bias), 3, dim=1)
    reset, update = F.sigmoid(input_reset + hidden_reset), F.sigmoid(input_update + hidden_update)
    new = F.tanh(input_new + reset * hidden_new)  # the reset gate scales W_hn h + b_hn, bias included, as PyTorch's
    return ((1 - update) * new + update * hidden,)


class Recurrence(NamedTuple):
    """What tells the recurrent kinds apart."""

    gates: int
    """Blocks of ``hidden_size`` rows in ``weight_ih`` and ``weight_hh``."""
    states: int
    """1 (``h``) or 2 (``h`` and ``c``)."""
    step: Callable[[Tensor, State, DirectionWeights], State]


RECURRENCES = {
    "RNN_TANH": Recurrence(1, 1, tanh_step),
    "RNN_RELU": Recurrence(1, 1, relu_step),
    "LSTM": Recurrence(4, 2, lstm_step),
    "GRU": Recurrence(3, 1, gru_step),
}


def hoisted_biases(step: Callable[[Tensor, State, DirectionWeights], State], sequence: Tensor,
                   weights: DirectionWeights) -> tuple[Tensor, DirectionWeights]:
    """The input's share of the gates for the whole sequence, and the weights each step uses. Where the step only adds
    ``b_hh`` to the gates (RNN, LSTM; not GRU, whose reset gate scales it), ``b_ih + b_hh`` goes into the one
    sequence-wide projection instead of an add per step: the same sum, ``L - 1`` fewer adds of ``(N, gates)``."""
    folds = step is not gru_step and weights.input_bias is not None and weights.hidden_bias is not None
    if not folds:
        return F.linear(sequence, weights.input, weights.input_bias), weights
    return (F.linear(sequence, weights.input, weights.input_bias + weights.hidden_bias),
            replace(weights, hidden_bias=None))


def unroll(step: Callable[[Tensor, State, DirectionWeights], State], input_gates: Tensor, state: State, weights: DirectionWeights,
           reverse: bool, masks: Sequence[Tensor | None] | None = None) -> tuple[Tensor, State]:
    """Run ``step`` along axis 0 (time) of ``input_gates`` ``(L, N, gates * hidden)``, last to first if ``reverse``:
    the hidden states stacked in time order ``(L, N, hidden)`` whichever the direction, and the final state. With
    ``masks`` (per step, which rows still run: bool ``(N, 1)``, or None where all do) a stopped row keeps its state
    and outputs zeros."""
    per_step = input_gates.unbind(0)
    times = range(len(per_step))
    hidden_at: dict[int, Tensor] = {}
    for time in reversed(times) if reverse else times:
        new = step(per_step[time], state, weights)
        if masks is None or masks[time] is None:
            state, hidden_at[time] = new, new[0]
        else:
            state, hidden_at[time] = masked_step(masks[time], new, state)
    return F.stack([hidden_at[time] for time in times]), state


def masked_step(running: Tensor, new: State, old: State) -> tuple[State, Tensor]:
    """The state after a step where only the ``running`` rows advance, and the step's output (zero elsewhere). A
    reverse pass starts with every row stopped, so each row's first real step is its last element, from ``h_0``."""
    return tuple(F.where(running, after, before) for after, before in zip(new, old)), F.where(running, new[0], 0.0)


def zeros(shape: tuple[Any, ...], like: Tensor) -> Tensor:
    """Zeros of ``like``'s dtype; ``shape`` may hold ``like``'s symbolic batch dim (one scalar constant, broadcast)."""
    return _filled(0.0, (), like).broadcast_to(shape)


def check_state(owner: str, name: str, state: Any, expected: tuple[Any, ...]) -> Tensor:
    """``state`` if it is a tensor of shape ``expected``, else a TraceError saying which state and what it must be."""
    if not isinstance(state, Tensor) or tuple(state.shape) != tuple(expected):
        got = state.type if isinstance(state, Tensor) else type(state).__name__
        raise located_error(f"{owner}: {name} must have shape {format_shape(tuple(expected))}, got {got}")
    return state


def state_tuple(owner: str, recurrence: Recurrence, hx: Any) -> tuple[Any, ...]:
    """``hx`` as ``(h,)`` or ``(h, c)``: an LSTM takes the pair ``(h_0, c_0)``, the others one tensor ``h_0``."""
    if recurrence.states == 1:
        if isinstance(hx, (tuple, list)):
            raise located_error(f"{owner}: hx must be one tensor h_0, got a {type(hx).__name__}; only LSTM takes (h_0, c_0)")
        return (hx,)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise located_error(f"{owner}: hx must be the pair (h_0, c_0), got {type(hx).__name__}")
    return tuple(hx)


def pack_state(recurrence: Recurrence, state: State) -> Tensor | State:
    """What PyTorch returns for a state: ``h`` alone, or the pair ``(h, c)`` for an LSTM."""
    return state if recurrence.states == 2 else state[0]


def uniform_parameter(shape: tuple[int, ...], hidden_size: int, dtype: str) -> Parameter:
    """PyTorch's recurrent default for every weight and bias: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    return Parameter(init.uniform(shape, 1.0 / math.sqrt(hidden_size), dtype))


def rnn_mode(owner: str, nonlinearity: str) -> str:
    """The ``RECURRENCES`` key of a plain RNN with ``nonlinearity``."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{owner}: unknown nonlinearity {nonlinearity!r}; select 'tanh' or 'relu'")
    return f"RNN_{nonlinearity.upper()}"


def check_sizes(owner: str, input_size: int, hidden_size: int) -> None:
    for name, size in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {size!r}")


# Layers over a sequence ------------------------------------------------------------------------------------------


class RNNBase(Module):
    """PyTorch's ``nn.RNNBase``: ``num_layers`` stacked recurrences, each one or two directions, over an input
    ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or unbatched ``(L, H_in)``. ``forward(input, hx=None)``
    returns ``(output, h_n)`` (an LSTM ``(output, (h_n, c_n))``): ``output`` holds the last layer's hidden states,
    both directions concatenated ``(L, N, D * H_out)``; ``h_n`` each layer's and direction's final state
    ``(D * num_layers, N, H_out)``, layer-major with the forward direction first. ``dropout`` drops each layer's
    output but the last's, in training only."""

    reset_parameters = layer_resets.recurrent_uniform

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        self._check_arguments(mode, input_size, hidden_size, num_layers, dropout, proj_size)
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.proj_size = proj_size
        self.recurrence = RECURRENCES[mode]
        for layer in range(num_layers):
            for suffix in self._suffixes():
                self._add_direction(f"_l{layer}{suffix}", input_size if layer == 0 else self._output_size * self._directions, dtype)
        layer_resets.reset_if_overridden(self, layer_resets.recurrent_uniform)

    def _check_arguments(self, mode: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, proj_size: int) -> None:
        owner = type(self).__name__
        check_sizes(owner, input_size, hidden_size)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"{owner}: num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"{owner}: dropout should be a number in range [0, 1] representing the probability of an element "
                             f"being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{owner}: dropout={dropout} and num_layers=1: dropout acts between layers only, so it does nothing here",
                          stacklevel=3)
        if proj_size < 0 or proj_size >= hidden_size or (proj_size and mode != "LSTM"):
            raise ValueError(f"{owner}: proj_size must be 0, or for an LSTM in (0, hidden_size={hidden_size}); got {proj_size}")

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _output_size(self) -> int:
        """``H_out``: the features of ``h`` (``proj_size`` for a projected LSTM)."""
        return self.proj_size or self.hidden_size

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def _add_direction(self, suffix: str, input_features: int, dtype: str) -> None:
        """Parameters in PyTorch's order (which ``state_dict`` and the initialisation draws follow)."""
        rows = self.recurrence.gates * self.hidden_size
        shapes = {"weight_ih": (rows, input_features), "weight_hh": (rows, self._output_size)}
        if self.bias:
            shapes |= {"bias_ih": (rows,), "bias_hh": (rows,)}
        if self.proj_size:
            shapes["weight_hr"] = (self.proj_size, self.hidden_size)
        for name, shape in shapes.items():
            setattr(self, name + suffix, uniform_parameter(shape, self.hidden_size, dtype))

    def _weights(self, layer: int, direction: int) -> DirectionWeights:
        suffix = f"_l{layer}{self._suffixes()[direction]}"
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")  # DirectionWeights' fields, in order
        return DirectionWeights(*(getattr(self, name + suffix, None) for name in names))

    @property
    def _all_weights(self) -> list[list[str]]:
        """PyTorch's parameter names per layer and direction (``[['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0',
        'bias_hh_l0'], ...]``), which code walks to initialise them (DeepAR sets the forget gates' biases to 1 by
        ``for names in lstm._all_weights``)."""
        return [[name + f"_l{layer}{suffix}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                 if hasattr(self, name + f"_l{layer}{suffix}")]
                for layer in range(self.num_layers) for suffix in self._suffixes()]

    @property
    def _flat_weights_names(self) -> list[str]:
        return [name for names in self._all_weights for name in names]

    @property
    def _flat_weights(self) -> list[Parameter]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Parameter]]:
        """The parameters of each layer and direction, in ``_all_weights``' order (PyTorch's ``all_weights``)."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """Nothing to do: kiln keeps no cuDNN weight buffer (PyTorch code that calls this runs as is)."""

    def forward(self, input: Tensor | PackedSequence, hx: Any = None) -> tuple[Tensor | PackedSequence, Tensor | State]:
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        batched = self._check_input(input)
        sequence = (input.transpose(0, 1) if self.batch_first else input) if batched else input.unsqueeze(1)
        output, final = self._run_layers(sequence, self._initial_state(hx, sequence, batched))
        if not batched:
            return output.squeeze(1), pack_state(self.recurrence, tuple(state.squeeze(1) for state in final))
        return (output.transpose(0, 1) if self.batch_first else output), pack_state(self.recurrence, final)

    def _forward_packed(self, packed: PackedSequence, hx: Any) -> tuple[PackedSequence, Tensor | State]:
        """PyTorch's packed path (``frontend/rnn_utils.py``): the sequences as the padded batch ``(T, N, H_in)``,
        time-major in the batch's order whatever ``batch_first``, each step masked by ``t < lengths`` (no mask where
        every row runs), the output in the input's form and layout. ``hx`` and ``h_n`` are in the batch's order, as
        PyTorch's (which permutes them by ``sorted_indices`` around its sorted run)."""
        padded, lengths = unpacked_batch(packed)
        if padded.ndim != 3:
            raise located_error(f"{type(self).__name__}(input_size={self.input_size}): a PackedSequence must hold rows (sum(lengths), "
                                f"H_in) (masked, with traced lengths: a padded batch (L, N, H_in)), got {packed.data.type}")
        self._check_input(padded, time_major=True)
        initial = self._initial_state(hx, padded, batched=True)
        output, final = self._run_layers(padded, initial, step_masks(lengths, padded.shape[0]))
        return repacked(packed, output), pack_state(self.recurrence, final)

    def _check_input(self, input: Tensor, time_major: bool = False) -> bool:
        """Whether ``input`` is batched; a TraceError for a wrong rank, feature size or a symbolic or empty time axis.
        ``time_major``: a packed sequence's data, ``(L, N, H_in)`` whatever ``batch_first``."""
        owner = f"{type(self).__name__}(input_size={self.input_size})"
        check_sequence_input(type(self).__name__, input, self.input_size)
        time_axis = 1 if input.ndim == 3 and self.batch_first and not time_major else 0
        length = input.shape[time_axis]
        if not isinstance(length, int):
            hint = (" (kiln.compile and compile_train_step make dim 0 the symbolic batch unless told otherwise: pass batch_dim=1 for "
                    "sequence-first inputs, or build the layer with batch_first=True and feed (N, L, H_in))") if time_axis == 0 and input.ndim == 3 else ""
            raise located_error(f"{owner} unrolls its time loop when traced, so the sequence length must be static: dim {time_axis} "
                                f"of {input.type} is the symbolic {length!r}; trace with a fixed length (pad to one length){hint}")
        if length == 0:
            raise located_error(f"{owner}: the input {input.type} has no time steps")
        return input.ndim == 3

    def _initial_state(self, hx: Any, sequence: Tensor, batched: bool) -> State:
        """The initial states ``(D * num_layers, N, size)``: zeros without ``hx``, else ``hx`` checked (and given a
        batch dim of 1 when unbatched)."""
        owner, layers = type(self).__name__, self._directions * self.num_layers
        sizes = (self._output_size, self.hidden_size)[: self.recurrence.states]
        if hx is None:
            return tuple(zeros((layers, sequence.shape[1], size), sequence) for size in sizes)
        given = state_tuple(owner, self.recurrence, hx)
        check_sequence_states(given, (layers, sequence.shape[1]), sizes, batched)
        names = ("h_0", "c_0") if self.recurrence.states == 2 else ("hx",)
        if batched:
            return tuple(check_state(owner, name, state, (layers, sequence.shape[1], size)) for name, state, size in zip(names, given, sizes))
        return tuple(check_state(owner, name, state, (layers, size)).unsqueeze(1) for name, state, size in zip(names, given, sizes))

    def _run_layers(self, sequence: Tensor, initial: State, masks: Sequence[Tensor | None] | None = None) -> tuple[Tensor, State]:
        """The last layer's hidden states ``(L, N, D * H_out)`` and the final states stacked ``(D * num_layers, N, size)``;
        ``masks`` (``unroll``'s) for a packed sequence."""
        finals: list[State] = []
        for layer in range(self.num_layers):
            if layer:
                sequence = F.dropout(sequence, self.dropout, training=self.training)
            sequence = self._run_layer(layer, sequence, initial, finals, masks)
        return sequence, tuple(F.stack([final[which] for final in finals]) for which in range(self.recurrence.states))

    def _run_layer(self, layer: int, sequence: Tensor, initial: State, finals: list[State],
                   masks: Sequence[Tensor | None] | None) -> Tensor:
        """One layer over ``sequence`` ``(L, N, features)``: its directions' hidden states concatenated
        ``(L, N, D * H_out)``; each direction's final state is appended to ``finals``."""
        outputs = []
        for direction in range(self._directions):
            weights = self._weights(layer, direction)
            state = tuple(part[layer * self._directions + direction] for part in initial)
            input_gates, weights = hoisted_biases(self.recurrence.step, sequence, weights)
            output, final = unroll(self.recurrence.step, input_gates, state, weights, reverse=direction == 1, masks=masks)
            outputs.append(output)
            finals.append(final)
        return F.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"proj_size": 0, "num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": False}
        return text + "".join(f", {name}={getattr(self, name)}" for name, default in defaults.items() if getattr(self, name) != default)


class RNN(RNNBase):
    """``torch.nn.RNN``: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)``, or relu with ``nonlinearity="relu"``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__(rnn_mode("RNN", nonlinearity), input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")


class LSTM(RNNBase):
    """``torch.nn.LSTM``: gates ``i, f, g, o``; ``forward(input, (h_0, c_0))`` returns ``(output, (h_n, c_n))``. With
    ``proj_size > 0`` each step's ``h`` is projected by ``weight_hr`` to ``proj_size`` features."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size, dtype)


class GRU(RNNBase):
    """``torch.nn.GRU``: gates ``r, z, n`` with ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0, dtype)


# Cells: one time step -------------------------------------------------------------------------------------------


class RNNCellBase(Module):
    """PyTorch's ``nn.RNNCellBase``: one step on ``(N, H_in)`` or unbatched ``(H_in,)`` with parameters
    ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``; a missing state is zeros."""

    reset_parameters = layer_resets.recurrent_uniform

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.recurrence = RECURRENCES[mode]
        rows = self.recurrence.gates * hidden_size
        self.weight_ih = uniform_parameter((rows, input_size), hidden_size, dtype)
        self.weight_hh = uniform_parameter((rows, hidden_size), hidden_size, dtype)
        self.bias_ih = uniform_parameter((rows,), hidden_size, dtype) if bias else None  # None without bias, as PyTorch's
        self.bias_hh = uniform_parameter((rows,), hidden_size, dtype) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.recurrent_uniform)

    def forward(self, input: Tensor, hx: Any = None) -> Tensor | State:
        batched = self._check_input(input)
        input = input if batched else input.unsqueeze(0)
        weights = DirectionWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        state = self.recurrence.step(F.linear(input, weights.input, weights.input_bias), self._initial_state(hx, input, batched), weights)
        return pack_state(self.recurrence, state if batched else tuple(part.squeeze(0) for part in state))

    def _check_input(self, input: Tensor) -> bool:
        owner = f"{type(self).__name__}(input_size={self.input_size})"
        if isinstance(input, PackedSequence):
            raise located_error(f"{owner}: a cell runs one time step and takes no PackedSequence; feed the step's input (N, "
                                f"{self.input_size}), or run the sequence through {type(self).__name__.removesuffix('Cell')}")
        check_cell_input(type(self).__name__, input, self.input_size)
        return input.ndim == 2

    def _initial_state(self, hx: Any, input: Tensor, batched: bool) -> State:
        owner, shape = type(self).__name__, (input.shape[0], self.hidden_size)
        if hx is None:
            return tuple(zeros(shape, input) for _ in range(self.recurrence.states))
        given = state_tuple(owner, self.recurrence, hx)
        check_cell_states(given, input, self.hidden_size)
        names = ("h_0", "c_0") if self.recurrence.states == 2 else ("hx",)
        if batched:
            return tuple(check_state(owner, name, state, shape) for name, state in zip(names, given))
        return tuple(check_state(owner, name, state, shape[1:]).unsqueeze(0) for name, state in zip(names, given))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(RNNCellBase):
    """``torch.nn.RNNCell``: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (relu with ``nonlinearity="relu"``)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__(rnn_mode("RNNCell", nonlinearity), input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")


class LSTMCell(RNNCellBase):
    """``torch.nn.LSTMCell``: ``forward(input, (h, c))`` returns ``(h', c')``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__("LSTM", input_size, hidden_size, bias, dtype)


class GRUCell(RNNCellBase):
    """``torch.nn.GRUCell``: one GRU step, gates ``r, z, n``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__("GRU", input_size, hidden_size, bias, dtype)


__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "RNNCellBase"]
