"""PyTorch's shape checks of ``F.layer_norm`` (ATen's ``_check_layer_norm_inputs``), with its words, before kiln emits
``nn.layer_norm`` (whose shape rule would name kiln's op and IR types):

```python
nn.LayerNorm(5)(x)   # x (2, 4): Given normalized_shape=[5], expected input with shape [*, 5],
                     #           but got input of size[2, 4]
```

Each is a ``RuntimeError`` naming the user's line, checked in PyTorch's order: ``normalized_shape`` not empty, the
weight's and the bias's shapes equal to it, then the input's trailing dims.
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.frontend.inplace_leaf_checks import located


class LayerNormShapeError(TraceError, RuntimeError):
    """An input, weight or bias that does not fit ``normalized_shape`` (torch's ``RuntimeError``)."""


def check_layer_norm_shapes(input: Any, normalized_shape: tuple, weight: Any, bias: Any) -> None:  # noqa: A002
    """Raise torch's error where ``weight``, ``bias`` or ``input``'s trailing dims do not fit ``normalized_shape``."""
    normalized = tuple(normalized_shape)
    if not normalized:
        _refuse("Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one element, "
                "but got normalized_shape = []")
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is not None and tuple(parameter.shape) != normalized:
            _refuse(f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                    f"{_listed(parameter.shape)} and normalized_shape = {_listed(normalized)}")
    shape = tuple(input.shape)
    if len(shape) < len(normalized) or shape[len(shape) - len(normalized):] != normalized:
        _refuse(f"Given normalized_shape={_listed(normalized)}, expected input with shape [*, "
                f"{', '.join(map(str, normalized))}], but got input of size{_listed(shape)}")


def _listed(shape: Any) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _refuse(message: str) -> None:
    raise located(LayerNormShapeError, message)
