"""Porting probes: vision-transformer and MLP variants as timm and their papers' repositories write them
(``tests/e2e/vit_variants_program.py``, ``tests/e2e/pvt_mixer_maxvit_program.py``), written once (``torch`` is
``torch`` or ``kiln``) and run in both from kiln's initial weights in float64: the first gradients (after
``clip_grad_norm_``), the losses, the learning rates of timm's ``CosineLRScheduler`` (warmup, ``step_update`` writing
``param_groups``), the state after a few AdamW steps and the eval output agree to 1e-10, eagerly and with the whole
step (zero_grad, forward, loss, backward, ``clip_grad_norm_``, AdamW) one ``kiln.compile(fullgraph=True)`` graph
against torch's eager loop; float32 at float32's level.

- CaiT (timm ``cait.py``): LayerScale (``gamma_1 * attn(norm1(x))``), talking-heads attention (``proj_l`` before and
  ``proj_w`` after the softmax over ``attn.permute(0, 2, 3, 1)``), class attention on ``x[:, 0]`` and
  ``torch.cat((cls_tokens, x), dim=1)``, stochastic depth.
- DeiT (facebookresearch/deit): the distillation token and two heads (``(x + x_dist) / 2`` at eval), the
  ``DistillationLoss`` soft (``F.kl_div(..., reduction='sum', log_target=True)``) and hard (``argmax`` targets) with a
  frozen teacher under ``torch.no_grad``, timm's ``Mixup`` (fed ``lam``; ``x.flip(0).mul_(1. - lam)``,
  ``x.mul_(lam).add_(x_flipped)``, the CutMix box from ``np.random`` assigned by ``x[:, :, yl:yh, xl:xh] =
  x.flip(0)[...]``, smoothed ``one_hot`` targets by ``scatter_``) and ``SoftTargetCrossEntropy``.
- PVT (whai362/PVT): spatial-reduction attention (``self.sr`` a strided Conv2d over ``x.permute(0, 2, 1).reshape(B,
  C, H, W)``, ``kv`` of the reduced tokens), a PatchEmbed per stage, the class token in the last stage, and
  ``_get_pos_embed``'s bilinear ``F.interpolate`` of the position embedding for another image size.
- ConvMixer (``padding="same"`` depthwise conv with an even kernel, BatchNorm), gMLP (``SpatialGatingUnit``:
  ``x.chunk(2, dim=-1)``, ``nn.Conv1d(seq_len, seq_len, 1)`` zero weight, unit bias), ResMLP (``Affine``,
  the cross-patch Linear on ``x.transpose(1, 2)``).
- MaxViT (timm ``maxxvit.py``): MBConv with squeeze-excitation, block and grid partitions (``view``/``permute``/
  ``reshape``) and their inverses, the relative position bias table indexed by a registered buffer built by
  ``torch.meshgrid(..., indexing="ij")``, ``torch.flatten`` and in-place index arithmetic, stochastic depth.

Stochastic depth runs timm's ``drop_path`` in train mode with fed masks (kiln's generator draws other numbers than
torch's); the drawn path (``x.new_empty(shape).bernoulli_(keep_prob)``, ``div_``) is checked for what it computes.
CaiT's and MaxViT's eval forward also go through ``kiln.compile`` and ``kiln.onnx.export`` (onnxruntime, float32:
it has no float64 Conv).

What broke:

- Version counting per storage (``frontend/version_counter.py``). The first draft fed ``drop_path`` rows popped from
  one mask tensor (``masks.unbind(0)``) and divided each in place (``random_tensor.div_(keep_prob)``) after
  ``x * random_tensor`` had saved the row before: torch refuses at ``backward()`` (one version counter per storage),
  kiln computed gradients, as it counted a write only on the views whose values changed, and forgot views already
  collected. Conversely kiln refused a view read after a disjoint write (``a, b = m.unbind(0); b.div_(2); x * a``),
  which torch computes. Fixed; tested in ``tests/runtime/test_version_counter_shared_storage_vs_torch.py`` and below
  (``test_drop_path_on_rows_of_one_mask_tensor_is_refused_as_torch``); the fed rows are now copies, as ``new_empty``'s.
- ``np.random``/``random`` draws inside ``kiln.compile`` (timm's ``Mixup``: ``np.random.beta`` for ``lam``,
  ``np.random.randint`` for the CutMix box) were traced as constants: every call repeated the first call's mix. The
  trace is refused now (``frontend/host_random_draws.py``): eager with a warning, ``fullgraph=True`` raises
  (``tests/runtime/test_compile_host_random_draws_vs_torch.py``, and the DeiT step with timm's drawing Mixup inside
  ``kiln.compile`` below). The other runs call the Mixup (fed ``lam``) before the compiled step, as timm's loop calls
  ``mixup_fn`` before the model.

A compiled call popping Python values from a list it reaches (the Mixup's fed parameters ``self.fed.pop(0)``, the
Mixup itself compiled) reused the first trace's value at every call, the list popped once; the list is now replayed
whole and guarded, so each call traces with its own value as torch.compile's
(``test_compiled_mixup_popping_its_fed_params_as_torch``, ``runtime/container_stores.py``).

Everything else (all five families, eager and compiled, float64 and float32, ONNX) agreed as first written.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.pvt_mixer_maxvit_program import (PVT_IMAGE, conv_mixer, gmlp, grid_partition, grid_reverse, maxvit, pvt,
                                          resmlp, window_partition, window_reverse)
from e2e.vit_variants_program import (BATCH, CHANNELS, CLASSES, IMAGE, cait, conv_teacher, deit_distilled,
                                      distillation_loss, param_groups_weight_decay, soft_target_cross_entropy,
                                      timm_cosine_scheduler, timm_layers, timm_mixup)
from kiln.frontend.host_random_draws import HostRandomDrawError
from oracles import libraries, require

MASKS = 8  # drop_path calls per forward, at most


def _batches(steps, dtype=np.float64, image=IMAGE):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, BATCH, CHANNELS, image, image)).astype(dtype)
    y = rng.integers(0, CLASSES, (steps, BATCH))
    masks = (rng.random((steps, MASKS, BATCH)) < 0.7).astype(dtype)
    masks[:, :, 0], masks[:, :, 1] = 0, 1  # a dropped and a kept sample in every call
    return x, y, masks


def cross_entropy_loss(torch, nn, F, model, x, y):
    return nn.CrossEntropyLoss(label_smoothing=0.1)(model(x), y)


def train_classifier(loss_of=cross_entropy_loss, steps=3, compiled=False, dtype=np.float64, max_norm=0.05,
                     prepare=None, image=IMAGE):
    """timm's ``train_one_epoch``: AdamW (weight decay 0.05 but on 1-D parameters, biases and ``no_weight_decay()``'s:
    timm's ``param_groups_weight_decay``), ``CosineLRScheduler.step_update`` after each update,
    ``clip_grad_norm_`` (max_norm small enough to clip); with ``compiled`` kiln's whole step is one
    ``kiln.compile(fullgraph=True)`` graph. ``prepare(torch, x, y)`` (DeiT's Mixup) runs eagerly before each step, as
    timm's loop calls ``mixup_fn`` before the model."""
    x, y, masks = _batches(steps, dtype, image)

    def train(torch, nn, F, model):
        np.random.seed(0)  # timm's rand_bbox draws from np.random
        skip = model.no_weight_decay() if hasattr(model, 'no_weight_decay') else ()
        optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.05, skip), lr=2e-3)
        scheduler = timm_cosine_scheduler(optimizer, t_initial=steps)
        drop_paths = [m for m in model.modules() if type(m).__name__ == "DropPath"]
        record = {"losses": [], "lrs": []}

        def step(images, targets, step_masks):
            if drop_paths:
                type(drop_paths[0]).fed_masks = list(step_masks.unbind(0))
            loss = loss_of(torch, nn, F, model, images, targets)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
            if not compiled:
                record.setdefault("grads", gradients(model))
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        model.train()
        for i in range(steps):
            images, targets = torch.tensor(x[i]), torch.tensor(y[i])
            if prepare is not None:
                images, targets = prepare(torch, images, targets)
            record["losses"].append(run(images, targets, torch.tensor(masks[i])).item())
            scheduler.step_update(num_updates=i + 1)
            record["lrs"].append([group["lr"] for group in optimizer.param_groups])
        model.eval()
        with torch.no_grad():
            record["eval_output"] = array(model(torch.tensor(x[0])))
        record["state"] = snapshot(model)
        return record

    return train


MODELS = {"cait": cait, "pvt": pvt, "convmixer": conv_mixer, "gmlp": gmlp, "resmlp": resmlp, "maxvit": maxvit}
IMAGES = {"pvt": PVT_IMAGE}


@pytest.mark.parametrize("name", list(MODELS))
def test_trains_eagerly_as_torch(float64_default, name):
    ours, theirs = run_in_lockstep(MODELS[name], train_classifier(image=IMAGES.get(name, IMAGE)))
    assert_same_records(ours, theirs)
    assert np.isfinite(theirs["losses"]).all() and theirs["lrs"][0][1] > theirs["lrs"][-1][1]


@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_step_as_torch(float64_default, name):
    ours, theirs = run_in_lockstep(MODELS[name], train_classifier(compiled=True, image=IMAGES.get(name, IMAGE)))
    assert_same_records(ours, theirs)


# --- DeiT: distillation token, DistillationLoss, Mixup / CutMix ----------------------------------------------------


def _teacher_state(torch, nn, F):
    rng = np.random.default_rng(1)
    state = conv_teacher(torch, nn, F).state_dict()
    return {key: torch.tensor(rng.standard_normal(tuple(value.shape))) for key, value in state.items()}


def deit_training(distillation_type, compiled=False, mixup=True):
    """deit ``main.py``: ``Mixup`` (mixup, then CutMix, then ``lam == 1``) before the step, ``SoftTargetCrossEntropy``
    as the base criterion inside ``DistillationLoss`` with a frozen teacher."""
    mixers, criteria = {}, {}

    def prepare(torch, images, targets):
        mixer = mixers.setdefault(torch.__name__, timm_mixup(torch))
        if not mixer.fed:
            mixer.fed = [(0.7, False), (0.6, True), (1.0, False)]
        return mixer(images, targets)

    def loss_of(torch, nn, F, model, images, targets):
        if torch.__name__ not in criteria:
            teacher = conv_teacher(torch, nn, F)
            teacher.load_state_dict(_teacher_state(torch, nn, F))
            teacher.eval()
            base = soft_target_cross_entropy(torch, nn, F)() if mixup else nn.CrossEntropyLoss()
            criteria[torch.__name__] = distillation_loss(torch, nn, F)(base, teacher, distillation_type, alpha=0.5,
                                                                      tau=2.0)
        return criteria[torch.__name__](images, model(images), targets)

    return train_classifier(loss_of, compiled=compiled, prepare=prepare if mixup else None)


@pytest.mark.parametrize("distillation_type", ["soft", "hard"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_deit_distillation_with_mixup_as_torch(float64_default, distillation_type, compiled):
    ours, theirs = run_in_lockstep(deit_distilled, deit_training(distillation_type, compiled))
    assert_same_records(ours, theirs)
    assert theirs["eval_output"].shape == (BATCH, CLASSES)


def deit_step_with_mixup_inside(compile_options):
    """The whole step, timm's Mixup included (``lam`` from ``np.random.beta``), under ``kiln.compile(step,
    **compile_options)`` in kiln and eager in torch."""
    x, y, _ = _batches(3)

    def train(torch, nn, F, model):
        np.random.seed(0)
        mixup_fn = timm_mixup(torch)
        criterion = soft_target_cross_entropy(torch, nn, F)()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)

        def step(images, targets):
            images, targets = mixup_fn(images, targets)
            outputs, outputs_dist = model(images)
            loss = criterion(outputs, targets) + criterion(outputs_dist, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, **compile_options) if torch is kiln else step
        model.train()
        losses = [run(torch.tensor(x[i]), torch.tensor(y[i])).item() for i in range(3)]
        return {"losses": losses, "state": snapshot(model)}

    return train


def test_deit_step_with_timms_mixup_inside_kiln_compile_as_torch(float64_default):
    """timm's Mixup draws ``lam`` from ``np.random`` inside the step: ``kiln.compile(step)`` runs it eagerly (warned),
    drawing anew at each step as torch's eager loop (a trace would keep the first draw); ``fullgraph=True`` refuses
    (``torch.compile(fullgraph=True)`` refuses ``np.random`` too)."""
    with pytest.warns(UserWarning, match="np.random's global generator"):
        ours, theirs = run_in_lockstep(deit_distilled, deit_step_with_mixup_inside({}))
    assert_same_records(ours, theirs)
    with pytest.raises(HostRandomDrawError, match="np.random's global generator"):
        run_in_lockstep(deit_distilled, deit_step_with_mixup_inside(dict(fullgraph=True)))


def test_compiled_mixup_popping_its_fed_params_as_torch(float64_default):
    x, y, _ = _batches(1)
    results = {}
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        mixer = timm_mixup(torch)
        mixer.fed = [(0.7, False), (0.5, False), (0.9, False)]
        run = kiln.compile(mixer) if torch is kiln else mixer
        results[name] = {f"{kind} {i}": array(t) for i in range(3)
                         for kind, t in zip(("images", "targets"), run(torch.tensor(x[0]), torch.tensor(y[0])))}
        results[name]["left"] = len(mixer.fed)
    assert_same_records(results["kiln"], results["torch"])


def test_mixup_and_cutmix_as_torch(float64_default):
    """timm's Mixup alone: the mixed images and the smoothed soft targets for mixup, CutMix (box from np.random,
    lam corrected by its area) and lam == 1."""
    x, y, _ = _batches(1)
    results = {}
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        np.random.seed(3)
        mixer = timm_mixup(torch)
        mixer.fed = [(0.7, False), (0.5, True), (1.0, True)]
        results[name] = {f"{kind} {i}": array(t) for i in range(3)
                         for kind, t in zip(("images", "targets"), mixer(torch.tensor(x[0]), torch.tensor(y[0])))}
    assert_same_records(results["kiln"], results["torch"])
    mixed, target = results["torch"]["images 1"], results["torch"]["targets 1"]
    assert not np.allclose(mixed, x[0]) and np.allclose(target.sum(1), 1)


# --- pieces checked on their own ------------------------------------------------------------------------------------


def test_drop_path_on_rows_of_one_mask_tensor_is_refused_as_torch():
    """The first draft's fed masks: rows of one tensor, each divided in place after the previous row was saved by
    ``x * random_tensor``; ``backward()`` refuses in both (one version counter per storage)."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        x = torch.ones(4, 3, requires_grad=True)
        rows = list(torch.tensor(np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])).unbind(0))
        y = x
        for _ in range(2):
            random_tensor = rows.pop(0).reshape(4, 1)
            random_tensor.div_(0.75)
            y = y * random_tensor
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_partitions_invert_and_relative_position_index_as_torch():
    """MaxViT's block and grid partitions against a NumPy oracle, each inverse gives the input back, and the
    relative position index buffer is torch's."""
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float64).reshape(2, 4, 4, 3)
    blocks = x.reshape(2, 2, 2, 2, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 4, 3)
    grids = x.reshape(2, 2, 2, 2, 2, 3).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 4, 3)
    indexes = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        tensor = torch.tensor(x)
        np.testing.assert_array_equal(array(window_partition(tensor, 2)), blocks)
        np.testing.assert_array_equal(array(grid_partition(tensor, 2)), grids)
        np.testing.assert_array_equal(array(window_reverse(window_partition(tensor, 2), 2, 4, 4)), x)
        np.testing.assert_array_equal(array(grid_reverse(grid_partition(tensor, 2), 2, 4, 4)), x)
        indexes.append(array(maxvit(torch, nn, F).stages[0].attn_block.attn.relative_position_index))
    np.testing.assert_array_equal(indexes[0], indexes[1])
    assert indexes[0].dtype == np.int64 and indexes[0].shape == (4, 4)


def test_drop_path_draws_per_sample():
    """timm's ``drop_path`` as drawn (``new_empty(shape).bernoulli_(keep_prob)``, ``div_``): each sample is dropped
    or kept and scaled by 1 / keep_prob; eval mode returns the input."""
    torch, nn, F = libraries("kiln")
    drop_path = timm_layers(torch, nn, F)[0]
    x = torch.ones(64, 3, 2)
    out = array(drop_path(x, 0.25, training=True))
    per_sample = out.reshape(64, -1)
    assert np.all((per_sample == 0).all(1) | np.isclose(per_sample, 1 / 0.75).all(1))
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert drop_path(x, 0.25, training=False) is x


def test_pvt_position_embedding_interpolated_for_another_size_as_torch(float64_default):
    """PVT's ``_get_pos_embed`` at a 24x24 image (both stages' position embeddings resized by bilinear
    ``F.interpolate``): the eval output and the gradients of the position embeddings."""

    def train(torch, nn, F, model):
        x = torch.tensor(np.random.default_rng(2).standard_normal((2, CHANNELS, 24, 24)))
        model.eval()
        out = model(x)
        out.square().sum().backward()
        return {"output": array(out), "grads": gradients(model)}

    ours, theirs = run_in_lockstep(pvt, train)
    assert_same_records(ours, theirs)


# --- float32, kiln.compile inference and ONNX -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cait", "maxvit"])
def test_float32_compiled_step_as_torch(name):
    """Float32 at its level. MBConv's ``pre_norm`` bias is cancelled by ``norm1`` (through the bias-free 1x1 conv):
    its gradient is rounding noise, which AdamW turns into steps of up to ~1e-5 here, differently in each library;
    it is compared to 1e-4 absolute (in float64 the noise is ~1e-17 and it agrees to 1e-10 with the rest)."""
    ours, theirs = run_in_lockstep(MODELS[name], train_classifier(compiled=True, dtype=np.float32))
    assert ours["eval_output"].dtype == theirs["eval_output"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5, looser={"pre_norm.bias": dict(rtol=0, atol=1e-4)})


@pytest.mark.parametrize("name", ["cait", "maxvit"])
def test_eval_forward_compiled_and_through_onnx_as_torch(name):
    """The eval forward (float32) through ``kiln.compile(model, fullgraph=True)`` and through ``kiln.onnx.export``
    run by onnxruntime, against torch's eval forward."""
    onnxruntime = require("onnxruntime")
    x = np.random.default_rng(4).standard_normal((BATCH, CHANNELS, IMAGE, IMAGE)).astype(np.float32)

    def evaluate(torch, nn, F, model):
        model.eval()
        with torch.no_grad():
            eager = array(model(torch.tensor(x)))
        if torch is not kiln:
            return {"compiled": eager, "onnx": eager}
        with torch.no_grad():
            compiled = array(kiln.compile(model, fullgraph=True)(torch.tensor(x)))
        buffer = io.BytesIO()
        kiln.onnx.export(model, (torch.tensor(x),), buffer, input_names=["x"], output_names=["logits"])
        onnx = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"x": x})[0]
        return {"compiled": compiled, "onnx": onnx}

    ours, theirs = run_in_lockstep(MODELS[name], evaluate)
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)
