"""``torch.jit.ScriptModule`` as a base class with ``@torch.jit.script_method``s (RWKV_in_150_lines' ``RWKV_RNN``,
RWKV-v4's ``RWKV_TimeMix``): kiln had neither, so such a class failed at its definition. In kiln it is an
``nn.Module`` whose script methods run as Python; torch compiles them to TorchScript. Same outputs, same in-place
state writes, same parameters; ``script_method`` warns as torch 2.13's (deprecated)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def program(torch):
    class Cell(torch.jit.ScriptModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.arange(12.0).reshape(3, 4) / 10)

        @torch.jit.script_method
        def mix(self, x, state, i: int):
            out = torch.tanh(self.weight @ x + state[i])
            state[i] = out
            return out

        def forward(self, x, state):
            return self.mix(x, state, 0) + self.mix(x, state, 1)

    return Cell()


def test_script_module_with_script_methods_as_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        with pytest.warns(DeprecationWarning, match=r"`(torch|kiln).jit.script_method` is deprecated. Please switch"):
            cell = program(lib)
        state = lib.zeros(2, 3)
        assert isinstance(cell, lib.nn.Module) and isinstance(cell, lib.jit.ScriptModule)
        outs = [cell(lib.tensor([1.0, -2.0, 0.5, 3.0]), state) for _ in range(2)]
        results.append(([np.array(o.detach().numpy()) for o in outs], np.array(state.detach().numpy()),
                        [n for n, _ in cell.named_parameters()]))
    (ours, our_state, our_names), (theirs, their_state, their_names) = results
    assert our_names == their_names == ["weight"]
    np.testing.assert_allclose(our_state, their_state, rtol=1e-6)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:`kiln.jit.script_method` is deprecated")
def test_script_module_save_names_kilns_way():
    with pytest.raises(NotImplementedError, match="kiln has no TorchScript.*kiln.save"):
        program(kiln).save("cell.pt")
