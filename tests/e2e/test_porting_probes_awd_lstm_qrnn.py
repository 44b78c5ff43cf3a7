"""Porting probe: AWD-LSTM and QRNN language models as salesforce/awd-lstm-lm writes them
(``awd_lstm_qrnn_program.py``; ``torch`` is ``torch`` or ``kiln``), run in both libraries from kiln's initial weights.

- ``WeightDrop``: ``_setup`` replaces ``flatten_parameters`` and moves ``weight_hh_l0`` to a ``weight_hh_l0_raw``
  Parameter (``del self.module._parameters[name_w]``, ``register_parameter(name_w + '_raw', Parameter(w.data))``);
  each forward ``setattr``s the LSTM's weight to ``F.dropout(raw_w, p, training=self.training)``.
- ``embedded_dropout`` (``weight.data.new().resize_((V, 1)).bernoulli_(1 - p).expand_as(weight) / (1 - p)``,
  ``F.embedding`` with all its options), ``LockedDropout`` (``x.data.new(1, B, H).bernoulli_``, ``Variable(m,
  requires_grad=False)``, ``mask.expand_as(x) * x``), ``repackage_hidden``, ``batchify``/``get_batch``.
- main.py's loop: variable bptt with lr scaled by the length, AR on ``dropped_rnn_hs[-1]`` and TAR on ``rnn_hs[-1]``,
  ``clip_grad_norm_``, SGD then NT-ASGD's switch to ``ASGD(t0=0, lambd=0.)``, evaluation on the averaged weights
  (``prm.data = optimizer.state[prm]['ax'].clone()``) and back.
- QRNN (torchqrnn's layer: window 2 with ``prevX`` kept across batches, the ForgetMult loop, output gate) and a QRNN
  whose fo-pooling is the Python recurrence ``h = f * h + (1 - f) * z`` (``Y.chunk(2, dim=2)``, ``torch.stack``)
  under a highway connection (``t * relu(h) + (1 - t) * x``).

Checked against torch 2.13 in float64 to 1e-10 (first outputs and gradients, losses, validation losses, state) with
dropouts of p=0 (the libraries' RNGs differ); a WeightDrop of p=1e-20 (1 - p rounds to 1: every weight kept, yet the
weight set is dropout's new tensor, not the Parameter) runs the non-Parameter ``setattr``. The whole step as one
``kiln.compile(step, fullgraph=True)`` graph traces: WeightDrop's ``setattr`` of the dropped weight inside the step is
a module attribute written by the trace, and after each call the LSTM's ``weight_hh_l0`` holds that call's dropped
weight (detached: torch's keeps its graph), so an eager forward after it reads what torch's does. The dropout paths'
statistics are checked in kiln, eagerly and compiled (a fresh mask each call). Inference (WeightDrop p=0.5 in eval) in
float32 eagerly, through ``kiln.compile(fullgraph=True)`` and ``kiln.onnx.export`` run by onnxruntime. main.py's
SplitCrossEntropyLoss (``splitcross.py``) with one tail, eagerly and compiled; with two tails torch 2.x fails (bool
masks added) and kiln fails alike. ASGD steps compiled, then the ``ax`` swap for an evaluation and back. pointer.py's
continuous cache pointer (NumPy one-hot history, ``torch.mv``, implicit-dim softmax) evaluated as torch.

What broke: kiln let ``module.weight_hh_l0 = tensor`` replace a registered Parameter (dropping it from
``_parameters``), where torch raises ``TypeError: cannot assign 'torch.DoubleTensor' as parameter 'weight_hh_l0'
(torch.nn.Parameter or None expected)``. WeightDrop meets it under torch 2.x after an evaluation: eval's
``F.dropout(raw_w, training=False)`` returns the raw Parameter itself, whose ``setattr`` registers ``weight_hh_l0``
again, and the next training forward's dropped tensor is refused (the repository's known break with new PyTorch). kiln
trained on where torch stops; it now raises torch's TypeError at the user's line, and so for a child module's or a
buffer's name given another kind of value (``cannot assign 'int' as child module ...``):
``frontend/registered_assignment.py``, ``tests/frontend/test_registered_assignment_vs_torch.py``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from e2e.awd_lstm_qrnn_program import (Args, HighwayArgs, awd_modules, build_model, compiled_asgd_with_averaged_evaluation,
                                       next_word_scorer, nt_asgd_training, pointer_evaluation,
                                       split_criterion_training, step_training)
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep
from oracles import libraries, require

KINDS = ["LSTM", "QRNN", "QRNN-highway"]


def model_of(kind, wdrop=None):
    return build_model(kind, args=HighwayArgs if "highway" in kind else Args, wdrop=wdrop)


@pytest.mark.parametrize("kind", KINDS)
def test_awd_language_model_nt_asgd_trains_as_torch(kind, float64_default):
    ours, theirs = run_in_lockstep(model_of(kind), nt_asgd_training(kind))
    assert_same_records(ours, theirs)
    assert theirs["val 2 (averaged)"] < theirs["val 1"]


STEP_VARIANTS = {"LSTM": ("LSTM", None), "LSTM, WeightDrop p=1e-20": ("LSTM", 1e-20), "QRNN": ("QRNN", None),
                 "QRNN-highway": ("QRNN-highway", None)}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("variant", list(STEP_VARIANTS))
def test_awd_language_model_step_as_torch(variant, compiled, float64_default):
    """main.py's step, eagerly or as one ``kiln.compile(fullgraph=True)`` graph, against torch's eager loop."""
    kind, wdrop = STEP_VARIANTS[variant]
    ours, theirs = run_in_lockstep(model_of(kind, wdrop), step_training(kind, compiled=compiled))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("kind", ["LSTM", "QRNN"])
def test_compiled_asgd_steps_then_averaged_evaluation_as_torch(kind, float64_default):
    """ASGD's ``ax`` read from ``optimizer.state`` after compiled steps, swapped into ``prm.data`` for an evaluation
    and back, then compiled steps again: as torch's eager loop."""
    ours, theirs = run_in_lockstep(model_of(kind), compiled_asgd_with_averaged_evaluation(kind))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("kind", ["LSTM", "QRNN"])
def test_pointer_cache_evaluation_as_torch(kind, float64_default):
    """pointer.py's cache pointer over the model's last-layer outputs: NumPy one-hot history, ``torch.mv``, softmax
    without ``dim`` (both libraries warn), a 0-d tensor index, ``loss += (...).data``."""
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        ours, theirs = run_in_lockstep(model_of(kind), pointer_evaluation())
    assert_same_records(ours, theirs)


def test_awd_lstm_float32_as_torch():
    ours, theirs = run_in_lockstep(model_of("LSTM"), nt_asgd_training("LSTM"))
    assert ours["epoch 1"]["output"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_awd_language_model_inference_compiled_and_onnx_as_torch(kind):
    """The eval forward (WeightDrop p=0.5: eval keeps the raw weight; QRNN's ``prevX`` reset) in float32: eagerly,
    through ``kiln.compile(fullgraph=True)`` and exported by ``kiln.onnx.export`` run by onnxruntime, against torch."""
    onnxruntime = require("onnxruntime")

    def infer(torch, nn, F, model):
        scorer, hidden = next_word_scorer(torch, nn, model)
        data = torch.tensor(np.arange(10).reshape(5, 2) % 11)
        record = {"eval": array(scorer(data, *hidden))}
        if torch is kiln:
            model.reset()
            record["compiled"] = array(kiln.compile(scorer, fullgraph=True)(data, *hidden))
            model.reset()
            buffer, names = io.BytesIO(), ["data"] + [f"hidden{i}" for i in range(len(hidden))]
            kiln.onnx.export(scorer, (data, *hidden), buffer, input_names=names, output_names=["log_probs"])
            feeds = dict(zip(names, [array(data)] + [array(h) for h in hidden]))
            record["onnx"] = onnxruntime.InferenceSession(buffer.getvalue()).run(None, feeds)[0]
        return record

    ours, theirs = run_in_lockstep(model_of(kind, 0.5), infer)
    for key in ("eval", "compiled", "onnx"):
        np.testing.assert_allclose(ours[key], theirs["eval"], rtol=1e-5, atol=2e-6, err_msg=key)


def test_weight_drop_in_compiled_step_leaves_the_last_dropped_weight(float64_default):
    """After a compiled step the LSTM's ``weight_hh_l0`` (set by WeightDrop inside the step) holds the last call's
    dropped weight, as torch's after its eager step; an eager forward after the steps agrees with torch's."""

    def train(torch, nn, F, model):
        record = step_training("LSTM")(torch, nn, F, model)
        record["dropped weight"] = model.rnns[0].module.weight_hh_l0.detach().numpy().copy()
        hidden = model.init_hidden(2)
        record["forward after"] = model(torch.tensor(np.arange(10).reshape(5, 2) % 11), hidden)[0].detach().numpy()
        return record

    ours, theirs = run_in_lockstep(model_of("LSTM", 1e-20), train)
    assert_same_records(ours, theirs)


def test_weight_drop_after_evaluation_refused_as_torch(float64_default):
    """A training forward after an eval forward: torch 2.13 refuses WeightDrop's ``setattr`` of the dropped tensor to
    the Parameter the eval forward registered; kiln raises the same TypeError (it used to train on)."""
    messages = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        WeightDrop = awd_modules(torch, nn, F)[0]
        layer = WeightDrop(nn.LSTM(3, 4), ['weight_hh_l0'], dropout=0.5)
        x = torch.randn(5, 2, 3)
        layer(x)
        assert 'weight_hh_l0' not in dict(layer.module.named_parameters(remove_duplicate=False))
        layer.eval()
        layer(x)
        assert sorted(layer.state_dict()) == sorted(['module.weight_ih_l0', 'module.bias_ih_l0', 'module.bias_hh_l0',
                                                     'module.weight_hh_l0_raw', 'module.weight_hh_l0'])
        layer.train()
        with pytest.raises(TypeError) as caught:
            layer(x)
        messages.append(str(caught.value).splitlines()[-1].strip())
    assert messages[0].startswith(messages[1]), messages


def test_dropout_paths_statistics_in_kiln():
    """embedded_dropout drops whole rows, LockedDropout the same units at every time step, WeightDrop single weights;
    the kept ones scaled by 1 / (1 - p); compiled, LockedDropout draws a new mask at each call."""
    torch, nn, F = libraries("kiln")
    WeightDrop, embedded_dropout, LockedDropout = awd_modules(torch, nn, F)[:3]
    kiln.manual_seed(0)
    embed = nn.Embedding(400, 3)
    rows = embedded_dropout(embed, torch.arange(400), dropout=0.5).detach().numpy() / embed.weight.detach().numpy()
    assert set(np.unique(np.round(rows, 12))) == {0.0, 2.0} and np.all(rows == rows[:, :1])
    assert abs((rows[:, 0] == 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(400)
    locked = LockedDropout()
    masks = locked(torch.ones(6, 40, 50), 0.5).numpy()
    assert set(np.unique(masks)) == {0.0, 2.0} and np.all(masks == masks[:1])
    assert abs((masks[0] == 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(2000)
    compiled = kiln.compile(lambda x: locked(x, 0.5), fullgraph=True)
    first, second = compiled(torch.ones(6, 40, 50)).numpy(), compiled(torch.ones(6, 40, 50)).numpy()
    assert np.all(first == first[:1]) and abs((first[0] == second[0]).mean() - 0.5) < 4 * 0.5 / np.sqrt(2000)
    layer = WeightDrop(nn.LSTM(3, 30), ['weight_hh_l0'], dropout=0.5)
    layer(torch.randn(2, 1, 3))
    kept = layer.module.weight_hh_l0.detach().numpy() / layer.module.weight_hh_l0_raw.detach().numpy()
    assert set(np.unique(np.round(kept, 12))) == {0.0, 2.0}
    assert abs((kept == 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(kept.size)
    variational = WeightDrop(nn.LSTM(3, 300), ['weight_hh_l0'], dropout=0.5, variational=True)
    variational(torch.randn(2, 1, 3))  # whole rows of the weight dropped
    kept = variational.module.weight_hh_l0.detach().numpy() / variational.module.weight_hh_l0_raw.detach().numpy()
    assert set(np.unique(np.round(kept, 12))) == {0.0, 2.0} and np.all(kept == kept[:, :1])
    assert abs((kept[:, 0] == 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(len(kept))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_split_cross_entropy_criterion_trains_as_torch(compiled, float64_default):
    """splitcross.py with one tail (splits=[4]): ``masked_select`` of the targets and hidden rows per split, ``gather``,
    the head's tail entries; its ``entropy.float().sum()`` is float32 even in float64, hence float32's tolerance."""
    ours, theirs = run_in_lockstep(model_of("LSTM"), split_criterion_training("LSTM", [4], compiled=compiled))
    assert_same_records(ours, theirs, rtol=1e-6, atol=1e-7)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_split_cross_entropy_with_two_tails_fails_as_in_torch(float64_default):
    """With two tails the repository's ``mask = mask + partial_mask`` adds bool masks (uint8 in PyTorch 0.4), which is
    a logical or in torch 2.x: no target reaches split 2 and split 1's ``gather`` indexes past its softmax; kiln fails
    with the same out-of-bounds error."""
    messages = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        kiln.manual_seed(0)
        with pytest.raises(RuntimeError) as caught:
            split_criterion_training("LSTM", [4, 8])(torch, nn, F, model_of("LSTM")(torch, nn, F))
        messages.append(str(caught.value).splitlines()[-1].strip())
    assert messages[0] == messages[1] and "out of bounds for dimension 1 with size 4" in messages[1]


def test_dropout_paths_compiled_draw_fresh_masks_in_kiln():
    """Compiled, embedded_dropout (``weight.data.new().resize_(...).bernoulli_``) and WeightDrop draw new masks at each
    call, of the same statistics; after each call the LSTM's ``weight_hh_l0`` is that call's dropped weight."""
    torch, nn, F = libraries("kiln")
    WeightDrop, embedded_dropout = awd_modules(torch, nn, F)[:2]
    kiln.manual_seed(0)
    embed = nn.Embedding(400, 3)
    dropped = kiln.compile(lambda words: embedded_dropout(embed, words, dropout=0.5), fullgraph=True)
    first, second = (dropped(torch.arange(400)).detach().numpy() / embed.weight.detach().numpy() for _ in range(2))
    assert set(np.unique(np.round(first, 12))) == {0.0, 2.0} and np.all(first == first[:, :1])
    assert abs((first[:, 0] == 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(400)
    assert abs((first[:, 0] == second[:, 0]).mean() - 0.5) < 4 * 0.5 / np.sqrt(400)
    layer = WeightDrop(nn.LSTM(3, 30), ['weight_hh_l0'], dropout=0.5)
    run, x = kiln.compile(lambda x: layer(x)[0], fullgraph=True), torch.randn(2, 1, 3)
    kept = []
    for _ in range(2):
        run(x)
        kept.append(layer.module.weight_hh_l0.numpy() / layer.module.weight_hh_l0_raw.detach().numpy())
    assert set(np.unique(np.round(kept[0], 12))) == {0.0, 2.0}
    assert abs((kept[0] == 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(kept[0].size)
    assert abs((kept[0] == kept[1]).mean() - 0.5) < 4 * 0.5 / np.sqrt(kept[0].size)
