"""Porting probe: an AlphaFold 2 / OpenFold Evoformer block (``evoformer_ipa_program.py``: MSA row attention with pair
bias and sigmoid gating, MSA column attention, MSA transition, outer product mean by
``einsum("...sid,...sje->...ijde")`` divided by the masked sequence count, triangle multiplicative updates outgoing
and incoming, triangle attention around the starting and ending node by transposes, pair transition; float masks
broadcast into the logits as ``1e9 * (mask - 1)``), written once and run in kiln and torch 2.13 from kiln's initial
weights: first forward, first gradients, losses and the state after a few Adam steps agree to 1e-10 in float64,
eagerly and with the whole step one ``kiln.compile(fullgraph=True)`` graph; float32 at float32's level.

Also OpenFold's structure module core (the same program file): rigids as (rotation, translation) with quaternions
turned into rotations by an einsum with the constant ``_QTR_MAT`` table (NumPy built, ``torch.tensor`` of it), rigid
composition, application and inverse application, invariant point attention (query/key/value points mapped from
local frames to the global one, squared point distances weighted by softplus head weights, ``torch.unbind``, the
``inf * (mask - 1)`` square mask, pair-weighted outputs), the backbone update (``compose_q_update_vec``: normalised
``(1, b, c, d)`` quaternion, ``torch.linalg.norm``), two iterations with the rotation gradient stopped between them,
and the clamped FAPE loss of the final frames against target frames; eager, compiled step and float32 as above.
The Evoformer block's float32 inference also runs through ``kiln.compile`` and ``kiln.onnx.export`` + onnxruntime.

What broke: nothing.
"""

from __future__ import annotations

import numpy as np

import kiln
from e2e.evoformer_ipa_program import evoformer, structure_module
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot
from oracles import require, require_torch

SEQS, RES, C_M, C_Z = 3, 5, 8, 6
# The pair-bias LayerNorm's bias reaches the row attention only as a per-head constant on every logit, which softmax
# cancels: its gradient is rounding noise (~1e-18) that Adam turns into steps of ~1e-12 in float64 and up to lr in float32, differently in each library.
CANCELLED = {"msa_att_row.layer_norm_z.bias": dict(rtol=0, atol=1e-10)}


def batch(lib):
    """An MSA, a pair representation and masks with one padded residue and one masked-out sequence entry."""
    rng = np.random.default_rng(1)
    msa_mask = np.ones((1, SEQS, RES))
    msa_mask[0, -1, -1] = 0.0
    msa_mask[0, 1, 2] = 0.0
    pair_mask = np.ones((1, RES, RES))
    pair_mask[0, -1, :] = pair_mask[0, :, -1] = 0.0
    values = (rng.normal(size=(1, SEQS, RES, C_M)), rng.normal(size=(1, RES, RES, C_Z)),
              msa_mask, pair_mask, rng.normal(size=(1, RES, RES, C_Z)))
    return tuple(lib.tensor(v, dtype=lib.get_default_dtype()) for v in values)


def loss_of(lib, nn, F, model, m, z, msa_mask, pair_mask, target):
    m_out, z_out = model(m, z, msa_mask, pair_mask)
    return F.mse_loss(z_out * pair_mask.unsqueeze(-1), target) + (m_out ** 2).mean() * 0.1


def eager_training(lib, nn, F, model, steps=3):
    optimizer = lib.optim.Adam(model.parameters(), lr=1e-2)
    m, z, msa_mask, pair_mask, target = batch(lib)
    m_out, z_out = model(m, z, msa_mask, pair_mask)
    record = {"msa": array(m_out), "pair": array(z_out), "losses": []}
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of(lib, nn, F, model, m, z, msa_mask, pair_mask, target)
        loss.backward()
        record.setdefault("grads", gradients(model))
        optimizer.step()
        record["losses"].append(loss.item())
    record["state"] = snapshot(model)
    return record


def build(lib, nn, F):
    return evoformer(lib, nn, F, c_m=C_M, c_z=C_Z)


def test_evoformer_block_trains_as_torch(float64_default):
    require_torch()
    ours, theirs = run_in_lockstep(build, eager_training)
    assert_same_records(ours, theirs, looser=CANCELLED)


def test_evoformer_block_compiled_step_as_torch(float64_default):
    require_torch()
    train = compiled_step_training(batch, lambda lib, model: lib.optim.Adam(model.parameters(), lr=1e-2), loss_of)
    ours, theirs = run_in_lockstep(build, train)
    assert_same_records(ours, theirs, looser=CANCELLED)


def test_evoformer_block_float32_as_torch():
    require_torch()
    ours, theirs = run_in_lockstep(build, eager_training)
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5, looser={"layer_norm_z.bias": dict(rtol=0, atol=3 * 1e-2)})  # Adam: at most lr a step
    assert kiln.get_default_dtype() == kiln.float32


RESIDUES, C_S = 5, 8


def structure_batch(lib):
    """A single representation, a pair representation, a residue mask with one padded residue, and target frames
    from random quaternions (by the model's ``quat_to_rot``) whose translations are the target positions."""
    rng = np.random.default_rng(2)
    mask = np.ones((1, RESIDUES))
    mask[0, -1] = 0.0
    quats = rng.normal(size=(1, RESIDUES, 4))
    values = (rng.normal(size=(1, RESIDUES, C_S)), rng.normal(size=(1, RESIDUES, RESIDUES, C_Z)), mask,
              quats / np.linalg.norm(quats, axis=-1, keepdims=True), rng.normal(size=(1, RESIDUES, 3)))
    return tuple(lib.tensor(v, dtype=lib.get_default_dtype()) for v in values)


def fape_loss(lib, nn, F, model, s, z, mask, target_quats, target_trans):
    pred = model(s, z, mask)
    target = model.Rigid(model.quat_to_rot(target_quats), target_trans)
    return model.compute_fape(pred, target, mask, pred.trans, target.trans, mask).mean()


def structure_training(lib, nn, F, model, steps=3):
    optimizer = lib.optim.Adam(model.parameters(), lr=1e-2)
    batch_ = structure_batch(lib)
    frames = model(*batch_[:3])
    record = {"rots": array(frames.rots), "trans": array(frames.trans), "losses": []}
    for _ in range(steps):
        optimizer.zero_grad()
        loss = fape_loss(lib, nn, F, model, *batch_)
        loss.backward()
        record.setdefault("grads", gradients(model))
        optimizer.step()
        record["losses"].append(loss.item())
    record["state"] = snapshot(model)
    return record


def build_structure(lib, nn, F):
    """Clamped at 3 (the reference: 10 A with length scale 10): about half the pair distances start above it."""
    return structure_module(lib, nn, F, c_s=C_S, c_z=C_Z, clamp=3.0, length_scale=3.0)


def test_quat_to_rot_is_a_rotation(float64_default):
    """The constant-table einsum gives orthonormal matrices of determinant 1 (an oracle independent of torch)."""
    model = build_structure(kiln, kiln.nn, kiln.nn.functional)
    rots = array(model.quat_to_rot(structure_batch(kiln)[3]))
    np.testing.assert_allclose(rots @ np.swapaxes(rots, -1, -2), np.broadcast_to(np.eye(3), rots.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rots), 1.0, atol=1e-12)


def test_structure_module_fape_trains_as_torch(float64_default):
    require_torch()
    ours, theirs = run_in_lockstep(build_structure, structure_training)
    assert_same_records(ours, theirs)


def test_structure_module_fape_compiled_step_as_torch(float64_default):
    require_torch()
    optimizer = lambda lib, model: lib.optim.Adam(model.parameters(), lr=1e-2)  # noqa: E731
    ours, theirs = run_in_lockstep(build_structure, compiled_step_training(structure_batch, optimizer, fape_loss))
    assert_same_records(ours, theirs)


CANCELLED_IN_IPA = ("key bias", "linear_b.bias")


def split_ipa_key_bias(record):
    """The record with IPA's ``linear_kv.bias`` split into its key half (``key bias``) and value half. The key bias
    adds ``q . b_k`` to every logit of a query alike, which softmax cancels: its gradient is rounding noise that Adam
    turns into steps up to lr in float32, differently in each library (as ``probe_lockstep.split_key_bias``); so is
    the pair bias's ``linear_b.bias``, a per-head constant on every logit. Adam moves them at most lr a step."""
    state = dict(record["state"])
    bias = state.pop("ipa.linear_kv.bias").reshape(2, 2, -1)  # (heads, key | value, c_hidden), as .view then split
    state["ipa.key bias"], state["ipa.linear_kv.bias (value)"] = bias[:, 0], bias[:, 1]
    return {**record, "state": state}


def test_structure_module_fape_float32_as_torch():
    require_torch()
    ours, theirs = run_in_lockstep(build_structure, structure_training)
    assert_same_records(split_ipa_key_bias(ours), split_ipa_key_bias(theirs), rtol=1e-4, atol=1e-5,
                        looser={name: dict(rtol=0, atol=3 * 1e-2) for name in CANCELLED_IN_IPA})


def test_evoformer_block_inference_compiled_and_through_onnx_as_torch(tmp_path):
    """Inference in float32: ``kiln.compile(model, fullgraph=True)`` and ``kiln.onnx.export`` run by onnxruntime,
    both against torch's eager forward of the same weights."""
    torch = require_torch()
    onnxruntime = require("onnxruntime")
    kiln.manual_seed(0)
    ours = build(kiln, kiln.nn, kiln.nn.functional).eval()
    theirs = build(torch, torch.nn, torch.nn.functional).eval()
    theirs.load_state_dict({key: torch.tensor(value) for key, value in snapshot(ours).items()})
    inputs = batch(kiln)[:4]
    with torch.no_grad():
        expected = [array(t) for t in theirs(*(torch.tensor(array(x)) for x in inputs))]
    compiled = [array(t) for t in kiln.compile(ours, fullgraph=True)(*inputs)]
    path = tmp_path / "evoformer.onnx"
    kiln.onnx.export(ours, inputs, str(path))
    session = onnxruntime.InferenceSession(str(path))
    exported = session.run(None, {i.name: array(x) for i, x in zip(session.get_inputs(), inputs)})
    for outputs in (compiled, exported):
        assert len(outputs) == len(expected) == 2
        for got, want in zip(outputs, expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
