"""Porting probe: the Temporal Fusion Transformer as pytorch-forecasting writes it (``e2e/tft_program.py``, written
once, ``torch`` being torch or kiln), trained a few steps in both libraries from kiln's initial weights and compared in
float64 to 1e-10: the first predictions, attention and variable-selection weights, the first gradients, the losses,
the state after the steps and the point forecast; eagerly and with the step one ``kiln.compile(fullgraph=True)`` graph
against torch's eager loop; float32 at float32's level.

- sub_modules.py's blocks as written: ``TimeDistributedInterpolation`` (``F.interpolate(x.unsqueeze(1), size,
  mode="linear", align_corners=True)`` over ``x.contiguous().view(-1, x.size(-1))``; trainable: a float32 ``mask``
  through ``nn.Sigmoid``), ``GatedLinearUnit`` (``F.glu``; ``named_parameters`` init: ``zeros_``/
  ``xavier_uniform_``), ``ResampleNorm``/``AddNorm`` (``torch.zeros(size, dtype=torch.float)`` masks: float32
  parameters in the float64 runs, promoted by ``x * self.gate(self.mask) * 2.0``), ``GateAddNorm``,
  ``GatedResidualNetwork`` with and without context (``kaiming_normal_(..., nonlinearity="leaky_relu")``, the
  ``ResampleNorm`` residual when sizes differ), ``VariableSelectionNetwork`` (per-variable GRNs or ``ResampleNorm``s
  in an ``nn.ModuleDict``, prescalers shared from the model's ``ModuleDict``, the flattened GRN with the static
  context, ``nn.Softmax(dim=-1)`` weights ``.unsqueeze(-2)``; the one-input path with ``torch.ones`` weights),
  ``ScaledDotProductAttention`` (``torch.bmm``, ``torch.as_tensor(k.size(-1), dtype=...).sqrt()``,
  ``masked_fill(mask, -1e9)``) and ``InterpretableMultiHeadAttention`` (one shared value projection, per-head
  query/key ``nn.ModuleList``s, ``torch.stack(heads, dim=2)`` and ``torch.mean`` over heads, ``w_h``).
- rnn.py's ``LSTM(RNN, nn.LSTM)`` with ``RNN(ABC, nn.RNNBase)`` (``@abstractmethod``s, ``super().forward`` through
  the MRO): ``pack_padded_sequence(..., enforce_sorted=False)`` of ``lengths.where(lengths > 0, ones_like)``,
  ``pad_packed_sequence``, a zero-length encoder's state restored by ``masked_scatter`` of ``(lengths == 0)[None, :,
  None]``; ``create_mask``.
- _tft.py's ``__init__`` and ``forward``: embeddings per categorical, ``int(encoder_lengths.max())``, static variable
  selection and the four static context GRNs, ``context[:, None].expand(-1, timesteps, -1)``, the LSTM state
  ``.expand(lstm_layers, -1, -1)``, the post-LSTM gate and norm shared by encoder and decoder (one module under two
  names), static enrichment, attention with ``get_attention_mask`` (``torch.arange(decoder_lengths.max())``, causal
  ``attend_step >= predict_step`` and the padded encoder steps), the quantile head.
- ``QuantileLoss`` (``torch.max((q - 1) * errors, q * errors)``, ``2 * torch.cat(losses, dim=2)``) masked by the
  decoder lengths (``masked_fill``) and ``to_prediction``; Adam with ``clip_grad_norm_(0.1)`` (the examples'
  ``gradient_clip_val``).

Adaptations: ``MultiEmbedding`` is one ``nn.Embedding`` a categorical (no groups or paddings); the Lightning module's
plumbing (``hparams``, logging, interpretation) is left out; the loader's batches are ``tft_batches`` (NumPy, a
zero-length encoder and a padded decoder among them); dropout is 0 (each library draws its own masks).

What broke: the float64 run drifted to 1e-8 after the first step. The float32 masks' first Adam step was a float32 ulp
off torch's in one element in eight: kiln fed a float32 parameter's ``lr`` to its update in float32, where torch
computes ``lr / (1 - beta1^t)`` from the Python float. The optimizers that compute with ``lr`` on the host take it in
float64 now (``frontend/optim_base.py``: ``lr_on_host``; ``runtime/step_graph.py``: ``hyper_input_dtype``;
``tests/optim/test_float32_updates_vs_torch.py``). What remains is the masks' float32 ``sigmoid`` (below) and, from
the second step, torch's fused ``lerp_``/``addcmul_`` in their Adam moments (``multiply_add`` in
``compiler/ops/optim_opmath.py``).
"""

from __future__ import annotations

import numpy as np

from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot
from e2e.tft_program import (DECODER_LENGTH, ENCODER_LENGTH, HIDDEN, QUANTILES, SERIES, quantile_loss,
                             temporal_fusion_transformer, tft_batches, tft_sub_modules)

BATCHES = tft_batches(3)


def tft(torch, nn, F):
    return temporal_fusion_transformer(torch, nn, F)()


def as_tensors(torch, x):
    """The loader's arrays as tensors: categoricals and lengths int64, reals in the default float dtype."""
    return {key: torch.tensor(value, dtype=torch.get_default_dtype() if value.dtype.kind == "f" else None)
            for key, value in x.items()}


def train_tft(torch, nn, F, model):
    """Adam with ``clip_grad_norm_(0.1)`` over the batches, then the point forecast in eval mode; the first step's
    record apart from the later steps' (see ``test_tft_trains_as_torch``)."""
    loss_fn = quantile_loss(torch)(quantiles=QUANTILES)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    record = {"first step": {}, "later steps": {"losses": []}}
    for x, y in BATCHES:
        model.train()
        x, y = as_tensors(torch, x), torch.tensor(y, dtype=torch.get_default_dtype())
        out = model(x)
        loss = loss_fn(out["prediction"], y, x["decoder_lengths"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        first = not record["first step"]
        if first:
            record["first step"].update(outputs={key: array(value) for key, value in out.items()},
                                        grads=gradients(model), loss=loss.item())
        optimizer.step()
        if first:
            record["first step"]["state"] = snapshot(model)
        else:
            record["later steps"]["losses"].append(loss.item())
    model.eval()
    with torch.no_grad():
        x = as_tensors(torch, BATCHES[0][0])
        record["later steps"]["forecast"] = array(loss_fn.to_prediction(model(x)["prediction"]))
    record["later steps"]["state"] = snapshot(model)
    record["dtypes"] = [str(t.dtype).split(".")[-1] for t in (out["prediction"], model.post_lstm_add_norm_encoder
                                                              .norm.weight, model.static_variable_selection
                                                              .single_variable_grns["group"].mask)]
    return record


KEY_BIASES = {f"k_layers.{head}.bias": dict(rtol=0, atol=1e-9) for head in range(2)}
"""The attention's key biases add ``q . b_k`` to every score of a query alike, so the softmax cancels them: their
gradients are rounding noise (~1e-19 in float64), which Adam turns into steps of ~1e-13 to 1e-10 that differ between
the libraries (in float32: noise of ~1e-8, steps of up to lr)."""


def test_tft_trains_as_torch(float64_default):
    """As written, the ``ResampleNorm``/``AddNorm`` masks are float32 parameters in the float64 model
    (``torch.zeros(size, dtype=torch.float)``). The first step agrees to 1e-10 (the masks are 0 and ``sigmoid(0)`` is
    0.5 exactly; Adam's float32 step on them is torch's). Once they move, their float32 ``sigmoid`` differs
    in the last bit between the libraries (neither is correctly rounded: 35% and 39% of float32 values off the
    float64 result, one ulp; kiln's is NumPy's), so the later steps agree at float32's level, 1e-6. With the masks in
    float64 every step agrees to 1e-10 (next test)."""
    ours, theirs = run_in_lockstep(tft, train_tft)
    assert ours.pop("dtypes") == theirs.pop("dtypes") == ["float64", "float64", "float32"]
    assert_same_records(ours, theirs, looser={"later steps": dict(rtol=1e-6, atol=1e-6), **KEY_BIASES})
    first = theirs["first step"]["outputs"]
    assert first["prediction"].shape == (SERIES, DECODER_LENGTH, len(QUANTILES))
    assert first["encoder_attention"].shape == (SERIES, DECODER_LENGTH, 2, ENCODER_LENGTH)
    np.testing.assert_allclose(first["encoder_variables"].sum(-1), 1.0, rtol=1e-12)
    assert theirs["later steps"]["losses"][-1] < theirs["first step"]["loss"]


def tft_double(torch, nn, F):
    """The model after ``model.double()``: the float32 masks in float64 too."""
    return tft(torch, nn, F).double()


def test_tft_double_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(tft_double, train_tft)
    assert ours.pop("dtypes") == theirs.pop("dtypes") == ["float64", "float64", "float64"]
    assert_same_records(ours, theirs, looser=KEY_BIASES)


def test_tft_float32_trains_as_torch():
    """float32 throughout (the default dtype): the first step at float32's level, the later ones to 2e-3. Two kinds of
    parameters get gradients of rounding noise, which Adam (``lr g / (|g| + eps)``) turns into steps of up to lr once
    the noise reaches eps (~1e-8, float32's), differently in each library; they are checked only to stay within the
    three steps' 3 lr: the key biases (``KEY_BIASES``), and the flattened GRNs of the static and decoder variable
    selections, which weigh two variables: each such GRN ends in a ``LayerNorm`` over its two outputs, whose result
    ``+-1`` does not depend on its input, so nothing before it gets more than rounding noise."""
    ours, theirs = run_in_lockstep(tft, train_tft)
    assert ours.pop("dtypes") == theirs.pop("dtypes") == ["float32", "float32", "float32"]
    noise = {key: dict(rtol=0, atol=0.09) for key in [*KEY_BIASES, "static_variable_selection.flattened_grn",
                                                       "decoder_variable_selection.flattened_grn"]}
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5, looser={"later steps": dict(rtol=2e-3, atol=1e-3), **noise})


def tft_batch(lib):
    x, y = BATCHES[1]
    return as_tensors(lib, x), lib.tensor(y, dtype=lib.get_default_dtype())


def adam(torch, model):
    return torch.optim.Adam(model.parameters(), lr=0.03)


def tft_loss(torch, nn, F, model, x, y):
    return quantile_loss(torch)(quantiles=QUANTILES)(model(x)["prediction"], y, x["decoder_lengths"])


def test_tft_compiled_step_as_torch(float64_default):
    """The batch dict an input of the compiled step (``int(encoder_lengths.max())`` and the LSTM's ``if min_length
    == 0`` read from it); the model after ``model.double()`` (the float32 masks: ``test_tft_trains_as_torch``)."""
    ours, theirs = run_in_lockstep(tft_double, compiled_step_training(tft_batch, adam, tft_loss))
    assert_same_records(ours, theirs, looser=KEY_BIASES)


def blocks(torch, nn, F):
    """The sub-modules the model does not use as it is built here: a trainable ``TimeDistributedInterpolation``, a
    one-input ``VariableSelectionNetwork`` (3-D and 2-D), a GRN whose residual is resampled, a trainable ``AddNorm``
    with a resampled skip, ``InterpretableMultiHeadAttention`` with one head; ``.double()``, as the float32 masks
    would leave the float64 run at float32's level after a step (``test_tft_trains_as_torch``)."""
    b = tft_sub_modules(torch, nn, F)
    return nn.ModuleDict(dict(
        interpolation=b["TimeDistributedInterpolation"](6, batch_first=True, trainable=True),
        single=b["VariableSelectionNetwork"]({"x": 3}, hidden_size=HIDDEN, dropout=0.0),
        grn=b["GatedResidualNetwork"](3, 5, HIDDEN, dropout=None, context_size=4),
        add_norm=b["AddNorm"](HIDDEN, skip_size=3, trainable_add=True),
        one_head=b["InterpretableMultiHeadAttention"](n_head=1, d_model=HIDDEN),
    )).double()


def train_blocks(torch, nn, F, model, steps=3):
    rng = np.random.default_rng(5)
    x3, context = torch.tensor(rng.standard_normal((2, 4, 3))), torch.tensor(rng.standard_normal((2, 4, 4)))
    x1 = torch.tensor(rng.standard_normal((2, 4, 1)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    record = {"losses": []}
    for _ in range(steps):
        interpolated = model["interpolation"](x3)
        single_3d, weights_3d = model["single"]({"x": x1})
        single_2d, weights_2d = model["single"]({"x": x1[:, 0]})
        grn = model["grn"](x3, context)
        added = model["add_norm"](grn, x3)
        attended, attention = model["one_head"](added, added, added)
        loss = sum((t ** 2).mean() for t in (interpolated, single_3d, single_2d, grn, added, attended))
        optimizer.zero_grad()
        loss.backward()
        record.setdefault("first", {name: array(t) for name, t in dict(
            interpolated=interpolated, single_3d=single_3d, weights_3d=weights_3d, single_2d=single_2d,
            weights_2d=weights_2d, grn=grn, added=added, attended=attended, attention=attention).items()})
        record.setdefault("grads", gradients(model))
        optimizer.step()
        record["losses"].append(loss.item())
    record["state"] = snapshot(model)
    return record


def test_tft_sub_modules_train_as_torch(float64_default):
    ours, theirs = run_in_lockstep(blocks, train_blocks)
    assert_same_records(ours, theirs, looser=KEY_BIASES)
    assert ours["first"]["weights_3d"].shape == (2, 4, 1, 1) and ours["first"]["weights_2d"].shape == (2, 1, 1)
