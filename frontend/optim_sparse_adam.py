"""``torch.optim.SparseAdam``: lazy Adam over the rows present in a sparse gradient (``nn.Embedding(sparse=True)``).

```python
emb = nn.Embedding(vocab, dim, sparse=True)
opt = optim.SparseAdam(emb.parameters(), lr=1e-3)
```

Each step coalesces each parameter's sparse ``.grad`` (duplicate rows summed) and moves only those rows and their two
moments, in torch 2.13's order of operations (``torch/optim/_functional.py``'s ``sparse_adam``): a row absent from the
gradient keeps its moments undecayed, which is where it differs from ``Adam`` on the dense gradient. Eager only: in a
``kiln.compile``d step the gradients are dense (a sparse lookup runs the step eagerly, ``frontend/sparse_embedding.py``),
so the step refuses them as torch's does.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.frontend.module import ArrayLeaf, Parameter
from kiln.frontend.optim_base import Optimizer, Update
from kiln.frontend.sparse_embedding import looked_up_sparsely_in_a_trace
from kiln.frontend.sparse_grad import SparseGrad, is_sparse_grad
from kiln.frontend.torch_array import plain
from kiln.frontend.trace import step_capture

DENSE_REFUSAL = "SparseAdam does not support dense gradients, please consider Adam instead"


class SparseAdam(Optimizer):
    """``torch.optim.SparseAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False)``."""

    torch_counts_steps = True
    torch_step_is_int = True  # torch's SparseAdam counts state["step"] as a Python int

    def __init__(self, params: Iterable[Any], lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 maximize: bool = False):
        _check_options(float(lr), tuple(betas), eps)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "maximize": maximize})
        _refuse_complex(self.param_groups)

    def check_group(self, group: dict[str, Any]) -> None:
        _check_options(float(group["lr"]), tuple(group["betas"]), group["eps"])

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def emit_update(self, b: Builder, param: Value, grad: Value, state: dict[str, Value], hyper: dict[str, Value],
                    group: dict[str, Any]) -> Update:
        raise RuntimeError(DENSE_REFUSAL)  # a traced step's gradients are dense (see the module doc)

    def state_dict(self) -> dict[str, Any]:
        """``Optimizer.state_dict`` with each ``step`` a Python int, as torch's SparseAdam keeps it (a float32
        tensor there would make torch's bias correction float32)."""
        state = super().state_dict()
        for entry in state["state"].values():
            if "step" in entry:
                entry["step"] = int(entry["step"])
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One lazy Adam update of every parameter with a ``.grad`` (each must be sparse, as torch's)."""
        from kiln.runtime.eager_optim import count_step, own_step  # lazily: the runtime builds on the frontend

        loss = closure() if closure is not None else None
        if step_capture() is not None:
            raise RuntimeError(DENSE_REFUSAL)
        parameters = [p for p in self.trained_parameters() if p.grad is not None]
        dense = [p for p in parameters if not is_sparse_grad(p.grad)]
        if dense:
            raise RuntimeError(DENSE_REFUSAL + _why_dense(dense))
        for parameter in parameters:
            group = self.group_of(parameter)
            _sparse_adam(plain(parameter._data), parameter.grad, self.state_of(parameter), group, own_step(self, parameter))
        if parameters:
            count_step(self, parameters)
        return loss


def _why_dense(parameters: list[Parameter]) -> str:
    """kiln's reason, where a compiled function looked a parameter up with ``sparse=True``: its gradient is dense."""
    if not any(looked_up_sparsely_in_a_trace(p) for p in parameters):
        return ""
    return (" (kiln: a parameter looked up by embedding(sparse=True) inside a compiled function, kiln.compile(model) or "
            "compile_train_step, gets a dense gradient there; call the model uncompiled for a sparse .grad, or use Adam)")


def _sparse_adam(param: np.ndarray, grad: SparseGrad, state: dict[str, np.ndarray], group: dict[str, Any], step: int) -> None:
    """torch's ``sparse_adam`` for one parameter, in place (the parameter's dtype throughout)."""
    beta1, beta2 = group["betas"]
    grad = (-grad if group["maximize"] else grad).coalesce()
    rows, values = grad._index_array[0], grad._value_array.astype(param.dtype, copy=False)
    if values.size == 0:
        return
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    old_exp_avg = exp_avg[rows]
    exp_avg_update = (values - old_exp_avg) * (1 - beta1)
    exp_avg[rows] += exp_avg_update
    old_exp_avg_sq = exp_avg_sq[rows]
    exp_avg_sq_update = (values ** 2 - old_exp_avg_sq) * (1 - beta2)
    exp_avg_sq[rows] += exp_avg_sq_update
    numer = exp_avg_update + old_exp_avg
    denom = np.sqrt(exp_avg_sq_update + old_exp_avg_sq) + group["eps"]
    step_size = float(group["lr"]) * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    param[rows] += -step_size * (numer / denom)


def _check_options(lr: float, betas: tuple[float, float], eps: float) -> None:
    """torch's ``ValueError``s for SparseAdam's options."""
    if not 0.0 < lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 < eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def _refuse_complex(groups: list[dict[str, Any]]) -> None:
    complex_params = [[g, p] for g, group in enumerate(groups) for p, param in enumerate(group["params"])
                      if isinstance(param, ArrayLeaf) and np.iscomplexobj(plain(param._data))]
    if complex_params:
        raise ValueError(f"Complex params at indices {complex_params}: SparseAdam does not support complex parameters")


__all__ = ["SparseAdam"]
