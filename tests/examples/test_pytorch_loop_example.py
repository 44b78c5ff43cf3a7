"""The PyTorch-loop example trains in eager mode, and its compiled model gives the eager model's logits."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import pytorch_loop_digits  # noqa: E402


def test_the_unchanged_pytorch_loop_learns_the_digits():
    result = pytorch_loop_digits.train(epochs=3, verbose=False)
    assert result["final_loss"] < 0.3 * result["first_loss"]
    assert result["accuracy"] > 0.93
    assert result["eager_vs_compiled"] < 1e-5
