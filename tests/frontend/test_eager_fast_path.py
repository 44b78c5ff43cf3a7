"""``apply``'s eager fast path (``frontend/op_dispatch.py`` ``_plain_number_dtype`` into ``runtime/eager.py``
``emit_values``/``emit_constant``): an op on fresh tensors and Python numbers that needs no promotion, seen before,
is built and run without the general path's steps. Everything the general path honours must hold on it too: the user's
line on each op and in errors, grad and inference mode, version counters, saved-tensor hooks, tensor hooks, the
profiler, anomaly mode, autocast, type promotion, NumPy's error state, stale views. Each case runs past its first
sighting, and the first test pins that those repeats do take the fast path (no ``EagerContext.emit``)."""

from __future__ import annotations

import inspect
import os
import warnings

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.compiler.errors import TraceError
from kiln.frontend.tensor import apply
from kiln.runtime import eager
from oracles import require_torch

THIS_FILE = os.path.basename(__file__)
REPEATS = 3
"""First sighting, then twice from the caches."""


def _line_after(marker_line: int, lines: int = 1) -> str:
    return f"{THIS_FILE}:{marker_line + lines}"


def _here() -> int:
    return inspect.currentframe().f_back.f_lineno


def _tensors(*shapes, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [kiln.tensor(rng.standard_normal(shape).astype(dtype)) for shape in shapes]


def test_repeated_plain_ops_take_the_fast_path(monkeypatch):
    a, b = _tensors((4, 3), (4, 3))
    w, bias = _tensors((5, 3), (5,), seed=1)
    calls = []
    emit = eager.EagerContext.emit
    monkeypatch.setattr(eager.EagerContext, "emit", lambda self, name, *operands, **attrs: calls.append(name) or
                        emit(self, name, *operands, **attrs))
    for _ in range(REPEATS):
        calls.clear()
        a + b, a * 2.0, a.relu(), a.sum(1), a.reshape(-1), a.softmax(1), F.linear(a, w, bias)
    assert calls == []  # every op (and the constant 2.0) from the fast path


def test_each_op_and_its_constant_name_the_users_line():
    a, b = _tensors((4, 3), (4, 3))
    for _ in range(REPEATS):
        line = _here()
        total, scaled = a + b, a * 2.0
        assert total.value.producer.location == f"{_line_after(line)} in {test_each_op_and_its_constant_name_the_users_line.__name__}"
        product = scaled.value.producer
        constant = product.operands[1].producer
        assert product.name == "tensor.mul" and constant.name == "tensor.constant"
        assert product.location == constant.location == total.value.producer.location


def test_apply_called_by_the_user_names_the_users_line():
    a, b = _tensors((4, 3), (4, 3))
    for _ in range(REPEATS):
        line = _here()
        total = apply("tensor.add", a, b)  # no kiln frame between the user and apply
        assert total.value.producer.location.startswith(f"{_line_after(line)} in test_apply_called")


def _linear_in_a_helper(x, w, bias):
    return F.linear(x, w, bias)  # the line each of linear's ops names


def test_ops_deep_inside_kiln_name_the_users_line_not_kilns():
    x, w, bias = _tensors((2, 3), (4, 3), (4,))
    line = inspect.getsourcelines(_linear_in_a_helper)[1] + 1
    for _ in range(REPEATS):
        out = _linear_in_a_helper(x, w, bias)
        add = out.value.producer
        matmul = add.operands[0].producer
        transpose = matmul.operands[1].producer
        for op in (add, matmul, transpose):
            assert op.location == f"{THIS_FILE}:{line} in _linear_in_a_helper", op.name


def test_shape_errors_name_the_users_line_after_the_signature_was_seen():
    a, b = _tensors((4, 3), (4, 3))
    c, = _tensors((5, 2))
    for _ in range(REPEATS):
        a + b
        line = _here()
        with pytest.raises(TraceError, match=rf"{_line_after(line, 2)} in test_shape.*\n.*must match the size of tensor b"):
            a + c


def test_a_traced_tensor_used_eagerly_is_refused_at_the_users_line():
    kept = []

    def keep(x):
        kept.append(x)
        return x * 2

    kiln.trace(keep, kiln.TensorSpec((2, 2)))
    a, = _tensors((2, 2))
    for _ in range(REPEATS):
        a + a
        line = _here()
        with pytest.raises(TraceError, match=rf"{_line_after(line, 2)} in test_a_traced.*\n.*an operand is a traced tensor"):
            kept[0] + kept[0]


def test_no_grad_and_inference_mode_results_keep_no_chain():
    x, w = _tensors((3, 2), (3, 2))
    x.requires_grad_()
    for _ in range(REPEATS):
        assert (x * w).requires_grad and (x * 2.0).requires_grad
        for mode in (kiln.no_grad, kiln.inference_mode):
            with mode():
                product, scaled = x * w, x * 2.0
            assert not product.requires_grad and product.grad_fn is None and product.value.producer is None
            assert not scaled.requires_grad and scaled.value.producer is None
        with kiln.no_grad(), kiln.enable_grad():
            assert (x * w).requires_grad


def test_an_overwritten_saved_value_is_refused_by_backward_as_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        w = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        for _ in range(REPEATS):
            h = w + 1
            y = h * w
            h.add_(1)
            assert h._version == 1
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                y.sum().backward()


def test_an_in_place_writes_own_ops_do_not_refuse_its_backward_as_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        w = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        for _ in range(REPEATS):
            h = w + 1
            h.mul_(w)  # saves h's old value itself: torch's backward takes it
            h.sum().backward()
            np.testing.assert_array_equal(np.asarray(w.grad), [3.0, 5.0])
            w.grad = None


def _saved_hook_counts(lib):
    x = lib.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    w = lib.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    counts = []
    for _ in range(REPEATS):
        calls = []
        with lib.autograd.graph.saved_tensors_hooks(lambda t: calls.append("pack") or t, lambda t: calls.append("unpack") or t):
            loss = (x * w + x * 3.0).exp().sum()
        loss.backward()
        counts.append((calls.count("pack"), calls.count("unpack")))
    return counts


def test_saved_tensor_hooks_pack_and_unpack_as_torch():
    torch = require_torch()
    assert _saved_hook_counts(kiln) == _saved_hook_counts(torch)


def test_tensor_hooks_on_fast_path_results_run_at_backward():
    x, = _tensors((3,))
    x.requires_grad_()
    for _ in range(REPEATS):
        seen = []
        h = x * 2.0
        h.register_hook(lambda grad: seen.append(np.array(grad)) or grad * 10)
        (h + h).sum().backward()
        np.testing.assert_array_equal(seen[0], np.full(3, 2.0, np.float32))
        np.testing.assert_array_equal(np.array(x.grad), np.full(3, 40.0, np.float32))
        x.grad = None


def test_the_profiler_records_every_fast_path_op():
    a, b = _tensors((4, 3), (4, 3))
    for _ in range(REPEATS):
        a + b, a * 2.0, a.reshape(-1)
    with kiln.profiler.profile() as profile:
        a + b, a * 2.0, a.reshape(-1)
    counts = {row.key: row.count for row in profile.key_averages()}
    assert counts == {"aten::add": 1, "aten::mul": 1, "aten::scalar_tensor": 1, "aten::reshape": 1}  # 2.0's constant too


def _sqrt_loss(x):
    return (x.sqrt() * 0 + x).sum()  # sqrt's gradient at 0 and -1, times 0: NaN


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_anomaly_mode_names_the_forward_ops_line():
    for _ in range(REPEATS):
        x = kiln.tensor(np.array([1.0, -1.0, 0.0]), requires_grad=True)
        with kiln.autograd.detect_anomaly():
            loss = _sqrt_loss(x)
            with pytest.raises(RuntimeError, match=rf"{THIS_FILE}:\d+ in _sqrt_loss.*returned nan values"):
                loss.backward()


def test_autocast_regions_cast_ops_seen_outside_them():
    a, w, bias = _tensors((4, 3), (5, 3), (5,))
    for _ in range(REPEATS):
        assert F.linear(a, w, bias).dtype is kiln.float32 and (a @ w.T).dtype is kiln.float32
        with kiln.autocast("cpu", dtype=kiln.bfloat16):
            assert F.linear(a, w, bias).dtype is kiln.bfloat16 and (a @ w.T).dtype is kiln.bfloat16
            assert (a + a).dtype is kiln.float32  # add is on no autocast list


def _promotions(lib):
    f32 = lib.tensor(np.array([1.5, -2.0], np.float32))
    f64 = lib.tensor(np.array([0.25, 3.0]))
    i64 = lib.tensor(np.array([3, -4]))
    half = lib.tensor(np.array([0.1, 7.3], np.float16))
    mask = lib.tensor(np.array([True, False]))
    results = [f32 + f32, f32 + f64, f64 * f32, i64 * 2.5, i64 + 2, i64 / 2, mask + 1, half * 0.3, half + 0.3,
               lib.where(mask, f32, 0.5), lib.where(mask, f32, f64), f32 * 2, f64 - 1.5]
    return [(str(result.dtype).split(".")[-1], np.asarray(result.float() if result.dtype == lib.float16 else result))
            for result in results]


def test_promotion_and_python_numbers_as_torch_after_every_signature_was_seen():
    torch = require_torch()
    expected = _promotions(torch)
    for _ in range(REPEATS):
        for (dtype, values), (torch_dtype, torch_values) in zip(_promotions(kiln), expected):
            assert dtype == torch_dtype
            np.testing.assert_array_equal(values, torch_values)


def test_numpys_error_state_is_kilns_inside_an_op_and_the_users_around_it():
    x, = _tensors((3,))
    zero = kiln.tensor(np.zeros(3, np.float32))
    for _ in range(REPEATS):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # NumPy's default state would warn on x / 0
            assert np.isinf(np.array(x / zero)).all()
        with np.errstate(all="raise"):
            assert np.isinf(np.array(x / zero)).all()  # kiln ignores float errors inside its ops, as torch
            assert np.geterr()["divide"] == "raise"  # and leaves the user's state as it was
            with pytest.raises(FloatingPointError):
                np.ones(1) / np.zeros(1)
    assert np.geterr()["divide"] == "warn"


def test_a_view_made_stale_by_a_write_is_read_fresh_as_torch():
    torch = require_torch()
    results = []
    for lib in (torch, kiln):
        values = []
        for _ in range(REPEATS):
            base = lib.tensor(np.arange(6.0)) * 1.0  # a non-leaf
            view = base.reshape(2, 3)
            base.add_(1)
            values.append(np.asarray(view + view))
        results.append(values)
    np.testing.assert_array_equal(results[0], results[1])
