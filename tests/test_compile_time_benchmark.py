"""benchmarks/compile_time.py at a tiny size: ``--quick`` prints its table (W1 and a 3-step LSTMCell chain) and
``--dump`` writes each row's IR after the passes and its generated source; the chain's graph grows by the same ops
per step (what its seconds per op rely on). No timing is checked."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_quick_run_prints_the_table_and_dumps_ir_and_source(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compile_time.py"), "--quick", "--passes", "--dump", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("graph"))
    assert lines[header].split()[:3] == ["graph", "ops", "lowered"]
    rows = {line.split()[0]: line.split() for line in lines[header + 1 : header + 3]}
    assert sorted(rows) == ["W1", "chain3"]
    for fields in rows.values():
        assert int(fields[1]) > 0 and int(fields[2]) > 0 and all(float(field) >= 0 for field in fields[3:])
    assert any(line.startswith("chain3: canonicalize ") for line in lines)
    for name in rows:
        ir, source = (tmp_path / f"{name}.ir").read_text(), (tmp_path / f"{name}.py").read_text()
        assert ir.startswith("func @") and "return " in ir
        assert "def " in source and "return " in source


def test_the_chains_graph_grows_linearly_with_its_steps():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import compile_time
    finally:
        sys.path.remove(str(BENCHMARKS))
    ops = [compile_time.compile_row(f"chain{n}", *compile_time.chain_step(n)).ops for n in (2, 3, 4)]
    assert ops[0] < ops[1] < ops[2] and ops[2] - ops[1] == ops[1] - ops[0], ops
