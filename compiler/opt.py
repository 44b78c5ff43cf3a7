"""``kiln-opt``: run a pass pipeline on an IR file, like ``mlir-opt``.

    python -m kiln.compiler.opt model.ir -p canonicalize,cse,dce --print-ir-after-change --timing
    python -m kiln.compiler.opt - -p fuse-elementwise < model.ir

Prints the resulting IR on standard output (and the memory plan's report,
as ``//`` comments, when ``plan-memory`` ran); instrumentation goes to
standard error. A parse, verification or pass error prints its diagnostic
on standard error and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

import kiln.compiler.autodiff  # noqa: F401  (registers the autodiff pass)
import kiln.compiler.passes  # noqa: F401  (registers the passes)
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.verifier import verify
from kiln.compiler.passes.manager import PASSES, PassManager


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln-opt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="an IR file, or - for standard input")
    parser.add_argument("-p", "--pipeline", default="", help=f"comma-separated passes; registered: {', '.join(sorted(PASSES))}")
    parser.add_argument("-o", "--output", default="-", help="where to write the IR (default: standard output)")
    parser.add_argument("--print-ir-after-all", action="store_true")
    parser.add_argument("--print-ir-after-change", action="store_true")
    parser.add_argument("--no-verify-each", dest="verify_each", action="store_false", help="skip the verifier between passes")
    parser.add_argument("--timing", action="store_true", help="print the per-pass timing table")
    parser.add_argument("--symbol", action="append", default=[], metavar="N=128", help="symbol values for the memory report")
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``kiln-opt`` with ``argv``; returns the exit status."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    args = argument_parser().parse_args(argv)
    try:
        text = sys.stdin.read() if args.input == "-" else open(args.input).read()
        graph = parse(text, "<stdin>" if args.input == "-" else args.input)
        verify(graph)
        manager = PassManager(args.pipeline, verify_each=args.verify_each, print_ir_after_all=args.print_ir_after_all,
                              print_ir_after_change=args.print_ir_after_change, stream=stderr)
        manager.run(graph)
    except (KilnError, OSError) as error:
        print(f"kiln-opt: {error}" if isinstance(error, OSError) else str(error), file=stderr)
        return 1
    result = print_graph(graph)
    plan = getattr(graph, "memory_plan", None)
    if plan is not None:
        symbols = dict((name, int(value)) for name, value in (item.split("=") for item in args.symbol))
        result += plan.report(symbols) + "\n"
    _write(args.output, result, stdout)
    if args.timing:
        print(manager.timing_report(), file=stderr)
    return 0


def _write(path: str, text: str, stdout: TextIO) -> None:
    if path == "-":
        stdout.write(text)
    else:
        with open(path, "w") as file:
            file.write(text)


if __name__ == "__main__":
    sys.exit(main())
