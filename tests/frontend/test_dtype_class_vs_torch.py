"""``torch.dtype``, the class of the dtypes, as PyTorch's: model code annotates with it (open_clip's
``def get_cast_dtype(self) -> torch.dtype:``, evaluated when the class is built without ``from __future__ import
annotations``) and checks ``isinstance(x, torch.dtype)``; ``kiln.dtype`` was missing (AttributeError)."""

from __future__ import annotations

import pytest

from oracles import libraries

NAMES = ["float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool", "complex64",
         "complex128", "half", "float", "double", "long", "int", "cfloat"]


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_every_dtype_is_an_instance_of_torch_dtype(name):
    torch = libraries(name)[0]
    assert all(isinstance(getattr(torch, dtype), torch.dtype) for dtype in NAMES)
    assert not any(isinstance(other, torch.dtype) for other in (3, "float32", float, torch.ones(1)))
    assert isinstance(torch.ones(2).dtype, torch.dtype) and isinstance(torch.get_default_dtype(), torch.dtype)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_an_annotation_evaluated_at_definition(name):
    torch, nn, _ = libraries(name)
    namespace = {"torch": torch, "nn": nn}
    source = ("class Tower(nn.Module):\n"
              "    def get_cast_dtype(self) -> torch.dtype:\n"
              "        return torch.float64\n")
    exec(compile(source, "<open_clip>", "exec", dont_inherit=True), namespace)  # annotations evaluated, not postponed
    tower = namespace["Tower"]()
    assert tower.get_cast_dtype() is torch.float64
    assert tower.get_cast_dtype.__annotations__["return"] is torch.dtype
