"""``torch.cat``/``torch.stack`` of anything but a sequence of tensors: torch's ``TypeError`` in its words under the
user's line (``frontend/cat_shape_checks.py``: ``check_joined_tensors``). kiln joined a tensor's rows
(``cat(t)`` gave a flat tensor, silently), took NumPy arrays and lists, and failed on a dict with a message about
``tensor.constant`` dtypes (Stable Diffusion 2's DDIM concatenates conditionings that are dicts for concat-conditioned
models, where the v1 sampler's line ``torch.cat([unconditional_conditioning, c])`` meets them)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

CASES = {
    "cat of a tensor": lambda lib: lib.cat(lib.ones(2, 3)),
    "stack of a tensor": lambda lib: lib.stack(lib.ones(2, 3)),
    "cat with an array": lambda lib: lib.cat([lib.ones(2), np.ones(2)]),
    "cat with a list": lambda lib: lib.cat((lib.ones(2), [1.0, 2.0])),
    "stack with a list": lambda lib: lib.stack([lib.ones(2), [1.0, 2.0]]),
    "cat of dicts": lambda lib: lib.cat([{"c_concat": [lib.ones(1)]}, {"c_concat": [lib.ones(1)]}]),
    "cat with None": lambda lib: lib.cat([lib.ones(2), None]),
    "cat with a number": lambda lib: lib.cat([lib.ones(2), 3.0], dim=0),
}


@pytest.mark.parametrize("case", CASES)
def test_refused_as_torch(case):
    require_torch()
    messages = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        with pytest.raises(TypeError) as raised:
            CASES[case](lib)
        messages[name] = str(raised.value)
    assert messages["kiln"].endswith(messages["torch"]), messages
    assert "test_cat_stack_argument_types_vs_torch.py" in messages["kiln"]


def test_tensors_still_join_as_torch():
    """Tuples, lists and generators of tensors, complex ones among them, join as before."""
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        assert tuple(lib.cat((lib.ones(2), lib.zeros(1))).shape) == (3,)
        assert tuple(lib.stack([lib.ones(2), lib.zeros(2)], dim=1).shape) == (2, 2)
        assert tuple(lib.cat([lib.complex(lib.ones(1), lib.ones(1)), lib.zeros(1, dtype=lib.complex64)]).shape) == (2,)
