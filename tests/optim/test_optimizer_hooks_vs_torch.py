"""torch.optim's optimizer hooks (kiln had none): step pre/post hooks (a pre hook's new ``(args, kwargs)`` taken), the
global ``torch.optim.optimizer.register_optimizer_step_pre_hook``/``post_hook``, ``state_dict`` pre/post and
``load_state_dict`` pre/post hooks (new dicts taken), a user's ``step`` calling ``super().step()`` hooked once; and a
post hook that updates an EMA copy, in a ``kiln.compile``d step, traced into it. Against torch 2.13."""

from __future__ import annotations

import importlib

import numpy as np

import kiln
from oracles import torch_twins


def _calls(lib, model):
    calls = []
    optimizer = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append(("pre", len(args), sorted(kwargs))))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(("post", opt is optimizer)))
    hooks = importlib.import_module(f"{lib.__name__}.optim.optimizer")  # torch's: from torch.optim.optimizer import ...
    handle = hooks.register_optimizer_step_pre_hook(lambda opt, args, kwargs: calls.append("global pre"))
    post = hooks.register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append("global post"))
    optimizer.register_state_dict_pre_hook(lambda opt: calls.append("save pre"))
    optimizer.register_state_dict_post_hook(lambda opt, state: {**state, "note": 1})
    optimizer.register_load_state_dict_pre_hook(lambda opt, state: {k: v for k, v in state.items() if k != "note"})
    optimizer.register_load_state_dict_post_hook(lambda opt: calls.append("load post"), prepend=True)
    try:
        model(lib.ones(2, 3)).sum().backward()
        optimizer.step()
        optimizer.step(closure=None)
        state = optimizer.state_dict()
        calls.append(("note", state.get("note")))
        optimizer.load_state_dict(state)
    finally:
        handle.remove(), post.remove()
    model(lib.ones(2, 3)).sum().backward()
    optimizer.step()
    return calls, [np.asarray(p.detach().numpy()) for p in model.parameters()]


def test_hooks_called_as_torch():
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Linear(3, 2))
    mine, expected = _calls(kiln, ours), _calls(torch, theirs)
    assert mine[0] == expected[0]
    for a, b in zip(mine[1], expected[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _subclass_calls(lib):
    calls = []

    class Plain(lib.optim.Optimizer):  # never made itself, so torch patches only Counting's step (as kiln)
        def __init__(self, params, lr):
            super().__init__(params, dict(lr=lr))

        @lib.no_grad()
        def step(self, closure=None):
            if closure is not None:
                closure()
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(p.grad, alpha=-group["lr"])

    class Counting(Plain):
        def step(self, closure=None):
            calls.append("own step")
            return super().step(closure)

    parameter = lib.nn.Parameter(lib.ones(2))
    optimizer = Counting([parameter], lr=0.5)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: (args, {"closure": lambda: calls.append("closure")}))
    parameter.grad = lib.ones(2)
    optimizer.step()
    return calls, parameter.detach().numpy().tolist()


def test_a_subclass_step_runs_the_hooks_once_and_takes_new_arguments():
    torch, _, _ = torch_twins(lambda lib: lib.nn.Linear(1, 1))
    assert _subclass_calls(kiln) == _subclass_calls(torch)


def test_a_post_hook_updating_an_ema_compiles_into_the_step(float64_default):
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Linear(3, 2))
    results = []
    for lib, model in ((kiln, ours), (torch, theirs)):
        ema = [p.detach().clone() for p in model.parameters()]
        optimizer = lib.optim.Adam(model.parameters(), lr=0.1)

        def update_ema(opt, args, kwargs, ema=ema, model=model, lib=lib):
            with lib.no_grad():
                for average, p in zip(ema, model.parameters()):
                    average.mul_(0.9).add_(p, alpha=0.1)

        optimizer.register_step_post_hook(update_ema)

        def step(x, optimizer=optimizer, model=model):
            optimizer.zero_grad()
            loss = model(x).pow(2).sum()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        x = lib.tensor(np.linspace(-1, 1, 12).reshape(4, 3))
        losses = [run(x).item() for _ in range(4)]
        results.append((losses, [a.numpy().copy() for a in ema]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_an_optimizer_with_hooks_pickles_without_them():
    import copy
    import io

    parameter = kiln.nn.Parameter(kiln.ones(2))
    optimizer = kiln.optim.Adam([parameter], lr=0.1)
    optimizer.register_step_post_hook(lambda opt, args, kwargs: None)  # a lambda: not picklable
    buffer = io.BytesIO()
    kiln.save(optimizer, buffer)
    copied = copy.deepcopy(optimizer)
    assert not copied.__dict__.get("_optimizer_step_post_hooks")


def test_a_post_hook_registered_after_the_first_compiled_call_runs(float64_default):
    """The compiled step traced without the hook; registering it later retraces (it was silently never run)."""
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Linear(3, 2))
    results = []
    for lib, model in ((kiln, ours), (torch, theirs)):
        ema = [p.detach().clone() for p in model.parameters()]
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1)

        def step(x, optimizer=optimizer, model=model):
            optimizer.zero_grad()
            loss = model(x).pow(2).sum()
            loss.backward()
            optimizer.step()
            return loss

        def update_ema(opt, args, kwargs, ema=ema, model=model, lib=lib):
            with lib.no_grad():
                for average, p in zip(ema, model.parameters()):
                    average.mul_(0.5).add_(p, alpha=0.5)

        run = kiln.compile(step) if lib is kiln else step
        x = lib.tensor(np.linspace(-1, 1, 12).reshape(4, 3))
        run(x)
        optimizer.register_step_post_hook(update_ema)
        for _ in range(3):
            run(x)
        results.append([a.numpy().copy() for a in ema])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
