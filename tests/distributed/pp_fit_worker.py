"""MPI worker: ``kiln.fit`` of a 2-stage ``PipelineParallel`` step with checkpoints, evaluation, log and plot.

``python -m mpi4py pp_fit_worker.py MODE OUT`` runs ``fit_checks``' job ``MODE`` (``first``, ``resume`` or
``failures``, described there) on the pipeline; the final state of a run (``full``, ``resumed``) is saved with
``pipe.save`` to ``OUT/{run}_final.npz``. The test imports ``MICRO_BATCHES`` (the job runs only under ``__main__``).
"""

import sys

import kiln.distributed as dist
import kiln.nn.functional as F

from dist_models import make_model, make_optimizer
from fit_checks import run_worker

MICRO_BATCHES = 4


def pipeline(seed: int):
    model = make_model(seed)
    return dist.PipelineParallel(model, F.cross_entropy, make_optimizer("adam", model), stages=2, micro_batches=MICRO_BATCHES)


def save_final(pipe, out: str, run: str, rank: int) -> None:
    """``pipe.save``: the state gathered from both stages, written by rank 0 alone (every rank takes part)."""
    pipe.save(f"{out}/{run}_final.npz")


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2], pipeline, save_final)
