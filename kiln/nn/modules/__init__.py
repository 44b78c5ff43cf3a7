"""``kiln.nn.modules``: ``torch.nn.modules``'s submodules that PyTorch code names (``nn.modules.batchnorm._BatchNorm``
in torchvision's ``set_weight_decay``, ``nn.modules.conv._ConvNd``, ``nn.modules.module.Module``), each holding
kiln's layers."""

from kiln.nn.modules import batchnorm, conv, instancenorm, module

__all__ = ["batchnorm", "conv", "instancenorm", "module"]
