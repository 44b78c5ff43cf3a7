"""BatchNorm in training over a batch sharded across data-parallel ranks (PyTorch's ``SyncBatchNorm``).

Under ``kiln.distributed.DataParallel`` each rank traces the step on its own
shard, and ``F.batch_norm`` in training mode comes here: the statistics that
normalize, and that update ``running_mean``/``running_var``, are those of the
global batch, computed in two passes as one process computes them:

```
%totals = "comm.allreduce"(%sums_and_count) {op = "sum"}     // [sum_n x per channel..., n]: one allreduce
mean = totals[:C] / count                                     count = totals[C], the global batch's elements per channel
%squares = "comm.allreduce"(%sum_of_squares) {op = "sum"}    // sum over every rank of (x - mean)^2
var = squares / count          (normalizes: biased)           squares / (count - 1)  (running_var: unbiased, as PyTorch)
```

Each cross-rank sum is ``comm.allreduce(comm.replicate(s), op="sum")``: the
forward is the sum over ranks, the VJP the sum of the ranks' cotangents
(``comm.replicate``'s rule), so each rank's gradient is that of the sum of
all ranks' losses through the shared statistics; the data-parallel mean of
those gradients is the full batch's gradient. Two ranks with half batches
therefore take the step one process takes with the whole batch, running
statistics included. Cost per BatchNorm layer and step: two allreduces of
``C + 1`` and ``C`` elements forward, two back.
"""

from __future__ import annotations

from kiln.frontend.tensor import Tensor, apply


def global_sum(x: Tensor, world_size: int) -> Tensor:
    """``sum_r x_r`` on every rank; its VJP sums the cotangents over ranks (each rank's loss is its own)."""
    return apply("comm.allreduce", apply("comm.replicate", x, world_size=world_size), op="sum", world_size=world_size)


def sync_batch_norm(
    input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor, bias: Tensor, momentum: float, eps: float,
    world_size: int,
) -> Tensor:
    """Training-mode batch norm with the statistics of every rank's shard; records the running statistics' updates."""
    axes = (0,) + tuple(range(2, input.ndim))
    channel = (-1,) + (1,) * (input.ndim - 2)  # (C,) -> (C, 1, ...), broadcasting along axis 1
    layer = _layer_name(running_mean)
    mean, count = _global_mean(input, axes, world_size, layer)
    centered = input - mean.reshape(channel)
    squares = global_sum((centered * centered).sum(axes), world_size)
    squares.value.name_hint = f"{layer}.batch_squares"
    inverse_std = apply("tensor.rsqrt", squares / count + eps)
    output = centered * (inverse_std * weight).reshape(channel) + bias.reshape(channel)
    if running_mean is not None and running_var is not None:
        record_running_statistics(running_mean, running_var, mean, squares / (count - 1.0), momentum)
    return output


def _global_mean(input: Tensor, axes: tuple[int, ...], world_size: int, layer: str) -> tuple[Tensor, Tensor]:
    """Per-channel mean over every rank's shard, and the global element count per channel (one allreduce for both)."""
    channels = input.shape[1]
    local_count = apply("tensor.numel", input, axes=axes, dtype=input.dtype)
    totals = global_sum(apply("tensor.concat", input.sum(axes), local_count.reshape(1), axis=0), world_size)
    totals.value.name_hint = f"{layer}.batch_totals"
    count = totals[channels]
    return totals[:channels] / count, count


def _layer_name(running_mean: Tensor | None) -> str:
    """``bn1`` from the buffer input ``bn1.running_mean``, to name the statistics in the IR."""
    hint = running_mean.value.name_hint if running_mean is not None else None
    return hint.rsplit(".", 1)[0] if hint and "." in hint else "batch_norm"


def record_running_statistics(running_mean: Tensor, running_var: Tensor, mean: Tensor, unbiased_var: Tensor, momentum: float) -> None:
    """``running = (1 - momentum) running + momentum batch`` (PyTorch's update), recorded for the training step to write back."""
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.tensor_inplace import rebind
    from kiln.frontend.trace import TraceContext

    context = TraceContext.current()
    for running, batch in ((running_mean, mean), (running_var, unbiased_var)):
        update = (1 - momentum) * running + momentum * batch
        if isinstance(running, ArrayLeaf):  # a module's buffer: written now eagerly, by the training step when traced
            context.update_buffer(running, update.value)
        else:  # a plain tensor given to F.batch_norm: updated in place, outside autograd, as PyTorch's
            rebind(running, update.detach(), "batch_norm")
