"""What recompiles a training step (counted by ``TrainStep.compile_count``): never the lr or the step counter,
always an option that is an attribute of an update op, or a change of parameter groups."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F

X, Y = np.random.default_rng(0).random((6, 4), dtype=np.float32), np.array([0, 1, 2, 0, 1, 2])


def adam_step() -> tuple[kiln.TrainStep, kiln.optim.Optimizer, nn.Module]:
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = kiln.optim.Adam(model.parameters(), lr=1e-2)
    return kiln.compile_train_step(model, F.cross_entropy, optimizer, pipeline="cse,dce"), optimizer, model  # keeps the optim ops


def test_changing_the_lr_every_step_never_recompiles():
    step, optimizer, _ = adam_step()
    for index in range(10):
        optimizer.param_groups[0]["lr"] = 1e-2 / (index + 1)
        step(X, Y)
    assert step.compile_count == 1
    assert optimizer.step_count == 10


def test_the_step_counter_is_an_input_fed_each_call():
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = kiln.optim.Adagrad(model.parameters(), lr=0.1, lr_decay=1.0)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
    optimizer.step_count = 999  # the next update is step 1000: lr / (1 + 999 lr_decay)
    before = {name: value.copy() for name, value in model.state_dict().items()}
    step(X, Y)
    assert [v.name_hint for v in step.graph.inputs][-2:] == ["lr", "step"]
    moved = max(float(np.max(np.abs(value - before[name]))) for name, value in model.state_dict().items())
    np.testing.assert_allclose(moved, 0.1 / 1000, rtol=1e-4)  # a first Adagrad update moves each weight by the decayed lr
    assert optimizer.step_count == 1000 and step.compile_count == 1


def test_changing_an_attribute_option_recompiles_and_is_used():
    step, optimizer, _ = adam_step()
    step(X, Y)
    optimizer.param_groups[0]["betas"] = (0.5, 0.9)
    step(X, Y)
    assert step.compile_count == 2
    update = next(op for op in step.graph.ops if op.name == "optim.adam_update")
    assert (update.attrs["beta1"], update.attrs["beta2"]) == (0.5, 0.9)
    step(X, Y)
    assert step.compile_count == 2


def test_a_new_parameter_group_recompiles():
    step, optimizer, model = adam_step()
    step(X, Y)
    frozen_weight = model[2].weight
    params = optimizer.param_groups[0]["params"]  # train it in its own group, at its own lr (by identity: == of two
    del params[next(i for i, p in enumerate(params) if p is frozen_weight)]  # parameters is elementwise, as torch's)
    optimizer.add_param_group({"params": [frozen_weight], "lr": 0.0})
    before = frozen_weight.data.copy()
    step(X, Y)
    assert step.compile_count == 2
    np.testing.assert_array_equal(frozen_weight.data, before)
    assert [v.name_hint for v in step.graph.inputs][-3:] == ["lr", "lr1", "step"]
