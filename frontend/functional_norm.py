"""``F.group_norm`` and ``F.rms_norm``, with PyTorch's names, argument orders and defaults.

Both are built from ops kiln already has, so their gradients, fusion and ONNX export come from existing rules:

```
group_norm:  (N, C, *) -> reshape (N, G, C/G * prod(*)) -> nn.layer_norm over the last axis (no affine)
             -> reshape (N, C, *) -> * weight_c + bias_c                         (per-channel affine)
rms_norm:    x * rsqrt(mean(x^2 over the trailing normalized_shape axes) + eps) * weight
```

Group norm's statistics are those of ``nn.layer_norm`` (``standardize`` in ``compiler/ops/transformer.py``: biased
variance, ``eps`` inside the square root), so a backend that lowers layer norm as one row kernel (NumPy, ONNX
``LayerNormalization``) runs group norm with it too; its backward is ``nn.layer_norm_grad``.
"""

from __future__ import annotations

from typing import Sequence

import ml_dtypes

from kiln.frontend.functional_half import in_opmath, mixed_norm, opmath_dtype
from kiln.frontend.functional_nn import layer_norm, mixed_dtypes, rsqrt
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize ``input (N, C, *)`` over each group of ``C / num_groups`` channels and all of ``*``, then scale and
    shift each channel by ``weight[c]`` and ``bias[c]`` (either may be missing), as ``torch.nn.functional.group_norm``.
    A half input with float32 weights computes in float32 and keeps the input's dtype (``mixed_norm``)."""
    if mixed_dtypes(input, weight, bias):
        return mixed_norm(lambda x, w, b: group_norm(x, num_groups, w, b, eps), input, weight, bias)
    channels = input.shape[1] if input.ndim >= 2 else None
    if not isinstance(channels, int) or num_groups < 1 or channels % num_groups:
        raise located_error(f"group_norm needs an (N, C, *) input whose C is a static multiple of num_groups={num_groups}, got {input.type}")
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is not None and tuple(parameter.shape) != (channels,):
            raise located_error(f"group_norm: {name} must have shape ({channels},) for the input {input.type}, got {parameter.type}")
    grouped = input.reshape(input.shape[0], num_groups, -1)
    normalized = _standardize_last_axis(grouped, eps).reshape(input.shape)
    channel = (-1,) + (1,) * (input.ndim - 2)  # (C,) -> (C, 1, ...), broadcasting along axis 1
    if weight is not None:
        normalized = normalized * weight.reshape(channel)
    return normalized if bias is None else normalized + bias.reshape(channel)


def _standardize_last_axis(x: Tensor, eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the last axis: one ``nn.layer_norm`` (unit weight, zero bias) when that axis is
    static; over a symbolic one (a symbolic spatial dim), the same math in primitives, since layer norm's weight needs a shape."""
    size = x.shape[-1]
    if isinstance(size, int):
        return layer_norm(x, (size,), eps=eps)
    centered = x - x.mean(-1, keepdim=True)
    return centered * rsqrt((centered * centered).mean(-1, keepdim=True) + eps)


def rms_norm(input: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """``input / sqrt(mean(input^2) + eps) * weight`` over the trailing ``normalized_shape`` axes, as
    ``torch.nn.functional.rms_norm``: no centering, no bias; ``eps=None`` is the machine epsilon of the dtype it computes in
    (float32 for a half input, which computes in float32 and rounds once, as PyTorch's)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or len(shape) > input.ndim or tuple(input.shape[input.ndim - len(shape) :]) != shape:
        raise located_error(f"rms_norm: normalized_shape {shape} must equal the trailing dims of the input {input.type}")
    if weight is not None and tuple(weight.shape) != shape:
        raise located_error(f"rms_norm: weight must have the normalized_shape {shape}, got {weight.type}")
    eps = float(ml_dtypes.finfo(opmath_dtype(input.dtype).numpy).eps) if eps is None else eps
    axes = tuple(range(input.ndim - len(shape), input.ndim))

    def normalize(x: Tensor, weight: Tensor | None) -> Tensor:
        output = x * rsqrt((x * x).mean(axes, keepdim=True) + eps)
        return output if weight is None else output * weight

    return in_opmath(normalize, input, weight)  # a half input: float32 inside, eps float32's, one rounding (PyTorch's)




__all__ = ["group_norm", "rms_norm"]
