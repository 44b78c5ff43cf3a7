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


def shampoo_like(lib):
    """The state handling of transformers' Adafactor and shampoo.pytorch's Shampoo in a few lines: an ``if len(state)
    == 0:`` initialisation from the gradient (``grad.clone()``), a Python int ``state["step"]`` the update reads, and
    a tensor the step computes stored back (``state["momentum_buffer"] = grad``) for the next step to read."""

    class ShampooLike(lib.optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params, dict(lr=lr, momentum=0.5))

        @lib.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group['params']:
                    grad, state = p.grad, self.state[p]
                    if len(state) == 0:
                        state['step'] = 0
                        state['momentum_buffer'] = grad.clone()
                    state['step'] += 1
                    grad = grad * (1 - group['momentum']) + state['momentum_buffer'] * group['momentum']
                    state['momentum_buffer'] = grad
                    p.add_(grad, alpha=-group['lr'] / state['step'])

    return ShampooLike


def _train_shampoo_like(lib, compiled, steps=5):
    rng = np.random.default_rng(0)
    model = lib.nn.Linear(3, 2)
    with lib.no_grad():
        model.weight.copy_(lib.tensor(rng.standard_normal((2, 3))))
        model.bias.copy_(lib.tensor(rng.standard_normal(2)))
    optimizer = shampoo_like(lib)(model.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [run(lib.tensor(rng.standard_normal((4, 3)))).item() for _ in range(steps)]
    state = optimizer.state[model.weight]
    return losses, np.array(model.weight.detach().numpy()), np.array(state['momentum_buffer'].numpy()), state['step']


def test_state_initialised_counted_and_replaced_in_a_compiled_step_as_torch(float64_default):
    """Compiled, the first call's trace (its ``len(state) == 0`` branch: the buffer set to this call's gradient) was
    reused at every call, the int ``step`` stayed 1 and the stored buffer was not the one the next call read: silently
    wrong from the second update on. Now the trace's view of each state entry is guarded (a call finding other keys,
    values or tensors traces again, as torch.compile's guards on the dict), its stores are replayed after each call
    and the input that read a replaced tensor is fed from the entry (``frontend/optim_parameter_state.py``)."""
    ours, theirs = _train_shampoo_like(kiln, True), _train_shampoo_like(float64_default, False)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-10, atol=1e-13)
    assert ours[3] == 5


def lion_like(lib):
    """lion-pytorch's state handling: ``if len(state) == 0: state['exp_avg'] = torch.zeros_like(p)``, no ``step``;
    ``__setstate__`` extended as SophiaG's."""

    class LionLike(lib.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.99)):
            super().__init__(params, dict(lr=lr, betas=betas))

        def __setstate__(self, state):
            super().__setstate__(state)
            for group in self.param_groups:
                group.setdefault('maximize', False)

        @lib.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in filter(lambda p: p.grad is not None, group['params']):
                    state = self.state[p]
                    if len(state) == 0:
                        state['exp_avg'] = lib.zeros_like(p)
                    beta1, beta2 = group['betas']
                    update = state['exp_avg'].clone().mul_(beta1).add(p.grad, alpha=1 - beta1).sign_()
                    p.add_(update, alpha=-group['lr'])
                    state['exp_avg'].mul_(beta2).add_(p.grad, alpha=1 - beta2)

    return LionLike


def _resumed_lion_like(lib, compiled):
    """Two steps, the optimizer's ``state_dict()`` (deep-copied), a new optimizer loading it, two more steps."""
    import copy

    rng = np.random.default_rng(0)
    model = lib.nn.Linear(3, 2)
    with lib.no_grad():
        model.weight.copy_(lib.tensor(rng.standard_normal((2, 3))))
        model.bias.copy_(lib.tensor(rng.standard_normal(2)))
    xs = rng.standard_normal((4, 4, 3))
    optimizer = lion_like(lib)(model.parameters(), lr=0.01)

    def trained(optimizer, batches):
        def step(x):
            optimizer.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled else step
        return [run(lib.tensor(x)).item() for x in batches]

    losses = trained(optimizer, xs[:2])
    saved = copy.deepcopy(optimizer.state_dict())
    optimizer = lion_like(lib)(model.parameters(), lr=0.5)
    optimizer.load_state_dict(saved)
    losses += trained(optimizer, xs[2:])
    layout = {key: sorted(entry) for key, entry in saved["state"].items()}
    return losses, np.array(model.weight.detach().numpy()), layout, optimizer.param_groups[0]['lr'], \
        optimizer.param_groups[0]['maximize']


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_user_defined_optimizers_state_dict_round_trip_as_torch(compiled, float64_default):
    """A user's optimizer's ``state_dict()`` added kiln's ``step`` to each entry (torch's holds only what the step
    put there) and ``load_state_dict`` refused its entries ('expects []'); now both as torch's base class, with the
    saved options (lr) and the subclass's ``__setstate__`` (``frontend/optim_user_state.py``)."""
    ours, theirs = _resumed_lion_like(kiln, compiled), _resumed_lion_like(float64_default, False)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10)
    assert ours[2:] == theirs[2:] == ({0: ['exp_avg'], 1: ['exp_avg']}, 0.01, False)


def test_an_option_left_none_is_not_checked(float64_default):
    """transformers' ``Adafactor(lr=None, relative_step=True)``: the base class compared ``None < 0``; torch's base
    checks no option."""

    class NoLr(kiln.optim.Optimizer):
        def __init__(self, params, lr=None):
            super().__init__(params, dict(lr=lr, weight_decay=None))

    optimizer = NoLr([kiln.nn.Parameter(kiln.zeros(2))])
    assert optimizer.param_groups[0]['lr'] is None
