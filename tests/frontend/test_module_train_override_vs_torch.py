"""``Module.train(mode)`` sets its flag and calls ``train(mode)`` on each child, as torch's, so a submodule's own
``train`` runs when its parent switches mode: MobileSAM's TinyViT ``Attention`` registers its bias table ``ab`` (a
non-persistent buffer, under ``@torch.no_grad()``) on ``eval()`` and deletes it on ``train()``; kiln set every
module's flag directly, the override never ran and the eval forward failed on ``self.ab``. Each case runs on kiln and
torch 2.13."""

from __future__ import annotations

import numpy as np

from oracles import libraries, require_torch


def _model(torch, nn):
    class CachedBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.biases = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
            self.register_buffer("idxs", torch.LongTensor([2, 0, 1, 1]), persistent=False)
            self.calls = []

        @torch.no_grad()
        def train(self, mode=True):
            super().train(mode)
            self.calls.append(mode)
            if mode and hasattr(self, "ab"):
                del self.ab
            else:
                self.register_buffer("ab", self.biases[self.idxs], persistent=False)

        def forward(self, x):
            return x + (self.biases[self.idxs] if self.training else self.ab)

    linear = nn.Linear(4, 4)
    nn.init.constant_(linear.weight, 0.1)
    nn.init.constant_(linear.bias, 0.2)
    return nn.Sequential(linear, nn.Sequential(nn.ReLU(), CachedBias()))


def test_a_childs_train_override_runs_on_the_parents_eval_and_train_as_torch():
    require_torch()
    records = {}
    for name in ("kiln", "torch"):
        torch, nn, _ = libraries(name)
        model = _model(torch, nn)
        cached = model[1][1]
        assert model.eval() is model and not cached.training and not model[1].training
        buffers_in_eval = sorted(name for name, _ in model.named_buffers())
        with torch.no_grad():
            in_eval = np.asarray(model(torch.zeros(2, 4)))
        model.train()
        assert cached.training and not hasattr(cached, "ab")
        records[name] = (cached.calls, buffers_in_eval, sorted(name for name, _ in model.named_buffers()),
                         sorted(model.state_dict()), in_eval.tolist())
    assert records["kiln"][:4] == records["torch"][:4]
    np.testing.assert_allclose(records["kiln"][4], records["torch"][4], rtol=1e-6)
    assert records["torch"][0] == [False, True] and records["torch"][1] == ["1.1.ab", "1.1.idxs"]
