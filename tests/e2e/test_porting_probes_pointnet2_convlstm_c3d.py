"""Porting probes: PointNet++, ConvLSTM, and C3D / R(2+1)D / a 3-D U-Net level, each written once as its reference
writes it (``torch`` is torch or kiln, tiny sizes) and run in both from kiln's initial weights in float64: first
outputs, first gradients, losses, parameters and BatchNorm buffers after the steps, eval outputs agree to 1e-10 (except
where noted), eagerly and with the whole step (zero_grad, forward, loss, backward, optimizer step) as one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop; inference through ``kiln.compile`` and through
``kiln.onnx.export`` run by onnxruntime (float32, two batches through one file).

- PointNet++ (yanx27/Pointnet_Pointnet2_pytorch ``models/pointnet2_utils.py``, ``pointnet2_cls_ssg.py``,
  ``pointnet2_sem_seg.py``, ``train_classification.py``, ``provider.py``): ``square_distance`` (``-2 * matmul``, ``+=``
  the ``.view(B, N, 1)`` norms), ``index_points`` (``arange(B).view(view_shape).repeat(repeat_shape)``,
  ``points[batch_indices, idx, :]``), ``farthest_point_sample`` (the Python loop: ``centroids[:, i] = farthest``,
  ``torch.ones(B, N) * 1e10``, ``distance[mask] = dist[mask]``, ``torch.max(distance, -1)[1]``; its ``torch.randint``
  start fed as one added argument, the randint path checked eagerly and compiled), ``query_ball_point``
  (``group_idx[sqrdists > radius ** 2] = N``, ``.sort(dim=-1)[0][:, :, :nsample]``, ``group_first[mask]``),
  ``PointNetSetAbstraction`` (Conv2d/BatchNorm2d MLPs, ``torch.max(new_points, 2)[0]``, ``group_all``) and its
  multi-scale ``PointNetSetAbstractionMsg`` (in-place ``grouped_xyz -= new_xyz.view(B, S, 1, C)`` on a gather),
  ``PointNetFeaturePropagation`` (``dists.sort``, inverse-distance weights, the ``S == 1`` repeat), the NumPy
  augmentation of ``points.data.numpy()`` and ``torch.Tensor(points)``, Adam with weight decay or SGD, ``StepLR``, the
  weighted ``F.nll_loss`` of the segmentation over ``seg_pred.contiguous().view(-1, C)``.
- DGCNN (WangYueFt/dgcnn ``pytorch/model.py``, ``util.py``, ``main.py``): ``knn`` by ``topk`` of the pairwise
  distances of the features themselves, ``get_graph_feature`` (``idx + idx_base``, ``x.view(B * N, -1)[idx, :]``,
  ``repeat``, ``cat((feature - x, x), dim=3).permute``), EdgeConv blocks, ``F.adaptive_max_pool1d`` and
  ``F.adaptive_avg_pool1d``, ``cal_loss``'s label smoothing by ``zeros_like(pred).scatter(1, gold.view(-1, 1), 1)``,
  SGD with ``CosineAnnealingLR``.
- ConvLSTM (ndrplz/ConvLSTM_pytorch ``convlstm.py``): ``ConvLSTMCell`` (``torch.cat([input_tensor, h_cur], dim=1)``,
  ``torch.split(combined_conv, self.hidden_dim, dim=1)``, sigmoid/tanh gates), ``init_hidden`` with ``torch.zeros(...,
  device=self.conv.weight.device)``, the layer loop over time, ``torch.stack(output_inner, dim=1)``, ``batch_first``
  permute, ``return_all_layers``, the list arguments; a next-frame predictor (BCE) on moving squares; float32 too.
- C3D (jfzhang95/pytorch-video-recognition, pool2 with ``ceil_mode``, pool5's padding, ``x.view(-1, ...)``), R(2+1)D
  (torchvision's ``R2Plus1dStem``, ``Conv2Plus1D``, ``BasicBlock`` with ``out += residual`` and a downsample,
  ``BatchNorm3d``, ``AdaptiveAvgPool3d``, ``flatten(1)``), a 3-D U-Net level (pytorch-3dunet style: ``MaxPool3d`` with
  ``ceil_mode``, ``ConvTranspose3d(x, output_size=skip.size()[2:])``, the ``torch.cat`` skip, trilinear
  ``F.interpolate(..., align_corners=False)`` by scale and by size); SGD with weight decay, ``StepLR``.
- I3D (piergiaj/pytorch-i3d ``pytorch_i3d.py``, ``train_i3d.py``; one Inception level): ``MaxPool3dSamePadding`` (a
  ``nn.MaxPool3d`` subclass padding by ``F.pad`` from ``x.size()`` and ``self.stride[dim]``), ``Unit3D``,
  ``InceptionModule``, the ``end_points`` dict registered by ``add_module`` and run through ``self._modules[...]``,
  ``replace_logits``, ``AvgPool3d``, ``squeeze(3).squeeze(3)``, the loss over ``F.upsample(..., t, mode='linear')``
  with ``torch.max(..., dim=2)[0]``, gradient accumulation over ``num_steps_per_update`` batches, ``MultiStepLR``.

Tolerance: a bias before a BatchNorm that removes its shift has a zero gradient in exact arithmetic and rounding noise
in both libraries; Adam divides that noise by its own size (see ``adam_dead_bias``), so those entries agree to 1e-6.

What broke: ``nn.ConvTranspose3d(...)(x, output_size=...)`` raised TypeError (kiln's ConvTranspose1d/2d/3d.forward took
no ``output_size``); it now picks the output padding as torch's ``_output_padding``, range and length checked with
torch's messages (``frontend/conv_transpose_output_size.py``, ``tests/frontend/test_conv_transpose_output_size_vs_torch.py``).
Probing the 3-D pools around C3D: ``nn.AvgPool3d`` refused ``ceil_mode``, ``count_include_pad=False`` and
``divisor_override``; it now takes them as torch's (``frontend/functional_conv3d.py``,
``tests/layers/test_avg_pool3d_options_vs_torch.py``). ``F.upsample``'s deprecation warning was not torch's sentence
(no backquotes), so a ``filterwarnings`` written for torch's let kiln's through; now it is
(``tests/layers/test_extra_layers_vs_torch.py``). Scanning the 3-D layers and unbatched inputs against torch beside
these models also found (each fixed with its own tests): ``nn.Conv3d``'s ``padding_mode`` other than zeros refused
(``tests/layers/test_conv3d_padding_modes_vs_torch.py``), ``F.interpolate(mode='area')`` of a volume refused
(``tests/layers/test_spatial_vs_torch.py``), unbatched ``F.conv1d``, ``F.conv_transpose2d`` and the adaptive 2-D pools
refused (``tests/frontend/test_conv_unbatched_vs_torch.py``), unbatched ``nn.MultiheadAttention`` and the Transformer
layers failing (``tests/layers/test_attention_unbatched_vs_torch.py``). The models themselves agreed as first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.convlstm_video_program import (FRAMES, I3D_CLASSES, I3D_CLIP, SIDE, VIDEO, VIDEO_CLASSES, convlstm, i3d,
                                        video_nets)
from e2e.probe_lockstep import (array, assert_same_records, compiled_step_training, gradients, run_in_lockstep,
                                snapshot)
from e2e.pointnet2_dgcnn_program import (CLASSES, CLOUDS, POINTS, dgcnn, pointnet2, pointnet2_loss, pointnet2_msg,
                                        pointnet2_seg, pointnet2_utils)
from oracles import libraries, require, require_torch

def assert_inference_as_torch(build, forward, batches, input_names, path):
    """``forward(model, *inputs)`` of ``build``'s kiln model in eval mode through ``kiln.compile`` and through
    ``kiln.onnx.export`` (one file, run by onnxruntime on every batch: nothing specialized on the first) against torch's
    eager one from the same weights, in float32; ``batches`` a list of tuples of NumPy inputs."""
    onnxruntime, torch = require("onnxruntime"), require_torch()
    models = {}
    for name in ("kiln", "torch"):
        lib, nn, F = libraries(name)

        class Inference(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = build(lib, nn, F)

            def forward(self, *inputs):
                return forward(self.model, *inputs)

        kiln.manual_seed(0)
        models[name] = Inference()
    models["torch"].load_state_dict({key: torch.tensor(value) for key, value in snapshot(models["kiln"]).items()})
    model, twin = models["kiln"].eval(), models["torch"].eval()
    compiled = kiln.compile(model, fullgraph=True)
    kiln.onnx.export(model, tuple(map(kiln.tensor, batches[0])), str(path), input_names=input_names)
    session = onnxruntime.InferenceSession(str(path))
    for batch in batches:
        with torch.no_grad():
            expected = twin(*map(torch.tensor, batch)).numpy()
        np.testing.assert_allclose(array(compiled(*map(kiln.tensor, batch))), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(session.run(None, dict(zip(input_names, batch)))[0], expected, rtol=1e-4, atol=1e-5)


# --- PointNet++ (yanx27/Pointnet_Pointnet2_pytorch, models/pointnet2_utils.py, pointnet2_cls_ssg.py) ----------------

def train_pointnet2_seg(steps=3):
    """train_semseg.py's step: ``seg_pred.contiguous().view(-1, NUM_CLASSES)``, ``target.view(-1, 1)[:, 0]``, the
    label weights ``np.power(np.amax(w) / w, 1 / 3.0)`` as ``torch.Tensor`` in ``F.nll_loss(weight=...)``, the accuracy
    by ``seg_pred.cpu().data.max(1)[1].numpy()`` against the NumPy labels."""
    batches = point_cloud_batches(steps)
    labels = [(points[:, :, 2] > 0).astype(np.int64) + (np.abs(points[:, :, 0]) > 0.5) for points, _, _ in batches]
    labelweights = np.histogram(np.concatenate(labels), range(CLASSES + 1))[0].astype(np.float32) + 1
    labelweights = labelweights / np.sum(labelweights)
    labelweights = np.power(np.amax(labelweights) / labelweights, 1 / 3.0)

    def train(torch, nn, F, classifier):
        weights = torch.Tensor(labelweights)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-08,
                                     weight_decay=1e-4)
        record = {"losses": [], "correct": []}
        for (points, _, starts), label in zip(batches, labels):
            points, target = torch.Tensor(points).transpose(2, 1), torch.tensor(label)
            optimizer.zero_grad()
            seg_pred, trans_feat = classifier(points, torch.tensor(starts[0]))
            seg_pred = seg_pred.contiguous().view(-1, CLASSES)
            batch_label = target.view(-1, 1)[:, 0].cpu().data.numpy()
            target = target.view(-1, 1)[:, 0]
            loss = F.nll_loss(seg_pred, target, weight=weights)
            loss.backward()
            record.setdefault("grads", gradients(classifier))
            optimizer.step()
            pred_choice = seg_pred.cpu().data.max(1)[1].numpy()
            record["correct"].append(int(np.sum(pred_choice == batch_label)))
            record["losses"].append(loss.item())
        record["state"] = snapshot(classifier)
        return record

    return train


def random_point_dropout(batch_pc, rng, max_dropout_ratio=0.875):
    for b in range(batch_pc.shape[0]):
        dropout_ratio = rng.random() * max_dropout_ratio
        drop_idx = np.where(rng.random((batch_pc.shape[1])) <= dropout_ratio)[0]
        if len(drop_idx) > 0:
            batch_pc[b, drop_idx, :] = batch_pc[b, 0, :]  # set to the first point
    return batch_pc


def random_scale_point_cloud(batch_data, rng, scale_low=0.8, scale_high=1.25):
    B, N, C = batch_data.shape
    scales = rng.uniform(scale_low, scale_high, B)
    for batch_index in range(B):
        batch_data[batch_index, :, :] *= scales[batch_index]
    return batch_data


def shift_point_cloud(batch_data, rng, shift_range=0.1):
    B, N, C = batch_data.shape
    shifts = rng.uniform(-shift_range, shift_range, (B, 3))
    for batch_index in range(B):
        batch_data[batch_index, :, :] += shifts[batch_index, :]
    return batch_data


def point_cloud_batches(steps, seed=0):
    """ModelNet-like batches ``(points [B, N, 6] xyz + normals, target, starts)``: unit-sphere samples of three
    shapes (sphere, flat disc, stick), the fps starts drawn once by NumPy."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        target = rng.integers(0, CLASSES, CLOUDS)
        xyz = rng.standard_normal((CLOUDS, POINTS, 3))
        xyz /= np.linalg.norm(xyz, axis=-1, keepdims=True)
        xyz *= np.array([[1, 1, 1], [1, 1, 0.1], [0.1, 0.1, 1]])[target][:, None, :]
        normals = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
        starts = (rng.integers(0, POINTS, CLOUDS), rng.integers(0, 8, CLOUDS))
        batches.append((np.concatenate([xyz, normals], -1), target, starts))
    return batches


def pointnet2_optimizer(torch, classifier, name="Adam"):
    """train_classification.py's two optimizers (its ``--optimizer``), the learning rates raised for a few steps."""
    if name == "Adam":
        return torch.optim.Adam(classifier.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-08, weight_decay=1e-4)
    return torch.optim.SGD(classifier.parameters(), lr=0.05, momentum=0.9)


def train_pointnet2(optimizer_name, steps=4, augment=True):
    """train_classification.py's loop: NumPy augmentation of ``points.data.numpy()``, ``torch.Tensor(points)``,
    ``transpose(2, 1)``, Adam with weight decay (or SGD), StepLR stepped per epoch (here per step), the accuracy by
    ``pred.data.max(1)[1]``; then the eval pass of ``test()`` under ``no_grad``."""
    batches = point_cloud_batches(steps)

    def train(torch, nn, F, classifier):
        criterion = pointnet2_loss(torch, nn, F)
        optimizer = pointnet2_optimizer(torch, classifier, optimizer_name)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)
        rng = np.random.default_rng(1)
        record = {"losses": [], "correct": []}
        classifier = classifier.train()
        for points, target, starts in batches:
            points, target = torch.tensor(points), torch.tensor(target)
            optimizer.zero_grad()
            points = points.data.numpy()
            if augment:
                points = random_point_dropout(points, rng)
                points[:, :, 0:3] = random_scale_point_cloud(points[:, :, 0:3], rng)
                points[:, :, 0:3] = shift_point_cloud(points[:, :, 0:3], rng)
            points = torch.Tensor(points)
            points = points.transpose(2, 1)
            pred, trans_feat = classifier(points, tuple(torch.tensor(start) for start in starts))
            loss = criterion(pred, target.long(), trans_feat)
            pred_choice = pred.data.max(1)[1]
            correct = pred_choice.eq(target.long().data).cpu().sum()
            record["correct"].append(correct.item() / float(points.size()[0]))
            loss.backward()
            record.setdefault("first", array(pred))
            record.setdefault("grads", gradients(classifier))
            optimizer.step()
            scheduler.step()
            record["losses"].append(loss.item())
        with torch.no_grad():
            classifier = classifier.eval()
            points, _, starts = batches[0]
            pred, _ = classifier(torch.Tensor(points).transpose(2, 1), tuple(torch.tensor(s) for s in starts))
            record["eval"] = array(pred)
        record["state"] = snapshot(classifier)
        return record

    return train


def test_pointnet2_utils_as_torch(float64_default):
    """The sampling and grouping functions alone, on the same cloud: indices equal, distances to 1e-12."""
    torch = float64_default
    (points, _, starts), = point_cloud_batches(1)
    results = []
    for lib in (kiln, torch):
        utils = pointnet2_utils(lib)
        xyz = lib.tensor(points[:, :, :3])
        fps = utils["farthest_point_sample"](xyz, 8, lib.tensor(starts[0]))
        new_xyz = utils["index_points"](xyz, fps)
        idx = utils["query_ball_point"](0.6, 4, xyz, new_xyz)
        results.append({"distance": array(utils["square_distance"](new_xyz, xyz)), "fps": array(fps),
                        "idx": array(idx), "grouped": array(utils["index_points"](xyz, idx))})
    assert_same_records(*results)
    assert results[1]["fps"].dtype == results[0]["fps"].dtype == np.int64
    assert (results[1]["idx"] != results[1]["idx"][:, :, :1]).any()  # the balls hold more than their first point


def test_pointnet2_fps_draws_its_start_with_randint(float64_default):
    """The reference's own start (``torch.randint(0, N, (B,))``): long indices, the rest as with that start fed;
    compiled, each call draws again. In float64 (the points' dtype): ``distance[mask] = dist[mask]`` needs the two
    dtypes equal, as torch's index_put."""
    (points, _, _), = point_cloud_batches(1)
    utils = pointnet2_utils(kiln)
    xyz = kiln.tensor(points[:, :, :3])
    centroids = utils["farthest_point_sample"](xyz, 8)
    assert centroids.dtype == kiln.long and tuple(centroids.shape) == (CLOUDS, 8)
    again = utils["farthest_point_sample"](xyz, 8, centroids[:, 0])
    np.testing.assert_array_equal(array(again), array(centroids))
    compiled = kiln.compile(lambda xyz: utils["farthest_point_sample"](xyz, 8), fullgraph=True)
    draws = [compiled(xyz) for _ in range(4)]
    assert len({tuple(array(draw)[:, 0]) for draw in draws}) > 1  # a new start each call, not one baked in
    for draw in draws:
        np.testing.assert_array_equal(array(utils["farthest_point_sample"](xyz, 8, draw[:, 0])), array(draw))


# The last BatchNorm bias of the group_all level shifts every cloud's pooled feature alike (its ReLU is active at the
# max), and the next BatchNorm (bn1 after fc1; fp2's after the repeat and a conv) subtracts the batch mean: its gradient
# is zero in exact arithmetic, rounding noise (1e-17) in both libraries, which Adam (from a zero bias, so weight decay
# adds nothing yet) divides by its own size. That bias, the running mean and the eval outputs it feeds agree to 1e-6
# after the Adam steps; the other parameters (every conv and fc bias before a BatchNorm is dead too, but held by weight
# decay or SGD) to 1e-10 relative or absolute.
STATE_TOLERANCE = {"state": dict(rtol=1e-10, atol=1e-10)}


def adam_dead_bias(bias, running_mean):
    return {**STATE_TOLERANCE, bias: dict(rtol=0, atol=1e-6), running_mean: dict(rtol=0, atol=1e-8),
            "eval": dict(rtol=0, atol=1e-6)}


ADAM_DEAD_BIAS = adam_dead_bias("sa3.mlp_bns.1.bias", "bn1.running_mean")


@pytest.mark.parametrize("optimizer_name", ["Adam", "SGD"])
def test_pointnet2_trains_as_torch(optimizer_name, float64_default):
    ours, theirs = run_in_lockstep(pointnet2, train_pointnet2(optimizer_name))
    assert_same_records(ours, theirs, looser=ADAM_DEAD_BIAS if optimizer_name == "Adam" else STATE_TOLERANCE)


def test_pointnet2_float32_as_torch():
    """float32, as the reference trains (``torch.ones(B, N) * 1e10`` distances, the same fps and ball picks)."""
    ours, theirs = run_in_lockstep(pointnet2, train_pointnet2("SGD", steps=2))
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


def test_pointnet2_msg_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(pointnet2_msg, train_pointnet2("SGD", steps=3))
    assert_same_records(ours, theirs, looser=STATE_TOLERANCE)


def test_pointnet2_msg_compiled_step_as_torch(float64_default):
    """The in-place ``grouped_xyz -=`` on a gathered tensor inside the compiled step, a new batch each step."""
    ours, theirs = run_in_lockstep(pointnet2_msg, train_pointnet2_compiled)
    assert_same_records(ours, theirs, looser=adam_dead_bias("sa3.mlp_bns.1.bias", "bn1.running_mean"))


def test_pointnet2_part_segmentation_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(pointnet2_seg, train_pointnet2_seg())
    assert_same_records(ours, theirs, looser=adam_dead_bias("sa2.mlp_bns.1.bias", "fp2.mlp_bns.0.running_mean"))
    assert theirs["losses"][-1] < theirs["losses"][0]


def train_pointnet2_compiled(torch, nn, F, classifier):
    """The whole step (zero_grad, forward with the sampling and grouping, NLL, backward, Adam) one
    ``kiln.compile(fullgraph=True)`` graph in kiln, fed a new batch and new fps starts each step."""
    optimizer = pointnet2_optimizer(torch, classifier)

    def step(points, target, start1, start2):
        optimizer.zero_grad()
        pred, trans_feat = classifier(points, (start1, start2))
        loss = F.nll_loss(pred, target)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if torch is kiln else step
    losses = [run(torch.tensor(points).transpose(2, 1), torch.tensor(target), *map(torch.tensor, starts)).item()
              for points, target, starts in point_cloud_batches(3)]
    return {"losses": losses, "state": snapshot(classifier)}


def test_pointnet2_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(pointnet2, train_pointnet2_compiled)
    assert_same_records(ours, theirs, looser=ADAM_DEAD_BIAS)


def test_pointnet2_inference_compiled_and_onnx_as_torch(tmp_path):
    """test()'s eval forward (the fps starts fed as inputs) compiled and exported: the sampling, ball query and
    grouping run in onnxruntime, right for a second cloud batch too."""
    batches = [(points.transpose(0, 2, 1).astype(np.float32), *starts) for points, _, starts in point_cloud_batches(2)]
    assert_inference_as_torch(pointnet2, lambda model, points, start1, start2: model(points, (start1, start2))[0],
                              batches, ["points", "start1", "start2"], tmp_path / "pointnet2.onnx")


# --- ConvLSTM (ndrplz/ConvLSTM_pytorch, convlstm.py) -----------------------------------------------------------------

def moving_squares(batch=2, seed=0):
    """Clips ``(B, T + 1, 1, H, W)`` of a 2x2 square moving one pixel a frame in a random direction."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((batch, FRAMES + 1, 1, SIDE, SIDE))
    for b in range(batch):
        (row, col), (d_row, d_col) = rng.integers(1, 3, 2), rng.choice([-1, 1], 2)
        for t in range(FRAMES + 1):
            clips[b, t, 0, row + d_row * t % 4:row + d_row * t % 4 + 2, col + d_col * t % 4:col + d_col * t % 4 + 2] = 1
    return clips


def convlstm_loss(torch, nn, F, model, clips):
    frames, targets = clips[:, :-1], clips[:, 1:]
    if not model.convlstm.batch_first:
        frames = frames.permute(1, 0, 2, 3, 4)
    predicted, _ = model(frames)
    return F.binary_cross_entropy(predicted, targets)


def train_convlstm(steps=4):
    clips = moving_squares()

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        record = {"losses": []}
        for _ in range(steps):
            optimizer.zero_grad()
            loss = convlstm_loss(torch, nn, F, model, torch.Tensor(clips))
            loss.backward()
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        with torch.no_grad():
            predicted, last_states = model(torch.Tensor(clips[:, :-1]) if model.convlstm.batch_first
                                           else torch.Tensor(clips[:, :-1]).permute(1, 0, 2, 3, 4))
            record["eval"] = array(predicted)
            record["last states"] = {f"layer {i} {name}": array(state) for i, (h, c) in enumerate(last_states)
                                     for name, state in (("h", h), ("c", c))}
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("batch_first, return_all_layers", [(True, True), (False, False)])
def test_convlstm_trains_as_torch(batch_first, return_all_layers, float64_default):
    def build(torch, nn, F):
        return convlstm(torch, nn, F, batch_first, return_all_layers)

    ours, theirs = run_in_lockstep(build, train_convlstm())
    assert_same_records(ours, theirs)
    assert len(theirs["last states"]) == (4 if return_all_layers else 2)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_convlstm_compiled_step_as_torch(float64_default):
    clips = moving_squares()
    train = compiled_step_training(lambda lib: (lib.Tensor(clips),),
                                   lambda lib, model: lib.optim.Adam(model.parameters(), lr=0.02), convlstm_loss)
    ours, theirs = run_in_lockstep(convlstm, train)
    assert_same_records(ours, theirs)


def test_convlstm_inference_compiled_and_onnx_as_torch(tmp_path):
    batches = [(moving_squares(seed=seed)[:, :-1].astype(np.float32),) for seed in (0, 1)]
    assert_inference_as_torch(convlstm, lambda model, frames: model(frames)[0], batches, ["frames"],
                              tmp_path / "convlstm.onnx")


def test_convlstm_float32_as_torch():
    ours, theirs = run_in_lockstep(convlstm, train_convlstm(steps=2))
    assert_same_records(ours, theirs, rtol=2e-5, atol=1e-6)


# --- C3D, R(2+1)D, a 3-D U-Net block ---------------------------------------------------------------------------------

def video_batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(VIDEO), rng.integers(0, VIDEO_CLASSES, VIDEO[0])


def video_loss(torch, nn, F, model, clips, labels):
    return nn.CrossEntropyLoss()(model(clips), labels)


def train_video(steps=3):
    clips, labels = video_batch()

    def train(torch, nn, F, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
        record = {"losses": []}
        model.train()
        for _ in range(steps):
            inputs, targets = torch.Tensor(clips), torch.tensor(labels)
            optimizer.zero_grad()
            loss = video_loss(torch, nn, F, model, inputs, targets)
            loss.backward()
            record.setdefault("grads", gradients(model))
            optimizer.step()
            scheduler.step()
            record["losses"].append(loss.item())
        model.eval()
        with torch.no_grad():
            record["eval"] = array(model(torch.Tensor(clips)))
        record["state"] = snapshot(model)
        return record

    return train


def video_family(family):
    def build(torch, nn, F):
        return video_nets(torch, nn, F, family)

    return build


FAMILIES = ["c3d", "r2plus1d", "unet3d"]


@pytest.mark.parametrize("family", FAMILIES)
def test_video_net_trains_as_torch(family, float64_default):
    ours, theirs = run_in_lockstep(video_family(family), train_video())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("family", FAMILIES)
def test_video_net_compiled_step_as_torch(family, float64_default):
    clips, labels = video_batch()
    train = compiled_step_training(lambda lib: (lib.Tensor(clips), lib.tensor(labels)),
                                   lambda lib, model: lib.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                                   video_loss)
    ours, theirs = run_in_lockstep(video_family(family), train)
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("family", FAMILIES)
def test_video_net_inference_compiled_and_onnx_as_torch(family, tmp_path):
    clips = [(video_batch(seed)[0].astype(np.float32),) for seed in (0, 1)]
    assert_inference_as_torch(video_family(family), lambda model, clips: model(clips), clips, ["clips"],
                              tmp_path / "video.onnx")


# --- I3D (piergiaj/pytorch-i3d, pytorch_i3d.py and train_i3d.py), one Inception level ---------------------------------

def i3d_batch(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((I3D_CLIP[0], I3D_CLASSES, I3D_CLIP[2]))
    for b, (label, start) in enumerate(zip(rng.integers(0, I3D_CLASSES, I3D_CLIP[0]), rng.integers(0, 3, I3D_CLIP[0]))):
        labels[b, label, start:] = 1  # the action from a start frame on (Charades-style per-frame labels)
    return rng.standard_normal(I3D_CLIP), labels


def i3d_loss(torch, nn, F, i3d, inputs, labels, num_steps_per_update=2):
    t = inputs.size(2)
    per_frame_logits = i3d(inputs)
    per_frame_logits = F.upsample(per_frame_logits, t, mode='linear')
    loc_loss = F.binary_cross_entropy_with_logits(per_frame_logits, labels)
    cls_loss = F.binary_cross_entropy_with_logits(torch.max(per_frame_logits, dim=2)[0], torch.max(labels, dim=2)[0])
    return (0.5 * loc_loss + 0.5 * cls_loss) / num_steps_per_update


def train_i3d(steps=4, num_steps_per_update=2):
    """train_i3d.py's loop: the loss over ``F.upsample(per_frame_logits, t, mode='linear')``, gradient accumulation
    over ``num_steps_per_update`` batches, then ``optimizer.step()``, ``zero_grad()`` and ``MultiStepLR``."""
    batches = [i3d_batch(seed) for seed in range(steps)]

    def train(torch, nn, F, i3d):
        optimizer = torch.optim.SGD(i3d.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0000001)
        lr_sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1, 3])
        record = {"losses": [], "lrs": []}
        num_iter = 0
        optimizer.zero_grad()
        i3d.train(True)
        for inputs, labels in batches:
            num_iter += 1
            inputs, labels = torch.Tensor(inputs), torch.Tensor(labels)
            loss = i3d_loss(torch, nn, F, i3d, inputs, labels, num_steps_per_update)
            loss.backward()
            record["losses"].append(loss.item())
            if num_iter == num_steps_per_update:
                record.setdefault("accumulated grads", gradients(i3d))
                num_iter = 0
                optimizer.step()
                optimizer.zero_grad()
                lr_sched.step()
                record["lrs"].append(lr_sched.get_last_lr())
        i3d.train(False)
        with torch.no_grad():
            record["eval"] = array(i3d(torch.Tensor(batches[0][0])))
        record["state"] = snapshot(i3d)
        return record

    return train


@pytest.mark.filterwarnings("ignore:`nn.functional.upsample` is deprecated")
def test_i3d_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(i3d, train_i3d())
    assert_same_records(ours, theirs)
    assert [lr for lr, in theirs["lrs"]] == pytest.approx([0.01, 0.01])


@pytest.mark.filterwarnings("ignore:`nn.functional.upsample` is deprecated")
def test_i3d_compiled_step_as_torch(float64_default):
    inputs, labels = i3d_batch()
    train = compiled_step_training(lambda lib: (lib.Tensor(inputs), lib.Tensor(labels)),
                                   lambda lib, model: lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                   i3d_loss)
    ours, theirs = run_in_lockstep(i3d, train)
    assert_same_records(ours, theirs)


def test_i3d_inference_compiled_and_onnx_as_torch(tmp_path):
    batches = [(i3d_batch(seed)[0].astype(np.float32),) for seed in (0, 1)]
    assert_inference_as_torch(i3d, lambda model, clips: model(clips), batches, ["clips"], tmp_path / "i3d.onnx")


# --- DGCNN (WangYueFt/dgcnn, pytorch/model.py, util.py, main.py), tiny ------------------------------------------------

def cal_loss(torch, F, pred, gold, smoothing=True):
    """util.py's ``cal_loss``: label smoothing by ``torch.zeros_like(pred).scatter(1, gold.view(-1, 1), 1)``."""
    gold = gold.contiguous().view(-1)
    if smoothing:
        eps = 0.2
        n_class = pred.size(1)
        one_hot = torch.zeros_like(pred).scatter(1, gold.view(-1, 1), 1)
        one_hot = one_hot * (1 - eps) + (1 - one_hot) * eps / (n_class - 1)
        log_prb = F.log_softmax(pred, dim=1)
        loss = -(one_hot * log_prb).sum(dim=1).mean()
    else:
        loss = F.cross_entropy(pred, gold, reduction='mean')
    return loss


def dgcnn_loss(torch, nn, F, model, data, label):
    return cal_loss(torch, F, model(data), label)


def train_dgcnn(steps=3):
    """main.py's train loop: ``data.permute(0, 2, 1)``, SGD(lr * 100, momentum=0.9, weight_decay=1e-4),
    ``CosineAnnealingLR(opt, epochs, eta_min=lr)`` stepped per epoch, ``logits.max(dim=1)[1]`` predictions."""
    batches = point_cloud_batches(steps)

    def train(torch, nn, F, model):
        opt = torch.optim.SGD(model.parameters(), lr=0.001 * 100, momentum=0.9, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.001)
        record = {"losses": [], "preds": []}
        model.train()
        for points, label, _ in batches:
            data, label = torch.Tensor(points[:, :, :3]), torch.tensor(label).squeeze()
            data = data.permute(0, 2, 1)
            opt.zero_grad()
            logits = model(data)
            loss = cal_loss(torch, F, logits, label)
            loss.backward()
            record.setdefault("grads", gradients(model))
            opt.step()
            scheduler.step()
            preds = logits.max(dim=1)[1]
            record["preds"].append(preds.detach().cpu().numpy())
            record["losses"].append(loss.item())
        model.eval()
        with torch.no_grad():
            record["eval"] = array(model(torch.Tensor(batches[0][0][:, :, :3]).permute(0, 2, 1)))
        record["state"] = snapshot(model)
        return record

    return train


def test_dgcnn_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(dgcnn, train_dgcnn())
    assert_same_records(ours, theirs)


def test_dgcnn_compiled_step_as_torch(float64_default):
    (points, label, _), = point_cloud_batches(1)
    train = compiled_step_training(lambda lib: (lib.Tensor(points[:, :, :3]).permute(0, 2, 1), lib.tensor(label)),
                                   lambda lib, model: lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                                                                    weight_decay=1e-4), dgcnn_loss)
    ours, theirs = run_in_lockstep(dgcnn, train)
    assert_same_records(ours, theirs)


def test_dgcnn_inference_compiled_and_onnx_as_torch(tmp_path):
    batches = [(points[:, :, :3].transpose(0, 2, 1).astype(np.float32),) for points, _, _ in point_cloud_batches(2)]
    assert_inference_as_torch(dgcnn, lambda model, data: model(data), batches, ["data"], tmp_path / "dgcnn.onnx")
