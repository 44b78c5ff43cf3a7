"""Types of the kiln IR: element dtypes and tensor types with symbolic dims.

A dim is an ``int`` or a symbol (a ``str`` such as ``"N"``), so one compiled
graph serves every batch size: ``tensor<Nx784xf32>``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Union

import ml_dtypes
import numpy as np

from kiln.compiler.errors import BroadcastError, DimOutOfRangeError, ShapeError

Dim = Union[int, str]
_SYMBOL = re.compile(r"[A-Za-wyz_][A-Za-wyz0-9_]*")
_PRODUCT = re.compile(rf"([0-9]+\*)?{_SYMBOL.pattern}(\*{_SYMBOL.pattern})*")
"""A symbolic dim: a symbol (``N``) or a product of symbols with an optional integer factor (``5*N``, ``N*T``)."""


class DType(enum.Enum):
    """Element types. ``f16`` is NumPy's float16 and ``bf16`` is ``ml_dtypes.bfloat16``; backends without half
    arithmetic compute those in float32 and round each result back (``compiler/passes/widen_half.py``).

    ``c64``/``c128`` (``kiln.complex64``/``complex128``) are frontend dtypes: a complex tensor is a pair of real
    tensors (``frontend/complex_tensor.py``), so the IR never holds them and ``TensorType`` refuses them."""

    f16 = "f16"
    bf16 = "bf16"
    f32 = "f32"
    f64 = "f64"
    u8 = "u8"
    i8 = "i8"
    i16 = "i16"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"
    c64 = "c64"
    c128 = "c128"

    __hash__ = object.__hash__
    """By identity, in C (members are singletons): Enum's own hash is Python code, and every dtype table lookup in
    tracing and type promotion pays it."""

    def __str__(self) -> str:
        """``kiln.float32``, as ``str(torch.float32)`` is ``torch.float32``: ported code parses it
        (``str(dtype).split(".")[-1]``, ``getattr(kiln, name)``). The IR's own spelling (``f32``) is ``value``: the
        printer, the CuPy codegen and the ONNX export use that, never ``str``."""
        return _STRINGS[self]

    __repr__ = __str__
    """``kiln.float32`` too, as ``repr(torch.float32)``."""

    @property
    def abbr(self) -> str:
        """``torch.dtype.abbr``: ``f32``, ``bf16``, ``i64``, ``u8``, ``b8`` (the IR spelling but for bool's)."""
        return "b8" if self is DType.bool else self.value

    def to_real(self) -> "DType":
        """``torch.dtype.to_real()``: a complex dtype's part dtype (complex64 -> float32), else the dtype itself."""
        return _COMPLEX_PARTS.get(self, self)

    def to_complex(self) -> "DType":
        """``torch.dtype.to_complex()``: float32 -> complex64, float64 -> complex128, float16 -> complex32 (which kiln
        has not: an error), a complex dtype itself; integers and bool have none, as torch's."""
        if self.is_complex:
            return self
        complex_dtype = {DType.f32: DType.c64, DType.f64: DType.c128}.get(self)
        if complex_dtype is None:
            raise ShapeError(f"{self}.to_complex(): only float32 and float64 have a complex counterpart in kiln "
                             f"(complex64, complex128); cast to one of those first")
        return complex_dtype

    @property
    def is_float(self) -> bool:
        return self in (DType.f16, DType.bf16, DType.f32, DType.f64)

    @property
    def is_int(self) -> bool:
        return self in _INTEGERS

    @property
    def itemsize(self) -> int:
        """Bytes per element (``torch.dtype.itemsize``)."""
        return self.numpy.itemsize

    @property
    def is_floating_point(self) -> bool:
        """``is_float`` under ``torch.dtype``'s name."""
        return self.is_float

    @property
    def is_signed(self) -> bool:
        """``torch.dtype.is_signed``: floats and signed integers, not bool or uint8."""
        return self is not DType.bool and self is not DType.u8

    @property
    def is_complex(self) -> bool:
        """``torch.dtype.is_complex``: complex64 and complex128."""
        return self in _COMPLEX_PARTS

    @property
    def is_half(self) -> bool:
        """A 16-bit float: stored in 16 bits, computed in float32 where a backend has no half arithmetic."""
        return self in (DType.f16, DType.bf16)

    @property
    def numpy(self) -> np.dtype:
        return _NUMPY_DTYPES[self]

    @property
    def dtype(self) -> np.dtype:
        """NumPy's dtype, which NumPy reads from this attribute: ``np.dtype(kiln.float32)``, and a NumPy array's dtype
        (a parameter's ``.grad``) compares equal to its kiln dtype (``p.grad.dtype == torch.float32``, as PyTorch's)."""
        return _NUMPY_DTYPES[self]

    @staticmethod
    def of(spec: "DType | str | np.dtype | type") -> "DType":
        """Accepts ``DType.f32``, ``"f32"``, ``"float32"``, ``np.float32``, ``np.dtype("float32")``, ``str(dtype)``
        (``"kiln.float32"``) and torch's dtypes and their names (``torch.float32``, ``"torch.long"``)."""
        if isinstance(spec, DType):
            return spec
        known = _BY_NUMPY_DTYPE.get(spec) if isinstance(spec, np.dtype) else None
        if known is not None:
            return known  # the hot path: every traced op and array check asks for an array's dtype
        if isinstance(spec, str) and spec in DType.__members__:
            return DType[spec]
        if spec is ml_dtypes.bfloat16 or spec == "bfloat16":
            return DType.bf16
        if type(spec).__module__ == "torch" and type(spec).__name__ == "dtype":  # torch.float32
            spec = str(spec)
        if isinstance(spec, str) and spec.startswith(("kiln.", "torch.")):
            return _of_torch_name(spec)
        try:
            name = np.dtype(spec).name
        except TypeError:
            raise ShapeError(f"unknown dtype {spec!r}; use one of {', '.join(DType.__members__)}") from None
        for dtype, numpy_name in _NUMPY_NAMES.items():
            if numpy_name == name:
                return dtype
        raise ShapeError(f"dtype {name} is not supported by kiln; use one of {', '.join(DType.__members__)}")


_NUMPY_NAMES = {
    DType.f16: "float16",
    DType.bf16: "bfloat16",
    DType.f32: "float32",
    DType.f64: "float64",
    DType.u8: "uint8",
    DType.i8: "int8",
    DType.i16: "int16",
    DType.i32: "int32",
    DType.i64: "int64",
    DType.bool: "bool",
    DType.c64: "complex64",
    DType.c128: "complex128",
}
_STRINGS = {dtype: f"kiln.{name}" for dtype, name in _NUMPY_NAMES.items()}
"""``str(dtype)``: torch's names (``kiln.float32`` as ``torch.float32``), which are NumPy's."""
_BY_TORCH_NAME = {name: dtype for dtype, name in _NUMPY_NAMES.items()} | {
    "half": DType.f16, "float": DType.f32, "double": DType.f64, "short": DType.i16, "int": DType.i32, "long": DType.i64,
    "cfloat": DType.c64, "cdouble": DType.c128}


def _of_torch_name(spec: str) -> DType:
    """The dtype ``kiln.float32`` or ``torch.float32`` names (or an alias: ``torch.half``, ``torch.long``)."""
    dtype = _BY_TORCH_NAME.get(spec.split(".", 1)[1])
    if dtype is None:
        raise ShapeError(f"unknown dtype {spec!r}; use one of {', '.join(map(str, DType))}")
    return dtype


_INTEGERS = frozenset({DType.u8, DType.i8, DType.i16, DType.i32, DType.i64})
_COMPLEX_PARTS = {DType.c64: DType.f32, DType.c128: DType.f64}
"""A complex dtype's real and imaginary part dtype."""
_NUMPY_DTYPES = {dtype: np.dtype(ml_dtypes.bfloat16 if name == "bfloat16" else name) for dtype, name in _NUMPY_NAMES.items()}
_BY_NUMPY_DTYPE = {numpy_dtype: dtype for dtype, numpy_dtype in _NUMPY_DTYPES.items()}


def is_float_array_dtype(dtype: Any) -> bool:
    """Whether a NumPy dtype holds floats: float16/32/64 (kind ``"f"``) or bfloat16 (``ml_dtypes``' kind is ``"V"``)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype == _NUMPY_DTYPES[DType.bf16]


_CANONICAL_SYMBOLS: set[str] = set()
"""Symbolic dims already found canonical (``N``, ``5*N``): every type built checks its dims, most of them again."""


@dataclass(frozen=True)
class TensorType:
    """A ranked tensor type; ``shape`` holds ints and symbol names."""

    shape: tuple[Dim, ...]
    """Dims in order; a ``str`` dim is a symbol bound when the graph runs."""
    dtype: DType
    """Element type."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "dtype", DType.of(self.dtype))
        if self.dtype in _COMPLEX_PARTS:
            raise ShapeError(f"tensor type of shape {format_shape(self.shape)} and dtype {self.dtype}: the IR holds no "
                             "complex values; a complex tensor is a pair of real tensors (kiln.view_as_real(z), z.real "
                             "and z.imag give them), so trace or export with those. A real tensor x becomes complex by "
                             "kiln.complex(x, kiln.zeros_like(x)), x * 1j or x.to(kiln.cfloat)")
        for dim in self.shape:
            if type(dim) is int and dim >= 0 or type(dim) is str and dim in _CANONICAL_SYMBOLS:
                continue
            if isinstance(dim, str) and _PRODUCT.fullmatch(dim) and dim_product((dim,)) == dim:
                _CANONICAL_SYMBOLS.add(dim)
                continue
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
                raise ShapeError(
                    f"bad dim {dim!r} in shape {self.shape}: dims are ints >= 0, symbol names (identifiers without "
                    "the letter 'x', which separates dims in the text form, e.g. 'N') or their products in "
                    "canonical form ('5*N', 'N*T': the factor first, symbols sorted)"
                )
        object.__setattr__(self, "_hash", hash((self.shape, self.dtype)))

    def __hash__(self) -> int:
        """Computed once: types key the eager op cache and the passes' tables, and a generated hash costs ~0.5 µs."""
        return self._hash  # type: ignore[attr-defined, no-any-return]

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, TensorType):
            return NotImplemented
        return self._hash == other._hash and self.shape == other.shape and self.dtype is other.dtype  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[Any, ...]:
        return TensorType, (self.shape, self.dtype)  # not the hash: str hashes differ between processes

    @classmethod
    def of_array(cls, array: Any) -> "TensorType":
        """The static type of an array (NumPy's, CuPy's, anything with ``shape`` and ``dtype``)."""
        return cls(tuple(array.shape), DType.of(array.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(dim, int) for dim in self.shape)

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols the shape mentions, each once, products taken apart (``5*N`` mentions ``N``)."""
        found: list[str] = []
        for dim in self.shape:
            found += [name for name in dim_factors(dim)[1] if name not in found]
        return tuple(found)

    def with_shape(self, shape: tuple[Dim, ...]) -> "TensorType":
        return TensorType(shape, self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        dims = "".join(f"{dim}x" for dim in self.shape)
        return f"tensor<{dims}{self.dtype.value}>"  # the IR spelling (f32), not str(): kiln.float32


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """NumPy broadcasting over possibly symbolic dims; a symbol only matches itself or 1.

    Shapes fold left to right, as PyTorch's ``infer_size``, so a mismatch reads as PyTorch's: ``The size of tensor a (3)
    must match the size of tensor b (4) at non-singleton dimension 1`` (``a``: the shapes so far; the rightmost first).
    """
    if len(shapes) == 2 and shapes[0] == shapes[1]:  # the common case: equal shapes broadcast to themselves
        return tuple(shapes[0])
    result: tuple[Dim, ...] = ()
    for shape in shapes:
        result = _broadcast_pair(result, tuple(shape))
    return result


def _broadcast_pair(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...]:
    rank = max(len(a), len(b))
    result: list[Dim] = [1] * rank
    for axis in reversed(range(rank)):
        size_a = a[axis - rank + len(a)] if axis - rank + len(a) >= 0 else 1
        size_b = b[axis - rank + len(b)] if axis - rank + len(b) >= 0 else 1
        if size_a != size_b and size_a != 1 and size_b != 1:
            raise BroadcastError(f"The size of tensor a ({size_a}) must match the size of tensor b ({size_b}) "
                                 f"at non-singleton dimension {axis}")
        result[axis] = size_b if size_a == 1 else size_a
    return tuple(result)


def format_shape(shape: tuple[Dim, ...]) -> str:
    return "(" + ", ".join(str(dim) for dim in shape) + ("," if len(shape) == 1 else "") + ")"


def normalize_axis(axis: int, rank: int) -> int:
    """``axis`` in ``[0, rank)``; a 0-D tensor takes ``0`` and ``-1``, as in PyTorch. Out of range: PyTorch's
    ``IndexError`` and words (``Dimension out of range (expected to be in range of [-2, 1], but got 2)``)."""
    bound = max(rank, 1)
    if not -bound <= axis < bound:
        raise DimOutOfRangeError(f"Dimension out of range (expected to be in range of [{-bound}, {bound - 1}], but got "
                                 f"{axis})")
    return axis % rank if rank else 0


def normalize_axes(axes: int | tuple[int, ...] | list[int] | None, rank: int) -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints; ``None`` means every axis."""
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    normalized = tuple(sorted({normalize_axis(axis, rank) for axis in axes}))
    if len(normalized) != len(tuple(axes)):
        raise ShapeError(f"repeated axis in {tuple(axes)}")
    return normalized


def dim_factors(dim: Dim) -> tuple[int, tuple[str, ...]]:
    """``(integer factor, symbols)`` of a dim: ``5*N*T`` -> ``(5, ("N", "T"))``, ``7`` -> ``(7, ())``."""
    if isinstance(dim, int):
        return dim, ()
    parts = dim.split("*")
    if parts[0].isdigit():
        return int(parts[0]), tuple(parts[1:])
    return 1, tuple(parts)


def dim_product(dims: "tuple[Dim, ...] | list[Dim]") -> Dim:
    """The product of dims, symbolic ones kept as a canonical product (``(N, 5)`` -> ``5*N``)."""
    factor, symbols = 1, []
    for dim in dims:
        dim_factor, dim_symbols = dim_factors(dim)
        factor *= dim_factor
        symbols += dim_symbols
    if not symbols or factor == 0:
        return factor
    return "*".join(([str(factor)] if factor != 1 else []) + sorted(symbols))


def dim_value(dim: Dim, bindings: "dict[str, int]", default: int | None = None) -> int:
    """A dim's size once its symbols are bound (``default`` for unbound ones, else a KeyError)."""
    factor, symbols = dim_factors(dim)
    for name in symbols:
        factor *= bindings[name] if default is None else bindings.get(name, default)
    return factor
