"""Stores of a ``kiln.compile``'d function's tensors into the dicts and lists it reaches, replayed after each call
(``runtime/container_stores.py``), call by call against the same program run eagerly by torch 2.13: Grad-CAM's hook
dict and a feature list, pytorch_sac's logging dict in a training step, a decoder's cache list set by index."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch


def _traces(compiled):
    kept = [*compiled.variants.values(), *(v for earlier in compiled.superseded.values() for v in earlier)]
    return sum(hasattr(v, "executable") for v in kept)


def _same_parameters(model, twin):
    torch = require_torch()
    twin.load_state_dict({key: torch.tensor(np.array(value.numpy())) for key, value in model.state_dict().items()})


def _features_program(lib):
    """A classifier with Grad-CAM style hooks: ``acts[name] = output`` into a dict the hooks' closure holds, and a
    step appending the logits to a feature list, logging a number and a string beside them."""
    nn = lib.nn
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    acts, features = {}, []

    def keeping(name):
        def hook(module, inputs, output):
            acts[name] = output
        return hook

    model[0].register_forward_hook(keeping("linear"))
    model[1].register_forward_hook(keeping("relu"))

    def step(x):
        logits = model(x)
        features.append(logits * 2)
        acts["calls"] = 1
        acts["mode"] = "eval"
        return logits.softmax(-1)[:, 0].sum()

    return model, acts, features, step


def test_hook_dict_and_feature_list_are_replayed_call_by_call_as_torch_fullgraph():
    torch = require_torch()
    programs = {name: _features_program(libraries(name)[0]) for name in ("kiln", "torch")}
    _same_parameters(programs["kiln"][0], programs["torch"][0])
    compiled = kiln.compile(programs["kiln"][3], fullgraph=True)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            x = rng.standard_normal((4, 3))
            for name, (_, acts, features, _) in programs.items():
                features.clear()  # the caller reads the features of each call, then drops them
            ours = compiled(kiln.tensor(x))
            with torch.no_grad():
                theirs = programs["torch"][3](torch.tensor(x))
            np.testing.assert_allclose(float(ours.detach()), float(theirs), rtol=1e-12)
            (_, acts, features, _), (_, t_acts, t_features, _) = programs["kiln"], programs["torch"]
            assert list(acts) == list(t_acts) and acts["calls"] == 1 and acts["mode"] == "eval"
            for key in ("linear", "relu"):
                np.testing.assert_allclose(acts[key].numpy(), t_acts[key].numpy(), rtol=1e-12)
            assert len(features) == len(t_features) == 1
            np.testing.assert_allclose(features[0].numpy(), t_features[0].numpy(), rtol=1e-12)
    assert _traces(compiled) == 2  # the empty dict, then the dict holding the keys: the key guard


def test_a_stored_tensor_read_later_in_the_trace_is_the_traced_value_and_the_dict_gets_each_calls():
    log = {}

    def step(x):
        log["double"] = x * 2
        return log["double"] + 1  # the store's traced value, not a constant from an earlier call

    compiled = kiln.compile(step, fullgraph=True)
    for k in (1.0, 2.0, 3.0):
        assert compiled(kiln.ones(2) * k).tolist() == [2 * k + 1] * 2
        assert log["double"].tolist() == [2 * k] * 2
    assert _traces(compiled) == 2


def _caching_decoder(lib):
    """A decoder filling ``self.cache[i] = h`` per layer (a list made before), read back by the caller."""
    nn = lib.nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(3, 3) for _ in range(3)])
            self.cache = [None] * 3

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                x = layer(x).tanh()
                self.cache[i] = x
            return x.sum()

    return Decoder().double()


def test_a_cache_list_set_by_index_is_read_back_by_the_caller_as_torch():
    torch = require_torch()
    model, twin = _caching_decoder(kiln), _caching_decoder(torch)
    _same_parameters(model, twin)
    compiled = kiln.compile(model, fullgraph=True)
    rng = np.random.default_rng(1)
    with kiln.no_grad(), torch.no_grad():
        for _ in range(3):
            x = rng.standard_normal((2, 3))
            np.testing.assert_allclose(float(compiled(kiln.tensor(x))), float(twin(torch.tensor(x))), rtol=1e-12)
            for ours, theirs in zip(model.cache, twin.cache, strict=True):
                np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    assert _traces(compiled) == 1  # the slots it sets are not read: not guarded


def _actor(lib):
    """pytorch_sac's actor: ``self.outputs['mu'] = mu`` logged by its forward."""
    nn = lib.nn

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
            self.outputs = {}

        def forward(self, obs):
            mu, log_std = self.trunk(obs).chunk(2, dim=-1)
            self.outputs["mu"] = mu
            self.outputs["std"] = log_std.exp()
            return mu.tanh()

    return Actor().double()


@pytest.mark.parametrize("whole_step", [False, True])
def test_a_logging_dict_in_a_training_step_is_replayed_as_torch(whole_step):
    """The compiled actor (its forward's backward outside) or the whole step (``backward()`` and ``step()`` inside):
    losses, parameters and the logged tensors' values step by step as torch's."""
    results = {}
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        actor = _actor(lib)
        if lib is kiln:
            results["start"] = {key: np.array(value.numpy()) for key, value in actor.state_dict().items()}
        else:
            actor.load_state_dict({key: lib.tensor(value) for key, value in results["start"].items()})
        optimizer = lib.optim.SGD(actor.parameters(), lr=0.1)
        compiled = kiln.compile(actor) if lib is kiln and not whole_step else actor

        def step(obs):
            loss = (compiled(obs) - 0.5).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step) if lib is kiln and whole_step else step
        rng, logged = np.random.default_rng(2), []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(4):
                loss = run(lib.tensor(rng.standard_normal((5, 3))))
                logged.append([loss.item()] + [actor.outputs[key].detach().numpy().copy() for key in ("mu", "std")])
        results[name] = logged, [p.detach().numpy().copy() for p in actor.parameters()]
    for ours, theirs in zip(results["kiln"][0], results["torch"][0], strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10)
    for a, b in zip(*(results[name][1] for name in ("kiln", "torch")), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_a_list_emptied_and_refilled_by_the_trace_is_replayed_whole_as_torch():
    """A list the trace shrinks is replayed whole, guarded on all it held (``ContainerStores.wholes``): each call
    leaves it as torch's eager run does; the next call finds it changed and traces again, as ``torch.compile``'s
    length guard recompiles. It used to be refused (the call ran eagerly)."""
    require_torch()
    seen = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        kept = [lib.zeros(2), lib.zeros(2)]

        def refill(x):
            kept.clear()
            kept.append(x * 3)
            return x.sum()

        run = kiln.compile(refill, fullgraph=True) if lib is kiln else refill
        seen[name] = []
        for scale in (1.0, 2.0):
            run(lib.ones(2) * scale)
            seen[name].append([t.tolist() for t in kept])
    assert seen["kiln"] == seen["torch"] == [[[3.0, 3.0]], [[6.0, 6.0]]]


ACTIVATIONS: dict = {}


def _keeping_in_a_global(x):
    ACTIVATIONS["double"] = x * 2
    return x.sum()


def test_a_global_dict_rebound_between_calls_gets_the_next_calls_store():
    """A script's ``ACTIVATIONS = {}`` before each batch: the replay stores into the dict the global holds now (its
    identity is guarded: a new dict traces again), never into the one the trace saw."""
    global ACTIVATIONS
    compiled = kiln.compile(_keeping_in_a_global, fullgraph=True)
    for k in (1.0, 2.0, 3.0):
        previous, ACTIVATIONS = ACTIVATIONS, {}
        compiled(kiln.ones(2) * k)
        assert ACTIVATIONS["double"].tolist() == [2 * k] * 2
        assert "double" not in previous or previous["double"].tolist() == [2 * k - 2] * 2
