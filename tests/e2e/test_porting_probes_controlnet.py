"""Porting probe: ControlNet (lllyasviel/ControlNet's ``cldm/cldm.py``, ``tool_add_control.py`` and its training of
``ControlLDM``; the program is ``sd_controlnet_program.py`` over the tiny latent diffusion model of
``sd_ldm_program.py``), run in kiln and torch 2.13 from kiln's initial weights, compared to 1e-10 in float64, eagerly and
with the whole step one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

What is in it: the control model's weights copied from the UNet by name (``state_dict`` keys, ``clone()``,
``load_state_dict(strict=True)``), the locked UNet's encoder under ``torch.no_grad()`` with the control added in place
(``h += control.pop()`` on a tensor made without grad, then ``hs.pop() + control.pop()`` on the skips), the hint block
added once (``h += guided_hint``), zero convs (``zero_module``) whose first step is the only way gradient reaches the
control model, ``control_scales`` by a list comprehension, the hint read NHWC and made NCHW with
``.to(memory_format=torch.contiguous_format)``, ``configure_optimizers`` with ``sd_locked`` True (the control model only)
and False (also the UNet's decoder and ``out``), and the mid-control-only variant.

What broke: nothing (the probe passed as first written; ``Module.train`` now runs ``disabled_train`` on the frozen first
stage as torch does, see ``test_porting_probes_mobile_sam.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.sd_autoencoder_program import autoencoder_kl
from e2e.sd_controlnet_program import control_ldm
from oracles import libraries

STEPS = 3


def _data():
    rng = np.random.default_rng(0)
    images = np.tanh(rng.standard_normal((2, 3, 8, 8)))
    hints = rng.random((2, 8, 8, 3))  # batch["hint"]: NHWC in [0, 1]
    posterior_noise = rng.standard_normal((STEPS, 2, 2, 4, 4))
    noises = rng.standard_normal((STEPS, 2, 2, 4, 4))
    timesteps = rng.integers(0, 20, (STEPS, 2))
    return images, hints, posterior_noise, noises, timesteps


def _builder(sd_locked=True, only_mid_control=False):
    def build(torch, nn, F):
        return control_ldm(torch, nn, F, autoencoder_kl(torch, nn, F), float_dtype=torch.float64,
                           sd_locked=sd_locked, only_mid_control=only_mid_control)

    return build


def train_control(compiled=False):
    """ControlLDM's ``shared_step`` with ``get_input``'s hint handling (einops' ``rearrange(control,
    'b h w c -> b c h w')`` as ``permute``), AdamW from ``configure_optimizers``."""
    images, hints, posterior_noise, noises, timesteps = _data()

    def train(torch, nn, F, ldm):
        optimizer = ldm.configure_optimizers()
        record = {"losses": [], "unet out before": snapshot(ldm.model.diffusion_model.out)}

        def step(x, hint, posterior_noise, t, noise):
            z = ldm.get_first_stage_encoding(ldm.encode_first_stage(x), posterior_noise).detach()
            with torch.no_grad():
                c = ldm.get_learned_conditioning({"class": torch.tensor([1, 3])})
            control = hint.permute(0, 3, 1, 2)
            control = control.to(memory_format=torch.contiguous_format).to(torch.get_default_dtype())
            loss, loss_dict = ldm(z, dict(c_crossattn=[c], c_concat=[control]), t=t, noise=noise)
            optimizer.zero_grad()
            loss.backward()
            if not compiled:
                record.setdefault("grads", gradients(ldm))
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for i in range(STEPS):
            record["losses"].append(run(torch.tensor(images), torch.tensor(hints), torch.tensor(posterior_noise[i]),
                                        torch.tensor(timesteps[i]), torch.tensor(noises[i])).item())
        record["state"] = snapshot(ldm)
        return record

    return train


@pytest.mark.parametrize("sd_locked", [True, False], ids=["sd locked", "decoder unlocked"])
def test_controlnet_trains_as_torch(float64_default, sd_locked):
    ours, theirs = run_in_lockstep(_builder(sd_locked), train_control())
    assert_same_records(ours, theirs)
    unet_out_moved = any((theirs["state"][f"model.diffusion_model.out.{key}"] != before).any()
                         for key, before in theirs["unet out before"].items())
    assert unet_out_moved != sd_locked  # the optimizer holds the UNet's decoder only when unlocked
    assert not any(name.startswith("model.diffusion_model.input_blocks") for name in theirs["grads"])  # no_grad
    assert theirs["state"]["control_model.zero_convs.0.0.weight"].any()  # moved from zero


def test_controlnet_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_builder(), train_control(compiled=True))
    assert_same_records(ours, theirs)


def test_controlnet_mid_control_only_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_builder(only_mid_control=True), train_control())
    assert_same_records(ours, theirs)


def test_control_model_starts_as_the_unets_copy():
    """tool_add_control.py: every ``control_model`` weight whose name the UNet has is its copy (a clone, not shared);
    the hint block and the zero convs start as built."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        state = control_ldm(torch, nn, F, autoencoder_kl(torch, nn, F)).state_dict()
        copied = [k for k in state if k.startswith("control_model.") and "model.diffusion_" + k[8:] in state]
        assert len(copied) > 50
        for key in copied:
            np.testing.assert_array_equal(state[key].numpy(), state["model.diffusion_" + key[8:]].numpy())
        assert not state["control_model.zero_convs.1.0.weight"].numpy().any()
