"""An ``onnx.backend`` Backend built on the importer: runs ONNX models through kiln's NumPy backend.

This is what the official node conformance tests (``onnx.backend.test``) drive.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.backends.onnx.importer import HANDLERS, SUPPORTED_ELEMENT_TYPES, OnnxImportError, import_onnx


class KilnRep:
    """A prepared model: ``run(inputs)`` returns the outputs as a list of arrays.

    Models that feed shapes or axes as graph inputs are specialised on those inputs' values at
    the first run (integer inputs become static, as JAX's static arguments), once per distinct value.
    """

    def __init__(self, model: Any, backend: str = "numpy"):
        self.model = model
        self.backend = backend
        self.input_names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        self.specialised: dict[bytes, tuple[Any, list[str]]] = {}
        try:
            self.generic = self._compile({})
        except OnnxImportError as error:
            if "must be a constant" not in str(error) and "symbolic dims" not in str(error):
                raise
            self.generic = None

    def _compile(self, static: dict[str, np.ndarray]) -> tuple[Any, list[str]]:
        from kiln.backends import get_backend

        imported = import_onnx(self.model, trainable_initializers=False, static_inputs=static)
        return get_backend(self.backend).compile(imported.graph), imported.input_names

    def run(self, inputs: Any, **kwargs: Any) -> list[np.ndarray]:
        arrays = dict(zip(self.input_names, inputs)) if not isinstance(inputs, dict) else dict(inputs)
        arrays = {name: _as_array(value) for name, value in arrays.items()}
        executable, names = self.generic or self._specialise(arrays)
        return [np.asarray(o) for o in executable(*[arrays[name] for name in names])]

    def _specialise(self, arrays: dict[str, np.ndarray]) -> tuple[Any, list[str]]:
        """Integer inputs static first; if a float input also feeds a static slot (OneHot depth), all of them."""
        key = b"".join(name.encode() + value.tobytes() + str(value.shape).encode() for name, value in arrays.items())
        if key not in self.specialised:
            try:
                self.specialised[key] = self._compile({n: v for n, v in arrays.items() if v.dtype.kind in "iu"})
            except OnnxImportError as error:
                if "must be a constant" not in str(error):
                    raise
                self.specialised[key] = self._compile(arrays)
        return self.specialised[key]


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "SerializeToString") and hasattr(value, "data_type"):
        from onnx import numpy_helper

        return numpy_helper.to_array(value)
    return np.asarray(value)


class KilnBackend:
    """``onnx.backend.base.Backend``'s interface (prepare, run_model, is_compatible, supports_device)."""

    @classmethod
    def is_compatible(cls, model: Any, device: str = "CPU", **kwargs: Any) -> bool:
        """Every node is importable and every tensor has a dtype kiln supports."""
        graph = model.graph
        if any(node.op_type not in HANDLERS or node.domain not in ("", "ai.onnx") for node in graph.node):
            return False
        typed = list(graph.input) + list(graph.output)
        return all(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in SUPPORTED_ELEMENT_TYPES for v in typed) and all(
            init.data_type in SUPPORTED_ELEMENT_TYPES for init in graph.initializer
        )

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> KilnRep:
        return KilnRep(model)

    @classmethod
    def run_model(cls, model: Any, inputs: Sequence[Any], device: str = "CPU", **kwargs: Any) -> list[np.ndarray]:
        return cls.prepare(model, device).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


__all__ = ["KilnBackend", "KilnRep", "OnnxImportError"]
