"""Porting probes: whole training steps compiled as PyTorch users write them (``@torch.compile`` over
``loss.backward()`` and ``optimizer.step()``), run with ``kiln.compile`` and, from the same source, in torch eager
(the oracle) in float64: losses, parameters, ``.grad`` and optimizer state agree to 1e-12 after several calls.

Here the optimizers and what a step takes and returns: torch's compiled-optimizer tutorial (only ``opt.step()``
compiled, a scheduler outside), a GAN step with two optimizers, AdamW parameter groups, ``add_param_group`` mid-run,
a metrics dict, gradient accumulation across calls and over micro-batches (sliced, or a list argument), clipping,
and what cannot be traced (``.item()``: eager, warned; ``fullgraph=True``: a clear error). Modes and in-place
writes: ``test_porting_probes_compiled_steps_state.py``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from e2e.compiled_step_probes import TOLERANCE, mlp, batches, assert_same, classifier_step, lockstep, counting
from oracles import torch_twins


def test_a_group_added_mid_run_and_a_layer_frozen_then_unfrozen_train_as_torch():
    """``opt.add_param_group`` after two steps: the new group's Adam steps count from 1 (torch.optim's per-parameter
    ``state['step']``; kiln counted the optimizer's earlier steps, eager and compiled alike); the first layer frozen for
    two calls, then unfrozen."""
    torch, model, twin = torch_twins(mlp, seed=8)
    optimizer, twin_optimizer = kiln.optim.Adam(model[0].parameters(), lr=0.05), torch.optim.Adam(twin[0].parameters(), lr=0.05)
    step = kiln.compile(classifier_step(kiln, model, optimizer))

    def before_call(index):
        if index == 2:
            optimizer.add_param_group({"params": model[2].parameters(), "lr": 0.01})
            twin_optimizer.add_param_group({"params": twin[2].parameters(), "lr": 0.01})
        for net in (model, twin):
            net[0].requires_grad_(index not in (3, 4))

    lockstep(step, classifier_step(torch, twin, twin_optimizer), batches(6), before_call)
    assert_same(model, twin, optimizer, twin_optimizer)
    assert all(step.variants.values())


def test_a_step_returning_a_dict_of_metrics_returns_the_dict():
    """``{"loss", "acc" (argmax == y mean), "grad_norm" (clip_grad_norm_'s)}``: kiln returned the three as a tuple."""
    torch, model, twin = torch_twins(mlp, seed=4)

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

        def train_step(x, y):
            optimizer.zero_grad()
            logits = net(x)
            loss = lib.nn.functional.cross_entropy(logits, y)
            loss.backward()
            grad_norm = lib.nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.3)
            optimizer.step()
            return {"loss": loss.detach(), "acc": (logits.argmax(dim=-1) == y).float().mean(), "grad_norm": grad_norm}

        return train_step, optimizer

    (step, optimizer), (twin_step, twin_optimizer) = make(kiln, model), make(torch, twin)
    step = kiln.compile(step)
    for x, y in batches(3):
        ours, theirs = step(kiln.tensor(x), kiln.tensor(y)), twin_step(torch.tensor(x), torch.tensor(y))
        assert isinstance(ours, dict) and list(ours) == list(theirs)
        for name in theirs:
            np.testing.assert_allclose(np.asarray(ours[name]), theirs[name].detach().numpy(), **TOLERANCE)
            assert str(ours[name].dtype).split(".")[-1] == str(theirs[name].dtype).split(".")[-1]
    assert_same(model, twin, optimizer, twin_optimizer)


def test_gradients_accumulated_over_calls_stepped_outside_every_third_call_trace_twice():
    """No ``zero_grad`` in the compiled function; ``step()`` and ``zero_grad()`` outside every 3 calls. The first call
    of each cycle finds no ``.grad``, the others one: two variants, reused (each cycle traced both again)."""
    torch, model, twin = torch_twins(mlp, seed=5)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.05), torch.optim.Adam(twin.parameters(), lr=0.05)
    traces = []

    def make(lib, net):
        def accumulate(x, y):
            loss = lib.nn.functional.cross_entropy(net(x), y) / 3
            loss.backward()
            return loss.detach()

        return accumulate

    step = kiln.compile(counting(make(kiln, model), traces))

    def before_call(index):
        if index and index % 3 == 0:
            assert_same(model, twin)  # the accumulated .grad
            for opt in (optimizer, twin_optimizer):
                opt.step()
                opt.zero_grad()

    lockstep(step, make(torch, twin), batches(9), before_call)
    assert_same(model, twin, optimizer, twin_optimizer)
    assert len(traces) == 2


def test_the_compiled_optimizer_tutorial_step_reads_eager_grads_with_a_scheduler_outside():
    """torch's "compiled optimizer" recipe: ``@torch.compile(fullgraph=False) def opt_step(): opt.step()`` after an
    eager ``loss.backward()`` (each ``.grad`` an input), ``LambdaLR`` stepped outside: one trace, lr fed per call."""
    torch, model, twin = torch_twins(mlp, seed=1)
    optimizers = [lib.optim.Adam(net.parameters(), lr=0.1) for lib, net in ((kiln, model), (torch, twin))]
    schedulers = [lib.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1 / (epoch + 1)) for lib, opt in zip((kiln, torch), optimizers)]

    @kiln.compile(fullgraph=False)
    def opt_step():
        optimizers[0].step()

    for x, y in batches(5):
        for lib, net, optimizer, scheduler, step in zip((kiln, torch), (model, twin), optimizers, schedulers,
                                                         (opt_step, optimizers[1].step)):
            optimizer.zero_grad()
            lib.nn.functional.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward()
            step()
            scheduler.step()
    assert_same(model, twin, *optimizers)
    assert len(opt_step.variants) == 1 and all(opt_step.variants.values())


def _gan(lib):
    generator = lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.ReLU(), lib.nn.Linear(8, 6))
    discriminator = lib.nn.Sequential(lib.nn.Linear(6, 8), lib.nn.LeakyReLU(0.2), lib.nn.Linear(8, 1))
    return lib.nn.ModuleDict({"G": generator, "D": discriminator}).double()


def _gan_step(lib, gan):
    """DCGAN's loop body: D on real and detached fakes, then G through D; each optimizer zeroed and stepped."""
    optimizer_g = lib.optim.Adam(gan["G"].parameters(), lr=0.01, betas=(0.5, 0.999))
    optimizer_d = lib.optim.Adam(gan["D"].parameters(), lr=0.02, betas=(0.5, 0.999))
    criterion = lib.nn.BCEWithLogitsLoss()

    def train_step(real, noise):
        fake = gan["G"](noise)
        ones, zeros = lib.ones(real.shape[0], 1, dtype=lib.float64), lib.zeros(real.shape[0], 1, dtype=lib.float64)
        optimizer_d.zero_grad()
        loss_d = criterion(gan["D"](real), ones) + criterion(gan["D"](fake.detach()), zeros)
        loss_d.backward()
        optimizer_d.step()
        optimizer_g.zero_grad()
        loss_g = criterion(gan["D"](fake), ones)
        loss_g.backward()
        optimizer_g.step()
        return loss_d.detach(), loss_g.detach()

    return train_step, (optimizer_g, optimizer_d)


def test_a_gan_step_with_two_optimizers_and_two_backwards_compiles_as_one_graph():
    torch, model, twin = torch_twins(_gan, seed=2)
    (step, optimizers), (twin_step, twin_optimizers) = _gan_step(kiln, model), _gan_step(torch, twin)
    step = kiln.compile(step)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for _ in range(3):
            real, noise = rng.standard_normal((8, 6)), rng.standard_normal((8, 4))
            ours, theirs = step(kiln.tensor(real), kiln.tensor(noise)), twin_step(torch.tensor(real), torch.tensor(noise))
            np.testing.assert_allclose([float(v) for v in ours], [float(v) for v in theirs], **TOLERANCE)
    for name in ("G", "D"):
        index = name == "D"
        assert_same(model[name], twin[name], optimizers[index], twin_optimizers[index])
    assert len(step.variants) == 1 and all(step.variants.values())


def _norm_mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.LayerNorm(16), lib.nn.GELU(), lib.nn.Linear(16, 3)).double()


def test_adamw_groups_without_decay_for_biases_and_norms_zeroed_in_place():
    """The GPT/timm recipe: weight decay only on matrices, another lr for the rest, ``zero_grad(set_to_none=False)``."""
    torch, model, twin = torch_twins(_norm_mlp, seed=3)

    def make(lib, net):
        decay = [p for p in net.parameters() if p.ndim >= 2]
        rest = [p for p in net.parameters() if p.ndim < 2]
        optimizer = lib.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                     {"params": rest, "weight_decay": 0.0, "lr": 0.02}], lr=0.05)
        return classifier_step(lib, net, optimizer, set_to_none=False), optimizer

    (step, optimizer), (twin_step, twin_optimizer) = make(kiln, model), make(torch, twin)
    lockstep(kiln.compile(step), twin_step, batches(4))
    assert_same(model, twin, optimizer, twin_optimizer)


def test_micro_batches_accumulated_in_a_python_loop_inside_one_call():
    """``for micro_x, micro_y in zip(x.chunk(4), y.chunk(4))``: four backwards into ``.grad``, one step."""
    torch, model, twin = torch_twins(mlp, seed=6)

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.2, momentum=0.5)

        def train_step(x, y):
            optimizer.zero_grad()
            total = 0.0
            for micro_x, micro_y in zip(x.chunk(4), y.chunk(4)):
                loss = lib.nn.functional.cross_entropy(net(micro_x), micro_y) / 4
                loss.backward()
                total = total + loss.detach()
            optimizer.step()
            return total

        return train_step, optimizer

    (step, optimizer), (twin_step, twin_optimizer) = make(kiln, model), make(torch, twin)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lockstep(kiln.compile(step), twin_step, batches(3))
    assert_same(model, twin, optimizer, twin_optimizer)


def _item_step(lib, net, optimizer):
    def train_step(x, y):
        optimizer.zero_grad()
        loss = lib.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        if loss.item() > 1.0:  # a data-dependent branch: graph break
            lib.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        optimizer.step()
        return loss.item()

    return train_step


def test_item_inside_the_step_runs_it_eagerly_warned_as_torch_and_fullgraph_raises_where():
    torch, model, twin = torch_twins(mlp, seed=10)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.05), torch.optim.Adam(twin.parameters(), lr=0.05)
    step = kiln.compile(_item_step(kiln, model, optimizer))
    with pytest.warns(UserWarning, match=r"runs eagerly.*item\(\) of a traced tensor"):
        lockstep(step, _item_step(torch, twin, twin_optimizer), batches(3))
    assert_same(model, twin, optimizer, twin_optimizer)
    x, y = batches(1)[0]
    strict = kiln.compile(_item_step(kiln, model, optimizer), fullgraph=True)
    with pytest.raises(KilnError, match=r"test_porting_probes_compiled_steps.py:\d+ in train_step.*\n.*item\(\)"):
        strict(kiln.tensor(x), kiln.tensor(y))


def test_a_list_of_micro_batches_is_an_input_not_a_constant_of_the_trace():
    """``train_step([x0, x1, x2], [y0, y1, y2])``: each tensor of the lists is an input, as torch.compile's (kiln fixed
    the lists in the trace by their values: every call traced again, its data baked in)."""
    torch, model, twin = torch_twins(mlp, seed=6)

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.2, momentum=0.5)

        def train_step(xs, ys):
            optimizer.zero_grad()
            for x, y in zip(xs, ys):
                (lib.nn.functional.cross_entropy(net(x), y) / len(xs)).backward()
            optimizer.step()

        return train_step, optimizer

    (step, optimizer), (twin_step, twin_optimizer) = make(kiln, model), make(torch, twin)
    step = kiln.compile(step)
    for seed in range(3):
        micro = batches(3, size=4, seed=seed)
        step([kiln.tensor(x) for x, _ in micro], [kiln.tensor(y) for _, y in micro])
        twin_step([torch.tensor(x) for x, _ in micro], [torch.tensor(y) for _, y in micro])
    assert_same(model, twin, optimizer, twin_optimizer)
    assert len(step.variants) == 1 and all(step.variants.values())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_clip_grad_norm_takes_torchs_string_inf_and_foreach(compiled):
    """``clip_grad_norm_(params, 0.3, norm_type="inf", foreach=True)``: torch takes ``float(norm_type)``; kiln's
    eager clip handed the string to NumPy (ValueError), so the compiled step fell back to it and raised too."""
    torch, model, twin = torch_twins(mlp, seed=2)

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1)

        def train_step(x, y):
            optimizer.zero_grad()
            loss = lib.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            norm = lib.nn.utils.clip_grad_norm_(net.parameters(), 0.3, norm_type="inf", foreach=True)
            optimizer.step()
            return norm

        return train_step

    step = make(kiln, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lockstep(kiln.compile(step) if compiled else step, make(torch, twin), batches(3))
    assert_same(model, twin)
