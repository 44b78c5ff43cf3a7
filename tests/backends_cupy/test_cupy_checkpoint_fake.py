"""Activation checkpointing on the CuPy backend (NumPy stand-in for CuPy): the recomputation survives the CuPy
lowering pipeline, and a GPT with checkpointed blocks and dropout trains as on the NumPy backend."""

from __future__ import annotations

import numpy as np

import kiln
from cupy_models import MODELS, comparable
from kiln.backends.cupy import lower_for_cupy
from kiln.utils.checkpoint import checkpoint


def checkpointed_gpt_step(backend):
    make, batch, loss, optimizer = MODELS["gpt_dropout"]
    kiln.manual_seed(0)
    model = make()
    for block in model.blocks:
        forward = block.forward
        block.forward = lambda x, forward=forward: checkpoint(forward, x, use_reentrant=False)
    return model, kiln.compile_train_step(model, loss, optimizer(model.parameters()), backend=backend), batch


def recomputed(graph):
    return sum(op.region is not None and op.region.role == "recompute" for op in graph.ops)


def test_a_checkpointed_gpt_trains_on_cupy_as_on_numpy(fake):
    runs = {}
    for backend in ("numpy", "cupy"):
        model, step, batch = checkpointed_gpt_step(backend)
        rng = np.random.default_rng(0)
        losses = [float(step(*batch(rng))) for _ in range(4)]
        runs[backend] = (losses, comparable({k: np.array(v) for k, v in model.state_dict().items()}), step)
    assert recomputed(runs["cupy"][2].graph) > recomputed(lower_for_cupy(runs["cupy"][2].graph)) > 0  # some fused into kernels
    np.testing.assert_allclose(runs["cupy"][0], runs["numpy"][0], rtol=1e-5)
    for key, value in runs["numpy"][1].items():
        np.testing.assert_allclose(runs["cupy"][1][key], value, rtol=1e-4, atol=1e-6, err_msg=key)
