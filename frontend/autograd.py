"""``kiln.autograd.grad`` and ``kiln.autograd.backward``: PyTorch's functional autograd, traced or eager.

```python
def critic_loss(real, fake):                       # a compiled training step (WGAN-GP)
    mix = eps * real + (1 - eps) * fake
    (g,) = kiln.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    penalty = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return critic(fake).mean() - critic(real).mean() + 10 * penalty
```

In a trace, ``grad`` runs the autodiff pass on the graph traced so far and
returns the gradient values it appends (behind a ``tensor.stop_gradient``
unless ``create_graph=True``, so that only then does a later differentiation,
e.g. the training step's own, go through them). On eager tensors it
differentiates their op chain (``runtime/eager_grad.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.compiler.autodiff.differentiate import differentiate_outputs, ops_between
from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import ARRAYS
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.op_dispatch import to_value
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext, located_error
from kiln.frontend.traced_data_writes import backward_reads_written
from kiln.frontend.traced_hooks import cotangent_hooks


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: Any = None, create_graph: bool = False,
         only_inputs: bool = True, allow_unused: bool | None = None, is_grads_batched: bool = False,
         materialize_grads: bool = False) -> tuple[Any, ...]:
    """``torch.autograd.grad``: ``sum_k grad_outputs[k]^T d outputs[k] / d input`` for each input, as a tuple.

    An input no output depends on is an error, or None with ``allow_unused=True``, or zeros with
    ``materialize_grads=True``; an output or an input that does not require grad is PyTorch's RuntimeError
    (``check_requires_grad``). ``retain_graph`` changes nothing: kiln's chains are never freed by a backward."""
    outputs, inputs = _sequence(outputs), _sequence(inputs)
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when materialize_grads=True, but got: "
                         "allow_unused=False.")
    _check_inputs(inputs)
    check_requires_grad(outputs, inputs)
    return differentiate(outputs, inputs, grad_outputs, create_graph, allow_unused, is_grads_batched, materialize_grads)


def differentiate(outputs: Any, inputs: Any, grad_outputs: Any = None, create_graph: bool = False,
                  allow_unused: bool | None = None, is_grads_batched: bool = False,
                  materialize_grads: bool = False) -> tuple[Any, ...]:
    """``grad`` without PyTorch's ``requires_grad`` checks, for kiln's own transforms
    (``runtime/autograd_functional_graph.py``): an input no output reaches gets None (or zeros), one that requires no
    grad is differentiated all the same."""
    outputs, inputs = _sequence(outputs), _sequence(inputs)
    seeds = _seeds(grad_outputs, len(outputs))
    if is_grads_batched:
        return _batched_grads(outputs, inputs, seeds, create_graph, allow_unused, materialize_grads)
    _check_inputs(inputs)
    if all(_is_eager(t) for t in outputs):
        from kiln.runtime.eager_grad import check_eager, eager_grad  # lazily: the runtime builds on the frontend

        check_eager(inputs, "inputs")
        grads = eager_grad(outputs, inputs, seeds, create_graph)
    else:
        grads = _traced_grad(outputs, inputs, seeds, create_graph)
    return tuple(_unused(g, i, index, allow_unused, materialize_grads) for index, (g, i) in enumerate(zip(grads, inputs)))


def _batched_grads(outputs: list[Any], inputs: list[Any], seeds: list[Any], create_graph: bool,
                   allow_unused: bool | None, materialize_grads: bool) -> tuple[Any, ...]:
    """``is_grads_batched=True``: each ``grad_outputs`` entry holds a batch of cotangents along its first dim; one
    differentiation per row, stacked (what torch's vmap over the backward gives: the rows of a Jacobian at once)."""
    from kiln.frontend.functional_movement import stack  # lazily: the functional layer builds on the Tensor

    sizes = {seed.shape[0] if isinstance(seed, Tensor) and seed.ndim else None for seed in seeds}
    if len(sizes) != 1 or not isinstance(next(iter(sizes)), int):
        raise located_error(f"kiln.autograd.grad(is_grads_batched=True): each grad_outputs entry needs one leading "
                            f"batch dim of one static size, got {[getattr(seed, 'shape', seed) for seed in seeds]}")
    rows = [differentiate(outputs, inputs, [seed[row] for seed in seeds], create_graph, allow_unused, False,
                          materialize_grads) for row in range(next(iter(sizes)))]
    return tuple(None if column[0] is None else stack(list(column)) for column in zip(*rows))


def backward(tensors: Any, grad_tensors: Any = None, retain_graph: Any = None, create_graph: bool = False,
             inputs: Any = None) -> None:
    """``torch.autograd.backward``: ``tensor.backward(grad)`` for each tensor, accumulating into ``.grad``."""
    tensors, inputs = _sequence(tensors), None if inputs is None else _sequence(inputs)  # a generator, once
    for tensor, seed in zip(tensors, _seeds(grad_tensors, len(tensors))):
        tensor.backward(seed, retain_graph, create_graph, inputs)


def _sequence(tensors: Any) -> list[Any]:
    """One tensor (or array) as a list of one; any other iterable (``model.parameters()``, ``params.values()``) as
    its items, as PyTorch's ``tuple(inputs)``."""
    if isinstance(tensors, (Tensor, np.ndarray)) or not hasattr(tensors, "__iter__"):
        return [tensors]
    return list(tensors)


def _seeds(grad_outputs: Any, count: int) -> list[Any]:
    seeds = [None] * count if grad_outputs is None else _sequence(grad_outputs)
    if len(seeds) != count:
        raise located_error(f"kiln.autograd.grad: grad_outputs has {len(seeds)} entries for {count} outputs; give one "
                            "per output (None for a scalar output's 1)")
    return seeds


class EmptyInputsError(TraceError, RuntimeError):
    """``backward(inputs=[])`` or ``grad(out, [])``: a ``RuntimeError``, as PyTorch's."""


def empty_inputs_error(entry: str, advice: str) -> EmptyInputsError:
    """PyTorch's message for an empty ``inputs`` to ``entry``, at the user's line, with what to do instead."""
    error = EmptyInputsError(str(located_error(f"`inputs` argument to `{entry}()` cannot be empty: {advice}")))
    error.located = True  # type: ignore[attr-defined]
    return error


class GradRequirementError(TraceError, RuntimeError):
    """``grad`` of an output that requires no grad, or with respect to an input that requires none: a
    ``RuntimeError``, as PyTorch's."""


def check_requires_grad(outputs: Sequence[Any], inputs: Sequence[Any]) -> None:
    """PyTorch's refusals, with its words: every output and every input must require grad (``requires_grad``, exact
    eagerly and traced), else nothing connects them."""
    for index, output in enumerate(outputs):
        if isinstance(output, Tensor) and not output.requires_grad:
            raise located(GradRequirementError, f"element {index} of tensors does not require grad and does not have a "
                          f"grad_fn: kiln.autograd.grad's outputs[{index}] depends on no tensor that requires grad; "
                          "mark the input with requires_grad_() (kiln.tensor(x, requires_grad=True)) before computing "
                          "the output from it")
    for index, input in enumerate(inputs):
        if not input.requires_grad:
            raise located(GradRequirementError, f"One of the differentiated Tensors does not require grad: inputs[{index}] "
                          f"(shape {tuple(input.shape)}); mark it with requires_grad_() before computing the outputs "
                          "from it (not a detach() or a no_grad result)")


def _check_inputs(inputs: Sequence[Any]) -> None:
    if not inputs:
        raise empty_inputs_error("grad", "name the tensors to differentiate with respect to")
    for index, tensor in enumerate(inputs):
        if isinstance(tensor, ArrayLeaf) and not tensor.requires_grad:
            raise located(GradRequirementError, f"One of the differentiated Tensors does not require grad: "
                          f"kiln.autograd.grad's inputs[{index}] is a Parameter with requires_grad=False")
        if not isinstance(tensor, Tensor) or not tensor.dtype.is_float:
            kind = f"an {tensor.dtype.numpy.name} tensor" if isinstance(tensor, Tensor) else type(tensor).__name__
            raise located(GradRequirementError, f"One of the differentiated Tensors does not require grad: "
                          f"kiln.autograd.grad's inputs[{index}] is {kind}; only floating-point tensors have gradients")


def _is_eager(tensor: Any) -> bool:
    value = getattr(tensor, "value", None) if isinstance(tensor, Tensor) else None
    return isinstance(value, Value) and value in ARRAYS


def _traced_grad(outputs: Sequence[Any], inputs: Sequence[Any], seeds: Sequence[Any], create_graph: bool) -> list[Any]:
    context = TraceContext.current()
    values = [o.value for o in outputs]
    wrt = [context.value_of(i) if isinstance(i, ArrayLeaf) else i.value for i in inputs]
    used = [any(w is v for v in values) or bool(ops_between(context.graph, [w], values)) for w in wrt]
    seeds = [None if s is None else to_value(context, s, o.dtype) for s, o in zip(seeds, outputs)]
    first = len(context.graph.ops)
    grads = differentiate_outputs(context.graph, values, wrt, seeds, on_cotangent=cotangent_hooks(context))
    backward_reads_written(context.graph, first)  # x.data written since the forward read it: the new values
    return [Tensor(g if create_graph else context.without_gradient(g)) if u else None for g, u in zip(grads, used)]


def _unused(grad: Any, input: Any, index: int, allow_unused: bool | None, materialize: bool) -> Any:
    if grad is not None:
        return grad
    if materialize:
        from kiln.frontend.torch_functions import zeros_like

        return zeros_like(input)
    if not allow_unused:
        raise located(GradRequirementError, f"The differentiated Tensor at index {index} appears to not have been used "
                      f"in the graph: kiln.autograd.grad's inputs[{index}] (shape {tuple(input.shape)}) is not used by the "
                      "outputs; pass allow_unused=True to get None for it (or materialize_grads=True for zeros)")
    return None


__all__ = ["GradRequirementError", "backward", "check_requires_grad", "differentiate", "grad"]
