"""``x[mask] = values`` with a mask only known when a compiled graph runs and one value (or row) per True element, as
PyTorch 2.13's: the DQN tutorial's ``next_state_values[non_final_mask] = target_net(non_final_next_states).max(1)
.values`` inside a ``kiln.compile``d step. The k-th True position takes row k of the values (gathered at the mask's
``cumsum - 1``); gradients reach ``x`` outside the mask and the values. Before, the trace refused it ("the number of
selected elements is not known while tracing")."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import require_torch


def masked_step(lib, model, optimizer):
    def step(x, mask, rows):
        optimizer.zero_grad()
        y = model[0](x)
        y[mask] = model[1](rows)
        loss = (y * y).sum() + y[:, 0].sum()
        loss.backward()
        optimizer.step()
        return loss

    return step


def nets(lib):
    return lib.nn.ModuleList([lib.nn.Linear(3, 2), lib.nn.Linear(4, 2)]).double()


@pytest.mark.parametrize("counts", [[4, 2, 6, 0], [3, 3, 3]], ids=["changing-count", "same-count"])
def test_traced_mask_takes_one_row_per_selected_element_as_torch(counts, float64_default):
    torch = require_torch()
    kiln.manual_seed(0)
    model, twin = nets(kiln), nets(torch)
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})
    step = kiln.compile(masked_step(kiln, model, kiln.optim.SGD(model.parameters(), lr=0.1)), fullgraph=True)
    twin_step = masked_step(torch, twin, torch.optim.SGD(twin.parameters(), lr=0.1))
    rng = np.random.default_rng(0)
    for count in counts:
        mask = np.zeros(6, bool)
        mask[rng.choice(6, count, replace=False)] = True
        x, rows = rng.standard_normal((6, 3)), rng.standard_normal((count, 4))
        ours = step(kiln.tensor(x), kiln.tensor(mask), kiln.tensor(rows))
        theirs = twin_step(torch.tensor(x), torch.tensor(mask), torch.tensor(rows))
        np.testing.assert_allclose(float(ours), theirs.item(), rtol=1e-12)
        for p, q in zip(model.parameters(), twin.parameters()):
            np.testing.assert_allclose(np.array(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_traced_element_mask_places_values_in_row_major_order_as_torch():
    torch = require_torch()
    rng = np.random.default_rng(1)
    x, mask = rng.standard_normal((3, 4)), rng.random((3, 4)) < 0.5
    values = rng.standard_normal(int(mask.sum()))

    def assign(lib, x, mask, values):
        y = x * 1.0
        y[mask] = values
        return y

    ours = kiln.compile(lambda *a: assign(kiln, *a), fullgraph=True)(kiln.tensor(x), kiln.tensor(mask), kiln.tensor(values))
    theirs = assign(torch, torch.tensor(x), torch.tensor(mask), torch.tensor(values))
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_traced_mask_with_values_of_a_wrong_rank_is_refused():
    def assign(x, mask, values):
        y = x * 1.0
        y[mask] = values
        return y

    with pytest.raises(KilnError, match=r"one row per selected element"):
        kiln.compile(assign, fullgraph=True)(kiln.zeros(4, 2), kiln.tensor([True, False, True, True]), kiln.zeros(3, 2, 2))
