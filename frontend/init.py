"""Parameter initialisation, matching PyTorch's defaults in distribution.

A module-level NumPy generator makes initialisation reproducible:
``kiln.manual_seed(0)``.
"""

from __future__ import annotations

import math

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed kiln's initialisation generator."""
    global _generator
    _generator = np.random.default_rng(seed)


def uniform(shape: tuple[int, ...], bound: float, dtype: str = "float32") -> np.ndarray:
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


def linear_weight(out_features: int, in_features: int, dtype: str = "float32") -> np.ndarray:
    """``nn.Linear``'s default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform((out_features, in_features), 1.0 / math.sqrt(in_features), dtype)


def linear_bias(out_features: int, in_features: int, dtype: str = "float32") -> np.ndarray:
    return uniform((out_features,), 1.0 / math.sqrt(in_features), dtype)


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
