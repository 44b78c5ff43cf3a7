"""Porting probe: Stable Diffusion 2's variants of the tiny latent diffusion model (Stability-AI/stablediffusion's
``ldm``; the programs are ``stable_diffusion_program.py``, ``sd_autoencoder_program.py`` and ``sd_ldm_program.py``),
run in kiln and torch 2.13 from kiln's initial weights, compared to 1e-10 in float64 eagerly and with the whole training
step one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop, and as written in float32.

What is in it, beyond ``test_porting_probes_stable_diffusion.py``: the ``v`` parameterization (``get_v`` as the target,
``lvlb_weights`` by ``torch.ones_like``, DDIM's ``predict_eps_from_z_and_v`` and ``predict_start_from_z_and_v``), the
cosine schedule (``torch.cos(alphas).pow(2)`` of a float64 ``arange``, then ``np.clip`` of that tensor and
``.numpy()``), SD 2's ``SpatialTransformer`` with ``use_linear`` (``proj_in``/``proj_out`` as ``nn.Linear`` after the
flattening, ``.contiguous()``) and ``disable_self_attn`` on the low-resolution level (``attn1`` attends to the context),
``CrossAttention``'s similarity under ``torch.autocast(enabled=False, device_type='cuda')`` with ``q.float()``,
``use_scale_shift_norm`` (``out_norm(h) * (1 + scale) + shift`` from ``torch.chunk``), ``resblock_updown`` (``ResBlock``
down by ``AvgPool2d`` and up by nearest ``F.interpolate``, ``in_layers[:-1]`` slicing a ``Sequential``),
``num_head_channels``; and DDPM's ancestral sampler (``p_sample``: ``predict_start_from_z_and_v``, in-place
``x_recon.clamp_(-1., 1.)`` under ``@torch.no_grad()``, ``q_posterior``, ``(1 - (t == 0).float()).reshape(...)``,
``(0.5 * model_log_variance).exp()``, its noise fed); the float32 UNet through ``kiln.onnx.export`` and onnxruntime.

What broke: the cosine schedule's ``np.clip(betas, a_min=0, a_max=0.999).numpy()`` needs NumPy's ufunc of a tensor to
give a tensor, fixed for ``test_porting_probes_stable_diffusion.py`` (``frontend/tensor_eager.py``
``__array_wrap__``); nothing else. Exporting the UNet with a dynamic batch needed ``b_h // h`` of a symbolic dim
(``frontend/symbolic_dims.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep
from e2e.sd_autoencoder_program import autoencoder_kl
from e2e.sd_ldm_program import UNET_PARAMS, latent_diffusion
from e2e.stable_diffusion_program import IMAGE, TIMESTEPS, sd_modules
from e2e.test_porting_probes_stable_diffusion import train_latent_diffusion
from oracles import libraries, require

SD2_UNET = dict(use_linear_in_transformer=True, use_scale_shift_norm=True, resblock_updown=True, num_head_channels=4,
                disable_self_attentions=[False, True])


def _sd2(torch, nn, F, float_dtype=None):
    return latent_diffusion(torch, nn, F, autoencoder_kl(torch, nn, F), float_dtype=float_dtype, parameterization="v",
                            beta_schedule="cosine", original_elbo_weight=0.0, unet_options=SD2_UNET)


def _sd2_float64(torch, nn, F):
    return _sd2(torch, nn, F, torch.float64)


def with_ancestral_samples(train, steps=4):
    """``train`` followed by DDPM's ``p_sample_loop`` over the last ``steps`` timesteps (their noise fed), the class
    context under ``no_grad``."""

    def train_and_sample(torch, nn, F, ldm):
        record = train(torch, nn, F, ldm)
        rng = np.random.default_rng(11)
        dtype = torch.get_default_dtype()
        x_T = torch.tensor(rng.standard_normal((2, 2, IMAGE // 2, IMAGE // 2))).to(dtype)
        noises = [torch.tensor(rng.standard_normal((2, 2, IMAGE // 2, IMAGE // 2))).to(dtype) for _ in range(steps)]
        with torch.no_grad():
            c = ldm.get_learned_conditioning({"class": torch.tensor([2, 4])})
        record["ancestral"] = array(ldm.p_sample_loop(c, (2, 2, IMAGE // 2, IMAGE // 2), x_T, noises))
        return record

    return train_and_sample


def test_sd2_v_prediction_trains_and_samples_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_sd2_float64, with_ancestral_samples(train_latent_diffusion()))
    assert_same_records(ours, theirs)
    assert np.isfinite(theirs["ancestral"]).all() and np.isfinite(theirs["samples"]).all()
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in theirs["grads"]
    assert theirs["state"]["model.diffusion_model.middle_block.1.proj_in.weight"].ndim == 2  # nn.Linear


def test_sd2_v_prediction_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_sd2_float64, train_latent_diffusion(compiled=True, sample=False))
    assert_same_records(ours, theirs)


def test_sd2_float32_compiled_step_as_torch():
    """As written (float32, the similarity under ``autocast(enabled=False)``), the compiled step and sampling."""
    ours, theirs = run_in_lockstep(_sd2, train_latent_diffusion(compiled=True, dtype=np.float32))
    assert ours["samples"].dtype == theirs["samples"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


def test_cosine_schedule_as_torch():
    """``make_beta_schedule("cosine")``: a float64 torch computation clipped by ``np.clip`` and read by ``.numpy()``,
    then the NumPy buffers of ``register_schedule``."""
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        ldm = _sd2(torch, nn, F)
        records.append({key: array(value) for key, value in ldm.named_buffers() if "first_stage" not in key})
    assert_same_records(*records, rtol=1e-6, atol=1e-7)
    assert records[1]["betas"].shape == (TIMESTEPS,) and records[1]["betas"].max() <= 0.999


def _pretrained_unet(torch, nn, F):
    """SD 2's UNet (linear projections in the transformers) with its zero-initialised layers drawn, as a trained one."""
    unet = sd_modules(torch, nn, F)["UNetModel"](**dict(UNET_PARAMS, use_linear_in_transformer=True))
    with torch.no_grad():
        for p in unet.parameters():
            if not p.any():
                p.normal_(std=0.1)
    return unet


def _unet_inputs(batch=2):
    rng = np.random.default_rng(0)
    return {"sample": rng.standard_normal((batch, 2, IMAGE // 2, IMAGE // 2)).astype(np.float32),
            "timestep": rng.integers(0, TIMESTEPS, batch), "encoder_hidden_states":
            rng.standard_normal((batch, 1, 8)).astype(np.float32)}


def _export_unet(unet, path, dynamic_axes=None):
    """The UNet's export as SD's ONNX conversion scripts call it (opset 17, named inputs, eval, no grad)."""
    inputs = [kiln.tensor(value) for value in _unet_inputs().values()]
    unet.eval()
    with kiln.no_grad():
        kiln.onnx.export(unet, tuple(inputs), path, opset_version=17, do_constant_folding=True,
                         input_names=list(_unet_inputs()), output_names=["out_sample"], dynamic_axes=dynamic_axes)


def test_sd2_unet_through_onnx_as_torch(tmp_path):
    """The float32 UNet exported by ``kiln.onnx.export`` and run by onnxruntime, against torch's eval forward."""
    onnxruntime = require("onnxruntime")

    def run(torch, nn, F, unet):
        unet.eval()
        with torch.no_grad():
            eager = array(unet(*[torch.tensor(value) for value in _unet_inputs().values()]))
        if torch is not kiln:
            return {"eager": eager, "onnx": eager}
        _export_unet(unet, str(tmp_path / "unet.onnx"))
        session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
        return {"eager": eager, "onnx": session.run(None, _unet_inputs())[0]}

    ours, theirs = run_in_lockstep(_pretrained_unet, run)
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def test_sd2_unet_onnx_with_a_dynamic_batch_runs_each_batch_size_as_kiln_eager(tmp_path):
    """``dynamic_axes`` over the batch: CrossAttention splits the heads back out of the batch by ``b_h // h``, which a
    symbolic dim divides exactly (``'2*batch' // 2`` is ``'batch'``; it raised TypeError). One file runs batches of
    1 and 3 in onnxruntime as kiln's eager forward."""
    onnxruntime = require("onnxruntime")
    torch, nn, F = libraries("kiln")
    unet = _pretrained_unet(torch, nn, F)
    _export_unet(unet, str(tmp_path / "unet.onnx"), dynamic_axes={name: {0: "batch"} for name in _unet_inputs()})
    session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        inputs = _unet_inputs(batch)
        with kiln.no_grad():
            eager = np.asarray(unet(*[kiln.tensor(value) for value in inputs.values()]))
        np.testing.assert_allclose(session.run(None, inputs)[0], eager, rtol=1e-4, atol=1e-5)
