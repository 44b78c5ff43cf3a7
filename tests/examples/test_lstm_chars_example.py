"""The character LSTM example: it trains below the unigram entropy, and its sampler's one-step compiled function,
which carries ``(h, c)`` from character to character, computes what the whole network computes over the text."""

from __future__ import annotations

import os
import sys

import numpy as np

import kiln

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import lstm_chars  # noqa: E402


def test_example_trains_below_the_unigram_entropy():
    result = lstm_chars.train(steps=150, batch_size=16, context=16, hidden=48, layers=1, lr=1e-2, characters=40_000, verbose=False)
    assert result["final_loss"] < result["first_loss"] - 1.0
    assert result["held_out_loss"] < result["unigram_entropy"] - 0.3


def test_stepping_with_the_carried_state_equals_the_whole_sequence():
    kiln.manual_seed(0)
    model = lstm_chars.CharLSTM(13, embedding=6, hidden=10, layers=2).eval()
    tokens = np.random.default_rng(0).integers(0, 13, (1, 9))
    whole = kiln.compile(model)(tokens)
    step = kiln.compile(lambda t, h, c: model(t, (h, c)), batch_dim=(0, 1, 1))
    h = c = np.zeros((2, 1, 10), np.float32)
    logits, h, c = step(tokens[:, :4], h, c)  # a prompt, then one character at a time
    stepped = [logits]
    for position in range(4, 9):
        logits, h, c = step(tokens[:, position : position + 1], h, c)
        stepped.append(logits)
    np.testing.assert_allclose(np.concatenate(stepped, axis=1), whole, rtol=1e-5, atol=1e-6)
    assert len(step.variants) == 2  # the prompt's length and one step


def test_sample_decodes_the_requested_number_of_draws_and_restores_training_mode():
    tokenizer, ids = lstm_chars.char_corpus(5_000)
    kiln.manual_seed(1)
    model = lstm_chars.CharLSTM(tokenizer.vocab_size, hidden=16, layers=1)
    text = lstm_chars.sample(model, tokenizer, ids[:12], length=25)
    assert 0 < len(text) <= 25 and model.training  # an untrained model also draws the tokenizer's special ids, decoded to ""
