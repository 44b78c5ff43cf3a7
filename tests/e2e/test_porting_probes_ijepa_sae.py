"""Porting probes: I-JEPA and top-k sparse autoencoders (``e2e/ijepa_program.py``, ``e2e/sae_program.py``, written
once, ``torch`` being torch or kiln), trained a few steps in both libraries from kiln's initial weights and compared in float64 to 1e-10
(losses, first gradients, parameters, the EMA target encoder, the SAEs' dead-latent counters, optimizer state, EMA
weights and an eval under them), eagerly and with the step ``kiln.compile``d, and in float32 at float32's level.

- I-JEPA (facebookresearch/ijepa): ``vision_transformer.py``'s ``VisionTransformer`` and
  ``VisionTransformerPredictor`` (``PatchEmbed``'s ``Conv2d(...).flatten(2).transpose(1, 2)``, NumPy
  ``get_2d_sincos_pos_embed`` copied into ``nn.Parameter(torch.zeros(...), requires_grad=False)`` by
  ``.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))``, ``trunc_normal_`` (``uniform_``/``erfinv_``/
  ``clamp_`` under ``no_grad``), ``self.apply(self._init_weights)``, ``fix_init_weight``'s ``param.div_``, the
  predictor's ``mask_token.repeat(...)``, ``x += apply_masks(x_pos_embed, masks_x)``, ``pred_tokens += pos_embs``,
  ``repeat_interleave_batch``, ``x[:, N_ctxt:]``); ``masks/utils.py``'s ``apply_masks`` (``m.unsqueeze(-1).repeat(1,
  1, x.size(-1))``, ``torch.gather(x, dim=1, index=mask_keep)``, ``torch.cat(all_x, dim=0)``); ``multiblock.py``'s
  ``MaskCollator`` run in each library (``torch.Generator().manual_seed(seed)``, ``torch.rand(1, generator=g).item()``,
  ``torch.randint(0, h, (1,))`` tensors as slice bounds in ``mask[top:top+h, left:left+w] = 1``, ``mask *=
  acceptable_regions[k]`` on int32, ``torch.nonzero(mask.flatten())`` / ``.squeeze()``, ``cm[:min_keep]`` and
  ``torch.utils.data.default_collate`` of lists of index tensors); ``helper.py``'s ``init_model`` and ``init_opt``
  (AdamW over generator param groups filtered by ``'bias' not in n and len(p.shape) != 1``, ``WD_exclude`` groups),
  ``schedulers.py``'s ``WarmupCosineSchedule`` and ``CosineWDSchedule`` writing ``group['lr']``/``group['weight_decay']``;
  ``logging.py``'s ``grad_logger`` (``float(torch.norm(p.grad.data))``); ``train.py``'s set-up (``copy.deepcopy(encoder)``
  frozen by ``p.requires_grad = False``, the momentum generator ``(ema[0] + i*(ema[1]-ema[0])/(ipe*num_epochs*ipe_scale)
  for i in ...)``) and ``train_step`` (target under ``torch.no_grad()`` with ``F.layer_norm(h, (h.size(-1),))``,
  ``F.smooth_l1_loss(z, h)``, ``float(loss)``, ``next(momentum_scheduler)``, the EMA ``param_k.data.mul_(m).add_((1.-m)
  * param_q.detach().data)``).
- Top-k SAE, openai/sparse_autoencoder ``model.py`` with EleutherAI/sae ``sae.py``/``trainer.py`` (``topk_sae``):
  ``pre_bias``, ``encode_pre_act``'s ``F.linear(x - pre_bias, self.encoder.weight[latent_slice], ...)``, ``TopK``
  (``torch.topk(x, k=self.k, dim=-1)``, ``topk.values``/``topk.indices``, ``torch.zeros_like(x)`` and ``scatter_``), the
  ``stats_last_nonzero`` buffer (``*= (latents == 0).all(dim=0).long()``, ``+= 1``), a ``W_dec`` parameter decoded
  three ways (``F.linear``, ``eager_decode``'s ``new_zeros(...).scatter_(...) @ W_dec.mT``, ``F.embedding_bag(...,
  per_sample_weights=..., mode="sum")``), the normalized MSE ``((recon - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2)
  .sum(-1)).mean()``, AuxK on ``torch.where(dead_mask[None], latents_pre_act, -torch.inf).topk(auxk, sorted=False)``,
  ``set_decoder_norm_to_unit_norm`` (``torch.finfo(dtype).eps``, ``W_dec.data /= norm + eps``) and
  ``remove_gradient_parallel_to_decoder_directions`` (``torch.einsum("... d, ... d -> ...")``, ``W_dec.grad -=``), both
  under ``@torch.no_grad()``; the trainer's ``num_tokens_since_fired`` (``did_fire[indices.flatten()] = True``, ``counts
  += n``, ``counts[did_fire] = 0``), Adam with ``eps=6.25e-10``.
- openai/sparse_autoencoder ``train.py`` (``openai_fast_sae``): ``FastAutoencoder`` with its ``EncWrapper``
  ``torch.autograd.Function`` defined inside ``forward`` (a closure over the module: ``scatter_add_`` of ``(vals >
  1e-3)`` into ``stats_last_nonzero`` and ``*= 1 - tmp.clamp(max=1)`` inside ``Function.forward``, ``auxk_mask_fn``'s
  ``x.data *= dead_mask``, a variable ``save_for_backward``, a backward returning ``None`` for ``x``), the tied init
  ``decoder.weight.data = encoder.weight.data.T.clone()`` then ``.T.contiguous().T``, ``TritonDecoderAutograd``,
  ``unit_norm_decoder_`` (``/= norm(dim=0)``) and ``unit_norm_decoder_grad_adjustment_`` (``torch.einsum("bn,bn->n")``),
  the loss lambda (``mse`` as a per-call ``autograd.Function`` class, ``normalized_mse``'s ``xs_mu[None,
  :].broadcast_to(xs.shape)``, ``recons.detach() + ae.pre_bias.detach()``, ``.nan_to_num(0)``), ``sharded_grad_norm``
  and ``torch._foreach_mul_(grads, clip_grad / torch.clamp(grad_norm, min=clip_grad))``, ``EmaModel``
  (``torch._foreach_lerp_``, ``torch._foreach_div``, ``use_ema_weights``/``temporary_weight_swap``'s ``_p.data, new_p.data
  = new_p.data, _p.data``), ``training_loop_``'s never-zeroed gradients.
- EleutherAI/sae as written (``eleuther_sae``): ``Sae`` (``nn.Linear(..., device=device, dtype=dtype)``,
  ``encoder.bias.data.zero_()``, ``pre_acts``' ``x.to(self.dtype) - self.b_dec``, ``select_topk``'s
  ``EncoderOutput(*latents.topk(k, sorted=False))``, ``forward``'s ``(num_dead := int(dead_mask.sum())) > 0`` with
  ``scale = min(num_dead / k_aux, 1.0)``, ``fvu`` over ``.sum(0)``, ``sae_out.new_tensor(0.0)``), utils.py's
  ``geometric_median`` (``@torch.no_grad()``, ``weights /= weights.sum()``, ``if torch.norm(guess - prev) < tol:
  break``) set by ``raw.b_dec.data = median.to(raw.dtype)``, and ``SaeTrainer.fit``'s iteration (``hiddens.chunk``,
  ``loss.div(acc_steps).backward()``, ``clip_grad_norm_``, ``defaultdict`` counters, ``mask.mean(dtype=torch.float32)
  .item()``).

Adaptations: tiny sizes (12x12 images in 2x2 patches, width 8, one block each, 2 images a batch, 2 epochs of 2
iterations; SAEs of 8 inputs, 24 latents, k 3, AuxK 4, batches of 6). The ImageNet loader is NumPy images; the
collator's ``torch.rand``/``torch.randint`` are fed the same NumPy draws in both libraries (their generators' streams
differ), its worker-shared ``multiprocessing.Value`` counter a plain int; ``min_keep`` 3 (the 6x6 grid's blocks are
small). No GradScaler/autocast/distributed (one CPU process). The Triton kernels of openai's ``kernels.py`` are the dense
computations their docstrings state (``(dense1 @ dense2).gather(1, at_indices)`` is the repository's own ``K > 512``
path; the COO sort kept, ``index_add_`` for the atomic adds; ``x += a * b * c`` for ``triton_add_mul_``), and their
float32 accumulators (``.float()``, ``dtype=torch.float32``) keep the default dtype in the float64 runs (``fp32=False``;
with them, float32 sums of 8 terms round differently in the two libraries' reduction orders, 1 ulp, and the float64
runs would agree only to float32's level); the float32 run keeps them. ``topk_sae`` takes AuxK over ``-inf``-masked
latents (whose ``relu`` is 0) without EleutherAI's ``int(dead_mask.sum())`` test, so that its step is one graph;
``eleuther_sae`` keeps the test.

Compiled: I-JEPA's step from the target's forward to the EMA is one ``kiln.compile(fullgraph=True)`` graph (masks of
new lengths retrace), the schedulers and ``next(momentum_scheduler)`` between calls, as a torch.compile user hoists
them; ``train_step`` as written runs eagerly after one warning naming ``grad_logger``'s ``float(torch.norm
(...))`` (where torch.compile breaks the graph). Both SAE steps (the unit norm, forward, AuxK, backward, the gradient
projection, Adam, the ``did_fire``/``num_tokens_since_fired`` writes; openai's with the custom Functions, the clip and
the EMA) are one ``kiln.compile(fullgraph=True)`` graph each; EleutherAI's ``fit`` iteration, which reads values
(``if i == 0``, ``int(dead_mask.sum())``, ``float(out.fvu.detach())``), runs eagerly through ``kiln.compile``.

What broke (each fixed in kiln, with a test against torch):
- ``float(loss)`` of a tensor requiring grad (``train_step``'s return): torch 2.13 warns once a process
  ("Converting a tensor with requires_grad=True to a scalar ..."), kiln was silent (``frontend/tensor_eager.py``,
  ``frontend/warn_once.py``; ``tests/frontend/test_float_of_grad_tensor_warning_vs_torch.py``).
- ``torch._foreach_lerp_``/``lerp``/``lerp_`` with an ``end`` (or a weight with dims) of another dtype, as
  ``EmaModel`` meets with float32 EMA weights of float64 parameters: torch raises, kiln promoted silently
  (``frontend/lerp_dtype_checks.py``, ``frontend/tensor.py``, ``frontend/tensor_inplace.py``;
  ``tests/frontend/test_lerp_dtype_vs_torch.py``).
- ``F.embedding_bag(..., per_sample_weights=...)`` of another dtype than the table: torch raises, kiln promoted
  silently (``frontend/functional_extra.py``; ``tests/frontend/test_embedding_bag_weights_dtype_vs_torch.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.ijepa_program import IJEPA_ARGS, IJepaRun
from e2e.sae_program import (SAE_AUXK, SAE_BATCH, SAE_INPUTS, SAE_K, SAE_LATENTS, SaeRun, eleuther_config, eleuther_sae,
                             openai_fast_sae, topk_sae)
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries

IPE, EPOCHS = 2, 2
CROP, BATCH = IJEPA_ARGS["data"]["crop_size"], IJEPA_ARGS["data"]["batch_size"]
IMAGES = np.random.default_rng(0).standard_normal((IPE * EPOCHS, BATCH, 3, CROP, CROP))


def feed(monkeypatch, name, make):
    """``lib.<name>`` of both libraries replaced by ``make(lib, rng)``, one NumPy generator a library from one seed."""
    for library in ("kiln", "torch"):
        lib = libraries(library)[0]
        monkeypatch.setattr(lib, name, make(lib, np.random.default_rng(7)))


@pytest.fixture
def fed_draws(monkeypatch):
    """The MaskCollator's ``torch.rand(1, generator=g)`` and ``torch.randint(low, high, (1,))`` of both libraries from
    the same NumPy draws (each library's generator streams differ)."""
    feed(monkeypatch, "randint", lambda lib, rng: lambda low, high, size: lib.tensor(rng.integers(low, high, size)))
    feed(monkeypatch, "rand", lambda lib, rng: lambda *size, generator=None: lib.tensor(
        rng.uniform(size=size), dtype=lib.get_default_dtype()))


def optimizer_state(optimizer):
    """Every entry of ``optimizer.state_dict()["state"]`` as an array."""
    return {f"{index}/{key}": np.array(array(value) if hasattr(value, "detach") else value)
            for index, entry in optimizer.state_dict()["state"].items() for key, value in entry.items()}


def ijepa_builder(torch, nn, F):
    """The encoder, predictor and target encoder in a ModuleDict (for the state), the run kept on it."""
    run = IJepaRun(torch, nn, F, ipe=IPE)
    model = nn.ModuleDict(dict(encoder=run.encoder, predictor=run.predictor, target_encoder=run.target_encoder))
    model.run = run
    return model


def collate(torch, run, it):
    batch = [(torch.tensor(image, dtype=torch.get_default_dtype()), 0) for image in IMAGES[it]]
    udata, masks_enc, masks_pred = run.mask_collator(batch)
    return udata[0], masks_enc, masks_pred


def train_ijepa(torch, nn, F, model):
    run = model.run
    record = {"losses": [], "lrs": [], "wds": [], "grad_stats": [], "masks": {}}
    for it in range(IPE * EPOCHS):
        imgs, masks_enc, masks_pred = collate(torch, run, it)
        record["masks"].update({f"{it} {kind} {j}": array(m) for kind, masks in (("enc", masks_enc), ("pred", masks_pred))
                                for j, m in enumerate(masks)})
        loss, new_lr, new_wd, grad_stats = run.train_step(imgs, masks_enc, masks_pred, record)
        record["losses"].append(loss)
        record["lrs"].append(new_lr)
        record["wds"].append(new_wd)
        record["grad_stats"].append([grad_stats.first_layer, grad_stats.last_layer, grad_stats.avg])
    record["grads"] = {name: array(grad) for name, grad in record["grads"].items()}
    record.update(state=snapshot(model), optimizer=optimizer_state(run.optimizer),
                  groups=[[group["lr"], group["weight_decay"]] for group in run.optimizer.param_groups])
    return record


def test_ijepa_trains_as_torch(float64_default, fed_draws):
    ours, theirs = run_in_lockstep(ijepa_builder, train_ijepa)
    assert_same_records(ours, theirs)


SAE_DATA = np.random.default_rng(1).standard_normal((5, SAE_BATCH, SAE_INPUTS)) * np.linspace(0.5, 2, SAE_INPUTS)


def sae_builder(decoder_impl):
    def build(torch, nn, F):
        return topk_sae(torch, nn, F).Autoencoder(SAE_LATENTS, SAE_INPUTS, SAE_K, decoder_impl)
    return build


def train_sae(torch, nn, F, sae):
    run = SaeRun(torch, nn, F, sae)
    record = {"losses": [], "fvus": [], "auxk": [], "dead": []}
    for x in SAE_DATA:
        loss, fvu, auxk = run.step(torch.tensor(x, dtype=torch.get_default_dtype()), record)
        record["losses"].append(loss.item())
        record["fvus"].append(fvu.item())
        record["auxk"].append(auxk.item())
        record["dead"].append(array(run.num_tokens_since_fired))
    record["grads"] = {name: array(grad) for name, grad in record["grads"].items()}
    record.update(state=snapshot(sae), optimizer=optimizer_state(run.optimizer))
    return record


@pytest.mark.parametrize("decoder_impl", ["linear", "eager", "embedding_bag"])
def test_topk_sae_trains_as_torch(float64_default, decoder_impl):
    ours, theirs = run_in_lockstep(sae_builder(decoder_impl), train_sae)
    assert_same_records(ours, theirs)


def compiled_ijepa(as_written):
    """The training iteration with kiln's step compiled: ``as_written`` compiles train.py's ``train_step`` itself
    (schedulers, ``float(loss)``, ``grad_logger``, ``next(momentum_scheduler)`` inside it); otherwise the step from
    the target's forward to the EMA is one ``kiln.compile(fullgraph=True)`` graph, the schedulers and the momentum
    generator read between calls, as a torch.compile user hoists them."""

    def train(torch, nn, F, model):
        run = model.run
        record = {"losses": [], "lrs": [], "wds": []}

        def step(imgs, masks_enc, masks_pred, m):
            h = run.forward_target(imgs, masks_enc, masks_pred)
            z = run.forward_context(imgs, masks_enc, masks_pred)
            loss = run.loss_fn(z, h)
            loss.backward()
            run.optimizer.step()
            run.optimizer.zero_grad()
            run.momentum_update(m)
            return loss

        if as_written:
            compiled = kiln.compile(run.train_step) if torch is kiln else run.train_step
        else:
            compiled = kiln.compile(step, fullgraph=True) if torch is kiln else step
        for it in range(IPE * EPOCHS):
            imgs, masks_enc, masks_pred = collate(torch, run, it)
            if as_written:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loss, new_lr, new_wd, _ = compiled(imgs, masks_enc, masks_pred)
                record.setdefault("warnings", []).extend(str(w.message) for w in caught if "kiln.compile" in str(w.message))
            else:
                new_lr, new_wd = run.scheduler.step(), run.wd_scheduler.step()
                loss = compiled(imgs, masks_enc, masks_pred, next(run.momentum_scheduler)).item()
            record["losses"].append(loss)
            record["lrs"].append(new_lr)
            record["wds"].append(new_wd)
        record.update(state=snapshot(model), optimizer=optimizer_state(run.optimizer))
        return record

    return train


@pytest.mark.parametrize("as_written", [False, True], ids=["step: one graph", "train_step as written"])
def test_ijepa_compiled_step_as_torch(float64_default, fed_draws, as_written):
    ours, theirs = run_in_lockstep(ijepa_builder, compiled_ijepa(as_written))
    warned = ours.pop("warnings", [])
    assert theirs.pop("warnings", []) == []
    assert_same_records(ours, theirs)
    if as_written:
        assert len(warned) == 1 and "runs eagerly" in warned[0] and "float(torch.norm(p.grad.data))" in warned[0]


def compiled_sae(torch, nn, F, sae):
    run = SaeRun(torch, nn, F, sae)
    step = kiln.compile(run.step, fullgraph=True) if torch is kiln else run.step
    record = {"losses": [], "dead": []}
    for x in SAE_DATA:
        loss, fvu, auxk = step(torch.tensor(x, dtype=torch.get_default_dtype()))
        record["losses"].append(loss.item())
        record["dead"].append(array(run.num_tokens_since_fired))
    record.update(state=snapshot(sae), optimizer=optimizer_state(run.optimizer))
    return record


@pytest.mark.parametrize("decoder_impl", ["linear", "eager", "embedding_bag"])
def test_topk_sae_compiled_step_as_torch(float64_default, decoder_impl):
    ours, theirs = run_in_lockstep(sae_builder(decoder_impl), compiled_sae)
    assert_same_records(ours, theirs)


def fast_sae_builder(torch, nn, F):
    ae = openai_fast_sae(torch, nn, F, fp32=False).FastAutoencoder(SAE_LATENTS, SAE_INPUTS, SAE_K, SAE_AUXK, 1)
    return ae


def train_fast_sae(compiled=False, clip_grad=0.5, fp32=False):
    def train(torch, nn, F, ae):
        S = openai_fast_sae(torch, nn, F, fp32=fp32)
        opt = torch.optim.Adam(ae.parameters(), lr=1e-2, eps=6.25e-10)
        ema = S.EmaModel(ae, ema_multiplier=0.9)
        stats_acts_sample = torch.tensor(SAE_DATA.reshape(-1, SAE_INPUTS), dtype=torch.get_default_dtype())
        mse_scale = (
            1 / ((stats_acts_sample.mean(dim=0) - stats_acts_sample) ** 2).mean()
        )
        mse_scale = mse_scale.item()

        def step(x):
            return S.training_step(ae, opt, ema, x, mse_scale, 1 / 32, clip_grad)

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "stats": []}
        for x in SAE_DATA:
            record["losses"].append(run(torch.tensor(x, dtype=torch.get_default_dtype())).item())
            record["stats"].append(array(ae.stats_last_nonzero))
        record.update(state=snapshot(ae), grads=gradients(ae), optimizer=optimizer_state(opt),
                      ema={str(i): array(w) for i, w in enumerate(ema.ema_weights)})
        with ema.use_ema_weights():
            recons, info = ae(torch.tensor(SAE_DATA[0], dtype=torch.get_default_dtype()))
        record.update(ema_recons=array(recons), after_swap=snapshot(ae))
        return record

    return train


def test_openai_fast_sae_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(fast_sae_builder, train_fast_sae())
    assert_same_records(ours, theirs)


def test_openai_fast_sae_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(fast_sae_builder, train_fast_sae(compiled=True))
    assert_same_records(ours, theirs)


def test_ijepa_float32_trains_as_torch(fed_draws):
    """As the repository trains (float32), at float32's level."""
    ours, theirs = run_in_lockstep(ijepa_builder, train_ijepa)
    assert ours["state"]["encoder.pos_embed"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)


def test_topk_sae_float32_trains_as_torch():
    ours, theirs = run_in_lockstep(sae_builder("eager"), train_sae)
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)


def test_openai_fast_sae_float32_compiled_step_as_torch():
    """The kernels' float32 casts as written (``fp32=True``), the step compiled, at float32's level."""
    def build(torch, nn, F):
        return openai_fast_sae(torch, nn, F).FastAutoencoder(SAE_LATENTS, SAE_INPUTS, SAE_K, SAE_AUXK, 1)
    ours, theirs = run_in_lockstep(build, train_fast_sae(compiled=True, fp32=True))
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)


def eleuther_builder(torch, nn, F):
    cfg = eleuther_config()
    return eleuther_sae(torch, nn, F).Sae(SAE_INPUTS, cfg.sae)


def train_eleuther(compiled=False):
    """``fit``'s iterations on the same batches (the first sets ``b_dec`` to their geometric median); with ``compiled``
    kiln's ``fit_step`` is ``kiln.compile``d (its ``i == 0`` branch, the walrus ``int(dead_mask.sum())`` and the
    logging ``float``/``item`` read values: it runs eagerly, as torch.compile breaks the graph at them)."""

    def train(torch, nn, F, sae):
        trainer = eleuther_sae(torch, nn, F).SaeTrainer(eleuther_config(), sae, lr=1e-2)
        step = kiln.compile(trainer.fit_step) if compiled and torch is kiln else trainer.fit_step
        record = {"fvu": [], "auxk": [], "dead_pct": [], "counts": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kiln.compile's "runs eagerly" notice
            for i, x in enumerate(SAE_DATA):
                step(i, torch.tensor(x, dtype=torch.get_default_dtype()), record)
                record["counts"].append(array(trainer.num_tokens_since_fired["layer"]))
        record.update(state=snapshot(sae), optimizer=optimizer_state(trainer.optimizer))
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_eleuther_sae_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(eleuther_builder, train_eleuther(compiled))
    assert_same_records(ours, theirs)
    assert max(ours["dead_pct"]) > 0 and max(ours["auxk"]) > 0  # dead latents met, AuxK taken
