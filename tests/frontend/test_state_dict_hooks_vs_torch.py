"""torch's state-dict hooks on modules (kiln had none): ``register_state_dict_pre_hook``/``post_hook`` and the private
``_register_state_dict_hook``, ``register_load_state_dict_pre_hook``/``post_hook`` and the private
``_register_load_state_dict_pre_hook``: when each is called, with what, in which order, and what its changes do to
the saved and loaded state (an old checkpoint's names renamed on load, a cache left out of the saved state, missing
keys forgiven before ``strict``), against torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require_torch


def _model(lib, scale=1.0):
    """The same values in both libraries: ``scale`` times 0.1, 0.2, ... through the parameters."""
    nn = lib.nn
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 1)))
    start = 0
    for p in model.parameters():
        values = (np.arange(start, start + p.numel()) + 1) * 0.1 * scale
        p.data = lib.tensor(values.reshape(tuple(p.shape)), dtype=lib.float32)
        start += p.numel()
    return model


def _calls(lib):
    model, calls = _model(lib), []
    for prefix, module in [("", model), ("1.", model[1]), ("1.0.", model[1][0])]:
        module.register_state_dict_pre_hook(lambda m, p, k, tag=prefix: calls.append(("pre", tag, p, k)))
        module.register_state_dict_post_hook(lambda m, sd, p, meta, tag=prefix: calls.append(("post", tag, p, len(sd))))
        module.register_load_state_dict_pre_hook(
            lambda m, sd, p, meta, strict, mk, uk, em, tag=prefix: calls.append(("load pre", tag, p, sorted(sd), strict)))
        module.register_load_state_dict_post_hook(
            lambda m, keys, tag=prefix: calls.append(("load post", tag, list(keys.missing_keys))))
    state = model.state_dict()
    model.state_dict(prefix="net.", keep_vars=True)
    model.load_state_dict(state)
    return calls


def test_hooks_called_in_torch_order_with_torch_arguments():
    import kiln

    assert _calls(kiln) == _calls(require_torch())


def _renamed_checkpoint(lib, private):
    """An old checkpoint calls LayerNorm's weight ``gamma``: a pre hook on the norm renames it."""
    model, source = _model(lib), _model(lib, scale=2.0)
    old = {key.replace("1.0.weight", "1.0.gamma"): value for key, value in source.state_dict().items()}

    def rename(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        if prefix + "gamma" in state_dict:
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "gamma")

    if private:
        model[1][0]._register_load_state_dict_pre_hook(rename)
    else:
        model[1][0].register_load_state_dict_pre_hook(lambda module, *arguments: rename(*arguments))
    result = model.load_state_dict(old)
    return [np.asarray(v, dtype=float).tolist() for v in model.state_dict().values()], result


@pytest.mark.parametrize("private", [False, True])
def test_a_load_pre_hook_renames_an_old_key(private):
    import kiln

    ours, theirs = _renamed_checkpoint(kiln, private), _renamed_checkpoint(require_torch(), private)
    assert ours[0] == theirs[0]
    assert list(ours[1].missing_keys) == list(theirs[1].missing_keys) == []


def _forgiven(lib):
    """A post hook forgives a missing key before ``strict`` is checked; the rest loads."""
    model, source = _model(lib), _model(lib, scale=2.0)
    partial = {k: v for k, v in source.state_dict().items() if k != "0.bias"}
    handle = model.register_load_state_dict_post_hook(lambda module, keys: keys.missing_keys.remove("0.bias"))
    result = model.load_state_dict(partial)
    handle.remove()
    with pytest.raises((RuntimeError, Exception), match="0.bias"):
        model.load_state_dict(partial)
    return [np.asarray(v, dtype=float).tolist() for v in model.state_dict().values()], list(result.missing_keys)


def test_a_load_post_hook_forgives_a_missing_key():
    import kiln

    assert _forgiven(kiln) == _forgiven(require_torch())


def _saved(lib):
    model = _model(lib)
    model[1].register_state_dict_post_hook(lambda m, sd, prefix, meta: (sd.pop(prefix + "1.bias"), None)[1])
    model[1]._register_state_dict_hook(lambda m, sd, prefix, meta: {"dropped by the parent": 0})
    top = _model(lib)
    top._register_state_dict_hook(lambda m, sd, prefix, meta: {"only": len(sd)})
    return list(model.state_dict()), dict(top.state_dict())


def test_state_dict_post_hooks_change_what_is_saved():
    import kiln

    assert _saved(kiln) == _saved(require_torch())


def test_a_public_post_hook_returning_a_value_is_refused():
    import kiln

    torch = require_torch()
    for lib in (kiln, torch):
        model = _model(lib)
        model.register_state_dict_post_hook(lambda m, sd, prefix, meta: {})
        with pytest.raises((RuntimeError, kiln.KilnError)):
            model.state_dict()
