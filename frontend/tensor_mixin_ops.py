"""The few calls the ``Tensor`` method mixins of ``tensor_extras.py`` (and the files it is split into) and
``tensor_more.py`` build ops with: ``apply``, a constant, ``where`` and an is-a-``Tensor`` test, each reaching
``frontend/tensor.py`` lazily (it imports the mixins, so they cannot import it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


def _is_tensor(value: Any) -> bool:
    from kiln.frontend.tensor import Tensor

    return isinstance(value, Tensor)


def _constant(value: Any, dtype: DType | None = None) -> Any:
    array = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype.numpy)
    return _apply("tensor.constant", value=array)


def _where(condition: Any, x: Any, y: Any) -> Any:
    return _apply("tensor.where", condition, x, y)
