"""Porting probe: Monodepth2's self-supervised monocular depth (nianticlabs/monodepth2, small:
``e2e/monodepth2_program.py``), written once as the reference writes it (``torch`` is torch or kiln) and run in both
from kiln's initial weights.

- layers.py: ``disp_to_depth``, ``rot_from_axisangle`` (``torch.norm(vec, 2, 2, True)``, a 4x4 ``torch.zeros`` filled
  by ``rot[:, 0, 0] = torch.squeeze(...)``), ``get_translation_matrix`` (``T[:, :3, 3, None] = t``),
  ``transformation_from_parameters`` (``t *= -1`` on a clone, ``R.transpose(1, 2)``), ``BackprojectDepth`` (a NumPy
  ``meshgrid(indexing='xy')`` float32 ``nn.Parameter(requires_grad=False)`` stacked and concatenated with float-default
  ones), ``Project3D`` (``pix_coords[..., 0] /= self.width - 1`` in place on a view in the graph), ``SSIM`` by
  ``nn.AvgPool2d(3, 1)`` after ``nn.ReflectionPad2d(1)``, the edge-aware ``get_smooth_loss`` (``grad_disp_x *=
  torch.exp(-grad_img_x)``), ``ConvBlock``/``Conv3x3`` (``int(in_channels)`` of NumPy ints), nearest ``upsample``.
- networks: the ``DepthDecoder`` (an ``OrderedDict`` of convs keyed by tuples, ``nn.ModuleList(list(self.convs
  .values()))``, ``self.outputs = {}`` written in ``forward``, list ``+=`` then ``torch.cat``), ``PoseCNN`` (a plain
  dict of convs registered through a ModuleList, ``0.01 * out.view(-1, n - 1, 1, 6)``), a residual encoder whose
  ``forward`` appends to ``self.features``.
- trainer.py: ``predict_poses``, ``generate_images_pred`` (bilinear ``F.interpolate`` of each scale's disparity to full
  size, ``F.grid_sample(..., padding_mode="border")`` with the default ``align_corners`` and its warning),
  ``compute_losses`` (the automasking ``torch.min(combined, dim=1)`` over identity and warped reprojection losses,
  ``(idxs > ...).float()``, ``loss += ...`` from the int 0, ``total_loss /= self.num_scales``) on a dict of inputs keyed
  by tuples; Adam and ``StepLR``.

float64 to 1e-10 (the one change: the intrinsics' ``np.float32`` is the default dtype), eagerly and with the whole
step (forward, losses, backward, Adam) one ``kiln.compile(fullgraph=True)`` graph on the dict of inputs against torch's
eager loop; depth inference through ``kiln.compile`` and ``kiln.onnx.export`` (onnxruntime); float32 as written.

What broke: nothing; the models, the warping, the automasking and the compiled step on the tuple-keyed dict agreed as
first written (the frames are 64 x 96 so the encoder's last feature keeps the 2 rows a reflection pad needs, which
both libraries refuse below that).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.monodepth2_program import HEIGHT, WIDTH, kitti_inputs, layers, monodepth2, tie_noise_values
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require, require_torch

pytestmark = pytest.mark.filterwarnings("ignore:Default grid_sample and affine_grid behavior:UserWarning")


def inputs_of(torch, seed=0):
    dtype = np.float64 if torch.get_default_dtype() == torch.float64 else np.float32
    return kitti_inputs(torch, seed, dtype)


def make_optimizer(torch, model):
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.1)


def record_outputs(outputs, losses):
    keep = {key: value for key, value in outputs.items()
            if key[0] in ("disp", "cam_T_cam", "color") or str(key).startswith("identity_selection")}
    return {**{str(key): array(value) for key, value in keep.items()},
            **{name: value.item() for name, value in losses.items()}}


def train_monodepth2(steps=3):
    """trainer.py's ``run_epoch``: ``process_batch``, ``zero_grad``, ``backward``, ``step``; ``StepLR`` per epoch."""

    def train(torch, nn, F, model):
        optimizer, scheduler = make_optimizer(torch, model)
        inputs, noise = inputs_of(torch), [torch.tensor(n) for n in tie_noise_values()]
        record = {"losses": []}
        model.train()
        for _ in range(steps):
            outputs, losses = model.process_batch(inputs, noise)
            optimizer.zero_grad()
            losses["loss"].backward()
            record.setdefault("first", record_outputs(outputs, losses))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            scheduler.step()
            record["losses"].append(losses["loss"].item())
        record["state"] = snapshot(model)
        record["depth"] = predict_depth(torch, model)
        return record

    return train


def predict_depth(torch, model, run=None):
    """test_simple.py: the encoder and decoder in eval mode, ``disp_to_depth`` of scale 0."""
    model.eval()
    with torch.no_grad():
        image = inputs_of(torch, seed=1)[("color", 0, 0)]
        disp = (run or depth_network(model))(image)
        _, depth = layers(torch, torch.nn, torch.nn.functional).disp_to_depth(disp, 0.1, 100)
    return array(depth)


def depth_network(model):
    return lambda image: model.models["depth"](model.models["encoder"](image))[("disp", 0)]


# The automasking min picks per pixel, so both libraries must agree on every comparison (they do).
def test_monodepth2_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(monodepth2, train_monodepth2())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_monodepth2_compiled_step_as_torch(float64_default):
    def train(torch, nn, F, model):
        optimizer, scheduler = make_optimizer(torch, model)

        def train_step(inputs, noise):
            outputs, losses = model.process_batch(inputs, noise)
            optimizer.zero_grad()
            losses["loss"].backward()
            optimizer.step()
            return losses["loss"].detach(), outputs[("disp", 0)].detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        model.train()
        record = {"losses": [], "disp": []}
        inputs, noise = inputs_of(torch), [torch.tensor(n) for n in tie_noise_values()]
        for _ in range(3):
            loss, disp = run(inputs, noise)
            scheduler.step()
            record["losses"].append(loss.item())
            record["disp"].append(array(disp))
        record["state"] = snapshot(model)
        record["depth"] = predict_depth(torch, model, run=kiln.compile(depth_network(model)) if torch is kiln else None)
        return record

    ours, theirs = run_in_lockstep(monodepth2, train)
    assert_same_records(ours, theirs)


def test_monodepth2_float32_as_torch():
    """The reference's float32: the first outputs (disparities, poses, warped frames, automasks), the first gradients
    and the losses to float32's level. The state after Adam steps is not compared: the encoder's first gradients are
    small sums of the warping's float32 rounding (sample points move by ~1e-5 px), which Adam divides by their own
    size into steps of up to lr that differ between the libraries (torch against itself with another summation order
    would differ so too)."""
    ours, theirs = run_in_lockstep(monodepth2, train_monodepth2(steps=2))
    assert ours["depth"].dtype == np.float32
    for record in (ours, theirs):
        del record["state"], record["depth"]
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def test_depth_network_onnx_export_runs_in_onnxruntime_as_torch(tmp_path):
    """The eval encoder and decoder (reflection pads, ELU, nearest upsampling, the disparity dict's scale 0) exported by
    ``kiln.onnx.export`` and run by onnxruntime give torch's disparities (float32)."""
    torch = require_torch()
    onnxruntime = require("onnxruntime")
    kiln.manual_seed(0)
    lib, nn, F = libraries("kiln")
    model = monodepth2(lib, nn, F).eval()
    twin = monodepth2(*libraries("torch")).eval()
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})

    class DepthNetwork(nn.Module):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder

        def forward(self, image):
            return self.decoder(self.encoder(image))[("disp", 0)]

    path = str(tmp_path / "monodepth2.onnx")
    image = inputs_of(kiln)[("color", 0, 0)]
    kiln.onnx.export(DepthNetwork(model.models["encoder"], model.models["depth"]), (image,), path,
                     input_names=["image"], output_names=["disp"])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for seed in (2, 3):
        image = inputs_of(torch, seed)[("color", 0, 0)]
        (disp,) = session.run(None, {"image": image.numpy()})
        with torch.no_grad():
            expected = depth_network(twin)(image)
        assert disp.shape == (2, 1, HEIGHT, WIDTH)
        np.testing.assert_allclose(disp, expected.numpy(), rtol=1e-4, atol=1e-6)
