"""``Module`` and ``Parameter``: PyTorch's model-building API over traced tensors.

A ``Parameter`` holds its concrete value as a NumPy array (``.data``); while
tracing it stands for a graph input. ``state_dict()`` keys and shapes equal
those of the same PyTorch model, so weights move both ways as arrays.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType, is_float_array_dtype
from kiln.frontend.eager_values import ARRAYS, count_update
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.inplace_leaf_checks import check_leaf_write
from kiln.frontend.registered_assignment import check_registered_assignment
from kiln.frontend.module_registry import CHANGES, Registry
from kiln.frontend.module_paths import ModulePaths
from kiln.frontend.module_hooks import HOOK_KINDS, HookMethods, RemovableHandle, any_global_hooks, call_with_hooks, held_hook
from kiln.frontend.layer_device import accept_device_keyword
from kiln.frontend.shared_storage import is_shared
from kiln.frontend.grad_assignment_checks import check_assigned_grad
from kiln.frontend.state_dict_loading import (IncompatibleKeys, by_torch_protocol, load_module_by_module, overridden,
                                              without_compile_prefix)
from kiln.frontend.state_dict_hooks import StateDictHookMethods, has_hooks, hooked_state_dict
from kiln.frontend.dynamic_ints import DynamicInt
from kiln.frontend.tensor import Tensor, eager_tensor
from kiln.frontend.torch_dtypes import get_default_dtype
from kiln.frontend.torch_printoptions import printed
from kiln.frontend.tensor_eager import array_protocol
from kiln.frontend.torch_array import TorchArray, torch_array, traced_view, tracing
from kiln.frontend.trace import TraceContext, step_capture
from kiln.frontend.torch_size import Size


class ArrayLeaf(Tensor):
    """A leaf tensor holding its own array: a module's parameters and buffers, a tensor made with
    ``requires_grad=True``, a parameter's ``detach()``; during tracing, the graph input that stands for it. Only
    ``Parameter`` (trainable, registered by a module) is an ``nn.Parameter`` to the user, as PyTorch's:
    ``isinstance(bn.running_mean, nn.Parameter)`` is False."""

    @property
    def grad(self) -> Any:
        """The gradient an eager ``loss.backward()`` accumulated (``runtime/eager_backward.py``); None until then, and
        after ``zero_grad()``. ``compile_train_step`` computes its gradients inside the step and leaves this alone; a
        ``kiln.compile``d step writes it as PyTorch's step would (``runtime/step_capture.py``), and reads it as a traced
        tensor, so that the step's in-place writes to it are traced."""
        capture = step_capture()
        if capture is not None:
            return capture.traced_grad(self)
        return self.__dict__.get("grad")

    @grad.setter
    def grad(self, value: Any) -> None:
        capture = step_capture()
        if capture is not None:  # p.grad = None in a kiln.compile'd step: the step's own .grad from here on
            capture.assign_grad(self, value)
            return
        check_assigned_grad(self, value)  # torch's refusal of another shape or dtype (frontend/grad_assignment_checks.py)
        self.__dict__["grad"] = value

    requires_grad: bool = True
    """Whether ``backward()`` and the training step give this parameter a gradient (an instance attribute)."""

    def __new__(cls, data: Any = None, requires_grad: bool = True) -> "ArrayLeaf":
        dtype = getattr(data, "dtype", None)  # a complex tensor's or NumPy array's: nn.Parameter(rand(..., dtype=cfloat))
        complex_data = getattr(dtype, "is_complex", False) is True or getattr(dtype, "kind", None) == "c"
        if cls in (Parameter, Buffer) and complex_data:
            from kiln.frontend.complex_parameter import ComplexBuffer, ComplexParameter  # lazily: they build on these

            cls = ComplexParameter if cls is Parameter else ComplexBuffer
        return super().__new__(cls)

    def __init__(self, data: Any, requires_grad: bool = True):
        array = _storage_shared_with_numpy(data)
        if array is None:
            array = np.asarray(data)
            array = np.array(array, dtype=array.dtype if is_float_array_dtype(array.dtype) else np.float32)
        self.data = array
        self.requires_grad = requires_grad

    @property
    def data(self) -> np.ndarray:
        """The value as a NumPy array (a ``TorchArray``: it also answers PyTorch's tensor methods, ``p.data.add_``).
        A training step that keeps parameters on a device (onnxruntime, CuPy) brings the value back first; reading
        it also tells the step to upload it again before its next call, so writes through ``.data`` are never lost."""
        pending = self.__dict__.get("_pending_sync")
        if pending is not None:
            self._pending_sync = None
            pending()
        self.version = self.__dict__.get("version", 0) + 1
        data = self._data
        if type(data) is TorchArray and tracing():  # NumPy's ufuncs on it are traced (frontend/torch_array.py)
            return traced_view(data, weakref.ref(self))
        return data

    @data.setter
    def data(self, array: np.ndarray) -> None:
        self._pending_sync = None
        if isinstance(array, Tensor) and TraceContext.active() and not TraceContext.current().eager:
            self.data.copy_(array)  # p.data = p.data.clamp(...) in a kiln.compile'd step: a traced write, as p.data.copy_
            return
        if isinstance(array, Tensor):  # p.data = kiln.randn(...): its values (a copy; PyTorch would share the storage)
            array = np.array(array.numpy())
        old = self.__dict__.get("_data")
        self._data = torch_array(array)  # p.data.add_(...), p.data.normal_(...) as in PyTorch (frontend/torch_array.py)
        if old is not None and (old.shape != self._data.shape or old.dtype != self._data.dtype):
            CHANGES[0] += 1  # a compiled variant traced with the old shape checks it again (runtime/module_structure.py)
        if type(self._data) is TorchArray:  # traced, p.data stands for p's traced value (torch_array.traced_data)
            self._data.owner = weakref.ref(self)
        self.version = self.__dict__.get("version", 0) + 1

    @property
    def value(self) -> Value:
        return TraceContext.current().current_value_of(self)

    def requires_grad_(self, requires_grad: bool = True) -> "ArrayLeaf":
        """Freeze (False) or unfreeze this parameter, as PyTorch's: the next compiled step or ``backward()`` sees it."""
        self.requires_grad = bool(requires_grad)
        return self

    def register_hook(self, hook: Callable[[Any], Any]) -> "RemovableHandle":
        """``hook(grad)`` on this parameter's whole gradient at each ``backward()``, before it is accumulated into
        ``.grad`` (a tensor it returns replaces the gradient), as PyTorch's; a ``kiln.compile``d step's traced backward
        calls it too (``frontend/traced_hooks.py``)."""
        return held_hook(self.__dict__.setdefault("_grad_hooks", Registry()), hook)  # a change retraces a compiled step

    def register_post_accumulate_grad_hook(self, hook: Callable[["ArrayLeaf"], None]) -> "RemovableHandle":
        """``hook(parameter)`` after each eager ``backward()`` has accumulated into ``.grad`` (PyTorch's; e.g. an
        optimizer step per parameter, as torch's "optimizer in backward" recipe). A ``kiln.compile``d step's backward
        calls it too, tracing its ops into the step; ``compile_train_step`` refuses it."""
        return held_hook(self.__dict__.setdefault("_post_accumulate_grad_hooks", Registry()), hook)  # a change retraces

    @property
    def shape(self) -> Size:
        """``torch.Size`` of the values, as PyTorch's (it prints ``kiln.Size([2, 1])``)."""
        return Size(self._data.shape)

    @property
    def dtype(self) -> DType:
        """The value's dtype, traced or not (``next(model.parameters()).dtype``)."""
        return DType.of(self._data.dtype)

    def detach(self) -> Any:
        """Traced, the value with no gradient (``Tensor.detach``); otherwise a non-trainable ``Parameter`` sharing this
        one's array, as PyTorch's ``detach`` shares storage (``p.detach().numpy()``)."""
        if TraceContext.active():
            return super().detach()
        detached = ArrayLeaf.__new__(ArrayLeaf)
        detached._data, detached.requires_grad = self.data, False
        detached.__dict__["_detached"] = True  # a plain tensor to modules (not registered), as PyTorch's
        return detached

    def numpy(self) -> np.ndarray:
        """Its array as a plain ndarray sharing the memory, as PyTorch's ``.numpy()``: NumPy's methods throughout
        (``p.detach().numpy().std()`` is NumPy's population std, ``.max()`` a NumPy scalar), where ``p.data`` (a
        ``TorchArray``) answers PyTorch's."""
        return np.ndarray.view(self.data, np.ndarray)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(parameter)`` outside a trace: its array (``np.array(p.detach())``, as PyTorch's); traced, the
        refusal of a traced tensor's (its value exists only when the step runs)."""
        if TraceContext.active():
            return super().__array__(dtype, copy)
        return array_protocol(self.data, dtype, copy)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (``kiln.save(model, f)``) with its values brought back from a device first, and without the device
        step's pending callback."""
        state = dict(self.__dict__, _data=self.data)
        state.pop("_pending_sync", None)
        return state

    def copy_(self, array: Any) -> "ArrayLeaf":
        """Overwrite the value in place from an array broadcast to its shape and cast to its dtype, as PyTorch's. Traced,
        a buffer's new value is ``array`` (``self.running.copy_(new)``, which the training step writes back); a
        parameter refuses."""
        if TraceContext.active():
            return super().copy_(array)
        check_leaf_write(self, "copy_")  # PyTorch's refusal while gradients are on (frontend/inplace_leaf_checks.py)
        array = np.asarray(array)
        if not _broadcasts_to(array.shape, self.data.shape):
            raise KilnError(f"cannot copy an array of shape {array.shape} into a parameter of shape {self.data.shape}: "
                            "copy_ broadcasts the source to the parameter's shape, as PyTorch's")
        np.copyto(self.data, array, casting="unsafe")  # any dtype, as PyTorch's (float into int64 truncates)
        count_update(self)  # a graph that read the old values refuses backward(), as after mul_ (PyTorch's version counter)
        return self

    def __repr__(self) -> str:
        """A plain tensor's (a ``detach()``, a buffer, a ``requires_grad=True`` leaf)."""
        return _values_repr(self)


class Parameter(ArrayLeaf):
    """``nn.Parameter``: a trainable array a module registers (``parameters()``, ``state_dict``)."""

    def __repr__(self) -> str:
        """torch's: ``Parameter containing:`` over the values (``print(model.fc.weight)``)."""
        return "Parameter containing:\n" + _values_repr(self)


def _values_repr(tensor: Any) -> str:
    """A parameter's or buffer's values as a tensor prints them, ``requires_grad=True`` where it has it."""
    return printed(np.asarray(tensor.data), tensor.requires_grad)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def clear_grads(parameters: Any, set_to_none: bool) -> None:
    """``zero_grad``: each parameter's ``.grad`` to None, or to zeros (``set_to_none=False``) where it has one (a
    ``.grad`` with a chain is detached first, as PyTorch's). Traced in a ``kiln.compile``d step: its traced ``.grad``s."""
    capture = step_capture()
    if capture is not None:
        capture.clear(list(parameters), set_to_none)
        return
    for parameter in parameters:
        if set_to_none or parameter.grad is None:
            parameter.grad = None
        elif getattr(parameter.grad, "is_sparse", False):  # a sparse .grad empties (nnz 0), as PyTorch's
            parameter.grad.zero_()
        else:
            grad_array(parameter)[...] = 0


def grad_array(parameter: Any) -> np.ndarray:
    """``parameter.grad`` as the array an in-place write (clipping, unscaling, zeroing) changes. A ``.grad`` that is a
    tensor with a chain (``backward(create_graph=True)``) becomes its values first: PyTorch writes it under no_grad."""
    if getattr(parameter.grad, "is_sparse", False):
        raise NotImplementedError(
            "a sparse .grad (embedding(sparse=True)) cannot be read or written as a dense array here (clip_grad_norm_, "
            "clip_grad_value_): PyTorch 2.13 refuses these too (no SparseCPU kernel for linalg_vector_norm, "
            "clamp_min_); scale it yourself (p.grad = p.grad.coalesce() * factor), or use sparse=False")
    if not isinstance(parameter.grad, np.ndarray):
        parameter.grad = torch_array(np.array(parameter.grad))
    return parameter.grad


def _assign_plain_tensor(module: "Module", name: str, buffer: "Buffer") -> None:
    """A buffer read from a module (``cutoff_fn.cutoff``, its copy by ``deepcopy``) set as another name: a plain
    attribute holding the same tensor, as PyTorch's (whose buffers are plain tensors there; only a new ``nn.Buffer``
    registers), so ``state_dict`` does not gain the name (schnetpack's ``self.cutoff = cutoff_fn.cutoff``)."""
    for registry in (module._parameters, module._modules):
        registry.pop(name, None)
    object.__setattr__(module, name, buffer)


def _registered(value: Any) -> bool:
    """Whether assigning ``value`` to a module's attribute registers it as a parameter: an ``nn.Parameter``, not a
    tensor made with ``requires_grad=True`` (``GradLeaf``) nor a parameter's ``detach()`` (``self.ref =
    lin.weight.detach()`` is a plain attribute, not in ``parameters()`` or ``state_dict``), as PyTorch's."""
    return isinstance(value, ArrayLeaf) and not isinstance(value, GradLeaf) and "_detached" not in value.__dict__


class AssignedBeforeInitError(KilnError, AttributeError):
    """A parameter, buffer or submodule assigned before ``super().__init__()``: PyTorch's AttributeError."""


def _assign_before_init(module: Any, name: str, value: Any) -> None:
    """``self.dim = dim`` before ``super().__init__()`` (pytorch_tabnet's ``Sparsemax``): a plain attribute, as
    PyTorch's; a parameter, buffer or submodule has no registry yet and is refused in PyTorch's words."""
    kind = "buffer" if isinstance(value, Buffer) else "parameters" if _registered(value) \
        else "module" if isinstance(value, Module) else None
    if kind is not None:
        raise AssignedBeforeInitError(f"cannot assign {kind} before Module.__init__() call ({type(module).__name__}.{name}); "
                             "call super().__init__() first in __init__")
    object.__setattr__(module, name, value)


def _names_a_method(module: Any, name: str) -> bool:
    """Whether ``name`` is a method of the module's class (``parameters``, ``modules``): a submodule, parameter or
    buffer registered under it is kept in its registry only, so ``module.parameters()`` still calls the method, as
    PyTorch's (which keeps every registered entry out of ``__dict__``). N-BEATS (philipperemy/n-beats) writes
    ``self.parameters = []`` then ``self.parameters = nn.ParameterList(self.parameters)``."""
    return inspect.isfunction(inspect.getattr_static(type(module), name, None))


def _kept_after_the_trace(tensor: Tensor) -> Tensor:
    """A traced tensor a module keeps (``self.src_mask = mask`` in ``forward``): an eager one with its values when it
    is computed from constants alone, so code after the trace can still use it, as PyTorch's cached tensor. A
    ``kiln.compile`` trace (one lifting eager tensors) keeps the traced tensor: each call sets the attribute to its
    value (``runtime/attribute_writes.py``), and the trace goes on reading the constant, not an eager tensor lifted to
    an input that a write in place (Tacotron 2's ``self.attention_weights_cum += ...`` after ``zero_()``) would
    carry over to the next call."""
    from kiln.runtime.eager import constant_leaf  # lazily: the runtime builds on the frontend

    if TraceContext.current().lifting is not None:
        return tensor
    leaf = constant_leaf(tensor.value)
    return tensor if leaf is None else Tensor(leaf)


def _assign_buffer(module: "Module", name: str, value: Tensor) -> None:
    """A tensor assigned to a registered buffer's name stays that buffer (in ``state_dict``, ``named_buffers``): traced,
    its new value is recorded for the step to write back (as BatchNorm's running statistics) and the attribute reads
    the tensor until the trace ends (``TraceContext.rebind_buffer``); eagerly, the name is bound to a new buffer holding
    the tensor's values (PyTorch rebinds it too, so an older reference keeps the old values), of the tensor's shape and
    dtype. PyTorch's buffer is the tensor itself, gradient history included: so, eagerly, reading the attribute gives
    the tensor where it requires grad (snnTorch's ``Leaky`` keeps its membrane potential in a ``mem`` buffer, ``self.mem
    = self.state_function(input_)``, and backpropagates through time through it), while the registry holds its values
    (``state_dict`` detaches, as PyTorch's)."""
    context = TraceContext.current()
    if not context.eager:
        context.rebind_buffer(module, name, value)
        return
    buffer = Buffer(np.array(value.detach().numpy()))
    module._buffers[name] = buffer  # a replaced entry keeps its place in the order, as PyTorch's
    object.__setattr__(module, name, value if value.requires_grad else buffer)


class GradLeaf(ArrayLeaf):
    """A tensor made with ``requires_grad=True`` (``kiln.zeros(1, requires_grad=True)``, ``kiln.tensor(x,
    requires_grad=True)``): trained as a parameter is (``.grad``, optimizers, a compiled step differentiate it), but a
    plain tensor to a module, as PyTorch's: assigned to a module's attribute it is not registered, so
    ``named_parameters()``, ``parameters()`` and ``state_dict()`` leave it out (SAC's ``self.log_alpha`` with its own
    optimizer); wrap it in ``nn.Parameter`` to register it."""


class Buffer(ArrayLeaf):
    """A non-trainable array a module keeps (BatchNorm's running statistics), saved in ``state_dict``.

    While tracing it is a graph input like a frozen parameter; a layer in training mode may give it a new
    value (``TraceContext.update_buffer``), which the training step returns and writes back.
    """

    def __new__(cls, data: Any = None, *, persistent: bool = True) -> "Buffer":
        return ArrayLeaf.__new__(cls, data)

    def __init__(self, data: Any, *, persistent: bool = True):
        """``nn.Buffer(t, persistent=False)`` assigned to a module's attribute registers a buffer left out of
        ``state_dict``, as ``register_buffer(name, t, persistent=False)``."""
        from kiln.frontend.sparse_legacy import marked_sparse, sparse_marked  # lazily: it builds on the tensor

        shared = _eager_storage(data)
        self.data = np.array(data) if shared is None else shared  # keeps its dtype: counters stay int64
        self.requires_grad = False
        if not persistent:
            self.__dict__["_not_persistent"] = True
        if sparse_marked(data):  # a to_sparse() tensor still answers indices() (whisper's alignment_heads buffer)
            marked_sparse(self)


def _storage_shared_with_numpy(data: Any) -> np.ndarray | None:
    """The floating array of ``data`` (an eager tensor or an array) if NumPy shares it with the user
    (``from_numpy(a)``, ``t.numpy()``), else None: PyTorch's ``Parameter(t)`` and ``t.requires_grad_()`` keep ``t``'s
    storage, so an optimizer's update is seen in ``a`` (``frontend/shared_storage.py``)."""
    array = data if isinstance(data, np.ndarray) else _eager_storage(data)
    keep = array is not None and is_float_array_dtype(array.dtype) and array.flags.writeable and is_shared(array)
    return array if keep else None


def _eager_storage(data: Any) -> np.ndarray | None:
    """An eager tensor's own (writeable) array, else None. PyTorch's ``register_buffer(name, t)`` keeps ``t`` itself,
    so a write into the buffer (``load_state_dict``) shows in ``t`` and in views of it, e.g. pytorch-ntm's
    ``register_buffer("read0_bias", init_r_bias.data)`` next to ``self.init_r += [init_r_bias]``."""
    if not isinstance(data, Tensor) or isinstance(data, ArrayLeaf) or "_stale" in data.__dict__:
        return None  # a stale view: np.array(data) refuses it, naming the write (tensor_inplace.check_fresh)
    array = ARRAYS.get(data.__dict__.get("_value"))
    return array if isinstance(array, np.ndarray) and array.flags.writeable else None


class Module(HookMethods, ModulePaths, StateDictHookMethods):
    """Base class of models and layers: subclass, assign layers and Parameters in ``__init__``, write ``forward``;
    forward hooks as PyTorch's (``frontend/module_hooks.py``)."""

    _version: int = 1
    """torch's state-dict format version of the module (``local_metadata["version"]`` in ``_load_from_state_dict``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each kiln layer takes PyTorch's ``device=`` keyword (frontend/layer_device.py)."""
        super().__init_subclass__(**kwargs)
        accept_device_keyword(cls)

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", Registry())  # changes counted: frontend/module_registry.py
        object.__setattr__(self, "_modules", Registry())
        object.__setattr__(self, "_buffers", Registry())
        object.__setattr__(self, "training", True)
        if TraceContext.active():  # made by the traced code: its attributes are no state the trace must guard
            TraceContext.current().modules_made.add(id(self))

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            return _assign_before_init(self, name, value)
        check_registered_assignment(self, name, value, _registered(value))  # torch's TypeError for the wrong kind
        if name in self._buffers and isinstance(value, Tensor) and not _registered(value):
            return _assign_buffer(self, name, value)  # self.running = tensor: the buffer's new value, as PyTorch's
        if isinstance(value, Buffer) and name not in self._buffers and value.__dict__.get("_held_by_a_module"):
            return _assign_plain_tensor(self, name, value)  # self.cutoff = cutoff_fn.cutoff: not registered again
        registry = self._buffers if isinstance(value, Buffer) else self._parameters if _registered(value) \
            else self._modules if isinstance(value, Module) else None
        if registry is self._buffers:
            value.__dict__["_held_by_a_module"] = True
            if value.__dict__.pop("_not_persistent", False):  # nn.Buffer(t, persistent=False)
                self.__dict__.setdefault("_non_persistent_buffers_set", set()).add(name)
        for other in (self._parameters, self._modules, self._buffers):
            if other is not registry:
                other.pop(name, None)
        if registry is not None:
            registry[name] = value  # a replaced entry keeps its place in the order, as PyTorch's
            if _names_a_method(self, name):
                return self.__dict__.pop(name, None)  # self.parameters = nn.ParameterList(...): the method stays
        elif type(value) in (Tensor, DynamicInt) and TraceContext.active():  # DynamicInt: a counter's new value
            value = _kept_after_the_trace(value)
            if "_value" in value.__dict__ and value.value not in ARRAYS:  # a kiln.compile call sets it to each
                TraceContext.current().attribute_written(self, name)  # call's value (runtime/attribute_writes.py)
        elif TraceContext.active() and name != "training" and not isinstance(value, Tensor):
            TraceContext.current().attribute_written(self, name)  # self.nfe += 1: once per trace, guarded per call
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        registered = [registry.pop(name, None) for registry in (self._parameters, self._modules, self._buffers)]
        if name in self.__dict__ or not any(entry is not None for entry in registered):
            object.__delattr__(self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        compiled = self.__dict__.get("_compiled_call")
        if compiled is not None and not compiled.running:  # Module.compile: the call goes through kiln.compile
            return compiled(*args, **kwargs)
        if not TraceContext.active():  # eagerly, a NumPy batch is a tensor to forward: x.view(-1, 784), x.flatten(3)
            if any([isinstance(a, np.ndarray) for a in args]):
                args = tuple([eager_tensor(np.asarray(a)) if isinstance(a, np.ndarray) else a for a in args])
        else:
            if step_capture() is not None:  # kiln.compile guards on the mode of each module called
                step_capture().called(self)
        if not self.__dict__.keys().isdisjoint(HOOK_KINDS) or any_global_hooks():
            return call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``torch.nn.Module.compile``: from now on, calling this module runs ``kiln.compile(self, *args, **kwargs)``
        (in place: ``model.compile()`` instead of ``model = kiln.compile(model)``). A copy or pickle of the module is
        not compiled."""
        from kiln.runtime.compiled_function import compile

        self.__dict__["_compiled_call"] = compile(self, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled and copied without ``compile()``'s compiled call (its generated code does not pickle)."""
        state = dict(self.__dict__)
        state.pop("_compiled_call", None)
        return state

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """PyTorch's: ``prefix`` joined by a dot; ``recurse=False`` this module's own; a tied one named once."""
        items = self._named_parameters_all(_dotted(prefix)) if recurse else (
            (_dotted(prefix) + name, p) for name, p in self._parameters.items())
        return _first_of_each(items, remove_duplicate)

    def _named_parameters_all(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, parameter in self._parameters.items():
            yield prefix + name, parameter
        for name, module in self._modules.items():
            yield from module._named_parameters_all(f"{prefix}{name}.")

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, parameter in self.named_parameters(recurse=recurse):
            yield parameter

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """PyTorch's: each module once (``memo``), unless ``remove_duplicate=False``; names joined by dots."""
        for name, module in _first_of_each(self._named_modules_all(_dotted(prefix)), remove_duplicate, memo):
            yield name.rstrip("."), module

    def _named_modules_all(self, prefix: str) -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module._named_modules_all(f"{prefix}{name}.")

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Buffer]]:
        items = self._named_buffers_all(_dotted(prefix)) if recurse else (
            (_dotted(prefix) + name, b) for name, b in self._buffers.items())
        return _first_of_each(items, remove_duplicate)

    def _named_buffers_all(self, prefix: str) -> Iterator[tuple[str, Buffer]]:
        for name, buffer in self._buffers.items():
            yield prefix + name, buffer
        for name, module in self._modules.items():
            yield from module._named_buffers_all(f"{prefix}{name}.")

    def register_buffer(self, name: str, array: Any, persistent: bool = True) -> None:
        """Keep ``array`` as a non-trainable ``Buffer`` named ``name`` (PyTorch's ``register_buffer``); a
        ``persistent=False`` one (a causal mask, a positional table) is left out of ``state_dict``, as PyTorch's.
        ``None`` sets the attribute to None and holds no buffer."""
        non_persistent = self.__dict__.setdefault("_non_persistent_buffers_set", set())
        (non_persistent.discard if persistent else non_persistent.add)(name)
        if isinstance(array, Buffer) and "_parameters" in self.__dict__:  # another module's buffer: the same tensor,
            self._buffers.setdefault(name, array)  # as PyTorch's (its in-place updates show here), registered here too
        setattr(self, name, None if array is None else array if isinstance(array, Buffer) else Buffer(array))

    def register_parameter(self, name: str, parameter: "Parameter | None") -> None:
        """Register ``parameter`` as ``name`` (PyTorch's ``register_parameter``)."""
        if parameter is not None and not isinstance(parameter, ArrayLeaf):
            raise KilnError(f"register_parameter({name!r}) takes a kiln Parameter, got {type(parameter).__name__}")
        setattr(self, name, parameter)

    def buffers(self, recurse: bool = True) -> Iterator[Buffer]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze every parameter: a training step leaves frozen ones as they are."""
        for parameter in self.parameters():
            parameter.requires_grad = requires_grad
        return self

    def to(self, *args: Any, **kwargs: Any) -> "Module":
        """Cast every floating parameter and buffer in place to the dtype PyTorch's ``to`` arguments name
        (``to("float64")``, ``to(device, torch.float64)``, ``to(dtype=...)``, ``to(tensor)``); devices are the
        backend's choice in kiln (``compile_train_step(..., backend=)``), so a device is ignored."""
        from kiln.frontend.tensor_device import dtype_of_to

        target = _float_dtype(dtype_of_to(args, kwargs))
        if target is not None:
            for module in self.modules():
                module._cast_floats(target)
        return self

    def to_empty(self, *, device: Any = None, recurse: bool = True) -> "Module":
        """Each parameter and buffer given new, uninitialized memory of its shape and dtype, as PyTorch's (then an
        ``init`` or ``load_state_dict`` fills it); the device is the backend's choice in kiln."""
        for module in self.modules() if recurse else [self]:
            for tensor in [*module._parameters.values(), *module._buffers.values()]:
                if tensor is not None:
                    tensor.data = np.empty_like(tensor.data)
        return self

    def _cast_floats(self, target: np.dtype) -> None:
        """Cast this module's own floating parameters and buffers (a lazy module remembers ``target`` for its first
        call); complex ones (kept as float pairs) stay, as torch's ``float()``/``double()`` leave complex tensors."""
        for tensor in [*self._parameters.values(), *self._buffers.values()]:
            if is_float_array_dtype(tensor.data.dtype) and getattr(tensor, "complex_view", None) is None:
                tensor.data = tensor.data.astype(target)
                _cast_grad(tensor, target)
        self._read_buffers_again()

    def _read_buffers_again(self) -> None:
        """Each buffer's attribute the registered buffer again where an eager assignment left the tensor assigned
        (one that requires grad, ``_assign_buffer``): the buffers were just written in place (loaded, cast), and
        later reads see what was written, as they see PyTorch's buffer, the tensor itself, written in place."""
        for name, buffer in self._buffers.items():
            if buffer is not None and self.__dict__.get(name) is not buffer:
                object.__setattr__(self, name, buffer)

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    def share_memory(self) -> "Module":
        """Refused, as ``Tensor.share_memory_()`` (``frontend/tensor_device.py``): kiln cannot share a model across processes."""
        from kiln.frontend.tensor_device import refuse_share_memory

        raise refuse_share_memory(f"{type(self).__name__}.share_memory()")

    def cpu(self) -> "Module":
        """``self``: parameters are host arrays; the device is the compiled step's backend (``backend="cupy"``)."""
        return self

    def cuda(self, device: Any = None) -> "Module":
        """``self``, as ``to("cuda")``: kiln puts a model on a GPU by compiling for one (``backend="cupy"``), which keeps
        the parameters on the device between steps; here they stay arrays."""
        return self

    def half(self) -> "Module":
        """float16 parameters and buffers: stored in 16 bits; NumPy and ONNX compute each op in float32 (``widen-half``)."""
        return self.to(np.float16)

    def bfloat16(self) -> "Module":
        return self.to(DType.bf16)

    def type(self, dst_type: Any) -> "Module":
        """PyTorch's ``Module.type(dst_type)``: every parameter and buffer cast to ``dst_type`` (a dtype, a legacy
        type such as ``torch.DoubleTensor``, or its name), integer buffers too (``frontend/module_type_cast.py``)."""
        from kiln.frontend.module_type_cast import cast_every_tensor

        cast_every_tensor(self, dst_type)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the ``.grad`` eager ``backward()`` calls accumulate (a compiled step computes its gradients inside the step)."""
        clear_grads(self.parameters(), set_to_none)

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        yield from self._modules.items()

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def add_module(self, name: str, module: "Module | None") -> None:
        """Register ``module`` as the child ``name`` (``setattr`` with a name that need not be an identifier)."""
        setattr(self, name, module)

    register_module = add_module

    def apply(self, fn: Callable[["Module"], Any]) -> "Module":
        """Call ``fn`` on every submodule, children first, then on this module (PyTorch's order, as for weight init)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "",
                   keep_vars: bool = False) -> "OrderedDict[str, Any]":
        """The arrays by dotted name in PyTorch's order (each module's parameters, its buffers, then its children's);
        a parameter shared by two modules (tied embeddings) appears under both names, as in PyTorch. As torch's:
        ``keep_vars=True`` gives the parameters and buffers themselves, ``destination`` is a mapping filled and
        returned, ``prefix`` starts each name; torch's deprecated positional ``(destination, prefix, keep_vars)`` too."""
        if len(args) > 3:
            raise TypeError(f"state_dict() takes at most 3 positional arguments (destination, prefix, keep_vars), "
                            f"got {len(args)}")
        destination, prefix, keep_vars = (*args, *(destination, prefix, keep_vars)[len(args):])
        state = OrderedDict() if destination is None else destination
        if has_hooks(self.modules(), "_state_dict_pre_hooks", "_state_dict_hooks") or overridden(self.modules(), "_save_to_state_dict"):
            return hooked_state_dict(self, state, prefix, keep_vars)  # frontend/state_dict_hooks.py
        for name, value in self._state_items(prefix):
            state[name] = value if keep_vars else value.data
        return state

    def _state_items(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        yield from self._own_state_items(prefix)
        for name, module in self._modules.items():
            yield from module._state_items(f"{prefix}{name}.")

    def _own_state_items(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        skipped = self.__dict__.get("_non_persistent_buffers_set", ())
        yield from ((prefix + name, value) for name, value in self._parameters.items() if value is not None)
        yield from ((prefix + name, value) for name, value in self._buffers.items() if value is not None and name not in skipped)

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, assign: bool = False) -> IncompatibleKeys:
        """Copy arrays into the parameters in place; every key and shape is checked before anything is written. A
        shared parameter needs only one of its names (a checkpoint that lists tied weights once still loads).
        Returns the missing and unexpected keys (``strict=False`` loads the others), as PyTorch's: a tied name the
        state lacks is missing there too (HF drops such names from its report by ``_tied_weights_keys``). A checkpoint of a
        ``torch.compile``d model, every key prefixed ``_orig_mod.``, loads as the model's own. ``assign=True``: the
        state's values become new parameters and buffers, in their dtype (``frontend/state_dict_assign.py``)."""
        from kiln.frontend.parametrizations import deprecated_weight_norm_keys  # lazily: it imports this module

        own = dict(self._state_items(""))
        state = deprecated_weight_norm_keys(self, without_compile_prefix(state, own), own)
        if by_torch_protocol(self):  # a load hook or a _load_from_state_dict override: module by module, as torch's
            if assign:
                raise KilnError("load_state_dict(assign=True) of a model with load hooks or a _load_from_state_dict "
                                "override: load without assign, or assign the parameters yourself")
            return load_module_by_module(self, state, strict)
        loaded = {id(own[name]) for name in state if name in own}
        missing = [name for name in own if name not in state]
        unloaded = [name for name in missing if id(own[name]) not in loaded]
        unexpected = [name for name in state if name not in own]
        if strict and (unloaded or unexpected):
            raise KilnError(f"load_state_dict: missing keys {unloaded}, unexpected keys {unexpected}")
        arrays = {name: _stored_form(own[name], np.asarray(_to_numpy(value))) for name, value in state.items() if name in own}
        for name, array in arrays.items():
            if array.shape != own[name].data.shape:
                raise KilnError(f"load_state_dict: {name} has shape {array.shape}, the model expects {own[name].data.shape}")
        if assign:
            from kiln.frontend.state_dict_assign import assign_state  # lazily: it builds on this module

            assign_state(self, arrays, own)
            return IncompatibleKeys(missing, unexpected)
        with no_grad():  # as PyTorch's: loading writes parameters in place
            for name, array in arrays.items():
                own[name].copy_(array)
        for module in self.modules():
            module._read_buffers_again()
        return IncompatibleKeys(missing, unexpected)

    def train(self, mode: bool = True) -> "Module":
        """Set ``training`` here, then ``train(mode)`` on each child, as torch's: a child's own ``train`` runs
        (MobileSAM's TinyViT ``Attention`` registers its cached bias table ``ab`` there on ``eval()``)."""
        if step_capture() is not None:  # each kiln.compile'd call sets them
            step_capture().setting_modes([self])
        object.__setattr__(self, "training", mode)
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def _get_name(self) -> str:
        """The class name ``repr`` starts with (torch's; a subclass may override it)."""
        return type(self).__name__

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        """PyTorch's layout: ``extra_repr`` inline when it is one line and there are no children, else every line of it
        and then each child ``(name): repr`` indented on lines of their own."""
        extra = self.extra_repr().split("\n") if self.extra_repr() else []
        children = [f"({name}): " + repr(module).replace("\n", "\n  ") for name, module in self._modules.items()]
        if len(extra) == 1 and not children:
            return f"{self._get_name()}({extra[0]})"
        lines = extra + children
        return f"{self._get_name()}(" + ("\n  " + "\n  ".join(lines) + "\n" if lines else "") + ")"


def _stored_form(parameter: Any, array: np.ndarray) -> np.ndarray:
    """``array`` as ``parameter`` stores it: a complex parameter's complex values (torch's state_dict) as their
    ``view_as_real`` pairs (``frontend/complex_parameter.py``)."""
    if np.iscomplexobj(array) and getattr(parameter, "complex_view", None) is not None:
        return np.stack([array.real, array.imag], axis=-1)
    return array


def _to_numpy(value: Any) -> Any:
    """Accept torch tensors too, without importing torch (a bfloat16 one through its 16-bit words: torch's ``numpy()``
    refuses bfloat16)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            return value.view(sys.modules["torch"].int16).numpy().view(DType.bf16.numpy)
        return value.numpy()
    return value


def layer_dtype(dtype: Any) -> str:
    """The NumPy name of a layer's parameter dtype: ``dtype`` as ``Module.to`` reads it, or by default
    ``kiln.get_default_dtype()`` (float32 unless ``kiln.set_default_dtype`` changed it), as PyTorch's layers."""
    return (_float_dtype(dtype) or get_default_dtype().numpy).name


def _float_dtype(dtype: Any) -> np.dtype | None:
    """The NumPy float dtype ``Module.to`` casts to, or None for a device (``"cpu"``, ``"cuda"``), which kiln ignores."""
    if dtype is None:
        return None
    if isinstance(dtype, DType):
        dtype = dtype.numpy
    if isinstance(dtype, str) or str(dtype).startswith("torch."):  # a name, or a torch dtype (torch.float64)
        name = str(dtype).removeprefix("torch.")
        dtype = {"double": "float64", "float": "float32"}.get(name, name)
    try:
        result = np.dtype(dtype)
    except TypeError:
        raise KilnError(f"Module.to: cannot cast to {dtype!r}; give a float dtype such as 'float32' or 'float64'") from None
    if not is_float_array_dtype(result):
        raise KilnError(f"Module.to: parameters stay floating point; got {dtype!r}")
    return result


def _dotted(prefix: str) -> str:
    """PyTorch's ``prefix`` argument (``"encoder"``) as the start of a dotted name (``"encoder."``)."""
    return prefix + "." if prefix else ""


def _first_of_each(items: Iterable[tuple[str, Any]], remove_duplicate: bool,
                   memo: set | None = None) -> Iterator[tuple[str, Any]]:
    """``(name, object)`` pairs, each object only under its first name when ``remove_duplicate`` (``memo`` holds the
    objects already given, as PyTorch's ``named_modules(memo)``)."""
    seen: set[int] = {id(item) for item in memo} if memo is not None else set()
    for name, item in items:
        if remove_duplicate and id(item) in seen:
            continue
        seen.add(id(item))
        if memo is not None:
            memo.add(item)
        yield name, item


def _cast_grad(parameter: Any, target: np.dtype) -> None:
    """A parameter's dense ``.grad`` cast with it, as PyTorch's ``Module._apply`` (``model.half()`` after a backward
    leaves float16 gradients, so the next backward accumulates in float16)."""
    grad = getattr(parameter, "grad", None)
    if grad is not None and not getattr(grad, "is_sparse", False) and is_float_array_dtype(np.asarray(grad).dtype):
        parameter.grad = torch_array(np.asarray(grad).astype(target))
