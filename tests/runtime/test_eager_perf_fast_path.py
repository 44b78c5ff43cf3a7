"""Eager mode's fast path (``runtime/eager.py``): an op whose signature (name, attributes as given, operand types) was
seen runs without re-running its shape rule. It must give what the first sighting gives: values and gradients (torch
in float64), errors and the user's line, multi-result ops, and a bounded cache."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.runtime import eager
from oracles import require_torch


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty fast-path cache for this test (the first op of each signature is then a first sighting)."""
    monkeypatch.setattr(eager, "_KNOWN", {})
    return eager._KNOWN


def _chain(lib, x, w, b):
    h = lib.tanh(x @ w + b)  # matmul, add, tanh
    values, indices = h.max(1)
    return (values * 2.0 + h.sum(dim=1, keepdim=False)).sum(), indices


def test_values_and_gradients_on_the_fast_path_match_torch_in_float64(fresh_cache):
    torch = require_torch()
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape) for shape in ((5, 4), (4, 3), (3,))]
    for _ in range(3):  # first sighting, then twice from the cache
        x, w, b = (kiln.tensor(a, requires_grad=True) for a in arrays)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in arrays)
        loss, indices = _chain(kiln, x, w, b)
        torch_loss, torch_indices = _chain(torch, tx, tw, tb)
        loss.backward()
        torch_loss.backward()
        np.testing.assert_allclose(loss.item(), torch_loss.item(), rtol=1e-12)
        np.testing.assert_array_equal(indices.numpy(), torch_indices.numpy())
        for kiln_leaf, torch_leaf in ((x, tx), (w, tw), (b, tb)):
            np.testing.assert_allclose(kiln_leaf.grad.numpy(), torch_leaf.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert any(key[0] == "tensor.matmul" for key in fresh_cache)


def test_a_multi_result_op_gives_a_tuple_from_the_cache_too(fresh_cache):
    torch = require_torch()
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(shape) for shape in ((3,), (2, 2))]
    for _ in range(2):  # first sighting, then from the cache
        grads = [kiln.tensor(a) for a in arrays]
        clipped = eager.eager_context().emit("optim.clip_grad_norm", *(g.value for g in grads), max_norm=0.5)
        parameters = [torch.nn.Parameter(torch.zeros(a.shape, dtype=torch.float64)) for a in arrays]
        for parameter, a in zip(parameters, arrays):
            parameter.grad = torch.tensor(a)
        torch.nn.utils.clip_grad_norm_(parameters, 0.5)
        assert isinstance(clipped, tuple) and [v.type.shape for v in clipped] == [(3,), (2, 2)]
        for value, parameter in zip(clipped, parameters):
            np.testing.assert_allclose(kiln.frontend.tensor.Tensor(value).numpy(), parameter.grad.numpy(), rtol=1e-12)
    assert [len(entry[1]) for key, entry in fresh_cache.items() if key[0] == "optim.clip_grad_norm"] == [2]


def test_a_cached_op_has_the_same_attributes_types_and_a_location_of_its_own(fresh_cache):
    x = kiln.tensor(np.ones((2, 3), np.float32))
    first = x.sum(dim=1, keepdim=True)
    second = x.sum(dim=1, keepdim=True)  # from the cache
    first_op, second_op = first.value.producer, second.value.producer
    assert second_op is not first_op and second_op.attrs == first_op.attrs and second.value.type == first.value.type
    assert first_op.location.startswith("test_eager_perf_fast_path.py:") and second_op.location != first_op.location
    assert int(second_op.location.split(":")[1].split()[0]) == int(first_op.location.split(":")[1].split()[0]) + 1
    assert second_op.operands == [x.value] and x.value.uses == []  # the graph keeps nothing, as on the first sighting
    assert not first_op.results and not second_op.results  # no value -> op -> value cycle
    first_op.attrs["keepdims"] = False  # an op's attributes are its own: the cache keeps a copy
    assert x.sum(dim=1, keepdim=True).value.producer.attrs["keepdims"] is True


def test_shape_errors_are_raised_alike_before_and_after_a_signature_is_cached(fresh_cache):
    # an elementwise op: its shape rule raises (matmul's shapes are checked before the op, in torch's words)
    a, b = kiln.tensor(np.ones((2, 3), np.float32)), kiln.tensor(np.ones((4, 5), np.float32))
    messages = []
    for _ in range(2):
        with pytest.raises(kiln.TraceError) as error:
            a + b
        messages.append(str(error.value).split("\n", 1)[1])
    a + kiln.tensor(np.ones((1, 3), np.float32))  # now an add of other shapes is cached
    where = r"(?s)test_eager_perf_fast_path.py:\d+ in .*a \+ b.*The size of tensor a"
    with pytest.raises(kiln.TraceError, match=where) as error:
        a + b
    assert str(error.value).split("\n", 1)[1] == messages[0] == messages[1]


def test_attributes_equal_in_python_but_of_other_types_are_other_signatures():
    operand = (Value(TensorType((2, 3), DType.f32)),)
    keys = [eager.known_signature("tensor.reduce_sum", {"axes": axes, "keepdims": keep}, operand)
            for axes, keep in (((1,), True), ((1,), 1), ((1.0,), True), ([1], True))]
    assert len(set(keys)) == 4
    zeros = [eager.known_signature("tensor.clamp", {"min": value}, operand) for value in (0.0, -0.0)]
    assert zeros[0] != zeros[1]
    assert eager.known_signature("tensor.constant", {"value": np.ones(2)}, ()) is None  # arrays are never cached
    assert eager.known_signature("tensor.add", {"name_hint": "h"}, operand * 2) is None


def test_a_bool_attribute_does_not_take_an_int_ones_cached_result(fresh_cache):
    torch = require_torch()
    x = np.arange(12.0).reshape(3, 4)
    for keepdim in (1, True, 0, False):
        np.testing.assert_array_equal(kiln.tensor(x).sum(dim=1, keepdim=keepdim).numpy(),
                                      torch.tensor(x).sum(dim=1, keepdim=bool(keepdim)).numpy())


def test_the_cache_is_bounded(fresh_cache, monkeypatch):
    monkeypatch.setattr(eager, "EXECUTABLES_LIMIT", 3)
    for size in range(1, 8):
        F.relu(kiln.tensor(np.ones(size, np.float32)))
        assert len(fresh_cache) <= 3
    assert ("tensor.relu", (), (TensorType((7,), DType.f32),)) in fresh_cache  # the newest stays


def test_array_types_are_shared_per_shape_and_dtype_and_unsupported_dtypes_fail_every_time():
    from kiln.compiler.errors import ShapeError
    from kiln.frontend.eager_values import array_type

    for array in (np.ones((2, 3), np.float32), np.ones((2, 3), np.float64), np.ones((), np.int64), np.ones((3, 2), ">f4")):
        assert array_type(array) == TensorType.of_array(array)
        assert array_type(array.copy()) is array_type(array)
    assert array_type(np.ones((2, 3), np.float32)) != array_type(np.ones((2, 3), np.float64))
    for _ in range(2):
        with pytest.raises(ShapeError, match="dtype kiln.complex64: the IR holds no complex values"):
            array_type(np.ones(2, np.complex64))


def test_parameter_reads_take_the_parameters_current_type_and_array():
    parameter = kiln.nn.Parameter(np.ones((2, 3), np.float32))
    context = eager.eager_context()
    first = context.value_of(parameter)
    parameter.data = np.zeros((4,), np.float64)
    second = context.value_of(parameter)
    assert first is not second and first.type == TensorType((2, 3), DType.f32) and second.type == TensorType((4,), DType.f64)
    np.testing.assert_array_equal(kiln.frontend.tensor.Tensor(second).numpy(), np.zeros(4))


def test_op_signatures_are_the_attributes_hashable_forms_and_the_operand_types():
    from kiln.compiler.passes.cse import hashable_attr

    x = kiln.tensor(np.arange(12.0).reshape(3, 4))
    results = [x[:, 1:3], x + 1, x.sum(1, keepdim=True), x.to(kiln.float32), x * 0.5, kiln.clamp(x, min=-0.0),
               x.permute(1, 0)]
    ops = [result.value.producer for result in results] + [results[1].value.producer.operands[1].producer]  # a constant
    assert ops[-1].name == "tensor.constant"
    for op in ops:
        expected = (op.name, tuple((key, hashable_attr(value)) for key, value in op.attrs.items()),
                    tuple(value.type for value in op.operands))
        assert eager.op_signature(op) == expected and hash(eager.op_signature(op)) == hash(expected)
