"""``torch.nn.TransformerEncoder``'s inference path over padded batches, as its output shows it.

In eval mode without gradients, given a ``src_key_padding_mask`` (and no ``mask``), PyTorch's encoder packs the
unpadded tokens into a nested tensor, runs the layers on them, and pads the result back with zeros
(``to_padded_tensor(0.0)``): the outputs at padded positions are 0, where the same call in training mode (or with
grad) computes them. The unpadded positions are the same either way (they attend only to unpadded keys). kiln runs
the padded batch and zeroes those positions under PyTorch's conditions, in its order: the ones ``__init__`` checks
(``nested_tensor_blocker``: batch-first post-norm layers with biases, relu or gelu, equal norm eps, an even head
count) and the ones of the call (``zeroes_padded_outputs``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.autocast import region_enabled
from kiln.frontend.eager_values import eager_array
from kiln.frontend.grad_mode import is_grad_enabled


def nested_tensor_blocker(layer: Any) -> str:
    """Why PyTorch's ``TransformerEncoder.__init__`` sets ``use_nested_tensor = False`` for ``layer``, or ``""``."""
    from kiln.frontend.layers_transformer import TransformerEncoderLayer

    if not isinstance(layer, TransformerEncoderLayer):
        return "encoder_layer was not TransformerEncoderLayer"
    attention = layer.self_attn
    checks = [(layer.norm_first, "norm_first was True"), (not attention.batch_first, "self_attn.batch_first was not True"),
              (not attention._qkv_same_embed_dim, "self_attn._qkv_same_embed_dim was not True"),
              (attention.in_proj_bias is None, "self_attn was passed bias=False"),
              (not is_relu_or_gelu(layer), "activation_relu_or_gelu was not True"),
              (layer.norm1.eps != layer.norm2.eps, "norm1.eps was not equal to norm2.eps"),
              (attention.num_heads % 2 == 1, "self_attn.num_heads is odd")]
    return next((f"encoder_layer.{why}" for blocked, why in checks if blocked), "")


def is_relu_or_gelu(layer: Any) -> bool:
    """PyTorch's ``TransformerEncoderLayer.activation_relu_or_gelu``: its fused kernels know only those two."""
    from kiln.frontend import functional as F

    return layer.activation_fn in (F.relu, F.gelu) or type(layer.activation_fn).__name__ in ("ReLU", "GELU")


def zeroes_padded_outputs(encoder: Any, src: Any, mask: Any, padding: Any) -> bool:
    """Whether PyTorch's encoder takes its nested-tensor path for this call (``padding``: bool, True = padded)."""
    first = encoder.layers[0]
    if not encoder.use_nested_tensor or first.training or src.ndim != 3 or padding is None or mask is not None:
        return False
    if region_enabled("cuda"):  # torch.is_autocast_enabled() asks about CUDA's
        return False
    if encoder.mask_check and not _left_aligned(padding):
        return False
    weights = [src, *first.self_attn.parameters(), *first.norm1.parameters(), *first.norm2.parameters(),
               *first.linear1.parameters(), *first.linear2.parameters()]
    return not (is_grad_enabled() and any(getattr(x, "requires_grad", False) for x in weights))


def _left_aligned(padding: Any) -> bool:
    """Each row's padding only at its end. A traced mask has no values to check: PyTorch's ``torch.compile`` skips the
    nested path when ``mask_check`` is on, and so does kiln."""
    values = eager_array(padding)
    if values is None:
        return False
    keep = ~values.astype(bool)
    return bool(np.all(keep[:, :-1] >= keep[:, 1:])) if keep.shape[-1] > 1 else True
