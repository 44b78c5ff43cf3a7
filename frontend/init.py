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
