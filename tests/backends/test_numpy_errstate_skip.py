"""Graphs of ops that only move elements (eager mode's one-op reshapes, transposes, slices) run without entering
``np.errstate``: NumPy meets no float error in them, so skipping it changes nothing; every other op keeps it."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import NO_FLOAT_ERRORS, NumpyBackend
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.types import TensorType

HARD = np.array([[np.inf, np.nan, -np.inf, 3e38], [-0.0, 1e-45, -3e38, 2.0]], np.float32)
"""Values that make arithmetic overflow, divide by zero or go invalid."""

MOVES = {
    "tensor.reshape": ([HARD], {"shape": (8,)}),
    "tensor.transpose": ([HARD], {"perm": (1, 0)}),
    "tensor.broadcast_to": ([HARD], {"shape": (3, 2, 4)}),
    "tensor.concat": ([HARD, HARD], {"axis": 1}),
    "tensor.slice": ([HARD], {"axis": 1, "start": 1, "stop": 4, "step": 2}),
    "tensor.expand_dims": ([HARD], {"axes": (0,)}),
    "tensor.squeeze": ([HARD[None]], {"axes": (0,)}),
    "tensor.take": ([HARD, np.array([1, 0, 1])], {"axis": 0}),
}


def _one_op(name: str, arrays: list[np.ndarray], attrs: dict) -> Graph:
    graph = Graph(name.replace(".", "_"))
    inputs = [graph.add_input(TensorType.of_array(array)) for array in arrays]
    graph.outputs = [Builder(graph).op(name, *inputs, **attrs)]
    return graph


@pytest.mark.parametrize("plan_memory", [False, True])
@pytest.mark.parametrize("name", sorted(MOVES))
def test_a_movement_op_meets_no_float_error_so_it_may_skip_errstate(name, plan_memory):
    arrays, attrs = MOVES[name]
    backend = NumpyBackend(float_errors="raise")
    backend.plan_memory = plan_memory
    executable = backend.compile(_one_op(name, arrays, attrs))
    with np.errstate(all="raise"):  # no wrapper sets the state: the caller's applies, and nothing trips it
        result = np.asarray(executable.function(*arrays))
    assert result.size and np.isnan(result).any()


def test_every_op_said_to_meet_no_float_error_is_checked():
    assert set(MOVES) == NO_FLOAT_ERRORS


@pytest.mark.parametrize("plan_memory", [False, True])
def test_arithmetic_keeps_the_backends_float_errors(plan_memory):
    backend = NumpyBackend(float_errors="raise")
    backend.plan_memory = plan_memory
    executable = backend.compile(_one_op("tensor.mul", [HARD, HARD], {}))
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError):
        executable.function(HARD, HARD)
    executable = NumpyBackend(float_errors="ignore").compile(_one_op("tensor.mul", [HARD, HARD], {}))
    with np.errstate(all="raise"):
        assert np.isinf(np.asarray(executable.function(HARD, HARD))).any()
