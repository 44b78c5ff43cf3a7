"""``nn.DataParallel`` and ``nn.parallel.data_parallel`` (dcgan/main.py's multi-GPU branch) in one process, vs torch's
on CPU in float64: the same values, gradients, ``module.``-prefixed state_dict and training steps."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require_torch

TIGHT = dict(rtol=1e-12, atol=1e-14)


def _net(lib):
    return lib.nn.Sequential(lib.nn.Conv2d(1, 3, 3, padding=1), lib.nn.BatchNorm2d(3), lib.nn.ReLU(), lib.nn.Flatten(),
                             lib.nn.Linear(48, 2)).double()


def _twins(torch):
    kiln.manual_seed(0)
    ours, theirs = nn.DataParallel(_net(kiln)), torch.nn.DataParallel(_net(torch))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({name: value.numpy() for name, value in theirs.state_dict().items()})
    return ours, theirs


def test_data_parallel_calls_the_module_with_torchs_arguments():
    torch = require_torch()
    kiln.manual_seed(1)
    net = _net(kiln)
    twin = _net(torch)
    twin.load_state_dict({name: torch.tensor(np.asarray(value)) for name, value in net.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(5, 1, 4, 4))
    ours = nn.parallel.data_parallel(net, kiln.tensor(x), range(2))
    theirs = twin(torch.tensor(x))  # torch's data_parallel needs GPUs ("device type could not be determined" on CPU)
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), **TIGHT)
    adds = nn.parallel.data_parallel(lambda a, b, scale: (a + b) * scale, (kiln.tensor(x), kiln.tensor(x)), module_kwargs={"scale": 2.0})
    np.testing.assert_allclose(np.asarray(adds), 4 * x, **TIGHT)


def test_eager_and_compiled_training_through_data_parallel_match_torch():
    torch = require_torch()
    ours, theirs = _twins(torch)
    compiled = nn.DataParallel(_net(kiln))
    compiled.load_state_dict(ours.state_dict())
    step = kiln.compile_train_step(compiled, F.cross_entropy, kiln.optim.SGD(compiled.parameters(), lr=0.1, momentum=0.9))
    optimizer = kiln.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    torch_optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(2)
    for _ in range(3):
        x, y = rng.normal(size=(6, 1, 4, 4)), rng.integers(0, 2, 6)
        optimizer.zero_grad()
        loss = F.cross_entropy(ours(x), y)
        loss.backward()
        optimizer.step()
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
        torch_loss.backward()
        torch_optimizer.step()
        np.testing.assert_allclose([loss.item(), float(step(x, y))], [torch_loss.item()] * 2, rtol=1e-10)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(np.asarray(ours.state_dict()[name]), value.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(np.asarray(compiled.state_dict()[name]), value.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(ours.module[4].weight.grad, theirs.module[4].weight.grad.numpy(), rtol=1e-10, atol=1e-12)
