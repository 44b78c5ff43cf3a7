"""Porting probe: textual inversion on the tiny latent diffusion model (``sd_ldm_program.py``), as diffusers'
``examples/textual_inversion/textual_inversion.py`` trains it: everything frozen but the conditioning embedding table
(``requires_grad_(False)`` on the UNet and the first stage), one new token row appended (``resize_token_embeddings``
written by hand: a bigger ``nn.Embedding`` with the old rows copied through ``.data``, the new row initialised from an
``initializer_token``'s), AdamW over ``get_input_embeddings().parameters()`` only, and after each step every row but the
new one put back under ``torch.no_grad()`` by a boolean mask: ``weight[index_no_updates] =
orig_embeds_params[index_no_updates]``. Run in kiln and torch 2.13 from kiln's initial weights, to 1e-10 in float64,
eagerly and with the whole step (the restore included) one ``kiln.compile(fullgraph=True)`` graph.

What broke: nothing; everything agreed as first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep
from e2e.sd_autoencoder_program import autoencoder_kl
from e2e.sd_ldm_program import latent_diffusion
from e2e.stable_diffusion_program import CLASSES
from e2e.test_porting_probes_stable_diffusion import _data

PLACEHOLDER, INITIALIZER = CLASSES + 1, 2
"""The new token's id (after the null class) and the token whose embedding starts it."""


def _with_placeholder_token(torch, nn, F):
    ldm = latent_diffusion(torch, nn, F, autoencoder_kl(torch, nn, F), float_dtype=torch.float64)
    embedder = ldm.cond_stage_model
    old = embedder.embedding
    new = nn.Embedding(old.num_embeddings + 1, old.embedding_dim)  # text_encoder.resize_token_embeddings(len(tokenizer))
    new.weight.data[:old.num_embeddings, :] = old.weight.data
    embedder.embedding = new
    token_embeds = embedder.embedding.weight.data
    with torch.no_grad():
        token_embeds[PLACEHOLDER] = token_embeds[INITIALIZER].clone()
    return ldm


def train_inversion(compiled=False, steps=3):
    images, posterior_noise, _, timesteps, noises = _data()
    classes = np.array([PLACEHOLDER] * len(images))

    def train(torch, nn, F, ldm):
        ldm.model.requires_grad_(False)
        ldm.first_stage_model.requires_grad_(False)
        ldm.cond_stage_model.embedding.weight.requires_grad_(True)
        optimizer = torch.optim.AdamW(ldm.cond_stage_model.embedding.parameters(), lr=5e-2, weight_decay=1e-2)
        orig_embeds_params = ldm.cond_stage_model.embedding.weight.data.clone()
        record = {"losses": []}

        def step(x, posterior_noise, classes, t, noise):
            z = ldm.get_first_stage_encoding(ldm.encode_first_stage(x), posterior_noise).detach()
            loss, _ = ldm(z, {"class": classes}, t=t, noise=noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            # Let's make sure we don't update any embedding weights besides the newly added token
            index_no_updates = torch.ones((PLACEHOLDER + 1,), dtype=torch.bool)
            index_no_updates[PLACEHOLDER] = False
            with torch.no_grad():
                ldm.cond_stage_model.embedding.weight[index_no_updates] = orig_embeds_params[index_no_updates]
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for i in range(steps):
            record["losses"].append(run(torch.tensor(images), torch.tensor(posterior_noise[i]), torch.tensor(classes),
                                        torch.tensor(timesteps[i]), torch.tensor(noises[i])).item())
        record["embeddings"] = array(ldm.cond_stage_model.embedding.weight)
        record["unchanged rows"] = array(orig_embeds_params[:PLACEHOLDER])
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_textual_inversion_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(_with_placeholder_token, train_inversion(compiled))
    assert_same_records(ours, theirs)
    np.testing.assert_array_equal(ours["embeddings"][:PLACEHOLDER], ours["unchanged rows"])
    assert np.abs(ours["embeddings"][PLACEHOLDER] - ours["embeddings"][INITIALIZER]).max() > 1e-3
