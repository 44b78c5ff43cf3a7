"""Assigning to a module's registered parameter name, as PyTorch's ``Module.__setattr__``: a Parameter replaces it,
``None`` clears it, anything else (a tensor, one requiring grad, a number) raises ``TypeError: cannot assign
'torch.DoubleTensor' as parameter 'weight' (torch.nn.Parameter or None expected)``. kiln let a tensor replace the
parameter (dropping it from ``parameters()`` and ``state_dict``): salesforce/awd-lstm-lm's WeightDrop trained on in
kiln after an evaluation where torch 2.x stops (``tests/e2e/test_porting_probes_awd_lstm_qrnn.py``)."""

import pytest

from oracles import libraries, require_torch

LIBRARIES = ["kiln", "torch"]
VALUES = {
    "tensor": lambda torch: torch.ones(2, 3, dtype=torch.float64),
    "tensor requiring grad": lambda torch: torch.ones(2, 3, requires_grad=True),
    "computed tensor": lambda torch: torch.nn.Parameter(torch.ones(2, 3)) * 2,
    "number": lambda torch: 3,
}


def _refusal(name, value_name):
    torch, nn, _ = libraries(name)
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError) as caught:
        layer.weight = VALUES[value_name](torch)
    assert isinstance(layer.weight, nn.Parameter) and "weight" in layer.state_dict()
    return str(caught.value)


@pytest.mark.parametrize("value_name", list(VALUES))
def test_non_parameter_assigned_to_a_parameter_name_is_torchs_type_error(value_name):
    require_torch()
    ours, theirs = _refusal("kiln", value_name), _refusal("torch", value_name)
    assert theirs in ours, (ours, theirs)
    assert "test_parameter_assignment_vs_torch.py" in ours.splitlines()[0]  # the user's line


@pytest.mark.parametrize("name", LIBRARIES)
def test_parameter_or_none_assigned_and_tensor_after_deleting_the_parameter(name):
    torch, nn, _ = libraries(name)
    layer = nn.Linear(3, 2)
    layer.weight = nn.Parameter(torch.zeros(2, 3))
    assert float(layer.weight.detach().sum()) == 0 and "weight" in layer.state_dict()
    layer.bias = None
    assert layer.bias is None and sorted(layer.state_dict()) == ["weight"]
    del layer._parameters["weight"]
    layer.weight = torch.ones(2, 3) * 2  # WeightDrop's setattr after its _setup: a plain attribute
    assert float(layer.weight.sum()) == 12 and list(layer.state_dict()) == []
