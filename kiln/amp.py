"""``kiln.amp``: PyTorch's ``torch.amp`` (``frontend/torch_amp.py``), honest about kiln having no half precision.

```python
scaler = kiln.amp.GradScaler("cuda", enabled=use_amp)
with kiln.amp.autocast("cuda", dtype=kiln.float16, enabled=use_amp):
    loss = loss_fn(model(x), y)
scaler.scale(loss).backward()
scaler.step(optimizer)
scaler.update()
```

``autocast`` is a no-op when disabled (or, as PyTorch's, for "cuda" without a GPU, after its warning); asked to
compute in float16/bfloat16 it raises an error saying to run in float32. ``GradScaler`` is PyTorch's (a pass-through
when disabled; for "cuda" without a GPU it warns and disables itself, as PyTorch's does).
"""

from kiln.frontend.torch_amp import GradScaler, autocast, is_autocast_available, is_autocast_enabled

__all__ = ["GradScaler", "autocast", "is_autocast_available", "is_autocast_enabled"]
