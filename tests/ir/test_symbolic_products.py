"""Symbolic dims multiply: reshape(-1, V) over a symbolic batch gives a product dim like 5*N."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import TensorType, parse
from kiln.compiler.ir.types import dim_product, dim_value
from kiln.compiler.ops.tensor import resolve_reshape
from oracles import require


def test_products_are_canonical():
    assert dim_product(("N", 5)) == "5*N"
    assert dim_product(("T", "N", 2, 3)) == "6*N*T"
    assert dim_product((4, 1)) == 4 and dim_product(("N", 0)) == 0
    assert dim_value("6*N*T", {"N": 2, "T": 3}) == 36
    TensorType(("5*N", 11), "f32")
    with pytest.raises(ShapeError, match="canonical"):
        TensorType(("N*5", 11), "f32")


@pytest.mark.parametrize("source, target, expected", [
    (("N", 5, 11), (-1, 11), ("5*N", 11)),
    (("5*N", 11), ("N", 5, 11), ("N", 5, 11)),
    (("N", "T", 4), (-1,), ("4*N*T",)),
    (("N", 6), ("N", 2, -1), ("N", 2, 3)),
])
def test_reshape_resolves_products(source, target, expected):
    assert resolve_reshape(source, target) == expected


def test_reshape_errors_still_say_why():
    with pytest.raises(ShapeError, match="symbol T is not a dim of the source"):
        resolve_reshape(("N", 4), ("T", -1))
    with pytest.raises(ShapeError, match=r"shape '\[N, 5\]' is invalid for input of size 4\*N"):
        resolve_reshape(("N", 4), ("N", 5))


def test_product_dims_print_and_parse_back():
    text = (
        'func @f(%x: tensor<Nx5x11xf32>) {\n'
        '  %y = "tensor.reshape"(%x) {shape = ["5*N", 11]} : (tensor<Nx5x11xf32>) -> tensor<5*Nx11xf32>\n'
        '  return %y : tensor<5*Nx11xf32>\n'
        '}\n'
    )
    assert str(parse(text)) == text


def test_flattened_language_model_loss_trains_and_matches_the_pytorch_layout():
    require("onnxruntime")

    def flat(logits, target):
        return F.cross_entropy(logits.reshape(-1, 11), target.reshape(-1))

    def channels_first(logits, target):
        return F.cross_entropy(logits.transpose(1, 2), target)

    losses = []
    for loss_fn in (flat, channels_first):
        kiln.manual_seed(0)
        model = nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 11))
        step = kiln.compile_train_step(model, loss_fn, kiln.optim.SGD(model.parameters(), lr=0.5))
        rng = np.random.default_rng(0)
        batches = [rng.integers(0, 11, (n, 5)) for n in (4, 4, 3)]  # the short last batch reuses the compile
        losses.append([step(tokens, (tokens + 1) % 11) for tokens in batches])
        assert step.compile_count == 1
        assert kiln.parity(step, [batches[0], (batches[0] + 1) % 11]).ok  # onnxruntime computes 5*N too
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
