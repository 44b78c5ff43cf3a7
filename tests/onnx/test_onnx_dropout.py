"""Dropout on ONNX: each random draw is an input of the exported graph, filled from NumPy's Philox stream.

ONNX cannot compute the Philox-4x64 stream kiln's backends draw from, so the
masks must come in as inputs for onnxruntime to reproduce NumPy's training
exactly; these tests pin that the masks are identical (losses and parameters
equal to the NumPy backend's), that seeds matter, and that the exported file
says enough for a stock runtime to be fed.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.types import TensorType
from kiln.runtime.data import lm_loss
from oracles import require

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
GPT_SHAPE = {"vocab": 11, "context": 8, "d_model": 16, "heads": 2, "layers": 2}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 5))


def mlp_batch(rng: np.random.Generator, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((size, 12)).astype(np.float32), rng.integers(0, 5, size)


def gpt() -> nn.Module:
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    import gpt_tiny

    s = GPT_SHAPE
    return gpt_tiny.GPT(s["vocab"], s["context"], s["d_model"], s["heads"], s["layers"], dropout=0.1)


def gpt_batch(rng: np.random.Generator, size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(0, GPT_SHAPE["vocab"], (size, GPT_SHAPE["context"] + 1))
    return tokens[:, :-1], tokens[:, 1:]


MODELS = {
    "mlp": (mlp, mlp_batch, F.cross_entropy, lambda params: kiln.optim.SGD(params, lr=0.1, momentum=0.9)),
    # SGD, not Adam: the key projection's bias has a zero gradient up to rounding, which Adam would scale up to whole steps
    "gpt": (gpt, gpt_batch, lm_loss, lambda params: kiln.optim.SGD(params, lr=0.1)),
}


def make(name: str, backend: str, **options):
    build, batch, loss, optimizer = MODELS[name]
    kiln.manual_seed(0)
    model = build()
    return model, kiln.compile_train_step(model, loss, optimizer(model.parameters()), backend=backend, **options), batch


def train(name: str, backend: str, steps: int = 4, **options) -> tuple[list[float], dict[str, np.ndarray]]:
    model, step, batch = make(name, backend, **options)
    rng = np.random.default_rng(1)
    losses = [float(step(*batch(rng))) for _ in range(steps)]
    return losses, {key: np.array(value) for key, value in model.state_dict().items()}


@pytest.mark.parametrize("options", [{}, {"accumulate": 2}], ids=["plain", "accumulate2"])
@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_onnxruntime_trains_with_the_numpy_backends_masks(name, options):
    require("onnxruntime")
    expected_losses, expected_state = train(name, "numpy", **options)
    losses, state = train(name, "onnxruntime", **options)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for key, value in expected_state.items():
        np.testing.assert_allclose(state[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_the_seed_and_the_step_change_the_masks():
    require("onnxruntime")
    rng = np.random.default_rng(1)
    batch = mlp_batch(rng)

    def first_losses(seed: int, steps: int) -> list[float]:
        kiln.manual_seed(0)
        model = mlp()
        step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.0), backend="onnxruntime", seed=seed)
        return [float(step(*batch)) for _ in range(steps)]  # lr 0: the weights stay, only the masks change

    seed0, seed1 = first_losses(0, 2), first_losses(1, 1)
    assert seed0[0] != seed1[0]  # another seed, another mask
    assert seed0[0] != seed0[1]  # the next step, another mask
    assert first_losses(0, 2) == seed0  # the same seed replays


def test_the_draws_are_inputs_described_by_metadata(tmp_path):
    onnx = require("onnx")
    _, step, batch = make("mlp", "numpy")
    step(*batch(np.random.default_rng(1)))
    proto = kiln.export_onnx_train_step(step, str(tmp_path / "train.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    draws = json.loads({p.key: p.value for p in proto.metadata_props}["kiln.random_inputs"])
    (draw,) = draws["inputs"]
    assert draw == {"name": "uniform.0", "seed_input": "rng_seed", "stream": 0, "dtype": "float32", "shape": ["N", 32]}
    assert draws["symbols"] == {"N": ["input", 0]}
    inputs = {i.name: i for i in proto.graph.input}
    assert [d.dim_param or d.dim_value for d in inputs["uniform.0"].type.tensor_type.shape.dim] == ["N", 32]
    assert "uniform.0" not in {t.name for t in proto.graph.initializer}  # no default: it must be fed
    assert not any(node.op_type.startswith("Random") for node in proto.graph.node)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_an_exported_dropout_step_resumes_exactly(tmp_path, backend):
    require("onnxruntime")
    model, step, batch = make("mlp", "numpy")  # the NumPy backend's own masks are the reference
    rng = np.random.default_rng(1)
    data = [batch(rng) for _ in range(7)]
    for item in data[:3]:
        step(*item)
    path = str(tmp_path / "train.onnx")
    kiln.export_onnx_train_step(step, path)
    expected = [float(step(*item)) for item in data[3:]]
    resumed = kiln.load_onnx_train_step(path, backend=backend)
    got = [resumed(*item) for item in data[3:]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(resumed.parameters()[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def documented_draws(proto, feeds: dict[str, np.ndarray], rng_seed: int) -> dict[str, np.ndarray]:
    """The draws as the docstring of kiln.runtime.onnx_train_step says to compute them (NumPy's Philox, by hand)."""
    described = json.loads({p.key: p.value for p in proto.metadata_props}["kiln.random_inputs"])
    symbols = {symbol: feeds[name].shape[axis] for symbol, (name, axis) in described["symbols"].items()}
    draws = {}
    for draw in described["inputs"]:
        shape = tuple(symbols[dim] if isinstance(dim, str) else dim for dim in draw["shape"])
        key = np.array([rng_seed & 0xFFFF_FFFF_FFFF_FFFF, draw["stream"]], np.uint64)
        draws[draw["name"]] = np.random.Generator(np.random.Philox(key=key)).random(shape, dtype=np.dtype(draw["dtype"]))
    return draws


@pytest.mark.parametrize("runner", ["onnxruntime", "reference"])
def test_a_stock_runtime_fed_the_documented_draws_matches_kiln(tmp_path, runner):
    onnx = require("onnx")
    _, step, batch = make("mlp", "numpy", seed=3)
    rng = np.random.default_rng(1)
    step(*batch(rng))
    step(*batch(rng))
    path = str(tmp_path / "train.onnx")
    proto = kiln.export_onnx_train_step(step, path)
    x, y = batch(rng)
    feeds = {"input": x, "target": y}
    rng_seed = 3 * 2**20 + 2  # seed * 2**20 + steps done; also the rng_seed input's default
    default_seed = {t.name: t for t in proto.graph.initializer}["rng_seed"]
    assert int(onnx.numpy_helper.to_array(default_seed)) == rng_seed
    feeds.update(documented_draws(proto, feeds, rng_seed))
    if runner == "onnxruntime":
        loss = require("onnxruntime").InferenceSession(path).run(None, feeds)[0]
    else:
        from onnx.reference import ReferenceEvaluator

        loss = ReferenceEvaluator(onnx.load(path)).run(None, feeds)[0]
    np.testing.assert_allclose(loss, step(x, y), rtol=1e-5)
    wrong = dict(feeds, **documented_draws(proto, feeds, rng_seed + 1))  # another step's masks: another loss
    assert not np.allclose(require("onnxruntime").InferenceSession(path).run(None, wrong)[0], loss, rtol=1e-5)


def test_a_draw_whose_seed_is_not_a_graph_input_is_a_clear_error():
    require("onnx")
    from kiln.backends.onnx.export import graph_to_onnx

    graph = Graph("computed_seed")
    seed, x = graph.add_input(TensorType((), "i64")), graph.add_input(TensorType(("N", 4), "f32"))
    b = Builder(graph)
    graph.outputs = [b.random_uniform(b.add(seed, seed), x, dtype=kiln.DType.f32, stream=0)]
    with pytest.raises(LoweringError, match="seed must be a graph input"):
        graph_to_onnx(graph)
