"""``F.scaled_dot_product_attention`` beyond the fused op: a float ``attn_mask`` and half-precision inputs.

A float mask is added to the scaled scores, as PyTorch's: Hugging Face's BERT/GPT-2 SDPA paths pass the padding mask
``(1 - attention_mask[:, None, None, :]) * torch.finfo(dtype).min`` (or an ALiBi/relative-position bias) there:

```python
bias = (1.0 - attention_mask[:, None, None, :].to(q.dtype)) * kiln.finfo(q.dtype).min
out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)        # softmax(q k^T scale + bias) v
```

In a CPU autocast region, 4-d float16/bfloat16 inputs compute as PyTorch 2.13's CPU flash-attention kernel does, so the result is torch's to the
last bit for sequences of one key block: scores ``q k^T scale (+ mask)`` in float32, ``e = exp(s - rowmax)`` and its
row sum in float32, ``e`` rounded to the half dtype before the product with ``v`` (float32 accumulation), that product
divided by the float32 sum and rounded once. A row every key of which is masked gives 0, as torch's kernel; so does
one every score of which a float mask makes ``-inf`` (``safe_softmax``). ``MultiheadAttention`` with ``need_weights``
is torch's other math path, where such a row is NaN (``nan_rows_attending_nothing``).
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.autocast import region_enabled
from kiln.frontend.sdpa_backends import flash_allowed
from kiln.frontend.tensor import Tensor, apply


def _scale(query: Tensor, scale: float | None) -> float:
    return float(scale) if scale is not None else 1 / float(np.sqrt(query.shape[-1]))


def _causal_keep(queries: int, keys: int) -> Tensor:
    """True where query ``i`` may attend key ``j``: ``j <= i``, the top-left aligned mask PyTorch builds."""
    return apply("tensor.constant", value=np.tril(np.ones((queries, keys), bool)))


def masked_scores(query: Tensor, key: Tensor, attn_mask: Tensor | None, causal: bool, scale: float | None) -> Tensor:
    """``q k^T scale``, plus a float mask, ``-inf`` where a bool mask or the causal mask forbids (as torch's kernel)."""
    scores = (query @ key.transpose(-2, -1)) * _scale(query, scale)
    forbidden = []
    if attn_mask is not None and attn_mask.dtype is DType.bool:
        forbidden.append(attn_mask)
    elif attn_mask is not None:
        scores = scores + attn_mask.to(scores.dtype)
    if causal:
        forbidden.append(_causal_keep(query.shape[-2], key.shape[-2]))
    for keep in forbidden:
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    return scores


def attention_with_float_mask(query: Tensor, key: Tensor, value: Tensor, bias: Tensor, dropout_p: float, causal: bool,
                              scale: float | None) -> Tensor:
    """``dropout(softmax(q k^T scale + bias)) v`` (``-inf`` above the diagonal when causal), PyTorch's math path."""
    from kiln.frontend.functional_nn import dropout

    scores = masked_scores(query, key, bias, causal, scale)
    return dropout(safe_softmax(scores), dropout_p) @ value


def attention_with_bias(query: Tensor, key: Tensor, value: Tensor, bias: Tensor, dropout_p: float, causal: bool,
                        need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """``MultiheadAttention`` with a float mask added to the scores (``layers_transformer.additive_attention_bias``):
    without weights ``F.scaled_dot_product_attention``'s math path (a row of ``-inf`` gives 0); with them torch's
    ``softmax(q k^T scale + bias)``, NaN for such a row, dropped out, times ``v``."""
    if not need_weights:
        return attention_with_float_mask(query, key, value, bias, dropout_p, causal, None), None
    from kiln.frontend.functional_nn import dropout

    weights = dropout(masked_scores(query, key, bias, causal, None).softmax(-1), dropout_p)
    return weights @ value, weights


def safe_softmax(scores: Tensor) -> Tensor:
    """``softmax(scores, -1)``, 0 for a row every score of which is ``-inf`` (a float mask of ``-inf`` over every key),
    as torch 2.13's math attention (its ``_safe_softmax``): no NaN forward, and a gradient of 0 there, not NaN (the
    row's scores are replaced before the softmax, so its backward never sees the NaN row)."""
    all_masked = (scores == float("-inf")).all(-1, keepdim=True)
    return scores.masked_fill(all_masked, 0.0).softmax(-1).masked_fill(all_masked, 0.0)


def attention_in_float32(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, causal: bool,
                         scale: float | None) -> Tensor:
    """Half ``query``/``key``/``value`` as torch's CPU flash kernel computes them (see the module docstring)."""
    half = query.dtype
    scores = masked_scores(query.to(DType.f32), key.to(DType.f32), attn_mask, causal, scale)
    peak = scores.amax(-1, keepdim=True).detach()
    all_masked = peak == float("-inf")
    exponentials = (scores - peak.masked_fill(all_masked, 0.0)).exp()
    total = exponentials.sum(-1, keepdim=True)
    weighted = exponentials.to(half).to(DType.f32) @ value.to(DType.f32)
    output = weighted / total.masked_fill(all_masked, 1.0)
    return output.to(half)


def takes_float32_path(query: Tensor, key: Tensor, value: Tensor, dropout_p: float) -> bool:
    """Whether torch would run its CPU flash kernel: allowed (``sdpa_kernel``), 4-d half inputs of one dtype, no dropout (else its math path,
    which the fused op's one rounding matches), in a CPU autocast region (a half model outside one keeps the fused op:
    one kernel on CuPy, one ONNX Attention pattern)."""
    same_half = query.dtype.is_half and key.dtype is query.dtype and value.dtype is query.dtype
    four_d = query.ndim == key.ndim == value.ndim == 4
    return not dropout_p and same_half and four_d and region_enabled("cpu") and flash_allowed()


def zero_rows_attending_nothing(output: Tensor, attn_mask: Tensor | None) -> Tensor:
    """0 for a query whose bool mask row is all False (a padded query of a BERT batch), as torch 2.13's kernels
    (its ``_safe_softmax``); the fused op alone would average every value there."""
    if attn_mask is None or attn_mask.dtype is not DType.bool:
        return output
    return output.masked_fill(attn_mask.any(-1, keepdim=True).logical_not(), 0.0)


def nan_rows_attending_nothing(output: Tensor, weights: Tensor | None, keep: Tensor | None, causal: bool,
                               keys: int) -> tuple[Tensor, Tensor | None]:
    """``MultiheadAttention``'s output (and weights) NaN for a query whose keys are all masked (a sequence all padding
    in ``key_padding_mask``), as torch 2.13's where it takes its math path with ``need_weights=True`` (it adds ``-inf``
    and softmaxes, and a row of ``-inf`` gives NaN) or its inference fast path (``frontend/attention_fast_path.py``);
    ``F.scaled_dot_product_attention`` gives 0 there instead. ``output`` is ``(N, heads, L, D)``, over ``keys`` keys."""
    if causal:
        allowed = _causal_keep(output.shape[-2], keys)
        keep = allowed if keep is None else keep.logical_and(allowed)
    if keep is None:
        return output, weights
    nothing = keep.any(-1, keepdim=True).logical_not()
    nan = float("nan")
    return output.masked_fill(nothing, nan), None if weights is None else weights.masked_fill(nothing, nan)


def shared_key_value_heads(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """``enable_gqa=True``: each of the ``Hkv`` key/value heads serves ``Hq / Hkv`` consecutive query heads (torch's
    ``repeat_interleave`` on dim -3); ``Hq`` must be a multiple of ``Hkv``, as torch requires."""
    query_heads, key_heads, value_heads = query.shape[-3], key.shape[-3], value.shape[-3]
    if key_heads != value_heads or query_heads % key_heads:
        from kiln.frontend.trace import located_error

        raise located_error(f"scaled_dot_product_attention(enable_gqa=True): query has {query_heads} heads, key {key_heads} and "
                            f"value {value_heads}; key and value need the same number of heads, and it must divide the query's")
    group = query_heads // key_heads
    return key.repeat_interleave(group, dim=-3), value.repeat_interleave(group, dim=-3)
