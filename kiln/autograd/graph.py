"""``kiln.autograd.graph``: PyTorch's ``torch.autograd.graph``, on kiln's eager autograd.

```python
with kiln.autograd.graph.saved_tensors_hooks(pack, unpack): loss = model(x).sum()   # runtime/saved_tensor_hooks.py
isinstance(loss.grad_fn, kiln.autograd.graph.Node)                                  # frontend/autograd_graph.py
kiln.autograd.graph.register_multi_grad_hook((a, b), lambda grads: ...)
```
"""

from kiln.frontend.autograd_graph import (AccumulateGrad, GradientEdge, Node, get_gradient_edge, increment_version,
                                          register_multi_grad_hook)
from kiln.runtime.saved_tensor_hooks import disable_saved_tensors_hooks, save_on_cpu, saved_tensors_hooks

__all__ = ["AccumulateGrad", "GradientEdge", "Node", "disable_saved_tensors_hooks", "get_gradient_edge",
           "increment_version", "register_multi_grad_hook", "save_on_cpu", "saved_tensors_hooks"]
