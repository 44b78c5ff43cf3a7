"""A ``kiln.compile``'d function that stores into a dict or list it is given (Whisper's ``kv_cache`` filled by forward
hooks, fairseq's ``incremental_state``) runs eagerly, warned (``fullgraph=True`` raises), and the container holds what
PyTorch's eager run puts there (``runtime/container_arguments.py``). The trace left its tensors in the caller's dict:
the next call raised, or ran the variant traced for the empty dict and gave silently wrong results; a dict of tensors
given positionally was rebuilt for the trace, so the stores were dropped."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries, require_torch


def cached_decoder(torch, nn):
    """Whisper's kv-cache idiom: hooks on the key projection store the growing keys in the cache the call is given."""

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.key = nn.Linear(3, 3)
            self.query = nn.Linear(3, 3)

        def forward(self, x, kv_cache=None):
            k = self.key(x)  # with the hook: the keys of every step so far (Whisper's self-attention)
            return torch.softmax(self.query(x) @ k.transpose(-1, -2), dim=-1) @ k

    def install_hooks(model, cache):
        def save(module, _, output):
            cache[module] = output if module not in cache else torch.cat([cache[module], output], dim=1).detach()
            return cache[module]

        return model.key.register_forward_hook(save)

    return Decoder, install_hooks


def _decode(lib, model, install_hooks, tokens, compiled=None):
    cache = {}
    install_hooks(model, cache)
    run = compiled or model
    outputs = []
    with lib.no_grad():
        for step in range(tokens.shape[1]):
            outputs.append(np.array(run(lib.tensor(tokens[:, step : step + 1]), kv_cache=cache).numpy()))
    return outputs, {tuple(value.shape) for value in cache.values()}


def test_a_kv_cache_filled_by_hooks_decodes_as_torch():
    torch = require_torch()
    tokens = np.random.default_rng(0).standard_normal((1, 4, 3))
    results = {}
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        Decoder, install_hooks = cached_decoder(lib, nn)
        kiln.manual_seed(0)
        model = Decoder().double()
        if lib is torch:
            model.load_state_dict({key: torch.tensor(value) for key, value in results["state"].items()})
        else:
            results["state"] = {key: np.array(value.numpy()) for key, value in model.state_dict().items()}
        compiled = kiln.compile(model) if lib is kiln else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[name] = _decode(lib, model, install_hooks, tokens, compiled)
        if lib is kiln:
            assert any("stores into its argument 'kv_cache'" in str(w.message) for w in caught)
    ours, theirs = results["kiln"], results["torch"]
    assert ours[1] == theirs[1] == {(1, 4, 3)}
    for step, (a, b) in enumerate(zip(ours[0], theirs[0])):
        np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=f"step {step}")


def _append(x, cache):
    cache["k"] = kiln.cat([cache["k"], x]) if "k" in cache else x * 1
    return cache["k"].sum()


def test_fullgraph_refuses_and_leaves_the_dict_as_it_was():
    cache = {"old": kiln.ones(1)}
    with pytest.raises(KilnError, match=r"stores into its argument 'cache' \(at 'k'\).*runs eagerly"):
        kiln.compile(_append, fullgraph=True)(kiln.ones(2), cache=cache)
    assert list(cache) == ["old"]


def test_a_positional_dict_of_tensors_gets_the_stores_as_eagerly():
    cache = {"k": kiln.ones(2)}
    with pytest.warns(UserWarning, match="stores into its argument 'cache'"):
        total = kiln.compile(_append)(kiln.ones(2), cache)
    assert float(total) == 4.0 and cache["k"].tolist() == [1.0, 1.0, 1.0, 1.0]  # the store was dropped before


def test_a_function_that_only_reads_its_dict_stays_compiled():
    def scaled(x, table):
        return x * table["scale"]

    compiled = kiln.compile(scaled, fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compiled(kiln.ones(2), {"scale": kiln.tensor(3.0)}).tolist() == [3.0, 3.0]


def _growing_cache(lib, nn):
    class Cached(nn.Module):  # a kv cache kept on the module, filled in forward
        def __init__(self):
            super().__init__()
            self.key = nn.Linear(2, 2)
            self.cache = {}

        def forward(self, x):
            k = self.key(x) if "k" not in self.cache else lib.cat([self.cache["k"], self.key(x)])
            self.cache["k"] = k
            return k.sum()

    return Cached


def test_a_cache_on_the_module_or_in_the_closure_is_replayed_as_torch():
    """The module's growing cache and the closure's list are stored into by each call (``runtime/container_stores.py``
    replays the stores), call by call as torch's eager run; the cat cache's read is fed from the dict at each call."""
    torch = require_torch()
    results = {}
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        kiln.manual_seed(0)
        model = _growing_cache(lib, nn)().double()
        if lib is torch:
            model.load_state_dict({key: torch.tensor(value) for key, value in results["state"].items()})
        else:
            results["state"] = {key: np.array(value.numpy()) for key, value in model.state_dict().items()}
        closure_cache = []

        def step(x):
            closure_cache.append(model(x))  # a list the function fills
            return closure_cache[-1] * len(closure_cache)

        run = kiln.compile(step) if lib is kiln else step
        with lib.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[name] = [float(run(lib.ones(1, 2, dtype=lib.float64))) for _ in range(3)]
        results[name + " cache"] = (tuple(model.cache["k"].shape), len(closure_cache))
        if lib is kiln:
            assert not any("stores into" in str(w.message) for w in caught)
    np.testing.assert_allclose(results["kiln"], results["torch"], rtol=1e-12)
    assert results["kiln cache"] == results["torch cache"] == ((3, 2), 3)
    strict = _growing_cache(kiln, kiln.nn)()
    run = kiln.compile(strict, fullgraph=True)
    with kiln.no_grad():
        [run(kiln.ones(1, 2)) for _ in range(3)]
    assert tuple(strict.cache["k"].shape) == (3, 2)


GLOBAL_CACHE: dict = {}


def _store_in_global(x):
    GLOBAL_CACHE["x"] = x * 2  # a helper filling a script's global cache
    return GLOBAL_CACHE["x"].sum()


def test_stores_by_a_helper_into_a_global_or_its_own_closure_are_replayed():
    """The dicts a called helper reaches (a global it names, its own closure's) are the compiled function's own:
    before, only the compiled function's closure and globals were seen, so these stores kept the trace's tensors (a
    later read failed, or a variant traced for the empty dict ran again). Now each call stores its eager tensor."""
    def make_helper():
        cache = {}

        def helper(x):
            cache["y"] = x + 1
            return cache["y"]

        return helper, cache

    helper, closure_cache = make_helper()
    for step, cache in ((lambda x: _store_in_global(x), GLOBAL_CACHE), (lambda x: helper(x).sum(), closure_cache)):
        cache.clear()
        compiled = kiln.compile(step, fullgraph=True)
        ours = [(float(compiled(kiln.ones(2) * k)), list(cache.values())[0].tolist()) for k in (1, 2)]
        assert ours == [(float(step(kiln.ones(2) * k)), list(cache.values())[0].tolist()) for k in (1, 2)]
        assert not any(type(value).__name__ == "Value" for value in cache.values())
        assert all(value.tolist() in ([4.0, 4.0], [3.0, 3.0]) for value in cache.values())


class _LayerCache:
    """A kv cache object as Hugging Face's ``DynamicCache`` keeps one: lists on a plain object, grown per step."""

    def __init__(self):
        self.key_cache = []

    def update(self, key, layer):
        if len(self.key_cache) <= layer:
            self.key_cache.append(key)
        else:
            self.key_cache[layer] = kiln.cat([self.key_cache[layer], key], dim=-2)
        return self.key_cache[layer]


def test_stores_into_a_cache_objects_lists_run_as_the_eager_decode():
    """The cache object given as an argument (or held by the closure) had its list filled with the trace's tensor:
    the next call failed on a tensor with no values. Given, its containers are checked as a dict argument's (the call
    runs eagerly); held by the closure, its stores are replayed (the append, then the cat's index set)."""
    project = kiln.nn.Linear(2, 2).double()
    held = _LayerCache()

    def given(x, cache):
        return cache.update(project(x), 0).sum()

    def closed(x):
        return held.update(project(x), 0).sum()

    for step, cache_of in ((given, lambda: _LayerCache()), (closed, lambda: held)):
        compiled, eager_cache = kiln.compile(step), _LayerCache()
        cache = cache_of()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k in range(3):
                x = kiln.ones(1, 2, dtype=kiln.float64) * k
                ours = compiled(x, cache) if step is given else compiled(x)
                expected = float(eager_cache.update(project(x), 0).sum())
                assert float(ours) == pytest.approx(expected, rel=1e-12)
        assert any("stores into" in str(w.message) for w in caught) is (step is given)
        assert [tuple(key.shape) for key in cache.key_cache] == [(3, 2)]
    with pytest.raises(KilnError, match="stores into its argument 'cache'"):
        kiln.compile(given, fullgraph=True)(kiln.ones(1, 2, dtype=kiln.float64), _LayerCache())


def test_a_constant_cached_in_a_closure_dict_stays_compiled_as_its_values():
    """HiFi-GAN's ``hann_window[str(y.device)] = torch.hann_window(win_size)`` in a helper's closure dict: a tensor
    computed from constants alone is stored as the eager tensor of its values (each call would store the same), so the
    step stays one graph and the dict is usable after it."""
    windows = {}

    def windowed(y):
        windows["cpu"] = kiln.hann_window(4, dtype=kiln.float64)
        return (y * windows["cpu"]).sum()

    compiled = kiln.compile(windowed, fullgraph=True)
    y = kiln.arange(4.0, dtype=kiln.float64)
    assert [float(compiled(y * k)) for k in (1, 2)] == [float(windowed(y * k)) for k in (1, 2)]
    windows.clear()
    compiled = kiln.compile(windowed, fullgraph=True)
    compiled(y)
    np.testing.assert_allclose(np.asarray(windows["cpu"] * 1), np.hanning(5)[:4], atol=1e-15)
