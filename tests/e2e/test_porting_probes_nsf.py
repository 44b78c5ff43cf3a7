"""Porting probe: neural spline flows as bayesiains/nflows writes them (``e2e/nsf_program.py``, written once, ``torch``
being torch or kiln), trained a few steps in both libraries from kiln's initial weights on two moons and compared in
float64 to 1e-10: first gradients, losses, the state after the steps, the samples drawn through the inverse; float32 at
float32's level.

- ``unconstrained_rational_quadratic_spline`` with linear tails: the interval masks ``(inputs >= -B) & (inputs <=
  B)`` and ``~mask``, ``F.pad(unnormalized_derivatives, pad=(1, 1))`` then ``[..., 0] = constant`` writes,
  ``outputs[outside] = inputs[outside]``, ``if torch.any(inside)``, the tuple assignment ``outputs[inside],
  logabsdet[inside] = rational_quadratic_spline(inputs[inside], widths[inside, :], ...)``.
- ``rational_quadratic_spline``: ``torch.min(inputs) < left`` domain check, ``F.softmax`` widths and heights,
  ``torch.cumsum``, ``F.pad(..., pad=(1, 0), mode="constant", value=0.0)``, ``cumwidths[..., 0] = left`` writes,
  ``F.softplus(..., beta=beta)`` derivatives (``beta = np.log(2) / (1 - min_derivative)`` with
  ``enable_identity_init``), the bin index by torchutils' ``searchsorted`` (``bin_locations[..., -1] += eps`` in place
  on a tensor autograd needs, then ``torch.sum(inputs[..., None] >= bin_locations, dim=-1) - 1``) or by
  ``torch.searchsorted(..., right=True)``, ``.gather(-1, bin_idx)[..., 0]`` of the bin parameters, the forward
  rational-quadratic map and, inverted, the quadratic's root ``2c / (-b - sqrt(b^2 - 4ac))`` with ``assert
  (discriminant >= 0).all()``.
- ``PiecewiseRationalQuadraticCouplingTransform``: ``torch.as_tensor(mask)``, the feature split by
  ``torch.arange(features).masked_select(mask <= 0)`` buffers, ``inputs[:, self.identity_features, ...]``, a
  ``ResidualNet`` (``ResidualBlock``s with ``init.uniform_(..., -1e-3, 1e-3)`` last layers, ``F.relu``,
  ``nn.Dropout(p=0)``), ``transform_params.reshape(b, d, -1)``, ``unnormalized_widths /= np.sqrt(hidden_features)``
  in place on a slice of the network's output, ``torch.empty_like(inputs)`` filled by ``outputs[:, features, ...] =``;
  ``create_alternating_binary_mask`` (``torch.zeros(features).byte()``, ``mask[start::2] += 1``).
- ``RandomPermutation`` (``torch.randperm`` buffer, ``torch.index_select``, the inverse by ``torch.argsort``),
  ``CompositeTransform`` (``inputs.new_zeros(batch_size)``, ``total_logabsdet += logabsdet``, the inverse over
  ``self._transforms[::-1]``), ``StandardNormal`` (``torch.Size(shape)``, a non-persistent float64 ``_log_z`` buffer,
  ``torch.randn(num_samples, *shape, device=self._log_z.device)``), ``Flow`` (``nn.Identity()(None)`` as the
  embedding of no context), ``-flow.log_prob(inputs=x).mean()`` with Adam, then ``flow.sample(n)``.

Compiled: the flow's forward branches on the data (``if torch.any(inside_interval_mask)``, the domain check) and
picks elements by boolean masks (data-dependent shapes), so no single graph holds a step: torch.compile(fullgraph=True)
refuses it too (measured: dynamo's "Data-dependent branching" on ``if torch.any(...)``). ``kiln.compile(step)`` runs
the step eagerly with one warning naming that line, as torch.compile falls back; the ``ResidualNet``s compile
(``net.compile(fullgraph=True)``), each forward one graph whose backward ``loss.backward()`` runs.

Noise: ``torch.randperm`` and ``StandardNormal``'s ``torch.randn`` come from each library's generator; the
permutations are loaded from kiln's state (buffers), and the sampling test feeds the same NumPy draws to both
libraries' ``randn``. What broke: nothing; everything agreed as first written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.nsf_program import make_moons, nflows, splines
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries

POINTS, HIDDEN, BINS, TAIL_BOUND, STEPS, SAMPLES = 64, 16, 5, 1.5, 3, 50
MOONS = make_moons(POINTS, noise=0.1, seed=0)


def spline_flow(torch, nn, F, num_layers=2):
    """The moons flow of nflows' examples with spline couplings: ``[RandomPermutation, coupling]`` per layer, the
    couplings' masks alternating, a ``StandardNormal`` base."""
    N = nflows(torch, nn, F)
    transforms = []
    for i in range(num_layers):
        transforms.append(N["RandomPermutation"](features=2))
        transforms.append(N["PiecewiseRationalQuadraticCouplingTransform"](
            mask=N["create_alternating_binary_mask"](2, even=(i % 2 == 0)),
            transform_net_create_fn=lambda in_features, out_features: N["ResidualNet"](
                in_features, out_features, hidden_features=HIDDEN, num_blocks=2),
            num_bins=BINS, tails="linear", tail_bound=TAIL_BOUND))
    return N["Flow"](N["CompositeTransform"](transforms), N["StandardNormal"](shape=[2]))


@pytest.fixture
def fed_randn(monkeypatch):
    """``randn`` of both libraries replaced by the same NumPy draws (a generator per library, from one seed)."""
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        rng = np.random.default_rng(7)
        monkeypatch.setattr(lib, "randn", lambda *size, device=None, lib=lib, rng=rng: lib.tensor(
            rng.standard_normal(size), dtype=lib.get_default_dtype()))


def train_moons(torch, nn, F, flow):
    """nflows' moons example (Adam, ``-flow.log_prob(inputs=x).mean()``), then ``flow.sample`` and the round trip of
    the samples back to the base."""
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    x = torch.tensor(MOONS, dtype=torch.get_default_dtype())
    record = {"losses": []}
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = -flow.log_prob(inputs=x).mean()
        loss.backward()
        record.setdefault("grads", gradients(flow))
        optimizer.step()
        record["losses"].append(loss.item())
    with torch.no_grad():
        samples = flow.sample(SAMPLES)
        noise, logabsdet = flow._transform(samples)
        _, inverse_logabsdet = flow._transform.inverse(noise)
    record.update(samples=array(samples), noise=array(noise), logabsdet=array(logabsdet),
                  inverse_logabsdet=array(inverse_logabsdet), state=snapshot(flow),
                  dtype=str(samples.dtype).split(".")[-1])
    return record


def test_nsf_moons_trains_and_samples_as_torch(float64_default, fed_randn):
    ours, theirs = run_in_lockstep(spline_flow, train_moons)
    assert ours.pop("dtype") == theirs.pop("dtype") == "float64"
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]
    np.testing.assert_allclose(ours["noise"], np.random.default_rng(7).standard_normal((SAMPLES, 2)), atol=1e-12)
    np.testing.assert_allclose(ours["logabsdet"], -ours["inverse_logabsdet"], atol=1e-12)
    assert (np.abs(ours["noise"]) > TAIL_BOUND).any() and (np.abs(ours["noise"]) < TAIL_BOUND).any()  # both pieces


def test_nsf_moons_float32_trains_as_torch(fed_randn):
    """float32 (the default dtype): values at float32's level. Measured: the losses 1e-7 apart (relative), the samples
    8e-7, the log-determinants 2e-6; Adam's normalized steps (lr 1e-2) turn rounding-level differences of small
    gradients into weights up to 6e-6 apart, hence ``atol=1e-5`` (``rtol=1e-4`` for entries near zero)."""
    ours, theirs = run_in_lockstep(spline_flow, train_moons)
    assert ours.pop("dtype") == theirs.pop("dtype") == "float32"
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def torch_searchsorted(torch):
    """torchutils' ``searchsorted`` by ``torch.searchsorted``: the number of knots at or below each input, less one."""

    def searchsorted(bin_locations, inputs, eps=1e-6):
        bin_locations[..., -1] += eps
        return torch.searchsorted(bin_locations, inputs[..., None], right=True)[..., 0] - 1

    return searchsorted


@pytest.mark.parametrize("identity_init", [False, True], ids=["softplus", "softplus beta"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("search", ["torchutils", "torch.searchsorted"])
def test_nsf_spline_and_its_gradients_as_torch(float64_default, search, inverse, identity_init):
    """The spline alone on inputs in [-3, 3] with tails beyond 2: outputs, log-determinants and the gradients of
    both with respect to the inputs and the three unnormalized parameter sets."""
    rng = np.random.default_rng(0)
    values = dict(inputs=rng.uniform(-3, 3, (20, 2)), unnormalized_widths=rng.standard_normal((20, 2, 6)),
                  unnormalized_heights=rng.standard_normal((20, 2, 6)),
                  unnormalized_derivatives=rng.standard_normal((20, 2, 5)))
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        spline, _ = splines(torch, F, torch_searchsorted(torch) if search == "torch.searchsorted" else None)
        tensors = {key: torch.tensor(value, requires_grad=True) for key, value in values.items()}
        outputs, logabsdet = spline(**tensors, inverse=inverse, tails="linear", tail_bound=2.0,
                                    enable_identity_init=identity_init)
        (outputs.sum() + 0.3 * logabsdet.sum()).backward()
        records.append({"outputs": array(outputs), "logabsdet": array(logabsdet),
                        "grads": {key: array(t.grad) for key, t in tensors.items()}})
    assert_same_records(records[0], records[1])
    outside = np.abs(values["inputs"]) > 2.0
    np.testing.assert_array_equal(records[0]["outputs"][outside], values["inputs"][outside])  # the linear tails


def adam_step(torch, flow):
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    x = torch.tensor(MOONS)

    def step(x):
        optimizer.zero_grad()
        loss = -flow.log_prob(inputs=x).mean()
        loss.backward()
        optimizer.step()
        return loss

    return step, x


def train_step_compiled(torch, nn, F, flow):
    """The step under ``kiln.compile`` (no fullgraph): run eagerly, warned once."""
    step, x = adam_step(torch, flow)
    run = kiln.compile(step) if torch is kiln else step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [run(x).item() for _ in range(STEPS)]
    return {"losses": losses, "state": snapshot(flow), "warnings": [str(w.message) for w in caught]}


def test_nsf_compiled_step_falls_back_as_torch_compile_does(float64_default):
    ours, theirs = run_in_lockstep(spline_flow, train_step_compiled)
    warned = ours.pop("warnings")
    assert theirs.pop("warnings") == []
    assert len(warned) == 1 and "runs eagerly" in warned[0] and "if torch.any(inside_interval_mask)" in warned[0]
    assert_same_records(ours, theirs)


def train_with_compiled_nets(torch, nn, F, flow):
    """The couplings' ``ResidualNet``s compiled in kiln (``net.compile(fullgraph=True)``), the loop eager."""
    if torch is kiln:
        for transform in flow._transform._transforms:
            if hasattr(transform, "transform_net"):
                transform.transform_net.compile(fullgraph=True)
    step, x = adam_step(torch, flow)
    return {"losses": [step(x).item() for _ in range(STEPS)], "state": snapshot(flow)}


def test_nsf_compiled_transform_nets_train_as_torch(float64_default):
    ours, theirs = run_in_lockstep(spline_flow, train_with_compiled_nets)
    assert_same_records(ours, theirs)
