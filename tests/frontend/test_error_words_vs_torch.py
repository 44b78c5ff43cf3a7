"""Shape errors in PyTorch's words and types, for code ported by ``import kiln as torch``: each case runs in torch 2.13
and in kiln, eagerly and (where the error is found from shapes, at trace time) under ``kiln.compile(fullgraph=True)``.
kiln's error must be an instance of torch's error type and carry torch's message (kiln adds the user's line above it,
and at times a parenthesis after it)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

import kiln
from oracles import require_torch


def _randn(*shape: int) -> Callable[[Any], Any]:
    return lambda lib: lib.randn(shape)


def _randn64(*shape: int) -> Callable[[Any], Any]:
    return lambda lib: lib.randn(shape, dtype=lib.float64)


def _ints(*values: Any) -> Callable[[Any], Any]:
    return lambda lib: lib.tensor(list(values))


# name: (build(lib) -> function of the inputs, inputs (each made from lib), traced too)
CASES: dict[str, tuple[Callable[[Any], Callable[..., Any]], tuple[Callable[[Any], Any], ...], bool]] = {
    "add, last dim": (lambda lib: lambda a, b: a + b, (_randn(2, 3), _randn(2, 4)), True),
    "mul, first dim": (lambda lib: lambda a, b: a * b, (_randn(5, 2, 3), _randn(4, 1, 1)), True),
    "sub, two dims differ: the rightmost": (lambda lib: lambda a, b: a - b, (_randn(2, 5, 3), _randn(4, 1, 2)), True),
    "add, ranks differ": (lambda lib: lambda a, b: a + b, (_randn(2, 3), _randn(4)), True),
    "where, the accumulated shape": (lambda lib: lambda c, a, b: lib.where(c > 0, a, b),
                                     (_randn(2, 3), _randn(2, 1), _randn(2, 4)), True),
    "expand": (lambda lib: lambda x: x.expand(2, 4), (_randn(2, 3),), True),
    "expand_as": (lambda lib: lambda x, y: x.expand_as(y), (_randn(2, 3), _randn(2, 4)), True),
    "broadcast_to, the first dim": (lambda lib: lambda x: lib.broadcast_to(x, (3, 3)), (_randn(2, 3),), True),
    "matmul, matrices": (lambda lib: lib.matmul, (_randn(3, 4), _randn(5, 6)), True),
    "@, 3-D times a matrix: rows folded": (lambda lib: lambda a, b: a @ b, (_randn(2, 3, 4), _randn(5, 6)), True),
    "@, vectors": (lambda lib: lambda a, b: a @ b, (_randn(4), _randn(5)), True),
    "@, vector times a matrix": (lambda lib: lambda a, b: a @ b, (_randn(4), _randn(5, 6)), True),
    "@, matrix times a vector": (lambda lib: lambda a, b: a @ b, (_randn(3, 4), _randn(5)), True),
    "@, 3-D times a vector": (lambda lib: lambda a, b: a @ b, (_randn(2, 3, 4), _randn(5)), True),
    "@, batched: the batch dims": (lambda lib: lambda a, b: a @ b, (_randn(2, 3, 4), _randn(3, 4, 6)), True),
    "@, batched: the inner dims": (lambda lib: lambda a, b: a @ b, (_randn(7, 2, 3, 4), _randn(2, 5, 6)), True),
    "@, matrix times 3-D": (lambda lib: lambda a, b: a @ b, (_randn(3, 4), _randn(2, 5, 6)), True),
    "matmul, a 0-D operand": (lambda lib: lib.matmul, (_randn(), _randn(3, 4)), True),
    "mm": (lambda lib: lib.mm, (_randn(3, 4), _randn(5, 6)), True),
    "Tensor.mm, a 3-D self": (lambda lib: lambda a, b: a.mm(b), (_randn(3, 4, 1), _randn(4, 6)), True),
    "mm, a vector": (lambda lib: lib.mm, (_randn(3, 4), _randn(4)), True),
    "bmm, inner dims": (lambda lib: lib.bmm, (_randn(2, 3, 4), _randn(2, 5, 6)), True),
    "bmm, batch sizes": (lambda lib: lib.bmm, (_randn(2, 3, 4), _randn(3, 4, 6)), True),
    "bmm, matrices": (lambda lib: lib.bmm, (_randn(3, 4), _randn(4, 6)), True),
    "Tensor.bmm, a matrix second": (lambda lib: lambda a, b: a.bmm(b), (_randn(2, 3, 4), _randn(4, 6)), True),
    "dot": (lambda lib: lib.dot, (_randn(3), _randn(4)), True),
    "dot, a column": (lambda lib: lib.dot, (_randn(3, 1), _randn(3)), True),
    "vdot": (lambda lib: lib.vdot, (_randn(3), _randn(4)), True),
    "dot, float64 and float32 (Lovasz loss)": (lambda lib: lib.dot, (_randn64(3), _randn(3)), True),
    "dot, dtypes before lengths": (lambda lib: lib.dot, (_randn64(3), _randn(4)), True),
    "Tensor.dot, long and float": (lambda lib: lambda a, b: a.dot(b), (_ints(1, 2, 3), _randn(3)), True),
    "vdot, float32 and float64": (lambda lib: lib.vdot, (_randn(3), _randn64(3)), True),
    "inner": (lambda lib: lib.inner, (_randn(2, 3), _randn(4)), True),
    "addmm": (lambda lib: lib.addmm, (_randn(3, 6), _randn(3, 4), _randn(5, 6)), True),
    "baddbmm": (lambda lib: lib.baddbmm, (_randn(2, 3, 6), _randn(2, 3, 4), _randn(2, 5, 6)), True),
    "addmv": (lambda lib: lib.addmv, (_randn(3), _randn(3, 4), _randn(5)), True),
    "mv": (lambda lib: lib.mv, (_randn(3, 4), _randn(5)), True),
    "Tensor.mv, a matrix second": (lambda lib: lambda a, b: a.mv(b), (_randn(3, 4), _randn(4, 1)), True),
    "reshape": (lambda lib: lambda x: x.reshape(4, 2), (_randn(2, 3),), True),
    "view": (lambda lib: lambda x: x.view(5), (_randn(2, 3),), True),
    "view, -1 not dividing": (lambda lib: lambda x: x.view(-1, 4), (_randn(2, 3),), True),
    "reshape, two -1": (lambda lib: lambda x: x.reshape(-1, -1), (_randn(2, 3),), True),
    "cat, sizes": (lambda lib: lambda a, b: lib.cat([a, b], -2), (_randn(2, 3), _randn(2, 4)), True),
    "cat, the third tensor": (lambda lib: lambda a, b, c: lib.cat([a, b, c], 1),
                              (_randn(2, 3), _randn(2, 3), _randn(3, 4)), True),
    "cat, ranks": (lambda lib: lambda a, b: lib.cat([a, b]), (_randn(2, 3, 1), _randn(2, 3)), True),
    "cat, 0-D": (lambda lib: lambda a, b: lib.cat([a, b]), (_randn(), _randn()), True),
    "stack, sizes": (lambda lib: lambda a, b, c: lib.stack([a, b, c]), (_randn(2, 3), _randn(2, 3), _randn(2)), True),
    "stack, empty": (lambda lib: lambda: lib.stack([]), (), False),
    "LayerNorm, the last dim": (lambda lib: lib.nn.LayerNorm(5), (_randn(2, 4),), True),
    "layer_norm, two dims": (lambda lib: lambda x: lib.nn.functional.layer_norm(x, (2, 4)), (_randn(2, 3, 4),), True),
    "layer_norm, fewer dims": (lambda lib: lambda x: lib.nn.functional.layer_norm(x, (2, 5)), (_randn(5),), True),
    "layer_norm, the weight": (lambda lib: lambda x, w: lib.nn.functional.layer_norm(x, (5,), w),
                               (_randn(2, 5), _randn(4)), True),
    "layer_norm, the bias": (lambda lib: lambda x, w, b: lib.nn.functional.layer_norm(x, (5,), w, b),
                             (_randn(2, 5), _randn(5), _randn(4)), True),
    "layer_norm, no dims": (lambda lib: lambda x: lib.nn.functional.layer_norm(x, ()), (_randn(5),), True),
    "GRU, the hidden size": (lambda lib: lib.nn.GRU(4, 8, batch_first=True), (_randn(2, 5, 4), _randn(1, 2, 7)), True),
    "GRU, the input features": (lambda lib: lib.nn.GRU(4, 8, batch_first=True), (_randn(2, 5, 3),), True),
    "GRU, a 4-D input": (lambda lib: lib.nn.GRU(4, 8), (_randn(1, 5, 2, 4),), True),
    "GRU, unbatched, the hidden size": (lambda lib: lib.nn.GRU(4, 8), (_randn(5, 4), _randn(1, 7)), True),
    "GRU, unbatched, a 3-D hidden": (lambda lib: lib.nn.GRU(4, 8), (_randn(5, 4), _randn(1, 2, 8)), True),
    "RNN, two layers": (lambda lib: lib.nn.RNN(4, 8, num_layers=2), (_randn(5, 2, 4), _randn(1, 2, 8)), True),
    "LSTM, h_0": (lambda lib: lambda x, h, c: lib.nn.LSTM(4, 8)(x, (h, c)),
                  (_randn(5, 2, 4), _randn(1, 2, 7), _randn(1, 2, 8)), True),
    "LSTM, c_0": (lambda lib: lambda x, h, c: lib.nn.LSTM(4, 8)(x, (h, c)),
                  (_randn(5, 2, 4), _randn(1, 2, 8), _randn(1, 2, 7)), True),
    "LSTM, bidirectional c_0": (lambda lib: lambda x, h, c: lib.nn.LSTM(4, 8, bidirectional=True)(x, (h, c)),
                                (_randn(5, 2, 4), _randn(2, 2, 8), _randn(1, 2, 8)), True),
    "LSTM, the input features": (lambda lib: lib.nn.LSTM(4, 8), (_randn(5, 2, 3),), True),
    "GRUCell, the input features": (lambda lib: lib.nn.GRUCell(4, 8), (_randn(2, 3),), True),
    "GRUCell, the hidden size": (lambda lib: lib.nn.GRUCell(4, 8), (_randn(2, 4), _randn(2, 7)), True),
    "GRUCell, the batch": (lambda lib: lib.nn.GRUCell(4, 8), (_randn(2, 4), _randn(3, 8)), True),
    "LSTMCell, c_0": (lambda lib: lambda x, h, c: lib.nn.LSTMCell(4, 8)(x, (h, c)),
                      (_randn(2, 4), _randn(2, 8), _randn(2, 7)), True),
    "RNNCell, a 3-D input": (lambda lib: lib.nn.RNNCell(4, 8), (_randn(2, 2, 4),), True),
    "glu, an odd dim": (lambda lib: lambda x: lib.nn.functional.glu(x, -1), (_randn(2, 5),), True),
    "glu, a scalar": (lambda lib: lib.nn.functional.glu, (_randn(),), True),
    "topk, k past the last dim": (lambda lib: lambda x: lib.topk(x, 5), (_randn(2, 3),), True),
    "topk, k past dim 0": (lambda lib: lambda x: x.topk(3, dim=0), (_randn(2, 3),), True),
    "x[5]": (lambda lib: lambda x: x[5], (_randn(3, 4),), True),
    "x[-4]": (lambda lib: lambda x: x[-4], (_randn(3, 4),), True),
    "x[:, 4]": (lambda lib: lambda x: x[:, 4], (_randn(3, 4),), True),
    "x[1, 7] = 0": (lambda lib: lambda x: x.__setitem__((1, 7), 0.0), (_randn(3, 4),), False),
    "x[tensor([0, 5])]": (lambda lib: lambda x, i: x[i], (_randn(3, 4), _ints(0, 5)), False),
    "x[[0, 5]]": (lambda lib: lambda x: x[[0, 5]], (_randn(3, 4),), True),
    "unsqueeze, dim out of range": (lambda lib: lambda x: x.unsqueeze(3), (_randn(3, 4),), True),
    "sum, dim out of range": (lambda lib: lambda x: x.sum(2), (_randn(3, 4),), True),
    "softmax, dim out of range": (lambda lib: lambda x: x.softmax(2), (_randn(3, 4),), True),
    "cumsum, dim out of range": (lambda lib: lambda x: x.cumsum(-3), (_randn(3, 4),), True),
    "cat, dim out of range": (lambda lib: lambda a, b: lib.cat([a, b], 2), (_randn(2, 3), _randn(2, 3)), True),
    "transpose, dim out of range": (lambda lib: lambda x: x.transpose(0, 2), (_randn(3, 4),), True),
    "argmax, dim out of range": (lambda lib: lambda x: x.argmax(2), (_randn(3, 4),), True),
    "index_select": (lambda lib: lambda x, i: lib.index_select(x, 0, i), (_randn(3, 4), _ints(0, 3)), False),
    "gather": (lambda lib: lambda x, i: lib.gather(x, 1, i), (_randn(3, 4), _ints([0, 4], [0, 4], [0, 4])), False),
    "gather, negative": (lambda lib: lambda x, i: x.gather(-1, i), (_randn(3, 4), _ints([-1])), False),
    "scatter": (lambda lib: lambda x, i: x.scatter(0, i, 1.0), (_randn(3, 4), lambda lib: lib.tensor([[5]])), False),
    "scatter_add": (lambda lib: lambda x, i, s: x.scatter_add(0, i, s),
                    (_randn(3, 4), lambda lib: lib.tensor([[5]]), _randn(1, 1)), False),
}


def _error(lib: Any, case: str, compiled: bool = False) -> BaseException:
    build, inputs, _ = CASES[case]
    function = build(lib)
    if compiled:
        function = kiln.compile(function, fullgraph=True)
    args = [make(lib) for make in inputs]
    with pytest.raises(Exception) as raised:
        function(*args)
    return raised.value


@pytest.mark.parametrize("case", CASES)
def test_eager_error_is_torchs(case):
    torch = require_torch()
    theirs, ours = _error(torch, case), _error(kiln, case)
    assert isinstance(ours, type(theirs)), f"kiln raised {type(ours).__name__}, torch {type(theirs).__name__}"
    assert str(theirs).strip("'\"") in str(ours)
    assert "test_error_words_vs_torch.py:" in str(ours).splitlines()[0]  # kiln's addition: the user's line


@pytest.mark.parametrize("case", [name for name, (_, _, traced) in CASES.items() if traced])
def test_compiled_error_is_torchs(case):
    torch = require_torch()
    theirs, ours = _error(torch, case), _error(kiln, case, compiled=True)
    assert isinstance(ours, type(theirs)), f"kiln raised {type(ours).__name__}, torch {type(theirs).__name__}"
    assert str(theirs).strip("'\"") in str(ours)
    assert "test_error_words_vs_torch.py:" in str(ours)


def test_symbolic_dims_are_named():
    with pytest.raises(RuntimeError) as raised:
        kiln.trace(lambda a, b: a + b, kiln.TensorSpec(("N", 3)), kiln.TensorSpec(("M", 3)))
    message = str(raised.value)
    assert "The size of tensor a (N) must match the size of tensor b (M) at non-singleton dimension 0" in message
    assert "(the operands' shapes: (N, 3) and (M, 3))" in message


def test_symbolic_rows_are_named_in_matmul_errors():
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(6\*Nx4 and 5x3\)"):
        kiln.trace(lambda x, w: x @ w, kiln.TensorSpec(("N", 6, 4)), kiln.TensorSpec((5, 3)))
    with pytest.raises(RuntimeError, match=r"Expected size for first two dimensions of batch2 tensor to be: \[N, 4\] "
                                           r"but got: \[N, 5\]\."):
        kiln.trace(lambda a, b: kiln.bmm(a, b), kiln.TensorSpec(("N", 3, 4)), kiln.TensorSpec(("N", 5, 2)))
