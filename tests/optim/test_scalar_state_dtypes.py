"""NAdam's ``mu_product`` and ASGD's ``eta``/``mu`` (one number per parameter in torch) and the ``step`` of
``torch_state_dict()``: in torch 2.13's dtype (created in the default dtype's float32/float64 whatever the parameter's,
cast to the parameter's on load), so the updates, the state dicts and a resume either way match torch's.

Not matched: ASGD resumed under a float32 default dtype with float64 parameters. torch rounds each new ``eta``/``mu``
to the default dtype (``torch.as_tensor(lr / ...)``) before copying it into the loaded float64 state; kiln's update
computes it in float64 (a ~1e-8 relative difference), as it would need the default dtype as an op option."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

CASES = {"NAdam": dict(lr=0.05, momentum_decay=0.3), "ASGD": dict(lr=0.05, t0=2.0, lambd=0.01)}
SCALARS = {"NAdam": ("mu_product",), "ASGD": ("eta", "mu")}


def _pair(torch, name, dtype):
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(shape).astype(dtype) for shape in [(3, 4), (4,)]]
    ours = [kiln.nn.Parameter(kiln.tensor(v.copy())) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]
    return ours, getattr(kiln.optim, name)(ours, **CASES[name]), theirs, getattr(torch.optim, name)(theirs, foreach=False, **CASES[name])


def _steps(torch, ours, optimizer, theirs, reference, count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        for p, q in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(p.data.dtype)
            p.grad, q.grad = g.copy(), torch.tensor(g)
        optimizer.step()
        reference.step()
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), **_tolerance(p.data.dtype))


def _tolerance(dtype):
    """float64: to 1e-12 (a float32-rounded mu_product moves an update by ~1e-8); float32: to a few ulps (kiln's update
    ops round as torch's, not in torch's order everywhere)."""
    return dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-7)


def _same_torch_state(state, torch_state, dtype):
    """Each entry's keys, dtypes and values as torch's (kiln's arrays 0-d where torch's tensors are), to the parameters'
    tolerance."""
    assert state.keys() == torch_state.keys()
    for key, entry in torch_state.items():
        assert entry.keys() == state[key].keys()
        for name, value in entry.items():
            ours = np.asarray(state[key][name])
            assert str(ours.dtype) == str(value.dtype).split(".")[-1] and ours.shape == tuple(value.shape), (key, name)
            np.testing.assert_allclose(ours, value.numpy(), err_msg=f"{key}.{name}", **_tolerance(np.dtype(dtype)))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_updates_and_state_dicts_are_torchs_in_either_default_dtype(torch, default_dtype, name, dtype):
    ours, optimizer, theirs, reference = _pair(torch, name, dtype)
    _steps(torch, ours, optimizer, theirs, reference, 4, seed=1)
    _same_torch_state(optimizer.torch_state_dict()["state"], reference.state_dict()["state"], dtype)
    scalar = {"float32": np.float32, "float64": np.float64}[default_dtype]
    for state in optimizer.kiln_state_dict()["state"].values():
        assert all(state[key].dtype == scalar for key in SCALARS[name])


@pytest.mark.parametrize("name", ["NAdam"])  # ASGD: see the module docstring
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_resume_either_way_casts_as_torchs_load_and_continues_as_torch(torch, default_dtype, name, dtype):
    ours, optimizer, theirs, reference = _pair(torch, name, dtype)
    _steps(torch, ours, optimizer, theirs, reference, 3, seed=2)
    # kiln -> torch: a fresh torch optimizer loads kiln's state; torch -> kiln: a fresh kiln optimizer loads torch's
    saved = optimizer.torch_state_dict()
    torch_resumed = getattr(torch.optim, name)(theirs, foreach=False, **CASES[name])
    torch_resumed.load_state_dict({"state": {k: {n: torch.tensor(v) for n, v in e.items()} for k, e in saved["state"].items()},
                                   "param_groups": saved["param_groups"]})
    resumed = getattr(kiln.optim, name)(ours, **CASES[name])
    resumed.load_state_dict(reference.state_dict())
    _same_torch_state(resumed.torch_state_dict()["state"], torch_resumed.state_dict()["state"], dtype)
    for p in ours:
        assert all(resumed.state_of(p)[key].dtype == np.dtype(dtype) for key in SCALARS[name])  # the parameter's, as torch's load
    _steps(torch, ours, resumed, theirs, torch_resumed, 3, seed=3)
    _same_torch_state(resumed.torch_state_dict()["state"], torch_resumed.state_dict()["state"], dtype)
