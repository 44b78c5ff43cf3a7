"""PyTorch's ``Module.type(dst_type)``: every parameter and buffer of the module and its submodules cast to
``dst_type``, integer buffers too (a BatchNorm's ``num_batches_tracked`` becomes float64 under
``.type(torch.DoubleTensor)``, as torch's ``_apply(lambda t: t.type(dst_type))`` makes it).

```python
tv_mod = TVLoss(params.tv_weight).type(dtype)     # neural-style-pt: dtype = torch.FloatTensor or torch.cuda.FloatTensor
net.type(torch.DoubleTensor)                      # as net.double(), and num_batches_tracked too
net.type("torch.DoubleTensor")                    # a type string; a dtype (torch.float16) as well
```

A cast of a parameter that requires grad to an integer type is torch's RuntimeError, raised before anything is cast.
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.frontend.tensor_type_call import dtype_of_type_argument
from kiln.frontend.trace import located_error


class ModuleTypeError(TraceError, RuntimeError):
    """``Module.type`` to an integer type of a module with a parameter that requires grad (torch's RuntimeError)."""


def cast_every_tensor(module: Any, dst_type: Any) -> None:
    """Cast each parameter and buffer of ``module`` (and its submodules) to ``dst_type``, with its ``.grad``."""
    from kiln.frontend.module import Buffer, _cast_grad  # lazily: the module calls this

    target = dtype_of_type_argument(dst_type)
    tensors = [tensor for sub in module.modules() for tensor in [*sub._parameters.values(), *sub._buffers.values()]
               if tensor is not None and getattr(tensor, "complex_view", None) is None]
    if not target.is_float and any(not isinstance(t, Buffer) and t.requires_grad for t in tensors):
        raise located_error(f"{type(module).__name__}.type({dst_type!r}): data set to a tensor that requires "
                            "gradients must be floating point or complex dtype; freeze the parameters first "
                            "(requires_grad_(False)) or cast to a floating type", kind=ModuleTypeError)
    for tensor in tensors:
        if tensor.data.dtype != target.numpy:
            tensor.data = tensor.data.astype(target.numpy)
            _cast_grad(tensor, target.numpy)


__all__ = ["ModuleTypeError", "cast_every_tensor"]
