"""A ``torch.optim`` ``state_dict`` (``torch.save`` of a PyTorch run) read into kiln's layout, so a PyTorch-trained
checkpoint resumes in kiln: ``optimizer.load_state_dict(kiln.load("ckpt.pt")["optimizer"])``.

PyTorch keys parameters by position as ints and counts steps per parameter (``state[i]["step"]``, a 0-d tensor);
kiln keys them as strings and counts the optimizer's steps once (``"step"``), remembering for each parameter how
many of them it missed (``Optimizer.skipped_steps``: a parameter that had no ``.grad``, so Adam's bias correction
follows its own count as PyTorch's).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def is_torch_layout(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is PyTorch's: ``state`` and ``param_groups`` entries and no optimizer-wide ``step``."""
    return "step" not in state and "state" in state and "param_groups" in state


def from_torch_layout(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """``(kiln's layout, each parameter key's own step count)``; the optimizer's count is the largest of them."""
    own_steps = {str(key): _own_step(entry) for key, entry in state["state"].items()}
    entries = {str(key): {name: value for name, value in entry.items() if name != "step"} for key, entry in state["state"].items()}
    groups = [{**group, "params": [str(p) for p in group["params"]]} for group in state["param_groups"]]
    return {"state": entries, "param_groups": groups, "step": max(own_steps.values(), default=0)}, own_steps


def _own_step(entry: Mapping[str, Any]) -> int:
    """A parameter's step count; SGD keeps none, and its momentum buffer says only that it was stepped (count 1: the
    next update uses the buffer, where a first one would start it from the gradient)."""
    return int(np.asarray(entry["step"])) if "step" in entry else int(bool(entry))


__all__ = ["from_torch_layout", "is_torch_layout"]
