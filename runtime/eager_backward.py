"""``loss.backward()`` in eager mode: the loss's op chain becomes one graph, differentiated and compiled.

The chain from the loss back to its leaves (the parameters it read, the
arrays it was given) is rebuilt as a graph whose inputs are those leaves;
the autodiff pass appends the backward; the NumPy backend compiles it after
the usual cleanup. The compiled function is cached by the chain's structure
(op names, attributes, types, wiring), so a training loop compiles once and
then runs the cached function every step. It recomputes the forward from the
leaves (the eager forward's intermediate arrays are not fed back in), the
price of a backward that is one fused, memory-planned function.

Arrays the user passed in (a batch) are inputs of the graph, not constants,
so a new batch of the same shape reuses the compiled function; 0-d constants
(Python numbers) stay constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Iterable

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.autodiff.differentiate import differentiate
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import TensorType
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.eager_values import ARRAYS, PARAMETERS, updates
from kiln.frontend.module import Parameter
from kiln.frontend.trace import located_error
from kiln.runtime.eager import op_signature
from kiln.runtime.executable import Executable
from kiln.runtime.train_step import DEFAULT_PIPELINE

_COMPILED: dict[Hashable, Executable] = {}
COMPILED_LIMIT = 64
"""Compiled backwards kept (by chain structure); a 0-d constant that changes every step makes a new one each time."""


@dataclass
class EagerInput:
    """One input of the chain's graph: a leaf (a parameter's or fed array) or a fed constant, and what it is fed."""

    type: TensorType
    name: str | None
    array: np.ndarray
    trained: Parameter | None


class EagerChain:
    """The loss's op chain: its ``inputs`` (with the arrays to feed), and ``key``, what a compiled backward of it
    depends on (op signatures and wiring, input types, which inputs are differentiated). ``graph()`` builds it, only when
    the key is new: a training loop's later steps only walk the chain."""

    def __init__(self, loss: Value, wanted: set[int] | None):
        self.ops = chain_of(loss)
        self.inputs: list[EagerInput] = []
        self._input_of: dict[int, int] = {}
        """``id`` of a leaf value, or of a fed constant op -> its input index."""
        self._position = {id(op): index for index, op in enumerate(self.ops)}
        self._wanted = wanted
        wiring = [self._wiring(op) for op in self.ops]
        self.loss = loss
        self.key = (tuple(wiring), self._reference(loss), tuple((i.type, i.trained is not None) for i in self.inputs))

    def _wiring(self, op: Op) -> Hashable:
        if _fed(op):
            self._input_of[id(op)] = self._add(TensorType.of_array(op.attrs["value"]), None, np.asarray(op.attrs["value"]), None)
            return "fed"
        return op_signature(op), tuple(self._reference(v) for v in op.operands)

    def _reference(self, value: Value) -> Hashable:
        op = value.producer
        if op is None:
            return "input", self._leaf(value)
        return ("input", self._input_of[id(op)]) if id(op) in self._input_of else ("op", self._position[id(op)], value.index)

    def _leaf(self, value: Value) -> int:
        if id(value) not in self._input_of:
            parameter, read_at = PARAMETERS.get(value, (None, 0))
            if parameter is not None and updates(parameter) != read_at:
                raise located_error(f"backward(): a parameter of shape {tuple(value.type.shape)} was updated in place "
                                    "by optimizer.step() after the forward read it, so this graph's gradient is stale; call "
                                    "backward() before step() (PyTorch refuses this too)")
            trained = parameter is not None and parameter.requires_grad and value.type.dtype.is_float and \
                (self._wanted is None or id(parameter) in self._wanted)
            self._input_of[id(value)] = self._add(value.type, value.name_hint, ARRAYS[value], parameter if trained else None)
        return self._input_of[id(value)]

    def _add(self, type: TensorType, name: str | None, array: np.ndarray, trained: Parameter | None) -> int:
        self.inputs.append(EagerInput(type, name, array, trained))
        return len(self.inputs) - 1

    @property
    def trained(self) -> list[Parameter]:
        return [i.trained for i in self.inputs if i.trained is not None]

    def graph(self, seeded: bool) -> Graph:
        """The chain as a graph with its backward appended: outputs are the gradients of the trained inputs, in order."""
        graph = Graph("eager_backward")
        inputs = [graph.add_input(i.type, i.name) for i in self.inputs]
        results: dict[tuple[int, int], Value] = {}

        def copied(value: Value) -> Value:
            kind, *where = self._reference(value)
            return inputs[where[0]] if kind == "input" else results[(where[0], where[1])]

        for position, op in enumerate(self.ops):
            if id(op) in self._input_of:
                continue
            made = Builder(graph, location=op.location).op(op.name, *map(copied, op.operands), **op.attrs)
            for index, result in enumerate(made if isinstance(made, tuple) else (made,)):
                results[(position, index)] = result
        loss = copied(self.loss)
        seed = graph.add_input(loss.type, "gradient") if seeded else None
        graph.outputs = differentiate(graph, loss, [v for v, i in zip(inputs, self.inputs) if i.trained is not None], seed)
        return graph


def _fed(op: Op) -> bool:
    """A constant array of rank > 0 (a batch the user passed): an input, so the next batch reuses the compiled graph."""
    return op.name == "tensor.constant" and np.ndim(op.attrs["value"]) > 0


def chain_of(loss: Value) -> list[Op]:
    """The ops ``loss`` depends on, operands before readers (iterative: a long chain would overflow the stack)."""
    order: list[Op] = []
    seen: set[int] = set()
    stack: list[tuple[Op, bool]] = [] if loss.producer is None else [(loss.producer, False)]
    while stack:
        op, expanded = stack.pop()
        if expanded:
            order.append(op)
            continue
        if id(op) in seen:
            continue
        seen.add(id(op))
        stack.append((op, True))
        stack.extend((operand.producer, False) for operand in reversed(op.operands) if operand.producer is not None)
    return order


def backward(loss: Any, gradient: Any = None, inputs: Iterable[Parameter] | None = None) -> None:
    """Add d(loss)/d(parameter) (weighted by ``gradient`` for a non-scalar loss) to each trained parameter's ``.grad``."""
    wanted = None if inputs is None else {id(p) for p in ([inputs] if isinstance(inputs, Parameter) else inputs)}
    chain = EagerChain(loss.value, wanted)
    trained = chain.trained
    if not trained:
        raise located_error("backward(): the tensor does not depend on any parameter that requires a gradient (a float "
                            "kiln.nn.Parameter with requires_grad=True), so there is nothing to differentiate")
    seed = _seed(loss, gradient)
    key = (chain.key, seed is not None)
    executable = _COMPILED.get(key)
    if executable is None:
        if len(_COMPILED) >= COMPILED_LIMIT:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest: a loop reuses one or two
        executable = _COMPILED[key] = _compile(chain.graph(seed is not None))
    grads = executable(*[i.array for i in chain.inputs], *([] if seed is None else [seed]))
    for parameter, grad in zip(trained, grads):
        _accumulate(parameter, np.asarray(grad))


def _seed(loss: Any, gradient: Any) -> np.ndarray | None:
    array = ARRAYS[loss.value]
    if gradient is None:
        if array.ndim != 0:
            raise located_error(f"backward() of a tensor of shape {array.shape}: grad can be implicitly created only for "
                                "a scalar; reduce it (loss.mean()) or pass gradient= of its shape")
        return None
    seed = np.asarray(gradient.numpy() if hasattr(gradient, "numpy") else gradient, dtype=array.dtype)
    if seed.shape != array.shape:
        raise located_error(f"backward(gradient=...): the gradient has shape {seed.shape}, the tensor {array.shape}")
    return seed


def _compile(graph: Graph) -> Executable:
    PassManager(DEFAULT_PIPELINE).run(graph)
    return get_backend("numpy").compile(graph)


def _accumulate(parameter: Parameter, grad: np.ndarray) -> None:
    """``parameter.grad += grad`` as PyTorch's backward does (a copy: the compiled function may reuse its buffers)."""
    current = getattr(parameter, "grad", None)
    if current is None:
        parameter.grad = np.array(grad, dtype=parameter._data.dtype)
    else:
        current += grad
