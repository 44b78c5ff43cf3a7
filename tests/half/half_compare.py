"""Comparing half-precision results: kiln's float16/bfloat16 arrays against PyTorch's in the same dtype.

``assert_half_close(actual, expected, "f16")`` uses ``torch.testing``'s default tolerances for the dtype
(float16: rtol 1e-3, atol 1e-5; bfloat16: rtol 1.6e-2, atol 1e-5). Where kiln and PyTorch round at different points
(kiln computes a composite in float32 and rounds once where torch rounds between its steps, or the reverse, or sums in
another order), a case states ``ulps``: each element may then be off by that many units in the last place of the
dtype, counted at the element's own magnitude or at the tensor's largest magnitude, whichever is larger (a sum's
rounding error scales with what was summed, not with the sum).
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

HALF = ("f16", "bf16")
NUMPY_HALF = {"f16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
EPS = {"f16": 2.0**-10, "bf16": 2.0**-7}
"""The spacing of the dtype's numbers in [1, 2): one ulp at magnitude 1."""
TORCH_DEFAULTS = {"f16": (1e-3, 1e-5), "bf16": (1.6e-2, 1e-5)}
"""``torch.testing.assert_close``'s default (rtol, atol) per dtype."""


def torch_dtype(torch: Any, dtype: str) -> Any:
    return {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]


def to_half(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` rounded to the half dtype (round to nearest even, as torch's ``.to(torch.float16)``)."""
    return np.asarray(array, dtype=np.float32).astype(NUMPY_HALF[dtype])


def from_torch(tensor: Any) -> np.ndarray:
    """A torch tensor's values: half ones as float64 (NumPy cannot read torch's bfloat16 directly), float32 and float64
    ones, ints and bools as they are (the dtype tells ``assert_half_close`` what kiln's must be)."""
    tensor = tensor.detach()
    return tensor.double().numpy() if tensor.dtype in (torch_dtype(_torch(), "f16"), torch_dtype(_torch(), "bf16")) else tensor.numpy()


def _torch() -> Any:
    import torch

    return torch


def tolerance(dtype: str, expected: np.ndarray, ulps: float | None) -> tuple[float, float]:
    """``(rtol, atol)`` for ``expected``: torch's defaults, or ``ulps`` ulps of the element or of the tensor's largest element."""
    if ulps is None:
        return TORCH_DEFAULTS[dtype]
    finite = np.abs(expected[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 1.0
    return ulps * EPS[dtype], ulps * EPS[dtype] * max(scale, 1e-30)


def assert_half_close(actual: Any, expected: np.ndarray, dtype: str, ulps: float | None = None, what: str = "") -> None:
    """``actual`` (kiln's array) is in ``dtype`` (float32 where torch's is) and within tolerance of ``expected``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if expected.dtype == np.float32:  # torch's result is float32 (F.softmax(..., dtype=float32), sum(dtype=...))
        assert actual.dtype == np.float32, f"{what}: kiln's result is {actual.dtype}, torch's float32"
    elif np.issubdtype(expected.dtype, np.floating):
        assert actual.dtype == NUMPY_HALF[dtype], f"{what}: kiln's result is {actual.dtype}, not {NUMPY_HALF[dtype]}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    rtol, atol = tolerance(dtype, np.asarray(expected, dtype=np.float64), ulps)
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
