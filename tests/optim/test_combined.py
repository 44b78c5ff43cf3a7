"""Combined optimizers: Muon on the matrices and AdamW on the rest in one step, as PyTorch steps the two in turn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from test_muon import torch_muon_in_float64

SIZES = (10, 16, 4)


def mlp_with_biases(torch: Any) -> tuple[Any, Any]:
    kiln.manual_seed(5)
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1], dtype="float64"), nn.Tanh(), nn.Linear(SIZES[1], SIZES[2], dtype="float64"))
    twin = torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.Tanh(), torch.nn.Linear(SIZES[1], SIZES[2])).double()
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return model, twin


def split(optim: Any, parameters: list[Any]) -> tuple[Any, Any]:
    """Muon (lr 0.02) for the 2-D parameters, AdamW (lr 1e-2) for the others."""
    parameters = list(parameters)
    matrices = [p for p in parameters if len(p.shape) == 2]
    others = [p for p in parameters if len(p.shape) != 2]
    return optim.Muon(matrices, lr=0.02), optim.AdamW(others, lr=1e-2)


def batches(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((24, SIZES[0])), rng.integers(0, SIZES[-1], 24)) for _ in range(count)]


def torch_step(torch: Any, twin: Any, optimizers: tuple[Any, ...], x: np.ndarray, y: np.ndarray) -> float:
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
    return loss.item()


def test_muon_and_adamw_in_one_step_match_torch_stepping_both(torch):
    model, twin = mlp_with_biases(torch)
    muon, adamw = split(kiln.optim, model.parameters())
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Combined(muon, adamw))
    theirs = split(torch.optim, list(twin.parameters()))
    theirs[1].defaults["foreach"] = False
    schedules = kiln.optim.lr_scheduler.StepLR(adamw, step_size=3, gamma=0.5), torch.optim.lr_scheduler.StepLR(theirs[1], step_size=3, gamma=0.5)
    with torch_muon_in_float64(torch):
        for x, y in batches(10):
            np.testing.assert_allclose(step(x, y), torch_step(torch, twin, theirs, x, y), rtol=1e-10)
            for schedule in schedules:
                schedule.step()
    for name, value in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    assert step.compile_count == 1 and muon.step_count == adamw.step_count == 10
    assert set(map(id, muon.state)) == {id(p) for p in muon.parameters()}  # keyed by parameter, as torch's
    assert set(map(id, adamw.state)) == {id(p) for p in adamw.parameters()}
    text = str(step.graph)
    assert text.count('"optim.adam_update"') == 2  # the biases' updates; the weights' are Muon's matmuls


def test_a_saved_combined_run_resumes_exactly(tmp_path):
    def fresh() -> tuple[Any, Any]:
        kiln.manual_seed(5)
        model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1], dtype="float64"), nn.Tanh(), nn.Linear(SIZES[1], SIZES[2], dtype="float64"))
        return model, kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Combined(*split(kiln.optim, model.parameters())))

    data = batches(6)
    _, step = fresh()
    for x, y in data[:3]:
        step(x, y)
    step.save(str(tmp_path / "run.npz"))
    expected = [step(x, y) for x, y in data[3:]]
    _, resumed = fresh()
    resumed.load(str(tmp_path / "run.npz"))
    assert resumed.optimizer.step_count == 3
    np.testing.assert_array_equal([resumed(x, y) for x, y in data[3:]], expected)
    state = resumed.optimizer.state_dict()
    assert [sorted(entry) for entry in state["state"].values()] == [["momentum_buffer"]] * 2 + [["exp_avg", "exp_avg_sq", "step"]] * 2


def test_compile_train_step_takes_a_list_of_optimizers(torch):
    model, _ = mlp_with_biases(torch)
    muon, adamw = split(kiln.optim, model.parameters())
    step = kiln.compile_train_step(model, F.cross_entropy, [muon, adamw])
    assert isinstance(step.optimizer, kiln.optim.Combined) and step.optimizer.optimizers == [muon, adamw]
    x, y = batches(1)[0]
    step(x, y)
    assert muon.step_count == adamw.step_count == 1


def test_overlapping_or_uncompiled_members_are_refused():
    model = nn.Sequential(nn.Linear(4, 3))
    weight, bias = model.parameters()
    with pytest.raises(kiln.KilnError, match=r"shape \(3, 4\) is in both SGD and AdamW"):
        kiln.optim.Combined(kiln.optim.SGD([weight, bias]), kiln.optim.AdamW([weight]))
    with pytest.raises(kiln.KilnError, match="at least one optimizer"):
        kiln.optim.Combined()
    with pytest.raises(kiln.KilnError, match="add the group to the member optimizer"):
        kiln.optim.Combined(kiln.optim.SGD([weight]), kiln.optim.SGD([bias])).add_param_group({"params": []})
