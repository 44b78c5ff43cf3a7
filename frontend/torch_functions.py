"""``torch.*``'s tensor functions as ``kiln.*``: creation (``zeros``, ``arange``, ``eye``, ``tensor``, ``randn_like``...),
joins (``cat``, ``stack``), ``where``, and the functional forms of the Tensor methods (``kiln.exp(x)`` is ``x.exp()``).

Traced, a creation function gives a constant (``kiln.zeros(x.shape[0], 4)`` may take the symbolic batch dim, broadcast
at run time); outside a trace it gives an eager tensor holding a NumPy array (``label = kiln.full((b,), 1.0)``, then
``label.fill_(0)``, ``x.size(0)``, ``x.to(device)`` as in PyTorch; ``np.asarray(t)`` reads it). Dtypes default as
PyTorch's: float32 for floats, int64 for integers (``arange(5)``), and an array's own dtype (``tensor(np_array)``).
``device`` is accepted and ignored (the backend places tensors), by the random draws too. ``requires_grad=True``
outside a trace gives a leaf ``Parameter`` (``kiln.zeros(3, requires_grad=True)``, ``kiln.randn(4, 2,
requires_grad=True)``) whose ``.grad`` an eager ``backward()`` fills; traced, a leaf that requires grad in the trace
(``autograd.grad`` may differentiate by it; a compiled step's ``backward()`` fills its ``.grad``). Random draws (``rand_like``, ``randn_like``, ``rand``,
``randn``) trace from the step's seed, as dropout, so ``kiln.compile_train_step`` gives fresh numbers each step;
outside a trace they draw eagerly from kiln's generator (``kiln.manual_seed``).

``dtype=kiln.float16`` / ``kiln.bfloat16`` (``kiln.half``) make half tensors bit for bit as torch's: Python floats and
float64 data round through float32 as c10's ``Half`` does (``torch_dtypes.cast_array``); ``rand`` in half draws
multiples of 2**-11 (float16) or 2**-8 (bfloat16), as torch's, and ``randn`` is computed in float32 and rounded once.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType, is_float_array_dtype
from kiln.frontend.tensor import Tensor, apply, eager_tensor
from kiln.frontend.linalg_spectral import SPECTRAL_FORWARDED, nuclear_norm
from kiln.frontend.linalg_factor import FACTOR_FORWARDED, chain_matmul, lu_unpack
from kiln.frontend.linspace_values import torch_linspace
from kiln.frontend.shared_storage import shared, warn_if_read_only
from kiln.frontend.symbolic_dims import symbolic_arange
from kiln.frontend.tensor_creation_nesting import nested_array
from kiln.frontend.tensor_extras import EXTRA_FORWARDED
from kiln.frontend.tensor_from_tensors import holds_tensors, tensor_of_tensors
from kiln.frontend.tensor_methods import _flatten_args
from kiln.frontend.tensor_operand_checks import TENSOR_ONLY, check_tensor_operands
from kiln.frontend.torch_array import tensor_operand
from kiln.frontend.torch_dtypes import cast_array, get_default_dtype
from kiln.frontend.torch_generator import drawing_from
from kiln.frontend.trace import TraceContext, located_error
from kiln.frontend.warn_once import warn_once


def _dtype(dtype: Any, default: str) -> np.dtype:
    default = get_default_dtype() if default == "float32" else default  # kiln.set_default_dtype
    return np.dtype(DType.of(default if dtype is None else dtype).numpy)


def _created(array: np.ndarray) -> Any:
    """A constant tensor when tracing; outside a trace an eager tensor holding the array (PyTorch's tensor: ``size(0)``,
    ``fill_``, ``to(device)``; NumPy reads it through ``np.asarray``)."""
    return apply("tensor.constant", value=array) if TraceContext.active() else eager_tensor(array)


def full(size: Any, fill_value: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    shape = _flatten_args((size,) if isinstance(size, int) else tuple(size))
    if isinstance(fill_value, Tensor) and TraceContext.active():  # a traced number: a compiled function's argument
        return _traced_full(shape, fill_value, dtype)
    default = "bool" if isinstance(fill_value, bool) else "int64" if isinstance(fill_value, int) else "float32"
    scalar = cast_array(fill_value, _dtype(dtype, default))
    if all(isinstance(d, int) for d in shape):
        return _requiring_grad(_created(np.full(shape, scalar)), requires_grad)
    return _created(scalar).broadcast_to(shape)


def _traced_full(shape: tuple[Any, ...], fill_value: Tensor, dtype: Any) -> Tensor:
    """``full`` with a traced 0-d fill, of the dtype PyTorch gives its number: bool, int64, or the default float."""
    if fill_value.ndim != 0:
        raise located_error(f"full: fill_value must be a number or a 0-d tensor, got a tensor of shape {tuple(fill_value.shape)}")
    kind = fill_value.dtype
    inferred = DType.bool if kind == DType.bool else get_default_dtype() if kind.is_float else DType.i64
    return fill_value.to(inferred if dtype is None else dtype).broadcast_to(shape)  # a fresh tensor, not a view


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False, **keyword: Any) -> Any:
    return full(_size(size, keyword, "zeros"), 0.0, dtype=dtype, requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False, **keyword: Any) -> Any:
    return full(_size(size, keyword, "ones"), 1.0, dtype=dtype, requires_grad=requires_grad)


def _size(size: tuple[Any, ...], keyword: dict[str, Any], function: str) -> tuple[Any, ...]:
    """The shape given as ``f(2, 3)``, ``f((2, 3))`` or PyTorch's keyword ``f(size=(2, 3))``."""
    if set(keyword) - {"size"}:
        raise TypeError(f"{function}() got an unexpected keyword argument {sorted(set(keyword) - {'size'})[0]!r}")
    if "size" in keyword:
        if size:
            raise TypeError(f"{function}() got multiple values for argument 'size'")
        size = (keyword["size"],)
    return _flatten_args(size)


empty = zeros


def full_like(input: Any, fill_value: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False,
              memory_format: Any = None) -> Any:
    if isinstance(input, Tensor) and (TraceContext.active() or not all(isinstance(d, int) for d in input.shape)):
        return _requiring_grad(input.new_full(input.shape, fill_value, dtype=dtype), requires_grad)
    if isinstance(input, Tensor):  # eager: a tensor of its own memory, written in place as torch's (x[i] = v, add_)
        target = np.dtype((input.dtype if dtype is None else DType.of(dtype)).numpy)
        return _requiring_grad(_created(np.full(tuple(input.shape), cast_array(fill_value, target))), requires_grad)
    return _requiring_grad(_created(np.full_like(np.asarray(input), fill_value, dtype=None if dtype is None else _dtype(dtype, "float32"))),
                           requires_grad)


def zeros_like(input: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False,
               memory_format: Any = None) -> Any:
    return full_like(input, 0, dtype=dtype, requires_grad=requires_grad)


def ones_like(input: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False,
              memory_format: Any = None) -> Any:
    return full_like(input, 1, dtype=dtype, requires_grad=requires_grad)


empty_like = zeros_like


def arange(start: Any, end: Any = None, step: Any = 1, *, out: Any = None, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Any:
    """``[start, end)`` by ``step``; int64 when every bound is an int, else float32 (a static length: plain numbers).
    In a half dtype each value is ``start + i * step`` in float64 rounded once: torch's vectorized half kernel rounds
    each 16-lane chunk's first value and steps from it, so with an inexact step its values depend on the CPU's vector
    width and may differ from these by a few half ulps (equal for integer and dyadic steps). ``out=`` is written and
    returned (``frontend/out_argument.py``)."""
    if out is not None:
        from kiln.frontend.out_argument import out_dtype, written_to_out

        return written_to_out(out, arange(start, end, step, dtype=out_dtype(out, dtype), requires_grad=requires_grad))
    if end is None:
        start, end = 0, start
    start, end, step = (_bound_value(v) for v in (start, end, step))
    if TraceContext.active() and any(isinstance(v, str) for v in (start, end, step)):  # a symbolic length
        return _requiring_grad(symbolic_arange(start, end, step, DType.of(dtype or "int64")), requires_grad)
    if not all(isinstance(v, (int, float, np.number)) for v in (start, end, step)):
        raise located_error("arange takes numbers: a length from a symbolic dim is not known while tracing")
    if step == 0:
        raise located_error("arange: step must be nonzero (as in PyTorch)")
    if (end - start) * step < 0:
        raise located_error("arange: upper bound and lower bound inconsistent with step sign (as in PyTorch): "
                            f"start={start}, end={end}, step={step}")
    integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    return _requiring_grad(_created(cast_array(np.arange(start, end, step), _dtype(dtype, "int64" if integral else "float32"))), requires_grad)


def _bound_value(bound: Any) -> Any:
    """A 0-d tensor bound of ``arange`` as its Python number (an int from an integer tensor), as torch takes
    it: HF Longformer's ``torch.arange(max_num_global_attn_indices)`` of ``num_global_attn_indices.max()``; traced,
    ``kiln.compile`` specializes on its value (``item()``)."""
    return bound.item() if isinstance(bound, Tensor) and bound.ndim == 0 else bound


def linspace(start: float, end: float, steps: int, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    dtype = _dtype(dtype, "float32")
    return _requiring_grad(_created(cast_array(torch_linspace(float(start), float(end), int(steps), dtype), dtype)), requires_grad)


def eye(n: int, m: int | None = None, *, out: Any = None, dtype: Any = None, device: Any = None,
        requires_grad: bool = False) -> Any:
    """The identity; ``out=`` is written and returned (Shampoo's ``torch.eye(dim, out=grad.new(dim, dim))``:
    ``frontend/out_argument.py``)."""
    if out is not None:
        from kiln.frontend.out_argument import out_dtype, written_to_out

        return written_to_out(out, eye(n, m, dtype=out_dtype(out, dtype), requires_grad=requires_grad))
    return _requiring_grad(_created(np.eye(n, m, dtype=_dtype(dtype, "float32"))), requires_grad)


def tensor(data: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Any:
    """``data`` as a constant: Python floats as float32, ints as int64, bools as bool; an array, a NumPy scalar or a
    tensor keeps its dtype and is copied, as PyTorch's (``from_numpy`` shares it); tensors, alone or in lists, are
    read as PyTorch reads them, traced ones too (``frontend/tensor_from_tensors.py``)."""
    if holds_tensors(data):
        return _requiring_grad(tensor_of_tensors(data, dtype), requires_grad)
    array = nested_array(data)  # ragged nested lists: torch's error, not NumPy's
    if dtype is not None:
        array = cast_array(array, _dtype(dtype, "float32"))
    elif not isinstance(data, (np.ndarray, np.generic, Tensor)) and array.dtype.kind in "fi":
        array = cast_array(array, get_default_dtype() if array.dtype.kind == "f" else DType.i64)
    return _requiring_grad(_created(array), requires_grad)


def _requiring_grad(result: Any, requires_grad: bool) -> Any:
    """``requires_grad=True`` outside a trace: a leaf ``Parameter`` of the values, whose ``.grad`` an eager ``backward()``
    fills, as PyTorch's leaf tensor; traced, the traced tensor marked by ``requires_grad_()``, so ``autograd.grad``
    may differentiate by it (``autograd.grad(y, [x, torch.zeros(1, requires_grad=True)], allow_unused=True)``)."""
    if not requires_grad:
        return result
    return result.requires_grad_(True) if TraceContext.active() else _leaf(np.array(result))


def _leaf(array: np.ndarray) -> Any:
    """``kiln.tensor(data, requires_grad=True)`` outside a trace: a ``GradLeaf`` (a ``Parameter`` a module does not
    register), whose ``.grad`` an eager ``backward()`` fills (PyTorch's leaf tensor)."""
    from kiln.frontend.module import GradLeaf  # lazily: module builds on this file's Tensor

    if not is_float_array_dtype(array.dtype):
        raise located_error(f"only floating-point tensors can require gradients, got {array.dtype}; pass dtype=kiln.float32")
    return GradLeaf(array)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Any:
    """``data`` without a copy where PyTorch makes none: a tensor itself (cast if ``dtype`` differs), a NumPy array of
    the same dtype shared (``from_numpy``: in-place writes of either are seen in the other); anything else copied, as
    ``tensor(data, dtype=dtype)``."""
    if isinstance(data, Tensor):
        return data if dtype is None else data.to(dtype)
    if isinstance(data, np.ndarray) and (dtype is None or np.dtype(DType.of(dtype).numpy) == data.dtype):
        return from_numpy(data)
    return tensor(data, dtype=dtype)


def from_numpy(array: np.ndarray) -> Any:
    """A tensor sharing ``array``'s memory, as PyTorch's: in-place writes of either are seen in the other
    (``frontend/shared_storage.py``)."""
    array = np.asarray(array)
    warn_if_read_only(array)  # torch's warning, once a process
    return _created(shared(array))


def rand_like(input: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False,
              memory_format: Any = None) -> Tensor:
    """Uniform on [0, 1), from the traced step's seed (a fresh draw per step). In float16/bfloat16 the draw is a
    multiple of 2**-11 / 2**-8 (the dtype's significand), as PyTorch's: a float32 draw rounded to half could be 1.0."""
    input = tensor_operand(input)  # p.grad: the parameter's gradient array, a tensor in PyTorch
    target = input.dtype if dtype is None else DType.of(dtype)
    seed, stream = _seed("rand_like")
    draw = apply("tensor.random_uniform", seed, input, dtype=DType.f32 if target.is_half else target, stream=stream)
    if target.is_half:
        steps = float(2 ** (ml_dtypes.finfo(target.numpy).nmant + 1))
        draw = ((draw * steps).floor() * (1.0 / steps)).to(target)  # exact: k / steps for k < steps fits the significand
    return _requiring_grad(draw, requires_grad)


def randn_like(input: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False,
               memory_format: Any = None) -> Tensor:
    """Standard normal by Box-Muller on two uniform draws: ``sqrt(-2 log(1 - u)) cos(2 pi v)``; a half dtype's draw is
    computed in float32 and rounded once (PyTorch's opmath)."""
    input = tensor_operand(input)
    target = input.dtype if dtype is None else DType.of(dtype)
    if target.is_half:
        return _requiring_grad(randn_like(input, dtype=DType.f32).to(target), requires_grad)
    u, v = rand_like(input, dtype=dtype), rand_like(input, dtype=dtype)
    return _requiring_grad(((1.0 - u).log() * -2.0).sqrt() * apply("tensor.cos", v * (2 * math.pi)), requires_grad)


def rand(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False, generator: Any = None,
         **keyword: Any) -> Tensor:
    size = _size(size, keyword, "rand")
    with drawing_from(generator):  # a kiln.Generator's eager draws (frontend/torch_generator.py)
        return rand_like(zeros(*size, dtype=dtype), requires_grad=requires_grad)


def randn(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False, generator: Any = None,
          **keyword: Any) -> Tensor:
    size = _size(size, keyword, "randn")
    with drawing_from(generator):
        return randn_like(zeros(*size, dtype=dtype), requires_grad=requires_grad)


def _seed(function: str) -> tuple[Tensor, int]:
    """The traced step's seed and a fresh stream; outside a trace, a fresh seed from kiln's generator (eager mode)."""
    seed, stream = TraceContext.current().random_seed()
    return Tensor(seed), stream


_COMMUTATIVE = frozenset({"add", "mul", "multiply", "bitwise_and", "bitwise_or", "bitwise_xor"})
"""Binary functions PyTorch also takes as ``f(number, tensor)``: the tensor's method does them with its operands swapped."""
_REFLECTED = {"sub": "__rsub__", "subtract": "__rsub__", "div": "__rtruediv__", "divide": "__rtruediv__",
              "true_divide": "__rtruediv__", "pow": "__rpow__"}
"""``f(number, tensor)`` of the others: the tensor's reflected operator (``torch.sub(1, x)`` is ``1 - x``)."""
_NUMBER_INPUT = frozenset({"add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide"})
"""The arithmetic PyTorch also takes with a Python number as ``input`` and a number as ``other``, or with keywords
(``torch.div(seq_len, w, rounding_mode="trunc")``, ``torch.add(1, x, alpha=2)``): the number is a 0-d tensor of
torch's dtype for it (int64, the default float, bool), as torch wraps it."""


def _forwarder(name: str) -> Callable[..., Any]:
    def function(input: Tensor, *args: Any, **kwargs: Any) -> Any:
        if "out" in kwargs:  # torch.nan_to_num(p.grad, ..., out=p.grad): computed, then written into out
            return _into_out(kwargs.pop("out"), function(input, *args, **kwargs))
        input = tensor_operand(input)  # torch.dot(p.grad, g): the gradient array as the tensor it is in PyTorch
        if _is_number(input) and len(args) == 1 and not kwargs and isinstance(args[0], Tensor):
            if name in _COMMUTATIVE:
                return getattr(args[0], name)(input)
            if name in _REFLECTED:
                return getattr(args[0], _REFLECTED[name])(input)
        if _is_number(input) and name in _NUMBER_INPUT:
            input = tensor(input)
        if name in TENSOR_ONLY:  # torch.maximum(t, 2.0): torch's TypeError, naming the function's positions
            check_tensor_operands(name, (("input", input, 1), *(("other", a, 2) for a in args[:1]),
                                         *(("other", v, None) for k, v in kwargs.items() if k == "other")))
        return getattr(input, name)(*args, **kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"``torch.{name}(input, ...)``: ``input.{name}(...)``."
    return function


def _into_out(out: Any, result: Any) -> Any:
    """PyTorch's ``out=`` of a ``torch.*`` function: ``result`` written into ``out`` (resized, cast to its dtype) and
    ``out`` returned; a tuple result (``torch.sort``, ``torch.max(x, dim)``) into a tuple of outs; ``out=None`` is
    no out."""
    from kiln.frontend.out_argument import written_to_out

    if out is None:
        return result
    if isinstance(result, tuple):
        return type(result)(*(written_to_out(o, r) for o, r in zip(out, result)))
    return written_to_out(out, result)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, np.ndarray)


FORWARDED = (
    "abs", "add", "all", "amax", "amin", "any", "argmax", "argmin", "argsort", "as_strided", "bmm", "chunk", "clamp", "clip", "clone", "cos", "cumsum",
    "div", "dot", "eq", "exp", "flatten", "flip", "gather", "ge", "gt", "index_select", "isfinite", "isinf", "isnan", "le",
    "lerp", "log", "log_softmax", "logical_and", "logical_not", "logical_or", "logical_xor", "logsumexp", "lt", "masked_fill",
    "matmul", "max", "maximum", "mean", "min", "minimum", "mm", "movedim", "mul", "narrow", "ne", "neg", "norm", "outer",
    "permute", "pow", "prod", "reciprocal", "relu", "repeat_interleave", "reshape", "roll", "rsqrt", "sigmoid", "sign", "sin",
    "softmax", "sort", "sqrt", "square", "squeeze", "std", "sub", "sum", "t", "take_along_dim", "tanh", "tile", "topk",
    "transpose", "tril", "triu", "msort", "log1p", "expm1", "log2", "log10", "exp2", "sinh", "cosh", "tan", "erf", "hypot",
    "logaddexp", "heaviside", "nan_to_num", "addcmul", "addcdiv", "addmm", "baddbmm", "diag", "diagonal", "diff", "kron", "take",
    "kthvalue", "median", "numel", "broadcast_to", "expand_as",
    "unbind", "unflatten", "unsqueeze", "var", "floor", "ceil", "round", "cumprod", "atan", "asin", "acos", "arctan", "arcsin",
    "arccos", "atan2", "arctan2", "asinh", "acosh", "atanh", "arcsinh", "arccosh", "arctanh", "cummax", "cummin", "logcumsumexp",
)
DTYPES = {"float32": DType.f32, "float": DType.f32, "float64": DType.f64, "double": DType.f64, "int32": DType.i32, "int": DType.i32,
          "int64": DType.i64, "long": DType.i64, "bool": DType.bool, "uint8": DType.u8, "int8": DType.i8, "int16": DType.i16,
          "short": DType.i16}
"""``torch.float32``, ``torch.long``... as ``kiln.float32``, ``kiln.long``."""

FORWARDERS = {name: _forwarder(name) for name in FORWARDED + EXTRA_FORWARDED}
"""``kiln/__init__.py`` exports these; they stay out of this module's globals, where ``sum`` or ``all`` would shadow
the builtins its own code calls."""
FORWARDERS.update({name: _forwarder(name) for name in FACTOR_FORWARDED})  # kiln.qr, kiln.det, kiln.inverse, ...
FORWARDERS.update({name: _forwarder(name) for name in SPECTRAL_FORWARDED})  # kiln.svd, kiln.pinverse


def cat(tensors: Any, dim: int = 0) -> Tensor:
    from kiln.frontend.functional_nn import cat as cat_tensors

    return cat_tensors(tensors, dim)


concat = concatenate = cat


def split(tensor: Any, split_size_or_sections: Any, dim: int = 0) -> tuple[Any, ...]:
    """``torch.split`` (torch/functional.py's Python function): its parameter names, which code passes by keyword
    (``torch.split(x, split_size_or_sections=d, dim=-1)``, xLSTM's mLSTM layer), where the method
    ``Tensor.split(split_size, dim)`` names the first ``split_size``."""
    return tensor_operand(tensor).split(split_size_or_sections, dim)  # p.grad's array: a tensor, as the forwarders take


def stack(tensors: Any, dim: int = 0) -> Tensor:
    from kiln.frontend.functional_nn import stack as stack_tensors

    return stack_tensors(tensors, dim)


def where(condition: Tensor, input: Any = None, other: Any = None) -> Any:
    """``input`` where ``condition`` holds, else ``other``; ``where(condition)`` alone is ``condition.nonzero(as_tuple=True)``.
    Two Python numbers are tensors of torch's dtypes (the default float, int64, bool), not the condition's bool."""
    if input is None and other is None:
        return condition.nonzero(as_tuple=True)
    from kiln.frontend.complex_tensor import ComplexTensor, as_complex, split

    if isinstance(input, ComplexTensor) or isinstance(other, ComplexTensor) or split(other)[1] is not None:
        like = other if isinstance(other, ComplexTensor) else None  # a complex operand: both parts chosen alike
        return as_complex(input, like=like).where(condition, other)
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input, other = tensor(input), tensor(other)
    from kiln.frontend.functional import bool_condition

    return apply("tensor.where", bool_condition(condition), input, other)


def sparse_coo_tensor(indices: Any, values: Any, size: Any = None, *, dtype: Any = None, device: Any = None,
                      requires_grad: bool = False, check_invariants: bool | None = None, is_coalesced: bool | None = None) -> Any:
    """``torch.sparse_coo_tensor``, built dense: kiln has one layout, so the result holds every entry, zeros and the
    ``values`` at ``indices`` (``(sparse dims, nnz)``), summed where an index repeats, as torch's ``to_dense()``. A
    graph's adjacency from its edge list: ``sparse_coo_tensor(edges.T, ones(E), (V, V))``. Values that require grad,
    and any in a trace, keep their gradient (frontend/sparse_coo_values.py)."""
    from kiln.frontend.sparse_legacy import marked_sparse  # lazily: the legacy constructors call this one

    if TraceContext.active() or (isinstance(values, Tensor) and values.requires_grad):
        from kiln.frontend.sparse_coo_values import coo_with_tensor_values  # values keep their gradient

        values = values if isinstance(values, Tensor) else tensor(values)
        return marked_sparse(coo_with_tensor_values(indices, values, size, dtype))
    index = np.asarray(indices)
    entries = np.asarray(tensor(values, dtype=dtype))
    if index.ndim != 2 or index.shape[1] != entries.shape[0] or index.dtype.kind not in "iu":
        raise located_error(f"sparse_coo_tensor: indices must be integers of shape (sparse dims, nnz) matching values' first dim "
                            f"{entries.shape[0]}, got {index.dtype} {index.shape}")
    shape = tuple(int(d) for d in size) if size is not None else (*(index.max(axis=1) + 1 if index.size else (0,) * len(index)),
                                                                     *entries.shape[1:])
    bounds = np.asarray(shape[:len(index)]).reshape(-1, 1)
    if index.size and ((index < 0).any() or (index >= bounds).any()):
        raise located_error(f"sparse_coo_tensor: an index is outside the size {shape}: each row of indices must lie in "
                            f"[0, size[d]); got rows ranging {index.min(axis=1).tolist()}..{index.max(axis=1).tolist()}")
    dense = np.zeros(shape, entries.dtype)
    np.add.at(dense, tuple(index), entries)
    return marked_sparse(_requiring_grad(_created(dense), requires_grad))


def spmm(input: Tensor, mat2: Tensor) -> Tensor:
    """``torch.spmm``: the matrix product of two 2-D tensors. kiln has no sparse layout, so ``input`` is dense (the
    adjacency of a graph convolution, ``D^-1/2 (A + I) D^-1/2``, built with ``eye``, ``diag`` and ``@``)."""
    from kiln.frontend.tensor import _check_rank

    _check_rank("spmm", 2, input, mat2)
    return input @ mat2


def cdist(x1: Tensor, x2: Tensor, p: float = 2.0, compute_mode: str = "use_mm_for_euclid_dist_if_necessary") -> Tensor:
    """``torch.cdist``: the ``p``-norm distance between every pair of rows, from the differences (exact)."""
    from kiln.frontend.functional_extra_losses import cdist as distances

    return distances(x1, x2, p, compute_mode)


MESHGRID_INDEXING_WARNING = "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument."
"""torch's warning (once a process) for ``meshgrid`` without ``indexing``, which then means ``"ij"``."""


def meshgrid(*tensors: Any, indexing: str | None = None) -> tuple[Tensor, ...]:
    """Coordinate grids from 1-D tensors: ``"ij"`` (matrix) or ``"xy"`` (Cartesian: the first two swapped); no
    ``indexing`` is ``"ij"`` with torch's warning."""
    if indexing is None:
        warn_once(MESHGRID_INDEXING_WARNING)
        indexing = "ij"
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise located_error(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    order = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) >= 2:
        order[0], order[1] = 1, 0
    shape = tuple(tensors[i].shape[0] for i in order)
    grids = []
    for axis, index in enumerate(order):
        view = tensors[index].reshape(tuple(-1 if a == axis else 1 for a in range(len(order))))
        grids.append(view.broadcast_to(shape))
    if indexing == "xy" and len(tensors) >= 2:
        grids[0], grids[1] = grids[1], grids[0]
    return tuple(grids)


def randint(low: int, high: int | None = None, size: Any = None, *, dtype: Any = None, device: Any = None, generator: Any = None) -> Tensor:
    """Integers uniform in ``[low, high)`` from the traced step's seed (``randint(high, size)`` too)."""
    if high is None:  # randint(high, size=(n,))
        low, high = 0, low
    elif size is None and isinstance(high, (tuple, list)):  # randint(high, (n,))
        low, high, size = 0, low, high
    if isinstance(low, (int, np.integer)) and isinstance(high, (int, np.integer)) and low >= high:
        raise located_error(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high} (randint's "
                            "range is [low, high), as in PyTorch)")
    draw = rand(*tuple(size), dtype="float64", generator=generator)
    return (draw * (high - low)).floor().to(DType.of("int64" if dtype is None else dtype)) + low


def searchsorted(sorted_sequence: Tensor, values: Any, *, right: bool = False, side: str | None = None) -> Tensor:
    """Where each value would be inserted to keep each row of ``sorted_sequence`` sorted: the count of elements below
    it (``right``/``side="right"``: at or below), as int64."""
    right = right or side == "right"
    inner = sorted_sequence.unsqueeze(-2)
    probe = values.unsqueeze(-1) if isinstance(values, Tensor) else apply("tensor.constant", value=np.asarray(values, sorted_sequence.dtype.numpy)).unsqueeze(-1)
    below = (inner <= probe) if right else (inner < probe)
    return below.long().sum(-1)


def bucketize(input: Tensor, boundaries: Tensor, *, right: bool = False) -> Tensor:
    """The bucket of each element among 1-D ``boundaries``: the count of boundaries below it (at or below with ``right``)."""
    flat = input.reshape(-1, 1) if input.ndim else input.reshape(1, 1)
    below = (boundaries <= flat) if right else (boundaries < flat)
    return below.long().sum(-1).reshape(input.shape)


def trapezoid(y: Tensor, x: Tensor | None = None, *, dx: float = 1.0, dim: int = -1) -> Tensor:
    """The trapezoidal rule along ``dim``: spacing ``dx``, or the sample points ``x``."""
    size = y.shape[dim]
    pairs = (y.narrow(dim, 1, size - 1) + y.narrow(dim, 0, size - 1)) * 0.5
    if x is None:
        return pairs.sum(dim) * dx
    return (pairs * x.diff(dim=-1 if x.ndim == 1 else dim)).sum(dim)


trapz = trapezoid


def einsum(equation: str, *operands: Any) -> Tensor:
    from kiln.frontend.functional_einsum import einsum as traced_einsum

    return traced_einsum(equation, *operands)


__all__ = [
    "arange", "as_tensor", "bucketize", "cat", "cdist", "concat", "concatenate", "einsum", "empty", "empty_like", "eye", "from_numpy", "full", "full_like",
    "linspace", "meshgrid", "ones", "ones_like", "rand", "rand_like", "randint", "randn", "randn_like", "searchsorted", "split",
    "stack",
    "tensor", "trapezoid", "trapz", "where", "zeros",
    "zeros_like",
]
__all__ += ["chain_matmul", "lu_unpack"]  # frontend/linalg_factor.py
__all__ += ["nuclear_norm"]  # frontend/linalg_spectral.py
__all__ += ["sparse_coo_tensor", "spmm"]
