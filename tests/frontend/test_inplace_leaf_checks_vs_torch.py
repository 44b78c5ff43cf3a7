"""PyTorch's checks on in-place writes to tensors that require grad (``frontend/inplace_leaf_checks.py``), against
torch 2.13: the same code runs on both libraries. A leaf that requires grad (a parameter, a tensor marked by
``requires_grad_()``) or a view of one refuses an in-place write while gradients are on, with torch's RuntimeError and
words, and is left unchanged; under ``no_grad``, through ``.data``, on a non-leaf, a frozen parameter or an integer
tensor the write happens, with torch's values (and gradients, for the non-leaf)."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler.errors import KilnError
from oracles import libraries

LEAF_WORDS = "a leaf Variable that requires grad is being used in an in-place operation"
VIEW_WORDS = "a view of a leaf Variable that requires grad is being used in an in-place operation"
START = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5


def _parameter(lib, nn):
    return nn.Parameter(lib.tensor(START.copy()))


def _marked(lib, nn):
    return lib.tensor(START.copy()).requires_grad_()


LEAVES = {"parameter": _parameter, "marked_tensor": _marked}

WRITES = {
    "mul_": lambda lib, p: p.mul_(2),
    "add_": lambda lib, p: p.add_(1),
    "sub_": lambda lib, p: p.sub_(lib.ones(2, 3)),
    "zero_": lambda lib, p: p.zero_(),
    "fill_": lambda lib, p: p.fill_(3.0),
    "copy_": lambda lib, p: p.copy_(lib.ones(2, 3)),
    "clamp_": lambda lib, p: p.clamp_(-1, 1),
    "normal_": lambda lib, p: p.normal_(),
    "uniform_": lambda lib, p: p.uniform_(),
    "masked_fill_": lambda lib, p: p.masked_fill_(lib.tensor(START > 0), 0.0),
    "relu_": lambda lib, p: p.relu_(),
    "iadd": lambda lib, p: p.__iadd__(1.0),
    "imul": lambda lib, p: p.__imul__(2.0),
}

VIEW_WRITES = {
    "index_then_mul_": lambda lib, p: p[0].mul_(2),
    "view_then_add_": lambda lib, p: p.view(-1).add_(1),
    "transpose_then_add_": lambda lib, p: p.T.add_(1),
    "index_of_index_then_zero_": lambda lib, p: p[1][1:].zero_(),
    "index_assignment": lambda lib, p: p.__setitem__(0, 1.0),
    "slice_assignment": lambda lib, p: p.__setitem__((slice(None), 1), 0.0),
}


def _refusal(name, leaf, write):
    """The error ``write`` raises on ``leaf`` in library ``name``, and the leaf's values after it."""
    lib, nn, _ = libraries(name)
    tensor = LEAVES[leaf](lib, nn)
    with pytest.raises(RuntimeError) as caught:
        write(lib, tensor)
    return caught.value, np.array(tensor.detach().numpy())


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("write", WRITES)
def test_in_place_write_to_a_leaf_that_requires_grad_is_refused_as_torch(leaf, write):
    torch_error, torch_after = _refusal("torch", leaf, WRITES[write])
    kiln_error, kiln_after = _refusal("kiln", leaf, WRITES[write])
    assert LEAF_WORDS in str(torch_error) and LEAF_WORDS in str(kiln_error)
    assert isinstance(kiln_error, KilnError) and "kiln.no_grad()" in str(kiln_error) and ".data" in str(kiln_error)
    assert "test_inplace_leaf_checks_vs_torch.py" in str(kiln_error)  # the user's line
    np.testing.assert_array_equal(kiln_after, torch_after)  # nothing written
    np.testing.assert_array_equal(kiln_after, START)


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("write", VIEW_WRITES)
def test_in_place_write_to_a_view_of_a_leaf_is_refused_as_torch(leaf, write):
    torch_error, torch_after = _refusal("torch", leaf, VIEW_WRITES[write])
    kiln_error, kiln_after = _refusal("kiln", leaf, VIEW_WRITES[write])
    assert VIEW_WORDS in str(torch_error) and VIEW_WORDS in str(kiln_error)
    np.testing.assert_array_equal(kiln_after, torch_after)
    np.testing.assert_array_equal(kiln_after, START)


ALLOWED_UNDER_NO_GRAD = {
    "mul_": lambda lib, p: p.mul_(2),
    "zero_": lambda lib, p: p.zero_(),
    "copy_": lambda lib, p: p.copy_(lib.ones(2, 3)),
    "clamp_": lambda lib, p: p.clamp_(-1, 1),
    "iadd": lambda lib, p: p.__iadd__(1.0),
    "index_assignment": lambda lib, p: p.__setitem__(0, 1.0),
    "index_then_mul_": lambda lib, p: p[0].mul_(2),
    "index_of_index_then_fill_": lambda lib, p: p[1][1:].fill_(7.0),
}


def _written_under_no_grad(name, leaf, write):
    lib, nn, _ = libraries(name)
    tensor = LEAVES[leaf](lib, nn)
    with lib.no_grad():
        write(lib, tensor)
    return np.array(tensor.detach().numpy()), tensor.requires_grad


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("write", ALLOWED_UNDER_NO_GRAD)
def test_in_place_write_under_no_grad_writes_the_leaf_as_torch(leaf, write):
    torch_after, torch_requires = _written_under_no_grad("torch", leaf, ALLOWED_UNDER_NO_GRAD[write])
    kiln_after, kiln_requires = _written_under_no_grad("kiln", leaf, ALLOWED_UNDER_NO_GRAD[write])
    np.testing.assert_array_equal(kiln_after, torch_after)
    assert not np.array_equal(kiln_after, START)
    assert kiln_requires and torch_requires


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_writes_through_data_of_a_frozen_parameter_and_into_integers_are_allowed(name):
    lib, nn, _ = libraries(name)
    trained = _parameter(lib, nn)
    trained.data.mul_(2)
    trained.detach().add_(1)  # shares the parameter's storage in both
    frozen = nn.Parameter(lib.tensor(START.copy()), requires_grad=False)
    frozen.mul_(3)
    counts = lib.tensor([1, 2, 3])
    counts.add_(1)
    np.testing.assert_array_equal(np.asarray(trained.detach().numpy()), START * 2 + 1)
    np.testing.assert_array_equal(np.asarray(frozen.detach().numpy()), START * 3)
    np.testing.assert_array_equal(np.asarray(counts.numpy()), [2, 3, 4])


def _non_leaf_written_in_place(name):
    """``y = x * 2`` written in place three ways, then backward: the writes are recorded in the gradient."""
    lib, nn, _ = libraries(name)
    x = lib.tensor(START.astype(np.float64)).requires_grad_()
    y = x * 2
    y.mul_(3)
    y.add_(x)
    y[0] = x[0] * x[1]
    (y * y).sum().backward()
    return np.array(y.detach().numpy()), np.array(x.grad.numpy() if hasattr(x.grad, "numpy") else x.grad)


def test_in_place_writes_to_a_non_leaf_are_recorded_as_torch():
    torch_y, torch_grad = _non_leaf_written_in_place("torch")
    kiln_y, kiln_grad = _non_leaf_written_in_place("kiln")
    np.testing.assert_allclose(kiln_y, torch_y, rtol=1e-12)
    np.testing.assert_allclose(kiln_grad, torch_grad, rtol=1e-12)


def test_load_state_dict_writes_parameters_that_require_grad():
    """Loading writes in place under no_grad, as PyTorch's: the check does not refuse it."""
    lib, nn, _ = libraries("kiln")
    model = nn.Linear(3, 2)
    state = {"weight": np.ones((2, 3), np.float32), "bias": np.zeros(2, np.float32)}
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.weight.data, state["weight"])
    assert model.weight.requires_grad and lib.is_grad_enabled()


def _scaling_step(lib, compile, grad_off):
    """A compiled function that halves a layer's weight in place (under no_grad when ``grad_off``), then runs it."""
    _, nn, _ = libraries(lib.__name__)
    layer = nn.Linear(3, 2)
    with lib.no_grad():
        layer.weight.copy_(lib.tensor(START))
        layer.bias.zero_()

    def step(x):
        if grad_off:
            with lib.no_grad():
                layer.weight.mul_(0.5)
        else:
            layer.weight.mul_(0.5)
        return layer(x)

    return layer, compile(step)


def test_a_compiled_function_writes_a_parameter_under_no_grad_as_torch():
    import kiln

    torch, _, _ = libraries("torch")
    x = np.ones((1, 3), np.float32)
    kiln_layer, kiln_step = _scaling_step(kiln, kiln.compile, grad_off=True)
    torch_layer, torch_step = _scaling_step(torch, lambda f: torch.compile(f, backend="eager"), grad_off=True)
    for _ in range(2):
        np.testing.assert_allclose(np.asarray(kiln_step(kiln.tensor(x)).detach().numpy()),
                                   torch_step(torch.tensor(x)).detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(kiln_layer.weight.data), torch_layer.weight.detach().numpy())
    np.testing.assert_array_equal(np.asarray(kiln_layer.weight.data), START / 4)


def test_a_compiled_function_writing_a_parameter_with_gradients_on_is_refused_as_torch():
    import kiln

    torch, _, _ = libraries("torch")
    x = np.ones((1, 3), np.float32)
    errors = []
    for lib, compile in [(torch, lambda f: torch.compile(f, backend="eager")), (kiln, kiln.compile)]:
        layer, step = _scaling_step(lib, compile, grad_off=False)
        with pytest.raises(RuntimeError, match=LEAF_WORDS) as caught:
            step(lib.tensor(x))
        errors.append(caught.value)
        np.testing.assert_array_equal(np.asarray(layer.weight.detach().numpy()), START)
    assert isinstance(errors[1], KilnError)


def _non_leaf_flags(name):
    """``requires_grad_()`` on a non-leaf changes nothing (its .grad stays None, with torch's warning on reading it);
    ``retain_grad()`` fills it; ``requires_grad_(False)`` is refused."""
    lib, nn, _ = libraries(name)
    x = lib.tensor(START.astype(np.float64)).requires_grad_()
    marked, retained = x * 2, x * 3
    marked.requires_grad_()
    retained.retain_grad()
    (marked * retained).sum().backward()
    with pytest.warns(UserWarning, match="grad attribute of a Tensor that is not a leaf Tensor is being accessed") as warned:
        assert marked.grad is None
    assert len(warned) == 1
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables") as caught:
        marked.requires_grad_(False)
    assert marked.requires_grad and not marked.is_leaf
    return np.array(np.asarray(retained.grad)), caught.value


def test_requires_grad_and_grad_of_a_non_leaf_as_torch():
    torch_retained, _ = _non_leaf_flags("torch")
    kiln_retained, kiln_error = _non_leaf_flags("kiln")
    np.testing.assert_allclose(kiln_retained, torch_retained, rtol=1e-12)
    assert isinstance(kiln_error, KilnError)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_grad_of_leaves_and_retained_results_reads_without_warning(name, recwarn):
    lib, nn, _ = libraries(name)
    x = lib.tensor(START.astype(np.float64)).requires_grad_()
    y = x * 2
    y.retain_grad()
    plain = lib.tensor(START) * 2  # requires no grad: a leaf
    assert x.grad is None and y.grad is None and plain.grad is None
    assert not [w for w in recwarn if "not a leaf" in str(w.message)]


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_a_float_result_written_into_an_integer_tensor_is_refused(name):
    lib, nn, _ = libraries(name)
    counts = lib.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        counts.mul_(1.5)
    np.testing.assert_array_equal(np.asarray(counts.numpy()), [1, 2, 3])


def _backward_after_a_no_grad_write(name):
    lib, nn, _ = libraries(name)
    weight = nn.Parameter(lib.tensor(START.copy()))
    loss = (weight * weight).sum()
    with lib.no_grad():
        weight.mul_(2)
    with pytest.raises(RuntimeError, match="one of the variables needed for gradient computation has been modified by an "
                                           "inplace operation") as caught:
        loss.backward()
    return caught.value


def test_backward_after_a_parameter_was_written_in_place_is_refused_as_torch():
    _backward_after_a_no_grad_write("torch")
    assert isinstance(_backward_after_a_no_grad_write("kiln"), KilnError)


def _activations_in_place(name):
    """Eager ``inplace=True`` activations write their input, as ``relu_``: later reads see it, the gradient records it."""
    lib, nn, F = libraries(name)
    x = lib.tensor(START.astype(np.float64)).requires_grad_()
    h = x * 1.0
    F.relu(h, inplace=True)
    g = x * 2.0
    nn.LeakyReLU(0.1, inplace=True)(g)
    (h * g + h).sum().backward()
    with pytest.raises(RuntimeError, match=LEAF_WORDS):
        F.relu(x, inplace=True)
    return np.array(h.detach().numpy()), np.array(g.detach().numpy()), np.array(np.asarray(x.grad))


def test_eager_inplace_activations_write_their_input_as_torch():
    for kiln_array, torch_array in zip(_activations_in_place("kiln"), _activations_in_place("torch")):
        np.testing.assert_allclose(kiln_array, torch_array, rtol=1e-12)


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("reshape", ["t_", "unsqueeze_"])
def test_in_place_reshapes_of_a_leaf_that_requires_grad_are_refused_as_torch(leaf, reshape):
    write = (lambda lib, p: p.t_()) if reshape == "t_" else (lambda lib, p: p.unsqueeze_(0))
    torch_error, _ = _refusal("torch", leaf, write)
    kiln_error, kiln_after = _refusal("kiln", leaf, write)
    assert LEAF_WORDS in str(torch_error) and LEAF_WORDS in str(kiln_error)
    np.testing.assert_array_equal(kiln_after, START)


def test_a_traced_refusal_names_the_users_line_once():
    import kiln

    _, nn, _ = libraries("kiln")
    layer = nn.Linear(3, 2)

    def scale(x):
        layer.weight.mul_(2.0)
        return layer(x)

    with pytest.raises(RuntimeError, match=LEAF_WORDS) as caught:
        kiln.trace(scale, kiln.TensorSpec((4, 3)))
    assert str(caught.value).count("test_inplace_leaf_checks_vs_torch.py") == 1
