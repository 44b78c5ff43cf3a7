"""Porting probe: Deformable DETR's multi-scale deformable attention as fundamentalvision/Deformable-DETR writes it
(``e2e/deformable_detr_program.py``, written once, ``torch`` being torch or kiln), a one-layer encoder trained a few
steps in both libraries from kiln's initial weights and compared in float64 to 1e-10: the first outputs, the first
gradients, the losses and the state after the steps; eagerly and with the step one ``kiln.compile(fullgraph=True)``
graph against torch's eager loop.

- ms_deform_attn_func.py's ``ms_deform_attn_core_pytorch``: the value split per level by
  ``value.split([H_ * W_ for H_, W_ in value_spatial_shapes], dim=1)`` (0-d tensors of a ``torch.long`` tensor as
  sizes), ``flatten(2).transpose(1, 2).reshape(N_*M_, D_, H_, W_)``, sampling grids ``2 * sampling_locations - 1``
  through ``F.grid_sample(..., mode='bilinear', padding_mode='zeros', align_corners=False)`` (points outside the
  map among them), ``torch.stack(..., dim=-2).flatten(-2)`` weighted and summed.
- ms_deform_attn.py's ``MSDeformAttn``: ``_reset_parameters`` (``constant_``/``xavier_uniform_`` on ``.data``, the
  ``grid_init`` of ``torch.arange(..., dtype=torch.float32)``, ``cos``/``sin``, ``abs().max(-1, keepdim=True)[0]``,
  ``.view(...).repeat(...)``, ``grid_init[:, :, i, :] *= i + 1``, a new ``nn.Parameter`` assigned under
  ``torch.no_grad()``), ``masked_fill`` of the padding, the ``F.softmax`` attention weights, the
  ``offset_normalizer`` stacked from the spatial shapes.
- deformable_transformer.py: ``DeformableTransformerEncoderLayer`` (deformable self-attention, FFN,
  ``nn.LayerNorm``), ``get_reference_points`` (``torch.meshgrid`` of float32 ``torch.linspace``,
  ``indexing='ij'``, divided by ``valid_ratios``), ``get_valid_ratio`` (``torch.sum(~mask[:, :, 0], 1)``,
  ``.float()``), the flattening of the levels (``torch.as_tensor(spatial_shapes, dtype=torch.long)``,
  ``level_start_index`` from ``new_zeros`` and ``prod(1).cumsum(0)[:-1]``), the transformer's ``_reset_parameters``
  (``xavier_uniform_`` of every matrix, then each ``MSDeformAttn``'s own, ``normal_`` level embeddings); trained with
  AdamW and ``clip_grad_norm_`` as main.py does (``--lr 2e-4``, ``--clip_max_norm 0.1``; a larger lr here so that a
  few steps move the sampling offsets).

Adaptations: ``MSDeformAttnFunction`` (CUDA) is replaced by ``ms_deform_attn_core_pytorch``, as on a CPU; dropout 0;
a linear read-out of the memory and a masked mean squared error stand in for the decoder and its set loss. As
written, ``sampling_offsets.bias`` is a float32 ``nn.Parameter`` (``grid_init`` is float32) that a float64 query
cannot meet in ``F.linear`` (torch raises); the float64 runs call ``.double()`` on the model, as the repository's
``models/ops/test.py`` does for its gradcheck. float32 throughout (no ``.double()``) agrees at float32's level.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.deformable_detr_program import (BATCH, D_FFN, D_MODEL, LEVEL_SHAPES, N_HEADS, N_LAYERS, N_LEVELS, N_POINTS,
                                         deformable_batch, deformable_encoder, ms_deform_attn,
                                         ms_deform_attn_core_pytorch)
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot
from oracles import libraries

BATCHES = [deformable_batch(seed) for seed in range(3)]


def encoder(torch, nn, F):
    return deformable_encoder(torch, nn, F)(d_model=D_MODEL, nhead=N_HEADS, num_encoder_layers=N_LAYERS,
                                            dim_feedforward=D_FFN, dropout=0.0, num_feature_levels=N_LEVELS,
                                            enc_n_points=N_POINTS)


def encoder_double(torch, nn, F):
    return encoder(torch, nn, F).double()


def as_tensors(torch, batch):
    srcs, masks, poss, target = batch
    dtype = torch.get_default_dtype()
    return ([torch.tensor(s, dtype=dtype) for s in srcs], [torch.tensor(m) for m in masks],
            [torch.tensor(p, dtype=dtype) for p in poss], torch.tensor(target, dtype=dtype))


def masked_mse(torch, nn, F, model, srcs, masks, poss, target):
    memory, prediction, padding = model(srcs, masks, poss)
    keep = (~padding).to(prediction.dtype)
    return (((prediction - target) ** 2) * keep).sum() / keep.sum()


def adamw(torch, model):
    return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=1e-4)


def train_encoder(torch, nn, F, model, max_norm=0.1):
    """main.py's loop in miniature: AdamW, ``clip_grad_norm_(max_norm)``; the first outputs and gradients."""
    optimizer = adamw(torch, model)
    record = {"losses": []}
    for batch in BATCHES:
        srcs, masks, poss, target = as_tensors(torch, batch)
        loss = masked_mse(torch, nn, F, model, srcs, masks, poss, target)
        optimizer.zero_grad()
        loss.backward()
        if "grads" not in record:
            memory, prediction, padding = model(srcs, masks, poss)
            record.update(first=dict(memory=array(memory), prediction=array(prediction)), grads=gradients(model))
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        record["losses"].append(loss.item())
    record["state"] = snapshot(model)
    record["bias dtype"] = str(model.encoder.layers[0].self_attn.sampling_offsets.bias.dtype).split(".")[-1]
    return record


def test_deformable_encoder_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(encoder_double, train_encoder)
    assert ours.pop("bias dtype") == theirs.pop("bias dtype") == "float64"
    assert_same_records(ours, theirs)
    assert theirs["first"]["memory"].shape == (BATCH, sum(h * w for h, w in LEVEL_SHAPES), D_MODEL)


def test_deformable_encoder_float32_trains_as_torch():
    """As written (``sampling_offsets.bias`` float32 like the rest), float32 throughout: float32's level."""
    ours, theirs = run_in_lockstep(encoder, train_encoder)
    assert ours.pop("bias dtype") == theirs.pop("bias dtype") == "float32"
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def encoder_batch(lib):
    return as_tensors(lib, BATCHES[0])


def test_deformable_encoder_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(encoder_double, compiled_step_training(encoder_batch, adamw, masked_mse))
    assert_same_records(ours, theirs)


def test_reset_parameters_grid_init_as_torch():
    """``MSDeformAttn._reset_parameters``: the sampling offsets' bias points each head along its angle, point ``i``
    ``i + 1`` cells away (``grid_init``), every other weight ``constant_`` 0 but the ``xavier_uniform_`` projections."""
    biases = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        module = ms_deform_attn(torch, nn, F)(D_MODEL, N_LEVELS, N_HEADS, N_POINTS)
        biases.append(array(module.sampling_offsets.bias))
        assert str(module.sampling_offsets.bias.dtype).endswith("float32")
        assert not array(module.attention_weights.weight).any() and not array(module.sampling_offsets.weight).any()
    np.testing.assert_array_equal(biases[0], biases[1])
    assert biases[0].reshape(N_HEADS, N_LEVELS, N_POINTS, 2)[0, 0, 1].tolist() == [2.0, 0.0]


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_core_bilinear_samples_match_a_direct_computation(float64_default, name):
    """``ms_deform_attn_core_pytorch`` against its definition, computed in NumPy: each head's value map sampled
    bilinearly at ``loc * (W, H) - 0.5`` (``align_corners=False``), zero outside, weighted by the attention."""
    torch, nn, F = libraries(name)
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (2, 2)]
    N, M, D, Lq, P = 2, 2, 3, 5, 2
    value = rng.standard_normal((N, sum(h * w for h, w in shapes), M, D))
    loc = rng.uniform(-0.2, 1.2, (N, Lq, M, len(shapes), P, 2))
    weights = rng.uniform(size=(N, Lq, M, len(shapes), P))
    out = array(ms_deform_attn_core_pytorch(torch, F)(torch.tensor(value), torch.as_tensor(shapes, dtype=torch.long),
                                                      torch.tensor(loc), torch.tensor(weights)))
    expected = np.zeros((N, Lq, M, D))
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    for n, q, m, lvl, p in np.ndindex(N, Lq, M, len(shapes), P):
        h, w = shapes[lvl]
        level = value[n, starts[lvl]:starts[lvl + 1], m].reshape(h, w, D)
        x, y = loc[n, q, m, lvl, p] * (w, h) - 0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
            if 0 <= yy < h and 0 <= xx < w:
                expected[n, q, m] += weights[n, q, m, lvl, p] * (1 - abs(x - xx)) * (1 - abs(y - yy)) * level[yy, xx]
    np.testing.assert_allclose(out, expected.reshape(N, Lq, M * D), rtol=1e-12, atol=1e-13)
