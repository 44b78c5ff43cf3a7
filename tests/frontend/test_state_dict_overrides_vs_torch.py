"""A module overriding torch's ``_load_from_state_dict`` or ``_save_to_state_dict`` (an old checkpoint's names mapped
on load, a derived buffer recomputed after loading, a cache kept out of the saved state) is called as torch calls
it; kiln never called either, so such overrides were silently ignored (the load then failed on the old names, or
kept stale derived values)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require_torch


def _classes(lib):
    nn = lib.nn

    class LegacyLinear(nn.Linear):
        """Old checkpoints stored the weight as ``W``, transposed."""

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                  error_msgs):
            if prefix + "W" in state_dict:
                state_dict[prefix + "weight"] = state_dict.pop(prefix + "W").t()
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                          error_msgs)
            with lib.no_grad():
                self.norm.copy_(self.weight.norm())  # derived after loading

        def __init__(self):
            super().__init__(2, 3)
            self.register_buffer("norm", lib.zeros(()))

    class Cached(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(lib.ones(3))
            self.register_buffer("cache", lib.zeros(3))

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            super()._save_to_state_dict(destination, prefix, keep_vars)
            destination.pop(prefix + "cache")

    return LegacyLinear, Cached


def _values(state):
    return {key: np.asarray(value, dtype=float).round(6).tolist() for key, value in state.items()}


def _run(lib):
    LegacyLinear, Cached = _classes(lib)
    model = lib.nn.Sequential(LegacyLinear(), Cached())
    old = {"0.W": lib.tensor(np.arange(6.0).reshape(2, 3), dtype=lib.float32), "0.bias": lib.ones(3),
           "0.norm": lib.zeros(()), "1.scale": lib.full((3,), 2.0)}
    result = model.load_state_dict(old, strict=False)
    saved = model.state_dict()
    outcome = {"loaded": _values(saved), "missing": list(result.missing_keys),
               "unexpected": list(result.unexpected_keys)}
    with pytest.raises(Exception) as caught:
        model.load_state_dict({**old, "1.extra": lib.ones(1), "0.bias": lib.ones(4)})
    outcome["errors"] = [line.strip().replace("torch.Size", "Size").replace("kiln.Size", "Size")
                         for line in str(caught.value).splitlines()[1:]]
    return outcome


def test_overrides_called_as_torch():
    import kiln

    assert _run(kiln) == _run(require_torch())
