"""A tensor a ``kiln.compile``d function reads from a plain object's attribute is read anew at each call, as
``torch.compile`` reads the attribute (its graph input's source): the program may set the attribute to another tensor
between calls (a draw fed to a compiled GAIL discriminator step, ``holder.noise = torch.rand(...)``), also where the
object is reached only through a method the compiled one calls (``self.compute_grad_pen()``'s closure). kiln fed the
tensor it had read while tracing, so later calls silently used the first call's values."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries


class Holder:
    def __init__(self, torch, values):
        self.noise = torch.tensor(values)


def _run(name, compiled):
    torch, nn, _ = libraries(name)
    torch.manual_seed(0)
    layer = nn.Linear(3, 1)
    layer.weight.data = torch.tensor([[0.5, -1.0, 2.0]])
    layer.bias.data = torch.tensor([0.25])
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    holder = Holder(torch, [1.0, 2.0, 3.0])

    def step(x):
        optimizer.zero_grad()
        loss = (layer(x * holder.noise) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss.detach(), x * holder.noise

    run = kiln.compile(step, fullgraph=True) if compiled else step
    x = torch.tensor(np.arange(6.0).reshape(2, 3) / 6)
    results = []
    for values in ([1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], None, [2.0, 2.0, -2.0]):
        holder.noise = torch.tensor(values) if values is not None else None  # rebound between calls; None, then set
        if values is not None:
            loss, scaled = run(x)
            results += [loss.item(), np.array(scaled.numpy())]
    return results + [np.array(p.detach().numpy()) for p in layer.parameters()]


def test_a_plain_objects_tensor_attribute_rebound_between_calls_is_read_anew_as_torch(float64_default):
    theirs = _run("torch", compiled=False)
    for compiled in (False, True):
        for mine, expected in zip(_run("kiln", compiled), theirs, strict=True):
            np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)


def test_a_rebound_tensor_of_another_shape_traces_again():
    holder = Holder(kiln, [1.0, 2.0])
    run = kiln.compile(lambda x: x * holder.noise, fullgraph=True)
    np.testing.assert_allclose(run(kiln.ones(2)).numpy(), [1.0, 2.0])
    holder.noise = kiln.tensor([3.0, 4.0, 5.0])
    np.testing.assert_allclose(run(kiln.ones(3)).numpy(), [3.0, 4.0, 5.0])
    holder.noise = kiln.tensor([-1.0, 6.0])
    np.testing.assert_allclose(run(kiln.ones(2)).numpy(), [-1.0, 6.0])


def test_an_object_reached_through_a_called_methods_closure_is_followed_as_torch(float64_default):
    """gail.py's shape: the compiled ``update_minibatch`` calls ``self.compute_grad_pen()``, whose closure holds the
    object whose attribute is rebound between calls."""
    outputs = {}
    for name in ("torch", "kiln"):
        torch, nn, _ = libraries(name)
        holder = Holder(torch, [1.0, 2.0, 3.0])

        class Discriminator(nn.Module):
            def penalty(self, x):
                return (x * holder.noise).sum()

            def update_minibatch(self, x):
                return self.penalty(x) * 2

        discriminator = Discriminator()
        run = kiln.compile(discriminator.update_minibatch, fullgraph=True) if name == "kiln" \
            else discriminator.update_minibatch
        outputs[name] = []
        for values in ([1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], [2.0, 2.0, -2.0]):
            holder.noise = torch.tensor(values)
            outputs[name].append(run(torch.ones(3)).item())
    np.testing.assert_allclose(outputs["kiln"], outputs["torch"], rtol=1e-12)
