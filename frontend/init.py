"""Parameter initialisation, matching PyTorch's defaults in distribution.

A module-level NumPy generator makes initialisation reproducible:
``kiln.manual_seed(0)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_generator = np.random.default_rng(0)
_seed = 0


def manual_seed(seed: int) -> Any:
    """Seed kiln's generator (initialisation, eager random ops, the seeds compiled calls draw). In a ``kiln.compile``
    trace it is refused, so the function runs eagerly (``fullgraph=True`` raises), as torch.compile breaks the graph
    there: its random ops draw once per call from the generator, which the trace would have seeded once only."""
    from kiln.frontend.trace import TraceContext, located_error  # lazily: the trace builds on initialisation

    if not TraceContext.current().eager:
        raise located_error(f"manual_seed({seed}) inside a compiled function: the graph draws its random numbers at each "
                            "call, so seeding once while tracing would not repeat them; seed before calling it")
    global _generator, _seed
    _generator, _seed = np.random.default_rng(seed), int(seed)
    from kiln.frontend.torch_generator import default_generator  # lazily: the generator reads this module

    return default_generator  # as torch's: the global stream, seeded


def draw_seed() -> np.ndarray:
    """A fresh int64 ``rng_seed`` for a graph's random ops, drawn from kiln's generator (``manual_seed`` repeats the
    draws: eager dropout, a compiled training call or step)."""
    return np.asarray(_generator.integers(0, 2**62), dtype=np.int64)


def current_seed() -> int:
    """The seed of the last ``manual_seed`` (``kiln.initial_seed()``)."""
    return _seed


def uniform(shape: tuple[int, ...], bound: float, dtype: str = "float32") -> np.ndarray:
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


def linear_weight(out_features: int, in_features: int, dtype: str = "float32") -> np.ndarray:
    """``nn.Linear``'s default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform((out_features, in_features), _linear_bound(in_features), dtype)


def linear_bias(out_features: int, in_features: int, dtype: str = "float32") -> np.ndarray:
    return uniform((out_features,), _linear_bound(in_features), dtype)


def _linear_bound(in_features: int) -> float:
    """``1/sqrt(fan_in)``, and 0 without inputs (``Linear(0, n)``: an adaptive softmax's empty tail projection for
    small ``in_features``), as torch's ``reset_parameters``: a zero bias."""
    return 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0


def normal(shape: tuple[int, ...], std: float = 1.0, dtype: str = "float32") -> np.ndarray:
    """N(0, std^2), as ``torch.nn.init.normal_`` (``nn.Embedding``'s default)."""
    return (_generator.standard_normal(size=shape) * std).astype(dtype)


def xavier_uniform(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """U(-b, b) with b = sqrt(6 / (fan_in + fan_out)), as ``torch.nn.init.xavier_uniform_`` on a matrix."""
    fan_out, fan_in = shape[0], int(np.prod(shape[1:]))
    return uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def rng_state() -> dict:
    """The initialisation generator's state (JSON-serialisable), for checkpoints."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state from ``rng_state()``: later initialisations draw what they would have drawn."""
    _generator.bit_generator.state = state


# torch.nn.init: in place on a Parameter (or an array), drawing from the generator above ------------------------

GAINS = {"linear": 1.0, "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0, "conv_transpose1d": 1.0, "conv_transpose2d": 1.0,
         "conv_transpose3d": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 3.0 / 4}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity``, as ``torch.nn.init.calculate_gain``."""
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative_slope {slope!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity not in GAINS:
        raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; one of {sorted(GAINS) + ['leaky_relu']}")
    return GAINS[nonlinearity]


def fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight: ``(size(1), size(0))`` times the receptive field (the kernel's size)."""
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight of at least 2 dims, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fill(tensor, values: np.ndarray):
    """Write ``values`` into ``tensor`` in place, in its dtype; return ``tensor``. A Parameter's or an array's memory
    is written; an eager tensor (``nn.init.normal_(kiln.empty(3, 4))``) takes them through ``copy_``, which rebinds
    it (frontend/tensor_inplace.py)."""
    from kiln.frontend.grad_mode import no_grad  # lazily, as the classes: init loads first
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.tensor import Tensor

    if isinstance(tensor, Tensor) and not isinstance(tensor, ArrayLeaf):
        with no_grad():
            return tensor.copy_(values.astype(tensor.dtype.numpy))
    target = tensor.data if isinstance(tensor, ArrayLeaf) else tensor
    target[...] = values.astype(target.dtype)
    return tensor


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape)


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    return _fill(tensor, _generator.uniform(a, b, size=_shape(tensor)))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    return _fill(tensor, mean + std * _generator.standard_normal(size=_shape(tensor)))


def trunc_normal_(tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0):
    """N(mean, std^2) restricted to [a, b]: draws outside are drawn again (exact, unlike an inverse-CDF in float32)."""
    shape = _shape(tensor)
    values = mean + std * _generator.standard_normal(size=shape)
    outside = (values < a) | (values > b)
    while outside.any():
        values[outside] = mean + std * _generator.standard_normal(size=int(outside.sum()))
        outside = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor, val: float):
    return _fill(tensor, np.full(_shape(tensor), val))


def ones_(tensor):
    return constant_(tensor, 1.0)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def eye_(tensor):
    shape = _shape(tensor)
    if len(shape) != 2:
        raise ValueError(f"eye_ fills a matrix, got shape {shape}")
    return _fill(tensor, np.eye(*shape))


def dirac_(tensor, groups: int = 1):
    """A convolution that passes its input through: 1 at the kernel's centre from each input channel to the output
    channel of the same index (per group), 0 elsewhere (torch's ``dirac_``, for 3-, 4- and 5-d weights)."""
    shape = _shape(tensor)
    if len(shape) not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if shape[0] % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")
    per_group = shape[0] // groups
    values = np.zeros(shape)
    centre = tuple(size // 2 for size in shape[2:])
    for group in range(groups):
        for channel in range(min(per_group, shape[1])):
            values[(group * per_group + channel, channel) + centre] = 1.0
    return _fill(tensor, values)


def sparse_(tensor, sparsity: float, std: float = 0.01):
    """N(0, std^2) with ``ceil(sparsity * rows)`` entries of each column set to 0 (Martens' sparse initialisation, as
    torch's ``sparse_``, for matrices)."""
    shape = _shape(tensor)
    if len(shape) != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    rows, columns = shape
    values = std * _generator.standard_normal(size=shape)
    zeros = int(math.ceil(sparsity * rows))
    for column in range(columns):
        values[_generator.permutation(rows)[:zeros], column] = 0.0
    return _fill(tensor, values)


def xavier_uniform_(tensor, gain: float = 1.0):
    fan_in, fan_out = fan_in_and_fan_out(_shape(tensor))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain: float = 1.0):
    fan_in, fan_out = fan_in_and_fan_out(_shape(tensor))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def correct_fan(shape: tuple[int, ...], mode: str) -> int:
    """The fan ``mode`` names (``"fan_in"`` or ``"fan_out"``, any case, as torch's) of a weight of ``shape``."""
    if not isinstance(mode, str) or mode.lower() not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in_and_fan_out(shape)[0 if mode.lower() == "fan_in" else 1]


def _calculate_fan_in_and_fan_out(tensor) -> tuple[int, int]:
    """torch.nn.init's private ``_calculate_fan_in_and_fan_out(tensor)``, which reference code calls: a custom
    layer's ``reset_parameters`` copied from ``nn.Linear`` (``bound = 1 / math.sqrt(fan_in)``), siren's
    ``hyper_bias_init``, timm's ``variance_scaling_``."""
    return fan_in_and_fan_out(_shape(tensor))


def _calculate_correct_fan(tensor, mode: str) -> int:
    """torch.nn.init's private ``_calculate_correct_fan(tensor, mode)``: the fan a kaiming initialiser scales by."""
    return correct_fan(_shape(tensor), mode)


def _kaiming_std(shape: tuple[int, ...], a: float, mode: str, nonlinearity: str) -> float:
    return calculate_gain(nonlinearity, a) / math.sqrt(correct_fan(shape, mode))


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    bound = math.sqrt(3.0) * _kaiming_std(_shape(tensor), a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    return normal_(tensor, 0.0, _kaiming_std(_shape(tensor), a, mode, nonlinearity))


def orthogonal_(tensor, gain: float = 1.0):
    """A (semi-)orthogonal matrix from the QR decomposition of a normal one (signs fixed by R's diagonal), reshaped
    to the weight, as ``torch.nn.init.orthogonal_``."""
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ValueError(f"orthogonal_ needs at least 2 dims, got shape {shape}")
    rows, cols = shape[0], int(np.prod(shape[1:]))
    flat = _generator.standard_normal(size=(rows, cols))
    q, r = np.linalg.qr(flat.T if rows < cols else flat)
    q = q * np.sign(np.diag(r))
    return _fill(tensor, gain * (q.T if rows < cols else q).reshape(shape))
