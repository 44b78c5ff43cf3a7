"""The CNN example reaches >= 97% held-out accuracy on the bundled digits; the BERT example's masked-token loss falls."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import cnn_digits  # noqa: E402


def test_cnn_reaches_97_percent_held_out():
    assert cnn_digits.train(epochs=6, verbose=False) >= 0.97


def test_bert_masked_token_loss_falls():
    import bert_tiny

    result = bert_tiny.train(steps=30, batch_size=16, length=24, d_model=32, heads=2, layers=1, lr=1e-2, lines=500, verbose=False)
    assert result["final_loss"] < result["first_loss"] - 1.0
