"""Porting probe: Stable Diffusion 2's inpainting fine-tuning (``LatentInpaintDiffusion`` in Stability-AI/stablediffusion's
``ldm/models/diffusion/ddpm.py``) on the tiny latent diffusion model (``sd_ldm_program.py``), in kiln and torch 2.13
from kiln's initial weights, to 1e-10 in float64, eagerly and with the whole step one ``kiln.compile(fullgraph=True)``
graph.

What is in it: ``get_input``'s concat conditioning under ``@torch.no_grad()``: each ``batch[ck]`` NHWC made NCHW
(einops' ``rearrange`` as ``permute``) and ``.to(memory_format=torch.contiguous_format)``, the mask brought to the
latent size by ``torch.nn.functional.interpolate(cc, size=bchw[-2:])`` (nearest), the masked image encoded by the frozen
first stage, ``torch.cat(c_cat, dim=1)``; ``DiffusionWrapper``'s ``hybrid`` conditioning (``torch.cat([x] + c_concat,
dim=1)`` into a UNet of 2 + 1 + 2 input channels, the class context by cross-attention); then DDIM sampling with the
same concat conditioning and guidance over ``{"c_concat": [...], "c_crossattn": [...]}`` dicts.

What broke: sampling first went through v1's ``c_in = torch.cat([unconditional_conditioning, c])`` with dict
conditionings, which torch refuses with a ``TypeError`` (``expected Tensor as element 0 in argument 0, but got dict``)
and kiln with a message about ``tensor.constant`` dtypes; kiln now refuses anything but tensors in ``cat``/``stack`` as
torch does (``frontend/cat_shape_checks.py``, ``tests/frontend/test_cat_stack_argument_types_vs_torch.py``), and the
probe's sampler has SD 2's dict branch. Everything else agreed as first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.sd_autoencoder_program import autoencoder_kl
from e2e.sd_ldm_program import latent_diffusion
from e2e.stable_diffusion_program import CHANNELS, IMAGE

STEPS = 3


def _inpainting(torch, nn, F):
    ldm = latent_diffusion(torch, nn, F, autoencoder_kl(torch, nn, F), float_dtype=torch.float64,
                           unet_options=dict(in_channels=2 + 1 + 2), conditioning_key="hybrid")
    ldm.cond_stage_trainable = False  # 'trainable cond stages not yet supported for inpainting'
    return ldm


def _batches():
    rng = np.random.default_rng(0)
    images = np.tanh(rng.standard_normal((STEPS, 2, IMAGE, IMAGE, CHANNELS)))  # batch["jpg"]: NHWC
    masks = (rng.random((STEPS, 2, IMAGE, IMAGE, 1)) > 0.6).astype(np.float64)
    return [{"jpg": images[i], "mask": masks[i], "masked_image": images[i] * (masks[i] < 0.5), "class": np.array([1, 3])}
            for i in range(STEPS)], rng.standard_normal((STEPS, 3, 2, 2, IMAGE // 2, IMAGE // 2)), \
        rng.integers(0, 20, (STEPS, 2)), rng.standard_normal((STEPS, 2, 2, IMAGE // 2, IMAGE // 2))


def get_input(torch, ldm, batch, posterior_noises, concat_keys=("mask", "masked_image"), masked_image_key="masked_image"):
    """LatentInpaintDiffusion.get_input (the encodings' posterior noise fed)."""
    with torch.no_grad():
        x = batch["jpg"].permute(0, 3, 1, 2).to(memory_format=torch.contiguous_format)
        z = ldm.get_first_stage_encoding(ldm.encode_first_stage(x), posterior_noises[0]).detach()
        c = ldm.get_learned_conditioning({"class": batch["class"]})
        c_cat = list()
        for i, ck in enumerate(concat_keys):
            cc = batch[ck].permute(0, 3, 1, 2).to(memory_format=torch.contiguous_format).to(torch.float64)
            bchw = z.shape
            if ck != masked_image_key:
                cc = torch.nn.functional.interpolate(cc, size=bchw[-2:])
            else:
                cc = ldm.get_first_stage_encoding(ldm.encode_first_stage(cc), posterior_noises[1 + i])
            c_cat.append(cc)
        c_cat = torch.cat(c_cat, dim=1)
        all_conds = {"c_concat": [c_cat], "c_crossattn": [c]}
    return z, all_conds


def train_inpainting(compiled=False):
    batches, posterior_noises, timesteps, noises = _batches()

    def train(torch, nn, F, ldm):
        optimizer = torch.optim.AdamW(ldm.model.parameters(), lr=1e-3)
        record = {"losses": []}

        def step(batch, posterior_noises, t, noise):
            z, all_conds = get_input(torch, ldm, batch, posterior_noises)
            loss, _ = ldm(z, all_conds, t=t, noise=noise)
            optimizer.zero_grad()
            loss.backward()
            if not compiled:
                record.setdefault("grads", gradients(ldm))
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for i, batch in enumerate(batches):
            tensors = {key: torch.tensor(value) for key, value in batch.items()}
            record["losses"].append(run(tensors, torch.tensor(posterior_noises[i]), torch.tensor(timesteps[i]),
                                        torch.tensor(noises[i])).item())
        record["state"] = snapshot(ldm)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_sd_inpainting_fine_tunes_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(_inpainting, train_inpainting(compiled))
    assert_same_records(ours, theirs)
    if not compiled:
        assert theirs["grads"]["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 5


def test_sd_inpainting_samples_with_guidance_as_torch(float64_default):
    """txt2img-style DDIM over the inpainting model: the concat conditioning repeated for the unconditional half,
    ``{"c_concat": [c_cat], "c_crossattn": [uc_cross]}`` dicts, the guidance through ``apply_model``'s dict path."""
    from e2e.sd_ldm_program import ddim_sampler

    batches, posterior_noises, _, _ = _batches()

    def sample(torch, nn, F, ldm):
        sampler = ddim_sampler(torch, torch.float64)(ldm)
        batch = {key: torch.tensor(value) for key, value in batches[0].items()}
        _, cond = get_input(torch, ldm, batch, torch.tensor(posterior_noises[0]))
        with torch.no_grad():
            uc_cross = ldm.get_learned_conditioning({"class": torch.tensor([5, 5])})
        uc_full = {"c_concat": cond["c_concat"], "c_crossattn": [uc_cross]}
        sampler.make_schedule(ddim_num_steps=4, ddim_eta=0.0, verbose=False)
        x = torch.tensor(np.random.default_rng(3).standard_normal((2, 2, IMAGE // 2, IMAGE // 2)))
        with torch.no_grad():
            for index, time in ((3, 16), (2, 11)):
                ts = torch.full((2,), time, dtype=torch.long)
                x, _ = sampler.p_sample_ddim(x, cond, ts, index=index, unconditional_guidance_scale=3.0,
                                             unconditional_conditioning=uc_full)
        return {"x": array(x)}

    ours, theirs = run_in_lockstep(_inpainting, sample)
    assert_same_records(ours, theirs)
