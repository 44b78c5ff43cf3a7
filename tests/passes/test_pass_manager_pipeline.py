"""The pass manager: pipeline strings with options, instrumentation, reproducers; the kiln-opt driver as a program."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import pytest

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.parser import parse
from kiln.compiler.passes.decompose import Decompose
from kiln.compiler.passes.manager import PASSES, Pass, PassFailure, PassManager, parse_pipeline

SOURCE = """func @f(%x: tensor<3xf32>) {
  %a = "tensor.exp"(%x) : (tensor<3xf32>) -> tensor<3xf32>
  return %a : tensor<3xf32>
}
"""


@pytest.fixture(autouse=True)
def reproducers_in_tmp_path(tmp_path, monkeypatch):
    """The reproducers a failing pass writes (``tempfile.mkstemp``) go to the test's folder, not the machine's /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def test_pipeline_options_are_parsed_by_field_type():
    passes = parse_pipeline("cse, decompose{keep=nn.softmax,nn.log_softmax}, canonicalize{max-iterations=3}")
    assert [p.name for p in passes] == ["cse", "decompose", "canonicalize"]
    assert passes[1] == Decompose(keep=frozenset({"nn.softmax", "nn.log_softmax"}))
    assert passes[2].max_iterations == 3
    with pytest.raises(KilnError, match="has no option 'bogus'"):
        parse_pipeline("cse{bogus=1}")


def test_timings_and_print_after_all():
    stream = io.StringIO()
    manager = PassManager("canonicalize,cse,dce", print_ir_after_all=True, stream=stream)
    manager.run(parse(SOURCE))
    assert [name for name, _, _ in manager.timings] == ["canonicalize", "cse", "dce"]
    assert stream.getvalue().count("// ----- IR after") == 3
    assert manager.timing_report().splitlines()[0].split() == ["pass", "ms", "%", "changed"]


@dataclass(frozen=True)
class Breaks(Pass):
    name = "test-breaks"

    def run(self, graph: Graph) -> bool:
        graph.outputs = [graph.ops[0].operands[0].uses[0][0].results[0], graph.inputs[0]]
        graph.ops.clear()  # leaves an output defined by an op outside the graph
        return True


def test_a_failing_pass_writes_a_reproducer_that_replays():
    PASSES["test-breaks"] = Breaks
    try:
        with pytest.raises(PassFailure, match="reproducer: ") as failure:
            PassManager("cse,test-breaks", verify_each=True).run(parse(SOURCE))
    finally:
        del PASSES["test-breaks"]
    path = str(failure.value).rsplit("reproducer: ", 1)[1].strip()
    text = open(path).read()
    assert text.startswith("// RUN: kiln-opt %s -p test-breaks") and '"tensor.exp"(%x)' in text
    parse(text)  # the reproducer is valid input IR


DUPLICATED = """func @f(%x: tensor<3xf32>) {
  %a = "tensor.exp"(%x) : (tensor<3xf32>) -> tensor<3xf32>
  %b = "tensor.exp"(%x) : (tensor<3xf32>) -> tensor<3xf32>
  %c = "tensor.add"(%a, %b) : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
  return %c : tensor<3xf32>
}
"""


@dataclass(frozen=True)
class BreaksOnce(Pass):
    """Fails the first time it runs, then does nothing: a pass that fails only sometimes."""

    name = "test-breaks-once"
    runs: list = dataclasses.field(default_factory=list)

    def run(self, graph: Graph) -> bool:
        self.runs.append(1)
        if len(self.runs) == 2:
            raise RuntimeError("second run")
        return False


def test_the_reproducer_holds_what_the_failing_pass_received_after_the_earlier_passes():
    """The manager copies the graph once per pipeline; on a failure it replays the earlier passes on that copy."""
    PASSES["test-breaks"] = Breaks
    try:
        with pytest.raises(PassFailure) as failure:
            PassManager("cse,dce,test-breaks", verify_each=True).run(parse(DUPLICATED))
    finally:
        del PASSES["test-breaks"]
    text = open(str(failure.value).rsplit("reproducer: ", 1)[1].strip()).read()
    assert text.startswith("// RUN: kiln-opt %s -p test-breaks") and text.count('"tensor.exp"') == 1  # after cse


def test_a_replay_that_fails_writes_the_pipelines_input_and_every_pass_up_to_the_failure():
    manager = PassManager("cse", verify_each=True)
    manager.passes = [manager.passes[0], BreaksOnce(), Breaks()]
    with pytest.raises(PassFailure) as failure:
        manager.run(parse(DUPLICATED))
    text = open(str(failure.value).rsplit("reproducer: ", 1)[1].strip()).read()
    assert text.startswith("// RUN: kiln-opt %s -p cse,test-breaks-once,test-breaks") and text.count('"tensor.exp"') == 2


def test_kiln_opt_runs_as_a_module(tmp_path):
    path = tmp_path / "f.ir"
    path.write_text(SOURCE.replace('"tensor.exp"', '"tensor.neg"'))
    result = subprocess.run([sys.executable, "-m", "kiln.compiler.opt", str(path), "-p", "cse,dce", "--timing"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '%a = "tensor.neg"(%x)' in result.stdout and "cse" in result.stderr
    bad = subprocess.run([sys.executable, "-m", "kiln.compiler.opt", str(tmp_path / "missing.ir")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "kiln-opt:" in bad.stderr
