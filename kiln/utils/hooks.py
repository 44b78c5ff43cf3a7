"""``torch.utils.hooks``: ``RemovableHandle`` for code that keeps hooks in registries of its own
(``handle = RemovableHandle(self._hooks); self._hooks[handle.id] = hook``), and ``unserializable_hook``."""

from __future__ import annotations

from typing import Any, Callable

from kiln.frontend.module_hooks import RemovableHandle


def unserializable_hook(f: Callable[..., Any]) -> Callable[..., Any]:
    """Marks ``f`` as a hook that is not saved with the tensor (torch's marker; kiln does not save hooks at all)."""
    f.__torch_unserializable__ = True  # type: ignore[attr-defined]
    return f


__all__ = ["RemovableHandle", "unserializable_hook"]
