"""``batch_dim``: which dim of each input is the batch, for ``kiln.compile`` and ``kiln.compile_train_step``.

PyTorch's recurrent and attention layers take sequence-first ``(L, N, ...)`` tensors by default; with ``batch_dim=1``
their ``N`` is the graph's symbolic dim (another batch size reuses the graph), the length stays static (an LSTM unrolls
over it), and ``accumulate`` splits micro-batches along it."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require

VOCAB, LENGTH = 11, 5


def tokens(batch, seed=0):
    """Sequence-first token ids ``(L, N)`` and next-token targets."""
    ids = np.random.default_rng(seed).integers(0, VOCAB, (LENGTH + 1, batch))
    return ids[:-1].copy(), ids[1:].copy()


def sequence_first_lm(lib):
    """Embedding, a sequence-first LSTM (PyTorch's default layout) and a head: logits ``(L * N, vocab)``."""

    class LM(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = lib.nn.Embedding(VOCAB, 6)
            self.lstm = lib.nn.LSTM(6, 8)
            self.head = lib.nn.Linear(8, VOCAB)

        def forward(self, ids):
            hidden, _ = self.lstm(self.embedding(ids))
            return self.head(hidden).reshape((-1, VOCAB))

    return LM()


def lm_loss(logits, targets):
    return F.cross_entropy(logits, targets.reshape((-1,)))


def test_compile_with_batch_dim_1_runs_a_sequence_first_lstm_for_any_batch_with_one_graph():
    torch = require("torch")
    kiln.manual_seed(0)
    model = nn.LSTM(4, 6, num_layers=2)
    reference = torch.nn.LSTM(4, 6, num_layers=2).double()
    reference.load_state_dict({k: torch.tensor(np.array(v, np.float64)) for k, v in model.state_dict().items()})
    run = kiln.compile(lambda x: model(x)[0], batch_dim=1)
    for batch in (3, 7):
        x = np.random.default_rng(batch).standard_normal((LENGTH, batch, 4)).astype(np.float32)
        np.testing.assert_allclose(run(x), reference(torch.tensor(x, dtype=torch.float64))[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert len(run.variants) == 1
    assert run.graph.inputs[0].type.shape == (LENGTH, "N", 4)


def test_the_default_batch_dim_makes_a_sequence_first_length_symbolic_so_the_lstm_compiles_per_length():
    """The LSTM needs a static length (its loop is unrolled): kiln.compile traces it with static shapes instead, one
    variant per exact shape, as torch.compile starts static (it raised 'sequence length must be static')."""
    kiln.manual_seed(0)
    model = nn.LSTM(4, 6)
    compiled = kiln.compile(lambda x: model(x)[0])
    for length in (LENGTH, LENGTH + 1):
        x = np.random.default_rng(length).standard_normal((length, 2, 4)).astype(np.float32)
        with kiln.no_grad():
            expected = model(kiln.tensor(x))[0].numpy()
        np.testing.assert_allclose(compiled(x), expected, rtol=1e-5, atol=1e-6)
    assert sum(hasattr(variant, "graph") for variant in compiled.variants.values()) == 2


def test_sequence_first_training_matches_torch_and_a_new_batch_size_does_not_recompile():
    torch = require("torch")
    kiln.manual_seed(1)
    model, reference = sequence_first_lm(kiln), sequence_first_lm(torch)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.SGD(model.parameters(), lr=0.5), batch_dim=1)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for batch in (4, 4, 3):
        x, y = tokens(batch, seed=batch)
        loss = step(x, y)
        optimizer.zero_grad()
        expected = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y).reshape(-1))
        expected.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
    assert step.compile_count == 1
    assert step.graph.inputs[0].type.shape == (LENGTH, "N")


def test_accumulate_splits_along_the_batch_dim():
    """Two micro-batches of a sequence-first batch take the step the whole batch takes (mean loss, SGD)."""
    kiln.manual_seed(2)
    whole, split = sequence_first_lm(kiln), sequence_first_lm(kiln)
    split.load_state_dict(whole.state_dict())
    x, y = tokens(6)
    steps = [kiln.compile_train_step(m, lm_loss, kiln.optim.SGD(m.parameters(), lr=0.5), batch_dim=1, accumulate=k)
             for m, k in ((whole, 1), (split, 2))]
    losses = [step(x, y) for step in steps]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for name, value in whole.state_dict().items():
        np.testing.assert_allclose(split.state_dict()[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_tuple_names_each_inputs_batch_dim_and_none_keeps_shapes_static():
    model = nn.Linear(3, 2)

    def head(features, scale):  # features (T, N, 3); scale a static (2,) vector
        return model(features) * scale

    run = kiln.compile(head, batch_dim=(1, None))
    scale = np.float32([1, -2])
    run(np.ones((4, 5, 3), np.float32), scale)
    run(np.ones((4, 2, 3), np.float32), scale)
    assert len(run.variants) == 1 and [v.type.shape for v in run.graph.inputs[:2]] == [(4, "N", 3), (2,)]
    static = kiln.compile(lambda x: model(x), batch_dim=None)
    static(np.ones((5, 3), np.float32))
    static(np.ones((2, 3), np.float32))
    assert len(static.variants) == 2 and static.graph.inputs[0].type.shape == (2, 3)


@pytest.mark.parametrize(("batch_dim", "message"), [((1,), "names 1 inputs, but the call passed 2"),
                                                    (2, "batch input 0 is a 2-d array, which has no batch dim 2")])
def test_a_batch_dim_that_does_not_fit_the_inputs_says_which_input(batch_dim, message):
    model = sequence_first_lm(kiln)
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.SGD(model.parameters(), lr=0.1), batch_dim=batch_dim)
    with pytest.raises(kiln.InputError, match=message):
        step(*tokens(2))


def test_accumulate_needs_a_batch_dim_on_every_input():
    from kiln.runtime.batch_dims import split_micro_batches

    with pytest.raises(kiln.InputError, match="batch input 1 has no batch dim to split"):
        split_micro_batches(list(tokens(2)), 2, (1, None))


def test_an_exported_sequence_first_step_trains_in_onnxruntime_as_in_kiln(tmp_path):
    require("onnxruntime")
    kiln.manual_seed(3)
    model, twin = sequence_first_lm(kiln), sequence_first_lm(kiln)
    twin.load_state_dict(model.state_dict())
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.SGD(model.parameters(), lr=0.5), batch_dim=1, accumulate=2)
    twin_step = kiln.compile_train_step(twin, lm_loss, kiln.optim.SGD(twin.parameters(), lr=0.5), batch_dim=1, accumulate=2)
    x, y = tokens(4)
    step(x, y)
    path = str(tmp_path / "step.onnx")
    kiln.export_onnx_train_step(step, path, batch_size=2)
    loaded = kiln.load_onnx_train_step(path)
    twin_step(x, y)
    for seed in (1, 2):
        batch = tokens(4, seed=seed)
        np.testing.assert_allclose(loaded(*batch), twin_step(*batch), rtol=1e-5)


def test_inputs_of_different_leading_sizes_compile_with_the_smaller_ones_static():
    """Only inputs of the largest leading size share the symbolic batch size; another length is static (it raised
    'N is already 2' when fed)."""
    compiled = kiln.compile(lambda a, b: a.sum(0) * 10 + b.sum())
    for rows, others in ((2, 4), (5, 4), (6, 6), (7, 7)):
        a, b = np.arange(rows * 3.0).reshape(rows, 3), np.arange(float(others))
        np.testing.assert_allclose(compiled(a, b), a.sum(0) * 10 + b.sum())
    assert len(compiled.variants) == 3  # (2 static, N), (N, 4 static), (N, N)


def test_a_constant_position_of_the_batch_is_picked_from_static_shapes():
    """``x[0]``, ``x[-1]`` and a write through ``x[1]`` in a compiled function trace with static shapes, one variant per
    batch size: a take of a symbolic position copied (the write was lost), wrapped ``x[-4]`` of 3 rows round to the
    last, and raised NumPy's words for ``x[5]`` at run time instead of torch's at the user's line."""
    def pick(x):
        row = x[1]
        row.zero_()
        return x[0] * 2 + x[-1], x

    compiled = kiln.compile(pick)
    for rows in (4, 3, 4):
        got, written = compiled(kiln.tensor(np.arange(rows * 2.0).reshape(rows, 2)))
        x = np.arange(rows * 2.0).reshape(rows, 2)
        x[1] = 0
        np.testing.assert_array_equal(got.numpy(), x[0] * 2 + x[-1])
        np.testing.assert_array_equal(written.numpy(), x)
    assert [key[-1] for key in compiled.variants].count(None) == 2  # batch_dim None: one static variant per size
    with pytest.raises(IndexError, match=r"(?s)test_batch_dim.py:\d+.*index -4 is out of bounds for dimension 0 with size 3"):
        kiln.compile(lambda x: x[-4], fullgraph=True)(kiln.zeros(3, 2))
