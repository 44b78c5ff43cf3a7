"""``kiln.channels_last`` and the other memory formats, as timm's and ConvNeXt's training scripts pass them
(``model.to(memory_format=torch.channels_last)``, ``x.contiguous(memory_format=torch.channels_last)``,
``torch.zeros_like(x, memory_format=torch.preserve_format)``): kiln had no ``kiln.channels_last`` (an AttributeError
before the first step) and ``contiguous()`` took no ``memory_format``. A layout hint changes no value: the outputs and
gradients are torch's (float64, 1e-12), eagerly and in a ``kiln.compile``d function; a tensor of the wrong rank is
refused as torch refuses it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.random.default_rng(0).standard_normal((2, 3, 6, 6))


def make_net(torch):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(4, 4, 3, groups=4)).double()


def program(torch, net, x):
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last).to(memory_format=torch.channels_last)
    y = net(x) + torch.zeros_like(x[:, :1, 1:-1, 1:-1], memory_format=torch.preserve_format)
    y = y + torch.ones_like(y, memory_format=torch.contiguous_format) + torch.full_like(y, 0.5, memory_format=torch.preserve_format)
    return y.contiguous(memory_format=torch.contiguous_format)


def test_channels_last_changes_no_value():
    torch = require_torch()
    kiln.manual_seed(0)
    net, twin = make_net(kiln), make_net(torch)
    with torch.no_grad():
        for p, q in zip(net.parameters(), twin.parameters()):
            q.copy_(torch.tensor(np.array(p.data)))
    ours, theirs = program(kiln, net, kiln.tensor(X)), program(torch, twin, torch.tensor(X))
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    for p, q in zip(net.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-14)
    compiled = kiln.compile(lambda x: program(kiln, net, x))(kiln.tensor(X))
    np.testing.assert_allclose(np.asarray(compiled), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_formats_are_torchs():
    torch = require_torch()
    for name in ("contiguous_format", "channels_last", "channels_last_3d", "preserve_format"):
        ours = getattr(kiln, name)
        assert repr(ours) == repr(getattr(torch, name)).replace("torch", "kiln")
        assert isinstance(ours, kiln.memory_format) and pickle.loads(pickle.dumps(ours)) is ours
    x = kiln.zeros(2, 3, 4, 5, 6)
    assert x.contiguous(memory_format=kiln.channels_last_3d) is x and x.is_contiguous(memory_format=kiln.channels_last_3d)


@pytest.mark.parametrize("shape, layout", [((2, 3), "channels_last"), ((2, 3, 4, 5), "channels_last_3d")])
def test_wrong_rank_is_refused_as_torch(shape, layout):
    torch = require_torch()
    with pytest.raises(RuntimeError, match=f"required rank {4 if layout == 'channels_last' else 5} tensor") as theirs:
        torch.zeros(shape).contiguous(memory_format=getattr(torch, layout))
    with pytest.raises(RuntimeError, match=str(theirs.value).split(" format")[0]):
        kiln.zeros(shape).contiguous(memory_format=getattr(kiln, layout))
