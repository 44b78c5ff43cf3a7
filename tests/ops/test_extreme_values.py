"""Elementwise activations and unary math at extreme inputs, kiln (eager; compiled for NumPy and for onnxruntime)
against PyTorch.

Each function runs on every point of ``POINTS`` (+-inf, NaN, +-1e30, +-1e5, +-88..90, subnormals, +-0) in float32
and float64; its value and the gradient of its sum must match torch's: NaN where torch has NaN, an inf of the same
sign where torch has an inf, finite values within a few ulps (``ULPS``; onnxruntime's float32 kernels on subnormal
operands: ``ORT_SUBNORMAL_FLOAT32``).

Where torch is wrong against float64 math, kiln follows the math, and ``torch_expectation`` says so:

- NaN from a finite float32 input where torch's float64 kernel gives a number for the same input: torch's float32
  kernel overflows an intermediate (tanh-GELU's backward at +-1e30 squares x to inf and multiplies it by the
  ``1 - tanh^2`` that is 0: NaN, where the slope is 1 or 0). The float64 answer, rounded to float32, is expected.
- ``MATH``: a value or gradient computed from its formula in float64 (or torch in float64), one reason each.
- ``OWN_ANSWERS``: where torch's answer is an accident of its kernel, kiln's is pinned to one that does not depend on
  the machine. The gradient at a NaN input is whatever torch's backward's comparison happens to give there (relu 1,
  hardtanh 0), and for some functions it depends on the CPU kernel torch picks by ISA (elu's is NaN under AVX2, 1 under
  AVX-512); so is float32 GELU at +inf (oneDNN's AVX-512 kernel gives NaN). torch's answer must be one of those
  recorded, and kiln's is compared with its own.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from oracles import libraries, require, require_torch

import kiln

POINTS = np.array([np.inf, -np.inf, np.nan, 1e30, -1e30, 1e5, -1e5, 88.0, -88.0, 88.5, -88.5, 89.0, -89.0, 90.0, -90.0,
                   1e-40, -1e-40, 1e-310, -1e-310, 0.0, -0.0])
"""1e-40 is subnormal in float32, 1e-310 in float64 (and 0 in float32)."""
DTYPES = ("float32", "float64")
ULPS = 4
Function = Callable[[Any, Any, Any], Any]
"""``(lib, F, x) -> y`` written once against torch's names, run with kiln or torch (``libraries``)."""

FUNCTIONS: dict[str, Function] = {
    "gelu_tanh": lambda lib, F, x: F.gelu(x, approximate="tanh"),
    "gelu": lambda lib, F, x: F.gelu(x),
    "sigmoid": lambda lib, F, x: lib.sigmoid(x),
    "tanh": lambda lib, F, x: lib.tanh(x),
    "silu": lambda lib, F, x: F.silu(x),
    "softplus": lambda lib, F, x: F.softplus(x),
    "softplus_beta_2_threshold_5": lambda lib, F, x: F.softplus(x, beta=2.0, threshold=5.0),
    "softplus_beta_0.5_threshold_40": lambda lib, F, x: F.softplus(x, beta=0.5, threshold=40.0),
    "mish": lambda lib, F, x: F.mish(x),
    "elu": lambda lib, F, x: F.elu(x),
    "elu_alpha_0.5": lambda lib, F, x: F.elu(x, alpha=0.5),
    "selu": lambda lib, F, x: F.selu(x),
    "celu_alpha_2": lambda lib, F, x: F.celu(x, alpha=2.0),
    "logsigmoid": lambda lib, F, x: F.logsigmoid(x),
    "hardswish": lambda lib, F, x: F.hardswish(x),
    "hardsigmoid": lambda lib, F, x: F.hardsigmoid(x),
    "erf": lambda lib, F, x: lib.erf(x),
    "erfc": lambda lib, F, x: lib.erfc(x),
    "erfinv": lambda lib, F, x: lib.erfinv(x),
    "log1p": lambda lib, F, x: lib.log1p(x),
    "expm1": lambda lib, F, x: lib.expm1(x),
    "softsign": lambda lib, F, x: F.softsign(x),
    "tanhshrink": lambda lib, F, x: F.tanhshrink(x),
    "logit": lambda lib, F, x: lib.logit(x),
    "logit_eps": lambda lib, F, x: lib.logit(x, eps=1e-6),
    "xlogy_x_x": lambda lib, F, x: lib.xlogy(x, x),
    "sinc": lambda lib, F, x: lib.sinc(x),
    "relu": lambda lib, F, x: F.relu(x),
    "relu6": lambda lib, F, x: F.relu6(x),
    "leaky_relu": lambda lib, F, x: F.leaky_relu(x, 0.1),
    "hardtanh": lambda lib, F, x: F.hardtanh(x),
    "softshrink": lambda lib, F, x: F.softshrink(x),
    "hardshrink": lambda lib, F, x: F.hardshrink(x),
    "exp": lambda lib, F, x: lib.exp(x),
    "log": lambda lib, F, x: lib.log(x),
    "sqrt": lambda lib, F, x: lib.sqrt(x),
    "rsqrt": lambda lib, F, x: lib.rsqrt(x),
}


def _torch64(function: Function, kind: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: run_torch(function, x.astype(np.float64))[kind]


def _sin_cos_pi(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sin(pi x)`` and ``cos(pi x)`` from ``x - round(x)``, exact in floats (``pi x`` rounded is not)."""
    turns = np.round(x)
    sign = 1 - 2 * np.abs(turns - 2 * np.round(turns / 2))
    r = x - turns
    return sign * np.sin(np.pi * r), sign * np.sin(np.pi * (0.5 - np.abs(r)))  # cos(pi r) = sin(pi (1/2 - |r|)), exact at 1/2


def _sinc(x: np.ndarray) -> np.ndarray:
    return np.where(x == 0, 1.0, _sin_cos_pi(x)[0] / (np.pi * x))


def _sinc_slope(x: np.ndarray) -> np.ndarray:
    """``d/dx sin(pi x) / (pi x) = (cos(pi x) - sinc(x)) / x``; ``-pi^2 x / 3`` near 0."""
    return np.where(np.abs(x) < 1e-4, -np.pi**2 * x / 3, (_sin_cos_pi(x)[1] - _sinc(x)) / x)


MATH: dict[tuple[str, int], tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    ("expm1", 1): (np.exp, "torch's backward is expm1(x) + 1, which cancels to 0 below -37 (float32) / -88 (float64)"),
    ("hardsigmoid", 1): (lambda x: np.where((x > -3) & (x < 3), 1 / 6, 0.0),
                         "torch's float64 backward multiplies by float32's 1/6 (0.1666666716...)"),
    ("mish", 1): (_torch64(FUNCTIONS["mish"], 1), "torch's float32 backward is 0 or positive below -88, where the "
                  "slope is -|x| e^x (-2e-37 at -89), as its float64 backward gives"),
    ("sinc", 0): (_sinc, "torch rounds pi x, so sinc of an integer (88, 1e5, 1e30) is not 0 (5e-8 at 1e5, float32)"),
    ("sinc", 1): (_sinc_slope, "torch's backward cancels to 0 near 0 (the slope is -pi^2 x / 3) and rounds pi x (at an "
                  "even integer the slope is 1 / x)"),
    ("softsign", 0): (lambda x: np.where(np.isinf(x), np.sign(x), x / (1 + np.abs(x))),
                      "torch's inf / (1 + inf) is NaN; the limit is +-1, as tanh's"),
    ("softsign", 1): (lambda x: 1 / (1 + np.abs(x)) ** 2, "torch's float32 slope at 90 is 89 ulps off: it differentiates "
                      "x / (1 + |x|) as a quotient, two close terms"),
    ("logit", 1): (lambda x: np.where((x < 0) | (x > 1), np.nan, 1 / x + 1 / (1 - x)),
                   "torch's slope at -0 is +inf; 1 / p + 1 / (1 - p) is -inf there, the sign of 1 / -0 (as log's slope)"),
    ("xlogy_x_x", 1): (lambda x: np.where(x == 0, 0.0, np.log(x) + x / x),
                       "at x = y = 0 torch adds the slope x / y = 0 / 0 = NaN in y; x log y is 0 all along x = 0, so "
                       "that slope is 0"),
}
"""``(function, 0 for the value or 1 for the gradient)`` -> (float64 math, why torch's answer is not the oracle)."""

NAN = float("nan")
OWN_ANSWERS: dict[tuple[str, int, float], tuple[float, tuple[float, ...]]] = {
    # A NaN falls into one branch of kiln's ``where``: the slope of that piece (torch's comparison picks another piece).
    ("relu", 1, NAN): (0.0, (1.0,)),
    ("relu6", 1, NAN): (1.0, (0.0,)),
    ("hardtanh", 1, NAN): (1.0, (0.0,)),
    ("hardsigmoid", 1, NAN): (1 / 6, (0.0,)),
    # NaN in, NaN out where the slope is arithmetic in x. torch's float32 slope at NaN is its AVX-512 kernel's
    # (second answer) or its AVX2 and default kernels' (first); float64 gives the first on all three.
    ("logit_eps", 1, NAN): (NAN, (0.0, NAN)),
    ("elu", 1, NAN): (NAN, (NAN, 1.0)),
    ("elu_alpha_0.5", 1, NAN): (NAN, (NAN, 1.0)),
    ("celu_alpha_2", 1, NAN): (NAN, (NAN, 1.0)),
    ("selu", 1, NAN): (NAN, (NAN, 1.0507010221481323)),
    ("hardswish", 1, NAN): (NAN, (NAN, 1.0)),
    # x Phi(x) -> inf, as torch's float64 and its float32 oneDNN AVX2 kernel give; oneDNN's AVX-512 kernel gives NaN.
    ("gelu", 0, np.inf): (np.inf, (np.inf, NAN)),
}
"""``(function, 0 value / 1 gradient, x)`` -> (kiln's answer, torch's answers), in float32 and float64. torch's were
measured once with torch 2.13.0 on an AVX-512 (AMX) Xeon under ATEN_CPU_CAPABILITY=default/avx2/avx512 and
ONEDNN_MAX_CPU_ISA=SSE41/AVX2/AVX512_CORE_AMX; nothing else in ``POINTS`` differed between those kernels beyond
``ULPS`` (float32 GELU's sign of 0 left of 0 did: +0 under oneDNN AVX2, -0 under AVX-512; 0 and -0 compare equal)."""


ORT_SUBNORMAL_FLOAT32 = 1e-2
"""onnxruntime's float32 Tanh and Exp (vectorised polynomials) are not ulp-accurate on subnormal operands: at
``|x| = 1e-40`` its elu, expm1, tanh are within this much of ``|x|`` (elu 2e-3), and its mish below -88 (where softplus
is subnormal) within ``ORT_MISH_FLOAT32`` relative."""
ORT_MISH_FLOAT32 = 1e-3


def ort_tolerance(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(relative, absolute)`` tolerance per point of onnxruntime's float32 results (``ORT_SUBNORMAL_FLOAT32``)."""
    info = np.finfo(np.float32)
    subnormal = (x != 0) & (np.abs(x) < info.tiny)
    relative = np.where((name == "mish") & (x <= -88), ORT_MISH_FLOAT32, ULPS * info.eps)
    return relative, np.where(subnormal, ORT_SUBNORMAL_FLOAT32 * np.abs(x).astype(np.float64), ULPS * info.smallest_subnormal)


def run_kiln(function: Function, x: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(f(x), d sum f / dx)`` in kiln: eager (``backward``) or one compiled graph (``kiln.grad`` inside) on the NumPy
    backend or onnxruntime."""
    lib, _, F = libraries("kiln")
    if mode != "eager":
        backend = "onnxruntime" if mode == "onnxruntime" else "numpy"
        both = kiln.compile(lambda z: (function(lib, F, z), kiln.grad(lambda w: function(lib, F, w).sum())(z)), backend=backend)
        value, gradient = both(x)
        return np.asarray(value), np.asarray(gradient)
    leaf = kiln.tensor(x, requires_grad=True)
    y = function(lib, F, leaf)
    y.sum().backward()
    return y.numpy(), leaf.grad.numpy()


def run_torch(function: Function, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    torch, _, F = libraries("torch")
    leaf = torch.tensor(x, requires_grad=True)
    y = function(torch, F, leaf)
    y.sum().backward()
    return y.detach().numpy(), leaf.grad.numpy()


def torch_expectation(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch's value and gradient of ``FUNCTIONS[name]`` at ``x``, float64 math where torch is wrong and kiln's own
    answer where torch's depends on its kernel (module docstring)."""
    expected = list(run_torch(FUNCTIONS[name], x))
    assert_torch_answers_recorded(name, x, expected)
    with np.errstate(all="ignore"):  # float64 answers past float32's range round to inf, as they should
        if x.dtype == np.float32:
            wide = run_torch(FUNCTIONS[name], x.astype(np.float64))
            for kind, (narrow, precise) in enumerate(zip(expected, wide)):
                overflowed = np.isnan(narrow) & np.isfinite(x) & ~np.isnan(precise)
                expected[kind] = np.where(overflowed, precise.astype(np.float32), narrow)
        for kind in (0, 1):
            if (name, kind) in MATH:
                expected[kind] = np.asarray(MATH[name, kind][0](x.astype(np.float64))).astype(x.dtype)
    for (function, kind, point), (own, _) in OWN_ANSWERS.items():
        if function == name:
            expected[kind] = np.where(same_point(x, point), np.asarray(own, x.dtype), expected[kind])
    return expected[0], expected[1]


def same_point(x: np.ndarray | float, point: float) -> np.ndarray | bool:
    """Where ``x`` is ``point``, NaN included."""
    return np.isnan(x) if np.isnan(point) else x == point


def assert_torch_answers_recorded(name: str, x: np.ndarray, torch_answers: list[np.ndarray]) -> None:
    """torch's answer at each ``OWN_ANSWERS`` point is one of those recorded there: else torch changed, and kiln's
    choice should be looked at again."""
    torch, _, _ = libraries("torch")
    for (function, kind, point), (_, recorded) in OWN_ANSWERS.items():
        for answer in torch_answers[kind][same_point(x, point)].tolist() if function == name else []:
            assert any(same_point(answer, r) for r in recorded), (
                f"torch's {('value', 'gradient')[kind]} of {name} at {point} ({x.dtype}, CPU capability "
                f"{torch.backends.cpu.get_cpu_capability()}) is {answer}, not one of {recorded}: update OWN_ANSWERS")


def mismatches(actual: np.ndarray, expected: np.ndarray, x: np.ndarray, tolerance: tuple[Any, Any] | None = None) -> list[str]:
    """The points where ``actual`` and ``expected`` differ in NaN-ness, inf or by more than ``ULPS`` ulps (or than a
    ``(relative, absolute)`` tolerance, per point)."""
    info = np.finfo(x.dtype)
    relative, absolute = tolerance or (ULPS * info.eps, ULPS * info.smallest_subnormal)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        allowed = np.maximum(relative * np.abs(expected.astype(np.float64)), absolute)
    same = (np.isnan(actual) & np.isnan(expected)) | (actual == expected) | (np.isfinite(expected) & (error <= allowed))
    return [f"x={p!r}: kiln {a!r}, expected {e!r}" for p, a, e, ok in zip(x.tolist(), actual.tolist(), expected.tolist(), same)
            if not ok]


def points(dtype: str) -> np.ndarray:
    with np.errstate(under="ignore"):
        return POINTS.astype(dtype)


@pytest.mark.parametrize("mode", ["eager", "compiled", "onnxruntime"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_value_and_gradient_match_torch_at_extremes(name: str, dtype: str, mode: str):
    require_torch()
    if mode == "onnxruntime":
        require("onnxruntime")
    x = points(dtype)
    actual = run_kiln(FUNCTIONS[name], x, mode)
    expected = torch_expectation(name, x)
    tolerance = ort_tolerance(name, x) if mode == "onnxruntime" and dtype == "float32" else None
    problems = [f"{kind} {line}" for kind, a, e in zip(("value", "gradient"), actual, expected)
                for line in mismatches(a, e, x, tolerance)]
    assert not problems, f"{name} {dtype} {mode}:\n" + "\n".join(problems)
