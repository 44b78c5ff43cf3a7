"""``nn.Embedding(max_norm=...)`` and ``nn.EmbeddingBag(max_norm=...)`` inside a whole training step compiled by
``kiln.compile(step, fullgraph=True)``, against torch 2.13's eager step in float64: the table looked up several times
a step (TransE's heads and tails), each lookup renormalizing the rows it names first. kiln refused ``max_norm`` in any
trace ("a traced graph is pure"); it now writes the rows back in the graph (``frontend/embedding_options.py``), and
the reads before each renormalization keep their gradients (``frontend/parameter_versions.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

HEADS = np.array([[0, 2, 2], [5, 1, 0]])
TAILS = np.array([[1, 1, 3], [4, 5, 0]])


def table(lib, nn, kind, norm_type):
    if kind == "Embedding":
        module = nn.Embedding(6, 3, max_norm=1.0, norm_type=norm_type)
    else:
        module = nn.EmbeddingBag(6, 3, max_norm=1.0, norm_type=norm_type, mode="sum")
    with lib.no_grad():
        module.weight.copy_(lib.tensor(1.5 * np.random.default_rng(0).standard_normal((6, 3))))
    return module


def train(name, kind, norm_type, compiled, steps=3):
    lib, nn, F = libraries(name)
    module = table(lib, nn, kind, norm_type)
    optimizer = lib.optim.SGD(module.parameters(), lr=0.3, momentum=0.5)

    def step(heads, tails):
        optimizer.zero_grad()
        distance = (module(heads) - module(tails)).norm(p=norm_type, dim=-1)
        loss = F.relu(1.0 - distance).sum() + (module(heads) ** 3).sum()
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [run(lib.tensor(HEADS), lib.tensor(TAILS)).item() for _ in range(steps)]
    return losses, np.array(module.weight.detach().numpy())


@pytest.mark.parametrize("norm_type", [2.0, 1.0])
@pytest.mark.parametrize("kind", ["Embedding", "EmbeddingBag"])
def test_max_norm_in_a_compiled_training_step_as_torch(float64_default, kind, norm_type):
    require_torch()
    theirs = train("torch", kind, norm_type, compiled=False)
    for compiled in (False, True):
        ours = train("kiln", kind, norm_type, compiled)
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12, atol=1e-14)


def test_functional_max_norm_of_a_parameters_data_in_a_compiled_function_as_torch(float64_default):
    require_torch()
    tables = []
    for name in ("kiln", "torch"):
        lib, nn, F = libraries(name)
        module = table(lib, nn, "Embedding", 2.0)
        lookup = lambda indices, module=module, F=F: F.embedding(indices, module.weight.data, max_norm=1.0)  # noqa: E731
        run = kiln.compile(lookup, fullgraph=True) if lib is kiln else lookup
        tables.append((np.array(run(lib.tensor(HEADS)).numpy()), np.array(module.weight.detach().numpy())))
    (rows, weight), (their_rows, their_weight) = tables
    np.testing.assert_allclose(rows, their_rows, rtol=1e-12)
    np.testing.assert_allclose(weight, their_weight, rtol=1e-12)  # the parameter renormalized through its .data


def test_max_norm_of_an_array_weight_in_a_trace_says_what_to_pass():
    lookup = lambda indices: kiln.nn.functional.embedding(indices, np.ones((4, 2)), max_norm=1.0)  # noqa: E731
    with pytest.raises(kiln.TraceError, match="max_norm renormalizes the weight in place, so it must be a tensor, got ndarray"):
        kiln.compile(lookup, fullgraph=True)(kiln.tensor([0, 1]))
