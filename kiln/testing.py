"""``kiln.testing``: PyTorch's ``torch.testing`` (``frontend/torch_testing.py``).

```python
import kiln.testing
kiln.testing.assert_close(actual, expected)                      # the dtype's default tolerances, torch's message
kiln.testing.assert_close(actual, expected, rtol=0, atol=0)      # exact
x = kiln.testing.make_tensor((3, 4), dtype=kiln.float64, low=0.0, high=1.0)
```
"""

from kiln.frontend.torch_testing import assert_close, make_tensor

__all__ = ["assert_close", "make_tensor"]
