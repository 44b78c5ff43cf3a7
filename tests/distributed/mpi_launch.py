"""Run a script on N MPI ranks under a hard timeout: the whole process group is killed and the test fails, never hangs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from oracles import require

HERE = Path(__file__).parent


def mpiexec() -> str:
    """``mpiexec`` next to this Python (the virtual environment's bin), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail("mpiexec is not next to sys.executable nor on PATH; install the distributed extra (pip install 'kiln[distributed]')")
    return found


def run_mpi(script: str, *args: str, ranks: int = 2, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python -m mpi4py script args``; on timeout the process group is killed and the test fails."""
    require("mpi4py")
    command = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", str(HERE / script), *args]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{script} on {ranks} ranks did not finish within {timeout} s (killed)\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def assert_ran(result: subprocess.CompletedProcess) -> None:
    """The MPI job exited 0; otherwise the test fails showing both ranks' output."""
    assert result.returncode == 0, f"MPI job failed (exit {result.returncode})\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
