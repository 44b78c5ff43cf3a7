"""Layers create their parameters and buffers in ``kiln.get_default_dtype()``, as PyTorch's follow
``torch.set_default_dtype``: after ``set_default_dtype(float64)`` every float parameter and buffer is float64 in both
libraries, an explicit ``dtype=`` still wins, and the default is float32 again after resetting it."""

from __future__ import annotations

import pytest

import kiln

LAYERS = {
    "Linear": lambda nn: nn.Linear(3, 4),
    "Bilinear": lambda nn: nn.Bilinear(3, 2, 4),
    "Conv1d": lambda nn: nn.Conv1d(2, 3, 3),
    "Conv2d": lambda nn: nn.Conv2d(2, 3, 3),
    "Conv3d": lambda nn: nn.Conv3d(2, 3, 3),
    "ConvTranspose2d": lambda nn: nn.ConvTranspose2d(2, 3, 3),
    "BatchNorm1d": lambda nn: nn.BatchNorm1d(3),
    "BatchNorm2d": lambda nn: nn.BatchNorm2d(3),
    "LayerNorm": lambda nn: nn.LayerNorm(4),
    "GroupNorm": lambda nn: nn.GroupNorm(2, 4),
    "Embedding": lambda nn: nn.Embedding(5, 3),
    "EmbeddingBag": lambda nn: nn.EmbeddingBag(5, 3),
    "PReLU": lambda nn: nn.PReLU(),
    "LSTM": lambda nn: nn.LSTM(3, 4),
    "GRU": lambda nn: nn.GRU(3, 4),
    "RNN": lambda nn: nn.RNN(3, 4),
    "LSTMCell": lambda nn: nn.LSTMCell(3, 4),
    "GRUCell": lambda nn: nn.GRUCell(3, 4),
    "MultiheadAttention": lambda nn: nn.MultiheadAttention(4, 2),
    "TransformerEncoderLayer": lambda nn: nn.TransformerEncoderLayer(4, 2, dim_feedforward=8),
}


def _dtypes(module):
    """Each float parameter's and buffer's dtype name (``float64``), kiln's (a DType) or torch's."""
    named = [*module.named_parameters(), *module.named_buffers()]
    names = {name: t.dtype.numpy.name if hasattr(t.dtype, "numpy") else str(t.dtype).removeprefix("torch.") for name, t in named}
    return {name: dtype for name, dtype in names.items() if dtype.startswith("float")}


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_follow_the_default_dtype_as_torch(float64_default, layer):
    torch = float64_default
    got, want = _dtypes(LAYERS[layer](kiln.nn)), _dtypes(LAYERS[layer](torch.nn))
    assert got == want and set(got.values()) == {"float64"}


def test_an_explicit_dtype_wins_and_the_default_comes_back(float64_default):
    assert kiln.nn.Linear(3, 4, dtype=kiln.float32).weight.dtype == kiln.float32
    kiln.set_default_dtype(kiln.float32)
    assert kiln.nn.LSTM(3, 4).weight_ih_l0.dtype == kiln.float32
    mask = kiln.nn.Transformer.generate_square_subsequent_mask(3)
    assert mask.dtype == kiln.float32
