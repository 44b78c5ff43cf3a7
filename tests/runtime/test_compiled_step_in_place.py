"""A ``kiln.compile``d training step on NumPy updates parameters, optimizer state and BatchNorm's running statistics
in place (``graph.donations``, as ``compile_train_step``'s), with no copy back; what the step returns is never one of
those arrays, so a later call does not change a result the user kept."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(5, 12), lib.nn.BatchNorm1d(12), lib.nn.ReLU(), lib.nn.Linear(12, 3)).double()


def _batches(count=4, size=8):
    rng = np.random.default_rng(7)
    return [(rng.standard_normal((size, 5)), rng.integers(0, 3, size)) for _ in range(count)]


def _step(lib, model, optimizer):
    def train_step(x, y):
        before = model[0].weight * 1  # a copy of the weight before the update
        optimizer.zero_grad()
        loss = lib.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss, before, model[0].weight, model[3].bias, model[1].running_mean

    return train_step


def _compiled_variant(step):
    variants = [variant for variant in step.variants.values() if variant is not None]
    assert len(variants) == 1
    return variants[0]


def test_parameters_state_and_running_statistics_are_updated_in_place_and_match_torch():
    torch, model, twin = torch_twins(_net, seed=2)
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    step, twin_step = kiln.compile(_step(kiln, model, optimizer)), _step(torch, twin, twin_optimizer)
    arrays = [p._data for p in model.parameters()] + [b._data for b in model.buffers() if b._data.dtype.kind == "f"]
    for x, y in _batches():
        ours, theirs = step(kiln.tensor(x), kiln.tensor(y)), twin_step(torch.tensor(x), torch.tensor(y))
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(np.asarray(a.detach()), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(optimizer.state[id(p)]["momentum_buffer"],
                                   twin_optimizer.state[q]["momentum_buffer"].numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(model[1].running_var), twin[1].running_var.numpy(), rtol=1e-12)
    donations = _compiled_variant(step).donations
    # updated in place: the 6 momentum buffers, num_batches_tracked, running_var and 4 of the 6 parameters; not the
    # ones the step returns: the first weight (read before the update) and the last bias and running_mean (after it)
    assert len(donations) == 12
    assert all(p._data is a for p, a in zip(list(model.parameters()) + [b for b in model.buffers() if b._data.dtype.kind == "f"], arrays))


def test_a_result_kept_from_one_call_is_not_changed_by_the_next():
    torch, model, twin = torch_twins(_net, seed=3)
    # not Adam: the bias before BatchNorm has a zero gradient up to rounding, which Adam would scale up to lr
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.05, nesterov=True, momentum=0.5, weight_decay=0.01)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.05, nesterov=True, momentum=0.5, weight_decay=0.01)
    step, twin_step = kiln.compile(_step(kiln, model, optimizer)), _step(torch, twin, twin_optimizer)
    batches = _batches()
    kept = [np.array(np.asarray(r.detach())) for r in step(kiln.tensor(batches[0][0]), kiln.tensor(batches[0][1]))]
    results = step(kiln.tensor(batches[0][0]), kiln.tensor(batches[0][1]))
    held = [np.asarray(r.detach()) for r in results]
    copies = [np.array(h) for h in held]
    step(kiln.tensor(batches[1][0]), kiln.tensor(batches[1][1]))
    for h, c in zip(held, copies):  # the second call's results, unchanged by the third call
        np.testing.assert_array_equal(h, c)
    twin_results = [[r.detach().numpy().copy() for r in twin_step(torch.tensor(x), torch.tensor(y))]
                    for x, y in (batches[0], batches[0], batches[1])]
    for ours, theirs in ((kept, twin_results[0]), (copies, twin_results[1])):
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
