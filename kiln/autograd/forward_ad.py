"""``kiln.autograd.forward_ad``: PyTorch's ``torch.autograd.forward_ad`` (``runtime/forward_ad.py``)."""

from kiln.runtime.forward_ad import (UnpackedDualTensor, dual_level, enter_dual_level, exit_dual_level, make_dual,
                                     unpack_dual)

__all__ = ["UnpackedDualTensor", "dual_level", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual"]
