"""Porting probes: TabNet, N-BEATS and MAE, each written once as its reference writes it (``torch`` is ``torch`` or
``kiln``) and run in both from kiln's initial weights: first outputs, first gradients, losses, the state after a few
steps (BatchNorm buffers included) and what the trained model computes agree to 1e-10 in float64, eagerly and with the
whole step one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop; float32 at float32's level; TabNet,
the MAE encoder and the whole MAE (its noise draw an input) also through ``kiln.onnx.export`` in onnxruntime against
torch.

- TabNet (dreamquark-ai/tabnet ``sparsemax.py``, ``tab_network.py``, ``abstract_model.py``, ``utils.py``):
  ``Sparsemax`` and ``Entmax15`` as ``torch.autograd.Function``s (``ctx.dim``, ``save_for_backward``, ``input -=
  max_val``, ``_threshold_and_support`` by ``torch.sort(descending=True)``, ``cumsum``, ``_make_ix_like``'s ``arange``
  ``view`` + ``transpose``, ``gather``, ``tau /= ...``, ``clamp``; the backward's ``grad_input[output == 0] = 0``,
  ``torch.where``), ``GBN`` (``x.chunk(int(np.ceil(x.shape[0] / vbs)), 0)``: chunks of 4, 4, 2, then ``torch.cat``),
  shared and independent GLU blocks scaled by ``torch.sqrt(torch.FloatTensor([0.5]).to(x.device))`` (a float32
  tensor times float64 activations in the float64 runs), ``initialize_glu``/``initialize_non_glu`` (``xavier_normal_``
  with NumPy gains), the attentive transformer and ``prior = torch.mul(self.gamma - M, prior)``, ``M_loss``, the
  v4 group attention matrix, ``EmbeddingGenerator`` (bool ``continuous_idx`` set by a list index, its
  ``embedding_group_matrix`` filled element by element, ``x[:, i].float().view(-1, 1)`` and embeddings of
  ``x[:, i].long()`` concatenated), ``_train_batch`` (``param.grad = None``, ``loss - lambda_sparse * M_loss``,
  ``clip_grad_norm_``), Adam with ``StepLR``, ``explain`` (``forward_masks`` with ``M_explain +=``, kiln.compile'd in
  the compiled runs; the reducing matrix, ``normalize``) and ``predict_proba``; self-supervised pretraining
  (``TabNetPretraining``: ``RandomObfuscator``'s ``(group_matrix > 0) + 0.`` and ``torch.bernoulli`` draw, fed; the
  encoder's ``prior = 1 - obfuscated_groups``, ``TabNetDecoder``; metrics.py's ``UnsupervisedLoss`` with
  ``batch_means[batch_means == 0] = 1`` and ``batch_stds[batch_stds == 0] = batch_means[batch_stds == 0]`` over a
  constant column).
- N-BEATS (philipperemy/n-beats ``model.py``; ElementAI/N-BEATS ``losses.py`` and ``trainer.py``): trend (``np.array([t
  ** i ...])`` basis), seasonality (cos/sin bases) and generic blocks, shared thetas (``self.theta_f_fc =
  self.theta_b_fc = ...``), shared blocks in a stack, blocks kept in plain lists with their parameters in
  ``self.parameters = nn.ParameterList(self.parameters)`` (a submodule named like the method), the doubly residual
  stacking, ``squeeze_last_dim``, intermediate outputs by ``f.detach().numpy()``; MAPE, SMAPE (``forecast.data``) and
  MASE with ``divide_no_nan`` (``result[result != result] = .0; result[result == np.inf] = .0``, zero targets in every
  batch); Adam, ``clip_grad_norm_``, ``float(training_loss)``, ``param_group["lr"]`` decayed between (compiled) steps;
  ElementAI's own ``NBeats`` (``x.flip(dims=(1,))``, ``x[:, -1:]``, ``(residuals - backcast) * input_mask``), its
  generic basis (``theta[:, -forecast_size:]``) and interpretable bases (polynomial and Fourier templates as frozen
  ``nn.Parameter``s, ``t.einsum('bp,pt->bt', ...)``), the interpretable model's blocks repeated in one ``ModuleList``
  (shared weights: ``state_dict`` names each entry, ``parameters()`` each tensor once).
- MAE (facebookresearch/mae ``models_mae.py``, ``util/pos_embed.py``, ``util/lr_decay.py``, ``util/lr_sched.py``): 2-D
  sin-cos tables copied by ``.data.copy_(torch.from_numpy(...).float().unsqueeze(0))`` into frozen parameters,
  ``xavier_uniform_(w.view([w.shape[0], -1]))`` of the patch conv's ``.data``, ``normal_(std=.02)`` tokens,
  ``self.apply(self._init_weights)``, ``random_masking`` (the noise fed: the libraries' ``torch.rand`` differ;
  ``argsort`` twice, ``gather`` with ``unsqueeze(-1).repeat(1, 1, D)``, ``mask[:, :len_keep] = 0``), ``cls_token
  .expand``, ``mask_token.repeat``, the unshuffle by gather, ``patchify``/``unpatchify`` by ``einsum``,
  ``norm_pix_loss`` (``var``, ``** .5``), ``(loss * mask).sum() / mask.sum()``; engine_pretrain.py's loop with
  ``accum_iter`` 2 (``torch.cuda.amp.autocast()``, ``loss /= accum_iter``, misc.py's ``NativeScalerWithGradNormCount``
  over a disabled ``GradScaler`` with ``get_grad_norm_``, ``update_grad`` every other call: in the compiled runs two
  variants of one compiled step, the gradients accumulating between calls), AdamW over ``param_groups_lrd``'s
  layer-wise groups (``lr_scale`` keys) with ``adjust_learning_rate`` between calls, inference by
  ``kiln.compile(model, fullgraph=True)`` in the compiled runs. Fine-tuning (models_vit.py, main_finetune.py): the
  pretraining checkpoint through ``torch.save``/``torch.load(map_location='cpu')`` into the global-pool ViT
  (``del self.norm``), ``interpolate_pos_embed`` (bicubic ``F.interpolate`` of the 4x4 table to 6x6),
  ``load_state_dict(strict=False)``'s ``missing_keys``/``unexpected_keys``, ``trunc_normal_`` of the head,
  ``LabelSmoothingCrossEntropy``, AdamW over ``param_groups_lrd``. misc.py's ``save_model``/``load_model``: the
  checkpoint (model, optimizer with its ``lr_scale`` groups, scaler, ``args``) through a buffer and one more step.

Adaptations: ``from torch.nn import Linear, ...`` is written ``Linear = torch.nn.Linear`` (an import names the real
module); philipperemy's N-BEATS bases are ``.double()`` and ElementAI's templates ``t.float64`` in the float64 runs
(the reference's float32 basis meets float64 thetas in ``mm``, which both libraries refuse: checked); ElementAI's
``np.float`` is ``np.float64``; MAE's ``random_masking`` takes the noise as an argument.

What broke: ``Sparsemax.__init__`` sets ``self.dim`` before ``super().__init__()``, which kiln refused (now a plain
attribute is kept and a parameter, buffer or submodule there raises torch's AttributeError; frontend/module.py,
tests/frontend/test_module_methods.py). N-BEATS' ``self.parameters = nn.ParameterList(...)`` shadowed the
``parameters`` method in kiln (kiln keeps registered entries in ``__dict__``; a name that is one of the class's
methods now stays in the registry only, as torch's; same files). The sparsemax ``Function``'s ``input -= max_val``
did not reach the caller's tensor in kiln, and kiln's ``custom.vjp`` read the input after the write, so its gradient
also ran through the write (harmless for sparsemax, whose gradient sums to zero over a row; 2x for ``input.mul_(2)``);
now the caller's tensor is written and the gradient is the backward's alone (frontend/custom_function.py,
tests/autodiff/test_custom_function.py, ``test_sparsemax_shifts_its_input_in_place_as_torch``). The compiled
pretraining step stopped at ``batch_means[batch_stds == 0]`` (a data-dependent shape, which kiln refused to trace;
torch.compile takes it): ``a[mask] = b[mask]`` under masks computed alike is now one ``where``
(frontend/pending_masked_rows.py, tests/frontend/test_pending_masked_rows_traced_vs_torch.py). The whole MAE's ONNX
file (its ``torch.rand`` a ``uniform.0`` input) did not load in onnxruntime: the seed input, made at the draw, sat
among the weights' inputs and shifted every later weight's name and shape; it now follows them (runtime/export.py,
tests/onnx/test_onnx_export_draw_before_weights.py). Everything else agreed as first written.
"""

from __future__ import annotations


import math

import numpy as np
import pytest

import kiln
from e2e.mae_program import (EMBED, IMG, MAE_BATCH, PATCH, adjust_learning_rate, interpolate_pos_embed,
                             label_smoothing_cross_entropy, mae, native_scaler, param_groups_lrd, vit_base)
from e2e.nbeats_program import BACKCAST, FORECAST, SERIES, elementai_nbeats, nbeats, nbeats_losses
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.tabnet_program import create_explain_matrix, sparsemax_module, tabnet
from oracles import libraries, require, require_torch


# --- TabNet: pytorch_tabnet/sparsemax.py -----------------------------------------------------------------------------


def test_sparsemax_shifts_its_input_in_place_as_torch(float64_default):
    """``SparsemaxFunction.forward``'s ``input -= max_val`` writes the caller's tensor (torch's forward shares its
    storage); the gradient is the reference backward's alone, to the tensor as it was (also for a later use of the
    shifted tensor); outputs sum to 1 and are sparse; ``Entmax15`` rebinds instead and leaves its input alone."""
    x0 = np.random.default_rng(4).standard_normal((4, 6)) * 2
    weights = np.random.default_rng(5).standard_normal((4, 6))
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        Sparsemax, Entmax15 = sparsemax_module(torch, nn, F)
        record = {}
        for selector in (Sparsemax(dim=-1), Entmax15(dim=-1)):
            leaf = torch.tensor(x0, requires_grad=True)
            x = leaf * 1
            out = selector(x)
            ((out * torch.tensor(weights)).sum() + (x * x).sum()).backward()
            kind = type(selector).__name__
            record[kind] = {"out": array(out), "x after": array(x), "grad": array(leaf.grad)}
        records.append(record)
    assert_same_records(records[0], records[1])
    ours = records[0]
    np.testing.assert_allclose(ours["Sparsemax"]["x after"], x0 - x0.max(-1, keepdims=True))
    np.testing.assert_allclose(ours["Entmax15"]["x after"], x0)
    for kind in ("Sparsemax", "Entmax15"):
        np.testing.assert_allclose(ours[kind]["out"].sum(-1), 1.0)
        assert (ours[kind]["out"] == 0).any()


# --- TabNet: pytorch_tabnet/tab_network.py ---------------------------------------------------------------------------


TABNET_ROWS, TABNET_BATCH = 20, 10


def _tabular_data(rows=TABNET_ROWS, seed=0):
    """Six columns, the 2nd (4 levels) and 5th (3 levels) categorical as float codes (as a NumPy matrix holds them),
    three classes that depend on both kinds."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 6))
    X[:, 1] = rng.integers(0, 4, rows)
    X[:, 4] = rng.integers(0, 3, rows)
    y = ((X[:, 0] > 0).astype(int) + (X[:, 1] >= 2) + (X[:, 4] == 2)) % 3
    return X, y


def train_tabnet(epochs=2, compiled=False, lambda_sparse=1e-3, clip_value=1):
    """abstract_model.py's ``_train_batch`` (``param.grad = None``, ``loss - lambda_sparse * M_loss``,
    ``clip_grad_norm_``, Adam) over batches of ``TABNET_BATCH`` (ghost batches of 4: chunks 4, 4, 2), ``StepLR`` per
    epoch, then ``explain`` (``forward_masks`` in eval mode, the reducing matrix, ``normalize``) and ``predict_proba``;
    with ``compiled`` kiln's whole batch step is one ``kiln.compile(fullgraph=True)`` graph."""
    X, y = _tabular_data()

    def train(torch, nn, F, network):
        optimizer = torch.optim.Adam(network.parameters(), lr=2e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
        loss_fn = torch.nn.functional.cross_entropy
        record = {"losses": []}
        with torch.no_grad():
            network.eval()
            output, M_loss = network(torch.tensor(X).float())
            record["first_output"], record["first_M_loss"] = array(output), M_loss.item()
            network.train()

        def compute_loss(y_pred, y_true):
            return loss_fn(y_pred, y_true.long())

        def _train_batch(X, y):
            X = X.to("cpu").float()
            y = y.to("cpu").float()
            for param in network.parameters():
                param.grad = None
            output, M_loss = network(X)
            loss = compute_loss(output, y)
            # Add the overall sparsity loss
            loss = loss - lambda_sparse * M_loss
            loss.backward()
            if not compiled and "grads" not in record:
                record["grads"] = gradients(network)
            if clip_value:
                torch.nn.utils.clip_grad_norm_(network.parameters(), clip_value)
            optimizer.step()
            return loss

        run = kiln.compile(_train_batch, fullgraph=True) if compiled and torch is kiln else _train_batch
        for epoch in range(epochs):
            for start in range(0, TABNET_ROWS, TABNET_BATCH):
                loss = run(torch.tensor(X[start:start + TABNET_BATCH]), torch.tensor(y[start:start + TABNET_BATCH]))
                record["losses"].append(loss.cpu().detach().numpy().item())
            scheduler.step()
        record["state"] = snapshot(network)
        forward_masks = kiln.compile(network.forward_masks) if compiled and torch is kiln else network.forward_masks
        record["explain"], record["masks"] = explain(torch, network, X, forward_masks)
        with torch.no_grad():
            record["proba"] = array(torch.nn.Softmax(dim=1)(network(torch.tensor(X).float())[0]))
        return record

    return train


def UnsupervisedLoss(torch, y_pred, embedded_x, obf_vars, eps=1e-9):
    """pytorch_tabnet/metrics.py's pretraining loss: the reconstruction error of the obfuscated variables, each
    normalised by the batch's variance of that variable."""
    errors = y_pred - embedded_x
    reconstruction_errors = torch.mul(errors, obf_vars) ** 2
    batch_means = torch.mean(embedded_x, dim=0)
    batch_means[batch_means == 0] = 1

    batch_stds = torch.std(embedded_x, dim=0) ** 2
    batch_stds[batch_stds == 0] = batch_means[batch_stds == 0]
    features_loss = torch.matmul(reconstruction_errors, 1 / batch_stds)
    # compute the number of obfuscated variables to reconstruct
    nb_reconstructed_variables = torch.sum(obf_vars, dim=1)
    # take the mean of the reconstructed variable errors
    features_loss = features_loss / (nb_reconstructed_variables + eps)
    # here we take the mean per batch, contrary to the paper
    loss = torch.mean(features_loss)
    return loss


def train_tabnet_pretraining(epochs=2, compiled=False):
    """pretraining.py's ``_train_batch`` (``param.grad = None``, ``output, embedded_x, obf_vars =
    self.network(X)``, ``UnsupervisedLoss``, Adam) on data with a constant column (``batch_stds == 0``: the means
    replace it, one of them 0 and so 1); the obfuscation draws fed; eval-mode reconstruction after."""
    X, _ = _tabular_data()
    X[:, 3] = 0.0  # a constant continuous column: its variance is 0 and its mean 0
    groups = (np.random.default_rng(7).random((epochs * TABNET_ROWS // TABNET_BATCH, TABNET_BATCH, 6)) < 0.5)

    def train(torch, nn, F, network):
        optimizer = torch.optim.Adam(network.parameters(), lr=2e-2)
        record = {"losses": []}

        def _train_batch(X, obfuscated_groups):
            X = X.to("cpu").float()
            network.masker.fed_groups = obfuscated_groups
            for param in network.parameters():
                param.grad = None
            output, embedded_x, obf_vars = network(X)
            loss = UnsupervisedLoss(torch, output, embedded_x, obf_vars)
            loss.backward()
            if not compiled and "grads" not in record:
                record["grads"] = gradients(network)
            optimizer.step()
            return loss

        run = kiln.compile(_train_batch, fullgraph=True) if compiled and torch is kiln else _train_batch
        network.train()
        batch = 0
        for epoch in range(epochs):
            for start in range(0, TABNET_ROWS, TABNET_BATCH):
                fed = torch.tensor(groups[batch]).to(torch.get_default_dtype())  # as bernoulli of torch.ones draws
                loss = run(torch.tensor(X[start:start + TABNET_BATCH]), fed)
                record["losses"].append(loss.item())
                batch += 1
        record["state"] = snapshot(network)
        network.eval()
        with torch.no_grad():
            res, embedded_x, ones = network(torch.tensor(X).float())
            record["eval"] = {"res": array(res), "embedded": array(embedded_x), "ones": array(ones),
                              "loss": UnsupervisedLoss(torch, res, embedded_x, ones).item()}
        return record

    return train


def _tabnet_pretraining(torch, nn, F):
    return tabnet(torch, nn, F, pretraining=True)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_tabnet_pretraining_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(_tabnet_pretraining, train_tabnet_pretraining(compiled=compiled))
    assert_same_records(ours, theirs)


def explain(torch, network, X, forward_masks, normalize=True):
    """abstract_model.py's ``explain`` over one batch (``forward_masks`` is the network's, or kiln's compiled)."""
    network.eval()
    reducing_matrix = create_explain_matrix(network.input_dim, network.cat_emb_dim, network.cat_idxs,
                                            network.post_embed_dim)
    data = torch.tensor(X).float()
    M_explain, masks = forward_masks(data)
    for key, value in masks.items():
        masks[key] = value.cpu().detach().numpy() @ reducing_matrix
    res_explain = M_explain.cpu().detach().numpy() @ reducing_matrix
    if normalize:
        res_explain /= np.sum(res_explain, axis=1)[:, None]
    return res_explain, masks


@pytest.mark.parametrize("mask_type", ["sparsemax", "entmax"])
def test_tabnet_trains_as_torch(float64_default, mask_type):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: tabnet(torch, nn, F, mask_type=mask_type), train_tabnet())
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("mask_type", ["entmax"])  # sparsemax's compiled step: test_tabnet_pretraining_as_torch
def test_tabnet_compiled_step_as_torch(float64_default, mask_type):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: tabnet(torch, nn, F, mask_type=mask_type),
                                   train_tabnet(compiled=True))
    assert_same_records(ours, theirs)


def test_tabnet_float32_as_torch():
    """float32 (``X.float()`` as the reference feeds it), the compiled step against torch's eager loop over one epoch:
    the ghost batch of two rows normalises each column to about +-1, so its gradient is mostly rounding, which Adam
    turns into steps; the two libraries' float32 trajectories separate about tenfold a step after that (eagerly too)."""
    ours, theirs = run_in_lockstep(tabnet, train_tabnet(epochs=1, compiled=True))
    assert ours["proba"].dtype == theirs["proba"].dtype == np.float32
    sparse = dict(rtol=1e-3, atol=5e-5)  # sparsemax's threshold moves with the rounding of every entry of its row
    assert_same_records(ours, theirs, rtol=2e-5, atol=1e-5, looser={"explain": sparse, "masks": sparse})


def onnx_matches_torch(build, train, inputs, export_dir, rtol=1e-5, atol=1e-6, wrap=None, **export_options):
    """``build`` trained by ``train`` in kiln, written by ``kiln.onnx.export`` (eval mode; ``wrap(lib, nn, model)``
    the module exported, if given) and run by onnxruntime on ``inputs`` (NumPy arrays), gives the outputs of torch's
    twin holding kiln's trained state in eval mode."""
    ort = require("onnxruntime")
    wrap = wrap or (lambda lib, nn, model: model)
    kiln.manual_seed(0)
    model = build(*libraries("kiln"))
    train(*libraries("kiln"), model)
    model.eval()
    path = str(export_dir / "model.onnx")
    kiln.onnx.export(wrap(kiln, kiln.nn, model), tuple(kiln.tensor(x) for x in inputs), path, **export_options)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {given.name: x for given, x in zip(session.get_inputs(), inputs)})
    torch, nn, F = libraries("torch")
    twin = build(torch, nn, F)
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    with torch.no_grad():
        expected = wrap(torch, nn, twin.eval())(*[torch.tensor(x) for x in inputs])
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(outputs) == len(expected)
    for output, value in zip(outputs, expected):
        assert output.dtype == array(value).dtype
        np.testing.assert_allclose(output, array(value), rtol=rtol, atol=atol)


def test_tabnet_exports_to_onnx_with_torchs_outputs(tmp_path):
    """The trained float32 TabNet (embeddings, ghost batch norm in eval, sparsemax's sort/cumsum/gather) in
    onnxruntime gives torch's logits and ``M_loss``."""
    require_torch()
    X = _tabular_data(rows=7, seed=3)[0].astype(np.float32)
    onnx_matches_torch(tabnet, train_tabnet(epochs=1), [X], tmp_path, input_names=["X"])


# --- N-BEATS: ElementAI/N-BEATS common/torch/losses.py and experiments/trainer.py ---------------------------------


def _series_windows(steps, dtype=np.float64):
    """``steps`` batches of (insample, insample mask, target, target mask): trend + season + noise; a zero target in
    every batch (MAPE's ``mask / target`` is inf there, SMAPE's 0/0 where the forecast is 0 too), masked-out history
    and horizon entries (short series)."""
    rng = np.random.default_rng(1)
    time = np.arange(BACKCAST + FORECAST)
    batches = []
    for _ in range(steps):
        level, slope, phase = rng.uniform(1, 3, (3, SERIES, 1))
        series = level + 0.1 * slope * time + np.sin(2 * np.pi * time / 4 + phase) + 0.1 * rng.standard_normal(
            (SERIES, BACKCAST + FORECAST))
        x, y = series[:, :BACKCAST].copy(), series[:, BACKCAST:].copy()
        x_mask, y_mask = np.ones_like(x), np.ones_like(y)
        x[0, :3], x_mask[0, :3] = 0, 0
        y[1, 2] = 0
        y[2, 3], y_mask[2, 3] = 0, 0
        batches.append(tuple(value.astype(dtype) for value in (x, x_mask, y, y_mask)))
    return batches


def train_nbeats(loss_name="MAPE", iterations=4, compiled=False, dtype=np.float64, learning_rate=1e-3,
                 elementai=False):
    """trainer.py's loop: Adam, ``clip_grad_norm_(..., 1.0)``, the loss NaN check by ``float(training_loss)``, the
    step decay of ``param_group["lr"]`` after each step, on philipperemy's model (``_, forecast = model(x)``) or,
    with ``elementai``, ElementAI's (``forecast = model(x, x_mask)``); with ``compiled`` kiln's zero_grad-to-step is
    one ``kiln.compile(fullgraph=True)`` graph."""
    batches = _series_windows(iterations, dtype)

    def train(t, nn, F, model):
        to_tensor = t.tensor
        optimizer = t.optim.Adam(model.parameters(), lr=learning_rate)
        training_loss_fn = nbeats_losses(t)(loss_name)
        timeseries_frequency = 2
        lr_decay_step = iterations // 3
        if lr_decay_step == 0:
            lr_decay_step = 1
        record = {"losses": [], "lrs": []}
        with t.no_grad():
            if elementai:
                record["first_output"] = array(model(to_tensor(batches[0][0]), to_tensor(batches[0][1])))
            else:
                record["first_output"] = dict(zip(("backcast", "forecast"),
                                                  map(array, model(to_tensor(batches[0][0])))))

        def step(x, x_mask, y, y_mask):
            optimizer.zero_grad()
            if elementai:
                forecast = model(x, x_mask)
            else:
                _, forecast = model(x)
            training_loss = training_loss_fn(x, timeseries_frequency, forecast, y, y_mask)
            training_loss.backward()
            if not compiled and "grads" not in record:
                record["grads"] = {str(i): array(p.grad) for i, p in enumerate(model.parameters()) if p.grad is not None}
            t.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return training_loss

        run = kiln.compile(step, fullgraph=True) if compiled and t is kiln else step
        for i in range(1, iterations + 1):
            model.train()
            x, x_mask, y, y_mask = map(to_tensor, batches[i - 1])
            training_loss = run(x, x_mask, y, y_mask)
            if np.isnan(float(training_loss)):
                break
            record["losses"].append(float(training_loss))
            for param_group in optimizer.param_groups:
                param_group["lr"] = learning_rate * 0.5 ** (i // lr_decay_step)
            record["lrs"].append(optimizer.param_groups[0]["lr"])
        record["state"] = snapshot(model)
        if elementai:
            return record
        model.eval()
        model._gen_intermediate_outputs = True
        with t.no_grad():
            model(to_tensor(batches[0][0][:1]))
        g_pred, i_pred, outputs = model.get_generic_and_interpretable_outputs()
        record["interpretable"] = {"generic": g_pred, "interpretable": i_pred, **outputs}
        return record

    return train


def _nbeats_float64(torch, nn, F, **options):
    return nbeats(torch, nn, F, basis_float=False, **options)


FLOAT_OF_LOSS = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")  # torch's


@FLOAT_OF_LOSS
@pytest.mark.parametrize("loss_name", ["MAPE", "SMAPE", "MASE"])
def test_nbeats_trains_as_torch(float64_default, loss_name):
    ours, theirs = run_in_lockstep(_nbeats_float64, train_nbeats(loss_name))
    assert_same_records(ours, theirs)
    assert ours["lrs"] == theirs["lrs"] == [1e-3 * 0.5 ** i for i in range(1, 5)]
    assert set(ours["state"]) == {f"parameters.{i}" for i in range(len(ours["state"]))}


@FLOAT_OF_LOSS
@pytest.mark.parametrize(("loss_name", "share_weights_in_stack"), [("SMAPE", False), ("MAPE", True)])
def test_nbeats_compiled_step_as_torch(float64_default, loss_name, share_weights_in_stack):
    """The compiled step reads each call's ``param_group["lr"]`` (set between steps by the decay); SMAPE's
    ``forecast.data`` is a constant in the graph as in torch's; shared blocks are called twice a forward."""
    ours, theirs = run_in_lockstep(
        lambda torch, nn, F: _nbeats_float64(torch, nn, F, share_weights_in_stack=share_weights_in_stack),
        train_nbeats(loss_name, compiled=True))
    assert_same_records(ours, theirs)


@FLOAT_OF_LOSS
def test_nbeats_float32_as_torch():
    """As written: float32 bases (``.float()``), float32 windows, the compiled step against torch's eager loop."""
    ours, theirs = run_in_lockstep(nbeats, train_nbeats("SMAPE", compiled=True, dtype=np.float32))
    assert ours["first_output"]["forecast"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def _elementai_float64(torch, nn, F, **options):
    return elementai_nbeats(torch, nn, F, basis_dtype=torch.float64, **options)


@FLOAT_OF_LOSS
@pytest.mark.parametrize(("interpretable", "loss_name", "compiled"),
                         [(True, "MASE", False), (True, "SMAPE", True), (False, "MAPE", True)],
                         ids=["interpretable-eager", "interpretable-compiled", "generic-compiled"])
def test_elementai_nbeats_trains_as_torch(float64_default, interpretable, loss_name, compiled):
    """The shared blocks appear once per ``ModuleList`` entry in ``state_dict`` (torch's keys) and once in
    ``parameters()``."""
    ours, theirs = run_in_lockstep(lambda torch, nn, F: _elementai_float64(torch, nn, F, interpretable=interpretable),
                                   train_nbeats(loss_name, compiled=compiled, elementai=True))
    assert_same_records(ours, theirs)
    if interpretable:
        assert {"blocks.0.basis_function.backcast_time", "blocks.1.basis_function.backcast_time",
                "blocks.3.basis_function.forecast_sin_template"} <= set(ours["state"])


def test_nbeats_float32_basis_with_float64_weights_is_refused_as_torch(float64_default):
    """The reference's ``.float()`` bases under float64 weights: ``thetas.mm(S)`` mixes dtypes, which torch's ``mm``
    refuses, and so does kiln."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        model = nbeats(torch, nn, F)
        with pytest.raises(RuntimeError, match="dtype"):
            model(torch.zeros(2, BACKCAST))


# --- MAE: facebookresearch/mae models_mae.py, util/pos_embed.py, util/lr_decay.py, util/lr_sched.py --------------


def _images(steps, dtype=np.float64):
    rng = np.random.default_rng(2)
    imgs = rng.standard_normal((steps, MAE_BATCH, 3, IMG, IMG)).astype(dtype)
    noises = rng.random((steps, MAE_BATCH, (IMG // PATCH) ** 2)).astype(dtype)
    return imgs, noises


AMP_ON_CPU = pytest.mark.filterwarnings("ignore:.*is deprecated. Please use", "ignore:.*CUDA is not available")


def train_mae(steps=4, compiled=False, dtype=np.float64):
    """engine_pretrain.py's ``train_one_epoch`` (``accum_iter`` 2: ``adjust_learning_rate`` every other iteration from
    ``data_iter_step / len(data_loader) + epoch``, ``torch.cuda.amp.autocast()``, ``loss /= accum_iter``, the loss
    scaler's ``update_grad`` every other call, ``optimizer.zero_grad()`` after it) with main_finetune.py's optimizer
    (``AdamW(param_groups_lrd(...))``, the per-group ``lr_scale``); with ``compiled`` kiln's forward-to-step is one
    ``kiln.compile(fullgraph=True)`` graph (two variants: with and without the update; the gradients accumulate across
    calls), its lr set between calls. Then ``unpatchify`` of the prediction, ``kiln.compile``d in the compiled runs."""
    import argparse

    imgs, noises = _images(steps, dtype)
    args = argparse.Namespace(lr=1e-2, min_lr=1e-4, warmup_epochs=1, epochs=2, mask_ratio=0.75, weight_decay=0.05,
                              accum_iter=2)

    def train(torch, nn, F, model):
        param_groups = param_groups_lrd(model, args.weight_decay, no_weight_decay_list={'pos_embed', 'cls_token'},
                                        layer_decay=0.75)
        optimizer = torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.95))
        loss_scaler = native_scaler(torch)
        record = {"losses": [], "lrs": [], "norms": []}
        with torch.no_grad():
            loss, pred, mask = model(torch.tensor(imgs[0]), mask_ratio=args.mask_ratio, noise=torch.tensor(noises[0]))
            record["first"] = {"loss": loss.item(), "pred": array(pred), "mask": array(mask)}

        def step(samples, noise, update_grad):
            with torch.cuda.amp.autocast():
                loss, _, _ = model(samples, mask_ratio=args.mask_ratio, noise=noise)
            loss /= accum_iter
            norm = loss_scaler(loss, optimizer, parameters=model.parameters(), update_grad=update_grad)
            if not compiled and "grads" not in record:
                record["grads"] = gradients(model)
            if update_grad:
                optimizer.zero_grad()
            return loss, norm

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        model.train(True)
        accum_iter = args.accum_iter
        optimizer.zero_grad()
        epoch, data_loader = 1, list(zip(imgs, noises))  # the epoch after the warmup: the cosine decay
        for data_iter_step, (samples, noise) in enumerate(data_loader):
            if data_iter_step % accum_iter == 0:
                lr = adjust_learning_rate(optimizer, data_iter_step / len(data_loader) + epoch, args)
                record["lrs"].append([group["lr"] for group in optimizer.param_groups])
            update_grad = (data_iter_step + 1) % accum_iter == 0
            loss, norm = run(torch.tensor(samples), torch.tensor(noise), update_grad)
            loss_value = loss.item() * accum_iter
            assert math.isfinite(loss_value)
            record["losses"].append(loss_value)
            if update_grad:
                record["norms"].append(norm.item())
        assert lr > 0
        record["state"] = snapshot(model)
        infer = kiln.compile(model, fullgraph=True) if compiled and torch is kiln else model
        with torch.no_grad():
            _, pred, mask = infer(torch.tensor(imgs[0]), mask_ratio=args.mask_ratio, noise=torch.tensor(noises[0]))
            record["reconstruction"] = array(model.unpatchify(pred))
        return record

    return train


def split_qkv_key_bias(record):
    """``split_key_bias`` for timm's fused ``qkv.bias``: the key third's gradient is rounding noise (softmax cancels
    ``q . b_k``), which AdamW turns into steps of ~1e-12 in float64, different in each library; compared looser."""
    state = dict(record["state"])
    for name in [name for name in state if name.endswith("qkv.bias")]:
        bias = state.pop(name)
        third = len(bias) // 3
        state[name + " (query, value)"] = np.concatenate([bias[:third], bias[2 * third:]])
        state[name.replace("qkv.bias", "key bias")] = bias[third:2 * third]
    return {**record, "state": state}


KEY_BIAS = {"key bias": dict(rtol=0, atol=1e-10)}


@AMP_ON_CPU
def test_mae_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mae, train_mae())
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)
    assert ours["first"]["mask"].sum(1).tolist() == [12.0] * MAE_BATCH
    assert len(ours["lrs"][0]) == 8  # layers 0 (cls token, patch embed) to 3 (norm, decoder), decay or not


@AMP_ON_CPU
def test_mae_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mae, train_mae(compiled=True))
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)


@AMP_ON_CPU
def test_mae_float32_as_torch():
    """As written (float32 sin-cos tables, images and weights), the compiled step against torch's eager loop."""
    ours, theirs = run_in_lockstep(lambda torch, nn, F: mae(torch, nn, F, norm_pix_loss=False),
                                   train_mae(compiled=True, dtype=np.float32))
    assert ours["reconstruction"].dtype == np.float32
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), rtol=2e-5, atol=2e-6,
                        looser={"key bias": dict(rtol=0, atol=3e-2)})  # up to lr a step in float32


def mae_encoder(torch, nn, model):
    """The encoder as deployed for features: ``forward_encoder(imgs, mask_ratio, noise)`` (masking by the fed noise)."""

    class Encoder(nn.Module):
        def __init__(self, mae):
            super().__init__()
            self.mae = mae

        def forward(self, imgs, noise):
            return self.mae.forward_encoder(imgs, 0.75, noise)

    return Encoder(model)


@AMP_ON_CPU
def test_mae_encoder_exports_to_onnx_with_torchs_outputs(tmp_path):
    """The trained float32 MAE encoder (patch conv, sin-cos positions, argsort masking, gathers, cls token, blocks)
    in onnxruntime gives torch's latent, mask and ``ids_restore``."""
    require_torch()
    imgs, noises = _images(1, np.float32)
    onnx_matches_torch(mae, train_mae(steps=1, dtype=np.float32), [imgs[0], noises[0]], tmp_path, wrap=mae_encoder,
                       input_names=["imgs", "noise"])


# --- MAE fine-tuning: models_vit.py, util/pos_embed.py's interpolate_pos_embed, main_finetune.py ---------------------


def finetune_mae(tmp_path, steps=2, compiled=False, img_size=12):
    """main_finetune.py after pretraining: the MAE checkpoint (``torch.save({'model': ...})``) loaded by
    ``torch.load(..., map_location='cpu')`` into models_vit's ViT at a larger image (positions interpolated 4x4 ->
    6x6), head keys of another shape removed, ``load_state_dict(strict=False)`` with its ``missing_keys`` asserted,
    ``trunc_normal_(model.head.weight, std=2e-5)`` (checked, then the head set from fed draws: the generators differ),
    AdamW over ``param_groups_lrd`` (the use it was written for), ``LabelSmoothingCrossEntropy``; with ``compiled`` the
    step is one ``kiln.compile(fullgraph=True)`` graph."""
    rng = np.random.default_rng(9)
    images = rng.standard_normal((steps, MAE_BATCH, 3, img_size, img_size))
    labels = rng.integers(0, 3, (steps, MAE_BATCH))
    head, head_bias = rng.standard_normal((3, EMBED)) * 2e-2, rng.standard_normal(3) * 0.1

    def train(torch, nn, F, pretrained):
        path = str(tmp_path / f"{torch.__name__}-checkpoint.pth")
        torch.save({"model": pretrained.state_dict(), "epoch": 1}, path)
        model = vit_base(torch, nn, F, img_size=img_size)
        checkpoint = torch.load(path, map_location='cpu')
        checkpoint_model = checkpoint['model']
        state_dict = model.state_dict()
        checkpoint_model['head.weight'] = torch.zeros(5, EMBED)  # a pretraining head of another size
        for k in ['head.weight', 'head.bias']:
            if k in checkpoint_model and checkpoint_model[k].shape != state_dict[k].shape:
                del checkpoint_model[k]
        interpolate_pos_embed(torch, model, checkpoint_model)
        msg = model.load_state_dict(checkpoint_model, strict=False)
        assert set(msg.missing_keys) == {'head.weight', 'head.bias', 'fc_norm.weight', 'fc_norm.bias'}
        assert 'decoder_embed.weight' in msg.unexpected_keys and 'norm.weight' in msg.unexpected_keys
        torch.nn.init.trunc_normal_(model.head.weight, std=2e-5)
        assert 5e-6 < float(model.head.weight.detach().std()) < 5e-5  # the cutoff (-2, 2) is absolute: a normal draw here
        with torch.no_grad():  # the fed draws: trunc_normal_'s, and nn.Linear's default one of the missing head.bias
            model.head.weight.copy_(torch.tensor(head))
            model.head.bias.copy_(torch.tensor(head_bias))
        param_groups = param_groups_lrd(model, 0.05, no_weight_decay_list={'pos_embed', 'cls_token'},
                                        layer_decay=0.75)
        optimizer = torch.optim.AdamW(param_groups, lr=1e-2)
        criterion = label_smoothing_cross_entropy(torch, nn, F)
        record = {"pos_embed": array(model.pos_embed), "losses": []}

        def step(samples, targets):
            outputs = model(samples)
            loss = criterion(outputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        model.train(True)
        for samples, targets in zip(images, labels):
            record["losses"].append(run(torch.tensor(samples), torch.tensor(targets)).item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_mae_finetunes_from_the_pretraining_checkpoint_as_torch(float64_default, tmp_path, compiled):
    ours, theirs = run_in_lockstep(mae, finetune_mae(tmp_path, compiled=compiled))
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)
    assert ours["pos_embed"].shape == (1, 37, EMBED) and "norm.weight" not in ours["state"]


@AMP_ON_CPU
def test_mae_with_its_own_noise_draw_exports_to_onnx_with_torchs_outputs(tmp_path):
    """The whole MAE as written (``noise = torch.rand(N, L)`` inside ``random_masking``) through ``kiln.onnx.export``:
    the draw is the file's ``uniform.0`` input (kiln's documented form); fed the probe's noise, onnxruntime gives the
    loss, prediction and mask torch computes with that noise."""
    ort = require("onnxruntime")
    imgs, noises = _images(1, np.float32)
    kiln.manual_seed(0)
    model = mae(*libraries("kiln")).eval()
    path = str(tmp_path / "mae.onnx")
    kiln.onnx.export(model, (kiln.tensor(imgs[0]),), path, input_names=["imgs"])
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [given.name for given in session.get_inputs()] == ["imgs", "rng_seed", "uniform.0"]
    outputs = session.run(None, {"imgs": imgs[0], "rng_seed": np.array(0, np.int64), "uniform.0": noises[0]})
    torch, nn, F = libraries("torch")
    twin = mae(torch, nn, F)
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    with torch.no_grad():
        expected = twin.eval()(torch.tensor(imgs[0]), noise=torch.tensor(noises[0]))
    for output, value in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(output, array(value), rtol=1e-5, atol=1e-6)


def resume_mae(steps=3):
    """misc.py's ``save_model`` (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``, ``args`` a Namespace) after
    two steps, then ``load_model``: ``torch.load(..., map_location='cpu', weights_only=False)``, the state into a fresh
    model, ``optimizer.load_state_dict`` into a fresh AdamW over ``param_groups_lrd`` (the ``lr_scale`` keys come back)
    and the scaler's state; one more step after ``adjust_learning_rate``."""
    import argparse
    import io

    imgs, noises = _images(steps)
    args = argparse.Namespace(lr=1e-2, min_lr=1e-4, warmup_epochs=1, epochs=2, mask_ratio=0.75)

    def fresh_optimizer(torch, model):
        groups = param_groups_lrd(model, 0.05, no_weight_decay_list={'pos_embed', 'cls_token'}, layer_decay=0.75)
        return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))

    def train(torch, nn, F, model):
        optimizer, loss_scaler = fresh_optimizer(torch, model), native_scaler(torch)
        for step in range(steps - 1):
            loss, _, _ = model(torch.tensor(imgs[step]), args.mask_ratio, torch.tensor(noises[step]))
            loss_scaler(loss, optimizer, parameters=model.parameters())
            optimizer.zero_grad()
        checkpoint_file = io.BytesIO()
        torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': 1,
                    'scaler': loss_scaler.state_dict(), 'args': args}, checkpoint_file)
        checkpoint_file.seek(0)
        checkpoint = torch.load(checkpoint_file, map_location='cpu', weights_only=False)
        resumed = mae(torch, nn, F)
        resumed.load_state_dict(checkpoint['model'])
        optimizer = fresh_optimizer(torch, resumed)
        optimizer.load_state_dict(checkpoint['optimizer'])
        loss_scaler = native_scaler(torch)
        loss_scaler._scaler.load_state_dict(checkpoint['scaler'])
        start_epoch = checkpoint['epoch'] + 1
        assert start_epoch == 2 and checkpoint['args'].lr == args.lr
        adjust_learning_rate(optimizer, 1.5, args)
        loss, _, _ = resumed(torch.tensor(imgs[-1]), args.mask_ratio, torch.tensor(noises[-1]))
        loss_scaler(loss, optimizer, parameters=resumed.parameters())
        return {"lr_scales": [group["lr_scale"] for group in optimizer.param_groups], "loss": loss.item(),
                "state": snapshot(resumed)}

    return train


@AMP_ON_CPU
def test_mae_resumes_from_its_checkpoint_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mae, resume_mae())
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)
