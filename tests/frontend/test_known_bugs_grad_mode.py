"""Nested ``kiln.inference_mode`` blocks and decorators: leaving one restores the enclosing block's modes, and
``is_inference_mode_enabled()`` / ``is_grad_enabled()`` read as PyTorch's do at every point of the same program."""

from __future__ import annotations

from types import ModuleType
from typing import Callable

import numpy as np
import pytest

import kiln
from oracles import require


def _modes(lib: ModuleType) -> tuple[bool, bool]:
    return lib.is_inference_mode_enabled(), lib.is_grad_enabled()


def _nested_blocks(lib: ModuleType) -> list[tuple[bool, bool]]:
    seen = [_modes(lib)]
    with lib.inference_mode():
        seen.append(_modes(lib))
        with lib.inference_mode(False):
            seen.append(_modes(lib))
            with lib.no_grad():
                seen.append(_modes(lib))
            seen.append(_modes(lib))
        seen.append(_modes(lib))
        with lib.enable_grad():
            seen.append(_modes(lib))
        with lib.inference_mode(True):
            seen.append(_modes(lib))
        seen.append(_modes(lib))
    seen.append(_modes(lib))
    return seen


def _under_no_grad(lib: ModuleType) -> list[tuple[bool, bool]]:
    seen = []
    with lib.no_grad():
        with lib.inference_mode(False):
            seen.append(_modes(lib))
        with lib.inference_mode():
            seen.append(_modes(lib))
            with lib.inference_mode(False):
                seen.append(_modes(lib))
            seen.append(_modes(lib))
        seen.append(_modes(lib))
    return seen


def _decorators(lib: ModuleType) -> list[tuple[bool, bool]]:
    @lib.inference_mode(False)
    def leaves() -> tuple[bool, bool]:
        return _modes(lib)

    @lib.inference_mode
    def bare() -> list[tuple[bool, bool]]:
        return [_modes(lib), leaves(), _modes(lib)]

    @lib.inference_mode()
    def outer() -> list[tuple[bool, bool]]:
        return [_modes(lib), *bare(), leaves(), _modes(lib)]

    return [*outer(), _modes(lib)]


@pytest.mark.parametrize("program", [_nested_blocks, _under_no_grad, _decorators])
def test_nested_inference_mode_reads_as_torch_at_every_point(program: Callable[[ModuleType], list]):
    torch = require("torch")
    assert program(kiln) == program(torch)
    assert _modes(kiln) == (False, True)


def test_a_block_left_by_an_exception_restores_the_enclosing_inference_mode():
    with kiln.inference_mode():
        with pytest.raises(ValueError):
            with kiln.inference_mode(False):
                raise ValueError("inside")
        assert _modes(kiln) == (True, False)
    assert _modes(kiln) == (False, True)


def test_inference_mode_false_inside_no_grad_differentiates_in_a_trace_as_torch():
    torch = require("torch")
    x = np.linspace(-1.0, 1.0, 6)

    def ours(t):
        with kiln.no_grad():
            with kiln.inference_mode(False):
                kept = (t * t).sum()
            dropped = (t * t * t).sum()
        return kept + dropped

    expected = torch.tensor(x, requires_grad=True)
    with torch.no_grad():
        with torch.inference_mode(False):
            kept = (expected * expected).sum()
    kept.backward()
    np.testing.assert_allclose(kiln.grad(ours)(x), expected.grad.numpy(), rtol=1e-12)
