"""Golden IR tests: every ``tests/passes/<pass>/*.ir`` file is one test.

A file holds a RUN line, the input IR and FileCheck CHECK lines:

```
// RUN: kiln-opt %s -p canonicalize | filecheck %s
// RUN: not kiln-opt %s -p cse 2>&1 | filecheck %s      (expected failure: check the diagnostic)
```

``kiln-opt`` runs in-process (``kiln.compiler.opt.main``); its output goes to
the ``filecheck`` package (LLVM FileCheck syntax). A successful run's IR must
also parse back and print identically, so every pass's output round-trips.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import tempfile
from pathlib import Path

import pytest

_RUN = re.compile(r"^//\s*RUN:\s*(.*)$", re.MULTILINE)


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.File | None:
    if file_path.suffix == ".ir":
        return GoldenFile.from_parent(parent, path=file_path)
    return None


class GoldenFile(pytest.File):
    def collect(self):
        yield GoldenTest.from_parent(self, name=self.path.parent.name + "/" + self.path.stem)


class GoldenFailure(Exception):
    pass


class GoldenTest(pytest.Item):
    def runtest(self) -> None:
        text = self.path.read_text()
        runs = _RUN.findall(text)
        if not runs:
            raise GoldenFailure(f"{self.path}: no '// RUN:' line")
        for run in runs:
            self.run_line(run)

    def run_line(self, run: str) -> None:
        command, _, check = run.partition("|")
        if check.split()[:1] != ["filecheck"]:
            raise GoldenFailure(f"RUN line must pipe into filecheck: {run}")
        words = shlex.split(command.replace("%s", str(self.path)))
        expect_failure = words[0] == "not"
        words = words[1:] if expect_failure else words
        merge_stderr = "2>&1" in words
        words = [word for word in words if word != "2>&1"]
        if words[0] != "kiln-opt":
            raise GoldenFailure(f"RUN line must run kiln-opt: {run}")
        output, status = _run_opt(words[1:], merge_stderr)
        if expect_failure != (status != 0):
            raise GoldenFailure(f"kiln-opt exited with {status}, expected {'failure' if expect_failure else 'success'}:\n{output}")
        if not expect_failure:
            _check_round_trip(output)
        _filecheck(self.path, output)

    def repr_failure(self, excinfo, style=None) -> str:
        if isinstance(excinfo.value, GoldenFailure):
            return f"{self.path}:\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"golden IR: {self.name}"


def _run_opt(arguments: list[str], merge_stderr: bool) -> tuple[str, int]:
    from kiln.compiler.opt import main

    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(arguments, stdout=stdout, stderr=stdout if merge_stderr else stderr)
    return stdout.getvalue(), status


def _check_round_trip(output: str) -> None:
    from kiln.compiler.ir.parser import parse
    from kiln.compiler.ir.printer import print_graph

    starts = [match.start() for match in re.finditer(r"^func @", output, re.MULTILINE)]  # top level: a nested func is inside an op's line
    ir_text = output[starts[-1] :] if starts else ""
    ir_text = ir_text[: ir_text.index("\n}\n") + 3]
    if ir_text and print_graph(parse(ir_text)) != ir_text:
        raise GoldenFailure(f"the output IR does not print identically after parsing:\n{ir_text}")


def _filecheck(check_file: Path, output: str) -> None:
    from filecheck.matcher import Matcher
    from filecheck.options import Options

    with tempfile.NamedTemporaryFile("w", suffix=".out", delete=False) as handle:
        handle.write(output)
    messages = io.StringIO()
    with contextlib.redirect_stdout(messages), contextlib.redirect_stderr(messages):
        status = Matcher.from_opts(Options(match_filename=str(check_file), input_file=handle.name)).run()
    Path(handle.name).unlink()
    if status != 0:
        raise GoldenFailure(f"FileCheck failed:\n{messages.getvalue()}\n--- kiln-opt output ---\n{output}")
