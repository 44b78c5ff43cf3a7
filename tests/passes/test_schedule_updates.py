"""schedule-updates: each optimizer update right after its gradient and the last read of its parameter (or a view of
it), so a weight gradient fused into SGD's update no longer keeps every activation alive to the end of the step."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.passes.manager import PassManager
from kiln.compiler.passes.plan_memory import bytes_summary
from kiln.compiler.passes.schedule_updates import ScheduleUpdates

BATCH = 256


def deep_mlp(seed: int = 0, dtype: str = "float32") -> nn.Module:
    kiln.manual_seed(seed)
    return nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(128, 128, dtype=dtype), nn.Tanh())], nn.Linear(128, 10, dtype=dtype))


def batch(dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, 128)).astype(dtype), rng.integers(0, 10, BATCH)


def pooled_bytes(step) -> int:
    return bytes_summary(list(step.compiled.values())[-1].executable.graph.memory_plan, {"N": BATCH})["pooled"]


def compiled(optimizer: str, scheduled: bool, monkeypatch, dtype: str = "float32"):
    if not scheduled:
        monkeypatch.setattr(ScheduleUpdates, "run", lambda self, graph: False)
    model = deep_mlp(dtype=dtype)
    make = {"sgd": lambda p: kiln.optim.SGD(p, lr=0.1), "momentum": lambda p: kiln.optim.SGD(p, lr=0.1, momentum=0.9),
            "adam": lambda p: kiln.optim.Adam(p, lr=1e-3)}[optimizer]
    step = kiln.compile_train_step(model, F.cross_entropy, make(model.parameters()))
    losses = [step(*batch(dtype)) for _ in range(4)]
    monkeypatch.undo()
    return step, model, losses


def test_sgd_fused_into_early_updates_halves_the_deep_mlps_memory_plan(monkeypatch):
    early, _, _ = compiled("sgd", True, monkeypatch)
    late, _, _ = compiled("sgd", False, monkeypatch)
    assert pooled_bytes(early) < 0.6 * pooled_bytes(late)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_the_steps_values_do_not_change(monkeypatch, optimizer):
    _, early_model, early_losses = compiled(optimizer, True, monkeypatch, "float64")
    _, late_model, late_losses = compiled(optimizer, False, monkeypatch, "float64")
    np.testing.assert_array_equal(early_losses, late_losses)
    for name, value in late_model.state_dict().items():
        np.testing.assert_array_equal(early_model.state_dict()[name], value, err_msg=name)


def test_no_update_precedes_a_read_of_its_parameter_or_of_a_view_of_it():
    """On the step graph: every update follows each reader of its parameter and of the parameter's transposes and
    reshapes; at least one update moved before the end of the backward."""
    model = deep_mlp()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    step(*batch())
    graph = step.graph
    ops = list(graph.ops)
    PassManager("schedule-updates").run(graph)
    position = {op: index for index, op in enumerate(graph.ops)}
    updates = [op for op in graph.ops if op.name == "optim.sgd_update"]
    for update in updates:
        param = update.operands[0]
        views = [result for reader, _ in param.uses if reader.name in ("tensor.transpose", "tensor.reshape") for result in reader.results]
        readers = [reader for value in [param, *views] for reader, _ in value.uses if reader is not update]
        assert all(position[reader] < position[update] for reader in readers)
    assert [op.name for op in ops[-len(updates):]] == ["optim.sgd_update"] * len(updates)  # before: all at the end
    backward = [op for op in graph.ops if op not in updates]
    assert sum(position[update] < position[backward[-1]] for update in updates) == len(updates) - 1  # all but the first layer's


def test_tied_weights_update_after_both_reads():
    """A weight read by an embedding and by the output head: its single update follows both reads (and the values
    match the unscheduled step)."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(12, 16, dtype="float64")
            self.mix = nn.Linear(16, 16, dtype="float64")

        def forward(self, tokens):
            hidden = self.mix(self.embed(tokens)).tanh()
            return hidden @ self.embed.weight.t()

    def run(scheduled: bool) -> dict[str, np.ndarray]:
        kiln.manual_seed(1)
        model = Tied()
        with pytest.MonkeyPatch.context() as patch:
            if not scheduled:
                patch.setattr(ScheduleUpdates, "run", lambda self, graph: False)
            step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
            rng = np.random.default_rng(2)
            for _ in range(3):
                step(rng.integers(0, 12, 20), rng.integers(0, 12, 20))
        return {k: v.copy() for k, v in model.state_dict().items()}

    early, late = run(True), run(False)
    for name, value in late.items():
        np.testing.assert_array_equal(early[name], value, err_msg=name)
