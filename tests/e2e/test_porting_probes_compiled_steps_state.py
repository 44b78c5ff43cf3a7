"""Porting probes of compiled training steps (see ``test_porting_probes_compiled_steps.py``): what a step reads
and writes beside its optimizer, vs torch eager in float64 to 1e-12. ``train()``/``eval()`` toggled between calls or
set inside the step (guarded and replayed, as ``torch.compile``'s), ``backward(create_graph=True)`` with a later
backward through ``.grad``, an EMA copy and a hand-written SGD updated in place under ``no_grad``, ``.grad`` written
in place."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.compiled_step_probes import TOLERANCE, mlp, batches, assert_same, classifier_step, lockstep, counting, bn_net
from oracles import torch_twins


def test_train_and_eval_toggled_between_calls_trace_one_variant_per_mode_as_torch_compile_guards():
    """BatchNorm normalizes by batch statistics and updates its running ones in train(), by the running ones in
    eval(): the compiled step noticed no mode change (eval calls ran the train() graph: 0.12 off torch). Each mode
    traces once; toggling back reuses the variant traced for that mode."""
    torch, model, twin = torch_twins(bn_net, seed=7)
    optimizer, twin_optimizer = kiln.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    traces = []
    step = kiln.compile(counting(classifier_step(kiln, model, optimizer), traces))

    def before_call(index):
        for net in (model, twin):
            net.train(index % 3 != 1)

    lockstep(step, classifier_step(torch, twin, twin_optimizer), batches(6), before_call)
    assert_same(model, twin)
    np.testing.assert_allclose(np.array(model[1].running_var), twin[1].running_var.numpy(), **TOLERANCE)
    assert int(model[1].num_batches_tracked) == int(twin[1].num_batches_tracked) == 4
    assert len(traces) == 2


def test_a_submodule_put_in_eval_alone_is_guarded_too():
    """Only the BatchNorm layer frozen (``model[1].eval()``, fine-tuning with fixed statistics): a submodule's mode."""
    torch, model, twin = torch_twins(bn_net, seed=3)  # SGD: Adam turns the first Linear's bias's zero gradient (BN
    # subtracts the mean) into a step of rounding noise
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    step = kiln.compile(classifier_step(kiln, model, optimizer))

    def before_call(index):
        for net in (model, twin):
            net[1].train(index < 2)

    lockstep(step, classifier_step(torch, twin, twin_optimizer), batches(4), before_call)
    assert_same(model, twin, optimizer, twin_optimizer)
    np.testing.assert_allclose(np.array(model[1].running_mean), twin[1].running_mean.numpy(), **TOLERANCE)


def test_train_and_eval_steps_that_set_the_mode_themselves_trace_once_and_leave_it_set():
    """``model.train()`` at the top of the compiled train step, ``model.eval()`` in the compiled eval step: each call
    sets the mode as the step does (the trace ran it once) and neither guard fails on the mode the other left (the
    train step traced again at every call)."""
    torch, model, twin = torch_twins(bn_net, seed=7)
    traces = []

    def make(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1)
        classify = classifier_step(lib, net, optimizer)

        def train_step(x, y):
            net.train()
            return classify(x, y)

        def eval_step(x, y):
            net.eval()
            with lib.no_grad():
                return lib.nn.functional.cross_entropy(net(x), y)

        return train_step, eval_step

    (train_step, eval_step), (twin_train, twin_eval) = make(kiln, model), make(torch, twin)
    train_step, eval_step = kiln.compile(counting(train_step, traces)), kiln.compile(counting(eval_step, traces))
    for x, y in batches(4):
        lockstep(train_step, twin_train, [(x, y)])
        assert model.training and model[1].training
        lockstep(eval_step, twin_eval, [(x, y)])
        assert not model[1].training
    assert_same(model, twin)
    np.testing.assert_allclose(np.array(model[1].running_mean), twin[1].running_mean.numpy(), **TOLERANCE)
    assert len(traces) == 2


@pytest.mark.parametrize("create_graph", [False, True])
def test_backward_with_create_graph_compiles_and_a_later_backward_differentiates_through_grad_only_then(create_graph):
    """``loss.backward(create_graph=True)`` then a term of ``p.grad * p``, backward again: torch differentiates through
    ``.grad`` (a Hessian-vector term) only with ``create_graph``; without it ``.grad`` is a constant there. kiln ran
    the create_graph step eagerly (warned 'backward() of a traced tensor', which it was not) and, without
    create_graph, would have differentiated through the traced ``.grad``."""
    torch, model, twin = torch_twins(mlp, seed=9)

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
        lockstep(kiln.compile(step), twin_step, batches(3))
    assert_same(model, twin, optimizer, twin_optimizer)


def test_an_ema_copy_updated_in_place_under_no_grad_inside_the_step_compiles():
    """Mean teacher / BYOL / DDPM's EMA: ``ema_p.mul_(0.9).add_(p, alpha=0.1)`` under ``no_grad`` after
    ``opt.step()``; kiln refused in-place writes of a parameter in a trace (the step ran eagerly)."""
    import copy

    torch, model, twin = torch_twins(mlp, seed=2)

    def make(lib, net):
        ema = copy.deepcopy(net).requires_grad_(False)
        optimizer = lib.optim.Adam(net.parameters(), lr=0.05)

        def train_step(x, y):
            loss = classifier_step(lib, net, optimizer)(x, y)
            with lib.no_grad():
                for ema_p, p in zip(ema.parameters(), net.parameters()):
                    ema_p.mul_(0.9).add_(p, alpha=0.1)
            return loss

        return train_step, optimizer, ema

    (step, optimizer, ema), (twin_step, twin_optimizer, twin_ema) = make(kiln, model), make(torch, twin)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lockstep(kiln.compile(step), twin_step, batches(3))
    assert_same(model, twin, optimizer, twin_optimizer)
    assert_same(ema, twin_ema)


@pytest.mark.parametrize("clear", ["zero_", "none", "scaled"])
def test_a_hand_written_sgd_update_and_grads_written_in_place_inside_the_step(clear):
    """``p -= lr * p.grad`` under ``no_grad`` then ``p.grad.zero_()`` (or ``p.grad = None``); or ``p.grad.mul_(0.5)``
    before ``opt.step()``. A ``.grad`` written in place was lost: the update read, and the call wrote back, the
    gradient from before the write (0.2 off torch)."""
    torch, model, twin = torch_twins(mlp, seed=2)

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
        lockstep(kiln.compile(make(kiln, model)), make(torch, twin), batches(3))
    assert_same(model, twin)
