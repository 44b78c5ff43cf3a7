"""PyTorch's autograd graph, read off kiln's eager op chain: ``grad_fn`` nodes, edges, node hooks, versions.

```python
y = model(x).sum()
type(y.grad_fn).__name__                    # 'SumBackward0', as torch's
y.grad_fn.next_functions                    # ((<AddmmBackward0 object at ...>, 0),) ... down to AccumulateGrad leaves
y.grad_fn.register_prehook(lambda gO: ...)  # torch.autograd.graph.Node's hooks, for eager backward()
edge = kiln.autograd.graph.get_gradient_edge(h)
x._version                                  # in-place writes so far (frontend/version_counter.py)
```

kiln's autograd graph is its eager op chain (``runtime/eager.py``): each result links to the op that made it, the op
to its operands. A ``Node`` is a view of one op (or of a few, ``_PATTERNS``: ``F.linear``'s matmul and add are
torch's one ``AddmmBackward0``, ``x[1]``'s slice and squeeze its ``SelectBackward0``), named by ``_NAMES`` after the
torch node its op maps to (a fallback ``<Op>Backward0`` otherwise; ``op_name`` keeps kiln's IR name). Its
``next_functions`` has one edge per floating operand: the producer's node and the output index, an
``AccumulateGrad`` (whose ``variable`` is the parameter or marked tensor) for a leaf that requires grad, and
``(None, 0)`` for an operand that does not; integer operands (indices, masks) are no edges, as in torch. Nodes are
cached per result value, so a walk (torchviz's) sees one object per op and ends at the leaves.

Node hooks reuse tensor hooks (``runtime/eager_hooks.py``): a pre-hook watches the node's output values, a post-hook
puts an identity alias (``tensor.broadcast_to``) in each differentiable operand slot of the node's ops, whose
complete cotangent is exactly the node's ``grad_inputs`` entry. Both run in eager ``backward()``/``autograd.grad``
only (a compiled step's gradients are one graph).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from kiln.compiler.ir.core import Op, Value
from kiln.frontend.eager_values import GRAD_TENSORS, PARAMETERS, eager_value, trained_parameter

_KNOWN: "weakref.WeakKeyDictionary[Value, bool]" = weakref.WeakKeyDictionary()
"""Whether an op result requires grad, once found: fixed when the op ran, as PyTorch's."""


def requires_grad_of(value: Value) -> bool:
    """Whether eager ``value`` requires grad (a leaf: marked or a trained parameter's read; a result: an operand
    does, not past a ``stop_gradient``); results are remembered, so walking a whole graph stays linear."""
    if not value.type.dtype.is_float:
        return False
    if value.producer is None:
        return _leaf_requires_grad(value)
    stack = [value]
    while stack:
        current = stack[-1]
        if current in _KNOWN:
            stack.pop()
            continue
        op = current.producer
        pending = [v for v in op.operands if v.producer is not None and v.type.dtype.is_float and v not in _KNOWN]
        if pending and op.name != "tensor.stop_gradient":
            stack.extend(pending)
            continue
        _KNOWN[current] = op.name != "tensor.stop_gradient" and any(_operand_requires_grad(v) for v in op.operands)
        stack.pop()
    return _KNOWN[value]


def _operand_requires_grad(value: Value) -> bool:
    if not value.type.dtype.is_float:
        return False
    return _leaf_requires_grad(value) if value.producer is None else _KNOWN.get(value, False)


def _leaf_requires_grad(value: Value) -> bool:
    return value in GRAD_TENSORS or trained_parameter(value) is not None


class Node:
    """``torch.autograd.graph.Node``: the type of every ``grad_fn`` and of ``AccumulateGrad``."""

    def name(self) -> str:
        return type(self).__name__

    @property
    def next_functions(self) -> tuple[tuple["Node | None", int], ...]:
        return ()

    @property
    def metadata(self) -> dict[str, Any]:
        """A dict of the user's, kept with the node (torch's ``Node.metadata``)."""
        return self.__dict__.setdefault("_metadata", {})

    def register_hook(self, fn: Callable[..., Any]) -> Any:
        raise NotImplementedError

    def register_prehook(self, fn: Callable[..., Any]) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object at {hex(id(self))}>"


class AccumulateGrad(Node):
    """The node of a leaf that requires grad: ``variable`` is the parameter or the tensor marked by
    ``requires_grad_()``."""

    def __init__(self, variable: Any):
        self.variable = variable

    def name(self) -> str:
        return "torch::autograd::AccumulateGrad"

    def register_prehook(self, fn: Callable[..., Any]) -> Any:
        """``fn((grad,))`` on the leaf's gradient before it is accumulated; a tuple it returns replaces it (the
        leaf's own ``register_hook``)."""
        return self.variable.register_hook(lambda grad: _single(fn((grad,)), 0))

    def register_hook(self, fn: Callable[..., Any]) -> Any:
        """``fn((), (grad,))`` after the gradient is accumulated (torch's post-hook of ``AccumulateGrad``), through the
        parameter's ``register_post_accumulate_grad_hook``: ``grad`` is then the accumulated ``.grad``."""
        register = getattr(self.variable, "register_post_accumulate_grad_hook", None)
        if register is None:
            from kiln.frontend.trace import located_error

            raise located_error("AccumulateGrad.register_hook: kiln calls post-accumulate hooks of parameters (and "
                                "tensors made with requires_grad=True) only; register a pre-hook instead")
        return register(lambda variable: fn((), (variable.grad,)))


class OpNode(Node):
    """The node of one kiln op (or of a ``_PATTERNS`` group of them): its edges are ``(op, operand index)`` slots."""

    def __init__(self, op: Op, edges: list[Any]):
        self._op = op
        self._edges = edges
        self._outputs: dict[int, "weakref.ref[Value]"] = {}
        self._next: tuple[tuple[Node | None, int], ...] | None = None

    @property
    def op_name(self) -> str:
        """kiln's IR op name (``tensor.reduce_sum``): what ``name()`` gave before nodes were torch's."""
        return self._op.name

    @property
    def next_functions(self) -> tuple[tuple[Node | None, int], ...]:
        if self._next is None:
            self._next = tuple((edge, 0) if isinstance(edge, Node) else edge_of(_unaliased(edge[0].operands[edge[1]]))
                               for edge in self._edges)
        return self._next

    def register_prehook(self, fn: Callable[..., Any]) -> Any:
        """``fn(grad_outputs)`` before the node's backward; a tuple it returns replaces ``grad_outputs``."""
        return _Gathered(self._output_values(), fn).register()

    def register_hook(self, fn: Callable[..., Any]) -> Any:
        """``fn(grad_inputs, grad_outputs)`` after the node's backward, ``grad_inputs`` one per edge (None where no
        gradient flows); a tuple it returns replaces ``grad_inputs``."""
        from kiln.runtime.eager_hooks import register_tensor_hook

        if any(isinstance(edge, Node) for edge in self._edges):
            from kiln.frontend.trace import located_error

            raise located_error(f"{self.name()}.register_hook: kiln computes this node and the next one as one op, so "
                                "it has no gradients for the node's inputs; register the hook on the tensor instead")
        outputs = self._output_values()
        seen: dict[int, Any] = {}
        handles = [register_tensor_hook(v, lambda g, i=i: seen.__setitem__(i, g)) for i, v in enumerate(outputs)]
        slots = [(position, _aliased(op, index)) for position, (op, index) in enumerate(self._edges)
                 if requires_grad_of(_unaliased(op.operands[index]))]
        width = len(self._edges)

        def fire(grads: tuple[Any, ...]) -> Any:
            grad_inputs = [None] * width
            for (position, _), grad in zip(slots, grads):
                grad_inputs[position] = grad
            grad_outputs = tuple(seen.get(i) for i in range(len(outputs)))
            seen.clear()
            replaced = fn(tuple(grad_inputs), grad_outputs)
            return None if replaced is None else tuple(replaced[position] for position, _ in slots)

        handles.append(_Gathered([alias for _, alias in slots], fire).register())
        return _Handles(handles)

    def _output_values(self) -> list[Value]:
        live = {index: ref() for index, ref in self._outputs.items()}
        values = [v for _, v in sorted(live.items()) if v is not None]
        if not values:
            from kiln.frontend.trace import located_error

            raise located_error(f"{self.name()}: its output tensors are gone, so no backward can reach it")
        return values


class InnerNode(Node):
    """A torch node that kiln computes inside another op's (``cross_entropy``'s ``LogSoftmaxBackward0``): it has
    edges to walk, but no gradients of its own for hooks."""

    def __init__(self, edges: list[tuple[Op, int]]):
        self._edges = edges

    @property
    def next_functions(self) -> tuple[tuple[Node | None, int], ...]:
        return tuple(edge_of(_unaliased(op.operands[index])) for op, index in self._edges)


class _Handles:
    """One handle for several tensor hooks (torch's ``RemovableHandle`` of a node hook)."""

    def __init__(self, handles: list[Any]):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def __enter__(self) -> "_Handles":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class _Gathered:
    """A hook over several values' gradients, called once per backward when every one the backward reaches has
    arrived (``eager_hooks.REACHED``), with their tuple (None for the others). kiln hands the gradients over one by
    one: a tuple the hook returns replaces the one that arrived last; one that replaces an earlier one is refused
    (its gradient has flowed on)."""

    def __init__(self, values: list[Value], fire: Callable[[tuple[Any, ...]], Any]):
        self.values = values
        self.fire = fire
        self.arrived: dict[int, Any] = {}

    def register(self) -> Any:
        from kiln.runtime.eager_hooks import register_tensor_hook

        handles = [register_tensor_hook(v, lambda g, i=i: self.arrive(i, g)) for i, v in enumerate(self.values)]
        return _Handles(handles)

    def arrive(self, index: int, grad: Any) -> Any:
        from kiln.runtime.eager_hooks import REACHED

        self.arrived[index] = grad
        expected = sum(1 for v in self.values if id(v) in REACHED)
        if len(self.arrived) < expected:
            return None
        grads = tuple(self.arrived.get(i) for i in range(len(self.values)))
        self.arrived = {}
        replaced = self.fire(grads)
        if replaced is None:
            return None
        for i, (given, new) in enumerate(zip(grads, replaced)):
            if i != index and new is not given:
                from kiln.frontend.trace import located_error

                raise located_error("a node hook replaced a gradient kiln had already passed on: kiln hands a node's "
                                    "gradients to its hook one by one and applies only the last one's replacement; "
                                    "register a hook on that tensor instead (tensor.register_hook)")
        return replaced[index]


def _single(replaced: Any, index: int) -> Any:
    """A node hook's result for one gradient: None (keep it) or the tuple's entry."""
    return None if replaced is None else replaced[index]


_ALIASES: "weakref.WeakSet[Value]" = weakref.WeakSet()
"""The identity aliases node post-hooks put in operand slots: not torch nodes, so edges look through them."""


def _aliased(op: Op, index: int) -> Value:
    """The alias in ``op``'s operand slot ``index``, put there now if it holds none."""
    from kiln.frontend.trace import TraceContext

    operand = op.operands[index]
    if operand in _ALIASES:
        return operand
    alias = TraceContext.current().emit("tensor.broadcast_to", operand, shape=operand.type.shape)
    _ALIASES.add(alias)
    op.operands[index] = alias
    return alias


def _unaliased(value: Value) -> Value:
    while value in _ALIASES:
        value = value.producer.operands[0]  # type: ignore[union-attr]
    return value


_NODES: "weakref.WeakKeyDictionary[Value, OpNode]" = weakref.WeakKeyDictionary()
"""The node of each result asked for (``grad_fn``, an edge): one object per op while its results live."""
_BY_OP: "weakref.WeakValueDictionary[int, OpNode]" = weakref.WeakValueDictionary()
"""Nodes by ``id`` of their op (a node holds its op, so the id is its own while the node lives): a multi-result op's
results share theirs."""
_ACCUMULATORS: "weakref.WeakValueDictionary[int, AccumulateGrad]" = weakref.WeakValueDictionary()
_TYPES: dict[tuple[str, type], type] = {}


def node_of(value: Value) -> OpNode:
    """The node of the op that made ``value`` (an eager result that requires grad)."""
    node = _NODES.get(value)
    if node is None:
        op = value.producer
        node = _BY_OP.get(id(op))
        if node is None:
            name, edges = describe(op)
            node = _node_type(name)(op, edges)
            _BY_OP[id(op)] = node
        _NODES[value] = node
    node._outputs.setdefault(value.index, weakref.ref(value))
    return node


def edge_of(value: Value) -> tuple[Node | None, int]:
    """``next_functions``'s entry for an operand: its node and output index, a leaf's ``AccumulateGrad``, or None."""
    if not requires_grad_of(value):
        return None, 0
    if value.producer is not None:
        return node_of(value), value.index
    variable = _leaf_owner(value)
    return (None, 0) if variable is None else (accumulator_of(variable), 0)


def _leaf_owner(value: Value) -> Any:
    marked = GRAD_TENSORS.get(value)
    if marked is not None:
        return marked()
    return PARAMETERS.get(value, (None, 0))[0]


def accumulator_of(variable: Any) -> AccumulateGrad:
    node = _ACCUMULATORS.get(id(variable))
    if node is None or node.variable is not variable:
        node = _ACCUMULATORS[id(variable)] = AccumulateGrad(variable)
    return node


def _node_type(name: str, base: type = OpNode) -> type:
    """A subclass of ``base`` named as torch's node (``type(grad_fn).__name__ == 'MulBackward0'``)."""
    kind = _TYPES.get((name, base))
    if kind is None:
        kind = _TYPES[(name, base)] = type(name, (base,), {"__module__": "kiln.autograd.graph"})
    return kind


def describe(op: Op) -> tuple[str, list[tuple[Op, int]]]:
    """torch's node name for ``op`` and its edges: a ``_PATTERNS`` group if one matches, else ``_NAMES``' name and one
    edge per floating operand (a Function's: per tensor argument of ``apply``)."""
    for pattern in _PATTERNS:
        found = pattern(op)
        if found is not None:
            return found
    rule = _NAMES.get(op.name)
    name = rule(op) if callable(rule) else rule if rule is not None else _fallback_name(op.name)
    operands = op.operands[: op.attrs["num_inputs"]] if op.name == "custom.vjp" else op.operands
    return name, [(op, i) for i, v in enumerate(operands) if v.type.dtype.is_float]


def _fallback_name(op_name: str) -> str:
    """``tensor.reduce_prod`` -> ``ReduceProdBackward0``: torch's form, for ops with no torch node of their own."""
    return "".join(part.capitalize() for part in op_name.split(".")[-1].split("_")) + "Backward0"


def _rank(value: Value) -> int:
    return len(value.type.shape)


def _scalar_constant(value: Value) -> bool:
    return _rank(value) == 0 and value.producer is not None and value.producer.name == "tensor.constant"


def _matmul_name(op: Op) -> str:
    ranks = tuple(_rank(v) for v in op.operands)
    return {(1, 1): "DotBackward0", (2, 1): "MvBackward0", (2, 2): "MmBackward0", (3, 3): "BmmBackward0"}.get(
        ranks, "UnsafeViewBackward0")


def _transpose_name(op: Op) -> str:
    perm = tuple(op.attrs.get("perm", ()))
    moved = [axis for axis, p in enumerate(perm) if axis != p]
    if perm == (1, 0):
        return "TBackward0"
    return "TransposeBackward0" if len(moved) == 2 else "PermuteBackward0"


def _full_or_dim(full: str, dim: str) -> Callable[[Op], str]:
    return lambda op: full if op.attrs.get("axes") is None else dim


_NAMES: dict[str, str | Callable[[Op], str]] = {
    "tensor.add": "AddBackward0", "tensor.sub": "SubBackward0", "tensor.mul": "MulBackward0",
    "tensor.div": "DivBackward0", "tensor.matmul": _matmul_name,
    "tensor.reduce_sum": _full_or_dim("SumBackward0", "SumBackward1"),
    "tensor.reduce_mean": _full_or_dim("MeanBackward0", "MeanBackward1"),
    "tensor.reduce_max": _full_or_dim("MaxBackward1", "AmaxBackward0"),
    "tensor.reduce_min": _full_or_dim("MinBackward1", "AminBackward0"),
    "tensor.reduce_prod": _full_or_dim("ProdBackward0", "ProdBackward1"),
    "tensor.pow": "PowBackward1", "tensor.reshape": "ViewBackward0", "tensor.transpose": _transpose_name,
    "tensor.squeeze": "SqueezeBackward1", "tensor.expand_dims": "UnsqueezeBackward0",
    "tensor.broadcast_to": lambda op: "CloneBackward0" if op.operands[0].type.shape == tuple(op.attrs["shape"])
    else "ExpandBackward0",
    "tensor.concat": "CatBackward0", "tensor.take": "IndexBackward0", "tensor.clip": "ClampBackward1",
    "tensor.cast": "ToCopyBackward0", "tensor.pad": "ConstantPadNdBackward0", "tensor.conv2d": "ConvolutionBackward0",
    "tensor.max_pool2d": "MaxPool2DWithIndicesBackward0", "tensor.avg_pool2d": "AvgPool2DBackward0",
    "nn.cross_entropy": "NllLossBackward0", "nn.nll": "NllLossBackward0", "nn.mse": "MseLossBackward0",
    "nn.layer_norm": "NativeLayerNormBackward0", "nn.batch_norm": "NativeBatchNormBackward0",
    "nn.dropout": "NativeDropoutBackward0", "nn.bce_with_logits": "BinaryCrossEntropyWithLogitsBackward0",
    "nn.smooth_l1": "SmoothL1LossBackward0", "nn.huber": "HuberLossBackward0",
    "custom.vjp": lambda op: f"{op.attrs.get('function', 'Function')}Backward",
}
"""torch's node name per kiln op (a rule where it depends on the op's attributes or operands); the other ops' names
follow ``_fallback_name``, which is torch's own for most elementwise ops (``ExpBackward0``, ``ReluBackward0``)."""


def _addmm(op: Op) -> tuple[str, list[tuple[Op, int]]] | None:
    """``F.linear``/``addmm``: ``add(matmul(2-d, 2-d), bias)`` (either order) is torch's ``AddmmBackward0`` with edges
    (bias, mat1, mat2)."""
    if op.name != "tensor.add":
        return None
    for mm_index in (0, 1):
        mm = op.operands[mm_index].producer
        bias = op.operands[1 - mm_index]
        if mm is not None and mm.name == "tensor.matmul" and [_rank(v) for v in mm.operands] == [2, 2] and _rank(bias) <= 1:
            return "AddmmBackward0", [(op, 1 - mm_index), (mm, 0), (mm, 1)]
    return None


def _select(op: Op) -> tuple[str, list[tuple[Op, int]]] | None:
    """``x[i]``: ``squeeze(slice(x) of length 1)`` on one axis is torch's ``SelectBackward0``."""
    inner = op.operands[0].producer if op.name == "tensor.squeeze" else None
    if inner is None or inner.name != "tensor.slice":
        return None
    axis, attrs = inner.attrs.get("axis"), inner.attrs
    if tuple(op.attrs.get("axes") or ()) == (axis,) and attrs.get("step", 1) == 1 and \
            attrs.get("stop") is not None and attrs.get("start") is not None and attrs["stop"] - attrs["start"] == 1:
        return "SelectBackward0", [(inner, 0)]
    return None


def _stack(op: Op) -> tuple[str, list[tuple[Op, int]]] | None:
    """``stack``: ``concat`` of ``expand_dims`` on its own axis is torch's ``StackBackward0``."""
    if op.name != "tensor.concat":
        return None
    makers = [v.producer for v in op.operands]
    axis = op.attrs.get("axis")
    if makers and all(m is not None and m.name == "tensor.expand_dims" and tuple(m.attrs.get("axes", ())) == (axis,)
                      for m in makers):
        return "StackBackward0", [(m, 0) for m in makers if m.operands[0].type.dtype.is_float]  # type: ignore[union-attr]
    return None


def _scalar_operand(op: Op) -> tuple[str, list[tuple[Op, int]]] | None:
    """Ops whose torch form takes a Python number: ``1 - x`` (``RsubBackward1``), ``x ** 2`` (``PowBackward0``) and
    ``masked_fill`` (``where`` with a number): the number is no edge."""
    operands = op.operands
    if op.name == "tensor.sub" and _scalar_constant(operands[0]):
        return "RsubBackward1", [(op, 1)]
    if op.name == "tensor.pow" and _scalar_constant(operands[1]):
        return "PowBackward0", [(op, 0)]
    if op.name == "tensor.where" and len(operands) == 3:
        for constant, kept in ((1, 2), (2, 1)):
            if _scalar_constant(operands[constant]) and operands[kept].type.dtype.is_float:
                return "MaskedFillBackward0", [(op, kept)]
    return None


def _cross_entropy(op: Op) -> tuple[str, list[Any]] | None:
    """``F.cross_entropy`` with class indices: torch's ``NllLossBackward0`` over ``LogSoftmaxBackward0``."""
    if op.name != "nn.cross_entropy" or len(op.operands) < 2 or op.operands[1].type.dtype.is_float:
        return None
    inner = _node_type("LogSoftmaxBackward0", InnerNode)([(op, 0)])
    return "NllLossBackward0", [inner] + [(op, i) for i, v in enumerate(op.operands) if i > 1 and v.type.dtype.is_float]


_PATTERNS: list[Callable[[Op], tuple[str, list[Any]] | None]] = [_addmm, _select, _stack, _scalar_operand,
                                                                  _cross_entropy]


def grad_fn_of(tensor: Any) -> OpNode | None:
    """``tensor.grad_fn``: the node of the op that made an eager tensor requiring grad; None for a leaf, a tensor
    needing no gradient, or a traced tensor."""
    value = eager_value(tensor)
    if value is None or value.producer is None or not requires_grad_of(value):
        return None
    return node_of(value)


class GradientEdge(NamedTuple):
    """torch's ``GradientEdge``: the node computing a tensor's gradient and the output it is."""

    node: Node
    output_nr: int
    ownership_token: Node | None = None


def get_gradient_edge(tensor: Any) -> GradientEdge:
    """The edge where ``tensor``'s gradient is computed: its ``grad_fn`` and output index, or its ``AccumulateGrad``."""
    if not tensor.requires_grad:
        raise RuntimeError("It is not possible to get the gradient edge for a Tensor that does not require gradients")
    node = tensor.grad_fn
    if node is None:
        return GradientEdge(accumulator_of(tensor), 0)
    return GradientEdge(node, eager_value(tensor).index)  # type: ignore[union-attr]


def tensor_version(tensor: Any) -> int:
    """``tensor._version``: the in-place writes of its storage so far (a parameter's: its in-place updates)."""
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.version_counter import _counter_owner, version_of

    if isinstance(tensor, ArrayLeaf):
        from kiln.frontend.eager_values import updates

        return updates(tensor)
    return version_of(_counter_owner(tensor))


def increment_version(tensor: Any) -> None:
    """Count an in-place write kiln did not see (torch's ``increment_version``): a backward that saved the tensor's
    values before now refuses, as after any in-place op. A tensor that is not a parameter takes a copy of its values
    as its new value (``clone()``, keeping its gradient path), so later reads are not refused."""
    from kiln.frontend.eager_values import count_update
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.tensor_inplace import in_place

    tensors = [tensor] if not isinstance(tensor, Iterable) or hasattr(tensor, "value") else list(tensor)
    for item in tensors:
        if isinstance(item, ArrayLeaf):
            count_update(item)
        elif eager_value(item) is not None:
            in_place(item, "increment_version", lambda x: x.clone())


_BACKWARDS = [0]
"""How many eager backward chains were built: a multi-grad hook's call counts are per backward."""
_CURRENT: list[Any] = [None]
"""The eager chain being differentiated now (weakly): which leaves a multi-grad hook may expect."""


def started_backward(chain: Any) -> None:
    """Called by ``EagerChain`` for each backward it is built for."""
    _BACKWARDS[0] += 1
    _CURRENT[0] = weakref.ref(chain)


def register_multi_grad_hook(tensors: Sequence[Any], fn: Callable[..., Any], *, mode: str = "all") -> Any:
    """torch's ``register_multi_grad_hook``: ``fn(grads)`` once per backward after the gradients of every tensor the
    backward reaches (None for the others), or with ``mode="any"`` ``fn(grad)`` at the first one."""
    if mode not in ("all", "any"):
        raise ValueError(f"Expects mode to be one of ('all', 'any') but got {mode}")
    if mode == "any":
        fired: dict[int, bool] = {}

        def first(grad: Any) -> None:
            if not fired.get(_BACKWARDS[0]):
                fired.clear()
                fired[_BACKWARDS[0]] = True
                fn(grad)

        return _Handles([t.register_hook(first) for t in tensors if t.requires_grad])
    tensors = list(tensors)
    state: dict[str, Any] = {"run": None, "grads": {}}

    def inner(index: int, grad: Any) -> None:
        if state["run"] != _BACKWARDS[0]:
            state["run"], state["grads"] = _BACKWARDS[0], {}
        state["grads"][index] = grad
        if len(state["grads"]) == _expected(tensors):
            grads, state["grads"] = state["grads"], {}
            fn([grads.get(i) for i in range(len(tensors))])

    return _Handles([t.register_hook(lambda g, i=i: inner(i, g)) for i, t in enumerate(tensors)])


def _expected(tensors: list[Any]) -> int:
    """How many of ``tensors`` the current backward gives a gradient: reached results, and the parameters (or leaves
    made with ``requires_grad=True``) it accumulates into."""
    from kiln.frontend.module import ArrayLeaf
    from kiln.runtime.eager_hooks import REACHED

    chain = _CURRENT[0]() if _CURRENT[0] is not None else None
    trained = {id(p) for p in chain.trained} if chain is not None else set()
    return sum(1 for t in tensors
               if (id(t) in trained if isinstance(t, ArrayLeaf) else id(eager_value(t)) in REACHED))


__all__ = ["AccumulateGrad", "GradientEdge", "Node", "OpNode", "accumulator_of", "edge_of", "get_gradient_edge",
           "grad_fn_of", "increment_version", "node_of", "register_multi_grad_hook", "requires_grad_of",
           "started_backward", "tensor_version"]
