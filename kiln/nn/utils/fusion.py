"""``kiln.nn.utils.fusion``: ``torch.nn.utils.fusion`` (``frontend/fusion.py``)."""

from kiln.frontend.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval, fuse_linear_bn_weights

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights"]
