"""A symbolic sequence dim indexed as BERT's embeddings and pooler index it (``modeling_bert``): the registered
``position_ids`` buffer sliced up to the traced length (``self.position_ids[:, :seq_length]``, a fixed dim with a
symbolic stop) and the first token picked from the symbolic dim (``hidden_states[:, 0]``; a GPT's last one, ``logits[:, -1]``). Both were refused while
tracing with a dynamic sequence (``cannot slice dim 1 (size 16) ... with the symbolic bound``, ``cannot index the
symbolic dim``), so a BERT classifier did not export with ``dynamic_axes`` on the sequence. Now the prefix is a take
of ``arange(seq_length)`` and the pick a take of one position (a negative one counted from the run-time size) (``frontend/symbolic_dims.py``): one graph for every
length up to the buffer's, as torch's export assumes. Checked against torch 2.13 and onnxruntime on several lengths."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from kiln.frontend.trace import TensorSpec
from oracles import libraries, require, require_torch

MAX_LEN = 8


def embeddings(torch, nn):
    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.position_embeddings = nn.Embedding(MAX_LEN, 3)
            self.register_buffer("position_ids", torch.arange(MAX_LEN).expand((1, -1)), persistent=False)

        def forward(self, hidden_states):
            seq_length = hidden_states.size(1)
            position_ids = self.position_ids[:, :seq_length]
            x = hidden_states + self.position_embeddings(position_ids)
            return x[:, 0] * 2 + x[:, -1] - x[:, -2] + x.sum(1)

    return Embeddings()


def inputs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2, length, 3)) for length in lengths]


def twins():
    torch = require_torch()
    kiln.manual_seed(0)
    ours = embeddings(kiln, libraries("kiln")[1])
    theirs = embeddings(torch, torch.nn)
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
    return torch, ours, theirs


def test_exported_with_a_dynamic_sequence_as_torch(tmp_path):
    onnxruntime = require("onnxruntime")
    torch, ours, theirs = twins()
    path = str(tmp_path / "embeddings.onnx")
    kiln.onnx.export(ours, (kiln.tensor(inputs([5])[0]),), path, input_names=["hidden_states"],
                     dynamic_axes={"hidden_states": {1: "sequence"}})
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for x in inputs([2, 8, 3], seed=1):
        (result,) = session.run(None, {"hidden_states": x})
        np.testing.assert_allclose(result, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_compiled_once_for_every_batch_with_gradients_as_torch():
    """A parameter table's first rows up to the symbolic batch (``kiln.compile``'s dynamic leading dim): one graph
    for batches of 3 and 5, and the table's gradient (the take's, scattered back) as torch's."""
    torch = require_torch()
    rng = np.random.default_rng(3)
    start = rng.normal(size=(MAX_LEN, 2))
    table, twin = kiln.tensor(start, requires_grad=True), torch.tensor(start, requires_grad=True)
    compiled = kiln.compile(lambda x: (table[:x.size(0)] * x).sum())
    for batch in (3, 5):
        x = rng.normal(size=(batch, 2))
        table.grad, twin.grad = None, None
        compiled(kiln.tensor(x)).backward()
        (twin[:batch] * torch.tensor(x)).sum().backward()
        np.testing.assert_allclose(table.grad.numpy(), twin.grad.numpy(), rtol=1e-12)
    assert len(compiled.variants) == 1


def test_the_traced_shapes_are_the_symbolic_length():
    _, ours, _ = twins()
    graph = kiln.trace(lambda x: ours.position_ids[:, :x.size(1)] + x[:, 0, :1].long(), TensorSpec((2, "T", 3), "float64"))
    assert graph.outputs[0].type.shape == (2, "T")


def test_other_symbolic_slices_are_still_refused_at_the_users_line():
    table = kiln.arange(MAX_LEN)
    with pytest.raises(TraceError, match=r"(?s)test_symbolic_prefix_slice_vs_torch.py:\d+.*symbolic bound"):
        kiln.trace(lambda x: table[1:x.size(0)] + x, TensorSpec(("T",), "int64"))
