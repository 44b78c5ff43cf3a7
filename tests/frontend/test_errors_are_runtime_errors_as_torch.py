"""kiln's errors at run time are ``RuntimeError``s where PyTorch's are, so ported code's ``except RuntimeError``
(a retry on a bad shape, a test's ``pytest.raises(RuntimeError)``) catches them: a backward with nothing to
differentiate, mismatched matmul shapes, a view of the wrong size, an error inside a compiled function."""

import pytest

import kiln
from oracles import require_torch

torch = require_torch()


def _backward_without_grad(lib):
    lib.ones(2).sum().backward()


def _matmul_mismatch(lib):
    lib.ones(2, 3) @ lib.ones(4, 5)


def _bad_view(lib):
    lib.ones(2, 3).view(4, 2)


def _bad_cat(lib):
    lib.cat([lib.ones(2, 3), lib.ones(2, 4)], dim=0)


@pytest.mark.parametrize("case", [_backward_without_grad, _matmul_mismatch, _bad_view, _bad_cat])
def test_the_error_is_a_runtime_error_in_both(case):
    for lib in (torch, kiln):
        with pytest.raises(RuntimeError):
            case(lib)


def test_a_compiled_functions_trace_error_is_a_runtime_error():
    f = kiln.compile(lambda x: x.reshape(5, 7), fullgraph=True)
    with pytest.raises(RuntimeError, match="reshape"):
        f(kiln.ones(2, 3))
