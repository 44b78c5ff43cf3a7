"""``kiln.cpu``: the ``torch.cpu`` names PyTorch scripts use; ``kiln.cpu.amp`` holds torch.cpu.amp's deprecated
spellings of ``kiln.amp`` (``frontend/torch_amp.py``).

```python
with kiln.cpu.amp.autocast():          # FutureWarning, then kiln.amp.autocast("cpu"): bfloat16
    out = model(x)
```
"""

from __future__ import annotations


def is_available() -> bool:
    """Always True, as torch's: kiln always computes on the CPU (the NumPy backend)."""
    return True


def _amp() -> object:
    from kiln.frontend.torch_amp import cpu_amp_module

    return cpu_amp_module()


amp = _amp()  # kiln.cpu.amp.autocast / GradScaler (frontend/torch_amp.py)

__all__ = ["amp", "is_available"]
