"""Layers with PyTorch's names, weight layouts and defaults: ``Linear``, the basic activations, ``Sequential``, and the
distance modules ``CosineSimilarity`` and ``PairwiseDistance``."""

from __future__ import annotations

import operator
from typing import Any, Iterable, Iterator


from kiln.compiler.ir.types import is_float_array_dtype
from kiln.frontend import layer_resets
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.layers_activation import _InplaceActivation
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.tensor import Tensor


class Linear(Module):
    """``y = x W^T + b`` with ``weight`` of shape ``(out_features, in_features)``, as ``torch.nn.Linear``."""

    reset_parameters = layer_resets.fan_in_uniform

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None):
        """PyTorch's signature, so ``super().__init__(in_features, out_features, bias, device, dtype)`` in a subclass works
        (the device is the backend's to choose; ``dtype`` a name, ``kiln.float64`` or a NumPy dtype, float32 by default)."""
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        dtype = layer_dtype(dtype)
        self.weight = Parameter(init.linear_weight(out_features, in_features, dtype))
        self.bias = Parameter(init.linear_bias(out_features, in_features, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.fan_in_uniform)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(_InplaceActivation):
    """``nn.ReLU(inplace=True)`` as PyTorch's: the input is rebound to the result, so later reads of it see the ReLU."""

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)


class Sigmoid(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class Softmax(Module):
    """``torch.nn.Softmax``: without ``dim``, PyTorch's deprecated implicit choice (``F.softmax``), with its warning."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _repeat_count(times: Any) -> int:
    """``Sequential * times``'s count, refused as torch's unless a positive int (TypeError, ValueError)."""
    if not isinstance(times, int):
        raise TypeError(f"unsupported operand type(s) for *: {Sequential} and {type(times)}")
    if times <= 0:
        raise ValueError(f"Non-positive multiplication factor {times} for {Sequential}")
    return times


class Sequential(Module):
    """Applies its layers in order; layers are named ``0``, ``1``, ... as in PyTorch, or by the keys of one
    ``OrderedDict`` of layers (``Sequential(OrderedDict(conv=..., relu=...))``, ``conv.weight`` in the ``state_dict``)."""

    def __init__(self, *layers: Any):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], dict):
            for name, layer in layers[0].items():
                setattr(self, name, layer)
            return
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for index, layer in enumerate(layers):
            setattr(self, str(index), layer)

    def add(self, layer: Module) -> None:
        """Append a layer (Keras's ``model.add``)."""
        setattr(self, str(len(self._modules)), layer)

    def append(self, layer: Module) -> "Sequential":
        """Append a layer and return this ``Sequential``, as PyTorch's."""
        self.add(layer)
        return self

    def extend(self, layers: Iterable[Module]) -> "Sequential":
        for layer in layers:
            self.add(layer)
        return self

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int | slice) -> Any:
        """The layer at ``index``; a slice is a new ``Sequential`` of those layers (shared, under their names), as
        PyTorch's (the style-transfer tutorial trims its model so: ``model[:(i + 1)]``)."""
        if isinstance(index, slice):
            return self.__class__(dict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def __setitem__(self, index: int, layer: Module) -> None:
        """Replace the layer at ``index`` (under its name), as PyTorch's (a fine-tuning script's ``model[-1] = ...``)."""
        setattr(self, self._name_at(index), layer)

    def __delitem__(self, index: int | slice) -> None:
        """Remove the layer(s) at ``index``; the rest are numbered ``0``, ``1``, ... again, as PyTorch's."""
        names = list(self._modules)[index] if isinstance(index, slice) else [self._name_at(index)]
        for name in names:
            delattr(self, name)
        layers = list(self._modules.values())
        self._modules.clear()  # in place: a compiled model shares this registry
        self._modules.update((str(position), layer) for position, layer in enumerate(layers))

    def insert(self, index: int, layer: Module) -> "Sequential":
        """Put ``layer`` at ``index``, the layers from there on moving one place up, as PyTorch's."""
        if not isinstance(layer, Module):
            raise AssertionError(f"module should be of type: {Module}")
        count = len(self._modules)
        if not -count <= index <= count:
            raise IndexError(f"Index out of range: {index}")
        index = index + count if index < 0 else index
        for position in range(count, index, -1):
            self._modules[str(position)] = self._modules[str(position - 1)]
        self._modules[str(index)] = layer
        return self

    def pop(self, index: int | slice) -> Any:
        """Remove the layer at ``index`` and return it."""
        layer = self[index]
        del self[index]
        return layer

    def __add__(self, other: "Sequential") -> "Sequential":
        """A new ``Sequential`` of this one's layers then ``other``'s (the same layers), as PyTorch's."""
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but {type(other)} is given.")
        return Sequential(*self, *other)

    def __iadd__(self, other: "Sequential") -> "Sequential":
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but {type(other)} is given.")
        return self.extend(list(other))

    def __mul__(self, times: int) -> "Sequential":
        """A new ``Sequential`` repeating these layers ``times`` times (the same layers, shared), as PyTorch's."""
        return Sequential(*(list(self) * _repeat_count(times)))

    __rmul__ = __mul__

    def __imul__(self, times: int) -> "Sequential":
        return self.extend(list(self) * (_repeat_count(times) - 1))

    def _name_at(self, index: int) -> str:
        """The name of the layer at ``index`` (negative from the end); torch's IndexError out of range."""
        count, index = len(self._modules), operator.index(index)
        if not -count <= index < count:
            raise IndexError(f"index {index} is out of range")
        return list(self._modules)[index % count]

    def forward(self, input: Tensor) -> Tensor:
        for layer in self._modules.values():
            input = layer(input)
        return input

    def build(self, input_shape: tuple[Any, ...], dtype: Any = None) -> "Sequential":
        """Create lazily-shaped weights (Keras ``Dense``) by tracing once with ``input_shape`` (batch dim excluded), in
        ``dtype`` (by default the dtype of the weights already built, else float32: a ``model.half()`` model builds half)."""
        from kiln.frontend.trace import TensorSpec, trace

        built = [p.data.dtype for p in self.parameters() if is_float_array_dtype(p.data.dtype)]
        trace(self, TensorSpec(("N",) + tuple(input_shape), dtype if dtype is not None else (built[0] if built else "float32")))
        return self


class CosineSimilarity(Module):
    """``F.cosine_similarity(x1, x2, dim, eps)``."""

    def __init__(self, dim: int = 1, eps: float = 1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return F.cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    """``F.pairwise_distance(x1, x2, p, eps, keepdim)``: the ``p``-norm of ``x1 - x2 + eps`` over the last dim."""

    def __init__(self, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False):
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return F.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)
