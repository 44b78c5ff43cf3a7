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
from e2e.probe_lockstep import (array, assert_same_records, compiled_step_training, gradients, run_in_lockstep,
                                snapshot)
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

POINTS, CLOUDS, CLASSES = 24, 4, 3


def pointnet2_utils(torch):
    """pointnet2_utils.py's functions as written there; ``farthest_point_sample`` takes its ``torch.randint`` start
    from ``start`` when one is fed (the one added argument: the two libraries draw different numbers)."""

    def square_distance(src, dst):
        B, N, _ = src.shape
        _, M, _ = dst.shape
        dist = -2 * torch.matmul(src, dst.permute(0, 2, 1))
        dist += torch.sum(src ** 2, -1).view(B, N, 1)
        dist += torch.sum(dst ** 2, -1).view(B, 1, M)
        return dist

    def index_points(points, idx):
        device = points.device
        B = points.shape[0]
        view_shape = list(idx.shape)
        view_shape[1:] = [1] * (len(view_shape) - 1)
        repeat_shape = list(idx.shape)
        repeat_shape[0] = 1
        batch_indices = torch.arange(B, dtype=torch.long).to(device).view(view_shape).repeat(repeat_shape)
        new_points = points[batch_indices, idx, :]
        return new_points

    def farthest_point_sample(xyz, npoint, start=None):
        device = xyz.device
        B, N, C = xyz.shape
        centroids = torch.zeros(B, npoint, dtype=torch.long).to(device)
        distance = torch.ones(B, N).to(device) * 1e10
        farthest = torch.randint(0, N, (B,), dtype=torch.long).to(device) if start is None else start
        batch_indices = torch.arange(B, dtype=torch.long).to(device)
        for i in range(npoint):
            centroids[:, i] = farthest
            centroid = xyz[batch_indices, farthest, :].view(B, 1, 3)
            dist = torch.sum((xyz - centroid) ** 2, -1)
            mask = dist < distance
            distance[mask] = dist[mask]
            farthest = torch.max(distance, -1)[1]
        return centroids

    def query_ball_point(radius, nsample, xyz, new_xyz):
        device = xyz.device
        B, N, C = xyz.shape
        _, S, _ = new_xyz.shape
        group_idx = torch.arange(N, dtype=torch.long).to(device).view(1, 1, N).repeat([B, S, 1])
        sqrdists = square_distance(new_xyz, xyz)
        group_idx[sqrdists > radius ** 2] = N
        group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]
        group_first = group_idx[:, :, 0].view(B, S, 1).repeat([1, 1, nsample])
        mask = group_idx == N
        group_idx[mask] = group_first[mask]
        return group_idx

    def sample_and_group(npoint, radius, nsample, xyz, points, start=None):
        B, N, C = xyz.shape
        S = npoint
        fps_idx = farthest_point_sample(xyz, npoint, start)  # [B, npoint, C]
        new_xyz = index_points(xyz, fps_idx)
        idx = query_ball_point(radius, nsample, xyz, new_xyz)
        grouped_xyz = index_points(xyz, idx)  # [B, npoint, nsample, C]
        grouped_xyz_norm = grouped_xyz - new_xyz.view(B, S, 1, C)
        if points is not None:
            grouped_points = index_points(points, idx)
            new_points = torch.cat([grouped_xyz_norm, grouped_points], dim=-1)  # [B, npoint, nsample, C+D]
        else:
            new_points = grouped_xyz_norm
        return new_xyz, new_points

    def sample_and_group_all(xyz, points):
        device = xyz.device
        B, N, C = xyz.shape
        new_xyz = torch.zeros(B, 1, C).to(device)
        grouped_xyz = xyz.view(B, 1, N, C)
        if points is not None:
            new_points = torch.cat([grouped_xyz, points.view(B, 1, N, -1)], dim=-1)
        else:
            new_points = grouped_xyz
        return new_xyz, new_points

    return dict(square_distance=square_distance, index_points=index_points,
                farthest_point_sample=farthest_point_sample, query_ball_point=query_ball_point,
                sample_and_group=sample_and_group, sample_and_group_all=sample_and_group_all)


def pointnet2_modules(torch, nn, F):
    """pointnet2_utils.py's ``PointNetSetAbstraction`` (``forward`` passes a fed fps ``start`` on) and
    ``PointNetFeaturePropagation``, as written there."""
    utils = pointnet2_utils(torch)

    class PointNetSetAbstraction(nn.Module):
        def __init__(self, npoint, radius, nsample, in_channel, mlp, group_all):
            super(PointNetSetAbstraction, self).__init__()
            self.npoint = npoint
            self.radius = radius
            self.nsample = nsample
            self.mlp_convs = nn.ModuleList()
            self.mlp_bns = nn.ModuleList()
            last_channel = in_channel
            for out_channel in mlp:
                self.mlp_convs.append(nn.Conv2d(last_channel, out_channel, 1))
                self.mlp_bns.append(nn.BatchNorm2d(out_channel))
                last_channel = out_channel
            self.group_all = group_all

        def forward(self, xyz, points, start=None):
            xyz = xyz.permute(0, 2, 1)
            if points is not None:
                points = points.permute(0, 2, 1)
            if self.group_all:
                new_xyz, new_points = utils["sample_and_group_all"](xyz, points)
            else:
                new_xyz, new_points = utils["sample_and_group"](self.npoint, self.radius, self.nsample, xyz, points,
                                                                 start)
            new_points = new_points.permute(0, 3, 2, 1)  # [B, C+D, nsample,npoint]
            for i, conv in enumerate(self.mlp_convs):
                bn = self.mlp_bns[i]
                new_points = F.relu(bn(conv(new_points)))
            new_points = torch.max(new_points, 2)[0]
            new_xyz = new_xyz.permute(0, 2, 1)
            return new_xyz, new_points

    class PointNetFeaturePropagation(nn.Module):
        def __init__(self, in_channel, mlp):
            super(PointNetFeaturePropagation, self).__init__()
            self.mlp_convs = nn.ModuleList()
            self.mlp_bns = nn.ModuleList()
            last_channel = in_channel
            for out_channel in mlp:
                self.mlp_convs.append(nn.Conv1d(last_channel, out_channel, 1))
                self.mlp_bns.append(nn.BatchNorm1d(out_channel))
                last_channel = out_channel

        def forward(self, xyz1, xyz2, points1, points2):
            xyz1 = xyz1.permute(0, 2, 1)
            xyz2 = xyz2.permute(0, 2, 1)
            points2 = points2.permute(0, 2, 1)
            B, N, C = xyz1.shape
            _, S, _ = xyz2.shape
            if S == 1:
                interpolated_points = points2.repeat(1, N, 1)
            else:
                dists = utils["square_distance"](xyz1, xyz2)
                dists, idx = dists.sort(dim=-1)
                dists, idx = dists[:, :, :3], idx[:, :, :3]  # [B, N, 3]
                dist_recip = 1.0 / (dists + 1e-8)
                norm = torch.sum(dist_recip, dim=2, keepdim=True)
                weight = dist_recip / norm
                interpolated_points = torch.sum(utils["index_points"](points2, idx) * weight.view(B, N, 3, 1), dim=2)
            if points1 is not None:
                points1 = points1.permute(0, 2, 1)
                new_points = torch.cat([points1, interpolated_points], dim=-1)
            else:
                new_points = interpolated_points
            new_points = new_points.permute(0, 2, 1)
            for i, conv in enumerate(self.mlp_convs):
                bn = self.mlp_bns[i]
                new_points = F.relu(bn(conv(new_points)))
            return new_points

    return PointNetSetAbstraction, PointNetFeaturePropagation


def pointnet2(torch, nn, F, num_class=CLASSES, normal_channel=True, dropout=0.0):
    """pointnet2_cls_ssg.py's ``get_model`` (widths and point counts shrunk); ``forward`` takes the farthest point
    sampling starts (one ``(B,)`` long tensor per sampling layer) as ``starts``, None drawing them as the reference."""
    PointNetSetAbstraction, _ = pointnet2_modules(torch, nn, F)

    class get_model(nn.Module):
        def __init__(self, num_class, normal_channel=True):
            super(get_model, self).__init__()
            in_channel = 6 if normal_channel else 3
            self.normal_channel = normal_channel
            self.sa1 = PointNetSetAbstraction(npoint=8, radius=0.6, nsample=4, in_channel=in_channel, mlp=[6, 8],
                                              group_all=False)
            self.sa2 = PointNetSetAbstraction(npoint=4, radius=1.2, nsample=3, in_channel=8 + 3, mlp=[8, 12],
                                              group_all=False)
            self.sa3 = PointNetSetAbstraction(npoint=None, radius=None, nsample=None, in_channel=12 + 3, mlp=[12, 16],
                                              group_all=True)
            self.fc1 = nn.Linear(16, 10)
            self.bn1 = nn.BatchNorm1d(10)
            self.drop1 = nn.Dropout(dropout)
            self.fc2 = nn.Linear(10, 8)
            self.bn2 = nn.BatchNorm1d(8)
            self.drop2 = nn.Dropout(dropout)
            self.fc3 = nn.Linear(8, num_class)

        def forward(self, xyz, starts=(None, None)):
            B, _, _ = xyz.shape
            if self.normal_channel:
                norm = xyz[:, 3:, :]
                xyz = xyz[:, :3, :]
            else:
                norm = None
            l1_xyz, l1_points = self.sa1(xyz, norm, starts[0])
            l2_xyz, l2_points = self.sa2(l1_xyz, l1_points, starts[1])
            l3_xyz, l3_points = self.sa3(l2_xyz, l2_points)
            x = l3_points.view(B, 16)
            x = self.drop1(F.relu(self.bn1(self.fc1(x))))
            x = self.drop2(F.relu(self.bn2(self.fc2(x))))
            x = self.fc3(x)
            x = F.log_softmax(x, -1)
            return x, l3_points

    return get_model(num_class, normal_channel)


def pointnet2_msg(torch, nn, F, num_class=CLASSES):
    """pointnet2_utils.py's ``PointNetSetAbstractionMsg`` as written there (the in-place ``grouped_xyz -=
    new_xyz.view(B, S, 1, C)`` on an ``index_points`` result, one ball query per radius, ``torch.cat`` of the scales;
    its fps start fed) under pointnet2_cls_msg.py's head, two scales and tiny widths."""
    utils = pointnet2_utils(torch)
    PointNetSetAbstraction, _ = pointnet2_modules(torch, nn, F)

    class PointNetSetAbstractionMsg(nn.Module):
        def __init__(self, npoint, radius_list, nsample_list, in_channel, mlp_list):
            super(PointNetSetAbstractionMsg, self).__init__()
            self.npoint = npoint
            self.radius_list = radius_list
            self.nsample_list = nsample_list
            self.conv_blocks = nn.ModuleList()
            self.bn_blocks = nn.ModuleList()
            for i in range(len(mlp_list)):
                convs = nn.ModuleList()
                bns = nn.ModuleList()
                last_channel = in_channel + 3
                for out_channel in mlp_list[i]:
                    convs.append(nn.Conv2d(last_channel, out_channel, 1))
                    bns.append(nn.BatchNorm2d(out_channel))
                    last_channel = out_channel
                self.conv_blocks.append(convs)
                self.bn_blocks.append(bns)

        def forward(self, xyz, points, start=None):
            xyz = xyz.permute(0, 2, 1)
            if points is not None:
                points = points.permute(0, 2, 1)
            B, N, C = xyz.shape
            S = self.npoint
            new_xyz = utils["index_points"](xyz, utils["farthest_point_sample"](xyz, S, start))
            new_points_list = []
            for i, radius in enumerate(self.radius_list):
                K = self.nsample_list[i]
                group_idx = utils["query_ball_point"](radius, K, xyz, new_xyz)
                grouped_xyz = utils["index_points"](xyz, group_idx)
                grouped_xyz -= new_xyz.view(B, S, 1, C)
                if points is not None:
                    grouped_points = utils["index_points"](points, group_idx)
                    grouped_points = torch.cat([grouped_points, grouped_xyz], dim=-1)
                else:
                    grouped_points = grouped_xyz
                grouped_points = grouped_points.permute(0, 3, 2, 1)  # [B, D, K, S]
                for j in range(len(self.conv_blocks[i])):
                    conv = self.conv_blocks[i][j]
                    bn = self.bn_blocks[i][j]
                    grouped_points = F.relu(bn(conv(grouped_points)))
                new_points = torch.max(grouped_points, 2)[0]  # [B, D', S]
                new_points_list.append(new_points)
            new_xyz = new_xyz.permute(0, 2, 1)
            new_points_concat = torch.cat(new_points_list, dim=1)
            return new_xyz, new_points_concat

    class get_model(nn.Module):
        def __init__(self, num_class, normal_channel=True):
            super(get_model, self).__init__()
            in_channel = 3 if normal_channel else 0
            self.normal_channel = normal_channel
            self.sa1 = PointNetSetAbstractionMsg(8, [0.4, 0.8], [3, 5], in_channel, [[4, 6], [4, 8]])
            self.sa3 = PointNetSetAbstraction(None, None, None, 6 + 8 + 3, [12, 16], True)
            self.fc1 = nn.Linear(16, 10)
            self.bn1 = nn.BatchNorm1d(10)
            self.drop1 = nn.Dropout(0.0)
            self.fc3 = nn.Linear(10, num_class)

        def forward(self, xyz, starts=(None, None)):
            B, _, _ = xyz.shape
            if self.normal_channel:
                norm = xyz[:, 3:, :]
                xyz = xyz[:, :3, :]
            else:
                norm = None
            l1_xyz, l1_points = self.sa1(xyz, norm, starts[0])
            l3_xyz, l3_points = self.sa3(l1_xyz, l1_points)
            x = l3_points.view(B, 16)
            x = self.drop1(F.relu(self.bn1(self.fc1(x))))
            x = self.fc3(x)
            x = F.log_softmax(x, -1)
            return x, l3_points

    return get_model(num_class)


def pointnet2_seg(torch, nn, F, num_classes=CLASSES):
    """pointnet2_sem_seg.py's ``get_model``, two levels instead of four: a sampled level (fp1 interpolates from its 8
    centroids: ``dists.sort``, inverse-distance weights) and a ``group_all`` one (fp2's ``S == 1`` repeat)."""
    PointNetSetAbstraction, PointNetFeaturePropagation = pointnet2_modules(torch, nn, F)

    class get_model(nn.Module):
        def __init__(self, num_classes):
            super(get_model, self).__init__()
            self.sa1 = PointNetSetAbstraction(8, 0.6, 4, 6 + 3, [6, 8], False)
            self.sa2 = PointNetSetAbstraction(None, None, None, 8 + 3, [8, 12], True)
            self.fp2 = PointNetFeaturePropagation(8 + 12, [10])
            self.fp1 = PointNetFeaturePropagation(10, [8, 8])
            self.conv1 = nn.Conv1d(8, 8, 1)
            self.bn1 = nn.BatchNorm1d(8)
            self.drop1 = nn.Dropout(0.0)
            self.conv2 = nn.Conv1d(8, num_classes, 1)

        def forward(self, xyz, start=None):
            l0_points = xyz
            l0_xyz = xyz[:, :3, :]
            l1_xyz, l1_points = self.sa1(l0_xyz, l0_points, start)
            l2_xyz, l2_points = self.sa2(l1_xyz, l1_points)
            l1_points = self.fp2(l1_xyz, l2_xyz, l1_points, l2_points)
            l0_points = self.fp1(l0_xyz, l1_xyz, None, l1_points)
            x = self.drop1(F.relu(self.bn1(self.conv1(l0_points))))
            x = self.conv2(x)
            x = F.log_softmax(x, dim=1)
            x = x.permute(0, 2, 1)
            return x, l2_points

    return get_model(num_classes)


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


def pointnet2_loss(torch, nn, F):
    class get_loss(nn.Module):
        def __init__(self):
            super(get_loss, self).__init__()

        def forward(self, pred, target, trans_feat):
            total_loss = F.nll_loss(pred, target)
            return total_loss

    return get_loss()


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

FRAMES, SIDE = 4, 6


def convlstm(torch, nn, F, batch_first=True, return_all_layers=True):
    """convlstm.py's ``ConvLSTMCell`` and ``ConvLSTM`` as written there, and a next-frame predictor on top (a 1x1
    Conv2d on each step of the last layer's output)."""

    class ConvLSTMCell(nn.Module):

        def __init__(self, input_dim, hidden_dim, kernel_size, bias):
            super(ConvLSTMCell, self).__init__()
            self.input_dim = input_dim
            self.hidden_dim = hidden_dim
            self.kernel_size = kernel_size
            self.padding = kernel_size[0] // 2, kernel_size[1] // 2
            self.bias = bias
            self.conv = nn.Conv2d(in_channels=self.input_dim + self.hidden_dim,
                                  out_channels=4 * self.hidden_dim,
                                  kernel_size=self.kernel_size,
                                  padding=self.padding,
                                  bias=self.bias)

        def forward(self, input_tensor, cur_state):
            h_cur, c_cur = cur_state
            combined = torch.cat([input_tensor, h_cur], dim=1)  # concatenate along channel axis
            combined_conv = self.conv(combined)
            cc_i, cc_f, cc_o, cc_g = torch.split(combined_conv, self.hidden_dim, dim=1)
            i = torch.sigmoid(cc_i)
            f = torch.sigmoid(cc_f)
            o = torch.sigmoid(cc_o)
            g = torch.tanh(cc_g)
            c_next = f * c_cur + i * g
            h_next = o * torch.tanh(c_next)
            return h_next, c_next

        def init_hidden(self, batch_size, image_size):
            height, width = image_size
            return (torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device),
                    torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device))

    class ConvLSTM(nn.Module):

        def __init__(self, input_dim, hidden_dim, kernel_size, num_layers,
                     batch_first=False, bias=True, return_all_layers=False):
            super(ConvLSTM, self).__init__()
            self._check_kernel_size_consistency(kernel_size)
            kernel_size = self._extend_for_multilayer(kernel_size, num_layers)
            hidden_dim = self._extend_for_multilayer(hidden_dim, num_layers)
            if not len(kernel_size) == len(hidden_dim) == num_layers:
                raise ValueError('Inconsistent list length.')
            self.input_dim = input_dim
            self.hidden_dim = hidden_dim
            self.kernel_size = kernel_size
            self.num_layers = num_layers
            self.batch_first = batch_first
            self.bias = bias
            self.return_all_layers = return_all_layers
            cell_list = []
            for i in range(0, self.num_layers):
                cur_input_dim = self.input_dim if i == 0 else self.hidden_dim[i - 1]
                cell_list.append(ConvLSTMCell(input_dim=cur_input_dim,
                                              hidden_dim=self.hidden_dim[i],
                                              kernel_size=self.kernel_size[i],
                                              bias=self.bias))
            self.cell_list = nn.ModuleList(cell_list)

        def forward(self, input_tensor, hidden_state=None):
            if not self.batch_first:
                # (t, b, c, h, w) -> (b, t, c, h, w)
                input_tensor = input_tensor.permute(1, 0, 2, 3, 4)
            b, _, _, h, w = input_tensor.size()
            if hidden_state is not None:
                raise NotImplementedError()
            else:
                hidden_state = self._init_hidden(batch_size=b, image_size=(h, w))
            layer_output_list = []
            last_state_list = []
            seq_len = input_tensor.size(1)
            cur_layer_input = input_tensor
            for layer_idx in range(self.num_layers):
                h, c = hidden_state[layer_idx]
                output_inner = []
                for t in range(seq_len):
                    h, c = self.cell_list[layer_idx](input_tensor=cur_layer_input[:, t, :, :, :],
                                                     cur_state=[h, c])
                    output_inner.append(h)
                layer_output = torch.stack(output_inner, dim=1)
                cur_layer_input = layer_output
                layer_output_list.append(layer_output)
                last_state_list.append([h, c])
            if not self.return_all_layers:
                layer_output_list = layer_output_list[-1:]
                last_state_list = last_state_list[-1:]
            return layer_output_list, last_state_list

        def _init_hidden(self, batch_size, image_size):
            init_states = []
            for i in range(self.num_layers):
                init_states.append(self.cell_list[i].init_hidden(batch_size, image_size))
            return init_states

        @staticmethod
        def _check_kernel_size_consistency(kernel_size):
            if not (isinstance(kernel_size, tuple) or
                    (isinstance(kernel_size, list) and all([isinstance(elem, tuple) for elem in kernel_size]))):
                raise ValueError('`kernel_size` must be tuple or list of tuples')

        @staticmethod
        def _extend_for_multilayer(param, num_layers):
            if not isinstance(param, list):
                param = [param] * num_layers
            return param

    class NextFrame(nn.Module):
        def __init__(self):
            super().__init__()
            self.convlstm = ConvLSTM(1, [4, 3], [(3, 3), (1, 1)], 2, batch_first=batch_first,
                                     return_all_layers=return_all_layers)
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, frames):
            layer_output_list, last_state_list = self.convlstm(frames)
            outputs = layer_output_list[-1]
            b, t, c, h, w = outputs.shape
            return torch.sigmoid(self.head(outputs.reshape(b * t, c, h, w))).view(b, t, 1, h, w), last_state_list

    return NextFrame()


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

VIDEO = (2, 3, 5, 9, 9)  # (B, C, T, H, W): odd sizes, so ceil_mode and the padded pool5 matter
VIDEO_CLASSES = 4


def video_nets(torch, nn, F, family="c3d"):
    """jfzhang95/pytorch-video-recognition's ``C3D`` (pool2 with ``ceil_mode``), torchvision's R(2+1)D
    (``R2Plus1dStem``, ``Conv2Plus1D`` in a residual block, ``AdaptiveAvgPool3d``) and a 3-D U-Net level (the
    pytorch-3dunet ``Decoder``: ``ConvTranspose3d`` up, ``torch.cat`` skip, trilinear ``F.interpolate``), tiny."""

    class C3D(nn.Module):
        def __init__(self, num_classes):
            super(C3D, self).__init__()
            self.conv1 = nn.Conv3d(3, 4, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.conv2 = nn.Conv3d(4, 6, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool2 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), ceil_mode=True)
            self.conv3a = nn.Conv3d(6, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.conv3b = nn.Conv3d(8, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool5 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 1))
            self.fc6 = nn.Linear(8 * 1 * 2 * 2, 12)
            self.fc7 = nn.Linear(12, 12)
            self.fc8 = nn.Linear(12, num_classes)
            self.dropout = nn.Dropout(p=0.0)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.relu(self.conv1(x))
            x = self.pool1(x)
            x = self.relu(self.conv2(x))
            x = self.pool2(x)
            x = self.relu(self.conv3a(x))
            x = self.relu(self.conv3b(x))
            x = self.pool5(x)
            x = x.view(-1, 8 * 1 * 2 * 2)
            x = self.relu(self.fc6(x))
            x = self.dropout(x)
            x = self.relu(self.fc7(x))
            x = self.dropout(x)
            logits = self.fc8(x)
            return logits

    class Conv2Plus1D(nn.Sequential):
        def __init__(self, in_planes, out_planes, midplanes, stride=1, padding=1):
            super().__init__(
                nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                          padding=(0, padding, padding), bias=False),
                nn.BatchNorm3d(midplanes),
                nn.ReLU(inplace=True),
                nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                          padding=(padding, 0, 0), bias=False),
            )

    class R2Plus1dStem(nn.Sequential):
        def __init__(self):
            super().__init__(
                nn.Conv3d(3, 5, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(5),
                nn.ReLU(inplace=True),
                nn.Conv3d(5, 6, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(6),
                nn.ReLU(inplace=True),
            )

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
            super().__init__()
            self.conv1 = nn.Sequential(Conv2Plus1D(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes),
                                       nn.ReLU(inplace=True))
            self.conv2 = nn.Sequential(Conv2Plus1D(planes, planes, midplanes), nn.BatchNorm3d(planes))
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            residual = x
            out = self.conv1(x)
            out = self.conv2(out)
            if self.downsample is not None:
                residual = self.downsample(x)
            out += residual
            out = self.relu(out)
            return out

    class R2Plus1D(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = R2Plus1dStem()
            downsample = nn.Sequential(nn.Conv3d(6, 8, kernel_size=1, stride=2, bias=False), nn.BatchNorm3d(8))
            self.layer1 = BasicBlock(6, 6)
            self.layer2 = BasicBlock(6, 8, stride=2, downsample=downsample)
            self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.stem(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.avgpool(x)
            x = x.flatten(1)
            x = self.fc(x)
            return x

    class DoubleConv(nn.Sequential):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.add_module("conv1", nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False))
            self.add_module("bn1", nn.BatchNorm3d(out_channels))
            self.add_module("relu1", nn.ReLU(inplace=True))

    class UNet3DLevel(nn.Module):
        """One encoder/decoder level: ``MaxPool3d`` down, ``ConvTranspose3d`` up to the skip's size (``output_size``),
        ``torch.cat`` (pytorch-3dunet's ``_joining``), then a trilinear ``F.interpolate`` head back to the input size."""

        def __init__(self, num_classes):
            super().__init__()
            self.encoder1 = DoubleConv(3, 4)
            self.pool = nn.MaxPool3d(kernel_size=2, ceil_mode=True)
            self.encoder2 = DoubleConv(4, 6)
            self.upconv = nn.ConvTranspose3d(6, 4, kernel_size=3, stride=2, padding=1)
            self.decoder = DoubleConv(8, 4)
            self.final_conv = nn.Conv3d(4, num_classes, 1)

        def forward(self, x):
            encoder_features = self.encoder1(x[:, :, 1:, 1:, 1:])  # (4, 8, 8): pooled to (2, 4, 4), the stride-2
            # transposed conv reaches 7 or 8 per spatial dim; output_size picks the skip's 8 (output padding 1)
            x = self.encoder2(self.pool(encoder_features))
            x = self.upconv(x, output_size=encoder_features.size()[2:])
            x = torch.cat((encoder_features, x), dim=1)
            x = self.decoder(x)
            x = F.interpolate(x, scale_factor=(1, 0.5, 0.5), mode="trilinear", align_corners=False)
            x = self.final_conv(x)
            x = F.interpolate(x, size=(5, 9, 9), mode="trilinear", align_corners=False)
            return x.mean(dim=(2, 3, 4))

    return {"c3d": C3D, "r2plus1d": R2Plus1D, "unet3d": UNet3DLevel}[family](VIDEO_CLASSES)


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

I3D_CLIP, I3D_CLASSES = (2, 3, 6, 12, 12), 3


def i3d(torch, nn, F):
    """pytorch_i3d.py's ``MaxPool3dSamePadding`` and ``Unit3D`` (TF 'SAME' padding by ``F.pad`` of ``x.size()``),
    ``InceptionModule`` (``torch.cat`` of four branches) and ``InceptionI3d`` (the ``end_points`` dict registered by
    ``add_module`` in ``build``, run through ``self._modules[end_point]``, ``replace_logits``, ``squeeze(3)``), with
    its endpoints cut to Conv3d_1a, MaxPool3d_2a and Mixed_3b."""

    class MaxPool3dSamePadding(nn.MaxPool3d):

        def compute_pad(self, dim, s):
            if s % self.stride[dim] == 0:
                return max(self.kernel_size[dim] - self.stride[dim], 0)
            else:
                return max(self.kernel_size[dim] - (s % self.stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            return super(MaxPool3dSamePadding, self).forward(x)

    class Unit3D(nn.Module):

        def __init__(self, in_channels, output_channels, kernel_shape=(1, 1, 1), stride=(1, 1, 1), padding=0,
                     activation_fn=F.relu, use_batch_norm=True, use_bias=False, name='unit_3d'):
            super(Unit3D, self).__init__()
            self._output_channels = output_channels
            self._kernel_shape = kernel_shape
            self._stride = stride
            self._use_batch_norm = use_batch_norm
            self._activation_fn = activation_fn
            self._use_bias = use_bias
            self.name = name
            self.padding = padding
            self.conv3d = nn.Conv3d(in_channels=in_channels, out_channels=self._output_channels,
                                    kernel_size=self._kernel_shape, stride=self._stride, padding=0,
                                    bias=self._use_bias)
            if self._use_batch_norm:
                self.bn = nn.BatchNorm3d(self._output_channels, eps=0.001, momentum=0.01)

        def compute_pad(self, dim, s):
            if s % self._stride[dim] == 0:
                return max(self._kernel_shape[dim] - self._stride[dim], 0)
            else:
                return max(self._kernel_shape[dim] - (s % self._stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            x = self.conv3d(x)
            if self._use_batch_norm:
                x = self.bn(x)
            if self._activation_fn is not None:
                x = self._activation_fn(x)
            return x

    class InceptionModule(nn.Module):
        def __init__(self, in_channels, out_channels, name):
            super(InceptionModule, self).__init__()
            self.b0 = Unit3D(in_channels=in_channels, output_channels=out_channels[0], kernel_shape=[1, 1, 1], padding=0,
                             name=name + '/Branch_0/Conv3d_0a_1x1')
            self.b1a = Unit3D(in_channels=in_channels, output_channels=out_channels[1], kernel_shape=[1, 1, 1],
                              padding=0, name=name + '/Branch_1/Conv3d_0a_1x1')
            self.b1b = Unit3D(in_channels=out_channels[1], output_channels=out_channels[2], kernel_shape=[3, 3, 3],
                              name=name + '/Branch_1/Conv3d_0b_3x3')
            self.b2a = Unit3D(in_channels=in_channels, output_channels=out_channels[3], kernel_shape=[1, 1, 1],
                              padding=0, name=name + '/Branch_2/Conv3d_0a_1x1')
            self.b2b = Unit3D(in_channels=out_channels[3], output_channels=out_channels[4], kernel_shape=[3, 3, 3],
                              name=name + '/Branch_2/Conv3d_0b_3x3')
            self.b3a = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(1, 1, 1), padding=0)
            self.b3b = Unit3D(in_channels=in_channels, output_channels=out_channels[5], kernel_shape=[1, 1, 1],
                              padding=0, name=name + '/Branch_3/Conv3d_0b_1x1')
            self.name = name

        def forward(self, x):
            b0 = self.b0(x)
            b1 = self.b1b(self.b1a(x))
            b2 = self.b2b(self.b2a(x))
            b3 = self.b3b(self.b3a(x))
            return torch.cat([b0, b1, b2, b3], dim=1)

    class InceptionI3d(nn.Module):
        VALID_ENDPOINTS = ('Conv3d_1a_7x7', 'MaxPool3d_2a_3x3', 'Mixed_3b', 'Logits', 'Predictions')

        def __init__(self, num_classes=400, spatial_squeeze=True, final_endpoint='Logits', name='inception_i3d',
                     in_channels=3, dropout_keep_prob=0.5):
            super(InceptionI3d, self).__init__()
            self._num_classes = num_classes
            self._spatial_squeeze = spatial_squeeze
            self._final_endpoint = final_endpoint
            self.logits = None
            self.end_points = {}
            end_point = 'Conv3d_1a_7x7'
            self.end_points[end_point] = Unit3D(in_channels=in_channels, output_channels=4, kernel_shape=[3, 3, 3],
                                                stride=(1, 2, 2), padding=(1, 1, 1), name=name + end_point)
            end_point = 'MaxPool3d_2a_3x3'
            self.end_points[end_point] = MaxPool3dSamePadding(kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0)
            end_point = 'Mixed_3b'
            self.end_points[end_point] = InceptionModule(4, [2, 2, 3, 2, 3, 2], name + end_point)
            end_point = 'Logits'
            self.avg_pool = nn.AvgPool3d(kernel_size=[2, 3, 3], stride=(1, 1, 1))
            self.dropout = nn.Dropout(dropout_keep_prob)
            self.logits = Unit3D(in_channels=2 + 3 + 3 + 2, output_channels=self._num_classes, kernel_shape=[1, 1, 1],
                                 padding=0, activation_fn=None, use_batch_norm=False, use_bias=True, name='logits')
            self.build()

        def replace_logits(self, num_classes):
            self._num_classes = num_classes
            self.logits = Unit3D(in_channels=2 + 3 + 3 + 2, output_channels=self._num_classes, kernel_shape=[1, 1, 1],
                                 padding=0, activation_fn=None, use_batch_norm=False, use_bias=True, name='logits')

        def build(self):
            for k in self.end_points.keys():
                self.add_module(k, self.end_points[k])

        def forward(self, x):
            for end_point in self.VALID_ENDPOINTS:
                if end_point in self.end_points:
                    x = self._modules[end_point](x)  # use _modules to work with dataparallel
            x = self.logits(self.dropout(self.avg_pool(x)))
            if self._spatial_squeeze:
                logits = x.squeeze(3).squeeze(3)
            return logits

    model = InceptionI3d(num_classes=5, dropout_keep_prob=0.0)
    model.replace_logits(I3D_CLASSES)
    return model


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

DGCNN_K = 4


def dgcnn(torch, nn, F, k=DGCNN_K, emb_dims=16, output_channels=CLASSES):
    """model.py's ``knn`` (``-2 * matmul``, ``topk(k=k, dim=-1)[1]``) and ``get_graph_feature`` (``idx_base``,
    ``x.view(batch_size * num_points, -1)[idx, :]``, ``repeat``, ``torch.cat((feature - x, x), dim=3).permute``), the
    EdgeConv blocks (Conv2d, BatchNorm2d, LeakyReLU(0.2), ``max(dim=-1, keepdim=False)[0]``), Conv1d to ``emb_dims``,
    ``F.adaptive_max_pool1d`` + ``F.adaptive_avg_pool1d`` pooling and the head, widths shrunk, dropout 0."""

    def knn(x, k):
        inner = -2 * torch.matmul(x.transpose(2, 1), x)
        xx = torch.sum(x ** 2, dim=1, keepdim=True)
        pairwise_distance = -xx - inner - xx.transpose(2, 1)
        idx = pairwise_distance.topk(k=k, dim=-1)[1]  # (batch_size, num_points, k)
        return idx

    def get_graph_feature(x, k=20, idx=None):
        batch_size = x.size(0)
        num_points = x.size(2)
        x = x.view(batch_size, -1, num_points)
        if idx is None:
            idx = knn(x, k=k)  # (batch_size, num_points, k)
        device = x.device
        idx_base = torch.arange(0, batch_size, device=device).view(-1, 1, 1) * num_points
        idx = idx + idx_base
        idx = idx.view(-1)
        _, num_dims, _ = x.size()
        x = x.transpose(2, 1).contiguous()
        feature = x.view(batch_size * num_points, -1)[idx, :]
        feature = feature.view(batch_size, num_points, k, num_dims)
        x = x.view(batch_size, num_points, 1, num_dims).repeat(1, 1, k, 1)
        feature = torch.cat((feature - x, x), dim=3).permute(0, 3, 1, 2).contiguous()
        return feature

    class DGCNN(nn.Module):
        def __init__(self, output_channels=40):
            super(DGCNN, self).__init__()
            self.k = k
            self.bn1 = nn.BatchNorm2d(8)
            self.bn2 = nn.BatchNorm2d(8)
            self.bn5 = nn.BatchNorm1d(emb_dims)
            self.conv1 = nn.Sequential(nn.Conv2d(6, 8, kernel_size=1, bias=False), self.bn1,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv2 = nn.Sequential(nn.Conv2d(8 * 2, 8, kernel_size=1, bias=False), self.bn2,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv5 = nn.Sequential(nn.Conv1d(16, emb_dims, kernel_size=1, bias=False), self.bn5,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.linear1 = nn.Linear(emb_dims * 2, 12, bias=False)
            self.bn6 = nn.BatchNorm1d(12)
            self.dp1 = nn.Dropout(p=0.0)
            self.linear3 = nn.Linear(12, output_channels)

        def forward(self, x):
            batch_size = x.size(0)
            x = get_graph_feature(x, k=self.k)
            x = self.conv1(x)
            x1 = x.max(dim=-1, keepdim=False)[0]
            x = get_graph_feature(x1, k=self.k)
            x = self.conv2(x)
            x2 = x.max(dim=-1, keepdim=False)[0]
            x = torch.cat((x1, x2), dim=1)
            x = self.conv5(x)
            x1 = F.adaptive_max_pool1d(x, 1).view(batch_size, -1)
            x2 = F.adaptive_avg_pool1d(x, 1).view(batch_size, -1)
            x = torch.cat((x1, x2), 1)
            x = F.leaky_relu(self.bn6(self.linear1(x)), negative_slope=0.2)
            x = self.dp1(x)
            x = self.linear3(x)
            return x

    return DGCNN(output_channels)


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
