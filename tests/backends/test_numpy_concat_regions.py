"""A concat's operands computed straight into their parts of its buffer (``plan_memory.concat_regions``): the planned
code gives the unplanned code's results (one kernel call per op, fresh arrays) when parts are read after the concat,
when some operands cannot be parts (a graph input, a repeated operand, a returned value), and in a training step of an
unrolled LSTM; it copies only the operands that are no part."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.backends.numpy.codegen import numpy_policy
from kiln.compiler.ir.parser import parse
from kiln.compiler.passes.plan_memory import plan_memory

# h1..h3 are stacked into %s; %s's last reader (an exp, which may write into a dying operand of its type) comes before
# %h1's, so the stack's buffer must outlive its own readers
STACKED_IR = """func @stacked(%x: tensor<3x4xf32>, %w: tensor<4x4xf32>) {
  %h1 = "tensor.tanh"(%x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  %m1 = "tensor.matmul"(%h1, %w) : (tensor<3x4xf32>, tensor<4x4xf32>) -> tensor<3x4xf32>
  %h2 = "tensor.tanh"(%m1) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  %m2 = "tensor.matmul"(%h2, %w) : (tensor<3x4xf32>, tensor<4x4xf32>) -> tensor<3x4xf32>
  %h3 = "tensor.tanh"(%m2) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  %e1 = "tensor.expand_dims"(%h1) {axes = [0]} : (tensor<3x4xf32>) -> tensor<1x3x4xf32>
  %e2 = "tensor.expand_dims"(%h2) {axes = [0]} : (tensor<3x4xf32>) -> tensor<1x3x4xf32>
  %e3 = "tensor.expand_dims"(%h3) {axes = [0]} : (tensor<3x4xf32>) -> tensor<1x3x4xf32>
  %s = "tensor.concat"(%e1, %e2, %e3) {axis = 0} : (tensor<1x3x4xf32>, tensor<1x3x4xf32>, tensor<1x3x4xf32>) -> tensor<3x3x4xf32>
  %big = "tensor.exp"(%s) : (tensor<3x3x4xf32>) -> tensor<3x3x4xf32>
  %r = "tensor.reduce_sum"(%big) {axes = [0], keepdims = false} : (tensor<3x3x4xf32>) -> tensor<3x4xf32>
  %t = "tensor.exp"(%r) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  %u = "tensor.exp"(%x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  %v = "tensor.mul"(%t, %u) : (tensor<3x4xf32>, tensor<3x4xf32>) -> tensor<3x4xf32>
  %y = "tensor.add"(%v, %h1) : (tensor<3x4xf32>, tensor<3x4xf32>) -> tensor<3x4xf32>
  return %y : tensor<3x4xf32>
}
"""

# parts along axis 0 without expand_dims, next to a graph input (copied), a repeated operand (copied twice) and a
# returned value (copied: it gets its own array); an axis-1 concat of 3-row operands has no contiguous parts
MIXED_IR = """func @mixed(%x: tensor<2x4xf32>, %z: tensor<1x4xf32>) {
  %a = "tensor.exp"(%x) : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %b = "tensor.tanh"(%x) : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %c = "tensor.neg"(%x) : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %s = "tensor.concat"(%a, %z, %b, %b, %c) {axis = 0} : (tensor<2x4xf32>, tensor<1x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<9x4xf32>
  %q = "tensor.concat"(%a, %c) {axis = 1} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  %n = "tensor.neg"(%s) : (tensor<9x4xf32>) -> tensor<9x4xf32>
  %m = "tensor.exp"(%q) : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %n, %m, %c : tensor<9x4xf32>, tensor<2x8xf32>, tensor<2x4xf32>
}
"""


def _compiled(text: str, planned: bool, monkeypatch):
    monkeypatch.setattr(NumpyBackend, "plan_memory", planned)
    return NumpyBackend().compile(parse(text))


def _assert_planned_matches_unplanned(text: str, arrays, monkeypatch):
    planned, unplanned = _compiled(text, True, monkeypatch), _compiled(text, False, monkeypatch)
    for _ in range(2):  # the second call runs on buffers the first one filled
        for got, expected in zip(planned(*arrays), unplanned(*arrays), strict=True):
            np.testing.assert_array_equal(got, expected)
    return planned.source


def test_stacked_values_are_computed_into_the_stack(monkeypatch):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32)
    source = _assert_planned_matches_unplanned(STACKED_IR, (x, w), monkeypatch)
    assert "concatenate" not in source and "copyto" not in source
    plan = plan_memory(parse(STACKED_IR), numpy_policy())
    stack = next(step.key for step in plan.steps if step.op_name == "tensor.concat")
    assert sorted(region.start for region in plan.region_of.values()) == [0, 1, 2]
    assert {region.concat for region in plan.region_of.values()} == {stack}
    hints = {key.name_hint for key in plan.region_of}
    assert hints == {"h1", "h2", "h3"}
    assert "tensor<3x3x4xf32> <- %h1, %h2, %h3, %s\n" in plan.report()  # the parts live in the stack's buffer
    assert plan.last_use[stack] > max(i for i, step in enumerate(plan.steps) if stack in step.operands)  # %h1's last read


def test_operands_that_cannot_be_parts_are_copied(monkeypatch):
    rng = np.random.default_rng(1)
    x, z = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32)
    source = _assert_planned_matches_unplanned(MIXED_IR, (x, z), monkeypatch)
    plan = plan_memory(parse(MIXED_IR), numpy_policy())
    assert {key.name_hint: (region.start, region.stop) for key, region in plan.region_of.items()} == {"a": (0, 2)}
    assert source.count("np.copyto(") == 4  # %z, %b twice, %c (returned)
    assert "np.concatenate((" in source  # the axis-1 concat


def test_plans_without_the_policy_have_no_regions():
    from kiln.compiler.passes.plan_memory import DEFAULT_POLICY

    assert not plan_memory(parse(STACKED_IR), DEFAULT_POLICY).region_of


def _lstm_losses(planned: bool, monkeypatch) -> tuple[list[float], dict[str, np.ndarray]]:
    monkeypatch.setattr(NumpyBackend, "plan_memory", planned)
    kiln.manual_seed(0)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding, self.lstm, self.head = nn.Embedding(11, 6), nn.LSTM(6, 8, num_layers=2, batch_first=True), nn.Linear(8, 11)

        def forward(self, tokens):
            return self.head(self.lstm(self.embedding(tokens))[0]).reshape((-1, 11))

    model = Model()
    step = kiln.compile_train_step(model, lambda logits, y: F.cross_entropy(logits, y.reshape((-1,))), kiln.optim.Adam(model.parameters(), lr=1e-2))
    tokens = np.random.default_rng(2).integers(0, 11, (3, 6))
    losses = [float(step(tokens[:, :-1], tokens[:, 1:])) for _ in range(3)]
    return losses, {name: np.array(value) for name, value in model.state_dict().items()}


def test_an_unrolled_lstm_trains_as_without_a_memory_plan(monkeypatch):
    (planned_losses, planned), (losses, reference) = _lstm_losses(True, monkeypatch), _lstm_losses(False, monkeypatch)
    assert planned_losses == pytest.approx(losses, rel=1e-6)
    for name, value in reference.items():
        np.testing.assert_allclose(planned[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_scalar_stacked_into_a_vector_is_written_through_a_0d_view():
    # a reduction to a scalar, stacked after a vector (BatchNorm's statistics before one allreduce): its part of the
    # stack is b[6, ...], a 0-d view; b[6] would be a NumPy scalar, which no out= can write (data-parallel BatchNorm broke)
    fn = kiln.compile(lambda x, w: kiln.cat([(w * 2).neg(), (x * x).sum()[None]]) * 3, batch_dim=None)
    x, w = np.ones((4, 5)), np.arange(6.0)
    for _ in range(2):
        np.testing.assert_array_equal(fn(x, w), np.concatenate([-2 * w, [(x * x).sum()]]) * 3)
