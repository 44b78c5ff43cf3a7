"""``torch.nn.modules.module.register_module_*_hook``: global hooks, run for every module's call before its own."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
from oracles import require


def _log_calls(lib, log):
    register = lib.nn.modules.module
    return [register.register_module_forward_pre_hook(lambda m, args: log.append(("pre", type(m).__name__))),
            register.register_module_forward_hook(lambda m, args, out: log.append(("post", type(m).__name__, tuple(out.shape)))),
            register.register_module_full_backward_hook(lambda m, gin, gout: log.append(("backward", type(m).__name__)))]


def _model(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.ReLU(), lib.nn.Linear(4, 2))


def test_global_hooks_run_for_every_module_in_torchs_order():
    torch = require("torch")
    logs = {}
    for lib in (kiln, torch):
        log = logs[lib.__name__] = []
        model = _model(lib)
        model[0].register_forward_hook(lambda m, args, out: log.append(("own", type(m).__name__)))
        handles = _log_calls(lib, log)
        try:
            model(lib.ones(5, 3, requires_grad=True)).sum().backward()
        finally:
            for handle in handles:
                handle.remove()
        model(lib.ones(5, 3))  # removed: only the module's own hook
    assert logs["kiln"] == logs["torch"]


def test_a_global_hook_that_replaces_outputs_is_traced_and_its_removal_retraced():
    torch = require("torch")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    kiln.manual_seed(0)
    model = _model(kiln)
    compiled = kiln.compile(model)
    plain = np.array(compiled(x))
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, args, out: out * 2 if isinstance(m, nn.Linear) else None)
    try:
        hooked = np.array(model(kiln.tensor(x)).detach())
        assert not np.allclose(hooked, plain)
        np.testing.assert_allclose(np.array(compiled(x)), hooked, rtol=1e-6)  # both Linears doubled: a new trace
    finally:
        handle.remove()
    np.testing.assert_allclose(np.array(compiled(x)), plain, rtol=1e-6)
    assert hasattr(torch.nn.modules.module, "register_module_full_backward_pre_hook")
    assert hasattr(nn.modules.module, "register_module_full_backward_pre_hook")
