"""The data-parallel and pipeline-split passes on the IR, and the comm ops' runtime, in one process (no MPI)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.passes import PassManager
from kiln.compiler.passes.pipeline_split import balanced_starts
from kiln.backends.numpy import NumpyBackend
from kiln.frontend.trace import TensorSpec
from kiln.runtime.step_graph import GradientOptions, build_step_graph

from dist_models import SIZES, dataset, make_conv_bn, make_model, make_optimizer, sgd, train_single

SPECS = [TensorSpec(("N", SIZES[0]), "float32"), TensorSpec(("N",), "int64")]
PARAMETERS = [f"fc{i}.{kind}" for i in range(1, 5) for kind in ("weight", "bias")]


def _step_graph(pipeline: str, accumulate: int = 1, optimizer: str = "adam"):
    model = make_model()
    step_graph = build_step_graph(model, F.cross_entropy, make_optimizer(optimizer, model), SPECS, GradientOptions(accumulate))
    PassManager(pipeline, verify_each=True).run(step_graph.graph)
    return step_graph.graph


def _count(graph, name: str) -> int:
    return sum(op.name == name for op in graph.ops)


def test_data_parallel_fuses_gradients_into_buckets_before_the_update():
    graph = _step_graph("data-parallel{world-size=2},canonicalize,cse,dce")
    text = print_graph(graph)
    assert _count(graph, "comm.allreduce") == 1  # ~10 KiB of gradients and the loss: one 25 MiB bucket
    assert 'op = "mean", world_size = 2' in text and "%fc1.weight.grad.mean" in text
    first_update = next(i for i, op in enumerate(graph.ops) if op.name.startswith("optim."))
    assert max(i for i, op in enumerate(graph.ops) if op.name == "comm.allreduce") < first_update
    assert print_graph(parse(text)) == text  # the comm ops print and parse back


def test_data_parallel_bucket_size_sets_the_number_of_allreduces():
    assert _count(_step_graph("data-parallel{world-size=2 bucket-bytes=1}"), "comm.allreduce") == 9  # each gradient, the loss
    assert _count(_step_graph("data-parallel{world-size=2 bucket-bytes=1 average-loss=false}"), "comm.allreduce") == 8
    assert _count(_step_graph("data-parallel{world-size=1}"), "comm.allreduce") == 0


def test_data_parallel_without_recorded_gradients_uses_the_update_operands():
    text = print_graph(_step_graph("canonicalize,cse,dce", optimizer="sgd"))
    graph = parse(text)  # a parsed graph carries no gradient record
    PassManager("data-parallel{world-size=4},dce", verify_each=True).run(graph)
    assert _count(graph, "comm.allreduce") == 1 and "world_size = 4" in print_graph(graph)


IMAGE_SPECS = [TensorSpec(("N", 1, 4, 4), "float64"), TensorSpec(("N",), "int64")]


def _conv_bn_graph(pipeline: str, data_parallel_ranks: int = 1):
    model = make_conv_bn()
    step_graph = build_step_graph(model, F.cross_entropy, sgd(model), IMAGE_SPECS, GradientOptions(data_parallel_ranks=data_parallel_ranks))
    PassManager(pipeline, verify_each=True).run(step_graph.graph)
    return step_graph.graph


def test_batch_norm_traced_for_data_parallel_reduces_its_statistics_over_the_ranks():
    graph = _conv_bn_graph("data-parallel{world-size=2},canonicalize,cse,dce", data_parallel_ranks=2)
    text = print_graph(graph)
    assert _count(graph, "nn.batch_norm") == 0 and _count(graph, "comm.replicate") == 4  # 2 layers x (sums + count, squares)
    sums = [op for op in graph.ops if op.name == "comm.allreduce" and op.attrs["op"] == "sum"]
    assert len(sums) == 8  # forward: 2 per layer; backward: replicate's VJP sums the cotangents, 2 per layer
    assert '%bn1.batch_totals = "comm.allreduce"' in text and "tensor<5xf64>" in text  # 4 channel sums and the count
    assert print_graph(parse(text)) == text


def test_data_parallel_refuses_batch_norm_with_one_shards_statistics():
    with pytest.raises(KilnError, match=r"nn.batch_norm \(op #\d+ in @train_step from .*\) normalizes with the statistics of this rank's shard"):
        _conv_bn_graph("data-parallel{world-size=2}")
    graph = _conv_bn_graph("data-parallel{world-size=2 local-batch-norm=true}")  # per-rank statistics, asked for
    assert _count(graph, "nn.batch_norm") == 2 and _count(graph, "comm.allreduce") == 1


def test_data_parallel_wrapper_traces_batch_norm_over_the_ranks():
    dist.use(LoopbackComm())
    try:
        model = make_conv_bn()
        step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, sgd(model)))
        graph = step.compile(*IMAGE_SPECS).graph
    finally:
        dist.shutdown()
    assert step.data_parallel_ranks == 2 and _count(graph, "nn.batch_norm") == 0 and _count(graph, "comm.replicate") == 4


@pytest.mark.parametrize("rank, mine", [(0, PARAMETERS[:4]), (1, PARAMETERS[4:])])
def test_pipeline_split_keeps_only_the_stage_of_the_rank(rank, mine):
    graph = _step_graph(f"pipeline-split{{stages=2 rank={rank}}},canonicalize,cse,dce", accumulate=4)
    inputs = {value.name_hint for value in graph.inputs}
    assert {name for name in PARAMETERS if name in inputs} == set(mine)
    assert _count(graph, "optim.adam_update") == 4
    assert _count(graph, "comm.send") == _count(graph, "comm.recv") == 4  # 4 micro-batches: activations one way, gradients back
    peers = {op.attrs["peer"] for op in graph.ops if op.name.startswith("comm.")}
    assert peers == {1 - rank}
    assert ("nn.cross_entropy" in print_graph(graph)) == (rank == 1)  # the loss lives on the last stage


def test_pipeline_split_at_user_cut_points():
    graph = _step_graph("pipeline-split{stages=2 rank=0 cuts=fc2}")
    assert {v.name_hint for v in graph.inputs} & set(PARAMETERS) == {"fc1.weight", "fc1.bias"}
    with pytest.raises(KilnError, match="cuts=fc9 must name 1 layer.*fc1, fc2, fc3, fc4"):
        _step_graph("pipeline-split{stages=2 rank=0 cuts=fc9}")


def test_balanced_split_minimizes_the_largest_stage():
    assert balanced_starts([1, 1, 1, 1], 2) == [0, 2]
    assert balanced_starts([10, 1, 1, 1, 1], 2) == [0, 1]
    assert balanced_starts([1, 2, 3, 4, 5], 3) == [0, 3, 4]


class LoopbackComm:
    """Two ranks that always hold the same data: allreduce-mean is the identity. Counts calls."""

    rank, size = 0, 2

    def __init__(self) -> None:
        self.calls: list[str] = []

    def allreduce(self, x, op):
        self.calls.append("allreduce")
        return np.array(x)

    def broadcast(self, x, root):
        self.calls.append("broadcast")
        return np.array(x)

    def barrier(self) -> None:
        self.calls.append("barrier")


def test_data_parallel_step_runs_the_comm_kernels_through_the_current_communicator(tmp_path):
    comm = dist.use(LoopbackComm())
    try:
        model = make_model()
        step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model)))
        x, y = dataset()
        for k in range(3):
            step(x[32 * k : 32 * (k + 1)], y[32 * k : 32 * (k + 1)])
        step.save(str(tmp_path / "run.npz"))
    finally:
        dist.shutdown()
    reference = train_single("adam", steps=3)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-6)
    assert comm.calls.count("allreduce") == 3  # one bucket a step
    assert comm.calls.count("broadcast") == 8 + 1  # parameters at start, then whether rank 0 wrote the checkpoint
    assert (tmp_path / "run.npz").exists()


def test_comm_ops_without_distributed_mode_say_what_to_do():
    model = make_model()
    step = kiln.compile_train_step(model, F.cross_entropy, make_optimizer("sgd", model), pipeline="data-parallel{world-size=2},dce")
    x, y = dataset()
    with pytest.raises(KilnError, match=r"call kiln.distributed.init\(\) first"):
        step(x[:8], y[:8])


def test_world_size_mismatch_is_reported():
    dist.use(LoopbackComm())
    try:
        with pytest.raises(KilnError, match="compiled for 4 ranks but runs on 2"):
            dist.current(world_size=4)
    finally:
        dist.shutdown()


def test_mpi4py_is_imported_only_when_distributed_mode_starts():
    code = "import sys, kiln, kiln.distributed; assert 'mpi4py' not in sys.modules, 'mpi4py imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_comm_vjps_follow_the_replicated_loss_convention():
    from kiln.compiler.autodiff import differentiate
    from kiln.compiler.ir import Builder, Graph, TensorType

    graph = Graph("tp")
    x = graph.add_input(TensorType(("N", 3), "float32"), "x")
    b = Builder(graph)
    shared = b.op("comm.replicate", x, world_size=2)
    total = b.op("comm.allreduce", b.mul(shared, shared), op="mean", world_size=2)
    (dx,) = differentiate(graph, b.reduce_sum(total), [x])
    backward = [op for op in graph.ops if op.location == "vjp of comm.replicate"]
    assert [(op.name, op.attrs["op"]) for op in backward] == [("comm.allreduce", "sum")]  # d/dx sums over the ranks
    graph.outputs = [dx]
    dist.use(LoopbackComm())  # the loopback allreduce returns its operand: dx = d(x*x)/dx / 2 ranks = x
    try:
        (value,) = NumpyBackend().compile(graph)(np.ones((2, 3), np.float32))
    finally:
        dist.shutdown()
    np.testing.assert_allclose(value, np.full((2, 3), 1.0, np.float32))


def test_pipeline_split_of_a_step_with_cycled_momentum_says_what_to_do():
    from kiln.optim import lr_scheduler

    model = make_model()
    optimizer = make_optimizer("adam", model)
    lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)  # beta1 becomes an input: the updates are written out
    step_graph = build_step_graph(model, F.cross_entropy, optimizer, SPECS)
    with pytest.raises(KilnError, match="cycle_momentum=False"):
        PassManager("pipeline-split{stages=2 rank=0}").run(step_graph.graph)
