"""``GraphModule``: a kiln Graph (an imported ONNX model, say) as a trainable Module.

```python
imported = kiln.import_onnx("model.onnx")
model = imported.module()            # initializers become Parameters, named as in the file
step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.01))
```

Calling it while tracing re-emits the graph's ops into the graph being traced,
with its parameters as that graph's inputs, so it fine-tunes, differentiates
and re-exports like any other module.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Graph, Value
from kiln.frontend.module import Module, Parameter
from kiln.frontend.op_dispatch import to_value
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext


class GraphModule(Module):
    """The graph's first inputs are the module's arguments; the rest are its parameters."""

    def __init__(self, graph: Graph, parameters: Mapping[str, np.ndarray]):
        super().__init__()
        object.__setattr__(self, "graph", graph)
        for name, array in parameters.items():
            self._parameters[name] = Parameter(np.array(array, copy=True))
        object.__setattr__(self, "argument_count", len(graph.inputs) - len(parameters))
        object.__setattr__(self, "input_names", [v.name_hint or f"input{i}" for i, v in enumerate(graph.inputs[: self.argument_count])])
        """Names for the graph inputs when this module is traced (those of the imported model)."""

    def forward(self, *arguments: Any) -> Any:
        if len(arguments) != self.argument_count:
            raise TraceError(f"this {type(self).__name__} takes {self.argument_count} inputs, got {len(arguments)}")
        context = TraceContext.current()
        mapping: dict[Value, Value] = {}
        for value, argument in zip(self.graph.inputs, arguments):
            mapping[value] = to_value(context, argument, value.type.dtype)
        for value, parameter in zip(self.graph.inputs[self.argument_count :], self._parameters.values()):
            mapping[value] = context.value_of(parameter)
        for op in self.graph.ops:
            results = context.emit(op.name, *[mapping[v] for v in op.operands], **op.attrs)
            mapping.update(zip(op.results, results if isinstance(results, tuple) else (results,)))
        outputs = tuple(Tensor(mapping[v]) for v in self.graph.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return f"@{self.graph.name}: {self.argument_count} inputs, {len(self.graph.ops)} ops, {len(self._parameters)} parameters"
