"""Training the foundation MLP in kiln and in PyTorch side by side, step by step.

``train_side_by_side`` runs the same batches through a compiled kiln step and
through the PyTorch loop that means the same thing (micro-batches, loss
scaling, clipping), from identical weights, and yields both sides' losses and
parameters after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

import kiln
import kiln.nn.functional as F
from e2e.models import MLP, copy_into_torch, torch_mlp

BATCH = 32
TORCH_NAMES = {"GD": "SGD"}
"""kiln optimizers whose PyTorch twin has another name (full-batch GD is SGD on the whole data set)."""
FEATURES, CLASSES = 64, 10


def digit_like_batches(count: int, batch_size: int = BATCH, dtype: str = "float32", seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random batches shaped like scikit-learn's digits: 64 features in [0, 1), 10 classes."""
    rng = np.random.default_rng(seed)
    return [(rng.random((batch_size, FEATURES)).astype(dtype), rng.integers(0, CLASSES, batch_size)) for _ in range(count)]


@dataclass
class Side:
    loss: float
    params: dict[str, np.ndarray]


@dataclass
class Run:
    """One configuration: the optimizer (by its torch.optim name), its arguments and the step's options."""

    optimizer: str
    arguments: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    groups: str | None = None
    """``"no_decay_on_biases"``: weights and biases in two groups, the biases without weight decay and at half the lr."""

    @property
    def id(self) -> str:
        described = {**self.arguments, **self.options}
        return self.optimizer + "(" + ",".join(f"{k}={v}" for k, v in described.items()) + ")" + (f"[{self.groups}]" if self.groups else "")


def parameter_groups(named: list[tuple[str, Any]], how: str | None, lr: float) -> Any:
    if how is None:
        return [p for _, p in named]
    weights = [p for name, p in named if name.endswith("weight")]
    biases = [p for name, p in named if name.endswith("bias")]
    return [{"params": weights}, {"params": biases, "weight_decay": 0.0, "lr": lr / 2}]


def side_by_side(torch: Any, run: Run, dtype: str = "float32") -> tuple[Any, Any, Any, Any, Any]:
    """``(model, reference, optimizer, torch_optimizer, step)``: the MLP in kiln and in PyTorch from the same weights in
    ``dtype``, each with ``run``'s optimizer, and kiln's compiled step."""
    kiln.manual_seed(0)
    model = MLP()
    if dtype != "float32":
        for parameter in model.parameters():
            parameter.data = parameter.data.astype(dtype)
    reference = torch_mlp(torch).to(getattr(torch, dtype))
    copy_into_torch(torch, model, reference)
    lr = run.arguments.get("lr", 1e-3)
    optimizer = getattr(kiln.optim, run.optimizer)(parameter_groups(list(model.named_parameters()), run.groups, lr), **run.arguments)
    torch_optimizer = getattr(torch.optim, TORCH_NAMES.get(run.optimizer, run.optimizer))(parameter_groups(list(reference.named_parameters()), run.groups, lr), foreach=False, **run.arguments)
    return model, reference, optimizer, torch_optimizer, kiln.compile_train_step(model, F.cross_entropy, optimizer, **run.options)


def train_side_by_side(torch: Any, run: Run, batches: list[tuple[np.ndarray, np.ndarray]], dtype: str = "float32") -> Iterator[tuple[Side, Side]]:
    model, reference, optimizer, torch_optimizer, step = side_by_side(torch, run, dtype)
    for x, y in batches:
        loss = step(x, y)
        torch_loss = torch_step(torch, reference, torch_optimizer, x, y, run.options)
        yield Side(loss, model.state_dict()), Side(torch_loss, {k: v.numpy() for k, v in reference.state_dict().items()})
    assert step.compile_count == 1


def torch_step(torch: Any, model: Any, optimizer: Any, x: np.ndarray, y: np.ndarray, options: dict[str, Any]) -> float:
    """The PyTorch loop equivalent to a kiln step with these options; returns the (unscaled, mean) loss."""
    micro_batches = options.get("accumulate", 1)
    scale = options.get("loss_scale")
    optimizer.zero_grad()
    total = 0.0
    for xm, ym in zip(np.split(x, micro_batches), np.split(y, micro_batches)):
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(xm)), torch.tensor(ym)) / micro_batches
        (loss * scale if scale else loss).backward()
        total += loss.item()
    if scale:
        for parameter in model.parameters():
            parameter.grad.mul_(1 / scale)
    if "clip_grad_value" in options:
        torch.nn.utils.clip_grad_value_(model.parameters(), options["clip_grad_value"], foreach=False)
    if "clip_grad_norm" in options:
        torch.nn.utils.clip_grad_norm_(model.parameters(), options["clip_grad_norm"], foreach=False)
    optimizer.step()
    return total


ADAPTIVE = {"Adam", "AdamW", "RMSprop", "Adagrad"}
"""Optimizers that divide by a running gradient scale: float noise in a near-zero gradient can move a weight by up to lr."""


def parameter_tolerance(run: Run) -> dict[str, float]:
    """rtol 1e-5; the absolute tolerance is lr for adaptive optimizers, 1e-6 for the SGD family."""
    return {"rtol": 1e-5, "atol": run.arguments["lr"] if run.optimizer in ADAPTIVE else 1e-6}


def assert_same_step(ours: Side, theirs: Side, run: Run, index: int) -> None:
    np.testing.assert_allclose(ours.loss, theirs.loss, rtol=1e-5, err_msg=f"loss at step {index}")
    for name, value in theirs.params.items():
        np.testing.assert_allclose(ours.params[name], value, **parameter_tolerance(run), err_msg=f"{name} after step {index}")


def max_deviation(ours: Side, theirs: Side) -> float:
    """The largest absolute parameter difference between the two sides."""
    return max(float(np.max(np.abs(ours.params[name] - theirs.params[name]))) for name in theirs.params)
