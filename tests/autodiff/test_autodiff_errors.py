"""What autodiff refuses, and that its messages say what and where."""

from __future__ import annotations

import pytest

from kiln.compiler.autodiff import VJP_RULES, AutodiffError, differentiate
from kiln.compiler.ir import Builder, Graph, TensorType
from kiln.compiler.ops import OPS, register_op


@pytest.mark.parametrize(("shape", "dtype"), [((3,), "f32"), ((2, 2), "f64"), ((), "i64")])
def test_non_scalar_or_integer_output_is_refused(shape, dtype):
    graph = Graph("f")
    x = graph.add_input(TensorType(shape, dtype), "x")
    y = Builder(graph).add(x, x)
    with pytest.raises(AutodiffError, match=r"floating-point scalar.*reduce it first"):
        differentiate(graph, of=y, wrt=[x])


@pytest.fixture
def op_without_rule():
    """A throwaway differentiable op with no VJP rule, removed from the registry afterwards."""
    name = "tensor.test_no_vjp"
    register_op(name, traits={"elementwise"})(lambda x: x)
    yield name
    del OPS[name]


def test_missing_rule_names_the_op_and_where(op_without_rule: str):
    graph = Graph("model")
    x = graph.add_input(TensorType((3,), "f32"), "x")
    b = Builder(graph, location="model.py:14 in forward")
    loss = b.reduce_sum(b.op(op_without_rule, x, name_hint="h"))
    assert op_without_rule not in VJP_RULES
    with pytest.raises(AutodiffError) as error:
        differentiate(graph, of=loss, wrt=[x])
    message = str(error.value)
    assert f"no VJP rule for '{op_without_rule}'" in message
    assert "%h in @model" in message and "model.py:14 in forward" in message
    assert "@vjp_rule" in message and "tensor.mul" in message  # how to fix it, and what is registered
