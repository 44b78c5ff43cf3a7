"""The ONNX import table: one short handler per ONNX op type.

A handler gets the import context, the node and its inputs (each a kiln
``Value``, a known NumPy array or a ``ShapeValue``) and returns its outputs.

The handlers live by operator family, each file registering its own (``onnx_op``):
elementwise (``import_rules_elementwise.py``), contractions and reductions
(``import_rules_reduce.py``), shape and movement (``import_rules_shape.py``),
indexing (``import_rules_indexing.py``), the neural-network composites
(``import_rules_nn.py``) and the window ops (``import_rules_windows.py``, imported
by the importer); what they share is in ``import_rules_common.py``. This module
imports the families and re-exports their public names.
"""

from __future__ import annotations

from kiln.backends.onnx.import_rules_common import optional_input, refuse, text_attr
from kiln.backends.onnx.import_rules_elementwise import (
    cast, clip, constant, div, gelu, identity, logical_not, mean, power, reciprocal, where,
)
from kiln.backends.onnx.import_rules_reduce import argmax, cumsum, gemm, matmul, reduce_prod
from kiln.backends.onnx.import_rules_shape import (
    PAD_MODES, concat, expand, flatten, pad, reshape, shape, slice_, squeeze, transpose, trilu, unsqueeze,
)
from kiln.backends.onnx.import_rules_indexing import SCATTER_REDUCTIONS, gather, one_hot, scatter_elements
from kiln.backends.onnx.import_rules_nn import layer_normalization, softmax, softmax_cross_entropy

__all__ = [
    "optional_input", "refuse", "text_attr", "cast", "clip", "constant", "div", "gelu", "identity", "logical_not",
    "mean", "power", "reciprocal", "where", "argmax", "cumsum", "gemm", "matmul", "reduce_prod", "PAD_MODES", "concat",
    "expand", "flatten", "pad", "reshape", "shape", "slice_", "squeeze", "transpose", "trilu", "unsqueeze",
    "SCATTER_REDUCTIONS", "gather", "one_hot", "scatter_elements", "layer_normalization", "softmax",
    "softmax_cross_entropy",
]
