"""``kiln.nn.init``'s deprecated names without the underscore (``frontend/init_deprecated.py``) against torch 2.13's:
the same names, the same ``FutureWarning`` text, and the in-place initialiser's write (arcface-pytorch's
``SphereProduct`` calls ``nn.init.xavier_uniform(self.weight)``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

DEPRECATED = {  # old name: (arguments after the tensor, a check of the values written)
    ".uniform": ((-0.5, 0.5), lambda w: np.all(np.abs(w) <= 0.5)),
    ".normal": ((0.0, 0.1), lambda w: np.abs(w).max() < 1.0),
    ".constant": ((0.25,), lambda w: np.all(w == 0.25)),
    ".eye": ((), lambda w: np.array_equal(w, np.eye(*w.shape))),
    ".sparse": ((0.5,), lambda w: list((w == 0).sum(0)) == [2] * 4),
    ".xavier_uniform": ((), lambda w: np.all(np.abs(w) <= np.sqrt(6 / 7))),
    ".xavier_normal": ((2.0,), lambda w: np.abs(w).max() < 10),
    ".kaiming_uniform": ((), lambda w: np.all(np.abs(w) <= np.sqrt(6 / 3))),
    ".kaiming_normal": ((), lambda w: np.abs(w).max() < 10),
    ".orthogonal": ((), lambda w: np.allclose(w @ w.T, np.eye(3))),
}


@pytest.mark.parametrize("name", DEPRECATED)
@pytest.mark.parametrize("library", ["kiln", "torch"])
def test_deprecated_init_warns_and_writes_in_place_as_torch(library, name):
    torch, nn, F = libraries(library)
    old_name = name[1:]
    arguments, check = DEPRECATED[name]
    weight = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.warns(FutureWarning, match=rf"^`nn.init.{old_name}` is now deprecated in favor of `nn.init.{old_name}_`.$") as record:
        returned = getattr(nn.init, old_name)(weight, *arguments)
    assert returned is weight and check(weight.detach().numpy())
    assert record[0].filename == __file__  # the warning names the caller's line, as torch's stacklevel=2


def test_deprecated_names_are_the_ones_torch_has():
    torch, _, _ = libraries("torch")
    ours = {name for name in kiln.nn.init.__all__ if not name.endswith("_") and name != "calculate_gain"}
    assert ours == {name[1:] for name in DEPRECATED} | {"dirac"}  # dirac's needs a 3-5-d weight: tested with dirac_
    assert all(hasattr(torch.nn.init, name) and hasattr(torch.nn.init, f"{name}_") for name in ours)
