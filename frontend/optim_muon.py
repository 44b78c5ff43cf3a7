"""Muon (``torch.optim.Muon``): momentum, then the update orthogonalized by a Newton-Schulz iteration.

Per 2-D parameter, as PyTorch's ``_single_tensor_muon``::

    B <- B + (1 - mu) (g - B)                      (lerp: B_t = mu B + (1 - mu) g)
    U <- g + mu (B - g)  if nesterov, else B       (lerp)
    X <- U (transposed if it has more rows than columns), X <- X / max(||X||_F, eps)
    k times:  A <- X X^T;  X <- a X + (b A + c A A) X
    p <- p (1 - lr wd) - lr_adj X  (transposed back),   lr_adj = lr sqrt(max(1, rows/cols))  ("original")
                                                          or lr 0.2 sqrt(max(rows, cols)) ("match_rms_adamw")

The update is written in the graph's own ops (matmuls, elementwise, a sum of squares), not as one ``optim.*`` op:
every backend and the ONNX train-step export run it as they run the model, and the fusion passes see it. One
difference from PyTorch: PyTorch runs the Newton-Schulz iteration in bfloat16 (3 significant digits, for GPU
speed); kiln runs it in the parameter's dtype, which PyTorch does when its ``bfloat16()`` cast is an identity.
Muon trains matrices only (hidden layers' weights): biases, norms' scales and other non-2-D parameters belong to
another optimizer, as PyTorch's documentation says; a bias-free model trains with Muon alone.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType
from kiln.compiler.ops.optim import lerp
from kiln.compiler.ops.optim_opmath import as_dtype_of, complement, f64, host_scalar, keep
from kiln.frontend.optim import Optimizer, Update, _non_negative
from kiln.frontend.optim_base import InvalidOptionError

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""PyTorch's (Keller Jordan's) quintic Newton-Schulz coefficients ``(a, b, c)``."""

LR_ADJUSTMENTS = (None, "original", "match_rms_adamw")


class Muon(Optimizer):
    """``torch.optim.Muon``'s arguments and defaults; every parameter must be 2-D (module docstring)."""

    torch_counts_steps = False  # PyTorch's Muon keeps only the momentum buffer
    lr_on_host = True  # 1 - lr * weight_decay and the adjusted lr
    feedable_hyperparameters = frozenset({"momentum"})  # cycled by OneCycleLR/CyclicLR: a graph input, read each step

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95, nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = 1e-7, ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
    ):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Muon", group, "lr", "weight_decay", "momentum")
        if group["adjust_lr_fn"] not in LR_ADJUSTMENTS:
            raise InvalidOptionError(f"Muon: adjust_lr_fn {group['adjust_lr_fn']!r} is not one of {LR_ADJUSTMENTS}")
        if len(group["ns_coefficients"]) != 3:
            raise InvalidOptionError(f"Muon: ns_coefficients are the three (a, b, c) of the Newton-Schulz polynomial, got {group['ns_coefficients']}")
        steps = group["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps < 100:
            raise InvalidOptionError(f"Muon: ns_steps must be an int in [0, 100) (PyTorch's bound), got {steps!r}")
        for param in group["params"]:
            if param.data.ndim != 2:
                raise KilnError(
                    f"Muon only trains 2-D parameters, got one of shape {param.data.shape}; give biases, norms and other "
                    "non-2-D parameters to another optimizer (AdamW), as PyTorch's Muon requires"
                )

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",)

    def emit_update(self, b: Builder, param: Value, grad: Value, state: dict[str, Value], hyper: dict[str, Value],
                    group: dict[str, Any]) -> Update:
        momentum = hyper.get("momentum", group["momentum"])
        if param.type.dtype.is_half:
            return _half_update(b, param, grad, state["momentum_buffer"], hyper["lr"], momentum, group)
        buffer = _lerp(b, state["momentum_buffer"], grad, complement(b, momentum))
        update = _lerp(b, grad, buffer, momentum) if group["nesterov"] else buffer
        orthogonal = _newton_schulz(b, update, group["ns_coefficients"], group["ns_steps"], group["eps"])
        # p (1 - lr wd) - adjusted_lr update, both factors computed in f64 and read in p's dtype
        # (torch: param.mul_(1 - lr * weight_decay); param.add_(update, alpha=-adjusted_lr))
        lr = host_scalar(b, hyper["lr"])
        decayed = b.mul(param, as_dtype_of(b, b.sub(f64(b, 1.0), b.mul(lr, f64(b, group["weight_decay"]))), param))
        rows, cols = param.type.shape
        step = as_dtype_of(b, b.mul(lr, f64(b, _lr_ratio(group["adjust_lr_fn"], rows, cols))), param)
        return b.sub(decayed, b.mul(step, orthogonal)), {"momentum_buffer": buffer}


def _half_update(b: Builder, param: Value, grad: Value, buffer: Value, lr: Value, momentum: float | Value,
                 group: dict[str, Any]) -> Update:
    """A half parameter's update as PyTorch's: the momentum lerps and the two parameter updates each compute in float32
    and round to half once (``in_opmath``), the Newton-Schulz iteration runs in bfloat16 (PyTorch's ``grad.bfloat16()``),
    ``adjusted_lr`` rounded to half as ``add``'s alpha is. PyTorch's ``addmm`` rounds once where kiln's iteration rounds
    its product and its sum: the orthogonalized update agrees to bfloat16 rounding, not bit for bit."""
    dtype = param.type.dtype
    wide = {name: b.cast(value, dtype=DType.f32) for name, value in (("p", param), ("g", grad), ("buf", buffer))}

    def store(value: Value) -> Value:
        return b.cast(b.cast(value, dtype=dtype), dtype=DType.f32)

    new_buffer = lerp(b, store, wide["buf"], wide["g"], complement(b, momentum))
    update = lerp(b, store, wide["g"], new_buffer, momentum) if group["nesterov"] else new_buffer
    orthogonal = _newton_schulz(b, b.cast(update, dtype=DType.bf16), group["ns_coefficients"], group["ns_steps"], group["eps"])
    rows, cols = param.type.shape
    rate = b.cast(lr, dtype=DType.f64)
    decay = b.sub(b.constant(1.0, DType.f64), b.mul(rate, b.constant(group["weight_decay"], DType.f64)))
    decayed = store(b.mul(wide["p"], b.cast(decay, dtype=DType.f32)))
    adjusted = store(b.cast(b.mul(rate, b.constant(_lr_ratio(group["adjust_lr_fn"], rows, cols), DType.f64)), dtype=DType.f32))
    new_param = b.sub(decayed, b.mul(adjusted, b.cast(orthogonal, dtype=DType.f32)))
    return b.cast(new_param, dtype=dtype), {"momentum_buffer": b.cast(new_buffer, dtype=dtype)}


def _lerp(b: Builder, start: Value, end: Value, weight: float | Value) -> Value:
    """``torch.lerp(start, end, weight)`` as PyTorch computes it: from ``start`` below weight 0.5, from ``end`` above
    (a weight fed each step: both, one selected on it), ``w - 1`` in the tensor's dtype as PyTorch's (``lerp``)."""
    return lerp(b, keep, start, end, weight)


def _newton_schulz(b: Builder, update: Value, coefficients: tuple[float, float, float], steps: int, eps: float) -> Value:
    """PyTorch's ``_zeropower_via_newtonschulz``: ``steps`` quintic iterations on the Frobenius-normalized update, on
    its wide orientation (``X X^T`` the smaller Gram matrix)."""
    a, c_b, c_c = coefficients
    tall = update.type.shape[0] > update.type.shape[1]
    x = b.transpose(update, perm=(1, 0)) if tall else update
    norm = b.sqrt(b.reduce_sum(b.mul(x, x), axes=None, keepdims=False))
    x = b.div(x, b.maximum(norm, b.scalar_like(eps, norm)))
    for _ in range(steps):
        gram = b.matmul(x, b.transpose(x, perm=(1, 0)))
        polynomial = b.add(b.mul(b.scalar_like(c_b, gram), gram), b.mul(b.scalar_like(c_c, gram), b.matmul(gram, gram)))
        x = b.add(b.mul(b.scalar_like(a, x), x), b.matmul(polynomial, x))
    return b.transpose(x, perm=(1, 0)) if tall else x


def _lr_ratio(adjustment: str | None, rows: int, cols: int) -> float:
    """PyTorch's ``_adjust_lr`` factor for a ``rows x cols`` parameter."""
    if adjustment == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))
