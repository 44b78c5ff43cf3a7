"""A compiled bound method of a plain Python object (no Module: TD3's ``class TD3(object)`` with
``kiln.compile(policy.update)``) that sets its own attributes (``self.total_it += 1``, then
``if self.total_it % self.policy_freq == 0:`` a delayed actor step) sets them once per call, as eagerly and as
``torch.compile``, which guards on the value and replays the store (``runtime/attribute_writes.py``,
``watching_plain_owner``). Before, such an object had no ``__setattr__`` hook: the counter counted traces, and the
variant traced at the first call ran at every call with its branch baked in, silently (found by the TD3 probe,
``tests/e2e/test_porting_probes_td3_dreamer_dt.py``). The objects a compiled function's closure holds are watched too,
and the attributes a trace sets before reading them are replayed without a guard (``runtime/plain_object_writes.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries, require_torch


def _agent(lib, policy_freq=2):
    torch, nn, F = libraries(lib)

    class Agent(object):
        def __init__(self):
            torch.manual_seed(0)
            self.critic, self.actor = nn.Linear(3, 1).double(), nn.Linear(3, 3).double()
            self.critic_optimizer = torch.optim.SGD(self.critic.parameters(), lr=0.1)
            self.actor_optimizer = torch.optim.SGD(self.actor.parameters(), lr=0.1)
            self.policy_freq, self.total_it = policy_freq, 0

        def update(self, state):
            self.total_it += 1
            critic_loss = (self.critic(state) ** 2).mean()
            self.critic_optimizer.zero_grad()
            critic_loss.backward()
            self.critic_optimizer.step()
            if self.total_it % self.policy_freq == 0:  # the delayed policy update
                actor_loss = -self.critic(self.actor(state)).mean()
                self.actor_optimizer.zero_grad()
                actor_loss.backward()
                self.actor_optimizer.step()
            return critic_loss

    return Agent()


def _twins():
    torch = require_torch()
    ours, theirs = _agent("kiln"), _agent("torch")
    for mine, twin in ((ours.critic, theirs.critic), (ours.actor, theirs.actor)):
        twin.load_state_dict({name: torch.tensor(np.asarray(value)) for name, value in mine.state_dict().items()})
    return torch, ours, theirs


def _state(call):
    return np.random.default_rng(call).standard_normal((4, 3))


def test_a_plain_objects_counter_counts_calls_and_its_branch_follows_it_as_torch():
    torch, ours, theirs = _twins()
    update = kiln.compile(ours.update, fullgraph=True)
    for call in range(5):
        loss, expected = update(kiln.tensor(_state(call))), theirs.update(torch.tensor(_state(call)))
        np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
        assert ours.total_it == theirs.total_it == call + 1
    for mine, twin in ((ours.critic, theirs.critic), (ours.actor, theirs.actor)):
        for p, q in zip(mine.parameters(), twin.parameters()):
            np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_a_counter_on_a_plain_object_stays_compiled_with_a_variant_per_branch_as_torch():
    """TD3's ``self.total_it`` is a number that changes from the second trace on (``runtime/dynamic_attributes.py``):
    its branch ``if self.total_it % self.policy_freq == 0`` is guarded per branch, so 20 calls trace three times (the
    first value, then each branch). Before, each call traced again and ``fullgraph`` raised at ``recompile_limit``."""
    torch, ours, theirs = _twins()
    update = kiln.compile(ours.update, fullgraph=True)
    for call in range(20):
        loss, expected = update(kiln.tensor(_state(call))), theirs.update(torch.tensor(_state(call)))
        np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
        assert ours.total_it == theirs.total_it == call + 1 and type(ours.total_it) is int
    assert sum(v is not None for v in update.variants.values()) + sum(map(len, update.superseded.values())) == 3
    for mine, twin in ((ours.critic, theirs.critic), (ours.actor, theirs.actor)):
        for p, q in zip(mine.parameters(), twin.parameters()):
            np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_an_attribute_set_once_on_a_plain_object_traces_once_more_then_stays_compiled():
    critic = _agent("kiln").critic

    class Predictor(object):
        def __init__(self):
            self.scale = None

        def predict(self, state):
            if self.scale is None:  # a cache filled on the first call
                self.scale = 2.0
            return critic(state) * self.scale

    predictor = Predictor()
    predict = kiln.compile(predictor.predict)
    with kiln.no_grad():
        outputs = [np.asarray(predict(kiln.tensor(_state(0)))) for _ in range(3)]
        expected = np.asarray(critic(kiln.tensor(_state(0)))) * 2.0
    assert predictor.scale == 2.0
    for output in outputs:
        np.testing.assert_allclose(output, expected, rtol=1e-12)
    traced = sum(v is not None for v in predict.variants.values()) + sum(map(len, predict.superseded.values()))
    assert traced == 2


def test_a_plain_objects_training_forward_that_sets_a_counter_trains_compiled_and_counts_each_call():
    """The counter is read as a number that changes (``runtime/dynamic_attributes.py``); the forward ran eagerly,
    warned, before. The gradients are the eager forward's."""
    agent = _agent("kiln")

    class Counting(object):
        def __init__(self):
            self.calls = 0

        def forward(self, state):
            self.calls += 1
            return agent.critic(state) * self.calls

    counting = Counting()
    forward = kiln.compile(counting.forward, fullgraph=True)
    for call in range(3):
        state = kiln.tensor(_state(call), requires_grad=True)
        forward(state).sum().backward()
        expected = np.asarray(agent.critic.weight.detach()).repeat(4, axis=0) * (call + 1)
        np.testing.assert_allclose(np.asarray(state.grad), expected, rtol=1e-12)
    assert counting.calls == 3 and type(counting.calls) is int


def test_a_list_of_traced_tensors_set_on_the_object_is_left_unguarded():
    """``self.losses = [loss]`` (a list holding a traced tensor) has no value to replay: left as the trace set it and
    unguarded, so the update stays one variant instead of tracing again at every call."""
    critic = _agent("kiln").critic

    class Remembering(object):
        def __init__(self):
            self.losses = None

        def loss(self, state):
            loss = (critic(state) ** 2).mean()
            self.losses = [loss]
            return loss

    remembering = Remembering()
    compiled = kiln.compile(remembering.loss)
    with kiln.no_grad():
        for call in range(3):
            compiled(kiln.tensor(_state(call)))
    traced = sum(v is not None for v in compiled.variants.values()) + sum(map(len, compiled.superseded.values()))
    assert traced == 1


def test_a_plain_objects_counter_reached_through_a_closure_counts_calls():
    """``kiln.compile(lambda state: agent.update(state))``: the object the closure holds is watched too."""
    torch, ours, theirs = _twins()
    update = kiln.compile(lambda state: ours.update(state), fullgraph=True)
    for call in range(3):
        loss, expected = update(kiln.tensor(_state(call))), theirs.update(torch.tensor(_state(call)))
        np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
    assert ours.total_it == theirs.total_it == 3


def test_fields_a_helper_sets_before_reading_them_are_replayed_not_guarded():
    """A closure's helper whose ``load`` re-sets its fields at each call (the FT-Transformer probe's ``MaskFeed``, a
    noise tape's ``self.used = {...}``) and then counts on them: one variant serves every call, and each call leaves
    the fields as eagerly (``torch.compile`` guards only what the code read before writing)."""
    critic = _agent("kiln").critic

    class Feed(object):
        def __init__(self):
            self.scales, self.at, self.used = None, 0, {}

        def load(self, scales):
            self.scales, self.at, self.used = list(scales), 0, {"calls": 0}

        def next_scale(self):
            self.at += 1
            self.used["calls"] += 1
            return self.scales[self.at - 1]

    feed = Feed()

    def loss(state, *scales):
        feed.load(scales)
        return (critic(state) * feed.next_scale() * feed.next_scale()).sum()

    compiled = kiln.compile(loss)
    with kiln.no_grad():
        for call in range(4):
            scales = [kiln.tensor(1.0 + call), kiln.tensor(2.0)]
            expected = float((critic(kiln.tensor(_state(call))) * (2.0 + 2 * call)).sum())
            np.testing.assert_allclose(float(compiled(kiln.tensor(_state(call)), *scales)), expected, rtol=1e-12)
            assert feed.at == 2 and feed.used == {"calls": 2}
    traced = sum(v is not None for v in compiled.variants.values()) + sum(map(len, compiled.superseded.values()))
    assert traced == 1
    assert type(feed) is Feed  # its class is the user's again after the trace


def test_the_users_class_is_back_after_the_trace_and_a_copy_made_in_it_notes_nothing():
    """The read-tracking subclass is swapped in only while the trace runs; a copy the trace makes keeps it, and its
    writes afterwards are not noted anywhere (nothing grows)."""
    import copy

    from kiln.runtime import plain_object_writes

    critic = _agent("kiln").critic

    class Holder(object):
        def __init__(self):
            self.scale = 2.0

        def predict(self, state):
            self.copied = copy.copy(self)
            return critic(state) * self.scale

    holder = Holder()
    with kiln.no_grad():
        kiln.compile(holder.predict)(kiln.tensor(_state(0)))
    assert type(holder) is Holder and holder.copied.scale == 2.0
    for value in range(5):
        holder.copied.scale = float(value)
    assert not plain_object_writes._WRITTEN and not plain_object_writes._READ_FIRST


def test_an_object_whose_class_refuses_a_subclass_is_watched_without_read_tracking():
    """A closure's object whose class refuses subclasses (its ``__init_subclass__`` raises, as a sealed registry's;
    an Enum's): the trace runs, and the counter it bumps is guarded (read-tracking needs a subclass)."""
    critic = _agent("kiln").critic

    class Sealed(object):
        def __init_subclass__(cls, **kwargs):
            raise ValueError("Sealed takes no subclasses")

        def __init__(self):
            self.calls = 0

    sealed = Sealed()

    def predict(state):
        sealed.calls += 1
        return critic(state)

    compiled = kiln.compile(predict)
    with kiln.no_grad():
        for call in range(3):
            compiled(kiln.tensor(_state(call)))
    assert type(sealed) is Sealed and sealed.calls == 3


class _GlobalAgent:
    """An agent a script keeps as a module-level global (``agent = Agent()`` beside ``step = kiln.compile(lambda x:
    agent.act(x))``): the lambda names it as a global, not a closure variable."""

    def __init__(self):
        self.calls, self.weight = 0, kiln.ones(3)

    def act(self, x):
        self.calls += 1
        return x * self.weight * self.calls


GLOBAL_AGENT = _GlobalAgent()


def _global_step(x):
    return GLOBAL_AGENT.act(x)


def test_a_counter_on_a_global_object_counts_calls():
    """A global object's counter was not watched: the first call left it at 2 and every call returned that call's
    result, silently (eagerly and in torch: 1, 2, 3)."""
    GLOBAL_AGENT.calls = 0
    compiled = kiln.compile(_global_step)
    results = [compiled(kiln.ones(3)).tolist() for _ in range(3)]
    assert results == [[1.0] * 3, [2.0] * 3, [3.0] * 3]
    assert GLOBAL_AGENT.calls == 3


def test_only_the_users_objects_are_watched():
    import argparse

    from kiln.runtime.reachable_objects import is_users

    from kiln.runtime.reachable_objects import is_plain_object

    class LARS(kiln.optim.Optimizer):  # a user's optimizer: kiln's state capture handles it, not the plain-object walk
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

    class Settings(dict):
        pass

    assert is_users(GLOBAL_AGENT) and is_users(_global_step) and is_plain_object(GLOBAL_AGENT)
    assert not any(is_users(item) for item in (argparse.Namespace(), kiln.nn.Linear(1, 1), np.zeros(1), print))
    assert not any(is_plain_object(item) for item in (LARS([kiln.zeros(1, requires_grad=True)]), Settings()))
