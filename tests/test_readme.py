"""README.md's code, as a reader would paste it: every ```python block runs, what it prints is what the README
shows, every ```bash block names commands, files, flags and extras that exist, and the README's cheap numbers hold.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_readme.py

Python blocks run section by section (a ``##`` heading; a block's id is its nearest heading), in order, in one
fresh namespace per section, inside a temporary directory (the blocks write checkpoints, plots and ONNX files),
with the BLAS pools pinned to one thread (tests/conftest.py). A section that uses the tour's names (``model``,
``step``, ``x``, ``y``, ``x_test``, ``y_test``) runs after the tour's blocks, as a reader pastes the README from the
top: ``BUILDS_ON`` lists those sections. Nothing is patched into a block.

Where a block cannot run as written here:

- ``backend="cupy"`` (the GPU section): there is no GPU, so the block runs on the suite's NumPy stand-in for CuPy
  (tests/backends_cupy/fake_cupy.py, installed as that folder's ``fake`` fixture installs it). The CUDA its kernels
  would compile is checked by tests/backends_cupy, not here.
- No python block is only parsed today; every one is also parsed on its own (``ast.parse``), so a syntax slip
  names its block even before its section runs.
- ```bash blocks are not run (they install packages, train for minutes, launch MPI ranks). Each command is
  checked instead: ``python``/``mpiexec`` scripts exist and take the ``--flags`` shown, ``python -m`` modules
  import, ``kiln`` command lines parse with the CLI's own argument parser and name files that exist, and
  ``pip install ".[extra]"`` names extras of pyproject.toml (anywhere in the README, not only in blocks).

An unlabeled fence right after a python block, under the same heading, is what that block prints: a line of
only ``...`` stands for any number of lines, ``...`` inside a line for any text.

The prose is checked too, where a check is cheap: inline commands (`python benchmarks/...`), repository paths,
``kiln.*`` names, pass names, backend options and ``KILN_*`` variables exist; and the deterministic numbers it
states are recomputed: the KL pair count, examples/mlp_digits.py's accuracy, the W4 compile table's op counts (2
and 6 layers), the benchmark table's memory-plan column (W1-W5) and W1's peak, the checkpointed GPT's planned
peaks; inline snippets with a stated result run as written (dtype promotion, a closed-over value under ``grad``,
the Keras-style MLP). Not recomputed: timings, the ONNX conformance count (the whole conformance suite), W6's and
the 256-step LSTM's numbers (half a minute to compile) and the GPT-2-small CuPy plan (a 124M-parameter model).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOUR = "A tour"
BUILDS_ON = {
    "Transformations: vmap, Jacobians, activation checkpointing": TOUR,
    "Training runs, data and the `kiln` command": TOUR,
    "GPU: the CuPy backend": TOUR,
    "ONNX: deploy, train in onnxruntime, import": TOUR,
}
"""Sections whose blocks use the tour's model, step and data, each run after the section it builds on."""


@dataclass(frozen=True)
class Block:
    """One fenced block of README.md."""

    language: str
    """The fence's info string: ``python``, ``bash``, or ``""`` for printed output."""
    section: str
    """The ``##`` heading above it."""
    heading: str
    """The nearest heading above it: the block's id."""
    line: int
    """The README line of the block's first code line."""
    code: str


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order, each with the headings it sits under."""
    blocks: list[Block] = []
    section = heading = ""
    fence: tuple[str, int, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if fence is not None:
            if line.startswith("```"):
                blocks.append(Block(fence[0], section, heading, fence[1], "\n".join(fence[2])))
                fence = None
            else:
                fence[2].append(line)
        elif line.startswith("```"):
            fence = (line[3:].strip(), number + 1, [])
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
            section = heading if line.startswith("## ") or line.startswith("# ") else section
    assert fence is None, f"README.md:{fence[1] - 1}: a ``` fence is never closed"
    return blocks


BLOCKS = readme_blocks(README.read_text())


def _blocks(language: str) -> list[Block]:
    return [block for block in BLOCKS if block.language == language]


def _block_id(block: Block) -> str:
    same = [other for other in BLOCKS if other.heading == block.heading and other.language == block.language]
    return block.heading if len(same) == 1 else f"{block.heading} #{same.index(block) + 1}"


def _section_blocks(section: str) -> list[Block]:
    return [block for block in _blocks("python") if block.section == section]


def _output_of(block: Block) -> Block | None:
    """The unlabeled fence right after ``block`` under the same heading: what the block prints."""
    after = BLOCKS[BLOCKS.index(block) + 1] if block is not BLOCKS[-1] else None
    return after if after is not None and after.language == "" and after.heading == block.heading else None


# --- python blocks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", _blocks("python"), ids=_block_id)
def test_every_python_block_parses(block):
    ast.parse(block.code, filename=f"README.md:{block.line}")


@pytest.fixture
def fake_cupy(monkeypatch):
    """The NumPy stand-in for CuPy in ``sys.modules``, with the CuPy table and kernel cache emptied around it (as
    tests/backends_cupy/conftest.py's ``fake`` fixture does)."""
    _importable(ROOT / "tests" / "backends_cupy")
    import fake_cupy as stand_in
    from kiln.backends.cupy import launch
    from kiln.backends.cupy.lowering import cupy_table

    cupy_table.cache_clear()
    launch._KERNELS.clear()
    yield lambda: stand_in.install(monkeypatch)
    cupy_table.cache_clear()
    launch._KERNELS.clear()


def _importable(folder: Path) -> None:
    """Put ``folder`` (scripts or test helpers, not a package) on ``sys.path`` once."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _run(block: Block, namespace: dict) -> str:
    """Execute ``block`` in ``namespace`` (tracebacks name README.md's lines); returns what it printed."""
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, namespace)
    return printed.getvalue()


def _cupy_backend_compiled() -> bool:
    """Whether the CuPy backend built its lowering table (it does on its first compile) since the fixture cleared it."""
    from kiln.backends.cupy.lowering import cupy_table

    return cupy_table.cache_info().currsize > 0


def _matches(shown: str, printed: str) -> bool:
    """Whether ``printed`` is what ``shown`` shows: a ``...`` line is any lines, ``...`` in a line any text."""
    pattern = "".join(r"(?:.*\n)*?" if line.strip() == "..." else ".*?".join(map(re.escape, line.split("..."))) + r"\n"
                      for line in shown.splitlines())
    return re.fullmatch(pattern, printed.rstrip("\n") + "\n") is not None


@pytest.mark.parametrize("section", sorted({block.section for block in _blocks("python")}))
def test_python_blocks_run_in_order_and_print_what_the_readme_shows(section, tmp_path, monkeypatch, fake_cupy):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for block in _section_blocks(BUILDS_ON[section]) if section in BUILDS_ON else []:
        _run(block, namespace)
    for block in _section_blocks(section):
        on_cupy = 'backend="cupy"' in block.code
        if on_cupy:
            fake_cupy()
        printed = _run(block, namespace)
        assert not on_cupy or _cupy_backend_compiled(), f"README.md:{block.line}: the block compiled nothing for CuPy"
        shown = _output_of(block)
        if shown is not None:
            assert _matches(shown.code, printed), (
                f"README.md:{shown.line}: the output shown under {block.heading!r} is not what the block above prints:\n"
                f"{printed}")


def test_output_check_can_fail():
    """The tour's IR excerpt matches itself with its elisions filled in, and not once one of its ops changes."""
    shown = _output_of(_section_blocks(TOUR)[0])
    assert shown is not None and shown.code.count("tensor.matmul") == 1
    filled = shown.code.replace("...", "%elided")
    assert _matches(shown.code, filled)
    assert not _matches(shown.code, filled.replace("tensor.matmul", "tensor.mul"))
    assert not _matches(shown.code, filled.replace("}", "") + "  trailing line")


# --- bash blocks -------------------------------------------------------------------------------------------------

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _commands(block: Block) -> list[list[str]]:
    """Each command of a bash block: comments dropped, ``&&`` chains split, words as the shell splits them."""
    commands = []
    for line in block.code.splitlines():
        words = shlex.split(line, comments=True)
        while "&&" in words:
            cut = words.index("&&")
            commands.append(words[:cut])
            words = words[cut + 1:]
        if words:
            commands.append(words)
    return commands


def _check_extras(argument: str, where: str) -> None:
    extras = re.fullmatch(r"\.\[([\w,-]+)\]", argument)
    if extras is None:
        return
    known = PYPROJECT["project"]["optional-dependencies"]
    for extra in extras.group(1).split(","):
        assert extra in known, f"{where}: pip extra {extra!r} is not in pyproject.toml (has {sorted(known)})"


def _check_script(words: list[str], where: str) -> None:
    """``python script.py --flag ...``: the script exists and mentions each flag; ``python -m module`` imports."""
    if words[:1] == ["-m"]:
        extras = str(PYPROJECT["project"]["optional-dependencies"])
        assert importlib.util.find_spec(words[1]) or f'"{words[1]}' in extras, f"{where}: no module {words[1]!r} for python -m"
        words = words[2:]
    script = ROOT / words[0]
    assert script.is_file(), f"{where}: no script {words[0]}"
    source = script.read_text()
    missing = [flag for flag in words[1:] if flag.startswith("--") and f'"{flag}"' not in source]
    assert not missing, f"{where}: {words[0]} takes no {' '.join(missing)} option"


def _check_kiln(words: list[str], where: str) -> None:
    """A ``kiln`` command line parses with the CLI's own parser, and the file it names exists."""
    from kiln.cli import argument_parser

    try:
        args, rest = argument_parser().parse_known_args(words)
    except SystemExit:
        pytest.fail(f"{where}: `kiln {shlex.join(words)}` does not parse (see `kiln --help`)")
    assert not rest or args.command == "train", f"{where}: kiln {args.command} takes no {rest}"
    path = getattr(args, "model_file", None) or getattr(args, "target", None)
    assert path is None or (ROOT / path).is_file(), f"{where}: kiln {args.command} names {path}, which does not exist"
    if getattr(args, "pipeline", None):
        passes = [each.name for each in _pipeline(args.pipeline, where)]
        assert getattr(args, "after", None) in [None, *passes], f"{where}: --after {args.after} is not in the pipeline"


def _pipeline(pipeline: str, where: str) -> list:
    from kiln.compiler.errors import KilnError
    from kiln.compiler.passes.manager import parse_pipeline

    try:
        return parse_pipeline(pipeline)
    except KilnError as error:
        pytest.fail(f"{where}: {error}")


def _check_command(words: list[str], where: str) -> None:
    program, arguments = words[0], words[1:]
    if program == "pip":
        assert arguments[0] == "install", f"{where}: pip {arguments[0]}"
        for argument in arguments[1:]:
            _check_extras(argument, where)
    elif program == "python":
        _check_script(arguments, where)
    elif program == "mpiexec":
        assert arguments[:1] == ["-n"], f"{where}: mpiexec without -n"
        _check_command(arguments[2:], where)
    elif program == "kiln":
        _check_kiln(arguments, where)
    elif program == "pytest":
        assert importlib.util.find_spec("xdist") is not None or "-n" not in arguments, f"{where}: -n needs pytest-xdist"
        missing = [path for path in arguments if "/" in path and not (ROOT / path).exists()]
        assert not missing, f"{where}: pytest of {missing}, which do not exist"
    else:
        pytest.fail(f"{where}: unknown command {program!r} (add a check for it to tests/test_readme.py)")


@pytest.mark.parametrize("block", _blocks("bash"), ids=_block_id)
def test_bash_blocks_name_commands_files_and_options_that_exist(block):
    for words in _commands(block):
        _check_command(words, f"README.md bash block at line {block.line} ({shlex.join(words)})")


def test_bash_check_can_fail():
    """A script that is not there, a flag a script does not take and an unknown kiln subcommand are caught."""
    for words in (["python", "examples/no_such.py"], ["python", "examples/mlp_digits.py", "--no-such-flag"],
                  ["kiln", "compile", "examples/mlp_model.py"], ["pip", "install", ".[no-such-extra]"],
                  ["kiln", "ir", "examples/mlp_model.py", "--pipeline", "cse,no-such-pass"],
                  ["kiln", "ir", "examples/mlp_model.py", "--pipeline", "cse", "--after", "dce"]):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            _check_command(words, "test")


def test_every_pip_extra_named_in_the_readme_exists():
    extras = re.findall(r'"(\.\[[\w,-]+\])"', README.read_text())
    assert len(extras) > 5
    for extra in extras:
        _check_extras(extra, f"README.md: {extra}")


# --- names and paths in the prose ----------------------------------------------------------------------------------

FOLDERS = ("examples/", "benchmarks/", "tests/", "runtime/", "frontend/", "compiler/", "backends/", "kiln/", ".ci/")
"""Where the repository's own paths start (``../shared/DESIGN.md`` is the workspace's, absent from a fresh clone)."""
METADATA_KEYS = {"kiln.random_inputs"}
"""Inline ``kiln.*`` code that names an ONNX metadata key of the exported step, not an attribute."""


def _inline_code() -> list[str]:
    prose = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def test_commands_in_the_prose_exist():
    """Inline `python benchmarks/cpu_profile.py [--workload W4|W6]`, `pytest tests/...`: checked as the bash blocks'
    commands are (square brackets mark optional arguments)."""
    programs = ("python", "pytest", "kiln", "pip", "mpiexec")
    commands = [code for code in _inline_code() if " " in code and code.partition(" ")[0] in programs]
    assert len(commands) > 5
    for command in commands:
        _check_command(shlex.split(command.replace("[", " ").replace("]", " ")), f"README.md: `{command}`")


def test_every_repository_path_in_the_prose_exists():
    paths = [code for code in _inline_code() if code.startswith(FOLDERS)]
    assert len(paths) > 10
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert not missing, f"README.md names files that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    """Whether ``kiln.a.b`` is an attribute or module of the installed kiln."""
    parts = dotted.split(".")
    found = importlib.import_module(parts[0])
    for index, part in enumerate(parts[1:], 2):
        try:
            found = getattr(found, part)
        except AttributeError:
            if importlib.util.find_spec(".".join(parts[:index])) is None:
                return False
            found = importlib.import_module(".".join(parts[:index]))
    return True


def test_every_pass_named_in_the_prose_exists():
    """"the `rematerialize` pass", "adds the `data-parallel` pass": names a pipeline string takes."""
    named = re.findall(r"`([a-z-]+)` pass", " ".join(README.read_text().split()))
    assert len(named) > 3
    _pipeline(",".join(named), "README.md")


def test_every_backend_option_and_environment_variable_in_the_prose_exists():
    """`NumpyBackend(profile=True)`, `CupyBackend(tf32=True)`...: constructor keywords; `KILN_*`: read somewhere."""
    from kiln.backends.cupy import CupyBackend
    from kiln.backends.numpy import NumpyBackend

    text = README.read_text()
    options = re.findall(r"(NumpyBackend|CupyBackend)\((\w+)=", text)
    assert len(options) >= 3
    for backend, keyword in options:
        assert keyword in inspect.signature({"NumpyBackend": NumpyBackend, "CupyBackend": CupyBackend}[backend]).parameters, (
            f"README.md: {backend} takes no {keyword}=")
    sources = "".join(path.read_text() for folder in ("backends", "runtime", "compiler", "frontend", "kiln", "tests")
                      for path in (ROOT / folder).rglob("*.py")) + (ROOT / ".ci" / "run").read_text()
    variables = set(re.findall(r"KILN_[A-Z0-9_]+", text))
    assert len(variables) > 3
    unread = sorted(variable for variable in variables if sources.count(variable) == 0)
    assert not unread, f"README.md names environment variables nothing reads: {unread}"


def test_every_kiln_name_in_the_prose_exists():
    names = {match.group(0) for code in _inline_code() for match in [re.match(r"kiln(\.\w+)+", code)] if match}
    assert len(names) > 30
    assert not _resolves("kiln.no_such_function")
    missing = sorted(name for name in names - METADATA_KEYS if not _resolves(name))
    assert not missing, f"README.md names kiln APIs that do not exist: {missing}"


# --- numbers the README states ---------------------------------------------------------------------------------------


def _claim(pattern: str) -> re.Match:
    match = re.search(pattern, " ".join(README.read_text().split()))
    assert match is not None, f"README.md no longer says {pattern!r}: update this test with it"
    return match


def test_kl_divergence_pair_count():
    from kiln.frontend.distributions_kl import _KL

    claimed = int(_claim(r"`kl_divergence` \(the (\d+) pairs PyTorch registers").group(1))
    assert claimed == len(_KL), f"README.md says {claimed} kl_divergence pairs; kiln registers {len(_KL)}"


def test_mlp_digits_accuracy():
    """"the held-out accuracy (about 97.8% ...)": examples/mlp_digits.py with its defaults, seeded."""
    _importable(ROOT / "examples")
    import mlp_digits

    claimed = float(_claim(r"held-out accuracy \(about ([\d.]+)%").group(1))
    accuracy = round(100 * mlp_digits.train(verbose=False), 1)
    assert accuracy == claimed, f"README.md says about {claimed}%; examples/mlp_digits.py reaches {accuracy}%"


@pytest.mark.parametrize("layers", [2, 6])
def test_compile_table_op_count(layers):
    """The compile-time table's ops column (the shallow rows): the W4 GPT's step graph after the step's passes."""
    _importable(ROOT / "benchmarks")
    from gpt_workload import GPTConfig, compile_phases

    claimed = int(_claim(rf"\| {layers} \| (\d+) \| [\d.]+ ms \|").group(1))
    ops = compile_phases(GPTConfig(layers=layers))["ops"]
    assert ops == claimed, f"README.md's compile table says {claimed} ops at {layers} layers; the W4 step has {ops}"


def _benchmark_step(name: str):
    """The compiled kiln step of benchmarks/train_step.py's workload ``name`` (W1-W6), after its compiling call."""
    _importable(ROOT / "benchmarks")
    import train_step
    from kiln.runtime.train_step import DEFAULT_PIPELINE

    workload = train_step.WORKLOADS[name]
    if name in ("W1", "W2", "W3"):
        return train_step.kiln_step(workload, DEFAULT_PIPELINE)[2], train_step
    _, config, kiln_builder, _, _ = train_step.model_workload(workload)
    return kiln_builder(config)[2], train_step


def _as_shown(value: float, shown: str) -> str:
    """``value`` with as many decimals as ``shown`` has."""
    return f"{value:.{len(shown.partition('.')[2])}f}"


@pytest.mark.parametrize("name", ["W1", "W2", "W3", "W4", "W5"])
def test_benchmark_table_memory_plan_column(name):
    """"memory plan vs one allocation per value": the planned buffers' MiB, one allocation per value's, the saving.
    W6 is left out: its unrolled 64-step LSTM takes half a minute to compile on a shared 2-core machine."""
    step, train_step = _benchmark_step(name)
    memory = train_step.memory_bytes(step, train_step.WORKLOADS[name].batch)
    pooled, unplanned = memory["pooled"] / 2**20, memory["unplanned"] / 2**20
    claim = _claim(rf"\| {name} \|[^\n]*?\| (([\d.]+) vs ([\d.]+) MiB \(-\d+%\)) \|")
    shown = f"{_as_shown(pooled, claim.group(2))} vs {_as_shown(unplanned, claim.group(3))} MiB (-{100 * (1 - pooled / unplanned):.0f}%)"
    assert shown == claim.group(1), f"README.md's benchmark table says {name} plans {claim.group(1)}; the step plans {shown}"
    if name == "W1":
        peak = _claim(r"W1's peak went from [\d.]+ to ([\d.]+) MiB").group(1)
        assert _as_shown(memory["peak"] / 2**20, peak) == peak, f"README.md says W1's peak is {peak} MiB: {memory['peak'] / 2**20:.3f}"


@pytest.mark.parametrize("layers", [2, 6])
def test_checkpointed_gpt_memory_peaks(layers):
    """"W4's GPT with every block checkpointed: 34.9 against 29.7 MiB at 2 layers" (benchmarks/checkpoint_memory.py):
    the memory plan's peak without and with checkpointing."""
    _importable(ROOT / "benchmarks")
    from checkpoint_memory import variant

    claim = _claim(rf"([\d.]+) against ([\d.]+) MiB at {layers}\b")
    peaks = [_as_shown(variant(layers, checkpointed)[1]["peak"] / 2**20, claim.group(1)) for checkpointed in (False, True)]
    assert peaks == [claim.group(1), claim.group(2)], f"README.md says {claim.group(0)}; the plans peak at {peaks} MiB"


def _traced(expression: str, **arrays):
    """The README's inline ``expression``, traced and compiled over ``arrays`` (its free names), then run."""
    import kiln

    names = list(arrays)
    function = eval(f"lambda {', '.join(names)}: {expression}", {"kiln": kiln, "grad": kiln.grad})
    return kiln.compile(function)(*arrays.values())


def test_mixed_dtypes_promote_as_stated():
    """"`counts * 0.5` is float32, `x_f64 + kiln.zeros(3)` float64": the inline code itself, traced."""
    import numpy as np

    claim = _claim(r"`(counts \* 0\.5)` is (\w+), `(x_f64 \+ kiln\.zeros\(3\))` (\w+)")
    scaled = _traced(claim.group(1), counts=np.arange(6).reshape(2, 3))
    summed = _traced(claim.group(3), x_f64=np.ones((2, 3)))
    assert [scaled.dtype.name, summed.dtype.name] == [claim.group(2), claim.group(4)], claim.group(0)


def test_a_closed_over_traced_value_is_a_constant_to_grad():
    """"(`grad(lambda z: (z * x).sum())(x)` is `x`)", with ``x`` traced: the gradient is ``x``, not ``2 x``."""
    import numpy as np

    claim = _claim(r"\(`(grad\(lambda z: \(z \* x\)\.sum\(\)\)\(x\))` is `x`\)")
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(_traced(claim.group(1), x=x), x)


def test_the_keras_style_mlp_is_the_tours_model():
    """"The same model in the Keras style: `nn.Sequential([nn.Dense(128, ...), ...]).build((64,))`": the inline code
    builds the tour's 64-128-64-10 layers (PyTorch's weight layout, ``(out, in)``)."""
    import kiln.nn as nn

    claim = _claim(r"The same model in the Keras style: `(nn\.Sequential\(.*?\)\.build\(\(64,\)\))`")
    keras = eval(claim.group(1), {"nn": nn})
    shapes = [tuple(parameter.shape) for parameter in keras.parameters()]
    assert shapes == [(128, 64), (128,), (64, 128), (64,), (10, 64), (10,)], claim.group(1)
