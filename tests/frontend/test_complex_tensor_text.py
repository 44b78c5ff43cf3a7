"""Complex tensors print as PyTorch 2.13's text, character for character (``torch.`` read as ``kiln.``): each element
``real+imagj`` with the real and the imaginary parts formatted each by its own formatter (fixed or scientific, int
mode, width), summarised past ``threshold``, wrapped at ``linewidth``, ``dtype=kiln.complex128`` where it is not the
default float dtype's complex counterpart, ``requires_grad=True`` on leaves, under every ``set_printoptions``.

kiln prints no ``grad_fn=<...>`` for a result (as for real tensors), so the cases here that require grad are leaves.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln
from kiln.frontend import torch_printoptions
from oracles import require_torch

NAN, INF = float("nan"), float("inf")
DTYPES = ("complex64", "complex128")


@pytest.fixture
def torch():
    return require_torch()


@pytest.fixture
def printoptions_restored(torch):
    """Both libraries' print options back to what they were (kiln's) and torch's defaults after the test."""
    saved = dict(torch_printoptions._options)
    yield
    torch_printoptions._options.clear()
    torch_printoptions._options.update(saved)
    torch.set_printoptions(profile="default")


def complex_of(real, imag, dtype: str = "complex128") -> np.ndarray:
    """``real + i imag`` set part by part (``1j * inf`` would make a nan real part), as an array even when 0-d."""
    real, imag = np.broadcast_arrays(np.asarray(real, np.float64), np.asarray(imag, np.float64))
    array = np.empty(real.shape, np.complex128)
    array.real, array.imag = real, imag
    with np.errstate(over="ignore"):  # float64 magnitudes past float32's range become inf in complex64, as in torch
        return np.asarray(array.astype(dtype))


def same_text(ours, theirs) -> None:
    assert repr(ours) == repr(theirs).replace("torch.", "kiln."), f"\n{ours!r}\n{theirs!r}"
    assert str(ours) == repr(ours)


def _value_cases() -> list[tuple[object, object]]:
    """(real, imag) pairs: scalars, vectors, matrices, 3-D, summarised, signed zeros, nan/inf in either part, whole
    numbers, magnitudes that need scientific notation in one part only or in both."""
    rng = np.random.default_rng(7)
    normal = lambda *shape: rng.normal(size=shape)  # noqa: E731
    return [
        (1.5, 2.0), (-0.0, -0.0), (0.0, 0.0), (NAN, 1.0), (1.0, INF), (-INF, NAN), (1e-5, 1e5), (3.0, -4.0),
        (0.1234567, 0.0), ([1.0, 3.0], [2.0, -1.0]), (normal(5), normal(5)), ([1.0, 2.0, 3.0], [0.0, -4.0, 5.0]),
        ([1.0, 1e5], [1e-5, 1.0]), ([-0.0, 1.0], [0.5, -0.0]), ([NAN, 1.0, INF], [1.0, -INF, NAN]),
        ([0.0, 0.0], [0.0, 0.0]), ([NAN], [NAN]), ([INF], [-INF]), ([1e-5, 1.0], [1.0, 2.0]),
        ([1e-20, 1.0], [1e20, 0.0]), ([123456789.0, 1.0], [1.0, 1.0]), ([60000.0, -0.5], [1e-3, 100.0]),
        (normal(30) * 1e9, normal(30)), (normal(30), normal(30) * 1e-7), (normal(4, 5), normal(4, 5)),
        (normal(10, 10) * 100, normal(10, 10)),
        (normal(1, 40), normal(1, 40)), (np.arange(30.0).reshape(5, 6) * 1000, np.arange(30.0).reshape(5, 6)),
        (normal(2, 3, 4), normal(2, 3, 4) * 1e3), (normal(7, 400), normal(7, 400)),
        (np.arange(2000.0), -np.arange(2000.0) / 7), (normal(40, 50), normal(40, 50) * 10),
        (normal(12, 10, 10), normal(12, 10, 10)), (np.round(normal(3, 4, 5) * 10), np.round(normal(3, 4, 5) * 10)),
        (np.zeros(0), np.zeros(0)), (np.zeros((3, 0)), np.zeros((3, 0))), (np.zeros((2, 0, 4)), np.zeros((2, 0, 4))),
    ]


OPTIONS = [{}, {"precision": 2}, {"sci_mode": True}, {"sci_mode": False}, {"threshold": 5, "edgeitems": 2},
           {"linewidth": 40}, {"profile": "short"}, {"threshold": 10, "edgeitems": 0},
           {"profile": "full", "linewidth": 120},
           {"precision": 1, "sci_mode": True, "linewidth": 30}, {"precision": 8, "linewidth": 200},
           {"threshold": 20, "edgeitems": 1, "precision": 0}]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("dtype", DTYPES)
def test_values_print_as_torchs(torch, dtype, options, printoptions_restored):
    kiln.set_printoptions(**options)
    torch.set_printoptions(**options)
    for real, imag in _value_cases():
        array = complex_of(real, imag, dtype)
        same_text(kiln.tensor(array), torch.from_numpy(array.copy()))


def test_print_writes_the_text(torch, capsys):
    array = complex_of([1.0, -2.5e-6, 3.0], [0.0, 4.0, -0.0], "complex64")
    print(kiln.tensor(array))
    ours = capsys.readouterr().out
    print(torch.from_numpy(array.copy()))
    assert ours == capsys.readouterr().out.replace("torch.", "kiln.")


def test_dtype_named_unless_the_default_complex(torch, default_dtype):
    """``complex64`` goes unnamed beside a float32 default, ``complex128`` beside float64; an empty tensor always names
    its complex dtype (torch compares it with the real default)."""
    for make in (lambda lib: lib.tensor([1 + 2j, -0.5j]), lambda lib: lib.tensor([1 + 2j], dtype=lib.complex64),
                 lambda lib: lib.tensor([[1.5 - 2j]], dtype=lib.complex128), lambda lib: lib.tensor(2.5 + 1e-6j),
                 lambda lib: lib.zeros(0, dtype=lib.complex64), lambda lib: lib.zeros(2, 0, dtype=lib.complex128)):
        same_text(make(kiln), make(torch))


def _parameter_in_module(lib):
    module = lib.nn.Module()
    module.weights = lib.nn.Parameter(lib.tensor(np.arange(6.0).reshape(2, 3) * (0.5 - 1.25j)))
    return module.weights


def _buffer(lib):
    module = lib.nn.Module()
    module.register_buffer("freqs_cis", lib.polar(lib.ones(3), lib.tensor([0.0, 1.0, 2.0])))
    return module.freqs_cis


MADE = {
    "fft": lambda lib: lib.fft.fft(lib.tensor([1.0, 2.0, 3.0, 4.0, 0.5])),
    "rfft_2d": lambda lib: lib.fft.rfft(lib.tensor(np.arange(12.0).reshape(3, 4) ** 1.5)),
    "view_as_complex": lambda lib: lib.view_as_complex(lib.tensor([[1.0, -2.0], [0.25, 3e-5]])),
    "polar": lambda lib: lib.polar(lib.tensor([1.0, 2.0]), lib.tensor([0.0, 0.5])),
    "complex": lambda lib: lib.complex(lib.tensor([1.0, -0.0]), lib.tensor([-0.0, 2.0])),
    "conj": lambda lib: lib.tensor([1 + 2j, 3 - 1j]).conj(),
    "times_1j": lambda lib: lib.tensor([1 + 2j, 3 - 1j]) * 1j,
    "scalar": lambda lib: lib.tensor(1.5 + 2j),
    "indexed_scalar": lambda lib: lib.tensor([[1 + 2j, 3 - 1j]])[0, 1],
    "zeros_cfloat": lambda lib: lib.zeros(2, 3, dtype=lib.cfloat),
    "leaf": lambda lib: lib.tensor([0.5 + 2j, -3j], requires_grad=True),
    "scalar_leaf": lambda lib: lib.tensor(1.5 + 2j, requires_grad=True),
    "long_leaf_wraps_suffixes": lambda lib: lib.tensor(np.arange(12.0) * (1.5 + 0.25j), dtype=lib.complex128,
                                                       requires_grad=True),
    "zeros_leaf": lambda lib: lib.zeros(2, 3, dtype=lib.cfloat, requires_grad=True),
    "parameter": lambda lib: lib.nn.Parameter(lib.tensor([1 + 2j, 3 - 1j])),
    "parameter_complex128": lambda lib: lib.nn.Parameter(lib.tensor([[1.5 + 2j, 3 - 1j]], dtype=lib.complex128)),
    "frozen_parameter": lambda lib: lib.nn.Parameter(lib.tensor([1 + 2j]), requires_grad=False),
    "module_parameter": _parameter_in_module,
    "buffer": _buffer,
}


@pytest.mark.parametrize("case", MADE)
def test_tensors_made_by_ops_print_as_torchs(torch, case):
    same_text(MADE[case](kiln), MADE[case](torch))


def test_long_parameter_wraps_as_torchs(torch, printoptions_restored):
    for options in ({}, {"linewidth": 50}, {"threshold": 8, "edgeitems": 2}):
        kiln.set_printoptions(**options)
        torch.set_printoptions(**options)
        make = lambda lib: lib.nn.Parameter(lib.tensor(np.arange(40.0).reshape(4, 10) * (1.25 - 0.5j)))  # noqa: E731
        same_text(make(kiln), make(torch))


def test_real_leaf_suffixes_wrap_as_torchs(torch):
    """The shared suffix rule: ``requires_grad=True`` moves to a line of its own past ``linewidth`` for a real leaf too
    (kiln appended it to the last line)."""
    make = lambda lib: lib.tensor(np.arange(20.0) * 1.5 + 0.25, requires_grad=True)  # noqa: E731
    same_text(make(kiln), make(torch))


# generated ------------------------------------------------------------------------------------------------------------

_PARTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -2.0, 0.5, 1e-5, -3e-4, 1e4, 1e8, 1.5e9, NAN, INF, -INF]),
    st.integers(-10_000, 10_000).map(float),
    st.floats(-10.0, 10.0),
)
_SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)
_OPTIONS = st.fixed_dictionaries({}, optional={
    "precision": st.integers(0, 9), "threshold": st.integers(1, 40), "edgeitems": st.integers(0, 4),
    "linewidth": st.integers(10, 160), "sci_mode": st.sampled_from([None, True, False]),
    "profile": st.sampled_from(["default", "short", "full"])})


@st.composite
def _complex_arrays(draw) -> np.ndarray:
    shape = draw(_SHAPES)
    size = int(np.prod(shape, dtype=np.int64))
    real, imag = (np.array(draw(st.lists(_PARTS, min_size=size, max_size=size))).reshape(shape) for _ in range(2))
    return complex_of(real, imag, draw(st.sampled_from(DTYPES)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=_complex_arrays(), options=_OPTIONS)
def test_generated_tensors_print_as_torchs(torch, printoptions_restored, array, options):
    torch_printoptions._options.clear()
    torch.set_printoptions(profile="default")
    kiln.set_printoptions(**options)
    torch.set_printoptions(**options)
    same_text(kiln.tensor(array), torch.from_numpy(array.copy()))
