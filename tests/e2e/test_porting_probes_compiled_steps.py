"""Porting probes: whole training steps compiled as PyTorch users write them (``@torch.compile`` over
``loss.backward()`` and ``optimizer.step()``), run with ``kiln.compile`` and, from the same source, in torch eager
(the oracle) in float64: losses, parameters, ``.grad`` and optimizer state agree to 1e-12 after several calls.

Patterns: torch's compiled-optimizer tutorial (only ``opt.step()`` compiled, a scheduler outside), a GAN step with
two optimizers, AdamW parameter groups, a metrics dict, gradient accumulation across calls and over micro-batches,
``train()``/``eval()`` and ``requires_grad_`` toggled between calls, ``add_param_group`` mid-run, and what cannot be
traced (``.item()``: eager, warned; ``fullgraph=True``: a clear error)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import torch_twins

TOLERANCE = dict(rtol=1e-12, atol=1e-12)


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


def _batches(count=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 6)), rng.integers(0, 3, size)) for _ in range(count)]


def _assert_same(model, twin, optimizer=None, twin_optimizer=None):
    """Parameters, ``.grad`` (None where torch's is) and each optimizer state entry, to 1e-12."""
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), **TOLERANCE)
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            np.testing.assert_allclose(np.asarray(p.grad), q.grad.detach().numpy(), **TOLERANCE)
        if optimizer is not None:
            theirs = twin_optimizer.state.get(q, {})
            for name, array in optimizer.state.get(id(p), {}).items():
                np.testing.assert_allclose(array, theirs[name].numpy(), **TOLERANCE)


def _classifier_step(lib, net, optimizer, **zero_grad):
    def train_step(x, y):
        optimizer.zero_grad(**zero_grad)
        loss = lib.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train_step


def _lockstep(step, twin_step, batches, before_call=lambda index: None):
    """Call both steps on each batch (``before_call(index)`` first); their losses agree."""
    import torch

    for index, (x, y) in enumerate(batches):
        before_call(index)
        ours, theirs = step(kiln.tensor(x), kiln.tensor(y)), twin_step(torch.tensor(x), torch.tensor(y))
        np.testing.assert_allclose(float(ours), float(theirs), **TOLERANCE)


def test_a_group_added_mid_run_and_a_layer_frozen_then_unfrozen_train_as_torch():
    """``opt.add_param_group`` after two steps: the new group's Adam steps count from 1 (torch.optim's per-parameter
    ``state['step']``; kiln counted the optimizer's earlier steps, eager and compiled alike); the first layer frozen for
    two calls, then unfrozen."""
    torch, model, twin = torch_twins(_mlp, seed=8)
    optimizer, twin_optimizer = kiln.optim.Adam(model[0].parameters(), lr=0.05), torch.optim.Adam(twin[0].parameters(), lr=0.05)
    step = kiln.compile(_classifier_step(kiln, model, optimizer))

    def before_call(index):
        if index == 2:
            optimizer.add_param_group({"params": model[2].parameters(), "lr": 0.01})
            twin_optimizer.add_param_group({"params": twin[2].parameters(), "lr": 0.01})
        for net in (model, twin):
            net[0].requires_grad_(index not in (3, 4))

    _lockstep(step, _classifier_step(torch, twin, twin_optimizer), _batches(6), before_call)
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert all(step.variants.values())


def _counting(fn, traces):
    """``fn`` noting each call in ``traces``: called once per trace under ``kiln.compile``, once per call in torch."""

    def counted(*args):
        traces.append(1)
        return fn(*args)

    return counted


def _bn_net(lib):
    layers = [lib.nn.Linear(6, 16), lib.nn.BatchNorm1d(16), lib.nn.ReLU(), lib.nn.Dropout(0.0), lib.nn.Linear(16, 3)]
    return lib.nn.Sequential(*layers).double()


def test_train_and_eval_toggled_between_calls_trace_one_variant_per_mode_as_torch_compile_guards():
    """BatchNorm normalizes by batch statistics and updates its running ones in train(), by the running ones in
    eval(): the compiled step noticed no mode change (eval calls ran the train() graph: 0.12 off torch). Each mode
    traces once; toggling back reuses the variant traced for that mode."""
    torch, model, twin = torch_twins(_bn_net, seed=7)
    optimizer, twin_optimizer = kiln.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    traces = []
    step = kiln.compile(_counting(_classifier_step(kiln, model, optimizer), traces))

    def before_call(index):
        for net in (model, twin):
            net.train(index % 3 != 1)

    _lockstep(step, _classifier_step(torch, twin, twin_optimizer), _batches(6), before_call)
    _assert_same(model, twin)
    np.testing.assert_allclose(np.array(model[1].running_var), twin[1].running_var.numpy(), **TOLERANCE)
    assert int(model[1].num_batches_tracked) == int(twin[1].num_batches_tracked) == 4
    assert len(traces) == 2


def test_a_submodule_put_in_eval_alone_is_guarded_too():
    """Only the BatchNorm layer frozen (``model[1].eval()``, fine-tuning with fixed statistics): a submodule's mode."""
    torch, model, twin = torch_twins(_bn_net, seed=3)  # SGD: Adam turns the first Linear's bias's zero gradient (BN
    # subtracts the mean) into a step of rounding noise
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    step = kiln.compile(_classifier_step(kiln, model, optimizer))

    def before_call(index):
        for net in (model, twin):
            net[1].train(index < 2)

    _lockstep(step, _classifier_step(torch, twin, twin_optimizer), _batches(4), before_call)
    _assert_same(model, twin, optimizer, twin_optimizer)
    np.testing.assert_allclose(np.array(model[1].running_mean), twin[1].running_mean.numpy(), **TOLERANCE)


def test_a_step_returning_a_dict_of_metrics_returns_the_dict():
    """``{"loss", "acc" (argmax == y mean), "grad_norm" (clip_grad_norm_'s)}``: kiln returned the three as a tuple."""
    torch, model, twin = torch_twins(_mlp, seed=4)

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
    for x, y in _batches(3):
        ours, theirs = step(kiln.tensor(x), kiln.tensor(y)), twin_step(torch.tensor(x), torch.tensor(y))
        assert isinstance(ours, dict) and list(ours) == list(theirs)
        for name in theirs:
            np.testing.assert_allclose(np.asarray(ours[name]), theirs[name].detach().numpy(), **TOLERANCE)
            assert str(ours[name].dtype).split(".")[-1] == str(theirs[name].dtype).split(".")[-1]
    _assert_same(model, twin, optimizer, twin_optimizer)


def test_gradients_accumulated_over_calls_stepped_outside_every_third_call_trace_twice():
    """No ``zero_grad`` in the compiled function; ``step()`` and ``zero_grad()`` outside every 3 calls. The first call
    of each cycle finds no ``.grad``, the others one: two variants, reused (each cycle traced both again)."""
    torch, model, twin = torch_twins(_mlp, seed=5)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.05), torch.optim.Adam(twin.parameters(), lr=0.05)
    traces = []

    def make(lib, net):
        def accumulate(x, y):
            loss = lib.nn.functional.cross_entropy(net(x), y) / 3
            loss.backward()
            return loss.detach()

        return accumulate

    step = kiln.compile(_counting(make(kiln, model), traces))

    def before_call(index):
        if index and index % 3 == 0:
            _assert_same(model, twin)  # the accumulated .grad
            for opt in (optimizer, twin_optimizer):
                opt.step()
                opt.zero_grad()

    _lockstep(step, make(torch, twin), _batches(9), before_call)
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert len(traces) == 2


@pytest.mark.parametrize("create_graph", [False, True])
def test_backward_with_create_graph_compiles_and_a_later_backward_differentiates_through_grad_only_then(create_graph):
    """``loss.backward(create_graph=True)`` then a term of ``p.grad * p``, backward again: torch differentiates through
    ``.grad`` (a Hessian-vector term) only with ``create_graph``; without it ``.grad`` is a constant there. kiln ran
    the create_graph step eagerly (warned 'backward() of a traced tensor', which it was not) and, without
    create_graph, would have differentiated through the traced ``.grad``."""
    torch, model, twin = torch_twins(_mlp, seed=9)

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1)

        def train_step(x, y):
            optimizer.zero_grad()
            loss = lib.nn.functional.cross_entropy(net(x), y)
            loss.backward(create_graph=create_graph)
            sum((p.grad * p).sum() for p in net.parameters()).backward()
            optimizer.step()
            return loss.detach()

        return train_step, optimizer

    (step, optimizer), (twin_step, twin_optimizer) = make(kiln, model), make(torch, twin)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # kiln: not run eagerly
        warnings.filterwarnings("ignore", "Using backward\\(\\) with create_graph=True")  # torch's own
        _lockstep(kiln.compile(step), twin_step, _batches(3))
    _assert_same(model, twin)


def test_the_compiled_optimizer_tutorial_step_reads_eager_grads_with_a_scheduler_outside():
    """torch's "compiled optimizer" recipe: ``@torch.compile(fullgraph=False) def opt_step(): opt.step()`` after an
    eager ``loss.backward()`` (each ``.grad`` an input), ``LambdaLR`` stepped outside: one trace, lr fed per call."""
    torch, model, twin = torch_twins(_mlp, seed=1)
    optimizers = [lib.optim.Adam(net.parameters(), lr=0.1) for lib, net in ((kiln, model), (torch, twin))]
    schedulers = [lib.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1 / (epoch + 1)) for lib, opt in zip((kiln, torch), optimizers)]

    @kiln.compile(fullgraph=False)
    def opt_step():
        optimizers[0].step()

    for x, y in _batches(5):
        for lib, net, optimizer, scheduler, step in zip((kiln, torch), (model, twin), optimizers, schedulers,
                                                         (opt_step, optimizers[1].step)):
            optimizer.zero_grad()
            lib.nn.functional.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward()
            step()
            scheduler.step()
    _assert_same(model, twin, *optimizers)
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
        _assert_same(model[name], twin[name], optimizers[index], twin_optimizers[index])
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
        return _classifier_step(lib, net, optimizer, set_to_none=False), optimizer

    (step, optimizer), (twin_step, twin_optimizer) = make(kiln, model), make(torch, twin)
    _lockstep(kiln.compile(step), twin_step, _batches(4))
    _assert_same(model, twin, optimizer, twin_optimizer)


def test_micro_batches_accumulated_in_a_python_loop_inside_one_call():
    """``for micro_x, micro_y in zip(x.chunk(4), y.chunk(4))``: four backwards into ``.grad``, one step."""
    torch, model, twin = torch_twins(_mlp, seed=6)

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
        _lockstep(kiln.compile(step), twin_step, _batches(3))
    _assert_same(model, twin, optimizer, twin_optimizer)


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
    torch, model, twin = torch_twins(_mlp, seed=10)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.05), torch.optim.Adam(twin.parameters(), lr=0.05)
    step = kiln.compile(_item_step(kiln, model, optimizer))
    with pytest.warns(UserWarning, match=r"runs eagerly.*item\(\) of a traced tensor"):
        _lockstep(step, _item_step(torch, twin, twin_optimizer), _batches(3))
    _assert_same(model, twin, optimizer, twin_optimizer)
    x, y = _batches(1)[0]
    strict = kiln.compile(_item_step(kiln, model, optimizer), fullgraph=True)
    with pytest.raises(KilnError, match=r"test_porting_probes_compiled_steps.py:\d+ in train_step.*\n.*item\(\)"):
        strict(kiln.tensor(x), kiln.tensor(y))


def test_a_list_of_micro_batches_is_an_input_not_a_constant_of_the_trace():
    """``train_step([x0, x1, x2], [y0, y1, y2])``: each tensor of the lists is an input, as torch.compile's (kiln fixed
    the lists in the trace by their values: every call traced again, its data baked in)."""
    torch, model, twin = torch_twins(_mlp, seed=6)

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
        micro = _batches(3, size=4, seed=seed)
        step([kiln.tensor(x) for x, _ in micro], [kiln.tensor(y) for _, y in micro])
        twin_step([torch.tensor(x) for x, _ in micro], [torch.tensor(y) for _, y in micro])
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert len(step.variants) == 1 and all(step.variants.values())


def test_train_and_eval_steps_that_set_the_mode_themselves_trace_once_and_leave_it_set():
    """``model.train()`` at the top of the compiled train step, ``model.eval()`` in the compiled eval step: each call
    sets the mode as the step does (the trace ran it once) and neither guard fails on the mode the other left (the
    train step traced again at every call)."""
    torch, model, twin = torch_twins(_bn_net, seed=7)
    traces = []

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1)
        classify = _classifier_step(lib, net, optimizer)

        def train_step(x, y):
            net.train()
            return classify(x, y)

        def eval_step(x, y):
            net.eval()
            with lib.no_grad():
                return lib.nn.functional.cross_entropy(net(x), y)

        return train_step, eval_step

    (train_step, eval_step), (twin_train, twin_eval) = make(kiln, model), make(torch, twin)
    train_step, eval_step = kiln.compile(_counting(train_step, traces)), kiln.compile(_counting(eval_step, traces))
    for x, y in _batches(4):
        _lockstep(train_step, twin_train, [(x, y)])
        assert model.training and model[1].training
        _lockstep(eval_step, twin_eval, [(x, y)])
        assert not model[1].training
    _assert_same(model, twin)
    np.testing.assert_allclose(np.array(model[1].running_mean), twin[1].running_mean.numpy(), **TOLERANCE)
    assert len(traces) == 2


def test_an_ema_copy_updated_in_place_under_no_grad_inside_the_step_compiles():
    """Mean teacher / BYOL / DDPM's EMA: ``ema_p.mul_(0.9).add_(p, alpha=0.1)`` under ``no_grad`` after
    ``opt.step()``; kiln refused in-place writes of a parameter in a trace (the step ran eagerly)."""
    import copy

    torch, model, twin = torch_twins(_mlp, seed=2)

    def make(lib, net):
        ema = copy.deepcopy(net).requires_grad_(False)
        optimizer = lib.optim.Adam(net.parameters(), lr=0.05)

        def train_step(x, y):
            loss = _classifier_step(lib, net, optimizer)(x, y)
            with lib.no_grad():
                for ema_p, p in zip(ema.parameters(), net.parameters()):
                    ema_p.mul_(0.9).add_(p, alpha=0.1)
            return loss

        return train_step, optimizer, ema

    (step, optimizer, ema), (twin_step, twin_optimizer, twin_ema) = make(kiln, model), make(torch, twin)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _lockstep(kiln.compile(step), twin_step, _batches(3))
    _assert_same(model, twin, optimizer, twin_optimizer)
    _assert_same(ema, twin_ema)


@pytest.mark.parametrize("clear", ["zero_", "none", "scaled"])
def test_a_hand_written_sgd_update_and_grads_written_in_place_inside_the_step(clear):
    """``p -= lr * p.grad`` under ``no_grad`` then ``p.grad.zero_()`` (or ``p.grad = None``); or ``p.grad.mul_(0.5)``
    before ``opt.step()``. A ``.grad`` written in place was lost: the update read, and the call wrote back, the
    gradient from before the write (0.2 off torch)."""
    torch, model, twin = torch_twins(_mlp, seed=2)

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

        def train_step(x, y):
            loss = lib.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            with lib.no_grad():
                for p in net.parameters():
                    if clear == "scaled":
                        p.grad.mul_(0.5)
                        continue
                    p -= 0.1 * p.grad
                    if clear == "zero_":
                        p.grad.zero_()
                    else:
                        p.grad = None
            if clear == "scaled":
                optimizer.step()
            return loss.detach()

        return train_step

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _lockstep(kiln.compile(make(kiln, model)), make(torch, twin), _batches(3))
    _assert_same(model, twin)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_clip_grad_norm_takes_torchs_string_inf_and_foreach(compiled):
    """``clip_grad_norm_(params, 0.3, norm_type="inf", foreach=True)``: torch takes ``float(norm_type)``; kiln's
    eager clip handed the string to NumPy (ValueError), so the compiled step fell back to it and raised too."""
    torch, model, twin = torch_twins(_mlp, seed=2)

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
        _lockstep(kiln.compile(step) if compiled else step, make(torch, twin), _batches(3))
    _assert_same(model, twin)
