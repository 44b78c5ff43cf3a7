"""Porting probe: MLP-Mixer (timm's) and gMLP (the Conv1d spatial gating unit of the popular port, lucidrains' einsum
one with heads and a causal mask) from ``e2e/mixer_program.py``, run once in each library from kiln's initial weights.

Trained with AdamW, ``clip_grad_norm_`` and label-smoothed cross entropy (timm's recipe in small); checked against torch
2.13 in float64 to 1e-10 (first logits, first gradients, losses, the state after 3 steps), eagerly and with the whole
step one ``kiln.compile(fullgraph=True)`` graph, and as ``kiln.compile(model)`` before the eager loop; float32 (how
both train) at float32's level. The token-mixing MLP's ``fc2.bias`` is compared looser (see ``CANCELLED``). A batch of
the wrong size (more patches or tokens than the models were built for) raises where torch raises, with torch's words.

What broke: nothing in the numbers; every variant agreed as first written. The errors for the wrong sequence length
named kiln's lowering (``Conv1d``: 'tensor.conv2d: weight (4, 4, 1, 1) ... does not fit input tensor<2x9x1x12xf32>';
``einsum`` and the Mixer's token ``Linear``: 'tensor.matmul: contraction dims differ'); all three now raise torch's
RuntimeError with its words (``tests/frontend/test_conv_channel_errors_vs_torch.py``,
``test_einsum_size_errors_vs_torch.py``, ``test_linear_shape_errors_vs_torch.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.mixer_program import gmlp, mixer
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, compiled_step_training, gradients,
                                run_in_lockstep, snapshot)
from oracles import require_torch

BATCH, CLASSES, STEPS, TOKENS, SEQ = 3, 5, 3, 7, 6
FLOAT32_LEVEL = dict(rtol=2e-5, atol=2e-6)


def _images(steps=STEPS, seed=0):
    """One batch of images and labels, seen at every step (the loss falls as it is memorised)."""
    rng = np.random.default_rng(seed)
    images, labels = rng.standard_normal((1, BATCH, 3, 8, 8)), rng.integers(0, CLASSES, (1, BATCH))
    return images.repeat(steps, axis=0), labels.repeat(steps, axis=0)


def _sequences(steps=STEPS, seed=0):
    """Sequences counting up from a random start (mod the vocabulary), inputs and next-token targets."""
    starts = np.random.default_rng(seed).integers(0, TOKENS, (steps, BATCH, 1))
    tokens = (starts + np.arange(SEQ + 1)) % TOKENS
    return tokens[..., :-1], tokens[..., 1:]


PROGRAMS = {
    "mixer, timm init": (lambda torch, nn, F: mixer(torch, nn, F), _images),
    "mixer, default init": (lambda torch, nn, F: mixer(torch, nn, F, timm_init=False), _images),
    "gmlp, conv1d sgu": (lambda torch, nn, F: gmlp(torch, nn, F), _images),
    "gmlp, lucidrains sgu": (lambda torch, nn, F: gmlp(torch, nn, F, sgu="lucidrains", heads=2), _images),
    "gmlp, causal tokens": (lambda torch, nn, F: gmlp(torch, nn, F, sgu="lucidrains", num_tokens=TOKENS, seq_len=SEQ,
                                                      heads=2, causal=True), _sequences),
}


def _loss(F, logits, y):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), label_smoothing=0.1)


def _optimizer(torch, model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)


def train_classifier(data, steps=STEPS):
    inputs, targets = data(steps)

    def train(torch, nn, F, model):
        optimizer, record = _optimizer(torch, model), {"losses": [], "norms": []}
        for step in range(steps):
            logits = model(torch.tensor(inputs[step], dtype=None if inputs.dtype == np.int64 else
                                        torch.get_default_dtype()))
            loss = _loss(F, logits, torch.tensor(targets[step]))
            optimizer.zero_grad()
            loss.backward()
            record["norms"].append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
            record.setdefault("logits", array(logits))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        return record

    return train


# A per-token constant that the token-mixing MLP's fc2.bias adds to every channel is removed by each later LayerNorm
# (over the channels): its gradient is rounding noise (<1e-15 in float64) that AdamW turns into steps of up to 1e-10
# in float64 and of lr in float32, differently in each library; the tests check that the gradient is that noise.
CANCELLED = "mlp_tokens.fc2.bias"
LOOSER_FLOAT64 = {CANCELLED: dict(rtol=1e-6, atol=1e-9)}


def _assert_cancelled_gradient_is_noise(record, scale):
    for name, grad in record["grads"].items():
        if CANCELLED in name:
            assert np.abs(grad).max() < scale, (name, grad)


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_mixers_train_as_torch(program, float64_default):
    build, data = PROGRAMS[program]
    ours, theirs = run_in_lockstep(build, train_classifier(data))
    assert_same_records(ours, theirs, looser=LOOSER_FLOAT64)
    assert theirs["losses"][-1] < theirs["losses"][0]
    for record in (ours, theirs):
        _assert_cancelled_gradient_is_noise(record, 1e-14)


@pytest.mark.parametrize("program", ["mixer, timm init", "gmlp, causal tokens"])
def test_mixers_compiled_step_as_torch(program, float64_default):
    build, data = PROGRAMS[program]
    inputs, targets = data(1)

    def batch(torch):
        dtype = None if inputs.dtype == np.int64 else torch.get_default_dtype()
        return torch.tensor(inputs[0], dtype=dtype), torch.tensor(targets[0])

    def loss_of(torch, nn, F, model, x, y):
        return _loss(F, model(x), y)

    ours, theirs = run_in_lockstep(build, compiled_step_training(batch, _optimizer, loss_of))
    assert_same_records(ours, theirs, looser=LOOSER_FLOAT64)


@pytest.mark.parametrize("program", ["gmlp, conv1d sgu", "mixer, default init"])
def test_mixers_compiled_model_as_torch(program, float64_default):
    """``model = kiln.compile(model, fullgraph=True)`` before the eager loop (torch 2.x's ``torch.compile(model)``)."""
    build, data = PROGRAMS[program]
    ours, theirs = run_in_lockstep(build, compiled_module_training(train_classifier(data)))
    assert_same_records(ours, theirs, looser=LOOSER_FLOAT64)


@pytest.mark.parametrize("program", ["mixer, timm init", "gmlp, lucidrains sgu"])
def test_mixers_float32_as_torch(program):
    require_torch()
    build, data = PROGRAMS[program]
    ours, theirs = run_in_lockstep(build, train_classifier(data))
    assert ours["logits"].dtype == np.float32
    assert_same_records(ours, theirs, **FLOAT32_LEVEL, looser={CANCELLED: dict(rtol=0, atol=STEPS * 1e-2)})
    _assert_cancelled_gradient_is_noise(ours, 1e-6)


WRONG_LENGTH = {  # 12x12 images make 9 patches where the models were built for 4; 8 tokens where for 6
    "mixer, timm init": ("mat1 and mat2 shapes cannot be multiplied (16x9 and 4x4)", (2, 3, 12, 12)),
    "gmlp, conv1d sgu": ("Given groups=1, weight of size [4, 4, 1], expected input[2, 9, 12] to have 4 channels, but "
                         "got 9 channels instead", (2, 3, 12, 12)),
    "gmlp, lucidrains sgu": ("einsum(): subscript n has size 4 for operand 1 which does not broadcast with previously "
                             "seen size 9", (2, 3, 12, 12)),
    "gmlp, causal tokens": ("einsum(): subscript n has size 6 for operand 1 which does not broadcast with previously "
                            "seen size 8", (2, 8)),
}


@pytest.mark.parametrize("program", list(WRONG_LENGTH))
def test_mixers_refuse_a_wrong_sequence_length_as_torch(program):
    torch = require_torch()
    build, _ = PROGRAMS[program]
    words, shape = WRONG_LENGTH[program]
    for lib in (kiln, torch):
        x = lib.zeros(*shape, dtype=lib.long) if len(shape) == 2 else lib.zeros(*shape)
        with pytest.raises(RuntimeError) as raised:
            build(lib, lib.nn, lib.nn.functional)(x)
        assert str(raised.value).splitlines()[-1].strip() == words
