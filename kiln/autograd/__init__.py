"""``kiln.autograd``: PyTorch's ``torch.autograd`` (``frontend/autograd.py``).

```python
import kiln
(dx,) = kiln.autograd.grad(loss, x)                            # eager or traced
(g,) = kiln.autograd.grad(out.sum(), x, create_graph=True)     # differentiable again
kiln.autograd.backward([loss1, loss2])                         # .grad of the parameters
kiln.autograd.functional.jacobian(f, x)                        # torch.autograd.functional
with kiln.autograd.graph.saved_tensors_hooks(pack, unpack): ...   # torch.autograd.graph (kiln/autograd/graph.py)
with kiln.autograd.forward_ad.dual_level(): ...                # dual tensors (runtime/forward_ad.py)
class RoundSTE(kiln.autograd.Function): ...                    # your own backward (frontend/custom_function.py)
with kiln.autograd.detect_anomaly(): loss.backward()          # names the op whose gradient is NaN
assert kiln.autograd.gradcheck(MyExp.apply, (x64,))           # a backward vs central differences (gradcheck.py)
state = kiln.autograd.Variable(memory.data.new(B, 4).zero_())  # the pre-0.4 wrapper: data.detach() (legacy_variable.py)
```
"""

from kiln.autograd import forward_ad, function, functional, grad_mode, graph
from kiln.frontend.autograd import backward, grad
from kiln.frontend.anomaly_mode import detect_anomaly, is_anomaly_check_nan_enabled, is_anomaly_enabled, set_detect_anomaly
from kiln.frontend.custom_function import Function, FunctionCtx
from kiln.frontend.legacy_variable import Variable
from kiln.frontend.grad_mode import enable_grad, inference_mode, no_grad, set_grad_enabled
from kiln.autograd.gradcheck import GradcheckError, gradcheck, gradgradcheck  # the name is now the function, as torch's

__all__ = ["Function", "FunctionCtx", "GradcheckError", "backward", "detect_anomaly", "enable_grad", "forward_ad",
           "function", "functional", "grad", "grad_mode", "graph", "gradcheck", "gradgradcheck", "inference_mode",
           "is_anomaly_check_nan_enabled", "is_anomaly_enabled", "no_grad", "set_detect_anomaly", "set_grad_enabled",
           "Variable"]
