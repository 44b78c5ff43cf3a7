"""Three PyTorch idioms: ``nn.init.*`` on a plain tensor (``nn.init.trunc_normal_(kiln.empty(...))``),
``register_buffer(..., persistent=False)`` and ``kiln.set_num_threads``/``get_num_threads``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require_torch


@pytest.mark.parametrize("init", [
    lambda nn_, t: nn_.init.normal_(t, 0.5, 0.02), lambda nn_, t: nn_.init.trunc_normal_(t, std=0.02),
    lambda nn_, t: nn_.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), lambda nn_, t: nn_.init.uniform_(t, -2, 2),
    lambda nn_, t: nn_.init.xavier_uniform_(t), lambda nn_, t: nn_.init.constant_(t, 3.0), lambda nn_, t: nn_.init.zeros_(t),
])
def test_init_fills_a_plain_tensor_in_place_with_torch_statistics(init):
    torch = require_torch()
    kiln.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = kiln.empty(400, 300), torch.empty(400, 300)
    assert init(nn, ours) is ours and init(torch.nn, theirs) is theirs
    assert ours.dtype == kiln.float32
    values, expected = ours.numpy(), theirs.numpy()
    np.testing.assert_allclose([values.mean(), values.std(), values.min(), values.max()],
                               [expected.mean(), expected.std(), expected.min(), expected.max()], rtol=0.05, atol=0.015)


def test_orthogonal_init_of_a_plain_tensor_and_of_a_parameter():
    rows = nn.init.orthogonal_(kiln.empty(3, 5)).numpy()
    np.testing.assert_allclose(rows @ rows.T, np.eye(3), atol=1e-6)
    parameter = nn.Parameter(kiln.empty(2, 2))
    nn.init.eye_(parameter)
    np.testing.assert_array_equal(parameter.data, np.eye(2))


def test_non_persistent_buffers_stay_out_of_the_state_dict_as_torch():
    torch = require_torch()
    modules = []
    for lib in (kiln, torch):
        module = lib.nn.Linear(2, 2)
        module.register_buffer("mask", lib.ones(2), persistent=False)
        module.register_buffer("count", lib.zeros(1))
        module.register_buffer("empty", None)
        modules.append(module)
    ours, theirs = modules
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias", "count"]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()] == ["mask", "count"]
    assert ours.empty is None
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})  # strict: the mask is not expected
    ours.register_buffer("mask", kiln.ones(2), persistent=True)
    assert "mask" in ours.state_dict()


def test_set_num_threads_resizes_the_blas_pool():
    require_torch()  # the same names torch has
    before = kiln.get_num_threads()
    try:
        kiln.set_num_threads(1)
        assert kiln.get_num_threads() == 1
        kiln.set_num_interop_threads(2)
        assert kiln.get_num_interop_threads() == 1
    finally:
        kiln.set_num_threads(before)
    with pytest.raises(ValueError, match="positive integer"):
        kiln.set_num_threads(0)
