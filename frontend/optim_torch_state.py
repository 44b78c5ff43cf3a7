"""``torch.optim``'s ``state_dict`` layout, both ways: ``Optimizer.state_dict()`` gives it (so a kiln run resumes in
PyTorch once its arrays are tensors), and a ``torch.save`` of a PyTorch run's loads into kiln's own layout
(``Optimizer.kiln_state_dict()``, what a ``TrainStep`` checkpoint keeps):
``optimizer.load_state_dict(kiln.load("ckpt.pt")["optimizer"])``.

PyTorch keys parameters by position as ints and counts steps per parameter (``state[i]["step"]``, a 0-d tensor);
kiln keys them as strings and counts the optimizer's steps once (``"step"``), remembering for each parameter how
many of them it missed (``Optimizer.skipped_steps``: a parameter that had no ``.grad``, so Adam's bias correction
follows its own count as PyTorch's).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.torch_dtypes import get_default_dtype


def torch_scalar_dtype() -> np.dtype:
    """``torch.optim``'s ``_get_scalar_dtype()``: the dtype in which it creates a per-parameter scalar state (``step``,
    NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``), whatever the parameter's: float64 under a float64 default
    dtype, else float32."""
    return np.dtype(np.float64 if get_default_dtype() is DType.f64 else np.float32)


def is_torch_layout(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is PyTorch's: ``state`` and ``param_groups`` entries and no optimizer-wide ``step``."""
    return "step" not in state and "state" in state and "param_groups" in state


def from_torch_layout(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """``(kiln's layout, each parameter key's own step count)``; the optimizer's count is the largest of them."""
    own_steps = {str(key): _own_step(entry) for key, entry in state["state"].items()}
    entries = {str(key): {name: value for name, value in entry.items() if name != "step"} for key, entry in state["state"].items()}
    groups = [{**group, "params": [str(p) for p in group["params"]]} for group in state["param_groups"]]
    return {"state": entries, "param_groups": groups, "step": max(own_steps.values(), default=0)}, own_steps


def to_torch_layout(state: Mapping[str, Any], scalar_states: frozenset[str] = frozenset(), counts_steps: bool = True) -> dict[str, Any]:
    """kiln's layout as PyTorch's, arrays still NumPy: parameters keyed by position (ints, in ``param_groups`` order),
    each state entry with its own ``step`` (a 0-d array, ``step - skipped_steps``, in ``torch_scalar_dtype``) where ``counts_steps`` (all
    but SGD and Muon), the ``scalar_states`` (kiln keeps them shaped like the parameter) 0-d. ``torch.tensor`` each
    array (a copy) and it loads into ``torch.optim``."""
    keys = [key for group in state["param_groups"] for key in group["params"]]
    position = {key: index for index, key in enumerate(keys)}
    skipped = state.get("skipped_steps", {})
    entries = {}
    for key, entry in state["state"].items():
        if not entry and not counts_steps:
            continue  # nothing kept (SGD without momentum): torch's state has no entry
        arrays = {name: _as_torch_keeps(np.asarray(value), name in scalar_states) for name, value in entry.items()}
        own_step = {"step": np.asarray(int(state["step"]) - int(skipped.get(key, 0)), torch_scalar_dtype())} if counts_steps else {}
        entries[position[key]] = {**own_step, **arrays}
    groups = [{**group, "params": [position[key] for key in group["params"]]} for group in state["param_groups"]]
    return {"state": entries, "param_groups": groups}


class LiveSteps(dict):
    """torch's ``state[p]["step"]`` tensors, which its optimizers update in place: a ``state_dict()`` kept without a
    copy (a "best so far") follows the steps after it, and loading it back changes nothing. kiln counts steps per
    optimizer (``Optimizer.step_count`` less ``skipped_steps``); this holds one 0-d array per parameter key that
    ``state_dict()`` and ``state[p]["step"]`` hand out, rewritten whenever the counts change (``refresh``)."""

    def of(self, key: int, count: int) -> np.ndarray:
        """The parameter's live step array, holding ``count`` (made on first use, in ``torch_scalar_dtype``)."""
        array = self.get(key)
        if array is None:
            array = self[key] = np.zeros((), torch_scalar_dtype())
        array[...] = count
        return array

    def refresh(self, count_of: Callable[[int], int | None]) -> None:
        """Each array handed out so far given its parameter's count now."""
        for key, array in self.items():
            count = count_of(key)
            if count is not None:
                array[...] = count


def _as_torch_keeps(array: np.ndarray, scalar: bool) -> np.ndarray:
    """A state array as PyTorch keeps it: a scalar state (every element the same here) 0-d, anything else as is."""
    return np.array(array.reshape(-1)[0]) if scalar else array


def _own_step(entry: Mapping[str, Any]) -> int:
    """A parameter's step count; SGD keeps none, and its momentum buffer says only that it was stepped (count 1: the
    next update uses the buffer, where a first one would start it from the gradient)."""
    return int(np.asarray(entry["step"])) if "step" in entry else int(bool(entry))


__all__ = ["LiveSteps", "from_torch_layout", "is_torch_layout", "to_torch_layout", "torch_scalar_dtype"]
