"""``output_size`` of ``nn.ConvTranspose{1,2,3}d.forward(input, output_size)``, as PyTorch's
``_ConvTransposeNd._output_padding``: with a stride above 1 several output sizes convolve back to the input's size
(U-Nets ask for the skip connection's, ``upconv(x, output_size=skip.size()[2:])``); the requested one, checked to be in
``[smallest, smallest + stride - 1]`` per spatial dim, becomes the ``output_padding`` of this call (the layer's own
``output_padding`` is used without it)."""

from __future__ import annotations

from typing import Any, Sequence

from kiln.frontend.tensor import Tensor


def output_padding_for(layer: Any, input: Tensor, output_size: Sequence[int] | None, spatial_dims: int) -> tuple[int, ...]:
    """The ``output_padding`` that makes ``layer`` (a ConvTranspose with ``spatial_dims`` spatial dims) produce
    ``output_size`` from ``input``; ``output_size`` may include the leading batch and channel dims, as PyTorch's."""
    if output_size is None:
        return tuple(layer.output_padding)
    leading = 2 if input.dim() == spatial_dims + 2 else 1
    requested = [int(size) for size in output_size]
    if len(requested) == leading + spatial_dims:
        requested = requested[leading:]
    if len(requested) != spatial_dims:
        raise ValueError(f"ConvTranspose{spatial_dims}D: for {input.dim()}D input, output_size must have {spatial_dims} "
                         f"or {leading + spatial_dims} elements (got {len(requested)})")
    smallest = [_smallest_size(layer, input.shape[leading + d], d) for d in range(spatial_dims)]
    largest = [size + layer.stride[d] - 1 for d, size in enumerate(smallest)]
    if any(not low <= size <= high for size, low, high in zip(requested, smallest, largest)):
        raise ValueError(f"requested an output size of {requested}, but valid sizes range from {smallest} to {largest} "
                         f"(for an input of {list(input.shape[leading:])})")
    return tuple(size - low for size, low in zip(requested, smallest))


def _smallest_size(layer: Any, input_size: int, dim: int) -> int:
    """The output size along ``dim`` with no output padding: ``(in - 1) * stride - 2 * padding + dilation * (k - 1) + 1``."""
    return ((input_size - 1) * layer.stride[dim] - 2 * layer.padding[dim]
            + layer.dilation[dim] * (layer.kernel_size[dim] - 1) + 1)
