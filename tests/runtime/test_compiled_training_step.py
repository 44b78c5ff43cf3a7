"""A ``kiln.compile``d training step (``zero_grad``, forward, ``loss.backward()``, clipping, ``optimizer.step()``)
runs as one compiled graph (``runtime/step_capture.py``) and leaves parameters, ``.grad``, optimizer state and step
counts as the same step in PyTorch does; what a trace cannot keep (a scheduler stepped inside) runs eagerly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import require, torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


def _batches(count=6, size=8, seed=4):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 6)), rng.integers(0, 3, size)) for _ in range(count)]


def _step(lib, model, optimizer, clip=None, zero_grad=True):
    """The step as a PyTorch user writes it, for either library."""

    def train_step(x, y):
        if zero_grad:
            optimizer.zero_grad()
        loss = lib.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if clip == "norm":
            lib.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        if clip == "value":
            lib.nn.utils.clip_grad_value_(model.parameters(), 0.05)
        optimizer.step()
        return loss

    return train_step


def _run(step, lib, batches):
    return [float(step(lib.tensor(x), lib.tensor(y)).detach()) for x, y in batches]


def _assert_same(model, twin, optimizer=None, twin_optimizer=None):
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-12)
    if optimizer is not None:
        for p, q in zip(model.parameters(), twin.parameters()):
            ours, theirs = optimizer.state.get(id(p), {}), twin_optimizer.state[q]
            for name, array in ours.items():
                np.testing.assert_allclose(array, theirs[name].numpy(), rtol=1e-12, atol=1e-12)


OPTIMIZERS = {
    "sgd-momentum": (lambda lib, ps: lib.optim.SGD(ps, lr=0.2, momentum=0.9, nesterov=True), None),
    "adam": (lambda lib, ps: lib.optim.Adam(ps, lr=0.05), None),
    "adamw-clip-norm": (lambda lib, ps: lib.optim.AdamW(ps, lr=0.05, weight_decay=0.1), "norm"),
    "rmsprop-clip-value": (lambda lib, ps: lib.optim.RMSprop(ps, lr=0.01, momentum=0.5), "value"),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_compiled_step_trains_as_the_same_step_in_torch_as_one_graph(name):
    make_optimizer, clip = OPTIMIZERS[name]
    torch, model, twin = torch_twins(_net, seed=4)
    optimizer, twin_optimizer = make_optimizer(kiln, model.parameters()), make_optimizer(torch, twin.parameters())
    step = kiln.compile(_step(kiln, model, optimizer, clip))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not run eagerly
        losses = _run(step, kiln, _batches())
    np.testing.assert_allclose(losses, _run(_step(torch, twin, twin_optimizer, clip), torch, _batches()), rtol=1e-12)
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert optimizer.step_count == 6 and len(step.variants) == 1
    graph = next(iter(step.variants.values())).graph
    assert "tensor.matmul" in {op.name for op in graph.ops}  # forward, backward and update in the one graph


def test_gradients_accumulate_over_calls_when_the_step_does_not_clear_them():
    """Without zero_grad each call adds to ``.grad`` (an input once there is one): the first call's trace assumed no
    ``.grad``, so the second traces again; the same three calls in torch."""
    torch, model, twin = torch_twins(_net, seed=1)
    optimizer, twin_optimizer = kiln.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    step = kiln.compile(_step(kiln, model, optimizer, zero_grad=False))
    np.testing.assert_allclose(_run(step, kiln, _batches(3)),
                               _run(_step(torch, twin, twin_optimizer, zero_grad=False), torch, _batches(3)), rtol=1e-12)
    _assert_same(model, twin)
    variant = next(iter(step.variants.values()))
    assert any(value.name_hint.endswith(".grad") for value in variant.graph.inputs)


class _TwoHeads:
    """A body and two heads; the second head is reached only by the second step function (trained late)."""

    def __init__(self, lib):
        self.body = lib.nn.Linear(6, 8).double()
        self.head = lib.nn.Linear(8, 3).double()
        self.late = lib.nn.Linear(8, 3).double()
        self.frozen = lib.nn.Linear(6, 8).double().requires_grad_(False)

    def parameters(self):
        return [*self.body.parameters(), *self.head.parameters(), *self.late.parameters(), *self.frozen.parameters()]


def test_parameters_the_loss_does_not_reach_keep_no_grad_and_count_their_own_adam_steps():
    """torch.optim's per-parameter step: a head first reached at the third step starts Adam's bias correction at 1;
    a frozen layer and an unreached head keep ``.grad`` None."""
    import torch

    kiln.manual_seed(0)
    ours, theirs = _TwoHeads(kiln), _TwoHeads(torch)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        q.data = torch.tensor(np.array(p.data))

    def steps(lib, nets, compile):
        optimizer = lib.optim.Adam(nets.parameters(), lr=0.05)

        def one_head(x, y):
            optimizer.zero_grad()
            hidden = nets.body(x).tanh() + nets.frozen(x)
            loss = lib.nn.functional.cross_entropy(nets.head(hidden), y)
            loss.backward()
            optimizer.step()
            return loss

        def two_heads(x, y):
            optimizer.zero_grad()
            hidden = nets.body(x).tanh()
            loss = lib.nn.functional.cross_entropy(nets.head(hidden) + nets.late(hidden), y)
            loss.backward()
            optimizer.step()
            return loss

        first, second = (kiln.compile(one_head), kiln.compile(two_heads)) if compile else (one_head, two_heads)
        batches = _batches(4)
        return _run(first, lib, batches[:2]) + _run(second, lib, batches[2:]), optimizer

    kiln_losses, optimizer = steps(kiln, ours, True)
    torch_losses, twin_optimizer = steps(torch, theirs, False)
    np.testing.assert_allclose(kiln_losses, torch_losses, rtol=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert (p.grad is None) == (q.grad is None)
    late = ours.late.weight
    assert optimizer.step_count - optimizer.skipped_steps[id(late)] == int(twin_optimizer.state[theirs.late.weight]["step"])


def _bn_net(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 8), lib.nn.BatchNorm1d(8), lib.nn.ReLU(), lib.nn.Linear(8, 3)).double()


def test_running_statistics_update_and_a_read_after_the_step_sees_the_new_parameters():
    torch, model, twin = torch_twins(_bn_net, seed=2)

    def make(lib, net, optimizer):
        def train_step(x, y):
            optimizer.zero_grad()
            lib.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            with lib.no_grad():
                return net[0](x)  # after the update

        return train_step

    step = kiln.compile(make(kiln, model, kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)))
    twin_step = make(torch, twin, torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9))
    for x, y in _batches(3):
        np.testing.assert_allclose(step(kiln.tensor(x), kiln.tensor(y)).numpy(),
                                   twin_step(torch.tensor(x), torch.tensor(y)).numpy(), rtol=1e-12, atol=1e-12)
    _assert_same(model, twin)
    np.testing.assert_allclose(np.array(model[1].running_var), twin[1].running_var.numpy(), rtol=1e-12)


def _dropout_net(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 32), lib.nn.ReLU(), lib.nn.Dropout(0.5), lib.nn.Linear(32, 3)).double()


def test_dropout_in_a_compiled_step_draws_anew_each_call_and_repeats_under_manual_seed():
    def run():
        kiln.manual_seed(7)
        model = _dropout_net(kiln)
        optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)
        step = kiln.compile(_step(kiln, model, optimizer))
        x, y = _batches(1)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            losses = [float(step(kiln.tensor(x), kiln.tensor(y))) for _ in range(3)]
        return losses, [np.array(p.data) for p in model.parameters()], step

    first, params, step = run()
    again, params_again, _ = run()
    assert next(iter(step.variants.values())).reads_seed
    assert first == again and all(np.array_equal(p, q) for p, q in zip(params, params_again))
    assert len(set(first)) == 3


def test_a_scheduler_stepped_inside_runs_the_step_eagerly_warned_and_as_torch():
    torch, model, twin = torch_twins(_net, seed=5)

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.5)
        scheduler = lib.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

        def train_step(x, y):
            optimizer.zero_grad()
            lib.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            scheduler.step()

        return train_step

    step = kiln.compile(make(kiln, model))
    with pytest.warns(UserWarning, match=r"scheduler\.step\(\) inside a compiled training step"):
        for x, y in _batches(3):
            step(kiln.tensor(x), kiln.tensor(y))
    twin_step = make(torch, twin)
    for x, y in _batches(3):
        twin_step(torch.tensor(x), torch.tensor(y))
    _assert_same(model, twin)
    with pytest.raises(KilnError, match=r"scheduler\.step\(\).*call it after the compiled step"):
        kiln.compile(make(kiln, model), fullgraph=True)(kiln.tensor(_batches(1)[0][0]), kiln.tensor(_batches(1)[0][1]))


def test_a_scheduler_outside_the_step_changes_its_learning_rate_without_tracing_again():
    torch, model, twin = torch_twins(_net, seed=6)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.1), torch.optim.Adam(twin.parameters(), lr=0.1)
    schedulers = [lib.optim.lr_scheduler.ExponentialLR(o, gamma=0.7) for lib, o in ((kiln, optimizer), (torch, twin_optimizer))]
    step, twin_step = kiln.compile(_step(kiln, model, optimizer)), _step(torch, twin, twin_optimizer)
    for x, y in _batches(4):
        step(kiln.tensor(x), kiln.tensor(y))
        twin_step(torch.tensor(x), torch.tensor(y))
        for scheduler in schedulers:
            scheduler.step()
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert len(step.variants) == 1 and all(step.variants.values())  # compiled once, not run eagerly


def test_a_compiled_step_runs_on_onnxruntime_as_on_numpy():
    require("onnxruntime")
    results = []
    for backend in ("numpy", "onnxruntime"):
        kiln.manual_seed(3)
        model = _net(kiln)
        optimizer = kiln.optim.AdamW(model.parameters(), lr=0.05)
        step = kiln.compile(_step(kiln, model, optimizer, "norm"), backend=backend)
        losses = _run(step, kiln, _batches(3))
        assert all(step.variants.values())
        results.append((losses, [np.array(p.data) for p in model.parameters()]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-9)
    for p, q in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)


def _clearing_step(lib, model, optimizer, how):
    def train_step(x, y):
        if how == "assign":
            for p in model.parameters():
                p.grad = None
        elif how == "zeros":
            optimizer.zero_grad(set_to_none=False)
        else:
            model.zero_grad()
        lib.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return train_step


@pytest.mark.parametrize("how", ["assign", "zeros", "module"])
def test_grads_cleared_by_assignment_zeroed_in_place_or_by_the_module_trace_once(how):
    torch, model, twin = torch_twins(_net, seed=8)
    step = kiln.compile(_clearing_step(kiln, model, kiln.optim.SGD(model.parameters(), lr=0.2), how))
    twin_step = _clearing_step(torch, twin, torch.optim.SGD(twin.parameters(), lr=0.2), how)
    for x, y in _batches(4):
        step(kiln.tensor(x), kiln.tensor(y))
        twin_step(torch.tensor(x), torch.tensor(y))
    _assert_same(model, twin)
    assert step.trace_count == 1 + (how == "zeros")  # in-place zeros need a .grad: the first call had none


def test_a_compiled_model_called_in_a_compiled_step_is_traced_into_it():
    torch, model, twin = torch_twins(_net, seed=9)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.1), torch.optim.Adam(twin.parameters(), lr=0.1)
    step = kiln.compile(_step(kiln, kiln.compile(model), optimizer))
    np.testing.assert_allclose(_run(step, kiln, _batches(3)), _run(_step(torch, twin, twin_optimizer), torch, _batches(3)),
                               rtol=1e-12)
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert all(step.variants.values())


def test_a_grad_scaler_inside_the_step_runs_it_eagerly_warned():
    kiln.manual_seed(0)
    model = _net(kiln)
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)
    scaler = kiln.amp.GradScaler("cpu")

    def train_step(x, y):
        optimizer.zero_grad()
        scaler.scale(kiln.nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()

    x, y = _batches(1)[0]
    with pytest.warns(UserWarning, match=r"GradScaler.scale\(\) inside a compiled training step"):
        kiln.compile(train_step)(kiln.tensor(x), kiln.tensor(y))
    assert optimizer.step_count == 1


def test_micro_batches_sliced_inside_the_step_compile_per_batch_size_as_torch():
    """``x[:half]`` slices the symbolic batch dim by a constant: such a step traces with static shapes instead, one
    variant per batch size (it ran eagerly), and accumulates the two backward passes as torch."""
    torch, model, twin = torch_twins(_net, seed=3)

    def make(lib, net, optimizer):
        def train_step(x, y):
            optimizer.zero_grad()
            half = x.shape[0] // 2
            for part in (slice(None, half), slice(half, None)):
                (lib.nn.functional.cross_entropy(net(x[part]), y[part]) / 2).backward()
            optimizer.step()

        return train_step

    step = kiln.compile(make(kiln, model, kiln.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)))
    twin_step = make(torch, twin, torch.optim.SGD(twin.parameters(), lr=0.3, momentum=0.9))
    batches = _batches(2) + _batches(1, size=6, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in batches:
            step(kiln.tensor(x), kiln.tensor(y))
    for x, y in batches:
        twin_step(torch.tensor(x), torch.tensor(y))
    _assert_same(model, twin)
    assert sum(hasattr(variant, "graph") for variant in step.variants.values()) == 2  # batch 8, then 6


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_a_layer_frozen_for_three_steps_then_unfrozen_starts_its_adam_steps_at_one_as_torch(compiled):
    """torch.optim skips a parameter without ``.grad`` (frozen ones too), so its own step count starts when unfrozen."""
    torch, model, twin = torch_twins(_net, seed=11)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.05), torch.optim.Adam(twin.parameters(), lr=0.05)
    step = _step(kiln, model, optimizer)
    step, twin_step = kiln.compile(step) if compiled else step, _step(torch, twin, twin_optimizer)
    for index, (x, y) in enumerate(_batches(6)):
        for net in (model, twin):
            net[2].requires_grad_(index >= 3)
        step(kiln.tensor(x), kiln.tensor(y))
        twin_step(torch.tensor(x), torch.tensor(y))
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert optimizer.skipped_steps[id(model[2].weight)] == 3


@pytest.mark.parametrize("region", ["bf16-autocast", "checkpoint"])
def test_an_autocast_region_or_a_checkpointed_layer_in_a_compiled_step_trains_as_the_eager_step(region):
    """The eager step (itself tested against torch) is the oracle: same losses and weights, in float32."""
    x, y = (kiln.tensor(a) for a in _batches(1)[0])

    def run(compiled):
        kiln.manual_seed(0)
        model = kiln.nn.Sequential(kiln.nn.Linear(6, 32), kiln.nn.GELU(), kiln.nn.Linear(32, 3))
        optimizer = kiln.optim.AdamW(model.parameters(), lr=1e-2)

        def train_step(inputs, targets):
            optimizer.zero_grad()
            if region == "checkpoint":
                hidden = kiln.utils.checkpoint.checkpoint(model[0], inputs, use_reentrant=False)
                loss = kiln.nn.functional.cross_entropy(model[2](model[1](hidden)), targets)
            else:
                with kiln.autocast("cpu", dtype=kiln.bfloat16):
                    loss = kiln.nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            return loss

        step = kiln.compile(train_step) if compiled else train_step
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            losses = [float(step(x.float(), y).detach()) for _ in range(3)]
        return losses, [np.array(p.data) for p in model.parameters()]

    (eager, eager_params), (compiled, compiled_params) = run(False), run(True)
    np.testing.assert_allclose(compiled, eager, rtol=1e-6)
    for p, q in zip(compiled_params, eager_params):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
