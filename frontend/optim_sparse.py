"""Which optimizers take a sparse ``.grad`` (``nn.Embedding(sparse=True)``'s), as ``torch.optim`` 2.13's do.

``SGD`` (momentum, nesterov, dampening, maximize included) and ``Adagrad`` update as their sparse paths do: a row
absent from the gradient has a zero gradient there, and neither update moves it nor its state then, so kiln feeds
them the dense sum of the sparse gradient (``SparseGrad.dense_array``) and the numbers are torch's. ``LBFGS`` densifies
it, as torch's. ``SparseAdam`` (``frontend/optim_sparse_adam.py``) needs it. The others refuse it with torch's words.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.sparse_grad import is_sparse_grad


def check_sparse_gradients(optimizer: Any, parameters: list[Any]) -> None:
    """Raise torch's ``RuntimeError`` where ``optimizer`` is given a sparse ``.grad`` it cannot take."""
    sparse = [p for p in parameters if is_sparse_grad(p.grad)]
    if sparse:
        refusal = _refusal(optimizer, [optimizer.group_of(p) for p in sparse])
        if refusal:
            raise RuntimeError(refusal)


def _refusal(optimizer: Any, groups: list[dict[str, Any]]) -> str | None:
    from kiln.frontend.optim_algorithms import SGD, Adagrad, Adam  # lazily: the algorithms build on the base

    decayed = any(group.get("weight_decay", 0) != 0 for group in groups)
    if isinstance(optimizer, SGD):
        return "add(sparse, dense) is not supported. Use add(dense, sparse) instead." if decayed else None
    if isinstance(optimizer, Adagrad):
        return "weight_decay option is not compatible with sparse gradients" if decayed else None
    if isinstance(optimizer, Adam):  # AdamW too, as torch's (its update is Adam's)
        return "Adam does not support sparse gradients, please consider SparseAdam instead"
    return f"{type(optimizer).__name__} does not support sparse gradients"


__all__ = ["check_sparse_gradients"]
