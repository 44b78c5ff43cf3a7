"""Convolution and pooling over NCHW images, with their gradients as primitives.

``conv2d`` has weight ``(O, C/groups, KH, KW)`` as PyTorch. Its VJPs are two
more primitives, ``conv2d_input_grad`` (a transposed convolution) and
``conv2d_weight_grad``; the three are bilinear and transpose one another, so
each one's VJP is built from the other two and convolutions differentiate any
number of times. The pools take PyTorch's defaults (``stride = kernel_size``,
zero ``padding``, ``avg_pool2d`` counting the padding).
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import Dim, TensorType, dim_product, format_shape
from kiln.compiler.ops.registry import register_op

CONV_DEFAULTS = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
POOL_DEFAULTS = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}


def output_size(size: Dim, kernel: int, stride: int, padding: int, dilation: int = 1) -> Dim:
    """``floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1``, as PyTorch."""
    if isinstance(size, str):
        raise ShapeError(f"spatial dims must be static for convolution and pooling, got the symbol {size}")
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out <= 0:
        raise ShapeError(f"a window of {kernel} (dilation {dilation}) does not fit a dim of {size} padded by {padding}")
    return out


def _image(op: str, x: TensorType) -> None:
    if x.rank != 4 or not x.dtype.is_float:
        raise ShapeError(f"{op} needs a float NCHW image of rank 4, got {x}")


def _conv_output(op: str, x: TensorType, weight: TensorType, stride, padding, dilation, groups: int) -> TensorType:
    _image(op, x)
    if not weight.is_static or isinstance(x.shape[1], str):
        raise ShapeError(f"{op} needs a static weight shape and channel count, got input {x} and weight {weight}")
    if x.dtype != weight.dtype:  # PyTorch: "Input type (double) and bias type (float) should be the same"
        raise ShapeError(f"{op} needs an input and a weight of one dtype, got input {x} and weight {weight}; cast the "
                         "input (x.to(weight.dtype)) or the model (model.double(), model.float())")
    if weight.rank != 4 or x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ShapeError(
            f"{op}: weight {format_shape(weight.shape)} (O, C/groups, KH, KW) does not fit input {x} with groups={groups}"
        )
    spatial = tuple(output_size(x.shape[2 + i], weight.shape[2 + i], stride[i], padding[i], dilation[i]) for i in range(2))
    return x.with_shape((x.shape[0], weight.shape[0]) + spatial)


@register_op("tensor.conv2d", **CONV_DEFAULTS)
def conv2d_shape(x: TensorType, weight: TensorType, *, stride, padding, dilation, groups: int) -> TensorType:
    """``y[n, o] = sum_{c, i, j} x_padded[n, c, s h + d i, s w + d j] w[o, c, i, j]`` within each group."""
    return _conv_output("tensor.conv2d", x, weight, stride, padding, dilation, groups)


@register_op("tensor.conv2d_input_grad", input_shape=(), **CONV_DEFAULTS)
def conv2d_input_grad_shape(g: TensorType, weight: TensorType, *, input_shape, stride, padding, dilation, groups: int) -> TensorType:
    """The transpose of ``conv2d`` in its input: ``dx`` of shape ``input_shape`` from the output cotangent ``g``."""
    expected = _conv_output("tensor.conv2d_input_grad", g.with_shape(tuple(input_shape)), weight, stride, padding, dilation, groups)
    _match("tensor.conv2d_input_grad", g, expected)
    return g.with_shape(tuple(input_shape))


@register_op("tensor.conv2d_weight_grad", weight_shape=(), **CONV_DEFAULTS)
def conv2d_weight_grad_shape(x: TensorType, g: TensorType, *, weight_shape, stride, padding, dilation, groups: int) -> TensorType:
    """The transpose of ``conv2d`` in its weight: ``dw`` of shape ``weight_shape`` from input ``x`` and cotangent ``g``."""
    expected = _conv_output("tensor.conv2d_weight_grad", x, x.with_shape(tuple(weight_shape)), stride, padding, dilation, groups)
    _match("tensor.conv2d_weight_grad", g, expected)
    return x.with_shape(tuple(weight_shape))



@register_op("tensor.conv2d_columns", kernel=(), **CONV_DEFAULTS)
def conv2d_columns_shape(x: TensorType, *, kernel, stride, padding, dilation, groups: int) -> TensorType:
    """im2col: ``(groups, N OH OW, KH KW C/groups)``, each output position's window with channels last (the
    columns' order ``(i, j, c)``). A backend op: ``conv-to-gemm`` writes the convolution and its weight gradient as
    GEMMs over it, so the two share one copy of the windows."""
    _image("tensor.conv2d_columns", x)
    channels = x.shape[1]
    if len(tuple(kernel)) != 2 or isinstance(channels, str) or channels % groups:
        raise ShapeError(f"tensor.conv2d_columns needs a (KH, KW) kernel and channels divisible by groups={groups}, got {x}")
    spatial = tuple(output_size(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i]) for i in range(2))
    return x.with_shape((groups, dim_product((x.shape[0],) + spatial), kernel[0] * kernel[1] * (channels // groups)))

def _match(op: str, g: TensorType, expected: TensorType) -> None:
    if g.shape != expected.shape or g.dtype != expected.dtype:
        raise ShapeError(f"{op}: the output cotangent is {g}, the convolution's output is {expected}")


def _pool_output(op: str, x: TensorType, kernel_size, stride, padding) -> TensorType:
    _image(op, x)
    if any(2 * p > k for p, k in zip(padding, kernel_size)):
        raise ShapeError(f"{op}: padding {padding} must be at most half of kernel_size {kernel_size}")
    spatial = tuple(output_size(x.shape[2 + i], kernel_size[i], stride[i], padding[i]) for i in range(2))
    return x.with_shape(x.shape[:2] + spatial)


@register_op("tensor.max_pool2d", **POOL_DEFAULTS)
def max_pool2d_shape(x: TensorType, *, kernel_size, stride, padding) -> TensorType:
    """The largest element of each window (padding counts as -inf)."""
    return _pool_output("tensor.max_pool2d", x, kernel_size, stride, padding)


@register_op("tensor.max_pool2d_grad", **POOL_DEFAULTS)
def max_pool2d_grad_shape(x: TensorType, g: TensorType, *, kernel_size, stride, padding) -> TensorType:
    """Routes each window's cotangent to its first largest element of ``x``, as PyTorch."""
    _match("tensor.max_pool2d_grad", g, _pool_output("tensor.max_pool2d_grad", x, kernel_size, stride, padding))
    return x


@register_op("tensor.avg_pool2d", **POOL_DEFAULTS)
def avg_pool2d_shape(x: TensorType, *, kernel_size, stride, padding) -> TensorType:
    """The mean of each window, zero padding included in the count (PyTorch's ``count_include_pad=True``)."""
    return _pool_output("tensor.avg_pool2d", x, kernel_size, stride, padding)


@register_op("tensor.avg_pool2d_grad", input_shape=(), **POOL_DEFAULTS)
def avg_pool2d_grad_shape(g: TensorType, *, input_shape, kernel_size, stride, padding) -> TensorType:
    """The transpose of ``avg_pool2d``: each window's cotangent spread evenly over it."""
    x = g.with_shape(tuple(input_shape))
    _match("tensor.avg_pool2d_grad", g, _pool_output("tensor.avg_pool2d_grad", x, kernel_size, stride, padding))
    return x


@register_op("tensor.max_pool2d_select", **POOL_DEFAULTS)
def max_pool2d_select_shape(x: TensorType, c: TensorType, *, kernel_size, stride, padding) -> TensorType:
    """``c`` (shaped like ``x``) read at each window's first largest element of ``x``: the transpose of ``max_pool2d_grad``."""
    if c.shape != x.shape or c.dtype != x.dtype:
        raise ShapeError(f"tensor.max_pool2d_select needs c shaped like x, got {c} and {x}")
    return _pool_output("tensor.max_pool2d_select", x, kernel_size, stride, padding)
