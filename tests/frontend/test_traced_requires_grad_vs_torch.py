"""``requires_grad`` inside a ``kiln.compile``d function is PyTorch's, as eagerly: a traced value requires grad iff it
is floating point and reaches, through differentiable ops (not past ``detach``, ``no_grad`` or an integer value), a
parameter that requires grad, an input given a tensor that requires grad, or a tensor marked by ``requires_grad_()``
(only leaves can be: ``requires_grad_(False)`` on a result that requires grad is PyTorch's RuntimeError). It was "float
and grad enabled", so ``x.detach().requires_grad`` was True in a trace. Compared with torch 2.13 eager (which
``torch.compile(backend="eager")`` keeps)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _flags(lib, x, y, trained, frozen, log):
    """Record ``requires_grad`` of the cases the brief names; returns a loss so the call is a training call."""
    h = trained(x)
    for name, tensor in [("x", x), ("y", y), ("trained(x)", h), ("frozen(y)", frozen(y)), ("frozen(x)", frozen(x)),
                         ("trained(y)", trained(y)), ("detach", h.detach()), ("argmax", h.argmax()),
                         ("long", h.long()), ("long().float()", h.long().float()), ("y * 2", y * 2)]:
        log.append((name, tensor.requires_grad))
    with lib.no_grad():
        log.append(("no_grad result", (h * 2).requires_grad))
        log.append(("no_grad, a result made before", h.requires_grad))
        with lib.enable_grad():
            log.append(("enable_grad in no_grad", (h * 2).requires_grad))
    marked = (y * 3).requires_grad_()
    log += [("marked", marked.requires_grad), ("marked * 2", (marked * 2).requires_grad)]
    detached = h.detach().requires_grad_()
    log.append(("detach().requires_grad_()", detached.requires_grad))
    log.append(("non-leaf requires_grad_(False)", _raises(lambda: (h * 2).requires_grad_(False))))
    log.append(("non-leaf requires_grad_(True)", _raises(lambda: (h * 2).requires_grad_(True))))
    log.append(("int requires_grad_()", _raises(lambda: h.argmax().requires_grad_())))
    marked.requires_grad_(False)
    log.append(("unmarked", marked.requires_grad))
    return h.sum() + detached.sum()


def _raises(action):
    try:
        action()
    except RuntimeError:
        return "RuntimeError"
    return "ok"


@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_traced_requires_grad_matches_torch_eager(x_requires_grad):
    torch = require_torch()
    logs = {}
    for lib in (torch, kiln):
        trained, frozen = lib.nn.Linear(3, 2), lib.nn.Linear(3, 2)
        frozen.requires_grad_(False)
        x = lib.tensor(np.ones((4, 3), np.float32), requires_grad=x_requires_grad)
        y = lib.tensor(np.full((4, 3), 2.0, np.float32))
        for form in ("eager", "compiled"):
            log = logs[lib.__name__, form] = []
            run = lambda x, y: _flags(lib, x, y, trained, frozen, log)  # noqa: E731
            (kiln.compile(run) if form == "compiled" and lib is kiln else run)(x, y)
    assert logs["kiln", "eager"] == logs["torch", "eager"]
    # Given no tensor that requires grad, the call is traced for inference first, then (the outputs read a trained
    # closure parameter, so they need a chain) for training; the log the failed first trace appended to is given its
    # contents back, and the one that stands is replayed once per call, as torch.compile's side effects.
    assert logs["kiln", "compiled"] == logs["torch", "compiled"]
    assert ("detach", False) in logs["kiln", "compiled"]  # the case that was wrong


def test_a_traced_branch_on_requires_grad_follows_torch():
    """Code branching on the flag (a hook only where a gradient flows) takes torch's branch once compiled."""
    torch = require_torch()
    taken = {}
    for lib in (torch, kiln):
        model = lib.nn.Linear(3, 1)

        def forward(x, lib=lib):
            features = x.detach()
            taken[lib.__name__] = (features.requires_grad, model(features).requires_grad)
            return model(features).sum()

        (kiln.compile(forward) if lib is kiln else forward)(lib.tensor(np.ones((2, 3), np.float32), requires_grad=True))
    assert taken["kiln"] == taken["torch"] == (False, True)
