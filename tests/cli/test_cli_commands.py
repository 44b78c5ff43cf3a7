"""The kiln command: each subcommand runs in a subprocess on the example model and produces its artefact."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np

from oracles import require

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(REPO, "examples", "mlp_model.py")


def kiln_command(*args: str) -> subprocess.CompletedProcess:
    """The command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, timeout=120)


def kiln_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The same command in this process (cheaper, for the variations of a subcommand already run in a subprocess)."""
    from kiln.cli import main

    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "kiln")
    assert os.path.exists(script), "pip install -e . installs the `kiln` console script ([project.scripts])"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "kiln doctor" in result.stdout


def test_ir_prints_parseable_ir_after_a_pass(capsys):
    from kiln.compiler.ir.parser import parse
    from kiln.compiler.ir.printer import print_graph

    result = kiln_command("ir", MODEL, "--pipeline", "cse,dce", "--after", "cse")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("func @MLP(%x: tensor<Nx64xf32>") and '"tensor.matmul"' in result.stdout
    assert print_graph(parse(result.stdout)).rstrip() == result.stdout.rstrip()
    status, out, err = kiln_in_process(capsys, "ir", MODEL, "--train", "--pipeline", "cse,dce,fuse-elementwise")
    assert status == 0, err
    assert '"optim.sgd_update"' in out and '"fused.elementwise"' in out
    status, _, err = kiln_in_process(capsys, "ir", MODEL, "--after", "fuse-elementwise")
    assert status == 1 and "has no such pass" in err


def test_viz_draws_an_image_that_opens(tmp_path, capsys):
    result = kiln_command("viz", MODEL, "--train", "-o", str(tmp_path / "graph.png"), "--dot", str(tmp_path / "graph.dot"))
    assert result.returncode == 0, result.stderr
    import matplotlib.image

    assert matplotlib.image.imread(str(tmp_path / "graph.png")).shape[0] > 200
    dot = (tmp_path / "graph.dot").read_text()
    assert dot.startswith('digraph "train_step"') and "->" in dot and "fillcolor" in dot
    status, _, err = kiln_in_process(capsys, "viz", MODEL, "-o", str(tmp_path / "graph.svg"), "--engine", "matplotlib")
    assert status == 0, err
    assert ElementTree.parse(tmp_path / "graph.svg").getroot().tag.endswith("svg")


def test_export_writes_a_valid_onnx_file(tmp_path):
    onnx = require("onnx")
    result = kiln_command("export", MODEL, "-o", str(tmp_path / "model.onnx"))
    assert result.returncode == 0, result.stderr
    onnx.checker.check_model(onnx.load(str(tmp_path / "model.onnx")), full_check=True)


def test_train_runs_a_config_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((120, 64), dtype=np.float32)
    np.savez(tmp_path / "arrays.npz", x=x, y=x[:, :10].argmax(axis=1))
    (tmp_path / "run.toml").write_text(
        f'model = "{MODEL}"\ndata = "npz:arrays.npz"\nepochs = 2\nbatch_size = 16\nprogress = false\n'
        '[optimizer]\nname = "Adam"\nlr = 0.01\n[run]\ncheckpoint_dir = "ckpt"\nlog = "log.jsonl"\n'
    )
    result = kiln_command("train", str(tmp_path / "run.toml"))
    assert result.returncode == 0, result.stderr
    assert "final epoch: epoch 1" in result.stdout and "val_accuracy" in result.stdout
    assert (tmp_path / "log.jsonl").exists() and os.listdir(tmp_path / "ckpt")
    (tmp_path / "bad.toml").write_text(f'model = "{MODEL}"\nepoch = 2\n')
    status, _, err = kiln_in_process(capsys, "train", str(tmp_path / "bad.toml"))
    assert status == 1 and "unknown key(s) ['epoch']" in err


def test_train_runs_a_script_with_its_arguments(tmp_path):
    (tmp_path / "script.py").write_text("import sys\nif __name__ == '__main__':\n    print('args', sys.argv[1:])\n")
    result = kiln_command("train", str(tmp_path / "script.py"), "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert "args ['--epochs', '3']" in result.stdout


def test_bench_and_doctor(capsys):
    status, out, err = kiln_in_process(capsys, "bench", "--steps", "3", "--backend", "numpy", "--backend", "nope")
    assert status == 0, err
    assert out.splitlines()[1].startswith("numpy") and "nope" in out.splitlines()[2] and "unavailable" in out
    doctor = kiln_command("doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert "numpy         ok" in doctor.stdout and "matplotlib" in doctor.stdout and "graphviz dot" in doctor.stdout
    assert "cupy          not available: cupy is not importable" in doctor.stdout or "cupy          ok" in doctor.stdout
    assert "mpi4py" in doctor.stdout and "nccl" in doctor.stdout


def test_errors_are_one_line(tmp_path, capsys):
    result = kiln_command("ir", str(tmp_path / "missing.py"))
    assert result.returncode == 1 and result.stderr.strip() == f"kiln ir: model file {tmp_path / 'missing.py'} does not exist"
    (tmp_path / "nospecs.py").write_text("import kiln.nn as nn\nmodel = nn.Linear(2, 3)\n")
    status, _, err = kiln_in_process(capsys, "export", str(tmp_path / "nospecs.py"), "-o", str(tmp_path / "x.onnx"))
    assert status == 1 and "--input N,64:float32" in err
    status, _, err = kiln_in_process(capsys, "export", str(tmp_path / "nospecs.py"), "--input", "N,2", "-o", str(tmp_path / "x.onnx"))
    assert status == 0, err


def test_the_example_config_trains_the_digits_mlp(capsys):
    require("sklearn")
    status, out, err = kiln_in_process(capsys, "train", os.path.join(REPO, "examples", "mlp_digits.toml"))
    assert status == 0, err
    accuracy = float(out.split("val_accuracy ")[1].split()[0])
    assert accuracy > 0.9
