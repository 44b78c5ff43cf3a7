"""V-Net (mattmacy/vnet.pytorch ``vnet.py``, ``train.py``) and the BraTS-notebook 3-D U-Net (``DoubleConv``, ``Down``,
``Up``, ``UNet3d``) with a softmax Dice loss on ``F.one_hot(...).permute(0, 4, 1, 2, 3)`` targets, written once for
``(torch, nn, F)`` being torch or kiln.

Sizes: V-Net's first level has ``BASE`` channels (the reference: 16, so ``InputTransition`` concatenates 16 copies
of the input; here ``BASE`` copies), its volumes 16 voxels a side; the U-Net's ``n_channels`` is 2, its volumes
``UNET_VOLUME`` a side.
``InputTransition`` concatenates the copies along dim 1 (the reference's ``dim 0`` broadcasts a batch of one to a
batch of 16: its known bug, which the forks fix so). ``UpTransition``'s always-on ``nn.Dropout3d()`` takes
``dropout_p`` (0 in lockstep runs: kiln's generator draws other masks than torch's).
"""

from __future__ import annotations

import numpy as np

BASE = 4
VOLUME = 16
UNET_VOLUME = 36  # 36 -> 18 -> 9 -> 4 -> 2: the decoder pads 8 to the skip's 9 (``Up``'s ``F.pad``)


def vnet(torch, nn, F, elu=True, nll=False, dropout_p=0.5):

    def passthrough(x, **kwargs):
        return x

    def ELUCons(elu, nchan):
        if elu:
            return nn.ELU(inplace=True)
        else:
            return nn.PReLU(nchan)

    # normalization between sub-volumes is necessary
    # for good performance
    class ContBatchNorm3d(nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input):
            if input.dim() != 5:
                raise ValueError('expected 5D input (got {}D input)'
                                 .format(input.dim()))
            # the reference's super(ContBatchNorm3d, self)._check_input_dim(input) reaches _NormBase's, which raises
            # NotImplementedError since PyTorch 0.4 (in kiln too): the forks drop it, as here

        def forward(self, input):
            self._check_input_dim(input)
            return F.batch_norm(
                input, self.running_mean, self.running_var, self.weight, self.bias,
                True, self.momentum, self.eps)

    class LUConv(nn.Module):
        def __init__(self, nchan, elu):
            super(LUConv, self).__init__()
            self.relu1 = ELUCons(elu, nchan)
            self.conv1 = nn.Conv3d(nchan, nchan, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(nchan)

        def forward(self, x):
            out = self.relu1(self.bn1(self.conv1(x)))
            return out

    def _make_nConv(nchan, depth, elu):
        layers = []
        for _ in range(depth):
            layers.append(LUConv(nchan, elu))
        return nn.Sequential(*layers)

    class InputTransition(nn.Module):
        def __init__(self, outChans, elu):
            super(InputTransition, self).__init__()
            self.conv1 = nn.Conv3d(1, BASE, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(BASE)
            self.relu1 = ELUCons(elu, BASE)

        def forward(self, x):
            # do we want a PRELU here as well?
            out = self.bn1(self.conv1(x))
            # split input in to 16 channels
            x16 = torch.cat((x, x, x, x), 1)
            out = self.relu1(torch.add(out, x16))
            return out

    class DownTransition(nn.Module):
        def __init__(self, inChans, nConvs, elu, dropout=False):
            super(DownTransition, self).__init__()
            outChans = 2 * inChans
            self.down_conv = nn.Conv3d(inChans, outChans, kernel_size=2, stride=2)
            self.bn1 = ContBatchNorm3d(outChans)
            self.do1 = passthrough
            self.relu1 = ELUCons(elu, outChans)
            self.relu2 = ELUCons(elu, outChans)
            if dropout:
                self.do1 = nn.Dropout3d(dropout_p)
            self.ops = _make_nConv(outChans, nConvs, elu)

        def forward(self, x):
            down = self.relu1(self.bn1(self.down_conv(x)))
            out = self.do1(down)
            out = self.ops(out)
            out = self.relu2(torch.add(out, down))
            return out

    class UpTransition(nn.Module):
        def __init__(self, inChans, outChans, nConvs, elu, dropout=False):
            super(UpTransition, self).__init__()
            self.up_conv = nn.ConvTranspose3d(inChans, outChans // 2, kernel_size=2, stride=2)
            self.bn1 = ContBatchNorm3d(outChans // 2)
            self.do1 = passthrough
            self.do2 = nn.Dropout3d(dropout_p)
            self.relu1 = ELUCons(elu, outChans // 2)
            self.relu2 = ELUCons(elu, outChans)
            if dropout:
                self.do1 = nn.Dropout3d(dropout_p)
            self.ops = _make_nConv(outChans, nConvs, elu)

        def forward(self, x, skipx):
            out = self.do1(x)
            skipxdo = self.do2(skipx)
            out = self.relu1(self.bn1(self.up_conv(out)))
            xcat = torch.cat((out, skipxdo), 1)
            out = self.ops(xcat)
            out = self.relu2(torch.add(out, xcat))
            return out

    class OutputTransition(nn.Module):
        def __init__(self, inChans, elu, nll):
            super(OutputTransition, self).__init__()
            self.conv1 = nn.Conv3d(inChans, 2, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(2)
            self.conv2 = nn.Conv3d(2, 2, kernel_size=1)
            self.relu1 = ELUCons(elu, 2)
            if nll:
                self.softmax = F.log_softmax
            else:
                self.softmax = F.softmax

        def forward(self, x):
            # convolve 32 down to 2 channels
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.conv2(out)

            # make channels the last axis
            out = out.permute(0, 2, 3, 4, 1).contiguous()
            # flatten
            out = out.view(out.numel() // 2, 2)
            out = self.softmax(out)
            # treat channel 0 as the predicted output
            return out

    class VNet(nn.Module):
        # the number of convolutions in each layer corresponds
        # to what is in the actual prototxt, not the intent
        def __init__(self, elu=True, nll=False):
            super(VNet, self).__init__()
            b = BASE
            self.in_tr = InputTransition(b, elu)
            self.down_tr32 = DownTransition(b, 1, elu)
            self.down_tr64 = DownTransition(2 * b, 2, elu)
            self.down_tr128 = DownTransition(4 * b, 3, elu, dropout=True)
            self.down_tr256 = DownTransition(8 * b, 2, elu, dropout=True)
            self.up_tr256 = UpTransition(16 * b, 16 * b, 2, elu, dropout=True)
            self.up_tr128 = UpTransition(16 * b, 8 * b, 2, elu, dropout=True)
            self.up_tr64 = UpTransition(8 * b, 4 * b, 1, elu)
            self.up_tr32 = UpTransition(4 * b, 2 * b, 1, elu)
            self.out_tr = OutputTransition(2 * b, elu, nll)

        def forward(self, x):
            out16 = self.in_tr(x)
            out32 = self.down_tr32(out16)
            out64 = self.down_tr64(out32)
            out128 = self.down_tr128(out64)
            out256 = self.down_tr256(out128)
            out = self.up_tr256(out256, out128)
            out = self.up_tr128(out, out64)
            out = self.up_tr64(out, out32)
            out = self.up_tr32(out, out16)
            out = self.out_tr(out)
            return out

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv3d') != -1:
            nn.init.kaiming_normal(m.weight)
            m.bias.data.zero_()

    model = VNet(elu=elu, nll=nll)
    model.apply(weights_init)
    return model


def unet3d(torch, nn, F, in_channels=1, n_classes=3, n_channels=2, trilinear=True):
    """The BraTS 2020 notebook's ``UNet3d`` (``InstanceNorm3d(affine=True)`` here where it writes ``GroupNorm``; both
    are common), ``Up`` by trilinear ``nn.Upsample`` or ``ConvTranspose3d`` and the ``F.pad`` to the skip's size."""

    class DoubleConv(nn.Module):
        """(Conv3D -> IN -> ReLU) * 2"""
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.double_conv = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
                nn.InstanceNorm3d(out_channels, affine=True),
                nn.ReLU(inplace=True),

                nn.Conv3d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
                nn.InstanceNorm3d(out_channels, affine=True),
                nn.ReLU(inplace=True)
            )

        def forward(self, x):
            return self.double_conv(x)

    class Down(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.MaxPool3d(2, 2),
                DoubleConv(in_channels, out_channels)
            )

        def forward(self, x):
            return self.encoder(x)

    class Up(nn.Module):
        def __init__(self, in_channels, out_channels, trilinear=True):
            super().__init__()

            if trilinear:
                self.up = nn.Upsample(scale_factor=2, mode='trilinear', align_corners=True)
            else:
                self.up = nn.ConvTranspose3d(in_channels // 2, in_channels // 2, kernel_size=2, stride=2)

            self.conv = DoubleConv(in_channels, out_channels)

        def forward(self, x1, x2):
            x1 = self.up(x1)

            diffZ = x2.size()[2] - x1.size()[2]
            diffY = x2.size()[3] - x1.size()[3]
            diffX = x2.size()[4] - x1.size()[4]
            x1 = F.pad(x1, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2, diffZ // 2,
                            diffZ - diffZ // 2])

            x = torch.cat([x2, x1], dim=1)
            return self.conv(x)

    class Out(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)

        def forward(self, x):
            return self.conv(x)

    class UNet3d(nn.Module):
        def __init__(self, in_channels, n_classes, n_channels):
            super().__init__()
            self.in_channels = in_channels
            self.n_classes = n_classes
            self.n_channels = n_channels

            self.conv = DoubleConv(in_channels, n_channels)
            self.enc1 = Down(n_channels, 2 * n_channels)
            self.enc2 = Down(2 * n_channels, 4 * n_channels)
            self.enc3 = Down(4 * n_channels, 8 * n_channels)
            self.enc4 = Down(8 * n_channels, 8 * n_channels)

            self.dec1 = Up(16 * n_channels, 4 * n_channels, trilinear)
            self.dec2 = Up(8 * n_channels, 2 * n_channels, trilinear)
            self.dec3 = Up(4 * n_channels, n_channels, trilinear)
            self.dec4 = Up(2 * n_channels, n_channels, trilinear)
            self.out = Out(n_channels, n_classes)

        def forward(self, x):
            x1 = self.conv(x)
            x2 = self.enc1(x1)
            x3 = self.enc2(x2)
            x4 = self.enc3(x3)
            x5 = self.enc4(x4)

            mask = self.dec1(x5, x4)
            mask = self.dec2(mask, x3)
            mask = self.dec3(mask, x2)
            mask = self.dec4(mask, x1)
            mask = self.out(mask)
            return mask

    return UNet3d(in_channels, n_classes, n_channels)


def dice_loss(torch, nn, F, smooth=1e-5, ignore_background=False):
    """The softmax Dice loss as segmentation code writes it: ``F.one_hot(target, num_classes).permute(0, 4, 1, 2, 3)
    .float()``, sums over the batch and the volume, the mean over the classes."""

    class DiceLoss(nn.Module):
        def __init__(self, smooth=1e-5):
            super().__init__()
            self.smooth = smooth

        def forward(self, logits, target):
            num_classes = logits.shape[1]
            probs = F.softmax(logits, dim=1)
            target_one_hot = F.one_hot(target, num_classes).permute(0, 4, 1, 2, 3).float()
            if ignore_background:
                probs, target_one_hot = probs[:, 1:], target_one_hot[:, 1:]
            dims = (0, 2, 3, 4)
            intersection = torch.sum(probs * target_one_hot, dims)
            cardinality = torch.sum(probs + target_one_hot, dims)
            dice = (2. * intersection + self.smooth) / (cardinality + self.smooth)
            return 1 - dice.mean()

    return DiceLoss(smooth)


def volumes(seed=0, batch=2, size=VOLUME, classes=3):
    """Noisy volumes with a ball and a cube; the labels (0 background, 1 ball, 2 cube; ``classes`` 2: ball or not)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")).astype(np.float64)
    images, labels = [], []
    for _ in range(batch):
        center = rng.uniform(4, size - 4, 3)
        ball = np.sum((grid - center[:, None, None, None])**2, axis=0) < rng.uniform(9, 16)
        corner = rng.integers(1, size // 2, 3)
        cube = np.zeros_like(ball)
        cube[corner[0]:corner[0] + 4, corner[1]:corner[1] + 4, corner[2]:corner[2] + 4] = True
        label = np.where(ball, 1, np.where(cube, 2, 0)) if classes == 3 else ball.astype(np.int64)
        images.append(label[None] * 0.8 + rng.normal(0, 0.3, (1, size, size, size)))
        labels.append(label)
    return np.stack(images), np.stack(labels).astype(np.int64)
