"""``kiln.nn.utils.stateless``: PyTorch's deprecated ``torch.nn.utils.stateless.functional_call``, kept for older
research code (MAML-style inner loops written before ``torch.func``); it warns as torch's does and runs
``kiln.func.functional_call``, its drop-in replacement (``frontend/functional_call.py``).

```python
from kiln.nn.utils import stateless
out = stateless.functional_call(model, {"weight": w}, (x,))   # FutureWarning, then model(x) with w as its weight
```
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from kiln.frontend.functional_call import functional_call as _functional_call
from kiln.frontend.module import Module

DEPRECATION = ("`torch.nn.utils.stateless.functional_call` is deprecated as of PyTorch 2.0 and will be removed in a "
               "future version of PyTorch. Please use `torch.func.functional_call` instead which is a drop-in replacement.")
"""torch's warning, word for word: code that filters it by message keeps working."""


def functional_call(module: Module, parameters_and_buffers: Mapping[str, Any], args: Any = None,
                    kwargs: Mapping[str, Any] | None = None, *, tie_weights: bool = True, strict: bool = False) -> Any:
    """``module(*args, **kwargs)`` with ``parameters_and_buffers`` standing for the parameters and buffers they name
    (a ``FutureWarning`` first, as torch's)."""
    warnings.warn(DEPRECATION, FutureWarning, stacklevel=2)
    return _functional_call(module, parameters_and_buffers, args, kwargs, tie_weights=tie_weights, strict=strict)


__all__ = ["functional_call"]
