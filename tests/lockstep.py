"""A kiln training step and its PyTorch twin side by side: SGD on the same batches, the losses compared every step."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np


def sgd_in_lockstep(torch: Any, model: Any, twin: Any, batches: Iterable[tuple[np.ndarray, np.ndarray]], loss: str, lr: float = 0.1,
                    rtol: float = 1e-10, **step_options: Any) -> Iterator[float]:
    """Train both with ``loss`` ("mse" or "cross_entropy") on each ``(x, y)``, assert the losses agree, and yield
    kiln's loss (the caller then compares whatever state it cares about: buffers, running statistics, weights)."""
    import kiln

    ours, theirs = LOSSES[loss](kiln.nn.functional), LOSSES[loss](torch.nn.functional)
    step = kiln.compile_train_step(model, ours, kiln.optim.SGD(model.parameters(), lr=lr), **step_options)
    optimizer = torch.optim.SGD(twin.parameters(), lr=lr)
    for x, y in batches:
        value = float(step(x, y))
        optimizer.zero_grad()
        expected = theirs(twin(torch.tensor(x)), torch.tensor(y))
        expected.backward()
        optimizer.step()
        np.testing.assert_allclose(value, expected.item(), rtol=rtol)
        yield value


def mse_sgd_in_lockstep(torch: Any, model: Any, twin: Any, batches: Iterable[tuple[np.ndarray, np.ndarray]], lr: float = 0.1,
                        rtol: float = 1e-10, **step_options: Any) -> Iterator[float]:
    return sgd_in_lockstep(torch, model, twin, batches, "mse", lr, rtol, **step_options)


LOSSES = {
    "mse": lambda F: (lambda out, y: ((out - y) ** 2).mean()),
    "cross_entropy": lambda F: F.cross_entropy,
}
