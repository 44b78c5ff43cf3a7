"""What an eager tensor can do that a traced one cannot: give its values, and backpropagate.

```python
out = model(x)              # outside a trace: an eager Tensor (runtime/eager.py)
out.numpy(), out.item(), float(loss), out.tolist(), np.asarray(out), f"{loss:.4f}"
if (out > 0).all(): ...     # Python control flow on values works eagerly
loss.backward()             # .grad of every parameter the loss reads (runtime/eager_backward.py)
x.requires_grad_()          # a batch or activation too: saliency maps, adversarial examples
model(x)[0, c].backward()   # x.grad (h.retain_grad() keeps an intermediate's)
```

A traced tensor keeps the errors of ``TorchMethods`` (its values exist only when
the compiled function runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import weakref

from kiln.frontend.eager_values import ARRAYS, GRAD_TENSORS, eager_array, eager_value, trained_parameter
from kiln.frontend.inplace_leaf_checks import check_non_leaf_flag, warn_non_leaf_grad
from kiln.frontend.shared_storage import shared
from kiln.frontend.trace import TraceContext, located_error, step_capture
from kiln.frontend.traced_array_errors import traced_array_error
from kiln.frontend.traced_hooks import register_traced_hook, retain_traced_grad, traced_retains_grad
from kiln.frontend.traced_requires_grad import check_float_for_grad, mark_traced_for_grad, traced_requires_grad
from kiln.frontend.warn_once import FLOAT_OF_GRAD_TENSOR, warn_once, warned
from kiln.frontend.whole_step_inputs import refuse_backward_in_compiled_forward


def array_protocol(array: np.ndarray, dtype: Any, copy: Any) -> np.ndarray:
    """``__array__``'s answer: ``array`` itself (``np.asarray`` shares it, as PyTorch's ``numpy()``), cast to ``dtype``,
    and a copy when NumPy asks for one (``np.array(t)``: a buffer registered from it must not alias the tensor)."""
    result = array if dtype is None else array.astype(dtype)
    return result.copy() if copy and result is array else shared(result) if result is array else result


class EagerMethods:
    """Reading values and ``backward``; ``Tensor`` inherits them before ``TorchMethods`` (whose forms refuse)."""

    @property
    def grad(self) -> Any:
        """What ``backward()`` accumulated for an eager tensor marked by ``requires_grad_()`` or ``retain_grad()``: an
        array, or after ``backward(create_graph=True)`` an eager tensor that keeps its chain. A non-leaf's that is
        not retained is None, with PyTorch's warning."""
        grad = self.__dict__.get("grad")
        if grad is None and eager_value(self) is not None and not self.retains_grad and not self.is_leaf:
            warn_non_leaf_grad()
        return grad

    @grad.setter
    def grad(self, grad: Any) -> None:
        self.__dict__["grad"] = grad

    def requires_grad_(self, requires_grad: bool = True) -> Any:
        """Eagerly, ``backward()`` then fills this tensor's ``.grad`` (PyTorch's leaf tensors); traced, its
        ``requires_grad`` and its results' become True (``frontend/traced_requires_grad.py``; the compiled step
        differentiates by its parameters). A non-leaf (a result that requires grad) keeps its flag, as PyTorch's:
        ``requires_grad_(False)`` on it is PyTorch's RuntimeError."""
        if "_value" in self.__dict__ and eager_value(self) is None:
            mark_traced_for_grad(self, requires_grad)
            return self
        if eager_value(self) is not None and not self.is_leaf:
            check_non_leaf_flag(requires_grad)
            return self
        return self._mark_for_grad(requires_grad)

    def _mark_for_grad(self, requires_grad: bool) -> Any:
        value = eager_value(self)
        if value is not None:
            if requires_grad:
                check_float_for_grad(self.dtype)
            if requires_grad and _becomes_grad_leaf(self, value):
                return self
            if requires_grad and value.producer is not None and value not in GRAD_TENSORS and not self.requires_grad:
                value = self._start_chain()
            if requires_grad:
                GRAD_TENSORS[value] = weakref.ref(self)
            else:
                GRAD_TENSORS.pop(value, None)
        return self

    def _start_chain(self) -> Any:
        """Become a leaf holding the same array: a tensor computed only from tensors that need no gradient
        (``img.clone()``) starts a chain when marked, as PyTorch's is a leaf (``is_leaf``; an optimizer may then write
        its array in place, which a backward recomputing the old chain would miss)."""
        from kiln.frontend.eager_values import eager_leaf

        self._value = eager_leaf(eager_array(self))._value
        return self._value

    def register_hook(self, hook: Any) -> Any:
        """``hook(grad)`` at every eager backward through this tensor, with its complete gradient; a tensor it returns
        replaces the gradient (``runtime/eager_hooks.py``). Traced, the step's ``backward()`` calls it on the traced
        gradient, its ops in the step's graph (``frontend/traced_hooks.py``)."""
        value = eager_value(self)
        if not self.requires_grad:
            raise located_error("register_hook: this tensor does not require a gradient (it depends on no parameter and "
                                "no tensor marked by requires_grad_()), so no gradient will flow through it")
        if value is None:  # traced: the backward traced after this calls it (frontend/traced_hooks.py)
            if step_capture() is None:
                raise located_error("register_hook on a traced tensor outside a kiln.compile'd step that calls "
                                    "backward() itself (a compiled forward or compile_train_step differentiates it "
                                    "elsewhere, with no place for the hook); compile the whole step with kiln.compile, "
                                    "or read the gradient with kiln.autograd.grad(loss, tensor)")
            return register_traced_hook(TraceContext.current(), self.value, hook)
        from kiln.runtime.eager_hooks import register_tensor_hook  # lazily: the runtime builds on the frontend

        return register_tensor_hook(value, hook)

    def retain_grad(self) -> None:
        """Keep this intermediate's gradient in ``.grad`` at the next ``backward()``; traced, in a ``kiln.compile``d
        step's backward (``frontend/traced_hooks.py``). A tensor that requires no gradient is refused, as torch's."""
        if not self.requires_grad:
            raise located_error("can't retain_grad on a tensor that does not require a gradient (it depends on no "
                                "parameter and no tensor marked by requires_grad_()); mark a leaf with requires_grad_()")
        if eager_value(self) is None:
            return retain_traced_grad(self)
        self._mark_for_grad(True)

    @property
    def requires_grad(self) -> bool:
        """Whether this tensor is marked or depends on a trained parameter or a marked tensor (not past a detach, a
        ``no_grad`` or an integer value), as PyTorch's; traced too (``frontend/traced_requires_grad.py``)."""
        value = eager_value(self)
        if value is None:
            return traced_requires_grad(self.value)
        return _depends_on_a_leaf(value)

    @requires_grad.setter
    def requires_grad(self, requires_grad: bool) -> None:
        self.requires_grad_(requires_grad)

    @property
    def grad_fn(self) -> Any:
        """Eagerly, the autograd node of the op that made this tensor if a gradient flows back through it, else None,
        as PyTorch's for leaves and tensors needing no gradient: named as torch's (``MulBackward0``), walkable through
        ``next_functions`` to ``AccumulateGrad`` leaves, with node hooks (``frontend/autograd_graph.py``)."""
        from kiln.frontend.autograd_graph import grad_fn_of  # lazily: the graph view builds on the tensor

        return grad_fn_of(self)

    @property
    def _version(self) -> int:
        """PyTorch's version counter: how many in-place writes changed this tensor's storage (``autograd_graph``)."""
        from kiln.frontend.autograd_graph import tensor_version

        return tensor_version(self)

    @property
    def retains_grad(self) -> bool:
        """Whether ``backward()`` fills this non-leaf tensor's ``.grad`` (``retain_grad()``)."""
        value = self.__dict__.get("_value")
        if value is not None and eager_value(self) is None:
            return traced_retains_grad(self)
        return value is not None and value in GRAD_TENSORS and value.producer is not None

    @property
    def is_leaf(self) -> bool:
        """Whether this tensor starts a chain: it needs no gradient, or no op made it (a parameter, a batch, a tensor
        marked by ``requires_grad_()``); ``retain_grad()`` keeps a result a non-leaf, as PyTorch's."""
        value = self.__dict__.get("_value")
        producer = None if value is None else value.producer
        return producer is None or producer.name == "tensor.constant" or not self.requires_grad

    def numpy(self, *, force: bool = False) -> Any:
        """The values as a NumPy array (the tensor's own array, as PyTorch's shares memory); a bfloat16 tensor's is an
        ``ml_dtypes.bfloat16`` array, where torch refuses ("Got unsupported ScalarType BFloat16")."""
        array = eager_array(self)
        return super().numpy() if array is None else shared(array)  # type: ignore[misc]  (a traced tensor's refusal)

    def item(self) -> Any:
        array = host_values(self)
        if array is None:
            return super().item()  # type: ignore[misc]
        if array.size != 1:
            raise ValueError(f"a Tensor with {array.size} elements cannot be converted to a Python number (item())")
        return array.item()

    def tolist(self) -> Any:
        array = host_values(self)
        return super().tolist() if array is None else array.tolist()  # type: ignore[misc]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = eager_array(self)
        if array is None:
            raise traced_array_error(self)
        return array_protocol(array, dtype, copy)

    def __array_wrap__(self, array: np.ndarray, context: Any = None, return_scalar: bool = False) -> Any:
        """A NumPy ufunc's result on this tensor, as a tensor: ``np.sqrt(alphas_cumprod)`` (Stable Diffusion's DDIM
        schedule) gives a tensor in torch, whose ``__array_wrap__`` is ``torch.from_numpy``; a bool result is uint8
        there (``np.isnan(t)``), and here."""
        from kiln.frontend.torch_functions import from_numpy  # lazily: the functions build on the tensor

        return from_numpy(array.astype(np.uint8) if array.dtype == np.bool_ else array)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickled by value (``kiln.save(model, f)`` of a module keeping a tensor, as ``self.src_mask``): it loads as an
        eager tensor of the same values. A parameter pickles its attributes, as any object."""
        if "_value" not in self.__dict__:
            return super().__reduce_ex__(protocol)
        array = eager_array(self)
        if array is None:
            raise TypeError(f"a traced {getattr(self, 'type', 'tensor')} cannot be pickled: its values exist only when the "
                            "compiled function runs")
        return _unpickled_tensor, (np.array(array),)

    def __format__(self, format_spec: str) -> str:
        """``'{:+.2f}'.format(w)``, ``f"{loss:.4f}"``: a 0-d tensor formats its number, as PyTorch's (a traced one refuses
        through ``item()``); any other tensor takes only an empty spec, as PyTorch's."""
        if format_spec and self.ndim == 0:  # type: ignore[attr-defined]
            return format(self.item(), format_spec)
        return object.__format__(self, format_spec)

    def __float__(self) -> float:
        """``float(loss)``: PyTorch warns once a process when the tensor requires grad (``item()`` and ``int()`` do
        not); once warned, the check (a walk of the tensor's history) is skipped."""
        if not warned(FLOAT_OF_GRAD_TENSOR) and self.requires_grad:  # type: ignore[attr-defined]
            warn_once(FLOAT_OF_GRAD_TENSOR)
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        array = eager_array(self)
        if array is None and "_value" in self.__dict__:  # traced: kiln.compile specializes on it (value_guards.py)
            from kiln.frontend.tensor_methods import traced_values  # lazily: the methods build on the tensor

            array = traced_values(self)
            if array is None:
                from kiln.frontend.traced_index_errors import traced_index_error

                raise traced_index_error(self)
        if array is None or array.dtype.kind not in "iub" or array.size != 1:
            raise TypeError("only an eager integer tensor of one element can be used as an index")
        return int(array.item())

    def backward(self, gradient: Any = None, retain_graph: Any = None, create_graph: bool = False, inputs: Any = None) -> None:
        """Accumulate d(self)/d(parameter) into each trained parameter's ``.grad``, as PyTorch's ``backward``
        (``gradient`` weighs a non-scalar tensor; ``inputs`` limits which parameters receive one). With
        ``create_graph=True`` each ``.grad`` becomes an eager tensor that keeps its chain, so a later backward
        differentiates through it (``runtime/eager_create_graph.py``)."""
        inputs = _backward_inputs(inputs)
        if eager_array(self) is None:
            inner = getattr(TraceContext.current(), "inner_backward", None) if TraceContext.active() else None
            if inner is not None:  # in a kiln.autograd.Function's backward (frontend/custom_function_inner_backward.py)
                inner.backward(self, gradient)
                return
            capture = step_capture()
            if capture is not None:  # a kiln.compile'd training step: runtime/step_capture.py
                capture.backward(self, gradient, inputs, create_graph)
                return
            refuse_backward_in_compiled_forward()  # a whole step given tensors that require grad: traced again as one
            raise located_error("backward() of a traced tensor: inside a trace, the training step differentiates the loss "
                                "(kiln.compile_train_step), or use kiln.grad; backward() works on eager tensors, outside a trace")
        if create_graph:
            from kiln.runtime.eager_create_graph import backward_with_graph  # lazily: the runtime builds on the frontend

            backward_with_graph(self, gradient, inputs)
            return
        from kiln.runtime.eager_backward import backward  # lazily: the runtime builds on the frontend

        backward(self, gradient, inputs)


def _backward_inputs(inputs: Any) -> Any:
    """``inputs`` as a list (a generator such as ``model.parameters()`` read once, as PyTorch's ``tuple(inputs)``)."""
    from kiln.frontend.autograd import _sequence, empty_inputs_error  # lazily: autograd builds on the tensor

    if inputs is None:
        return None
    inputs = _sequence(inputs)
    if not inputs:
        raise empty_inputs_error("backward", "name the parameters or tensors to accumulate into, or leave inputs out "
                                 "for all of them")
    return inputs


def _unpickled_tensor(array: np.ndarray) -> Any:
    from kiln.frontend.tensor import apply  # lazily: Tensor builds on this file

    return apply("tensor.constant", value=array)


def _becomes_grad_leaf(tensor: Any, value: Any) -> bool:
    """``t.requires_grad_()`` (or ``t.requires_grad = True``) on a plain eager leaf, outside a trace: ``t`` becomes the
    ``GradLeaf`` that ``requires_grad=True`` at creation makes (its values copied), so optimizers and a compiled step
    train it as they do those (Yarats' SAC: ``log_alpha = torch.tensor(x); log_alpha.requires_grad = True``). A view,
    a member of a view family or a result keeps its mark on the chain instead."""
    from kiln.frontend.module import GradLeaf, Parameter  # lazily: the module builds on the tensor
    from kiln.frontend.tensor import Tensor

    keys = set(tensor.__dict__)
    if type(tensor) is not Tensor or keys & _VIEW_KEYS or value in GRAD_TENSORS or _depends_on_a_leaf(value):
        return False
    array = ARRAYS[value]
    del tensor.__dict__["_value"]
    tensor.__class__ = GradLeaf
    Parameter.__init__(tensor, array)
    return True


_VIEW_KEYS = frozenset({"_family", "_view_of", "_indexed_from", "_stale"})
"""A tensor's attributes that tie it to others' storage: such a tensor is not made a ``GradLeaf``."""


def _depends_on_a_leaf(value: Any) -> bool:
    """Whether ``value``'s chain reaches a marked tensor or a parameter that requires a gradient (not past a detach)."""
    stack, seen = [value], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if not current.type.dtype.is_float:
            continue  # an integer or bool value carries no gradient (an argmax's indices), as in PyTorch
        if current in GRAD_TENSORS or trained_parameter(current) is not None:  # float: checked above
            return True
        op = current.producer
        if op is not None and op.name != "tensor.stop_gradient":
            stack.extend(op.operands)
    return False


def host_values(tensor: Any) -> np.ndarray | None:
    """An eager tensor's array, or outside a trace a ``Parameter``'s or buffer's own (``nn.Parameter(torch.tensor(2.))
    .item()``, ``if self.inited:``); None for a traced tensor, whose ``item()`` refuses."""
    array = eager_array(tensor)
    if array is None and "_data" in tensor.__dict__ and not TraceContext.active():
        return tensor.data
    return array


__all__ = ["EagerMethods", "array_protocol", "host_values"]
