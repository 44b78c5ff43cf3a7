"""Module methods PyTorch code calls: dtype casts, freezing, lookups by dotted path, registering parameters."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F


def _model():
    kiln.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_double_casts_parameters_and_buffers_and_the_step_runs_in_float64():
    model = _model().double()
    assert {p.data.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    assert model[1].running_mean.data.dtype == np.float64 and model[1].num_batches_tracked.data.dtype.kind == "i"  # counters stay integers
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    loss = step(np.random.default_rng(0).standard_normal((5, 4)), np.array([0, 1, 2, 0, 1]))
    assert np.asarray(loss).dtype == np.float64
    assert model.float() is model and {p.data.dtype for p in model.parameters()} == {np.dtype(np.float32)}
    assert model.to("cpu") is model and model.to(dtype="torch.float64")[0].weight.data.dtype == np.float64
    with pytest.raises(kiln.KilnError, match="stay floating point"):
        model.to("int32")


def test_requires_grad_false_freezes_the_whole_module_in_a_step():
    model = _model()
    model[0].requires_grad_(False)
    before = {name: value.copy() for name, value in model.state_dict().items()}
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
    step(np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32), np.arange(6) % 3)
    np.testing.assert_array_equal(model[0].weight.data, before["0.weight"])
    np.testing.assert_array_equal(model[0].bias.data, before["0.bias"])
    assert not np.array_equal(model[3].weight.data, before["3.weight"])


def test_lookups_by_dotted_path_and_registration():
    model = _model()
    assert model.get_submodule("1") is model[1] and model.get_submodule("") is model
    assert model.get_parameter("3.bias") is model[3].bias
    with pytest.raises(AttributeError, match="no submodule '7'"):
        model.get_submodule("7")
    with pytest.raises(AttributeError, match="no parameter 'gain'"):
        model.get_parameter("0.gain")
    head = model[3]
    head.register_parameter("scale", nn.Parameter(np.ones(3, np.float32)))
    assert "3.scale" in model.state_dict() and len(list(model.buffers())) == 3  # BatchNorm's three buffers
    with pytest.raises(kiln.KilnError, match="kiln Parameter"):
        head.register_parameter("offset", np.zeros(3))
    assert model.zero_grad() is None


def test_plain_attribute_before_super_init_is_kept_and_registered_values_are_refused_as_torch():
    """pytorch_tabnet's ``Sparsemax.__init__`` sets ``self.dim = dim`` before ``super().__init__()``: PyTorch keeps
    such a plain attribute; a parameter, buffer or submodule there raises its AttributeError."""
    from oracles import libraries

    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)

        class Sparsemax(nn.Module):
            def __init__(self, dim=-1):
                self.dim = dim
                super().__init__()

            def forward(self, input):
                return input.sum(self.dim)

        module = Sparsemax(dim=0)
        assert module.dim == 0 and module(torch.ones(2, 3)).shape == (3,) and list(module.parameters()) == []

        for value, words in [(nn.Parameter(torch.ones(2)), "cannot assign parameters before Module.__init__() call"),
                             (nn.Linear(2, 2), "cannot assign module before Module.__init__() call")]:
            class Early(nn.Module):
                def __init__(self, value=value):
                    self.early = value
                    super().__init__()

            with pytest.raises(AttributeError, match=words.replace("(", r"\(").replace(")", r"\)")):
                Early()


def test_a_registered_entry_named_like_a_method_leaves_the_method_as_torch():
    """philipperemy's N-BEATS: ``self.parameters = []``, then ``self.parameters = nn.ParameterList(self.parameters)``
    registers a submodule named ``parameters`` while ``model.parameters()`` still calls the method (PyTorch keeps
    registered entries out of ``__dict__``); ``del`` of such an entry removes it."""
    from oracles import libraries

    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = [nn.Linear(2, 3), nn.Linear(3, 1)]  # a plain list: not registered
                self.parameters = []
                for block in self.blocks:
                    self.parameters.extend(block.parameters())
                self.parameters = nn.ParameterList(self.parameters)
                self.modules = nn.Linear(1, 1)

        net = Net()
        assert [tuple(p.shape) for p in net.parameters()] == [(3, 2), (3,), (1, 3), (1,), (1, 1), (1,)]
        assert list(net.state_dict()) == ["parameters.0", "parameters.1", "parameters.2", "parameters.3",
                                          "modules.weight", "modules.bias"]
        assert callable(net.modules) and len(list(net.modules())) == 3
        del net.modules
        assert len(list(net.parameters())) == 4
