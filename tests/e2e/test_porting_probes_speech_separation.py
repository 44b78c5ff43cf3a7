"""Porting probes of speech separation and enhancement (``speech_separation_program.py``; ``torch`` is ``torch`` or
``kiln``), run in both libraries from kiln's initial weights:

- Conv-TasNet as Kaituo Xu's repo writes it: Conv1d+ReLU encoder, a TCN of dilated depthwise-separable Conv1d blocks
  with gLN (non-causal, ReLU masks) or cLN (causal with ``Chomp1d``, sigmoid masks), PReLU, residual paths; a Linear
  decoder with ``overlap_and_add`` (``unfold``, ``new_tensor``, ``new_zeros``, ``index_add_``), ``F.pad`` back to the
  input length; ``cal_loss``: SI-SNR with permutation-invariant training (``itertools.permutations``, ``scatter_``
  one-hot, ``einsum``, ``max``/``argmax``, reorder by the best permutation); Adam with ``clip_grad_norm_``.
- An STFT-domain enhancer: ``torch.stft(return_complex=True)`` with a Hann window buffer, ``abs``/``torch.angle``,
  an LSTM mask net on ``log1p`` magnitudes, ``torch.polar``, ``torch.istft(length=...)``; loss minus SI-SDR plus a
  multi-resolution STFT loss (spectral convergence + log-magnitude L1 at three FFT sizes).
- Demucs-lite as facebookresearch/denoiser writes it: std normalisation, ``valid_length`` and ``F.pad``, strided
  Conv1d + ReLU + 1x1 Conv1d + GLU encoder blocks, a BiLSTM (sequence first) with a Linear, ConvTranspose1d decoder
  blocks with skips cropped by ``skip[..., :x.shape[-1]]``; the L1 waveform loss.

Checked against torch 2.13 in float64 to 1e-10 (first outputs, reordered estimates, first gradients, losses, parameters
after the steps), eagerly and with the whole step (zero_grad, forward, loss, backward, clip, Adam) in one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop; each model through ``kiln.onnx.export`` and
onnxruntime (a dynamic batch: exported with 2, run with 3) against torch's eager forward in float32.

What broke:
- ``signal.new_tensor(torch.arange(n).unfold(...))`` in the compiled step raised TracedArrayError (``new_tensor`` read
  the values with ``np.array``); a tensor is now copied with tensor ops (``frontend/tensor_methods.py``,
  ``tests/frontend/test_new_tensor_of_a_tensor_vs_torch.py``).
- ``torch.angle`` was missing from kiln; ``kiln.angle`` added (``frontend/complex_functions.py``,
  ``tests/frontend/test_torch_surface_angle.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.speech_separation_program import cal_loss, conv_tasnet, demucs_lite, enhancement_loss, stft_enhancer
from oracles import require_torch

RNG = np.random.default_rng(0)
SOURCES, LENGTHS = RNG.standard_normal((2, 2, 24)), np.array([24, 20])
CLEAN = RNG.standard_normal((2, 40))
NOISY = CLEAN + 0.5 * RNG.standard_normal((2, 40))
TASNETS = {"gLN, relu masks": dict(), "cLN causal, sigmoid masks": dict(norm_type="cLN", causal=True,
                                                                        mask_nonlinear="sigmoid")}


@pytest.fixture(autouse=True)
def _quiet_new_tensor_warning():
    with warnings.catch_warnings():  # torch's advice on new_tensor(tensor), which the repo writes
        warnings.simplefilter("ignore", UserWarning)
        yield


def train_tasnet(torch, nn, F, model, steps=3):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    source = torch.tensor(SOURCES, dtype=torch.get_default_dtype())
    mixture, source_lengths = source.sum(1), torch.tensor(LENGTHS)
    record = {"losses": []}
    model.train()
    for _ in range(steps):
        estimate_source = model(mixture)
        loss, max_snr, estimate_source, reorder_estimate_source = cal_loss(torch, source, estimate_source, source_lengths)
        optimizer.zero_grad()
        loss.backward()
        record.setdefault("estimate", array(estimate_source))
        record.setdefault("reordered", array(reorder_estimate_source))
        record.setdefault("grads", gradients(model))
        record.setdefault("grad_norm", float(nn.utils.clip_grad_norm_(model.parameters(), max_norm=5)))
        optimizer.step()
        record["losses"].append(loss.item())
    record["state"] = snapshot(model)
    return record


def compiled_tasnet_training(torch, nn, F, model, steps=3):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(mixture, source, source_lengths):
        optimizer.zero_grad()
        loss, _, _, reordered = cal_loss(torch, source, model(mixture), source_lengths)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=5)
        optimizer.step()
        return loss.detach(), reordered.detach()

    run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
    source = torch.tensor(SOURCES)
    results = [run(source.sum(1), source, torch.tensor(LENGTHS)) for _ in range(steps)]
    return {"losses": [loss.item() for loss, _ in results], "reordered": [array(r) for _, r in results],
            "state": snapshot(model)}


@pytest.mark.parametrize("variant", list(TASNETS))
@pytest.mark.parametrize("training", [train_tasnet, compiled_tasnet_training], ids=["eager", "compiled step"])
def test_conv_tasnet_trains_as_torch(variant, training, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: conv_tasnet(torch, nn, F, **TASNETS[variant]), training)
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


ONNX_MODELS = {  # name: (build, samples)
    "conv-tasnet": (lambda lib, nn, F: conv_tasnet(lib, nn, F, **TASNETS["cLN causal, sigmoid masks"]), 24),
    "stft enhancer": (stft_enhancer, 40),
    "demucs-lite": (demucs_lite, 21),
}


@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_onnx_export_runs_in_onnxruntime_as_torch(name, tmp_path):
    torch = require_torch()
    import onnxruntime

    build, samples = ONNX_MODELS[name]
    signals = RNG.standard_normal((3, samples)).astype(np.float32)

    def export(lib, nn, F, model):
        model.eval()
        if lib is kiln:
            kiln.onnx.export(model, (kiln.tensor(signals[:2]),), str(tmp_path / "model.onnx"), input_names=["mixture"],
                             output_names=["sources"], dynamic_axes={"mixture": {0: "batch"}})
            return {}
        with torch.no_grad():
            return {"eager": array(model(torch.tensor(signals)))}

    _, theirs = run_in_lockstep(build, export)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    np.testing.assert_allclose(session.run(None, {"mixture": signals})[0], theirs["eager"], rtol=1e-4, atol=1e-5)


def train_enhancer(torch, nn, F, model, steps=3):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    noisy, clean = torch.tensor(NOISY), torch.tensor(CLEAN)
    record = {"losses": []}
    for _ in range(steps):
        enhanced, loss = enhancement_loss(torch, F, model, noisy, clean)
        optimizer.zero_grad()
        loss.backward()
        record.setdefault("enhanced", array(enhanced))
        record.setdefault("grads", gradients(model))
        optimizer.step()
        record["losses"].append(loss.item())
    record["state"] = snapshot(model)
    return record


def compiled_enhancer_training(torch, nn, F, model, steps=3):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def train_step(noisy, clean):
        optimizer.zero_grad()
        _, loss = enhancement_loss(torch, F, model, noisy, clean)
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
    noisy, clean = torch.tensor(NOISY), torch.tensor(CLEAN)
    return {"losses": [run(noisy, clean).item() for _ in range(steps)], "state": snapshot(model)}


@pytest.mark.parametrize("training", [train_enhancer, compiled_enhancer_training], ids=["eager", "compiled step"])
def test_stft_mask_enhancer_trains_as_torch(training, float64_default):
    ours, theirs = run_in_lockstep(stft_enhancer, training)
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def demucs_training(compiled, steps=3):
    """Adam on the L1 waveform loss, the step compiled whole in kiln (``compiled``) or eager."""

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

        def train_step(noisy, clean):
            optimizer.zero_grad()
            estimate = model(noisy)
            loss = F.l1_loss(estimate, clean.unsqueeze(1))
            loss.backward()
            optimizer.step()
            return loss.detach(), estimate.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln and compiled else train_step
        results = [run(torch.tensor(NOISY[:, :21]), torch.tensor(CLEAN[:, :21])) for _ in range(steps)]
        return {"losses": [loss.item() for loss, _ in results], "first estimate": array(results[0][1]),
                "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_demucs_lite_trains_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(demucs_lite, demucs_training(compiled))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_conv_tasnet_float32_as_torch():
    """How Conv-TasNet trains: in float32 (the sources made in the default dtype), to float32's level."""
    ours, theirs = run_in_lockstep(conv_tasnet, train_tasnet)
    assert ours["estimate"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)
