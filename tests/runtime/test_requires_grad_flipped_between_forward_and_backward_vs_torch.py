"""A parameter's ``requires_grad`` changed between the forward and ``backward()``, as PyTorch decides it: whether a
result requires grad is settled when its op runs (a parameter frozen at the forward gives a constant, even if unfrozen
before the backward), and ``backward()`` accumulates only into parameters that still require grad (its
``AccumulateGrad`` skips a leaf frozen since; the rest of the backward runs). DreamerV2's PyTorch port
(``tools.RequiresGrad``: ``requires_grad_(True)`` on enter, ``False`` on exit, the optimizer called after the ``with``)
raised "nothing to differentiate" in kiln, which read the flags at backward time (found by the Dreamer probe,
``tests/e2e/test_porting_probes_td3_dreamer_dt.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch


def _grads_after(name, freeze_after_forward, unfreeze_after_forward, create_graph=False):
    torch, nn, F = libraries(name)
    torch.manual_seed(0)
    first, second = nn.Linear(3, 2).double(), nn.Linear(2, 1).double()
    if name == "torch":
        for mine, twin in zip((first, second), REFERENCE["kiln"]):
            mine.load_state_dict({k: torch.tensor(v) for k, v in twin.items()})
    else:
        REFERENCE["kiln"] = [{k: np.asarray(v) for k, v in m.state_dict().items()} for m in (first, second)]
    second.requires_grad_(not unfreeze_after_forward)  # frozen at the forward when it is unfrozen after it
    loss = second(first(torch.tensor(np.linspace(-1, 1, 6).reshape(2, 3)))).square().sum()
    if freeze_after_forward:
        first.requires_grad_(False)
    if unfreeze_after_forward:
        second.requires_grad_(True)
    requires_grad = loss.requires_grad
    loss.backward(create_graph=create_graph)
    grads = {f"{k}.{n}": None if p.grad is None else np.asarray(p.grad.detach())
             for k, m in (("first", first), ("second", second)) for n, p in m.named_parameters()}
    return requires_grad, grads


REFERENCE: dict = {}


@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "backward(create_graph=True)"])
@pytest.mark.parametrize("freeze, unfreeze", [(True, False), (False, True), (True, True)],
                         ids=["frozen after the forward", "unfrozen after the forward", "both"])
def test_gradients_follow_the_flags_at_the_forward_and_at_the_backward_as_torch(freeze, unfreeze, create_graph):
    require_torch()
    ours = _grads_after("kiln", freeze, unfreeze, create_graph)
    theirs = _grads_after("torch", freeze, unfreeze, create_graph)
    assert ours[0] == theirs[0]
    assert {k: v is None for k, v in ours[1].items()} == {k: v is None for k, v in theirs[1].items()}
    for key, expected in theirs[1].items():
        if expected is not None:
            np.testing.assert_allclose(ours[1][key], expected, rtol=1e-12, err_msg=key)


def test_a_result_of_frozen_parameters_only_does_not_require_grad_even_when_they_are_unfrozen_before_backward():
    model = kiln.nn.Linear(3, 1).double().requires_grad_(False)
    out = model(kiln.ones(2, 3, dtype=kiln.float64)).sum()
    model.requires_grad_(True)
    assert not out.requires_grad
    with pytest.raises(RuntimeError, match="nothing to differentiate"):
        out.backward()
