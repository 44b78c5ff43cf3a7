"""The pass manager: MLIR's, in miniature.

```python
PassManager("cse,dce", verify_each=True, print_ir_after_all=True).run(graph)
```

A pipeline is a comma-separated string of registered pass names. The manager
verifies after each pass when asked, prints the IR after every pass or only
after one that changed something, times each pass, and when a pass fails it
writes a reproducer (the input IR and the pipeline) and says where.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, TextIO

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.printer import print_graph


@dataclass(frozen=True)
class Pass:
    """A graph transformation; ``run`` mutates the graph and returns whether it changed it."""

    name: ClassVar[str] = "pass"

    def run(self, graph: Graph) -> bool:
        raise NotImplementedError


PASSES: dict[str, Callable[[], Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Make ``cls`` available in pipeline strings under ``cls.name``."""
    PASSES[cls.name] = cls
    return cls


def parse_pipeline(pipeline: str | list[Pass]) -> list[Pass]:
    if not isinstance(pipeline, str):
        return list(pipeline)
    names = [name.strip() for name in pipeline.split(",") if name.strip()]
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise KilnError(f"unknown pass {', '.join(unknown)} in pipeline {pipeline!r}; registered: {', '.join(sorted(PASSES))}")
    return [PASSES[name]() for name in names]


class PassFailure(KilnError):
    """A pass raised or left an invalid graph; the message names the reproducer file."""


@dataclass
class PassManager:
    pipeline: str | list[Pass] = ""
    verify_each: bool = False
    """Run the verifier after every pass."""
    print_ir_after_all: bool = False
    print_ir_after_change: bool = False
    """Print the IR only after passes that changed it."""
    stream: TextIO | None = None
    """Where IR is printed; standard error by default."""
    timings: list[tuple[str, float, bool]] = field(default_factory=list)
    """``(pass name, seconds, changed)`` per pass run, in order."""

    def __post_init__(self) -> None:
        self.passes = parse_pipeline(self.pipeline)

    def run(self, graph: Graph) -> bool:
        changed_any = False
        for pass_ in self.passes:
            changed_any |= self._run_one(pass_, graph)
        return changed_any

    def _run_one(self, pass_: Pass, graph: Graph) -> bool:
        before = print_graph(graph)
        start = time.perf_counter()
        try:
            changed = pass_.run(graph)
            if self.verify_each:
                from kiln.compiler.ir.verifier import verify

                verify(graph)
        except Exception as error:
            path = write_reproducer(before, pass_.name)
            raise PassFailure(f"pass {pass_.name!r} failed on @{graph.name}: {error}\nreproducer: {path}") from error
        self.timings.append((pass_.name, time.perf_counter() - start, changed))
        if self.print_ir_after_all or (self.print_ir_after_change and changed):
            stream = self.stream or sys.stderr
            print(f"// ----- IR after {pass_.name}{'' if changed else ' (unchanged)'} -----", file=stream)
            print(print_graph(graph), file=stream)
        return changed

    def timing_report(self) -> str:
        total = sum(seconds for _, seconds, _ in self.timings) or 1e-12
        rows = [f"{'pass':<24}{'ms':>10}{'%':>7}  changed"]
        for name, seconds, changed in self.timings:
            rows.append(f"{name:<24}{seconds * 1e3:>10.3f}{100 * seconds / total:>7.1f}  {'yes' if changed else 'no'}")
        return "\n".join(rows)


def write_reproducer(ir_text: str, pipeline: str) -> str:
    """Save the input IR with a RUN line naming the pipeline; returns the file's path."""
    handle, path = tempfile.mkstemp(prefix="kiln-reproducer-", suffix=".ir")
    with os.fdopen(handle, "w") as file:
        file.write(f"// RUN: kiln-opt %s -p {pipeline}\n{ir_text}")
    return path
