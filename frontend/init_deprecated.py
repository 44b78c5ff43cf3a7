"""``nn.init``'s deprecated names without the trailing underscore (``nn.init.xavier_uniform(w)``), as torch keeps
them: the in-place initialiser, after torch's ``FutureWarning`` naming the new name. Older code still calls them
(arcface-pytorch's ``SphereProduct``)."""

from __future__ import annotations

import warnings
from typing import Any, Callable


def deprecated_init(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (``xavier_uniform_``) under its old name (``xavier_uniform``), warning as torch's ``_make_deprecate``."""
    new_name = method.__name__
    old_name = new_name[:-1]

    def deprecated(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"`nn.init.{old_name}` is now deprecated in favor of `nn.init.{new_name}`.", FutureWarning,
                      stacklevel=2)
        return method(*args, **kwargs)

    deprecated.__name__ = deprecated.__qualname__ = old_name
    deprecated.__doc__ = f"``{old_name}(...)``: deprecated in favor of ``kiln.nn.init.{new_name}``, which it calls."
    return deprecated
