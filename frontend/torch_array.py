"""The NumPy array behind ``parameter.data`` and ``parameter.grad``, answering PyTorch's tensor methods too.

kiln keeps a parameter's value and an eager gradient as NumPy arrays (every
backend and optimizer reads them as such). PyTorch programs also call tensor
methods on them: ``p.data.add_(p.grad, alpha=-lr)``, ``m.weight.data.normal_(0,
0.02)``, ``p.grad.data.zero_()``, ``p.grad.norm()``. A ``TorchArray`` is a view
of the same memory that keeps NumPy's behaviour for everything NumPy has, and
answers a name only PyTorch's tensors have (``add_``, ``normal_``, ``zero_``,
``clone``, ``norm``, ``numel``...) through a non-trainable ``Parameter`` sharing
its memory: in-place methods write into the array, others give eager tensors.

```python
p.data.add_(p.grad, alpha=-0.1)      # the SGD step of word_language_model, in place
p.grad.data.zero_()
```

The reductions and the few other methods both libraries have (``sum``,
``mean``, ``max``, ``std``, ``clip``, ``item``...) answer as PyTorch's when
called as PyTorch code calls them (``p.grad.sum(dim=1)``, ``p.data.max(0)``
gives values and indices, ``p.data.std()`` is unbiased), and in a
``kiln.compile``'d function they read the parameter's traced value, not the
array's values when the trace ran; called as NumPy's functions call them (with
``axis``, ``out``, ``ddof``...: ``np.sum(p.data)``) they stay NumPy's. Where
the names' meanings differ otherwise NumPy's wins (``size`` is the element
count, an int that called answers PyTorch's ``size()`` and ``size(dim)``): use
``p.detach()``, a tensor, for PyTorch's. ``view`` takes both a
shape (PyTorch's, the same memory) and a dtype (NumPy's).

Where PyTorch code hands one to kiln's functions it is the tensor it is in
PyTorch: ``kiln.is_tensor(p.grad)`` is True, ``kiln.cat([p.grad.view(-1) for p
in ps])``, ``kiln.randn_like(p.grad)`` and ``kiln.dot(g, g)`` take its values
(``tensor_operand``), and it prints as PyTorch's tensor text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.eager_values import trace_stack
from kiln.frontend.torch_dtypes import is_kiln_tensor
from kiln.frontend.traced_ufuncs import traced_ufunc, untraceable


class TorchArray(np.ndarray):
    """An ndarray view that also answers PyTorch's tensor-only methods (see the module docstring)."""

    @property
    def data(self) -> "TorchArray":  # type: ignore[override]  (PyTorch's ``.data``, not the buffer's memoryview)
        return self

    @data.setter
    def data(self, new: Any) -> None:
        """PyTorch's ``p.grad.data = g``, and the end of ``p.grad.data += g`` (Python assigns the sum back, which
        the in-place add already wrote: BigGAN's ``ortho``): ``new``'s values written in."""
        if new is not self:
            self.copy_(new)

    def __repr__(self) -> str:
        """PyTorch's text of the values (``print(p.grad)``), as a tensor's."""
        from kiln.frontend.tensor import eager_tensor  # lazily: the tensor builds on this module

        return repr(eager_tensor(self.view(np.ndarray)))

    __str__ = __repr__

    @property
    def size(self) -> "ElementCount":  # type: ignore[override]
        """NumPy's element count, which called answers PyTorch's ``size()`` / ``size(dim)`` (pytorch-ntm counts its
        parameters by ``p.data.view(-1).size(0)``)."""
        return ElementCount(np.ndarray.size.__get__(self), self.shape)

    def view(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """PyTorch's ``view(shape)`` given a shape (ints, or one list, tuple or ``Size`` of them): the same memory,
        reshaped (DiT's ``xavier_uniform_(w.data.view([w.shape[0], -1]))`` initialises ``w`` through it), or torch's
        error where no view can be; NumPy's ``view(dtype)`` otherwise."""
        shape = _view_shape(args, kwargs)
        if shape is None:
            return np.ndarray.view(self, *args, **kwargs)
        traced = traced_target(self)
        if traced is not None:  # p.data.view(-1) in a kiln.compile'd function: the parameter's traced value
            return traced_method(traced, "view")(*shape)
        return _viewed(self, shape)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("owner", "indexed"):
            raise AttributeError(name)
        traced = traced_target(self)
        if traced is not None:  # p.data.mul_(0.9) in a kiln.compile'd function: p's traced value, written as p's
            return traced_method(traced, name)
        tensor = shared_parameter(self)
        if not hasattr(type(tensor), name):
            raise AttributeError(f"'{type(self).__name__}' (a parameter's NumPy array) has no attribute {name!r}")
        method = getattr(tensor, name)
        if not name.endswith("_") or not callable(method):
            return method
        return lambda *args, **kwargs: (method(*args, **kwargs), self)[1]  # in place: the array itself, as PyTorch's


class ElementCount(int):
    """A ``TorchArray``'s ``size``: NumPy's element count (an int everywhere NumPy code uses it), and called, PyTorch's
    ``size()`` (the shape as a ``Size``) or ``size(dim)`` (one dim, negative counting from the end)."""

    def __new__(cls, count: int, shape: tuple[int, ...]) -> "ElementCount":
        element_count = super().__new__(cls, count)
        element_count.shape = shape
        return element_count

    def __call__(self, dim: int | None = None) -> Any:
        from kiln.frontend.torch_size import Size

        if dim is None:
            return Size(self.shape)
        if not -len(self.shape) <= dim < max(len(self.shape), 1):
            raise IndexError(f"Dimension out of range (expected to be in range of [{-len(self.shape)}, "
                             f"{len(self.shape) - 1}], but got {dim})")
        return self.shape[dim]


def _view_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape PyTorch's ``view`` names (``view(2, -1)``, ``view([2, -1])``, ``view(size=...)``), else None."""
    if kwargs:
        return tuple(kwargs["size"]) if set(kwargs) == {"size"} else None
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    is_int = lambda a: isinstance(a, (int, np.integer)) and not isinstance(a, bool)  # noqa: E731
    return tuple(int(a) for a in args) if args and all(is_int(a) for a in args) else None


def _viewed(array: "TorchArray", shape: tuple[int, ...]) -> "TorchArray":
    """``array``'s memory in ``shape``, with torch's errors where the size does not fit or no view can be."""
    known = int(np.prod([d for d in shape if d != -1]))
    if shape.count(-1) > 1 or (-1 not in shape and known != array.size) or (-1 in shape and (known == 0 or array.size % known)):
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {array.size}")
    viewed = np.ndarray.view(array)
    try:
        viewed.shape = tuple(array.size // known if d == -1 else d for d in shape)
    except AttributeError:  # NumPy: the strides allow no view of this shape
        raise RuntimeError("view size is not compatible with input tensor's size and stride (at least one dimension "
                           "spans across two contiguous subspaces). Use .reshape(...) instead.") from None
    return viewed


def _in_place_operator(name: str, method: str) -> Any:
    """``TorchArray.__iadd__`` &c.: with a kiln tensor on the right (``state_dict()["w"] += t``), the write into this
    array PyTorch's tensors make (NumPy would defer to the tensor and rebind the name to a new tensor, leaving the
    parameter unchanged); in a trace, the parameter's traced in-place method. Otherwise NumPy's."""
    numpy_operator = getattr(np.ndarray, name)

    def operator(self: TorchArray, other: Any) -> Any:
        if not is_kiln_tensor(other):
            return numpy_operator(self, other)
        traced = traced_target(self)
        if traced is not None:
            traced_method(traced, method)(other)
            return self
        return numpy_operator(self, np.asarray(other))  # an eager tensor's values (a traced one refuses, naming why)

    operator.__name__ = operator.__qualname__ = name
    return operator


for _name, _method in (("__iadd__", "add_"), ("__isub__", "sub_"), ("__imul__", "mul_"), ("__itruediv__", "div_")):
    setattr(TorchArray, _name, _in_place_operator(_name, _method))


class TracedData(TorchArray):
    """A parameter's ``.data`` in a ``kiln.compile``'d function: NumPy's ufuncs on it are the traced tensor operations,
    other NumPy functions of its values are refused, naming the line (``Parameter.data`` gives it in a trace only;
    eagerly ``.data`` is a ``TorchArray``, without this class's per-call cost)."""

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """The traced tensor operation (``p.data * 0.5``, ``p.data *= 0.99``: frontend/traced_ufuncs.py); NumPy's
        ufunc once the trace has ended (a ``.data`` kept past it)."""
        out = kwargs.get("out", ())
        if any(traced_target(x) is not None for x in (*inputs, *out)):
            return traced_ufunc(ufunc, method, inputs, out, traced_target)
        if out:
            kwargs["out"] = tuple(map(_untraced, out))
        return getattr(ufunc, method)(*map(_untraced, inputs), **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        """Refused (``np.sum(p.data)``: a value of the trace) but for functions reading the shape and dtype only."""
        if func.__name__ not in _VALUE_FREE and any(traced_data(x) is not None for x in (*args, *kwargs.values())):
            raise untraceable(func.__name__)
        return super().__array_function__(func, types, args, kwargs)

    def __getitem__(self, index: Any) -> Any:
        """``p.data[index]`` (basic indexing: a view) in a trace stands for the parameter's traced value there, as
        ``p.data`` does for the whole: its in-place methods write the parameter at ``index`` (GatedPixelCNN's
        ``self.vert_stack.weight.data[:, :, -1].zero_()`` in its forward), its reads are traced; NumPy alone would
        write the array once, when the trace ran, and read its values then."""
        view = np.ndarray.__getitem__(self, index)
        base = _indexed_base(self)
        if base is None or not isinstance(view, np.ndarray) or not np.may_share_memory(view, self):
            return view  # an element, a copy (advanced indexing), or no trace
        view = view.view(TracedData)
        view.indexed = (base[0], base[1] + (index,))
        return view

    def __setitem__(self, index: Any, value: Any) -> None:
        """``p.data[index] = value`` in a trace: the parameter's traced value written there (as under ``no_grad``)."""
        target = _indexed_base(self)
        if target is None:
            return np.ndarray.__setitem__(self, index, value)
        if _same_place(_indexed_base(value), (target[0], target[1] + (index,))):
            return None  # p.data[i] *= 2: Python stores the view it wrote in place back into its own place
        from kiln.frontend.grad_mode import no_grad  # lazily: grad mode builds on the tensor

        with no_grad():
            _indexed(target[0](), target[1])[index] = _traced(value)


def traced_view(array: TorchArray, owner: Any) -> TracedData:
    """``array``, the parameter ``owner()``'s own, as the ``TracedData`` a trace's ``p.data`` gives (the same memory);
    the array learns its owner if it had none (a ``copy.deepcopy``'d parameter's)."""
    array.__dict__.setdefault("owner", owner)
    view = array.view(TracedData)
    view.owner = owner
    return view


def _untraced(array: Any) -> Any:
    return array.view(TorchArray) if type(array) is TracedData else array


_VALUE_FREE = frozenset({"zeros_like", "ones_like", "empty_like", "full_like", "shape", "ndim", "size", "result_type",
                         "iscomplexobj", "isrealobj", "may_share_memory", "shares_memory"})
"""NumPy's functions that read an array's shape, dtype or memory only (an optimizer's ``np.zeros_like(p.data)``)."""

_NUMPY_KEYWORDS = frozenset({"axis", "out", "keepdims", "dtype", "ddof", "initial", "where", "decimals", "a_min", "a_max"})
"""Keywords only NumPy's methods take: NumPy's functions (``np.sum(p.data)``) pass them to the method, always."""

_TORCH_MEANINGS = frozenset({"std", "var", "max", "min"})
"""Names whose PyTorch meaning differs from NumPy's for the same call: unbiased ``std()``/``var()``, and ``max(0)``
giving values and indices."""


def _shared_method(name: str) -> Any:
    """``TorchArray.<name>``, a method NumPy's arrays and PyTorch's tensors both have: PyTorch's when the call is PyTorch's
    (a name whose meanings differ, a ``dim``/``keepdim`` keyword, a trace), NumPy's when the call is NumPy's."""
    numpy_method = getattr(np.ndarray, name)

    def method(self: TorchArray, *args: Any, **kwargs: Any) -> Any:
        if not _NUMPY_KEYWORDS.isdisjoint(kwargs):
            return numpy_method(self, *args, **kwargs)
        traced = traced_target(self)
        if traced is not None:  # p.data.sum() in a kiln.compile'd function: the parameter's value at each call
            return traced_method(traced, name)(*args, **kwargs)
        if name in _TORCH_MEANINGS or "dim" in kwargs or "keepdim" in kwargs:
            return getattr(shared_parameter(self).detach(), name)(*args, **kwargs)
        return numpy_method(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"PyTorch's ``Tensor.{name}`` for PyTorch's calls, NumPy's ``ndarray.{name}`` for NumPy's."
    return method


for _name in ("sum", "mean", "prod", "max", "min", "argmax", "argmin", "cumsum", "cumprod", "all", "any", "std", "var",
              "clip", "round", "item", "tolist", "nonzero"):
    setattr(TorchArray, _name, _shared_method(_name))


class IndexedData:
    """What ``p.data[index]`` (``indexes`` applied in turn) stands for in a trace: ``detach()`` reads the parameter's
    traced value there, an in-place method writes it there as under ``no_grad`` (``traced_method`` takes it as it
    takes the parameter of a whole ``p.data``)."""

    def __init__(self, parameter: Any, indexes: tuple[Any, ...], data: Any):
        self.parameter, self.indexes, self.data = parameter, indexes, data

    def detach(self) -> Any:
        return _indexed(self.parameter.detach(), self.indexes)

    def __getattr__(self, name: str) -> Any:
        if not name.endswith("_") or name.startswith("_"):
            raise AttributeError(name)
        return getattr(_indexed(self.parameter, self.indexes), name)


def _same_place(base: Any, other: tuple[Any, tuple[Any, ...]]) -> bool:
    """Whether ``base`` (``_indexed_base``'s) is the same parameter and indexes as ``other``."""
    try:
        return base is not None and bool(base == other)
    except ValueError:  # an index array: compared elementwise, not one place
        return False


def _indexed(tensor: Any, indexes: tuple[Any, ...]) -> Any:
    for index in indexes:
        tensor = tensor[index]
    return tensor


def _indexed_base(array: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """In a trace, ``(owner, indexes)`` for a parameter's ``.data`` (no indexes) or a view indexed from it; else None."""
    if type(array) is not TracedData or not tracing():
        return None
    indexed = array.__dict__.get("indexed")
    if indexed is not None:
        return indexed
    owner = array.__dict__.get("owner")
    return None if owner is None else (owner, ())


def traced_target(array: Any) -> Any:
    """``traced_data``, and for a view indexed from a parameter's ``.data`` in a trace its ``IndexedData``."""
    owner = traced_data(array)
    if owner is not None or type(array) is not TracedData:
        return owner
    base = _indexed_base(array)
    return None if base is None or not base[1] else IndexedData(base[0](), base[1], array)


def traced_data(array: Any) -> Any:
    """In a trace (not eagerly), the parameter whose ``.data`` ``array`` is, else None: its ``.data`` then stands for
    the parameter's traced value, not the array's values when the trace ran (a constant, stale at the next call)."""
    owner = array.__dict__.get("owner") if type(array) in _OWNED else None
    if owner is None:  # (most calls: a number or a plain array, at the cost of one type check)
        return None
    return owner() if tracing() else None


def tracing() -> bool:
    """Whether a trace (not eager execution) is running."""
    stack = trace_stack()
    return bool(stack) and not stack[-1].eager


_OWNED = (TorchArray, TracedData)


def traced_method(parameter: Any, name: str) -> Any:
    """``parameter.data.<name>`` in a trace: an in-place method writes the parameter as under ``no_grad`` (returning
    its ``.data``, as PyTorch's returns the tensor written); any other reads its value without a gradient."""
    from kiln.frontend.grad_mode import no_grad  # lazily: grad mode builds on the tensor

    method = getattr(parameter if name.endswith("_") else parameter.detach(), name)

    def traced(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = [_traced(a) for a in args], {k: _traced(v) for k, v in kwargs.items()}
        if not name.endswith("_"):
            return method(*args, **kwargs)
        with no_grad():
            method(*args, **kwargs)
        return parameter.data

    return traced if callable(method) else method


def _traced(value: Any) -> Any:
    """Another parameter's ``.data`` among the arguments (``e.data.add_(p.data, alpha=0.1)``): its traced value."""
    owner = traced_target(value)
    return value if owner is None else owner.detach()


def shared_parameter(array: np.ndarray) -> Any:
    """A non-trainable leaf tensor whose array is ``array`` itself (not a copy)."""
    from kiln.frontend.module import ArrayLeaf  # lazily: the module builds on this one

    parameter = ArrayLeaf.__new__(ArrayLeaf)
    parameter.requires_grad = False
    parameter.data = np.asarray(array)
    return parameter


def torch_array(array: Any) -> Any:
    """A NumPy ``array`` seen as a ``TorchArray`` (the same memory); anything else as it is."""
    return array.view(TorchArray) if type(array) is np.ndarray else array


def tensor_operand(value: Any) -> Any:
    """A parameter's ``.data`` or ``.grad`` (a ``TorchArray``) as the tensor PyTorch's is: its values without a gradient
    (in a ``kiln.compile``'d function, the parameter's traced value); anything else as it is. For the functions that
    read their input's dtype or shape as a tensor's before emitting ops (``F.normalize(emb.weight.data)``, word2vec's
    nearest neighbours), where a NumPy dtype has no ``is_float``."""
    return value.detach() if isinstance(value, TorchArray) else value


def plain(array: Any) -> Any:
    """A ``TorchArray`` as a plain ndarray view (the same memory), for compiled code: NumPy wraps every result of a
    subclass in the subclass, which costs microseconds an op; anything else as it is."""
    return np.ndarray.view(array, np.ndarray) if type(array) in _OWNED else array  # (not TorchArray.view's shape parsing)


__all__ = ["TorchArray", "TracedData", "plain", "shared_parameter", "tensor_operand", "torch_array", "traced_view", "tracing"]
