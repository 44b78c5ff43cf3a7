"""``custom.vjp``: a function with a user-written backward (``kiln.autograd.Function``, JAX's ``custom_vjp``).

The forward's ops are ordinary ops of the graph. ``custom.vjp`` reads what they
compute and returns it unchanged, one result per forward output; what it adds is
its ``backward`` attribute, a sub-graph traced from the user's ``backward``, which
the autodiff pass inlines instead of differentiating the forward's ops
(``compiler/autodiff/rules_custom.py``). Every backend expands the op to its
forward outputs (its decomposition), so nothing downstream of autodiff sees it.

```
%y = "tensor.exp"(%x) : (tensor<3xf64>) -> tensor<3xf64>
%out = "custom.vjp"(%x, %y) {function = "MyExp", num_inputs = 1, num_outputs = 1, saved = [1], gradients = [0],
  backward = func @backward(%saved: tensor<3xf64>, %grad: tensor<3xf64>) {
    %dx = "tensor.mul"(%grad, %saved) : (tensor<3xf64>, tensor<3xf64>) -> tensor<3xf64>
    return %dx : tensor<3xf64>
  }} : (tensor<3xf64>, tensor<3xf64>) -> tensor<3xf64>
```

Operands: the apply's tensor inputs (``num_inputs``), the forward's outputs (``num_outputs``), then residuals (what
the backward reads that is neither: a saved intermediate behind ``tensor.stop_gradient``, a tensor it closes over).
``backward`` takes the saved tensors, then one cotangent per output, and returns one gradient per entry of
``gradients`` (the input it is the gradient of). ``saved[k]`` names the operand saved tensor ``k`` is; one naming a
forward output stands for the op's result, so a second derivative runs through ``backward`` again, as PyTorch's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.registry import register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Graph, Value


@register_op("custom.vjp", function="", num_inputs=0, num_outputs=1, saved=(), gradients=(), backward=None)
def custom_vjp_shape(*operands: TensorType, function: str, num_inputs: int, num_outputs: int, saved: tuple[int, ...],
                     gradients: tuple[int, ...], backward: "Graph | None") -> TensorType | tuple[TensorType, ...]:
    """The forward outputs' types (operands ``num_inputs`` to ``num_inputs + num_outputs``); ``backward`` must fit."""
    if backward is None:
        raise ShapeError(f"custom.vjp of {function or 'a function'} needs its backward sub-graph (attribute backward)")
    if num_inputs < 0 or num_outputs < 1 or num_inputs + num_outputs > len(operands):
        raise ShapeError(f"custom.vjp of {function}: {len(operands)} operands cannot hold {num_inputs} inputs and {num_outputs} outputs")
    outputs = operands[num_inputs : num_inputs + num_outputs]
    _check_backward(function, operands, outputs, saved, gradients, backward, num_inputs)
    return outputs[0] if num_outputs == 1 else tuple(outputs)


def _check_backward(function: str, operands: tuple[TensorType, ...], outputs: tuple[TensorType, ...], saved: tuple[int, ...],
                    gradients: tuple[int, ...], backward: "Graph", num_inputs: int) -> None:
    """The sub-graph takes the saved operands then one cotangent per output, and returns one gradient per input named."""
    if any(not 0 <= index < len(operands) for index in saved) or any(not _differentiable(index, len(operands), num_inputs,
                                                                                             len(outputs)) for index in gradients):
        raise ShapeError(f"custom.vjp of {function}: saved {list(saved)} or gradients {list(gradients)} name an operand it lacks")
    expected = [operands[index] for index in saved] + list(outputs)
    if [value.type for value in backward.inputs] != expected:
        raise ShapeError(f"custom.vjp of {function}: backward takes {_types(v.type for v in backward.inputs)}, but the saved "
                         f"tensors and the outputs' cotangents are {_types(expected)}")
    wanted = [operands[index] for index in gradients]
    if [value.type for value in backward.outputs] != wanted:
        raise ShapeError(f"custom.vjp of {function}: backward returns {_types(v.type for v in backward.outputs)}, but the "
                         f"inputs it differentiates are {_types(wanted)}")


def _differentiable(index: int, count: int, num_inputs: int, num_outputs: int) -> bool:
    """Whether ``gradients`` may name operand ``index``: an input, or a value ``backward`` closed over after the forward
    outputs (a parameter a ``backward()`` inside it differentiated: frontend/custom_function_inner_backward.py)."""
    return 0 <= index < num_inputs or num_inputs + num_outputs <= index < count


def _types(types: Iterable[TensorType]) -> str:
    return "(" + ", ".join(str(t) for t in types) + ")"


@register_decomposition("custom.vjp")
def custom_vjp_decomposition(b: "Builder", *operands: "Value", num_inputs: int, num_outputs: int, **_: object) -> "Value | tuple[Value, ...]":
    # custom.vjp(inputs, outputs, residuals) = outputs: the backward only matters to autodiff
    outputs = operands[num_inputs : num_inputs + num_outputs]
    return outputs[0] if num_outputs == 1 else tuple(outputs)
