"""The compiled eager backward reads the forward's arrays instead of recomputing the forward
(``EagerChain._feed_saved``, runtime/eager_backward.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime import eager_backward
from oracles import libraries, require_torch


def _compiled_backward_of(loss_of) -> tuple:
    """The (executable, saved references) compiled for ``loss_of()``'s chain: its backward runs twice, op by op and then
    compiled."""
    eager_backward._COMPILED.clear()
    eager_backward._SEEN.clear()
    for _ in range(2):
        loss_of().backward()
    (compiled,) = eager_backward._COMPILED.values()
    return compiled


def test_the_compiled_backward_of_an_mlp_runs_only_the_backward_matmuls():
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = kiln.tensor(np.random.default_rng(0).random((16, 64), dtype=np.float32)), kiln.tensor(np.arange(16) % 10)
    executable, saved = _compiled_backward_of(lambda: F.cross_entropy(model(x), y))
    ops = Counter(op.name for op in executable.graph.ops)
    # three weight gradients and two input gradients; recomputing the forward would add its three matmuls
    assert ops["tensor.matmul"] == 5, ops
    assert len(saved) >= 3 and len(executable.graph.inputs) == 6 + 2 + len(saved)  # 6 parameters, x and y, saved


def _net(lib: str):
    torch, nn_, F_ = libraries(lib)

    class Net(nn_.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn_.Conv2d(1, 4, 3, padding=1)
            self.norm = nn_.BatchNorm2d(4)
            self.head = nn_.Linear(4 * 4 * 4, 10)

        def forward(self, x):
            h = F_.max_pool2d(F_.gelu(self.norm(self.conv(x))), 2)
            peak, where = h.flatten(2).max(dim=2)  # a two-result op: the backward reads its indices
            return self.head(h.flatten(1)) + peak.sum(dim=1, keepdim=True) * where.float().mean()

    return torch, Net


def test_saved_forward_values_train_as_pytorch_in_float64():
    """Step 1's backward runs op by op, later ones compiled on the saved values: all agree with torch's."""
    torch = require_torch()
    kiln.set_default_dtype(kiln.float64)
    try:
        kiln.manual_seed(3)
        model = _net("kiln")[1]()
        torch.set_default_dtype(torch.float64)
        twin = _net("torch")[1]()
        twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
        ours, theirs = kiln.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
        rng = np.random.default_rng(3)
        eager_backward._COMPILED.clear()
        for _ in range(4):
            x, y = rng.standard_normal((8, 1, 8, 8)), rng.integers(0, 10, 8)
            for net, optimizer, lib in ((model, ours, kiln), (twin, theirs, torch)):
                optimizer.zero_grad()
                F.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward() if lib is kiln else \
                    torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y)).backward()
                optimizer.step()
        assert len(eager_backward._COMPILED) == 1  # steps 2-4 ran the compiled backward
        for (name, p), q in zip(model.named_parameters(), twin.parameters()):
            np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    finally:
        kiln.set_default_dtype(kiln.float32)
        torch.set_default_dtype(torch.float32)


def test_a_create_graph_loop_differentiates_its_chain_once_and_trains_as_torch(monkeypatch):
    """Replayed backwards (first sight, ``create_graph=True``) share one graph per chain structure, rebound to each step's
    eager values (``EagerChain.replay_graph``)."""
    torch = require_torch()
    differentiated = []
    original = eager_backward.differentiate_outputs
    monkeypatch.setattr(eager_backward, "differentiate_outputs", lambda *a, **k: differentiated.append(1) or original(*a, **k))
    eager_backward._REPLAY_GRAPHS.clear()

    def net(lib):
        return lib.nn.Sequential(lib.nn.Linear(3, 8), lib.nn.Tanh(), lib.nn.Linear(8, 2)).double()

    kiln.manual_seed(5)
    model, twin = net(kiln), net(torch)
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(5)
    for model_, lib in ((model, kiln), (twin, torch)):
        optimizer = lib.optim.SGD(model_.parameters(), lr=0.1)
        for step in range(3):
            x = np.random.default_rng(step).standard_normal((6, 3))
            optimizer.zero_grad()
            (model_(lib.tensor(x)) ** 2).mean().backward(create_graph=True)
            sum((p.grad ** 2).sum() for p in model_.parameters()).backward()
            optimizer.step()
    # the loss's chain replayed at every step, differentiated once; the penalty's replayed at step 1, compiled at step 2
    assert len(eager_backward._REPLAY_GRAPHS) == 2 and len(differentiated) == 3
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
