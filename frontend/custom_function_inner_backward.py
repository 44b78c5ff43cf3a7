"""``backward()`` inside a ``kiln.autograd.Function``'s backward, as reversible networks call it: reformer_pytorch's
``ReversibleBlock.backward_pass`` recomputes a block under ``enable_grad`` from a tensor it marks ``requires_grad``
and calls ``torch.autograd.backward(out, grad)``, reading the marked tensor's ``.grad`` and leaving the block's
parameters' gradients in their ``.grad`` (its backward returns None for them).

kiln traces a Function's backward into a graph of its own (``custom_function._BackwardTrace``), so this ``backward()``
differentiates inside that graph: the marked tensors of the trace get ``.grad`` (traced values, summed over calls, as
PyTorch accumulates), and the parameters the backward read get gradients that become further outputs of the backward
graph, which the ``custom.vjp`` op hands to those parameters' values (its ``gradients`` name their operands), so the
outer backward accumulates them into ``.grad`` as PyTorch's inner backward did.
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.ir.core import Value


class InnerBackward:
    """What ``backward()`` calls inside one traced Function backward left: the parameters read and their gradients."""

    def __init__(self, trace: Any) -> None:
        self.trace = trace
        self.marked: list[Any] = []
        """Tensors marked by ``requires_grad_()`` in the trace, whose ``.grad`` a backward here fills."""
        self.reads: dict[int, tuple[Any, Value]] = {}
        """Each read of a parameter by the traced backward (an eager read is a value of its own): the parameter and
        the outer value, by the value's id, in reading order."""
        self.parameter_grads: dict[int, Any] = {}
        """The gradients so far (traced tensors) of those values, by the value's id."""

    def read(self, parameter: Any, value: Value) -> Value:
        self.reads.setdefault(id(value), (parameter, value))
        return value

    def backward(self, tensor: Any, gradient: Any) -> None:
        """``tensor.backward(gradient)``: ``.grad`` of the marked tensors, gradients of the parameters read."""
        from kiln.frontend.autograd import differentiate

        from kiln.frontend.tensor import Tensor

        leaves = [t for t in self.marked if t.value in self.trace.grad_leaves]
        reads = [value for parameter, value in self.reads.values() if parameter.requires_grad]
        grads = differentiate([tensor], leaves + [Tensor(value) for value in reads],
                              None if gradient is None else [gradient], allow_unused=True)
        for leaf, grad in zip(leaves, grads):
            if grad is not None:
                leaf.grad = grad if leaf.grad is None else leaf.grad + grad
        for value, grad in zip(reads, grads[len(leaves):]):
            if grad is not None:
                known = self.parameter_grads.get(id(value))
                self.parameter_grads[id(value)] = grad if known is None else known + grad

    def outputs(self) -> tuple[list[Value], list[Value]]:
        """The parameters' gradients (backward graph values) and the outer values they are of, in the same order."""
        pairs = [(grad.value, self.reads[key][1]) for key, grad in self.parameter_grads.items()]
        return [grad for grad, _ in pairs], [outer for _, outer in pairs]
