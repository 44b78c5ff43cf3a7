"""``print(model)`` as PyTorch's: a module with both an ``extra_repr`` and children (the Forward-Forward example's
``Layer(nn.Linear)`` with its ``relu``) puts its extra line on a line of its own, above the children; kiln printed it
after the opening parenthesis."""

from __future__ import annotations

import pytest

from oracles import require_torch


def _models(nn):
    class Layer(nn.Linear):
        def __init__(self, in_features, out_features):
            super().__init__(in_features, out_features)
            self.relu = nn.ReLU()

    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), Layer(4, 2))

    class Empty(nn.Module):
        pass

    return [Layer(6, 3), Stem(), Empty(), nn.Linear(2, 3), nn.LSTM(4, 5, batch_first=True), nn.Dropout2d(0.25)]


@pytest.mark.parametrize("index", range(6), ids=["extra-and-child", "nested", "empty", "extra-only", "lstm", "dropout2d"])
def test_module_reprs_are_torchs(index):
    torch = require_torch()
    import kiln.nn as nn

    assert repr(_models(nn)[index]) == repr(_models(torch.nn)[index])
