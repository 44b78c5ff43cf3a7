"""Nested tuples, lists and dicts of leaves, taken apart and put back (JAX's pytrees; a dict's leaves in its key
order, as ``torch.utils._pytree``'s, so ``{name: parameter}`` dicts of ``torch.func`` code keep their order).

```python
leaves, structure = flatten((x, (w, b)))      # [x, w, b], (tuple, (None, (tuple, (None, None))))
unflatten(structure, [2 * x, 2 * w, 2 * b])   # (2x, (2w, 2b))
flatten({"w": w, "b": b})                     # [w, b], (dict, (("w", None), ("b", None)))
```
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Union

Structure = Union[None, tuple[type, tuple[Any, ...]]]
"""``None`` for a leaf, else ``(tuple or list, the items' structures)`` or ``(dict, ((key, structure), ...))``."""


def flatten(tree: Any) -> tuple[list[Any], Structure]:
    if isinstance(tree, dict):
        parts = [(key, flatten(item)) for key, item in tree.items()]
        return [leaf for _, (leaves, _) in parts for leaf in leaves], (dict, tuple((key, s) for key, (_, s) in parts))
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
    if kind is dict:
        return {key: _build(item, leaves) for key, item in items}
    return kind(_build(item, leaves) for item in items)
