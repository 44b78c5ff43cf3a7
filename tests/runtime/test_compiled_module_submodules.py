"""A ``kiln.compile``'d module's submodule is the submodule itself, as ``torch.compile``'s ``OptimizedModule`` gives
it (``runtime/compiled_function.py``'s ``__getattr__``): the complex RetNet's evaluation reads
``model.retnet.retentions[0].complex_type`` of ``model = torch.compile(model)``; kiln handed back a function wrapping
the submodule's call, with no ``retentions``. Checked against torch 2.13."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import require_torch


def _model(lib):
    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = lib.nn.Linear(3, 4)
            self.blocks = lib.nn.ModuleList([lib.nn.Linear(4, 4), lib.nn.Tanh()])
            self.blocks[0].kind = "mixer"

        def forward(self, x):
            x = self.encoder(x)
            for block in self.blocks:
                x = block(x)
            return x

    return Net().double()


def test_a_compiled_modules_submodules_are_the_modules_themselves_as_torchs():
    torch = require_torch()
    for lib in (kiln, torch):
        model = _model(lib)
        compiled = lib.compile(model)
        assert compiled.encoder is model.encoder and compiled.blocks is model.blocks
        assert isinstance(compiled.blocks, lib.nn.ModuleList) and compiled.blocks[0].kind == "mixer"
    x = np.random.default_rng(0).standard_normal((2, 3))
    np.testing.assert_array_equal(compiled.encoder(torch.tensor(x)).detach().numpy(),
                                  model.encoder(torch.tensor(x)).detach().numpy())


def test_a_compiled_modules_methods_still_return_the_compiled_module():
    model = _model(kiln)
    compiled = kiln.compile(model)
    assert compiled.eval() is compiled and compiled.double() is compiled
    assert compiled.encoder.eval() is model.encoder  # a submodule's own methods are its own
