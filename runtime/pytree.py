"""Nested tuples and lists of leaves, taken apart and put back (JAX's pytrees, tuples and lists only).

```python
leaves, structure = flatten((x, (w, b)))      # [x, w, b], (tuple, (None, (tuple, (None, None))))
unflatten(structure, [2 * x, 2 * w, 2 * b])   # (2x, (2w, 2b))
```
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Union

Structure = Union[None, tuple[type, tuple[Any, ...]]]
"""``None`` for a leaf, else ``(tuple or list, the items' structures)``."""


def flatten(tree: Any) -> tuple[list[Any], Structure]:
    if not isinstance(tree, (tuple, list)):
        return [tree], None
    parts = [flatten(item) for item in tree]
    kind = list if isinstance(tree, list) else tuple
    return [leaf for leaves, _ in parts for leaf in leaves], (kind, tuple(structure for _, structure in parts))


def unflatten(structure: Structure, leaves: Iterable[Any]) -> Any:
    return _build(structure, iter(leaves))


def _build(structure: Structure, leaves: Iterator[Any]) -> Any:
    if structure is None:
        return next(leaves)
    kind, items = structure
    return kind(_build(item, leaves) for item in items)
