"""``torch.nn.modules.instancenorm``: the layers and their base ``_InstanceNorm`` (kiln's own base class, so a subclass
of it works as in PyTorch)."""

from kiln.frontend.layers_extra import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, _InstanceNorm
from kiln.frontend.layers_lazy import LazyInstanceNorm1d, LazyInstanceNorm2d, LazyInstanceNorm3d
from kiln.nn.modules.batchnorm import _NormBase

_NormBase.register(_InstanceNorm)

__all__ = ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LazyInstanceNorm1d", "LazyInstanceNorm2d",
           "LazyInstanceNorm3d"]
