"""``a[mask] = b[mask]`` in a ``kiln.compile(fullgraph=True)`` graph, the mask known only when it runs, as PyTorch
2.13's (and torch.compile's): pytorch_tabnet's ``UnsupervisedLoss`` writes ``batch_stds[batch_stds == 0] =
batch_means[batch_stds == 0]``. The rows ``b[mask]`` are pending until written back under a mask computed alike; then
they are one ``where`` (frontend/pending_masked_rows.py). Before, the trace refused ``b[mask]`` ("x[mask] has a
data-dependent shape")."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries


def tabnet_variance(torch, embedded_x):
    """metrics.py's normaliser: zero means become 1, zero variances take the mean."""
    batch_means = torch.mean(embedded_x, dim=0)
    batch_means[batch_means == 0] = 1
    batch_stds = torch.std(embedded_x, dim=0) ** 2
    batch_stds[batch_stds == 0] = batch_means[batch_stds == 0]
    return batch_stds


def rows_replaced(torch, a, b):
    """A mask over the leading dim (whole rows move), the source written in place after the indexing (the rows keep
    the values they had), the mask given as a variable and computed twice."""
    keep = a.sum(1) > 0
    rows = b[keep]
    b.mul_(10)
    a[a.sum(1) > 0] = rows
    return a + b


def _run(name, function, arrays, compiled):
    torch, _, _ = libraries(name)
    leaves = [torch.tensor(array, requires_grad=True) for array in arrays]

    def loss_of(*leaves):
        out = function(torch, *[leaf * 1 for leaf in leaves])
        return (out * torch.tensor(np.arange(out.numel(), dtype=np.float64).reshape(out.shape))).sum(), out

    run = kiln.compile(loss_of, fullgraph=True) if compiled else loss_of
    loss, out = run(*leaves)
    loss.backward()
    return [np.array(out.detach().numpy())] + [np.array(leaf.grad.numpy()) for leaf in leaves]


@pytest.mark.parametrize("function, arrays", [
    (tabnet_variance, [np.array([[1.0, 0.0, 2.0, 3.0], [3.0, 0.0, 2.0, -3.0], [2.0, 0.0, 2.0, 0.0]])]),
    (rows_replaced, [np.array([[1.0, 2.0], [-3.0, 1.0], [0.5, 0.5]]), np.array([[5.0, 6.0], [7.0, 8.0], [9.0, 1.0]])]),
], ids=["tabnet-variance", "rows"])
def test_rows_written_back_under_the_same_mask_as_torch(float64_default, function, arrays):
    theirs = _run("torch", function, arrays, compiled=False)
    for compiled in (False, True):
        ours = _run("kiln", function, arrays, compiled)
        for mine, expected in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)


def test_rows_written_under_another_mask_or_used_otherwise_are_refused_with_the_indexing_line(float64_default):
    """Only ``a[m] = b[m]`` with the masks computed alike is traced: another mask (torch takes it when the counts
    agree), or arithmetic on the rows under a mask whose values cannot be specialized (made from a trained weight), is
    the data-dependent-shape error naming the line that indexed."""
    weight = kiln.nn.Parameter(kiln.tensor(np.array([1.0, 1.0, 1.0])))

    def other_mask(x, y):
        x[x > 0] = y[y > 0]
        return x

    def arithmetic(x, y):
        return y[weight * y > 0] * 2

    for function in (other_mask, arithmetic):
        run = kiln.compile(function, fullgraph=True)
        with pytest.raises(kiln.TraceError, match=r"(?s)test_pending_masked_rows_traced_vs_torch.py:\d+ in "
                                                  r"(other_mask|arithmetic).*x\[mask\] has a data-dependent shape"):
            run(kiln.tensor(np.array([1.0, -2.0, 3.0])), kiln.tensor(np.array([2.0, 1.0, -1.0])))


def gaussian_nll_of_observed(torch, mu, sigma, labels):
    """DeepAR's ``loss_fn`` (zhykoties/TimeSeries ``model/net.py``): the likelihood of the non-zero labels only."""
    zero_index = (labels != 0)
    distribution = torch.distributions.normal.Normal(mu[zero_index], sigma[zero_index])
    return -torch.mean(distribution.log_prob(labels[zero_index]))


def test_rows_under_a_mask_made_from_the_inputs_are_specialized_as_torch(float64_default):
    """``mu[labels != 0]`` read as rows (not written back) with the mask made from the compiled function's inputs:
    the mask's values are specialized and guarded (frontend/value_guards.py), so the rows have a shape, and each new
    mask traces a variant; values and gradients as torch 2.13's. Before, the trace refused ``mu[zero_index]``."""
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(5), rng.random(5) + 0.5
    run = kiln.compile(lambda *args: gaussian_nll_of_observed(kiln, *args), fullgraph=True)
    for labels in ([1.0, 0.0, 2.0, 0.0, -1.0], [0.0, 3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 2.0, 0.0, -1.0]):
        results = []
        for torch, nll in ((kiln, run), (libraries("torch")[0], None)):
            leaves = [torch.tensor(values, requires_grad=True) for values in (mu, sigma)]
            loss = (nll or (lambda *args: gaussian_nll_of_observed(torch, *args)))(*leaves, torch.tensor(labels))
            loss.backward()
            results.append([loss.item()] + [np.array(leaf.grad.numpy()) for leaf in leaves])
        for mine, expected in zip(*results, strict=True):
            np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)
