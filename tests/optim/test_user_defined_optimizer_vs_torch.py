"""A ``torch.optim.Optimizer`` subclass written for PyTorch (Barlow Twins' and VICReg's ``LARS``: ``self.state[p]``
lazily filled with ``torch.zeros_like(p)``, its own ``@torch.no_grad()`` ``step`` reading ``g['lr']``) trains as in
torch, eagerly and inside a ``kiln.compile(fullgraph=True)`` step whose ``lr`` a schedule changes at every call.

kiln broke it three ways: ``self.state[p]`` raised KeyError (kiln's state was a plain dict keyed by ``id``, torch's
is a ``defaultdict(dict)``); defaults without ``weight_decay`` raised KeyError in the base's option check (torch's base
checks nothing); and compiled, the step kept the first trace's ``lr`` (a Python float read once, silently) while the
state made in the trace had no values after it. Now the state is indexed by the parameter and defaults to ``{}``, a
group's values read by the user's code are guarded (a changed ``lr`` traces again, as torch.compile recompiles), a
state tensor made from constants is kept as an eager tensor (written back at each call), and one made from other
values too (SAM's ``old_p``; it was refused). Values vs torch 2.13, float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln


def lars(lib):
    """main.py's LARS, trimmed to its state and trust ratio."""

    class LARS(lib.optim.Optimizer):
        def __init__(self, params, lr, momentum=0.9, eta=0.001):
            super().__init__(params, dict(lr=lr, momentum=momentum, eta=eta))

        @lib.no_grad()
        def step(self):
            for g in self.param_groups:
                for p in g['params']:
                    if p.grad is None:
                        continue
                    dp = p.grad
                    param_norm, update_norm = lib.norm(p), lib.norm(dp)
                    one = lib.ones_like(param_norm)
                    q = lib.where(param_norm > 0., lib.where(update_norm > 0, g['eta'] * param_norm / update_norm, one), one)
                    dp = dp.mul(q)
                    param_state = self.state[p]
                    if 'mu' not in param_state:
                        param_state['mu'] = lib.zeros_like(p)
                    mu = param_state['mu']
                    mu.mul_(g['momentum']).add_(dp)
                    p.add_(mu, alpha=-g['lr'])

    return LARS


def _train(lib, compiled, steps=4, optimizer_class=None):
    rng = np.random.default_rng(0)
    model = lib.nn.Linear(3, 2)
    with lib.no_grad():
        model.weight.copy_(lib.tensor(rng.standard_normal((2, 3))))
        model.bias.copy_(lib.tensor(rng.standard_normal(2)))
    optimizer = (optimizer_class or lars(lib))(model.parameters(), lr=0.0)

    def step(x):
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = []
    for k in range(steps):
        for group in optimizer.param_groups:
            group['lr'] = 0.5 / (k + 1)  # a schedule writing lr each step
        losses.append(run(lib.tensor(rng.standard_normal((4, 3)))).item())
    mu = np.array(optimizer.state[model.weight]['mu'].numpy())
    return losses, np.array(model.weight.detach().numpy()), mu


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_user_defined_optimizer_trains_as_torch(compiled, float64_default):
    ours, theirs = _train(kiln, compiled), _train(float64_default, False)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-10, atol=1e-13)


def test_state_is_indexed_by_the_parameter_and_by_its_id():
    parameter = kiln.nn.Parameter(kiln.zeros(2))
    optimizer = lars(kiln)([parameter], lr=0.1)
    optimizer.state[parameter]['mu'] = kiln.ones(2)
    assert optimizer.state[id(parameter)] is optimizer.state[parameter] and parameter in optimizer.state
    assert optimizer.state[kiln.nn.Parameter(kiln.zeros(1))] == {}  # a defaultdict(dict), as torch's


def _copy_state_run(lib, compiled):
    """An optimizer whose ``step`` keeps ``p.detach().clone()`` in its state, then moves ``p``: the state after each
    call holds the parameter as the step found it."""

    class CopyState(lib.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

        @lib.no_grad()
        def step(self):
            for p in self.param_groups[0]['params']:
                self.state[p]['previous'] = p.detach().clone()
                p.add_(p.grad, alpha=-0.1)

    model = lib.nn.Linear(2, 1)
    with lib.no_grad():
        model.weight.copy_(lib.tensor([[0.5, -0.25]]))
        model.bias.fill_(0.1)
    optimizer = CopyState(model.parameters())

    def step(x):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()

    run = kiln.compile(step, fullgraph=True) if compiled else step
    previous = []
    for scale in (1.0, 2.0, 3.0):
        run(lib.tensor([[scale, 1.0]]))
        previous.append(np.array(optimizer.state[model.weight]['previous'].numpy()))
    return previous


def test_state_computed_from_other_tensors_in_a_trace_holds_each_calls_value_as_torch(float64_default):
    """SAM's ``self.state[p]["old_p"] = p.data.clone()`` in a compiled step: it was refused ('no values after the
    trace'); now the state holds each call's value, as torch's (``frontend/optim_parameter_state.py``)."""
    for ours, theirs in zip(_copy_state_run(kiln, True), _copy_state_run(float64_default, False), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def heavy_ball(lib):
    """An optimizer that sets its state entry as a dict, then fills it (``self.state[p] = {}``; ``[...]['buf'] = ...``)."""

    class HeavyBall(lib.optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params, dict(lr=lr, momentum=0.9))

        @lib.no_grad()
        def step(self):
            for g in self.param_groups:
                for p in g['params']:
                    if p not in self.state:
                        self.state[p] = {}
                        self.state[p]['buf'] = lib.zeros_like(p)
                    buf = self.state[p]['buf']
                    buf.mul_(g['momentum']).add_(p.grad)
                    p.add_(buf, alpha=-g['lr'])
                    self.state[p]['mu'] = buf  # _train reads 'mu'

    return HeavyBall


def test_state_set_as_a_dict_then_filled_in_a_compiled_step_as_torch(float64_default):
    ours = _train(kiln, True, optimizer_class=heavy_ball(kiln))
    theirs = _train(float64_default, False, optimizer_class=heavy_ball(float64_default))
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-10, atol=1e-13)
