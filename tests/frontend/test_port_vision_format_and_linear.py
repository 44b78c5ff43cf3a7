"""Two small PyTorch idioms the regression and Forward-Forward examples use: ``'{:+.2f}'.format(w)`` of 0-d tensors
(``Tensor.__format__``, with ``item()`` of a 0-d ``Parameter``), and ``nn.Linear``'s positional ``(in, out, bias,
device, dtype)`` that a ``Layer(nn.Linear)`` subclass passes to ``super().__init__``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError
from oracles import require_torch


def poly_desc(W, b):
    """The regression example's description of the learned polynomial."""
    result = 'y = '
    for i, w in enumerate(W):
        result += '{:+.2f} x^{} '.format(w, i + 1)
    return result + '{:+.2f}'.format(b[0])


def test_0d_tensors_format_their_number_as_torch():
    torch = require_torch()
    fc = nn.Linear(4, 1).double()
    twin = torch.nn.Linear(4, 1).double()
    twin.load_state_dict({name: torch.tensor(value) for name, value in fc.state_dict().items()})
    assert poly_desc(fc.weight.view(-1), fc.bias) == poly_desc(twin.weight.view(-1), twin.bias)
    loss = (fc(np.ones((3, 4))) ** 2).mean()
    assert f"{loss:.6e}|{loss:>12.3f}" == f"{(twin(torch.ones(3, 4, dtype=torch.float64)) ** 2).mean():.6e}|{(twin(torch.ones(3, 4, dtype=torch.float64)) ** 2).mean():>12.3f}"
    scalar = nn.Parameter(np.array(2.5))
    assert (scalar.item(), f"{scalar:.2f}", float(scalar)) == (2.5, "2.50", 2.5)
    assert "{}".format(fc.bias[0]) == str(fc.bias[0])


def test_only_0d_tensors_take_a_format_spec_and_traced_ones_refuse():
    with pytest.raises(TypeError, match="unsupported format string"):
        "{:.2f}".format(nn.Linear(4, 1).weight)

    def printed(x):
        return f"{x.sum():.2f}"

    with pytest.raises(TraceError, match="item\\(\\) of a traced"):
        kiln.trace(printed, kiln.TensorSpec((3,), "float32"))


def test_linear_takes_torch_positional_device_and_dtype():
    class Layer(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            super().__init__(in_features, out_features, bias, device, dtype)

    assert Layer(3, 2).weight.data.dtype == np.float32
    assert Layer(3, 2, True, "cpu", kiln.float64).weight.data.dtype == np.float64
    assert nn.Linear(3, 2, dtype="float64").bias.data.dtype == np.float64
    assert Layer(3, 2, False).bias is None
