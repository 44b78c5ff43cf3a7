"""kiln.saliency: input gradients through the compiled graph, checked against PyTorch; the digits example draws its PNG."""

from __future__ import annotations

import os

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import InputError
from oracles import require

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")


def test_saliency_matches_torch_input_gradients():
    torch = require("torch")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    targets = np.array([0, 1, 2, 1, 0])
    reference = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    reference.load_state_dict({name: torch.tensor(array) for name, array in model.state_dict().items()})
    tx = torch.tensor(x, requires_grad=True)
    reference(tx)[torch.arange(5), torch.tensor(targets)].sum().backward()
    np.testing.assert_allclose(kiln.saliency(model, x, targets), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    predicted = reference(torch.tensor(x)).argmax(1).numpy()
    np.testing.assert_allclose(kiln.saliency(model, x), kiln.saliency(model, x, predicted), rtol=1e-6)
    with pytest.raises(InputError, match="not a class"):
        kiln.saliency(model, x, 3)


def test_saliency_example_renders_a_png(tmp_path, monkeypatch):
    require("sklearn")
    monkeypatch.syspath_prepend(EXAMPLES)
    import saliency_digits

    output = tmp_path / "saliency.png"
    maps = saliency_digits.main(["-o", str(output), "--epochs", "3", "--count", "4"])
    assert maps.shape == (4, 64) and np.abs(maps).sum() > 0
    import matplotlib.image

    assert matplotlib.image.imread(str(output)).ndim == 3
