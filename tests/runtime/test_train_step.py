"""The compiled training step: one graph, in-place updates, input checks, no needless recompiles."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F


def make_step(lr=0.1, **options):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=lr), **options)


def batch(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)


def test_forward_backward_and_update_are_one_graph():
    _, step = make_step()
    step(*batch())
    names = [op.name for op in step.graph.ops]
    assert names.count("optim.sgd_update") == 4
    assert "nn.cross_entropy" in names and names.count("tensor.matmul") >= 5
    assert [v.name_hint for v in step.graph.inputs][-1] == "lr"


def test_parameters_update_in_place_and_are_visible():
    model, step = make_step()
    weight = model.state_dict()["0.weight"]
    before = weight.copy()
    step(*batch())
    assert model.state_dict()["0.weight"] is weight  # the same array, updated in place
    assert not np.array_equal(weight, before)


def test_smaller_batch_and_new_lr_do_not_recompile():
    _, step = make_step()
    step(*batch(10))
    step(*batch(3, seed=1))
    step.optimizer.param_groups[0]["lr"] = 0.01
    step(*batch(10))
    assert step.compile_count == 1


def test_lr_is_read_each_step():
    model, step = make_step(lr=0.0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    step(*batch())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_wrong_dtype_or_shape_gets_a_clear_error_naming_both_types():
    _, step = make_step()
    x, y = batch()
    step(x, y)
    executable = next(iter(step.compiled.values())).executable
    with pytest.raises(kiln.InputError, match=r"expected tensor<Nx6xf32>, got float64 array of shape \(10, 6\)"):
        executable(x.astype(np.float64), y, *[p.data for p in step.optimizer.parameters()], np.float32(0.1))
    with pytest.raises(kiln.TraceError, match=r"mat1 and mat2 shapes cannot be multiplied \(Nx5 and 6x8\)"):
        step(x[:, :5], y)
    with pytest.raises(kiln.InputError, match="leading batch dim"):
        step(np.float32(1.0), y)


def test_a_step_without_its_target_or_with_one_array_too_many_says_what_it_takes():
    _, step = make_step()
    x, y = batch()
    with pytest.raises(kiln.InputError, match=r"got 1 batch array\(s\).*Sequential.forward does not take 0.*step\(\*model_inputs, target\)"):
        step(x)
    with pytest.raises(kiln.InputError, match=r"got 3 batch array\(s\).*does not take 2"):
        step(x, x, y)
    assert step(x, y) > 0  # nothing was left half-compiled


def test_pipeline_options_verify_and_print(capsys):
    _, step = make_step(verify_each=True, print_ir_after_all=True)
    step(*batch())
    printed = capsys.readouterr().err
    assert "IR after cse" in printed and "IR after dce" in printed
