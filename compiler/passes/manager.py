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

import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, TextIO

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.core import Graph, clone_graph
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
    """``"canonicalize,cse,plan-memory{donate=2:1}"`` -> pass instances; ``{key=value ...}`` sets dataclass options."""
    if not isinstance(pipeline, str):
        return list(pipeline)
    entries = [entry.strip() for entry in _split_top_level(pipeline) if entry.strip()]
    unknown = [entry.split("{")[0] for entry in entries if entry.split("{")[0] not in PASSES]
    if unknown:
        raise KilnError(f"unknown pass {', '.join(unknown)} in pipeline {pipeline!r}; registered: {', '.join(sorted(PASSES))}")
    return [_instantiate(entry) for entry in entries]


def _split_top_level(pipeline: str) -> list[str]:
    """Split at commas outside ``{...}`` (an option value may hold commas)."""
    parts, depth, current = [], 0, ""
    for char in pipeline:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def _instantiate(entry: str) -> Pass:
    name, _, rest = entry.partition("{")
    cls = PASSES[name.strip()]
    options: dict[str, object] = {}
    for item in rest.rstrip("}").split():
        key, _, text = item.partition("=")
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if key.replace("-", "_") not in fields:
            raise KilnError(f"pass {name!r} has no option {key!r}; options: {', '.join(fields) or 'none'}")
        default = fields[key.replace("-", "_")].default
        collection = isinstance(default, (frozenset, tuple))
        options[key.replace("-", "_")] = type(default)(text.split(",")) if collection else _option_value(text)
    return cls(**options)


def _option_value(text: str) -> object:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return text


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
        """Run the pipeline. The graph is copied once, before the first pass: when pass ``k`` fails, the passes
        before it re-run on the copy to rebuild its input for the reproducer (a copy before every pass cost up to
        45% of a compile)."""
        initial = clone_graph(graph)
        changed_any = False
        for index, pass_ in enumerate(self.passes):
            changed_any |= self._run_one(pass_, graph, lambda: self._reproducer_input(index, initial))
        return changed_any

    def _reproducer_input(self, index: int, initial: Graph) -> tuple[Graph, str]:
        """The graph pass ``index`` received and that pass's name: the earlier passes replayed on ``initial``. Should a
        replay fail, ``initial`` itself with the pipeline up to that pass."""
        graph = clone_graph(initial)
        try:
            for pass_ in self.passes[:index]:
                pass_.run(graph)
        except Exception:  # a pass that fails only sometimes: the reproducer replays them all
            return initial, ",".join(p.name for p in self.passes[: index + 1])
        return graph, self.passes[index].name

    def _run_one(self, pass_: Pass, graph: Graph, reproducer_input: Callable[[], tuple[Graph, str]]) -> bool:
        start = time.perf_counter()
        try:
            changed = pass_.run(graph)
            if self.verify_each:
                from kiln.compiler.ir.verifier import verify

                verify(graph)
        except Exception as error:
            source, pipeline = reproducer_input()
            path = write_reproducer(print_graph(source), pipeline)
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
