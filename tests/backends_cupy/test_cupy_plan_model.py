"""benchmarks/cupy_plan_model.py: the CuPy step's launches, bytes and GEMM FLOPs from its lowered graph (no GPU)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from kiln.compiler.passes import chunk_causal_attention

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "cupy_plan_model.py"
TINY = ["--vocab", "64", "--context", "16", "--layers", "1", "--d-model", "10", "--heads", "2", "--batch", "2"]
"""Heads 5 wide: no chunk of 4 queries over 4, 8, 12 or 16 keys has an axis of the head's width."""


@pytest.fixture
def plan_model(monkeypatch):
    monkeypatch.setattr(chunk_causal_attention, "CAUSAL_CHUNK", chunk_causal_attention.CAUSAL_CHUNK)  # the script sets it; restored after
    spec = importlib.util.spec_from_file_location("cupy_plan_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chunked_causal_attention_moves_less_and_multiplies_less(plan_model, capsys):
    whole = plan_model.model(plan_model.parse_args(TINY + ["--chunk", "0"]))
    chunked = plan_model.model(plan_model.parse_args(TINY + ["--chunk", "4"]))
    assert chunked["attention scores"]["TFLOP"] == pytest.approx(whole["attention scores"]["TFLOP"] * 10 / 16)
    assert chunked["attention scores"]["GB"] < whole["attention scores"]["GB"]
    assert chunked["logits"] == whole["logits"] and chunked["other"]["TFLOP"] == whole["other"]["TFLOP"]
    assert plan_model.main(TINY) == 0
    table = capsys.readouterr().out
    assert "attention scores" in table and "total" in table and "GEMM TFLOP" in table


def test_sizes_bind_the_batch_symbol(plan_model):
    assert plan_model.size("1024*N", 8) == 8192 and plan_model.size(7, 8) == 7 and plan_model.size("N", 3) == 3
    sys.modules.pop("cupy_plan_model", None)


def test_intermediates_held_at_once_are_far_fewer_than_all_of_them(plan_model, capsys):
    """Dropping each value after its last use: at most the live set at once, not the step's every intermediate."""
    args = plan_model.parse_args(TINY + ["--layers", "4"])
    memory = plan_model.device_memory(plan_model.lowered_step(args), args.batch)
    assert 0 < memory["peak live"] < 0.6 * memory["allocated"]
    assert plan_model.main(TINY) == 0
    assert "at most" in capsys.readouterr().out
