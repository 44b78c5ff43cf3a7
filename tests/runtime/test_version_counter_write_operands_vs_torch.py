"""An eager in-place write whose operand was computed before it from the tensor it writes (``x += f(x)``: the original
EGNN ``gcl.py``'s ``coord += agg * self.coords_weight``, ``x.copy_(x * w)``, ``x[0] = x[1] * w[0]``): PyTorch's
``backward()`` refuses it where ``f``'s backward saved ``x``, as for any write after the read. kiln exempted every op
within a few ops behind the write's new value that read the old one, so ``f``'s ops counted as the write's own and the
backward ran. The write's own ops are now exactly those it runs (``version_counter.WRITES_RUNNING``), and an in-place
op's own reads stay exempt (``x.mul_(w)``, ``x.add_(x * 3)``, ``clamp_``). Each case runs on each library: both
refuse with PyTorch's words, or both give the same gradient. The message names the op that now makes the tensor only
where it requires grad, as torch's ``grad_fn`` (``runtime/saved_versions._grad_fn_maker``; kiln named none after
``x += y`` of a leaf ``x``, and named the write's op for a tensor that does not require grad)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from oracles import libraries


def gradient_after(program, name):
    """``program(lib, nn, w)``'s loss backward: ``w``'s gradient, or the RuntimeError's message."""
    lib, nn, _ = libraries(name)
    lib.manual_seed(0)
    w = lib.tensor([2.0, 3.0], requires_grad=True)
    try:
        program(lib, nn, w).sum().backward()
    except RuntimeError as error:
        return str(error)
    return np.array(w.grad.numpy())


def add_own_product(lib, nn, w):
    x = lib.tensor([1.0, 2.0])
    x += x * w
    return x


def add_a_linear_of_itself(lib, nn, w):
    """``coord += agg * coords_weight`` with ``agg`` a function of ``coord``: F.linear saves its input for the weight."""
    coord = lib.tensor([[1.0, 2.0]])
    coord += lib.nn.functional.linear(coord, lib.diag(w)) * 1.0
    return coord


def copy_own_product(lib, nn, w):
    x = lib.tensor([1.0, 2.0])
    x.copy_(x * w)
    return x


def set_row_from_another_row(lib, nn, w):
    x = lib.tensor([1.0, 2.0])
    x[0] = x[1] * w[0]
    return x


def write_a_product_not_requiring_grad(lib, nn, w):
    """``h`` does not require grad: after its write it has no grad_fn, so torch's message names no op."""
    h = lib.tensor([1.0, 1.0]) * 2
    y = h * w
    h.add_(1)
    return y


def add_tanh_of_itself(lib, nn, w):
    """tanh saves its result, not ``x``: the write overwrites nothing the backward reads."""
    x = lib.tensor([1.0, 2.0])
    x += lib.tanh(w) * 2
    return x * 1


def mul_in_place_by_w(lib, nn, w):
    x = lib.tensor([1.0, 2.0])
    x.mul_(w)
    return x


def add_in_place_own_scaled(lib, nn, w):
    x = w * 2
    x.add_(x * 3)
    return x


def clamp_in_place_of_product(lib, nn, w):
    x = w * 2
    x.clamp_(0, 5)
    return x


REFUSED = [add_own_product, add_a_linear_of_itself, copy_own_product, set_row_from_another_row,
           write_a_product_not_requiring_grad]
COMPUTED = [add_tanh_of_itself, mul_in_place_by_w, add_in_place_own_scaled, clamp_in_place_of_product]


@pytest.mark.parametrize("program", REFUSED, ids=lambda program: program.__name__)
def test_a_write_of_a_value_computed_from_the_tensor_refuses_backward_as_torch(program):
    theirs, ours = gradient_after(program, "torch"), gradient_after(program, "kiln")
    assert isinstance(theirs, str) and "is at version 1; expected version 0 instead" in theirs
    assert isinstance(ours, str) and "is at version 1; expected version 0 instead" in ours
    assert "modified by an inplace operation" in ours


def add_own_product_then_backward(lib, w):
    x = lib.tensor([1.0, 2.0])
    x += x * w
    x.sum().backward()  # x alive: the message names its current maker, Add, as torch's grad_fn


def write_a_product_not_requiring_grad_then_backward(lib, w):
    h = lib.tensor([1.0, 1.0]) * 2
    y = h * w
    h.add_(1)
    y.sum().backward()  # h does not require grad: no grad_fn to name


@pytest.mark.parametrize("program", [add_own_product_then_backward, write_a_product_not_requiring_grad_then_backward],
                         ids=lambda program: program.__name__)
def test_the_message_names_the_tensors_grad_fn_as_torch(program):
    """How the message names the tensor: its type and shape, and the op that now makes it where it has a grad_fn
    (``[torch.FloatTensor [2]], which is output 0 of Add,``)."""
    messages = []
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        with pytest.raises(RuntimeError) as caught:
            program(lib, lib.tensor([2.0, 3.0], requires_grad=True))
        messages.append(re.search(r"modified by an inplace operation: (.*) is at version", str(caught.value)).group(1))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("program", COMPUTED, ids=lambda program: program.__name__)
def test_an_in_place_ops_own_reads_stay_exempt_as_torch(program):
    theirs, ours = gradient_after(program, "torch"), gradient_after(program, "kiln")
    assert not isinstance(theirs, str), theirs
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
