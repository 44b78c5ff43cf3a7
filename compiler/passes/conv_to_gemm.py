"""conv-to-gemm: convolutions and their weight gradients become GEMMs over shared im2col columns.

A training step reads every window of a convolution's input ``x`` twice: in the
forward convolution and again, against the output's cotangent, for the
weight's gradient. Written as GEMMs over ``tensor.conv2d_columns(x)``, the
windows are copied once (``cse`` merges the two columns ops), and the
convolution's output is a transposed view that its bias and activation read
in place (channels-last for one group, output channels outermost for more).
The weight's reshapes are of a parameter, a few KB.

```
%y  = "tensor.conv2d"(%x, %w)                        : (tensor<Nx16x4x4xf32>, tensor<32x16x3x3xf32>) -> tensor<Nx32x4x4xf32>
%dw = "tensor.conv2d_weight_grad"(%x, %g)            : (tensor<Nx16x4x4xf32>, tensor<Nx32x4x4xf32>) -> tensor<32x16x3x3xf32>
  ->  %c  = "tensor.conv2d_columns"(%x) {kernel = [3, 3]}  : (tensor<Nx16x4x4xf32>) -> tensor<1x16*Nx144xf32>
      %wm = %w as (groups, KH KW C/g, O/g)                : reshape, transpose, reshape -> tensor<1x144x32xf32>
      %y  = (%c @ %wm) as (N, OH, OW, O), transposed      : tensor<1x16*Nx32xf32> -> tensor<Nx32x4x4xf32>
      %dw = (%g as (groups, O/g, N OH OW)) @ %c, as OIHW  : tensor<1x32x144xf32> -> tensor<32x16x3x3xf32>
```

For backends whose convolution is im2col and a GEMM anyway (NumPy, CuPy).
``conv2d_input_grad`` (a scatter of the columns' gradient) stays a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import dim_product
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses

GEOMETRY = ("stride", "padding", "dilation", "groups")


@register_pass
@dataclass(frozen=True)
class ConvToGemm(Pass):
    name = "conv-to-gemm"

    def run(self, graph: Graph) -> bool:
        targets = [op for op in graph.ops if op.name in REWRITES]
        for op in targets:
            result = REWRITES[op.name](Builder(graph, insert_before=op, location=op.location), op)
            result.name_hint = op.result.name_hint
            replace_uses(graph, op.result, result)
            graph.erase(op)
        return bool(targets)


def columns(b: Builder, x: Value, kernel: tuple[int, int], op: Op) -> Value:
    return b.conv2d_columns(x, kernel=tuple(kernel), **{key: op.attrs[key] for key in GEOMETRY})


def weight_matrices(b: Builder, weight: Value, groups: int) -> Value:
    """``(groups, KH KW C/g, O/g)`` of an ``(O, C/g, KH, KW)`` weight, rows in the columns' ``(i, j, c)`` order."""
    o, c, kh, kw = weight.type.shape
    grouped = b.transpose(b.reshape(weight, shape=(groups, o // groups, c, kh, kw)), perm=(0, 3, 4, 2, 1))
    return b.reshape(grouped, shape=(groups, kh * kw * c, o // groups))


def conv2d_as_gemm(b: Builder, op: Op) -> Value:
    if op.attrs["groups"] == 1:
        return channels_last_conv2d(b, op)
    # (groups, O/g, KH KW C/g) @ (groups, KH KW C/g, N OH OW): output channels outermost, so the NCHW view below
    # reads runs of OH OW
    x, weight = op.operands
    n, o, oh, ow = op.result.type.shape
    weights = b.transpose(weight_matrices(b, weight, op.attrs["groups"]), perm=(0, 2, 1))
    product = b.matmul(weights, b.transpose(columns(b, x, weight.type.shape[2:], op), perm=(0, 2, 1)))
    return b.transpose(b.reshape(product, shape=(o, n, oh, ow)), perm=(1, 0, 2, 3))


def channels_last_conv2d(b: Builder, op: Op) -> Value:
    # (1, N OH OW, KH KW C) @ (1, KH KW C, O): OpenBLAS runs this orientation faster at a CNN's few channels and
    # long N OH OW (W5's second convolution: 503 -> 318 us); the NCHW view reads the channels strided, which costs
    # its bias and activation little
    x, weight = op.operands
    n, o, oh, ow = op.result.type.shape
    product = b.matmul(columns(b, x, weight.type.shape[2:], op), weight_matrices(b, weight, 1))
    return b.transpose(b.reshape(product, shape=(n, oh, ow, o)), perm=(0, 3, 1, 2))


def weight_grad_as_gemm(b: Builder, op: Op) -> Value:
    # (groups, O/g, N OH OW) @ (groups, N OH OW, KH KW C/g), then the rows' (i, j, c) back to OIHW
    x, g = op.operands
    o, c, kh, kw = op.attrs["weight_shape"]
    groups, (n, _, oh, ow) = op.attrs["groups"], g.type.shape
    rows = b.reshape(b.transpose(g, perm=(1, 0, 2, 3)), shape=(groups, o // groups, dim_product((n, oh, ow))))
    product = b.matmul(rows, columns(b, x, (kh, kw), op))
    return b.transpose(b.reshape(product, shape=(o, kh, kw, c)), perm=(0, 3, 1, 2))


REWRITES: dict[str, Callable[[Builder, Op], Value]] = {
    "tensor.conv2d": conv2d_as_gemm,
    "tensor.conv2d_weight_grad": weight_grad_as_gemm,
}
