"""The half-precision sweep's table: F.* functions, tensor methods and nn layers, each written once against
PyTorch-style names and run by kiln and by torch on the same half inputs and weights (``test_half_vs_torch.py``).

A row: an id, ``call(lib, nn, F, module, *inputs)``, input specs, an optional ``module(nn)`` constructor and the
tolerance in ulps where kiln's rounding points differ from torch's (``None``: torch.testing's defaults), with the
reason in ``why``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Input:
    shape: tuple[int, ...]
    kind: str = "normal"
    """``normal``, ``positive`` (0.5..2), ``unit`` (0.05..0.95: probabilities), ``labels`` (ints below ``high``),
    ``away`` (|x| in 0.1..2: off relu-like kinks), ``distinct`` (no ties: max/sort), ``large`` (|x| in 100..1000)."""
    high: int = 0
    grad: bool = True
    """Whether the loss is differentiated with respect to this (float) input; False for a target torch refuses to
    differentiate (``soft_margin_loss``'s, ``pos_weight``)."""

    @property
    def is_float(self) -> bool:
        return self.kind not in ("labels",)

    @property
    def differentiated(self) -> bool:
        return self.is_float and self.grad

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        size = int(np.prod(self.shape))
        if self.kind == "labels":
            return rng.integers(0, self.high, self.shape)
        if self.kind == "positive":
            return rng.uniform(0.5, 2.0, self.shape)
        if self.kind == "unit":
            return rng.uniform(0.05, 0.95, self.shape)
        if self.kind == "away":
            return rng.uniform(0.1, 2.0, self.shape) * rng.choice([-1.0, 1.0], self.shape)
        if self.kind == "large":  # |x| in 100..1000: squares overflow float16 (above 65504) unless computed in float32
            return rng.uniform(100.0, 1000.0, self.shape) * rng.choice([-1.0, 1.0], self.shape)
        if self.kind == "distinct":  # distinct in half precision too: steps of 1/8 below 4 in magnitude
            return (rng.permutation(size) - size // 2).reshape(self.shape) / 8.0
        return rng.standard_normal(self.shape)


@dataclass(frozen=True)
class HalfCase:
    id: str
    call: Callable[..., Any]
    inputs: tuple[Input, ...]
    module: Callable[[Any], Any] | None = None
    ulps: float | None = None
    """Tolerance of the output in ulps (``half_compare.py``); ``None``: torch.testing's defaults."""
    grad_ulps: float | None = None
    """Tolerance of the gradients; ``None``: as the output's."""
    why: str = ""
    grad: bool = True
    train: bool = True
    """Whether the module runs in training mode (BatchNorm's batch statistics) or eval mode."""
    bf16_ulps: float | None = field(default=None)
    """An override of ``ulps`` for bfloat16 only."""
    torch_grad_overflows: bool = False
    """torch's half backward overflows here (NaN or inf where the true gradient is finite): the gradients' oracle is
    torch in float32 on the same inputs, rounded, as for ``torch_refuses``; the output is still torch's half one."""
    torch_refuses: bool = False
    """PyTorch has no CPU kernel for this in half precision: the oracle is torch in float32 on the same half inputs
    and weights, rounded to the half dtype (what kiln computes: float32 inside, rounded once)."""


def x(*shape: int, kind: str = "normal") -> Input:
    return Input(shape, kind)


def target(*shape: int, kind: str = "normal") -> Input:
    """A float input the loss is not differentiated against."""
    return Input(shape, kind, grad=False)


def labels(*shape: int, high: int) -> Input:
    return Input(shape, "labels", high)


def fn(name: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
    """``F.name(*inputs, *args, **kwargs)``."""
    return lambda lib, nn, F, m, *xs: getattr(F, name)(*xs, *args, **kwargs)


def method(name: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
    """``inputs[0].name(*inputs[1:], *args, **kwargs)``."""
    return lambda lib, nn, F, m, first, *rest: getattr(first, name)(*rest, *args, **kwargs)


def top(name: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
    """``lib.name(*inputs, *args, **kwargs)`` (``kiln.name`` / ``torch.name``)."""
    return lambda lib, nn, F, m, *xs: getattr(lib, name)(*xs, *args, **kwargs)


def layer(make: Callable[[Any], Any], *inputs: Input, id: str, **options: Any) -> HalfCase:
    return HalfCase(id, lambda lib, nn, F, m, *xs: m(*xs), inputs, module=make, **options)


def class_weights(lib: Any, like: Any, size: int) -> Any:
    """Fixed positive weights: a NumPy array for kiln (a loss's weights are constants, also inside a trace), a torch
    tensor in ``like``'s dtype for torch."""
    weights = np.linspace(0.5, 2.0, size)
    return weights if lib.__name__ == "kiln" else lib.tensor(weights, dtype=like.dtype)


def _output_times_weights(output_and_weights: tuple[Any, Any]) -> Any:
    """Attention's output and its averaged weights in one tensor (``(N, L, 1) * (N, L, S)``), so both get gradients."""
    output, weights = output_and_weights
    return output.sum(-1, keepdim=True) * weights


def first(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


ROUNDED_STEPS = "kiln rounds to half between the steps of a composite torch computes in float32 (or the reverse)"
SUMS = "a float32 sum or product of many terms, added in another order than torch's: the rounded result may differ in its last bit"
TORCH_HALF_SUM = "torch's float16 kernel adds in float16 (5 ulps from the float64 value here), kiln in float32 (under 1)"

ACTIVATIONS = [
    HalfCase(name + "".join(f"-{k}={v}" for k, v in kw.items()), fn(name, **kw), (x(4, 9, kind="away"),), ulps=ulps, why=why)
    for name, kw, ulps, why in [
        ("relu", {}, None, ""), ("relu6", {}, None, ""), ("gelu", {}, None, ""), ("gelu", {"approximate": "tanh"}, None, ""),
        ("silu", {}, None, ""), ("elu", {}, None, ""), ("selu", {}, None, ""), ("celu", {"alpha": 0.5}, None, ""),
        ("softplus", {}, None, ""), ("softplus", {"beta": 2.0, "threshold": 5.0}, None, ""), ("sigmoid", {}, None, ""),
        ("tanh", {}, None, ""), ("leaky_relu", {"negative_slope": 0.2}, None, ""), ("hardtanh", {}, None, ""),
        ("mish", {}, None, ""), ("hardswish", {}, None, ""), ("hardsigmoid", {}, None, ""), ("softsign", {}, None, ""),
        ("logsigmoid", {}, None, ""), ("tanhshrink", {}, None, ""), ("softshrink", {}, None, ""),
        ("hardshrink", {}, None, ""), ("softmax", {"dim": -1}, None, ""),
        ("log_softmax", {"dim": -1}, None, ""), ("softmin", {"dim": 0}, None, ""), ("normalize", {"dim": 1}, None, ""),
        ("threshold", {"threshold": 0.5, "value": -1.0}, None, ""), ("dropout", {"p": 0.0}, None, ""),
        ("alpha_dropout", {"p": 0.0}, None, ""), ("rrelu", {"training": False}, None, ""),
    ]
]

LOSSES = [
    HalfCase("mse_loss", fn("mse_loss"), (x(4, 5), x(4, 5))),
    HalfCase("l1_loss", fn("l1_loss"), (x(4, 5), x(4, 5))),
    HalfCase("smooth_l1_loss", fn("smooth_l1_loss", beta=0.5), (x(4, 5), x(4, 5))),
    HalfCase("huber_loss", fn("huber_loss", delta=0.7), (x(4, 5), x(4, 5))),
    HalfCase("cross_entropy", fn("cross_entropy"), (x(6, 5), labels(6, high=5))),
    HalfCase("cross_entropy-smoothing", fn("cross_entropy", label_smoothing=0.1), (x(6, 5), labels(6, high=5))),
    HalfCase("cross_entropy-probabilities", fn("cross_entropy"), (x(6, 5), x(6, 5, kind="unit"))),
    HalfCase("cross_entropy-2d", fn("cross_entropy", reduction="sum"), (x(2, 4, 3, 3), labels(2, 3, 3, high=4))),
    HalfCase("nll_loss", fn("nll_loss"), (x(6, 5), labels(6, high=5)), ulps=3, why=TORCH_HALF_SUM),
    HalfCase("binary_cross_entropy", fn("binary_cross_entropy"), (x(4, 5, kind="unit"), x(4, 5, kind="unit"))),
    HalfCase("bce_with_logits", fn("binary_cross_entropy_with_logits"), (x(4, 5), x(4, 5, kind="unit"))),
    HalfCase("kl_div", fn("kl_div", reduction="batchmean"), (x(4, 5), x(4, 5, kind="unit"))),
    HalfCase("kl_div-log_target", fn("kl_div", reduction="sum", log_target=True), (x(4, 5), x(4, 5))),
    HalfCase("margin_ranking_loss", fn("margin_ranking_loss", margin=0.1), (x(6), x(6), x(6, kind="away"))),
    HalfCase("soft_margin_loss", fn("soft_margin_loss"), (x(4, 5), target(4, 5, kind="away"))),
    HalfCase("multilabel_soft_margin_loss", fn("multilabel_soft_margin_loss"), (x(4, 5), x(4, 5, kind="unit"))),
    HalfCase("poisson_nll_loss", fn("poisson_nll_loss"), (x(4, 5), x(4, 5, kind="positive"))),
    HalfCase("gaussian_nll_loss", fn("gaussian_nll_loss"), (x(4, 5), x(4, 5), x(4, 5, kind="positive"))),
    HalfCase("hinge_embedding_loss", fn("hinge_embedding_loss"), (x(4, 5), target(4, 5, kind="away"))),
    HalfCase("cosine_embedding_loss", fn("cosine_embedding_loss"), (x(4, 5), x(4, 5), target(4, kind="away"))),
    HalfCase("triplet_margin_loss", fn("triplet_margin_loss"), (x(4, 5), x(4, 5), x(4, 5))),
    HalfCase("multi_margin_loss", fn("multi_margin_loss"), (x(6, 5), labels(6, high=5)), torch_refuses=True),
    HalfCase("cosine_similarity", fn("cosine_similarity"), (x(4, 5), x(4, 5))),
    HalfCase("pairwise_distance", fn("pairwise_distance"), (x(4, 5), x(4, 5))),
]

TENSOR_OPS = [
    HalfCase("add", lambda lib, nn, F, m, a, b: a + b * 0.5 - 1, (x(3, 4), x(4))),
    HalfCase("mul-div", lambda lib, nn, F, m, a, b: a * b / (b + 3), (x(3, 4), x(3, 4, kind="positive"))),
    HalfCase("pow", lambda lib, nn, F, m, a, b: a ** b, (x(3, 4, kind="positive"), x(3, 4))),
    HalfCase("pow-scalar", lambda lib, nn, F, m, a: a ** 2 + 2 ** a, (x(3, 4),)),
    HalfCase("matmul", lambda lib, nn, F, m, a, b: a @ b, (x(3, 16), x(16, 5))),
    HalfCase("bmm", top("bmm"), (x(2, 3, 8), x(2, 8, 4))),
    HalfCase("einsum", lambda lib, nn, F, m, a, b: lib.einsum("bij,bjk->bik", a, b), (x(2, 3, 8), x(2, 8, 4))),
    HalfCase("baddbmm", top("baddbmm", alpha=0.5, beta=2.0), (x(2, 3, 4), x(2, 3, 8), x(2, 8, 4))),
    HalfCase("addmm", top("addmm"), (x(3, 4), x(3, 8), x(8, 4))),
    HalfCase("sum", method("sum", dim=1), (x(3, 40),)),
    HalfCase("mean", method("mean"), (x(3, 40),)),
    HalfCase("var", method("var", dim=1), (x(3, 40),)),
    HalfCase("std", method("std"), (x(3, 40),)),
    HalfCase("norm", method("norm"), (x(3, 40),)),
    HalfCase("logsumexp", method("logsumexp", dim=1), (x(3, 40),)),
    HalfCase("prod", method("prod", dim=1), (x(3, 6, kind="positive"),)),
    HalfCase("cumsum", method("cumsum", dim=1), (x(3, 8),)),
    HalfCase("cumprod", method("cumprod", dim=1), (x(3, 8, kind="positive"),)),
    HalfCase("amax", method("amax", dim=1), (x(3, 8, kind="distinct"),)),
    HalfCase("max-dim", lambda lib, nn, F, m, a: a.max(dim=1)[0], (x(3, 8, kind="distinct"),)),
    HalfCase("min", method("min"), (x(3, 8, kind="distinct"),)),
    HalfCase("sort", lambda lib, nn, F, m, a: a.sort(dim=1)[0], (x(3, 8, kind="distinct"),)),
    HalfCase("topk", lambda lib, nn, F, m, a: a.topk(3, dim=1)[0], (x(3, 8, kind="distinct"),)),
    HalfCase("clamp", method("clamp", -0.5, 0.5), (x(3, 8, kind="away"),)),
    HalfCase("where", lambda lib, nn, F, m, a, b: lib.where(a > 0, a, b), (x(3, 8, kind="away"), x(3, 8))),
    HalfCase("masked_fill", lambda lib, nn, F, m, a: a.masked_fill(a < 0, -2.0), (x(3, 8, kind="away"),)),
    HalfCase("unary", lambda lib, nn, F, m, a: a.exp() + a.sin() * a.cos() - a.abs().sqrt() + a.tanh() + a.erf() + a.atan(),
             (x(3, 8, kind="away"),), ulps=2, why=ROUNDED_STEPS),
    HalfCase("log", lambda lib, nn, F, m, a: a.log() + a.log1p() - a.rsqrt() + a.reciprocal() + a.expm1(), (x(3, 8, kind="positive"),),
             ulps=2, why=ROUNDED_STEPS),
    HalfCase("atan2", top("atan2"), (x(3, 8), x(3, 8))),
    HalfCase("lerp", top("lerp", 0.3), (x(3, 8), x(3, 8)), ulps=1, why=ROUNDED_STEPS + " (kiln's lerp is start + w (end - start) in half ops)"),
    HalfCase("addcmul", top("addcmul", value=0.5), (x(3, 8), x(3, 8), x(3, 8))),
    HalfCase("addcdiv", top("addcdiv", value=0.5), (x(3, 8), x(3, 8), x(3, 8, kind="positive"))),
    HalfCase("addcmul-float32-self", lambda lib, nn, F, m, a, b: lib.addcmul(a.float(), b, b), (x(3, 8), x(3, 8))),
    HalfCase("mean-dtype", lambda lib, nn, F, m, a: a.mean(1, dtype=lib.float32), (x(3, 6),)),
    HalfCase("gather", lambda lib, nn, F, m, a, i: a.gather(1, i), (x(3, 8), labels(3, 4, high=8))),
    HalfCase("index_select", lambda lib, nn, F, m, a, i: a.index_select(0, i), (x(5, 4), labels(6, high=5))),
    HalfCase("scatter_add", lambda lib, nn, F, m, a, i, s: a.scatter_add(1, i, s), (x(3, 8), labels(3, 4, high=8), x(3, 4))),
    HalfCase("movement", lambda lib, nn, F, m, a, b: lib.cat([a.t(), b.flip(0).roll(1, 1)], 0).reshape(-1, 2).repeat(2, 1).triu(),
             (x(4, 3), x(2, 4))),
    HalfCase("glu", fn("glu"), (x(4, 8),)),
    HalfCase("stack-expand", lambda lib, nn, F, m, a: lib.stack([a.expand(3, 4), a.expand(3, 4) * 2], 1).transpose(0, 2).contiguous(), (x(1, 4),)),
    HalfCase("getitem", lambda lib, nn, F, m, a: a[1:, ::2] * a[:-1, 1::2], (x(4, 6),)),
    HalfCase("pad-reflect", fn("pad", (1, 2, 2, 1), mode="reflect"), (x(1, 2, 4, 5),)),
    HalfCase("pad-replicate", fn("pad", (1, 2), mode="replicate"), (x(1, 2, 5),)),
    HalfCase("pad-constant", fn("pad", (1, 2), value=0.5), (x(2, 5),)),
]


def _conv(nn: Any) -> Any:
    return nn.Conv2d(3, 4, 3, padding=1)


LAYERS = [
    layer(lambda nn: nn.Linear(16, 5), x(3, 16), id="Linear"),
    layer(lambda nn: nn.Bilinear(4, 3, 2), x(5, 4), x(5, 3), id="Bilinear", ulps=1, why=SUMS),
    layer(lambda nn: nn.Conv1d(3, 4, 3, padding=1), x(2, 3, 7), id="Conv1d", ulps=1, why=SUMS),
    layer(_conv, x(2, 3, 6, 6), id="Conv2d", ulps=1, why=SUMS),
    layer(lambda nn: nn.Conv2d(4, 4, 3, stride=2, groups=2, dilation=1), x(2, 4, 7, 7), id="Conv2d-groups-stride"),
    layer(lambda nn: nn.Conv3d(2, 3, 2), x(1, 2, 4, 4, 4), id="Conv3d", ulps=1, why=SUMS),
    layer(lambda nn: nn.ConvTranspose1d(3, 2, 3, stride=2), x(2, 3, 5), id="ConvTranspose1d", ulps=1, why=SUMS),
    layer(lambda nn: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1), x(2, 3, 4, 4), id="ConvTranspose2d", ulps=1, why=SUMS),
    layer(lambda nn: nn.BatchNorm1d(5), x(8, 5), id="BatchNorm1d", ulps=1, grad_ulps=4, why=SUMS + "; its weight gradient sums 8 products of half values"),
    layer(lambda nn: nn.BatchNorm2d(3), x(4, 3, 3, 3), id="BatchNorm2d", ulps=1, why=SUMS),
    layer(lambda nn: nn.BatchNorm2d(3), x(4, 3, 3, 3), id="BatchNorm2d-eval", train=False),
    layer(lambda nn: nn.LayerNorm(8), x(3, 8), id="LayerNorm"),
    layer(lambda nn: nn.GroupNorm(2, 4), x(2, 4, 3, 3), id="GroupNorm"),
    layer(lambda nn: nn.InstanceNorm2d(3, affine=True), x(2, 3, 4, 4), id="InstanceNorm2d", ulps=1, why=SUMS),
    layer(lambda nn: nn.RMSNorm(8), x(3, 8), id="RMSNorm"),
    layer(lambda nn: nn.LocalResponseNorm(3), x(2, 5, 3, 3), id="LocalResponseNorm", torch_refuses=True),
    layer(lambda nn: nn.Embedding(10, 4), labels(3, 5, high=10), id="Embedding"),
    layer(lambda nn: nn.Embedding(10, 4, padding_idx=0), labels(3, 5, high=10), id="Embedding-padding_idx"),
    layer(lambda nn: nn.EmbeddingBag(10, 4, mode="mean"), labels(3, 5, high=10), id="EmbeddingBag", ulps=1, why=SUMS),
    layer(lambda nn: nn.PReLU(3), x(2, 3, 4, kind="away"), id="PReLU"),
    HalfCase("LSTM", lambda lib, nn, F, m, s: first(m(s)), (x(5, 2, 4),), module=lambda nn: nn.LSTM(4, 3, num_layers=2),
             ulps=2, why=SUMS + ", through 5 steps and 2 layers"),
    HalfCase("GRU", lambda lib, nn, F, m, s: first(m(s)), (x(5, 2, 4),), module=lambda nn: nn.GRU(4, 3, bidirectional=True),
             ulps=1, why=SUMS),
    HalfCase("RNN", lambda lib, nn, F, m, s: first(m(s)), (x(5, 2, 4),), module=lambda nn: nn.RNN(4, 3, batch_first=True), ulps=1, why=SUMS),
    HalfCase("LSTMCell", lambda lib, nn, F, m, s: first(m(s)), (x(2, 4),), module=lambda nn: nn.LSTMCell(4, 3)),
    HalfCase("MultiheadAttention", lambda lib, nn, F, m, q, k: first(m(q, k, k)), (x(5, 2, 8), x(4, 2, 8)),
             module=lambda nn: nn.MultiheadAttention(8, 2)),
    HalfCase("TransformerEncoderLayer", lambda lib, nn, F, m, s: m(s), (x(2, 5, 8),),
             module=lambda nn: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), ulps=1, why=SUMS),
    HalfCase("TransformerDecoderLayer", lambda lib, nn, F, m, s, mem: m(s, mem), (x(2, 5, 8), x(2, 3, 8)),
             module=lambda nn: nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True), ulps=1, why=SUMS),
    HalfCase("scaled_dot_product_attention", fn("scaled_dot_product_attention", is_causal=True), (x(2, 5, 8), x(2, 5, 8), x(2, 5, 8))),
    layer(lambda nn: nn.MaxPool1d(2), x(2, 3, 8, kind="distinct"), id="MaxPool1d"),
    layer(lambda nn: nn.MaxPool2d(3, stride=2, padding=1), x(2, 3, 7, 7, kind="distinct"), id="MaxPool2d"),
    layer(lambda nn: nn.AvgPool1d(3, stride=2), x(2, 3, 9), id="AvgPool1d"),
    layer(lambda nn: nn.AvgPool2d(2), x(2, 3, 6, 6), id="AvgPool2d"),
    layer(lambda nn: nn.AdaptiveAvgPool2d(3), x(2, 3, 7, 7), id="AdaptiveAvgPool2d", ulps=1, why=SUMS),
    layer(lambda nn: nn.AdaptiveMaxPool2d(2), x(2, 3, 6, 6, kind="distinct"), id="AdaptiveMaxPool2d"),
    layer(lambda nn: nn.MaxPool3d(2), x(1, 2, 4, 4, 4, kind="distinct"), id="MaxPool3d"),
    layer(lambda nn: nn.AvgPool3d(2), x(1, 2, 4, 4, 4), id="AvgPool3d", ulps=1, why=SUMS, torch_refuses=True),
    layer(lambda nn: nn.PixelShuffle(2), x(1, 8, 3, 3), id="PixelShuffle"),
    layer(lambda nn: nn.Dropout(0.0), x(3, 8), id="Dropout-p0"),
    layer(lambda nn: nn.Dropout2d(0.0), x(2, 3, 4, 4), id="Dropout2d-p0"),
    layer(lambda nn: nn.Flatten(), x(2, 3, 4), id="Flatten"),
    layer(lambda nn: nn.Upsample(scale_factor=2, mode="nearest"), x(1, 2, 3, 3), id="Upsample-nearest"),
    HalfCase("interpolate-bilinear", fn("interpolate", size=(5, 7), mode="bilinear", align_corners=False), (x(1, 2, 3, 4),)),
    HalfCase("interpolate-area", fn("interpolate", size=(3, 2), mode="area"), (x(1, 2, 7, 5),)),
    HalfCase("interpolate-nearest-exact", fn("interpolate", scale_factor=1.5, mode="nearest-exact"), (x(1, 2, 4, 4),)),
    HalfCase("interpolate-linear", fn("interpolate", scale_factor=2.5, mode="linear"), (x(1, 2, 4),), ulps=1, why=SUMS),
    HalfCase("interpolate-trilinear", fn("interpolate", scale_factor=2, mode="trilinear"), (x(1, 1, 2, 3, 2),), ulps=1, why=SUMS),
    HalfCase("unfold", fn("unfold", 2, stride=1), (x(1, 2, 4, 4),)),
    HalfCase("fold", fn("fold", (3, 3), 2), (x(1, 8, 4),)),
    HalfCase("grid_sample", fn("grid_sample", align_corners=False), (x(1, 2, 4, 4), x(1, 3, 3, 2, kind="unit"))),
    HalfCase("affine_grid", fn("affine_grid", (2, 1, 3, 4), align_corners=False), (x(2, 2, 3),), ulps=1, why=SUMS),
    HalfCase("one_hot-embedding", lambda lib, nn, F, m, w, i: F.embedding(i, w), (x(10, 4), labels(3, high=10))),
]

MORE = [
    HalfCase("linear", fn("linear"), (x(3, 16), x(5, 16), x(5)), ulps=1, why=SUMS),
    HalfCase("conv2d", fn("conv2d", padding=1, stride=2), (x(2, 3, 5, 5), x(4, 3, 3, 3), x(4)), ulps=1, why=SUMS),
    HalfCase("conv_transpose2d", fn("conv_transpose2d", stride=2), (x(2, 3, 3, 3), x(3, 2, 3, 3)), ulps=1, why=SUMS),
    HalfCase("batch_norm-functional", lambda lib, nn, F, m, a, w, b: F.batch_norm(a, None, None, w, b, training=True), (x(6, 4), x(4), x(4)),
             ulps=1, grad_ulps=4, why=SUMS + "; the weight gradient sums products of half values"),
    HalfCase("layer_norm-functional", lambda lib, nn, F, m, a, w, b: F.layer_norm(a, (2, 4), w, b), (x(3, 2, 4), x(2, 4), x(2, 4)), ulps=1, why=SUMS),
    HalfCase("group_norm-functional", lambda lib, nn, F, m, a, w, b: F.group_norm(a, 2, w, b), (x(2, 4, 5), x(4), x(4)), ulps=1, why=SUMS),
    HalfCase("instance_norm-functional", lambda lib, nn, F, m, a: F.instance_norm(a), (x(2, 3, 6),), ulps=1, why=SUMS),
    HalfCase("softmax-dtype", lambda lib, nn, F, m, a: F.softmax(a, dim=-1, dtype=lib.float32), (x(3, 6),)),
    HalfCase("log_softmax-dtype", lambda lib, nn, F, m, a: F.log_softmax(a, dim=-1, dtype=lib.float32), (x(3, 6),)),
    HalfCase("sum-dtype", lambda lib, nn, F, m, a: a.sum(1, dtype=lib.float32), (x(3, 6),)),
    HalfCase("cross_entropy-weight-none", lambda lib, nn, F, m, a, t: F.cross_entropy(a, t, weight=class_weights(lib, a, 5), reduction="none"),
             (x(6, 5), labels(6, high=5))),
    HalfCase("cross_entropy-weight-mean", lambda lib, nn, F, m, a, t: F.cross_entropy(a, t, weight=class_weights(lib, a, 5)),
             (x(6, 5), labels(6, high=5))),
    HalfCase("nll_loss-weight-sum", lambda lib, nn, F, m, a, t: F.nll_loss(a, t, weight=class_weights(lib, a, 5), reduction="sum"),
             (x(6, 5), labels(6, high=5)), ulps=3, why=TORCH_HALF_SUM),
    HalfCase("binary_cross_entropy-weight", lambda lib, nn, F, m, a, t: F.binary_cross_entropy(a, t, weight=class_weights(lib, a, 5)),
             (x(4, 5, kind="unit"), target(4, 5, kind="unit"))),
    HalfCase("bce_with_logits-pos_weight", lambda lib, nn, F, m, a, t: F.binary_cross_entropy_with_logits(a, t, pos_weight=class_weights(lib, a, 5)),
             (x(4, 5), target(4, 5, kind="unit"))),
    HalfCase("mse_loss-none", fn("mse_loss", reduction="none"), (x(4, 5), x(4, 5))),
    HalfCase("l1_loss-sum", fn("l1_loss", reduction="sum"), (x(4, 5), x(4, 5))),
    HalfCase("pdist", fn("pdist"), (x(5, 3),), ulps=1, why=SUMS, torch_refuses=True),
    HalfCase("max_pool2d-indices", lambda lib, nn, F, m, a: F.max_pool2d(a, 2, return_indices=True)[0], (x(1, 2, 4, 4, kind="distinct"),)),
    HalfCase("avg_pool1d", fn("avg_pool1d", 3, stride=2, padding=1), (x(2, 3, 8),)),
    HalfCase("lp_pool2d", fn("lp_pool2d", 2.0, 2), (x(1, 2, 4, 4, kind="positive"),), ulps=1, why=ROUNDED_STEPS),
    HalfCase("adaptive_avg_pool1d", fn("adaptive_avg_pool1d", 3), (x(2, 3, 7),), ulps=1, why=SUMS),
    HalfCase("adaptive_max_pool1d", fn("adaptive_max_pool1d", 3), (x(2, 3, 7, kind="distinct"),)),
    HalfCase("pixel_unshuffle", fn("pixel_unshuffle", 2), (x(1, 2, 4, 4),)),
    HalfCase("pad-circular", fn("pad", (1, 2, 1, 1), mode="circular"), (x(1, 2, 3, 4),)),
    HalfCase("embedding_bag-sum", lambda lib, nn, F, m, w, i: F.embedding_bag(i, w, mode="sum"), (x(10, 4), labels(3, 4, high=10))),
    HalfCase("norm-p1", lambda lib, nn, F, m, a: a.norm(p=1, dim=1), (x(3, 8, kind="away"),)),
    HalfCase("vector_norm", lambda lib, nn, F, m, a: lib.linalg.vector_norm(a, ord=3, dim=-1), (x(3, 8, kind="away"),), ulps=1, why=ROUNDED_STEPS),
    HalfCase("var_mean", lambda lib, nn, F, m, a: lib.stack(lib.var_mean(a, dim=1), 0), (x(3, 8),)),
    HalfCase("diff-outer", lambda lib, nn, F, m, a, b: lib.outer(a.diff(), b), (x(6), x(4))),
    HalfCase("kron-trace", lambda lib, nn, F, m, a, b: lib.kron(a, b) * a.trace(), (x(2, 2), x(2, 3))),
    HalfCase("median", lambda lib, nn, F, m, a: a.median(dim=1)[0], (x(3, 7, kind="distinct"),)),
    HalfCase("erfinv", lambda lib, nn, F, m, a: lib.special.erfinv(a), (x(3, 8, kind="unit"),)),
    HalfCase("logit-xlogy", lambda lib, nn, F, m, a: lib.special.logit(a) + lib.special.xlogy(a, a + 1), (x(3, 8, kind="unit"),), ulps=1, why=ROUNDED_STEPS),
    HalfCase("lgamma", lambda lib, nn, F, m, a: a.lgamma(), (x(3, 8, kind="away"),), ulps=1,
             why="kiln's series runs in float32, its reflection for x < 1/2 in half steps (torch: all in float32)"),
    HalfCase("digamma", lambda lib, nn, F, m, a: a.digamma(), (x(3, 8, kind="positive"),)),
    HalfCase("erfc-i0", lambda lib, nn, F, m, a: a.erfc() * lib.special.i0(a), (x(3, 8),), ulps=1, why=ROUNDED_STEPS),
    HalfCase("polygamma-mvlgamma", lambda lib, nn, F, m, a: a.polygamma(1) + (a + 1).mvlgamma(2), (x(3, 8, kind="positive"),), ulps=1, why=ROUNDED_STEPS),
    HalfCase("clamp-tensors", lambda lib, nn, F, m, a, lo: a.clamp(min=lo, max=lo + 1), (x(3, 8), x(3, 8))),
    HalfCase("cumsum-logcumsumexp", lambda lib, nn, F, m, a: a.logcumsumexp(1) + a.cummax(1)[0], (x(3, 8),), ulps=1, why=ROUNDED_STEPS),
    layer(lambda nn: nn.Transformer(8, 2, 1, 1, 16, dropout=0.0), x(4, 2, 8), x(3, 2, 8), id="Transformer", ulps=2, grad_ulps=6,
          why=SUMS + ", through two stacks; an attention weight's bfloat16 gradient is 3 ulps from the float64 one in "
          "kiln and 3 the other way in torch"),
    layer(lambda nn: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), x(1, 2, 3, 3), id="Upsample-bilinear-align"),
    layer(lambda nn: nn.ReflectionPad2d((1, 0, 2, 1)), x(1, 2, 3, 4), id="ReflectionPad2d"),
    layer(lambda nn: nn.ReplicationPad1d(2), x(1, 2, 4), id="ReplicationPad1d"),
    layer(lambda nn: nn.Softmax2d(), x(1, 3, 2, 2), id="Softmax2d"),
    layer(lambda nn: nn.CosineSimilarity(dim=1), x(3, 5), x(3, 5), id="CosineSimilarity"),
    layer(lambda nn: nn.Fold((3, 3), 2), x(1, 8, 4), id="Fold", ulps=1, why=SUMS),
    layer(lambda nn: nn.LPPool1d(2, 2), x(1, 2, 6, kind="positive"), id="LPPool1d", ulps=1, why=ROUNDED_STEPS),
    layer(lambda nn: nn.GELU(approximate="tanh"), x(3, 8), id="GELU-tanh"),
    HalfCase("LSTM-proj", lambda lib, nn, F, m, s: first(m(s)), (x(2, 5, 4),), module=lambda nn: nn.LSTM(4, 3, proj_size=2, batch_first=True),
             ulps=2, why=SUMS + ", through 5 steps"),
    layer(lambda nn: nn.GRUCell(4, 3), x(2, 4), id="GRUCell", ulps=1, why=SUMS),
    layer(lambda nn: nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), x(1, 2, 4, 4), id="Conv2d-reflect", ulps=1, why=SUMS),
    layer(lambda nn: nn.ConvTranspose3d(2, 2, 2), x(1, 2, 2, 2, 2), id="ConvTranspose3d", ulps=1, why=SUMS),
]

LAYERS_MORE = [
    layer(lambda nn: nn.BatchNorm3d(2), x(2, 2, 2, 3, 3), id="BatchNorm3d", ulps=1, grad_ulps=4, why=SUMS + "; its weight gradient sums 36 products of half values"),
    layer(lambda nn: nn.InstanceNorm1d(3), x(2, 3, 6), id="InstanceNorm1d", ulps=1, why=SUMS),
    layer(lambda nn: nn.LayerNorm(8, bias=False), x(3, 8), id="LayerNorm-no-bias"),
    layer(lambda nn: nn.Conv1d(2, 3, 3, padding="same", dilation=2), x(2, 2, 7), id="Conv1d-same-dilated", ulps=1, why=SUMS),
    layer(lambda nn: nn.AdaptiveAvgPool3d(2), x(1, 2, 4, 3, 4), id="AdaptiveAvgPool3d", ulps=1, why=SUMS),
    layer(lambda nn: nn.AdaptiveMaxPool3d(2), x(1, 2, 4, 4, 4, kind="distinct"), id="AdaptiveMaxPool3d"),
    layer(lambda nn: nn.Unflatten(1, (2, 4)), x(3, 8), id="Unflatten"),
    layer(lambda nn: nn.SiLU(), x(3, 8), id="SiLU"),
    layer(lambda nn: nn.Hardtanh(-0.5, 0.5), x(3, 8, kind="away"), id="Hardtanh"),
    layer(lambda nn: nn.Softplus(beta=2), x(3, 8), id="Softplus"),
    layer(lambda nn: nn.ChannelShuffle(2), x(1, 4, 2, 2), id="ChannelShuffle"),
    layer(lambda nn: nn.ZeroPad2d((1, 2, 0, 1)), x(1, 2, 3, 3), id="ZeroPad2d"),
    layer(lambda nn: nn.ConstantPad1d(2, 0.5), x(1, 2, 3), id="ConstantPad1d"),
    layer(lambda nn: nn.CircularPad2d(1), x(1, 2, 3, 3), id="CircularPad2d"),
    layer(lambda nn: nn.Identity(), x(2, 3), id="Identity"),
    HalfCase("LSTM-bidirectional", lambda lib, nn, F, m, s: first(m(s)), (x(2, 5, 4),), module=lambda nn: nn.LSTM(4, 3, bidirectional=True, batch_first=True),
             ulps=2, why=SUMS + ", through 5 steps"),
    HalfCase("RNN-relu-2-layers", lambda lib, nn, F, m, s: first(m(s)), (x(5, 2, 4),), module=lambda nn: nn.RNN(4, 3, num_layers=2, nonlinearity="relu"),
             ulps=1, why=SUMS),
    HalfCase("TransformerEncoder-norm", lambda lib, nn, F, m, s: m(s), (x(2, 5, 8),),
             module=lambda nn: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True), 2, norm=nn.LayerNorm(8)),
             ulps=2, grad_ulps=4, why=SUMS + ", through two layers"),
    HalfCase("MultiheadAttention-weights", lambda lib, nn, F, m, q, k: _output_times_weights(m(q, k, k, need_weights=True)), (x(2, 4, 8), x(2, 3, 8)),
             module=lambda nn: nn.MultiheadAttention(8, 2, batch_first=True), ulps=1, why=SUMS),
    HalfCase("sdpa-mask", lambda lib, nn, F, m, q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=lib.tensor([[True, False, True], [True, True, False]])),
             (x(2, 2, 4), x(2, 3, 4), x(2, 3, 4)), ulps=1, why=SUMS),
    HalfCase("max_unpool2d", lambda lib, nn, F, m, a: F.max_unpool2d(*F.max_pool2d(a, 2, return_indices=True), 2), (x(1, 2, 4, 4, kind="distinct"),)),
    HalfCase("dropout3d-p0", fn("dropout3d", 0.0), (x(1, 2, 2, 2, 2),)),
    HalfCase("multilabel_margin_loss", fn("multilabel_margin_loss"), (x(3, 4), labels(3, 4, high=4)), torch_refuses=True),
    HalfCase("triplet_margin_with_distance_loss", fn("triplet_margin_with_distance_loss"), (x(4, 5), x(4, 5), x(4, 5)), ulps=1, why=SUMS),
    HalfCase("cdist", top("cdist"), (x(4, 3), x(5, 3)), ulps=1, why=SUMS, torch_refuses=True),
    HalfCase("ctc_loss", lambda lib, nn, F, m, a, t: F.ctc_loss(F.log_softmax(a, 2), t + 1, (6, 5), (2, 2)), (x(6, 2, 4), Input((2, 2), "labels", 3)),
             ulps=1, why=SUMS, torch_refuses=True),
    HalfCase("embedding_bag-per_sample_weights", lambda lib, nn, F, m, w, i, p: F.embedding_bag(i, w, mode="sum", per_sample_weights=p),
             (x(10, 3), labels(2, 3, high=10), x(2, 3)), ulps=1, why=SUMS),
    HalfCase("grid_sample-nearest-border", fn("grid_sample", mode="nearest", padding_mode="border", align_corners=True),
             (x(1, 2, 4, 4), x(1, 3, 3, 2, kind="unit")), grad=False),
]

LARGE = [  # float16 overflows in the squares: torch's kernels compute these in float32, so must kiln
    HalfCase("norm-large", method("norm"), (x(3, 40, kind="large"),)),
    HalfCase("norm-p3-large", method("norm", p=3, dim=1), (x(3, 8, kind="large"),), torch_grad_overflows=True),
    HalfCase("vector_norm-large", lambda lib, nn, F, m, a: lib.linalg.vector_norm(a, dim=-1), (x(3, 8, kind="large"),)),
    HalfCase("std-large", method("std", dim=1), (x(3, 8, kind="large"),)),
    HalfCase("normalize-large", fn("normalize", dim=1), (x(3, 8, kind="large"),)),
    HalfCase("pairwise_distance-large", fn("pairwise_distance"), (x(3, 8, kind="large"), x(3, 8, kind="large"))),
    HalfCase("asinh-acosh-large", lambda lib, nn, F, m, a: a.asinh() + a.abs().acosh(), (x(3, 8, kind="large"),), torch_grad_overflows=True),
    HalfCase("layer_norm-large", fn("layer_norm", (8,)), (x(3, 8, kind="large"),)),
    HalfCase("rms_norm-large", fn("rms_norm", (8,)), (x(3, 8, kind="large"),)),
    HalfCase("group_norm-large", fn("group_norm", 2), (x(2, 4, 3, kind="large"),), ulps=1, why=SUMS),
    HalfCase("batch_norm-large", lambda lib, nn, F, m, a: F.batch_norm(a, None, None, training=True), (x(8, 3, kind="large"),), ulps=1, why=SUMS),
    HalfCase("softmax-large", fn("softmax", dim=-1), (x(3, 8, kind="large"),)),
    HalfCase("logsumexp-large", method("logsumexp", 1), (x(3, 8, kind="large"),)),
    layer(lambda nn: nn.Bilinear(4, 3, 2), x(5, 4, kind="large"), x(5, 3), id="Bilinear-large", ulps=1, why=SUMS),
    layer(lambda nn: nn.LocalResponseNorm(3), x(2, 5, 3, 3, kind="large"), id="LocalResponseNorm-large", ulps=1, why=SUMS, torch_refuses=True),
    HalfCase("embedding_bag-per_sample_weights-large", lambda lib, nn, F, m, w, i, p: F.embedding_bag(i, w, mode="sum", per_sample_weights=p),
             (x(10, 3, kind="large"), labels(2, 3, high=10), x(2, 3, kind="large")), ulps=1, why=SUMS),
    HalfCase("triplet_margin_loss-large", fn("triplet_margin_loss", margin=50.0), (x(4, 5, kind="large"), x(4, 5, kind="large"), x(4, 5, kind="large"))),
]

CASES: list[HalfCase] = ACTIVATIONS + LOSSES + TENSOR_OPS + LAYERS + MORE + LAYERS_MORE + LARGE
