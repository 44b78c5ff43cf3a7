"""Porting probe: FlowNetS (ClementPinard/FlowNetPytorch) and PWC-Net's warping with a plain cost volume
(``e2e/flownet_program.py``), written once as their references write them (``torch`` is torch or kiln) and run in both
from kiln's initial weights.

- FlowNetS: ``conv``/``deconv``/``predict_flow`` helpers (``LeakyReLU(0.1, inplace=True)``, ``ConvTranspose2d(4, 2,
  1)``), ``crop_like`` by ``input.size()[2:] == target.size()[2:]`` (80-wide frames: the deconvolutions overshoot and
  are cropped), the init loop (``kaiming_normal_(m.weight, 0.1)``, ``constant_``), five outputs in training and one in
  eval; main.py's two parameter groups from ``named_parameters()`` filtered by ``'weight' in name`` / ``'bias'`` (bias
  decay 0), Adam with ``betas=(momentum, beta)``, ``MultiStepLR``, the target divided by ``div_flow``.
- multiscaleloss.py: ``torch.norm(target - input, 2, 1)``, ``F.interpolate(target, (h, w), mode='area')`` per scale,
  ``loss = 0; loss += weight * ...``, ``realEPE`` by bilinear upsampling; the sparse variant (KITTI: invalid pixels
  zero): ``EPE_map[~mask]`` by a boolean mask, ``sparse_max_pool`` of ``F.adaptive_max_pool2d`` on the positive and
  negative parts, main.py's nearest upsampling of the finest prediction.
- PWC-Net's ``warp``: ``arange(...).view(1, -1).repeat(H, 1)`` grids, ``torch.cat((xx, yy), 1).float()``,
  ``Variable(grid) + flo``, ``vgrid[:, 0, :, :] = 2.0 * vgrid[:, 0, :, :].clone() / max(W - 1, 1) - 1.0`` in place,
  ``grid_sample`` of the features and of ``Variable(torch.ones(x.size()))``, the mask thresholded by
  ``mask[mask < 0.9999] = 0; mask[mask > 0] = 1``; a cost volume by ``F.pad`` and shifted products; a refinement
  head trained on it.

float64 to 1e-10, eagerly and with the whole step one ``kiln.compile(fullgraph=True)`` graph against torch's eager
loop (the sparse loss's boolean selection eagerly only: its shape depends on the data, which torch.compile's fullgraph
refuses too); FlowNetS's eval through ``kiln.onnx.export`` (onnxruntime); FlowNetS in float32 at float32's level.

What broke: nothing; everything agreed as first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.flownet_program import HEIGHT, WIDTH, flownet_s, frames_and_flow, multiscale_loss, pwc_warp
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require, require_torch

pytestmark = pytest.mark.filterwarnings("ignore:Default grid_sample and affine_grid behavior:UserWarning")
DIV_FLOW = 20


def make_optimizer(torch, model):
    """main.py: biases without decay, weights with it; Adam(betas=(momentum, beta)); MultiStepLR."""
    param_groups = [{'params': model.bias_parameters(), 'weight_decay': 0},
                    {'params': model.weight_parameters(), 'weight_decay': 4e-4}]
    optimizer = torch.optim.Adam(param_groups, 1e-3, betas=(0.9, 0.999))
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1, 2], gamma=0.5)


def batch_of(torch, seed=0, sparse=False):
    frames, flow = frames_and_flow(seed, sparse=sparse)
    dtype = torch.get_default_dtype()
    return torch.tensor(frames, dtype=dtype), torch.tensor(flow / DIV_FLOW, dtype=dtype)


def train_flownet(steps=3, sparse=False):
    def train(torch, nn, F, model):
        multiscaleEPE, realEPE = multiscale_loss(torch, F)
        optimizer, scheduler = make_optimizer(torch, model)
        input, target = batch_of(torch, sparse=sparse)
        record = {"losses": [], "epe": []}
        model.train()
        for _ in range(steps):
            output = model(input)
            if sparse:
                h, w = target.size()[-2:]
                output = [F.interpolate(output[0], (h, w)), *output[1:]]
            loss = multiscaleEPE(output, target, weights=None, sparse=sparse)
            flow2_EPE = DIV_FLOW * realEPE(output[0], target, sparse=sparse)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("outputs", {f"flow{2 + i}": array(o) for i, o in enumerate(output)})
            record.setdefault("grads", gradients(model))
            optimizer.step()
            scheduler.step()
            record["losses"].append(loss.item())
            record["epe"].append(flow2_EPE.item())
        record["state"] = snapshot(model)
        model.eval()
        with torch.no_grad():
            input, target = batch_of(torch, seed=1, sparse=sparse)
            record["eval epe"] = (DIV_FLOW * realEPE(model(input), target, sparse=sparse)).item()
        return record

    return train


VARIANTS = {"batch norm": dict(batchNorm=True), "no batch norm, sparse": dict(batchNorm=False)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_flownet_s_trains_as_torch(variant, float64_default):
    options = VARIANTS[variant]
    ours, theirs = run_in_lockstep(lambda torch, nn, F: flownet_s(torch, nn, F, **options),
                                   train_flownet(sparse=not options["batchNorm"]))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_flownet_s_compiled_step_as_torch(float64_default):
    def train(torch, nn, F, model):
        multiscaleEPE, realEPE = multiscale_loss(torch, F)
        optimizer, scheduler = make_optimizer(torch, model)

        def train_step(input, target):
            output = model(input)
            loss = multiscaleEPE(output, target)
            flow2_EPE = DIV_FLOW * realEPE(output[0], target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss.detach(), flow2_EPE.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        model.train()
        record = {"losses": []}
        for _ in range(3):
            loss, epe = run(*batch_of(torch))
            scheduler.step()
            record["losses"].append((loss.item(), epe.item()))
        record["state"] = snapshot(model)
        return record

    ours, theirs = run_in_lockstep(flownet_s, train)
    assert_same_records(ours, theirs)


def test_flownet_s_onnx_export_runs_in_onnxruntime_as_torch(tmp_path):
    torch = require_torch()
    onnxruntime = require("onnxruntime")
    kiln.manual_seed(0)
    model = flownet_s(*libraries("kiln")).eval()
    twin = flownet_s(*libraries("torch")).eval()
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    path = str(tmp_path / "flownets.onnx")
    kiln.onnx.export(model, (kiln.tensor(frames_and_flow()[0].astype(np.float32)),), path, input_names=["frames"],
                     output_names=["flow2"])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for seed in (2, 3):
        frames = frames_and_flow(seed)[0].astype(np.float32)
        (flow2,) = session.run(None, {"frames": frames})
        with torch.no_grad():
            expected = twin(torch.tensor(frames)).numpy()
        assert flow2.shape == (2, 2, HEIGHT // 4, WIDTH // 4)
        np.testing.assert_allclose(flow2, expected, rtol=1e-4, atol=1e-5)


def pwc_refiner(torch, nn, F):
    """One PWC-Net level: shared features, the second frame's warped by the coarse flow, the cost volume, a head
    predicting the residual flow."""
    warp, cost_volume = pwc_warp(torch, nn, F)

    class Refiner(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.LeakyReLU(0.1))
            self.head = nn.Conv2d(25 + 4 + 2, 2, 3, padding=1)

        def forward(self, im1, im2, flow):
            f1, f2 = self.features(im1), self.features(im2)
            cv = cost_volume(f1, warp(f2, flow))
            return flow + self.head(torch.cat((cv, f1, flow), 1))

    return Refiner()


def train_refiner(compiled=False):
    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), 1e-2)
        frames, flow = frames_and_flow(4)
        im1, im2 = torch.tensor(frames[:, :3]), torch.tensor(frames[:, 3:])
        target = torch.tensor(flow[:, :, ::2, ::2] / 2)
        coarse = torch.tensor(flow[:, :, ::2, ::2] / 2 * 0.8)

        def train_step(im1, im2, coarse, target):
            optimizer.zero_grad()
            refined = model(im1, im2, coarse)
            loss = torch.norm(target - refined, 2, 1).mean()
            loss.backward()
            optimizer.step()
            return loss.detach(), refined.detach()

        run = kiln.compile(train_step, fullgraph=True) if compiled and torch is kiln else train_step
        losses = []
        for _ in range(3):
            loss, refined = run(im1, im2, coarse, target)
            losses.append(loss.item())
        return {"losses": losses, "refined": array(refined), "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_pwc_warp_and_cost_volume_train_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(pwc_refiner, train_refiner(compiled))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_pwc_warp_mask_as_torch(float64_default):
    """The warp's mask: ``grid_sample`` of ones is below 0.9999 where a sample point leaves the frame (zeros padding),
    then zeroed by the boolean writes; the warped values and the gradient reaching the flow agree."""

    def warp_record(torch, nn, F, _model):
        warp, _ = pwc_warp(torch, nn, F)
        frames, flow = frames_and_flow(5)
        x = torch.tensor(frames[:, :3, :16, :20])
        flo = torch.tensor(flow[:, :, :16, :20] * 3, requires_grad=True)
        out = warp(x, flo)
        (out * out).sum().backward()
        return {"out": array(out), "zeros": int((out == 0).sum()), "flow grad": array(flo.grad)}

    ours, theirs = run_in_lockstep(lambda torch, nn, F: nn.Identity(), warp_record)
    assert_same_records(ours, theirs)
    assert theirs["zeros"] > 0


def test_flownet_s_float32_as_torch():
    """FlowNetPytorch's float32 as written, to float32's level."""
    ours, theirs = run_in_lockstep(flownet_s, train_flownet(steps=2))
    assert ours["outputs"]["flow2"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)
