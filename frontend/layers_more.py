"""The last of ``torch.nn``'s modules: ``AdaptiveLogSoftmaxWithLoss``, ``FractionalMaxPool2d``/``3d`` and
``CrossMapLRN2d``, with PyTorch's constructor arguments, parameter names and reprs.

```
adaptive log-softmax   log p(c | x) = head_logprob[c]                                      c in the shortlist
                                    = head_logprob[shortlist + i] + log_softmax(tail_i(x))[c - cutoff_i]   c in cluster i
                       every cluster is computed for every row, and the target's entry selected (PyTorch indexes
                       the rows of each cluster: the same values, and gradients, without data-dependent shapes)
cross-map LRN          x / (k + alpha / size * window_c)^beta over PyTorch's running window of squares
```
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Sequence

import numpy as np

from kiln.frontend import functional as F
from kiln.frontend.containers import ModuleList
from kiln.frontend.layers import Linear, Sequential
from kiln.frontend.module import Module, _to_numpy, layer_dtype
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error

_ASMoutput = namedtuple("_ASMoutput", ["output", "loss"])


class AdaptiveLogSoftmaxWithLoss(Module):
    """``torch.nn.AdaptiveLogSoftmaxWithLoss``: a ``head`` over the shortlist and one entry per cluster, and a
    ``tail`` of ``Sequential(Linear(in, in // div^(i+1)), Linear(.., cluster size))`` per cluster."""

    def __init__(self, in_features: int, n_classes: int, cutoffs: Sequence[int], div_value: float = 4.0, head_bias: bool = False,
                 device: Any = None, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        cutoffs = list(cutoffs)
        if len(cutoffs) == 0:
            raise ValueError("cutoffs should be a sequence of length larger than 0")
        if cutoffs != sorted(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1 or len(set(cutoffs)) != len(cutoffs) \
                or any(int(c) != c for c in cutoffs):
            raise ValueError("cutoffs should be a sequence of unique, positive integers sorted in an increasing order, where "
                             f"each value is between 1 and n_classes-1 (n_classes={n_classes}, got {cutoffs})")
        self.in_features, self.n_classes, self.div_value, self.head_bias = in_features, n_classes, div_value, head_bias
        self.cutoffs = cutoffs + [n_classes]
        self.shortlist_size, self.n_clusters = self.cutoffs[0], len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        self.head = Linear(in_features, self.head_size, bias=head_bias, dtype=dtype)
        self.tail = ModuleList([self._cluster(i, dtype) for i in range(self.n_clusters)])

    def _cluster(self, index: int, dtype: str) -> Sequential:
        hidden = int(self.in_features // (self.div_value ** (index + 1)))
        size = self.cutoffs[index + 1] - self.cutoffs[index]
        return Sequential(Linear(self.in_features, hidden, bias=False, dtype=dtype), Linear(hidden, size, bias=False, dtype=dtype))

    def forward(self, input: Tensor, target: Tensor) -> _ASMoutput:
        """``(output, loss)``: each row's log-probability of its target, and their negated mean. Targets outside
        ``[0, n_classes)`` are not checked (they are traced values); the row's output is then undefined."""
        if target.ndim == 0:
            if input.ndim != 1:
                raise located_error(f"0D target tensor expects 1D input tensors, but found inputs with size {input.type}")
            output, loss = self.forward(input.unsqueeze(0), target.unsqueeze(0))
            return _ASMoutput(output.squeeze(0), loss)
        if target.ndim != 1:
            raise located_error("0D or 1D target tensor expected, multi-target not supported")
        if input.ndim != 2:
            raise located_error(f"1D target tensor expects 2D input tensors, but found inputs with size {input.type}")
        if input.shape[0] != target.shape[0]:
            raise located_error(f"Input and target should have the same size in the batch dimension: {input.type} and {target.type}")
        output = self.log_prob(input).gather(1, target.to("int64").unsqueeze(1)).squeeze(1)
        return _ASMoutput(output, (-output).mean())

    def log_prob(self, input: Tensor) -> Tensor:
        """``(N, n_classes)`` log-probabilities of every class."""
        head = F.log_softmax(self.head(input), dim=1)
        parts = [head[:, : self.shortlist_size]]
        for index, cluster in enumerate(self.tail):
            parts.append(F.log_softmax(cluster(input), dim=1) + head[:, self.shortlist_size + index: self.shortlist_size + index + 1])
        return F.cat(parts, 1)

    def predict(self, input: Tensor) -> Tensor:
        """The most probable class of each row: ``log_prob(input).argmax(1)``, as PyTorch's."""
        return self.log_prob(input).argmax(1)


class _FractionalMaxPool(Module):
    dims = 2

    def __init__(self, kernel_size: Any, output_size: Any = None, output_ratio: Any = None, return_indices: bool = False,
                 _random_samples: Any = None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = self._tuple(kernel_size)
        self.return_indices = return_indices
        self._random_samples = None
        if _random_samples is not None:  # a buffer, in the state_dict, as PyTorch's
            self.register_buffer("_random_samples", _to_numpy(_random_samples))
        self.output_size = None if output_size is None else self._tuple(output_size)
        self.output_ratio = None if output_ratio is None else self._tuple(output_ratio)
        if output_size is None and output_ratio is None:
            raise ValueError(f"{name} requires specifying either an output size, or a pooling ratio")
        if output_size is not None and output_ratio is not None:
            raise ValueError("only one of output_size and output_ratio may be specified")
        if self.output_ratio is not None and not all(0 < r < 1 for r in self.output_ratio):
            raise ValueError(f"output_ratio must be between 0 and 1 (got {output_ratio})")

    def _tuple(self, value: Any) -> tuple:
        return (value,) * self.dims if isinstance(value, (int, float, np.integer, np.floating)) else tuple(value)

    def forward(self, input: Tensor) -> Any:
        function = getattr(F, f"fractional_max_pool{self.dims}d")
        return function(input, self.kernel_size, self.output_size, self.output_ratio, self.return_indices, self._random_samples)


class FractionalMaxPool2d(_FractionalMaxPool):
    """``torch.nn.FractionalMaxPool2d``: see ``F.fractional_max_pool2d``; random windows need ``kiln.compile(seed=)``
    unless ``_random_samples`` is given."""

    dims = 2


class FractionalMaxPool3d(_FractionalMaxPool):
    """``torch.nn.FractionalMaxPool3d``: see ``F.fractional_max_pool3d``."""

    dims = 3


class CrossMapLRN2d(Module):
    """``torch.nn.CrossMapLRN2d`` on ``(N, C, H, W)``: see ``cross_map_lrn2d``."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input: Tensor) -> Tensor:
        return cross_map_lrn2d(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def cross_map_lrn2d(input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1) -> Tensor:
    """PyTorch's ``CrossMapLRN2d`` values: its running window of squares starts as channels ``0 .. p - 1`` (``p =
    int((size - 1) / 2 + 1)``), adds channel ``c + p - 1`` and drops ``c - p`` only past ``c = p``, so channel 0 stays
    in every window from ``c = p`` on (unlike ``LocalResponseNorm``). The gradient is this function's exact one
    (PyTorch's hand-written backward uses a window shifted by one, which is not its forward's derivative)."""
    if input.ndim != 4:
        raise located_error(f"CrossMapLRN2d: Expected input to be 4D, got {input.ndim}D instead.")
    channels = input.shape[1]
    if not isinstance(channels, int):
        raise located_error(f"CrossMapLRN2d needs a static channel dim, got {input.type}")
    window = apply("tensor.constant", value=_window_matrix(channels, size, input.dtype.numpy))  # (C, C)
    squares = (input * input).permute(0, 2, 3, 1)  # (N, H, W, C)
    scale = (squares @ window).permute(0, 3, 1, 2) * (alpha / size) + k
    return input * scale ** -beta


def _window_matrix(channels: int, size: int, dtype: Any) -> np.ndarray:
    """``(C, C)``: column ``c`` marks the channels whose squares sum into channel ``c``'s scale, as PyTorch's loop."""
    pre = int((size - 1) / 2 + 1)
    matrix = np.zeros((channels, channels), dtype)
    for c in range(channels):
        matrix[max(0, c - pre + 1): min(channels, c + pre), c] = 1
        if c >= pre:
            matrix[0, c] = 1
    return matrix


__all__: Sequence[str] = ["AdaptiveLogSoftmaxWithLoss", "CrossMapLRN2d", "FractionalMaxPool2d", "FractionalMaxPool3d"]
