"""kiln.profiler against torch.profiler: the ops recorded, their nesting, the schedule, the trace files."""

from __future__ import annotations

import gzip
import json
import warnings

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
import kiln.profiler
from kiln.runtime.profiler_recorder import RECORDING, compiled_op_name
from oracles import require_torch


def _mlp_forward(x, w, b):
    h = (x @ w + b).relu()
    h = (h @ w + b).relu()
    return h @ w + b


def _arrays():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(np.float32) for shape in ((32, 64), (64, 64), (64,))]


def _top_level(events, skip=("[memory]",)):
    return [(event.name, event.cpu_memory_usage) for event in events if event.cpu_parent is None and event.name not in skip]


def test_an_eager_mlp_records_exactly_its_ops_and_their_bytes_as_torch():
    torch = require_torch()
    arrays = _arrays()
    torch_tensors = [torch.from_numpy(array) for array in arrays]
    with torch.profiler.profile(profile_memory=True) as expected:
        _mlp_forward(*torch_tensors)
    tensors = [kiln.tensor(array) for array in arrays]
    with kiln.profiler.profile(profile_memory=True) as got:
        _mlp_forward(*tensors)
    assert _top_level(got.events()) == _top_level(expected.events())  # names, order and result bytes
    counts = {row.key: row.count for row in got.key_averages()}
    assert counts == {"aten::matmul": 3, "aten::add": 3, "aten::relu": 2}


def test_a_view_allocates_nothing_as_in_torch():
    torch = require_torch()
    array = _arrays()[0]
    torch_tensor, kiln_tensor = torch.from_numpy(array), kiln.tensor(array)
    with torch.profiler.profile(profile_memory=True) as expected:
        torch_tensor.reshape(64, 32).exp()
    with kiln.profiler.profile(profile_memory=True) as got:
        kiln_tensor.reshape(64, 32).exp()
    assert _top_level(got.events()) == _top_level(expected.events()) == [("aten::reshape", 0), ("aten::exp", 8192)]


def _check_nesting(events):
    for event in events:
        children = event.cpu_children
        assert 0 <= event.self_cpu_time_total <= event.cpu_time_total
        assert event.cpu_time_total >= sum(child.cpu_time_total for child in children)
        assert event.self_cpu_time_total == pytest.approx(event.cpu_time_total - sum(c.cpu_time_total for c in children))
        for child in children:
            assert child.cpu_parent is event
            assert event.start_ns <= child.start_ns <= child.end_ns <= event.end_ns


def test_record_function_nests_ops_and_self_time_excludes_children():
    x, w, b = map(kiln.tensor, _arrays())

    @kiln.profiler.record_function("decorated")
    def layer(h):
        return (h @ w + b).relu()

    with kiln.profiler.profile() as prof:
        with kiln.profiler.record_function("outer"):
            with kiln.profiler.record_function("inner"):
                h = layer(x)
            h = h * 2.0
    events = prof.events()
    _check_nesting(events)
    by_name = {event.name: event for event in events}
    assert [child.name for child in by_name["outer"].cpu_children] == ["inner", "aten::scalar_tensor", "aten::mul"]
    assert [child.name for child in by_name["inner"].cpu_children] == ["decorated"]
    assert [child.name for child in by_name["decorated"].cpu_children] == ["aten::matmul", "aten::add", "aten::relu"]
    averages = prof.key_averages()
    assert averages.self_cpu_time_total == pytest.approx(by_name["outer"].cpu_time_total)  # everything ran inside outer


def _model():
    kiln.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_a_compiled_call_is_one_event_holding_each_op_of_its_lowered_graph():
    x = _arrays()[0]
    compiled = kiln.compile(_model().eval())
    with kiln.no_grad():
        expected = compiled(x)
        with kiln.profiler.profile(record_shapes=True) as prof:
            got = compiled(x)
    np.testing.assert_array_equal(got, expected)  # the timed build computes the same
    executable = next(iter(compiled.variants.values())).executable
    (call,) = [event for event in prof.events() if event.cpu_parent is None]
    assert call.name == f"kiln::compiled @{executable.graph.name}" and call.input_shapes[0] == [32, 64]
    assert [child.name for child in call.cpu_children] == [compiled_op_name(op) for op in executable.graph.ops]
    assert "fused.matmul(matmul+add+relu)" in [child.name for child in call.cpu_children]
    _check_nesting(prof.events())


def test_a_profiled_training_step_updates_the_parameters_as_an_unprofiled_one():
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((16, 64)).astype(np.float32), rng.integers(0, 10, 16)) for _ in range(3)]
    models = [_model(), _model()]
    steps = [kiln.compile_train_step(m, F.cross_entropy, kiln.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)) for m in models]
    with kiln.profiler.profile() as prof:
        profiled_losses = [steps[0](x, y) for x, y in batches]
    assert profiled_losses == [steps[1](x, y) for x, y in batches]
    for profiled, plain in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_array_equal(profiled.data, plain.data)  # donated buffers updated in place by the timed build
    calls = [event for event in prof.events() if event.name.startswith("kiln::compiled")]
    graph = steps[0].compiled[next(iter(steps[0].compiled))].executable.graph
    assert len(calls) == 3 and all(len(call.cpu_children) == len(graph.ops) for call in calls)


def test_an_eager_backward_executable_is_recorded_with_its_ops():
    model = _model()
    x, y = kiln.tensor(_arrays()[0]), kiln.tensor(np.arange(32) % 10)
    F.cross_entropy(model(x), y).backward()  # a structure's first backward runs op by op; the second is compiled
    with kiln.profiler.profile() as prof:
        F.cross_entropy(model(x), y).backward()
    top_level = [event for event in prof.events() if event.cpu_parent is None]
    assert [event.name for event in top_level] == ["aten::permute", "aten::matmul", "aten::add", "aten::relu", "aten::permute",
                                                   "aten::matmul", "aten::add", "aten::cross_entropy_loss",
                                                   "kiln::compiled @eager_backward"]
    assert len(top_level[-1].cpu_children) > 0
    _check_nesting(prof.events())


SCHEDULES = [dict(wait=1, warmup=1, active=2), dict(wait=2, warmup=1, active=3, repeat=2),
             dict(wait=0, warmup=0, active=1, repeat=3, skip_first=2), dict(wait=3, warmup=2, active=2, skip_first=4, skip_first_wait=1)]


@pytest.mark.parametrize("arguments", SCHEDULES)
def test_schedule_actions_are_torchs(arguments):
    torch = require_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warmup=0 warns in both
        expected, got = torch.profiler.schedule(**arguments), kiln.profiler.schedule(**arguments)
    assert [got(step).name for step in range(40)] == [expected(step).name for step in range(40)]


def _saved_steps(profiler, arguments, inputs, steps=14, schedule=None):
    """The steps each saved trace holds, told apart by the shape of the one add each step runs."""
    saved = []

    def ready(prof):
        saved.append(sorted(e.input_shapes[0][0] - 1 for e in prof.events() if e.name == "aten::add"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profiler.profile(schedule=(schedule or profiler.schedule)(**arguments), on_trace_ready=ready,
                              record_shapes=True) as prof:
            for step in range(steps):
                inputs[step] + inputs[step]
                prof.step()
    return saved, {row.key: row.count for row in prof.key_averages()}.get("ProfilerStep*")


@pytest.mark.parametrize("arguments", SCHEDULES)
def test_stepping_saves_the_traces_torch_saves(arguments):
    torch = require_torch()
    expected = _saved_steps(torch.profiler, arguments, [torch.ones(step + 1) for step in range(14)])
    got = _saved_steps(kiln.profiler, arguments, [kiln.ones(step + 1) for step in range(14)])
    assert got == expected and got[0]
    inputs = [kiln.ones(step + 1) for step in range(14)]
    assert _saved_steps(kiln.profiler, arguments, inputs, schedule=torch.profiler.schedule) == expected  # torch's schedule


def test_the_chrome_trace_parses_and_holds_every_event(tmp_path):
    x, w, b = map(kiln.tensor, _arrays())
    with kiln.profiler.profile(record_shapes=True) as prof:
        with kiln.profiler.record_function("forward"):
            _mlp_forward(x, w, b)
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())["traceEvents"]
    assert [item["name"] for item in trace] == [event.name for event in prof.events()]
    assert all(item["ph"] == "X" and item["dur"] >= 0 for item in trace)
    assert trace[1]["args"]["Input Dims"] == [[32, 64], [64, 64]]
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]  # the temporary file was renamed
    prof.export_chrome_trace(tmp_path / "trace.json.gz")  # gzipped, as torch's, by the name
    with gzip.open(tmp_path / "trace.json.gz", "rt") as file:
        assert json.load(file)["traceEvents"] == trace


def test_tensorboard_trace_handler_writes_one_trace_per_saved_cycle(tmp_path):
    handler = kiln.profiler.tensorboard_trace_handler(str(tmp_path), worker_name="w")
    with kiln.profiler.profile(schedule=kiln.profiler.schedule(wait=0, warmup=1, active=1, repeat=2),
                               on_trace_ready=handler) as prof:
        for _ in range(5):
            kiln.ones(2) + 1.0
            prof.step()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and all(f.name.startswith("w.") and f.name.endswith(".pt.trace.json") for f in files)
    assert all(any(e["name"] == "aten::add" for e in json.loads(f.read_text())["traceEvents"]) for f in files)


def test_no_profiler_records_nothing_and_builds_no_timed_code():
    compiled = kiln.compile(_model().eval())
    x = _arrays()[0]
    with kiln.profiler.profile() as prof:
        pass
    assert RECORDING.recorder is None
    with kiln.no_grad():
        compiled(x)
    kiln.ones(3) + kiln.ones(3)
    assert len(prof.events()) == 0
    assert next(iter(compiled.variants.values())).executable.timed is None


def _tables(profiler, tensors, **options):
    with profiler.profile(record_shapes=True, profile_memory=True) as prof:
        _mlp_forward(*tensors)
    averages = prof.key_averages(**options)
    return averages.table(sort_by="count"), averages.table(sort_by="count", row_limit=2)


def _column_widths(table):
    return [len(run) for run in table.splitlines()[0].split("  ")]


@pytest.mark.parametrize("options", [{}, {"group_by_input_shape": True}])
def test_the_table_is_laid_out_as_torchs(options):
    torch = require_torch()
    arrays = _arrays()
    expected, _ = _tables(torch.profiler, [torch.from_numpy(array) for array in arrays], **options)
    got, limited = _tables(kiln.profiler, [kiln.tensor(array) for array in arrays], **options)
    assert got.splitlines()[1].split() == expected.splitlines()[1].split()  # the same column titles
    assert _column_widths(got)[1:] == _column_widths(expected)[1:]  # the same widths but the name's (other names)
    rows = {line.split()[0]: line for line in got.splitlines()[3:-2]}
    torch_rows = {line.split()[0]: line for line in expected.splitlines()[3:-2]}
    for name in ("aten::add", "aten::relu"):
        assert rows[name].split()[6:8] == torch_rows[name].split()[6:8]  # CPU Mem: 24.00 KB, or 8.00 KB per shape
    assert rows["aten::relu"].split()[-1] == torch_rows["aten::relu"].split()[-1]  # the count, or the shapes [[32, 64]]
    # (torch's aten::add lists its scalar alpha as a third shape, [], which kiln's add has not)
    assert got.splitlines()[-1].startswith("Self CPU time total: ") and got.splitlines()[3].endswith("  ")
    assert [line.split()[0] for line in limited.splitlines()[3:5]] == ["aten::matmul", "aten::add"]  # by count, 2
    assert limited.splitlines()[5].startswith("---")


def test_errors_say_what_to_do():
    with pytest.warns(UserWarning, match="CUDA is unavailable"):
        kiln.profiler.profile(activities=[kiln.profiler.ProfilerActivity.CPU, kiln.profiler.ProfilerActivity.CUDA])
    with pytest.raises(TypeError, match="ProfilerActivity.CPU"):
        kiln.profiler.profile(activities=["cpu"])
    with kiln.profiler.profile() as prof:
        kiln.ones(2) + 1.0
    with pytest.raises(ValueError, match="sort by one of"):
        prof.key_averages().table(sort_by="cuda_time_total")
    with pytest.raises(ValueError, match="record_shapes=True"):
        prof.key_averages(group_by_input_shape=True)
    with pytest.raises(ValueError, match="active=0"):
        kiln.profiler.schedule(wait=1, warmup=1, active=0)
    with kiln.profiler.profile():
        with pytest.raises(RuntimeError, match="already recording"):
            kiln.profiler.profile().start()


def test_start_stop_threads_and_stack():
    import threading

    a = kiln.ones(4)
    with kiln.profiler.record_function("nobody listens"):
        a + a  # no profiler: nothing to record, no error
    prof = kiln.profiler.profile(with_stack=True)
    prof.start()
    a * a  # this line is the op's stack
    worker = threading.Thread(target=lambda: a - a)
    worker.start()
    worker.join()
    prof.stop()
    a / a  # after stop: not recorded
    events = prof.events()
    assert [event.name for event in events] == ["aten::mul", "aten::sub"]
    assert events[0].thread == threading.get_ident() != events[1].thread and events[1].cpu_parent is None
    assert events[0].stack and "test_profiler.py" in events[0].stack[0]
