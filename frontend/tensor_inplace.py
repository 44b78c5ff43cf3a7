"""In-place tensor methods on a pure graph: ``x.add_(y)``, ``x.masked_fill_(m, v)``, ``x += y``, ``x[i] = v``.

A traced graph has no mutation. An in-place method computes its result out of place and rebinds the tensor to it
(the memory planner reuses the old buffer in place on its own), so PyTorch code that mutates its own intermediates
traces unchanged and gets the same values and gradients:

```
scores.masked_fill_(~mask, -inf)      ->   %scores.1 = "tensor.where"(%mask.not, -inf, %scores)
out[:, 0] = cls                       ->   %out.1 = "tensor.where"(%column0, "tensor.pad"(%cls...), %out)
```

As in PyTorch, the result keeps the tensor's shape and dtype (a float result is cast back into a float tensor; one
that would widen the shape, or write floats into an integer tensor, is an error).

What PyTorch shares between a view and its base is followed. After ``y = x[0]; y.add_(1)`` PyTorch's ``x`` has
changed too, and after ``x.add_(1)`` so has ``y``. A write to a view made by basic indexing (``x[0].zero_()``,
``x[:, 1:3].mul_(2)``) is the index assignment ``x[0] = ...``; one through a transpose, reshape, squeeze/unsqueeze,
expand or ``diagonal`` (``x.t().fill_(0)``, ``cov.diagonal().add_(eps)``) gives the base the values it puts there
(``view_writes.py``). Either way the rest of the view family goes stale, and a stale view is made again from its base
when read; ``x.data`` and ``x.detach()`` are followed views too. Aliasing kiln does not follow (a reshape whose
strides depend on a symbolic dim) leaves the others stale for good: reading one is an error that names the line of the write. A program either
computes what PyTorch computes or stops with that error; it never silently computes something else.

Parameters are the model's state, not intermediates. While gradients are on, an in-place write to a parameter that
requires grad (or a tensor marked by ``requires_grad_()``, or a view of either) is PyTorch's RuntimeError
(``inplace_leaf_checks.py``). Under ``with kiln.no_grad():``, outside a trace (initialisation code) ``fill_``,
``zero_``, ``copy_``, ``add_``, ``sub_``, ``mul_``, ``div_``, ``clamp_``, ``p[i] = v`` and writes through ``p[i]`` write
the parameter's array, as PyTorch's do; inside a trace only a ``kiln.compile``d function takes them.
A buffer written in place inside a trace (an EMA of statistics, ``self.running.mul_(0.9).add_(0.1 * m)``, or a
queue, ``self.queue[i:j] = keys``) gets the result as its new value, which the training step writes back, as
BatchNorm's running statistics are.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
import weakref
from typing import Any, Callable

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.eager_values import ARRAYS, GRAD_TENSORS, count_update, eager_leaf
from kiln.frontend.inplace_history import without_history
from kiln.frontend.inplace_leaf_checks import check_leaf_write, located, parameter_class, view_base_to_record
from kiln.frontend.lerp_dtype_checks import check_lerp_operands
from kiln.frontend.parameter_versions import record_replaced
from kiln.frontend.shared_storage import land_in_storage, view_in_storage
from kiln.frontend.tensor_methods import _is_one
from kiln.frontend.torch_dtypes import cast_array
from kiln.frontend.trace import TraceContext, located_error, user_location
from kiln.frontend.traced_data_writes import traced_data_writes
from kiln.frontend.version_counter import counted_writes
from kiln.frontend.view_writes import check_overlap, record_view, refreshed, write_through_view

VIEW_OPS = frozenset({"tensor.reshape", "tensor.transpose", "tensor.slice", "tensor.squeeze", "tensor.expand_dims", "tensor.broadcast_to"})
"""Ops whose result PyTorch makes a view of their first operand (``reshape`` and ``flatten`` may be one)."""


class ViewFamily:
    """A base tensor and the views made from it, weakly held: what a PyTorch write through one of them changes."""

    def __init__(self, of_parameter: bool = False) -> None:
        self.members: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        """By ``id``: a ``WeakSet`` would compare tensors with ``==``, which is elementwise."""
        self.of_parameter = of_parameter
        """Views of a parameter, which is not a member (a parameter outlives the trace, a stale mark would too)."""


def link_view(view: Any, base: Any, op: str | None = None, attrs: dict[str, Any] | None = None) -> None:
    """Record that ``view`` (a result of a ``VIEW_OPS`` op, ``op(base, **attrs)``) shares ``base``'s storage in PyTorch
    (not where torch's op copies: ``view_writes.record_view``). Views of a parameter share one family with no members:
    every ``Linear`` forward takes one (``weight.T``)."""
    if op is not None and not record_view(view, base, op, attrs or {}):
        return
    leaf = view_base_to_record(view, base)
    if leaf is not None:
        view._view_base = leaf  # a write through the view is checked as PyTorch's (inplace_leaf_checks.py)
    family = base.__dict__.get("_family")
    if family is None:
        if isinstance(base, parameter_class()):
            view._family = _PARAMETER_VIEWS
            return
        family = base._family = ViewFamily()
        family.members[id(base)] = base
    view._family = family
    if not family.of_parameter:
        family.members[id(view)] = view


_PARAMETER_VIEWS = ViewFamily(of_parameter=True)
"""The family of every view of a parameter (and views of those): only its ``of_parameter`` is ever read."""


def check_fresh(tensor: Any) -> None:
    """Refuse to read a tensor whose PyTorch storage was written through another member of its view family."""
    written_at = tensor.__dict__.get("_stale")
    if written_at is not None and not refreshed(tensor):  # a followed view is made again from its base
        raise located_error(
            f"this {tensor.type} shares its storage (in PyTorch) with a tensor written in place at {written_at}; "
            "kiln does not write through views like that one (a reshape whose strides depend on a symbolic dim), so its value here would differ from PyTorch's. Write out of place (y = x + 1) or into the "
            "base itself (x[i] = v) before taking views")


def rebind(tensor: Any, result: Any, method: str, written: Any = None) -> Any:
    """Make ``tensor`` hold ``result`` (PyTorch's in-place write); the rest of its view family goes stale. A buffer
    records ``result`` as its new value, which the training step writes back (a parameter refuses)."""
    from kiln.frontend.module import ArrayLeaf, Buffer

    check_leaf_write(tensor, method)
    if isinstance(tensor, ArrayLeaf):
        if not isinstance(tensor, Buffer) and not _written_in_the_graph(tensor):
            raise located_error(f"{method} on a parameter inside a traced function: a compiled step updates parameters "
                                "through its optimizer, or in place under kiln.no_grad() in a kiln.compile'd function; "
                                "compute a new tensor instead (w2 = w * 2)")
        context = TraceContext.current()
        if not isinstance(tensor, Buffer):  # still a trained leaf: backward() reaches it through the value written
            context.value_of(tensor)  # (ActNorm's data-dependent init, loc.data.copy_(-mean), before its first read)
            record_replaced(context, tensor)  # and through the value replaced (frontend/parameter_versions.py)
        context.update_buffer(tensor, kept_type(tensor, result, method).value)
        return tensor
    check_fresh(tensor)
    result = kept_type(tensor, result, method)
    _check_outside_write(tensor, method)
    marked_leaf = _marked_leaf(tensor)
    if "_indexed_from" in tensor.__dict__:
        return still_marked(write_through_index(tensor, result, method), marked_leaf)
    if "_view_of" in tensor.__dict__:
        return still_marked(write_through_view(tensor, result, method, written), marked_leaf)
    family = tensor.__dict__.get("_family")
    if family is not None and family.of_parameter:
        raise located_error(f"{method} writes through a view of a parameter or buffer: kiln does not write through views; "
                            "write the whole tensor (buffer.copy_(new)) or compute a new tensor")
    if family is not None:
        location = user_location()
        written_at = location.describe() if location is not None else "an earlier line"
        for member in list(family.members.values()):
            if member is not tensor and not untouched(member, tensor, written):
                member._stale = written_at  # made again from this tensor when read, if a followed view
    if not marked_leaf:
        result = without_history(result)  # no gradient reads the chain of old values: a leaf (inplace_history.py)
    result = kept_gradient_path(tensor, result)
    old, tensor._value = tensor.__dict__.get("_value"), result.value
    land_in_storage(tensor, old, result.value)  # an array shared with NumPy takes the values (shared_storage.py)
    if marked_leaf:
        GRAD_TENSORS[result.value] = weakref.ref(tensor)  # still the leaf whose .grad backward() fills
    return tensor


def kept_gradient_path(tensor: Any, result: Any) -> Any:
    """``result`` of a traced write under ``no_grad`` into a tensor that requires grad (a PGD attack's ``with
    torch.no_grad(): delta.clamp_(-eps, eps)`` between backwards of a compiled step) carrying ``tensor``'s gradient
    path: its values plus the identity to what ``tensor`` held (``values + (x - stop_gradient(x))``, as a write through
    ``x.data``, ``frontend/view_writes.py``; 0 where ``x`` is not finite, whose difference would be NaN: a
    ``masked_fill_(m, -inf)`` written over), as PyTorch's write outside autograd leaves the tensor's history as it
    was (a marked leaf stays the leaf ``backward()`` fills). Without it a later backward left the leaf's ``.grad`` as it
    was, silently. Eager tensors keep theirs through ``GRAD_TENSORS`` (``still_marked``)."""
    from kiln.frontend.grad_mode import enable_grad
    from kiln.frontend.tensor import apply
    from kiln.frontend.traced_requires_grad import traced_requires_grad

    context = TraceContext.current()
    if context.eager or context.grad_enabled or "_value" not in tensor.__dict__:
        return result
    if not traced_requires_grad(tensor.value) or traced_requires_grad(result.value):
        return result
    with enable_grad():
        held = apply("tensor.stop_gradient", tensor)
        path = apply("tensor.where", (held == held) & (held.abs() != math.inf), tensor - held, 0.0)
        return apply("tensor.stop_gradient", result) + path


def still_marked(view: Any, marked_leaf: bool) -> Any:
    """``view`` (a view marked by ``requires_grad_()``, just written through under ``no_grad``: ``x = x0.detach();
    x.requires_grad_()``, then ``x.clamp_(0, 1)``) as the leaf holding its new values that ``backward()`` fills, as
    PyTorch's stays; unmarked, the write's result would leave it out of every later gradient."""
    if marked_leaf and view._value in ARRAYS:
        view._value = eager_leaf(ARRAYS[view._value])._value
        GRAD_TENSORS[view._value] = weakref.ref(view)
    return view


def _check_outside_write(tensor: Any, method: str) -> None:
    """An in-place write, in a trace, of an eager tensor the function read from outside (a closure's buffer): in
    ``kiln.compile``, recorded (written back after each call: ``frontend/lifted_tensors.py``); elsewhere refused, as
    the graph cannot write it (an export, a compiled forward split for training, which then runs eagerly)."""
    context = TraceContext.current()
    if context.eager or tensor.__dict__.get("_value") not in ARRAYS:
        return
    lifting = context.lifting
    if lifting is None or not lifting.lifts:
        raise located_error(f"{method} writes a tensor {tensor.type} the traced function read from outside it (a "
                            "closure's or a global), which this graph cannot write back; write it outside the traced "
                            "function, or return the new value and assign it there")
    if tensor.requires_grad:
        raise located_error(f"{method} writes a tensor that requires grad, read from outside the compiled function; "
                            "kiln.compile writes back only tensors that need no gradient: write it under kiln.no_grad() "
                            "outside the compiled function")
    lifting.record_write(tensor)


def _written_in_the_graph(parameter: Any) -> bool:
    """Whether an in-place write of ``parameter`` is traced as its new value: in a ``kiln.compile``d function, written
    back by each call as a buffer's, under ``no_grad`` or of a parameter not trained (an EMA's ``ema_p.mul_(d)``, a
    hand-written SGD's ``p -= lr * p.grad``), as PyTorch allows it (``check_leaf_write`` refused the rest); in an ONNX
    export, read by the rest of the graph (``TraceContext.exporting``)."""
    context = TraceContext.current()
    return context.step_capture is not None or context.exporting


def _marked_leaf(tensor: Any) -> bool:
    """Whether ``tensor`` is an eager leaf marked by ``requires_grad_()``; such a leaf is written in place only under
    ``no_grad`` (``check_leaf_write``; the style-transfer tutorial's ``input_img.clamp_(0, 1)``), and stays marked."""
    value = tensor.__dict__.get("_value")
    return value is not None and value.producer is None and value in GRAD_TENSORS


def write_through_index(view: Any, result: Any, method: str) -> Any:
    """A write to ``base[index]`` (made by basic indexing) is the index assignment ``base[index] = result``: the base
    and the view both hold the new values, the base's other views go stale."""
    from kiln.frontend.tensor_setitem import assigned

    from kiln.frontend.module import ArrayLeaf

    base, index = view._indexed_from
    if isinstance(base, ArrayLeaf) and not TraceContext.active():  # eagerly, under no_grad: the parameter's array
        in_place(base, method, lambda whole: assigned(whole, index, result))
    else:
        rebind(base, assigned(base, index, result), method, written=index)
        view_in_storage(result.value, base.__dict__.get("_value"), index)  # v.numpy() shares base's NumPy array
    view._value, view._stale = result.value, None
    link_view(view, base)
    return view


def untouched(member: Any, base: Any, written: Any) -> bool:
    """Whether ``member`` is ``base[index]`` for an index that selects none of the elements ``base[written]`` did."""
    from kiln.frontend.tensor_setitem import disjoint

    indexed_from = member.__dict__.get("_indexed_from")
    return written is not None and indexed_from is not None and indexed_from[0] is base and disjoint(base, written, indexed_from[1])


def kept_type(tensor: Any, result: Any, method: str) -> Any:
    """``result`` in ``tensor``'s shape and dtype, as PyTorch's in-place ops write it."""
    if result.shape != tensor.shape:
        raise located_error(f"{method}: the result {result.type} does not fit the tensor {tensor.type} written in place; "
                            "in-place ops keep the tensor's shape (use the out-of-place form to broadcast)")
    if result.dtype is tensor.dtype:
        return result
    if result.dtype.is_float and not tensor.dtype.is_float:
        raise located(InPlaceCastError, f"{method}: result type {result.dtype} can't be cast to the desired output type "
                      f"{tensor.dtype}: a float result cannot be written into the integer tensor {tensor.type} in place; "
                      "use the out-of-place form, or cast the tensor first")
    return result.to(tensor.dtype)


class InPlaceCastError(TraceError, RuntimeError):
    """A floating result written in place into an integer tensor: a ``RuntimeError``, as PyTorch's."""


def in_place(tensor: Any, method: str, traced: Callable[[Any], Any], untraced: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
    """Apply ``traced`` (Tensor -> Tensor) in place; on a parameter outside a trace, ``untraced`` on its array."""
    from kiln.frontend.module import ArrayLeaf

    check_overlap(tensor, method)
    if isinstance(tensor, ArrayLeaf) and not TraceContext.active():
        check_leaf_write(tensor, method)
        data = tensor.data
        data[...] = untraced(data) if untraced is not None else _eager_values(tensor, traced, method)
        count_update(tensor)  # a graph that read the old values refuses backward(), as PyTorch's version counter does
        return tensor
    if not TraceContext.current().eager:
        with traced_data_writes(tensor):  # what the backward reads after a write through x.data (traced_data_writes.py)
            return rebind(tensor, traced(tensor), method)
    with counted_writes(tensor):  # the values overwritten, for backward()'s version check (version_counter.py)
        return rebind(tensor, traced(tensor), method)


def _eager_values(tensor: Any, traced: Callable[[Any], Any], method: str) -> np.ndarray:
    """``traced`` run eagerly on a parameter, without recording (an EMA's ``lerp_``): the values to write in place."""
    from kiln.frontend.grad_mode import no_grad

    with no_grad():
        return np.asarray(kept_type(tensor, traced(tensor), method).numpy())


def _alpha_first(method: str, other: Any, deprecated: tuple[Any, ...], alpha: Any) -> tuple[Any, Any]:
    """``(other, alpha)``, also from PyTorch's deprecated overload ``x.add_(alpha, other)`` that older pytorch/examples
    call (word_language_model's ``p.data.add_(-lr, p.grad.data)``), with PyTorch's warning."""
    if not deprecated:
        return other, alpha
    if len(deprecated) != 1 or not isinstance(other, numbers.Number) or not _is_one(alpha):
        raise located_error(f"{method} takes (other, *, alpha=number), or PyTorch's deprecated (alpha number, other); "
                            f"got {1 + len(deprecated)} positional arguments")
    warnings.warn(f"This overload of {method} is deprecated: {method}(Number alpha, Tensor other); use "
                  f"{method}(Tensor other, *, Number alpha) instead", UserWarning, stacklevel=3)
    return deprecated[0], other


class InPlaceMethods:
    """PyTorch's in-place methods; ``Tensor`` inherits them."""

    def add_(self, other: Any, *deprecated: Any, alpha: Any = 1) -> Any:
        other, alpha = _alpha_first("add_", other, deprecated, alpha)
        other = _float_like(self, other)
        scaled = other if _is_one(alpha) else other * alpha
        return in_place(self, "add_", lambda x: x + scaled, lambda a: a + np.asarray(scaled))

    def sub_(self, other: Any, *deprecated: Any, alpha: Any = 1) -> Any:
        other, alpha = _alpha_first("sub_", other, deprecated, alpha)
        other = _float_like(self, other)
        scaled = other if _is_one(alpha) else other * alpha
        return in_place(self, "sub_", lambda x: x - scaled, lambda a: a - np.asarray(scaled))

    def mul_(self, other: Any) -> Any:
        other = _float_like(self, other)
        return in_place(self, "mul_", lambda x: x * other, lambda a: a * np.asarray(other))

    def div_(self, other: Any) -> Any:
        other = _float_like(self, other)
        return in_place(self, "div_", lambda x: x / other, lambda a: a / np.asarray(other))

    def pow_(self, exponent: Any) -> Any:
        return in_place(self, "pow_", lambda x: x ** exponent)

    def neg_(self) -> Any:
        return in_place(self, "neg_", lambda x: -x)

    def clamp_(self, min: Any = None, max: Any = None) -> Any:  # noqa: A002
        return in_place(self, "clamp_", lambda x: x.clamp(min, max), lambda a: np.clip(a, min, max))

    clip_ = clamp_

    def clamp_min_(self, min: Any) -> Any:  # noqa: A002
        return self.clamp_(min=min)

    def clamp_max_(self, max: Any) -> Any:  # noqa: A002
        return self.clamp_(max=max)

    def fill_(self, value: Any) -> Any:
        return in_place(self, "fill_", lambda x: x.masked_fill(_true_like(x), value),
                        lambda a: np.full_like(a, cast_array(value, a.dtype)))

    def zero_(self) -> Any:
        return in_place(self, "zero_", lambda x: x.masked_fill(_true_like(x), 0), lambda a: np.zeros_like(a))

    def resize_(self, *sizes: Any, memory_format: Any = None) -> Any:
        """The tensor in a new shape, in place (``frontend/tensor_resize.py``)."""
        from kiln.frontend.tensor_resize import resized  # lazily: it builds on the tensor's functions

        return resized(self, sizes)

    def resize_as_(self, other: Any, memory_format: Any = None) -> Any:
        from kiln.frontend.tensor_resize import resized

        return resized(self, (tuple(other.shape),), "resize_as_")

    def copy_(self, source: Any) -> Any:
        """This tensor's values become ``source``'s (broadcast to its shape, cast to its dtype)."""
        return in_place(self, "copy_", lambda x: _broadcast_source(x, source), lambda a: np.broadcast_to(np.asarray(source), a.shape))

    def apply_(self, callable: Callable[[Any], Any]) -> Any:  # noqa: A002 (PyTorch's keyword)
        """Each element replaced by ``callable(element)`` on the host (``frontend/tensor_apply.py``)."""
        from kiln.frontend.tensor_apply import applied_elementwise, check_applicable  # lazily: they build on Tensor

        check_applicable(self, callable)
        return in_place(self, "apply_", lambda x: applied_elementwise(x, callable))

    def masked_fill_(self, mask: Any, value: Any) -> Any:
        return in_place(self, "masked_fill_", lambda x: x.masked_fill(mask, value))

    def lerp_(self, end: Any, weight: Any) -> Any:
        check_lerp_operands(self, end, weight)
        return in_place(self, "lerp_", lambda x: x.lerp(end, _float_like(x, weight)))

    def relu_(self) -> Any:
        return in_place(self, "relu_", lambda x: x.relu())

    def sigmoid_(self) -> Any:
        return in_place(self, "sigmoid_", lambda x: x.sigmoid())

    def tanh_(self) -> Any:
        return in_place(self, "tanh_", lambda x: x.tanh())

    def exp_(self) -> Any:
        return in_place(self, "exp_", lambda x: x.exp())

    def log_(self) -> Any:
        return in_place(self, "log_", lambda x: x.log())

    def sqrt_(self) -> Any:
        return in_place(self, "sqrt_", lambda x: x.sqrt())

    def abs_(self) -> Any:
        return in_place(self, "abs_", lambda x: x.abs())

    __iadd__, __isub__, __imul__, __itruediv__ = add_, sub_, mul_, div_

    def __setitem__(self, index: Any, value: Any) -> None:
        from kiln.frontend.index_put_dtype_checks import check_index_assignment_source
        from kiln.frontend.setitem_value_checks import check_assigned_value
        from kiln.frontend.tensor_setitem import assigned

        check_assigned_value(self, value)  # a tensor or a number: torch's TypeError for a NumPy array or a list
        check_index_assignment_source(self, index, value)  # an advanced index casts nothing, as torch's index_put_
        in_place(self, "index assignment", lambda x: assigned(x, index, value))  # a parameter's array eagerly


def _float_like(tensor: Any, other: Any) -> Any:
    """A floating tensor operand of another float dtype in the dtype PyTorch computes the op in, ``result_type(tensor,
    other)``: ``tensor``'s own for a 0-d ``other`` (rounded first, as torch's), ``other``'s for a wider one with dims,
    whose result is rounded once when written: ``f32.add_(f64)`` is ``f32(f64(x) + y)``, not ``x + f32(y)`` (snnTorch's
    ``ce_rate_loss`` sums float64 per-sample losses into ``torch.zeros(B, dtype=torch.float)`` by ``loss += ...``)."""
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.torch_dtypes import result_type

    if isinstance(other, Tensor) and other.dtype.is_float and tensor.dtype.is_float and other.dtype is not tensor.dtype:
        computed = result_type(tensor, other)
        return other if computed is other.dtype else other.to(computed)
    return other


def _true_like(x: Any) -> Any:
    """A bool scalar True, which broadcasts to ``x``."""
    from kiln.frontend.tensor import apply

    return apply("tensor.constant", value=np.asarray(True))


def _broadcast_source(x: Any, source: Any) -> Any:
    from kiln.frontend.tensor import Tensor, apply

    if not isinstance(source, Tensor):
        source = apply("tensor.constant", value=cast_array(source, x.dtype))
    source = source if source.dtype is x.dtype else source.to(x.dtype)
    return source if source.shape == x.shape else source.broadcast_to(x.shape)


def honors_inplace(function: Callable[..., Any]) -> Callable[..., Any]:
    """PyTorch's ``inplace=True`` for a functional op (``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``): the
    result is written into ``input`` (rebound, as ``relu_``), so later reads of ``input`` see it, as in PyTorch."""
    signature = inspect.signature(function)
    position = list(signature.parameters).index("inplace")
    default_off = signature.parameters["inplace"].default is False

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if default_off and len(args) <= position and not kwargs.get("inplace", False):
            return function(*args, **kwargs)  # the common call (nn.ReLU passes inplace=False): no binding, eagerly paid per op
        bound = signature.bind(*args, **kwargs)
        if not bound.arguments.get("inplace", False):
            return function(*args, **kwargs)
        bound.arguments["inplace"] = False
        input = bound.arguments["input"]
        from kiln.frontend.tensor import Tensor

        if not isinstance(input, Tensor):
            return function(*bound.args, **bound.kwargs)
        return in_place(input, f"{function.__name__}(inplace=True)", lambda _: function(*bound.args, **bound.kwargs))

    return wrapper


def in_place_variant(function: Callable[..., Any]) -> Callable[..., Any]:
    """``F.relu_`` from ``F.relu``: the same op with ``inplace=True``."""

    def variant(input: Any, *args: Any, **kwargs: Any) -> Any:
        return function(input, *args, inplace=True, **kwargs)

    variant.__name__ = variant.__qualname__ = f"{function.__name__}_"
    variant.__doc__ = f"``{function.__name__}(input, ..., inplace=True)``: the result written into ``input``, as PyTorch's."
    return variant
