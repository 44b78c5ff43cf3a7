"""ONNX emitters for the CNN and transformer op set: native ONNX ops where they exist
(Conv, MaxPool, AveragePool, LayerNormalization, Trilu; Gelu and Erf in lowering_erf.py), and the
gradient primitives expressed through ConvTranspose, Conv and ScatterElements.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.onnx.lowering import ONNX, reduce_emitter
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType, normalize_axis


def _unary(onnx_type: str):
    return lambda ctx, op, inputs: [ctx.node(onnx_type, inputs)]


ONNX.register("tensor.abs")(_unary("Abs"))
ONNX.register("tensor.sin")(_unary("Sin"))
ONNX.register("tensor.cos")(_unary("Cos"))
ONNX.register("tensor.floor")(_unary("Floor"))
ONNX.register("tensor.ceil")(_unary("Ceil"))
ONNX.register("tensor.round")(_unary("Round"))  # half to even, as tensor.round


@ONNX.register("tensor.atan")
def atan(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [_atan_float64(ctx, inputs[0]) if op.result.type.dtype is DType.f64 else ctx.node("Atan", inputs)]


@ONNX.register("tensor.asin")
def asin(ctx, op: Op, inputs: list[str]) -> list[str]:
    # asin x = atan(x / sqrt((1 - x)(1 + x))): 1 -+ x is exact near +-1, where the argument grows (inf at +-1, NaN beyond)
    if op.result.type.dtype is not DType.f64:
        return [ctx.node("Asin", inputs)]
    x, one = inputs[0], ctx.constant(np.array(1.0))
    cosine = ctx.node("Sqrt", [ctx.node("Mul", [ctx.node("Sub", [one, x]), ctx.node("Add", [one, x])])])
    return [_atan_float64(ctx, ctx.node("Div", [x, cosine]))]


@ONNX.register("tensor.acos")
def acos(ctx, op: Op, inputs: list[str]) -> list[str]:
    # acos x = 2 atan(sqrt((1 - x) / (1 + x))): small results near 1 keep their relative accuracy; pi at -1
    if op.result.type.dtype is not DType.f64:
        return [ctx.node("Acos", inputs)]
    x, one = inputs[0], ctx.constant(np.array(1.0))
    half_tangent = ctx.node("Sqrt", [ctx.node("Div", [ctx.node("Sub", [one, x]), ctx.node("Add", [one, x])])])
    return [ctx.node("Mul", [ctx.constant(np.array(2.0)), _atan_float64(ctx, half_tangent)])]


ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1, -7.500855792314704667340e1, -1.228866684490136173410e2,
          -6.485021904942025371773e1)
ATAN_Q = (2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2, 4.853903996359136964868e2,
          1.945506571482613964425e2)
"""Cephes' ``atan`` (double): ``atan x = x + x z P(z) / Q(z)``, ``z = x^2``, on ``|x| <= 0.66``; ``Q`` is monic."""
TAN_3PI_8, PI_2_LOW = 2.41421356237309504880, 6.123233995736765886130e-17
"""``tan(3 pi / 8)`` and the bits of pi/2 below its float64 value."""


def _atan_float64(ctx, x: str) -> str:
    """Cephes' float64 ``atan`` (about 1 ulp) from ops onnxruntime runs in float64: its Atan, Asin and Acos take float32
    only. ``|x|`` is reduced into [0, 0.66] by ``atan x = pi/2 - atan(1/x)`` above ``tan(3 pi / 8)`` and ``pi/4 +
    atan((x - 1)/(x + 1))`` above 0.66; small ``x`` keep their sign and the rest take it back. +-inf give
    +-pi/2, NaN NaN."""
    def constant(value: float) -> str:
        return ctx.constant(np.array(value, np.float64))

    magnitude = ctx.node("Abs", [x])
    large, middle = (ctx.node("Greater", [magnitude, constant(bound)]) for bound in (TAN_3PI_8, 0.66))
    inverse = ctx.node("Neg", [ctx.node("Div", [constant(1.0), magnitude])])
    shifted = ctx.node("Div", [ctx.node("Sub", [magnitude, constant(1.0)]), ctx.node("Add", [magnitude, constant(1.0)])])
    reduced = ctx.node("Where", [large, inverse, ctx.node("Where", [middle, shifted, x])])
    square = ctx.node("Mul", [reduced, reduced])
    ratio = ctx.node("Div", [_horner(ctx, square, ATAN_P, monic=False), _horner(ctx, square, ATAN_Q, monic=True)])
    small = ctx.node("Add", [ctx.node("Mul", [reduced, ctx.node("Mul", [square, ratio])]), reduced])  # x + x z P/Q
    low_bits = ctx.node("Where", [large, constant(PI_2_LOW), constant(0.5 * PI_2_LOW)])
    base = ctx.node("Where", [large, constant(np.pi / 2), constant(np.pi / 4)])
    unsigned = ctx.node("Add", [base, ctx.node("Add", [small, low_bits])])
    signed = ctx.node("Where", [ctx.node("Less", [x, constant(0.0)]), ctx.node("Neg", [unsigned]), unsigned])
    return ctx.node("Where", [middle, signed, ctx.node("Where", [ctx.node("Equal", [x, constant(0.0)]), x, small])])  # atan(-0) = -0


def _horner(ctx, z: str, coefficients: tuple[float, ...], monic: bool) -> str:
    """``c0 z^n + ... + cn`` (with a leading 1: ``z^(n+1) + c0 z^n + ...`` when ``monic``) by Horner's rule."""
    total = ctx.node("Add", [z, ctx.constant(np.array(coefficients[0]))]) if monic else ctx.constant(np.array(coefficients[0]))
    for coefficient in coefficients[1:]:
        total = ctx.node("Add", [ctx.node("Mul", [total, z]), ctx.constant(np.array(coefficient))])
    return total


@ONNX.register("tensor.cumsum")
def cumsum(ctx, op: Op, inputs: list[str]) -> list[str]:
    axis = ctx.constant(np.array(normalize_axis(op.attrs["axis"], op.result.type.rank), np.int64))  # a 0-d int64 input
    return [ctx.node("CumSum", [inputs[0], axis], exclusive=0, reverse=int(op.attrs["reverse"]))]


@ONNX.register("tensor.cumprod")
def cumprod(ctx, op: Op, inputs: list[str]) -> list[str]:
    """ONNX has no CumProd, and ``exp(cumsum(log x))`` is wrong for zeros and negatives: a ``Scan`` multiplies one slice
    after another, as NumPy does (the same roundings). The scanned axis is moved first and walked forward (what the
    reference evaluator's Scan supports), reversed by a negative-step Slice; one slice of ones is appended, since a Scan
    of no iterations fails in onnxruntime, and its product dropped afterwards."""
    rank = op.result.type.rank
    axis = normalize_axis(op.attrs["axis"], rank)
    order = [axis, *(i for i in range(rank) if i != axis)]
    moved = ctx.node("Transpose", inputs, perm=order) if axis else inputs[0]
    moved = _reversed_first_axis(ctx, moved) if op.attrs["reverse"] else moved
    ones = _ones(ctx, op.result.type.dtype, ctx.node("Shape", [moved], start=1))
    padded = ctx.node("Concat", [moved, ctx.node("Unsqueeze", [ones, ctx.constant(np.array([0], np.int64))])], axis=0)
    _, products = ctx.node("Scan", [ones, padded], outputs=2, body=_product_step(ctx, op.result.type.dtype, rank - 1), num_scan_inputs=1)
    last = [ctx.constant(np.array([value], np.int64)) for value in (0, -1, 0)]
    products = ctx.node("Slice", [products, *last])
    products = _reversed_first_axis(ctx, products) if op.attrs["reverse"] else products
    return [ctx.node("Transpose", [products], perm=[int(i) for i in np.argsort(order)]) if axis else products]


def _reversed_first_axis(ctx, name: str) -> str:
    starts, ends, axes, steps = (ctx.constant(np.array([value], np.int64)) for value in (-1, np.iinfo(np.int64).min, 0, -1))
    return ctx.node("Slice", [name, starts, ends, axes, steps])


def _ones(ctx, dtype, shape: str) -> str:
    return ctx.node("ConstantOfShape", [shape], value=ctx.onnx.numpy_helper.from_array(np.ones(1, dtype.numpy)))


def _product_step(ctx, dtype, rank: int):
    """The Scan body: ``(product, slice) -> (product * slice, product * slice)``, names fresh in the whole model."""
    helper = ctx.onnx.helper
    product, piece, new, out = (ctx.fresh(hint) for hint in ("product", "slice", "new_product", "scanned"))
    typed = [helper.make_tensor_value_info(name, ctx.onnx_dtype(dtype), [None] * rank) for name in (product, piece, new, out)]
    nodes = [helper.make_node("Mul", [product, piece], [new]), helper.make_node("Identity", [new], [out])]
    return helper.make_graph(nodes, ctx.fresh("cumprod_step"), typed[:2], typed[2:])


@ONNX.register("tensor.argsort")
def argsort(ctx, op: Op, inputs: list[str]) -> list[str]:
    # every element kept (k = the static size of the sorted axis), in order; TopK breaks ties by the lower index both
    # ways, and onnxruntime and onnx's reference sort NaN as the largest, as tensor.argsort (compiler/ops/scan.py)
    axis = normalize_axis(op.attrs["axis"], op.result.type.rank)
    k = ctx.constant(np.array([op.result.type.shape[axis]], np.int64))
    _, indices = ctx.node("TopK", [inputs[0], k], outputs=2, axis=axis, largest=int(op.attrs["descending"]), sorted=1)
    return [indices]


@ONNX.register("tensor.rsqrt")
def rsqrt(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Reciprocal", [ctx.node("Sqrt", inputs)])]


@ONNX.register("tensor.clip")
def clip(ctx, op: Op, inputs: list[str]) -> list[str]:
    dtype = op.result.type.dtype.numpy
    bounds = [ctx.constant(np.array(op.attrs[k], dtype)) if op.attrs[k] is not None else "" for k in ("min", "max")]
    return [ctx.node("Clip", inputs + bounds)]


ONNX.register("tensor.reduce_min")(reduce_emitter("ReduceMin"))


@ONNX.register("tensor.argmax")
def argmax(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("ArgMax", inputs, axis=op.attrs["axis"], keepdims=int(op.attrs["keepdims"]))]


@ONNX.register("tensor.take")
def take(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Gather", inputs, axis=op.attrs["axis"])]


@ONNX.register("tensor.scatter_add")
def scatter_add(ctx, op: Op, inputs: list[str]) -> list[str]:
    # zeros(shape) with updates summed in at indices: ScatterElements(reduction=add) over indices broadcast to the updates
    updates, indices = inputs
    axis = normalize_axis(op.attrs["axis"], op.result.type.rank)
    index_type = op.operands[1].type
    before, after = op.result.type.shape[:axis], op.result.type.shape[axis + 1 :]
    shaped = ctx.node("Reshape", [indices, ctx.shape_tensor((1,) * len(before) + index_type.shape + (1,) * len(after))])
    broadcast = ctx.node("Expand", [shaped, ctx.shape_tensor(op.operands[0].type.shape)])
    flat_indices = _merge_index_axes(ctx, broadcast, op, axis, index_type.rank)
    flat_updates = _merge_index_axes(ctx, updates, op, axis, index_type.rank)
    zeros = ctx.node("Expand", [ctx.constant(np.array(0, op.result.type.dtype.numpy)), ctx.shape_tensor(op.result.type.shape)])
    return [ctx.node("ScatterElements", [zeros, flat_indices, flat_updates], axis=axis, reduction="add")]


def _merge_index_axes(ctx, name: str, op: Op, axis: int, index_rank: int) -> str:
    """Fold the indices' dims (at ``axis``) into one, so ScatterElements sees operands of the data's rank."""
    if index_rank == 1:
        return name
    shape = op.operands[0].type.shape
    merged = shape[:axis] + (-1,) + shape[axis + index_rank :]
    if any(isinstance(d, str) for d in merged):
        raise LoweringError("tensor.scatter_add with multi-dim indices over symbolic dims has no ONNX lowering")
    return ctx.node("Reshape", [name, ctx.constant(np.array(merged, np.int64))])


@ONNX.register("tensor.concat")
def concat(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Concat", inputs, axis=op.attrs["axis"])]


@ONNX.register("tensor.slice")
def slice_(ctx, op: Op, inputs: list[str]) -> list[str]:
    parts = [np.array([op.attrs[k]], np.int64) for k in ("start", "stop")]
    axis = np.array([normalize_axis(op.attrs["axis"], op.operands[0].type.rank)], np.int64)
    names = [ctx.constant(a) for a in (*parts, axis, np.array([op.attrs["step"]], np.int64))]
    return [ctx.node("Slice", inputs + names)]


@ONNX.register("tensor.pad")
def pad(ctx, op: Op, inputs: list[str]) -> list[str]:
    # ONNX's Pad fills only the edges; interior fill (a strided slice's gradient) spreads the elements apart first
    value = ctx.constant(np.array(op.attrs["value"], op.result.type.dtype.numpy))
    x = _spread(ctx, op, inputs[0], value) if any(op.attrs["interior"]) else inputs[0]
    pads = ctx.constant(np.array(tuple(op.attrs["low"]) + tuple(op.attrs["high"]), np.int64))
    return [ctx.node("Pad", [x, pads, value], mode="constant")]


def _spread(ctx, op: Op, x: str, value: str) -> str:
    """Put ``interior`` fill elements between neighbours along each axis that has some: one Pad appends a fill
    element to each such axis (of size ``d``, so the fill sits at index ``d``), then one Gather per axis reads the
    element ``i`` at position ``i (interior + 1)`` and index ``d`` everywhere between. Interior padding needs static
    dims (``tensor.pad``'s shape rule), so the indices are constants; the other dims may be symbolic."""
    shape, interior = op.operands[0].type.shape, op.attrs["interior"]
    axes = [axis for axis, fill in enumerate(interior) if fill]
    ends = np.zeros(2 * len(shape), np.int64)
    ends[[len(shape) + axis for axis in axes]] = 1
    x = ctx.node("Pad", [x, ctx.constant(ends), value], mode="constant")
    for axis in axes:
        size, step = shape[axis], interior[axis] + 1
        positions = np.arange(max(size + (size - 1) * interior[axis], 0), dtype=np.int64)
        x = ctx.node("Gather", [x, ctx.constant(np.where(positions % step == 0, positions // step, size))], axis=axis)
    return x


@ONNX.register("tensor.expand_dims")
def expand_dims(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Unsqueeze", inputs + [ctx.constant(np.array(op.attrs["axes"], np.int64))])]


@ONNX.register("tensor.squeeze")
def squeeze(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Squeeze", inputs + [ctx.constant(np.array(op.attrs["axes"], np.int64))])]


def _trilu(upper: int):
    def emit(ctx, op: Op, inputs: list[str]) -> list[str]:
        return [ctx.node("Trilu", inputs + [ctx.constant(np.array(op.attrs["k"], np.int64))], upper=upper)]

    return emit


ONNX.register("tensor.triu")(_trilu(1))
ONNX.register("tensor.tril")(_trilu(0))


def _conv_attrs(op: Op) -> dict:
    (ph, pw) = op.attrs["padding"]
    return {"strides": list(op.attrs["stride"]), "pads": [ph, pw, ph, pw], "dilations": list(op.attrs["dilation"]), "group": op.attrs["groups"]}


@ONNX.register("tensor.conv2d")
def conv2d(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Conv", inputs, **_conv_attrs(op))]


@ONNX.register("tensor.conv2d_input_grad")
def conv2d_input_grad(ctx, op: Op, inputs: list[str]) -> list[str]:
    # the transpose of conv2d in its input is ConvTranspose with the same weight; output_padding recovers rows the stride dropped
    attrs = _conv_attrs(op)
    stride, dilation, (ph, pw) = op.attrs["stride"], op.attrs["dilation"], op.attrs["padding"]
    kernel, out = op.operands[1].type.shape[2:], op.operands[0].type.shape[2:]
    target = op.attrs["input_shape"][2:]
    extra = [target[i] - ((out[i] - 1) * stride[i] - 2 * (ph, pw)[i] + dilation[i] * (kernel[i] - 1) + 1) for i in range(2)]
    return [ctx.node("ConvTranspose", inputs, output_padding=extra, **attrs)]


@ONNX.register("tensor.conv2d_weight_grad")
def conv2d_weight_grad(ctx, op: Op, inputs: list[str]) -> list[str]:
    # dw[o,c,i,j] = sum_{n,h,w} x_pad[n,c,s h + d i,s w + d j] g[n,o,h,w]: a convolution over the batch with
    # x as (C, N, H, W), g as the kernel (O, N, OH, OW), stride d and dilation s; then cropped to (KH, KW).
    # Groups: each group's channels of x against its output channels of g, the results stacked along O
    x, g = inputs
    groups, (o, c) = op.attrs["groups"], op.attrs["weight_shape"][:2]
    if groups == 1:
        return [_ungrouped_weight_grad(ctx, op, x, g)]
    x_parts = ctx.node("Split", [x, ctx.constant(np.full(groups, c, np.int64))], outputs=groups, axis=1)
    g_parts = ctx.node("Split", [g, ctx.constant(np.full(groups, o // groups, np.int64))], outputs=groups, axis=1)
    return [ctx.node("Concat", [_ungrouped_weight_grad(ctx, op, xs, gs) for xs, gs in zip(x_parts, g_parts)], axis=0)]


def _ungrouped_weight_grad(ctx, op: Op, x: str, g: str) -> str:
    (ph, pw) = op.attrs["padding"]
    swapped = ctx.node(
        "Conv", [ctx.node("Transpose", [x], perm=[1, 0, 2, 3]), ctx.node("Transpose", [g], perm=[1, 0, 2, 3])],
        strides=list(op.attrs["dilation"]), dilations=list(op.attrs["stride"]), pads=[ph, pw, ph, pw],
    )
    kernel = op.attrs["weight_shape"][2:]
    starts, ends, axes = (ctx.constant(np.array(v, np.int64)) for v in ([0, 0], list(kernel), [2, 3]))
    return ctx.node("Transpose", [ctx.node("Slice", [swapped, starts, ends, axes])], perm=[1, 0, 2, 3])


def _pool_attrs(op: Op) -> dict:
    (ph, pw) = op.attrs["padding"]
    return {"kernel_shape": list(op.attrs["kernel_size"]), "strides": list(op.attrs["stride"]), "pads": [ph, pw, ph, pw]}


@ONNX.register("tensor.max_pool2d")
def max_pool2d(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("MaxPool", inputs, **_pool_attrs(op))]


@ONNX.register("tensor.avg_pool2d")
def avg_pool2d(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("AveragePool", inputs, count_include_pad=1, **_pool_attrs(op))]


def _window_selections(ctx, op: Op, x: str) -> list[tuple[tuple[int, int], str]]:
    """Per kernel offset (i, j): a float mask of the windows whose first largest element sits there.

    Built from standard ops only (Pad, Slice, MaxPool, Equal), so the exported step imports back into kiln;
    offsets are visited in row-major order and an earlier match wins, PyTorch's tie rule.
    """
    dtype = op.operands[0].type.dtype.numpy
    (kh, kw), stride, (ph, pw) = op.attrs["kernel_size"], op.attrs["stride"], op.attrs["padding"]
    pooled = ctx.node("MaxPool", [x], **_pool_attrs(op))
    padded = ctx.node("Pad", [x, ctx.constant(np.array([0, 0, ph, pw, 0, 0, ph, pw], np.int64)), ctx.constant(np.array(-np.inf, dtype))])
    rows, cols = _pooled_size(op)
    taken, selections = None, []
    for i in range(kh):
        for j in range(kw):
            window = _strided_slice(ctx, padded, (i, j), (rows, cols), stride)
            match = ctx.node("Cast", [ctx.node("Equal", [window, pooled])], to=ctx.onnx_dtype(op.operands[0].type.dtype))
            selected = match if taken is None else ctx.node("Mul", [match, ctx.node("Sub", [ctx.constant(np.array(1, dtype)), taken])])
            taken = selected if taken is None else ctx.node("Add", [taken, selected])
            selections.append(((i, j), selected))
    return selections


def _pooled_size(op: Op) -> tuple[int, int]:
    x_type = op.operands[0].type
    (kh, kw), stride, (ph, pw) = op.attrs["kernel_size"], op.attrs["stride"], op.attrs["padding"]
    return tuple((x_type.shape[2 + a] + 2 * (ph, pw)[a] - (kh, kw)[a]) // stride[a] + 1 for a in range(2))


def _strided_slice(ctx, x: str, offset: tuple[int, int], size: tuple[int, int], stride) -> str:
    """``x[:, :, i::s][:, :, :rows]`` (and the same for columns): the window elements at one kernel offset."""
    starts = np.array(offset, np.int64)
    ends = np.array([offset[a] + stride[a] * (size[a] - 1) + 1 for a in range(2)], np.int64)
    names = [ctx.constant(a) for a in (starts, ends, np.array([2, 3], np.int64), np.array(stride, np.int64))]
    return ctx.node("Slice", [x] + names)


def _place_at_offset(ctx, op: Op, values: str, offset: tuple[int, int], input_shape) -> str:
    """Scatter per-window values back to their (offset) position in the input: a depthwise ConvTranspose with a one-hot kernel."""
    channels = input_shape[1]
    (kh, kw), stride, (ph, pw) = op.attrs["kernel_size"], op.attrs["stride"], op.attrs["padding"]
    kernel = np.zeros((channels, 1, kh, kw), op.operands[0].type.dtype.numpy)
    kernel[:, :, offset[0], offset[1]] = 1
    out = _pooled_size(op)
    extra = [input_shape[2 + a] - ((out[a] - 1) * stride[a] - 2 * (ph, pw)[a] + (kh, kw)[a]) for a in range(2)]
    return ctx.node("ConvTranspose", [values, ctx.constant(kernel)], strides=list(stride), pads=[ph, pw, ph, pw], group=channels, output_padding=extra)


@ONNX.register("tensor.max_pool2d_grad")
def max_pool2d_grad(ctx, op: Op, inputs: list[str]) -> list[str]:
    # dx = sum over kernel offsets of (g * [offset holds the window's first max]) placed back at that offset
    x, g = inputs
    parts = [_place_at_offset(ctx, op, ctx.node("Mul", [g, selected]), offset, op.operands[0].type.shape)
             for offset, selected in _window_selections(ctx, op, x)]
    return [ctx.node("Sum", parts)]


@ONNX.register("tensor.max_pool2d_select")
def max_pool2d_select(ctx, op: Op, inputs: list[str]) -> list[str]:
    # c read at each window's first max of x: sum over offsets of c's window element times the selection
    x, c = inputs
    (ph, pw) = op.attrs["padding"]
    padded = ctx.node("Pad", [c, ctx.constant(np.array([0, 0, ph, pw, 0, 0, ph, pw], np.int64))])
    size = _pooled_size(op)
    parts = [ctx.node("Mul", [_strided_slice(ctx, padded, offset, size, op.attrs["stride"]), selected])
             for offset, selected in _window_selections(ctx, op, x)]
    return [ctx.node("Sum", parts)]


@ONNX.register("tensor.avg_pool2d_grad")
def avg_pool2d_grad(ctx, op: Op, inputs: list[str]) -> list[str]:
    # spread each window's cotangent evenly: a depthwise ConvTranspose with a constant 1/(kh kw) kernel
    channels = op.attrs["input_shape"][1]
    kh, kw = op.attrs["kernel_size"]
    kernel = ctx.constant(np.full((channels, 1, kh, kw), 1.0 / (kh * kw), op.result.type.dtype.numpy))
    stride, (ph, pw) = op.attrs["stride"], op.attrs["padding"]
    out, target = op.operands[0].type.shape[2:], op.attrs["input_shape"][2:]
    extra = [target[i] - ((out[i] - 1) * stride[i] - 2 * (ph, pw)[i] + op.attrs["kernel_size"][i]) for i in range(2)]
    return [ctx.node("ConvTranspose", [inputs[0], kernel], strides=list(stride), pads=[ph, pw, ph, pw], group=channels, output_padding=extra)]


@ONNX.register("nn.layer_norm")
def layer_norm(ctx, op: Op, inputs: list[str]) -> list[str]:
    """ONNX's LayerNormalization, whose ``epsilon`` attribute is a float32: a float64 layer (or group) norm whose eps
    is no float32 number (1e-5 rounds by 2.5e-13, which moves outputs by 1e-9 where the variance is small) is spelled
    out with eps a float64 constant instead."""
    x, eps = op.operands[0], op.attrs["eps"]
    axis = x.type.rank - op.operands[1].type.rank
    if x.type.dtype is not DType.f64 or float(np.float32(eps)) == eps:
        return [ctx.node("LayerNormalization", inputs, axis=axis, epsilon=eps)]
    return [_layer_norm_float64(ctx, inputs, np.arange(axis, x.type.rank), eps)]


def _layer_norm_float64(ctx, inputs: list[str], axes: np.ndarray, eps: float) -> str:
    # (x - mean) / sqrt(var + eps) * weight + bias, the biased variance over the normalized axes
    x, weight, bias = inputs
    axes = ctx.constant(axes.astype(np.int64))
    centered = ctx.node("Sub", [x, ctx.node("ReduceMean", [x, axes])])
    variance = ctx.node("ReduceMean", [ctx.node("Mul", [centered, centered]), axes])
    deviation = ctx.node("Sqrt", [ctx.node("Add", [variance, ctx.constant(np.array(eps, np.float64))])])
    return ctx.node("Add", [ctx.node("Mul", [ctx.node("Div", [centered, deviation]), weight]), bias])
