"""A half-precision model trained in kiln and in PyTorch side by side, in the same half dtype, step by step.

``half_lockstep`` builds the model with ``make(lib, nn, F)`` for both libraries from the same weights, makes both half
(``model.half()`` / ``model.bfloat16()``), trains them with the same optimizer on the same batches (kiln compiled by
``kiln.compile_train_step`` or eagerly with ``loss.backward(); optimizer.step()``), and yields both losses and
parameters (as float32 arrays) after every step.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import ml_dtypes
import numpy as np

import kiln
from oracles import libraries

NUMPY_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def twins(torch: Any, make: Callable[..., Any], dtype: str, seed: int = 0) -> tuple[Any, Any]:
    """``(model, twin)``: kiln's and PyTorch's ``make`` from kiln's initialisation, both converted to ``dtype``."""
    kiln.manual_seed(seed)
    model, twin = make(*libraries("kiln")), make(*libraries("torch"))
    for p, q in zip(model.parameters(), twin.parameters()):
        q.data = torch.tensor(np.asarray(p.data))
    for (name, b), (_, c) in zip(model.named_buffers(), twin.named_buffers()):
        c.data = torch.tensor(np.asarray(b.data))
    convert = {"float16": "half", "bfloat16": "bfloat16"}[dtype]
    return getattr(model, convert)(), getattr(twin, convert)()


def half_lockstep(torch: Any, make: Callable[..., Any], dtype: str, optimizer: str, options: dict[str, Any],
                  batches: list[tuple[np.ndarray, np.ndarray]], compiled: bool = True, **step_options: Any) -> Iterator[tuple[float, float, dict, dict]]:
    """Train kiln's and PyTorch's twins on ``batches`` (inputs float32 or integer, cast to ``dtype`` when float);
    yield ``(loss, torch loss, kiln parameters, torch parameters)`` after every step, parameters as float32."""
    import kiln.nn.functional as F

    model, twin = twins(torch, make, dtype)
    ours = getattr(kiln.optim, optimizer)(model.parameters(), **options)
    theirs = getattr(torch.optim, optimizer)(twin.parameters(), **options)
    step = kiln.compile_train_step(model, F.cross_entropy, ours, **step_options) if compiled else None
    for x, y in batches:
        xk = x.astype(NUMPY_DTYPES[dtype]) if x.dtype.kind == "f" else x
        loss = float(step(xk, y)) if compiled else _eager_step(model, ours, F.cross_entropy, xk, y)
        theirs.zero_grad()
        xt = torch.tensor(x).to(getattr(torch, dtype)) if x.dtype.kind == "f" else torch.tensor(x)
        expected = torch.nn.functional.cross_entropy(twin(xt), torch.tensor(y))
        expected.backward()
        theirs.step()
        yield loss, expected.item(), _floats(model.named_parameters()), {k: v.detach().float().numpy() for k, v in twin.named_parameters()}


def _eager_step(model: Any, optimizer: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray) -> float:
    optimizer.zero_grad()
    loss = loss_fn(model(kiln.tensor(x)), kiln.tensor(y))
    loss.backward()
    optimizer.step()
    return float(loss)


def _floats(named: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(p.data).astype(np.float32) for name, p in named}
