"""The ``onnxruntime`` backend: a graph runs as one ONNX model in a stock InferenceSession."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.backends.onnx.export import graph_to_onnx
from kiln.compiler.ir.core import Graph
from kiln.runtime.executable import Executable


def providers() -> list[str]:
    """CUDA first when ``onnxruntime-gpu`` provides it, else the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def compile(self, graph: Graph) -> Executable:
        import onnxruntime

        model = graph_to_onnx(graph)
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=providers())
        input_names = [i.name for i in session.get_inputs()]

        def run(*arrays: Any) -> tuple[Any, ...]:
            feeds = {name: np.asarray(array) for name, array in zip(input_names, arrays)}
            return tuple(session.run(None, feeds))

        executable = Executable(graph, run, self.name)
        executable.model = model
        executable.session = session
        return executable
