"""Activation checkpointing end to end: the same training as without it, to the last bit (float64), against
``torch.utils.checkpoint`` in lockstep, on onnxruntime, and with a lower planned memory peak on NumPy."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.passes.plan_memory import bytes_summary
from kiln.runtime.data import lm_loss
from kiln.utils.checkpoint import checkpoint, checkpoint_sequential
from lockstep import sgd_in_lockstep
from oracles import require

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from gpt_tiny import GPT  # noqa: E402


def residual_mlp(lib, nn, checkpoint, width=12, depth=3, dropout=0.0):
    """Residual tanh blocks, each one checkpoint: written once for kiln and for torch. With ``dropout``, the second
    Linear reads the dropped activations (its weight gradient needs them: the recomputation must draw the same mask)."""

    def block():
        return nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Dropout(dropout), nn.Linear(2 * width, width), nn.Tanh())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([block() for _ in range(depth)])
            self.head = nn.Linear(width, 5)

        def forward(self, x):
            for block in self.blocks:
                x = x + (checkpoint(block, x, use_reentrant=False) if checkpoint else block(x))
            return self.head(x)

    return Net()


def checkpoint_blocks(model):
    """``checkpoint(block, x)`` for each GPT block, as a PyTorch user wraps them."""
    for block in model.blocks:
        forward = block.forward
        block.forward = lambda x, forward=forward: checkpoint(forward, x, use_reentrant=False)
    return model


def gpt(checkpointed, dropout=0.0):
    kiln.manual_seed(0)
    model = GPT(11, 8, 16, 2, 2, dropout=dropout).to("float64")
    return checkpoint_blocks(model) if checkpointed else model


def mlp(checkpointed, dropout=0.0):
    kiln.manual_seed(0)
    return residual_mlp(kiln, nn, checkpoint if checkpointed else None, dropout=dropout).to("float64")


def mlp_batch(rng):
    return rng.standard_normal((6, 12)), rng.integers(0, 5, 6)


def gpt_batch(rng):
    tokens = rng.integers(0, 11, (4, 9))
    return tokens[:, :-1], tokens[:, 1:]


CASES = {
    "mlp-sgd": (mlp, mlp_batch, F.cross_entropy, lambda p: kiln.optim.SGD(p, lr=0.1, momentum=0.9)),
    "mlp-adam": (mlp, mlp_batch, F.cross_entropy, lambda p: kiln.optim.Adam(p, lr=1e-2)),
    "mlp-dropout-adam": (lambda c: mlp(c, dropout=0.4), mlp_batch, F.cross_entropy, lambda p: kiln.optim.Adam(p, lr=1e-2)),
    "gpt-adamw": (gpt, gpt_batch, lm_loss, lambda p: kiln.optim.AdamW(p, lr=3e-3)),
    "gpt-dropout-sgd": (lambda c: gpt(c, dropout=0.3), gpt_batch, lm_loss, lambda p: kiln.optim.SGD(p, lr=0.1)),
    "gpt-dropout-adam": (lambda c: gpt(c, dropout=0.3), gpt_batch, lm_loss, lambda p: kiln.optim.Adam(p, lr=3e-3)),
}


def train(case, checkpointed, backend="numpy", steps=4):
    make, batch, loss, optimizer = CASES[case]
    model = make(checkpointed)
    step = kiln.compile_train_step(model, loss, optimizer(model.parameters()), backend=backend, verify_each=True)
    rng = np.random.default_rng(1)
    losses = [float(step(*batch(rng))) for _ in range(steps)]
    return losses, {name: np.array(value) for name, value in model.state_dict().items()}, step


def recomputed(graph):
    return [op for op in graph.ops if op.region is not None and op.region.role == "recompute"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpointed_training_equals_plain_training(case):
    plain_losses, plain, _ = train(case, False)
    losses, state, step = train(case, True)
    assert recomputed(step.graph) and recomputed(list(step.compiled.values())[-1].executable.graph)  # the NumPy pipeline kept them
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-12)
    for name, value in plain.items():
        np.testing.assert_allclose(state[name], value, rtol=1e-12, atol=1e-15, err_msg=name)


def test_dropout_inside_a_region_is_recomputed_with_the_same_draw():
    _, _, step = train("mlp-dropout-adam", True, steps=1)
    draws = [op for op in step.graph.ops if op.name in ("nn.dropout", "tensor.random_uniform")]
    streams = {(op.attrs["stream"], str(op.region)) for op in draws}
    assert {region for _, region in streams} >= {"checkpoint(0)", "recompute(0)", "checkpoint(1)", "recompute(1)", "checkpoint(2)", "recompute(2)"}
    forward = {stream for stream, region in streams if region.startswith("checkpoint")}
    assert forward == {stream for stream, region in streams if region.startswith("recompute")}  # same streams: same masks


def test_gradients_of_a_checkpointed_function_equal_the_plain_ones():
    weights = np.random.default_rng(0).standard_normal((2, 5, 5))

    def loss(x, layered):
        for w in weights:
            x = checkpoint(lambda h: (h @ kiln.tensor(w)).tanh().sin(), x) if layered else (x @ kiln.tensor(w)).tanh().sin()
        return (x * x).sum()

    x = np.random.default_rng(1).standard_normal((3, 5))
    np.testing.assert_array_equal(kiln.grad(lambda x: loss(x, True))(x), kiln.grad(lambda x: loss(x, False))(x))


def test_lockstep_with_torch_utils_checkpoint():
    torch = require("torch")
    import torch.utils.checkpoint

    ours = mlp(True)
    theirs = residual_mlp(torch, torch.nn, torch.utils.checkpoint.checkpoint).double()
    theirs.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in ours.state_dict().items()})
    rng = np.random.default_rng(2)
    batches = [mlp_batch(rng) for _ in range(4)]
    assert len(list(sgd_in_lockstep(torch, ours, theirs, batches, "cross_entropy", lr=0.1, rtol=1e-12))) == 4
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-11, atol=1e-14, err_msg=name)


def test_checkpoint_sequential_trains_as_torchs():
    torch = require("torch")
    import torch.utils.checkpoint

    def deep(lib, nn, sequential):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(*[layer for _ in range(4) for layer in (nn.Linear(8, 8), nn.Tanh())])

            def forward(self, x):
                return sequential(self.body, 3, x, use_reentrant=False)

        return Net()

    kiln.manual_seed(0)
    ours, theirs = deep(kiln, nn, checkpoint_sequential).to("float64"), deep(torch, torch.nn, torch.utils.checkpoint.checkpoint_sequential).double()
    theirs.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in ours.state_dict().items()})
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((5, 8)), rng.standard_normal((5, 8))) for _ in range(3)]
    assert len(list(sgd_in_lockstep(torch, ours, theirs, batches, "mse", rtol=1e-12))) == 3


# Memory: what the plan keeps live at once.


def planned_peak(compiled, batch):
    """The most bytes the NumPy backend's memory plan keeps live at once, at batch size ``batch``."""
    return bytes_summary(compiled.executable.graph.memory_plan, {"N": batch})["peak"]


def deep_mlp(segments):
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*[layer for _ in range(8) for layer in (nn.Linear(64, 64), nn.Tanh())])
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(checkpoint_sequential(self.body, segments, x) if segments > 1 else self.body(x))

    kiln.manual_seed(0)
    return Deep()


def test_a_checkpointed_deep_mlp_plans_a_lower_peak():
    peaks = {}
    for segments in (1, 2, 4):
        model = deep_mlp(segments)
        step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters()))
        peaks[segments] = planned_peak(step.compile(kiln.TensorSpec(("N", 64)), kiln.TensorSpec(("N",), "int64")), 512)
    assert peaks[4] <= peaks[2] < 0.8 * peaks[1], peaks


def test_a_checkpointed_gpt_plans_a_lower_peak():
    peaks = {}
    for checkpointed in (False, True):
        model = checkpoint_blocks(GPT(64, 32, 32, 2, 4)) if checkpointed else GPT(64, 32, 32, 2, 4)
        step = kiln.compile_train_step(model, lm_loss, kiln.optim.AdamW(model.parameters()))
        peaks[checkpointed] = planned_peak(step.compile(kiln.TensorSpec(("N", 32), "int64"), kiln.TensorSpec(("N", 32), "int64")), 16)
    assert peaks[True] < 0.7 * peaks[False], peaks


def assert_backward_reads_no_region_internals(graph):
    loss_position = graph.ops.index(graph.outputs[0].producer)
    for op in graph.ops[loss_position + 1 :]:
        for operand in op.operands:
            region = operand.producer.region if operand.producer else None
            assert region is None or region.role != "checkpoint", (op.name, str(region))


def test_forward_values_inside_a_region_are_not_read_by_the_backward_even_after_more_cleanup():
    """After the step's pipeline no op after the loss reads a forward value computed inside a region (but its outputs),
    and more cleanup (CSE above all) merges no recomputed copy back into the forward."""
    _, _, step = train("gpt-adamw", True, steps=1)
    graph = clone_graph(step.graph)
    assert_backward_reads_no_region_internals(graph)
    copies = len(recomputed(graph))
    kiln.PassManager("canonicalize,constant-fold,cse,dce", verify_each=True).run(graph)
    assert len(recomputed(graph)) == copies > 0
    assert_backward_reads_no_region_internals(graph)


# ONNX: the recomputation is in the exported step, and onnxruntime trains as without it.


def test_onnxruntime_trains_a_checkpointed_gpt_with_dropout_as_without():
    require("onnxruntime")
    plain_losses, plain, _ = train("gpt-dropout-adam", False, backend="onnxruntime", steps=3)
    losses, state, step = train("gpt-dropout-adam", True, backend="onnxruntime", steps=3)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-12)
    for name, value in plain.items():
        np.testing.assert_allclose(state[name], value, rtol=1e-10, atol=1e-13, err_msg=name)
    numpy_losses, _, _ = train("gpt-dropout-adam", True, steps=3)
    np.testing.assert_allclose(losses, numpy_losses, rtol=1e-9)


def test_the_exported_train_step_holds_the_recomputation(tmp_path):
    require("onnxruntime")
    counts = {}
    for checkpointed in (False, True):
        _, _, step = train("mlp-adam", checkpointed, steps=1)
        model = kiln.export_onnx_train_step(step, str(tmp_path / f"step{checkpointed}.onnx"))
        counts[checkpointed] = sum(node.op_type == "MatMul" for node in model.graph.node)
        resumed = kiln.load_onnx_train_step(str(tmp_path / f"step{checkpointed}.onnx"), backend="onnxruntime")
        assert np.isfinite(resumed(*mlp_batch(np.random.default_rng(0))))
    assert counts[True] > counts[False], counts  # the blocks' first Linear runs again in the backward
