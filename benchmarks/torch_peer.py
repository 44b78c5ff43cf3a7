"""The PyTorch eager (or torch.compile) training step every benchmark times kiln against."""

from __future__ import annotations

from typing import Any, Callable


def torch_training_step(optimizer: Any, forward: Callable[[Any, Any], Any], x: Any, y: Any) -> Callable[[], Any]:
    """One step of the usual loop: zero the gradients, loss, backward, update; returns the loss tensor."""

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = forward(x, y)
        loss.backward()
        optimizer.step()
        return loss

    return step
