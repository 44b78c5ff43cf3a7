"""The rest of ``torch.func``: ``linearize``, ``functionalize``, ``replace_all_batch_norm_modules_`` and
``debug_unwrap``, over ``runtime/torch_func.py``'s transforms.

```python
out, jvp_fn = kiln.func.linearize(f, x)          # jvp_fn(t) is J(x) t: f's jvp at x, for any tangent
kiln.func.functionalize(f)                        # f: kiln's traces are functional already
kiln.func.replace_all_batch_norm_modules_(model)  # batch norms use batch statistics only (for vmap ensembles)
```
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.frontend.module import Module
from kiln.runtime.torch_func import jvp
from kiln.runtime.traced_transform import writes_suppressed


def linearize(func: Callable[..., Any], *primals: Any) -> tuple[Any, Callable[..., Any]]:
    """``(func(*primals), jvp_fn)`` with ``jvp_fn(*tangents)`` the Jacobian-vector product at ``primals``. torch
    traces the linearized function once; kiln's ``jvp_fn`` runs ``kiln.func.jvp`` at each call (its forward again
    with it): the same values, at a forward's cost more per call. ``func``'s in-place writes (BatchNorm's running
    statistics) are made once, by the first call, as torch's."""
    output = func(*primals)

    def jvp_fn(*tangents: Any) -> Any:
        if len(tangents) != len(primals):
            raise RuntimeError(f"linearize: jvp_fn takes {len(primals)} tangent(s), one per primal, got {len(tangents)}")
        with writes_suppressed():
            return jvp(func, primals, tangents)[1]

    return output, jvp_fn


def functionalize(func: Callable[..., Any], *, remove: str = "mutations") -> Callable[..., Any]:
    """``func`` itself: a kiln trace already turns in-place ops and views into pure ops (torch's functionalize removes
    them so transforms can run)."""
    if remove not in ("mutations", "mutations_and_views"):
        raise RuntimeError(f"functionalize(f, remove='mutations'): got invalid argument for remove: {remove}")
    return func


def replace_all_batch_norm_modules_(root: Module) -> Module:
    """Every batch norm in ``root`` stops tracking running statistics (``running_mean``, ``running_var`` and
    ``num_batches_tracked`` None), so it normalizes by the batch's in training and evaluation, as torch's."""
    from kiln.frontend.batch_norm_base import _BatchNorm  # lazily: the layers build on the runtime

    for module in root.modules():
        if isinstance(module, _BatchNorm):
            module.running_mean = module.running_var = module.num_batches_tracked = None
            module.track_running_stats = False
    return root


def debug_unwrap(tensor: Any, *, recurse: bool = True) -> Any:
    """``tensor``: kiln's transforms do not wrap tensors."""
    return tensor


__all__ = ["debug_unwrap", "functionalize", "linearize", "replace_all_batch_norm_modules_"]
