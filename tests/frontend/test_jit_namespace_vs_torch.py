"""``kiln.jit``: model code written for PyTorch uses ``torch.jit``'s decorators and queries outside TorchScript
(Swin's ``@torch.jit.ignore def no_weight_decay_keywords``, timm's ``if torch.jit.is_scripting()``,
``torch.jit.Final`` annotations); ``kiln.jit`` did not exist, so such a class failed at its definition. They behave as
torch 2.13's in eager code (and in a ``kiln.compile``d function); ``@torch.jit.script`` on a function returns it
(with torch's DeprecationWarning); ``script`` of a module and ``trace``/``save``/``load`` say what to use instead."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

import kiln
from oracles import require_torch


def program(torch):
    nn = torch.nn

    class Block(nn.Module):
        scale: torch.jit.Final[float]

        def __init__(self):
            super().__init__()
            self.scale = 2.0
            self.table = nn.Parameter(torch.ones(3))

        @torch.jit.ignore
        def no_weight_decay_keywords(self):
            return {"table"}

        @torch.jit.ignore(drop=True)
        def debug(self):
            return "dropped in TorchScript only"

        @torch.jit.unused
        def unused_path(self, x):
            return x * 100

        @torch.jit.export
        def exported(self, x):
            return x - 1

        def forward(self, x):
            if torch.jit.is_scripting() or torch.jit.is_tracing():
                return x
            shifts = torch.jit.annotate(List[int], [])
            return self.exported(x * self.table * self.scale) + len(shifts)

    return Block()


def test_decorators_and_queries_as_torch():
    torch = require_torch()
    with pytest.warns(FutureWarning, match="ignore.True. has been deprecated"):
        ours = program(kiln)
    with pytest.warns(FutureWarning, match="ignore.True. has been deprecated"):
        theirs = program(torch)
    x = np.arange(3.0)
    expected = theirs(torch.tensor(x)).detach().numpy()
    np.testing.assert_array_equal(ours(kiln.tensor(x)).numpy(), expected)
    np.testing.assert_array_equal(np.asarray(kiln.compile(ours)(kiln.tensor(x))), expected)
    for name in ("no_weight_decay_keywords", "debug"):
        assert getattr(ours, name)() == getattr(theirs, name)()
    assert ours.unused_path(1) == theirs.unused_path(1) == 100
    assert kiln.jit.is_scripting() is torch.jit.is_scripting() is False


@pytest.mark.parametrize("name, instead", [("script", "kiln.compile"), ("trace", "kiln.onnx.export"),
                                           ("save", "kiln.save"), ("load", "kiln.load")])
def test_torchscript_entry_points_say_what_to_use(name, instead):
    """(``script`` of a module: of a function, see below.)"""
    with pytest.raises(NotImplementedError, match=f"kiln.jit.{name}: kiln has no TorchScript; .*{instead}"):
        getattr(kiln.jit, name)(kiln.nn.Linear(2, 2) if name == "script" else lambda x: x * 2)


def single_emb(torch):
    """Graphormer's ``@torch.jit.script def convert_to_single_emb`` (graphormer/data/wrapper.py), typed default
    included."""

    @torch.jit.script
    def convert_to_single_emb(x, offset: int = 512):
        feature_num = x.size(1) if len(x.size()) > 1 else 1
        feature_offset = 1 + torch.arange(0, feature_num * offset, offset, dtype=torch.long)
        x = x + feature_offset
        return x

    return convert_to_single_emb


def test_script_of_a_function_runs_it_as_torch():
    """``@torch.jit.script`` on a helper function raised at its definition (so Graphormer's data wrapper failed at
    import); torch 2.13 scripts it with a DeprecationWarning and the ScriptFunction computes what the Python does.
    kiln warns alike and returns the function."""
    torch = require_torch()
    x = np.array([[0, 3], [2, 1], [4, 4]])
    for lib in (kiln, torch):
        with pytest.warns(DeprecationWarning, match="jit.script` is deprecated"):
            convert = single_emb(lib)
        assert np.array_equal(np.asarray(convert(lib.tensor(x)).numpy()), x + [1, 513])
        assert np.array_equal(np.asarray(convert(lib.tensor(x), 8).numpy()), x + [1, 9])
