"""``torch.nn.modules.batchnorm._BatchNorm``: the batch norms' common base, a working layer as PyTorch's.

``BatchNorm1d/2d/3d`` (and ``SyncBatchNorm``, the lazy ones) derive from it, so ``isinstance(m,
nn.modules.batchnorm._BatchNorm)`` holds for them (torchvision's ``set_weight_decay``). User code derives from it too:
vnet.pytorch's ``ContBatchNorm3d(nn.modules.batchnorm._BatchNorm)`` gets the parameters, the buffers and PyTorch's
forward, which asks the subclass's ``_check_input_dim`` first (the base's raises ``NotImplementedError``, as torch
2.13's, so calling it through ``super()`` fails in both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend import functional as F
from kiln.frontend import layer_resets
from kiln.frontend.eager_values import eager_array
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext


class _BatchNorm(Module):
    """``weight``, ``bias`` and the buffers ``running_mean``, ``running_var``, ``num_batches_tracked``.

    In training mode each step normalizes with the batch's statistics and returns the updated running statistics as
    extra outputs, which ``compile_train_step`` writes back; eval mode uses the running ones. ``momentum=None`` makes
    the running statistics the cumulative average of every batch seen (PyTorch's). PyTorch's signature: with
    ``track_running_stats=False`` there are no buffers and every forward, eval mode included, normalizes with the
    batch's statistics; ``bias=False`` (torch 2.13) keeps the weight only.
    """

    reset_parameters = layer_resets.running_stats_and_affine
    reset_running_stats = layer_resets.running_stats

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Any = None, dtype: Any = None, *, bias: bool = True):
        super().__init__()
        dtype = layer_dtype(dtype)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine and bias else None
        if not track_running_stats:
            self.running_mean = self.running_var = self.num_batches_tracked = None
            layer_resets.reset_if_overridden(self, layer_resets.running_stats_and_affine)
            return
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        layer_resets.reset_if_overridden(self, layer_resets.running_stats_and_affine)

    def _check_input_dim(self, input: Tensor) -> None:
        """Each concrete norm's check of its input's rank; the base has none (PyTorch's ``NotImplementedError``)."""
        raise NotImplementedError

    def forward(self, input: Tensor) -> Tensor:
        """PyTorch's ``_BatchNorm.forward``: the subclass's input check, then ``_batch_norm``."""
        self._check_input_dim(input)
        return self._batch_norm(input)

    def _batch_norm(self, input: Tensor) -> Tensor:
        """``F.batch_norm`` with the batch's statistics in training mode (counting the batch) or without running
        statistics, else the running ones."""
        if not self.track_running_stats:
            return F.batch_norm(input, None, None, self.weight, self.bias, True, self.momentum, self.eps)
        momentum = self.momentum
        if self.training:
            count = self.num_batches_tracked + 1
            TraceContext.current().update_buffer(self.num_batches_tracked, count.value)
            momentum = self._average_factor(count)
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            momentum, self.eps)

    def _average_factor(self, count: Tensor) -> Any:
        """The running statistics' update factor: ``momentum``, or with ``momentum=None`` PyTorch's cumulative average,
        ``1 / num_batches_tracked`` after this batch's increment (a Python float eagerly, as torch's; a tensor of the
        statistics' dtype in a traced step, where the count is only known when the step runs)."""
        if self.momentum is not None:
            return self.momentum
        known = eager_array(count)
        if known is not None:
            return 1.0 / float(known)
        return 1.0 / count.to(self.running_mean.dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")
