"""Gradient transforms compiled into the step, against PyTorch doing the same around ``backward()``.

``clip_grad_norm``/``clip_grad_value``: ``torch.nn.utils.clip_grad_norm_``/``clip_grad_value_``;
``accumulate=k``: k micro-batches each ``(loss / k).backward()``, one ``optimizer.step()``;
``loss_scale=s``: ``(loss * s).backward()`` and the gradients multiplied by ``1 / s``.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from training_parity import Run, assert_same_step, digit_like_batches, train_side_by_side

RUNS = [
    Run("SGD", dict(lr=0.1, momentum=0.9), dict(clip_grad_norm=0.5)),
    Run("SGD", dict(lr=0.1), dict(clip_grad_value=0.01)),
    Run("Adam", dict(lr=1e-3), dict(clip_grad_value=0.01, clip_grad_norm=0.05)),
    Run("SGD", dict(lr=0.1, momentum=0.9), dict(accumulate=4)),
    Run("SGD", dict(lr=0.1), dict(loss_scale=1024.0)),
    Run("AdamW", dict(lr=1e-3), dict(loss_scale=3.0, accumulate=2, clip_grad_norm=1.0)),
]


@pytest.mark.parametrize("run", RUNS, ids=lambda run: run.id)
def test_transforms_match_torch_for_30_steps(torch, run: Run):
    for index, (ours, theirs) in enumerate(train_side_by_side(torch, run, digit_like_batches(30))):
        assert_same_step(ours, theirs, run, index)


def small_step(**options) -> tuple[kiln.TrainStep, nn.Module]:
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    return kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), **options), model


def test_transforms_are_ops_in_the_printed_ir():
    # a cleanup-only pipeline: the default one lowers composites to primitives and fuses them
    step, _ = small_step(clip_grad_norm=1.0, clip_grad_value=0.5, loss_scale=128.0, accumulate=2, pipeline="cse,dce")
    step(np.ones((4, 4), np.float32), np.array([0, 1, 2, 0]))
    text = str(step.graph)
    assert text.count('"optim.unscale_grad"') == 4 and text.count('"optim.clip_grad_value"') == 4
    assert text.count('"optim.clip_grad_norm"') == 1 and "{max_norm = 1.0}" in text
    assert text.count('"nn.cross_entropy"') == 2  # two micro-batches, two forward passes
    names = [value.name_hint for value in step.graph.inputs]
    assert names[:4] == ["input.0", "target.0", "input.1", "target.1"] and "loss_scale" in names


def test_loss_scale_is_an_input_and_a_power_of_two_changes_nothing():
    x, y = digit_like_batches(1, batch_size=8)[0]
    x = x[:, :4]
    y = y % 3
    plain, plain_model = small_step()
    scaled, scaled_model = small_step(loss_scale=2.0**10)
    for _ in range(3):
        assert plain(x, y) == scaled(x, y)
        scaled.loss_scale *= 2  # a dynamic scaler's move: no recompile
    for name, value in plain_model.state_dict().items():
        np.testing.assert_array_equal(scaled_model.state_dict()[name], value)
    assert scaled.compile_count == 1


def test_accumulation_needs_equal_micro_batches():
    step, _ = small_step(accumulate=4)
    with pytest.raises(kiln.InputError, match=r"accumulate=4: the batch inputs have \[10\] rows, which do not split into 4 equal micro-batches"):
        step(np.ones((10, 4), np.float32), np.zeros(10, np.int64))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(accumulate=0), r"accumulate must be a whole number of micro-batches >= 1, got 0"),
        (dict(clip_grad_norm=-1.0), r"clip_grad_norm must be > 0 \(or None to turn it off\), got -1.0"),
        (dict(clip_norm=1.0), r"compile_train_step has no option clip_norm; the options are"),
    ],
)
def test_bad_options_are_refused_at_compile_train_step(options, message):
    with pytest.raises(kiln.KilnError, match=message):
        small_step(**options)
