"""Op-table rows of the movement, convolution, transformer and product ops (``compiler/ops/{movement,conv,transformer,reduce_prod}.py``).

``tests/ops/op_table.py`` appends them to its table, so ``test_forward.py``
runs them on the NumPy backend (and checks composites against their
decompositions); ``test_grad_ops3.py`` checks their VJPs by finite differences.
References are written from the math with loops, not copied from the kernels.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ops.op_table import FLOATS_AND_INTS, UNARY_CASES, Case, OpRow, away_from_zero, distinct, normal, positive, reduction_cases

# Input generators.


def with_indices(rng, shapes, dtypes, attrs):
    """Data, then integer indices into the gathered (or scattered-into) axis, with repeats."""
    data_shape, index_shape = shapes
    axis = attrs.get("axis", 0)
    bound = attrs["shape"][axis] if "shape" in attrs else data_shape[axis]
    return [rng.standard_normal(data_shape), rng.integers(0, bound, index_shape)]


def attention_inputs(rng, shapes, dtypes, attrs):
    """q, k, v, and a bool mask (if any) with the first key always attended, so no row is fully masked."""
    arrays = [rng.standard_normal(shape) for shape in shapes[:3]]
    if len(shapes) == 4:
        mask = rng.random(shapes[3]) < 0.6
        mask[..., 0] = True
        arrays.append(mask)
    return arrays


def scores_and_keep(rng, shapes, dtypes, attrs):
    """Scores and a bool mask that keeps the first key of every row (no row fully masked)."""
    keep = rng.random(shapes[1]) < 0.6
    keep[..., 0] = True
    return [rng.standard_normal(shapes[0]) * 2, keep]


def away_from_bounds(rng, shapes, dtypes, attrs):
    """Values at least 0.05 from clip's bounds, so finite differences never straddle a kink."""
    (x,) = normal(rng, shapes, dtypes, attrs)
    for bound in (attrs["min"], attrs["max"]):
        if bound is not None and np.issubdtype(dtypes[0], np.floating):
            x = np.where(np.abs(x - bound) < 0.05, bound + 0.1, x)
    return [x]


def with_zeros(rng, shapes, dtypes, attrs):
    """Values in [-2, 2] with exact zeros at flat positions 0, 4 and 9: a (2, 3, 4) product over axis 1 has a group with two zeros and one with one."""
    (shape,) = shapes
    x = np.array(rng.uniform(-2, 2, shape) if np.issubdtype(dtypes[0], np.floating) else rng.integers(-2, 3, shape))
    np.put(x, [i for i in (0, 4, 9) if i < x.size], 0)
    return [x]


def integral(rng, shapes, dtypes, attrs):
    """A first operand of distinct values 0.25 apart (one largest element per window, even under finite differences), then normals."""
    first = rng.permutation(math.prod(shapes[0])).reshape(shapes[0]) * 0.25 - 6
    return [first] + [rng.standard_normal(shape) for shape in shapes[1:]]


def off_steps(rng, shapes, dtypes, attrs):
    """Values whose distance to every integer and half-integer is at least 0.1: floor, ceil and round are flat around
    each, so a finite difference sees their zero gradient (exact halves: ``test_rounding_and_scan.py``)."""
    (shape,) = shapes
    fraction = rng.uniform(0.1, 0.4, shape) + rng.choice([0.0, 0.5], shape)
    return [rng.integers(-4, 4, shape) + fraction]


def inside_unit(rng, shapes, dtypes, attrs):
    """Values in (-0.95, 0.95): asin and acos are smooth there (their slopes blow up at +-1)."""
    return [rng.uniform(-0.95, 0.95, shape) for shape in shapes]


def values_and_log_totals(rng, shapes, dtypes, attrs):
    """Normal values and a running logsumexp along the scanned axis (non-decreasing, as a logcumsumexp's result)."""
    y = np.moveaxis(np.logaddexp.accumulate(np.moveaxis(rng.standard_normal(shapes[1]), attrs["axis"], -1), axis=-1), -1, attrs["axis"])
    y = np.flip(y, attrs["axis"]) if attrs["reverse"] else y
    return [rng.standard_normal(shapes[0]), y]


def one_zero_per_row(rng, shapes, dtypes, attrs):
    """Magnitudes 0.5 to 1.5 of either sign (ints -3..3) with one exact zero in about half of the lanes along the scanned
    axis: cumprod's gradient there is not the division formula, and with one zero a lane is still smooth to second
    order under the rule (several zeros a lane: ``test_cumprod.py``)."""
    (shape,), (dtype,) = shapes, dtypes
    if np.issubdtype(dtype, np.integer):
        return [rng.integers(-3, 4, shape)]
    lanes = np.moveaxis(rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape), attrs["axis"], -1).copy()
    if lanes.shape[-1]:
        for lane in np.ndindex(*lanes.shape[:-1]):
            if rng.random() < 0.5:
                lanes[lane + (rng.integers(lanes.shape[-1]),)] = 0.0
    return [np.moveaxis(lanes, -1, attrs["axis"])]


SORT_POOL = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 1.5, -1.5, 2.0, 2.0, -3.0])
"""Sort keys with ties (0.0 and -0.0 are equal too), NaNs and infinities."""


def sort_keys(rng, shapes, dtypes, attrs):
    """Floats drawn half from ``SORT_POOL`` (ties, NaN, +-inf), half normal; ints from a small range: many ties."""
    (shape,), (dtype,) = shapes, dtypes
    if np.issubdtype(dtype, np.integer):
        return [rng.integers(-3, 4, shape)]
    return [np.where(rng.random(shape) < 0.5, rng.choice(SORT_POOL, shape), rng.standard_normal(shape))]


# References.

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _erf_reference(x):
    return _erf(x).astype(x.dtype)


def _running(combine, start: int):
    def scan(x, *, axis, reverse):
        """Running totals (or products) along ``axis`` in ``x``'s dtype, from the front (or the back, with ``reverse``)."""
        moved = np.moveaxis(x, axis, 0)
        out, total = np.empty_like(moved), np.full(moved.shape[1:], start, x.dtype)
        for i in reversed(range(len(moved))) if reverse else range(len(moved)):
            total = combine(total, moved[i])
            out[i] = total
        return np.moveaxis(out, 0, axis)

    return scan


_cumsum = _running(lambda total, x: total + x, 0)
_cumprod = _running(lambda total, x: total * x, 1)
_logcumsumexp = _running(np.logaddexp, -np.inf)


def _decayed_cumsum(g, y, *, axis, reverse):
    """``t_i = sum_{j <= i} g_j exp(y_j - y_i)`` (``reverse``: ``j >= i``) term by term."""
    gm, ym = np.moveaxis(g, axis, -1), np.moveaxis(y, axis, -1)
    n = gm.shape[-1]
    before = np.arange(n)[None, :] >= np.arange(n)[:, None] if reverse else np.arange(n)[None, :] <= np.arange(n)[:, None]
    gap = ym[..., None, :] - ym[..., :, None]  # [..., i, j]: y_j - y_i
    weights = np.where(before, np.exp(np.where(before, gap, 0.0)), 0.0)
    return np.moveaxis(np.einsum("...ij,...j->...i", weights, gm).astype(g.dtype), -1, axis)


def _running_index(takes_over):
    def scan(x, *, axis):
        """torch.cummax/cummin's indices by a loop: the element at ``i`` takes over when ``takes_over(x_i, extreme)``
        (a tie too: the latest wins) or it is NaN; a NaN extreme is kept by every number."""
        moved = np.moveaxis(x, axis, -1)
        out = np.zeros(moved.shape, np.int64)
        for lane in np.ndindex(moved.shape[:-1]):
            best = 0
            for i, value in enumerate(moved[lane]):
                best = i if value != value or takes_over(value, moved[lane][best]) else best
                out[lane + (i,)] = best
        return np.moveaxis(out, -1, axis)

    return scan


def _argsort(x, *, axis, descending):
    """Each lane along ``axis`` ordered by Python's stable ``sorted`` (``reverse`` keeps ties in order too), with NaN
    above every number."""
    moved = np.moveaxis(x, axis, -1)
    out = np.empty(moved.shape, np.int64)
    for lane in np.ndindex(moved.shape[:-1]):
        values = moved[lane]
        key = lambda i: (1, 0.0) if values[i] != values[i] else (0, values[i])  # noqa: E731
        out[lane] = sorted(range(len(values)), key=key, reverse=descending)
    return np.moveaxis(out, -1, axis)


def _gelu(x, *, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _layer_norm(x, weight, bias, *, eps):
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def _attention(q, k, v, *mask, causal, scale):
    scores = q @ np.swapaxes(k, -1, -2) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
    keep = np.ones(scores.shape[-2:], bool)
    if causal:
        keep = np.arange(scores.shape[-1])[None, :] <= np.arange(scores.shape[-2])[:, None]
    if mask:
        keep = keep & mask[0]
    scores = np.where(keep, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


def _masked_softmax(x, keep):
    scores = np.where(keep, x, -np.inf)  # masked keys weigh exactly 0
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def _take(x, indices, *, axis):
    axis %= x.ndim
    out = np.empty(x.shape[:axis] + indices.shape + x.shape[axis + 1 :], x.dtype)
    for position in np.ndindex(*indices.shape):
        out[(slice(None),) * axis + position] = x[(slice(None),) * axis + (indices[position],)]
    return out


def _scatter_add(updates, indices, *, axis, shape):
    axis %= len(shape)
    out = np.zeros(shape, updates.dtype)
    for position in np.ndindex(*indices.shape):
        out[(slice(None),) * axis + (indices[position],)] += updates[(slice(None),) * axis + position]
    return out


def _pad(x, *, low, high, interior, value):
    out = x
    for axis, (lo, hi, mid) in enumerate(zip(low, high, interior)):
        pieces = []
        for i in range(out.shape[axis]):
            pieces.append(np.take(out, [i], axis=axis))
            if i < out.shape[axis] - 1:
                pieces.append(np.full(_with(out.shape, axis, mid), value, out.dtype))
        edge = lambda n: np.full(_with(out.shape, axis, n), value, out.dtype)  # noqa: E731
        out = np.concatenate([edge(lo)] + pieces + [edge(hi)], axis=axis)
    return out


def _with(shape, axis, size):
    return shape[:axis] + (size,) + shape[axis + 1 :]


def _conv_reference(x, w, *, stride, padding, dilation, groups):
    n, c, h, width = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow), x.dtype)
    per_group = o // groups
    for oc, r, s in itertools.product(range(o), range(oh), range(ow)):
        group = oc // per_group
        patch = xp[:, group * cg : (group + 1) * cg, r * stride[0] : r * stride[0] + dilation[0] * (kh - 1) + 1 : dilation[0],
                   s * stride[1] : s * stride[1] + dilation[1] * (kw - 1) + 1 : dilation[1]]
        out[:, oc, r, s] = np.einsum("ncij,cij->n", patch, w[oc])
    return out



def _conv_columns(x, *, kernel, stride, padding, dilation, groups):
    """Each output position's window, one row per position, channels last: ``(groups, N OH OW, KH KW C/groups)``."""
    n, c, h, width = x.shape
    (kh, kw), cg = kernel, c // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((groups, n, oh, ow, kh, kw, cg), x.dtype)
    for group, r, s, i, j in itertools.product(range(groups), range(oh), range(ow), range(kh), range(kw)):
        out[group, :, r, s, i, j] = xp[:, group * cg : (group + 1) * cg, r * stride[0] + i * dilation[0], s * stride[1] + j * dilation[1]]
    return out.reshape(groups, n * oh * ow, kh * kw * cg)

def _linear_transpose(forward, input_shape, cotangent):
    """``A^T g`` for the linear map ``forward`` on ``input_shape``, column by column from basis vectors."""
    result = np.zeros(math.prod(input_shape))
    for index in range(result.size):
        basis = np.zeros(result.size)
        basis[index] = 1
        result[index] = np.sum(forward(basis.reshape(input_shape)) * cotangent)
    return result.reshape(input_shape).astype(cotangent.dtype)


def _conv_input_grad(g, w, *, input_shape, **attrs):
    return _linear_transpose(lambda x: _conv_reference(x, w.astype(np.float64), **attrs), tuple(input_shape), g)


def _conv_weight_grad(x, g, *, weight_shape, **attrs):
    return _linear_transpose(lambda w: _conv_reference(x.astype(np.float64), w, **attrs), tuple(weight_shape), g)


def _pool_reference(x, *, kernel_size, stride, padding, reduce, fill):
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=fill)
    oh = (x.shape[2] + 2 * padding[0] - kernel_size[0]) // stride[0] + 1
    ow = (x.shape[3] + 2 * padding[1] - kernel_size[1]) // stride[1] + 1
    out = np.zeros(x.shape[:2] + (oh, ow), x.dtype)
    for r, s in itertools.product(range(oh), range(ow)):
        out[:, :, r, s] = reduce(xp[:, :, r * stride[0] : r * stride[0] + kernel_size[0], s * stride[1] : s * stride[1] + kernel_size[1]], axis=(2, 3))
    return out


def _max_pool(x, **attrs):
    return _pool_reference(x, reduce=np.max, fill=-np.inf, **attrs)


def _avg_pool(x, **attrs):
    return _pool_reference(x, reduce=np.mean, fill=0.0, **attrs)


def _max_pool_grad(x, g, *, kernel_size, stride, padding):
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=-np.inf)
    dxp = np.zeros(xp.shape, g.dtype)
    for n, c, r, s in np.ndindex(*g.shape):
        window = xp[n, c, r * stride[0] : r * stride[0] + kernel_size[0], s * stride[1] : s * stride[1] + kernel_size[1]]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        dxp[n, c, r * stride[0] + i, s * stride[1] + j] += g[n, c, r, s]
    return dxp[:, :, padding[0] : padding[0] + x.shape[2], padding[1] : padding[1] + x.shape[3]]


def _max_pool_select(x, c, *, kernel_size, stride, padding):
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=-np.inf)
    cp = np.pad(c, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    out = np.zeros(x.shape[:2] + _max_pool(x, kernel_size=kernel_size, stride=stride, padding=padding).shape[2:], c.dtype)
    for n, ch, r, s in np.ndindex(*out.shape):
        rows, cols = slice(r * stride[0], r * stride[0] + kernel_size[0]), slice(s * stride[1], s * stride[1] + kernel_size[1])
        i, j = np.unravel_index(np.argmax(xp[n, ch, rows, cols]), (kernel_size[0], kernel_size[1]))
        out[n, ch, r, s] = cp[n, ch, rows, cols][i, j]
    return out


def _avg_pool_grad(g, *, input_shape, **attrs):
    return _linear_transpose(lambda x: _avg_pool(x, **attrs), tuple(input_shape), g)


# Cases.

TAKE_CASES = (
    Case(((5, 4), (3,)), {"axis": 0}),
    Case(((5, 4), (2, 3)), {"axis": 0}),
    Case(((2, 5, 3), (4,)), {"axis": 1}),
    Case(((2, 5, 3), (2, 2)), {"axis": -1}),
    Case(((7, 4), ("N", 3)), {"axis": 0}),
    Case((("N", 4), (3,)), {"axis": 1}),
)
SCATTER_CASES = (
    Case(((3, 4), (3,)), {"axis": 0, "shape": (5, 4)}),
    Case(((2, 2, 3, 4), (2, 3)), {"axis": 1, "shape": (2, 4, 4)}),
    Case((("N", 4), ("N",)), {"axis": 0, "shape": (6, 4)}),
)
CONCAT_CASES = (
    Case(((2, 3), (4, 3)), {"axis": 0}),
    Case(((2, 3), (2, 1), (2, 2)), {"axis": 1}),
    Case(((3,),), {"axis": 0}),
    Case((("N", 3), ("N", 2)), {"axis": -1}),
)
SLICE_CASES = (
    Case(((7, 3),), {"axis": 0, "start": 1, "stop": 6, "step": 2}),
    Case(((4, 6),), {"axis": -1, "start": 0, "stop": 6, "step": 3}),
    Case(((2, 5, 3),), {"axis": 1, "start": 1, "stop": 5, "step": 1}),
    Case(((5,),), {"axis": 0, "start": 2, "stop": 2, "step": 1}),
    Case((("N", 6),), {"axis": 1, "start": 1, "stop": 6, "step": 2}),
)
PAD_CASES = (
    Case(((2, 3),), {"low": (1, 0), "high": (0, 2), "interior": (0, 1), "value": 0.0}),
    Case(((3,),), {"low": (2,), "high": (1,), "interior": (2,), "value": -1.5}),
    Case((("N", 3),), {"low": (0, 1), "high": (0, 1), "interior": (0, 0), "value": 0.0}),
)
EXPAND_CASES = (
    Case(((2, 3),), {"axes": (0,)}),
    Case(((2, 3),), {"axes": (-1, 1)}),
    Case(((),), {"axes": (0,)}),
    Case((("N", 3),), {"axes": (1,)}),
)
SQUEEZE_CASES = (
    Case(((1, 3, 1),), {"axes": (0, 2)}),
    Case(((2, 1),), {"axes": (-1,)}),
    Case((("N", 1, 3),), {"axes": (1,)}),
)
MASK_CASES = (
    Case(((4, 5),), {"k": 0}),
    Case(((2, 3, 3),), {"k": 1}),
    Case(((3, 4),), {"k": -1}),
    Case((("N", 3, 3),), {"k": 0}),
)
CLIP_CASES = tuple(
    Case((shape,), {"min": low, "max": high}) for shape in ((3, 4), ("N", 3)) for low, high in ((-0.5, 0.5), (None, 0.3), (-0.2, None))
)
ARGMAX_CASES = (
    Case(((3, 4),), {"axis": -1, "keepdims": False}),
    Case(((3, 4),), {"axis": 0, "keepdims": True}),
    Case(((2, 3, 4),), {"axis": 1, "keepdims": False}),
    Case((("N", 5),), {"axis": 1, "keepdims": False}),
)
CUMSUM_CASES = (
    Case(((5,),), {"axis": 0, "reverse": False}),
    Case(((3, 4),), {"axis": -1, "reverse": True}),
    Case(((2, 3, 4),), {"axis": 1, "reverse": False}),
    Case(((2, 3, 4),), {"axis": -3, "reverse": True}),
    Case(((3, 0),), {"axis": 1, "reverse": True}),
    Case((("N", 3),), {"axis": 1, "reverse": False}),
    Case((("N", 3),), {"axis": 0, "reverse": True}),  # the scanned axis symbolic too
    Case((("N", 2, 3),), {"axis": -1, "reverse": True}),
)
RUNNING_INDEX_CASES = tuple(Case(case.shapes, {"axis": case.attrs["axis"]}) for case in CUMSUM_CASES)
ARGSORT_CASES = (
    Case(((7,),), {"axis": 0, "descending": False}),
    Case(((7,),), {"axis": -1, "descending": True}),
    Case(((3, 9),), {"axis": -1, "descending": True}),
    Case(((4, 5, 3),), {"axis": 1, "descending": False}),
    Case(((4, 5, 3),), {"axis": -3, "descending": True}),
    Case(((2, 40),), {"axis": 1, "descending": False}),  # longer than NumPy's insertion-sort runs: its quicksort is not stable
    Case(((3, 0),), {"axis": 1, "descending": True}),
    Case((("N", 6),), {"axis": 1, "descending": True}),
    Case((("N", 2, 33),), {"axis": -1, "descending": False}),
    Case(((25, "N"),), {"axis": 0, "descending": True}),
)
GELU_CASES = tuple(Case(case.shapes, {"approximate": approximate}) for case in UNARY_CASES for approximate in ("none", "tanh"))
LAYER_NORM_CASES = (
    Case(((3, 5), (5,), (5,)), {"eps": 1e-5}),
    Case(((2, 3, 4), (3, 4), (3, 4)), {"eps": 1e-3}),
    Case((("N", 6), (6,), (6,)), {"eps": 1e-5}),
)
ATTENTION_CASES = (
    Case(((2, 3, 4), (2, 5, 4), (2, 5, 6)), {"causal": False, "scale": None}),
    Case(((2, 4, 3), (2, 4, 3), (2, 4, 3)), {"causal": True, "scale": None}),
    Case(((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (2, 1, 1, 5)), {"causal": False, "scale": None}, operand_dtypes=(None, None, None, "bool")),
    Case(((1, 4, 2), (1, 4, 2), (1, 4, 2), (4, 4)), {"causal": True, "scale": 0.3}, operand_dtypes=(None, None, None, "bool")),
    Case((("N", 3, 4), ("N", 3, 4), ("N", 3, 4)), {"causal": True, "scale": 0.5}),
)
MASKED_SOFTMAX_CASES = (
    Case(((3, 5), (3, 5))),
    Case(((2, 3, 4), (3, 4))),  # one mask for every batch: attention's causal mask
    Case(((2, 2, 3, 5), (2, 1, 1, 5))),  # a key padding mask
    Case((("N", 4), (4,))),
)
CONV_GEOMETRIES = (
    {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1},
    {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 1), "groups": 1},
    {"stride": (1, 2), "padding": (1, 0), "dilation": (2, 1), "groups": 2},
)


def _conv_cases():
    cases = []
    for attrs in CONV_GEOMETRIES:
        x, w = (1, 2, 5, 4), (2, 2 // attrs["groups"], 3, 2)
        y = _conv_reference(np.zeros(x), np.zeros(w), **attrs).shape
        cases.append(("static", x, w, y, attrs))
    attrs = CONV_GEOMETRIES[0]
    cases.append(("symbolic", ("N", 2, 4, 3), (3, 2, 2, 2), ("N", 3, 3, 2), attrs))
    return cases


def conv_rows() -> list[OpRow]:
    forward, input_grad, weight_grad = [], [], []
    for _, x, w, y, attrs in _conv_cases():
        forward.append(Case((x, w), attrs))
        input_grad.append(Case((y, w), {"input_shape": x, **attrs}))
        weight_grad.append(Case((x, y), {"weight_shape": w, **attrs}))
    return [
        OpRow("tensor.conv2d", _conv_reference, tuple(forward), normal),
        OpRow("tensor.conv2d_input_grad", _conv_input_grad, tuple(input_grad), normal),
        OpRow("tensor.conv2d_weight_grad", _conv_weight_grad, tuple(weight_grad), normal),
        OpRow("tensor.conv2d_columns", _conv_columns, tuple(Case((x,), {"kernel": w[2:], **attrs}) for _, x, w, _, attrs in _conv_cases()), normal),
    ]


POOL_GEOMETRIES = (
    ((2, 2), (2, 2), (0, 0), (2, 3, 6, 6), (2, 3, 3, 3)),
    ((3, 3), (2, 2), (1, 1), (1, 2, 5, 6), (1, 2, 3, 3)),
    ((3, 2), (1, 2), (1, 0), (1, 1, 4, 5), (1, 1, 4, 2)),
    ((2, 2), (2, 2), (0, 0), ("N", 2, 4, 4), ("N", 2, 2, 2)),
)


def pool_rows() -> list[OpRow]:
    forward, with_input, grads = [], [], []
    for kernel, stride, padding, x, y in POOL_GEOMETRIES:
        attrs = {"kernel_size": kernel, "stride": stride, "padding": padding}
        forward.append(Case((x,), attrs))
        with_input.append(Case((x, y), attrs))
        grads.append(Case((y,), {"input_shape": x, **attrs}))
    return [
        OpRow("tensor.max_pool2d", _max_pool, tuple(forward), integral),
        OpRow("tensor.max_pool2d_grad", _max_pool_grad, tuple(with_input), integral),
        OpRow("tensor.max_pool2d_select", _max_pool_select, tuple(Case((x, x), attrs) for x, attrs in zip(
            [case.shapes[0] for case in forward], [case.attrs for case in forward])), integral),
        OpRow("tensor.avg_pool2d", _avg_pool, tuple(forward), normal),
        OpRow("tensor.avg_pool2d_grad", _avg_pool_grad, tuple(grads), normal),
    ]


def extra_rows() -> list[OpRow]:
    reductions = reduction_cases()
    return [
        OpRow("tensor.abs", np.abs, UNARY_CASES, away_from_zero, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.erf", _erf_reference, UNARY_CASES, normal),
        OpRow("tensor.rsqrt", lambda x: 1 / np.sqrt(x), UNARY_CASES, positive),
        OpRow("tensor.sin", np.sin, UNARY_CASES, normal),
        OpRow("tensor.cos", np.cos, UNARY_CASES, normal),
        OpRow("tensor.floor", np.floor, UNARY_CASES, off_steps),
        OpRow("tensor.ceil", np.ceil, UNARY_CASES, off_steps),
        OpRow("tensor.round", np.rint, UNARY_CASES, off_steps),
        OpRow("tensor.cumsum", _cumsum, CUMSUM_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.cumprod", _cumprod, CUMSUM_CASES, one_zero_per_row, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.atan", np.arctan, UNARY_CASES, normal),
        OpRow("tensor.asin", np.arcsin, UNARY_CASES, inside_unit),
        OpRow("tensor.acos", np.arccos, UNARY_CASES, inside_unit),
        OpRow("tensor.clip", lambda x, *, min, max: np.clip(x, min, max), CLIP_CASES, away_from_bounds),
        OpRow("tensor.reduce_min", lambda x, *, axes, keepdims: np.min(x, axis=axes, keepdims=keepdims), reductions, distinct, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.reduce_prod", lambda x, *, axes, keepdims: np.prod(x, axis=axes, keepdims=keepdims).astype(x.dtype), reductions, with_zeros, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.argsort", _argsort, ARGSORT_CASES, sort_keys, False, FLOATS_AND_INTS),
        OpRow("tensor.logcumsumexp", _logcumsumexp, CUMSUM_CASES, normal),
        OpRow("tensor.decayed_cumsum", _decayed_cumsum, tuple(Case(case.shapes * 2, case.attrs) for case in CUMSUM_CASES), values_and_log_totals),
        OpRow("tensor.cumargmax", _running_index(lambda value, best: value >= best), RUNNING_INDEX_CASES, sort_keys, False, FLOATS_AND_INTS),
        OpRow("tensor.cumargmin", _running_index(lambda value, best: value <= best), RUNNING_INDEX_CASES, sort_keys, False, FLOATS_AND_INTS),
        OpRow("tensor.argmax", lambda x, *, axis, keepdims: np.argmax(x, axis=axis, keepdims=keepdims), ARGMAX_CASES, distinct, False, FLOATS_AND_INTS),
        OpRow("tensor.take", _take, TAKE_CASES, with_indices, dtypes=FLOATS_AND_INTS, operand_dtypes=(None, "i64")),
        OpRow("tensor.scatter_add", _scatter_add, SCATTER_CASES, with_indices, dtypes=FLOATS_AND_INTS, operand_dtypes=(None, "i32")),
        OpRow("tensor.concat", lambda *xs, axis: np.concatenate(xs, axis=axis), CONCAT_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.slice", lambda x, *, axis, start, stop, step: np.swapaxes(np.swapaxes(x, 0, axis)[start:stop:step], 0, axis), SLICE_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.pad", _pad, PAD_CASES, normal),
        OpRow("tensor.expand_dims", lambda x, *, axes: np.expand_dims(x, axes), EXPAND_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.squeeze", lambda x, *, axes: np.squeeze(x, axes), SQUEEZE_CASES, normal, dtypes=FLOATS_AND_INTS),
        OpRow("tensor.triu", lambda x, *, k: np.where(np.arange(x.shape[-1]) - np.arange(x.shape[-2])[:, None] >= k, x, 0), MASK_CASES, normal),
        OpRow("tensor.tril", lambda x, *, k: np.where(np.arange(x.shape[-1]) - np.arange(x.shape[-2])[:, None] <= k, x, 0), MASK_CASES, normal),
        OpRow("nn.gelu", _gelu, GELU_CASES, normal),
        OpRow("nn.layer_norm", _layer_norm, LAYER_NORM_CASES, normal),
        OpRow("nn.scaled_dot_product_attention", _attention, ATTENTION_CASES, attention_inputs),
        OpRow("nn.masked_softmax", _masked_softmax, MASKED_SOFTMAX_CASES, scores_and_keep, operand_dtypes=(None, "bool")),
        *conv_rows(),
        *pool_rows(),
    ]


EXTRA_ROWS: list[OpRow] = extra_rows()


# Randomness: the reference is the generator's definition (Philox-4x64 keyed by seed and stream).


def _random_uniform(seed, like, *, dtype, stream):
    from kiln.compiler.ir.types import DType

    key = np.array([int(seed), stream], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key)).random(like.shape, dtype=DType.of(dtype).numpy)


def _dropout(x, seed, *, p, stream):
    keep = _random_uniform(seed, x, dtype=str(x.dtype), stream=stream) >= p
    return np.where(keep, x / (1 - p), 0).astype(x.dtype)


def seed_and_data(rng, shapes, dtypes, attrs):
    return [rng.integers(0, 2**31)] + [rng.standard_normal(shape) for shape in shapes[1:]]


def data_and_seed(rng, shapes, dtypes, attrs):
    return [rng.standard_normal(shapes[0]), rng.integers(0, 2**31)]


RANDOM_CASES = tuple(
    Case(((), shape), {"dtype": dtype, "stream": stream}, operand_dtypes=("i64", None))
    for shape, dtype, stream in (((3, 4), "f32", 0), ((5,), "f64", 3), (("N", 3), "f32", 1))
)
DROPOUT_CASES = tuple(
    Case((shape, ()), {"p": p, "stream": stream}, operand_dtypes=(None, "i64"))
    for shape, p, stream in (((4, 5), 0.5, 0), ((2, 3, 4), 0.1, 2), (("N", 6), 0.3, 1))
)
EXTRA_ROWS += [
    OpRow("tensor.random_uniform", _random_uniform, RANDOM_CASES, seed_and_data, False, ("f32",)),
    OpRow("nn.dropout", _dropout, DROPOUT_CASES, data_and_seed),
]


def _batch_norm(x, weight, bias, *, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    channel = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight.reshape(channel) + bias.reshape(channel)


BATCH_NORM_CASES = (
    Case(((4, 3, 2, 2), (3,), (3,)), {"eps": 1e-5}),
    Case(((5, 2), (2,), (2,)), {"eps": 1e-3}),
    Case((("N", 2, 3), (2,), (2,)), {"eps": 1e-5}),
)
EXTRA_ROWS.append(OpRow("nn.batch_norm", _batch_norm, BATCH_NORM_CASES, normal))

from ops3.op_rows_linalg import LINALG_ROWS  # noqa: E402  (the linalg dialect's rows)

EXTRA_ROWS += LINALG_ROWS
