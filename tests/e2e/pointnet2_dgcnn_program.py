"""The point-cloud networks as their repositories write them: yanx27/Pointnet_Pointnet2_pytorch's PointNet++ (the
utilities, SSG and MSG classifiers, segmentation, the classifier's loss) and WangYueFt/dgcnn's DGCNN, written once for
``torch`` being torch or kiln: the programs of ``test_porting_probes_pointnet2_convlstm_c3d.py``, whose docstring says
what it covers."""

from __future__ import annotations


# --- PointNet++ (models/pointnet2_utils.py, pointnet2_cls_ssg.py, pointnet2_cls_msg.py, pointnet2_sem_seg.py) ---------

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


def pointnet2_loss(torch, nn, F):
    class get_loss(nn.Module):
        def __init__(self):
            super(get_loss, self).__init__()

        def forward(self, pred, target, trans_feat):
            total_loss = F.nll_loss(pred, target)
            return total_loss

    return get_loss()


# --- DGCNN (pytorch/model.py) -----------------------------------------------------------------------------------------

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
