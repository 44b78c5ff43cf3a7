"""``kiln.func``: PyTorch's ``torch.func`` (``runtime/torch_func.py``, ``frontend/functional_call.py``).

```python
from kiln.func import functional_call, grad, vmap
per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
```
"""

from kiln.runtime.torch_func import (functional_call, grad, grad_and_value, hessian, jacfwd, jacrev, jvp,
                                     stack_module_state, vjp, vmap)

__all__ = ["functional_call", "grad", "grad_and_value", "hessian", "jacfwd", "jacrev", "jvp", "stack_module_state",
           "vjp", "vmap"]
