"""``kiln.compile``: tensors the compiled function reads from a closure's or a global's list or dict that the program
rebinds between calls (open_clip's ``accum_images, accum_texts, accum_features = [], [], {}`` after each accumulation
window) or nests (``accum_features["image_features"][j]``) are read at each call through what holds them now, as
``torch.compile``'s guard sources are paths. The graph used to keep reading the list it traced with, silently: every
window after the first trained on the first one's batches. Against torch 2.13's eager runs in float64."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

DRAWS = np.random.default_rng(0).standard_normal((4, 3, 2))


def accumulated_sums(lib, compiled, rebind):
    """A step reading ``window`` and ``features`` from its closure; the loop refills them (new containers when
    ``rebind``, the same ones emptied and refilled otherwise) before each call."""
    window, features = [], {}

    def step(scale):
        return scale * (window[0] + window[1]).sum() + features["cached"][1].sum()

    run = kiln.compile(step, fullgraph=True) if compiled else step
    sums = []
    for draws in DRAWS:
        if rebind:
            window, features = [], {}
        else:
            window.clear()
            features.clear()
        window += [lib.tensor(draws[0]), lib.tensor(draws[1])]
        features["cached"] = [lib.tensor(draws[2]), lib.tensor(draws[2] * 10)]
        sums.append(run(lib.tensor(2.0)).item())
    return sums


@pytest.mark.parametrize("rebind", [True, False], ids=["rebound", "refilled"])
def test_containers_read_through_their_closure_as_torch(float64_default, rebind):
    torch = libraries("torch")[0]
    expected = accumulated_sums(torch, False, rebind)
    np.testing.assert_allclose(accumulated_sums(kiln, True, rebind), expected, rtol=1e-12)
    assert len(set(expected)) == len(DRAWS)


GLOBAL_WINDOW: dict = {}


def test_a_global_dict_of_lists_rebound_as_torch(float64_default):
    def step():
        return GLOBAL_WINDOW["batches"][0].sum() * 3

    sums = {}
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        sums[name] = []
        for draws in DRAWS:
            globals()["GLOBAL_WINDOW"] = {"batches": [lib.tensor(draws[0])]}
            sums[name].append(run().item())
    np.testing.assert_allclose(sums["kiln"], sums["torch"], rtol=1e-12)
