"""``nn.TransformerEncoder`` in inference over a padded batch gives torch's outputs, zeros at the padded positions
included: torch packs the unpadded tokens into a nested tensor and pads the result back with zeros (eval, no grad,
batch-first post-norm layers, a ``src_key_padding_mask``, no ``mask``, padding at the ends of rows), and computes those
positions otherwise. kiln computed them always: a mean over the sequence, or the padded rows read back, differed from
torch's in eval. float64 vs torch 2.13 to 1e-10, every condition flipped once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

BATCH, LENGTH, D_MODEL = 3, 5, 8


def _encoders(batch_first=True, nhead=2, norm_first=False, with_norm=False, **options):
    torch = require_torch()
    made = []
    for lib in (kiln, torch):
        lib.manual_seed(0)
        layer = lib.nn.TransformerEncoderLayer(D_MODEL, nhead, 16, dropout=0.0, batch_first=batch_first,
                                               norm_first=norm_first, dtype=lib.float64)
        norm = lib.nn.LayerNorm(D_MODEL, dtype=lib.float64) if with_norm else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "enable_nested_tensor is True, but ..." for the blocked layers
            made.append(lib.nn.TransformerEncoder(layer, 2, norm, **options))
    made[1].load_state_dict({key: torch.tensor(np.array(value)) for key, value in made[0].state_dict().items()})
    return torch, made[0], made[1]


def _padding(left_aligned=True):
    padding = np.zeros((BATCH, LENGTH), dtype=bool)
    padding[1, 3:] = True
    padding[2, 1:] = True
    return padding if left_aligned else padding[:, ::-1].copy()


def _outputs(lib, encoder, x, padding, grad=False, train=False, mask=None):
    encoder.train(train)
    with lib.set_grad_enabled(grad):
        out = encoder(lib.tensor(x), mask=mask, src_key_padding_mask=lib.tensor(padding))
    return np.array(out.detach().numpy())


CASES = {
    "eval, no grad (zeroed)": dict(),
    "final norm (zeroed, then normed)": dict(build=dict(with_norm=True)),
    "grad enabled": dict(call=dict(grad=True)),
    "training": dict(call=dict(train=True)),
    "sequence first": dict(build=dict(batch_first=False)),
    "enable_nested_tensor=False": dict(build=dict(enable_nested_tensor=False)),
    "odd head count": dict(build=dict(nhead=1)),
    "norm_first": dict(build=dict(norm_first=True)),
    "padding at the start": dict(left_aligned=False),
    "with a mask": dict(call=dict(mask="zeros")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_encoder_outputs_at_padded_positions_as_torch(case):
    spec = CASES[case]
    torch, ours, theirs = _encoders(**spec.get("build", {}))
    padding = _padding(spec.get("left_aligned", True))
    x = np.random.default_rng(0).standard_normal((BATCH, LENGTH, D_MODEL))
    if not spec.get("build", {}).get("batch_first", True):
        x = x.transpose(1, 0, 2).copy()  # (S, N, E); the padding mask stays (N, S)
    results = []
    for lib, encoder in ((kiln, ours), (torch, theirs)):
        call = dict(spec.get("call", {}))
        if call.get("mask") == "zeros":
            call["mask"] = lib.zeros(LENGTH, LENGTH, dtype=lib.bool)
        results.append(_outputs(lib, encoder, x, padding, **call))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10, atol=1e-12)
    zeroed = "(zeroed" in case
    padded = results[0][padding] if spec.get("build", {}).get("batch_first", True) else None
    if padded is not None:
        assert (np.abs(padded).max() == 0) == zeroed


def test_compiled_inference_keeps_padded_positions_as_torch_compile():
    """A traced mask cannot be checked for left alignment: torch.compile skips the nested path ('mask_check enabled
    with torch.compile'), and so does kiln.compile."""
    torch, ours, theirs = _encoders()
    padding = _padding()
    x = np.random.default_rng(0).standard_normal((BATCH, LENGTH, D_MODEL))
    ours.eval(), theirs.eval()
    run = kiln.compile(lambda x, padding: ours(x, src_key_padding_mask=padding), fullgraph=True)
    with kiln.no_grad():
        compiled = np.array(run(kiln.tensor(x), kiln.tensor(padding)))
    theirs.train()  # torch's computed path: the values torch.compile gives
    with torch.no_grad():
        computed = theirs(torch.tensor(x), src_key_padding_mask=torch.tensor(padding)).numpy()
    np.testing.assert_allclose(compiled, computed, rtol=1e-10, atol=1e-12)
    assert np.abs(compiled[padding]).max() > 0
