"""``buffer.copy_(src)`` / ``parameter.data.copy_(src)`` outside a trace cast ``src`` to the tensor's dtype and broadcast
it to its shape, as PyTorch's: an EMA over ``state_dict()`` values (timm's ModelEmaV2, ``ema_v.copy_(d * ema_v + (1 -
d) * model_v)``) writes a float into BatchNorm's int64 ``num_batches_tracked`` (truncated); kiln raised NumPy's
``Cannot cast ... according to the rule 'same_kind'``. A source that does not broadcast still raises."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


@pytest.mark.parametrize("target, source", [("int64", 2.75), ("int64", -1.5), ("bool", 0.25), ("float32", 1 / 3),
                                            ("int32", 7.9)])
def test_copy_into_a_buffer_casts_as_torch(target, source):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        bn = lib.nn.BatchNorm1d(2)
        bn.register_buffer("extra", lib.zeros(2, 3, dtype=getattr(lib, target)))
        bn.extra.copy_(lib.full((2, 3), source, dtype=lib.float64))
        bn.num_batches_tracked.copy_(lib.tensor(source, dtype=lib.float64))
        results.append((np.array(bn.extra.numpy()), np.array(bn.num_batches_tracked.numpy())))
    for ours, theirs in zip(*results):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)


def test_state_dict_ema_updates_an_int_buffer_as_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        model = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.BatchNorm1d(3)).double()
        ema = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.BatchNorm1d(3)).double()
        model.load_state_dict({k: lib.tensor(np.full(tuple(v.shape), 3.0)) for k, v in model.state_dict().items()})
        ema.load_state_dict({k: lib.tensor(np.full(tuple(v.shape), 1.0)) for k, v in ema.state_dict().items()})
        with lib.no_grad():
            for ema_v, model_v in zip(ema.state_dict().values(), model.state_dict().values()):
                ema_v.copy_(0.6 * ema_v + 0.4 * model_v)
        results.append({k: np.array(v.numpy()) for k, v in ema.state_dict().items()})
    for key in results[1]:
        assert results[0][key].dtype == results[1][key].dtype, key
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-15, err_msg=key)


def test_copy_broadcasts_the_source_and_refuses_what_does_not_broadcast():
    torch = require_torch()
    ours, theirs = kiln.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    with kiln.no_grad(), torch.no_grad():
        ours.weight.copy_(kiln.tensor([1.0, 2.0, 3.0]))
        theirs.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(np.array(ours.weight.detach().numpy()), theirs.weight.detach().numpy())
    with kiln.no_grad(), pytest.raises(Exception, match=r"shape \(2,\) into a parameter of shape \(2, 3\)"):
        ours.weight.copy_(kiln.tensor([1.0, 2.0]))
