"""``kiln.amp``: PyTorch's ``torch.amp`` (``frontend/torch_amp.py``): autocast regions and the gradient scaler.

```python
scaler = kiln.amp.GradScaler("cpu", enabled=use_amp)
with kiln.amp.autocast("cpu", dtype=kiln.float16, enabled=use_amp):
    loss = loss_fn(model(x), y)        # Linear/Conv in float16, the loss in float32 (torch's CPU lists)
scaler.scale(loss).backward()          # float32 gradients for float32 parameters, scaled
scaler.step(optimizer)                 # unscaled first; skipped if any gradient is inf/NaN
scaler.update()                        # the scale backs off after a skip, grows after growth_interval clean steps
```

``autocast`` computes the ops on torch's CPU autocast lists in the region's half dtype or in float32
(``frontend/autocast_policy.py``), eagerly and in traced/compiled code; disabled, or ``"cuda"`` without a GPU (after
PyTorch's warning), it is a no-op. ``GradScaler`` is PyTorch's step by step (a pass-through when disabled; for
"cuda" without a GPU it warns and disables itself, as PyTorch's does). ``custom_fwd``/``custom_bwd`` decorate an
``autograd.Function``'s forward and backward, as torch.amp's.
"""

from kiln.frontend.torch_amp import (GradScaler, autocast, custom_bwd, custom_fwd, get_autocast_dtype, is_autocast_available,
                                     is_autocast_cache_enabled, is_autocast_enabled)

__all__ = ["GradScaler", "autocast", "custom_bwd", "custom_fwd", "get_autocast_dtype", "is_autocast_available",
           "is_autocast_cache_enabled", "is_autocast_enabled"]
