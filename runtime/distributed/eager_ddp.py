"""``DistributedDataParallel``: PyTorch's eager data parallelism, on kiln's MPI (or NCCL) communicator.

```python
# mpiexec -n 2 python -m mpi4py train.py
import kiln.distributed as dist
dist.init_process_group("mpi")
model = dist.DistributedDataParallel(Net())         # every rank starts from rank 0's parameters and buffers
for x, y in DataLoader(data, batch_size=64, rank=dist.get_rank(), world_size=dist.get_world_size()):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()          # .grad averaged over the ranks, in flat buckets
    optimizer.step()                                 # so every rank takes the same step
with model.no_sync():                                # gradient accumulation: no communication
    F.cross_entropy(model(x1), y1).backward()
F.cross_entropy(model(x2), y2).backward()            # averages the accumulated .grad
```

After each eager ``backward()`` that accumulates into the wrapped module's
parameters, their gradients are packed into flat buckets of ``bucket_cap_mb``
and averaged with one buffer allreduce per bucket (MPI ``Allreduce`` on NumPy
arrays), then written back: every rank ends with the gradient of the global
batch. A parameter no backward reached counts as a zero gradient, so ranks
always call the same collectives (PyTorch's ``find_unused_parameters``
without its cost). In training mode, ``broadcast_buffers`` sends rank 0's
buffers (BatchNorm's running statistics) before each forward, as PyTorch's.
The compiled path is ``kiln.distributed.DataParallel`` (the ``data-parallel``
pass); this wrapper is for PyTorch-style eager loops.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from kiln.frontend.module import Module, Parameter
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import TraceContext
from kiln.runtime.distributed.communicator import Communicator, DistributedError, broadcast_arrays, current, to_host


class DistributedDataParallel(Module):
    """``torch.nn.parallel.DistributedDataParallel`` for eager training: ``self.module`` is the wrapped model."""

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group: Communicator | None = None, bucket_cap_mb: float = 25.0,
                 find_unused_parameters: bool = False, gradient_as_bucket_view: bool = False, static_graph: bool = False):
        super().__init__()
        self.module = module
        object.__setattr__(self, "comm", process_group or current())
        object.__setattr__(self, "_syncing", True)
        self.broadcast_buffers, self.bucket_bytes = broadcast_buffers, int(bucket_cap_mb * 2**20)
        broadcast_arrays([p.data for p in module.parameters()] + [b.data for b in module.buffers()], root=0, comm=self.comm)
        from kiln.runtime.eager_backward import after_backward  # lazily: the NumPy backend imports this package

        after_backward(self, self._average_gradients, self._average_traced_gradients)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.broadcast_buffers and self.training:
            context = TraceContext.current()
            if context.eager:
                broadcast_arrays([b.data for b in self.module.buffers()], root=0, comm=self.comm)
            else:  # kiln.compile: rank 0's buffers at every call, as ops of the graph
                self._check_traced_communicator()
                for buffer in self.module.buffers():
                    sent = apply("comm.broadcast", Tensor(context.current_value_of(buffer)), root=0)
                    context.update_buffer(buffer, sent.value)
        return self.module(*args, **kwargs)

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate ``.grad`` locally; the first one after averages the accumulated sum."""
        object.__setattr__(self, "_syncing", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_syncing", True)

    def _average_gradients(self, accumulated: list[Parameter]) -> None:
        trained = [p for p in self.module.parameters() if p.requires_grad]
        if not self._syncing or not any(id(p) in {id(q) for q in trained} for p in accumulated):
            return
        for bucket in _buckets(trained, self.bucket_bytes):
            flat = np.concatenate([_gradient(p).ravel() for p in bucket])
            averaged = to_host(self.comm.allreduce(flat, "mean"))
            offset = 0
            for parameter in bucket:
                size = parameter.data.size
                parameter.grad[...] = averaged[offset:offset + size].reshape(parameter.data.shape)
                offset += size


    def _average_traced_gradients(self, capture: Any, accumulated: list[Parameter]) -> None:
        """``_average_gradients`` in a backward traced into a ``kiln.compile``d step: one ``comm.allreduce`` per
        bucket in the step's graph, run at every call (without it each rank stepped on its own gradients)."""
        trained = [p for p in self.module.parameters() if p.requires_grad]
        capture.guards.append(lambda syncing=self._syncing: self._syncing == syncing)  # no_sync() traces its own step
        if not self._syncing or not any(id(p) in {id(q) for q in trained} for p in accumulated):
            return
        self._check_traced_communicator()
        for bucket in _buckets(trained, self.bucket_bytes):
            grads = [_traced_gradient(capture, p) for p in bucket]
            flat = apply("tensor.concat", *[g.reshape(-1) for g in grads], axis=0) if len(grads) > 1 else grads[0].reshape(-1)
            averaged = apply("comm.allreduce", flat, op="mean", world_size=self.comm.size)
            offset = 0
            for parameter, grad in zip(bucket, grads):
                capture.set_grad(parameter, averaged[offset:offset + grad.numel()].reshape(grad.shape).value)
                offset += grad.numel()

    def _check_traced_communicator(self) -> None:
        """A compiled step's collectives run on the current communicator (``init_process_group``'s)."""
        if self.comm is not current():
            raise DistributedError("DistributedDataParallel(process_group=...) in a kiln.compile'd step: the step's "
                                   "collectives run on the communicator kiln.distributed.init_process_group made; wrap "
                                   "the model without process_group, or train it eagerly")


def _traced_gradient(capture: Any, parameter: Parameter) -> Tensor:
    """The parameter's traced ``.grad``, zeros where the backward did not reach it (every rank sends whole buckets)."""
    grad = capture.grad_of(parameter)
    if grad is None:
        return Tensor(capture.context.emit("tensor.constant", value=np.zeros_like(np.asarray(parameter.data))))
    return Tensor(grad)


def _gradient(parameter: Parameter) -> np.ndarray:
    """The parameter's ``.grad``, created as zeros if no backward reached it (so every rank sends the same buffers)."""
    if getattr(parameter.grad, "is_sparse", False):
        raise NotImplementedError("DistributedDataParallel: a sparse .grad (nn.Embedding(sparse=True)) cannot be averaged "
                                  "in kiln's dense buckets (torch allreduces its entries sparsely); give the model's "
                                  "embeddings sparse=False under DistributedDataParallel")
    if parameter.grad is None:
        from kiln.frontend.torch_array import torch_array

        parameter.grad = torch_array(np.zeros_like(np.asarray(parameter.data)))
    return parameter.grad


def _buckets(parameters: list[Parameter], bucket_bytes: int) -> list[list[Parameter]]:
    """Consecutive parameters of one dtype, at most ``bucket_bytes`` a bucket (a larger parameter alone)."""
    buckets: list[list[Parameter]] = []
    size = 0
    for parameter in parameters:
        fits = buckets and buckets[-1][0].data.dtype == parameter.data.dtype and size + parameter.data.nbytes <= bucket_bytes
        if not fits:
            buckets.append([])
            size = 0
        buckets[-1].append(parameter)
        size += parameter.data.nbytes
    return buckets


__all__ = ["DistributedDataParallel"]
