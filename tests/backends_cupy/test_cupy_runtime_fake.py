"""The CuPy backend's runtime (table, launchers, generated step function, resident state, lazy loss) on a NumPy
stand-in for CuPy (fake_cupy.py), which also evaluates the generated kernel bodies: everything but CUDA itself."""

from __future__ import annotations

import numpy as np
import pytest

import fake_cupy
import kiln
import kiln.nn.functional as F
from cupy_groups import GROUPS, LAYER_NORM_GRAD_CASES, LAYER_NORM_GRAD_TOLERANCE, assert_graph_matches_numpy, assert_group_matches_numpy, layer_norm_grad
from cupy_models import GPT_SHAPE, MODELS, comparable, step_for, step_graph
from kiln.backends.cupy import CupyBackend, kernel_plan, lower_for_cupy
from kiln.compiler.passes import chunk_causal_attention
from kiln.backends.cupy.lowering import cupy_table
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import InputError
from kiln.compiler.ir import Builder, DType, Graph, TensorType
from kiln.runtime.lazy import LazyScalar
from ops.op_table import cases, make_inputs, op_graph, reference, size_bindings


@pytest.mark.parametrize(("c", "python"), [
    ("(t2 > (float)0 ? t2 : (float)0)", "np.where(t2 > _cast_float(0), t2, _cast_float(0))"),
    ("(x1 != x1 ? x1 : (x0 < x1 ? x1 : x0))", "np.where(x1 != x1, x1, np.where(x0 < x1, x1, x0))"),
    ("(t1 != t1 ? t1 : (exp(t1) < t1 ? t1 : exp(t1)))", "np.where(t1 != t1, t1, np.where(np.exp(t1) < t1, t1, np.exp(t1)))"),
    ("(float)(t16)", "_cast_float(t16)"),
    ("max(x0, (long long)3)", "np.maximum(x0, _cast_long_long(3))"),
    ("((tanh(x0 * (double)0.5) + (double)1) * (double)0.5)", "((np.tanh(x0 * _cast_double(0.5)) + _cast_double(1)) * _cast_double(0.5))"),
])
def test_translation_of_generated_c(c, python):
    assert fake_cupy.translate(c) == python


@pytest.mark.parametrize("stem", sorted(GROUPS))
def test_fused_groups_match_numpy(fake, stem):
    assert_group_matches_numpy(stem, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("row", "case", "dtype"), cases())
def test_op_table_runs_through_the_cupy_table(fake, row, case, dtype):
    graph, _, result = op_graph(row, case, dtype)
    executable = CupyBackend().compile(graph)
    for sizes in size_bindings(case):
        arrays = make_inputs(row, case, dtype, sizes)
        (actual,) = executable(*arrays)
        assert np.asarray(actual).dtype == result.type.dtype.numpy
        np.testing.assert_allclose(actual, reference(row, case, arrays, sizes), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("descending", [False, True])
def test_argsort_sorts_on_the_device_with_cupys_argsort(fake, monkeypatch, descending):
    """tensor.argsort's re-bound kernel calls CuPy's argsort (stable, no ``kind``), ties and NaNs kept in order over
    lanes long enough for NumPy's default quicksort to reorder them."""
    calls = []
    monkeypatch.setattr(fake, "argsort", lambda a, axis=-1, **kind: calls.append(kind) or fake_cupy.argsort(a, axis, **kind))
    graph = Graph("argsort")
    graph.outputs = [Builder(graph).argsort(graph.add_input(TensorType(("N", 60), DType.f32), "x"), descending=descending)]
    x = np.random.default_rng(int(descending)).choice([np.nan, -1.0, 0.0, 2.0], (3, 60)).astype(np.float32)
    (actual,) = CupyBackend().compile(graph)(x)
    (expected,) = NumpyBackend().compile(graph)(x)
    assert calls == [{}] and np.asarray(actual).dtype == np.int64
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_matches_numpy(fake, name):
    runs = {}
    for backend in ("numpy", "cupy"):
        model, step, rng = step_for(name, backend)
        losses = [float(step(*MODELS[name][1](rng))) for _ in range(5)]
        runs[backend] = (losses, comparable({k: v.copy() for k, v in model.state_dict().items()}))
    np.testing.assert_allclose(runs["cupy"][0], runs["numpy"][0], rtol=1e-5)
    for key, value in runs["numpy"][1].items():
        np.testing.assert_allclose(runs["cupy"][1][key], value, rtol=1e-4, atol=1e-6, err_msg=key)


def test_chunked_causal_attention_trains_as_numpy(fake, monkeypatch):
    whole = lower_for_cupy(step_graph("gpt"))
    monkeypatch.setattr(chunk_causal_attention, "CAUSAL_CHUNK", 3)  # context 8: query chunks of 3, 3 and 2 rows
    chunked = lower_for_cupy(step_graph("gpt"))
    softmaxes = [sum(op.name in ("nn.softmax", "nn.masked_softmax") for op in graph.ops) for graph in (whole, chunked)]
    assert softmaxes[1] - softmaxes[0] == 2 * GPT_SHAPE["layers"]  # three per attention instead of one
    test_training_matches_numpy(fake, "gpt")


@pytest.mark.parametrize(("x_shape", "weight_shape"), LAYER_NORM_GRAD_CASES, ids=["two-rows-a-block", "two-axis-weight", "empty"])
@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_layer_norm_grad_matches_numpy(fake, x_shape, weight_shape, dtype):
    tolerance = LAYER_NORM_GRAD_TOLERANCE[dtype]
    assert_graph_matches_numpy(layer_norm_grad(x_shape, weight_shape, dtype), rtol=tolerance, atol=tolerance)


def test_loss_is_lazy_and_state_stays_resident_until_read(fake):
    model, step, rng = step_for("mlp", "cupy")
    first = next(iter(model.parameters())).data.copy()
    loss = step(*MODELS["mlp"][1](rng))
    assert isinstance(loss, LazyScalar) and not loss.ready
    executable = list(step.compiled.values())[-1].executable
    assert set(executable.resident) == set(executable.donations)
    step(*MODELS["mlp"][1](rng))  # fed RESIDENT for every donated input
    assert not np.array_equal(next(iter(model.parameters())).data, first)  # reading .data copies back
    assert executable.kernels == kernel_plan(executable.graph) and len(executable.kernels) <= 30  # W1's budget
    assert np.isfinite(float(loss)) and loss.ready


def test_the_stand_in_refuses_host_arrays_as_cupy_does(fake):
    """So the tests above would catch a kernel that builds a host array (NumPy's one_hot compares with np.arange)."""
    from kiln.compiler.ir.types import DType

    labels = fake.asarray(np.array([0, 2, 1]))
    with pytest.raises(TypeError, match="host array reached a device operation"):
        NumpyBackend.table.get("tensor.one_hot")(labels, num_classes=3, dtype=DType.f32)
    one_hot = cupy_table().get("tensor.one_hot")(labels, num_classes=3, dtype=DType.f32)
    assert isinstance(one_hot, fake.ndarray) and one_hot.get().tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def _compiled_mlp_step():
    """W1's step on the CuPy backend after one call, and its parameters then."""
    model, step, rng = step_for("mlp", "cupy")
    x, y = MODELS["mlp"][1](rng)
    step(x, y)  # compiled, parameters resident on the device
    before = {k: v.copy() for k, v in model.state_dict().items()}
    return model, step, x, before


def test_a_host_label_outside_the_classes_raises_before_the_step_runs(fake):
    model, step, x, before = _compiled_mlp_step()
    labels = np.zeros(len(x), dtype=np.int64)
    labels[5] = 10  # 10 classes: 0..9
    with pytest.raises(InputError, match=r"label 10 at \(5,\) is outside \[0, 10\)"):
        step(x, labels)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{key} changed by a step that was refused")


def test_a_device_label_outside_the_classes_raises_when_the_loss_is_read(fake):
    _, step, x, _ = _compiled_mlp_step()
    labels = np.zeros(len(x), dtype=np.int64)
    labels[3] = -2
    loss = step(x, fake.asarray(labels))  # queued: checking now would wait for the device
    with pytest.raises(InputError, match=r"label -2 at \(3,\) is outside \[0, 10\)"):
        float(loss)
    assert np.isfinite(float(step(x, fake.asarray(np.zeros(len(x), dtype=np.int64)))))  # the next step's checks are its own


def test_ignored_labels_are_not_errors_on_the_device(fake):
    kiln.manual_seed(0)
    model = MODELS["gpt"][0]()
    step = kiln.compile_train_step(model, lambda logits, y: F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-1),
                                   kiln.optim.SGD(model.parameters(), lr=0.1), backend="cupy")
    x, y = MODELS["gpt"][1](np.random.default_rng(0))
    y[:, -2:] = -1  # padding
    assert np.isfinite(float(step(x, y))) and np.isfinite(float(step(x, fake.asarray(y))))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_training_step_never_makes_the_host_wait_for_the_device(fake, name):
    """Every host read of device data inside a step (a ``bool`` of a device array, a ``float``, a download) would stall
    the GPU queue each step; the stand-in records them. Reading the loss afterwards is the one wait (then the deferred
    label checks' verdicts come down, with nothing left to wait for)."""
    _, step, rng = step_for(name, "cupy")
    step(*MODELS[name][1](rng))  # compiles, uploads the parameters
    fake_cupy.SYNCS.clear()
    loss = step(*MODELS[name][1](rng))
    assert fake_cupy.SYNCS == [], f"{name}: the step read device data on the host: {fake_cupy.SYNCS}"
    assert np.isfinite(float(loss)) and set(fake_cupy.SYNCS) == {"get"}


def test_the_stand_in_records_host_reads_of_device_data(fake):
    x = fake.asarray(np.array([1.0, -2.0]))
    fake_cupy.SYNCS.clear()
    total = x.sum()  # stays on the device, 0-d
    assert isinstance(total, fake.ndarray) and fake_cupy.SYNCS == []
    assert float(total) == -1.0 and bool((x > 0).any()) and fake_cupy.SYNCS == ["__float__", "__bool__"]


def test_the_stand_in_refuses_an_array_of_another_dtype_as_cupy_does(fake):
    """CuPy requires an array given for a typed parameter to have exactly its dtype (scalars are cast) and at least one
    array argument; the training and op-table tests above run every generated kernel under those rules."""
    kernel = fake.ElementwiseKernel("float32 x0", "float32 y0", "y0 = x0;", "kiln_copy")
    with pytest.raises(TypeError, match="Type is mismatched"):
        kernel(fake.asarray(np.zeros(3, np.float64)))
    with pytest.raises(TypeError, match="Type is mismatched"):
        kernel(fake.asarray(np.float64(2.0)))  # a 0-d array is an array
    with pytest.raises(ValueError, match="Loop size is undecided"):
        kernel(np.float64(2.0))  # no array: CuPy cannot size the loop
    add = fake.ElementwiseKernel("float32 x0, float32 x1", "float32 y0", "y0 = x0 + x1;", "kiln_add")
    assert add(fake.asarray(np.ones(2, np.float32)), np.float64(2.0)).dtype == np.float32  # a scalar is cast


def test_the_step_drops_each_value_after_its_last_use(fake):
    """Every variable the generated step defines is deleted once, right after the op that last reads it (or at once
    if nothing does), except the graph's outputs; the step still trains as NumPy (the parity tests)."""
    from kiln.backends.cupy.executable import dying_after

    graph = lower_for_cupy(step_graph("gpt"))
    dying = dying_after(graph)
    dropped = [value for values in dying for value in values]
    assert len(dropped) == len(set(dropped)) and not set(dropped) & set(graph.outputs)
    for index, values in enumerate(dying):
        for value in values:
            readers = [i for i, op in enumerate(graph.ops) if value in op.operands]
            assert max(readers, default=graph.ops.index(value.producer) if value.producer else -1) == index


def test_a_step_holds_less_memory_than_all_its_intermediates(fake, monkeypatch):
    """Measured on the stand-in (its device arrays are NumPy's, which tracemalloc sees): the peak of a training step
    of the tiny GPT with values dropped after their last use, against the same step keeping every one to the end."""
    import tracemalloc

    from kiln.backends.cupy import executable

    peaks = {}
    for mode in ("drop", "keep"):
        if mode == "keep":
            monkeypatch.setattr(executable, "dying_after", lambda graph: [[] for _ in graph.ops])
        _, step, rng = step_for("gpt", "cupy")
        batch = MODELS["gpt"][1](rng)
        float(step(*batch))
        tracemalloc.start()
        float(step(*batch))
        peaks[mode] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["drop"] < 0.8 * peaks["keep"], peaks
