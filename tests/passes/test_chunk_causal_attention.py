"""chunk-causal-attention computes the same attention and gradients as the whole causal attention, with fewer scores.

Each chunked graph runs on the NumPy backend against the unsplit graph, in
float64; the score area (what the GEMMs and the softmax touch) is counted
from the rewritten graph.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, Graph
from kiln.compiler.ir.types import TensorType
from kiln.compiler.passes import PassManager, chunk_causal_attention
from kiln.compiler.passes.chunk_causal_attention import chunk_bounds
from kiln.runtime.data import lm_loss
from oracles import require

GRAD = "nn.scaled_dot_product_attention_grad"


def _attention_graph(batch: tuple, length: int, width: int, causal: bool = True, masked: bool = False) -> Graph:
    """``(q, k, v, g[, keep]) -> (attention, dq, dk, dv)``."""
    graph = Graph("attention")
    q, k, v, g = (graph.add_input(TensorType(batch + (length, width), "f64"), name) for name in "qkvg")
    masks = [graph.add_input(TensorType((length, length), "bool"), "keep")] if masked else []
    b = Builder(graph)
    output = b.op("nn.scaled_dot_product_attention", q, k, v, *masks, causal=causal, scale=None)
    graph.outputs = [output, *b.op(GRAD, q, k, v, g, *masks, causal=causal, scale=None)]
    return graph


def _chunked(graph: Graph, chunk: int) -> Graph:
    from kiln.compiler.ir.core import clone_graph

    graph = clone_graph(graph)
    PassManager(f"chunk-causal-attention{{chunk={chunk}}},cse,dce").run(graph)
    return graph


def _inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(v.type.shape) < 0.7 if v.type.dtype.value == "bool" else rng.standard_normal(v.type.shape) for v in graph.inputs]


def _score_area(graph: Graph) -> int:
    """Elements of every attention's score matrices: rows (queries) times keys, summed over the attentions."""
    return sum(op.operands[0].type.shape[-2] * op.operands[1].type.shape[-2]
               for op in graph.ops if op.name == "nn.scaled_dot_product_attention")


@pytest.mark.parametrize(("length", "chunk"), [(8, 4), (10, 4), (9, 3), (9, 4), (12, 5)])
def test_chunks_give_the_whole_attention_and_its_gradients(length, chunk):
    graph = _attention_graph((2, 3), length, 4)
    chunked = _chunked(graph, chunk)
    arrays = _inputs(graph)
    expected = NumpyBackend().compile(graph)(*arrays)
    actual = NumpyBackend().compile(chunked)(*arrays)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-13)
    bounds = chunk_bounds(length, chunk)
    assert sum(op.name == "nn.scaled_dot_product_attention" for op in chunked.ops) == len(bounds)
    assert sum(op.name == GRAD for op in chunked.ops) == len(bounds)
    assert _score_area(chunked) == sum((end - begin) * end for begin, end in bounds) < length * length


def test_four_chunks_keep_ten_sixteenths_of_the_scores():
    chunked = _chunked(_attention_graph((1,), 1024, 2), 256)
    assert _score_area(chunked) == 1024 * 1024 * 10 // 16


@pytest.mark.parametrize(("causal", "masked", "length"), [(False, False, 8), (True, True, 8), (True, False, 7)])
def test_what_is_not_a_long_plain_causal_attention_stays_whole(causal, masked, length):
    graph = _attention_graph((2,), length, 4, causal=causal, masked=masked)
    chunked = _chunked(graph, 4)
    assert [op.name for op in chunked.ops] == [op.name for op in graph.ops]


def test_the_forward_and_backward_chunks_share_their_slices_and_masks():
    chunked = _chunked(_attention_graph((2,), 12, 4), 4)
    constants = [op for op in chunked.ops if op.name == "tensor.constant"]
    assert len(constants) == 2  # the masks of chunks 1 and 2 (chunk 0 is a plain causal one), each built once
    for op in chunked.ops:
        if op.name in ("nn.scaled_dot_product_attention", GRAD) and len(op.operands) > (3 if op.name.endswith("attention") else 4):
            assert op.operands[-1].producer in constants


class CausalLM(nn.Module):
    """Embedding, one causal self-attention and a head: the smallest model whose step has a causal attention."""

    def __init__(self, vocab: int = 11, width: int = 8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.attention = nn.MultiheadAttention(width, 2, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        h = self.embedding(tokens)
        return self.head(h + self.attention(h, h, h, need_weights=False, is_causal=True)[0])


def test_a_causal_model_trains_the_same_in_chunks(monkeypatch):
    """The backends split long causal attentions (``CAUSAL_CHUNK``, read when they compile): 9 positions in chunks of 4
    train as the whole attention does, on NumPy and in onnxruntime. SGD, not Adam: the key bias has a zero gradient in
    exact arithmetic, which Adam would turn into steps of lr from rounding noise."""
    require("onnxruntime")
    tokens = np.random.default_rng(0).integers(0, 11, (3, 10))
    runs = {}
    for backend, chunk in (("numpy", 0), ("numpy", 4), ("onnxruntime", 0), ("onnxruntime", 4)):
        monkeypatch.setattr(chunk_causal_attention, "CAUSAL_CHUNK", chunk)
        kiln.manual_seed(0)
        model = CausalLM()
        step = kiln.compile_train_step(model, lm_loss, kiln.optim.SGD(model.parameters(), lr=0.5), backend=backend)
        losses = [step(tokens[:, :-1], tokens[:, 1:]) for _ in range(4)]
        runs[backend, chunk] = (losses, {k: v.copy() for k, v in model.state_dict().items()})
        if backend == "numpy":
            lowered = list(step.compiled.values())[-1].executable.graph
            assert sum(op.name == "nn.softmax" for op in lowered.ops) == (3 if chunk else 1)  # [0, 4), [4, 8), [8, 9)
    reference = runs["numpy", 0]
    for key in (("numpy", 4), ("onnxruntime", 0), ("onnxruntime", 4)):
        np.testing.assert_allclose(runs[key][0], reference[0], rtol=1e-5, err_msg=str(key))
        for name, value in reference[1].items():
            np.testing.assert_allclose(runs[key][1][name], value, rtol=1e-4, atol=1e-6, err_msg=f"{key} {name}")


def test_the_onnx_export_splits_and_shares_the_recomputed_weights(monkeypatch):
    """Exported in chunks of 4: three Softmax nodes for 9 positions, forward and backward together (the backward's
    recomputed weights merge with the forward's)."""
    require("onnx")
    from kiln.backends.onnx.export import graph_to_onnx

    graph = _attention_graph((2,), 9, 4)
    softmaxes = []
    for chunk in (0, 4):
        monkeypatch.setattr(chunk_causal_attention, "CAUSAL_CHUNK", chunk)
        softmaxes.append(sum(node.op_type == "Softmax" for node in graph_to_onnx(graph).graph.node))
    assert softmaxes == [1, 3]
