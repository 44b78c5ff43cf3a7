"""A user's optimizer counting its steps in a Python int (``state["step"] += 1``, transformers' Adafactor) makes a
``kiln.compile``d step trace again at every call (the trace guards the entry's values, as torch.compile guards a
dict): past ``recompile_limit`` the error names the entry and the values it saw, and says how to keep the count in a
tensor, which compiles once and trains as the eager loop."""

from __future__ import annotations

import numpy as np
import pytest

import kiln


class CountingSGD(kiln.optim.Optimizer):
    def __init__(self, params, lr=0.1, tensor_count=False):
        super().__init__(params, dict(lr=lr))
        self.tensor_count = tensor_count

    @kiln.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = kiln.zeros(()) if self.tensor_count else 0
                state["step"] += 1
                p.add_(p.grad / state["step"], alpha=-group["lr"])


def train(tensor_count, compiled, steps):
    kiln.manual_seed(0)
    model = kiln.nn.Linear(3, 1).double()
    optimizer = CountingSGD(model.parameters(), tensor_count=tensor_count)
    x = kiln.tensor(np.linspace(-1, 1, 12).reshape(4, 3))

    def step(x):
        optimizer.zero_grad()
        loss = model(x).pow(2).sum()
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [run(x).item() for _ in range(steps)]
    return run, losses, model.weight.detach().numpy()


def test_an_int_count_past_the_recompile_limit_is_named():
    with pytest.raises(kiln.KilnError, match=r"it changes CountingSGD's state\[p\]\['step'\] \(7, now 8\) at every "
                                             r"call; keep such a count in a tensor"):
        train(tensor_count=False, compiled=True, steps=12)


def test_a_tensor_count_compiles_once_and_trains_as_eagerly():
    run, losses, weight = train(tensor_count=True, compiled=True, steps=12)
    _, eager_losses, eager_weight = train(tensor_count=True, compiled=False, steps=12)
    assert len(run.variants) == 1
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-12)
    np.testing.assert_allclose(weight, eager_weight, rtol=1e-12)
