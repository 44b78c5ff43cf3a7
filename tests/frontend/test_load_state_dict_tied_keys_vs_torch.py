"""``load_state_dict`` of a model with tied weights (HF's ``generator_lm_head.weight = word_embeddings.weight``):
``strict=False`` reports a tied name the state lacks as missing, as PyTorch's (kiln reported nothing, as the tensor
was loaded under its other name); strict loading of such a state still works in kiln (older kiln checkpoints list tied
weights once), where PyTorch refuses it."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries


def _tied(lib):
    class Tied(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = lib.nn.Embedding(5, 3)
            self.head = lib.nn.Linear(3, 5)
            self.head.weight = self.embed.weight

    return Tied()


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_a_tied_name_the_state_lacks_is_missing_and_the_ties_are_kept(name):
    lib, _, _ = libraries(name)
    source, model = _tied(lib), _tied(lib)
    state = {k: v for k, v in source.state_dict().items() if k != "head.weight"}
    result = model.load_state_dict(state, strict=False)
    assert list(result.missing_keys) == ["head.weight"] and list(result.unexpected_keys) == []
    assert model.head.weight is model.embed.weight
    np.testing.assert_array_equal(np.array(model.head.weight.detach()), np.array(source.embed.weight.detach()))
    full = model.load_state_dict(source.state_dict())
    assert list(full.missing_keys) == [] and list(full.unexpected_keys) == []
