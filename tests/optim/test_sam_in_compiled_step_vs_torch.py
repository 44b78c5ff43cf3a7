"""davda54/sam's ``SAM`` (sharpness-aware minimization) and its adaptive form, as its README trains with it (two
forward-backward passes per step: ``first_step`` moves each parameter by ``rho * grad / ||grad||`` and keeps
``self.state[p]["old_p"] = p.data.clone()``, ``second_step`` restores ``p.data = self.state[p]["old_p"]`` and steps the
base optimizer), eagerly and as one ``kiln.compile(fullgraph=True)`` step, against torch 2.13's eager loop in
float64. Compiled, ``old_p`` (a tensor computed in the step) was refused; it is now kept and written back at each call
(``frontend/optim_parameter_state.py``).

Not compared: ``old_p``'s values after the step. torch's ``p.data = old_p`` makes ``p`` share ``old_p``'s storage,
so the base optimizer's in-place step moves ``old_p`` too; kiln's copies the values into ``p`` (eagerly as well), so
``old_p`` keeps the pre-step weights. SAM overwrites ``old_p`` before reading it again, so training agrees."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.random.default_rng(0).standard_normal((6, 3))
Y = np.random.default_rng(1).standard_normal((6, 2))


def sam_class(torch):
    class SAM(torch.optim.Optimizer):
        def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kwargs):
            assert rho >= 0.0, f"Invalid rho, should be non-negative: {rho}"

            defaults = dict(rho=rho, adaptive=adaptive, **kwargs)
            super(SAM, self).__init__(params, defaults)

            self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
            self.param_groups = self.base_optimizer.param_groups
            self.defaults.update(self.base_optimizer.defaults)

        @torch.no_grad()
        def first_step(self, zero_grad=False):
            grad_norm = self._grad_norm()
            for group in self.param_groups:
                scale = group["rho"] / (grad_norm + 1e-12)

                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self.state[p]["old_p"] = p.data.clone()
                    e_w = (torch.pow(p, 2) if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                    p.add_(e_w)  # climb to the local maximum "w + e(w)"

            if zero_grad:
                self.zero_grad()

        @torch.no_grad()
        def second_step(self, zero_grad=False):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    p.data = self.state[p]["old_p"]  # get back to "w" from "w + e(w)"

            self.base_optimizer.step()  # do the actual "sharpness-aware" update

            if zero_grad:
                self.zero_grad()

        def _grad_norm(self):
            shared_device = self.param_groups[0]["params"][0].device
            norm = torch.norm(
                torch.stack([
                    ((torch.abs(p) if group["adaptive"] else 1.0) * p.grad).norm(p=2).to(shared_device)
                    for group in self.param_groups for p in group["params"]
                    if p.grad is not None
                ]),
                p=2
            )
            return norm

    return SAM


def _train(name, adaptive, compiled):
    torch, nn, F = libraries(name)
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    for p in model.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
    optimizer = sam_class(torch)(model.parameters(), torch.optim.SGD, rho=0.05, adaptive=adaptive, lr=0.1,
                                 momentum=0.9)

    def step(inputs, targets):
        loss = F.mse_loss(model(inputs), targets)  # first forward-backward pass
        loss.backward()
        optimizer.first_step(zero_grad=True)
        F.mse_loss(model(inputs), targets).backward()  # second forward-backward pass
        optimizer.second_step(zero_grad=True)
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [run(torch.tensor(X * s), torch.tensor(Y)).item() for s in (1.0, 0.5, 1.5)]
    old_p = optimizer.state[model[0].weight]["old_p"]
    assert tuple(old_p.shape) == (5, 3)  # its values: see the module docstring
    return losses, [np.array(p.detach().numpy()) for p in model.parameters()]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_trains_as_torch(adaptive, compiled, float64_default):
    ours, theirs = _train("kiln", adaptive, compiled), _train("torch", adaptive, False)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, expected in zip(ours[1], theirs[1], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-15)
