"""The eager dispatch path's shortcuts (``frontend/op_dispatch.py`` ``apply``, ``runtime/eager.py``): each must give what the
general path gives. Promotion's one-floating-dtype shortcut (result dtypes and values against torch), the reshape
cache (keyed by source and target, plain shapes only, errors never cached), constants built without the builder (the
same op, type and location; anything unusual still goes through the builder and its errors) and the int-tuple
attribute key (attributes that differ never share a cached op)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
import kiln.frontend.reshape_targets as reshape_targets
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.frontend.eager_values import ARRAYS
from kiln.runtime import eager
from oracles import require_torch

DTYPES = ("float16", "bfloat16", "float32", "float64", "int32", "int64", "bool")
OPERATIONS = {"add": lambda x, y: x + y, "mul": lambda x, y: x * y, "div": lambda x, y: x / y,
              "lt": lambda x, y: x < y, "maximum": lambda lib, x, y: lib.maximum(x, y)}


def _pair(torch, left, right):
    values = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 4.0]])
    kiln_pair = [kiln.tensor(values + index, dtype=getattr(kiln, name)) for index, name in enumerate((left, right))]
    torch_pair = [torch.tensor(values + index, dtype=getattr(torch, name)) for index, name in enumerate((left, right))]
    return kiln_pair, torch_pair


def _same(kiln_result, torch_result):
    assert str(kiln_result.dtype) == str(torch_result.dtype).replace("torch.", "kiln."), (kiln_result.dtype, torch_result.dtype)
    np.testing.assert_array_equal(np.asarray(kiln_result.numpy(), np.float64), torch_result.double().numpy())


@pytest.mark.parametrize("left,right", list(itertools.product(DTYPES, DTYPES)))
def test_promotion_of_every_dtype_pair_matches_torch(left, right):
    torch = require_torch()
    (x, y), (tx, ty) = _pair(torch, left, right)
    for name in ("add", "mul", "div", "lt"):
        _same(OPERATIONS[name](x, y), OPERATIONS[name](tx, ty))
    _same(OPERATIONS["maximum"](kiln, x, y), OPERATIONS["maximum"](torch, tx, ty))
    _same(kiln.where(x > 1, x, y), torch.where(tx > 1, tx, ty))


@pytest.mark.parametrize("dtype", DTYPES[:-1])
@pytest.mark.parametrize("number", (2, 2.5, -0.0))
def test_a_python_number_takes_the_tensors_dtype_or_promotes_as_torch(dtype, number):
    torch = require_torch()
    (x, _), (tx, _) = _pair(torch, dtype, dtype)
    for operation in (lambda a: a * number, lambda a: number - a, lambda a: a + number, lambda a: a / (number or 1)):
        _same(operation(x), operation(tx))


def test_reshape_cache_is_keyed_by_source_and_target(monkeypatch):
    torch = require_torch()
    cache = {}
    monkeypatch.setattr(reshape_targets, "_RESOLVED", cache)
    for shape in ((2, 6), (4, 6), (2, 6)):  # the third is served from the cache
        x, tx = kiln.tensor(np.arange(np.prod(shape), dtype=np.float64).reshape(shape)), torch.arange(np.prod(shape), dtype=torch.float64).reshape(shape)
        for target in ((-1,), (3, -1), (-1, 2, 2)):
            result = x.reshape(*target)
            assert result.shape == tuple(tx.reshape(*target).shape)
            np.testing.assert_array_equal(result.numpy(), tx.reshape(*target).numpy())
    assert cache[((4, 6), (3, -1))] == (3, 8) and cache[((2, 6), (3, -1))] == (3, 4)
    assert len(cache) == 6


def test_reshape_cache_keeps_plain_shapes_only_and_never_an_error(monkeypatch):
    cache = {}
    monkeypatch.setattr(reshape_targets, "_RESOLVED", cache)
    x = kiln.tensor(np.zeros((2, 6), np.float32))
    assert x.reshape(np.int64(3), -1).shape == (3, 4) and cache == {}
    with pytest.raises(kiln.TraceError, match="bad dim True"):
        x.reshape(True, -1)  # resolves to (True, 12), which must not be kept: it hashes as (1, -1)
    assert x.reshape(1, -1).shape == (1, 12) and cache == {((2, 6), (1, -1)): (1, 12)}
    cache.clear()
    for _ in range(2):
        with pytest.raises(kiln.TraceError, match=r"test_eager_dispatch_caches.py:\d+ in .*x.reshape\(5, -1\)"):
            x.reshape(5, -1)
    assert cache == {}
    graph = kiln.trace(lambda a: a.reshape(-1, 3), kiln.TensorSpec(("N", 6)))  # a symbolic dim: resolved, then cached
    assert graph.outputs[0].type.shape == ("2*N", 3) and cache[(("N", 6), (-1, 3))] == ("2*N", 3)


def test_a_constant_is_the_op_the_builder_builds_with_the_users_line():
    array = np.asarray(2.5, np.float32)
    value = eager.eager_context().emit("tensor.constant", value=array)
    built = Builder(Graph("reference")).op("tensor.constant", value=array)
    op, reference = value.producer, built.producer
    assert op.name == reference.name and op.attrs.keys() == reference.attrs.keys() and op.attrs["value"] is array
    assert value.type == built.type and ARRAYS[value] is array and op.operands == [] and op.results == ()
    assert op.location.startswith("test_eager_dispatch_caches.py:")
    scaled = kiln.tensor(np.ones(3, np.float64)) * 2.0
    constant = scaled.value.producer.operands[1]
    assert constant.producer.name == "tensor.constant" and constant.type == TensorType((), DType.f64)
    assert constant.producer.location == scaled.value.producer.location  # the same user line


def test_unusual_constants_take_the_builders_path_and_its_errors():
    context = eager.eager_context()
    with pytest.raises(kiln.TraceError, match=r"test_eager_dispatch_caches.py:\d+ in .*uint16"):
        context.emit("tensor.constant", value=np.ones(2, np.uint16))
    assert context.emit("tensor.constant", value=np.ones(2, np.float32), name_hint="scale").name_hint == "scale"
    swapped = np.ones(2, np.dtype(">f4"))  # a byte order the fast path leaves to the builder, which accepts it
    assert context.emit("tensor.constant", value=swapped).type == TensorType((2,), DType.f32)
    with pytest.raises(kiln.TraceError, match="ndarray"):
        context.emit("tensor.constant", value=[1.0, 2.0])


def test_int_tuple_attributes_key_apart_from_every_other_form():
    operand = (Value(TensorType((2, 3), DType.f32)),)
    forms = ((1, 0), [1, 0], (True, 0), (1.0, 0), ((1,), 0), (0, 1), ())
    keys = [eager.known_signature("tensor.transpose", {"perm": perm}, operand) for perm in forms]
    assert len(set(keys)) == len(forms)
    assert eager.known_signature("tensor.transpose", {"perm": (1, 0)}, operand) == keys[0]


def test_ops_differing_only_in_attributes_never_share_a_cached_result(monkeypatch):
    torch = require_torch()
    monkeypatch.setattr(eager, "_KNOWN", {})
    values = np.arange(24.0).reshape(2, 3, 4)
    x, tx = kiln.tensor(values), torch.tensor(values)
    for _ in range(2):  # first sightings, then from the cache
        for perm in ((2, 0, 1), (1, 2, 0), [2, 0, 1]):
            np.testing.assert_array_equal(x.permute(*perm).numpy(), tx.permute(*perm).numpy())
        for dim, keepdim in ((1, False), (2, True), ((0, 2), False)):
            np.testing.assert_array_equal(x.sum(dim, keepdim).numpy(), tx.sum(dim, keepdim).numpy())
