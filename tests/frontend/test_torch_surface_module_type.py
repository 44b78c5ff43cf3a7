"""``Module.type(dst_type)`` (``frontend/module_type_cast.py``) against torch 2.13: every parameter and buffer cast to
a dtype, a legacy type (``torch.DoubleTensor``) or a type string, integer buffers too; the module returned; a cast
to an integer type refused while a parameter requires grad. neural-style-pt writes ``TVLoss(w).type(dtype)``; kiln's
Module had no ``type`` (AttributeError)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries


def _net(nn):
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU())


def _dtypes(module):
    return {key: str(value.dtype).rpartition(".")[2] for key, value in module.state_dict().items()}


DESTINATIONS = {
    "legacy DoubleTensor": lambda lib: lib.DoubleTensor,
    "type string": lambda lib: "torch.DoubleTensor",
    "dtype float16": lambda lib: lib.float16,
    "legacy FloatTensor": lambda lib: lib.FloatTensor,
}


@pytest.mark.parametrize("destination", DESTINATIONS)
def test_module_type_casts_every_parameter_and_buffer_as_torch(destination):
    results = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        net = _net(nn)
        assert net.type(DESTINATIONS[destination](lib)) is net
        results.append(_dtypes(net))
    assert results[0] == results[1]
    assert results[0]["1.num_batches_tracked"] != "int64"


def test_a_module_cast_by_type_trains_as_torch():
    """After ``.type(torch.DoubleTensor)`` (num_batches_tracked a float64 count) a training forward and backward
    give torch's outputs, gradients and running statistics, in float64."""
    x = np.linspace(-2.0, 3.0, 8).reshape(4, 2)
    results = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        lib.manual_seed(0)
        net = _net(nn).type(lib.DoubleTensor)
        if results:
            net.load_state_dict({key: lib.tensor(value) for key, value in results[0][0].items()})
        state = {key: np.array(value.numpy()) for key, value in net.state_dict().items()}
        out = net(lib.tensor(x))
        out.pow(2).sum().backward()
        results.append((state, np.array(out.detach().numpy()), [np.array(p.grad.numpy()) for p in net.parameters()],
                        {key: np.array(value.numpy()) for key, value in net.state_dict().items()}))
    (_, *ours), (_, *theirs) = results
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, other in zip(ours[1], theirs[1]):
        np.testing.assert_allclose(mine, other, rtol=1e-12, atol=1e-14)
    assert set(ours[2]) == set(theirs[2])
    for key in theirs[2]:
        assert ours[2][key].dtype == theirs[2][key].dtype == np.float64, key
        np.testing.assert_allclose(ours[2][key], theirs[2][key], rtol=1e-12, err_msg=key)


def test_module_type_to_an_integer_type_is_refused_while_a_parameter_requires_grad():
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        net = _net(nn)
        with pytest.raises(RuntimeError, match="must be floating point or complex dtype"):
            net.type(lib.LongTensor)
        assert _dtypes(net)["0.weight"] == "float32"  # nothing cast
