"""``backward()`` / ``autograd.grad`` of a tensor with more than one element and no gradient given: kiln raises torch's
RuntimeError with torch's words ("grad can be implicitly created only for scalar outputs"), then says which tensor
and what to do; its words were its own ("only for a scalar")."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries


@pytest.mark.parametrize("call", ["backward", "autograd.grad"])
def test_a_non_scalar_without_a_gradient_is_refused_with_torchs_words(call):
    messages = []
    for name in ("torch", "kiln"):
        torch = libraries(name)[0]
        x = torch.tensor(np.ones((3, 2)), requires_grad=True)
        with pytest.raises(RuntimeError) as error:
            torch.autograd.grad(x ** 2, x) if call == "autograd.grad" else (x ** 2).backward()
        messages.append(str(error.value))
    assert messages[0] in messages[1] and "of its shape" in messages[1]
