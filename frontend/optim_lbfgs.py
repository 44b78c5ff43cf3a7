"""L-BFGS (``torch.optim.LBFGS``): PyTorch's algorithm, driven by a closure that re-evaluates the loss and its gradients.

```python
model.eval()                                                    # no dropout: the closure must be one function
optimizer = kiln.optim.LBFGS(model.parameters(), history_size=10, line_search_fn="strong_wolfe")
evaluate = kiln.optim.loss_and_grad(model, F.mse_loss, optimizer)  # one compiled forward + backward graph
for _ in range(20):
    loss = optimizer.step(lambda: evaluate(x, y))               # PyTorch's step(closure) contract
```

Why not one compiled step: every other optimizer is a few ``optim.*`` ops
appended to the training-step graph, because its update needs one gradient.
L-BFGS needs a data-dependent number of them per step (up to ``max_eval``: an
evaluation per inner iteration, more in the strong-Wolfe line search, with
early exits on tolerances), and its decisions (``ys > 1e-10``, the Wolfe
tests, the stops) are branches on the values. So kiln compiles what repeats,
the loss and its gradients (``loss_and_grad``: the training step's own tracing
and autodiff, on any backend, one graph per batch signature), and runs the
algorithm on the host over flat NumPy vectors in the parameters' dtype, as
PyTorch's ``LBFGS`` does over flat tensors: the same two-loop recursion, the
same scalars, the same order of operations, so a float64 run follows
PyTorch's to rounding (not bit for bit: BLAS dot products, PyTorch's fused
``add_(alpha=)`` and its 0-d ``sqrt`` round differently). The vectors are a few ``O(n)`` NumPy calls per
iteration beside a forward and backward pass of the model, and ``history_size``
pairs of them are the memory cost, as in PyTorch.

The closure returns ``(loss, gradients)`` (what ``loss_and_grad`` returns): kiln
has no ``.grad`` to fill, so the gradients come back with the loss, one array per
parameter in ``optimizer.parameters()`` order (``None`` or zeros for a frozen one).

The state is PyTorch's, kept under the first parameter as PyTorch keeps it:
``func_evals`` and ``n_iter`` (counters over all steps), the last direction
``d`` and step ``t``, the history ``old_dirs`` (gradient differences ``y``)
and ``old_stps`` (steps ``s``) as ``(k, n)`` arrays with ``ro = 1 / y's``, the
initial Hessian scale ``H_diag = y's / y'y``, ``prev_flat_grad`` and
``prev_loss``. A PyTorch ``state_dict`` whose tensors and lists are converted to
arrays loads (its scratch ``al`` is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from kiln.compiler.errors import CheckpointError, KilnError
from kiln.frontend.module import Parameter
from kiln.frontend.optim import Optimizer, _non_negative
from kiln.frontend.optim_base import InvalidOptionError
from kiln.frontend.optim_line_search import strong_wolfe
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext, located_error
from kiln.frontend.sparse_grad import as_dense

Closure = Callable[[], tuple[Any, Sequence[Any]]]
COUNTERS = ("func_evals", "n_iter")
HISTORY = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")
"""State names after the first iteration (PyTorch's, which sets them all at once)."""
CLOSURE_HELP = ("build it with evaluate = kiln.optim.loss_and_grad(model, loss_fn, optimizer) and call "
                "optimizer.step(lambda: evaluate(x, y)), or write PyTorch's closure (zero_grad, loss, loss.backward(), "
                "return loss), which runs eagerly")


@dataclass
class Memory:
    """L-BFGS's state across steps, as NumPy values: ``old_dirs`` holds the gradient differences ``y``, ``old_stps`` the
    steps ``s`` (PyTorch's names), newest last."""

    func_evals: int = 0
    n_iter: int = 0
    d: np.ndarray | None = None
    t: Any = None
    old_dirs: list[np.ndarray] = field(default_factory=list)
    old_stps: list[np.ndarray] = field(default_factory=list)
    ro: list[Any] = field(default_factory=list)
    H_diag: Any = None
    prev_flat_grad: np.ndarray | None = None
    prev_loss: float | None = None

    def remember(self, y: np.ndarray, s: np.ndarray, history_size: int) -> None:
        """Keep the pair ``(y, s)`` if the curvature ``y's`` is positive enough (``> 1e-10``), dropping the oldest pair
        when the history is full, and rescale the initial inverse Hessian to ``y's / y'y``."""
        ys = y.dot(s)
        if not ys > 1e-10:
            return
        if len(self.old_dirs) == history_size:
            del self.old_dirs[0], self.old_stps[0], self.ro[0]
        self.old_dirs.append(y)
        self.old_stps.append(s)
        self.ro.append(1.0 / ys)
        self.H_diag = ys / y.dot(y)

    def two_loop(self, flat_grad: np.ndarray) -> np.ndarray:
        """``-H g``: the two-loop recursion over the history, from the initial inverse Hessian ``H_diag * I``."""
        count = len(self.old_dirs)
        al: list[Any] = [None] * count
        q = -flat_grad
        for i in range(count - 1, -1, -1):
            al[i] = self.old_stps[i].dot(q) * self.ro[i]
            q += -al[i] * self.old_dirs[i]
        r = q * self.H_diag
        for i in range(count):
            be_i = self.old_dirs[i].dot(r) * self.ro[i]
            r += (al[i] - be_i) * self.old_stps[i]
        return r

    def arrays(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        """The state as arrays (``optimizer.state``, ``state_dict``): counters int64, vectors and scalars in ``dtype``,
        ``prev_loss`` float64 (a Python float in PyTorch); the history only once an iteration has run."""
        counters = {"func_evals": np.asarray(self.func_evals, np.int64), "n_iter": np.asarray(self.n_iter, np.int64)}
        if self.d is None:
            return counters
        size = self.d.size
        history = {"old_dirs": _rows(self.old_dirs, size, dtype), "old_stps": _rows(self.old_stps, size, dtype), "ro": np.asarray(self.ro, dtype).reshape(-1)}
        scalars = {"t": np.asarray(self.t, dtype), "H_diag": np.asarray(self.H_diag, dtype), "prev_loss": np.asarray(self.prev_loss, np.float64)}
        return counters | {"d": np.array(self.d, dtype), "prev_flat_grad": np.array(self.prev_flat_grad, dtype)} | history | scalars

    @classmethod
    def of(cls, arrays: Mapping[str, Any], dtype: np.dtype) -> "Memory":
        """The state ``arrays`` describe (as ``arrays`` writes them), scalars as ``dtype`` scalars as PyTorch's 0-d tensors."""
        memory = cls(int(arrays["func_evals"]), int(arrays["n_iter"]))
        if "d" not in arrays:
            return memory
        scalar = np.dtype(dtype).type
        memory.d, memory.prev_flat_grad = np.array(arrays["d"], dtype), np.array(arrays["prev_flat_grad"], dtype)
        memory.old_dirs, memory.old_stps = list(np.array(arrays["old_dirs"], dtype)), list(np.array(arrays["old_stps"], dtype))
        memory.ro = [scalar(value) for value in np.asarray(arrays["ro"], dtype).reshape(-1)]
        memory.t, memory.H_diag, memory.prev_loss = scalar(arrays["t"]), scalar(arrays["H_diag"]), float(arrays["prev_loss"])
        return memory


def refuse_tracing() -> None:
    """Refuse ``step`` inside a ``kiln.compile`` trace, naming the user's line: its number of closure calls and its
    branches depend on the values, which a trace does not have (``torch.compile(fullgraph=True)`` refuses it too, at
    ``float(closure())``). Without ``fullgraph`` the compiled call then runs eagerly, warned, as torch's graph break."""
    if TraceContext.active() and not TraceContext.current().eager:
        raise located_error(
            "LBFGS.step(closure) cannot be captured in a compiled graph: it calls the closure a data-dependent number "
            "of times (its iterations, its line search) and branches on the losses. Call optimizer.step(closure) outside "
            "kiln.compile (compile the closure's model instead), or compile without fullgraph=True to run it eagerly")


def _rows(vectors: list[np.ndarray], size: int, dtype: np.dtype) -> np.ndarray:
    return np.array(vectors, dtype) if vectors else np.zeros((0, size), dtype)


@dataclass
class Objective:
    """The closure over the flat parameter vector: evaluates it, moves the parameters along a direction, restores them."""

    closure: Closure
    params: list[Parameter]
    first_loss: Any = None
    """The loss the first evaluation returned, as the closure returned it (PyTorch's ``orig_loss``, which ``step``
    returns: the loss tensor of a PyTorch closure)."""

    @property
    def dtype(self) -> np.dtype:
        return flat_dtype(self.params)

    def evaluate(self) -> tuple[float, np.ndarray]:
        """``(loss, flat gradient)`` at the current parameters: one closure call."""
        result = self.closure()
        loss, grads = closure_result(result, self.params)
        if self.first_loss is None:
            self.first_loss = result[0] if isinstance(result, (tuple, list)) else result
        return loss, np.concatenate([g.reshape(-1) for g in grads]).astype(self.dtype, copy=False)

    def move(self, t: Any, d: np.ndarray) -> None:
        """``p += t * d`` piece by piece (PyTorch's ``_add_grad``)."""
        offset = 0
        for param in self.params:
            data = param.data
            data += t * d[offset : offset + data.size].reshape(data.shape)
            offset += data.size

    def evaluate_along(self, t: Any, d: np.ndarray) -> tuple[float, np.ndarray]:
        """``(loss, flat gradient)`` at the parameters moved by ``t * d``; the parameters are left as they were."""
        saved = [p.data.copy() for p in self.params]
        self.move(t, d)
        try:
            return self.evaluate()
        finally:
            for param, data in zip(self.params, saved):
                np.copyto(param.data, data)


def total(values: np.ndarray) -> np.floating:
    """``values.sum()`` as PyTorch sums a half tensor: accumulated in float32, rounded once to its dtype (NumPy would
    accumulate a bfloat16 array in bfloat16: 1000 terms near 0.8 sum to 544, not 780)."""
    return values.sum(dtype=np.result_type(values.dtype, np.float32)).astype(values.dtype)


def flat_dtype(params: list[Parameter]) -> np.dtype:
    """The flat vectors' dtype: the parameters' (promoted, as ``torch.cat`` promotes, if they differ)."""
    return np.result_type(*[p.data.dtype for p in params])


def closure_result(result: Any, params: list[Parameter]) -> tuple[float, list[np.ndarray]]:
    """The closure's ``(loss, gradients)``, checked: one real gradient per parameter, shaped like it (``None``: zeros).
    PyTorch's closure (``zero_grad(); loss = ...; loss.backward(); return loss``, in eager mode) returns the loss alone:
    the gradients are then the parameters' ``.grad``."""
    if isinstance(result, (Tensor, float, np.floating, np.ndarray)):
        if all(p.grad is None for p in params):
            raise KilnError("LBFGS.step's closure returned the loss alone, but no parameter has a .grad: call "
                            f"loss.backward() in it before returning the loss (PyTorch's closure), or return (loss, gradients): {CLOSURE_HELP}")
        result = (result, [as_dense(p.grad) for p in params])  # a sparse .grad densified, as torch's LBFGS
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise KilnError(f"LBFGS.step's closure must return (loss, gradients), got {type(result).__name__}; {CLOSURE_HELP}")
    loss, grads = result[0], list(result[1])
    if len(grads) != len(params):
        raise KilnError(f"LBFGS.step's closure returned {len(grads)} gradients for {len(params)} parameters; {CLOSURE_HELP}")
    grads = [np.zeros_like(p.data) if g is None else np.asarray(g) for p, g in zip(params, grads)]
    for index, (param, grad) in enumerate(zip(params, grads)):
        if grad.shape != param.data.shape or np.iscomplexobj(grad):
            raise KilnError(f"LBFGS.step's closure returned a gradient of shape {grad.shape} and dtype {grad.dtype} for parameter "
                            f"{index} of shape {param.data.shape}; L-BFGS takes one real gradient per parameter; {CLOSURE_HELP}")
    return float(loss), grads


@dataclass
class Minimization:
    """One ``LBFGS.step``: PyTorch's loop, its locals as fields (``evaluations`` is its ``current_evals``)."""

    objective: Objective
    memory: Memory
    group: dict[str, Any]
    loss: float = 0.0
    flat_grad: np.ndarray = field(default_factory=lambda: np.zeros(0))
    evaluations: int = 0

    def run(self) -> float:
        """Up to ``max_iter`` iterations; returns the loss the step started from (PyTorch's ``orig_loss``)."""
        self.loss, self.flat_grad = self.objective.evaluate()
        self._count(1)
        if self._optimal():
            return self.loss
        first_loss = self.loss
        for n_iter in range(1, self.group["max_iter"] + 1):
            if self._iterate(n_iter):
                break
        return first_loss

    def _count(self, evaluations: int) -> None:
        self.evaluations += evaluations
        self.memory.func_evals += evaluations

    def _optimal(self) -> bool:
        return bool(np.abs(self.flat_grad).max() <= self.group["tolerance_grad"])

    def _iterate(self, n_iter: int) -> bool:
        """One iteration: direction, step length, move; whether the step stops here."""
        memory, group = self.memory, self.group
        memory.n_iter += 1
        memory.d = self._direction()
        memory.prev_flat_grad, memory.prev_loss = self.flat_grad.copy(), self.loss
        memory.t = min(1.0, 1.0 / total(np.abs(self.flat_grad))) * group["lr"] if memory.n_iter == 1 else group["lr"]
        gtd = self.flat_grad.dot(memory.d)
        if gtd > -group["tolerance_change"]:  # the directional derivative is below tolerance
            return True
        self._count(self._line_search(gtd) if group["line_search_fn"] == "strong_wolfe" else self._fixed_step(n_iter))
        return self._stops(n_iter)

    def _direction(self) -> np.ndarray:
        """Steepest descent on the very first iteration (the history starts empty); else the L-BFGS direction after
        remembering the last step."""
        memory = self.memory
        if memory.n_iter == 1:
            memory.old_dirs, memory.old_stps, memory.ro, memory.H_diag = [], [], [], 1
            return -self.flat_grad
        memory.remember(self.flat_grad - memory.prev_flat_grad, memory.d * memory.t, self.group["history_size"])
        return memory.two_loop(self.flat_grad)

    def _line_search(self, gtd: Any) -> int:
        memory = self.memory
        self.loss, self.flat_grad, memory.t, evaluations = strong_wolfe(
            self.objective.evaluate_along, memory.t, memory.d, self.loss, self.flat_grad, gtd, max_ls=self.group["max_eval"] - self.evaluations
        )
        self.objective.move(memory.t, memory.d)
        return evaluations

    def _fixed_step(self, n_iter: int) -> int:
        """Move by ``t d``; re-evaluate unless this is the last iteration (PyTorch's saving in a stochastic setting)."""
        self.objective.move(self.memory.t, self.memory.d)
        if n_iter == self.group["max_iter"]:
            return 0
        self.loss, self.flat_grad = self.objective.evaluate()
        return 1

    def _stops(self, n_iter: int) -> bool:
        """PyTorch's stops, in its order: iterations, evaluations, a small gradient, a small step, a small change of loss."""
        memory, group = self.memory, self.group
        tolerance_change = group["tolerance_change"]
        return (n_iter == group["max_iter"] or self.evaluations >= group["max_eval"] or self._optimal()
                or bool(np.abs(memory.d * memory.t).max() <= tolerance_change) or abs(self.loss - memory.prev_loss) < tolerance_change)


class LBFGS(Optimizer):
    """L-BFGS (``torch.optim.LBFGS``): ``step(closure)`` runs up to ``max_iter`` quasi-Newton iterations, each a move
    along the two-loop direction of the last ``history_size`` steps, with a fixed step ``lr`` or a strong-Wolfe line
    search; see the module docstring for the closure and why the update runs on the host.

    One parameter group only, as PyTorch. It cannot run inside ``compile_train_step``'s single graph (that graph
    evaluates the loss once per call); that raises, naming ``optimizer.step(closure)``.
    """

    torch_counts_steps = False  # PyTorch's LBFGS counts its iterations (n_iter), no per-parameter step

    def __init__(
        self, params: Iterable[Any], lr: float = 1, max_iter: int = 20, max_eval: int | None = None, tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9, history_size: int = 100, line_search_fn: str | None = None,
    ):
        max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size, line_search_fn=line_search_fn))

    def add_param_group(self, group: dict[str, Any]) -> None:
        if self.param_groups:
            raise KilnError("LBFGS doesn't support per-parameter options (parameter groups): give it one list of parameters")
        super().add_param_group(group)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("LBFGS", group, "lr")
        for name in ("max_iter", "max_eval", "history_size"):
            if not isinstance(group[name], (int, np.integer)) or group[name] < 1:
                raise InvalidOptionError(f"LBFGS: invalid {name} {group[name]!r}; it must be a whole number >= 1")
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise KilnError(f"LBFGS: line_search_fn {group['line_search_fn']!r} is not supported; use None or 'strong_wolfe'")

    def step(self, closure: Closure) -> Any:
        """Minimize from the current parameters; ``closure()`` returns ``(loss, gradients)`` at the parameters' current
        values (``kiln.optim.loss_and_grad``), or PyTorch's closure's loss after its ``backward()``. Returns the loss of
        the first evaluation as the closure returned it (a PyTorch closure's loss tensor), as PyTorch."""
        refuse_tracing()
        objective = Objective(closure, self.parameters())
        first = id(objective.params[0])
        memory = Memory.of(self.state.get(first, {"func_evals": 0, "n_iter": 0}), objective.dtype)
        Minimization(objective, memory, self.param_groups[0]).run()
        self.state[first] = memory.arrays(objective.dtype)
        self.step_count += 1
        return objective.first_loss

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.LBFGS``'s ``state_dict``: the one state under parameter ``0``, counters and ``t``, ``prev_loss``
        as Python numbers, the history as lists of vectors (``ro`` of 0-d arrays), as PyTorch keeps them (its scratch
        ``al`` left out: PyTorch makes it again). kiln's stacked arrays are in ``kiln_state_dict()``."""
        layout = super().state_dict()
        layout["state"] = {key: _torch_entry(entry) for key, entry in layout["state"].items()}
        return layout

    def emit_update(self, b, param, grad, state, hyper, group):
        raise KilnError(
            "LBFGS cannot be compiled into a training step: each of its steps evaluates the loss and gradients a "
            "data-dependent number of times (max_iter iterations, its line search), and a compiled step evaluates them "
            f"once. Call optimizer.step(closure) instead: {CLOSURE_HELP}"
        )

    def _loaded_state(
        self, param: Parameter, group: dict[str, Any], saved: Mapping[str, Any], key: Callable[[Parameter], str]
    ) -> dict[str, np.ndarray] | None:
        """The one saved state, under the first parameter, checked against the flat size and ``history_size``."""
        entry = saved.get(key(param))
        if entry is None:
            return None
        params = self.parameters()
        if param is not params[0]:
            raise CheckpointError(f"LBFGS keeps one state for all parameters, under the first ({key(params[0])!r}); "
                                  f"the saved state has one for {key(param)!r}")
        return checked_state(entry, sum(p.data.size for p in params), flat_dtype(params), group["history_size"])


def _torch_entry(entry: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One saved state as PyTorch's LBFGS keeps it: numbers for its Python numbers, lists for its lists of tensors."""
    numbers = {name: entry[name].item() for name in (*COUNTERS, "t", "prev_loss") if name in entry}
    lists = {name: list(entry[name]) for name in ("old_dirs", "old_stps", "ro") if name in entry}
    return {**entry, **numbers, **lists}


def checked_state(entry: Mapping[str, Any], size: int, dtype: np.dtype, history_size: int) -> dict[str, np.ndarray]:
    """A saved L-BFGS state (kiln's, or PyTorch's with tensors as arrays and lists of them) as ``Memory.arrays`` writes it."""
    names = set(entry) - {"al"}  # PyTorch's scratch of the two-loop recursion
    if names not in (set(COUNTERS), set(COUNTERS + HISTORY)):
        raise CheckpointError(f"LBFGS state holds {sorted(names)}; it expects {list(COUNTERS)}, and {list(HISTORY)} after "
                              "the first iteration")
    if "d" in names:
        vectors = {name: np.asarray(entry[name]) for name in ("d", "prev_flat_grad", "old_dirs", "old_stps", "ro")}
        count = len(vectors["ro"])
        expected = {"d": (size,), "prev_flat_grad": (size,), "old_dirs": (count, size), "old_stps": (count, size), "ro": (count,)}
        for name, shape in expected.items():
            if vectors[name].shape != shape and not (vectors[name].size == 0 and count == 0 and name.startswith("old")):
                raise CheckpointError(f"LBFGS state {name} has shape {vectors[name].shape}; these parameters ({size} numbers) "
                                      f"with {count} remembered steps need {shape}")
        if count > history_size:
            raise CheckpointError(f"LBFGS state remembers {count} steps, more than history_size={history_size}")
    return Memory.of(entry, dtype).arrays(dtype)
