"""``torch.nn.modules.conv``: the layers, and ``_ConvNd``/``_ConvTransposeNd`` for ``isinstance`` checks (as in init
loops that treat every convolution alike)."""

from kiln.frontend.layers_conv import Conv1d, Conv2d, ConvTranspose2d
from kiln.frontend.layers_conv3d import Conv3d, ConvTranspose3d
from kiln.frontend.layers_extra import ConvTranspose1d
from kiln.nn.modules._marker import IsinstanceOnlyBase


class _ConvNd(IsinstanceOnlyBase):
    derive_from = "kiln.nn.Conv2d (or Conv1d/3d)"


class _ConvTransposeNd(_ConvNd):
    derive_from = "kiln.nn.ConvTranspose2d (or ConvTranspose1d/3d)"


for _layer in (Conv1d, Conv2d, Conv3d):
    _ConvNd.register(_layer)
for _layer in (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d):
    _ConvTransposeNd.register(_layer)

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]
