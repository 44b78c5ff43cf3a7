"""The ``onnxruntime`` backend: a graph runs as one ONNX model in a stock InferenceSession.

Donated inputs (a training step's parameters and optimizer state, ``graph.donations``)
stay in onnxruntime between calls: outputs are bound with IO binding and kept as
OrtValues, and a caller that passes ``RESIDENT`` for a donated input gets last
call's result for it, with no host copy. The training step copies them back to
NumPy only when someone reads them.

Random draws (dropout) are extra inputs of the exported model (see export.py):
each call fills them from the seed input's value with the NumPy backend's own
kernel, so a seed gives the same masks here as on NumPy and CuPy. Callers pass
only the graph's own inputs.

A float16 or bfloat16 graph runs widened (``backends/onnx/half.py``): each op
in float32 between the same Casts as on the NumPy backend, so a half training
step gives the NumPy backend's numbers. bfloat16 arrays cross onnxruntime's
Python API as their bit patterns, and bfloat16 results are bound to host memory.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from kiln.backends.onnx.export import RandomInput, graph_to_onnx, random_inputs
from kiln.backends.onnx.half import BFLOAT16_TYPE, BFloat16Result, bfloat16_ortvalue, is_bfloat16, ortvalue_to_numpy
from kiln.compiler.errors import InputError
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.types import DType
from kiln.runtime.executable import RESIDENT, Executable, check_inputs


LOGGER = logging.getLogger("kiln")


def providers() -> list[str]:
    """CUDA first when ``onnxruntime-gpu`` provides it, else the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxRuntimeExecutable(Executable):
    """Runs the session with IO binding; results of donated pairs stay in onnxruntime as OrtValues."""

    keeps_state = True
    lazy_outputs = False
    """When set (by a training step that syncs on demand), donated results come back as OrtValues, not arrays."""

    def __init__(self, graph: Graph, model: Any, donations: dict[int, int]):
        import onnxruntime

        self.model = model
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), providers=providers())
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        LOGGER.info("onnxruntime backend: @%s runs on %s", graph.name, self.session.get_providers()[0])
        self.donations = dict(donations)
        self.resident: dict[int, Any] = {}
        """Input index -> the OrtValue the last call produced for it."""
        self.onnx_inputs = [i.name for i in self.session.get_inputs()]
        self.onnx_outputs = [o.name for o in self.session.get_outputs()]
        self.bfloat16_outputs = {o.name for o in self.session.get_outputs() if o.type == BFLOAT16_TYPE}
        """Bound to host memory even on CUDA: only there can Python read a bfloat16 result (see half.py)."""
        self.random_inputs = random_inputs(model)
        """The draws the model takes as inputs after the graph's own, filled on each call."""
        super().__init__(graph, self._run, "onnxruntime")

    def __call__(self, *arrays: Any) -> tuple[Any, ...]:
        bound = check_inputs(self.graph.name, self.input_names, self.input_types, [self._typed(i, a) for i, a in enumerate(arrays)])
        if self.random_inputs:
            arrays += tuple(draw_random_inputs(self.random_inputs, dict(zip(self.input_names, arrays)), bound))
        return self._run(*arrays)

    def _typed(self, index: int, array: Any) -> Any:
        """What input checking sees: the resident value's type stands in for ``RESIDENT``."""
        if array is RESIDENT:
            return _TypeOnly(self.resident[index])
        return array

    def _run(self, *arrays: Any) -> tuple[Any, ...]:
        binding = self.session.io_binding()
        wrapped = []  # bfloat16 inputs' OrtValues, alive until the run ends: they own no copy of the array's memory
        for index, (name, array) in enumerate(zip(self.onnx_inputs, arrays)):
            if array is RESIDENT:
                binding.bind_ortvalue_input(name, self.resident[index])
            elif is_bfloat16(array):
                wrapped.append(bfloat16_ortvalue(array))
                binding.bind_ortvalue_input(name, wrapped[-1])
            else:
                binding.bind_cpu_input(name, np.asarray(array, order="C"))  # not ascontiguousarray: it makes a 0-d array 1-d
        for name in self.onnx_outputs:
            binding.bind_output(name, "cpu" if name in self.bfloat16_outputs else self.device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        for source, target in self.donations.items():
            self.resident[source] = outputs[target]
        kept = set(self.donations.values()) if self.lazy_outputs else set()
        return tuple(self._kept(value) if index in kept else ortvalue_to_numpy(value) for index, value in enumerate(outputs))

    def _kept(self, value: Any) -> Any:
        """A donated result left in onnxruntime; a bfloat16 one wrapped so that ``numpy()`` can read it back."""
        return BFloat16Result(value) if value.data_type() == BFLOAT16_TYPE else value


def draw_random_inputs(draws: Sequence[RandomInput], feeds: dict[str, Any], bound: dict[str, int]) -> list[np.ndarray]:
    """The value of each draw input: the NumPy backend's ``tensor.random_uniform`` of its seed input, shaped by the bound dims."""
    from kiln.backends.numpy.lowering_movement import random_uniform

    values = []
    for draw in draws:
        seed = feeds[draw.seed_input]
        if seed is RESIDENT:
            raise InputError(f"input %{draw.seed_input} seeds the draw {draw.name}: pass its value, not RESIDENT")
        dtype = DType.of(draw.dtype)
        like = np.broadcast_to(np.zeros((), dtype.numpy), draw.resolved_shape(bound))  # a shape, no memory
        values.append(random_uniform(np.asarray(seed), like, dtype=dtype, stream=draw.stream))
    return values


class _TypeOnly:
    """Shape and dtype of an OrtValue, for input checking without a copy."""

    def __init__(self, value: Any):
        self.shape = tuple(value.shape())
        self.dtype = _numpy_dtype(value.data_type())


def _numpy_dtype(ort_type: str) -> np.dtype:
    names = {"tensor(float)": "f32", "tensor(double)": "f64", "tensor(int32)": "i32", "tensor(int64)": "i64", "tensor(bool)": "bool",
             "tensor(float16)": "f16", BFLOAT16_TYPE: "bf16", "tensor(uint8)": "u8", "tensor(int8)": "i8", "tensor(int16)": "i16"}
    return DType.of(names[ort_type]).numpy


def to_numpy(value: Any) -> np.ndarray:
    """A backend result as a NumPy array (OrtValues are copied to the host)."""
    if isinstance(value, np.ndarray) or not hasattr(value, "numpy"):
        return np.asarray(value)
    return ortvalue_to_numpy(value) if hasattr(value, "data_type") else value.numpy()  # an OrtValue (bfloat16 too), or another array


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def compile(self, graph: Graph) -> Executable:
        return OnnxRuntimeExecutable(graph, graph_to_onnx(graph), getattr(graph, "donations", {}))


__all__: Sequence[str] = ["OnnxRuntimeBackend", "OnnxRuntimeExecutable", "draw_random_inputs", "providers", "to_numpy"]
