"""In-place methods, ``+=`` and index assignment (``frontend/tensor_inplace.py``, ``frontend/tensor_setitem.py``)
against PyTorch in float64: the same function runs on kiln and torch tensors, values and every gradient (of the
input and of the assigned value) to rtol 1e-10. Writes through views: through an index they reach the base, as in
PyTorch; any other aliasing that PyTorch would see is an error naming the write's line. Parameters refuse in-place
writes inside a trace and take them outside; a buffer written in a traced forward gets the new value, as PyTorch's
does, step after step."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError
from lockstep import mse_sgd_in_lockstep
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(3)
X = RNG.standard_normal((4, 5, 6))


def _assigning(index, value_shape):
    """``y = x * 1; y[index] = v; return y * x`` and an array ``v`` of ``value_shape``."""

    def fn(x, v):
        y = x * 1.0
        y[index] = v
        return y * x

    return fn, RNG.standard_normal(value_shape)


ASSIGNMENTS = {
    "slice_with_step": ((slice(None), slice(1, 4, 2)), (4, 2, 6)),
    "int_none_int": ((1, None, 2), (6,)),
    "ellipsis_last": ((Ellipsis, -1), (4, 5)),
    "negative_start_broadcast_value": ((slice(-2, None), slice(None), slice(None, None, 3)), (1,)),
    "int_with_leading_one_in_value": ((0,), (1, 5, 6)),
    "mixed": ((slice(1, 3), 2, slice(0, 6, 4)), (2, 2)),
    "none_first": ((None, 3), (1, 5, 6)),
}


@pytest.mark.parametrize("case", ASSIGNMENTS)
def test_index_assignment_matches_torch(case):
    fn, value = _assigning(*ASSIGNMENTS[case])
    _check(fn, fn, X, value)


def test_mask_assignment_matches_torch():
    def every_element(x, v):
        y = x * 1.0
        y[x > 0.5] = v.sum()
        return y * x

    def rows(x, v):
        y = x * 1.0
        y[x[:, 0, 0] > 0] = v
        return y * x

    _check(every_element, every_element, X, RNG.standard_normal(3))
    _check(rows, rows, X, RNG.standard_normal((5, 6)))


def _in_place_chain(last):
    """Arithmetic in place, then ``last`` (PyTorch saves those ops' results for the backward, so they end a chain)."""

    def chain(x, v):
        y = x.clone()
        y.mul_(2).add_(v, alpha=0.5)
        y.clamp_(-1.5, 1.5)
        y.masked_fill_(x < -1, 3.0)
        y -= v
        y *= 1.5
        y /= 2
        y += 1
        y.lerp_(v, 0.3)
        y.clamp_min_(-0.9)
        y.sub_(x, alpha=0.25)
        y.neg_()
        return getattr(y.abs_() if last == "sqrt_" else y, last)()

    return chain


@pytest.mark.parametrize("last", ["relu_", "sigmoid_", "tanh_", "exp_", "sqrt_", "abs_"])
def test_chained_in_place_methods_match_torch(last):
    _check(_in_place_chain(last), _in_place_chain(last), X, RNG.standard_normal((5, 6)))


def _writes_through_indexed_views(x, v):
    y = x * 1.0
    y[0].fill_(2.0)
    y[:, 1:3].mul_(3.0)
    row = y[1]
    row.add_(v)
    row[2].zero_()  # a view of a view: reaches y through row
    y[2, :, ::2].copy_(v[:, ::2])
    return y * x + row.sum()


def test_writes_through_indexed_views_reach_the_base_as_in_torch():
    _check(_writes_through_indexed_views, _writes_through_indexed_views, X, RNG.standard_normal((5, 6)))


def test_in_place_results_keep_shape_and_dtype_as_in_torch():
    torch = require("torch")

    def widening(x):
        y = x * 1.0
        y.add_(x.unsqueeze(0))
        return y

    def float_into_long(x):
        y = (x > 0).long()
        y.add_(0.5 * x)
        return y

    for fn in (widening, float_into_long):
        with pytest.raises(RuntimeError):
            fn(torch.tensor(X))
        with pytest.raises(TraceError, match="in place|written into|one dtype"):
            kiln.trace(fn, kiln.TensorSpec(X.shape, "float64"))

    def float_into_float32(x):  # a float64 operand is cast into the float32 tensor, as in PyTorch
        y = x.to("float32") * 1.0
        y.add_(x)
        return y

    graph = kiln.trace(float_into_float32, kiln.TensorSpec(X.shape, "float64"))
    assert graph.outputs[0].type.dtype.value == "f32"


def _stale_read_cases():
    def write_reshaped_then_read_base(x):
        y = x * 1.0
        flat = y.reshape(-1)
        flat.add_(1.0)
        return y.sum()

    def write_base_then_read_view(x):
        y = x * 1.0
        view = y[0]
        y.mul_(2.0)
        return view.sum()

    def write_transposed_then_read_base(x):
        y = x * 1.0
        y.transpose(0, 1).zero_()
        return y

    return [write_reshaped_then_read_base, write_base_then_read_view, write_transposed_then_read_base]


def test_in_place_ops_with_a_wider_float_operand_round_once_as_torch():
    """``f32 += f64`` with dims is computed in float64 and rounded once when written (snnTorch's ``ce_rate_loss``
    sums float64 per-sample losses into a float32 ``torch.zeros(B)``); a 0-d float64 operand is rounded first, as
    torch's type promotion computes in float32 then; the same on a parameter under ``no_grad`` and into float16. kiln
    rounded every operand first (a quarter of the elements a last bit apart)."""
    torch = require("torch")
    rng = np.random.default_rng(0)
    a = rng.standard_normal(4096).astype(np.float32)
    v, s = rng.standard_normal(4096) * 1e-3 + 0.3, 0.1234567890123

    def writes(lib):
        x, y, w = lib.tensor(a), lib.tensor(a), lib.tensor(a).half()
        x += lib.tensor(v)
        y.mul_(lib.tensor(s, dtype=lib.float64))
        w.sub_(lib.tensor(v.astype(np.float32)), alpha=2)
        p = lib.nn.Parameter(lib.tensor(a))
        with lib.no_grad():
            p.div_(lib.tensor(v))
        return [np.array(t.detach().numpy()) for t in (x, y, w, p)]

    for ours, theirs in zip(writes(kiln), writes(torch)):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("fn", _stale_read_cases(), ids=lambda fn: fn.__name__)
def test_writes_through_reshaped_and_transposed_views_reach_the_base_and_its_views_as_torch(fn):
    """kiln follows these writes now (``frontend/view_writes.py``); they used to be refused on the read."""
    _check(fn, fn, X)


def test_a_tensor_written_through_its_data_reads_as_torch():
    def write_data_then_read_base(x):
        y = x * 1.0
        y.data.add_(1.0)  # y's storage in PyTorch, outside the gradient: y takes the values (it was refused)
        return y.sum()

    torch = require("torch")
    ours = kiln.compile(write_data_then_read_base, fullgraph=True)(kiln.tensor(X))
    np.testing.assert_allclose(float(ours), float(write_data_then_read_base(torch.tensor(X))), rtol=1e-12)


def test_index_assignment_errors_say_what_to_do():
    def scatter(x):
        y = x * 1.0
        y[:, [0, 2]] = 0.0  # an index array after a slice: scattered by flat position, which needs static dims
        return y

    def wrong_value(x):
        y = x * 1.0
        y[0] = x[:, :2]
        return y

    def symbolic(x):
        y = x * 1.0
        y[1] = 0.0
        return y

    with pytest.raises(TraceError, match="needs a static shape"):  # index arrays after a slice scatter by flat position
        kiln.trace(scatter, kiln.TensorSpec(("N", 5, 6), "float64"))
    with pytest.raises(TraceError, match="does not broadcast"):
        kiln.trace(wrong_value, kiln.TensorSpec(X.shape, "float64"))
    with pytest.raises(TraceError, match="symbolic dim N"):
        kiln.trace(symbolic, kiln.TensorSpec(("N", 5, 6), "float64"))


def test_a_symbolic_batch_takes_assignments_on_its_other_axes():
    def fn(x):
        y = x * 1.0
        y[:, 0] = 1.0
        y[..., 1:3] += 2.0
        return y

    graph = kiln.trace(fn, kiln.TensorSpec(("N", 5, 6), "float64"))
    run = kiln.backends.numpy.NumpyBackend().compile(graph)
    for batch in (1, 3):
        x = RNG.standard_normal((batch, 5, 6))
        expected = x.copy()
        expected[:, 0] = 1.0
        expected[..., 1:3] += 2.0
        np.testing.assert_array_equal(run(x)[0], expected)


class _WithState(nn.Module):
    """A layer that keeps an exponential average of its inputs and the last batch's first row in buffers, written
    in place in ``forward`` as PyTorch code does."""

    def __init__(self, torch_nn=nn):
        super().__init__()
        self.linear = torch_nn.Linear(3, 2)

    def forward(self, x):
        self.average.mul_(0.9).add_(0.1 * x.mean(0).detach())
        self.first[0] = x[0].detach()
        return self.linear(x - self.average)


def _torch_with_state(torch, kiln_model):
    class TorchWithState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)
            self.register_buffer("average", torch.zeros(3, dtype=torch.float64))
            self.register_buffer("first", torch.zeros(2, 3, dtype=torch.float64))

        forward = _WithState.forward

    model = TorchWithState().double()
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor(kiln_model.linear.weight.data))
        model.linear.bias.copy_(torch.tensor(kiln_model.linear.bias.data))
    return model


def test_buffers_written_in_place_in_forward_advance_every_step_as_in_torch():
    torch = require("torch")
    kiln.manual_seed(0)
    model = _WithState().double()
    model.register_buffer("average", np.zeros(3))
    model.register_buffer("first", np.zeros((2, 3)))
    twin = _torch_with_state(torch, model)
    batches = [(RNG.standard_normal((4, 3)) + index, RNG.standard_normal((4, 2))) for index in range(3)]
    for _ in mse_sgd_in_lockstep(torch, model, twin, batches, batch_dim=None):
        np.testing.assert_allclose(model.average.data, twin.average.numpy(), rtol=1e-10)
        np.testing.assert_allclose(model.first.data, twin.first.numpy(), rtol=1e-10)
        np.testing.assert_allclose(model.linear.weight.data, twin.linear.weight.detach().numpy(), rtol=1e-10)


def test_parameters_refuse_in_place_writes_inside_a_trace_and_take_them_outside():
    layer = nn.Linear(3, 2)

    def scale_weight(x):
        layer.weight.mul_(2.0)
        return layer(x)

    def through_a_view(x):
        layer.weight.T.zero_()
        return layer(x)

    with pytest.raises(TraceError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        kiln.trace(scale_weight, kiln.TensorSpec((4, 3)))
    with pytest.raises(TraceError, match="a view of a leaf Variable that requires grad"):
        kiln.trace(through_a_view, kiln.TensorSpec((4, 3)))
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):  # eagerly too, as PyTorch's
        layer.bias.zero_()
    with kiln.no_grad():  # PyTorch's rule for writing a parameter in place (test_inplace_leaf_checks_vs_torch.py)
        layer.bias.zero_()
        np.testing.assert_array_equal(layer.bias.data, np.zeros(2, np.float32))
        layer.bias.fill_(0.5).add_(1.0).mul_(2.0).sub_(0.5).div_(2.0)
        np.testing.assert_allclose(layer.bias.data, np.full(2, 1.25, np.float32))
        layer.weight.clamp_(-0.1, 0.1)
        assert np.abs(layer.weight.data).max() <= np.float32(0.1)
        layer.weight.copy_(np.ones((2, 3)))
    np.testing.assert_array_equal(layer.weight.data, np.ones((2, 3), np.float32))
