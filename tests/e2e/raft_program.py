"""RAFT (princeton-vl/RAFT ``core/``: ``raft.py``, ``extractor.py``, ``update.py``, ``corr.py``, ``utils/utils.py`` and
``train.py``'s ``sequence_loss``), written once as that code writes it for ``(torch, nn, F)`` being torch or kiln.

The widths are shrunk (``WIDTHS``: every channel count of the reference divided down so a float64 step runs in a
second) and the correlation pyramid has ``CORR_LEVELS`` levels of radius ``CORR_RADIUS`` (the reference: 4 levels,
radius 4 or 3 for the small model, set in ``RAFT.__init__`` as here); the 64 * 9 channels of the convex upsampling
mask, the 1/8 resolution and every operation are the reference's. ``float_dtype`` None is the reference's ``.float()``
(float32 features, correlation and coordinates); a float64 run passes ``float64``, the one change a float64 user makes.
"""

from __future__ import annotations

import warnings
from argparse import Namespace

import numpy as np

CORR_LEVELS, CORR_RADIUS = 2, 2
MAX_FLOW = 400

# reference channel count -> the probe's
WIDTHS = {32: 4, 64: 8, 96: 12, 128: 16, 256: 16, 192: 12, 80: 10}


def w(channels):
    return WIDTHS[channels]


def raft_utils(torch, F, float_dtype=None):
    """utils/utils.py's ``bilinear_sampler``, ``coords_grid``, ``upflow8`` and ``InputPadder``."""

    def _float(t):
        return t.float() if float_dtype is None else t.to(float_dtype)

    def bilinear_sampler(img, coords, mode='bilinear', mask=False):
        """ Wrapper for grid_sample, uses pixel coordinates """
        H, W = img.shape[-2:]
        xgrid, ygrid = coords.split([1, 1], dim=-1)
        xgrid = 2 * xgrid / (W - 1) - 1
        ygrid = 2 * ygrid / (H - 1) - 1

        grid = torch.cat([xgrid, ygrid], dim=-1)
        img = F.grid_sample(img, grid, align_corners=True)

        if mask:
            mask = (xgrid > -1) & (ygrid > -1) & (xgrid < 1) & (ygrid < 1)
            return img, mask.float()

        return img

    def coords_grid(batch, ht, wd, device):
        coords = torch.meshgrid(torch.arange(ht, device=device), torch.arange(wd, device=device), indexing="ij")
        coords = _float(torch.stack(coords[::-1], dim=0))
        return coords[None].repeat(batch, 1, 1, 1)

    def upflow8(flow, mode='bilinear'):
        new_size = (8 * flow.shape[2], 8 * flow.shape[3])
        return 8 * F.interpolate(flow, size=new_size, mode=mode, align_corners=True)

    class InputPadder:
        """ Pads images such that dimensions are divisible by 8 """
        def __init__(self, dims, mode='sintel'):
            self.ht, self.wd = dims[-2:]
            pad_ht = (((self.ht // 8) + 1) * 8 - self.ht) % 8
            pad_wd = (((self.wd // 8) + 1) * 8 - self.wd) % 8
            if mode == 'sintel':
                self._pad = [pad_wd // 2, pad_wd - pad_wd // 2, pad_ht // 2, pad_ht - pad_ht // 2]
            else:
                self._pad = [pad_wd // 2, pad_wd - pad_wd // 2, 0, pad_ht]

        def pad(self, *inputs):
            return [F.pad(x, self._pad, mode='replicate') for x in inputs]

        def unpad(self, x):
            ht, wd = x.shape[-2:]
            c = [self._pad[2], ht - self._pad[3], self._pad[0], wd - self._pad[1]]
            return x[..., c[0]:c[1], c[2]:c[3]]

    return Namespace(bilinear_sampler=bilinear_sampler, coords_grid=coords_grid, upflow8=upflow8,
                     InputPadder=InputPadder, float=_float)


def corr_block(torch, F, utils):
    """corr.py's ``CorrBlock``: the all-pairs volume, its avg-pool pyramid, the lookup around ``coords``."""

    class CorrBlock:
        def __init__(self, fmap1, fmap2, num_levels=4, radius=4):
            self.num_levels = num_levels
            self.radius = radius
            self.corr_pyramid = []

            # all pairs correlation
            corr = CorrBlock.corr(fmap1, fmap2)

            batch, h1, w1, dim, h2, w2 = corr.shape
            corr = corr.reshape(batch * h1 * w1, dim, h2, w2)

            self.corr_pyramid.append(corr)
            for i in range(self.num_levels - 1):
                corr = F.avg_pool2d(corr, 2, stride=2)
                self.corr_pyramid.append(corr)

        def __call__(self, coords):
            r = self.radius
            coords = coords.permute(0, 2, 3, 1)
            batch, h1, w1, _ = coords.shape

            out_pyramid = []
            for i in range(self.num_levels):
                corr = self.corr_pyramid[i]
                dx = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
                dy = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
                delta = torch.stack(torch.meshgrid(dy, dx), axis=-1)

                centroid_lvl = coords.reshape(batch * h1 * w1, 1, 1, 2) / 2**i
                delta_lvl = delta.view(1, 2 * r + 1, 2 * r + 1, 2)
                coords_lvl = centroid_lvl + delta_lvl

                corr = utils.bilinear_sampler(corr, coords_lvl)
                corr = corr.view(batch, h1, w1, -1)
                out_pyramid.append(corr)

            out = torch.cat(out_pyramid, dim=-1)
            return utils.float(out.permute(0, 3, 1, 2).contiguous())

        @staticmethod
        def corr(fmap1, fmap2):
            batch, dim, ht, wd = fmap1.shape
            fmap1 = fmap1.view(batch, dim, ht * wd)
            fmap2 = fmap2.view(batch, dim, ht * wd)

            corr = torch.matmul(fmap1.transpose(1, 2), fmap2)
            corr = corr.view(batch, ht, wd, 1, ht, wd)
            return corr / torch.sqrt(torch.tensor(dim).float())

    return CorrBlock


def extractor(torch, nn):
    """extractor.py's ``ResidualBlock``, ``BottleneckBlock``, ``BasicEncoder`` and ``SmallEncoder``."""

    def norm(norm_fn, planes, groups):
        if norm_fn == 'group':
            return nn.GroupNorm(num_groups=groups, num_channels=planes)
        if norm_fn == 'batch':
            return nn.BatchNorm2d(planes)
        if norm_fn == 'instance':
            return nn.InstanceNorm2d(planes)
        return nn.Sequential()

    class ResidualBlock(nn.Module):
        def __init__(self, in_planes, planes, norm_fn='group', stride=1):
            super(ResidualBlock, self).__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
            self.relu = nn.ReLU(inplace=True)
            num_groups = planes // 8
            self.norm1 = norm(norm_fn, planes, num_groups)
            self.norm2 = norm(norm_fn, planes, num_groups)
            if not stride == 1:
                self.norm3 = norm(norm_fn, planes, num_groups)
            if stride == 1:
                self.downsample = None
            else:
                self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3)

        def forward(self, x):
            y = x
            y = self.relu(self.norm1(self.conv1(y)))
            y = self.relu(self.norm2(self.conv2(y)))

            if self.downsample is not None:
                x = self.downsample(x)

            return self.relu(x + y)

    class BottleneckBlock(nn.Module):
        def __init__(self, in_planes, planes, norm_fn='group', stride=1):
            super(BottleneckBlock, self).__init__()
            self.conv1 = nn.Conv2d(in_planes, planes // 4, kernel_size=1, padding=0)
            self.conv2 = nn.Conv2d(planes // 4, planes // 4, kernel_size=3, padding=1, stride=stride)
            self.conv3 = nn.Conv2d(planes // 4, planes, kernel_size=1, padding=0)
            self.relu = nn.ReLU(inplace=True)
            num_groups = planes // 8
            self.norm1 = norm(norm_fn, planes // 4, num_groups)
            self.norm2 = norm(norm_fn, planes // 4, num_groups)
            self.norm3 = norm(norm_fn, planes, num_groups)
            if not stride == 1:
                self.norm4 = norm(norm_fn, planes, num_groups)
            if stride == 1:
                self.downsample = None
            else:
                self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm4)

        def forward(self, x):
            y = x
            y = self.relu(self.norm1(self.conv1(y)))
            y = self.relu(self.norm2(self.conv2(y)))
            y = self.relu(self.norm3(self.conv3(y)))

            if self.downsample is not None:
                x = self.downsample(x)

            return self.relu(x + y)

    class Encoder(nn.Module):
        """``BasicEncoder`` (residual blocks, 64-64-96-128) and ``SmallEncoder`` (bottlenecks, 32-32-64-96) differ
        only in these; their ``__init__``, ``_make_layer`` and ``forward`` are the reference's."""
        block, planes = ResidualBlock, (64, 64, 96, 128)

        def __init__(self, output_dim=128, norm_fn='batch', dropout=0.0):
            super().__init__()
            self.norm_fn = norm_fn
            first, one, two, three = (w(p) for p in self.planes)
            self.norm1 = norm(norm_fn, first, 8 if first >= 8 else 1)
            self.conv1 = nn.Conv2d(3, first, kernel_size=7, stride=2, padding=3)
            self.relu1 = nn.ReLU(inplace=True)

            self.in_planes = first
            self.layer1 = self._make_layer(one, stride=1)
            self.layer2 = self._make_layer(two, stride=2)
            self.layer3 = self._make_layer(three, stride=2)

            # output convolution
            self.conv2 = nn.Conv2d(three, output_dim, kernel_size=1)

            self.dropout = None
            if dropout > 0:
                self.dropout = nn.Dropout2d(p=dropout)

            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)):
                    if m.weight is not None:
                        nn.init.constant_(m.weight, 1)
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)

        def _make_layer(self, dim, stride=1):
            layer1 = self.block(self.in_planes, dim, self.norm_fn, stride=stride)
            layer2 = self.block(dim, dim, self.norm_fn, stride=1)
            layers = (layer1, layer2)

            self.in_planes = dim
            return nn.Sequential(*layers)

        def forward(self, x):
            # if input is list, combine batch dimension
            is_list = isinstance(x, tuple) or isinstance(x, list)
            if is_list:
                batch_dim = x[0].shape[0]
                x = torch.cat(x, dim=0)

            x = self.conv1(x)
            x = self.norm1(x)
            x = self.relu1(x)

            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)

            x = self.conv2(x)

            if self.training and self.dropout is not None:
                x = self.dropout(x)

            if is_list:
                x = torch.split(x, [batch_dim, batch_dim], dim=0)

            return x

    class BasicEncoder(Encoder):
        pass

    class SmallEncoder(Encoder):
        block, planes = BottleneckBlock, (32, 32, 64, 96)

    return BasicEncoder, SmallEncoder


def update_blocks(torch, nn, F):
    """update.py's ``FlowHead``, ``ConvGRU``, ``SepConvGRU``, the motion encoders and the update blocks."""

    class FlowHead(nn.Module):
        def __init__(self, input_dim=128, hidden_dim=256):
            super(FlowHead, self).__init__()
            self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
            self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.conv2(self.relu(self.conv1(x)))

    class ConvGRU(nn.Module):
        def __init__(self, hidden_dim=128, input_dim=192 + 128):
            super(ConvGRU, self).__init__()
            self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
            self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
            self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

        def forward(self, h, x):
            hx = torch.cat([h, x], dim=1)

            z = torch.sigmoid(self.convz(hx))
            r = torch.sigmoid(self.convr(hx))
            q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))

            h = (1 - z) * h + z * q
            return h

    class SepConvGRU(nn.Module):
        def __init__(self, hidden_dim=128, input_dim=192 + 128):
            super(SepConvGRU, self).__init__()
            self.convz1 = nn.Conv2d(hidden_dim + input_dim, hidden_dim, (1, 5), padding=(0, 2))
            self.convr1 = nn.Conv2d(hidden_dim + input_dim, hidden_dim, (1, 5), padding=(0, 2))
            self.convq1 = nn.Conv2d(hidden_dim + input_dim, hidden_dim, (1, 5), padding=(0, 2))

            self.convz2 = nn.Conv2d(hidden_dim + input_dim, hidden_dim, (5, 1), padding=(2, 0))
            self.convr2 = nn.Conv2d(hidden_dim + input_dim, hidden_dim, (5, 1), padding=(2, 0))
            self.convq2 = nn.Conv2d(hidden_dim + input_dim, hidden_dim, (5, 1), padding=(2, 0))

        def forward(self, h, x):
            # horizontal
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(self.convz1(hx))
            r = torch.sigmoid(self.convr1(hx))
            q = torch.tanh(self.convq1(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q

            # vertical
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(self.convz2(hx))
            r = torch.sigmoid(self.convr2(hx))
            q = torch.tanh(self.convq2(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q

            return h

    class SmallMotionEncoder(nn.Module):
        def __init__(self, args):
            super(SmallMotionEncoder, self).__init__()
            cor_planes = args.corr_levels * (2 * args.corr_radius + 1)**2
            self.convc1 = nn.Conv2d(cor_planes, w(96), 1, padding=0)
            self.convf1 = nn.Conv2d(2, w(64), 7, padding=3)
            self.convf2 = nn.Conv2d(w(64), w(32), 3, padding=1)
            self.conv = nn.Conv2d(w(96) + w(32), w(80), 3, padding=1)

        def forward(self, flow, corr):
            cor = F.relu(self.convc1(corr))
            flo = F.relu(self.convf1(flow))
            flo = F.relu(self.convf2(flo))
            cor_flo = torch.cat([cor, flo], dim=1)
            out = F.relu(self.conv(cor_flo))
            return torch.cat([out, flow], dim=1)

    class BasicMotionEncoder(nn.Module):
        def __init__(self, args):
            super(BasicMotionEncoder, self).__init__()
            cor_planes = args.corr_levels * (2 * args.corr_radius + 1)**2
            self.convc1 = nn.Conv2d(cor_planes, w(256), 1, padding=0)
            self.convc2 = nn.Conv2d(w(256), w(192), 3, padding=1)
            self.convf1 = nn.Conv2d(2, w(128), 7, padding=3)
            self.convf2 = nn.Conv2d(w(128), w(64), 3, padding=1)
            self.conv = nn.Conv2d(w(64) + w(192), w(128) - 2, 3, padding=1)

        def forward(self, flow, corr):
            cor = F.relu(self.convc1(corr))
            cor = F.relu(self.convc2(cor))
            flo = F.relu(self.convf1(flow))
            flo = F.relu(self.convf2(flo))

            cor_flo = torch.cat([cor, flo], dim=1)
            out = F.relu(self.conv(cor_flo))
            return torch.cat([out, flow], dim=1)

    class SmallUpdateBlock(nn.Module):
        def __init__(self, args, hidden_dim=96):
            super(SmallUpdateBlock, self).__init__()
            self.encoder = SmallMotionEncoder(args)
            self.gru = ConvGRU(hidden_dim=hidden_dim, input_dim=w(80) + 2 + w(64))
            self.flow_head = FlowHead(hidden_dim, hidden_dim=w(128))

        def forward(self, net, inp, corr, flow):
            motion_features = self.encoder(flow, corr)
            inp = torch.cat([inp, motion_features], dim=1)
            net = self.gru(net, inp)
            delta_flow = self.flow_head(net)

            return net, None, delta_flow

    class BasicUpdateBlock(nn.Module):
        def __init__(self, args, hidden_dim=128, input_dim=128):
            super(BasicUpdateBlock, self).__init__()
            self.args = args
            self.encoder = BasicMotionEncoder(args)
            self.gru = SepConvGRU(hidden_dim=hidden_dim, input_dim=w(128) + hidden_dim)
            self.flow_head = FlowHead(hidden_dim, hidden_dim=w(256))

            self.mask = nn.Sequential(
                nn.Conv2d(w(128), w(256), 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(w(256), 64 * 9, 1, padding=0))

        def forward(self, net, inp, corr, flow, upsample=True):
            motion_features = self.encoder(flow, corr)
            inp = torch.cat([inp, motion_features], dim=1)

            net = self.gru(net, inp)
            delta_flow = self.flow_head(net)

            # scale mask to balence gradients
            mask = .25 * self.mask(net)
            return net, mask, delta_flow

    return SmallUpdateBlock, BasicUpdateBlock


def raft(torch, nn, F, small=False, float_dtype=None, dropout=0.0):
    """raft.py's ``RAFT`` (``args.small`` picks the small model), autocast as raft.py imports it."""
    utils = raft_utils(torch, F, float_dtype)
    CorrBlock = corr_block(torch, F, utils)
    BasicEncoder, SmallEncoder = extractor(torch, nn)
    SmallUpdateBlock, BasicUpdateBlock = update_blocks(torch, nn, F)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.cuda.amp.autocast is deprecated in both
        autocast = torch.cuda.amp.autocast

    class RAFT(nn.Module):
        def __init__(self, args):
            super(RAFT, self).__init__()
            self.args = args

            if args.small:
                self.hidden_dim = hdim = w(96)
                self.context_dim = cdim = w(64)
            else:
                self.hidden_dim = hdim = w(128)
                self.context_dim = cdim = w(128)
            args.corr_levels = CORR_LEVELS
            args.corr_radius = CORR_RADIUS

            if 'dropout' not in self.args:
                self.args.dropout = 0

            if 'alternate_corr' not in self.args:
                self.args.alternate_corr = False

            # feature network, context network, and update block
            if args.small:
                self.fnet = SmallEncoder(output_dim=w(128), norm_fn='instance', dropout=args.dropout)
                self.cnet = SmallEncoder(output_dim=hdim + cdim, norm_fn='none', dropout=args.dropout)
                self.update_block = SmallUpdateBlock(self.args, hidden_dim=hdim)
            else:
                self.fnet = BasicEncoder(output_dim=w(256), norm_fn='instance', dropout=args.dropout)
                self.cnet = BasicEncoder(output_dim=hdim + cdim, norm_fn='batch', dropout=args.dropout)
                self.update_block = BasicUpdateBlock(self.args, hidden_dim=hdim)

        def freeze_bn(self):
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()

        def initialize_flow(self, img):
            """ Flow is represented as difference between two coordinate grids flow = coords1 - coords0"""
            N, C, H, W = img.shape
            coords0 = utils.coords_grid(N, H // 8, W // 8, device=img.device)
            coords1 = utils.coords_grid(N, H // 8, W // 8, device=img.device)

            # optical flow computed as difference: flow = coords1 - coords0
            return coords0, coords1

        def upsample_flow(self, flow, mask):
            """ Upsample flow field [H/8, W/8, 2] -> [H, W, 2] using convex combination """
            N, _, H, W = flow.shape
            mask = mask.view(N, 1, 9, 8, 8, H, W)
            mask = torch.softmax(mask, dim=2)

            up_flow = F.unfold(8 * flow, [3, 3], padding=1)
            up_flow = up_flow.view(N, 2, 9, 1, 1, H, W)

            up_flow = torch.sum(mask * up_flow, dim=2)
            up_flow = up_flow.permute(0, 1, 4, 2, 5, 3)
            return up_flow.reshape(N, 2, 8 * H, 8 * W)

        def forward(self, image1, image2, iters=12, flow_init=None, upsample=True, test_mode=False):
            """ Estimate optical flow between pair of frames """

            image1 = 2 * (image1 / 255.0) - 1.0
            image2 = 2 * (image2 / 255.0) - 1.0

            image1 = image1.contiguous()
            image2 = image2.contiguous()

            hdim = self.hidden_dim
            cdim = self.context_dim

            # run the feature network
            with autocast(enabled=self.args.mixed_precision):
                fmap1, fmap2 = self.fnet([image1, image2])

            fmap1 = utils.float(fmap1)
            fmap2 = utils.float(fmap2)
            corr_fn = CorrBlock(fmap1, fmap2, num_levels=self.args.corr_levels, radius=self.args.corr_radius)

            # run the context network
            with autocast(enabled=self.args.mixed_precision):
                cnet = self.cnet(image1)
                net, inp = torch.split(cnet, [hdim, cdim], dim=1)
                net = torch.tanh(net)
                inp = torch.relu(inp)

            coords0, coords1 = self.initialize_flow(image1)

            if flow_init is not None:
                coords1 = coords1 + flow_init

            flow_predictions = []
            for itr in range(iters):
                coords1 = coords1.detach()
                corr = corr_fn(coords1)  # index correlation volume

                flow = coords1 - coords0
                with autocast(enabled=self.args.mixed_precision):
                    net, up_mask, delta_flow = self.update_block(net, inp, corr, flow)

                # F(t+1) = F(t) + \Delta(t)
                coords1 = coords1 + delta_flow

                # upsample predictions
                if up_mask is None:
                    flow_up = utils.upflow8(coords1 - coords0)
                else:
                    flow_up = self.upsample_flow(coords1 - coords0, up_mask)

                flow_predictions.append(flow_up)

            if test_mode:
                return coords1 - coords0, flow_up

            return flow_predictions

    return RAFT(Namespace(small=small, mixed_precision=False, dropout=dropout))


def sequence_loss(torch, flow_preds, flow_gt, valid, gamma=0.8, max_flow=MAX_FLOW, metrics=True):
    """ Loss function defined over sequence of flow predictions (train.py; ``metrics`` False leaves out the
    ``.item()`` metrics, read after a compiled step instead) """

    n_predictions = len(flow_preds)
    flow_loss = 0.0

    # exlude invalid pixels and extremely large diplacements
    mag = torch.sum(flow_gt**2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < max_flow)

    for i in range(n_predictions):
        i_weight = gamma**(n_predictions - i - 1)
        i_loss = (flow_preds[i] - flow_gt).abs()
        flow_loss += i_weight * (valid[:, None] * i_loss).mean()

    if not metrics:
        return flow_loss, None
    return flow_loss, flow_metrics(torch, flow_preds[-1], flow_gt, valid)


def flow_metrics(torch, flow_pred, flow_gt, valid):
    epe = torch.sum((flow_pred - flow_gt)**2, dim=1).sqrt()
    epe = epe.view(-1)[valid.view(-1)]

    return {
        'epe': epe.mean().item(),
        '1px': (epe < 1).float().mean().item(),
        '3px': (epe < 3).float().mean().item(),
        '5px': (epe < 5).float().mean().item(),
    }


def flow_pair(seed=0, batch=2, size=(32, 32)):
    """Two frames (0..255) where the second is the first shifted by a smooth flow, that flow, and a valid mask with
    invalid pixels and one displacement above ``MAX_FLOW`` (both excluded by the loss)."""
    rng = np.random.default_rng(seed)
    height, width = size
    image1 = rng.uniform(0, 255, (batch, 3, height, width))
    image2 = np.roll(image1, (1, 2), axis=(2, 3)) + rng.normal(0, 4, image1.shape)
    ys, xs = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    flow = np.stack([2 + 1.5 * np.sin(np.pi * ys), 1 + np.cos(np.pi * xs)])[None].repeat(batch, 0)
    flow = flow + rng.normal(0, 0.1, flow.shape)
    flow[0, :, 0, 0] = (500.0, 0.0)
    valid = (rng.uniform(size=(batch, height, width)) > 0.1).astype(np.float64)
    return image1, np.clip(image2, 0, 255), flow, valid
