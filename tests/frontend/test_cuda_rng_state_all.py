"""``torch.cuda.get_rng_state_all`` / ``set_rng_state_all``, which training scripts save and restore next to
``torch.get_rng_state()`` (attention-learn-to-route's ``train_epoch`` checkpoint: ``'cuda_rng_state':
torch.cuda.get_rng_state_all()``): kiln keeps no per-GPU random states (``kiln/cuda.py``), so ``[]``, as torch's CPU
wheel answers."""

from __future__ import annotations

import pytest

import kiln
from oracles import libraries


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_no_per_gpu_random_states_to_save_or_restore(name, tmp_path):
    torch = libraries(name)[0]
    states = torch.cuda.get_rng_state_all()
    assert states == []
    torch.save({"rng_state": torch.get_rng_state(), "cuda_rng_state": states}, tmp_path / "epoch-0.pt")
    loaded = torch.load(tmp_path / "epoch-0.pt")
    torch.set_rng_state(loaded["rng_state"])
    torch.cuda.set_rng_state_all(loaded["cuda_rng_state"])


def test_restoring_a_gpu_state_kiln_never_gave_is_refused_saying_what_to_do():
    with pytest.raises(kiln.TraceError, match="no per-GPU random states.*kiln.set_rng_state"):
        kiln.cuda.set_rng_state_all([kiln.get_rng_state()])
