"""The NumPy backend's own rewrites and kernels: each computes what the op it replaces computes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import lowering_losses, lowering_movement
from kiln.backends.numpy import NUMPY, NumpyBackend
from kiln.backends.numpy.out_nn import batch_summed_matmul_into, gelu_into, layer_norm_into, sigmoid_into, softmax_into
from oracles import require


def test_scatter_add_sums_repeated_rows_as_add_at_does():
    rng = np.random.default_rng(0)
    indices, updates = rng.integers(0, 7, (5, 9)), rng.standard_normal((5, 9, 3)).astype(np.float32)
    expected = np.zeros((7, 3), np.float32)
    np.add.at(expected, indices, updates)
    got = lowering_movement.scatter_add(updates, indices, axis=0, shape=(7, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    negative = lowering_movement.scatter_add(updates[:1, :2], np.array([[-1, 6]]), axis=0, shape=(7, 3))
    np.testing.assert_allclose(negative[6], updates[0, 0] + updates[0, 1], rtol=1e-6)  # -1 and 6 are one row


def test_batch_summed_matmul_is_the_sum_of_the_batch_of_products():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 6, 5)), rng.standard_normal((4, 5, 3))
    out = np.empty((6, 3))
    np.testing.assert_allclose(batch_summed_matmul_into(a, b, out), np.einsum("nik,nkj->ij", a, b), rtol=1e-12)
    transposed = rng.standard_normal((4, 5, 6)).transpose(0, 2, 1)  # a weight gradient's x^T, a view
    np.testing.assert_allclose(batch_summed_matmul_into(transposed, b, out), np.einsum("nik,nkj->ij", transposed, b), rtol=1e-12)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_into_kernels_match_their_formulas(approximate):
    x = np.random.default_rng(2).standard_normal((3, 4, 8))
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(softmax_into(x, np.empty_like(x), -1), shifted / shifted.sum(axis=-1, keepdims=True), rtol=1e-12)
    erf = np.vectorize(__import__("math").erf)
    gelu = 0.5 * x * (1 + (np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)) if approximate == "tanh" else erf(x / np.sqrt(2))))
    np.testing.assert_allclose(gelu_into(x, np.empty_like(x), approximate), gelu, rtol=1e-12, atol=1e-15)
    w, b = np.linspace(0.5, 2, 8), np.linspace(-1, 1, 8)
    normalized = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(layer_norm_into(x, w, b, np.empty_like(x), 1e-5), normalized * w + b, rtol=1e-12)


def _step(model, loss_fn):
    return kiln.compile_train_step(model, loss_fn, kiln.optim.SGD(model.parameters(), lr=0.0))


def _source(step) -> str:
    return list(step.compiled.values())[-1].executable.source


def test_relu_backward_runs_as_a_bit_mask():
    kiln.manual_seed(0)
    model = nn.Sequential([nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)])
    x, y = np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2])
    step = _step(model, F.cross_entropy)
    step(x, y)
    source = _source(step)
    assert "k_tensor_where" not in source and "np.bitwise_and(" in source  # where(x > 0, g, 0): g's bits AND [x > 0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("planned", [True, False])
def test_selecting_or_zero_drops_infinities_and_nans_exactly(dtype, planned, monkeypatch):
    """``where(c, x, 0)`` is 0 where ``c`` is false even if ``x`` is inf or NaN there (a multiply by the mask gives NaN):
    masking is how CTC, gathers and attention keep impossible values out. Both code generators, both float widths,
    a transposed (non-contiguous) ``x`` too."""
    monkeypatch.setattr(NumpyBackend, "plan_memory", planned)
    graph = kiln.trace(lambda x, c: (F.where(c, x * 1.0, 0.0), F.where(c, x.T.T * 1.0, 0.0) + 0.0, F.where(c, x.transpose(0, 1), 0.0)),
                       kiln.TensorSpec((3, 3), dtype), kiln.TensorSpec((3, 3), "bool"))
    x = np.array([[np.inf, -np.inf, np.nan], [1.5, -0.0, 2.0], [np.nan, 3.0, -4.0]], dtype)
    condition = np.array([[False, False, False], [True, True, False], [True, False, True]])
    for got, source in zip(NumpyBackend().compile(graph)(x, condition), (x, x, x.T)):
        np.testing.assert_array_equal(got, np.where(condition, source, 0.0).astype(dtype))


def test_loss_and_its_gradient_come_from_one_kernel_with_the_loss_kernels_result():
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((6, 5, 3)).astype(np.float32), rng.integers(0, 5, (6, 3))
    attrs = dict(reduction="mean", ignore_index=-100, label_smoothing=0.0)
    out, cotangent = np.empty_like(logits), np.array(1.0, np.float32)
    loss = lowering_losses.softmax_cross_entropy_grad_into(logits, labels, cotangent, out=out, **attrs)
    assert loss == lowering_losses.cross_entropy(logits, labels, **attrs)
    np.testing.assert_array_equal(out, lowering_losses.cross_entropy_grad(logits, labels, cotangent, **attrs))
    kiln.manual_seed(0)
    model = nn.Sequential([nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)])
    step = _step(model, F.cross_entropy)
    step(rng.standard_normal((6, 5)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2]))
    assert "_softmax_cross_entropy(" in _source(step) and "k_nn_softmax" not in _source(step)
    assert "np.equal" not in _source(step)  # no one-hot matrix for plain labels




@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean"])
@pytest.mark.parametrize("keepdims", [True, False])
def test_row_sums_of_a_buffer_run_as_a_product_with_ones(op, dtype, keepdims):
    from kiln.backends.numpy import NumpyBackend
    from kiln.compiler.ir import Builder, Graph, TensorType

    graph = Graph("rows")
    x = graph.add_input(TensorType(("N", 3, 7), dtype), "x")
    b = Builder(graph)
    rows = getattr(b, op)(b.mul(x, x), axes=(-1,), keepdims=keepdims)
    graph.outputs = [b.exp(rows)]
    executable = NumpyBackend().compile(graph)
    assert "_nn.row_sums_into(" in executable.source  # the row reduction of the buffer x * x
    for n in (0, 1, 5):
        value = np.random.default_rng(n).standard_normal((n, 3, 7)).astype(dtype.replace("f", "float"))
        want = np.exp(getattr(np, op.split("_")[1])(value * value, axis=-1, keepdims=keepdims))
        np.testing.assert_allclose(executable(value)[0], want, rtol=1e-6 if dtype == "f32" else 1e-13)


def test_row_sums_are_a_product_with_ones_where_contiguous_and_numpys_elsewhere(monkeypatch):
    from kiln.backends.numpy.out_nn import row_sums_into

    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    calls = []
    matmul = np.matmul
    monkeypatch.setattr(np, "matmul", lambda *a, **k: calls.append(a[0].shape) or matmul(*a, **k))
    np.testing.assert_allclose(row_sums_into(x, np.empty((3, 4))), x.sum(-1), rtol=1e-13)
    assert calls == [(12, 5)]  # one GEMV over every row
    np.testing.assert_allclose(row_sums_into(x.swapaxes(0, 1), np.empty((4, 3, 1))), x.swapaxes(0, 1).sum(-1, keepdims=True), rtol=1e-13)
    assert len(calls) == 1  # a strided view: NumPy's reduction


def test_softmax_rows_of_a_strided_view_are_summed_by_numpy():
    x = np.random.default_rng(0).standard_normal((4, 5, 6)).transpose(0, 2, 1)
    want = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(softmax_into(x, np.empty_like(x), axis=-1), want, rtol=1e-13)
    np.testing.assert_allclose(softmax_into(x, np.empty(x.shape), axis=2), want, rtol=1e-13)


@pytest.mark.parametrize("contiguous", [True, False])
def test_a_stack_of_matrices_times_a_matrix_is_one_gemm_with_numpys_result(contiguous):
    from kiln.backends.numpy.out_nn import stacked_matmul_into

    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 4, 5, 6)) if contiguous else rng.standard_normal((3, 4, 6, 5)).swapaxes(-1, -2)
    b = rng.standard_normal((6, 7))
    np.testing.assert_allclose(stacked_matmul_into(a, b, np.empty((3, 4, 5, 7))), a @ b, rtol=1e-13)
    np.testing.assert_allclose(stacked_matmul_into(a[:0], b, np.empty((0, 4, 5, 7))), np.empty((0, 4, 5, 7)))
    kiln.manual_seed(0)
    step = _step(nn.Sequential([nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 2)]), F.mse_loss)
    step(a.reshape(12, 5, 6).astype(np.float32), np.zeros((12, 5, 2), np.float32))
    assert "_nn.stacked_matmul_into(" in _source(step)


def test_concurrent_calls_from_threads_do_not_share_buffers():
    """Each thread gets its own planned buffers: NumPy releases the GIL inside large ufuncs and matmuls, so shared
    buffers would mix two calls' intermediates."""
    from concurrent.futures import ThreadPoolExecutor

    kiln.manual_seed(0)
    model = nn.Sequential([nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 8)])
    forward = kiln.compile(model)
    inputs = [np.random.default_rng(seed).standard_normal((512, 256)).astype(np.float32) for seed in range(8)]
    expected = [np.array(forward(x)) for x in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            results = list(pool.map(lambda x: np.array(forward(x)), inputs * 4))
            for got, want in zip(results, expected * 4):
                np.testing.assert_array_equal(got, want)


SIGMOID_TAILS = {"float32": np.linspace(-87, 30, 4001), "float64": np.linspace(-700, 40, 4001)}


@pytest.mark.parametrize("dtype", sorted(SIGMOID_TAILS))
def test_sigmoid_keeps_its_relative_accuracy_in_both_tails(dtype):
    """``sigmoid(-30)`` is 9.4e-14: ``(tanh(x/2) + 1) / 2`` gave it to an ulp of 1 (no correct digit); every kernel of
    the op (the lowering table's, the planned code's ``out=`` one) is now within a few ulps of the float64 oracle
    (torch's, which is accurate) relative to the result, down to where ``exp`` would overflow."""
    torch = require("torch")
    x = SIGMOID_TAILS[dtype].astype(dtype)
    expected = torch.sigmoid(torch.tensor(x.astype(np.float64))).numpy()
    planned = kiln.compile(F.sigmoid)(x)
    for got in (NUMPY.get("tensor.sigmoid")(x), planned, sigmoid_into(x.copy(), np.empty_like(x))):
        assert got.dtype == x.dtype
        np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_of_the_extremes_and_nan(dtype):
    x = np.array([np.nan, np.inf, -np.inf, -1e30, 1e30, 0.0], dtype)
    with np.errstate(over="raise", invalid="raise"):  # exp(1e30)'s overflow to inf is intended, and silent
        got = sigmoid_into(x, np.empty_like(x))
    np.testing.assert_array_equal(got[1:], np.array([1, 0, 0, 1, 0.5], dtype))  # PyTorch's: 0 far left
    assert np.isnan(got[0])


def _add_at(updates, indices, axis, shape):
    expected = np.zeros(shape, updates.dtype)
    np.add.at(expected, (slice(None),) * (axis % len(shape)) + (indices,), updates)
    return expected


# (output shape, axis, indices): every axis, 1-D and 2-D indices, repeats, negative indices (add.at wraps them),
# cells no index reaches and indices that reach every cell
SCATTERS = {
    "axis_1_repeats": ((4, 7, 3), 1, np.array([0, 3, 3, 6, 0, 3, 1])),
    "axis_2_of_4": ((2, 3, 5, 4), 2, np.array([4, 4, 4, 0, 2])),
    "last_axis": ((3, 2, 6), -1, np.array([5, 0, 5, 1, 1, 2, 3, 4, 0])),
    "last_axis_every_cell": ((3, 4), 1, np.array([3, 2, 1, 0, 2, 3])),
    "two_dim_indices_axis_1": ((3, 6, 2), 1, np.array([[5, 0, 5], [2, 2, 4]])),
    "two_dim_indices_last_axis": ((2, 5), 1, np.array([[0, 4], [4, 1], [1, 1]])),
    "negative_indices_axis_1": ((2, 6, 3), 1, np.array([-1, 5, 0, -6, 2, -2, -2])),
    "negative_indices_axis_0": ((6, 3), 0, np.array([[-1, 5], [0, -6]])),
    "one_index": ((2, 3, 4), 2, np.array([2])),
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("case", list(SCATTERS))
def test_scatter_add_on_any_axis_is_add_at(case, dtype):
    shape, axis, indices = SCATTERS[case]
    at = axis % len(shape)
    updates = (np.random.default_rng(4).standard_normal(shape[:at] + indices.shape + shape[at + 1 :]) * 10).astype(dtype)
    got = lowering_movement.scatter_add(updates, indices, axis=axis, shape=shape)
    assert got.dtype == updates.dtype and got.shape == shape
    np.testing.assert_allclose(got, _add_at(updates, indices, axis, shape), rtol=1e-12 if dtype != "float32" else 1e-6)


def test_scatter_add_keeps_infinities_and_nans_in_their_cells_as_add_at_does():
    indices = np.array([2, 0, 2, 3, 0, 2])
    updates = np.random.default_rng(5).standard_normal((3, 6, 2))
    updates[0, 0, 1], updates[1, 3, 0], updates[2, 1, 0], updates[2, 4, 0] = np.inf, np.nan, np.inf, -np.inf  # inf - inf in cell 0
    with np.errstate(invalid="ignore"):
        got = lowering_movement.scatter_add(updates, indices, axis=1, shape=(3, 4, 2))
        expected = _add_at(updates, indices, 1, (3, 4, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-12)  # NaN where add.at has NaN, inf where it has inf
    assert list(zip(*np.nonzero(np.isnan(got)))) == [(1, 3, 0), (2, 0, 0)] and list(zip(*np.nonzero(np.isinf(got)))) == [(0, 2, 1)]


@pytest.mark.parametrize("index", [4, -5])
def test_scatter_add_of_an_index_out_of_range_raises_as_add_at_does(index):
    with pytest.raises(IndexError):
        lowering_movement.scatter_add(np.ones((2, 3)), np.array([0, index, 1]), axis=1, shape=(2, 4))


class _NumpyWithoutAddAt:
    """``np`` whose ``np.add.at`` fails the test."""

    class add:
        reduceat = staticmethod(np.add.reduceat)

        @staticmethod
        def at(*args):
            raise AssertionError("scatter_add fell back to np.add.at")

    def __getattr__(self, name):
        return getattr(np, name)


def test_scatter_add_off_axis_0_sums_without_add_at(monkeypatch):
    """``np.add.at`` walks the elements one by one; host arrays with indices in range never reach it, on any axis."""
    monkeypatch.setattr(lowering_movement, "np", _NumpyWithoutAddAt())
    for case in ("axis_1_repeats", "last_axis", "two_dim_indices_axis_1", "negative_indices_axis_1"):
        shape, axis, indices = SCATTERS[case]
        at = axis % len(shape)
        updates = np.random.default_rng(6).standard_normal(shape[:at] + indices.shape + shape[at + 1 :])
        np.testing.assert_allclose(lowering_movement.scatter_add(updates, indices, axis=axis, shape=shape),
                                   _add_at(updates, indices, axis, shape), rtol=1e-12)


def test_pad_of_an_empty_axis_is_all_fill():
    """An axis a crop emptied, padded again: the fill only (the destination slice of no elements is empty)."""
    x = np.ones((2, 0, 3), np.float32)
    got = lowering_movement.pad(x, low=(0, 1, 0), high=(0, 2, 1), interior=(0, 1, 0), value=7.0)
    np.testing.assert_array_equal(got, np.full((2, 3, 4), 7, np.float32))
    np.testing.assert_array_equal(lowering_movement.pad(np.arange(3.0), low=(1,), high=(0,), interior=(2,), value=0.0),
                                  [0, 0, 0, 0, 1, 0, 0, 2])


class _Recurrence(nn.Module):
    """``h = tanh(h @ w.T + x_t)`` over ``steps`` time steps: ``w.T`` is the right operand of one matmul per step."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.cell = steps, nn.Linear(4, 4, bias=False)

    def forward(self, x):
        h = x[:, 0]
        for t in range(1, self.steps):
            h = kiln.tanh(self.cell(h) + x[:, t])
        return h


@pytest.mark.parametrize("steps, packed", [(6, True), (3, False)])
def test_a_transpose_many_matmuls_read_on_the_right_is_copied_row_major_once(steps, packed):
    import re

    from kiln.backends.numpy.codegen import PACKED_TRANSPOSE_READERS

    assert (steps - 1 >= PACKED_TRANSPOSE_READERS) == packed
    torch = require("torch")
    x = np.random.default_rng(3).standard_normal((5, steps, 4)).astype(np.float32)
    kiln.manual_seed(0)
    model = _Recurrence(steps)
    reference = torch.nn.Linear(4, 4, bias=False)
    reference.weight.data = torch.tensor(np.array(model.cell.weight))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    step = kiln.compile_train_step(model, F.mse_loss, kiln.optim.SGD(model.parameters(), lr=0.5))
    for _ in range(3):  # the weight is updated in place after the step's reads of its row-major copy
        step(x, np.zeros((5, 4), np.float32))
        h = torch.from_numpy(x[:, 0])
        for t in range(1, steps):
            h = torch.tanh(reference(h) + torch.from_numpy(x[:, t]))
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(h, torch.zeros(5, 4)).backward()
        optimizer.step()
    np.testing.assert_allclose(np.array(model.cell.weight), reference.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert bool(re.search(r"= np\.ascontiguousarray\(v_\w+\.T\)\n", _source(step))) == packed
