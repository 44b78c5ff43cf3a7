"""ONNX emitters of the ``linalg`` dialect: ``Det`` for the determinants, a clear refusal for the rest.

ONNX's only linear-algebra op is ``Det`` (opset 11; onnxruntime runs it in float32 only). ``linalg.det`` is
``Det``, ``det_sign`` its ``Sign`` and ``logabsdet`` ``Log(Abs(Det))`` (which over- or underflows where the
determinant leaves float range, unlike LAPACK's slogdet). ``inv``, ``solve``, ``cholesky`` and
``solve_triangular`` (and the factorizations: QR, LU, ``matrix_exp``) have no ONNX op: exporting one raises an
error naming it, as does a float64 determinant.
"""

from __future__ import annotations

from kiln.backends.onnx.lowering import ONNX
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType

NO_ONNX_OP = ("linalg.inv", "linalg.solve", "linalg.cholesky", "linalg.solve_triangular")
NO_ONNX_OP += ("linalg.qr_q", "linalg.qr_r", "linalg.lu_factor", "linalg.lu_pivots", "linalg.pivots_to_permutation",
               "linalg.matrix_exp", "linalg.cholesky_info", "linalg.checked")  # compiler/ops/linalg_factor.py
NO_ONNX_OP += ("linalg.eigh", "linalg.svd")  # the spectral ops (compiler/ops/linalg_spectral.py): no ONNX op either
NO_ONNX_OP += ("linalg.ldl_factor", "linalg.ldl_pivots", "linalg.ldl_solve")  # compiler/ops/linalg_ldl.py


def _where(op: Op) -> str:
    return f" (from {op.location})" if op.location else ""


def _det(ctx, op: Op, inputs: list[str]) -> str:
    if op.operands[0].type.dtype is not DType.f32:
        raise LoweringError(f"ONNX export: {op.name} on {op.operands[0].type}{_where(op)}: onnxruntime's Det runs in "
                            "float32 only; export the model in float32 (or compute the determinant outside it)")
    return ctx.node("Det", inputs)


ONNX.register("linalg.det")(lambda ctx, op, inputs: [_det(ctx, op, inputs)])
ONNX.register("linalg.det_sign")(lambda ctx, op, inputs: [ctx.node("Sign", [_det(ctx, op, inputs)])])
ONNX.register("linalg.logabsdet")(lambda ctx, op, inputs: [ctx.node("Log", [ctx.node("Abs", [_det(ctx, op, inputs)])])])


def _refuse(ctx, op: Op, inputs: list[str]) -> list[str]:
    raise LoweringError(f"ONNX export: {op.name}{_where(op)} has no ONNX operator (ONNX's only linear-algebra op is "
                        "Det); run this part of the model with the NumPy or CuPy backend, or export a model without it")


for _name in NO_ONNX_OP:
    ONNX.register(_name)(_refuse)
