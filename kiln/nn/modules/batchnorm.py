"""``torch.nn.modules.batchnorm``: the layers and their base ``_BatchNorm`` (``frontend/batch_norm_base.py``), which
they derive from as in PyTorch (``isinstance(m, nn.modules.batchnorm._BatchNorm)`` in torchvision's
``set_weight_decay``) and user code derives from (vnet.pytorch's ``ContBatchNorm3d``); ``_NormBase`` answers
``isinstance`` for them only."""

from kiln.frontend.batch_norm_base import _BatchNorm
from kiln.frontend.layers_conv import BatchNorm2d
from kiln.frontend.layers_conv3d import BatchNorm3d
from kiln.frontend.layers_extra import SyncBatchNorm
from kiln.frontend.layers_lazy import LazyBatchNorm1d, LazyBatchNorm2d, LazyBatchNorm3d
from kiln.frontend.layers_norm import BatchNorm1d
from kiln.nn.modules._marker import IsinstanceOnlyBase


class _NormBase(IsinstanceOnlyBase):
    """PyTorch's common base of the batch and instance norms."""

    derive_from = "kiln.nn.modules.batchnorm._BatchNorm (or kiln.nn.BatchNorm2d, BatchNorm1d/3d)"


_NormBase.register(_BatchNorm)

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
           "SyncBatchNorm"]
