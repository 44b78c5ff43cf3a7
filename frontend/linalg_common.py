"""The helpers the ``kiln.linalg`` factorization files share: an op by name, an identity matrix, a square check."""

from __future__ import annotations

from typing import Any

from kiln.frontend.trace import located_error


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


def _eye(n: int, dtype: Any, m: int | None = None) -> Any:
    from kiln.frontend.torch_functions import eye

    return eye(n, m, dtype=dtype)


def _square_size(function: str, A: Any) -> int:
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise located_error(f"{function} needs square matrices (..., n, n), got {A.type}")
    return A.shape[-1]
