"""``kiln.func``: PyTorch's ``torch.func`` (``runtime/torch_func.py``, ``frontend/functional_call.py``).

```python
from kiln.func import functional_call, grad, vmap
per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
out, jvp_fn = linearize(f, x)                                   # runtime/torch_func_more.py
```
"""

from kiln.runtime.torch_func import (functional_call, grad, grad_and_value, hessian, jacfwd, jacrev, jvp,
                                     stack_module_state, vjp, vmap)
from kiln.runtime.torch_func_more import debug_unwrap, functionalize, linearize, replace_all_batch_norm_modules_

__all__ = ["debug_unwrap", "functional_call", "functionalize", "grad", "grad_and_value", "hessian", "jacfwd", "jacrev",
           "jvp", "linearize", "replace_all_batch_norm_modules_", "stack_module_state", "vjp", "vmap"]
