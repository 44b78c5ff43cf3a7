"""``kiln.autograd``: PyTorch's ``torch.autograd`` (``frontend/autograd.py``).

```python
import kiln
(dx,) = kiln.autograd.grad(loss, x)                            # eager or traced
(g,) = kiln.autograd.grad(out.sum(), x, create_graph=True)     # differentiable again
kiln.autograd.backward([loss1, loss2])                         # .grad of the parameters
kiln.autograd.functional.jacobian(f, x)                        # torch.autograd.functional
with kiln.autograd.forward_ad.dual_level(): ...                # dual tensors (runtime/forward_ad.py)
class RoundSTE(kiln.autograd.Function): ...                    # your own backward (frontend/custom_function.py)
with kiln.autograd.detect_anomaly(): loss.backward()          # names the op whose gradient is NaN
state = kiln.autograd.Variable(memory.data.new(B, 4).zero_())  # the pre-0.4 wrapper: data.detach() (legacy_variable.py)
```
"""

from kiln.autograd import forward_ad, function, functional
from kiln.frontend.autograd import backward, grad
from kiln.frontend.anomaly_mode import detect_anomaly, is_anomaly_check_nan_enabled, is_anomaly_enabled, set_detect_anomaly
from kiln.frontend.custom_function import Function, FunctionCtx
from kiln.frontend.legacy_variable import Variable

__all__ = ["Function", "FunctionCtx", "backward", "detect_anomaly", "forward_ad", "function", "functional", "grad",
           "is_anomaly_check_nan_enabled", "is_anomaly_enabled", "set_detect_anomaly", "Variable"]
