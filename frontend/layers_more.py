"""More of ``torch.nn``, with its names, constructor arguments, parameter layouts and ``state_dict`` keys.

- 1-D pools: ``MaxPool1d``, ``AvgPool1d``, ``AdaptiveAvgPool1d``, ``AdaptiveMaxPool1d`` (``F.max_pool1d``...).
- Activations: ``PReLU`` (a learned ``weight``), ``Softmin``, ``Softmax2d``, ``Threshold``, ``Tanhshrink``,
  ``Softshrink``, ``Hardshrink``, ``RReLU``.
- Distances: ``CosineSimilarity``, ``PairwiseDistance``.
- Parameter containers: ``ParameterList`` (``params.0``...) and ``ParameterDict`` (``params.<key>``).
- ``Transformer``: PyTorch's encoder-decoder, assembled from kiln's ``TransformerEncoder``/``TransformerDecoder``,
  so a ``torch.nn.Transformer``'s ``state_dict`` loads as is.

The functions live in ``frontend/functional_more.py``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.layers_conv import _single
from kiln.frontend.layers_transformer import (
    LayerNorm, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
)
from kiln.frontend.module import Buffer, Module, Parameter, _float_dtype, _to_numpy
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error


# 1-D pooling -------------------------------------------------------------------------------


class MaxPool1d(Module):
    """``torch.nn.MaxPool1d``; ``return_indices=True`` is refused when traced (see ``F.max_pool1d``)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation, self.return_indices, self.ceil_mode = padding, dilation, return_indices, ceil_mode

    def forward(self, input: Tensor) -> Tensor:
        return F.max_pool1d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class AvgPool1d(Module):
    """``torch.nn.AvgPool1d``: sizes kept as 1-tuples, as PyTorch's; see ``F.avg_pool1d`` for the divisor."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__()
        self.kernel_size = _single(kernel_size)
        self.stride = _single(stride if stride is not None else kernel_size)
        self.padding, self.ceil_mode, self.count_include_pad = _single(padding), ceil_mode, count_include_pad

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool1d(Module):
    """``torch.nn.AdaptiveAvgPool1d(output_size)``."""

    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool1d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(AdaptiveAvgPool1d):
    """``torch.nn.AdaptiveMaxPool1d(output_size)``, any output size; ``return_indices=True`` is refused when traced."""

    def __init__(self, output_size: Any, return_indices: bool = False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


# Activations ---------------------------------------------------------------------------------


class PReLU(Module):
    """``torch.nn.PReLU``: ``weight`` of shape ``(num_parameters,)`` filled with ``init``; one slope for all channels,
    or one per channel (dim 1 of the input, which must then have ``num_parameters`` channels)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: str = "float32"):
        super().__init__()
        if num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be at least 1, got {num_parameters}")
        self.num_parameters, self.init = num_parameters, init
        self.weight = Parameter(np.full(num_parameters, init, dtype))

    def forward(self, input: Tensor) -> Tensor:
        return F.prelu(input, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class Softmin(Module):
    """``softmax(-x)`` over ``dim``; kiln asks for ``dim`` (PyTorch's implicit ``dim=None`` is deprecated)."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is None:
            raise ValueError("Softmin needs dim, the axis to normalize (e.g. nn.Softmin(dim=-1)); "
                             "PyTorch's implicit choice for dim=None is deprecated")
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.softmin(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax2d(Module):
    """Softmax over the channels of ``(N, C, H, W)`` or ``(C, H, W)``: dim -3."""

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in (3, 4):
            raise located_error(f"Softmax2d expects a (N, C, H, W) or (C, H, W) input, got {input.type}")
        return F.softmax(input, -3)


class Threshold(Module):
    """``x > threshold ? x : value``."""

    def __init__(self, threshold: float, value: float, inplace: bool = False):
        super().__init__()
        self.threshold, self.value, self.inplace = threshold, value, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.threshold(input, self.threshold, self.value)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, value={self.value}" + (", inplace=True" if self.inplace else "")


class Tanhshrink(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.tanhshrink(input)


class Softshrink(Module):
    def __init__(self, lambd: float = 0.5):
        super().__init__()
        self.lambd = lambd

    def forward(self, input: Tensor) -> Tensor:
        return F.softshrink(input, self.lambd)

    def extra_repr(self) -> str:
        return str(self.lambd)


class Hardshrink(Softshrink):
    def forward(self, input: Tensor) -> Tensor:
        return F.hardshrink(input, self.lambd)


class RReLU(Module):
    """Randomized leaky ReLU: a slope drawn from U(lower, upper) per element while training (kiln's draws, from the
    step's seed), ``(lower + upper) / 2`` in eval mode."""

    def __init__(self, lower: float = 1.0 / 8, upper: float = 1.0 / 3, inplace: bool = False):
        super().__init__()
        if lower > upper:
            raise ValueError(f"RReLU: lower ({lower}) must not exceed upper ({upper})")
        self.lower, self.upper, self.inplace = lower, upper, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.rrelu(input, self.lower, self.upper, self.training)

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}" + (", inplace=True" if self.inplace else "")


# Distances -----------------------------------------------------------------------------------


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


# Parameter containers ------------------------------------------------------------------------


def _as_parameter(value: Any, where: Any) -> Parameter:
    """A ``Parameter`` as is; an array (NumPy, nested lists, a torch tensor) becomes a new trainable one, as
    PyTorch's containers wrap plain tensors."""
    if isinstance(value, Buffer):
        raise TypeError(f"a parameter container holds trainable Parameters; entry {where!r} is a Buffer")
    if isinstance(value, Parameter):
        return value
    array = np.asarray(_to_numpy(value))
    if array.dtype.kind not in "fiub":
        raise TypeError(f"a parameter container holds Parameters or numeric arrays; entry {where!r} is a {type(value).__name__}")
    return Parameter(array)


class ParameterList(Module):
    """``torch.nn.ParameterList``: parameters named ``0``, ``1``, ... (``params.0`` in the ``state_dict``); indexing,
    slicing (a new list of the same parameters), ``append``, ``extend``, ``+=``."""

    def __init__(self, values: Iterable[Any] | None = None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def append(self, value: Any) -> "ParameterList":
        setattr(self, str(len(self)), _as_parameter(value, len(self)))
        return self

    def extend(self, values: Iterable[Any]) -> "ParameterList":
        for value in values:
            self.append(value)
        return self

    def __iadd__(self, values: Iterable[Any]) -> "ParameterList":
        return self.extend(values)

    def __getitem__(self, index: int | slice) -> Any:
        parameters = list(self._parameters.values())
        return ParameterList(parameters[index]) if isinstance(index, slice) else parameters[self._position(index)]

    def __setitem__(self, index: int, value: Any) -> None:
        setattr(self, str(self._position(index)), _as_parameter(value, index))

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(list(self._parameters.values()))

    def _position(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a ParameterList of {len(self)} parameters")
        return index % len(self)

    def __repr__(self) -> str:
        return _parameters_repr(self)


class ParameterDict(Module):
    """``torch.nn.ParameterDict``: string keys in insertion order (``params.<key>`` in the ``state_dict``), ``[]``,
    ``in``, ``keys``/``values``/``items``, ``get``, ``update``, ``pop``, ``setdefault``, ``clear``."""

    def __init__(self, parameters: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key: str) -> Parameter:
        return self._parameters[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ParameterDict keys are non-empty strings without '.', got {key!r}")
        if key not in self._parameters and hasattr(self, key):
            raise KeyError(f"ParameterDict: the key {key!r} would hide the attribute of that name; pick another key")
        setattr(self, key, _as_parameter(value, key))

    def __delitem__(self, key: str) -> None:
        if key not in self._parameters:
            raise KeyError(key)
        delattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self._parameters

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._parameters))

    def keys(self) -> Iterable[str]:
        return self._parameters.keys()

    def values(self) -> Iterable[Parameter]:
        return self._parameters.values()

    def items(self) -> Iterable[tuple[str, Parameter]]:
        return self._parameters.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self._parameters.get(key, default)

    def pop(self, key: str) -> Parameter:
        parameter = self[key]
        del self[key]
        return parameter

    def setdefault(self, key: str, default: Any = None) -> Parameter:
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def update(self, parameters: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        for key, value in (parameters.items() if isinstance(parameters, Mapping) else parameters):
            self[key] = value

    def __repr__(self) -> str:
        return _parameters_repr(self)


def _parameters_repr(container: Module) -> str:
    """PyTorch's layout: one ``(name): Parameter ...`` line per entry."""
    lines = [f"  ({name}): Parameter of shape {tuple(p.shape)} ({p.data.dtype})" for name, p in container._parameters.items()]
    return f"{type(container).__name__}(" + ("\n" + "\n".join(lines) + "\n" if lines else "") + ")"


# Transformer ---------------------------------------------------------------------------------


class Transformer(Module):
    """``torch.nn.Transformer``: an encoder over ``src`` and a decoder over ``tgt`` that attends to the encoder's
    output, each ``num_*_layers`` layers and a final ``LayerNorm`` (``encoder.layers.0...``, ``encoder.norm``,
    ``decoder.layers.0...``, ``decoder.norm`` in the ``state_dict``, as PyTorch's). Every weight matrix starts
    Xavier-uniform, as PyTorch's ``_reset_parameters``. ``(S, N, E)`` inputs, or ``(N, S, E)`` with ``batch_first``.

    Masks are PyTorch's: bool with True = masked out, or float as ``generate_square_subsequent_mask`` makes them, 0
    to attend and -inf to block. kiln's attention only blocks, so a float mask given as an array must hold nothing
    else (others are refused); a float mask that is a traced input blocks where it is -inf, its other values ignored.
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation: Any = "relu", custom_encoder: Module | None = None,
                 custom_decoder: Module | None = None, layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False,
                 bias: bool = True, dtype: str = "float32"):
        super().__init__()
        layer_options = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                             batch_first=batch_first, norm_first=norm_first, dtype=dtype)
        self.encoder = custom_encoder if custom_encoder is not None else TransformerEncoder(
            _with_bias(TransformerEncoderLayer(d_model, nhead, **layer_options), bias), num_encoder_layers,
            LayerNorm(d_model, layer_norm_eps, bias=bias, dtype=dtype))
        self.decoder = custom_decoder if custom_decoder is not None else TransformerDecoder(
            _with_bias(TransformerDecoderLayer(d_model, nhead, **layer_options), bias), num_decoder_layers,
            LayerNorm(d_model, layer_norm_eps, bias=bias, dtype=dtype))
        for parameter in self.parameters():
            if parameter.data.ndim > 1:
                init.xavier_uniform_(parameter)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Any = None, tgt_mask: Any = None, memory_mask: Any = None,
                src_key_padding_mask: Any = None, tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
                src_is_causal: bool | None = None, tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        """``(T, N, E)`` (``(N, T, E)`` with ``batch_first``): the decoder's output for ``tgt`` given ``src``.
        ``*_mask`` are ``(T or S, S or T)``, ``*_key_padding_mask`` ``(N, S or T)``; see the class docstring."""
        self._check_inputs(src, tgt)
        masks = _boolean_masks(src_mask=src_mask, tgt_mask=tgt_mask, memory_mask=memory_mask, src_key_padding_mask=src_key_padding_mask,
                               tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask)
        memory = self.encoder(src, mask=masks["src_mask"], src_key_padding_mask=masks["src_key_padding_mask"], is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=masks["tgt_mask"], memory_mask=masks["memory_mask"],
                            tgt_key_padding_mask=masks["tgt_key_padding_mask"], memory_key_padding_mask=masks["memory_key_padding_mask"],
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device: Any = None, dtype: Any = None) -> np.ndarray:
        """``(sz, sz)``, -inf above the diagonal and 0 elsewhere (float32 unless ``dtype``), as PyTorch's: position
        ``i`` attends to positions ``0..i``. A NumPy array; ``device`` is ignored."""
        return np.triu(np.full((sz, sz), -np.inf, _float_dtype(dtype) or np.float32), 1)

    def _check_inputs(self, src: Tensor, tgt: Tensor) -> None:
        if src.ndim != 3 or tgt.ndim != 3:
            layout = "(N, S, E)" if self.batch_first else "(S, N, E)"
            raise located_error(f"Transformer expects batched {layout} src and tgt, got {src.type} and {tgt.type}")
        batch = 0 if self.batch_first else 1
        if src.shape[batch] != tgt.shape[batch]:
            raise located_error(f"Transformer: the batch sizes of src {src.type} and tgt {tgt.type} (dim {batch}) must be equal")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise located_error(f"Transformer: the features of src {src.type} and tgt {tgt.type} must equal d_model={self.d_model}")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, nhead={self.nhead}" + (", batch_first=True" if self.batch_first else "")


def _with_bias(layer: Module, bias: bool) -> Module:
    """PyTorch's ``bias=False`` for a transformer layer: no bias in its linear maps, attention and layer norms
    (kiln's layers take no ``bias`` flag, so the biases are removed here; the layers treat a missing one as zero)."""
    if not bias:
        for _, module in layer.named_modules():
            for name in ("bias", "in_proj_bias"):
                if name in module._parameters:
                    setattr(module, name, None)
    return layer


def _boolean_masks(**masks: Any) -> dict[str, Tensor | None]:
    return {name: boolean_attention_mask(name, mask) for name, mask in masks.items()}


def boolean_attention_mask(name: str, mask: Any) -> Tensor | None:
    """A PyTorch attention or key-padding mask as kiln's attention takes it: bool, True = masked out.

    A bool mask is kept; a float one (PyTorch adds it to the scores) blocks where it is -inf. Given as an array,
    a float mask must hold only 0 and -inf, since kiln's attention cannot add other values; a traced float mask
    cannot be checked, so it blocks where it is -inf and its other values are ignored."""
    if mask is None:
        return None
    if isinstance(mask, Tensor):
        if mask.dtype is DType.bool:
            return mask
        if not mask.dtype.is_float:
            raise located_error(f"Transformer: {name} must be a bool or float mask, got {mask.type}")
        return mask.eq(-np.inf)
    array = np.asarray(_to_numpy(mask))
    if array.dtype.kind == "f":
        if np.any((array != 0) & ~np.isneginf(array)):
            raise located_error(f"Transformer: the float {name} holds values other than 0 and -inf; PyTorch adds them to the "
                                f"attention scores, but kiln's attention masks only block. Pass a bool mask (True = masked out)")
        array = np.isneginf(array)
    if array.dtype != bool:
        raise located_error(f"Transformer: {name} must be a bool or float mask, got an array of {array.dtype}")
    return apply("tensor.constant", value=array)


__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveMaxPool1d", "AvgPool1d", "CosineSimilarity", "Hardshrink", "MaxPool1d", "PairwiseDistance",
    "ParameterDict", "ParameterList", "PReLU", "RReLU", "Softmax2d", "Softmin", "Softshrink", "Tanhshrink", "Threshold",
    "Transformer",
]
