"""A kiln training step and its PyTorch twin side by side: mean-squared error and SGD on the same batches."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np


def mse_sgd_in_lockstep(torch: Any, model: Any, twin: Any, batches: Iterable[tuple[np.ndarray, np.ndarray]], lr: float = 0.1,
                        rtol: float = 1e-10, **step_options: Any) -> Iterator[float]:
    """Train both on each ``(x, y)``, assert the losses agree, and yield kiln's loss (the caller then compares
    whatever state it cares about: buffers, running statistics, weights)."""
    import kiln

    step = kiln.compile_train_step(model, lambda out, y: ((out - y) ** 2).mean(), kiln.optim.SGD(model.parameters(), lr=lr), **step_options)
    optimizer = torch.optim.SGD(twin.parameters(), lr=lr)
    for x, y in batches:
        loss = float(step(x, y))
        optimizer.zero_grad()
        expected = ((twin(torch.tensor(x)) - torch.tensor(y)) ** 2).mean()
        expected.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, expected.item(), rtol=rtol)
        yield loss
