"""``kiln.autograd.Function``: an op with a hand-written backward, as ``torch.autograd.Function``.

```python
class MyExp(kiln.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y

y = MyExp.apply(x)          # traced, compiled or eager: gradients of y come from backward
```

``apply`` runs ``forward`` as any traced code (its ops are the graph's, so every
backend and the ONNX export run them), traces ``backward`` at once into a
sub-graph of its own (taking the saved tensors and one gradient per output),
and ends with one ``custom.vjp`` op (``compiler/ops/custom.py``) that returns
the forward's outputs and carries that sub-graph. The autodiff pass inlines it
in place of the forward's derivative, so ``kiln.compile_train_step``,
``kiln.grad``/``kiln.vjp`` and eager ``loss.backward()`` all use it, and a
derivative of a derivative differentiates the backward's own ops (a saved
output leads back through ``backward`` again, a saved intermediate is a
constant there, as PyTorch's). A backward built from ops that have no VJP rule
gives a first derivative; differentiating it again names that op and the
backward's line. Its non-differentiable ops (comparisons, ``argmax``) pass no
gradient, as in PyTorch.

The ctx of PyTorch: ``save_for_backward``/``saved_tensors`` (tensors stored as
ctx attributes are saved too), plain attributes for non-tensor constants,
``needs_input_grad`` (``_needs_input_grad``: eagerly PyTorch's, whether each tensor argument requires grad; traced,
False only where kiln knows no gradient can reach the argument, as the tensors of
``kiln.vjp``/``kiln.jvp`` are differentiated without requiring grad), ``mark_non_differentiable``
``set_materialize_grads`` and ``mark_dirty`` (an input ``forward`` wrote in place and returns: the caller's tensor is
the output, ``frontend/custom_function_dirty.py``). ``backward`` returns one gradient per argument
of ``apply`` (``None`` for non-tensors and for tensors it does not
differentiate); a gradient of a broadcast shape is summed down to its input's,
one of another float dtype cast to it, as PyTorch's engine does. The backward
is traced once, before autodiff knows which outputs get a gradient: every
gradient it receives is a tensor (zeros for an unused output), except that with
``set_materialize_grads(False)`` an output marked non-differentiable gets
``None``. The ``forward(*args)`` + ``setup_context(ctx, inputs, output)`` form
works too. ``kiln.jvp`` (``torch.func.jvp``, forward AD) transposes the VJP, so a Function's tangent follows its
backward; ``vmap`` of its gradient is the per-example backward. A Function that defines ``jvp(ctx, *tangents)``
(reading ``ctx.save_for_forward``'s tensors as ``ctx.saved_tensors``) and no ``backward`` gets the transpose of its
``jvp`` as its backward (``_backward_from_jvp``), so forward mode gives exactly its ``jvp`` (torch's
``torch.func.jvp``), and ``backward()`` works too (PyTorch refuses it: "You must implement either the backward or vjp
method"). With both defined, kiln's tangent follows ``backward``: they differ only where the two disagree.
``@once_differentiable`` (``custom_function_once.py``) runs ``backward`` without grad and refuses its derivative.

Eagerly ``forward`` runs under ``no_grad``, as PyTorch's: its in-place writes to views of its own tensors (an LRU's
or mamba.py's parallel scan) leave nothing for ``backward()``'s version check. Complex arguments run the Function
over their real and imaginary parts (``frontend/custom_function_complex.py``).

A ``forward`` that writes an input in place without ``mark_dirty`` (pytorch_tabnet's sparsemax: ``input -=
max_val``) writes the caller's tensor, as PyTorch's shares its storage; the op's gradient still goes to the input as
it was (the caller's tensor keeps its gradient path, PyTorch's ``grad_fn``), never through the write.

``backward`` is traced, in eager mode too: its tensors are symbolic, so it
cannot branch on their values or call ``.numpy()`` (``forward`` runs eagerly
there, as any eager code). Tensors it reads that it was not given (a module's
parameter it closes over) become operands of the op. Mistakes are found when
``apply`` runs, not at the first backward as in PyTorch: a backward returning
too few gradients, one of a shape that does not sum to its input's, a gradient
for a non-tensor argument, or a forward returning a non-tensor; each message
names the Function's method and file, after the user's line that called
``apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kiln.compiler.autodiff.differentiate import unbroadcast
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import TensorType, broadcast_shapes, format_shape
from kiln.frontend.custom_function_complex import apply_over_parts, is_complex_argument
from kiln.frontend.custom_function_dirty import dirty_callers, written_into_dirty
from kiln.frontend.custom_function_inner_backward import InnerBackward
from kiln.frontend.module import Parameter
from kiln.frontend.op_dispatch import to_value
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext, located_error


class FunctionCtx:
    """What ``forward`` tells ``backward``: saved tensors, constants set as attributes, and PyTorch's flags."""

    def __init__(self, needs_input_grad: tuple[bool, ...]):
        self.needs_input_grad = needs_input_grad
        """Per argument of ``apply``: whether its gradient may be asked for (``_needs_input_grad``)."""
        self.materialize_grads = True
        self.to_save: tuple[Tensor | None, ...] = ()
        self.to_save_forward: tuple[Tensor | None, ...] = ()
        """``save_for_forward``'s tensors: ``jvp``'s ``ctx.saved_tensors``."""
        self.saved_for_jvp: tuple[Tensor | None, ...] | None = None
        self.non_differentiable: set[int] = set()
        """``id`` of the values of outputs marked non-differentiable."""
        self.saved_in_backward: tuple[Tensor | None, ...] | None = None
        self.dirty: list[Tensor] = []
        """The inputs ``forward`` wrote in place and marked (``mark_dirty``): returned, they become the op's outputs."""

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep ``tensors`` (or ``None``s) for ``backward``'s ``ctx.saved_tensors``."""
        self.to_save = _saved_tensors("save_for_backward", tensors)

    def save_for_forward(self, *tensors: Tensor | None) -> None:
        """Keep ``tensors`` for ``jvp``, which reads them as ``ctx.saved_tensors`` (PyTorch's forward-mode ctx)."""
        self.to_save_forward = _saved_tensors("save_for_forward", tensors)

    @property
    def saved_tensors(self) -> tuple[Tensor | None, ...]:
        if self.saved_in_backward is None:
            raise located_error("ctx.saved_tensors is read in backward; in forward, use the tensors themselves")
        return self.saved_in_backward

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        """These outputs get no gradient (their gradient in ``backward`` is zeros, or None without materialized grads)."""
        self.non_differentiable.update(id(t.value) for t in tensors)

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = bool(value)

    def mark_dirty(self, *tensors: Tensor) -> None:
        """These inputs were written in place by ``forward``, which returns them: the caller's tensors take the
        outputs, with this Function as their ``grad_fn`` (``frontend/custom_function_dirty.py``)."""
        self.dirty.extend(tensors)


def _saved_tensors(method: str, tensors: tuple[Any, ...]) -> tuple[Tensor | None, ...]:
    for index, tensor in enumerate(tensors):
        if tensor is not None and not isinstance(tensor, Tensor):
            raise located_error(f"{method} takes tensors (or None), got {type(tensor).__name__} at position {index}; "
                                "keep other values as attributes of ctx (ctx.scale = 2.0)")
    return tuple(None if t is None else Tensor(t.value) for t in tensors)


class Function:
    """Subclass it with static ``forward(ctx, *args)`` and ``backward(ctx, *grads)``; call ``apply(*args)``."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a kiln.autograd.Function subclass defines a static forward(ctx, *args)")

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple[Any, ...], output: Any) -> None:
        raise NotImplementedError  # only called when a subclass defines it (forward then takes no ctx)

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Any) -> Any:
        raise NotImplementedError("a kiln.autograd.Function subclass defines a static backward(ctx, *grads)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """``forward(ctx, *args)``'s outputs, whose gradients ``backward`` gives (see the module docstring)."""
        if any(is_complex_argument(a) for a in args):  # complex tensors: the Function over their parts
            return apply_over_parts(cls, args, kwargs)
        context = TraceContext.current()
        callers = args
        args = tuple(Tensor(to_value(context, a, a.dtype)) if isinstance(a, Tensor) else a for a in args)
        inputs = [a.value for a in args if isinstance(a, Tensor)]  # before forward writes any of them in place
        ctx = FunctionCtx(_needs_input_grad(context, args))
        with _forward_mode(context):  # as PyTorch's: forward's own ops record no gradient (backward gives it)
            output = _run_forward(cls, ctx, args, kwargs)
        outputs = _output_tensors(cls, output)
        dirty = dirty_callers(cls, ctx, callers, args, outputs)
        _write_back_inputs(callers, args, inputs, dirty)
        if not context.grad_enabled or not any(ctx.needs_input_grad):
            values = [context.without_gradient(t.value) for t in outputs]
        else:
            values = _emit_custom_vjp(cls, context, ctx, inputs, args, outputs)
        return _rebuilt(output, written_into_dirty(cls, outputs, values, dirty))


class _Overwritten(Function):
    """``new``'s values with the gradient of ``tensor`` passing through unchanged: a tensor ``forward`` wrote in
    place, as PyTorch's autograd sees it (the caller's tensor keeps its ``grad_fn``, its values changed)."""

    @staticmethod
    def forward(ctx: FunctionCtx, tensor: Tensor, new: Tensor) -> Tensor:
        return new.clone()

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _write_back_inputs(callers: tuple[Any, ...], args: tuple[Any, ...], inputs: list[Value], dirty: dict[int, Any]) -> None:
    """``forward``'s in-place writes to its inputs (pytorch_tabnet's sparsemax: ``input -= max_val``) written into
    the caller's tensors, as PyTorch's forward writes the caller's storage; the ``custom.vjp`` op reads the inputs as
    they were before (its gradient goes to them, not through the writes). Inputs marked dirty take the op's outputs
    instead (``written_into_dirty``)."""
    from kiln.frontend.grad_mode import no_grad
    from kiln.frontend.inplace_leaf_checks import requires_grad_leaf
    from kiln.frontend.tensor_inplace import in_place

    tensors = [(caller, arg) for caller, arg in zip(callers, args) if isinstance(arg, Tensor)]
    for (caller, arg), value in zip(tensors, inputs):
        if arg.value is value or id(arg) in dirty:
            continue
        if requires_grad_leaf(caller):  # PyTorch's forward runs without grad: a leaf's values are overwritten
            with no_grad():
                in_place(caller, "forward", lambda x, new=arg: new)
        else:
            in_place(caller, "forward", (lambda x, new=arg: _Overwritten.apply(x, new)) if arg.dtype.is_float
                     else (lambda x, new=arg: new))


def _needs_input_grad(context: TraceContext, args: tuple[Any, ...]) -> tuple[bool, ...]:
    """``ctx.needs_input_grad``: eagerly PyTorch's (each tensor argument's ``requires_grad``, under ``no_grad`` too);
    traced, True for a floating tensor unless kiln knows no gradient reaches it (a ``detach()``/``no_grad`` result, a
    constant, a frozen parameter): ``kiln.vjp``, ``kiln.jvp`` and ``vmap`` differentiate values that do not require
    grad, so a traced batch stays True (a backward skipping it would lose their gradient)."""
    return tuple(isinstance(a, Tensor) and a.dtype.is_float and _may_need_grad(context, a) for a in args)


def _may_need_grad(context: TraceContext, tensor: Tensor) -> bool:
    if context.eager:
        return bool(tensor.requires_grad)
    value = tensor.value
    if value.producer is not None and value.producer.name in ("tensor.stop_gradient", "tensor.constant"):
        return False
    parameter = context.parameter_by_value.get(value)
    return parameter is None or bool(parameter.requires_grad)


def _forward_mode(context: TraceContext) -> Any:
    """Eagerly, ``no_grad`` around ``forward``: its in-place writes (an LRU's or Mamba's parallel scan on views) then
    leave no saved values for ``backward()``'s version check, which the op's own backward never reads."""
    from contextlib import nullcontext

    from kiln.frontend.grad_mode import no_grad

    return no_grad() if context.eager else nullcontext()


def _run_forward(cls: type[Function], ctx: FunctionCtx, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if "setup_context" not in _defined_by(cls):
        return cls.forward(ctx, *args, **kwargs)
    output = cls.forward(*args, **kwargs)
    cls.setup_context(ctx, args, output)
    return output


def _defined_by(cls: type[Function]) -> set[str]:
    """The static methods a subclass (not ``Function`` itself) defines."""
    return {name for klass in cls.__mro__ if klass not in (Function, object) for name in vars(klass)}


def _output_tensors(cls: type[Function], output: Any) -> list[Tensor]:
    items = list(output) if isinstance(output, (tuple, list)) else [output]
    bad = [(i, item) for i, item in enumerate(items) if not isinstance(item, Tensor)]
    if bad or not items:
        found = f"{type(bad[0][1]).__name__} at output {bad[0][0]}" if bad else "no outputs"
        raise located_error(f"{cls.__name__}.forward ({_where(cls.forward)}) must return a Tensor or a tuple of Tensors, "
                            f"got {found}; keep other values on ctx (ctx.count = n) for backward")
    return items


def _rebuilt(output: Any, tensors: Sequence[Tensor]) -> Any:
    """The outputs in the form ``forward`` returned them (one tensor, or a tuple)."""
    return tuple(tensors) if isinstance(output, (tuple, list)) else tensors[0]


def _where(function: Any) -> str:
    code = getattr(function, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else repr(function)


@dataclass
class _Backward:
    """``backward`` traced: its graph (saved tensors, then what it closed over, then one cotangent per output) and
    the outer values it reads."""

    graph: Graph
    captured: list[Value]
    gradients: list[int]
    """The tensor input (by position among them) each graph output is the gradient of."""
    parameter_values: list[Value]
    """The outer values of the parameters whose gradients the graph's last outputs are (``backward()`` called in it)."""


def _emit_custom_vjp(cls: type[Function], context: TraceContext, ctx: FunctionCtx, inputs: list[Value],
                     args: tuple[Any, ...], outputs: list[Tensor]) -> list[Value]:
    """The ``custom.vjp`` op over the inputs (as ``forward`` got them) and its outputs; what the caller gets back for
    each output."""
    raw = [t.value for t in outputs]
    differentiable = [t.dtype.is_float and id(t.value) not in ctx.non_differentiable for t in outputs]
    saved = _saved_values(ctx)
    backward = _trace_backward(cls, context, ctx, args, saved, raw, differentiable)
    operands, indices = list(inputs) + raw, []
    for value in saved:
        indices.append(_saved_operand(context, operands, value, len(inputs), raw, differentiable))
    for value in backward.captured:
        operands.append(value)
        indices.append(len(operands) - 1)
    first_captured = len(operands) - len(backward.captured)
    to_parameters = [first_captured + next(k for k, c in enumerate(backward.captured) if c is value)
                     for value in backward.parameter_values]  # their gradients: the graph's last outputs
    results = context.emit("custom.vjp", *operands, function=cls.__name__, num_inputs=len(inputs), num_outputs=len(raw),
                           saved=tuple(indices), gradients=tuple(backward.gradients) + tuple(to_parameters),
                           backward=backward.graph)
    results = results if isinstance(results, tuple) else (results,)
    return [r if d else context.without_gradient(v) for r, v, d in zip(results, raw, differentiable)]


def _saved_values(ctx: FunctionCtx) -> list[Value]:
    """What ``backward`` may read: the tensors given to ``save_for_backward``, then tensors kept as ctx attributes."""
    saved = [t.value for t in (*ctx.to_save, *ctx.to_save_forward) if t is not None]
    return saved + [t.value for _, t in _tensor_attributes(ctx)]


def _tensor_attributes(ctx: FunctionCtx) -> list[tuple[str, Tensor]]:
    return [(name, item) for name, item in vars(ctx).items() if isinstance(item, Tensor)]


def _saved_operand(context: TraceContext, operands: list[Value], value: Value, num_inputs: int, raw: list[Value],
                   differentiable: list[bool]) -> int:
    """The operand a saved tensor is: an input, an output (the op's result stands for it), else a new residual that no
    gradient crosses (PyTorch's forward runs without grad: a saved intermediate is a constant to a second derivative)."""
    for index, operand in enumerate(operands[:num_inputs]):
        if operand is value:
            return index
    for index, (output, differentiated) in enumerate(zip(raw, differentiable)):
        if output is value and differentiated:
            return num_inputs + index
    operands.append(context.without_gradient(value))
    return len(operands) - 1


class _BackwardTrace(TraceContext):
    """Traces ``backward`` into a graph of its own; parameters and random seeds it reads belong to the outer trace."""

    def __init__(self, name: str, outer: TraceContext):
        super().__init__(name)
        self.outer = outer
        self.parameter_names = outer.parameter_names
        self.inner_backward = InnerBackward(self)  # backward() called in here (custom_function_inner_backward.py)

    def value_of(self, parameter: Parameter) -> Value:
        return self.inner_backward.read(parameter, self.outer.value_of(parameter))

    def current_value_of(self, parameter: Parameter) -> Value:
        return self.inner_backward.read(parameter, self.outer.current_value_of(parameter))

    def random_seed(self) -> tuple[Value, int]:
        return self.outer.random_seed()

    def update_buffer(self, buffer: Parameter, value: Value) -> None:
        raise located_error("a kiln.autograd.Function's backward cannot update a module buffer; do it in forward")


def _trace_backward(cls: type[Function], outer: TraceContext, ctx: FunctionCtx, args: tuple[Any, ...], saved: list[Value],
                    raw: list[Value], differentiable: list[bool]) -> _Backward:
    trace = _BackwardTrace(f"{cls.__name__}_backward", outer)
    attributes = _tensor_attributes(ctx)
    with trace:
        saved_inputs = [trace.graph.add_input(v.type, f"saved{k}") for k, v in enumerate(saved)]
        grad_inputs = [trace.graph.add_input(v.type, f"grad{k}") for k, v in enumerate(raw)]
        _hand_saved(ctx, attributes, saved_inputs)
        grads = [None if not (d or ctx.materialize_grads) else Tensor(g) for g, d in zip(grad_inputs, differentiable)]
        returned = _backward_from_jvp(cls, ctx, trace, args, grads) if _jvp_only(cls) else cls.backward(ctx, *grads)
        gradients, values = _checked_gradients(cls, trace, returned, args)
        parameter_grads, parameter_values = trace.inner_backward.outputs()
        trace.graph.outputs = values + parameter_grads
    for name, tensor in attributes:
        setattr(ctx, name, tensor)
    ctx.saved_in_backward = ctx.saved_for_jvp = None
    captured = _close_over(trace.graph, len(saved_inputs))
    return _Backward(trace.graph, captured, gradients, parameter_values)


def _hand_saved(ctx: FunctionCtx, attributes: list[tuple[str, Tensor]], inputs: list[Value]) -> None:
    """In ``backward``, ctx's saved tensors and tensor attributes are the backward graph's inputs."""
    feed = iter(inputs)
    ctx.saved_in_backward = tuple(None if t is None else Tensor(next(feed)) for t in ctx.to_save)
    ctx.saved_for_jvp = tuple(None if t is None else Tensor(next(feed)) for t in ctx.to_save_forward)
    for name, _ in attributes:
        setattr(ctx, name, Tensor(next(feed)))


def _jvp_only(cls: type[Function]) -> bool:
    """Whether ``cls`` defines ``jvp`` and no ``backward``: its backward is then its ``jvp`` transposed."""
    defined = _defined_by(cls)
    return "jvp" in defined and "backward" not in defined


def _backward_from_jvp(cls: type[Function], ctx: FunctionCtx, trace: TraceContext, args: tuple[Any, ...],
                       grads: list[Tensor | None]) -> tuple[Tensor | None, ...]:
    """``backward``'s gradients as the transpose of ``jvp``: ``jvp`` is traced on placeholder tangents (zeros, one per
    floating tensor argument; None for the others, as PyTorch passes), and its tangent outputs are differentiated with
    respect to them, seeded with ``grads``. ``jvp`` is linear in the tangents, so this is ``J^T g`` exactly, and
    ``kiln.jvp``'s transpose of it gives ``jvp`` back (its dead tangent ops are dropped by the cleanup)."""
    from kiln.compiler.autodiff.differentiate import differentiate_outputs

    tangents = [Tensor(_zeros(trace, a.value)) if isinstance(a, Tensor) and a.dtype.is_float else None for a in args]
    ctx.saved_in_backward, saved_for_backward = ctx.saved_for_jvp, ctx.saved_in_backward
    try:
        returned = cls.jvp(ctx, *tangents)
    finally:
        ctx.saved_in_backward = saved_for_backward
    outputs = list(returned) if isinstance(returned, (tuple, list)) else [returned]
    if len(outputs) != len(grads) or not all(isinstance(o, Tensor) for o in outputs):
        raise located_error(f"{cls.__name__}.jvp ({_where(cls.jvp)}) must return one tangent Tensor per output of "
                            f"forward ({len(grads)}), got {len(outputs)}")
    seeded = [(o.value, g.value) for o, g in zip(outputs, grads) if g is not None]
    wrt = [t.value for t in tangents if t is not None]
    found = iter(differentiate_outputs(trace.graph, [o for o, _ in seeded], wrt, [g for _, g in seeded]))
    return tuple(Tensor(next(found)) if t is not None else None for t in tangents)


def _zeros(trace: TraceContext, like: Value) -> Value:
    zero = trace.emit("tensor.constant", value=np.zeros((), like.type.dtype.numpy))
    return trace.emit("tensor.broadcast_to", zero, shape=like.type.shape)


def _checked_gradients(cls: type[Function], trace: TraceContext, returned: Any, args: tuple[Any, ...]) -> tuple[list[int], list[Value]]:
    """One gradient per argument of ``apply`` (extra ``None``s are allowed, as PyTorch's); returns the positions among
    the tensor inputs that get one, and the gradients, summed to their input's shape and cast to its dtype."""
    grads = list(returned) if isinstance(returned, (tuple, list)) else [returned]
    if len(grads) < len(args) or any(g is not None for g in grads[len(args) :]):
        raise located_error(f"{cls.__name__}.backward ({_where(cls.backward)}) returned {len(grads)} gradients, but apply "
                            f"was called with {len(args)} arguments; return one per argument (None where there is none)")
    positions, values, tensor_index = [], [], -1
    for index, (grad, arg) in enumerate(zip(grads, args)):
        tensor_index += isinstance(arg, Tensor)
        if grad is None or (isinstance(arg, Tensor) and not arg.dtype.is_float):
            continue
        values.append(_fitted_gradient(cls, trace, index, grad, arg))
        positions.append(tensor_index)
    return positions, values


def _fitted_gradient(cls: type[Function], trace: TraceContext, index: int, grad: Any, arg: Any) -> Value:
    where = f"{cls.__name__}.backward ({_where(cls.backward)})"
    if not isinstance(arg, Tensor):
        raise located_error(f"{where} returned a gradient at position {index}, but argument {index} of apply is "
                            f"{type(arg).__name__}, not a tensor; return None there")
    if not isinstance(grad, Tensor):
        raise located_error(f"{where} returned {type(grad).__name__} as the gradient of argument {index}; return a Tensor or None")
    value, target = grad.value, arg.type
    if not _sums_to(value.type, target):
        raise located_error(f"{where} returned a gradient of shape {format_shape(value.type.shape)} for argument {index}, "
                            f"whose shape is {format_shape(target.shape)}; return one of the input's shape")
    if value.type.dtype is not target.dtype:
        value = trace.emit("tensor.cast", value, dtype=target.dtype)
    return unbroadcast(trace.builder, value, target)


def _sums_to(grad: TensorType, target: TensorType) -> bool:
    """Whether ``grad`` is ``target`` broadcast (its sum over the broadcast axes has ``target``'s shape)."""
    try:
        return grad.rank >= target.rank and broadcast_shapes(grad.shape, target.shape) == grad.shape
    except ShapeError:  # the shapes do not broadcast at all
        return False


def _close_over(graph: Graph, after: int) -> list[Value]:
    """Make the outer values ``graph`` reads (tensors ``backward`` closes over, parameters) inputs of it, placed after
    the first ``after`` inputs; returns those outer values in that order."""
    own = {id(value) for value in graph.values()}
    inner: dict[int, Value] = {}
    captured: list[Value] = []

    def local(value: Value) -> Value:
        if id(value) in own:
            return value
        if id(value) not in inner:
            inner[id(value)] = graph.add_input(value.type, value.name_hint)
            captured.append(value)
        return inner[id(value)]

    for op in graph.ops:
        for index, operand in enumerate(op.operands):
            if id(operand) not in own:
                op.set_operand(index, local(operand))
    graph.outputs = [local(value) for value in graph.outputs]
    count = len(captured)
    if count:
        graph.inputs = graph.inputs[:after] + graph.inputs[-count:] + graph.inputs[after:-count]
        for position, value in enumerate(graph.inputs):
            value.index = position
    return captured


from kiln.frontend.custom_function_once import once_differentiable  # noqa: E402  (it builds on nothing here)

__all__ = ["Function", "FunctionCtx", "once_differentiable"]
