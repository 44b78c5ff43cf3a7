"""``x.data = y`` and ``x.data += y`` on a tensor and on a parameter's ``.grad``, eagerly and in a
``kiln.compile``'d step, against PyTorch 2.13 (``frontend/data_assignment.py``, ``TorchArray.data``'s setter).
BigGAN's ``ortho`` adds its orthogonal penalty's gradient by ``param.grad.data += strength * grad``: Python runs it as
``alias = param.grad.data; alias += ...; param.grad.data = alias``, and kiln's ``.data`` had no setter."""

import numpy as np
import pytest

import kiln
from oracles import libraries


def _ortho_step(lib, compiled=False, strength=0.1):
    """Two SGD steps of a tiny linear model, each adding BigGAN's ortho gradient to ``weight.grad`` by ``.data +=``."""
    _, nn, _ = libraries("kiln" if lib is kiln else "torch")
    model = nn.Linear(3, 2).double()
    with lib.no_grad():
        model.weight.copy_(lib.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3]], dtype=lib.float64))
        model.bias.zero_()
    optimizer = lib.optim.SGD(model.parameters(), lr=0.5)

    def step(x):
        optimizer.zero_grad()
        loss = model(x).pow(2).sum()
        loss.backward()
        with lib.no_grad():
            w = model.weight.view(model.weight.shape[0], -1)
            grad = 2 * lib.mm(lib.mm(w, w.t()) * (1. - lib.eye(w.shape[0])), w)
            model.weight.grad.data += strength * grad.view(model.weight.shape)
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    x = lib.tensor(np.linspace(-1, 1, 12).reshape(4, 3))
    losses = [run(x).item() for _ in range(2)]
    return losses, model.weight.detach().numpy().copy(), model.weight.grad.detach().numpy().copy()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_grad_data_add_in_place_as_torch(compiled, float64_default):
    torch = float64_default
    ours, theirs = _ortho_step(kiln, compiled), _ortho_step(torch)
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(mine, other, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("lib_name", ["kiln", "torch"])
def test_data_add_assign_writes_the_tensor_and_its_aliases(lib_name, float64_default):
    lib, _, _ = libraries(lib_name)
    x = lib.ones(2, 2)
    alias = x.data
    x.data += lib.tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(x.numpy(), [[2, 3], [4, 5]])
    np.testing.assert_array_equal(alias.numpy(), [[2, 3], [4, 5]])  # x.data shares x's storage in both


@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "leaf"])
@pytest.mark.parametrize("lib_name", ["kiln", "torch"])
def test_data_assignment_takes_values_shape_and_dtype(lib_name, requires_grad):
    lib, _, _ = libraries(lib_name)
    x = lib.ones(3, requires_grad=requires_grad)
    doubled = x * 2
    x.data = lib.arange(5, dtype=lib.float64)
    assert tuple(x.shape) == (5,) and x.dtype == lib.float64 and x.requires_grad == requires_grad
    np.testing.assert_array_equal(x.detach().numpy(), np.arange(5))
    x.data = lib.full((5,), 7.0, dtype=lib.float64)
    np.testing.assert_array_equal((x + 1).detach().numpy(), np.full(5, 8.0))
    np.testing.assert_array_equal(doubled.detach().numpy(), [2, 2, 2])  # made before: not rewritten


@pytest.mark.parametrize("lib_name", ["kiln", "torch"])
def test_views_keep_the_old_storage_after_a_new_shape(lib_name):
    lib, _, _ = libraries(lib_name)
    base = lib.arange(4.0)
    view = base.view(2, 2)
    row = view[0]
    view.data = lib.zeros(3, dtype=lib.float64)  # the view itself takes new storage
    base.data = lib.zeros(5)
    row.add_(1)
    base.add_(5)
    np.testing.assert_array_equal(row.numpy(), [1, 2])
    np.testing.assert_array_equal(view.numpy(), np.zeros(3))
    np.testing.assert_array_equal(base.numpy(), np.full(5, 5.0))


@pytest.mark.parametrize("lib_name", ["kiln", "torch"])
def test_data_assignment_of_a_number_is_torchs_type_error(lib_name):
    lib, _, _ = libraries(lib_name)
    x = lib.ones(3)
    with pytest.raises(TypeError, match="Variable data has to be a tensor, but got int"):
        x.data = 3
