"""torch's complex functions and complex-dtype creation for kiln (``frontend/complex_tensor.py`` holds the tensor).

```python
z = kiln.complex(x, y)                   # x + iy (both float32 or both float64)
w = kiln.polar(r, theta)                 # r cos(theta) + i r sin(theta)
pairs = kiln.view_as_real(z)             # (..., 2) real tensor; kiln.view_as_complex(pairs) is z again
kiln.zeros(2, 3, dtype=kiln.cfloat)      # zeros, ones, full, empty, rand, randn, tensor: complex as torch's
kiln.einsum("bix,iox->box", z, w)        # a complex einsum: real einsums on the parts
```

kiln's creation functions take ``dtype=kiln.complex64``/``complex128`` through ``with_complex_dtypes``, which wraps
them (the names ``kiln/__init__.py`` exports). ``rand``/``randn`` draw as torch draws complex numbers: the real and
imaginary parts independently, uniform on [0, 1) each, or normal with variance 1/2 each (so ``E|z|^2 = 1``); kiln's
generator draws other numbers than torch's for the same seed, as for real tensors.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import math
from typing import Any, Callable

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.cat_shape_checks import check_joined_tensors
from kiln.frontend.complex_tensor import ComplexTensor, split
from kiln.frontend.complex_view_checks import check_complex_view
from kiln.frontend.torch_keywords import numpy_keywords
from kiln.frontend.tensor import Tensor
from kiln.frontend.tensor_creation_nesting import nested_array
from kiln.frontend.tensor_from_tensors import holds_tensors
from kiln.frontend.trace import TraceContext, called_from_user, located_error
from kiln.frontend.warn_once import COPY_CONSTRUCT, warn_at_user_line


def is_complex(value: Any) -> bool:
    """``torch.is_complex``: a complex tensor (or a complex ``Parameter``)."""
    return isinstance(value, ComplexTensor) or getattr(value, "complex_view", None) is not None


def complex(real: Tensor, imag: Tensor) -> ComplexTensor:  # noqa: A001  (torch's name)
    """``torch.complex``: ``real + i imag``; both float32 or both float64, as torch requires."""
    if not isinstance(real, Tensor) or not isinstance(imag, Tensor):
        raise located_error(f"kiln.complex(real, imag) takes two tensors, got {type(real).__name__} and "
                            f"{type(imag).__name__}")
    if real.dtype is not imag.dtype or real.dtype not in (DType.f32, DType.f64):
        raise located_error(f"kiln.complex(real, imag): the parts must be both float32 or both float64, got "
                            f"{real.dtype} and {imag.dtype}; cast them with .float() or .double()")
    return ComplexTensor(real, imag)


def polar(abs: Tensor, angle: Tensor) -> ComplexTensor:  # noqa: A002  (torch's names)
    """``torch.polar``: ``abs * (cos(angle) + i sin(angle))``."""
    return complex(abs * angle.cos(), abs * angle.sin())


def view_as_real(input: Any) -> Tensor:  # noqa: A002
    """``torch.view_as_real``: the ``(..., 2)`` real tensor of the parts (a new stacked tensor in kiln, not a view
    sharing memory; a complex ``Parameter``'s is its own array, which is a view)."""
    own = getattr(input, "real_view", None)
    if own is not None:
        return own()
    if not isinstance(input, ComplexTensor):
        raise located_error(f"view_as_real takes a complex tensor, got a {getattr(input, 'dtype', type(input).__name__)} "
                            "one; kiln.complex(x, zeros) makes one")
    from kiln.frontend.torch_functions import stack

    pairs = stack([input.real, input.imag], dim=-1)
    pairs._unfollowed_view = ("view_as_real(z) is a new tensor in kiln, not a view of z as torch's: a write to it would "
                              "not reach z. Write z.real or z.imag (or z itself), or clone() the pairs to write a copy")
    return pairs


def view_as_complex(input: Tensor) -> ComplexTensor:  # noqa: A002
    """``torch.view_as_complex``: a float32/float64 tensor whose last dim is 2, read as (real, imag) pairs."""
    if not isinstance(input, Tensor) or isinstance(input, ComplexTensor):
        raise located_error(f"view_as_complex takes a real tensor whose last dim has size 2, got "
                            f"{type(input).__name__} {getattr(input, 'dtype', '')}")
    check_complex_view(input)
    parts = Tensor.__getitem__(input, (..., 0)), Tensor.__getitem__(input, (..., 1))
    return complex(*parts)


def einsum(equation: str, *operands: Any) -> Any:
    """``torch.einsum`` of complex operands: one real einsum per choice of real or imaginary part of each operand,
    ``i^k`` of those with ``k`` imaginary parts (``(a + ib)(c + id) = ac - bd + i(ad + bc)``, for any count)."""
    from kiln.frontend.functional_einsum import einsum as real_einsum

    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    parts = [split(operand) for operand in operands]
    sums: list[Any] = [None, None]
    for choice in itertools.product((0, 1), repeat=len(parts)):
        chosen = [part[pick] for part, pick in zip(parts, choice)]
        if any(part is None for part in chosen):
            continue
        term, turns = real_einsum(equation, *chosen), sum(choice)  # i^turns: 1, i, -1, -i
        term = -term if turns % 4 >= 2 else term
        sums[turns % 2] = term if sums[turns % 2] is None else sums[turns % 2] + term
    real, imag = sums
    return ComplexTensor(real, imag if imag is not None else real * 0.0)


def _complex_dtype(dtype: Any) -> DType | None:
    """The complex dtype asked for, or None for any other (``dtype=None`` included)."""
    if dtype is None:
        return None
    dtype = DType.of(dtype)
    return dtype if dtype.is_complex else None


def _pair(make: Callable[..., Any], dtype: DType, requires_grad: bool, *args: Any, **kwargs: Any) -> ComplexTensor:
    real, imag = (make(*args, dtype=dtype.to_real(), **kwargs) for _ in range(2))
    return _requiring_grad(ComplexTensor(real, imag), requires_grad)


def _requiring_grad(result: ComplexTensor, requires_grad: bool) -> ComplexTensor:
    """Each part a leaf of its own (its ``.grad`` the part's: ``z.grad`` puts them together)."""
    if requires_grad and not TraceContext.active():
        from kiln.frontend.torch_functions import tensor

        result = ComplexTensor(*(tensor(np.array(part), requires_grad=True) for part in (result.real, result.imag)))
    return result


def _filled(function: Callable[..., Any], imag_fill: Callable[[Any], Any]) -> Callable[..., Any]:
    """``zeros``/``ones``/``empty`` with a complex ``dtype``: the real part as asked, the imaginary part ``imag_fill``."""
    @functools.wraps(function)
    def creating(*size: Any, dtype: Any = None, requires_grad: bool = False, **keyword: Any) -> Any:
        complex_dtype = _complex_dtype(dtype)
        if complex_dtype is None:
            return function(*size, dtype=dtype, requires_grad=requires_grad, **keyword)
        real = function(*size, dtype=complex_dtype.to_real(), **keyword)
        return _requiring_grad(ComplexTensor(real, imag_fill(real)), requires_grad)

    return creating


def _drawn(function: Callable[..., Any], scale: float) -> Callable[..., Any]:
    """``rand``/``randn`` with a complex ``dtype``: both parts drawn, each times ``scale``."""
    @functools.wraps(function)
    def drawing(*size: Any, dtype: Any = None, requires_grad: bool = False, **keyword: Any) -> Any:
        complex_dtype = _complex_dtype(dtype)
        if complex_dtype is None:
            return function(*size, dtype=dtype, requires_grad=requires_grad, **keyword)
        real, imag = (function(*size, dtype=complex_dtype.to_real(), **keyword) for _ in range(2))
        if scale != 1.0:
            real, imag = real * scale, imag * scale
        return _requiring_grad(ComplexTensor(real, imag), requires_grad)

    return drawing


def _full(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def full(size: Any, fill_value: Any, *, dtype: Any = None, requires_grad: bool = False, **keyword: Any) -> Any:
        complex_dtype = _complex_dtype(dtype) or (DType.c64 if isinstance(fill_value, (builtins.complex, np.complexfloating))
                                                  and dtype is None else None)
        if complex_dtype is None:
            return function(size, fill_value, dtype=dtype, requires_grad=requires_grad, **keyword)
        value = builtins.complex(fill_value)
        parts = (function(size, part, dtype=complex_dtype.to_real(), **keyword) for part in (value.real, value.imag))
        return _requiring_grad(ComplexTensor(*parts), requires_grad)

    return full


def _tensor(function: Callable[..., Any]) -> Callable[..., Any]:
    """``kiln.tensor`` of complex data (Python complex numbers: complex64 under a float32 default, as torch's; a complex
    NumPy array keeps its dtype) or with a complex ``dtype``."""
    @functools.wraps(function)
    def tensor(data: Any, *, dtype: Any = None, requires_grad: bool = False, **keyword: Any) -> Any:
        copied_tensor = function.__name__ == "tensor" and isinstance(data, Tensor)  # as_tensor shares it: no warning
        if copied_tensor and called_from_user():  # torch's advice; kiln's own calls copy on purpose
            warn_at_user_line(COPY_CONSTRUCT)
        if is_complex(data):
            data = data.numpy()
        complex_dtype = _complex_dtype(dtype)
        array = None
        if complex_dtype is None and dtype is None and not holds_tensors(data):  # tensor_from_tensors.py's
            array = nested_array(data, copy=False)  # ragged nested lists: torch's error, not NumPy's
            if array.dtype.kind == "c":
                from kiln.frontend.torch_dtypes import get_default_dtype

                keep = isinstance(data, (np.ndarray, np.generic))
                complex_dtype = DType.of(array.dtype) if keep else get_default_dtype().to_complex()
        if complex_dtype is None:  # requires_grad only when set: as_tensor takes none, as torch's
            return function(data, dtype=dtype, **({"requires_grad": True} if requires_grad else {}), **keyword)
        array = np.asarray(data) if array is None else array
        parts = (function(np.array(part, order="C"), dtype=complex_dtype.to_real()) for part in (array.real, array.imag))
        return _requiring_grad(ComplexTensor(*parts), requires_grad)

    return tensor


def with_complex_dtypes(functions: dict[str, Any]) -> dict[str, Any]:
    """kiln's creation functions and ``einsum`` (``functions``: the names ``kiln/__init__.py`` exports) taking complex
    dtypes and operands too."""
    zeros_of = lambda real: real * 0.0  # noqa: E731
    wrapped = {"zeros": _filled(functions["zeros"], zeros_of), "ones": _filled(functions["ones"], zeros_of),
               "empty": _filled(functions["empty"], zeros_of), "full": _full(functions["full"]),
               "rand": _drawn(functions["rand"], 1.0), "randn": _drawn(functions["randn"], math.sqrt(0.5)),
               "tensor": _tensor(functions["tensor"]), "as_tensor": _tensor(functions["as_tensor"])}
    real_einsum = functions["einsum"]

    @functools.wraps(real_einsum)
    def einsum_any(equation: Any, *operands: Any) -> Any:
        if not isinstance(equation, str) and operands:  # torch's sublist form: einsum(q, [0, 1], k, [1, 2], [0, 2])
            from kiln.frontend.functional_einsum import sublist_equation

            equation, operands = sublist_equation((equation, *operands))
        flat = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else operands
        return einsum(equation, *flat) if any(map(is_complex, flat)) else real_einsum(equation, *operands)

    wrapped["einsum"] = einsum_any
    wrapped.update({name: _joining(functions[name]) for name in ("cat", "concat", "concatenate", "stack")})
    wrapped.update({name: _like(name, wrapped) for name in ("zeros_like", "ones_like", "empty_like", "rand_like",
                                                            "randn_like", "full_like")})
    return wrapped


def _like(name: str, functions: dict[str, Any]) -> Callable[..., Any]:
    """``zeros_like(z)`` and its kin of a complex tensor (or with a complex ``dtype``): the shape-taking function
    with the complex dtype; real ones go to kiln's own."""
    from kiln.frontend import torch_functions

    real_function, shaped = getattr(torch_functions, name), functions[name.replace("_like", "")]

    @functools.wraps(real_function)
    def like(input: Any, *args: Any, dtype: Any = None, requires_grad: bool = False, **keyword: Any) -> Any:
        target = _complex_dtype(dtype) or (input.dtype if is_complex(input) and dtype is None else None)
        if target is None:
            return real_function(input, *args, dtype=dtype, requires_grad=requires_grad, **keyword)
        keyword.pop("device", None)
        return shaped(tuple(input.shape), *args, dtype=target, requires_grad=requires_grad)

    return like


def _joining(function: Callable[..., Any]) -> Callable[..., Any]:
    """``cat``/``stack`` of tensors any of which is complex: the real parts joined, and the imaginary ones."""
    @functools.wraps(function)
    def joining(tensors: Any, dim: int = 0) -> Any:
        tensors = check_joined_tensors(function.__name__, tensors)
        if not any(map(is_complex, tensors)):
            return function(tensors, dim)
        parts = [split(tensor) for tensor in tensors]
        imags = [imag if imag is not None else real * 0.0 for real, imag in parts]
        return ComplexTensor(function([real for real, _ in parts], dim), function(imags, dim))

    return numpy_keywords(joining)  # torch.cat(xs, axis=1), as PyTorch's


def real(input: Any) -> Tensor:  # noqa: A002
    """``torch.real``: a complex tensor's real part (a view), a real tensor itself."""
    return input.real if is_complex(input) else input


def imag(input: Any) -> Tensor:  # noqa: A002
    """``torch.imag``: a complex tensor's imaginary part (a view); a real tensor has none (an error, as torch's)."""
    if not is_complex(input):
        raise located_error("imag is not implemented for real tensors (as in torch); kiln.complex(x, y).imag is y")
    return input.imag


def conj(input: Any) -> Any:  # noqa: A002
    """``torch.conj``: a complex tensor's conjugate, a real tensor itself."""
    return input.conj() if is_complex(input) else input


def angle(input: Any) -> Tensor:  # noqa: A002
    """``torch.angle``: a complex tensor's ``atan2(imag, real)``; for a real tensor pi where it is negative, 0 elsewhere
    (NaN kept), as torch's."""
    if is_complex(input):
        return input.angle()
    return input.where(input.isnan(), (input < 0).to(input.dtype) * math.pi) if input.dtype.is_float else angle(
        input.float())


EXPORTS = {"complex": complex, "angle": angle, "polar": polar, "view_as_real": view_as_real, "view_as_complex": view_as_complex,
           "real": real, "imag": imag, "conj": conj, "conj_physical": conj, "resolve_conj": conj, "complex64": DType.c64, "cfloat": DType.c64, "complex128": DType.c128,
           "cdouble": DType.c128}
"""What ``kiln/__init__.py`` adds to the ``kiln`` namespace beside ``with_complex_dtypes``."""
