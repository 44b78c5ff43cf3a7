"""MPI worker: ``kiln.fit`` of a data-parallel step with checkpoints; records which rank wrote checkpoint files.

``python -m mpi4py dp_fit_worker.py OUT``: 2 epochs with a checkpoint every 3 updates, then a resumed fit to 3 epochs.
``... OUT unwritable``: the checkpoint folder is a file, so rank 0 cannot write; every rank must raise, none wait.
"""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F
from kiln.runtime import checkpoint
from kiln.runtime.data import ArrayDataset, DataLoader

from dist_models import BATCH, dataset, make_model, make_optimizer

out, unwritable = sys.argv[1], sys.argv[2:] == ["unwritable"]
comm = dist.init(abort_on_error=not unwritable)  # a rank's error ends the job, but for the errors the test asks for
writes = []
real_save = checkpoint.save
checkpoint.save = lambda path, tree: (writes.append(path), real_save(path, tree))[1]
folder = f"{out}/checkpoints"
if unwritable:
    folder = f"{out}/a_file"
    if comm.rank == 0:
        open(folder, "w").close()
    comm.barrier()
x, y = dataset()


def run(epochs: int, resume: bool):
    model = make_model(seed=0)
    step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, make_optimizer("sgd", model)))
    loader = DataLoader(ArrayDataset(x, y), batch_size=BATCH // comm.size, rank=comm.rank, world_size=comm.size, prefetch=0)
    return kiln.fit(step, loader, epochs=epochs, checkpoint_dir=folder, checkpoint_every=3, resume=resume,
                    log_path=f"{out}/log.jsonl")


if not unwritable:
    run(2, resume=False)
    history = run(3, resume=True)
    np.savez(f"{out}/rank{comm.rank}.npz", writes=len(writes), epochs=len(history.epochs))
else:
    try:
        run(1, resume=False)
    except Exception as error:  # every rank reports what it raised
        with open(f"{out}/error{comm.rank}.txt", "w") as file:
            file.write(f"{type(error).__name__}: {error}")
