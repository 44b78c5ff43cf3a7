"""Kill-and-resume: a run SIGKILLed mid-epoch and resumed gives exactly the losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np

from kiln.runtime.checkpoint_manager import CheckpointManager

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "kill_resume_run.py")


def run_script(checkpoint_dir, mode, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, str(checkpoint_dir), mode, str(out)], capture_output=True, text=True, timeout=120)


def test_killed_run_resumes_with_the_same_losses(tmp_path):
    sys.path.insert(0, HERE)
    try:
        import kill_resume_run
    finally:
        sys.path.remove(HERE)
    reference, model = kill_resume_run.train(str(tmp_path / "uninterrupted"))
    killed = run_script(tmp_path / "run", "kill", tmp_path / "killed.json")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed.json").exists()
    latest = CheckpointManager(str(tmp_path / "run")).checkpoints()[-1]
    assert latest.endswith("checkpoint-00000010.npz")  # the kill came at update 13, mid-epoch
    resumed = run_script(tmp_path / "run", "resume", tmp_path / "resumed.json")
    assert resumed.returncode == 0, resumed.stderr
    with open(tmp_path / "resumed.json") as file:
        result = json.load(file)
    assert [r["loss"] for r in result["steps"]] == reference.losses  # bit-for-bit, every update
    assert [r["step"] for r in result["steps"]] == list(range(1, 25))
    assert result["epochs"] == reference.epochs
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(result["params"][name], dtype=array.dtype), array)
