"""Index assignment into a parameter under ``no_grad`` (``with torch.no_grad(): emb.weight[padding_idx] = 0``,
magnitude pruning's ``w[w.abs() < t] = 0``, a column set from a tensor) and through ``p.detach()``, eagerly: the
parameter's values change in place, as PyTorch's, and later forwards and backwards see them.

It raised "index assignment on a parameter inside a traced function" outside any trace (``x[i] = v`` took the
traced path, where the other in-place methods write the parameter's array). Inside a ``kiln.compile``d step it is
traced and written back at each call, as the other in-place writes under ``no_grad``. Vs torch 2.13 float64.
"""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries


def _edited(lib, nn, F, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    embedding, linear = nn.Embedding(5, 3), nn.Linear(3, 4)
    with lib.no_grad():
        embedding.weight.copy_(lib.tensor(rng.standard_normal((5, 3))))
        linear.weight.copy_(lib.tensor(rng.standard_normal((4, 3))))
        linear.bias.copy_(lib.tensor(rng.standard_normal(4)))
        embedding.weight[0] = 0.0                                          # a padding row
        linear.weight[:, 1] = lib.tensor([1.0, 2.0, 3.0, 4.0])             # a column from a tensor
        linear.weight[linear.weight.abs() < 0.5] = 0.0                     # magnitude pruning
    linear.bias.detach()[2] = 7.0                                          # through a detached view
    return embedding, linear


def test_index_assignment_into_parameters_under_no_grad(float64_default):
    ours, theirs = (_edited(*libraries(lib)) for lib in ("kiln", "torch"))
    for module, twin in zip(ours, theirs):
        for p, q in zip(module.parameters(), twin.parameters()):
            np.testing.assert_array_equal(np.array(p.detach().numpy()), q.detach().numpy())


def _forward_backward(lib, nn, F):
    embedding, linear = _edited(lib, nn, F)
    tokens = lib.tensor([[0, 3, 1], [4, 0, 2]])
    loss = F.log_softmax(linear(embedding(tokens)), -1).square().mean()
    loss.backward()
    return loss.item(), [np.array(p.grad.numpy()) for p in [*embedding.parameters(), *linear.parameters()]]


def test_later_forward_and_backward_see_the_assigned_values(float64_default):
    (ours, our_grads), (theirs, their_grads) = (_forward_backward(*libraries(lib)) for lib in ("kiln", "torch"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-13)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_index_assignment_under_no_grad_in_a_compiled_step(float64_default):
    """The padding row re-zeroed after each optimizer step, as a user keeps it fixed, traced in the step."""

    def train(lib, compiled):
        nn, F = libraries("kiln" if lib is kiln else "torch")[1:]
        embedding, linear = _edited(lib, nn, F)
        optimizer = lib.optim.SGD([*embedding.parameters(), *linear.parameters()], lr=0.5)

        def step(tokens):
            optimizer.zero_grad()
            linear(embedding(tokens)).square().mean().backward()
            optimizer.step()
            with lib.no_grad():
                embedding.weight[0] = 0.0
            return embedding.weight.sum().detach()

        run = kiln.compile(step, fullgraph=True) if compiled else step
        sums = [float(run(lib.tensor([[1, 2], [3, 4]]))) for _ in range(3)]
        return sums, np.array(embedding.weight.detach().numpy())

    torch = float64_default
    (our_sums, ours), (their_sums, theirs) = train(kiln, True), train(torch, False)
    np.testing.assert_allclose(our_sums, their_sums, rtol=1e-12)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert not ours[0].any()
