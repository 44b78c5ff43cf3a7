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


def test_dropping_ops_together_leaves_the_use_lists_of_dropping_them_one_by_one():
    """``drop_all_operands`` (DCE's and CSE's bulk erase, linear in a value's readers) against ``Op.drop_operands``."""
    from kiln.compiler.ir.core import clone_graph, drop_all_operands

    graph = compile_time_chain_graph()
    copy = clone_graph(graph)
    picks = lambda g: [op for index, op in enumerate(g.ops) if index % 3 == 0 and op.operands]  # noqa: E731
    one_by_one, together = picks(graph), picks(copy)
    for op in one_by_one:
        op.drop_operands()
    drop_all_operands(together)
    position = {id(op): index for index, op in enumerate(graph.ops)}
    position.update({id(op): index for index, op in enumerate(copy.ops)})
    uses = lambda g: [[(position[id(op)], slot) for op, slot in value.uses] for value in g.values()]  # noqa: E731
    assert uses(copy) == uses(graph) and any(uses(graph))
    assert together and all(not op.operands for op in together)


def compile_time_chain_graph():
    """The step graph of a 3-step chain, before the passes (values read many times: the cell's weights)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import compile_time
    finally:
        sys.path.remove(str(BENCHMARKS))
    from kiln.runtime.step_graph import build_step_graph
    from kiln.runtime.train_step import batch_specs

    model, step, arrays = compile_time.chain_step(3)
    return build_step_graph(model, step.loss_fn, step.optimizer, batch_specs(arrays), step.options).graph


def test_names_of_values_sharing_a_hint_are_those_of_the_plain_search():
    """``assign_names`` resumes each hint's suffix search (linear in a hint's values, was quadratic): the names are
    still the first free ``h``, ``h_1``, ``h_2``... of the plain search, hints that look like suffixed names included."""
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Graph
    from kiln.compiler.ir.printer import assign_names
    from kiln.compiler.ir.types import DType, TensorType

    graph = Graph("g")
    x = graph.add_input(TensorType((3,), DType.f32), "h")
    b = Builder(graph)
    for hint in ["h", "h_2", "h", None, "h", "h_1", "h_4", "h", "h", "0", None, "h_5"] * 3:
        x = b.op("tensor.neg", x, name_hint=hint)

    def plain(values):
        used, names, counter = set(), [], 0
        for value in values:
            base = value.name_hint or ""
            if not base:
                while str(counter) in used:
                    counter += 1
                base = str(counter)
            name, suffix = base, 1
            while name in used:
                name, suffix = f"{base}_{suffix}", suffix + 1
            used.add(name)
            names.append(name)
        return names

    assert list(assign_names(graph).values()) == plain(list(graph.values()))
