"""Complex tensors (``kiln.complex64``/``complex128``) as pairs of real tensors.

```python
z = kiln.complex(x, y)              # or kiln.tensor([1 + 2j]), kiln.zeros(3, dtype=kiln.cfloat), kiln.fft.rfft(x),
                                    # x * 1j, x.to(kiln.cfloat)
w = (z * z.conj()).real + z.abs()   # arithmetic, matmul, einsum, indexing, sum/mean: torch's results
loss = w.sum(); loss.backward()     # gradients flow through the two real parts
```

A ``ComplexTensor`` holds its real and imaginary parts as two real kiln tensors of the same float dtype; every
complex op is written with real ops on them (the Fourier transforms with the ``fft`` dialect's ops, which take and
return such pairs). So complex code runs eagerly, traces into ordinary IR under ``kiln.compile`` (the IR itself never
holds a complex type) and differentiates with the real ops' rules. The gradient of a real loss with respect to a complex leaf is torch's: ``dL/dRe + i dL/dIm``
(twice the conjugate Wirtinger derivative), which is what differentiating the two real parts gives.

``z.real`` and ``z.imag`` are the part tensors themselves: views, as torch's (an in-place write to ``z.real``
changes ``z``). An op kiln has not written for complex tensors refuses (``value`` names the way out) instead of
computing on one part.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_printoptions import printed
from kiln.frontend.trace import located_error

Part = Any
"""A real part: a real ``Tensor``, a Python number, or None for an imaginary part that is zero."""


class ComplexTensor(Tensor):
    """A complex tensor: ``real`` and ``imag``, real tensors of one float dtype and shape."""

    __array_priority__ = 1001  # above a real Tensor's: numpy arrays and real tensors defer to its reflected operators

    def __init__(self, real: Tensor, imag: Tensor):
        if real.dtype is not imag.dtype:
            from kiln.frontend.torch_dtypes import promote_types

            common = promote_types(real.dtype, imag.dtype)
            real, imag = real.to(common), imag.to(common)
        if not real.dtype.is_float or real.dtype.is_half:
            raise located_error(f"a complex tensor's parts are float32 or float64 tensors, got {real.dtype}; cast them "
                                "with .double() or .float() first")
        if tuple(real.shape) != tuple(imag.shape):
            real, imag = _broadcast_parts(real, imag)
        self.__dict__["_parts"] = (real, imag)

    # what a tensor is ---------------------------------------------------------------------------------------------
    @property
    def value(self) -> Any:
        """Refused: a complex tensor is two real IR values. Ops kiln writes for complex tensors read the parts; any
        other op (or a traced function returning the tensor: a graph output) lands here."""
        raise located_error(f"a {self.dtype} tensor of shape {tuple(self.shape)} went where kiln needs one real tensor "
                            "(an op not written for complex tensors, or the output of a traced, compiled or exported "
                            "function): a complex tensor is a pair of real tensors; apply the op to z.real and z.imag "
                            "and rebuild with kiln.complex(real, imag), or return kiln.view_as_real(z) / z.real / z.abs()")

    @property
    def real(self) -> Tensor:
        return self._parts[0]

    @real.setter
    def real(self, value: Any) -> None:
        self.__dict__["_parts"] = (_as_part_like(value, self._parts[0]), self._parts[1])

    @property
    def imag(self) -> Tensor:
        return self._parts[1]

    @imag.setter
    def imag(self, value: Any) -> None:
        self.__dict__["_parts"] = (self._parts[0], _as_part_like(value, self._parts[1]))

    @property
    def dtype(self) -> DType:
        return self._parts[0].dtype.to_complex()

    @property
    def shape(self) -> Any:
        return self._parts[0].shape

    @property
    def type(self) -> Any:  # type: ignore[override]
        return f"complex tensor of shape {tuple(self.shape)} ({self.dtype})"

    def is_complex(self) -> bool:
        return True

    def is_floating_point(self) -> bool:
        return False

    # arithmetic (``(a + ib)(c + id) = ac - bd + i(ad + bc)``) ------------------------------------------------------
    def __add__(self, other: Any) -> "ComplexTensor":
        (a, b), (c, d) = self._parts, split(other)
        return _make(a + c, _add(b, d))

    __radd__ = __add__

    def __sub__(self, other: Any) -> "ComplexTensor":
        (a, b), (c, d) = self._parts, split(other)
        return _make(a - c, _add(b, _neg(d)))

    def __rsub__(self, other: Any) -> "ComplexTensor":
        return (-self) + other

    def __neg__(self) -> "ComplexTensor":
        return _make(-self._parts[0], -self._parts[1])

    def __mul__(self, other: Any) -> "ComplexTensor":
        return _make(*multiply(self._parts, split(other)))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> "ComplexTensor":
        (a, b), (c, d) = self._parts, split(other)
        if d is None:  # a real divisor: each part divided
            return _make(a / c, b / c)
        scale = c * c + d * d  # (a + ib) / (c + id) = ((ac + bd) + i(bc - ad)) / (c^2 + d^2)
        return _make((a * c + b * d) / scale, (b * c - a * d) / scale)

    def __rtruediv__(self, other: Any) -> "ComplexTensor":
        return as_complex(other, like=self) / self

    def __matmul__(self, other: Any) -> "ComplexTensor":
        return _make(*multiply(self._parts, split(other), lambda x, y: x @ y))

    def __rmatmul__(self, other: Any) -> "ComplexTensor":
        return _make(*multiply(split(other), self._parts, lambda x, y: x @ y))

    def __pow__(self, exponent: Any) -> "ComplexTensor":
        """A positive integer power by products; any other exponent (a number, real or complex, or a tensor) as
        ``exp(exponent * log z)``, torch's principal branch."""
        if not isinstance(exponent, int) or isinstance(exponent, bool) or exponent < 1:
            return (self.log() * exponent).exp()
        result = self
        for _ in range(exponent - 1):
            result = result * self
        return result

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        """Elementwise: both parts equal (a real operand's imaginary part is zero)."""
        (a, b), (c, d) = self._parts, split(other)
        return (a == c) & (b == (0.0 if d is None else d))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return ~(self == other)

    __hash__ = Tensor.__hash__

    def add(self, other: Any, *, alpha: Any = 1) -> "ComplexTensor":
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other: Any, *, alpha: Any = 1) -> "ComplexTensor":
        return self - (other if alpha == 1 else other * alpha)

    mul = multiply = __mul__
    div = divide = true_divide = __truediv__
    matmul = __matmul__
    neg = negative = __neg__
    pow = __pow__

    # complex functions --------------------------------------------------------------------------------------------
    def conj(self) -> "ComplexTensor":
        return _make(self._parts[0], -self._parts[1])

    conj_physical = resolve_conj = conj

    def abs(self) -> Tensor:
        """``|z|``, ``sqrt(re^2 + im^2)``; at 0 its gradient is 0, as torch's (the square root reads 1 there, masked)."""
        a, b = self._parts
        squared = a * a + b * b
        nonzero = squared > 0
        return squared.where(nonzero, 1.0).sqrt().where(nonzero, 0.0)

    __abs__ = absolute = abs

    @property
    def mH(self) -> "ComplexTensor":  # noqa: N802  (torch's name)
        """The conjugate transpose of the last two dims (``torch.Tensor.mH``, ``adjoint()``)."""
        return self.conj().transpose(-2, -1)

    @property
    def mT(self) -> "ComplexTensor":  # noqa: N802
        return self.transpose(-2, -1)

    def adjoint(self) -> "ComplexTensor":
        return self.mH

    def angle(self) -> Tensor:
        a, b = self._parts
        return b.atan2(a)

    def exp(self) -> "ComplexTensor":
        a, b = self._parts
        magnitude = a.exp()
        return _make(magnitude * b.cos(), magnitude * b.sin())

    def log(self) -> "ComplexTensor":
        """``log|z| + i angle(z)``: torch's principal branch."""
        a, b = self._parts
        return _make((a * a + b * b).log() * 0.5, b.atan2(a))

    def sqrt(self) -> "ComplexTensor":
        """The principal root ``sqrt((|z| + a) / 2) + i sign(b) sqrt((|z| - a) / 2)`` (no ``log`` of zero)."""
        a, b = self._parts
        modulus = self.abs()
        imag = ((modulus - a) * 0.5).clamp(min=0).sqrt()
        return _make(((modulus + a) * 0.5).clamp(min=0).sqrt(), imag.where(b >= 0, -imag))

    def reciprocal(self) -> "ComplexTensor":
        return 1 / self

    def sin(self) -> "ComplexTensor":
        a, b = self._parts  # sin(a + ib) = sin a cosh b + i cos a sinh b
        return _make(a.sin() * b.cosh(), a.cos() * b.sinh())

    def cos(self) -> "ComplexTensor":
        a, b = self._parts  # cos(a + ib) = cos a cosh b - i sin a sinh b
        return _make(a.cos() * b.cosh(), -(a.sin() * b.sinh()))

    def sgn(self) -> "ComplexTensor":
        """``z / |z|``, 0 at 0 (torch's ``sgn``)."""
        modulus = self.abs()
        nonzero = modulus > 0
        scale = 1 / modulus.where(nonzero, 1.0)
        a, b = self._parts
        return _make((a * scale).where(nonzero, 0.0), (b * scale).where(nonzero, 0.0))

    def where(self, condition: Any, other: Any) -> "ComplexTensor":
        """``torch.where(condition, self, other)``: both parts chosen alike (a real ``other``'s imaginary part zero)."""
        (a, b), (c, d) = self._parts, split(other)
        return _make(a.where(condition, c), b.where(condition, 0.0 if d is None else d))

    def masked_fill(self, mask: Any, value: Any) -> "ComplexTensor":
        c, d = split(value)
        return _make(self._parts[0].masked_fill(mask, c), self._parts[1].masked_fill(mask, 0.0 if d is None else d))

    def cumsum(self, *args: Any, **kwargs: Any) -> "ComplexTensor":
        return self._each("cumsum", *args, **kwargs)

    def chunk(self, *args: Any, **kwargs: Any) -> tuple["ComplexTensor", ...]:
        return self._each_piece("chunk", *args, **kwargs)

    def split(self, *args: Any, **kwargs: Any) -> tuple["ComplexTensor", ...]:
        return self._each_piece("split", *args, **kwargs)

    def unbind(self, *args: Any, **kwargs: Any) -> tuple["ComplexTensor", ...]:
        return self._each_piece("unbind", *args, **kwargs)

    def _each_piece(self, method: str, *args: Any, **kwargs: Any) -> tuple["ComplexTensor", ...]:
        """A method returning pieces (``chunk``, ``split``, ``unbind``) on both parts, the pieces paired."""
        reals, imags = (getattr(part, method)(*args, **kwargs) for part in self._parts)
        return tuple(_make(real, imag) for real, imag in zip(reals, imags))

    def tanh(self) -> "ComplexTensor":
        """``tanh(a + ib) = (sinh a cosh a + i sin b cos b) / (sinh^2 a + cos^2 b)``, divided through by ``cosh^2 a``
        (``sech a`` from ``exp(-|a|)``): a sum of squares below, so no cancellation near the poles (``cosh 2a +
        cos 2b`` loses float32's digits there), and a large ``|a|`` gives ``+-1`` instead of ``inf / inf``."""
        a, b = self._parts
        decay = (-a.abs()).exp()
        sech = 2 * decay / (1 + decay * decay)
        tanh, cos_sech = a.tanh(), b.cos() * sech
        denominator = tanh * tanh + cos_sech * cos_sech
        return _make(tanh / denominator, b.sin() * cos_sech * sech / denominator)

    def sigmoid(self) -> "ComplexTensor":
        """``1 / (1 + exp(-z))``, torch's formula for complex inputs (RetNet's complex swish, ``x * sigmoid(x)``)."""
        return 1 / (1 + (-self).exp())

    def var(self, *args: Any, **kwargs: Any) -> Tensor:
        """torch's variance of complex values, a real tensor: ``sum |z - mean|^2 / (N - correction)``, which is the
        real part's variance plus the imaginary part's (torch's arguments: ``dim``, ``unbiased``/``correction``,
        ``keepdim``)."""
        a, b = self._parts
        return a.var(*args, **kwargs) + b.var(*args, **kwargs)

    def std(self, *args: Any, **kwargs: Any) -> Tensor:
        """The square root of ``var``: real, as torch's."""
        return self.var(*args, **kwargs).sqrt()

    # in place: both parts written (views of them follow) ------------------------------------------------------------
    def _becomes(self, value: Any) -> "ComplexTensor":
        """This tensor's values become ``value``'s (computed before either part is written), as torch's in-place ops
        on a complex tensor: each part takes its new values in place, so views of the parts and gradients follow."""
        (a, b), (c, d) = self._parts, split(value)
        a.copy_(c)
        b.copy_(0.0 if d is None else d)
        return self

    def add_(self, other: Any, *, alpha: Any = 1) -> "ComplexTensor":
        return self._becomes(self.add(other, alpha=alpha))

    def sub_(self, other: Any, *, alpha: Any = 1) -> "ComplexTensor":
        return self._becomes(self.sub(other, alpha=alpha))

    def mul_(self, other: Any) -> "ComplexTensor":
        return self._becomes(self * other)

    def div_(self, other: Any) -> "ComplexTensor":
        return self._becomes(self / other)

    def neg_(self) -> "ComplexTensor":
        return self._becomes(-self)

    def copy_(self, source: Any) -> "ComplexTensor":
        return self._becomes(source)

    def fill_(self, value: Any) -> "ComplexTensor":
        return self._becomes(value)

    def zero_(self) -> "ComplexTensor":
        return self._becomes(0.0)

    __iadd__, __isub__, __imul__, __itruediv__ = add_, sub_, mul_, div_

    # shape and reductions: the same op on both parts ---------------------------------------------------------------
    def __getitem__(self, index: Any) -> "ComplexTensor":
        return self._each("__getitem__", index)

    def __setitem__(self, index: Any, value: Any) -> None:
        c, d = split(value)
        self._parts[0][index] = c
        self._parts[1][index] = 0.0 if d is None else d

    def sum(self, *args: Any, **kwargs: Any) -> "ComplexTensor":
        return self._each("sum", *args, **kwargs)

    def mean(self, *args: Any, **kwargs: Any) -> "ComplexTensor":
        return self._each("mean", *args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """``z.to(kiln.complex128)`` (or complex64) casts both parts; a device (``z.to(h.device)``) changes nothing; a
        real dtype is refused, as torch warns that it discards the imaginary part (take ``z.real`` for that)."""
        from kiln.frontend.tensor_device import dtype_of_to

        dtype = dtype_of_to(args, kwargs)
        if dtype is None:
            return self
        dtype = DType.of(dtype)
        if not dtype.is_complex:
            raise located_error(f"{self.dtype} tensor .to({dtype}) (or an op not written for complex tensors, which "
                                "casts its input): casting a complex tensor to a real dtype drops its imaginary part; "
                                "take z.real or z.abs() explicitly, or apply the op to z.real and z.imag")
        return _make(self._parts[0].to(dtype.to_real()), self._parts[1].to(dtype.to_real()))

    def _each(self, method: str, *args: Any, **kwargs: Any) -> "ComplexTensor":
        return _make(*(getattr(part, method)(*args, **kwargs) for part in self._parts))

    # eager values -------------------------------------------------------------------------------------------------
    def numpy(self, *, force: bool = False) -> np.ndarray:
        return complex_array(*(part.numpy() for part in self._parts))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def item(self) -> complex:
        return complex(self.numpy().item())

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __repr__(self) -> str:
        """torch's text, digit for digit (``frontend/torch_tensor_text.py``); ``requires_grad=True`` for a leaf."""
        try:
            array = self.numpy()
        except Exception:  # traced parts have no values
            return f"ComplexTensor({self.type})"
        return printed(array, self.requires_grad and all(part.is_leaf for part in self._parts))

    # autograd ----------------------------------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> "ComplexTensor":
        for part in self._parts:
            part.requires_grad_(requires_grad)
        return self

    @property
    def requires_grad(self) -> bool:  # type: ignore[override]
        return any(part.requires_grad for part in self._parts)

    @property
    def grad(self) -> Any:  # type: ignore[override]
        """torch's ``.grad`` of a complex leaf: ``dL/dRe + i dL/dIm`` (a complex NumPy array), None before backward."""
        real, imag = (part.grad for part in self._parts)
        if real is None and imag is None:
            return None
        zeros = np.zeros(tuple(self.shape), self.dtype.to_real().numpy)
        return complex_array(zeros if real is None else real, zeros if imag is None else imag)

    def backward(self, *args: Any, **kwargs: Any) -> None:
        raise located_error("backward() of a complex tensor: a gradient is implicitly created only for a real scalar "
                            "output, as in torch; take .real, .abs() or another real function of it first")


SHAPE_METHODS = ("reshape", "view", "permute", "transpose", "unsqueeze", "squeeze", "flatten", "expand", "expand_as",
                 "clone", "detach", "contiguous", "narrow", "flip", "roll", "movedim", "moveaxis", "t", "swapaxes",
                 "repeat", "cpu", "cuda", "tril", "triu", "repeat_interleave", "gather", "index_select", "diag_embed",
                 "take_along_dim")
"""Methods that move or copy elements without arithmetic: a complex tensor applies them to both parts."""


def _forwarding(method: str) -> Any:
    def forwarded(self: ComplexTensor, *args: Any, **kwargs: Any) -> ComplexTensor:
        return self._each(method, *args, **kwargs)

    forwarded.__name__ = method
    forwarded.__doc__ = f"``Tensor.{method}`` of both parts."
    return forwarded


for _method in SHAPE_METHODS:
    setattr(ComplexTensor, _method, _forwarding(_method))


def complex_array(real: Any, imag: Any) -> np.ndarray:
    """``real + i imag`` as a NumPy array of the parts' complex dtype (complex64 from float32 parts)."""
    real, imag = np.asarray(real), np.asarray(imag)
    array = np.empty(np.broadcast_shapes(real.shape, imag.shape), DType.of(real.dtype).to_complex().numpy)
    array.real, array.imag = real, imag
    return array


def split(value: Any) -> tuple[Part, Part]:
    """A complex operand's ``(real, imag)`` parts: a ``ComplexTensor``'s, a complex Python number's, a complex NumPy
    array's as eager tensors; a real tensor or number is its own real part with imag None (zero)."""
    if isinstance(value, ComplexTensor):
        return value._parts
    complex_view = getattr(value, "complex_view", None)
    if complex_view is not None:  # a complex Parameter (frontend/complex_parameter.py)
        return complex_view()._parts
    if isinstance(value, (complex, np.complexfloating)):
        return value.real, value.imag
    if isinstance(value, np.ndarray) and np.iscomplexobj(value):
        from kiln.frontend.torch_functions import tensor

        return tensor(value.real), tensor(value.imag)
    return value, None


def as_complex(value: Any, like: ComplexTensor | None = None) -> ComplexTensor:
    """``value`` as a ``ComplexTensor`` (a real tensor or number gets a zero imaginary part)."""
    if isinstance(value, ComplexTensor):
        return value
    real, imag = split(value)
    if not isinstance(real, Tensor):
        dtype = like.dtype.to_real() if like is not None else None
        from kiln.frontend.torch_functions import tensor

        real = tensor(real, dtype=dtype)
        imag = None if imag is None else tensor(imag, dtype=real.dtype)
    return _make(real, imag if imag is not None else real * 0.0)


def multiply(left: tuple[Part, Part], right: tuple[Part, Part], product: Any = None) -> tuple[Any, Any]:
    """``(a + ib) * (c + id)`` under ``product`` (elementwise ``*`` by default, ``@``, an einsum): four real products,
    fewer where an imaginary part is zero."""
    product = product or (lambda x, y: x * y)
    (a, b), (c, d) = left, right
    real = _add(product(a, c), _neg(_product(product, b, d)))
    imag = _add(_product(product, a, d), _product(product, b, c))
    return real, imag


def _product(product: Any, x: Part, y: Part) -> Part:
    return None if x is None or y is None else product(x, y)


def _add(x: Part, y: Part) -> Part:
    return y if x is None else x if y is None else x + y


def _neg(x: Part) -> Part:
    return None if x is None else -x


def _make(real: Part, imag: Part) -> ComplexTensor:
    """A ``ComplexTensor`` of parts where either may be a number or None (zero) beside a tensor."""
    like = real if isinstance(real, Tensor) else imag
    if not isinstance(like, Tensor):
        raise located_error("a complex result needs at least one tensor operand")
    return ComplexTensor(_as_part_like(real, like), _as_part_like(imag, like))


def _as_part_like(part: Part, like: Tensor) -> Tensor:
    if isinstance(part, Tensor):
        return part
    return like * 0.0 + (0.0 if part is None else float(part))


def _broadcast_parts(real: Tensor, imag: Tensor) -> tuple[Tensor, Tensor]:
    from kiln.compiler.ir.types import broadcast_shapes

    shape = broadcast_shapes(tuple(real.shape), tuple(imag.shape))
    return real.expand(*shape), imag.expand(*shape)


_NUMBER_ARITHMETIC = {"tensor.add": lambda x, y: x + y, "tensor.sub": lambda x, y: x - y,
                      "tensor.mul": lambda x, y: x * y, "tensor.div": lambda x, y: x / y}
"""The ops a real tensor and a Python complex number meet in (``x * 1j``, ``1j - x``, ``x / (1 + 2j)``)."""


def with_complex_number(op_name: str, operands: tuple[Any, ...]) -> ComplexTensor:
    """``op_name`` of a real tensor and a Python complex number, as torch's: the tensor becomes complex (integers
    and bool in the default float's complex dtype, as torch promotes them) and the complex arithmetic runs on pairs."""
    if op_name not in _NUMBER_ARITHMETIC:
        raise located_error(f"{op_name.split('.')[-1]} of a tensor and a Python complex number: kiln's complex "
                            "tensors take +, -, * and / with one; make the tensor complex first (x.to(kiln.cfloat))")
    left, right = (real_to_complex(o) if isinstance(o, Tensor) else o for o in operands)
    return _NUMBER_ARITHMETIC[op_name](left, right)


def real_to_complex(tensor: Tensor, dtype: DType | None = None) -> ComplexTensor:
    """A real tensor as a complex one with a zero imaginary part: ``x.to(kiln.cfloat)`` (``dtype``) or the dtype torch
    promotes it to (its own float's complex; the default float's for integers and bool)."""
    if dtype is None:
        from kiln.frontend.torch_dtypes import get_default_dtype

        dtype = (tensor.dtype if tensor.dtype.is_float else get_default_dtype()).to_complex()
    from kiln.frontend.torch_functions import zeros_like

    real = tensor.to(dtype.to_real())
    return ComplexTensor(real, zeros_like(real))
