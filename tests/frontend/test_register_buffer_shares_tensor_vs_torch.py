"""``register_buffer(name, t)`` keeps ``t``'s memory, as PyTorch's keeps ``t`` itself: a write into the buffer
(``load_state_dict``, ``buffer.copy_`` under no_grad, a compiled step's write-back aside) shows in ``t``, in
``t.data`` and in views of it. pytorch-ntm registers ``init_r_bias.data`` as a buffer and reads its initial reads
from the list ``self.init_r += [init_r_bias]``: after ``load_state_dict`` a restored model read stale values."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries


def _reads_bias(torch, nn):
    class ReadBias(nn.Module):
        """ntm/ntm.py's pattern, reduced."""

        def __init__(self):
            super().__init__()
            init_r_bias = torch.randn(1, 3) * 0.01
            self.register_buffer("read0_bias", init_r_bias.data)
            self.init_r = [init_r_bias]

        def forward(self, batch_size):
            return self.init_r[0].clone().repeat(batch_size, 1)

    return ReadBias()


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_load_state_dict_writes_the_registered_tensor_as_torch(name):
    torch, nn, F = libraries(name)
    model = _reads_bias(torch, nn)
    model.load_state_dict({"read0_bias": torch.tensor([[1.0, 2.0, 3.0]])})
    np.testing.assert_array_equal(model(2).numpy(), [[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_a_view_of_the_registered_tensor_sees_the_write_as_torch(name):
    torch, nn, F = libraries(name)
    base = torch.zeros(2, 3)
    module = nn.Module()
    module.register_buffer("table", base)
    row = base[1]
    with torch.no_grad():
        module.table.copy_(torch.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(base.numpy(), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(row.numpy(), [3, 4, 5])


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_two_buffers_from_two_tensors_stay_apart_as_torch(name):
    torch, nn, F = libraries(name)
    module = nn.Module()
    module.register_buffer("a", torch.zeros(3))
    module.register_buffer("b", torch.zeros(3))
    module.load_state_dict({"a": torch.ones(3), "b": torch.zeros(3)})
    np.testing.assert_array_equal(module.b.numpy(), [0, 0, 0])
    assert module.state_dict()["a"].dtype == torch.float32 and module.state_dict()["b"].dtype == torch.float32
