"""``F.linear_cross_entropy``, ``nn.LinearCrossEntropyLoss`` and ``nn.LinearCrossEntropyOptions``: PyTorch 2.13's
cross-entropy of linearly projected inputs (an LLM's vocabulary head and its loss in one call).

```python
loss = F.linear_cross_entropy(hidden, head.weight, labels, linear_bias=head.bias, ignore_index=-100)
criterion = nn.LinearCrossEntropyLoss(512, 32000, options=nn.LinearCrossEntropyOptions(batch_chunk_size=256))
```

It is PyTorch's reference: ``cross_entropy(linear(input, W, b).reshape(N, C, *out_features), target, ...)`` (``W`` of
shape ``(C, *out_features, in_features)``, ``target`` class indices or probabilities; ``ignore_index=None`` means
-100), in one graph that kiln's autodiff and memory plan treat as any other.

``options`` (PyTorch's opt-in to a batch-chunked op that never holds the ``(N, C)`` logits) are checked as PyTorch
checks them and computed by the reference, the same numbers: in kiln's plan, chunking does not pay.
``benchmarks/linear_cross_entropy_memory.py`` builds the chunked form in the graph (each chunk's logits inside
``kiln.utils.checkpoint``, recomputed in the backward) and measures the training step's planned peak: it RISES
(N=1024, in=128, C=16384: see that script's docstring), because every chunk reads the whole ``(C, in)`` weight, so
every chunk's backward makes a weight-sized gradient, and the autodiff pass sums a fan-out's gradients once all have
been made: they are all live together. PyTorch's op accumulates them in place, chunk by chunk. ``acc_policy`` and
``acc_dtype`` only matter for mixed precision: accepted when ``acc_dtype`` is None or the input's dtype, refused
otherwise; ``allow_retain_graph`` has no meaning in a kiln step and is accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.frontend.layers import Linear
from kiln.frontend.module import layer_dtype
from kiln.frontend.losses import _Loss
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error

ACC_POLICIES = ("auto", "accurate", "balanced", "compact")


@dataclass(frozen=True)
class LinearCrossEntropyOptions:
    """``torch.nn.LinearCrossEntropyOptions``: how PyTorch chunks the batch; kiln checks them as PyTorch does and
    computes the reference (see the module; a torch instance is read the same way)."""

    allow_retain_graph: bool = False
    """Accepted, no effect in kiln (PyTorch's backward consumes its buffers in place; kiln's graph does not)."""
    batch_chunk_size: int | None = None
    """Rows per chunk (``None``: from ``chunking_method``, or one chunk)."""
    chunking_method: str | None = "auto"
    """``"aspect_ratio[:k]"``: chunks whose logits are about the input's size, ``k`` times smaller; ``"auto"`` is
    ``"aspect_ratio:2"`` (PyTorch's pick for float32/float64); ``None``: ``batch_chunk_size``."""
    acc_policy: str = "auto"
    """PyTorch's mixed-precision policy: any of ``ACC_POLICIES``, the same numbers without mixed precision."""
    acc_dtype: Any = None
    """``None`` or the input's dtype (kiln refuses mixed-precision accumulation)."""

    def __post_init__(self) -> None:
        _check_options(self)


def _check_options(options: Any) -> None:
    method, size = getattr(options, "chunking_method", "auto"), getattr(options, "batch_chunk_size", None)
    if getattr(options, "acc_policy", "auto") not in ACC_POLICIES:
        raise ValueError(f"LinearCrossEntropyOptions: invalid acc_policy {options.acc_policy!r}; one of {', '.join(ACC_POLICIES)}")
    name, _, factor = (method or "aspect_ratio").partition(":")
    if method not in (None, "auto") and not (name == "aspect_ratio" and (not factor or (factor.isdigit() and int(factor) > 0))):
        raise ValueError(f"LinearCrossEntropyOptions: invalid chunking_method {method!r}; 'auto', 'aspect_ratio', 'aspect_ratio:N' or None")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ValueError(f"LinearCrossEntropyOptions: batch_chunk_size must be a positive int or None, got {size!r}")


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *, linear_bias: Tensor | None = None, weight: Any = None,
                         reduction: str = "mean", ignore_index: int | None = None, label_smoothing: float = 0.0,
                         options: Any = None) -> Tensor:
    """``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)`` as PyTorch's (see the module)."""
    classes, out_features = _check_shapes(input, linear_weight, linear_bias)
    logits_shape = tuple(input.shape[:-1]) + (classes,) + out_features
    probabilities = tuple(target.shape) == logits_shape
    if probabilities and ignore_index is not None:
        raise located_error("linear_cross_entropy: ignore_index cannot be specified when target contains probabilities")
    if options is not None:
        _checked_options(options, input)
    return _reference(input, linear_weight, target, linear_bias, weight, reduction, -100 if ignore_index is None else ignore_index,
                   label_smoothing, out_features)


def _reference(input: Tensor, linear_weight: Tensor, target: Tensor, bias: Tensor | None, weight: Any, reduction: str, ignore_index: int,
            label_smoothing: float, out_features: tuple[int, ...] = ()) -> Tensor:
    """PyTorch's reference: the logits ``(*batch, C, *out_features)``, then ``cross_entropy``."""
    from kiln.frontend.functional import cross_entropy, linear

    classes, width = linear_weight.shape[0], math.prod(out_features, start=linear_weight.shape[0])
    flat_weight = linear_weight.reshape(width, linear_weight.shape[-1]) if out_features else linear_weight
    flat_bias = bias.reshape(width) if bias is not None and out_features else bias
    logits = linear(input, flat_weight, flat_bias).reshape(tuple(input.shape[:-1]) + (classes,) + out_features)
    if input.ndim == 1:  # unbatched: kiln's cross_entropy takes a batch
        return cross_entropy(logits.unsqueeze(0), target.unsqueeze(0), weight, ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing).reshape(())
    return cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)


def _checked_options(options: Any, input: Tensor) -> None:
    """``options`` valid as PyTorch's, and no mixed-precision accumulation (kiln computes in the input's dtype)."""
    _check_options(options)
    acc_dtype = getattr(options, "acc_dtype", None)
    if acc_dtype is not None and str(acc_dtype).replace("torch.", "") not in (str(input.dtype), input.dtype.value, input.dtype.numpy.name):
        raise located_error(f"linear_cross_entropy: options.acc_dtype={acc_dtype} differs from the input's {input.dtype.value}; kiln has no "
                            "mixed-precision accumulation: pass acc_dtype=None, or cast the input")


def _check_shapes(input: Tensor, linear_weight: Tensor, bias: Tensor | None) -> tuple[int, tuple[int, ...]]:
    """PyTorch's checks; ``(C, out_features)`` from ``linear_weight``'s ``(C, *out_features, in_features)``."""
    if input.ndim not in (1, 2):
        raise located_error(f"linear_cross_entropy: expected input with dimensionality 1 or 2, got {input.type}")
    if linear_weight.ndim < 2:
        raise located_error(f"linear_cross_entropy: expected linear_weight with dimensionality at least 2, got {linear_weight.type}")
    if input.shape[-1] != linear_weight.shape[-1]:
        raise located_error(f"linear_cross_entropy: expected equal input and linear_weight last dimensions (in_features), got "
                            f"{input.type} and {linear_weight.type}")
    classes, out_features = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    if bias is not None and tuple(bias.shape) != (classes,) + out_features:
        raise located_error(f"linear_cross_entropy: expected linear_bias shape {(classes,) + out_features}, got {bias.type}")
    if out_features and input.ndim == 1:
        raise located_error(f"linear_cross_entropy: K-dimensional loss defined by linear_weight {linear_weight.type} requires batched "
                            f"input (N, {input.shape[-1]}), got {input.type}")
    return classes, out_features


class LinearCrossEntropyLoss(_Loss):
    """``torch.nn.LinearCrossEntropyLoss``: a bias-optional ``Linear`` to ``num_classes * prod(out_features)`` logits
    (stored flat, as PyTorch's ``self.linear``) and ``F.linear_cross_entropy``; ``weight`` is a constant of the loss."""

    def __init__(self, in_features: int, num_classes: int, *, out_features: tuple[int, ...] = (), bias: bool = False, device: Any = None,
                 dtype: Any = None, reduction: str = "mean", weight: Any = None, ignore_index: int | None = None,
                 label_smoothing: float = 0.0, options: Any = None):
        dtype = layer_dtype(dtype)
        if weight is not None and np.shape(weight) != (num_classes,):
            raise ValueError(f"LinearCrossEntropyLoss: expected weight shape to be {(num_classes,)}, got {np.shape(weight)}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"LinearCrossEntropyLoss: expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        if options is not None:
            _check_options(options)
        super().__init__(reduction)
        self.num_classes, self.out_features = num_classes, tuple(out_features)
        self.weight, self.ignore_index, self.label_smoothing, self.options = weight, ignore_index, label_smoothing, options
        self.linear = Linear(in_features, math.prod(self.out_features, start=num_classes), bias=bias, dtype=dtype)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        shape = (self.num_classes,) + self.out_features
        bias = None if self.linear.bias is None else self.linear.bias.reshape(shape)
        return linear_cross_entropy(input, self.linear.weight.reshape(shape + (self.linear.in_features,)), target, linear_bias=bias,
                                    weight=self.weight, reduction=self.reduction, ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing, options=self.options)

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, out_features={self.out_features}, "
                f"bias={self.linear.bias is not None}, reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, options={self.options}")


__all__ = ["LinearCrossEntropyLoss", "LinearCrossEntropyOptions", "linear_cross_entropy"]
