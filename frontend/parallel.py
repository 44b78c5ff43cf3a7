"""``torch.nn.DataParallel`` and ``torch.nn.parallel.data_parallel`` as a single process runs them: the module itself.

PyTorch scatters a batch over the GPUs of one process; without GPUs its ``DataParallel`` calls the module as it is
(its ``data_parallel`` needs GPUs). kiln's backend places the data (devices are accepted and ignored, as in
``x.to(device)``), so both forms call the module on the whole batch. Code written for several
GPUs, such as dcgan/main.py's ``nn.parallel.data_parallel(self.main, input, range(self.ngpu))``, therefore runs
unchanged, and a ``DataParallel``-wrapped model keeps PyTorch's ``module.``-prefixed ``state_dict`` names, so its
checkpoints load both ways. Training over several processes is ``kiln.distributed.DataParallel`` (MPI).

```python
model = nn.DataParallel(Net())                  # model.module is the Net; state_dict keys 'module.fc.weight', ...
out = nn.parallel.data_parallel(net, x, [0, 1])  # net(x)
```
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.frontend.module import Module


class DataParallel(Module):
    """``torch.nn.DataParallel(module, device_ids=None, output_device=None, dim=0)``: runs ``module`` on the whole batch."""

    def __init__(self, module: Module, device_ids: Sequence[Any] | None = None, output_device: Any = None, dim: int = 0):
        super().__init__()
        self.module = module
        self.device_ids = list(device_ids or [])
        self.output_device = output_device
        self.dim = dim

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.module(*inputs, **kwargs)


def data_parallel(module: Module, inputs: Any, device_ids: Sequence[Any] | None = None, output_device: Any = None, dim: int = 0,
                  module_kwargs: dict[str, Any] | None = None) -> Any:
    """``torch.nn.parallel.data_parallel``: ``module(*inputs, **module_kwargs)`` (``inputs`` one tensor or a tuple)."""
    if not isinstance(inputs, tuple):
        inputs = () if inputs is None else (inputs,)
    return module(*inputs, **(module_kwargs or {}))


__all__ = ["DataParallel", "data_parallel"]
