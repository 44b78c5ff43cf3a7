"""``torch.nn.modules.batchnorm``: the layers, and ``_BatchNorm`` for ``isinstance(m, nn.modules.batchnorm._BatchNorm)``
(torchvision's ``set_weight_decay``): true for BatchNorm1d/2d/3d, SyncBatchNorm and the lazy ones, as in PyTorch."""

from kiln.frontend.layers_conv import BatchNorm2d
from kiln.frontend.layers_conv3d import BatchNorm3d
from kiln.frontend.layers_extra import SyncBatchNorm
from kiln.frontend.layers_lazy import LazyBatchNorm1d, LazyBatchNorm2d, LazyBatchNorm3d
from kiln.frontend.layers_norm import BatchNorm1d
from kiln.nn.modules._marker import IsinstanceOnlyBase


class _NormBase(IsinstanceOnlyBase):
    """PyTorch's common base of the batch and instance norms."""

    derive_from = "kiln.nn.BatchNorm2d (or BatchNorm1d/3d)"


class _BatchNorm(_NormBase):
    derive_from = "kiln.nn.BatchNorm2d (or BatchNorm1d/3d)"


_BatchNorm.register(BatchNorm2d)  # BatchNorm1d/3d, SyncBatchNorm and the lazy ones derive from it in kiln

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
           "SyncBatchNorm"]
