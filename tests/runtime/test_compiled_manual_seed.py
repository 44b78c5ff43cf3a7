"""``torch.manual_seed`` inside a ``kiln.compile``d function: torch.compile breaks its graph there, so the seed is set
at every call and a seeded dropout repeats its mask call after call. A compiled graph draws its random numbers at each
call, so a seed set once while tracing would not repeat them: the trace is refused, the function runs eagerly with a
warning (as torch.compile's graph break) and ``fullgraph=True`` raises at the line. Before, the seed was set at trace
time only and later calls drew new masks, silently."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln

X = np.linspace(-1.0, 1.0, 40).reshape(5, 8)


def seeded_dropout():
    model = kiln.nn.Sequential(kiln.nn.Linear(8, 16), kiln.nn.Dropout(0.5), kiln.nn.Linear(16, 2)).double()

    def forward(x):
        kiln.manual_seed(3)
        return model(x)

    return forward


def test_a_seeded_dropout_repeats_its_mask_at_every_call_as_eagerly():
    forward = seeded_dropout()
    compiled = kiln.compile(forward)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [compiled(kiln.tensor(X)).detach().numpy() for _ in range(3)]
    assert any("manual_seed(3) inside a compiled function" in str(w.message) for w in caught)
    for output in outputs:
        np.testing.assert_array_equal(output, forward(kiln.tensor(X)).detach().numpy())


def test_fullgraph_refuses_it_at_the_line():
    with pytest.raises(kiln.KilnError, match=r"test_compiled_manual_seed.py:\d+ in forward: kiln.manual_seed\(3\)"):
        kiln.compile(seeded_dropout(), fullgraph=True)(kiln.tensor(X))


def test_seeding_before_each_call_repeats_a_compiled_dropout():
    model = kiln.nn.Sequential(kiln.nn.Linear(8, 16), kiln.nn.Dropout(0.5)).double()
    compiled = kiln.compile(model, fullgraph=True)
    outputs = []
    for _ in range(2):
        kiln.manual_seed(3)
        outputs.append(compiled(kiln.tensor(X)).detach().numpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
