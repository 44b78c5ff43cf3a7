"""``AveragedModel.update_parameters(model)`` called inside a ``kiln.compile``d training step (after
``optimizer.step()``, as DDPM and EMA training loops write it) against the same step in PyTorch, eagerly: the update is
traced (``frontend/swa_traced.py``), so it happens at each call, the first call copies and ``n_averaged`` counts.

It raised a TypeError (``np.asarray()`` of a traced tensor) before, even without ``fullgraph``. Every averaging of
``test_swa_utils_vs_torch.py`` (EMA and SWA, ``avg_fn``/``multi_avg_fn``, with buffers: BatchNorm's running
statistics and its integer ``num_batches_tracked``), float64 to 1e-12; the whole step is one graph (``fullgraph=True``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import torch_twins
from optim.test_swa_utils_vs_torch import AVERAGING, STEPS, _assert_same_state, _batches, _mlp


def _step(lib, model, averaged, optimizer):
    def train_step(x, y):
        optimizer.zero_grad()
        loss = lib.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        averaged.update_parameters(model)
        return loss.detach()

    return train_step


@pytest.mark.parametrize("averaging", sorted(AVERAGING))
def test_update_parameters_inside_a_compiled_step_follows_torch(torch, averaging):
    _, model, twin = torch_twins(_mlp, seed=3)
    ours = kiln.optim.swa_utils.AveragedModel(model, **AVERAGING[averaging](kiln.optim.swa_utils))
    theirs = torch.optim.swa_utils.AveragedModel(twin, **AVERAGING[averaging](torch.optim.swa_utils))
    step = kiln.compile(_step(kiln, model, ours, kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)),
                        fullgraph=True)
    twin_step = _step(torch, twin, theirs, torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9))
    for index, (x, y) in enumerate(_batches()[:6]):
        loss = step(kiln.tensor(x), kiln.tensor(y))
        np.testing.assert_allclose(float(loss), float(twin_step(torch.tensor(x), torch.tensor(y))), rtol=1e-12)
        _assert_same_state(ours, theirs, f"{averaging}, compiled step, after step {index}")
    assert int(ours.n_averaged.data) == 6 and len(step.variants) == 1
