"""VJP rule of ``tensor.reduce_prod`` (``compiler/ops/reduce_prod.py``), in the one ``VJP_RULES`` table.

d prod / d x_i is the product of the other elements of x_i's group. Dividing the
product by x_i gives it only where no element is zero, so the rule counts zeros:
with none, ``prod(x) / x_i``; with exactly one, only that zero's gradient is
nonzero (the product of the rest); with two or more, every gradient is zero.
The rule is exact to first order everywhere; differentiated again it is exact
away from zeros (the zero count is piecewise constant), like ``reduce_max``'s.
"""

from __future__ import annotations

from kiln.compiler.autodiff.rules import Cotangents, _expand_reduced, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


@vjp_rule("tensor.reduce_prod")
def reduce_prod_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # dx_i = g * prod_{j != i} x_j, from the product of the nonzero elements and the zero count
    x, axes = op.operands[0], op.attrs["axes"]
    zero, one = b.scalar_like(0.0, x), b.scalar_like(1.0, x)
    nonzero = b.not_equal(x, zero)
    product = b.reduce_prod(b.where(nonzero, x, one), axes=axes, keepdims=True)  # of the nonzero elements
    zeros = b.reduce_sum(b.where(nonzero, zero, one), axes=axes, keepdims=True)
    others = b.where(nonzero, b.div(product, b.where(nonzero, x, one)), product)  # of the nonzero elements but x_i
    others_nonzero = b.equal(zeros, b.where(nonzero, zero, one))  # every zero of the group is x_i itself
    return (b.mul(_expand_reduced(b, g, op), b.where(others_nonzero, others, zero)),)
