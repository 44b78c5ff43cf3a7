"""The PyTorch-loop example trains in eager mode, and its compiled model gives the eager model's logits; with its
loop body ``@kiln.compile``d it trains the same, as one graph per step."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import pytorch_loop_digits  # noqa: E402


def test_the_unchanged_pytorch_loop_learns_the_digits():
    result = pytorch_loop_digits.train(epochs=3, verbose=False)
    assert result["final_loss"] < 0.3 * result["first_loss"]
    assert result["accuracy"] > 0.93
    assert result["eager_vs_compiled"] < 1e-5


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_compiled_loop_body_trains_as_the_eager_loop(optimizer):
    eager = pytorch_loop_digits.train(epochs=2, optimizer_name=optimizer, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not run eagerly
        compiled = pytorch_loop_digits.train(epochs=2, optimizer_name=optimizer, verbose=False, compile_step=True)
    assert abs(compiled["final_loss"] - eager["final_loss"]) < 1e-4 * eager["final_loss"]
    assert abs(compiled["accuracy"] - eager["accuracy"]) <= 1 / 360
