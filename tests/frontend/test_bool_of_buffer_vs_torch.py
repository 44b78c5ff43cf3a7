"""Two idioms of encodec's ``EuclideanCodebook`` (``quantization/core_vq.py``), as PyTorch 2.13:

- ``if self.inited: return`` on a module buffer (``register_buffer("inited", torch.Tensor([not kmeans_init]))``), and
  ``if param:`` on a one-element parameter: ``bool`` read only a plain eager tensor's array, so a buffer or a
  parameter raised "a traced Tensor has no concrete truth value" in eager code (``item()`` already read them);
- ``torch.compiler.is_compiling()``: False eagerly, True while ``kiln.compile`` traces (kiln had no such function;
  ``kiln.compiler`` is also the IR compiler's package).
"""

from __future__ import annotations

import pytest

import kiln
from oracles import libraries


def codebook(torch, nn, inited: bool):
    class Codebook(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("inited", torch.Tensor([inited]))
            self.register_buffer("embed", torch.zeros(3, 2))
            self.scale = nn.Parameter(torch.ones(()))

        def init_embed_(self, data):
            if self.inited:
                return
            self.embed.data.copy_(data[:3])
            self.inited.data.copy_(torch.Tensor([True]))

    return Codebook()


@pytest.mark.parametrize("inited", [False, True])
@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_if_buffer_as_torch(name, inited):
    torch, nn, _ = libraries(name)
    module = codebook(torch, nn, inited)
    module.init_embed_(torch.arange(8.0).reshape(4, 2))
    assert module.embed.tolist() == ([[0.0, 0.0]] * 3 if inited else [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    assert bool(module.inited) and module.inited.item() == 1.0
    assert bool(module.scale) and not bool(nn.Parameter(torch.zeros(1)))


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_is_compiling_eagerly_as_torch(name):
    torch, _, _ = libraries(name)
    assert torch.compiler.is_compiling() is False


def test_is_compiling_inside_kiln_compile():
    """True while the function is traced (the branch taken is the compiled one), False again after."""
    def step(x):
        return x + 1 if kiln.compiler.is_compiling() else x - 1

    assert kiln.compile(step, fullgraph=True)(kiln.ones(2)).tolist() == [2.0, 2.0]
    assert step(kiln.ones(2)).tolist() == [0.0, 0.0]
    assert kiln.compiler.is_compiling() is False
