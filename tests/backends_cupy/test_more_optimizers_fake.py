"""Adamax, NAdam, RAdam, Adadelta, Rprop, ASGD and Adafactor on the CuPy backend's runtime (the NumPy stand-in for
CuPy, fake_cupy.py): eight steps equal the NumPy backend's (RAdam switches to its rectified step at step 6, ASGD starts
averaging at step 5), the first four's updates fuse into the kernels Adam's do, and no step reads device data on the
host (RAdam's switch, NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``, Adafactor's norms stay on the device)."""

from __future__ import annotations

import numpy as np
import pytest

import fake_cupy
import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.cupy.plan import kernel_plan, lower_for_cupy

STEPS = 8
OPTIMIZERS = {
    "adamax": lambda p: kiln.optim.Adamax(p, lr=1e-2, weight_decay=1e-2),
    "nadam": lambda p: kiln.optim.NAdam(p, lr=1e-2, weight_decay=1e-2),
    "nadam_decoupled_maximize": lambda p: kiln.optim.NAdam(p, lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True, maximize=True),
    "radam": lambda p: kiln.optim.RAdam(p, lr=1e-2),
    "radam_decoupled": lambda p: kiln.optim.RAdam(p, lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
    "adadelta": lambda p: kiln.optim.Adadelta(p, lr=1.0, weight_decay=1e-2),
}
UNLIKE_ADAM = {
    "rprop_maximize": lambda p: kiln.optim.Rprop(p, lr=1e-2, step_sizes=(1e-4, 5e-2), maximize=True),
    "asgd": lambda p: kiln.optim.ASGD(p, lr=5e-2, t0=3, weight_decay=1e-2),
    "adafactor": lambda p: kiln.optim.Adafactor(p, lr=2e-2, weight_decay=1e-2),
}
"""Updates that fuse otherwise (Adafactor reduces the whole gradient and parameter)."""


def mlp() -> nn.Module:
    kiln.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))


def train(backend: str, optimizer_name: str, syncs: list[str] | None = None) -> tuple[list[float], dict[str, np.ndarray], dict]:
    model = mlp()
    optimizer = {**OPTIMIZERS, **UNLIKE_ADAM}[optimizer_name](model.parameters())
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer, backend=backend)
    rng = np.random.default_rng(1)
    losses = []
    for k in range(STEPS):
        fake_cupy.SYNCS.clear()
        loss = step(rng.standard_normal((8, 12)).astype(np.float32), rng.integers(0, 5, 8))
        if k == STEPS - 1 and syncs is not None:
            syncs.extend(fake_cupy.SYNCS)  # the last step, compiled and resident
        losses.append(float(loss))
    state = step.state_dict()  # brings parameters and optimizer state back from the device
    return losses, {k: v.copy() for k, v in state["model"].items()}, state["optimizer"]["state"]


@pytest.mark.parametrize("optimizer_name", [*OPTIMIZERS, *UNLIKE_ADAM])
def test_steps_equal_numpys_and_never_wait_for_the_device(fake, optimizer_name):
    syncs: list[str] = []
    losses, params, state = train("numpy", optimizer_name)
    cupy_losses, cupy_params, cupy_state = train("cupy", optimizer_name, syncs)
    np.testing.assert_allclose(cupy_losses, losses, rtol=1e-4)
    for name, value in params.items():
        np.testing.assert_allclose(cupy_params[name], value, rtol=1e-3, atol=1e-5, err_msg=name)
    for key, entry in state.items():
        for name, value in entry.items():
            np.testing.assert_allclose(np.asarray(cupy_state[key][name]), value, rtol=1e-3, atol=1e-6 * float(np.max(np.abs(value))), err_msg=f"{key}.{name}")
    assert syncs == [], f"the step read device data on the host: {syncs}"


def kernels(optimizer) -> list[str]:
    model = mlp()
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer(model.parameters()), pipeline="cse,dce")  # keeps the optim ops
    step(np.ones((2, 12), np.float32), np.array([0, 2]))
    return [launch.op for launch in kernel_plan(lower_for_cupy(step.graph))]


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_each_update_fuses_into_the_kernels_adams_fuses_into(fake, optimizer_name):
    """Expanded, each update joins its gradient's matmul epilogue: the step launches the kernels an Adam step does."""
    assert kernels(OPTIMIZERS[optimizer_name]) == kernels(lambda p: kiln.optim.Adam(p, lr=1e-2))
