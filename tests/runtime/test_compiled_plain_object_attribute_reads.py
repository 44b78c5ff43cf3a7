"""The attributes a compiled function reads from plain Python objects (a config's ``cfg.scale``, an agent's
``self.epsilon``, a sub-config's ``cfg.sub.temperature``), reached through its closure, a script's global or an
argument, are guarded on the value read, as ``torch.compile`` guards them: a call finding another value traces a
variant for it (an int that changes at every call is a number that changes, ``runtime/dynamic_attributes.py``).
Before, the first trace's value was baked in, silently: setting ``cfg.scale = 2.0`` between calls changed nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln


class Sub:
    def __init__(self):
        self.temperature = 1.0


class Config:
    def __init__(self):
        self.scale, self.step, self.sub = 1.0, 0, Sub()


GLOBAL_CONFIG = Config()


def _scaled(x, config):
    return x * config.scale / config.sub.temperature + config.step


def _through_the_global(x):
    return _scaled(x, GLOBAL_CONFIG)


def _ways(config):
    """Each way a function reaches ``config``: its closure, a global, a positional or a keyword argument."""
    yield "closure", (lambda x: _scaled(x, config)), lambda f, x: f(x)
    yield "argument", _scaled, lambda f, x: f(x, config)
    yield "keyword", _scaled, lambda f, x: f(x, config=config)


@pytest.mark.parametrize("way", ["closure", "global", "argument", "keyword"])
def test_a_changed_attribute_reaches_the_next_call(way):
    config = GLOBAL_CONFIG if way == "global" else Config()
    config.scale, config.step, config.sub.temperature = 1.0, 0, 1.0
    fn, call = ((_through_the_global, lambda f, x: f(x)) if way == "global" else
                next((fn, call) for name, fn, call in _ways(config) if name == way))
    compiled, x = kiln.compile(fn), kiln.ones(2)
    results = []
    for scale, step, temperature in ((1.0, 0, 1.0), (2.0, 0, 1.0), (2.0, 3, 1.0), (2.0, 3, 4.0), (1.0, 0, 1.0)):
        config.scale, config.step, config.sub.temperature = scale, step, temperature
        results.append((call(compiled, x).tolist(), call(fn, x).tolist()))
    assert [ours for ours, _ in results] == [eager for _, eager in results] == [
        [1.0, 1.0], [2.0, 2.0], [5.0, 5.0], [3.5, 3.5], [1.0, 1.0]]


def test_an_int_read_that_changes_at_every_call_is_a_number_that_changes():
    config = Config()
    compiled = kiln.compile(lambda x: _scaled(x, config), fullgraph=True)
    for step in range(12):
        config.step = step
        assert compiled(kiln.ones(1)).tolist() == [1.0 + step]
    assert sum(v is not None for v in compiled.variants.values()) + sum(map(len, compiled.superseded.values())) == 2


def test_a_float_read_that_changes_at_every_call_runs_eagerly_past_the_limit_with_its_values():
    config = Config()
    compiled = kiln.compile(lambda x: _scaled(x, config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in range(12):
            config.scale = 1.0 + call / 2
            assert compiled(kiln.ones(1)).tolist() == [1.0 + call / 2]
    assert any("recompile_limit" in str(w.message) for w in caught)


def test_a_training_forward_follows_a_temperature_read_from_an_object():
    """A Gumbel-style temperature annealed between steps: the compiled forward for ``backward()`` is guarded too."""
    schedule = Config()
    weight = kiln.tensor(np.array([1.0, -2.0]), requires_grad=True)
    compiled = kiln.compile(lambda x: (x * weight / schedule.sub.temperature).sum())
    for temperature in (1.0, 0.5, 0.25):
        schedule.sub.temperature = temperature
        weight.grad = None
        compiled(kiln.tensor(np.array([3.0, 4.0]))).backward()
        np.testing.assert_allclose(np.asarray(weight.grad), np.array([3.0, 4.0]) / temperature)


def test_numpy_scalars_read_from_an_object_are_guarded():
    """``args.temp = np.maximum(args.temp * np.exp(-rate * i), temp_min)`` leaves a ``np.float64`` on the object (and
    NumPy math a ``np.float32`` or ``np.int64``): guarded on its value as a Python number; it was baked in silently."""
    config = Config()
    compiled = kiln.compile(lambda x: _scaled(x, config))
    for scale, step, temperature in ((np.float64(1.0), np.int64(0), np.float32(1.0)),
                                     (np.maximum(np.exp(-0.3), 0.5), np.int64(0), np.float32(1.0)),
                                     (np.float64(2.0), np.int64(3), np.float32(0.5)), (np.float64(1.0), 0, 1.0)):
        config.scale, config.step, config.sub.temperature = scale, step, temperature
        x = np.arange(3.0)
        np.testing.assert_allclose(np.asarray(compiled(kiln.tensor(x))), x * scale / temperature + step, rtol=1e-6)
