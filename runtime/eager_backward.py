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

from typing import Any, Hashable, Iterable

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.autodiff.differentiate import differentiate
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import TensorType
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.eager_values import ARRAYS, PARAMETERS
from kiln.frontend.module import Parameter
from kiln.frontend.trace import located_error
from kiln.runtime.eager import op_signature
from kiln.runtime.executable import Executable
from kiln.runtime.train_step import DEFAULT_PIPELINE

_COMPILED: dict[Hashable, Executable] = {}
COMPILED_LIMIT = 64
"""Compiled backwards kept (by chain structure); a 0-d constant that changes every step makes a new one each time."""


class EagerGraph:
    """The loss's chain as a graph: ``feeds`` for its inputs, ``trained`` parameter per differentiated input (``wrt``),
    and ``key``, what a compiled backward of it depends on."""

    def __init__(self, loss: Value, wanted: set[int] | None):
        self.graph = Graph("eager_backward")
        self.feeds: list[np.ndarray] = []
        self.trained: list[Parameter] = []
        self.wrt: list[Value] = []
        self.key: list[Hashable] = []
        self._results: dict[tuple[int, int], Value] = {}
        """``(id(op), result index)`` -> the copy (an eager op's ``results`` is cleared once it has run)."""
        self._leaves: dict[Value, Value] = {}
        self._numbers: dict[Value, int] = {}
        self._wanted = wanted
        for op in chain_of(loss):
            self._copy(op)
        self.loss = self._copied(loss)

    def _copied(self, value: Value) -> Value:
        return self._leaf(value) if value.producer is None else self._results[(id(value.producer), value.index)]

    def _copy(self, op: Op) -> None:
        value = op.attrs["value"] if op.name == "tensor.constant" else None
        if value is not None and np.ndim(value) > 0:  # a fed array: an input, so the next batch reuses the graph
            array = np.asarray(value)
            self._results[(id(op), 0)] = self._input(TensorType.of_array(array), None, array, None)
            return
        operands = [self._copied(v) for v in op.operands]
        results = Builder(self.graph, location=op.location).op(op.name, *operands, **op.attrs)
        self.key.append((op_signature(op), tuple(self._numbers[v] for v in operands)))
        for index, result in enumerate(results if isinstance(results, tuple) else (results,)):
            self._number(result)
            self._results[(id(op), index)] = result

    def _leaf(self, value: Value) -> Value:
        if value not in self._leaves:
            parameter = PARAMETERS.get(value)
            trained = parameter is not None and parameter.requires_grad and value.type.dtype.is_float and \
                (self._wanted is None or id(parameter) in self._wanted)
            self._leaves[value] = self._input(value.type, value.name_hint, ARRAYS[value], parameter if trained else None)
        return self._leaves[value]

    def _input(self, type: TensorType, name: str | None, array: np.ndarray, trained: Parameter | None) -> Value:
        new = self.graph.add_input(type, name)
        self.feeds.append(array)
        self.key.append(("input", type, trained is not None))
        self._number(new)
        if trained is not None:
            self.trained.append(trained)
            self.wrt.append(new)
        return new

    def _number(self, value: Value) -> None:
        self._numbers[value] = len(self._numbers)


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
    chain = EagerGraph(loss.value, wanted)
    if not chain.wrt:
        raise located_error("backward(): the tensor does not depend on any parameter that requires a gradient (a float "
                            "kiln.nn.Parameter with requires_grad=True), so there is nothing to differentiate")
    seed = _seed(loss, gradient)
    key = (tuple(chain.key), chain._numbers[chain.loss], seed is not None)
    executable = _COMPILED.get(key)
    if executable is None:
        if len(_COMPILED) >= COMPILED_LIMIT:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest: a loop reuses one or two
        executable = _COMPILED[key] = _compile(chain, seed is not None)
    grads = executable(*chain.feeds, *([] if seed is None else [seed]))
    for parameter, grad in zip(chain.trained, grads):
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


def _compile(chain: EagerGraph, seeded: bool) -> Executable:
    graph = chain.graph
    seed = graph.add_input(chain.loss.type, "gradient") if seeded else None
    graph.outputs = differentiate(graph, chain.loss, chain.wrt, seed)
    PassManager(DEFAULT_PIPELINE).run(graph)
    return get_backend("numpy").compile(graph)


def _accumulate(parameter: Parameter, grad: np.ndarray) -> None:
    """``parameter.grad += grad`` as PyTorch's backward does (a copy: the compiled function may reuse its buffers)."""
    current = getattr(parameter, "grad", None)
    if current is None:
        parameter.grad = np.array(grad, dtype=parameter._data.dtype)
    else:
        current += grad
