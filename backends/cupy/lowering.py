"""The CuPy lowering table: NumPy's kernels re-bound to CuPy, CuPy functions for the ufuncs, a few overrides.

Where CuPy mirrors NumPy, the NumPy kernel's own code runs on the GPU: each
NumPy lowering module is re-bound with ``np`` meaning CuPy (an array module
that falls back to NumPy only for names CuPy lacks, such as ``np.dtype``
helpers), so conv, pooling, the losses and the optimizer kernels need no
second copy. Softmax (also masked), its gradient, log-softmax and layer norm are fused row kernels
(``row_kernels.py``), and so is cross-entropy over integer labels, loss and gradient (``loss_kernels.py``). Ufuncs, reductions and the matmul call CuPy directly (one less
dispatch); matmuls go to cuBLAS reading transposed and sliced operands in place (``gemm.py``). The overrides are the kernels that build
host arrays on purpose: casts through ``np.asarray``, ``numel``, ``one_hot``,
``erf`` and the exact GELU (SciPy's erf), the Philox random draw (``philox.py``: NumPy's
Philox-4x64 stream computed on the device, so a seed gives the same numbers on every backend)
and the comm ops (under MPI through host copies, as MPI moves host buffers; under NCCL the
device arrays as they are). ``tensor.argsort``'s re-bound kernel sorts with CuPy's argsort, stable without NumPy's
``kind="stable"``.

The table needs CuPy, so it is built on first use (``cupy_table()``);
``CUPY_OP_NAMES`` says what it covers without importing CuPy. On the device,
cross-entropy's labels are range-checked on the host before they are uploaded
(``CupyExecutable``); labels already on the device are checked without waiting
for it: the verdict stays there and the error is raised when the step's loss is
read (``kiln.runtime.lazy.defer_check``), after that step ran.
"""

from __future__ import annotations

import math
import sys
import types
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from kiln.backends.base import LoweringTable
from kiln.backends.numpy import NUMPY
from kiln.backends.numpy import lowering, lowering_losses, lowering_movement, lowering_scan
from kiln.backends.numpy.lowering_comm import comm_kernels
from kiln.backends.cupy.gemm import device_matmul, device_transpose
from kiln.backends.cupy.loss_kernels import cross_entropy_kernels
from kiln.backends.cupy.philox import launch_shape, philox_uniform_source
from kiln.backends.cupy.running_scans import log_depth_running
from kiln.backends.cupy.row_kernels import (THREADS, computed_in, layer_norm_grad_blocks, layer_norm_grad_source, layer_norm_source, masked_rows_apply,
                                            masked_softmax_source, row_op_fuses, softmax_grad_source, softmax_source)
from kiln.compiler.ir.types import DType, TensorType, normalize_axes
from kiln.compiler.ops.transformer import MASKED_SCORE
from kiln.runtime.distributed.communicator import current
from kiln.runtime.lazy import defer_check

NUMPY_PACKAGE = "kiln.backends.numpy"
NOT_REBOUND = frozenset({"codegen", "fusion", "out_kernels", "lowering_comm"})
"""NumPy-backend modules that hold no device kernels (code generation; comm kernels run on the host)."""

CUPY_FUNCTIONS = {
    "tensor.neg": "negative", "tensor.exp": "exp", "tensor.log": "log", "tensor.tanh": "tanh", "tensor.sqrt": "sqrt",
    "tensor.add": "add", "tensor.sub": "subtract", "tensor.mul": "multiply", "tensor.div": "divide", "tensor.pow": "power",
    "tensor.maximum": "maximum", "tensor.minimum": "minimum", "tensor.equal": "equal", "tensor.not_equal": "not_equal",
    "tensor.less": "less", "tensor.less_equal": "less_equal", "tensor.greater": "greater",
    "tensor.greater_equal": "greater_equal", "tensor.abs": "abs", "tensor.where": "where",
    "tensor.sin": "sin", "tensor.cos": "cos", "tensor.floor": "floor", "tensor.ceil": "ceil", "tensor.round": "rint",
    "tensor.atan": "arctan", "tensor.asin": "arcsin", "tensor.acos": "arccos",
}
"""Ops that are one CuPy function (``tensor.matmul`` is ``gemm.batched_matmul``: cuBLAS, reading operands in place)."""

FUSED_NAMES = ("fused.elementwise", "fused.matmul")
"""Launched by generated kernels (``launch.py``), not through the table."""

ROW_KERNEL_NAMES = ("nn.softmax_grad", "nn.masked_softmax", "nn.layer_norm_grad")
"""Composites NumPy expands but CuPy runs as one row kernel (``row_kernels.py``)."""

CUPY_OP_NAMES = frozenset(NUMPY.names()) | frozenset(FUSED_NAMES) | frozenset(ROW_KERNEL_NAMES)
"""Every op the CuPy table lowers: NumPy's ops (re-bound or overridden), the fusion groups and the row kernels."""


class ArrayModule(types.ModuleType):
    """``np`` for re-bound kernels: CuPy's attribute where CuPy has one, else NumPy's."""

    def __init__(self, cupy: Any, stride_tricks: Any):
        super().__init__("kiln_cupy_as_numpy")
        self._cupy, self._stride_tricks = cupy, stride_tricks

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._cupy, name) if hasattr(self._cupy, name) else getattr(np, name)
        setattr(self, name, value)  # later lookups skip __getattr__
        return value


def kernel_modules() -> tuple[types.ModuleType, ...]:
    """Every loaded module of the NumPy backend that defines kernels (or helpers they call), to re-bind together."""
    prefix = NUMPY_PACKAGE + "."
    return tuple(module for name, module in sorted(sys.modules.items())
                 if name.startswith(prefix) and name[len(prefix):] not in NOT_REBOUND and module is not None)


def rebind(
    modules: tuple[types.ModuleType, ...], array_module: ArrayModule, replacements: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Each module's namespace with ``np`` (and ``as_strided``) bound to CuPy; its functions, and the ones it
    imports from the other modules, re-bound so they call each other's CuPy forms."""
    spaces = {module.__name__: {**vars(module), "np": array_module} for module in modules}
    for space in spaces.values():
        if "as_strided" in space:
            space["as_strided"] = array_module._stride_tricks.as_strided
    originals = {module.__name__: dict(vars(module)) for module in modules}
    for module_name, space in spaces.items():
        for name, value in originals[module_name].items():
            if isinstance(value, types.FunctionType) and value.__module__ in spaces:
                space[name] = _rebound(value, spaces)
        space.update({**DEVICE_REPLACEMENTS.get(module_name, {}), **(replacements or {}).get(module_name, {})})
    return spaces


def _rebound(function: types.FunctionType, spaces: dict[str, dict[str, Any]]) -> types.FunctionType:
    """``function`` running in its module's re-bound namespace; functions captured in its closure re-bound too."""
    closure = None
    if function.__closure__:
        closure = tuple(types.CellType(_rebound(c.cell_contents, spaces) if _reboundable(c, spaces) else c.cell_contents)
                        for c in function.__closure__)
    copy = types.FunctionType(function.__code__, spaces[function.__module__], function.__name__, function.__defaults__, closure)
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def _reboundable(cell: types.CellType, spaces: dict[str, dict[str, Any]]) -> bool:
    try:
        value = cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return isinstance(value, types.FunctionType) and value.__module__ in spaces


def _rebound_kernels(array_module: ArrayModule, replacements: dict[str, dict[str, Any]] | None = None) -> dict[str, Callable[..., Any]]:
    """Op name -> the re-bound form of NumPy's kernel, for every kernel defined in a re-bound module."""
    spaces = rebind(kernel_modules(), array_module, replacements)
    rebound: dict[str, Callable[..., Any]] = {}
    for op_name in NUMPY.names():
        kernel = NUMPY.get(op_name)
        if isinstance(kernel, types.FunctionType) and kernel.__module__ in spaces:
            rebound[op_name] = _rebound(kernel, spaces)
    return rebound


def _labels_checked_later(op: str, labels: Any, keep: Any, classes: int, ignore_index: int) -> None:
    """The label range check without waiting for the device: the verdict stays there until the loss is read."""
    failed = (keep & ((labels < 0) | (labels >= classes))).any()
    host = lowering_losses.check_labels  # NumPy's check on host copies says which label, where
    defer_check(failed, lambda: host(op, labels.get(), keep.get(), classes, ignore_index))


DEVICE_REPLACEMENTS = {lowering_losses.__name__: {"check_labels": _labels_checked_later}}
"""Helpers of re-bound modules replaced on the device: checks that would synchronise every step."""


def _stable_argsort(cupy: Any) -> Callable[..., Any]:
    """``tensor.argsort``'s sort: CuPy's argsort is always stable (Thrust's stable sort, NaNs last as in NumPy) and takes
    no ``kind="stable"``: CuPy 8's has no ``kind``, later ones document only ``None`` (meaning stable)."""
    return lambda x, axis: cupy.argsort(x, axis=axis)


def _on_host(kernel: Callable[..., Any], cupy: Any) -> Callable[..., Any]:
    def run(*arrays: Any, **attrs: Any) -> Any:
        host = [cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else a for a in arrays]
        result = kernel(*host, **attrs)
        return cupy.asarray(result) if isinstance(result, np.ndarray) else result

    return run


def _overrides(cupy: Any, fallback: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    def cast(x: Any, *, dtype: DType) -> Any:
        return x.astype(DType.of(dtype).numpy, copy=False)

    def numel(x: Any, *, axes: Any, dtype: DType) -> Any:
        count = math.prod(x.shape[axis] for axis in normalize_axes(axes, x.ndim))
        return cupy.asarray(count, dtype=DType.of(dtype).numpy)

    def one_hot(labels: Any, *, num_classes: int, dtype: DType) -> Any:
        return (labels[..., None] == cupy.arange(num_classes)).astype(DType.of(dtype).numpy)

    def erf(x: Any) -> Any:
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x).astype(x.dtype, copy=False)

    def reduce_sum(x: Any, *, axes: Any, keepdims: bool) -> Any:
        return cupy.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)

    def relu(x: Any) -> Any:
        return cupy.maximum(x, x.dtype.type(0))

    def gelu(x: Any, *, approximate: str) -> Any:
        # x Phi(x) = x/2 (1 + erf(x / sqrt 2)); the tanh form is NumPy's kernel (NumPy's exact one imports SciPy's erf)
        if approximate == "tanh":
            return fallback["nn.gelu"](x, approximate=approximate)
        return x.dtype.type(0.5) * x * (1 + erf(x * x.dtype.type(1 / math.sqrt(2))))

    kernels = {"tensor.cast": cast, "tensor.numel": numel, "tensor.one_hot": one_hot, "tensor.erf": erf, "nn.gelu": gelu,
               "tensor.reduce_sum": reduce_sum, "tensor.relu": relu, "tensor.constant": cupy.asarray, "tensor.matmul": device_matmul(cupy),
               "tensor.transpose": device_transpose(cupy)}
    return kernels | {"tensor.random_uniform": _random_uniform(cupy)} | _comm(cupy)


def _random_uniform(cupy: Any) -> Callable[..., Any]:
    """The Philox draw as one device kernel in f32 and f64 (``philox.py``); other float dtypes draw on the host."""
    from kiln.backends.cupy.launch import compiled

    staged = _on_host(NUMPY.get("tensor.random_uniform"), cupy)

    def kernel(seed: Any, like: Any, *, dtype: DType, stream: int) -> Any:
        dtype = DType.of(dtype)
        if dtype not in (DType.f32, DType.f64):
            return staged(seed, like, dtype=dtype, stream=stream)
        out = cupy.empty(like.shape, dtype.numpy)
        if out.size:
            seed = cupy.asarray(seed).astype(np.int64).reshape(1)  # astype copies: contiguous
            draw = compiled(cupy, philox_uniform_source(dtype))
            draw(*launch_shape(out.size, THREADS), (seed, out, np.int64(out.size), np.uint64(stream)))
        return out

    return kernel


def _comm(cupy: Any) -> dict[str, Callable[..., Any]]:
    """The comm kernels: device arrays straight to a communicator that takes them (NCCL), host copies to MPI."""
    direct = comm_kernels(lambda result: result)

    def kernel(name: str) -> Callable[..., Any]:
        staged = _on_host(NUMPY.get(name), cupy)
        return lambda *arrays, **attrs: (direct[name] if getattr(current(), "device_arrays", False) else staged)(*arrays, **attrs)

    return {name: kernel(name) for name in direct}


@lru_cache(maxsize=1)
def cupy_table() -> LoweringTable:
    """The CuPy table (imports CuPy): NumPy's parent entries stay as the fallback for anything not listed here."""
    import cupy
    import cupy.lib.stride_tricks as stride_tricks

    table = LoweringTable("cupy", parent=NUMPY)
    array_module = ArrayModule(cupy, stride_tricks)
    plain = _rebound_kernels(array_module)
    rows = row_kernels(cupy, plain)
    overrides = _overrides(cupy, plain)
    replacements = {
        lowering.__name__: {"log_softmax": rows["nn.log_softmax"]},
        lowering_losses.__name__: {"log_softmax": rows["nn.log_softmax"]},
        lowering_movement.__name__: {"erf": overrides["tensor.erf"], "stable_argsort": _stable_argsort(cupy)},
        lowering_scan.__name__: {"running": log_depth_running(cupy)},
    }
    table.kernels.update(_rebound_kernels(array_module, replacements))  # the general cross-entropy reads its log-softmax from a row kernel
    table.kernels.update({name: getattr(cupy, function) for name, function in CUPY_FUNCTIONS.items()})
    table.kernels.update(overrides | rows)
    table.kernels.update(cross_entropy_kernels(cupy, dict(table.kernels), row_launcher(cupy), _labels_checked_later))
    for name in FUSED_NAMES:
        table.kernels[name] = _launched_by_generated_code(name)
    return table


def row_launcher(cupy: Any) -> Callable[..., None]:
    """``launch(source, blocks, *args)``: a raw row kernel, ``blocks`` blocks of ``THREADS`` (one per row, but for layer
    norm's gradient)."""
    from kiln.backends.cupy.launch import compiled

    def launch(source: Any, blocks: int, *args: Any) -> None:
        compiled(cupy, source)((blocks,), (THREADS,), args)

    return launch


def row_kernels(cupy: Any, fallback: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Softmax (also masked), its gradient, log-softmax and layer norm as one row kernel each where they fit (``row_op_fuses``), else
    ``fallback``'s."""
    launch = row_launcher(cupy)

    def softmax(log: bool) -> Callable[..., Any]:
        name = "nn.log_softmax" if log else "nn.softmax"

        def kernel(x: Any, *, axis: int) -> Any:
            if x.size == 0 or not row_op_fuses(name, axis, x.ndim, DType.of(x.dtype)):
                return fallback[name](x, axis=axis)
            rows = cupy.ascontiguousarray(cupy.moveaxis(x, axis, -1))  # a copy only when axis is not the last
            y = cupy.empty_like(rows)
            launch(softmax_source(DType.of(x.dtype), log), rows.size // rows.shape[-1], rows, y, np.int64(rows.shape[-1]))
            return cupy.moveaxis(y, -1, axis)

        return kernel

    def softmax_grad(y: Any, g: Any, *, axis: int) -> Any:
        if y.size == 0 or not row_op_fuses("nn.softmax_grad", axis, y.ndim, DType.of(y.dtype)):
            return y * (g - (g * y).sum(axis=axis, keepdims=True))
        rows_y, rows_g = (cupy.ascontiguousarray(cupy.moveaxis(a, axis, -1)) for a in (y, g))  # copies only off the last axis
        dx = cupy.empty_like(rows_y)
        launch(softmax_grad_source(DType.of(y.dtype)), rows_y.size // rows_y.shape[-1], rows_y, rows_g, dx, np.int64(rows_y.shape[-1]))
        return cupy.moveaxis(dx, -1, axis)

    def masked_softmax(x: Any, keep: Any) -> Any:
        if x.size == 0 or not masked_rows_apply(TensorType.of_array(x), TensorType.of_array(keep)):
            return softmax(False)(cupy.where(keep, x, x.dtype.type(MASKED_SCORE)), axis=-1)
        x, cols = cupy.ascontiguousarray(x), x.shape[-1]
        mask = cupy.ascontiguousarray(keep).reshape(-1, cols)
        y = cupy.empty_like(x)
        launch(masked_softmax_source(DType.of(x.dtype)), x.size // cols, x, mask, y, np.int64(cols), np.int64(mask.shape[0]))
        return y

    def layer_norm(x: Any, weight: Any, bias: Any, *, eps: float) -> Any:
        if x.size == 0 or not row_op_fuses("nn.layer_norm", None, x.ndim, DType.of(x.dtype)):
            return fallback["nn.layer_norm"](x, weight, bias, eps=eps)
        x, y, cols = cupy.ascontiguousarray(x), cupy.empty(x.shape, x.dtype), max(weight.size, 1)
        weight, bias = cupy.ascontiguousarray(weight), cupy.ascontiguousarray(bias)
        launch(layer_norm_source(DType.of(x.dtype)), x.size // cols, x, weight, bias, y, np.int64(cols), computed_in(x.dtype)(eps))
        return y

    def layer_norm_grad(x: Any, weight: Any, g: Any, *, eps: float) -> tuple[Any, Any, Any]:
        if x.size == 0:
            return cupy.empty_like(x), cupy.zeros(weight.shape, x.dtype), cupy.zeros(weight.shape, x.dtype)
        x, g, weight = cupy.ascontiguousarray(x), cupy.ascontiguousarray(g), cupy.ascontiguousarray(weight)
        cols = max(weight.size, 1)
        rows = x.size // cols
        blocks, rows_per_block = layer_norm_grad_blocks(rows)
        computed = computed_in(x.dtype)
        dx, partials = cupy.empty(x.shape, x.dtype), cupy.empty((2, blocks, cols), computed)
        launch(layer_norm_grad_source(DType.of(x.dtype)), blocks, x, weight, g, dx, partials[0], partials[1],
               np.int64(rows), np.int64(cols), np.int64(rows_per_block), computed(eps))
        sums = partials.sum(axis=1).astype(x.dtype, copy=False)  # float16 rows: float partials, rounded once
        return dx, sums[0].reshape(weight.shape), sums[1].reshape(weight.shape)

    return {"nn.softmax": softmax(False), "nn.log_softmax": softmax(True), "nn.softmax_grad": softmax_grad,
            "nn.masked_softmax": masked_softmax, "nn.layer_norm": layer_norm, "nn.layer_norm_grad": layer_norm_grad}


def static_table() -> LoweringTable:
    """The table's shape without CuPy: NumPy's entries plus the fused ops and row kernels (for planning and coverage)."""
    table = LoweringTable("cupy", parent=NUMPY)
    for name in FUSED_NAMES + ROW_KERNEL_NAMES:
        table.kernels[name] = _launched_by_generated_code(name)
    return table


def _launched_by_generated_code(name: str) -> Callable[..., Any]:
    def kernel(*arrays: Any, **attrs: Any) -> Any:
        raise RuntimeError(f"{name} runs as a generated CUDA kernel (bound at compile time, or a row kernel of cupy_table()), "
                           "not through the static table")

    return kernel
