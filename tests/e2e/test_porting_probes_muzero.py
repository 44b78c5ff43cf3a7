"""Porting probe: MuZero's training as werner-duvaud/muzero-general writes it (``e2e/muzero_program.py``, written once,
``torch`` being torch or kiln), trained a few steps in both libraries from kiln's initial weights and compared in
float64 to 1e-10: the losses ``update_weights`` returns, the priorities, the first gradients and the state after each
step.

- models.py: ``MuZeroNetwork.__new__`` picking ``MuZeroFullyConnectedNetwork`` (an ``AbstractNetwork(ABC,
  torch.nn.Module)``), every sub-network an ``mlp`` (``nn.Sequential`` of ``nn.Linear`` and ``nn.ELU``/
  ``nn.Identity``) wrapped in ``torch.nn.DataParallel`` (state keys ``...module.0.weight``), the min-max
  ``normalize_encoded_state`` per sample (``min(1, keepdim=True)[0]``, the in-place
  ``scale[scale < 1e-5] += 1e-5`` on a tensor inside the graph), ``dynamics``' one-hot action
  (``torch.zeros(...).to(device).float()``, ``scatter_(1, action.long(), 1.0)``, ``torch.cat`` with the float64
  state), ``initial_inference``'s zero reward (``torch.log`` of a ``scatter``'d one-hot ``.repeat``ed: ``-inf``
  entries); ``support_to_scalar`` (``torch.softmax``, a ``.expand``ed ``.float()`` support, the inverse of
  ``h(x) = sign(x)(sqrt(|x| + 1) - 1) + 0.001 x``) and ``scalar_to_support`` (``torch.clamp``, ``floor``,
  ``scatter_`` of ``1 - prob`` and ``prob``, ``masked_fill_`` at the support's top); ``get_weights``/``set_weights``
  (``dict_to_cpu`` of the ``state_dict``, ``copy.deepcopy``).
- trainer.py: ``Trainer.__init__`` (Adam with ``weight_decay``), ``update_lr`` (``lr_init * lr_decay_rate **
  (training_step / lr_decay_steps)`` written into each ``param_group["lr"]``), ``update_weights`` (the batch from
  Python lists, ``scalar_to_support`` targets, the unroll over ``num_unroll_steps`` with
  ``hidden_state.register_hook(lambda grad: grad * 0.5)``, each step's per-sample losses hooked by
  ``lambda grad: grad / gradient_scale_batch[:, i]`` (``i`` read when backward runs, as Python closures do: the last
  step's scale for every step, as in the repository), priorities from ``support_to_scalar(...).detach().cpu()
  .numpy()`` into a float32 NumPy array, the importance weights ``loss *= weight_batch``) and ``loss_function``
  (``(-target * torch.nn.LogSoftmax(dim=1)(logits)).sum(1)``).
- The paper pseudocode's ``scale_gradient`` (``tensor * scale + tensor.detach() * (1 - scale)``) after each
  ``recurrent_inference`` in place of the hook (not the same training: the hook halves the prediction heads'
  gradients into the hidden state too, the pseudocode only the next dynamics step's).

Adaptations: the batches are ``replay_batch``'s NumPy draws (values and rewards beyond the support's reach, a game
ending inside the unroll) instead of the Ray replay buffer; ``update_weights`` converts the batch with
``.to(model dtype)`` where the repository writes ``.float()``, so the float64 runs stay float64 (a float32 observation
cannot meet float64 weights in ``F.linear``, nor a float32 target be ``scatter_``ed into float64 zeros: torch
raises); models.py's own ``.float()`` calls (the support, the one-hot action) stay: their values are exact.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln

from e2e.muzero_program import muzero_config, muzero_models, muzero_trainer, replay_batch, scale_gradient
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries

TRAINING_STEPS = 4


def network(config):
    def build(torch, nn, F):
        return muzero_models(torch).MuZeroNetwork(config)

    return build


def train_muzero(config, compiled=False):
    """trainer.py's ``continuous_update_weights`` in miniature: ``update_lr`` then ``update_weights`` on each batch;
    the returned losses and priorities, the learning rates, the first gradients, and the state after the steps.
    ``compiled``: kiln's ``update_weights`` under ``kiln.compile`` (torch's eager)."""

    def train(torch, nn, F, model):
        trainer = muzero_trainer(torch)({"weights": model.get_weights(), "training_step": 0}, config)
        if compiled and torch is kiln:
            trainer.update_weights = kiln.compile(trainer.update_weights)
        record = {"steps": {}, "lrs": []}
        for step in range(TRAINING_STEPS):
            trainer.update_lr()
            record["lrs"].append(trainer.optimizer.param_groups[0]["lr"])
            priorities, total_loss, value_loss, reward_loss, policy_loss = trainer.update_weights(
                replay_batch(config, seed=step))
            record["steps"][f"step {step}"] = dict(priorities=priorities, total=total_loss, value=value_loss,
                                                   reward=reward_loss, policy=policy_loss)
            record.setdefault("grads", gradients(trainer.model))
        record["state"] = snapshot(trainer.model)
        record["priorities dtype"] = str(priorities.dtype)
        return record

    return train


@pytest.mark.parametrize("scaling", ["register_hook", "scale_gradient"])
def test_muzero_update_weights_as_torch(float64_default, scaling):
    config = muzero_config(scale_hidden_gradient=scaling)
    ours, theirs = run_in_lockstep(network(config), train_muzero(config))
    assert ours.pop("priorities dtype") == theirs.pop("priorities dtype") == "float32"
    assert_same_records(ours, theirs)
    assert "representation_network.module.0.weight" in theirs["state"]
    np.testing.assert_allclose(theirs["lrs"], [0.02 * 0.8 ** (s / 2) for s in range(TRAINING_STEPS)], rtol=1e-15)


def test_muzero_compiled_update_weights_runs_eagerly_as_torch(float64_default):
    """``kiln.compile(trainer.update_weights)``: the hooks (``register_hook`` on the hidden state and on the losses)
    are traced into the compiled backward (``frontend/traced_hooks.py``); the priorities' ``.numpy()`` keeps the step
    from being one graph (as in torch.compile), so kiln runs it eagerly, warned, with torch's numbers."""
    config = muzero_config()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, theirs = run_in_lockstep(network(config), train_muzero(config, compiled=True))
    assert any("runs eagerly" in str(w.message) for w in caught)
    assert ours.pop("priorities dtype") == theirs.pop("priorities dtype") == "float32"
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_support_round_trip(float64_default, name):
    """``support_to_scalar`` inverts ``scalar_to_support`` inside the support's reach (the support as logits: ``log``
    of the two-hot vector, ``-inf`` elsewhere); beyond it the value saturates at ``h^-1(support_size)``."""
    torch, nn, F = libraries(name)
    models = muzero_models(torch)
    x = torch.tensor([[-90.0, -3.25, -1.0, 0.0, 0.4, 7.0, 110.0, 500.0]])
    support = models.scalar_to_support(x, 10)
    assert tuple(support.shape) == (1, 8, 21)
    np.testing.assert_allclose(array(support.sum(-1)), 1.0, rtol=1e-15)
    back = array(models.support_to_scalar(torch.log(support[0]), 10))[:, 0]
    np.testing.assert_allclose(back[:-1], array(x)[0, :-1], rtol=1e-9, atol=1e-9)
    assert 110 < back[-1] < 500


def test_support_transforms_as_torch(float64_default):
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        models = muzero_models(torch)
        rng = np.random.default_rng(4)
        x = torch.tensor(rng.uniform(-200, 200, (5, 3)))
        logits = torch.tensor(rng.standard_normal((5, 21)), requires_grad=True)
        scalar = models.support_to_scalar(logits, 10)
        scalar.sum().backward()
        encoded = torch.tensor(rng.standard_normal((5, 4)), requires_grad=True)
        normalized = models.normalize_encoded_state(encoded)
        (normalized * torch.tensor(rng.standard_normal((5, 4)))).sum().backward()
        scaled = scale_gradient(encoded, 0.25)
        results.append(dict(support=array(models.scalar_to_support(x, 10)), scalar=array(scalar),
                            logits_grad=array(logits.grad), normalized=array(normalized),
                            encoded_grad=array(encoded.grad),
                            scaled=array(scaled)))
    assert_same_records(*results)
