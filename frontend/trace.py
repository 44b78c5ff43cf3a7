"""Tracing: run the user's Python once on symbolic tensors and record a Graph.

```python
graph = kiln.trace(model, kiln.TensorSpec(("N", 784), "float32"))
print(graph)
```

A shape error while tracing names the user's file and line, the op and the
shapes involved. Parameters a traced function touches become graph inputs
(named by their ``state_dict`` key), so the same graph trains them.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from kiln.compiler.errors import BroadcastError, ShapeError, TorchShapeError, TraceError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import Dim, DType, TensorType, format_shape

if TYPE_CHECKING:
    from kiln.frontend.module import Parameter

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KILN_DIRS = tuple(os.path.join(_ROOT, name) + os.sep for name in ("compiler", "frontend", "backends", "runtime", "kiln"))


@dataclass(frozen=True)
class TensorSpec:
    """The type of a traced input: ``TensorSpec(("N", 784), "float32")``."""

    shape: tuple[Dim, ...]
    dtype: str | DType = "float32"

    @property
    def type(self) -> TensorType:
        return TensorType(tuple(self.shape), DType.of(self.dtype))


MISSING = object()
"""A module attribute that did not exist before a trace set it."""


def set_attribute(module: Any, name: str, value: Any) -> None:
    """Set a module's plain attribute, unrecorded (``MISSING``: delete it)."""
    if value is MISSING:
        module.__dict__.pop(name, None)
    else:
        object.__setattr__(module, name, value)


class TraceContext:
    """The graph being recorded and the parameters it has seen."""

    _local = threading.local()

    eager = False
    """True for the eager context (``runtime/eager.py``): its ops run as they are built."""
    exporting = False
    """True in ``export_onnx``'s trace (one inference graph, no state written back): a parameter written in place
    under ``no_grad`` (PixelCNN's ``self.weight.data *= self.mask`` before its conv) has that value in the graph
    from there on, as a buffer's write has, as ``torch.onnx.export``'s trace reads the written weight."""
    fallback: Callable[[], "TraceContext"] | None = None
    """What ``current()`` gives outside any trace: the eager context, once ``kiln.runtime`` installs it."""
    lifting: Any = None
    """In ``kiln.compile``'s traces: the eager tensors read, lifted to inputs or guarded (``frontend/lifted_tensors.py``)."""
    specializing: Any = None
    """In ``kiln.compile``'s traces: the inputs' arrays, for values the Python reads (``frontend/value_guards.py``)."""

    def __init__(self, name: str):
        self.graph = Graph(name)
        self.builder = Builder(self.graph)
        self.parameter_values: dict[int, Value] = {}
        self.parameters: list["Parameter"] = []
        self.parameter_names: dict[int, str] = {}
        """Names for parameters, from the traced module's ``named_parameters``."""
        self.parameter_by_value: dict[Value, "Parameter"] = {}
        """The parameter each parameter input stands for (``frontend/traced_requires_grad.py`` reads its flag)."""
        self.grad_leaves: set[Value] = set()
        """Traced leaves that require grad besides parameters: inputs given tensors that require grad, tensors marked
        by ``requires_grad_()`` in the trace."""
        self.requires_grad_known: dict[Value, bool] = {}
        """What ``traced_requires_grad`` found so far (cleared when a leaf is marked or unmarked)."""
        self.seed_input: Value | None = None
        """The scalar int64 seed input of the random ops (dropout), created on first use; the caller feeds it."""
        self.random_streams = 0
        """How many random draws were traced: each gets its own ``stream``."""
        self.buffer_updates: dict[int, tuple["Parameter", Value]] = {}
        """New values of module buffers, by ``id`` of the buffer (the last update wins)."""
        self.data_parallel_ranks = 1
        """Ranks the traced batch is one shard of (``DataParallel`` sets it): batch statistics (BatchNorm) reduce over all of them."""
        self.grad_enabled = True
        """False inside ``kiln.no_grad()``: every floating result traced then is a ``tensor.stop_gradient``."""
        self.checkpoint_regions = 0
        """How many ``kiln.utils.checkpoint`` regions were traced: each gets its own number (``builder.region``)."""
        self.attribute_writes: dict[tuple[int, str], tuple[Any, str, Any]] = {}
        """Each module attribute the traced Python set to a plain value (``self.nfe += 1``), with its value before the
        trace (``runtime/attribute_writes.py`` guards and replays them: the trace runs the Python once)."""
        self.modules_made: set[int] = set()
        """Modules constructed while tracing (their attribute writes are no state from before the trace)."""
        self.module_attribute_reads: dict[tuple[int, str], Any] = {}
        """The public attributes of modules the trace read from their ``__dict__`` (``self.temperature``), as
        ``(id(module), name) -> module`` (``frontend/module_attribute_reads.py``): the plain ones are guarded
        (``runtime/attribute_writes.py``, ``module_reads``)."""
        self.undo_writes: list[Callable[[], None]] = []
        """What puts back the writes the traced Python made outside modules (a global, a closure variable:
        ``runtime/namespace_reads.py``) when the trace fails (``restore_attributes``)."""
        self.step_capture: Any = None
        """In a ``kiln.compile``d training step: what its ``backward()``, ``zero_grad()`` and ``optimizer.step()`` do to
        state (``runtime/step_capture.py``'s ``StepCapture``)."""
        self.rebound_buffers: dict[tuple[int, str], tuple[Any, str, "Parameter"]] = {}
        """Module buffers the traced Python assigned a tensor (``self.mem = mem``), whose attribute reads that tensor
        until the trace ends (``rebind_buffer``)."""

    def attribute_written(self, module: Any, name: str) -> None:
        """``module.name = <plain value>`` in the trace: its value before the first such write is kept."""
        if (id(module), name) not in self.attribute_writes and id(module) not in self.modules_made:
            self.attribute_writes[(id(module), name)] = (module, name, module.__dict__.get(name, MISSING))

    def restore_attributes(self) -> None:
        """Undo the traced Python's attribute writes: a trace that failed does not stand for the call, which then
        runs eagerly and sets them itself."""
        for module, name, before in self.attribute_writes.values():
            set_attribute(module, name, before)
        for undo in reversed(self.undo_writes):
            undo()
        if self.lifting is not None:  # eager tensors it wrote in place get their values back
            self.lifting.restore_written()

    def without_gradient(self, value: Value) -> Value:
        """``value`` behind a ``tensor.stop_gradient`` if it is floating (what ``kiln.no_grad`` traces)."""
        return self.emit("tensor.stop_gradient", value) if value.type.dtype.is_float else value

    def update_buffer(self, buffer: "Parameter", value: Value) -> None:
        """Record ``value`` as ``buffer``'s new value (BatchNorm's running statistics); the training step returns and writes it."""
        self.buffer_updates[id(buffer)] = (buffer, value)

    def rebind_buffer(self, module: Any, name: str, tensor: Any) -> None:
        """``module.name = tensor`` for a registered buffer: its new value, and, until the trace ends, the attribute is
        the tensor itself, as PyTorch's buffer is the tensor assigned. A reference taken before keeps the value it had:
        snnTorch's ``Leaky`` returns ``self.mem`` at each time step (``mem_rec.append(mem)``) and assigns it anew at
        the next; reading the buffer would give every step the last value."""
        buffer = module._buffers[name]
        self.update_buffer(buffer, tensor.value)
        self.rebound_buffers[(id(module), name)] = (module, name, buffer)
        object.__setattr__(module, name, tensor)

    def _restore_rebound_buffers(self) -> None:
        """At the trace's end, each rebound buffer's update is its tensor's latest value (an in-place write after the
        assignment counts), and its attribute the buffer again, which the step's write-back updates."""
        for module, name, buffer in self.rebound_buffers.values():
            if module._buffers.get(name) is not buffer:  # registered anew or removed since: the module's business
                continue
            tensor = module.__dict__.get(name)
            if tensor is not buffer and tensor is not None:
                self.update_buffer(buffer, tensor.value)
            object.__setattr__(module, name, buffer)
        self.rebound_buffers.clear()

    def random_seed(self) -> tuple[Value, int]:
        """The graph's seed input (created on first use) and a fresh stream number for one more draw."""
        if self.seed_input is None:
            self.seed_input = self.graph.add_input(TensorType((), DType.i64), "rng_seed")
        self.random_streams += 1
        return self.seed_input, self.random_streams - 1

    @classmethod
    def current(cls) -> "TraceContext":
        stack = cls._local.__dict__.get("stack", ())  # (getattr with a default raises inside when missing: slow)
        if not stack and cls.fallback is not None:
            return cls.fallback()
        if not stack:
            raise TraceError(
                "this operation needs a symbolic tensor, but nothing is being traced; "
                "call the model inside kiln.trace(...) or a compiled step"
            )
        return stack[-1]

    @classmethod
    def active(cls) -> bool:
        return bool(cls._local.__dict__.get("stack", ()))

    def __enter__(self) -> "TraceContext":
        self._local.__dict__.setdefault("stack", []).append(self)
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._local.stack.pop()
        if self.rebound_buffers and self not in self._local.stack:
            self._restore_rebound_buffers()
        if isinstance(error, TraceError) and not getattr(error, "located", False):
            _locate(error, traceback)  # raised without the user's line (a check in a layer or function): add it

    def value_of(self, parameter: "Parameter") -> Value:
        """The graph input standing for ``parameter``, created on first use."""
        value = self.parameter_values.get(id(parameter))
        if value is None:
            name = self.parameter_names.get(id(parameter), f"param{len(self.parameters)}")
            value = self.graph.add_input(TensorType.of_array(parameter.data), name)
            self.parameter_values[id(parameter)] = value
            self.parameter_by_value[value] = parameter
            self.parameters.append(parameter)
            if self.specializing is not None and (not parameter.requires_grad or self.exporting):
                self.specializing.add_source(value, parameter.data)  # a buffer's, a frozen weight's values read: guarded
        return value

    def current_value_of(self, parameter: "Parameter") -> Value:
        """What reading ``parameter`` gives at this point of the trace: a buffer's latest recorded update, else its input.

        A second forward in one trace (a micro-batch of ``accumulate=k``, a module applied twice) so sees the running
        statistics the first one left, as PyTorch's sequential forwards do.
        """
        update = self.buffer_updates.get(id(parameter))
        return update[1] if update is not None else self.value_of(parameter)

    def emit(self, name: str, *operands: Value, **attrs: Any) -> Any:
        """Build an op stamped with the user's source line; shape errors name that line."""
        location = user_location()
        self.builder.location = location.short if location else None
        try:
            return self.builder.op(name, *operands, **attrs)
        except BroadcastError as error:  # PyTorch's sentence, which names no op, as PyTorch's does not
            shapes = " and ".join(format_shape(operand.type.shape) for operand in operands)
            raise located_error(f"{error} (the operands' shapes: {shapes})", location) from None
        except TorchShapeError as error:  # an IndexError (a dim out of range) stays one, as PyTorch's
            raise located_error(str(error), location, located_kind(error)) from None
        except (ShapeError, TypeError) as error:  # the op's name once: a shape rule's message may start with it
            message = str(error) if str(error).startswith(name) else f"{name}: {error}"
            raise located_error(message, location) from None


class LocatedIndexError(TraceError, IndexError):
    """A trace's ``IndexError`` (a dim out of range) naming the user's line: an ``IndexError``, as PyTorch's."""


def located_kind(error: Exception) -> type[TraceError]:
    """The located error class for ``error``: ``LocatedIndexError`` for an ``IndexError``, else ``TraceError``."""
    return LocatedIndexError if isinstance(error, IndexError) else TraceError


@dataclass(frozen=True)
class SourceLocation:
    filename: str
    line: int
    function: str

    @functools.cached_property
    def short(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.line} in {self.function}"

    def describe(self) -> str:
        code = linecache.getline(self.filename, self.line).strip()
        return f"{self.filename}:{self.line} in {self.function}" + (f": {code}" if code else "")


def step_capture() -> Any:
    """The ``StepCapture`` of the ``kiln.compile``d training step being traced, if one is (else None)."""
    return TraceContext.current().step_capture if TraceContext.active() else None


def is_compiling() -> bool:
    """``torch.compiler.is_compiling()``: True while ``kiln.compile`` (or ``kiln.trace``, an ONNX export) runs the
    Python to record its graph, False when it runs eagerly (model code keeps eager-only work, a codebook's k-means
    initialization, out of the compiled graph with it)."""
    return TraceContext.active() and not TraceContext.current().eager


def refuse_in_step(what: str, instead: str) -> None:
    """Raise where a training step being traced calls ``what``, which a trace cannot keep (the step then runs eagerly)."""
    if step_capture() is not None:
        raise located_error(f"{what} inside a compiled training step: tracing runs the step's Python once, so it would "
                            f"act once, not at every call; {instead}")


def user_location(skip: int = 0) -> SourceLocation | None:
    """The innermost stack frame outside kiln itself: the user's line that made this op. ``skip``: how many frames
    above the caller's are kiln's for certain (``apply``'s own), passed over without a look: each frame looked at costs
    ~0.1 µs (built as a Python object first, then asked for its file), and eager mode asks at every op."""
    frame = sys._getframe(1 + skip)
    inside_by_file = _INSIDE_BY_FILE
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename
        inside = inside_by_file.get(filename)
        if inside is None:
            inside = _code_inside_kiln(filename)
            if len(inside_by_file) < 4096:
                inside_by_file[filename] = inside
        if not inside:
            return _source_location(filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


_INSIDE_BY_FILE: dict[str, bool] = {}
"""``_code_inside_kiln`` per file name, as a plain dict: the walk asks it at every frame of every eager op, and a dict
lookup is half the cost of the cached function's call."""


def user_stacklevel() -> int:
    """``warnings.warn``'s ``stacklevel``, for a warning given by the caller of this, that names the user's line (the
    innermost frame outside kiln) however deep inside kiln the warning is given."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and _code_inside_kiln(frame.f_code.co_filename):
        level, frame = level + 1, frame.f_back
    return level


@functools.lru_cache(maxsize=4096)
def _source_location(filename: str, line: int, function: str) -> SourceLocation:
    """One shared (immutable) ``SourceLocation`` per line: an eager loop builds ops on the same few lines."""
    return SourceLocation(filename, line, function)


def located_error(message: str, location: "SourceLocation | None" = None, kind: type[TraceError] = TraceError) -> TraceError:
    """A ``TraceError`` (or its subclass ``kind``) that names the user's source line (``location``, else the innermost
    frame outside kiln)."""
    location = location or user_location()
    error = kind(f"{location.describe() if location else '<unknown>'}\n  {message}")
    error.located = True  # type: ignore[attr-defined]
    return error


def _locate(error: TraceError, traceback: Any) -> None:
    """Prefix ``error``'s message with the innermost frame of ``traceback`` outside kiln: the user's line."""
    location = None
    while traceback is not None:
        code = traceback.tb_frame.f_code
        if not _code_inside_kiln(code.co_filename):
            location = SourceLocation(code.co_filename, traceback.tb_lineno, code.co_name)
        traceback = traceback.tb_next
    if location is not None:
        error.args = (f"{location.describe()}\n  {error.args[0] if error.args else ''}",) + error.args[1:]
    error.located = True  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=4096)
def _code_inside_kiln(code_filename: str) -> bool:
    """``_inside_kiln`` of a code object's file, remembered: every traced (and eager) op walks the stack through it."""
    return _inside_kiln(os.path.abspath(code_filename))


def called_from_user(depth: int = 2) -> bool:
    """Whether the frame ``depth`` up from here (1: this function's caller) runs code outside kiln: an operator or
    a read that answers the user's code as PyTorch does and kiln's own code as kiln needs."""
    return not _inside_kiln(sys._getframe(depth).f_code.co_filename)


def _inside_kiln(filename: str) -> bool:
    """Kiln's own files: its four packages and the facade (installed, the facade folder holds them all)."""
    facade = os.path.dirname(os.path.abspath(sys.modules["kiln"].__file__ or "")) + os.sep
    return filename.startswith(_KILN_DIRS + (facade,))


def trace(fn: Callable[..., Any], *specs: TensorSpec, name: str | None = None) -> Any:
    """Trace ``fn`` (a function or a Module) on symbolic inputs of the given specs; returns the Graph. Given a tensor
    instead (``kiln.trace(A)``), PyTorch's ``torch.trace``: the sum of a matrix's diagonal, as ``A.trace()``."""
    if _is_matrix(fn):
        if specs or name is not None:
            raise located_error("kiln.trace(input) is torch.trace, the sum of a matrix's diagonal: it takes one tensor")
        from kiln.frontend.torch_array import tensor_operand  # lazily: the tensor builds on this module

        return tensor_operand(fn).trace()
    return trace_context(fn, *specs, name=name).graph


def _is_matrix(value: Any) -> bool:
    """A kiln tensor or a parameter's array: ``torch.trace``'s input, not a function to trace."""
    from kiln.frontend.torch_dtypes import is_tensor  # lazily: the tensor builds on this module

    return is_tensor(value)


def trace_context(fn: Callable[..., Any], *specs: TensorSpec, name: str | None = None, what: str = "the traced function's result",
                  wants_grad: Any = (), exporting: bool = False) -> TraceContext:
    """Trace ``fn`` and return the finished context: the graph, the parameters it read (the graph inputs after
    the specs, in ``context.parameters`` order), buffer updates and the seed input, for callers that feed them.
    ``wants_grad[k]``: whether input ``k`` stands for a tensor that requires grad (its traced ``requires_grad``);
    ``exporting``: an ONNX export's trace (``TraceContext.exporting``)."""
    from kiln.frontend.module_attribute_reads import recording_module_reads
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.traced_builtins import traced_builtin_extremes

    graph_name = name or getattr(fn, "__name__", None) or type(fn).__name__
    context = TraceContext(graph_name)
    context.exporting = exporting
    if exporting:  # the file holds the weights as they are now: a value read from them is theirs (value_guards.py)
        from kiln.frontend.value_guards import SpecializedValues  # lazily: the guards build on the trace

        context.specializing = SpecializedValues({})
    try:
        with context:
            _name_parameters(context, fn)
            inputs = [Tensor(context.graph.add_input(spec.type, input_name)) for spec, input_name in zip(specs, input_names(fn, len(specs)))]
            context.grad_leaves.update(t.value for t, wanted in zip(inputs, wants_grad) if wanted and t.dtype.is_float)
            with recording_module_reads(), traced_builtin_extremes():
                result = fn(*inputs)
            context.graph.outputs = [as_value(item, what) for item in flatten_outputs(result)
                                     if not (exporting and item is None)]  # dropped, as torch.onnx.export does
    except BaseException:
        context.restore_attributes()
        raise
    return context


def _name_parameters(context: TraceContext, fn: Any) -> None:
    module = getattr(fn, "__self__", fn)
    named = getattr(module, "named_parameters", None)
    if callable(named):
        context.parameter_names.update({id(p): name for name, p in named()})


def input_names(fn: Any, count: int) -> list[str]:
    """Graph input names from the function's (or ``forward``'s) parameter names, or its ``input_names``."""
    declared = getattr(fn, "input_names", None)
    if isinstance(declared, (list, tuple)):
        return list(declared[:count]) + [f"input{i}" for i in range(len(declared), count)]
    target = getattr(fn, "forward", fn)
    try:
        parameters = [p.name for p in inspect.signature(target).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        parameters = []
    names = parameters[:count]
    return names + [f"input{i}" for i in range(len(names), count)]


def flatten_outputs(result: Any) -> Iterator[Any]:
    """The leaves of nested tuples, lists and dicts (values in key order), as ``runtime/pytree.py`` orders them."""
    if isinstance(result, (tuple, list)):
        for item in result:
            yield from flatten_outputs(item)
    elif isinstance(result, dict):
        for item in result.values():
            yield from flatten_outputs(item)
    else:
        yield result


def as_value(item: Any, what: str) -> Value:
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.tensor_inplace import check_fresh

    if not isinstance(item, Tensor):
        raise TraceError(f"{what} must be a kiln Tensor (or a tuple of them), got {type(item).__name__}")
    check_fresh(item)
    return item.value


__all__ = ["SourceLocation", "TensorSpec", "TraceContext", "refuse_in_step", "step_capture", "trace", "trace_context", "user_location",
           "user_stacklevel"]
