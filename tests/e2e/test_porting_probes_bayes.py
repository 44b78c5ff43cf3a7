"""Porting probe: Bayes by Backprop, an analytic-KL Bayesian MLP and MC dropout (``tests/e2e/bayes_program.py``, one
text for both libraries), trained on a small synthetic classification set.

Idioms: ``nn.Parameter(torch.Tensor(out, in).uniform_(-0.2, 0.2))``; plain-object ``Gaussian``s holding a module's
parameters; ``sigma = torch.log1p(torch.exp(rho))``; ``torch.distributions.Normal(0, 1).sample(rho.size())``; the
scale-mixture prior with float32 ``torch.FloatTensor([math.exp(-6)])`` scales in a float64 run (torch's promotions);
``outputs[i] = self(input, sample=True)`` and ``log_priors[i] = ...`` into ``torch.zeros`` buffers; ``F.nll_loss(...,
size_average=False)``; the ELBO with Blundell's per-minibatch KL weight ``2^(M-i) / (2^M - 1)``; ``net.zero_grad()``;
the ensemble test (``net.eval()``, ``sample=True`` draws plus the mean weights, ``outputs.max(2, keepdim=True)[1]``,
``eq(...).sum(dim=1).squeeze()``); ``Normal(mu, F.softplus(rho)).rsample()`` weights with
``torch.distributions.kl_divergence(q, Normal(0, 1))``; MC dropout with ``model.eval()`` plus ``enable_dropout``
(``m.__class__.__name__.startswith('Dropout')``) or ``model.train()`` at test time, ``torch.stack`` of softmax
predictions, ``mean(dim=0)``, ``var(dim=0)``, predictive entropy.

Noise: the Gaussian draws (``Normal.sample``/``rsample``, ``loc + eps * scale``) read eps from ``NoiseTape``
(``tests/e2e/sac_program.py``: tensors refilled with NumPy noise before each step); torch's ``Normal.sample`` is its
``rsample`` detached for the test (what it computes, through ``torch.normal``). Dropout masks: kiln's run draws each
mask with its own ``F.dropout`` (of ones: 0 or ``1/(1-p)``), torch's run replays them.

Compared in float64 to 1e-10: every loss term, the first gradients and the parameters after the steps, the test
predictions, eagerly and with the whole step (``zero_grad``, ELBO, ``backward``, Adam) one
``kiln.compile(fullgraph=True)`` graph; the tutorial trains in float32, so Bayes by Backprop also runs so.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.bayes_program import (CLASSES, IN_FEATURES, analytic_elbo_loss, analytic_kl_network, bayes_by_backprop,
                               blundell_kl_weight, dropout_mlp, mc_dropout_predict)
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.sac_program import NoiseTape
from oracles import require_torch

BATCH, NUM_BATCHES, EPOCHS = 8, 3, 2


@pytest.fixture
def noise_tapes(monkeypatch):
    """``tapes[lib]``: each library's Normal draws come from the tape its run puts there."""
    torch = require_torch()
    from kiln.frontend.distributions import Distribution

    tapes = {}
    monkeypatch.setattr(torch.distributions.normal, "_standard_normal",
                        lambda shape, dtype=None, device=None: tapes[torch].draw(shape))
    monkeypatch.setattr(torch.distributions.Normal, "sample",
                        lambda self, sample_shape=torch.Size(): self.rsample(sample_shape).detach())
    monkeypatch.setattr(Distribution, "_standard_normal", lambda self, shape: tapes[kiln].draw(shape))
    return tapes


def dataset(torch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH * NUM_BATCHES, IN_FEATURES))
    y = (x @ rng.standard_normal((IN_FEATURES, CLASSES))).argmax(1)
    return torch.tensor(x, dtype=torch.get_default_dtype()), torch.tensor(y)


def weight_slots(samples):
    shapes = [(8, IN_FEATURES), (8,), (CLASSES, 8), (CLASSES,)]
    return {shape: samples for shape in shapes}


def train_bayes_by_backprop(tapes, compiled, test_samples=3):
    def train(torch, nn, F, net):
        tape = tapes[torch] = NoiseTape(torch, weight_slots(3), batch_size=None)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        x, y = dataset(torch)

        def step(data, target, kl_weight):
            net.zero_grad()
            tape.rewind()
            loss, log_prior, log_variational_posterior, negative_log_likelihood = net.sample_elbo(data, target, kl_weight)
            loss.backward()
            optimizer.step()
            return loss.detach(), log_prior.detach(), log_variational_posterior.detach(), negative_log_likelihood.detach()

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"steps": []}
        for epoch in range(EPOCHS):
            net.train()
            for batch_idx in range(NUM_BATCHES):
                data, target = x[batch_idx * BATCH:(batch_idx + 1) * BATCH], y[batch_idx * BATCH:(batch_idx + 1) * BATCH]
                tape.refill()
                record["steps"].append([t.item() for t in run(data, target, blundell_kl_weight(batch_idx, NUM_BATCHES))])
                record.setdefault("grads", gradients(net))
        record["state"] = snapshot(net)
        record["test"] = ensemble_test(torch, net, x, y, tape, test_samples)
        return record

    return train


def ensemble_test(torch, net, data, target, tape, test_samples):
    """The tutorial's ``test_ensemble`` on one batch."""
    net.eval()
    correct = 0
    corrects = np.zeros(test_samples + 1, dtype=int)
    tape.refill()
    with torch.no_grad():
        outputs = torch.zeros(test_samples + 1, data.shape[0], CLASSES).to("cpu")
        for i in range(test_samples):
            outputs[i] = net(data, sample=True)
        outputs[test_samples] = net(data, sample=False)
        output = outputs.mean(0)
        preds = outputs.max(2, keepdim=True)[1]
        output = output.max(1, keepdim=True)[1]  # index of max log-probability
        corrects += preds.eq(target.view(1, -1, 1)).sum(dim=1).squeeze().cpu().numpy()
        correct += output.eq(target.view_as(output)).sum().item()
    return {"outputs": array(outputs), "corrects": corrects, "correct": correct,
            "log_prior": float(net.l1.log_prior), "dtypes": str(preds.dtype).split(".")[-1]}


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_bayes_by_backprop_trains_as_torch(noise_tapes, compiled, float64_default):
    ours, theirs = run_in_lockstep(bayes_by_backprop, train_bayes_by_backprop(noise_tapes, compiled))
    assert ours["test"].pop("dtypes") == theirs["test"].pop("dtypes") == "int64"
    assert_same_records(ours, theirs)
    steps = np.array(theirs["steps"])
    assert len(steps) == EPOCHS * NUM_BATCHES and (steps[:, 0] > steps[:, 3]).all(), "the KL term counts"
    assert theirs["test"]["log_prior"] == 0 and theirs["test"]["correct"] > 0


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
def test_bayes_by_backprop_float32_trains_as_torch(noise_tapes):
    """The tutorial's float32: float32's level."""
    ours, theirs = run_in_lockstep(bayes_by_backprop, train_bayes_by_backprop(noise_tapes, False))
    assert ours["state"]["l1.weight_mu"].dtype == np.float32
    assert ours["test"].pop("dtypes") == theirs["test"].pop("dtypes")
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-4)


def train_analytic_kl(tapes, compiled, steps=4):
    def train(torch, nn, F, model):
        tape = tapes[torch] = NoiseTape(torch, weight_slots(2), batch_size=None)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
        x, y = dataset(torch, seed=1)

        def step(data, target, kl_weight):
            optimizer.zero_grad()
            tape.rewind()
            loss = analytic_elbo_loss(torch, F, model, data, target, kl_weight)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "kl": []}
        for index in range(steps):
            batch_idx = index % NUM_BATCHES
            tape.refill()
            data, target = x[batch_idx * BATCH:(batch_idx + 1) * BATCH], y[batch_idx * BATCH:(batch_idx + 1) * BATCH]
            record["losses"].append(run(data, target, blundell_kl_weight(batch_idx, NUM_BATCHES)).item())
            record.setdefault("grads", gradients(model))
            with torch.no_grad():
                record["kl"].append(model.kl().item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_analytic_kl_bayesian_mlp_trains_as_torch(noise_tapes, compiled, float64_default):
    ours, theirs = run_in_lockstep(analytic_kl_network, train_analytic_kl(noise_tapes, compiled))
    assert_same_records(ours, theirs)
    assert theirs["kl"][0] > 0


class MaskTape:
    """kiln's run draws each dropout mask with its own ``F.dropout`` (of ones: 0 or ``1 / (1 - p)``) and records it;
    torch's run replays them, so both drop the same units."""

    def __init__(self):
        self.masks, self.at = [], 0

    def kiln_dropout(self, own_dropout):
        def dropout(input, p=0.5, training=True, inplace=False):
            if not training or p == 0:
                return input
            mask = own_dropout(kiln.ones_like(input), p, True)
            self.masks.append(array(mask))
            return input * mask

        return dropout

    def torch_dropout(self, torch):
        def dropout(input, p=0.5, training=True, inplace=False):
            if not training or p == 0:
                return input
            self.at += 1
            return input * torch.tensor(self.masks[self.at - 1])

        return dropout


@pytest.fixture
def mask_tape(monkeypatch):
    torch = require_torch()
    import kiln.frontend.functional as kiln_functional

    tape = MaskTape()
    monkeypatch.setattr(kiln_functional, "dropout", tape.kiln_dropout(kiln_functional.dropout))
    monkeypatch.setattr(torch.nn.functional, "dropout", tape.torch_dropout(torch))
    return tape


def train_mc_dropout(steps=3):
    def train(torch, nn, F, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = dataset(torch, seed=2)
        record = {"losses": []}
        model.train()
        for index in range(steps):
            batch = slice(index * BATCH, (index + 1) * BATCH)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            record["losses"].append(loss.item())
            record.setdefault("grads", gradients(model))
        record["trained"] = snapshot(model)
        for keep_batchnorm_eval in (True, False):
            predictions, mean, variance, entropy = mc_dropout_predict(torch, F, model, x[:BATCH], 4, keep_batchnorm_eval)
            record[f"mc {keep_batchnorm_eval}"] = {"predictions": array(predictions), "mean": array(mean),
                                                   "variance": array(variance), "entropy": array(entropy),
                                                   "state": snapshot(model)}
            record[f"modes {keep_batchnorm_eval}"] = [m.training for m in model.modules()]
        return record

    return train


def test_mc_dropout_evaluation_as_torch(mask_tape, float64_default):
    ours, theirs = run_in_lockstep(dropout_mlp, train_mc_dropout())
    for key in ("modes True", "modes False"):
        assert ours.pop(key) == theirs.pop(key), key
    assert_same_records(ours, theirs)
    assert mask_tape.at == len(mask_tape.masks) == 3 * 2 + 2 * 4 * 2
    p = 0.3
    assert all(set(np.unique(mask)) <= {0.0, 1 / (1 - p)} for mask in mask_tape.masks)
    kept = np.mean([(mask > 0).mean() for mask in mask_tape.masks])
    assert 0.5 < kept < 0.9, "kiln's dropout keeps about 1 - p of the units"
    eval_bn, train_bn = theirs["mc True"]["state"], theirs["mc False"]["state"]
    np.testing.assert_array_equal(eval_bn["bn.running_mean"], theirs["trained"]["bn.running_mean"])
    assert not np.allclose(train_bn["bn.running_mean"], eval_bn["bn.running_mean"]), "model.train() updates BatchNorm"
    assert (theirs["mc True"]["variance"] > 0).any()
