"""``share_memory_()`` and ``Module.share_memory()``, as mnist_hogwild calls them before starting its
``torch.multiprocessing`` workers: kiln refuses (a no-op would let each worker train a private copy while the parent's
model stays untrained), naming the call and the user's line and saying what to do; ``is_shared()`` answers False, as
torch's for a tensor not moved to shared memory."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError
from oracles import require_torch


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


def test_module_share_memory_is_refused_at_the_users_line_saying_what_to_do():
    model = Net()
    with pytest.raises(TraceError, match=r"Net\.share_memory\(\): kiln .* cannot share it with other processes") as error:
        model.share_memory()
    message = str(error.value)
    assert "Hogwild" in message and "train in one process" in message and "DistributedDataParallel" in message
    assert "test_port_seq_share_memory.py" in message and "model.share_memory()" in message  # the user's source line


@pytest.mark.parametrize("make", [lambda: kiln.ones(2, 3), lambda: nn.Parameter(np.ones(3))], ids=["tensor", "parameter"])
def test_tensor_share_memory_is_refused_and_is_shared_answers_false_as_torchs_before_sharing(make):
    torch = require_torch()
    tensor = make()
    assert tensor.is_shared() is False and torch.ones(2, 3).is_shared() is False
    with pytest.raises(TraceError, match=r"Tensor\.share_memory_\(\): kiln .* Hogwild training .* not supported"):
        tensor.share_memory_()


def test_the_model_still_trains_in_one_process_after_the_refusal():
    model = Net()
    with pytest.raises(TraceError):
        model.share_memory()
    before = model.fc1.weight.data.copy()
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    loss = nn.functional.nll_loss(model(kiln.ones(5, 4)).log_softmax(dim=1), kiln.tensor(np.zeros(5, dtype=np.int64)))
    loss.backward()
    optimizer.step()
    assert not np.array_equal(before, model.fc1.weight.data)
