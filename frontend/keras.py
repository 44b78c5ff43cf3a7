"""A Keras feel: ``Dense(units, activation="relu")`` builds its weights on first call.

```python
model = Sequential([Dense(128, activation="relu"), Dense(64, activation="relu"), Dense(10)])
model.build((64,))        # or Dense(128, activation="relu", input_dim=64)
```

Weights use the ``nn.Linear`` layout and initialisation, so a Dense model's
``state_dict`` has the same shapes as the PyTorch MLP (``kernel`` is
``weight``: ``(units, input_dim)``).
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.compiler.errors import KilnError, TraceError
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.module import Module, Parameter
from kiln.frontend.tensor import Tensor

ACTIVATIONS: dict[str | None, Callable[[Tensor], Tensor]] = {
    None: lambda x: x,
    "linear": lambda x: x,
    "relu": F.relu,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "softmax": F.softmax,
}


class Dense(Module):
    """A fully connected layer whose input size is taken from its first input."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True, input_dim: int | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise KilnError(f"unknown activation {activation!r}; use one of {sorted(k for k in ACTIVATIONS if k)}")
        self.units = units
        self.activation = activation
        self.use_bias = use_bias
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        if input_dim is not None:
            self.build(input_dim)

    def build(self, input_dim: int) -> None:
        dtype = self.__dict__.get("_built_dtype")  # a model.half()/bfloat16() before the weights exist (_cast_floats)
        self.weight = Parameter(_in_dtype(init.linear_weight(self.units, input_dim), dtype))
        self.bias = Parameter(_in_dtype(init.linear_bias(self.units, input_dim), dtype)) if self.use_bias else None

    def _cast_floats(self, target: Any) -> None:
        """Cast the weights; before they are built, remember ``target`` for them (as a lazy module does)."""
        super()._cast_floats(target)
        self.__dict__["_built_dtype"] = target

    def forward(self, input: Tensor) -> Tensor:
        features = input.shape[-1]
        if self.weight is None:
            if not isinstance(features, int):
                raise TraceError(f"Dense needs a static last input dim to build its weights, got {input.type}")
            self.build(features)
        return ACTIVATIONS[self.activation](F.linear(input, self.weight, self.bias))

    def extra_repr(self) -> str:
        return f"units={self.units}, activation={self.activation!r}"


def _in_dtype(array: Any, dtype: Any) -> Any:
    return array if dtype is None else array.astype(dtype)
