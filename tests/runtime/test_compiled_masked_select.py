"""``masked_select`` in a ``kiln.compile``'d function whose mask is known while tracing: computed from the call's
inputs (FastSpeech 2's loss ``pitch_predictions.masked_select(~get_mask_from_lengths(src_lens, max_src_len))``, made
from the lengths it is given) it is specialized and guarded as a length read by ``.item()`` is
(``frontend/value_guards.py``): another mask traces a variant. A constant (closure) mask gives a known shape too.
kiln refused both ("masked_select() has a data-dependent shape") where torch 2.13's ``torch.compile(fullgraph=True)``
compiles such a step (one graph, the size unbacked). Checked against torch 2.13's eager loop in float64; a mask
computed from a trained parameter stays refused."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries

LENGTHS = ([5, 3], [2, 4], [5, 3])  # the third call gives the first mask again: the first variant's guard holds


def masked_regression(torch, nn, F, closure_mask=None):
    """One SGD step of a masked MSE over the valid frames, each call's mask made from its lengths (or ``closure_mask``)."""
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(x, target, lengths):
        mask = torch.arange(0, x.shape[1]).unsqueeze(0).expand(x.shape[0], -1) >= lengths.unsqueeze(1)
        valid = ~mask if closure_mask is None else closure_mask
        prediction = model(x).squeeze(-1)
        loss = F.mse_loss(prediction.masked_select(valid), target.masked_select(valid))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return model, step


def _run(name, closure_mask=None):
    torch, nn, F = libraries(name)
    kiln.manual_seed(0)
    rng = np.random.default_rng(0)
    model, step = masked_regression(torch, nn, F, None if closure_mask is None else torch.tensor(closure_mask))
    if name == "torch":
        model.load_state_dict({key: torch.tensor(value) for key, value in _initial.items()})
    else:
        _initial.update({key: np.array(value.numpy()) for key, value in model.state_dict().items()})
        step = kiln.compile(step, fullgraph=True)
    losses = []
    for lengths in LENGTHS:
        x, target = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5))
        losses.append(step(torch.tensor(x), torch.tensor(target), torch.tensor(lengths)).item())
    return losses, {key: np.array(value.detach().numpy()) for key, value in model.state_dict().items()}


_initial: dict[str, np.ndarray] = {}


@pytest.mark.parametrize("closure_mask", [None, [[True, True, False, True, False], [False, True, True, True, True]]],
                         ids=["mask from the input lengths", "closure mask"])
def test_masked_select_in_a_compiled_step_as_torch(closure_mask, float64_default):
    (our_losses, our_state), (their_losses, their_state) = _run("kiln", closure_mask), _run("torch", closure_mask)
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-12)
    for key in their_state:
        np.testing.assert_allclose(our_state[key], their_state[key], rtol=1e-12, atol=1e-15)


def test_masked_select_by_a_trained_parameter_stays_refused():
    """A mask read from a parameter changes at every step: no specialization, the error says what to do."""
    weight = kiln.nn.Parameter(kiln.tensor([1.0, -1.0, 2.0]))
    compiled = kiln.compile(lambda x: x.masked_select(weight > 0).sum(), fullgraph=True)
    with pytest.raises(KilnError, match="masked_select.. has a data-dependent shape"):
        compiled(kiln.tensor([1.0, 2.0, 3.0]))
