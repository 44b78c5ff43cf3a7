"""Porting probe: Stable Diffusion's EMA of the UNet (``ldm/modules/ema.py``'s ``LitEma`` and ``ddpm.py``'s
``ema_scope``; the program is ``sd_ldm_program.py``) on the tiny latent diffusion model, in kiln and torch 2.13 from
kiln's initial weights, to 1e-10 in float64, eagerly and with the EMA update inside the one
``kiln.compile(fullgraph=True)`` training step.

What is in it: shadow weights registered as buffers named without dots (``name.replace('.', '')``, ``p.clone().detach()
.data``), a float32 ``decay`` buffer and an int32 ``num_updates`` buffer incremented in place (``self.num_updates += 1``),
``if self.num_updates >= 0`` and ``min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))`` (Python's ``min``
of two tensors: a comparison of values the step must know), ``dict(self.named_buffers())``, ``type_as`` (the same
tensor when the dtype agrees, so ``sub_`` updates the buffer), ``store``/``copy_to``/``restore`` through ``.data.copy_``
around DDIM sampling in ``with ema_scope():``, and ``on_train_batch_end``'s ``self.model_ema(self.model)``.

What broke: nothing; everything agreed as first written.
"""

from __future__ import annotations

import numpy as np

import kiln
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep, snapshot
from e2e.sd_autoencoder_program import autoencoder_kl
from e2e.sd_ldm_program import latent_diffusion, lit_ema
from e2e.test_porting_probes_stable_diffusion import _data, sample_with_guidance

STEPS = 3


def _ldm_with_ema(torch, nn, F):
    """``LatentDiffusion(..., use_ema=True)``: ``self.model_ema = LitEma(self.model)`` after the model is built."""
    ldm = latent_diffusion(torch, nn, F, autoencoder_kl(torch, nn, F), float_dtype=torch.float64)
    LitEma, _ = lit_ema(torch, nn)
    ldm.use_ema = True
    ldm.model_ema = LitEma(ldm.model, decay=0.999)
    return ldm


def train_with_ema(compiled=False):
    images, posterior_noise, classes, timesteps, noises = _data()

    def train(torch, nn, F, ldm):
        _, ema_scope = lit_ema(torch, nn)
        optimizer = torch.optim.AdamW(list(ldm.model.parameters()) + list(ldm.cond_stage_model.parameters()), lr=3e-3)
        record = {"losses": []}

        def step(x, posterior_noise, classes, t, noise):
            z = ldm.get_first_stage_encoding(ldm.encode_first_stage(x), posterior_noise).detach()
            loss, _ = ldm(z, {"class": classes}, t=t, noise=noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ldm.model_ema(ldm.model)  # on_train_batch_end
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for i in range(STEPS):
            record["losses"].append(run(torch.tensor(images), torch.tensor(posterior_noise[i]), torch.tensor(classes),
                                        torch.tensor(timesteps[i]), torch.tensor(noises[i])).item())
        record["state"] = snapshot(ldm)
        trained = snapshot(ldm.model)
        with ema_scope(ldm):
            record["ema samples"] = sample_with_guidance(torch, ldm, np.float64)["samples"]
            record["ema weights"] = snapshot(ldm.model)
        restored = snapshot(ldm.model)
        assert all(np.array_equal(restored[key], trained[key]) for key in trained)
        record["num_updates"] = array(ldm.model_ema.num_updates)
        return record

    return train


def test_ldm_ema_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_ldm_with_ema, train_with_ema())
    assert_same_records(ours, theirs)
    assert theirs["num_updates"] == STEPS and ours["num_updates"].dtype == np.int32
    key = "diffusion_model.time_embed.0.weight"
    shadow = theirs["state"]["model_ema.diffusion_modeltime_embed0weight"]
    np.testing.assert_array_equal(theirs["ema weights"][key], shadow)
    assert np.abs(shadow - theirs["state"]["model." + key]).max() > 0


def test_ldm_ema_in_the_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_ldm_with_ema, train_with_ema(compiled=True))
    assert_same_records(ours, theirs)
