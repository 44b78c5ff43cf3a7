"""``kiln.autograd.grad`` on eager tensors: the gradients of outputs with respect to chosen tensors, as PyTorch's.

```python
x = kiln.tensor(batch)                                   # any eager tensor: a batch, an activation, a parameter
(dx,) = kiln.autograd.grad(model(x).sum(), x)            # a new tensor; no .grad is touched
(g,) = kiln.autograd.grad(critic(mix).sum(), mix, create_graph=True)
penalty = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()   # WGAN-GP: g has a chain, so
penalty.backward()                                       # this differentiates through the gradient
```

The outputs' op chain is rebuilt as a graph and differentiated by the
autodiff pass, as ``loss.backward()`` does (``runtime/eager_backward.py``,
whose compiled backwards this shares). With ``create_graph=True`` the
gradient ops are not compiled but replayed eagerly, one by one, on the
chain's own values, so the gradients they give carry a chain back to the
forward's tensors and parameters: a later ``backward()`` or ``grad()``
differentiates through them (second order, by the autodiff pass's own rules).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.core import Graph, Value
from kiln.frontend.anomaly_mode import check_gradient, is_anomaly_check_nan_enabled, is_anomaly_enabled
from kiln.frontend.eager_values import eager_leaf, eager_value
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.trace import TraceContext, located_error
from kiln.runtime.compiled_double_backward import differentiable_residuals
from kiln.runtime.eager_backward import EagerChain, gradients, seed_array
from kiln.runtime.eager_hooks import run_hooks
from kiln.runtime.eager_retained_grads import fill_retained, retained_between


def eager_grad(outputs: Sequence[Any], inputs: Sequence[Any], seeds: Sequence[Any], create_graph: bool) -> list[Any]:
    """One gradient per input (None where no output depends on it): ``sum_k seeds[k]^T d outputs[k] / d input``.

    ``outputs`` and ``inputs`` are eager tensors (an input may be a ``Parameter``: every read of it counts);
    ``seeds`` are arrays, tensors or None (a scalar output's 1)."""
    parameters = {id(p): p for p in inputs if isinstance(p, ArrayLeaf)}
    targets = [t.value for t in inputs if not isinstance(t, ArrayLeaf)]
    if create_graph:
        differentiable_residuals([o.value for o in outputs], "kiln.autograd.grad(create_graph=True)")
    retained = retained_between([o.value for o in outputs], inputs)  # their .grad is filled too, as torch's
    chain = EagerChain([o.value for o in outputs], set(parameters), _unique([*targets, *[v for _, v in retained]]))
    seeds = [_checked_seed(seed, output, index) for index, (seed, output) in enumerate(zip(seeds, outputs))]
    grads = replayed(chain, seeds) if create_graph else [_leaf(g) for g in gradients(chain, [_array(s) for s in seeds])]
    by_parameter: dict[int, Any] = {}
    for eager_input, grad in zip([i for i in chain.inputs if i.trained is not None], grads):
        previous = by_parameter.get(id(eager_input.trained))
        by_parameter[id(eager_input.trained)] = grad if previous is None else previous + grad
    by_target = iter(grads[len(grads) - sum(t is not None for t in chain.targets):])
    targeted = {id(t): next(by_target) for t in chain.targets if t is not None}
    fill_retained(retained, [targeted.get(id(value)) for _, value in retained], create_graph)
    return [by_parameter.get(id(i)) if isinstance(i, ArrayLeaf) else targeted.get(id(i.value)) for i in inputs]


def _unique(values: list[Value]) -> list[Value]:
    """``values`` without repeats (a retained tensor that is an input too is differentiated once)."""
    return list({id(value): value for value in values}.values())


def _checked_seed(seed: Any, output: Any, index: int) -> Any:
    """``seed`` as given if it is an eager tensor of the output's type (``create_graph`` keeps its chain; a leaf that
    requires grad, ``kiln.tensor(g, requires_grad=True)``, as a read of it), else as an array of the output's dtype."""
    value = eager_value(seed)
    if value is None and isinstance(seed, ArrayLeaf) and seed.requires_grad:
        from kiln.frontend.tensor import Tensor

        value = TraceContext.current().value_of(seed)  # a read of the leaf: create_graph's result reaches its .grad
        seed = Tensor(value)
    if value is not None and value.type == output.value.type:
        return seed
    return seed_array(output.value, seed, f"kiln.autograd.grad: outputs[{index}]", f"grad_outputs[{index}]")


def _array(seed: Any) -> np.ndarray | None:
    return None if seed is None else np.asarray(seed)


def _leaf(array: np.ndarray) -> Any:
    """A new eager tensor holding a copy of ``array`` (the compiled backward may reuse its buffers), with no chain."""
    return eager_leaf(np.array(array))


def replayed(chain: EagerChain, seeds: Sequence[Any]) -> list[Any]:
    """The gradients computed by running the backward graph's new ops eagerly on the chain's values, so they keep a
    chain: ops copied from the forward stand for the eager values they copy; the rest run now, and a hooked value's
    complete cotangent goes through its ``register_hook`` hooks (``runtime/eager_hooks.py``) as it is made."""
    from kiln.frontend.tensor import Tensor

    graph = chain.replay_graph([seed is not None for seed in seeds])
    values: dict[int, Value] = {id(copy): source for copy, source in _seed_inputs(graph, chain, seeds)}
    values.update(chain.originals)
    context = TraceContext.current()
    checked = is_anomaly_enabled() and is_anomaly_check_nan_enabled()
    for op in graph.ops:
        if all(id(result) in values for result in op.results):
            continue
        made = context.emit(op.name, *[values[id(operand)] for operand in op.operands], **op.attrs)
        if checked:
            check_gradient(op.location, op.name, made if isinstance(made, tuple) else (made,))
        for result, value in zip(op.results, made if isinstance(made, tuple) else (made,)):
            hooked = chain.hook_points.get(id(result))
            values[id(result)] = value if hooked is None else run_hooks(hooked, Tensor(value)).value
    return [Tensor(values[id(output)]) for output in graph.outputs]


def _seed_inputs(graph: Graph, chain: EagerChain, seeds: Sequence[Any]) -> list[tuple[Value, Value]]:
    """The graph's seed inputs (after the chain's) paired with the eager values that feed them."""
    given = [seed for seed in seeds if seed is not None]
    return list(zip(graph.inputs[len(chain.inputs):], [_seed_value(seed) for seed in given]))


def _seed_value(seed: Any) -> Value:
    value = eager_value(seed)
    return value if value is not None else _leaf(np.asarray(seed)).value


def check_eager(tensors: Sequence[Any], role: str) -> None:
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, ArrayLeaf) and eager_value(tensor) is None:
            raise located_error(f"kiln.autograd.grad: {role}[{index}] is {type(tensor).__name__}, not an eager tensor; "
                                "pass the tensors the computation made (or a kiln.nn.Parameter)")


__all__ = ["check_eager", "eager_grad", "replayed"]
