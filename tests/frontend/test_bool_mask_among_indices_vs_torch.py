"""A bool mask among other index items, read and written as PyTorch's: ``x[:, mask]`` picks the true positions of
the dims the mask covers (Whisper's ``detect_language``: ``mask[list(language_tokens)] = False; logits[:, mask] =
-np.inf``). kiln refused it ("x[index] = value takes ints, slices, None and ..., one bool mask tensor, ..."). Eagerly
and in ``kiln.compile`` (the mask an input: specialized and guarded), values and gradients against torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.arange(24.0).reshape(2, 3, 4) - 11.0
MASK = np.array([True, False, True, True])
MASK_2D = np.array([[True, False, True, False], [False, False, True, True], [True, True, False, False]])


def reads_and_writes(lib, x, mask, mask_2d):
    y = x.clone()
    y[:, :, mask] = -np.inf  # detect_language's logits[:, mask] = -np.inf, one dim further in
    y[1, mask_2d] = lib.arange(6, dtype=x.dtype) * 10.0
    picked = x[:, 1, mask] * 2 + x[0, mask_2d].sum()
    return y, picked, x[mask[:2], 1:]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bool_masks_among_indices_read_write_and_differentiate_as_torch(compiled):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(X, requires_grad=True)
        masks = lib.tensor(MASK), lib.tensor(MASK_2D)
        run = kiln.compile(lambda x, m, m2: reads_and_writes(kiln, x, m, m2)) if compiled and lib is kiln else \
            (lambda x, m, m2: reads_and_writes(lib, x, m, m2))
        y, picked, rows = run(x, *masks)
        if not compiled or lib is torch:
            (picked.sum() + rows.sum() + y[0, 0, 1]).backward()
        results.append([np.array(t.detach().numpy() if hasattr(t, "detach") else t) for t in (y, picked, rows)] +
                       ([np.array(x.grad.numpy())] if not compiled or lib is torch else []))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


def test_a_mask_input_to_a_compiled_function_traces_a_variant_per_mask():
    torch = require_torch()
    compiled = kiln.compile(lambda x, m: x[:, m] * 2)
    for mask in ([True, False, True, False], [False, True, True, True], [True, False, True, False]):
        ours = np.asarray(compiled(kiln.tensor(X[0]), kiln.tensor(mask)))
        np.testing.assert_array_equal(ours, (torch.tensor(X[0])[:, torch.tensor(mask)] * 2).numpy())


def test_a_mask_of_the_wrong_shape_is_torch_index_error():
    torch = require_torch()
    with pytest.raises(IndexError) as theirs:
        torch.zeros(2, 4)[:, torch.tensor([True, False, True])]
    with pytest.raises(IndexError) as ours:
        kiln.zeros(2, 4)[:, kiln.tensor([True, False, True])]
    assert str(theirs.value).split(" at index")[0] in str(ours.value)
