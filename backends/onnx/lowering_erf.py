"""ONNX emitters for ``tensor.erf`` and ``nn.gelu``: the native Erf and Gelu, and in float64 Cephes' ``erf`` from
arithmetic, ``Exp`` and ``Where``, since onnxruntime's Erf (which its Gelu expands to) runs in float32 only.

```python
kiln.export_onnx(vit.double(), [kiln.TensorSpec(("N", 1, 8, 8), "float64")], "vit.onnx")   # runs in onnxruntime
```

``erf x = x T(x^2) / U(x^2)`` for ``|x| <= 1``; beyond, ``sign(x) (1 - erfc|x|)`` with
``erfc a = exp(-a^2) P(a) / Q(a)``, ``a`` clipped at 8 where ``erf`` is 1 in float64. Within 2 ulps of ``math.erf``;
+-inf give +-1 and NaN NaN. In float64 ``gelu x = x (1 + erf(x / sqrt 2)) / 2`` and its ``approximate="tanh"`` form
are written out too: onnxruntime runs a float64 Gelu of either kind to float32's precision only.

``tensor.sigmoid`` is ``1 / (1 + exp(-x))`` from ``Exp`` in every dtype: onnxruntime's Sigmoid gives 0 from -20 on in
float32 (the true 2e-9 there; 2e-4 relative error at -10) and from -40 on in float64 (a 1e-3 error at -30).
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.onnx.lowering import ONNX
from kiln.backends.onnx.lowering_nn import _horner
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType

ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3, 7.00332514112805075473e3,
         5.55923013010394962768e4)
ERF_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3, 2.26290000613890934246e4,
         4.92673942608635921086e4)
"""Cephes' ``erf`` on ``|x| <= 1``: ``x T(z) / U(z)``, ``z = x^2``; ``U`` is monic."""
ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0, 4.86371970985681366614e1,
          1.96520832956077098242e2, 5.26445194995477358631e2, 9.34528527171957607540e2, 1.02755188689515710272e3,
          5.57535335369399327526e2)
ERFC_Q = (1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2, 9.75708501743205489753e2,
          1.82390916687909736289e3, 2.24633760818710981792e3, 1.65666309194161350182e3, 5.57535340817727675546e2)
"""Cephes' ``erfc`` on ``1 <= a < 8``: ``exp(-a^2) P(a) / Q(a)``; ``Q`` is monic."""


@ONNX.register("tensor.erf")
def erf(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [erf_float64(ctx, inputs[0]) if op.result.type.dtype is DType.f64 else ctx.node("Erf", inputs)]


@ONNX.register("tensor.sigmoid")
def sigmoid(ctx, op: Op, inputs: list[str]) -> list[str]:
    # 1 / (1 + exp(-x)): a few ulps relative to the result in both tails; exp overflows to inf far left (the result is
    # 0, as PyTorch's); NaN stays NaN
    one = ctx.constant(np.array(1.0, op.result.type.dtype.numpy))
    return [ctx.node("Reciprocal", [ctx.node("Add", [one, ctx.node("Exp", [ctx.node("Neg", inputs)])])])]


@ONNX.register("nn.gelu")
def gelu(ctx, op: Op, inputs: list[str]) -> list[str]:
    if op.result.type.dtype is not DType.f64:
        return [ctx.node("Gelu", inputs, approximate=op.attrs["approximate"])]
    x, half = inputs[0], ctx.constant(np.array(0.5))

    def scaled(value: str, factor: float) -> str:
        return ctx.node("Mul", [value, ctx.constant(np.array(factor))])

    if op.attrs["approximate"] == "tanh":  # tanh(sqrt(2 / pi) (x + 0.044715 x^3))
        cubic = ctx.node("Add", [x, scaled(ctx.node("Mul", [x, ctx.node("Mul", [x, x])]), 0.044715)])
        curve = ctx.node("Tanh", [scaled(cubic, math.sqrt(2 / math.pi))])
    else:
        curve = erf_float64(ctx, scaled(x, math.sqrt(0.5)))
    return [ctx.node("Mul", [x, ctx.node("Add", [half, ctx.node("Mul", [half, curve])])])]


def erf_float64(ctx, x: str) -> str:
    """Cephes' float64 ``erf`` of ``x`` (see the module docstring): both branches computed, one selected by ``Where``."""
    square = ctx.node("Mul", [x, x])
    small = ctx.node("Div", [ctx.node("Mul", [x, _horner(ctx, square, ERF_T, monic=False)]), _horner(ctx, square, ERF_U, monic=True)])
    magnitude = ctx.node("Min", [ctx.node("Abs", [x]), ctx.constant(np.array(8.0))])
    decay = ctx.node("Exp", [ctx.node("Neg", [ctx.node("Mul", [magnitude, magnitude])])])
    erfc = ctx.node("Div", [ctx.node("Mul", [decay, _horner(ctx, magnitude, ERFC_P, monic=False)]), _horner(ctx, magnitude, ERFC_Q, monic=True)])
    large = ctx.node("Mul", [ctx.node("Sign", [x]), ctx.node("Sub", [ctx.constant(np.array(1.0)), erfc])])
    return ctx.node("Where", [ctx.node("LessOrEqual", [ctx.node("Abs", [x]), ctx.constant(np.array(1.0))]), small, large])
