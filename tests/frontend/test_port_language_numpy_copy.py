"""``np.array(tensor)`` copies and ``np.asarray(tensor)`` shares, for eager tensors and parameters, as for PyTorch's
CPU tensors. word_language_model's state registered as a buffer from ``init_hidden`` (``new_zeros``) used to alias
the eager tensor's read-only array, so a compiled step could not write the carried state back."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
from oracles import require_torch


def test_np_array_copies_and_np_asarray_shares_as_for_torch_tensors():
    torch = require_torch()
    for tensor, values in ((kiln.tensor([1.0, 2.0]) * 2, lambda t: t.numpy()), (nn.Parameter(np.ones(2)), lambda p: p.data),
                           (torch.tensor([1.0, 2.0]) * 2, lambda t: t.numpy())):
        copied, shared = np.array(tensor), np.asarray(tensor)
        assert not np.shares_memory(copied, values(tensor)) and copied.flags.writeable
        assert np.shares_memory(shared, values(tensor))
        assert np.array(tensor, dtype=np.float32).dtype == np.float32


class CarriedState(nn.Module):
    """A recurrent state kept as a buffer and written by each compiled step (truncated BPTT, compiled)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(2, 3)
        self.register_buffer("hidden", next(self.parameters()).new_zeros(1, 4, 3))

    def forward(self, x):
        output, hidden = self.rnn(x, self.hidden)
        self.hidden.copy_(hidden.detach())
        return output.sum()


def test_a_buffer_registered_from_new_zeros_takes_a_compiled_steps_write():
    kiln.manual_seed(0)
    model = CarriedState()
    step = kiln.compile_train_step(model, lambda out, target: out * target, kiln.optim.SGD(model.parameters(), lr=0.0),
                                   batch_dim=None)
    x = np.random.default_rng(0).normal(size=(5, 4, 2)).astype(np.float32)
    expected = model.rnn(kiln.tensor(x))[1].numpy()
    step(x, np.float32(1.0))
    np.testing.assert_allclose(model.hidden.data, expected, rtol=1e-6)
