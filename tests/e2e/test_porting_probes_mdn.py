"""Porting probe: a mixture density network as tonyduan/mdn writes it (``e2e/mdn_program.py``, written once, ``torch``
being torch or kiln), trained a few steps in both libraries from kiln's initial weights and compared in float64 to
1e-10: first outputs, first gradients, losses, the state after the steps, and the samples drawn at the end.

- ``MixtureDensityNetwork`` (models.py): pi and normal heads as ``nn.Sequential`` of ``nn.Linear`` and ``nn.GELU``,
  ``torch.log_softmax``, the normal head's output split by ``normal_params[..., :k]``, sigma by ``NoiseType`` (an
  ``Enum`` of ``auto()``; ``torch.exp(sigma + eps)``, ``.repeat(1, dim_out)`` across dims,
  ``.repeat(1, n_components * dim_out)`` across clusters, ``torch.full_like(mu, fill_value=...)`` fixed), the
  Gaussian mixture negative log-likelihood by ``torch.einsum("bij,bij->bi", z, z)``, ``torch.sum(torch.log(sigma))``
  and ``torch.logsumexp``; ``sample`` by ``torch.cumsum`` of the weights, ``torch.rand(len(x), 1).to(x)``,
  ``torch.searchsorted``, ``torch.randn_like(mu) * sigma + mu`` and ``torch.take_along_dim(...).squeeze(dim=1)``.
- examples/ex_1d.py: ``gen_data`` (one-to-many), ``torch.Tensor`` of the NumPy arrays, Adam with
  ``CosineAnnealingLR``, ``model.loss(x, y).mean()``, then ``model.sample(x)`` under ``torch.no_grad()``.
- The same density through ``torch.distributions``: ``MixtureSameFamily(Categorical(logits=log_pi),
  Independent(Normal(mu, sigma), 1))`` as the loss (``-mixture.log_prob(y).mean()``: models.py's loss plus the
  Gaussian's ``0.5 * dim_out * log(2 pi)``, the same gradients), trained eagerly and as one compiled step, then
  ``mixture.sample((n,))``, ``.mean`` and ``.variance``.
Each noise type trains eagerly and with the step one ``kiln.compile(fullgraph=True)`` graph.

Noise: ``sample``'s ``torch.rand`` and ``torch.randn_like`` (and ``MixtureSameFamily.sample``'s draws) come from each
library's own generator, which differ for one seed; the sampling test replaces ``rand`` and ``randn_like`` in both
libraries by the same NumPy draws, so kiln's samples must equal torch's; ``MixtureSameFamily.sample`` is checked by its
shape and its moments (20000 draws against ``.mean`` and ``.variance``).

Beside ``test_porting_probes_deq_np_siren.py``'s MDNs (a hand-written one and sagelywizard/pytorch-mdn). What broke:
nothing; everything agreed as first written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.mdn_program import NoiseType, gen_data, gen_data_2d, mixture_density_network, mixture_of
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot
from oracles import libraries

EX_1D_POINTS, HIDDEN, ITERATIONS = 64, 16, 5


def ex_1d_model(torch, nn, F):
    return mixture_density_network(torch, nn, F)(1, 1, n_components=3, hidden_dim=HIDDEN,
                                                 noise_type=NoiseType.DIAGONAL)


@pytest.fixture
def fed_noise(monkeypatch):
    """``rand`` and ``randn_like`` of both libraries replaced by the same NumPy draws (a generator per library, from
    one seed)."""
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        rng = np.random.default_rng(11)
        monkeypatch.setattr(lib, "rand", lambda *size, lib=lib, rng=rng: lib.tensor(rng.uniform(size=size)))
        monkeypatch.setattr(lib, "randn_like", lambda t, lib=lib, rng=rng: lib.tensor(rng.standard_normal(tuple(t.shape)),
                                                                                      dtype=t.dtype))


def train_ex_1d(torch, nn, F, model):
    """ex_1d.py's ``main`` (``argv.n_iterations`` 5, its logging left out)."""
    x, y = gen_data(EX_1D_POINTS)
    x = torch.Tensor(x)
    y = torch.Tensor(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, ITERATIONS)
    record = {"losses": []}
    for i in range(ITERATIONS):
        optimizer.zero_grad()
        loss = model.loss(x, y).mean()
        loss.backward()
        record.setdefault("first outputs", dict(zip(("log_pi", "mu", "sigma"), map(array, model(x)))))
        record.setdefault("grads", gradients(model))
        optimizer.step()
        scheduler.step()
        record["losses"].append(loss.item())
    with torch.no_grad():
        y_hat = model.sample(x)
    record.update(samples=array(y_hat), state=snapshot(model), dtype=str(y_hat.dtype).split(".")[-1])
    return record


def test_mdn_ex_1d_trains_and_samples_as_torch(float64_default, fed_noise):
    ours, theirs = run_in_lockstep(ex_1d_model, train_ex_1d)
    assert ours.pop("dtype") == theirs.pop("dtype") == "float64"
    assert_same_records(ours, theirs)
    assert ours["samples"].shape == (EX_1D_POINTS, 1)
    assert theirs["losses"][-1] < theirs["losses"][0]


NOISE_TYPES = {NoiseType.DIAGONAL: {}, NoiseType.ISOTROPIC: {}, NoiseType.ISOTROPIC_ACROSS_CLUSTERS: {},
               NoiseType.FIXED: dict(fixed_noise_level=0.3)}


def model_2d(noise_type):
    def build(torch, nn, F):
        return mixture_density_network(torch, nn, F)(1, 2, n_components=3, hidden_dim=HIDDEN, noise_type=noise_type,
                                                     **NOISE_TYPES[noise_type])

    return build


def batch_2d(lib):
    x, y = gen_data_2d()
    return lib.Tensor(x), lib.Tensor(y)


def adam(torch, model):
    return torch.optim.Adam(model.parameters(), lr=0.005)


def mdn_loss(torch, nn, F, model, x, y):
    return model.loss(x, y).mean()


def mixture_loss(torch, nn, F, model, x, y):
    return -mixture_of(torch, *model(x)).log_prob(y).mean()


def train_2d(loss_of, steps=3):
    """Adam on ``loss_of``; the first outputs and gradients, and the mixture's moments at the end."""

    def train(torch, nn, F, model):
        x, y = batch_2d(torch)
        optimizer = adam(torch, model)
        record = {"losses": []}
        for _ in range(steps):
            optimizer.zero_grad()
            loss = loss_of(torch, nn, F, model, x, y)
            loss.backward()
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        with torch.no_grad():
            mixture = mixture_of(torch, *model(x))
            record.update(mean=array(mixture.mean), variance=array(mixture.variance),
                          log_prob=array(mixture.log_prob(y)), state=snapshot(model))
        return record

    return train


@pytest.mark.parametrize("noise_type", NOISE_TYPES, ids=[t.name for t in NOISE_TYPES])
def test_mdn_noise_types_train_as_torch(float64_default, noise_type):
    ours, theirs = run_in_lockstep(model_2d(noise_type), train_2d(mdn_loss))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("noise_type", NOISE_TYPES, ids=[t.name for t in NOISE_TYPES])
def test_mdn_noise_types_compiled_step_as_torch(float64_default, noise_type):
    ours, theirs = run_in_lockstep(model_2d(noise_type), compiled_step_training(batch_2d, adam, mdn_loss))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_mdn_mixture_same_family_loss_trains_as_torch(float64_default, compiled):
    train = compiled_step_training(batch_2d, adam, mixture_loss) if compiled else train_2d(mixture_loss)
    ours, theirs = run_in_lockstep(model_2d(NoiseType.DIAGONAL), train)
    assert_same_records(ours, theirs)


def test_mdn_losses_differ_by_the_gaussian_constant(float64_default):
    """models.py's loss leaves out ``0.5 * dim_out * log(2 pi)``; ``MixtureSameFamily``'s keeps it: the same
    gradients (kiln, eagerly)."""
    torch, nn, F = libraries("kiln")
    kiln.manual_seed(0)
    model = model_2d(NoiseType.DIAGONAL)(torch, nn, F)
    x, y = batch_2d(torch)
    records = []
    for loss_of in (mdn_loss, mixture_loss):
        model.zero_grad()
        loss = loss_of(torch, nn, F, model, x, y)
        loss.backward()
        records.append({"loss": loss.item(), "grads": gradients(model)})
    np.testing.assert_allclose(records[1]["loss"] - records[0]["loss"], math.log(2 * math.pi), rtol=1e-12)
    assert_same_records(records[0]["grads"], records[1]["grads"], rtol=1e-12)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_mdn_mixture_samples_have_the_mixtures_moments(float64_default, name):
    """``MixtureSameFamily.sample((n,))`` of the network's mixture: shape ``(n, batch, dim_out)``, its mean and
    variance those of ``.mean`` and ``.variance`` (20000 draws: within 5 standard errors)."""
    torch, nn, F = libraries(name)
    torch.manual_seed(0)
    model = model_2d(NoiseType.DIAGONAL)(torch, nn, F)
    x, _ = batch_2d(torch)
    with torch.no_grad():
        mixture = mixture_of(torch, *model(x[:4]))
        samples = array(mixture.sample((20000,)))
        mean, variance = array(mixture.mean), array(mixture.variance)
    assert samples.shape == (20000, 4, 2)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * np.sqrt(variance / 20000))
    np.testing.assert_allclose(samples.var(0), variance, rtol=0.05)
