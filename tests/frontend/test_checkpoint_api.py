"""``kiln.utils.checkpoint``: PyTorch's API, eager calls, the region markers a trace stamps, and its errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import TraceError
from kiln.compiler.ir import parse, print_graph
from kiln.utils.checkpoint import checkpoint, checkpoint_sequential

SPEC = kiln.TensorSpec((4, 3), "float64")


def block(x, scale=1.0):
    return (x.tanh() * scale).exp()


def regions(graph):
    return [str(op.region) if op.region else None for op in graph.ops]


def test_kiln_utils_is_torch_utils_shaped():
    assert kiln.utils.checkpoint.checkpoint is checkpoint and callable(checkpoint_sequential)


def test_outside_a_trace_it_calls_the_function():
    x = np.linspace(-1, 1, 6)
    assert checkpoint(lambda a, b, k=0: a * b + k, x, 2.0, k=1.0, use_reentrant=False).tolist() == (x * 2 + 1).tolist()
    assert checkpoint_sequential([np.exp, np.log], 2, x, use_reentrant=False).tolist() == np.log(np.exp(x)).tolist()


def test_a_trace_marks_the_region_and_its_outputs():
    graph = kiln.trace(lambda x: checkpoint(block, x, scale=2.0, use_reentrant=False) + checkpoint(block, x, use_reentrant=False), SPEC)
    assert regions(graph) == ["checkpoint(0)"] * 3 + ["checkpoint(0, output)"] + ["checkpoint(1)"] * 3 + ["checkpoint(1, output)", None]
    assert "checkpoint(0, output)" in str(graph)


def test_a_nested_checkpoint_joins_the_outer_region():
    graph = kiln.trace(lambda x: checkpoint(lambda y: checkpoint(block, y, use_reentrant=False).sin(), x, use_reentrant=False), SPEC)
    assert regions(graph) == ["checkpoint(0)"] * 4 + ["checkpoint(0, output)"]  # the inner exp is internal to the outer


def test_the_marked_text_parses_back():
    graph = kiln.trace(lambda x: checkpoint(block, x, use_reentrant=False).sum(), SPEC, name="loss")
    kiln.PassManager("autodiff,rematerialize").run(graph)
    text = print_graph(graph)
    assert "recompute(0)" in text and print_graph(parse(text)) == text
    assert [str(op.region) for op in parse(text).ops if op.region] == [str(op.region) for op in graph.ops if op.region]


def test_checkpoint_sequential_checkpoints_all_segments_but_the_last_as_torch():
    layers = [nn.Linear(3, 3) for _ in range(5)]
    graph = kiln.trace(lambda x: checkpoint_sequential(layers, 3, x, use_reentrant=False), kiln.TensorSpec((4, 3)))
    matmuls = [op for op in graph.ops if op.name == "tensor.matmul"]
    assert [op.region.id if op.region else None for op in matmuls] == [0, 1, None, None, None]  # 5 // 3 = 1 per segment


def test_checkpoint_sequential_takes_a_sequential():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh())
    graph = kiln.trace(lambda x: checkpoint_sequential(model, 2, x), kiln.TensorSpec((4, 3)))
    assert {op.region.id for op in graph.ops if op.region} == {0}
    np.testing.assert_allclose(kiln.compile(lambda x: checkpoint_sequential(model, 2, x))(np.ones((2, 3), np.float32)),
                               kiln.compile(model)(np.ones((2, 3), np.float32)), rtol=0)


def test_print_ir_after_all_shows_the_recomputation_and_it_parses_back(capsys):
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    forward = model.forward
    model.forward = lambda x: checkpoint(forward, x, use_reentrant=False)
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), print_ir_after_all=True)
    step.compile(kiln.TensorSpec(("N", 3)), kiln.TensorSpec(("N",), "int64"))
    printed = capsys.readouterr().err
    after = printed.split("// ----- IR after rematerialize -----\n")[1].split("// ----- IR after")[0].strip() + "\n"
    assert re.search(r'= "tensor.tanh"\(.*\) : .* recompute\(0\)', after), after
    assert print_graph(parse(after)) == after


# Errors: what, where (the user's line), what to do.


def test_a_function_that_is_not_callable_is_refused_naming_the_line():
    with pytest.raises(TraceError, match=r"test_checkpoint_api.py:\d+ in <lambda>.*\n.*checkpoint's function must be callable.*got int"):
        kiln.trace(lambda x: checkpoint(3, x), SPEC)
    with pytest.raises(TraceError, match="must be callable"):
        checkpoint("block", np.ones(3))


def test_reentrant_checkpoints_take_no_keywords_as_torch():
    with pytest.raises(TraceError, match=r"test_checkpoint_api.py:\d+.*\n.*unexpected keyword arguments scale; with use_reentrant=True"):
        kiln.trace(lambda x: checkpoint(block, x, use_reentrant=True, scale=2.0), SPEC)
    assert regions(kiln.trace(lambda x: checkpoint(block, x, use_reentrant=True), SPEC))[0] == "checkpoint(0)"


@pytest.mark.parametrize(("functions", "segments", "message"), [
    ([np.exp, np.log], 3, "3 segments for 2 functions; use at most 2"),
    ([np.exp, np.log], 0, "segments must be a whole number >= 1, got 0"),
    ([np.exp, np.log], 1.5, "segments must be a whole number >= 1, got 1.5"),
    ([np.exp, 7], 1, r"checkpoint_sequential's functions\[1\] must be callable"),
    (np.exp, 1, "takes a Sequential or a list of modules or functions, got ufunc"),
])
def test_bad_sequential_arguments_are_refused(functions, segments, message):
    with pytest.raises(TraceError, match=r"test_checkpoint_api.py:\d+ in <lambda>[^\n]*\n.*" + message):
        kiln.trace(lambda x: checkpoint_sequential(functions, segments, x), SPEC)
