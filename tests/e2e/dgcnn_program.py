"""DGCNN as AnTao97/dgcnn.pytorch writes it (``model.py``: ``knn``, ``get_graph_feature`` with ``dim9``,
``Transform_Net``, ``DGCNN_partseg``, ``DGCNN_semseg``; ``util.py``'s ``cal_loss``; ``main_partseg.py`` /
``main_semseg.py``'s batches and IoU), written once for ``(torch, nn, F)`` being torch or kiln.

The widths are shrunk (``WIDTHS``: every channel count of the reference divided down) and there are ``CATEGORIES``
object categories for the 16 of ShapeNetPart; every operation is the reference's. The reference's
``device = torch.device('cuda')`` is the CPU here.
"""

from __future__ import annotations

from argparse import Namespace

import numpy as np

CATEGORIES, PARTS, SEM_CLASSES, POINTS, K = 4, 6, 5, 24, 5

# reference channel count -> the probe's
WIDTHS = {64: 8, 128: 12, 256: 12, 512: 12, 1024: 16}


def w(channels):
    return WIDTHS[channels]


def dgcnn_graph(torch):
    """model.py's ``knn`` and ``get_graph_feature``."""

    def knn(x, k):
        inner = -2 * torch.matmul(x.transpose(2, 1), x)
        xx = torch.sum(x**2, dim=1, keepdim=True)
        pairwise_distance = -xx - inner - xx.transpose(2, 1)

        idx = pairwise_distance.topk(k=k, dim=-1)[1]   # (batch_size, num_points, k)
        return idx

    def get_graph_feature(x, k=20, idx=None, dim9=False):
        batch_size = x.size(0)
        num_points = x.size(2)
        x = x.view(batch_size, -1, num_points)
        if idx is None:
            if dim9 == False:  # noqa: E712 (the reference's comparison)
                idx = knn(x, k=k)   # (batch_size, num_points, k)
            else:
                idx = knn(x[:, 6:], k=k)
        device = torch.device('cpu')

        idx_base = torch.arange(0, batch_size, device=device).view(-1, 1, 1) * num_points

        idx = idx + idx_base

        idx = idx.view(-1)

        _, num_dims, _ = x.size()

        x = x.transpose(2, 1).contiguous()   # (batch_size, num_points, num_dims)  -> (batch_size*num_points, num_dims)
        feature = x.view(batch_size * num_points, -1)[idx, :]
        feature = feature.view(batch_size, num_points, k, num_dims)
        x = x.view(batch_size, num_points, 1, num_dims).repeat(1, 1, k, 1)

        feature = torch.cat((feature - x, x), dim=3).permute(0, 3, 1, 2).contiguous()

        return feature      # (batch_size, 2*num_dims, num_points, k)

    return knn, get_graph_feature


def transform_net(torch, nn, F):
    init = nn.init  # model.py: import torch.nn.init as init

    class Transform_Net(nn.Module):
        def __init__(self, args):
            super(Transform_Net, self).__init__()
            self.args = args
            self.k = 3

            self.bn1 = nn.BatchNorm2d(w(64))
            self.bn2 = nn.BatchNorm2d(w(128))
            self.bn3 = nn.BatchNorm1d(w(1024))

            self.conv1 = nn.Sequential(nn.Conv2d(6, w(64), kernel_size=1, bias=False),
                                       self.bn1,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv2 = nn.Sequential(nn.Conv2d(w(64), w(128), kernel_size=1, bias=False),
                                       self.bn2,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv3 = nn.Sequential(nn.Conv1d(w(128), w(1024), kernel_size=1, bias=False),
                                       self.bn3,
                                       nn.LeakyReLU(negative_slope=0.2))

            self.linear1 = nn.Linear(w(1024), w(512), bias=False)
            self.bn3 = nn.BatchNorm1d(w(512))
            self.linear2 = nn.Linear(w(512), w(256), bias=False)
            self.bn4 = nn.BatchNorm1d(w(256))

            self.transform = nn.Linear(w(256), 3 * 3)
            init.constant_(self.transform.weight, 0)
            init.eye_(self.transform.bias.view(3, 3))

        def forward(self, x):
            batch_size = x.size(0)

            x = self.conv1(x)                       # (batch_size, 3*2, num_points, k) -> (batch_size, 64, num_points, k)
            x = self.conv2(x)                       # (batch_size, 64, num_points, k) -> (batch_size, 128, num_points, k)
            x = x.max(dim=-1, keepdim=False)[0]     # (batch_size, 128, num_points, k) -> (batch_size, 128, num_points)

            x = self.conv3(x)                       # (batch_size, 128, num_points) -> (batch_size, 1024, num_points)
            x = x.max(dim=-1, keepdim=False)[0]     # (batch_size, 1024, num_points) -> (batch_size, 1024)

            x = F.leaky_relu(self.bn3(self.linear1(x)), negative_slope=0.2)     # (batch_size, 1024) -> (batch_size, 512)
            x = F.leaky_relu(self.bn4(self.linear2(x)), negative_slope=0.2)     # (batch_size, 512) -> (batch_size, 256)

            x = self.transform(x)                   # (batch_size, 256) -> (batch_size, 3*3)
            x = x.view(batch_size, 3, 3)            # (batch_size, 3*3) -> (batch_size, 3, 3)

            return x

    return Transform_Net


def block(nn, bn, conv):
    """The reference's ``nn.Sequential(nn.Conv2d(..., kernel_size=1, bias=False), self.bnN,
    nn.LeakyReLU(negative_slope=0.2))`` (``Conv1d`` and ``BatchNorm1d`` too), spelled once."""
    return nn.Sequential(conv, bn, nn.LeakyReLU(negative_slope=0.2))


def dgcnn_partseg(torch, nn, F, k=K, emb_dims=16, dropout=0.0, seg_num_all=PARTS):
    _, get_graph_feature = dgcnn_graph(torch)
    Transform_Net = transform_net(torch, nn, F)

    class DGCNN_partseg(nn.Module):
        def __init__(self, args, seg_num_all):
            super(DGCNN_partseg, self).__init__()
            self.args = args
            self.seg_num_all = seg_num_all
            self.k = args.k
            self.transform_net = Transform_Net(args)

            self.bn1 = nn.BatchNorm2d(w(64))
            self.bn2 = nn.BatchNorm2d(w(64))
            self.bn3 = nn.BatchNorm2d(w(64))
            self.bn4 = nn.BatchNorm2d(w(64))
            self.bn5 = nn.BatchNorm2d(w(64))
            self.bn6 = nn.BatchNorm1d(args.emb_dims)
            self.bn7 = nn.BatchNorm1d(w(64))
            self.bn8 = nn.BatchNorm1d(w(256))
            self.bn9 = nn.BatchNorm1d(w(256))
            self.bn10 = nn.BatchNorm1d(w(128))

            self.conv1 = block(nn, self.bn1, nn.Conv2d(6, w(64), kernel_size=1, bias=False))
            self.conv2 = block(nn, self.bn2, nn.Conv2d(w(64), w(64), kernel_size=1, bias=False))
            self.conv3 = block(nn, self.bn3, nn.Conv2d(w(64) * 2, w(64), kernel_size=1, bias=False))
            self.conv4 = block(nn, self.bn4, nn.Conv2d(w(64), w(64), kernel_size=1, bias=False))
            self.conv5 = block(nn, self.bn5, nn.Conv2d(w(64) * 2, w(64), kernel_size=1, bias=False))
            self.conv6 = block(nn, self.bn6, nn.Conv1d(w(64) * 3, args.emb_dims, kernel_size=1, bias=False))
            self.conv7 = block(nn, self.bn7, nn.Conv1d(CATEGORIES, w(64), kernel_size=1, bias=False))
            self.conv8 = block(nn, self.bn8, nn.Conv1d(args.emb_dims + w(64) * 4, w(256), kernel_size=1, bias=False))
            self.dp1 = nn.Dropout(p=args.dropout)
            self.conv9 = block(nn, self.bn9, nn.Conv1d(w(256), w(256), kernel_size=1, bias=False))
            self.dp2 = nn.Dropout(p=args.dropout)
            self.conv10 = block(nn, self.bn10, nn.Conv1d(w(256), w(128), kernel_size=1, bias=False))
            self.conv11 = nn.Conv1d(w(128), self.seg_num_all, kernel_size=1, bias=False)

        def forward(self, x, l):
            batch_size = x.size(0)
            num_points = x.size(2)

            x0 = get_graph_feature(x, k=self.k)     # (batch_size, 3, num_points) -> (batch_size, 3*2, num_points, k)
            t = self.transform_net(x0)              # (batch_size, 3, 3)
            x = x.transpose(2, 1)                   # (batch_size, 3, num_points) -> (batch_size, num_points, 3)
            x = torch.bmm(x, t)                     # (batch_size, num_points, 3) * (batch_size, 3, 3)
            x = x.transpose(2, 1)                   # (batch_size, num_points, 3) -> (batch_size, 3, num_points)

            x = get_graph_feature(x, k=self.k)      # (batch_size, 3, num_points) -> (batch_size, 3*2, num_points, k)
            x = self.conv1(x)                       # (batch_size, 3*2, num_points, k) -> (batch_size, 64, num_points, k)
            x = self.conv2(x)                       # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points, k)
            x1 = x.max(dim=-1, keepdim=False)[0]    # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points)

            x = get_graph_feature(x1, k=self.k)     # (batch_size, 64, num_points) -> (batch_size, 64*2, num_points, k)
            x = self.conv3(x)                       # (batch_size, 64*2, num_points, k) -> (batch_size, 64, num_points, k)
            x = self.conv4(x)                       # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points, k)
            x2 = x.max(dim=-1, keepdim=False)[0]    # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points)

            x = get_graph_feature(x2, k=self.k)     # (batch_size, 64, num_points) -> (batch_size, 64*2, num_points, k)
            x = self.conv5(x)                       # (batch_size, 64*2, num_points, k) -> (batch_size, 64, num_points, k)
            x3 = x.max(dim=-1, keepdim=False)[0]    # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points)

            x = torch.cat((x1, x2, x3), dim=1)      # (batch_size, 64*3, num_points)

            x = self.conv6(x)                       # (batch_size, 64*3, num_points) -> (batch_size, emb_dims, num_points)
            x = x.max(dim=-1, keepdim=True)[0]      # (batch_size, emb_dims, num_points) -> (batch_size, emb_dims, 1)

            l = l.view(batch_size, -1, 1)           # (batch_size, num_categoties, 1)  # noqa: E741
            l = self.conv7(l)                       # (batch_size, num_categoties, 1) -> (batch_size, 64, 1)  # noqa

            x = torch.cat((x, l), dim=1)            # (batch_size, 1088, 1)
            x = x.repeat(1, 1, num_points)          # (batch_size, 1088, num_points)

            x = torch.cat((x, x1, x2, x3), dim=1)   # (batch_size, 1088+64*3, num_points)

            x = self.conv8(x)                       # (batch_size, 1088+64*3, num_points) -> (batch_size, 256, num_points)
            x = self.dp1(x)
            x = self.conv9(x)                       # (batch_size, 256, num_points) -> (batch_size, 256, num_points)
            x = self.dp2(x)
            x = self.conv10(x)                      # (batch_size, 256, num_points) -> (batch_size, 128, num_points)
            x = self.conv11(x)                      # (batch_size, 256, num_points) -> (batch_size, seg_num_all, num_points)

            return x

    return DGCNN_partseg(Namespace(k=k, emb_dims=emb_dims, dropout=dropout), seg_num_all)


def dgcnn_semseg(torch, nn, F, k=K, emb_dims=16, dropout=0.0):
    _, get_graph_feature = dgcnn_graph(torch)

    class DGCNN_semseg(nn.Module):
        def __init__(self, args):
            super(DGCNN_semseg, self).__init__()
            self.args = args
            self.k = args.k

            self.bn1 = nn.BatchNorm2d(w(64))
            self.bn2 = nn.BatchNorm2d(w(64))
            self.bn3 = nn.BatchNorm2d(w(64))
            self.bn4 = nn.BatchNorm2d(w(64))
            self.bn5 = nn.BatchNorm2d(w(64))
            self.bn6 = nn.BatchNorm1d(args.emb_dims)
            self.bn7 = nn.BatchNorm1d(w(512))
            self.bn8 = nn.BatchNorm1d(w(256))

            self.conv1 = block(nn, self.bn1, nn.Conv2d(18, w(64), kernel_size=1, bias=False))
            self.conv2 = block(nn, self.bn2, nn.Conv2d(w(64), w(64), kernel_size=1, bias=False))
            self.conv3 = block(nn, self.bn3, nn.Conv2d(w(64) * 2, w(64), kernel_size=1, bias=False))
            self.conv4 = block(nn, self.bn4, nn.Conv2d(w(64), w(64), kernel_size=1, bias=False))
            self.conv5 = block(nn, self.bn5, nn.Conv2d(w(64) * 2, w(64), kernel_size=1, bias=False))
            self.conv6 = block(nn, self.bn6, nn.Conv1d(w(64) * 3, args.emb_dims, kernel_size=1, bias=False))
            self.conv7 = block(nn, self.bn7, nn.Conv1d(args.emb_dims + w(64) * 3, w(512), kernel_size=1, bias=False))
            self.conv8 = block(nn, self.bn8, nn.Conv1d(w(512), w(256), kernel_size=1, bias=False))
            self.dp1 = nn.Dropout(p=args.dropout)
            self.conv9 = nn.Conv1d(w(256), SEM_CLASSES, kernel_size=1, bias=False)

        def forward(self, x):
            num_points = x.size(2)

            x = get_graph_feature(x, k=self.k, dim9=True)   # (batch_size, 9, num_points) -> (batch_size, 9*2, num_points, k)
            x = self.conv1(x)                       # (batch_size, 9*2, num_points, k) -> (batch_size, 64, num_points, k)
            x = self.conv2(x)                       # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points, k)
            x1 = x.max(dim=-1, keepdim=False)[0]    # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points)

            x = get_graph_feature(x1, k=self.k)     # (batch_size, 64, num_points) -> (batch_size, 64*2, num_points, k)
            x = self.conv3(x)                       # (batch_size, 64*2, num_points, k) -> (batch_size, 64, num_points, k)
            x = self.conv4(x)                       # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points, k)
            x2 = x.max(dim=-1, keepdim=False)[0]    # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points)

            x = get_graph_feature(x2, k=self.k)     # (batch_size, 64, num_points) -> (batch_size, 64*2, num_points, k)
            x = self.conv5(x)                       # (batch_size, 64*2, num_points, k) -> (batch_size, 64, num_points, k)
            x3 = x.max(dim=-1, keepdim=False)[0]    # (batch_size, 64, num_points, k) -> (batch_size, 64, num_points)

            x = torch.cat((x1, x2, x3), dim=1)      # (batch_size, 64*3, num_points)

            x = self.conv6(x)                       # (batch_size, 64*3, num_points) -> (batch_size, emb_dims, num_points)
            x = x.max(dim=-1, keepdim=True)[0]      # (batch_size, emb_dims, num_points) -> (batch_size, emb_dims, 1)

            x = x.repeat(1, 1, num_points)          # (batch_size, 1024, num_points)
            x = torch.cat((x, x1, x2, x3), dim=1)   # (batch_size, 1024+64*3, num_points)

            x = self.conv7(x)                       # (batch_size, 1024+64*3, num_points) -> (batch_size, 512, num_points)
            x = self.conv8(x)                       # (batch_size, 512, num_points) -> (batch_size, 256, num_points)
            x = self.dp1(x)
            x = self.conv9(x)                       # (batch_size, 256, num_points) -> (batch_size, 13, num_points)

            return x

    return DGCNN_semseg(Namespace(k=k, emb_dims=emb_dims, dropout=dropout))


def cal_loss(torch, F, pred, gold, smoothing=True):
    ''' Calculate cross entropy loss, apply label smoothing if needed. '''

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


def calculate_shape_IoU(pred_np, seg_np, label, class_choice=None):
    """main_partseg.py's IoU per shape over the parts of its category (NumPy), ``CATEGORY_PARTS`` for its tables."""
    shape_ious = []
    for shape_idx in range(seg_np.shape[0]):
        start_index, num = CATEGORY_PARTS[label[shape_idx]]
        part_ious = []
        for part in range(num):
            I = np.sum(np.logical_and(pred_np[shape_idx] == part + start_index, seg_np[shape_idx] == part + start_index))
            U = np.sum(np.logical_or(pred_np[shape_idx] == part + start_index, seg_np[shape_idx] == part + start_index))
            if U == 0:
                iou = 1  # If the union of groundtruth and prediction points is empty, then count part IoU as 1
            else:
                iou = I / float(U)
            part_ious.append(iou)
        shape_ious.append(np.mean(part_ious))
    return shape_ious


CATEGORY_PARTS = [(0, 2), (2, 1), (3, 2), (5, 1)]
"""Each category's first part and number of parts (the reference's ``index_start`` and ``seg_num``)."""


def part_batch(seed=0, batch=4, points=POINTS):
    """Point clouds (3 coordinates), their categories and per-point part labels within each category's parts."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(batch, points, 3))
    label = rng.integers(0, CATEGORIES, (batch, 1))
    start = np.array([CATEGORY_PARTS[c][0] for c in label[:, 0]])[:, None]
    count = np.array([CATEGORY_PARTS[c][1] for c in label[:, 0]])[:, None]
    seg = start + (data[:, :, 2] > 0) * (count - 1)
    return data, label, seg


def scene_batch(seed=0, batch=4, points=POINTS):
    """S3DIS-style blocks: 9 features a point (xyz, rgb, normalised xyz; the k-NN on the last 3) and a class each."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0, 1, (batch, points, 3))
    rgb = rng.uniform(0, 1, (batch, points, 3))
    data = np.concatenate([xyz - 0.5, rgb, xyz / xyz.max(axis=1, keepdims=True)], axis=2)
    seg = np.minimum((xyz[:, :, 0] * SEM_CLASSES).astype(np.int64), SEM_CLASSES - 1)
    return data, seg
