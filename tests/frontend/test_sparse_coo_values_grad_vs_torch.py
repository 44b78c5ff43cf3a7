"""``torch.sparse_coo_tensor(indices, values, size)`` with values that carry a gradient (a graph attention layer's
per-edge weights as a sparse matrix), then ``torch.sparse.mm`` / ``@`` / ``to_dense``: values and the gradients of the
values and of what they are built from agree with torch 2.13 in float64, eagerly and in a compiled step. (kiln built
the tensor in NumPy, so the values silently got no gradient.)"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

TIGHT = dict(rtol=1e-12, atol=1e-14)
EDGES = np.array([[0, 1, 2, 2, 3, 0, 2], [1, 0, 3, 1, 2, 1, 3]])  # (0, 1) and (2, 3) twice: summed, as coalesce


def attention_product(torch, scores, x, product, dims=1):
    """``sparse(edges, exp(scores)) @ x`` by ``product``; ``dims`` > 1 gives hybrid values of shape (nnz, dims)."""
    alpha = scores.exp() if dims == 1 else scores.exp().unsqueeze(-1).repeat(1, dims) * torch.arange(1.0, dims + 1)
    size = (4, 4) if dims == 1 else (4, 4, dims)
    adjacency = torch.sparse_coo_tensor(torch.tensor(EDGES), alpha, size)
    if product == "sparse.mm":
        return torch.sparse.mm(adjacency, x)
    if product == "matmul":
        return adjacency @ x
    return adjacency.to_dense() * 2.0


def gradients(name, product, dims=1):
    torch, _, _ = libraries(name)
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.standard_normal(EDGES.shape[1]), requires_grad=True)
    x = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    out = attention_product(torch, scores, x, product, dims)
    (out * torch.tensor(rng.standard_normal(tuple(out.shape)))).sum().backward()
    return out.detach().numpy(), scores.grad.numpy(), None if x.grad is None else x.grad.numpy()


@pytest.mark.parametrize("product, dims", [("sparse.mm", 1), ("matmul", 1), ("to_dense", 1), ("to_dense", 2)])
def test_values_get_their_gradient_as_torch(product, dims, float64_default):
    ours, theirs = gradients("kiln", product, dims), gradients("torch", product, dims)
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if b is not None:
            np.testing.assert_allclose(a, b, **TIGHT)
    assert np.abs(theirs[1]).min() > 0


def test_sparse_attention_in_a_compiled_step_as_torch(float64_default):
    """Edges and scores traced: the dense form is built in the graph; an Adam step on the scores matches torch's."""
    records = []
    for name in ("kiln", "torch"):
        torch, nn, _ = libraries(name)
        rng = np.random.default_rng(1)
        scores = nn.Parameter(torch.tensor(rng.standard_normal(EDGES.shape[1])))
        optimizer = torch.optim.Adam([scores], lr=0.1)

        def step(edges, x):
            optimizer.zero_grad()
            adjacency = torch.sparse_coo_tensor(edges, scores.exp(), (4, 4))
            loss = torch.sparse.mm(adjacency, x).square().mean()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if torch is kiln else step
        x = torch.tensor(np.random.default_rng(2).standard_normal((4, 3)))
        losses = [run(torch.tensor(EDGES), x).item() for _ in range(3)]
        records.append((losses, scores.detach().numpy().copy()))
    np.testing.assert_allclose(records[0][0], records[1][0], **TIGHT)
    np.testing.assert_allclose(records[0][1], records[1][1], **TIGHT)


def test_traced_indices_without_size_are_refused_clearly(float64_default):
    scores = kiln.nn.Parameter(kiln.ones(EDGES.shape[1]))
    with pytest.raises(kiln.TraceError, match=r"traced indices need the size: pass it"):
        kiln.compile(lambda edges: kiln.sparse_coo_tensor(edges, scores * 2).sum(), fullgraph=True)(kiln.tensor(EDGES))
