"""Only a registered trainable array is an ``nn.Parameter``, as torch's: a module's buffers, a tensor made with
``requires_grad=True``, a parameter's ``detach()`` and its ``.data`` are plain tensors to ``isinstance``. Code that sorts
a module's tensors by kind (an EMA keeping ``state_dict(keep_vars=True)``'s parameters only, a param-group builder
walking ``vars(module)``) used to take kiln's buffers for parameters."""

from __future__ import annotations

import pytest

from oracles import require_torch


def _kinds(torch):
    nn = torch.nn
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    leaf = torch.zeros(2, requires_grad=True)
    return {
        "weight": model[0].weight,
        "running_mean": model[1].running_mean,
        "num_batches_tracked": model[1].num_batches_tracked,
        "requires_grad leaf": leaf,
        "detach": model[0].weight.detach(),
        "data": model[0].weight.data,
        "complex parameter": nn.Parameter(torch.ones(2, dtype=torch.cfloat)),
        "keep_vars entries": [isinstance(v, nn.Parameter) for v in model.state_dict(keep_vars=True).values()],
    }


def _is_parameter(torch, value):
    return value if isinstance(value, list) else isinstance(value, torch.nn.Parameter)


def test_isinstance_parameter_as_torch():
    import kiln

    torch = require_torch()
    kiln_kinds = {name: _is_parameter(kiln, value) for name, value in _kinds(kiln).items()}
    torch_kinds = {name: _is_parameter(torch, value) for name, value in _kinds(torch).items()}
    assert kiln_kinds == torch_kinds


def test_complex_buffer_is_no_parameter():
    import kiln

    module = kiln.nn.Module()
    module.register_buffer("freqs", kiln.polar(kiln.ones(3), kiln.arange(3.0)))
    assert not isinstance(module.freqs, kiln.nn.Parameter)
    assert [name for name, _ in module.named_buffers()] == ["freqs"]
    assert list(module.parameters()) == []


@pytest.mark.parametrize("make", ["buffer", "leaf"])
def test_plain_tensors_still_train_and_save(make):
    """The tensors that stopped being Parameters keep their roles: a buffer is saved and updated by BatchNorm, a
    requires_grad leaf is trained by an optimizer (eager and compiled)."""
    import kiln

    torch = require_torch()
    if make == "buffer":
        bn, twin = kiln.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
        x = [[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]]
        kiln.compile(bn)(kiln.tensor(x))
        twin(torch.tensor(x))
        assert bn.running_var.tolist() == pytest.approx(twin.running_var.tolist(), rel=1e-6)
        assert sorted(bn.state_dict()) == sorted(twin.state_dict())
        return
    for compiled in (False, True):
        w = kiln.tensor([1.0, -2.0], requires_grad=True)
        optimizer = kiln.optim.SGD([w], lr=0.5)

        def step():
            optimizer.zero_grad()
            loss = (w * w).sum()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step) if compiled else step
        run()
        run()
        assert w.tolist() == [0.0, 0.0]


@pytest.mark.filterwarnings("ignore:Positional args are being deprecated")
def test_state_dict_keep_vars_destination_prefix_as_torch():
    import kiln

    torch = require_torch()
    got, want = {}, {}
    for lib, out in ((kiln, got), (torch, want)):
        model = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.BatchNorm1d(3))
        kept = model.state_dict(keep_vars=True)
        out["keep_vars"] = [(name, type(value).__name__ == "Parameter", value.requires_grad) for name, value in kept.items()]
        out["same objects"] = kept["0.weight"] is model[0].weight and kept["1.running_mean"] is model[1].running_mean
        destination = {"other": 1}
        out["destination"] = list(model.state_dict(destination=destination, prefix="net.")) == list(destination)
        out["keys"] = list(destination)
        out["positional"] = list(model.state_dict(None, "p.", True))
        out["detached"] = model.state_dict()["0.weight"].requires_grad
    assert got == want
