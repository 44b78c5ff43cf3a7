"""The ``optim`` ops: direct NumPy kernels equal their decompositions, shape rules explain mistakes, the IR shows them."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import Builder, Graph, TensorType
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.ops import OPS, has_trait
from kiln.compiler.passes.decompose import Decompose

SHAPE = (3, 4)

# (op, number of state operands, attributes, whether it reads the step counter)
UPDATES = [
    ("optim.sgd_update", 0, {}, False),
    ("optim.sgd_update", 0, {"weight_decay": 0.1}, False),
    ("optim.sgd_momentum_update", 1, {"momentum": 0.9}, True),
    ("optim.sgd_momentum_update", 1, {"momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}, True),
    ("optim.sgd_momentum_update", 1, {"momentum": 0.8, "nesterov": True}, True),
    ("optim.adam_update", 2, {}, True),
    ("optim.adam_update", 2, {"beta1": 0.3, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.1}, True),
    ("optim.adam_update", 3, {"amsgrad": True, "weight_decay": 0.1, "decoupled": True}, True),
    ("optim.rmsprop_update", 1, {}, False),
    ("optim.rmsprop_update", 2, {"momentum": 0.9, "weight_decay": 0.1}, False),
    ("optim.rmsprop_update", 3, {"centered": True, "momentum": 0.9, "alpha": 0.9}, False),
    ("optim.adagrad_update", 1, {"lr_decay": 0.01, "weight_decay": 0.1, "eps": 1e-6}, True),
]


def update_arrays(states: int, reads_step: bool, dtype: str, seed: int = 0) -> list[np.ndarray]:
    """Parameter, gradient, non-negative states (second moments dominate first ones), lr and step 3."""
    rng = np.random.default_rng(seed)
    param, grad = (rng.standard_normal(SHAPE).astype(dtype) for _ in range(2))
    state = [(rng.random(SHAPE) + 1).astype(dtype) if i != 1 else (rng.random(SHAPE) * 0.1).astype(dtype) for i in range(states)]
    scalars = [np.asarray(0.01, dtype)] + ([np.asarray(3, np.int64)] if reads_step else [])
    return [param, grad, *state, *scalars]


def single_op_graph(name: str, arrays: list[np.ndarray], **attrs) -> Graph:
    graph = Graph(name.replace(".", "_"))
    inputs = [graph.add_input(TensorType(a.shape, kiln.DType.of(a.dtype))) for a in arrays]
    results = Builder(graph).op(name, *inputs, **attrs)
    graph.outputs = list(results) if isinstance(results, tuple) else [results]
    return graph


def run_both_ways(graph: Graph, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The op through its direct kernel, and through its decomposition into tensor.* primitives."""
    expanded = clone_graph(graph)
    Decompose().run(expanded)
    assert not any(OPS[op.name].is_composite for op in expanded.ops)
    direct = NumpyBackend().compile(graph)(*arrays)
    decomposed = NumpyBackend().compile(expanded)(*arrays)
    return [np.asarray(a) for a in direct], [np.asarray(a) for a in decomposed]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "states", "attrs", "reads_step"), UPDATES, ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(map(str, v.items())))
def test_update_kernel_equals_its_decomposition(name, states, attrs, reads_step, dtype):
    arrays = update_arrays(states, reads_step, dtype)
    direct, decomposed = run_both_ways(single_op_graph(name, arrays, **attrs), arrays)
    assert len(direct) == 1 + states
    for ours, expanded in zip(direct, decomposed):
        assert ours.dtype == np.dtype(dtype) and ours.shape == SHAPE
        np.testing.assert_array_equal(ours, expanded)  # the same operations in the same order: bit for bit
    assert has_trait(name, "non_differentiable") and OPS[name].is_composite


def test_first_momentum_step_copies_the_gradient_as_torch_does():
    arrays = update_arrays(1, True, "float32")
    arrays[-1] = np.asarray(1, np.int64)
    direct, decomposed = run_both_ways(single_op_graph("optim.sgd_momentum_update", arrays, momentum=0.9, dampening=0.5), arrays)
    for new_param, new_buf in (direct, decomposed):
        np.testing.assert_array_equal(new_buf, arrays[1])  # buf = g on step 1, not (1 - dampening) g
        np.testing.assert_allclose(new_param, arrays[0] - 0.01 * arrays[1], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "arrays", "attrs"),
    [
        ("optim.clip_grad_norm", [np.full((2, 3), 3.0, np.float32), np.full((4,), -2.0, np.float32)], {"max_norm": 1.0}),
        ("optim.clip_grad_norm", [np.full((2, 3), 1e-3, np.float32)], {"max_norm": 1.0}),
        ("optim.clip_grad_value", [np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)], {"clip_value": 0.5}),
        ("optim.unscale_grad", [np.linspace(-2, 2, 12, dtype=np.float32), np.asarray(1024.0, np.float32)], {}),
    ],
)
def test_gradient_transform_kernel_equals_its_decomposition(name, arrays, attrs):
    direct, decomposed = run_both_ways(single_op_graph(name, arrays, **attrs), arrays)
    for ours, expanded in zip(direct, decomposed):
        np.testing.assert_allclose(ours, expanded, rtol=1e-6)


def test_clip_grad_norm_rescales_to_the_global_norm():
    grads = [np.full((2, 3), 3.0, np.float32), np.full((4,), -2.0, np.float32)]
    direct, _ = run_both_ways(single_op_graph("optim.clip_grad_norm", grads, max_norm=1.0), grads)
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in direct))
    np.testing.assert_allclose(norm, 1.0, rtol=1e-5)
    small = [np.full((2, 3), 1e-3, np.float32)]
    (unchanged,), _ = run_both_ways(single_op_graph("optim.clip_grad_norm", small, max_norm=1.0), small)
    np.testing.assert_array_equal(unchanged, small[0])  # under the threshold: scaled by exactly 1


@pytest.mark.parametrize(
    ("name", "types", "attrs", "message"),
    [
        ("optim.sgd_update", [(3,), (4,), ()], {}, r"expected tensor<3xf32> like the parameter, got tensor<4xf32>"),
        ("optim.sgd_update", [(3,), (3,), (1,)], {}, r"0-d f32 scalars, got tensor<1xf32>"),
        ("optim.adam_update", [(3,), (3,), (3,), (3,), (), ()], {"amsgrad": True}, r"takes param, grad, 3 state and 2 scalar operands, got 6"),
        ("optim.rmsprop_update", [(3,), (3,), (3,), ()], {"centered": True}, r"2 state and 1 scalar operands, got 4"),
    ],
)
def test_shape_rules_say_what_is_wrong(name, types, attrs, message):
    graph = Graph("bad")
    inputs = [graph.add_input(TensorType(shape, "f32")) for shape in types]
    with pytest.raises(ShapeError, match=message):
        Builder(graph).op(name, *inputs, **attrs)


def test_step_counter_must_be_an_integer_scalar():
    graph = Graph("bad")
    inputs = [graph.add_input(TensorType(shape, "f32")) for shape in [(3,), (3,), (3,), (3,), (), ()]]
    with pytest.raises(ShapeError, match=r"step counter is a 0-d integer"):
        Builder(graph).adam_update(*inputs)


@pytest.mark.parametrize(
    ("optimizer", "op", "reads_step"),
    [
        (lambda p: kiln.optim.SGD(p, lr=0.1), "optim.sgd_update", False),
        (lambda p: kiln.optim.SGD(p, lr=0.1, momentum=0.9), "optim.sgd_momentum_update", True),
        (lambda p: kiln.optim.Adam(p), "optim.adam_update", True),
        (lambda p: kiln.optim.AdamW(p, amsgrad=True), "optim.adam_update", True),
        (lambda p: kiln.optim.RMSprop(p, centered=True), "optim.rmsprop_update", False),
        (lambda p: kiln.optim.Adagrad(p), "optim.adagrad_update", True),
    ],
)
def test_each_update_is_one_op_per_parameter_in_the_printed_ir(optimizer, op, reads_step):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    # a cleanup-only pipeline: the default one lowers composites to primitives and fuses them
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer(model.parameters()), pipeline="cse,dce")
    step(np.ones((2, 4), np.float32), np.array([0, 2]))
    text = str(step.graph)
    assert text.count(f'"{op}"') == 4
    names = [value.name_hint for value in step.graph.inputs]
    assert ("step" in names) == reads_step and "lr" in names
    assert '%0.weight.new' in text


def test_adam_options_are_attributes_and_lr_step_are_operands():
    kiln.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = kiln.optim.AdamW(model.parameters(), betas=(0.8, 0.95), amsgrad=True)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer, pipeline="cse,dce")
    step(np.ones((2, 4), np.float32), np.array([0, 2]))
    update = next(op for op in step.graph.ops if op.name == "optim.adam_update")
    assert update.attrs == {"beta1": 0.8, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.01, "amsgrad": True, "decoupled": True}
    assert [v.name_hint for v in update.operands[-2:]] == ["lr", "step"]
    assert [r.name_hint for r in update.results] == ["weight.new", "weight.exp_avg.new", "weight.exp_avg_sq.new", "weight.max_exp_avg_sq.new"]
