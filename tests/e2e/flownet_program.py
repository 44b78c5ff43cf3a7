"""FlowNetS and its losses as ClementPinard/FlowNetPytorch writes them (``models/FlowNetS.py``, ``models/util.py``,
``multiscaleloss.py``, ``main.py``'s parameter groups), and PWC-Net's warping (NVlabs/PWC-Net ``PyTorch/models/
PWCNet.py``'s ``warp``) with a cost volume in plain PyTorch (``F.pad`` and shifted products, as the reimplementations
without the CUDA correlation write it), written once for ``(torch, nn, F)`` being torch or kiln.

Widths are divided down (``WIDTHS``); frames of ``HEIGHT`` x ``WIDTH`` (80 wide, so the deconvolutions overshoot the
encoder's 5- and 3-wide maps and ``crop_like`` crops).
"""

from __future__ import annotations

import numpy as np

HEIGHT, WIDTH = 64, 80
WIDTHS = {64: 4, 128: 4, 256: 8, 512: 8, 1024: 8}


def flownet_s(torch, nn, F, batchNorm=True):
    w = WIDTHS.__getitem__
    kaiming_normal_, constant_ = nn.init.kaiming_normal_, nn.init.constant_

    def conv(batchNorm, in_planes, out_planes, kernel_size=3, stride=1):
        if batchNorm:
            return nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                          bias=False),
                nn.BatchNorm2d(out_planes),
                nn.LeakyReLU(0.1, inplace=True)
            )
        else:
            return nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                          bias=True),
                nn.LeakyReLU(0.1, inplace=True)
            )

    def predict_flow(in_planes):
        return nn.Conv2d(in_planes, 2, kernel_size=3, stride=1, padding=1, bias=False)

    def deconv(in_planes, out_planes):
        return nn.Sequential(
            nn.ConvTranspose2d(in_planes, out_planes, kernel_size=4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.1, inplace=True)
        )

    def crop_like(input, target):
        if input.size()[2:] == target.size()[2:]:
            return input
        else:
            return input[:, :, :target.size(2), :target.size(3)]

    class FlowNetS(nn.Module):
        expansion = 1

        def __init__(self, batchNorm=True):
            super(FlowNetS, self).__init__()

            self.batchNorm = batchNorm
            self.conv1 = conv(self.batchNorm, 6, w(64), kernel_size=7, stride=2)
            self.conv2 = conv(self.batchNorm, w(64), w(128), kernel_size=5, stride=2)
            self.conv3 = conv(self.batchNorm, w(128), w(256), kernel_size=5, stride=2)
            self.conv3_1 = conv(self.batchNorm, w(256), w(256))
            self.conv4 = conv(self.batchNorm, w(256), w(512), stride=2)
            self.conv4_1 = conv(self.batchNorm, w(512), w(512))
            self.conv5 = conv(self.batchNorm, w(512), w(512), stride=2)
            self.conv5_1 = conv(self.batchNorm, w(512), w(512))
            self.conv6 = conv(self.batchNorm, w(512), w(1024), stride=2)
            self.conv6_1 = conv(self.batchNorm, w(1024), w(1024))

            self.deconv5 = deconv(w(1024), w(512))
            self.deconv4 = deconv(w(512) * 2 + 2, w(256))
            self.deconv3 = deconv(w(512) + w(256) + 2, w(128))
            self.deconv2 = deconv(w(256) + w(128) + 2, w(64))

            self.predict_flow6 = predict_flow(w(1024))
            self.predict_flow5 = predict_flow(w(512) * 2 + 2)
            self.predict_flow4 = predict_flow(w(512) + w(256) + 2)
            self.predict_flow3 = predict_flow(w(256) + w(128) + 2)
            self.predict_flow2 = predict_flow(w(128) + w(64) + 2)

            self.upsampled_flow6_to_5 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)
            self.upsampled_flow5_to_4 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)
            self.upsampled_flow4_to_3 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)
            self.upsampled_flow3_to_2 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)

            for m in self.modules():
                if isinstance(m, nn.Conv2d) or isinstance(m, nn.ConvTranspose2d):
                    kaiming_normal_(m.weight, 0.1)
                    if m.bias is not None:
                        constant_(m.bias, 0)
                elif isinstance(m, nn.BatchNorm2d):
                    constant_(m.weight, 1)
                    constant_(m.bias, 0)

        def forward(self, x):
            out_conv2 = self.conv2(self.conv1(x))
            out_conv3 = self.conv3_1(self.conv3(out_conv2))
            out_conv4 = self.conv4_1(self.conv4(out_conv3))
            out_conv5 = self.conv5_1(self.conv5(out_conv4))
            out_conv6 = self.conv6_1(self.conv6(out_conv5))

            flow6 = self.predict_flow6(out_conv6)
            flow6_up = crop_like(self.upsampled_flow6_to_5(flow6), out_conv5)
            out_deconv5 = crop_like(self.deconv5(out_conv6), out_conv5)

            concat5 = torch.cat((out_conv5, out_deconv5, flow6_up), 1)
            flow5 = self.predict_flow5(concat5)
            flow5_up = crop_like(self.upsampled_flow5_to_4(flow5), out_conv4)
            out_deconv4 = crop_like(self.deconv4(concat5), out_conv4)

            concat4 = torch.cat((out_conv4, out_deconv4, flow5_up), 1)
            flow4 = self.predict_flow4(concat4)
            flow4_up = crop_like(self.upsampled_flow4_to_3(flow4), out_conv3)
            out_deconv3 = crop_like(self.deconv3(concat4), out_conv3)

            concat3 = torch.cat((out_conv3, out_deconv3, flow4_up), 1)
            flow3 = self.predict_flow3(concat3)
            flow3_up = crop_like(self.upsampled_flow3_to_2(flow3), out_conv2)
            out_deconv2 = crop_like(self.deconv2(concat3), out_conv2)

            concat2 = torch.cat((out_conv2, out_deconv2, flow3_up), 1)
            flow2 = self.predict_flow2(concat2)

            if self.training:
                return flow2, flow3, flow4, flow5, flow6
            else:
                return flow2

        def weight_parameters(self):
            return [param for name, param in self.named_parameters() if 'weight' in name]

        def bias_parameters(self):
            return [param for name, param in self.named_parameters() if 'bias' in name]

    return FlowNetS(batchNorm)


def multiscale_loss(torch, F):
    """multiscaleloss.py."""

    def EPE(input_flow, target_flow, sparse=False, mean=True):
        EPE_map = torch.norm(target_flow - input_flow, 2, 1)
        batch_size = EPE_map.size(0)
        if sparse:
            # invalid flow is defined with both flow coordinates to be exactly 0
            mask = (target_flow[:, 0] == 0) & (target_flow[:, 1] == 0)

            EPE_map = EPE_map[~mask]
        if mean:
            return EPE_map.mean()
        else:
            return EPE_map.sum() / batch_size

    def sparse_max_pool(input, size):
        '''Downsample the input by considering 0 values as invalid.

        Unfortunately, no generic interpolation mode can resize a sparse map correctly,
        the strategy here is to use max pooling for positive values and "min pooling"
        for negative values, the two results are then summed.
        This technique allows sparsity to be minized, contrary to nearest interpolation,
        which could potentially lose information for isolated data points.'''

        positive = (input > 0).float()
        negative = (input < 0).float()
        output = F.adaptive_max_pool2d(input * positive, size) - F.adaptive_max_pool2d(-input * negative, size)
        return output

    def multiscaleEPE(network_output, target_flow, weights=None, sparse=False):
        def one_scale(output, target, sparse):

            b, _, h, w = output.size()

            if sparse:
                target_scaled = sparse_max_pool(target, (h, w))
            else:
                target_scaled = F.interpolate(target, (h, w), mode='area')
            return EPE(output, target_scaled, sparse, mean=False)

        if type(network_output) not in [tuple, list]:
            network_output = [network_output]
        if weights is None:
            weights = [0.005, 0.01, 0.02, 0.08, 0.32]  # as in original article
        assert(len(weights) == len(network_output))

        loss = 0
        for output, weight in zip(network_output, weights):
            loss += weight * one_scale(output, target_flow, sparse)
        return loss

    def realEPE(output, target, sparse=False):
        b, _, h, w = target.size()
        upsampled_output = F.interpolate(output, (h, w), mode='bilinear', align_corners=False)
        return EPE(upsampled_output, target, sparse, mean=True)

    return multiscaleEPE, realEPE


def pwc_warp(torch, nn, F):
    """PWC-Net's ``warp`` (its ``.cuda()`` calls dropped: CPU) and a plain-PyTorch cost volume."""
    Variable = torch.autograd.Variable

    def warp(x, flo):
        """
        warp an image/tensor (im2) back to im1, according to the optical flow

        x: [B, C, H, W] (im2)
        flo: [B, 2, H, W] flow

        """
        B, C, H, W = x.size()
        # mesh grid
        xx = torch.arange(0, W).view(1, -1).repeat(H, 1)
        yy = torch.arange(0, H).view(-1, 1).repeat(1, W)
        xx = xx.view(1, 1, H, W).repeat(B, 1, 1, 1)
        yy = yy.view(1, 1, H, W).repeat(B, 1, 1, 1)
        grid = torch.cat((xx, yy), 1).float()

        vgrid = Variable(grid) + flo

        # scale grid to [-1,1]
        vgrid[:, 0, :, :] = 2.0 * vgrid[:, 0, :, :].clone() / max(W - 1, 1) - 1.0
        vgrid[:, 1, :, :] = 2.0 * vgrid[:, 1, :, :].clone() / max(H - 1, 1) - 1.0

        vgrid = vgrid.permute(0, 2, 3, 1)
        output = nn.functional.grid_sample(x, vgrid)
        mask = torch.autograd.Variable(torch.ones(x.size()))
        mask = nn.functional.grid_sample(mask, vgrid)

        mask[mask < 0.9999] = 0
        mask[mask > 0] = 1

        return output * mask

    def cost_volume(f1, f2, md=2):
        b, c, h, w = f1.shape
        f2 = F.pad(f2, (md, md, md, md))
        cv = []
        for i in range(2 * md + 1):
            for j in range(2 * md + 1):
                cv.append((f1 * f2[:, :, i:i + h, j:j + w]).mean(1, keepdim=True))
        return F.leaky_relu(torch.cat(cv, 1), 0.1)

    return warp, cost_volume


def frames_and_flow(seed=0, batch=2, sparse=False):
    """Two frames stacked on channels (``torch.cat(input, 1)`` of main.py) and a smooth flow; ``sparse`` zeroes both
    coordinates of a third of the pixels (KITTI's invalid flow)."""
    rng = np.random.default_rng(seed)
    frames = rng.uniform(-1, 1, (batch, 6, HEIGHT, WIDTH))
    ys, xs = np.meshgrid(np.linspace(-1, 1, HEIGHT), np.linspace(-1, 1, WIDTH), indexing="ij")
    flow = np.stack([3 * np.sin(2 * ys) + xs, 2 * np.cos(xs)])[None].repeat(batch, 0)
    flow = flow + rng.normal(0, 0.1, (batch, 2, HEIGHT, WIDTH))
    if sparse:
        flow = flow * (rng.uniform(size=(batch, 1, HEIGHT, WIDTH)) > 0.33)
    return frames, flow
