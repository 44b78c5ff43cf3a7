"""Nested tuples, lists and dicts of leaves, taken apart and put back (JAX's pytrees; a dict's leaves in its key
order, as ``torch.utils._pytree``'s, so ``{name: parameter}`` dicts of ``torch.func`` code keep their order). A
namedtuple comes back as its own class, as ``torch.compile`` returns it (lucidrains' ``Electra`` returns ``Results(loss,
mlm_loss, ...)``, read as ``out.loss``), and so does a dict subclass (Hugging Face's ``ModelOutput``, read as
``out.logits``; an ``OrderedDict``), rebuilt from its items as keywords as ``transformers`` registers ``ModelOutput``
with torch's pytree (a ``defaultdict`` comes back without its ``default_factory``).

```python
leaves, structure = flatten((x, (w, b)))      # [x, w, b], (tuple, (None, (tuple, (None, None))))
unflatten(structure, [2 * x, 2 * w, 2 * b])   # (2x, (2w, 2b))
flatten({"w": w, "b": b})                     # [w, b], (dict, (("w", None), ("b", None)))
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Union


@dataclass(frozen=True)
class Constant:
    """A leaf kept in the structure itself, not among the leaves: a Python value (a bool, a number, None) that a
    compiled function returns beside its tensors, fixed when it was traced, as ``torch.compile`` returns it."""

    value: Any


Structure = Union[None, Constant, tuple[type, tuple[Any, ...]]]
"""``None`` for a leaf, a ``Constant``, else ``(tuple or list, the items' structures)`` or ``(dict or its subclass,
((key, structure), ...))``."""


def flatten(tree: Any) -> tuple[list[Any], Structure]:
    if isinstance(tree, dict):
        parts = [(key, flatten(item)) for key, item in tree.items()]
        structures = tuple((key, s) for key, (_, s) in parts)
        return [leaf for _, (leaves, _) in parts for leaf in leaves], (_mapping_kind(tree), structures)
    if not isinstance(tree, (tuple, list)):
        return [tree], None
    parts = [flatten(item) for item in tree]
    kind = _sequence_kind(tree)
    return [leaf for leaves, _ in parts for leaf in leaves], (kind, tuple(structure for _, structure in parts))


def flatten_keeping(tree: Any, is_leaf: Callable[[Any], bool]) -> tuple[list[Any], Structure]:
    """``flatten(tree)`` whose leaves that are not ``is_leaf`` (a compiled step's ``use_the_queue`` beside its loss)
    stay in the structure as ``Constant``s: ``unflatten`` puts them back."""
    if isinstance(tree, (tuple, list, dict)):
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        parts = {key: flatten_keeping(item, is_leaf) for key, item in items}
        structures = tuple((key, s) for key, (_, s) in parts.items()) if isinstance(tree, dict) else \
            tuple(s for _, s in parts.values())
        kind = _mapping_kind(tree) if isinstance(tree, dict) else _sequence_kind(tree)
        return [leaf for leaves, _ in parts.values() for leaf in leaves], (kind, structures)
    return ([tree], None) if is_leaf(tree) else ([], Constant(tree))


def _sequence_kind(tree: tuple | list) -> type:
    """``list``, ``tuple``, or the namedtuple class of ``tree`` (other subclasses rebuild as their base)."""
    if isinstance(tree, list):
        return list
    return type(tree) if _is_namedtuple(type(tree)) else tuple


def _mapping_kind(tree: dict) -> type:
    """``type(tree)``: ``dict`` or the subclass to rebuild (its keys strings, to pass as keywords); else ``dict``."""
    kind = type(tree)
    return kind if kind is dict or all(isinstance(key, str) for key in tree) else dict


def _is_namedtuple(kind: type) -> bool:
    """A namedtuple class (or one built as one, ``PackedSequence``: ``_fields`` and ``_make``)."""
    return issubclass(kind, tuple) and hasattr(kind, "_fields") and hasattr(kind, "_make")


def unflatten(structure: Structure, leaves: Iterable[Any]) -> Any:
    return _build(structure, iter(leaves))


def _build(structure: Structure, leaves: Iterator[Any]) -> Any:
    if structure is None:
        return next(leaves)
    if isinstance(structure, Constant):
        return structure.value
    kind, items = structure
    if issubclass(kind, dict):
        built = {key: _build(item, leaves) for key, item in items}
        return built if kind is dict else _rebuilt_mapping(kind, built)
    built = [_build(item, leaves) for item in items]
    return kind._make(built) if _is_namedtuple(kind) else kind(built)  # type: ignore[attr-defined]


def _rebuilt_mapping(kind: type, items: dict) -> dict:
    """``items`` as a ``kind``: by keywords (HF's ``ModelOutput`` dataclasses set their fields so), or, where its
    ``__init__`` takes no such keywords, an empty instance filled, as ``torch.compile`` rebuilds a dict subclass."""
    try:
        return kind(**items)
    except TypeError:
        mapping = kind.__new__(kind)
        dict.update(mapping, items)
        return mapping
