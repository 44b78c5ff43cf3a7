"""The ``kiln`` command.

    kiln train script.py [args...]     run a training script (as ``python script.py args...``)
    kiln train config.toml             a run described by a config file (kiln/train_config.py)
    kiln ir model.py [--train] [--pipeline cse,dce] [--after PASS]
                                       print the IR (forward, or the whole training step with --train)
    kiln viz model.py -o graph.svg     draw the graph, fusion groups coloured (.svg, .png, .pdf)
    kiln export model.py -o model.onnx export the model's forward graph to ONNX
    kiln bench [model.py]              time the compiled training step on each working backend
    kiln doctor                        which backends and optional packages work here

A model file defines ``model`` (a Module or a function returning one) and
``input_specs``; see ``kiln/model_file.py``. Errors print one line and exit 1.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
from typing import Any, Callable, Sequence

from kiln.compiler.errors import KilnError

DEFAULT_PIPELINE = "cse,dce"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kiln`` command with ``argv``; returns the exit status."""
    parser = argument_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args, rest) or 0
    except BrokenPipeError:  # `kiln ir model.py | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except (KilnError, OSError) as error:
        print(f"kiln {args.command}: {error}", file=sys.stderr)
        return 1


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="run a training script or config file")
    train.add_argument("target", help="a Python script, or a .toml/.json config")
    train.set_defaults(run=train_command)
    for name, run, help_text in (("ir", ir_command, "print the IR"), ("viz", viz_command, "draw the graph"), ("export", export_command, "export to ONNX")):
        sub = commands.add_parser(name, help=help_text)
        _model_arguments(sub)
        sub.set_defaults(run=run)
        if name != "export":
            sub.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="passes to run first (comma-separated)")
            sub.add_argument("--train", action="store_true", help="the training step's graph (forward, backward, SGD update)")
        if name == "ir":
            sub.add_argument("--after", help="print the IR right after this pass of the pipeline")
        else:
            sub.add_argument("-o", "--output", required=True)
        if name == "viz":
            sub.add_argument("--engine", choices=("auto", "dot", "matplotlib"), default="auto")
            sub.add_argument("--dot", help="also write the DOT text to this file")
    bench = commands.add_parser("bench", help="time the compiled training step")
    bench.add_argument("model_file", nargs="?", help="a model file (default: the 64-128-64-10 MLP)")
    _model_arguments(bench, positional=False)
    bench.add_argument("--batch-size", type=int, default=64)
    bench.add_argument("--steps", type=int, default=50)
    bench.add_argument("--backend", action="append", help="numpy, onnxruntime (default: every one that works)")
    bench.set_defaults(run=bench_command)
    doctor = commands.add_parser("doctor", help="list working backends and optional packages")
    doctor.set_defaults(run=doctor_command)
    return parser


def _model_arguments(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    if positional:
        parser.add_argument("model_file", help="a Python file defining `model` and `input_specs`")
    parser.add_argument("--model", default="model", help="the attribute naming the model (default: model)")
    parser.add_argument("--input", action="append", default=[], metavar="N,64:float32", help="an input spec (repeat per input)")


# --- train ----------------------------------------------------------------------------------------


def train_command(args: argparse.Namespace, rest: list[str]) -> int:
    if args.target.endswith((".toml", ".json")):
        from kiln.train_config import run_config

        history = run_config(args.target)
        if history.epochs:
            print("final epoch: " + ", ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in history.epochs[-1].items()))
        return 0
    if not os.path.exists(args.target):
        raise KilnError(f"training script {args.target} does not exist")
    sys.argv = [args.target, *rest]
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.target)))
    runpy.run_path(args.target, run_name="__main__")
    return 0


# --- ir, viz, export --------------------------------------------------------------------------------


def _graph(args: argparse.Namespace, stop_after: str | None = None) -> Any:
    """The model file's forward (or training-step) graph after the pipeline, or right after ``stop_after``."""
    from kiln.compiler.passes.manager import PassManager, parse_pipeline
    from kiln.model_file import load_model_file

    model_file = load_model_file(args.model_file, args.model, args.input)
    graph = _train_graph(model_file) if args.train else _forward_graph(model_file)
    passes = parse_pipeline(args.pipeline)
    if stop_after is not None:
        names = [p.name for p in passes]
        if stop_after not in names:
            raise KilnError(f"--after {stop_after}: the pipeline {args.pipeline!r} has no such pass; it runs {names}")
        passes = passes[: names.index(stop_after) + 1]
    PassManager(passes).run(graph)
    return graph


def _forward_graph(model_file: Any) -> Any:
    from kiln.frontend.trace import trace

    model = model_file.model
    model.eval()
    return trace(model, *model_file.input_specs, name=type(model).__name__)


def _train_graph(model_file: Any) -> Any:
    import kiln
    from kiln.runtime.step_graph import build_step_graph

    loss = model_file.loss or kiln.nn.functional.cross_entropy
    optimizer = kiln.optim.SGD(model_file.model.parameters(), lr=0.1)
    return build_step_graph(model_file.model, loss, optimizer, [*model_file.input_specs, model_file.target_spec]).graph


def ir_command(args: argparse.Namespace, rest: list[str]) -> int:
    from kiln.compiler.ir.printer import print_graph

    print(print_graph(_graph(args, args.after)))
    return 0


def viz_command(args: argparse.Namespace, rest: list[str]) -> int:
    from kiln.viz import draw_graph, to_dot

    graph = _graph(args)
    if args.dot:
        with open(args.dot, "w", encoding="utf-8") as file:
            file.write(to_dot(graph))
    engine = draw_graph(graph, args.output, args.engine)
    print(f"wrote {args.output} ({len(graph.ops)} ops, drawn with {engine})")
    return 0


def export_command(args: argparse.Namespace, rest: list[str]) -> int:
    from kiln.model_file import load_model_file
    from kiln.runtime.export import export_onnx

    model_file = load_model_file(args.model_file, args.model, args.input)
    export_onnx(model_file.model, model_file.input_specs, args.output)
    print(f"wrote {args.output}")
    return 0


# --- bench ----------------------------------------------------------------------------------------


def bench_command(args: argparse.Namespace, rest: list[str]) -> int:
    backends = args.backend or ["numpy", "onnxruntime"]
    print(f"{'backend':<14}{'compile s':>10}{'step ms':>10}{'samples/s':>12}")
    for backend in backends:
        try:
            compile_s, step_s = _bench_backend(args, backend)
        except Exception as error:  # a backend that cannot run this model is reported, not fatal
            print(f"{backend:<14}  unavailable: {str(error).splitlines()[0]}")
            continue
        print(f"{backend:<14}{compile_s:>10.3f}{step_s * 1e3:>10.3f}{args.batch_size / step_s:>12,.0f}")
    return 0


def _bench_backend(args: argparse.Namespace, backend: str) -> tuple[float, float]:
    import numpy as np

    import kiln

    model, specs, loss = _bench_model(args)
    step = kiln.compile_train_step(model, loss, kiln.optim.SGD(model.parameters(), lr=0.01), backend=backend)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((args.batch_size, *spec.shape[1:])).astype(spec.dtype if isinstance(spec.dtype, str) else "float32") for spec in specs]
    classes = 10
    target = rng.integers(0, classes, args.batch_size)
    started = time.perf_counter()
    step(*inputs, target)
    compile_s = time.perf_counter() - started
    times = [_timed(step, *inputs, target) for _ in range(max(1, args.steps))]
    return compile_s, float(np.median(times))


def _timed(function: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def _bench_model(args: argparse.Namespace) -> tuple[Any, list[Any], Any]:
    import kiln
    import kiln.nn as nn

    if args.model_file:
        from kiln.model_file import load_model_file

        model_file = load_model_file(args.model_file, args.model, args.input)
        return model_file.model, model_file.input_specs, model_file.loss or kiln.nn.functional.cross_entropy
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    return model, [kiln.TensorSpec(("N", 64), "float32")], kiln.nn.functional.cross_entropy


# --- doctor ---------------------------------------------------------------------------------------

OPTIONAL = (
    # (import name, distribution name, where it comes from)
    ("onnx", "onnx", "onnx"), ("onnxruntime", "onnxruntime", "onnx"), ("tokenizers", "tokenizers", "data"), ("tqdm", "tqdm", "data"),
    ("matplotlib", "matplotlib", "data"), ("sklearn", "scikit-learn", "examples"), ("torch", "torch", "test"),
    ("cupy", "cupy", "a CUDA machine"), ("mpi4py", "mpi4py", "distributed"),
)


def doctor_command(args: argparse.Namespace, rest: list[str]) -> int:
    import platform
    import shutil

    import numpy as np

    import kiln

    print(f"kiln {kiln.__version__}, Python {platform.python_version()}, NumPy {np.__version__}")
    from kiln.backends import available

    print("backends:")
    for backend, problem in available().items():
        print(f"  {backend:<14}{_backend_status(backend) if problem is None else f'not available: {problem}'}")
    print("optional packages:")
    for module, distribution, extra in OPTIONAL:
        print(f"  {module:<14}{_package_status(module, distribution, extra)}")
    print(f"  {'nccl':<14}{_nccl_status()}")
    dot = shutil.which("dot")
    print(f"  {'graphviz dot':<14}{dot or 'missing (kiln viz draws with networkx + matplotlib instead)'}")
    return 0


def _nccl_status() -> str:
    """Whether ``kiln.distributed.init("nccl")`` could start: CuPy with its NCCL library."""
    try:
        from cupy.cuda import nccl
    except Exception:  # no CuPy, or no CUDA under it
        return "missing (needs CuPy: pip install 'kiln[cuda12]' or 'kiln[cuda13]')"
    return "ok" if getattr(nccl, "available", True) else "missing (CuPy finds no NCCL library: pip install nvidia-nccl-cu12 or -cu13)"


def _backend_status(backend: str) -> str:
    """``ok`` after compiling and running a tiny step, else why not."""
    import numpy as np

    import kiln
    import kiln.nn as nn

    try:
        model = nn.Linear(3, 2)
        step = kiln.compile_train_step(model, kiln.nn.functional.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), backend=backend)
        step(np.ones((2, 3), np.float32), np.array([0, 1]))
        return "ok"
    except Exception as error:  # doctor reports every failure instead of stopping at the first
        return f"not working: {str(error).splitlines()[0]}"


def _package_status(module: str, distribution: str, extra: str) -> str:
    """Installed or not, from the package metadata: importing torch or scikit-learn just to list them would take seconds."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"missing (pip install 'kiln[{extra}]')" if " " not in extra else f"missing (needs {extra})"
    try:
        return f"ok {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return "ok"


if __name__ == "__main__":
    sys.exit(main())
