"""``F.conv1d``, ``F.conv_transpose2d`` and the adaptive pools, with PyTorch's names, argument orders and layouts.

Re-exported by ``frontend/functional.py``. Each one is built from the existing
2-D primitives, so every backend, the autodiff rules and ONNX export serve it
unchanged:

- ``conv1d`` is ``tensor.conv2d`` over a unit-height image ``(N, C, 1, L)``.
- ``conv_transpose2d`` is ``tensor.conv2d_input_grad``: the transpose of a
  convolution in its input *is* a transposed convolution, and PyTorch's
  ``(in, out/groups, KH, KW)`` weight is that convolution's ``(O, C/groups, KH, KW)``
  weight as is.
- ``adaptive_avg_pool2d`` is ``avg_pool2d`` when the windows tile the image,
  a mean for ``(1, 1)``, and otherwise an exact averaging matrix on each
  spatial axis: ``y = A_h x A_w^T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.functional_half import bias_added_in_opmath, in_opmath
from kiln.frontend.functional_nn import _pair, avg_pool2d, max_pool2d, pad, same_padding
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts
from kiln.frontend.conv_channel_checks import check_conv_channels, check_conv_rank


def single_size(function: str, name: str, value: Any) -> int:
    """PyTorch's 1-d size arguments (conv1d's, the 1-d pools'): ``3`` and ``(3,)`` both mean 3."""
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value) if isinstance(value, (tuple, list)) else None
    if values is None or len(values) != 1 or not isinstance(values[0], (int, np.integer)) or isinstance(values[0], bool):
        raise located_error(f"{function}: {name} must be an int or a 1-tuple of ints, got {value!r}")
    return int(values[0])


# Conv1d ------------------------------------------------------------------------


@autocasts("conv1d")
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """``(N, C, L) -> (N, O, L_out)`` (or unbatched ``(C, L)``, as PyTorch) with weight ``(O, C/groups, K)``; ``padding``
    may be an int, ``"valid"`` or ``"same"``.

    Traced as ``tensor.conv2d`` on ``(N, C, 1, L)`` with weight ``(O, C/groups, 1, K)``, the height a unit axis.
    """
    check_conv_rank("conv1d", input, 1)
    if input.ndim == 2 and weight.ndim == 3:
        return conv1d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    if input.ndim != 3 or weight.ndim != 3:
        raise TraceError(f"conv1d expects an (N, C, L) or (C, L) input and an (O, C/groups, K) weight, got {input.type} and "
                         f"{weight.type}")
    check_conv_channels(input, weight, groups)
    stride, dilation = single_size("conv1d", "stride", stride), single_size("conv1d", "dilation", dilation)
    input, padding = _resolve_padding(input, padding, weight.shape[2], stride, dilation)
    convolve = lambda x, w: apply("tensor.conv2d", x.unsqueeze(2), w.unsqueeze(2), stride=(1, stride), padding=(0, padding),
                                  dilation=(1, dilation), groups=groups).squeeze(2)
    if bias is None:
        return convolve(input, weight)
    return bias_added_in_opmath(lambda x, w, b: convolve(x, w) + b.reshape(1, -1, 1), input, weight, bias)  # autocast: one rounding


def _resolve_padding(input: Tensor, padding: Any, kernel: int, stride: int, dilation: int) -> tuple[Tensor, int]:
    """``(input, symmetric padding)`` for an int or PyTorch's ``"valid"`` and ``"same"`` (``same_padding``: stride 1
    only; an odd total pads the input's end once more itself, as PyTorch)."""
    if not isinstance(padding, str):
        return input, single_size("conv1d", "padding", padding)
    input, symmetric = same_padding("conv1d", input, padding, (kernel,), (stride,), (dilation,))
    return input, symmetric if isinstance(symmetric, int) else symmetric[0]


# ConvTranspose2d -----------------------------------------------------------------


@autocasts("conv_transpose2d")
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1) -> Tensor:
    """``(N, C_in, H, W) -> (N, C_out, H_out, W_out)`` (or unbatched ``(C_in, H, W)``, as PyTorch) with PyTorch's weight
    ``(C_in, C_out/groups, KH, KW)`` and ``H_out = (H - 1) stride - 2 padding + dilation (KH - 1) + output_padding + 1``.

    This is ``tensor.conv2d_input_grad``: the gradient of a convolution from ``(N, C_out, H_out, W_out)`` to
    ``(N, C_in, H, W)`` with the same weight, stride, padding, dilation and groups. Its ``input_shape`` keeps the
    input's batch dim, so a symbolic ``N`` stays symbolic. ``output_padding`` below ``stride`` only extends the
    output; at or above it (possible when ``dilation > stride``) that convolution would see ``output_padding //
    stride`` more rows than ``input`` has, which contribute nothing, so ``input`` gets them as zeros.
    """
    if input.ndim == 3 and weight.ndim == 4:
        return conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups, dilation).squeeze(0)
    stride, padding, output_padding, dilation = _pair(stride), _pair(padding), _pair(output_padding), _pair(dilation)
    _check_transposed_geometry(input, weight, groups, output_padding, stride, dilation)
    size = tuple(_transposed_size(input.shape[2 + a], weight.shape[2 + a], stride[a], padding[a], output_padding[a], dilation[a])
                 for a in range(2))
    unseen = tuple(p // s for p, s in zip(output_padding, stride))
    if any(unseen):
        input = pad(input, (0, unseen[1], 0, unseen[0]))
    output = apply("tensor.conv2d_input_grad", input, weight, input_shape=(input.shape[0], weight.shape[1] * groups) + size,
                   stride=stride, padding=padding, dilation=dilation, groups=groups)
    return output if bias is None else output + bias.reshape(1, -1, 1, 1)


def _check_transposed_geometry(input: Tensor, weight: Tensor, groups: int, output_padding, stride, dilation) -> None:
    if input.ndim != 4 or weight.ndim != 4:
        raise TraceError(f"conv_transpose2d expects an (N, C_in, H, W) or (C_in, H, W) input and a (C_in, C_out/groups, KH, KW) weight, "
                         f"got {input.type} and {weight.type}")
    if input.shape[1] != weight.shape[0] or weight.shape[0] % groups:
        raise TraceError(f"conv_transpose2d: weight {weight.type} (C_in, C_out/groups, KH, KW) does not fit input {input.type} "
                         f"with groups={groups}")
    if any(isinstance(d, str) for d in input.shape[2:]):
        raise TraceError(f"conv_transpose2d needs static spatial dims, got {input.type}")
    if any(p < 0 or p >= max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
        raise TraceError(f"conv_transpose2d: output_padding {output_padding} must be non-negative and smaller than "
                         f"stride {stride} or dilation {dilation} (as PyTorch)")


def _transposed_size(size: int, kernel: int, stride: int, padding: int, output_padding: int, dilation: int) -> int:
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out <= 0:
        raise TraceError(f"conv_transpose2d: a dim of {size} with kernel {kernel}, stride {stride}, padding {padding} and "
                         f"dilation {dilation} gives an output of {out}; lower the padding")
    return out


# Adaptive pooling -----------------------------------------------------------------


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """PyTorch's adaptive average: output cell ``i`` averages rows ``floor(i H / OH) .. ceil((i + 1) H / OH)``.

    ``output_size`` is an int or an ``(OH, OW)`` pair; ``None`` keeps that dim. Windows that tile the image are
    ``avg_pool2d`` (kernel = stride = ``H / OH``), ``(1, 1)`` a mean over ``H, W``; other sizes (uneven,
    overlapping, larger than the input) multiply by a constant ``(OH, H)`` averaging matrix on each axis,
    ``y = A_h x A_w^T``, which is exact and differentiates as two matmuls. An unbatched ``(C, H, W)`` input pools as a
    batch of one, as PyTorch's.
    """
    if input.ndim == 3:
        return adaptive_avg_pool2d(input.unsqueeze(0), output_size).squeeze(0)
    size, out = _adaptive_geometry("adaptive_avg_pool2d", input, output_size)
    if out == (1, 1):
        return input.mean((2, 3), keepdim=True)
    if all(s % o == 0 for s, o in zip(size, out)):
        kernel = tuple(s // o for s, o in zip(size, out))
        return avg_pool2d(input, kernel, kernel)

    def average(x: Tensor) -> Tensor:
        dtype = x.dtype.numpy
        if out[0] != size[0]:
            x = apply("tensor.matmul", _averaging_matrix(size[0], out[0], dtype), x)
        if out[1] != size[1]:
            x = apply("tensor.matmul", x, _averaging_matrix(size[1], out[1], dtype).T)
        return x

    return in_opmath(average, input)  # a half input: float32 weights and sums, rounded once (PyTorch's kernel)


def adaptive_max_pool2d(input: Tensor, output_size: Any, return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """PyTorch's adaptive max. Windows that tile the image (``H`` a multiple of ``OH``, ``W`` of ``OW``) are
    ``max_pool2d`` with kernel = stride = ``H / OH``; other sizes, and ``return_indices``, gather each window
    (``F.adaptive_max_pool2d_with_indices``). An unbatched ``(C, H, W)`` input pools as a batch of one, as PyTorch's."""
    from kiln.frontend.functional_extra import adaptive_max_pool2d_with_indices

    if input.ndim == 3:
        pooled = adaptive_max_pool2d(input.unsqueeze(0), output_size, return_indices)
        return tuple(part.squeeze(0) for part in pooled) if return_indices else pooled.squeeze(0)

    size, out = _adaptive_geometry("adaptive_max_pool2d", input, output_size)
    if return_indices or any(s % o for s, o in zip(size, out)):
        pooled = adaptive_max_pool2d_with_indices(input, output_size)
        return pooled if return_indices else pooled[0]
    kernel = tuple(s // o for s, o in zip(size, out))
    return max_pool2d(input, kernel, kernel)


def _adaptive_geometry(name: str, input: Tensor, output_size: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((H, W), (OH, OW))`` with ``None`` entries of ``output_size`` filled from the input."""
    if input.ndim != 4 or any(isinstance(d, str) for d in input.shape[2:]):
        raise TraceError(f"{name} expects an (N, C, H, W) or (C, H, W) input with static H and W, got {input.type}")
    size = (int(input.shape[2]), int(input.shape[3]))
    pair = (output_size, output_size) if output_size is None or isinstance(output_size, (int, np.integer)) else tuple(output_size)
    if len(pair) != 2:
        raise TraceError(f"{name}: output_size must be an int or an (OH, OW) pair, got {output_size!r}")
    out = tuple(s if o is None else int(o) for s, o in zip(size, pair))
    if min(out) <= 0:
        raise TraceError(f"{name}: output_size {output_size!r} must be positive")
    return size, out


def _averaging_matrix(size: int, out: int, dtype: Any) -> np.ndarray:
    """``(out, size)``: row ``i`` is ``1 / window`` over PyTorch's window ``floor(i size / out) .. ceil((i + 1) size / out)``."""
    matrix = np.zeros((out, size), dtype)
    for i in range(out):
        start, stop = i * size // out, -(-(i + 1) * size // out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


__all__ = ["adaptive_avg_pool2d", "adaptive_max_pool2d", "conv1d", "conv_transpose2d"]
