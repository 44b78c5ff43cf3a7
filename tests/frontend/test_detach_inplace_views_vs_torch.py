"""``detach_()`` of a view is torch 2.13's RuntimeError ("Can't detach views in-place"), eagerly and in a compiled
function: kiln wrote the detached values through the view, silently cutting the base's gradient where the view lies
(BYOL's ``target_proj_one.detach_()`` of a ``chunk``; a gradient of 0 for those rows). Results that are no views in
torch (arithmetic, advanced indexing, which kiln made as a reshape of a gathered temporary) still detach in place."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

VIEWS = {
    "slice": lambda x: x[:2],
    "select": lambda x: x[0],
    "chunk": lambda x: x.chunk(2)[0],
    "split": lambda x: x.split(2)[1],
    "unbind": lambda x: x.unbind()[0],
    "transpose": lambda x: x.t(),
    "view": lambda x: x.view(8),
    "reshape of a contiguous tensor": lambda x: x.reshape(2, 4),
    "unsqueeze": lambda x: x.unsqueeze(0),
    "diagonal": lambda x: x.diagonal(),
    "narrow": lambda x: x.narrow(0, 1, 2),
}
NOT_VIEWS = {
    "product": lambda x: x * 2,
    "advanced index": lambda x: x[[0, 2]],
    "index tensor": lambda x: x[x.new_tensor([3, 1]).long()],
    "reshape of a transpose (a copy)": lambda x: x.t().reshape(8),
    "clone": lambda x: x.clone(),
}


def _base(lib, requires_grad):
    leaf = lib.tensor(np.arange(8.0).reshape(4, 2), requires_grad=requires_grad)
    return leaf, (leaf * 1.5 if requires_grad else leaf)


@pytest.mark.parametrize("of", ["a non-leaf", "a leaf without grad"])
@pytest.mark.parametrize("view", VIEWS)
def test_detach_of_a_view_is_refused_as_torch(view, of):
    torch = require_torch()
    for lib in (torch, kiln):
        _, base = _base(lib, requires_grad=of == "a non-leaf")
        with pytest.raises(RuntimeError, match=r"Can't detach views in-place\. Use detach\(\) instead\."):
            VIEWS[view](base).detach_()


@pytest.mark.parametrize("made", NOT_VIEWS)
def test_detach_of_a_new_tensor_detaches_it_and_keeps_the_gradient_as_torch(made):
    torch = require_torch()
    grads = []
    for lib in (torch, kiln):
        leaf, base = _base(lib, requires_grad=True)
        result = NOT_VIEWS[made](base)
        assert result.detach_() is result and not result.requires_grad and result.grad_fn is None
        (base * base).sum().backward()
        grads.append(np.array(leaf.grad.numpy()))
    np.testing.assert_array_equal(grads[1], grads[0])


def test_detach_of_a_view_in_a_compiled_function_is_refused():
    def halves(x):
        first, second = (x * 2).chunk(2)
        first.detach_()
        return first + second

    with pytest.raises(RuntimeError, match=r"Can't detach views in-place"):
        kiln.compile(halves, fullgraph=True)(kiln.ones(4, 2))


def test_a_write_into_an_advanced_index_leaves_the_source_as_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        x = lib.arange(8.0).reshape(4, 2)
        picked = x[[0, 1]]
        picked.fill_(-1.0)
        assert x[0].tolist() == [0.0, 1.0] and picked.tolist() == [[-1.0, -1.0], [-1.0, -1.0]]
