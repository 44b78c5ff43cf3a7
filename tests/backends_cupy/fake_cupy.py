"""A stand-in ``cupy`` module on NumPy, so the CuPy backend's runtime runs (and is tested) on a machine without a GPU.

Device arrays are ``DeviceArray``, a NumPy subclass that refuses host arrays in its operations, as CuPy does
(``TypeError: Unsupported type <class 'numpy.ndarray'>``): a kernel that builds a host array where it should
build a device one fails here as it would on the GPU. ``ElementwiseKernel`` and ``ReductionKernel`` translate the generated CUDA body into
NumPy expressions (the generated code is regular: one ``const T tN = expr;`` per line, casts, ternaries and
math calls) and evaluate them over broadcast inputs. What it cannot check is the CUDA itself: the golden files
and the nvcc test do that, and the GPU tests check both together.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import types
from typing import Any

import numpy as np

import cpu_cuda
import fake_cublas
from kiln.backends.cupy.expressions import nan_max, nan_min

SYNCS: list[str] = []
"""Each read of device data by the host (``get``, ``bool``, ``float``, ``item``, ``asnumpy``, ...), in order: on a GPU
each waits for the device to finish its queued work. Tests clear it and look."""


def _synchronizing(name: str) -> Any:
    original = getattr(np.ndarray, name)

    def read(self: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        SYNCS.append(name)
        return original(self.view(np.ndarray), *args, **kwargs)

    return read


class DeviceArray(np.ndarray):
    """An array "on the device": operations with host (plain NumPy) arrays raise, results stay on the device (0-d
    results too: CuPy's reductions give 0-d arrays, not host scalars), and the host reading one is recorded (SYNCS)."""

    def get(self) -> np.ndarray:
        SYNCS.append("get")
        return np.array(self.view(np.ndarray))

    __bool__, __float__, __int__, __index__ = (_synchronizing(name) for name in ("__bool__", "__float__", "__int__", "__index__"))
    item, tolist = _synchronizing("item"), _synchronizing("tolist")

    @property
    def data(self) -> types.SimpleNamespace:  # type: ignore[override]
        """CuPy's ``MemoryPointer``: ``.ptr`` is the address the NCCL calls take (here host memory)."""
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ctypes.data, False), "version": 3,
                "strides": None if self.flags.c_contiguous else self.strides}

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        _refuse_host(inputs + tuple(kwargs.get("out", ())), ufunc.__name__)
        plain = [x.view(np.ndarray) if isinstance(x, DeviceArray) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, DeviceArray) else o for o in kwargs["out"])
        result = getattr(ufunc, method)(*plain, **kwargs)
        if "out" in kwargs and result is not None:
            return _device(result) if not isinstance(result, tuple) else result
        return _device(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        _refuse_host(_flat(args) + _flat(tuple(kwargs.values())), func.__name__)
        return _device(func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}))  # NumPy's own insides unpoliced


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value.view(np.ndarray) if isinstance(value, DeviceArray) else value


def _flat(items: tuple[Any, ...]) -> tuple[Any, ...]:
    out: tuple[Any, ...] = ()
    for item in items:
        out += _flat(tuple(item)) if isinstance(item, (list, tuple)) else (item,)
    return out


def _refuse_host(values: tuple[Any, ...], where: str) -> None:
    for value in values:
        if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
            raise TypeError(f"Unsupported type {type(value)} in {where}: a host array reached a device operation")


def _device(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_device(v) for v in value)
    if isinstance(value, np.generic):
        return np.asarray(value).view(DeviceArray)
    return value.view(DeviceArray) if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray) else value


def _on_device(function: Any) -> Any:
    """A NumPy function as CuPy's: its array results are device arrays."""
    return lambda *args, **kwargs: _device(function(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}))


def asarray(value: Any, dtype: Any = None, order: Any = None) -> DeviceArray:
    return np.array(value.view(np.ndarray) if isinstance(value, DeviceArray) else value, dtype=dtype, copy=None, order=order).view(DeviceArray)


def asnumpy(value: Any) -> np.ndarray:
    if isinstance(value, DeviceArray):
        SYNCS.append("asnumpy")
        return np.array(value.view(np.ndarray))
    return np.asarray(value)


def argsort(a: Any, axis: int = -1, kind: None = None) -> DeviceArray:
    """CuPy's argsort: always stable (NaNs last), ``kind`` only ``None`` (CuPy 8 has no ``kind`` at all), so a kernel
    passing NumPy's ``kind="stable"`` on the device fails here too."""
    if kind is not None:
        raise TypeError(f"argsort(kind={kind!r}): CuPy's argsort is always stable and takes no other kind")
    return _device(np.argsort(_plain(a), axis=axis, kind="stable"))


def _numpy_attribute(name: str) -> Any:
    value = getattr(np, name)
    if callable(value) and not isinstance(value, (type, np.ufunc)):
        return _on_device(value)
    return value


C_DTYPES = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64, "bool": np.bool_,
            "unsigned int": np.uint32, "unsigned long long": np.uint64, "unsigned char": np.uint8, "signed char": np.int8,
            "short": np.int16, "unsigned short": np.uint16}
"""The unsigned types: the integer shifts' rules (expressions.py) shift through them and compare counts as them."""
CUPY_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64, "bool": np.bool_,
               "uint8": np.uint8, "int8": np.int8, "int16": np.int16}
HALF_CONVERSIONS = {"__half2float": "_cast_float", "__float2half_rn": "_cast_half"}
"""cuda_fp16.h's conversions: float16 to float (exact), float to float16 (to nearest even, as NumPy's astype)."""
TYPE = r"(float|double|unsigned int|unsigned long long|unsigned char|unsigned short|signed char|short|int|long long|bool)"
FUNCTIONS = {"max": "np.maximum", "min": "np.minimum", "exp": "np.exp", "log": "np.log", "tanh": "np.tanh", "sqrt": "np.sqrt",
             "fabs": "np.abs", "abs": "np.abs", "pow": "np.power", "erf": "_erf", "sin": "np.sin", "cos": "np.cos",
             "floor": "np.floor", "ceil": "np.ceil", "rint": "np.rint", "atan": "np.arctan", "asin": "np.arcsin",
             "acos": "np.arccos"}


def _cast(name: str):
    dtype = C_DTYPES[name]
    return lambda value: np.asarray(value).astype(dtype)[()]


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.asarray(x).dtype])(x)


def translate(expression: str) -> str:
    """One generated C expression as a NumPy expression."""
    text = re.sub(r"__int_as_float\(0xff800000\)|__longlong_as_double\(0xfff0000000000000ULL\)", "(-np.inf)", expression)
    text = re.sub(r"__int_as_float\(0x7f800000\)|__longlong_as_double\(0x7ff0000000000000ULL\)", "(np.inf)", text)
    text = re.sub(rf"\({TYPE}\)\(", lambda m: f"_cast_{m.group(1).replace(' ', '_')}(", text)
    text = re.sub(rf"\({TYPE}\)([\w.eE+-]+?)(?=[\s),;]|$)", lambda m: f"_cast_{m.group(1).replace(' ', '_')}({m.group(2)})", text)
    text = _ternaries_as_where(text)
    for c_name, numpy_name in {**HALF_CONVERSIONS, **FUNCTIONS}.items():
        text = re.sub(rf"(?<![\w.]){c_name}\(", numpy_name + "(", text)
    return text.replace("ULL", "").replace("LL", "").replace("true", "True").replace("false", "False")


def _ternaries_as_where(text: str) -> str:
    """Each parenthesized ``(c ? a : b)`` as ``np.where(c, a, b)``, innermost first (generated code parenthesizes every
    ternary; its operands may be ternaries or calls themselves)."""
    while True:
        group = _innermost_ternary(text)
        if group is None:
            return text
        start, end, question, colon = group
        condition, chosen, other = text[start + 1:question], text[question + 1:colon], text[colon + 1:end]
        text = f"{text[:start]}np.where({condition.strip()}, {chosen.strip()}, {other.strip()}){text[end + 1:]}"


def _innermost_ternary(text: str) -> tuple[int, int, int, int] | None:
    """``(open, close, ?, :)`` positions of the first parenthesized group to close that has a ternary at its top level."""
    opened: list[list[int]] = []  # per open group: its start, then the positions of its top-level ? and :
    for i, char in enumerate(text):
        if char == "(":
            opened.append([i])
        elif char in "?:" and opened:
            opened[-1].append(i)
        elif char == ")" and opened:
            group = opened.pop()
            if len(group) == 3 and text[group[1]] == "?" and text[group[2]] == ":":
                return group[0], i, group[1], group[2]
    return None


NAMESPACE = {"np": np, "_erf": _erf, "_cast_half": lambda value: np.asarray(value).astype(np.float16)[()],
             **{f"_cast_{name.replace(' ', '_')}": _cast(name) for name in C_DTYPES}}


def _run_body(body: str, values: dict[str, Any]) -> dict[str, Any]:
    scope = {**NAMESPACE, **values}
    for line in body.splitlines():
        line = line.strip().rstrip(";")
        match = re.fullmatch(rf"const {TYPE} (\w+) = (.+)", line)
        if match:
            scope[match.group(2)] = _cast(match.group(1))(eval(translate(match.group(3)), scope))
        elif line.startswith("return "):
            scope["__return__"] = eval(translate(line[len("return "):]), scope)
        elif line:
            target, expression = line.split(" = ", 1)
            scope[target] = eval(translate(expression), scope)
    return scope


def _params(spec: str) -> list[tuple[Any, str]]:
    return [(CUPY_DTYPES[p.split()[0]], p.split()[1]) for p in spec.split(", ") if p]


def _check_array_types(name: str, params: list[tuple[Any, str]], arrays: tuple[Any, ...]) -> None:
    """CuPy's rules for its kernels' arguments: an array given for a typed parameter must have exactly its dtype (0-d
    arrays too; scalars are cast), else ``TypeError: Type is mismatched``; and at least one argument must be an array
    (the loop's size), else ``ValueError: Loop size is undecided``."""
    for (dtype, param), a in zip(params, arrays):
        if isinstance(a, DeviceArray) and a.dtype != np.dtype(dtype):
            raise TypeError(f"Type is mismatched. {param} {a.dtype} {np.dtype(dtype)} (kernel {name})")
    if not any(isinstance(a, DeviceArray) for a in arrays):
        raise ValueError(f"Loop size is undecided. (kernel {name}: CuPy needs at least one array argument)")


class ElementwiseKernel:
    def __init__(self, in_params: str, out_params: str, body: str, name: str, preamble: str = ""):
        self.ins, self.outs, self.body, self.name = _params(in_params), _params(out_params), body, name

    def __call__(self, *arrays: Any) -> Any:
        assert len(arrays) == len(self.ins), f"{self.name}: {len(arrays)} arrays for {len(self.ins)} inputs"
        assert all(isinstance(a, (DeviceArray, np.generic, int, float)) for a in arrays), f"{self.name}: inputs must be device arrays or scalars"
        _check_array_types(self.name, self.ins, arrays)
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
        values = {name: np.broadcast_to(np.asarray(a, dtype), shape) for (dtype, name), a in zip(self.ins, arrays)}
        scope = _run_body(self.body, values)
        outputs = tuple(np.array(np.broadcast_to(scope[name], shape), dtype=dtype).view(DeviceArray) for dtype, name in self.outs)
        return outputs if len(outputs) > 1 else outputs[0]


class ReductionKernel:
    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name, reduce_type=None, preamble=""):
        self.ins, self.outs, self.name = _params(in_params), _params(out_params), name
        self.map_expr, self.reduce_expr, self.post = map_expr, reduce_expr, post_map_expr
        self.functions = _device_functions(preamble)

    def __call__(self, *arrays: Any, axis: Any = None, keepdims: bool = False) -> Any:
        assert all(isinstance(a, (DeviceArray, np.generic, int, float)) for a in arrays), f"{self.name}: inputs must be device arrays or scalars"
        _check_array_types(self.name, self.ins, arrays)
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
        values = {name: np.broadcast_to(np.asarray(a, dtype), shape) for (dtype, name), a in zip(self.ins, arrays)}
        mapped = eval(translate(self.map_expr), {**NAMESPACE, **self.functions, **values})
        reduce = {"a + b": np.sum, nan_max("a", "b"): np.max, nan_min("a", "b"): np.min}[self.reduce_expr]
        reduced = reduce(np.broadcast_to(mapped, shape), axis=axis, keepdims=keepdims)
        target, expression = self.post.split(" = ", 1)  # the post-map, evaluated on the reduced values (the mean's
        sizes = {"_in_ind.size()": float(np.prod(shape)), "_out_ind.size()": float(max(np.size(reduced), 1))}  # counts)
        for name, size in sizes.items():
            expression = expression.replace(name, repr(size))
        value = eval(translate(expression), {**NAMESPACE, "a": np.asarray(reduced)})
        return np.asarray(value, dtype=self.outs[0][0]).view(DeviceArray)


class RawKernel:
    """Row kernels by name, computed in NumPy from the same arguments the launcher passes (rows, then threads).

    The arguments are checked against the kernel's own parameter list (count, array dtypes, scalar dtypes: CuPy
    passes a NumPy scalar by its dtype). ``KILN_FAKE_CUPY_RUN_CUDA=1`` runs the CUDA source itself on the CPU
    (cpu_cuda.py) instead of the NumPy recomputation: exact, but ~10 ms a row, too slow for every run. The Philox
    draw always runs its CUDA on the CPU (it has no barriers, so it is fast there)."""

    def __init__(self, code: str, name: str):
        assert f"void {name}(" in code, f"{name} is not defined in its source"
        self.code, self.name, self.params = code, name, cpu_cuda.kernel_params(code, name)

    def __call__(self, grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
        assert block == (256,) and all(isinstance(a, (DeviceArray, np.generic)) for a in args), f"{self.name}: {[type(a) for a in args]}"
        assert all(a.flags.c_contiguous for a in args if isinstance(a, np.ndarray))
        cpu_cuda.checked_arguments(self.name, self.params, _plain(tuple(args)))
        if os.environ.get("KILN_FAKE_CUPY_RUN_CUDA") == "1" or "philox" in self.name:
            return cpu_cuda.run_raw_kernel(self.code, self.name, grid, block, _plain(tuple(args)))
        args = tuple(_read_as_float(a, param) for a, (param, _) in zip(args, self.params))
        if "layer_norm_grad" in self.name:
            return _layer_norm_grad_rows(grid[0], [a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args])
        if "layer_norm" in self.name:
            x, weight, bias, y, cols, eps = (a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args)
            rows = x.reshape(grid[0], int(cols))
            centered = rows - rows.mean(axis=1, keepdims=True)
            normalized = centered / np.sqrt((centered * centered).mean(axis=1, keepdims=True) + eps)
            y.view(np.ndarray).reshape(grid[0], int(cols))[...] = normalized * weight.reshape(-1) + bias.reshape(-1)
            return
        if "cross_entropy" in self.name:
            return _cross_entropy_rows(self.name, grid[0], [a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args])
        if "masked_softmax" in self.name:
            x, keep, y, cols, mask_rows = (a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args)
            rows = x.reshape(grid[0], int(cols))
            kept = keep.reshape(int(mask_rows), int(cols))[np.arange(grid[0]) % int(mask_rows)]
            scores = np.where(kept, rows, rows.dtype.type(-1e9))
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            y.reshape(grid[0], int(cols))[...] = shifted / shifted.sum(axis=1, keepdims=True)
            return
        if "softmax_grad" in self.name:
            y, g, dx, cols = (a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args)
            y, g = y.reshape(grid[0], int(cols)), g.reshape(grid[0], int(cols))
            dx.reshape(grid[0], int(cols))[...] = y * (g - (g * y).sum(axis=1, keepdims=True))
            return
        x, y, cols = (a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args)
        rows = x.reshape(grid[0], int(cols))
        shifted = rows - rows.max(axis=1, keepdims=True)
        total = np.exp(shifted).sum(axis=1, keepdims=True)
        y.view(np.ndarray).reshape(grid[0], int(cols))[...] = shifted - np.log(total) if "log_softmax" in self.name else np.exp(shifted) / total


def _read_as_float(value: Any, param: str) -> Any:
    """A float16 row kernel's input (``const __half*``) as float32 for the NumPy recomputation, which then computes in
    float as the kernel does; its float16 outputs are written in place, rounded by NumPy's assignment."""
    return value.astype(np.float32) if param.startswith("const __half") else value


def _layer_norm_grad_rows(blocks: int, args: list) -> None:
    """row_kernels.layer_norm_grad_source recomputed: dx, and each block's partial sums of ``g xh`` and ``g`` over its rows."""
    x, weight, g, dx, partial_weight, partial_bias, rows, cols, rows_per_block, eps = args
    x, g = x.reshape(int(rows), int(cols)), g.reshape(int(rows), int(cols))
    centered = x - x.mean(axis=1, keepdims=True)
    inverse_std = 1 / np.sqrt((centered * centered).mean(axis=1, keepdims=True) + eps)
    normalized, d_normalized = centered * inverse_std, g * weight.reshape(-1)
    dx.reshape(int(rows), int(cols))[...] = inverse_std * (d_normalized - d_normalized.mean(axis=1, keepdims=True)
                                                           - normalized * (d_normalized * normalized).mean(axis=1, keepdims=True))
    for block in range(blocks):
        own = slice(block * int(rows_per_block), (block + 1) * int(rows_per_block))
        partial_weight.reshape(blocks, int(cols))[block] = (g * normalized)[own].sum(axis=0)
        partial_bias.reshape(blocks, int(cols))[block] = g[own].sum(axis=0)


def _cross_entropy_rows(name: str, rows: int, args: list) -> None:
    """loss_kernels.py's row kernels recomputed: per-row losses, or the gradient rows (``scale[i * stride]`` per row)."""
    if "grad" in name:
        x, labels, scale, stride, out, cols, ignore_index, smoothing = args
    else:
        x, labels, out, cols, ignore_index, smoothing = args
    x = x.reshape(rows, int(cols))
    kept = labels != ignore_index
    safe = np.where(kept & (labels >= 0) & (labels < cols), labels, 0)
    top = x.max(axis=1, keepdims=True)
    log_total = np.log(np.exp(x - top).sum(axis=1, keepdims=True))
    if "grad" in name:
        target = np.eye(int(cols), dtype=x.dtype)[safe] * (1 - smoothing) + smoothing / cols
        factor = np.where(kept, scale[np.arange(rows) * int(stride)], 0).astype(x.dtype)
        out.reshape(rows, int(cols))[...] = (np.exp(x - top - log_total) - target) * factor[:, None]
    else:
        loss = (top + log_total)[:, 0] - (1 - smoothing) * x[np.arange(rows), safe] - smoothing * x.mean(axis=1)
        out[...] = np.where(kept, loss, 0)


def _device_functions(preamble: str) -> dict[str, Any]:
    functions = {}
    for match in re.finditer(rf"__device__ {TYPE} (\w+)\(([^)]*)\) \{{\n(.*?)\n\}}", preamble, re.S):
        names = [p.split()[-1] for p in match.group(3).split(", ") if p]
        body = match.group(4)
        functions[match.group(2)] = (lambda names, body: lambda *args: _run_body(body, dict(zip(names, args)))["__return__"])(names, body)
    return functions


def _as_strided(x: Any, shape: Any = None, strides: Any = None) -> DeviceArray:
    """``cupy.lib.stride_tricks.as_strided``: CuPy's signature, which has no ``writeable``."""
    return _device(np.lib.stride_tricks.as_strided(_plain(x), shape, strides))


class Event:
    """``cupy.cuda.Event``: ``record`` notes the host clock (the stand-in runs every kernel as it is called)."""

    def __init__(self) -> None:
        self.recorded: float | None = None

    def record(self) -> None:
        self.recorded = time.perf_counter()

    def synchronize(self) -> None:
        assert self.recorded is not None, "synchronize on an event never recorded"


def install(monkeypatch: Any) -> types.ModuleType:
    """Put the fake ``cupy`` (and the submodules the backend imports) into ``sys.modules`` for one test."""
    cupy = types.ModuleType("cupy")
    cupy.__getattr__ = _numpy_attribute  # everything else is NumPy's, making device arrays
    cupy.ndarray, cupy.asarray, cupy.asnumpy, cupy.argsort = DeviceArray, asarray, asnumpy, argsort
    cupy.ElementwiseKernel, cupy.ReductionKernel, cupy.RawKernel = ElementwiseKernel, ReductionKernel, RawKernel
    stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
    stride_tricks.as_strided = _as_strided
    cupy.lib = types.SimpleNamespace(stride_tricks=stride_tricks)
    device = types.ModuleType("cupy.cuda.device")
    device.get_cublas_handle = lambda: "cublas-handle"
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), device=device, Event=Event,
                                      get_elapsed_time=lambda start, end: (end.recorded - start.recorded) * 1e3)
    linalg = types.ModuleType("cupy._core._routines_linalg")
    compute_types = {np.dtype(np.float32): 4}
    linalg.COMPUTE_TYPE_TF32, linalg.COMPUTE_TYPE_FP32 = 7, 4
    linalg.set_compute_type = lambda dtype, kind: compute_types.__setitem__(np.dtype(dtype), kind)
    linalg.get_compute_type = lambda dtype: compute_types[np.dtype(dtype)]
    core = types.ModuleType("cupy._core")
    core._routines_linalg = linalg
    special = types.ModuleType("cupyx.scipy.special")
    special.erf = _on_device(lambda x: _erf(np.asarray(x)))
    for name, module in {**fake_cublas.modules(), "cupy.cuda": cupy.cuda, "cupy.cuda.device": device,
                         "cupy": cupy, "cupy._core": core, "cupy._core._routines_linalg": linalg, "cupy.lib": cupy.lib,
                         "cupy.lib.stride_tricks": stride_tricks, "cupyx": types.ModuleType("cupyx"),
                         "cupyx.scipy": types.ModuleType("cupyx.scipy"), "cupyx.scipy.special": special}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return cupy
