"""PyTorch 2.13's CPU autocast lists: which ops compute in the region's half dtype, which in float32, which in the
widest of their inputs' dtypes (``frontend/autocast.py`` applies them; the frontend functions name their op).

```python
policy_of("linear")        # "lower": floating inputs cast to the region's dtype (bfloat16 or float16)
policy_of("mse_loss")      # "float32": floating inputs cast to float32
policy_of("cat")           # "promote": float32 if any input is float32, else the region's dtype
policy_of("mv")            # "inputs": on no list; kiln's composite runs uncast, in its inputs' dtype
```

The names are ATen's, as torch's documentation lists them ("CPU Ops that can autocast to bfloat16", "... to
float32"); an op on no list runs in its inputs' dtype. float64 inputs are never cast, as in PyTorch. kiln applies the
same lists to ``autocast("cuda")`` where a GPU is present (torch's CUDA lists are longer: softmax, layer_norm, exp,
sum... run in float32 there).

Where the hooks are: ``@autocasts("<op>")`` above the frontend function or Tensor method that is that op (``grep -rn
'@autocasts' frontend/``). ``F.pad`` is one kiln function for every mode: its hook applies to the listed reflect and
replicate calls only (``pads_from_edges_on_list``). Not hooked: the listed ops kiln does not have (fft_*, stft,
polar, view_as_complex, ormqr, geqrf, fake_quantize; the RNN kernels: kiln's RNNs are Linear layers, which are).
"""

from __future__ import annotations

from typing import Any

LOWER_PRECISION = frozenset({
    "conv1d", "conv2d", "conv3d", "bmm", "mm", "linalg_vecdot", "baddbmm", "addmm", "addbmm", "linear", "_convolution",
    "matmul", "conv_tbc", "mkldnn_rnn_layer", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "prelu",
    "scaled_dot_product_attention", "_native_multi_head_attention",
})
"""CPU ops that compute in the region's dtype (torch.amp's "CPU Ops that can autocast to bfloat16")."""

FLOAT32 = frozenset({
    "avg_pool3d", "binary_cross_entropy", "grid_sampler", "polar", "prod", "quantile", "nanquantile", "stft", "cdist",
    "trace", "view_as_complex", "cholesky", "cholesky_inverse", "cholesky_solve", "inverse", "lu_solve", "orgqr", "ormqr",
    "pinverse", "max_pool3d", "max_unpool2d", "max_unpool3d", "adaptive_avg_pool3d", "reflection_pad1d", "reflection_pad2d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "mse_loss", "cosine_embedding_loss", "nll_loss",
    "nll_loss2d", "hinge_embedding_loss", "poisson_nll_loss", "smooth_l1_loss", "cross_entropy_loss", "l1_loss",
    "huber_loss", "margin_ranking_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "ctc_loss",
    "kl_div", "multilabel_margin_loss", "binary_cross_entropy_with_logits", "fft_fft", "fft_ifft", "fft_fft2",
    "fft_ifft2", "fft_fftn", "fft_ifftn", "fft_rfft", "fft_irfft", "fft_rfft2", "fft_irfft2", "fft_rfftn", "fft_irfftn",
    "fft_hfft", "fft_ihfft", "linalg_cond", "linalg_matrix_rank", "linalg_solve", "linalg_cholesky", "linalg_svdvals",
    "linalg_eigvals", "linalg_eigvalsh", "linalg_inv", "linalg_householder_product", "linalg_tensorinv",
    "linalg_tensorsolve", "fake_quantize_per_tensor_affine", "geqrf", "_lu_with_info", "qr", "svd", "triangular_solve",
    "fractional_max_pool2d", "fractional_max_pool3d", "adaptive_max_pool3d", "multilabel_margin_loss_forward",
    "linalg_qr", "linalg_cholesky_ex", "linalg_svd", "linalg_eig", "linalg_eigh", "linalg_lstsq", "linalg_inv_ex",
})
"""CPU ops that compute in float32 (torch.amp's "CPU Ops that can autocast to float32")."""

PROMOTE = frozenset({"stack", "cat", "index_copy"})
"""CPU ops that compute in the widest floating dtype among their inputs ("CPU Ops that promote to the widest input
type")."""

UNLISTED_COMPOSITES = frozenset({"mv", "addmv"})
"""ATen ops on no list (their result in their inputs' dtype, computed so) that kiln builds from listed ones (``mv`` is
``matrix @ vector`` here): they run with autocast off, so their parts are not cast either. (torch's ``bilinear`` is
on no list but is built from listed ops in torch too: it casts inside there, and here.)"""

POLICIES = {**{name: "lower" for name in LOWER_PRECISION}, **{name: "float32" for name in FLOAT32},
            **{name: "promote" for name in PROMOTE}, **{name: "inputs" for name in UNLISTED_COMPOSITES}}


def pads_from_edges_on_list(input: Any, pad: Any, mode: str = "constant", value: Any = None) -> bool:
    """Whether ``F.pad(input, pad, mode)`` is one of the listed pads: ``replication_pad1d/2d/3d`` and
    ``reflection_pad1d/2d`` (torch's ``reflection_pad3d`` and the constant and circular pads are on no list)."""
    return mode == "replicate" or (mode == "reflect" and len(pad) <= 4)


def policy_of(op: str) -> str:
    """``"lower"``, ``"float32"``, ``"promote"`` or ``"inputs"`` for an op on torch's CPU lists; a name on none is a bug in the
    caller's hook (a KeyError naming it, when the frontend module defining the hook is imported)."""
    try:
        return POLICIES[op]
    except KeyError:
        raise KeyError(f"{op!r} is on none of torch's CPU autocast lists (frontend/autocast_policy.py); an op on none "
                       "runs in its inputs' dtype and needs no autocast hook") from None
