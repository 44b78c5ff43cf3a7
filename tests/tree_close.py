"""``assert_trees_close``: two results of a function (tensors nested in tuples, lists and dicts, kiln's or torch's)
compared leaf by leaf, the structure first."""

from __future__ import annotations

import numpy as np


def as_arrays(tree):
    """Tensors (nested in tuples, lists and dicts) as arrays; anything else as it is."""
    if isinstance(tree, dict):
        return {key: as_arrays(value) for key, value in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(as_arrays(item) for item in tree)
    return np.array(tree.detach().numpy()) if hasattr(tree, "detach") else tree


def assert_trees_close(ours, theirs, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    ours, theirs = as_arrays(ours), as_arrays(theirs)
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert_trees_close(ours[key], theirs[key], rtol, atol)
    elif isinstance(theirs, (tuple, list)):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_trees_close(a, b, rtol, atol)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)
