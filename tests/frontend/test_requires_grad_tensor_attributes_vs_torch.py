"""A tensor made with ``requires_grad=True`` and assigned to a module's attribute is a plain tensor attribute, as
PyTorch's: not in ``named_parameters()``/``parameters()``/``state_dict()`` (SAC agents keep ``self.log_alpha =
torch.zeros(1, requires_grad=True)`` with its own optimizer). kiln registered it as a parameter, so an optimizer
over ``model.parameters()`` trained it too and torch's checkpoints did not load (an unexpected key)."""

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()


def _agent(lib):
    class Agent(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = lib.nn.Linear(2, 1).double()
            self.log_alpha = lib.zeros(1, dtype=lib.float64, requires_grad=True)
            self.scale = lib.nn.Parameter(lib.ones(1, dtype=lib.float64))

        def forward(self, x):
            return self.policy(x) * self.scale - self.log_alpha.exp()

    lib.manual_seed(0)
    agent = Agent()
    with lib.no_grad():
        agent.policy.weight.copy_(lib.tensor([[0.5, -0.25]], dtype=lib.float64))
        agent.policy.bias.fill_(0.1)
    return agent


@pytest.mark.parametrize("factory", ["zeros", "tensor", "randn", "full"])
def test_a_requires_grad_tensor_attribute_is_not_registered(factory):
    names = {}
    for lib in (torch, kiln):
        module = lib.nn.Module()
        module.t = {"zeros": lambda: lib.zeros(2, requires_grad=True), "tensor": lambda: lib.tensor([1.0], requires_grad=True),
                    "randn": lambda: lib.randn(2, requires_grad=True), "full": lambda: lib.full((2,), 3.0, requires_grad=True)}[factory]()
        module.p = lib.nn.Parameter(lib.zeros(1))
        names[lib] = ([n for n, _ in module.named_parameters()], list(module.state_dict()), module.t.requires_grad,
                      module.t.is_leaf)
    assert names[kiln] == names[torch]


def test_an_optimizer_over_parameters_leaves_it_alone_and_its_own_trains_it_as_torch():
    results = {}
    for lib in (torch, kiln):
        agent = _agent(lib)
        policy_optimizer = lib.optim.SGD(agent.parameters(), lr=0.1)
        alpha_optimizer = lib.optim.SGD([agent.log_alpha], lr=0.5)
        x = lib.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=lib.float64)
        for _ in range(3):
            policy_optimizer.zero_grad()
            alpha_optimizer.zero_grad()
            agent(x).square().mean().backward()
            policy_optimizer.step()
            alpha_optimizer.step()
        results[lib] = [agent.log_alpha.detach().numpy().copy(), *[p.detach().numpy().copy() for p in agent.parameters()]]
    for got, expected in zip(results[kiln], results[torch]):
        np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_torchs_state_dict_loads_and_wrapping_in_parameter_registers_it():
    agent = _agent(kiln)
    agent.load_state_dict({k: kiln.tensor(v.numpy()) for k, v in _agent(torch).state_dict().items()})
    agent.log_alpha = kiln.nn.Parameter(agent.log_alpha.detach())
    assert "log_alpha" in dict(agent.named_parameters())
    assert repr(kiln.zeros(2, requires_grad=True)) == repr(torch.zeros(2, requires_grad=True))
