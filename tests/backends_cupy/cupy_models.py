"""The models the CuPy tests train: W1 (MLP 784-128-64-10), the digits CNN and a tiny GPT, with batches and step graphs."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.ir import DType
from kiln.runtime.data import lm_loss

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)


def w1() -> nn.Module:
    return nn.Sequential([nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)])


def w1_batch(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((size, 784), dtype=np.float32), rng.integers(0, 10, size)


def cnn() -> nn.Module:
    import cnn_digits

    return cnn_digits.cnn((4, 8))


def cnn_batch(rng: np.random.Generator, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((size, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, size)


def cnn_bn() -> nn.Module:
    """A convolution with BatchNorm: running statistics and the update counter are buffers the step updates."""
    return nn.Sequential([nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)])


GPT_SHAPE = {"vocab": 11, "context": 8, "d_model": 16, "heads": 2, "layers": 2}


def gpt(dropout: float = 0.0) -> nn.Module:
    import gpt_tiny

    s = GPT_SHAPE
    return gpt_tiny.GPT(s["vocab"], s["context"], s["d_model"], s["heads"], s["layers"], dropout=dropout)


def gpt_batch(rng: np.random.Generator, size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(0, GPT_SHAPE["vocab"], (size, GPT_SHAPE["context"] + 1))
    return tokens[:, :-1], tokens[:, 1:]


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[..., tuple[np.ndarray, np.ndarray]], Callable[..., Any], Callable[..., Any]]] = {
    "mlp": (w1, w1_batch, F.cross_entropy, lambda params: kiln.optim.SGD(params, lr=0.05)),
    "cnn": (cnn, cnn_batch, F.cross_entropy, lambda params: kiln.optim.SGD(params, lr=0.05, momentum=0.9)),
    "cnn_bn": (cnn_bn, cnn_batch, F.cross_entropy, lambda params: kiln.optim.SGD(params, lr=0.05, momentum=0.9)),
    "gpt": (gpt, gpt_batch, lm_loss, lambda params: kiln.optim.Adam(params, lr=3e-3)),
    "gpt_dropout": (lambda: gpt(dropout=0.1), gpt_batch, lm_loss, lambda params: kiln.optim.Adam(params, lr=3e-3)),
}
"""name -> (model, batch(rng), loss, optimizer(params))."""


def step_for(name: str, backend: str = "numpy", seed: int = 0, optimizer: Callable[..., Any] | None = None, dtype: Any = None):
    """``(model, step, rng)``: the same initial weights for every backend given the seed; ``dtype`` (``kiln.float16``)
    converts the model's parameters after initialisation (feed it ``batch_in``'s batches)."""
    make, _, loss, default_optimizer = MODELS[name]
    kiln.manual_seed(seed)
    model = make() if dtype is None else make().to(dtype)
    step = kiln.compile_train_step(model, loss, (optimizer or default_optimizer)(model.parameters()), backend=backend)
    return model, step, np.random.default_rng(seed)


def batch_in(name: str, rng: np.random.Generator, dtype: Any = None) -> tuple[np.ndarray, ...]:
    """One batch of ``name``'s, its float arrays in ``dtype`` (a NumPy dtype, or kiln's: ``kiln.float16``) if given."""
    batch = MODELS[name][1](rng)
    if dtype is None:
        return batch
    numpy_dtype = DType.of(dtype).numpy
    return tuple(a.astype(numpy_dtype) if a.dtype.kind == "f" else a for a in batch)


def step_graph(name: str, optimizer: Callable[..., Any] | None = None, dtype: Any = None) -> kiln.Graph:
    """The step graph of one model (compiled and run once on NumPy), before any backend lowering."""
    _, step, rng = step_for(name, optimizer=optimizer, dtype=dtype)
    step(*batch_in(name, rng, dtype))
    return step.graph


def comparable(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Parameters to compare across backends: attention's key bias is left out (its gradient is zero in exact
    arithmetic, since softmax ignores a per-row shift, so Adam turns rounding noise into steps of about ``lr``)."""
    out = {}
    for name, value in state.items():
        if name.endswith("in_proj_bias"):
            third = len(value) // 3
            value = np.concatenate([value[:third], value[2 * third :]])
        out[name] = value
    return out


def kernel_sources(graph: kiln.Graph) -> dict[str, Any]:
    """Name -> source of every generated kernel (elementwise and reduction) the CuPy backend launches for ``graph``."""
    from kiln.backends.cupy import lower_for_cupy
    from kiln.backends.cupy.codegen import group_kernels
    from kiln.compiler.ops.registry import has_trait

    lowered = lower_for_cupy(graph)
    return {source.name: source for op in lowered.ops if has_trait(op.name, "fused") for source in group_kernels(op).sources()}


def op_table_kernel_sources() -> dict[str, Any]:
    """The generated kernels of every case of the op table (``tests/ops/op_table.py``), in each of its dtypes."""
    from ops.op_table import cases, op_graph

    sources: dict[str, Any] = {}
    for case in cases():
        sources |= kernel_sources(op_graph(*case.values)[0])
    return sources
