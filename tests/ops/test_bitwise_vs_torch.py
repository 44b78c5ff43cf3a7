"""Bit operations (``&``, ``|``, ``^``, ``~``, ``<<``, ``>>``, ``bitwise_*``, in place) against PyTorch 2.13 on the CPU.

Every op runs over int32, int64 and bool tensors (every pair, broadcast), Python ints and bools on either side and
0-d tensors, on values with both signs and the extremes of each dtype, and shift counts around 0 and the bit widths
(negative, 31, 32, 33, 63, 64, 65, 100), eagerly and compiled for NumPy and for onnxruntime: the dtype and every bit
must be torch's. Float operands and bool shifts raise torch's errors; in-place forms keep the tensor's dtype or refuse
as torch does.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from oracles import require, require_torch

import kiln
from kiln.backends.onnx.export import graph_to_onnx

INT32 = [0, 1, -1, 5, -5, 7, -100, 123456789, -98765, 2**31 - 1, -2**31]
INT64 = INT32 + [2**40 + 3, -2**40 - 7, 2**63 - 1, -2**63]
COUNTS = [-70, -1, 0, 1, 5, 31, 32, 33, 63, 64, 65, 100]
DTYPES = ("int32", "int64", "bool")
BINARY = {
    "and": lambda lib, a, b: a & b,
    "or": lambda lib, a, b: a | b,
    "xor": lambda lib, a, b: a ^ b,
    "lshift": lambda lib, a, b: a << b,
    "rshift": lambda lib, a, b: a >> b,
    "bitwise_and": lambda lib, a, b: lib.bitwise_and(a, b),
    "bitwise_or": lambda lib, a, b: a.bitwise_or(b),
    "bitwise_xor": lambda lib, a, b: lib.bitwise_xor(a, b),
    "bitwise_left_shift": lambda lib, a, b: a.bitwise_left_shift(b),
    "bitwise_right_shift": lambda lib, a, b: lib.bitwise_right_shift(a, b),
}
SHIFTS = {"lshift", "rshift", "bitwise_left_shift", "bitwise_right_shift"}
MODES = ("eager", "numpy", "onnxruntime")


def values(dtype: str) -> np.ndarray:
    """A column of values of ``dtype``: both signs and its extremes (bools: both)."""
    if dtype == "bool":
        return np.array([[True], [False], [True]])
    return np.array(INT32 if dtype == "int32" else INT64, dtype=dtype).reshape(-1, 1)


def second_operand(op: str, dtype: str) -> np.ndarray:
    """A row that broadcasts against ``values``: shift counts for the shifts, mixed bits otherwise."""
    if dtype == "bool":
        return np.array([True, False, False, True])
    if op in SHIFTS:
        return np.array(COUNTS, dtype=dtype)
    return np.array([0, -1, 6, -2**31, 2**31 - 1, 0x5555], dtype=dtype)


def in_torch(function, *arrays):
    torch = require_torch()
    return function(torch, *(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in arrays))


def in_kiln(mode: str, function, *arrays):
    """``function(kiln, ...)`` eagerly, or compiled (static shapes) for the NumPy backend or onnxruntime, as NumPy."""
    tensors = [a for a in arrays if isinstance(a, np.ndarray)]
    if mode == "eager":
        result = function(kiln, *(kiln.tensor(a) if isinstance(a, np.ndarray) else a for a in arrays))
        return np.asarray(result.numpy())

    def traced(*inputs):
        feed = iter(inputs)
        return function(kiln, *(next(feed) if isinstance(a, np.ndarray) else a for a in arrays))

    return np.asarray(kiln.compile(traced, backend=mode, batch_dim=None)(*tensors))


def assert_as_torch(actual: np.ndarray, expected, where: str) -> None:
    expected = expected.numpy()
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype}, torch {expected.dtype}"
    np.testing.assert_array_equal(actual, expected, err_msg=where)


def _runs_in_torch(op: str, a: str, b: str) -> bool:
    return not (op in SHIFTS and a == b == "bool")  # torch: "lshift_cpu" not implemented for 'Bool'


TENSOR_PAIRS = [(op, a, b) for op in BINARY for a, b in itertools.product(DTYPES, DTYPES) if _runs_in_torch(op, a, b)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("op", "left", "right"), TENSOR_PAIRS, ids=lambda v: str(v))
def test_tensor_with_tensor_as_torch(op: str, left: str, right: str, mode: str):
    x, y = values(left), second_operand(op, right)
    assert_as_torch(in_kiln(mode, BINARY[op], x, y), in_torch(BINARY[op], x, y), f"{op} {left} {right} {mode}")


NUMBERS = [3, -7, 0, 40, 2**31 + 5, True, False]
NUMBER_CASES = [(op, dtype, number, side) for op in ("and", "or", "xor", "lshift", "rshift") for dtype in DTYPES
                for number in NUMBERS for side in ("right", "left")
                if not (op in ("lshift", "rshift") and dtype == "bool" and isinstance(number, bool))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("op", "dtype", "number", "side"), NUMBER_CASES, ids=lambda v: str(v))
def test_tensor_with_python_number_as_torch(op: str, dtype: str, number, side: str, mode: str):
    x = values(dtype) if side == "right" or op not in ("lshift", "rshift") else second_operand(op, dtype)
    function = BINARY[op] if side == "right" else (lambda lib, a, b: BINARY[op](lib, b, a))  # number << x: __rlshift__
    assert_as_torch(in_kiln(mode, function, x, number), in_torch(function, x, number), f"{op} {dtype} {number!r} {side}")


UNARY = {"invert": lambda lib, a: ~a, "bitwise_not": lambda lib, a: lib.bitwise_not(a), "method": lambda lib, a: a.bitwise_not()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", UNARY)
def test_not_as_torch(op: str, dtype: str, mode: str):
    x = values(dtype)
    assert_as_torch(in_kiln(mode, UNARY[op], x), in_torch(UNARY[op], x), f"{op} {dtype} {mode}")


ZERO_DIM = [("int32", "int64"), ("int64", "int32"), ("bool", "int32"), ("int32", "bool"), ("bool", "int64")]


@pytest.mark.parametrize("op", ["and", "xor", "lshift", "rshift"])
@pytest.mark.parametrize(("dimensioned", "scalar"), ZERO_DIM)
def test_a_0d_tensor_promotes_as_in_torch(op: str, dimensioned: str, scalar: str):
    # a 0-d tensor counts after dimensioned ones: int32 & tensor(5) stays int32; bool & int32 0-d is int32
    x, y = values(dimensioned)[:, 0], np.array(3, dtype=scalar)
    for mode in ("eager", "numpy"):
        assert_as_torch(in_kiln(mode, BINARY[op], x, y), in_torch(BINARY[op], x, y), f"{op} {dimensioned} {scalar} {mode}")
        assert_as_torch(in_kiln(mode, BINARY[op], y, x), in_torch(BINARY[op], y, x), f"{op} {scalar} {dimensioned} {mode}")


IN_PLACE = {
    "iand": lambda a, b: a.__iand__(b), "ior": lambda a, b: a.__ior__(b), "ixor": lambda a, b: a.__ixor__(b),
    "ilshift": lambda a, b: a.__ilshift__(b), "irshift": lambda a, b: a.__irshift__(b),
    "bitwise_and_": lambda a, b: a.bitwise_and_(b), "bitwise_left_shift_": lambda a, b: a.bitwise_left_shift_(b),
    "bitwise_right_shift_": lambda a, b: a.bitwise_right_shift_(b), "bitwise_xor_": lambda a, b: a.bitwise_xor_(b),
}


IN_PLACE_CASES = [(op, target, source) for op in IN_PLACE
                  for target, source in [("int32", "int64"), ("int64", "int32"), ("int32", "bool"), ("bool", "bool")]
                  if not ("shift" in op and target == source == "bool")]  # torch: "lshift_cpu" not implemented for 'Bool'


@pytest.mark.parametrize(("op", "target", "source"), IN_PLACE_CASES, ids=lambda v: str(v))
def test_in_place_writes_the_tensor_as_torch(op: str, target: str, source: str):
    torch = require_torch()
    x = np.broadcast_to(values(target), (values(target).shape[0], 4)).copy()
    y = second_operand("lshift" if "shift" in op else "and", source)[:4]
    mine, theirs = kiln.tensor(x), torch.from_numpy(x.copy())
    alias, their_alias = mine, theirs
    mine_result, their_result = IN_PLACE[op](mine, kiln.tensor(y)), IN_PLACE[op](theirs, torch.from_numpy(y))
    assert mine_result is mine
    for got, want in ((mine, their_result), (alias, their_alias)):
        assert_as_torch(np.asarray(got.numpy()), want, f"{op} {target} {source}")


def test_augmented_assignment_in_a_trace_and_bitwise_not_in_place():
    def program(lib, a, b):
        c = a.clone()
        c &= b
        c <<= 2
        c ^= 0xF0
        c >>= 1
        c |= b
        return c.bitwise_not_()

    a, b = values("int64")[:, 0], np.array(INT64[::-1], np.int64)
    for mode in MODES:
        assert_as_torch(in_kiln(mode, program, a, b), in_torch(program, a, b), mode)


@pytest.mark.parametrize(("target", "source", "message"), [
    ("bool", "int64", "result type Long can't be cast to the desired output type Bool"),
    ("int32", "float32", "result type Float can't be cast to the desired output type Int"),
])
def test_in_place_refuses_a_result_torch_cannot_cast(target: str, source: str, message: str):
    torch = require_torch()
    x, y = np.zeros(3, target), np.ones(3, source)
    with pytest.raises(RuntimeError, match=message):
        torch.from_numpy(x).bitwise_or_(torch.from_numpy(y))
    with pytest.raises(kiln.TraceError, match=message) as error:
        kiln.tensor(x).bitwise_or_(kiln.tensor(y))
    assert "test_bitwise_vs_torch.py" in str(error.value)


FLOAT_ERRORS = [
    (lambda lib, x: x & 1, "bitwise_and_cpu\" not implemented for 'Float'"),
    (lambda lib, x: 1 | x, "bitwise_or_cpu\" not implemented for 'Float'"),
    (lambda lib, x: x.long() ^ x.double(), "bitwise_xor_cpu\" not implemented for 'Double'"),
    (lambda lib, x: x.long() & 1.5, "bitwise_and_cpu\" not implemented for 'Float'"),
    (lambda lib, x: x << 1, "lshift_cpu\" not implemented for 'Float'"),
    (lambda lib, x: x.long() >> x, "rshift_cpu\" not implemented for 'Float'"),
    (lambda lib, x: lib.bitwise_not(x), "bitwise_not_cpu\" not implemented for 'Float'"),
    (lambda lib, x: (x > 0) << (x > 0), "lshift_cpu\" not implemented for 'Bool'"),
    (lambda lib, x: (x > 0) >> True, "rshift_cpu\" not implemented for 'Bool'"),
    (lambda lib, x: ~x, "only implemented on integer and Boolean-type tensors"),
]


@pytest.mark.parametrize("index", range(len(FLOAT_ERRORS)))
def test_float_operands_raise_torchs_error_at_the_users_line(index: int):
    torch = require_torch()
    function, message = FLOAT_ERRORS[index]
    with pytest.raises((NotImplementedError, TypeError), match=message):
        function(torch, torch.ones(3))
    with pytest.raises(kiln.TraceError, match=message) as error:
        function(kiln, kiln.ones(3))
    assert "test_bitwise_vs_torch.py" in str(error.value)
    with pytest.raises(kiln.TraceError, match=message):
        kiln.trace(lambda x: function(kiln, x), kiln.TensorSpec((2, 3)))


def test_bool_logic_keeps_its_graph():
    # mask & mask, ~mask, mask ^ True: the where/equal/not_equal logic, no integer op
    graph = kiln.trace(lambda m, n: ((m & n) | ~m) ^ True, kiln.TensorSpec((4,), "bool"), kiln.TensorSpec((4,), "bool"))
    names = [op.name for op in graph.ops]
    assert not any("bitwise" in name or "shift" in name for name in names), names
    assert {"tensor.where", "tensor.equal", "tensor.not_equal"} <= set(names)


def test_bit_ops_fuse_with_float_arithmetic_and_no_gradient_flows_through_them():
    # a parity mask from a hash of integer ids picks x or 2x: fused into one group on the NumPy backend; the
    # gradient to x is the picked factor, as torch's
    torch = require_torch()

    def program(lib, ids, x):
        mixed = (ids ^ (ids >> 16)) << 3
        even = (mixed & 1 | (~mixed & 2)) == 0
        return lib.where(even, x, 2 * x)

    ids, x = np.array([3, 17, -9, 2**20 + 1, 65536, -1], np.int64), np.linspace(-1.0, 1.0, 6)
    compiled = kiln.compile(lambda i, z: program(kiln, i, z), backend="numpy", batch_dim=None)
    assert_as_torch(compiled(ids, x), in_torch(program, ids, x), "values")
    graph = compiled.variants[next(iter(compiled.variants))].executable.graph
    fused = [op for op in graph.ops if op.name == "fused.elementwise"]
    assert len(fused) == 1 and "tensor.left_shift" in fused[0].attrs["ops"], [op.name for op in graph.ops]
    gradient = kiln.compile(kiln.grad(lambda z, i: program(kiln, i, z).sum()), backend="numpy", batch_dim=None)(x, ids)
    z = torch.from_numpy(x).requires_grad_()
    program(torch, torch.from_numpy(ids), z).sum().backward()
    np.testing.assert_array_equal(gradient, z.grad.numpy())


def test_onnx_export_uses_standard_bit_ops():
    # BitwiseAnd/Or/Xor/Not as they are; the signed shifts through BitShift on the unsigned type (ONNX has no other)
    onnx = require("onnx")
    graph = kiln.trace(lambda a, b: ((a & b) | (a ^ ~b)) + (a << b) + (a >> b),
                       kiln.TensorSpec((3,), "int32"), kiln.TensorSpec((3,), "int32"))
    model = graph_to_onnx(graph)
    onnx.checker.check_model(model)
    kinds = {node.op_type for node in model.graph.node}
    assert {"BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitShift"} <= kinds, kinds
