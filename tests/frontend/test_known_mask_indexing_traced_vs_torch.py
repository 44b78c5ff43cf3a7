"""``x[mask]`` in a ``kiln.compile``d function where the mask depends on no input (``~torch.eye(n, dtype=torch.bool)``,
a comparison of ``arange``s, a NumPy array): its values are known while tracing (``frontend/trace_known_values.py``),
so it traces as a gather of fixed positions, gradients included; a mask computed from an input is specialized and
guarded, one from a trained weight refused, naming the line. sthalles/SimCLR's ``similarity_matrix[~mask].view(2 * n, -1)`` made its whole training step run eagerly
(and raise under ``fullgraph=True``). Values, gradients and parameters vs torch 2.13 float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def off_diagonal_loss(lib, weight, x):
    n = x.shape[0]
    similarity = x @ weight @ x.T
    mask = lib.eye(n, dtype=lib.bool)
    same = lib.arange(n).unsqueeze(0) % 2 == lib.arange(n).unsqueeze(1) % 2
    off_diagonal = similarity[~mask].view(n, -1)
    positives = similarity[same & ~mask]
    rows = x[np.array([True, False, True, True, False, True])]
    return off_diagonal.logsumexp(-1).mean() - positives.mean() + rows.pow(2).mean()


def _train(lib, compiled, steps=3):
    rng = np.random.default_rng(0)
    weight = lib.nn.Parameter(lib.tensor(rng.standard_normal((3, 3)) * 0.3))
    optimizer = lib.optim.SGD([weight], lr=0.1, momentum=0.9)

    def step(x):
        optimizer.zero_grad()
        loss = off_diagonal_loss(lib, weight, x)
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [float(run(lib.tensor(rng.standard_normal((6, 3))))) for _ in range(steps)]
    return losses, np.array(weight.detach().numpy()), np.array(weight.grad.numpy())


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_a_constant_mask_indexes_in_a_compiled_step_as_torch(compiled, float64_default):
    ours, theirs = _train(kiln, compiled), _train(float64_default, False)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-12, atol=1e-14)


def test_a_mask_computed_from_an_input_is_specialized_and_one_from_a_trained_weight_refused_with_the_line():
    """A mask made from the inputs is specialized and guarded (frontend/value_guards.py: a variant per mask, as
    ``x[:, mask]``); one made from a trained weight has no values while tracing: the error names the line."""
    run = kiln.compile(lambda x: x[x > 0].sum(), fullgraph=True)
    for values in ([1.0, -2.0, 3.0], [-1.0, 2.0, 0.5], [1.0, -2.0, 3.0]):
        assert run(kiln.tensor(np.array(values))).item() == sum(v for v in values if v > 0)
    weight = kiln.nn.Parameter(kiln.tensor(np.array([1.0, 1.0, 1.0])))
    run = kiln.compile(lambda x: x[weight * x > 0].sum(), fullgraph=True)
    with pytest.raises(kiln.TraceError, match=r"(?s)test_known_mask_indexing_traced_vs_torch.py:\d+.*x\[mask\] has a data-dependent shape"):
        run(kiln.tensor(np.array([1.0, -2.0, 3.0])))
