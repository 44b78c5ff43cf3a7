"""Assigning to a module's registered name, as PyTorch's ``Module.__setattr__``: a value of the registered kind
replaces it, ``None`` clears it, anything else raises PyTorch's TypeError (``cannot assign 'torch.DoubleTensor' as
parameter 'weight' (torch.nn.Parameter or None expected)``; ``as child module ... (torch.nn.Module or None
expected)``; ``as buffer ... (torch.nn.Buffer, torch.Tensor or None expected)``). kiln let the value replace the
registered entry (dropping it from ``parameters()``, ``children()``, ``state_dict``): salesforce/awd-lstm-lm's
WeightDrop trained on in kiln after an evaluation where torch 2.x stops
(``tests/e2e/test_porting_probes_awd_lstm_qrnn.py``)."""

import pytest

from oracles import libraries, require_torch

LIBRARIES = ["kiln", "torch"]
VALUES = {
    "tensor": lambda torch: torch.ones(2, 3, dtype=torch.float64),
    "tensor requiring grad": lambda torch: torch.ones(2, 3, requires_grad=True),
    "computed tensor": lambda torch: torch.nn.Parameter(torch.ones(2, 3)) * 2,
    "number": lambda torch: 3,
    "list": lambda torch: [1.0],
}
NAMES = {"parameter": "weight", "child module": "inner", "buffer": "running"}
REFUSED = [(kind, value) for kind in NAMES for value in VALUES if kind != "buffer" or "tensor" not in value]


def _module(torch, nn):
    layer = nn.Linear(3, 2)
    layer.inner = nn.Identity()
    layer.register_buffer("running", torch.zeros(2))
    return layer


def _refusal(name, kind, value_name):
    torch, nn, _ = libraries(name)
    layer = _module(torch, nn)
    with pytest.raises(TypeError) as caught:
        setattr(layer, NAMES[kind], VALUES[value_name](torch))  # the user's line
    assert sorted(layer.state_dict()) == ["bias", "running", "weight"] and list(dict(layer.named_children())) == ["inner"]
    return str(caught.value)


@pytest.mark.parametrize("kind, value_name", REFUSED)
def test_wrong_kind_assigned_to_a_registered_name_is_torchs_type_error(kind, value_name):
    require_torch()
    ours, theirs = _refusal("kiln", kind, value_name), _refusal("torch", kind, value_name)
    assert theirs in ours, (ours, theirs)
    assert "test_registered_assignment_vs_torch.py" in ours.splitlines()[0]


@pytest.mark.parametrize("name", LIBRARIES)
def test_right_kind_or_none_assigned_and_tensor_after_deleting_the_parameter(name):
    torch, nn, _ = libraries(name)
    layer = _module(torch, nn)
    layer.weight = nn.Parameter(torch.zeros(2, 3))
    layer.inner = nn.ReLU()
    layer.running = torch.ones(2)
    assert float(layer.weight.detach().sum()) == 0 and float(layer.running.sum()) == 2
    assert sorted(layer.state_dict()) == ["bias", "running", "weight"] and type(layer.inner).__name__ == "ReLU"
    layer.bias = layer.inner = layer.running = None
    assert layer.bias is None and layer.inner is None and sorted(layer.state_dict()) == ["weight"]
    del layer._parameters["weight"]
    layer.weight = torch.ones(2, 3) * 2  # WeightDrop's setattr after its _setup: a plain attribute
    assert float(layer.weight.sum()) == 12 and list(layer.state_dict()) == []
