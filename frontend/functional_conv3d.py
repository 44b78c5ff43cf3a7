"""3-D convolution and pooling (``(N, C, D, H, W)``) on the 2-D ops: depth becomes part of the batch.

A 3-D convolution's output plane ``d`` sums, over the kernel's depth ``kd``, 2-D convolutions of input plane
``d stride + kd dilation``. kiln takes, for each ``kd``, the input planes that offset reads (a strided slice along
depth), joins the ``KD`` slices as channels (group-major, so ``groups`` carries over) and runs one 2-D convolution
over ``N D_out`` images with the weight's depth folded into its input channels: one GEMM whose inner dimension is
``C KD KH KW``, as a 3-D im2col's. Pools take the max (or the sum) over ``kd`` of 2-D pools of the same slices.

```
conv3d(x: N x C x D x H x W, w: O x C x KD x KH x KW)
  ->  planes_kd = x[:, :, kd*dil : ... : stride]            (N, C, D_out, H, W), one per kd
      columns   = stack(planes_kd) as (N D_out, KD C, H, W)
      "tensor.conv2d"(columns, w as (O, KD C, KH, KW))       then back to (N, O, D_out, H_out, W_out)
```

Depth padding is zeros (``-inf`` for max pools) added before; height and width padding is the 2-D op's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.functional_conv import adaptive_avg_pool2d
from kiln.frontend.functional_nn import avg_pool2d, conv2d, max_pool2d, pad, same_padding
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.tensor_inplace import honors_inplace
from kiln.frontend.autocast import autocasts


def triple(function: str, name: str, value: Any) -> tuple[int, int, int]:
    """PyTorch's 3-d size arguments: ``3`` means ``(3, 3, 3)``."""
    values = (value,) * 3 if isinstance(value, (int, np.integer)) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise located_error(f"{function}: {name} must be an int or a triple of ints, got {value!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def batched_volume(function: str, input: Tensor) -> Tensor:
    """``(N, C, D, H, W)``, or an unbatched ``(C, D, H, W)`` as a batch of one; depth, height and width static."""
    if input.ndim not in (4, 5):
        raise located_error(f"{function} expects an (N, C, D, H, W) or (C, D, H, W) input, got {input.type}")
    volume = input.unsqueeze(0) if input.ndim == 4 else input
    if any(isinstance(d, str) for d in volume.shape[2:]):
        raise located_error(f"{function} needs static depth, height and width, got {input.type}")
    return volume


def like_input(output: Tensor, input: Tensor) -> Tensor:
    return output.squeeze(0) if input.ndim == 4 else output


def depth_planes(volume: Tensor, kernel: int, stride: int, dilation: int, function: str) -> list[Tensor]:
    """For each kernel depth offset, the input planes it reads: ``(N, C, D_out, H, W)`` each."""
    depth = volume.shape[2]
    out = (depth - dilation * (kernel - 1) - 1) // stride + 1
    if out <= 0:
        raise located_error(f"{function}: depth {depth} is smaller than the dilated kernel's {dilation * (kernel - 1) + 1}")
    return [volume[:, :, k * dilation: k * dilation + (out - 1) * stride + 1: stride] for k in range(kernel)]


def planes_as_images(planes: Tensor) -> Tensor:
    """``(N, C, D, H, W) -> (N D, C, H, W)``."""
    n, c, d, h, w = planes.shape
    return planes.permute(0, 2, 1, 3, 4).reshape(-1, c, h, w)


def images_as_volume(images: Tensor, depth: int) -> Tensor:
    """``(N D, C, H, W) -> (N, C, D, H, W)``."""
    _, c, h, w = images.shape
    return images.reshape(-1, depth, c, h, w).permute(0, 2, 1, 3, 4)


@autocasts("conv3d")
def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """``(N, C, D, H, W)`` by weight ``(O, C/groups, KD, KH, KW)``; ``padding`` ints, ``"valid"`` or ``"same"``."""
    volume = batched_volume("conv3d", input)
    if weight.ndim != 5 or weight.shape[1] * groups != volume.shape[1] or weight.shape[0] % groups:
        raise located_error(f"conv3d: weight {weight.type} (O, C/groups, KD, KH, KW) does not fit input {input.type} with groups={groups}")
    stride, dilation = triple("conv3d", "stride", stride), triple("conv3d", "dilation", dilation)
    kernel = tuple(int(k) for k in weight.shape[2:])
    volume, padding = same_padding("conv3d", volume, padding, kernel, stride, dilation)
    padding = triple("conv3d", "padding", padding)
    if padding[0]:
        volume = pad(volume, (0, 0, 0, 0, padding[0], padding[0]))
    planes = depth_planes(volume, kernel[0], stride[0], dilation[0], "conv3d")
    columns = grouped_channels([planes_as_images(p) for p in planes], groups)
    folded = grouped_weight(weight, groups)
    images = conv2d(columns, folded, None, stride[1:], padding[1:], dilation[1:], groups)
    output = images_as_volume(images, planes[0].shape[2])
    output = output if bias is None else output + bias.reshape(1, -1, 1, 1, 1)
    return like_input(output, input)


def grouped_channels(images: list[Tensor], groups: int) -> Tensor:
    """``KD`` images ``(B, C, H, W)`` as ``(B, groups KD C/groups, H, W)``: each group's channels, offset by offset."""
    from kiln.frontend.functional_nn import stack

    b_c_h_w = images[0].shape
    channels = b_c_h_w[1]
    stacked = stack(images, 1)  # (B, KD, C, H, W)
    kd = len(images)
    split = stacked.reshape(-1, kd, groups, channels // groups, b_c_h_w[2], b_c_h_w[3]).permute(0, 2, 1, 3, 4, 5)
    return split.reshape(-1, groups * kd * (channels // groups), b_c_h_w[2], b_c_h_w[3])


def grouped_weight(weight: Tensor, groups: int) -> Tensor:
    """``(O, C/groups, KD, KH, KW) -> (O, KD C/groups, KH, KW)``, input channels ordered ``(kd, c)`` as the columns."""
    o, c, kd, kh, kw = weight.shape
    return weight.permute(0, 2, 1, 3, 4).reshape(o, kd * c, kh, kw)


@autocasts("conv_transpose3d")
def conv_transpose3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1) -> Tensor:
    """PyTorch's ``conv_transpose3d``, weight ``(C_in, C_out/groups, KD, KH, KW)``. Every input plane's 2-D transposed
    convolution, with the kernel's depth folded into the output channels (one GEMM), lands at output depth
    ``d stride + kd dilation - padding``: each ``kd``'s planes are placed by an interior pad (``stride - 1`` zeros
    between them), summed, and cropped by ``padding`` (``output_padding`` extends the end)."""
    from kiln.frontend.functional_conv import conv_transpose2d

    volume = batched_volume("conv_transpose3d", input)
    if weight.ndim != 5 or weight.shape[0] != volume.shape[1] or weight.shape[0] % groups:
        raise located_error(f"conv_transpose3d: weight {weight.type} (C_in, C_out/groups, KD, KH, KW) does not fit input {input.type} "
                            f"with groups={groups}")
    stride, padding = triple("conv_transpose3d", "stride", stride), triple("conv_transpose3d", "padding", padding)
    output_padding, dilation = triple("conv_transpose3d", "output_padding", output_padding), triple("conv_transpose3d", "dilation", dilation)
    c_in, c_group, kd, kh, kw = weight.shape
    folded = weight.permute(0, 2, 1, 3, 4).reshape(c_in, kd * c_group, kh, kw)
    images = conv_transpose2d(planes_as_images(volume), folded, None, stride[1:], padding[1:], output_padding[1:], groups, dilation[1:])
    _, _, height, width = images.shape
    per_offset = images.reshape(-1, groups, kd, c_group, height, width)
    depth = volume.shape[2]
    full = (depth - 1) * stride[0] + dilation[0] * (kd - 1) + 1 + output_padding[0]
    total = None
    for k in range(kd):
        planes = images_as_volume(per_offset[:, :, k].reshape(-1, groups * c_group, height, width), depth)
        placed = _placed_along_depth(planes, k * dilation[0], stride[0], full)
        total = placed if total is None else total + placed
    output = total[:, :, padding[0]: full - padding[0]]
    if output.shape[2] <= 0:
        raise located_error(f"conv_transpose3d: padding {padding[0]} leaves no output depth from {depth} input planes")
    output = output if bias is None else output + bias.reshape(1, -1, 1, 1, 1)
    return like_input(output, input)


def _placed_along_depth(planes: Tensor, offset: int, stride: int, full: int) -> Tensor:
    """``planes`` at depths ``offset, offset + stride, ...`` of a ``full``-deep volume, zeros elsewhere."""
    from kiln.frontend.tensor import apply

    last = offset + (planes.shape[2] - 1) * stride
    low, high, interior = (0, 0, offset, 0, 0), (0, 0, full - 1 - last, 0, 0), (0, 0, stride - 1, 0, 0)
    return apply("tensor.pad", planes, low=low, high=high, interior=interior)


@autocasts("max_pool3d")
def max_pool3d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """The largest element of each ``(KD, KH, KW)`` window (padding counts as -inf), as PyTorch's; with
    ``return_indices``, ``max_pool3d_with_indices``'s ``(values, indices)``."""
    if return_indices:
        return max_pool3d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    volume, kernel, stride, padding = _pool_geometry("max_pool3d", input, kernel_size, stride, padding)
    dilation = triple("max_pool3d", "dilation", dilation)
    if padding[0]:  # a plane of padding must not win a window of -inf: the gather knows which slots are padding
        return max_pool3d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)[0]
    planes = _ceil_planes(volume, kernel[0], stride[0], dilation[0], ceil_mode, padding[0], "max_pool3d")
    pooled = [max_pool2d(planes_as_images(p), kernel[1:], stride[1:], padding[1:], dilation[1:], ceil_mode) for p in planes]
    result = pooled[0]
    for later in pooled[1:]:
        result = _pool_pick(result, later)
    return like_input(images_as_volume(result, planes[0].shape[2]), input)


def _pool_pick(earlier: Tensor, later: Tensor) -> Tensor:
    """The winner of two planes' window maxima as PyTorch's kernel scans a window (``val > max || isnan(val)``): the
    later one if larger or NaN, else the earlier (a tie stays with the first); it alone takes the gradient."""
    return apply("tensor.where", (later > earlier) | (later != later), later, earlier)


def max_pool3d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False, return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """``F.max_pool3d(..., return_indices=True)``: the values and each window's first largest as an int64 flat index
    ``(d H + h) W + w`` into its input volume, PyTorch's (``return_indices`` is ignored, as there). The 2-D pool's
    gather (``functional_nn._gathered_max``) over three axes, each checked as PyTorch checks it; ``F.max_unpool3d``
    inverts it."""
    from kiln.frontend.functional_nn import _gathered_max, _pool_axis

    volume, kernel, stride, padding = _pool_geometry("max_pool3d", input, kernel_size, stride, padding)
    dilation = triple("max_pool3d", "dilation", dilation)
    axes = tuple(_pool_axis("max_pool3d", axis - 3, int(volume.shape[axis + 2]), kernel[axis], stride[axis], padding[axis],
                            dilation[axis], ceil_mode) for axis in range(3))
    values, indices = _gathered_max(volume, axes, True)
    return like_input(values, input), like_input(indices, input)


@honors_inplace
def dropout3d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, D, H, W)`` (or unbatched ``(C, D, H, W)``) with probability ``p``, the rest scaled
    by ``1 / (1 - p)``; one draw per channel, broadcast over the volume (``nn.Dropout3d``'s)."""
    from kiln.frontend.functional_spatial import _channel_dropout

    if input.ndim not in (4, 5):
        raise located_error(f"dropout3d expects an (N, C, D, H, W) or (C, D, H, W) input, got {input.type}")
    if input.ndim == 4:
        return _channel_dropout(input.unsqueeze(0), p, training).squeeze(0)
    return _channel_dropout(input, p, training)


@autocasts("avg_pool3d")
def avg_pool3d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """The mean of each ``(KD, KH, KW)`` window with PyTorch's divisor: the window clipped to the padded volume, or to
    the volume itself without ``count_include_pad`` (a box, so the product of the per-axis divisors), or
    ``divisor_override``; ``ceil_mode`` keeps a last partial window on each axis. The window sums are each depth plane's
    2-D sums (``avg_pool2d`` with divisor 1) added over the window's planes."""
    from kiln.frontend.functional_nn import _pool_axis
    from kiln.frontend.functional_pool2d import checked_divisor_override

    checked_divisor_override("avg_pool3d", divisor_override)
    volume, kernel, stride, padding = _pool_geometry("avg_pool3d", input, kernel_size, stride, padding)
    axes = [_pool_axis("avg_pool3d", axis - 3, int(volume.shape[axis + 2]), kernel[axis], stride[axis], padding[axis], 1,
                       ceil_mode) for axis in range(3)]
    if padding[0] or axes[0].overhang:
        volume = pad(volume, (0, 0, 0, 0, padding[0], padding[0] + axes[0].overhang))
    planes = depth_planes(volume, kernel[0], stride[0], 1, "avg_pool3d")
    sums = [avg_pool2d(planes_as_images(p), kernel[1:], stride[1:], padding[1:], ceil_mode, True, 1) for p in planes]
    total = sums[0]
    for other in sums[1:]:
        total = total + other
    if divisor_override is not None:
        divisors = np.asarray(int(divisor_override))
    else:
        depth, rows, cols = (axis.divisors(count_include_pad) for axis in axes)
        divisors = np.multiply.outer(np.multiply.outer(depth, rows), cols)
    divided = images_as_volume(total, planes[0].shape[2]) / apply("tensor.constant", value=np.asarray(divisors, volume.dtype.numpy))
    return like_input(divided, input)


def _pool_geometry(function: str, input: Tensor, kernel_size: Any, stride: Any, padding: Any):
    volume = batched_volume(function, input)
    kernel = triple(function, "kernel_size", kernel_size)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) else triple(function, "stride", stride)
    padding = triple(function, "padding", padding)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise located_error(f"{function}: padding {padding} must be at most half the kernel {kernel} (as PyTorch)")
    return volume, kernel, stride, padding


def _ceil_planes(volume: Tensor, kernel: int, stride: int, dilation: int, ceil_mode: bool, padding: int, function: str) -> list[Tensor]:
    """``depth_planes`` of a max pool; with ``ceil_mode``, a last partial window along depth reads -inf past the end."""
    depth = volume.shape[2]  # padding included
    span = dilation * (kernel - 1) + 1
    if ceil_mode:
        out = -(-(depth - span) // stride) + 1
        if (out - 1) * stride >= depth - padding:
            out -= 1  # PyTorch: the last window must start inside the input or its left padding
        extra = (out - 1) * stride + span - depth
        if extra > 0:
            volume = pad(volume, (0, 0, 0, 0, 0, extra), value=-np.inf)
    return depth_planes(volume, kernel, stride, dilation, function)


@autocasts("adaptive_avg_pool3d")
def adaptive_avg_pool3d(input: Tensor, output_size: Any) -> Tensor:
    """PyTorch's adaptive average over ``(D, H, W)``: depth by a constant averaging matrix, then the 2-D pool."""
    from kiln.frontend.functional_conv import _averaging_matrix
    from kiln.frontend.functional_einsum import einsum

    volume, out = _adaptive_geometry("adaptive_avg_pool3d", input, output_size)
    depth = volume.shape[2]
    if out[0] != depth:
        volume = einsum("od,ncdhw->ncohw", volume.new_tensor(_averaging_matrix(depth, out[0], volume.dtype.numpy)), volume)
    return like_input(_planewise(volume, lambda images: adaptive_avg_pool2d(images, out[1:])), input)


def adaptive_max_pool3d(input: Tensor, output_size: Any, return_indices: bool = False) -> Any:
    """PyTorch's adaptive max over ``(D, H, W)``, any output size: each of PyTorch's windows ``floor(i S / O) ..
    ceil((i + 1) S / O)`` gathered (``adaptive_max_pool3d_with_indices``, whose winner takes the gradient alone, as
    PyTorch's; a separable ``amax`` per axis would share it between ties). With ``return_indices``, also the flat
    indices."""
    pooled = adaptive_max_pool3d_with_indices(input, output_size)
    return pooled if return_indices else pooled[0]


def _planewise(volume: Tensor, pool: Any) -> Tensor:
    """A 2-D pool applied to every depth plane of ``volume``."""
    return images_as_volume(pool(planes_as_images(volume)), volume.shape[2])


@autocasts("adaptive_max_pool3d")
def adaptive_max_pool3d_with_indices(input: Tensor, output_size: Any, return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """``(N, C, D, H, W) -> (N, C, OD, OH, OW)`` values and int64 flat indices ``(d H + h) W + w`` of each window's
    first largest, as PyTorch's (``None`` in ``output_size`` keeps a dim): the 2-D form's window table in 3-D."""
    from kiln.frontend.functional_extra import _adaptive_max_with_indices

    volume, out = _adaptive_geometry("adaptive_max_pool3d", input, output_size)
    values, indices = _adaptive_max_with_indices("adaptive_max_pool3d", volume, out)
    return like_input(values, input), like_input(indices, input)


def _adaptive_geometry(function: str, input: Tensor, output_size: Any) -> tuple[Tensor, tuple[int, int, int]]:
    volume = batched_volume(function, input)
    sizes = (output_size,) * 3 if output_size is None or isinstance(output_size, (int, np.integer)) else tuple(output_size)
    if len(sizes) != 3:
        raise located_error(f"{function}: output_size must be an int or a triple, got {output_size!r}")
    out = tuple(int(s if o is None else o) for s, o in zip(volume.shape[2:], sizes))
    if min(out) <= 0:
        raise located_error(f"{function}: output_size {output_size!r} must be positive")
    return volume, out  # type: ignore[return-value]


__all__ = ["adaptive_avg_pool3d", "adaptive_max_pool3d", "adaptive_max_pool3d_with_indices", "avg_pool3d", "conv3d", "conv_transpose3d", "dropout3d", "max_pool3d",
           "max_pool3d_with_indices"]
