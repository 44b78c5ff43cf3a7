"""``x.narrow(dim, start, length)`` is a view, as PyTorch's: an in-place write to it (deepspeech.pytorch's
``mask[i].narrow(2, length, rest).fill_(1)``) writes ``x``, eagerly and in a ``kiln.compile``d function, with
PyTorch's values and gradients. It used to leave ``x`` unchanged, and eagerly ``x.numpy()``, ``tolist()``, ``item()``
and ``print(x)`` then returned the old values silently; a tensor written through ``x.data`` gives those reads
torch's values too."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _mask_conv_mask(torch, shape, lengths):
    """deepspeech.pytorch's ``MaskConv`` mask: True past each row's length along the last dim."""
    mask = torch.BoolTensor(*shape).fill_(0)
    for i, length in enumerate(lengths):
        length = length.item()
        if (mask[i].size(2) - length) > 0:
            mask[i].narrow(2, length, mask[i].size(2) - length).fill_(1)
    return mask


@pytest.mark.parametrize("lengths", [[5, 3, 1], [5, 5, 5], [2, 4, 3]])
def test_a_write_through_a_narrowed_row_writes_the_base_as_torch(lengths):
    torch = require_torch()
    ours = _mask_conv_mask(kiln, (3, 2, 4, 5), kiln.tensor(lengths))
    theirs = _mask_conv_mask(torch, (3, 2, 4, 5), torch.tensor(lengths))
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert ours.numpy().any() == (min(lengths) < 5)


@pytest.mark.parametrize("dim, start, length", [(0, 1, 2), (1, -3, 2), (-1, 0, 4), (2, 2, 0)])
def test_narrow_writes_and_their_gradient_as_torch(dim, start, length):
    torch = require_torch()
    x0 = np.random.default_rng(0).standard_normal((3, 4, 5))
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(x0, requires_grad=True)
        y = x * 1.0
        view = y.narrow(dim, start, length)
        view.mul_(3.0).add_(1.0)
        written = view.detach().numpy().copy()
        lib.narrow(y, dim, 0, 1).zero_()  # overlaps the view for dim -1: reading it now would be refused by kiln
        (y * y).sum().backward()
        results.append((written, y.detach().numpy(), x.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=0)


def test_narrow_writes_in_a_compiled_function_as_torch():
    torch = require_torch()

    def masked(lib, x, lengths):
        mask = lib.zeros(x.shape, dtype=lib.bool)
        for i, length in enumerate(lengths):
            mask[i].narrow(1, length, x.size(2) - length).fill_(True)
        return x.masked_fill(mask, 0.0)

    x = np.random.default_rng(1).standard_normal((3, 2, 6))
    ours = kiln.compile(lambda x: masked(kiln, x, [6, 2, 4]), fullgraph=True)(kiln.tensor(x))
    theirs = masked(torch, torch.tensor(x), [6, 2, 4])
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


READS = {"numpy": lambda t: t.numpy(), "tolist": lambda t: t.tolist(), "item": lambda t: t[0, 0].item(),
         "repr": repr, "np.asarray": np.asarray, "sum().item()": lambda t: t.sum().item(),
         "detach().numpy()": lambda t: t.detach().numpy()}


@pytest.mark.parametrize("read", sorted(READS))
def test_reading_a_tensor_written_through_its_data_gives_torch_values(read):
    """torch's ``m`` holds the ones written through ``m.data``; kiln follows that write now (``x.data`` and
    ``x.detach()`` are views of ``x``: tests/frontend/test_detached_view_writes_vs_torch.py), so every read of ``m``
    gives them (it refused, naming the line of the write)."""
    torch = require_torch()
    theirs = torch.zeros(3, 4)
    theirs.data.fill_(1)
    m = kiln.zeros(3, 4) * 1.0
    m.data.fill_(1)
    if read == "repr":
        assert "1." in READS[read](m) and "0." not in READS[read](m)
    else:
        np.testing.assert_array_equal(np.asarray(READS[read](m)), np.asarray(READS[read](theirs)))
