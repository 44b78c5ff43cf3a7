"""Porting probe: RAFT optical flow (princeton-vl/RAFT, small widths: ``e2e/raft_program.py``), written once as the
reference writes it (``torch`` is torch or kiln) and run in both from kiln's initial weights.

- The basic model: instance-norm feature encoder and batch-norm context encoder of residual blocks run on the list
  ``[image1, image2]`` (``torch.cat`` then ``torch.split(x, [batch_dim, batch_dim])``), kaiming init by
  ``isinstance`` over ``self.modules()``, ``torch.split(cnet, [hdim, cdim])``, the all-pairs correlation
  (``torch.matmul(fmap1.transpose(1, 2), fmap2)`` over ``sqrt(torch.tensor(dim).float())``), its pyramid by
  ``F.avg_pool2d``, the lookup: ``torch.linspace`` offsets, ``torch.stack(torch.meshgrid(dy, dx), axis=-1)``, pixel
  coordinates normalised by ``coords.split([1, 1], dim=-1)`` into ``F.grid_sample(..., align_corners=True)``;
  ``coords_grid`` (``meshgrid(indexing="ij")``, ``stack(coords[::-1])``, ``[None].repeat``), the ``SepConvGRU``
  update iterated with ``coords1 = coords1.detach()``, the convex upsampling (``F.unfold(8 * flow, [3, 3])``,
  softmax over the 9 neighbours, a 6-d ``permute``), ``torch.cuda.amp.autocast(enabled=False)``.
- The small model: bottleneck encoders, ``ConvGRU``, ``upflow8`` (``F.interpolate(..., align_corners=True)``).
- train.py: ``sequence_loss`` (``flow_loss = 0.0; flow_loss += gamma**(n - i - 1) * (valid[:, None] * i_loss)
  .mean()``, the validity ``(valid >= 0.5) & (mag < max_flow)``, metrics by a boolean mask and ``.item()``), AdamW
  and ``OneCycleLR(anneal_strategy='linear', cycle_momentum=False)``, ``GradScaler(enabled=False)``'s scale,
  ``unscale_``, ``step`` and ``update`` around ``clip_grad_norm_``, ``freeze_bn`` (a later stage's BatchNorms in eval).
- evaluate.py: ``InputPadder`` (``F.pad(mode='replicate')`` to a multiple of 8, ``unpad``) and
  ``model(image1, image2, iters=..., test_mode=True)`` under ``torch.no_grad()``, the warm start
  (``flow_init=flow_low``), ``validate_kitti``'s metrics (``epe[val].mean().item()``, ``out[val].cpu().numpy()``),
  through ``kiln.compile`` and through ``kiln.onnx.export`` run by onnxruntime.

float64 to 1e-10 (the one change: ``.float()`` casts to float64, ``float_dtype``), eagerly and with the whole step
(zero_grad, forward, sequence loss, backward, clip, AdamW) one ``kiln.compile(fullgraph=True)`` graph against torch's
eager loop; float32 (how RAFT trains) at float32's level.

The encoders' convolution biases that a norm follows have a gradient that is zero in exact arithmetic (rounding noise
in both libraries), which AdamW turns into steps of its own size: those entries agree to 1e-9 (``biases_before_norms``).

What broke: ``torch.meshgrid(dy, dx)`` without ``indexing`` (``CorrBlock.__call__``) was silent in kiln where torch
2.13 warns once a process that the argument will be required; it now warns torch's UserWarning at the user's line
(``frontend/torch_functions.py``, ``tests/frontend/test_meshgrid_indexing_warning_vs_torch.py``). Everything else
(grid_sample's lookup, the detached iterations, the convex upsampling by unfold, the sequence loss, the one-cycle AdamW,
the compiled step, the ONNX export) agreed as first written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.raft_program import flow_pair, raft, sequence_loss, flow_metrics
from oracles import libraries, require, require_torch

ITERS = 3
pytestmark = pytest.mark.filterwarnings("ignore:`(torch|kiln).cuda.amp.autocast:FutureWarning")


def make_optimizer(torch, model, num_steps=10):
    """train.py's ``fetch_optimizer``: AdamW and a linear one-cycle schedule."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=1e-4, eps=1e-8)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 4e-4, num_steps + 100, pct_start=0.05,
                                                    cycle_momentum=False, anneal_strategy='linear')
    return optimizer, scheduler


def batch_of(torch, seed=0):
    dtype = torch.get_default_dtype()
    return [torch.tensor(values, dtype=dtype) for values in flow_pair(seed)]


def train_raft(steps=3, freeze_bn=False):
    """train.py's loop (the reference's order: zero_grad, forward, loss, scaled backward, unscale, clip, step)."""

    def train(torch, nn, F, model):
        optimizer, scheduler = make_optimizer(torch, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            scaler = torch.cuda.amp.GradScaler(enabled=False)
        model.train()
        if freeze_bn:
            model.freeze_bn()
        record = {"losses": [], "metrics": {}}
        for _ in range(steps):
            optimizer.zero_grad()
            image1, image2, flow, valid = batch_of(torch)
            flow_predictions = model(image1, image2, iters=ITERS)
            loss, metrics = sequence_loss(torch, flow_predictions, flow, valid, 0.8)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            record.setdefault("predictions", [array(p) for p in flow_predictions])
            record.setdefault("grads", gradients(model))
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scheduler.step()
            scaler.update()
            record["losses"].append(loss.item())
            for name, value in metrics.items():
                record["metrics"].setdefault(name, []).append(value)
        record["state"] = snapshot(model)
        record["test_mode"] = evaluate(torch, model)
        return record

    return train


def evaluate(torch, model, run=None):
    """evaluate.py: pad to a multiple of 8, ``test_mode=True``, unpad (frames of 28 x 30: padded to 32 x 32)."""
    from e2e.raft_program import raft_utils

    _, F = libraries("kiln" if torch is kiln else "torch")[::2]
    image1, image2, _, _ = batch_of(torch, seed=1)
    image1, image2 = image1[:, :, 2:30, 1:31], image2[:, :, 2:30, 1:31]
    model.eval()
    padder = raft_utils(torch, F).InputPadder(image1.shape)
    image1, image2 = padder.pad(image1, image2)
    with torch.no_grad():
        flow_low, flow_pr = (run or model)(image1, image2, iters=ITERS, test_mode=True)
        # create_sintel_submission's warm start: the next pair starts from the last low-resolution flow
        _, warm_pr = (run or model)(image2, image1, iters=ITERS, flow_init=flow_low, test_mode=True)
    return {"flow_low": array(flow_low), "flow": array(padder.unpad(flow_pr)),
            "warm": array(padder.unpad(warm_pr)), **kitti_metrics(torch, padder.unpad(flow_pr[0]))}


def kitti_metrics(torch, flow):
    """evaluate.py's ``validate_kitti`` for one frame: end-point error and the outlier rate (> 3 px and > 5 %)."""
    _, _, flow_values, valid_values = flow_pair(seed=1)
    flow_gt, valid_gt = torch.tensor(flow_values[0, :, 2:30, 1:31]), torch.tensor(valid_values[0, 2:30, 1:31])
    epe = torch.sum((flow - flow_gt)**2, dim=0).sqrt()
    mag = torch.sum(flow_gt**2, dim=0).sqrt()

    epe = epe.view(-1)
    mag = mag.view(-1)
    val = valid_gt.view(-1) >= 0.5

    out = ((epe > 3.0) & ((epe / mag) > 0.05)).float()
    return {"kitti-epe": epe[val].mean().item(), "kitti-f1": 100 * np.mean(out[val].cpu().numpy())}


VARIANTS = {"basic": dict(), "small": dict(small=True)}


def build(small=False, float64=True):
    def build_model(torch, nn, F):
        return raft(torch, nn, F, small=small, float_dtype=torch.float64 if float64 else None)

    return build_model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_raft_trains_as_torch(variant, float64_default):
    ours, theirs = run_in_lockstep(build(**VARIANTS[variant]), train_raft())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_raft_with_frozen_batch_norm_trains_as_torch(float64_default):
    """A later stage (``args.stage != 'chairs'``): ``model.module.freeze_bn()`` puts the context encoder's
    BatchNorms in eval mode while the rest trains."""
    ours, theirs = run_in_lockstep(build(), train_raft(freeze_bn=True))
    assert_same_records(ours, theirs)


def compiled_raft_training(steps=3):
    """The whole step (zero_grad, forward, sequence loss, backward, clip, AdamW) one ``kiln.compile(fullgraph=True)``
    graph in kiln, torch's eager loop; the metrics (``.item()`` of a boolean-masked selection) read after the step
    from the last prediction it returns, and the schedule stepped between the calls."""

    def train(torch, nn, F, model):
        optimizer, scheduler = make_optimizer(torch, model)

        def train_step(image1, image2, flow, valid):
            optimizer.zero_grad()
            flow_predictions = model(image1, image2, iters=ITERS)
            loss, _ = sequence_loss(torch, flow_predictions, flow, valid, 0.8, metrics=False)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return loss.detach(), flow_predictions[-1].detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        model.train()
        record = {"losses": [], "metrics": {}}
        for _ in range(steps):
            image1, image2, flow, valid = batch_of(torch)
            loss, last = run(image1, image2, flow, valid)
            scheduler.step()
            mag = torch.sum(flow**2, dim=1).sqrt()
            record["losses"].append(loss.item())
            for name, value in flow_metrics(torch, last, flow, (valid >= 0.5) & (mag < 400)).items():
                record["metrics"].setdefault(name, []).append(value)
        record["state"] = snapshot(model)
        return record

    return train


def biases_before_norms(record, atol=1e-9, encoders=("fnet.",)):
    """The encoders' convolution biases that a norm follows (all but the output ``conv2``; the feature encoder's
    ``InstanceNorm2d``, the basic context encoder's ``BatchNorm2d``): the norm subtracts each channel's mean, so their
    gradient is zero in exact arithmetic and rounding noise in both libraries (1e-17 in float64), which AdamW divides
    by its own size into steps (~1e-11 in float64, up to lr in float32) that differ between the libraries."""
    return {"/state/" + name: dict(rtol=0, atol=atol) for name in record["state"]
            if name.startswith(encoders) and name.endswith(".bias") and name.split(".", 1)[1] != "conv2.bias"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_raft_compiled_step_as_torch(variant, float64_default):
    ours, theirs = run_in_lockstep(build(**VARIANTS[variant]), compiled_raft_training())
    assert_same_records(ours, theirs, looser=biases_before_norms(theirs))


def test_raft_compiled_inference_as_torch(float64_default):
    """evaluate.py's ``test_mode`` forward, kiln's through ``kiln.compile(model)``."""

    def train(torch, nn, F, model):
        return evaluate(torch, model, run=kiln.compile(model) if torch is kiln else None)

    ours, theirs = run_in_lockstep(build(), train)
    assert_same_records(ours, theirs)


def test_raft_float32_as_torch():
    """The reference as written (``.float()`` everywhere) in float32, to float32's level."""
    ours, theirs = run_in_lockstep(build(float64=False), train_raft(steps=2))
    assert ours["predictions"][0].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-5,
                        looser=biases_before_norms(theirs, atol=1e-4, encoders=("fnet.", "cnet.")))


def test_raft_onnx_export_runs_in_onnxruntime_as_torch(tmp_path):
    """The test-mode model exported by ``kiln.onnx.export`` (grid_sample, unfold, the 6-d permute) and run by
    onnxruntime gives torch's flows (float32)."""
    torch = require_torch()
    onnxruntime = require("onnxruntime")
    kiln.manual_seed(0)
    lib, nn, F = libraries("kiln")
    model = raft(lib, nn, F).eval()
    twin = raft(*libraries("torch")).eval()
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})

    class TestMode(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, image1, image2):
            return self.model(image1, image2, iters=ITERS, test_mode=True)

    image1, image2, _, _ = (values.astype(np.float32) for values in flow_pair(seed=2))
    path = str(tmp_path / "raft.onnx")
    kiln.onnx.export(TestMode(model), (kiln.tensor(image1), kiln.tensor(image2)), path,
                     input_names=["image1", "image2"], output_names=["flow_low", "flow_up"])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    flow_low, flow_up = session.run(None, {"image1": image1, "image2": image2})
    with torch.no_grad():
        expected_low, expected_up = twin(torch.tensor(image1), torch.tensor(image2), iters=ITERS, test_mode=True)
    np.testing.assert_allclose(flow_low, expected_low.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(flow_up, expected_up.numpy(), rtol=1e-4, atol=1e-4)
