"""Porting probe: Gaussian process regression in plain torch, as GPyTorch's math does it (without GPyTorch), written
once (``torch`` is ``torch`` or ``kiln``) and run in both from kiln's initial parameters.

- Exact GP: RBF (GPyTorch's ``sq_dist``: ``x1.pow(2).sum(-1, keepdim=True)`` ``- 2 x1 @ x2.T`` ``+ ...``,
  ``clamp_min_(0)`` and the diagonal zeroed in place by ``.diagonal(...).fill_(0)`` when ``x1 is x2``; or
  ``torch.cdist(...).pow(2)``) and Matern-5/2 (mean-centred inputs, ``torch.cdist``) kernels, lengthscale, outputscale
  and noise softplus-constrained (noise ``GreaterThan(1e-4)``), a constant mean; ``K + noise * I``,
  ``torch.linalg.cholesky``, ``torch.cholesky_solve``, the negative log marginal likelihood with
  ``2 * log(diag(L)).sum()``, Adam on the hyperparameters, then the predictive mean and variance through
  ``torch.linalg.solve_triangular``.
- A sparse variational GP (SVGP, whitened): inducing points ``Z`` as parameters, ``K_zz + jitter * I`` by
  ``torch.linalg.cholesky`` (and GPyTorch's ``psd_safe_cholesky`` by ``cholesky_ex`` eagerly), ``solve_triangular``
  for the whitened projection, a ``tril``'d variational Cholesky factor, the Gaussian expected log likelihood minus the
  whitened KL, Adam.

float64 to 1e-10 (forward, gradients, the parameters after the steps, predictions), eagerly and with the whole Adam
step in one ``kiln.compile(fullgraph=True)`` graph; kiln's gradients through cholesky / cholesky_solve /
solve_triangular / cdist also against float64 central finite differences of kiln's own loss; one float32 run (GPyTorch
trains in float32 by default) at float32's level (rtol 2e-6, atol 2e-7: the predictions differ by up to 4e-8). GPyTorch
2.x's ``psd_safe_cholesky`` verbatim on a batch where one matrix needs jitter (``cholesky_ex``'s ``info``, the jitter
written in place through ``Aprime.diagonal(...).add_``), gradients through it.

What broke: a failed ``torch.linalg.cholesky`` raised ``kiln.linalg.LinAlgError``, not a RuntimeError, so GPyTorch
1.x's jitter retry (``except RuntimeError``) let it escape (``tests/frontend/test_linalg_error_is_runtime_error_vs_torch.py``).
Probing around it: ``linalg.cholesky`` factored ``(A + A^T) / 2`` where torch's reads one triangle, so a non-symmetric
input gave another factor and gradient (``tests/frontend/test_cholesky_reads_one_triangle_vs_torch.py``).
Everything else agreed as first written. Noticed, then fixed: ``cholesky_solve`` and ``solve_triangular`` were LU
solves, agreeing with torch's substitutions to ~cond(K) * eps (5e-11 relative at cond(K) = 1.6e6, a GP with noise
1e-5); they are substitutions now (``tests/frontend/test_triangular_substitution_vs_torch.py``: 1e-15). Past 25 rows
torch's ``cdist`` uses its matmul form (distances off by ~sqrt(eps) |x|: 4e-8 on the diagonal), kiln's stays exact
(``compute_mode`` is checked, not followed); kernels of the squared distance or flat at 0 agree to 1e-10 anyway (the
30-point test), a Laplacian ``exp(-d)`` would differ by ~4e-8. ``distributions.LowRankMultivariateNormal``, missing
then, is tested in ``tests/distributions/test_lowrank_multivariate_normal.py``.
``torch.cholesky`` / ``torch.triangular_solve`` now warn torch's deprecation once per process
(``tests/frontend/test_deprecated_linalg_warns_once_vs_torch.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot
from oracles import libraries, require_torch

TRAIN, TEST, DIM, INDUCING = 12, 5, 2, 4


def _data(seed=0, train=TRAIN):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, (train, DIM))
    y = np.sin(2.0 * x[:, 0]) * np.cos(x[:, 1]) + 0.1 * rng.standard_normal(train)
    return x, y, rng.uniform(-2.0, 2.0, (TEST, DIM))


def gp_program(kernel="rbf"):
    def build(torch, nn, F):
        def inv_softplus(value):
            return math.log(math.expm1(value))

        def sq_dist(x1, x2, x1_eq_x2=False):
            """GPyTorch's ``sq_dist`` (gpytorch/kernels/kernel.py)."""
            x1_norm = x1.pow(2).sum(dim=-1, keepdim=True)
            x2_norm = x2.pow(2).sum(dim=-1, keepdim=True)
            res = x1_norm - 2.0 * x1 @ x2.transpose(-2, -1) + x2_norm.transpose(-2, -1)
            if x1_eq_x2:
                res.diagonal(dim1=-2, dim2=-1).fill_(0)
            return res.clamp_min_(0)

        class ExactGP(nn.Module):
            def __init__(self):
                super().__init__()
                self.raw_lengthscale = nn.Parameter(torch.full((1, DIM), inv_softplus(0.7)))
                self.raw_outputscale = nn.Parameter(torch.tensor(inv_softplus(1.0)))
                self.raw_noise = nn.Parameter(torch.tensor(inv_softplus(0.1)))
                self.mean_constant = nn.Parameter(torch.zeros(()))

            @property
            def lengthscale(self):
                return F.softplus(self.raw_lengthscale)

            @property
            def noise(self):
                return F.softplus(self.raw_noise) + 1e-4  # GreaterThan(1e-4)

            def covar(self, x1, x2):
                outputscale = F.softplus(self.raw_outputscale)
                if kernel == "rbf":
                    x1_, x2_ = x1.div(self.lengthscale), x2.div(self.lengthscale)
                    return outputscale * sq_dist(x1_, x2_, x1_eq_x2=x1 is x2).div(-2).exp()
                if kernel == "rbf cdist":
                    return outputscale * torch.exp(-0.5 * torch.cdist(x1 / self.lengthscale, x2 / self.lengthscale).pow(2))
                mean = x1.reshape(-1, x1.size(-1)).mean(0)[(None,) * (x1.dim() - 1)]
                distance = torch.cdist((x1 - mean).div(self.lengthscale), (x2 - mean).div(self.lengthscale))
                exp_component = torch.exp(-math.sqrt(5) * distance)
                constant_component = (math.sqrt(5) * distance).add(1).add(5.0 / 3.0 * distance ** 2)
                return outputscale * constant_component * exp_component

            def forward(self, x, y):
                """The negative log marginal likelihood per point."""
                n = x.shape[0]
                K = self.covar(x, x) + self.noise * torch.eye(n, dtype=x.dtype)
                L = torch.linalg.cholesky(K)
                residual = (y - self.mean_constant).unsqueeze(-1)
                alpha = torch.cholesky_solve(residual, L)
                data_fit = (residual * alpha).sum()
                log_det = 2 * torch.log(torch.diagonal(L)).sum()
                return 0.5 * (data_fit + log_det + n * math.log(2 * math.pi)) / n

            @torch.no_grad()
            def predict(self, x, y, x_star):
                K = self.covar(x, x) + self.noise * torch.eye(x.shape[0], dtype=x.dtype)
                L = torch.linalg.cholesky(K)
                K_star = self.covar(x_star, x)
                alpha = torch.cholesky_solve((y - self.mean_constant).unsqueeze(-1), L)
                mean = self.mean_constant + (K_star @ alpha).squeeze(-1)
                v = torch.linalg.solve_triangular(L, K_star.T, upper=False)
                variance = F.softplus(self.raw_outputscale) - v.pow(2).sum(0)
                return mean, variance, variance + self.noise

        return ExactGP()

    return build


def train_exact(steps=4, train=TRAIN):
    x, y, x_star = _data(train=train)

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        inputs, targets = torch.tensor(x), torch.tensor(y)
        record = {"losses": []}
        for _ in range(steps):
            optimizer.zero_grad()
            loss = model(inputs, targets)
            loss.backward()
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        record["predictions"] = [array(t) for t in model.predict(inputs, targets, torch.tensor(x_star))]
        return record

    return train


KERNELS = ["rbf", "rbf cdist", "matern52"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_gp_trains_and_predicts_as_torch(kernel, float64_default):
    ours, theirs = run_in_lockstep(gp_program(kernel), train_exact())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("kernel", ["rbf cdist", "matern52"])
def test_exact_gp_over_25_points_as_torch(kernel, float64_default):
    """30 training points: torch's ``cdist`` switches to its matmul form (``|x|^2 + |y|^2 - 2 x y``, clamped, square
    root) past 25 rows, whose diagonal is ~4e-8, not 0 (kiln's, from the differences, is 0); the kernels (through the
    squared distance, or flat at 0 as Matern's) agree to 1e-10 all the same."""
    ours, theirs = run_in_lockstep(gp_program(kernel), train_exact(steps=2, train=30))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_gp_compiled_step_as_torch(kernel, float64_default):
    x, y, _ = _data()
    train = compiled_step_training(lambda lib: (lib.tensor(x), lib.tensor(y)),
                                   lambda lib, model: lib.optim.Adam(model.parameters(), lr=0.1),
                                   lambda lib, nn, F, model, inputs, targets: model(inputs, targets), steps=4)
    ours, theirs = run_in_lockstep(gp_program(kernel), train)
    assert_same_records(ours, theirs)


def _finite_difference_gradients(model, loss, step=1e-6):
    """Central differences of ``loss()`` in each parameter entry (kiln's own forward, float64)."""
    result = {}
    for name, p in model.named_parameters():
        values, grad = np.array(p.data), np.zeros(tuple(p.shape))
        for index in np.ndindex(*values.shape):
            for sign in (1, -1):
                shifted = values.copy()
                shifted[index] += sign * step
                p.data.copy_(kiln.tensor(shifted))
                grad[index] += sign * loss().item() / (2 * step)
        p.data.copy_(kiln.tensor(values))
        result[name] = grad
    return result


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_gp_gradients_match_finite_differences(kernel, float64_default):
    x, y, _ = _data()
    kiln.manual_seed(0)
    model = gp_program(kernel)(*libraries("kiln"))
    inputs, targets = kiln.tensor(x), kiln.tensor(y)
    model(inputs, targets).backward()
    expected = _finite_difference_gradients(model, lambda: model(inputs, targets))
    assert_same_records(gradients(model), expected, rtol=1e-7, atol=1e-9)


def test_exact_gp_float32_as_torch():
    require_torch()
    ours, theirs = run_in_lockstep(gp_program("rbf"), train_exact())
    assert ours["losses"] and ours["state"]["raw_noise"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-6, atol=2e-7)


# --- sparse variational GP -------------------------------------------------------------------------------------------


def _psd_safe_cholesky(torch, A, jitter, max_tries):
    """GPyTorch 2.x's ``psd_safe_cholesky`` (gpytorch/utils/cholesky.py, without its warnings): ``cholesky_ex``; where
    ``info`` marks a failed matrix, jitter added to its diagonal in place (through ``diagonal()``) until all pass."""
    L, info = torch.linalg.cholesky_ex(A)
    if not torch.any(info):
        return L
    Aprime = A.clone()
    jitter_prev = 0
    for i in range(max_tries):
        jitter_new = jitter * (10**i)
        # add jitter only where needed
        diag_add = ((info > 0) * (jitter_new - jitter_prev)).unsqueeze(-1).expand(*Aprime.shape[:-1])
        Aprime.diagonal(dim1=-1, dim2=-2).add_(diag_add)
        jitter_prev = jitter_new
        L, info = torch.linalg.cholesky_ex(Aprime)
        if not torch.any(info):
            return L
    raise RuntimeError(f"Matrix not positive definite after repeatedly adding jitter up to {jitter_new:.1e}. "
                       f"Last error: {info}")


def _nearly_positive_definite(seed=2):
    """Two 4x4 covariances: one positive definite, one with eigenvalue -5e-7 (fixed by 1e-6 of jitter)."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    bad = q @ np.diag([2.0, 1.0, 0.5, -5e-7]) @ q.T
    good = q @ np.diag([1.5, 1.0, 0.7, 0.2]) @ q.T
    return np.stack([good, (bad + bad.T) / 2])


def test_psd_safe_cholesky_adds_jitter_where_torch_does(float64_default):
    matrices, weights = _nearly_positive_definite(), np.arange(32.0).reshape(2, 4, 4) / 10
    results = []
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        assert torch.linalg.cholesky_ex(torch.tensor(matrices))[1].tolist() == [0, 4]
        A = torch.tensor(matrices, requires_grad=True)
        L = _psd_safe_cholesky(torch, A, jitter=1e-6, max_tries=3)
        (L * torch.tensor(weights)).sum().backward()
        results.append({"L": array(L), "A.grad": array(A.grad)})
    assert_same_records(*results)


def svgp_program(safe_cholesky=False, jitter=1e-6):
    def build(torch, nn, F):
        def psd_safe_cholesky(A, max_tries=3):
            return _psd_safe_cholesky(torch, A, jitter=1e-6, max_tries=max_tries)

        class SVGP(nn.Module):
            def __init__(self, inducing_points):
                super().__init__()
                self.inducing_points = nn.Parameter(inducing_points.clone())
                m = inducing_points.size(0)
                self.variational_mean = nn.Parameter(torch.zeros(m))
                self.chol_variational_covar = nn.Parameter(torch.eye(m))
                self.raw_lengthscale = nn.Parameter(torch.zeros(DIM))
                self.raw_outputscale = nn.Parameter(torch.tensor(0.5))
                self.raw_noise = nn.Parameter(torch.tensor(-2.0))

            def kernel(self, x1, x2):
                lengthscale = F.softplus(self.raw_lengthscale)
                sq = torch.cdist(x1 / lengthscale, x2 / lengthscale).pow(2)
                return F.softplus(self.raw_outputscale) * torch.exp(-0.5 * sq)

            def predictive(self, x):
                z = self.inducing_points
                K_zz = self.kernel(z, z) + jitter * torch.eye(z.size(0), dtype=z.dtype)
                L = psd_safe_cholesky(K_zz) if safe_cholesky else torch.linalg.cholesky(K_zz)
                A = torch.linalg.solve_triangular(L, self.kernel(z, x), upper=False)  # whitened: L^-1 K_zx
                S = torch.tril(self.chol_variational_covar)
                mean = A.T @ self.variational_mean
                k_diag = F.softplus(self.raw_outputscale).expand(x.size(0))
                variance = k_diag - A.pow(2).sum(0) + (S.T @ A).pow(2).sum(0)
                return mean, variance, S

            def forward(self, x, y):
                """The negative ELBO per point."""
                mean, variance, S = self.predictive(x)
                noise = F.softplus(self.raw_noise) + 1e-4
                expected_log_lik = -0.5 * torch.log(2 * math.pi * noise) - 0.5 * ((y - mean).pow(2) + variance) / noise
                m = self.variational_mean
                kl = 0.5 * (S.pow(2).sum() + m.pow(2).sum() - m.numel()
                            - 2 * torch.log(torch.abs(torch.diagonal(S))).sum())
                return -(expected_log_lik.sum() - kl) / x.size(0)

        return SVGP(torch.tensor(np.linspace(-1.5, 1.5, INDUCING * DIM).reshape(INDUCING, DIM)))

    return build


def train_svgp(steps=4):
    x, y, x_star = _data(1)

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        inputs, targets = torch.tensor(x), torch.tensor(y)
        record = {"losses": []}
        for _ in range(steps):
            optimizer.zero_grad()
            loss = model(inputs, targets)
            loss.backward()
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        with torch.no_grad():
            record["predictions"] = [array(t) for t in model.predictive(torch.tensor(x_star))[:2]]
        return record

    return train


@pytest.mark.parametrize("safe_cholesky", [False, True], ids=["cholesky + jitter", "psd_safe_cholesky"])
def test_svgp_trains_as_torch(safe_cholesky, float64_default):
    ours, theirs = run_in_lockstep(svgp_program(safe_cholesky), train_svgp())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_svgp_compiled_step_as_torch(float64_default):
    x, y, _ = _data(1)
    train = compiled_step_training(lambda lib: (lib.tensor(x), lib.tensor(y)),
                                   lambda lib, model: lib.optim.Adam(model.parameters(), lr=0.05),
                                   lambda lib, nn, F, model, inputs, targets: model(inputs, targets), steps=4)
    ours, theirs = run_in_lockstep(svgp_program(), train)
    assert_same_records(ours, theirs)


def test_svgp_gradients_match_finite_differences(float64_default):
    x, y, _ = _data(1)
    kiln.manual_seed(0)
    model = svgp_program()(*libraries("kiln"))
    with kiln.no_grad():
        model.chol_variational_covar.add_(kiln.tensor(np.tril(np.full((INDUCING, INDUCING), 0.1), -1)))
        model.variational_mean.add_(kiln.tensor(np.linspace(-0.5, 0.5, INDUCING)))
    inputs, targets = kiln.tensor(x), kiln.tensor(y)
    model(inputs, targets).backward()
    expected = _finite_difference_gradients(model, lambda: model(inputs, targets))
    assert_same_records(gradients(model), expected, rtol=1e-6, atol=1e-8)
