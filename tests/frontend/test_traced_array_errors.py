"""A traced tensor read as a NumPy array inside ``kiln.compile`` (SASRec's ``np.where(pos != 0)`` on a batch given as
NumPy arrays, which the compiled function traces as tensors): a ``TypeError`` as before, now located at the user's line
and saying what to write instead (``frontend/traced_array_errors.py``); it said to return the tensor from the function,
which does not help there. ``torch.LongTensor(log_seqs)`` of a traced batch is torch's alias
(tests/frontend/test_legacy_constructor_of_traced_tensor.py)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.frontend.traced_array_errors import TracedArrayError

BATCH = np.array([[0, 0, 3, 4], [0, 1, 2, 5]])


def numpy_mean(x):
    return x * float(np.asarray(x).mean())


def numpy_where(pos):
    return kiln.ones(pos.shape)[np.where(pos != 0)].sum()


@pytest.mark.parametrize("fn, line", [(numpy_mean, "return x * float(np.asarray(x).mean())"),
                                      (numpy_where, "return kiln.ones(pos.shape)[np.where(pos != 0)].sum()")])
@pytest.mark.parametrize("given", ["NumPy", "tensor"])
def test_numpy_work_on_a_traced_argument_names_the_line_and_the_tensor_form(fn, line, given):
    argument = BATCH if given == "NumPy" else kiln.tensor(BATCH)
    with pytest.raises(TypeError) as raised:
        kiln.compile(fn, fullgraph=True)(argument)
    assert isinstance(raised.value, TracedArrayError)
    message = str(raised.value)
    assert "test_traced_array_errors.py" in message and line in message
    assert "np.asarray() of a traced tensor<" in message and "is traced as a tensor too" in message
    assert "torch.where(x != 0)" in message and "do the NumPy work outside the compiled function" in message


def test_the_same_code_runs_eagerly():
    assert numpy_mean(kiln.tensor(BATCH)).tolist() == (BATCH * BATCH.mean()).tolist()
    assert numpy_where(kiln.tensor(BATCH)).item() == 5
