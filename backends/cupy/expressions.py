"""CUDA C expressions for the elementwise sub-ops of a fusion group: one rule a line.

A rule takes the operand expressions, the sub-op's attributes and the C type
of its result, and returns one C expression. Literals are cast to the result
type (``(float)0.5``), so one rule serves float and double; the CUDA math
headers overload ``exp``, ``tanh``, ``erf``, ... for both.

float16 is stored in 16 bits and computed in float (``C_TYPES``: a half value is a
``float`` local holding a number that float16 represents exactly); the rule's
result is rounded to float16 once (``round_to_half``: ``__float2half_rn``, to
nearest even), so each sub-op rounds as PyTorch's half kernels round their results.

```python
C_EXPRESSIONS["tensor.relu"](["t2"], {}, "float")  ->  "(t2 < (float)0 ? (float)0 : t2)"
```
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.types import DType

Rule = Callable[[list[str], dict[str, Any], str], str]

C_TYPES = {DType.f16: "float", DType.f32: "float", DType.f64: "double", DType.u8: "unsigned char", DType.i8: "signed char",
           DType.i16: "short", DType.i32: "int", DType.i64: "long long", DType.bool: "bool"}
"""IR dtype -> the C type a kernel computes in (float16: float, rounded to half after each sub-op)."""

STORAGE_TYPES = {**C_TYPES, DType.f16: "__half"}
"""IR dtype -> the C type of its elements in memory (``__half``: cuda_fp16.h's, which CuPy's ``float16`` wraps)."""

CUPY_TYPES = {DType.f16: "float16", DType.f32: "float32", DType.f64: "float64", DType.u8: "uint8", DType.i8: "int8",
              DType.i16: "int16", DType.i32: "int32", DType.i64: "int64", DType.bool: "bool"}
"""IR dtype -> the type name CuPy's kernel parameter lists use."""

NARROW_C_TYPES = ("unsigned char", "signed char", "short")
"""C promotes these to int in arithmetic: each sub-expression is cast back, so it wraps at its width as in PyTorch."""
INTEGER_TYPES = (*NARROW_C_TYPES, "int", "long long", "bool")

SQRT_HALF = 0.7071067811865476
SQRT_TWO_OVER_PI = 0.7978845608028654


def _binary(symbol: str) -> Rule:
    return lambda a, attrs, t: f"({a[0]} {symbol} {a[1]})"


def _call(function: str) -> Rule:
    return lambda a, attrs, t: f"{function}({', '.join(a)})"


def _pow(a: list[str], attrs: dict[str, Any], t: str) -> str:
    # integer powers through double: CUDA has no pow(int, int)
    if t in INTEGER_TYPES:
        return f"({t})pow((double){a[0]}, (double){a[1]})"
    return f"pow({a[0]}, {a[1]})"


def nan_max(a: str, b: str) -> str:
    """``max(a, b)`` that is NaN when either is, as NumPy's ``maximum`` and PyTorch's (CUDA's ``max`` is ``fmaxf``,
    which drops a NaN operand: a diverging activation would pass a ReLU as 0). Also right for integers."""
    return f"({b} != {b} ? {b} : ({a} < {b} ? {b} : {a}))"


def nan_min(a: str, b: str) -> str:
    """``min(a, b)``, NaN when either is (see ``nan_max``)."""
    return f"({b} != {b} ? {b} : ({b} < {a} ? {b} : {a}))"


def _clip(a: list[str], attrs: dict[str, Any], t: str) -> str:
    # clip(x) = min(max(x, lo), hi), either bound optional; a NaN x stays NaN
    expression = a[0]
    if attrs.get("min") is not None:
        expression = nan_max(f"({t}){attrs['min']!r}", expression)
    if attrs.get("max") is not None:
        expression = nan_min(f"({t}){attrs['max']!r}", expression)
    return expression


def _gelu(a: list[str], attrs: dict[str, Any], t: str) -> str:
    x = a[0]
    if attrs.get("approximate") == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        return f"(({t})0.5 * {x} * (({t})1 + tanh(({t}){SQRT_TWO_OVER_PI} * ({x} + ({t})0.044715 * {x} * {x} * {x}))))"
    # 0.5 x (1 + erf(x / sqrt 2))
    return f"(({t})0.5 * {x} * (({t})1 + erf({x} * ({t}){SQRT_HALF})))"


def _sigmoid(a: list[str], attrs: dict[str, Any], t: str) -> str:
    # 1 / (1 + exp(-a)): a few ulps relative to the result in both tails; exp overflows to inf far left (the result
    # is 0, as the NumPy backend's and PyTorch's); NaN stays NaN
    return f"(({t})1 / (({t})1 + exp(-{a[0]})))"


SHIFT_WIDTHS = {"unsigned char": 8, "signed char": 8, "short": 16, "int": 32, "long long": 64}
"""The bits of the integer C types the shifts take (``compiler/ops/bitwise.py``: uint8 to int64)."""
UNSIGNED_C_TYPES = {"unsigned char": "unsigned char", "signed char": "unsigned char", "short": "unsigned short",
                    "int": "unsigned int", "long long": "unsigned long long"}


def _left_shift(a: list[str], attrs: dict[str, Any], t: str) -> str:
    # a << s for 0 <= s < bits (through the unsigned type: C leaves a negative a << s undefined), else 0; a negative
    # count read as unsigned is out of range too
    bits = SHIFT_WIDTHS[t]
    unsigned = UNSIGNED_C_TYPES[t]
    return f"((unsigned long long)({a[1]}) < {bits}ULL ? ({t})(({unsigned})({a[0]}) << ({unsigned})({a[1]})) : ({t})0)"


def _right_shift(a: list[str], attrs: dict[str, Any], t: str) -> str:
    # a >> s (arithmetic, as CUDA shifts signed types) for 0 <= s < bits, else a >> (bits - 1): the sign; 0 if unsigned
    bits = SHIFT_WIDTHS[t]
    if t.startswith("unsigned"):
        return f"((unsigned long long)({a[1]}) < {bits}ULL ? ({a[0]} >> {a[1]}) : ({t})0)"
    return f"({a[0]} >> ((unsigned long long)({a[1]}) < {bits}ULL ? {a[1]} : {bits - 1}))"


def _cast(a: list[str], attrs: dict[str, Any], t: str) -> str:
    return f"({a[0]} != 0)" if t == "bool" else f"({t})({a[0]})"


C_EXPRESSIONS: dict[str, Rule] = {
    "tensor.add": _binary("+"),                                                      # a + b
    "tensor.sub": _binary("-"),                                                      # a - b
    "tensor.mul": _binary("*"),                                                      # a * b
    "tensor.div": _binary("/"),                                                      # a / b
    "tensor.pow": _pow,                                                              # a ** b
    "tensor.maximum": lambda a, attrs, t: nan_max(a[0], a[1]),                      # max(a, b), NaN if either is
    "tensor.minimum": lambda a, attrs, t: nan_min(a[0], a[1]),                      # min(a, b), NaN if either is
    "tensor.equal": _binary("=="),                                                   # a == b
    "tensor.not_equal": _binary("!="),                                               # a != b
    "tensor.less": _binary("<"),                                                     # a < b
    "tensor.less_equal": _binary("<="),                                              # a <= b
    "tensor.greater": _binary(">"),                                                  # a > b
    "tensor.greater_equal": _binary(">="),                                           # a >= b
    "tensor.neg": lambda a, attrs, t: f"(-{a[0]})",                                  # -a
    "tensor.exp": _call("exp"),                                                      # e^a
    "tensor.log": _call("log"),                                                      # ln a
    "tensor.tanh": _call("tanh"),                                                    # tanh a
    "tensor.sqrt": _call("sqrt"),                                                    # sqrt a
    "tensor.rsqrt": lambda a, attrs, t: f"(({t})1 / sqrt({a[0]}))",                  # 1 / sqrt a (as NumPy rounds it)
    "tensor.erf": _call("erf"),                                                      # erf a
    "tensor.sin": _call("sin"),                                                      # sin a
    "tensor.cos": _call("cos"),                                                      # cos a
    "tensor.floor": _call("floor"),                                                  # the integral value <= a
    "tensor.ceil": _call("ceil"),                                                    # the integral value >= a
    "tensor.round": _call("rint"),                                                   # nearest, half to even (CUDA's round: away from 0)
    "tensor.atan": _call("atan"),                                                    # arctan a, in [-pi/2, pi/2]
    "tensor.asin": _call("asin"),                                                    # arcsin a, NaN outside [-1, 1]
    "tensor.acos": _call("acos"),                                                    # arccos a, in [0, pi]
    "tensor.abs": lambda a, attrs, t: f"abs({a[0]})" if t in INTEGER_TYPES else f"fabs({a[0]})",  # |a|
    "tensor.relu": lambda a, attrs, t: f"({a[0]} < ({t})0 ? ({t})0 : {a[0]})",      # max(a, 0), NaN stays NaN
    "tensor.sigmoid": _sigmoid,                                                      # 1 / (1 + e^-a)
    "tensor.where": lambda a, attrs, t: f"({a[0]} ? {a[1]} : {a[2]})",               # c ? a : b
    "tensor.cast": _cast,                                                            # (T) a
    "tensor.clip": _clip,                                                            # min(max(a, lo), hi)
    "tensor.bitwise_and": _binary("&"),                                              # a & b (integers)
    "tensor.bitwise_or": _binary("|"),                                               # a | b
    "tensor.bitwise_xor": _binary("^"),                                              # a ^ b
    "tensor.bitwise_not": lambda a, attrs, t: f"(~{a[0]})",                          # ~a = -a - 1
    "tensor.left_shift": _left_shift,                                                # a << s, 0 past the width
    "tensor.right_shift": _right_shift,                                              # a >> s, the sign past the width
    "nn.gelu": _gelu,                                                                # a Phi(a)
}


def c_expression(op_name: str, operands: list[str], attrs: dict[str, Any], dtype: DType) -> str:
    """The C expression computing ``op_name``; an error naming the op when no rule exists."""
    rule = C_EXPRESSIONS.get(op_name)
    if rule is None:
        raise LoweringError(
            f"cupy backend: no CUDA expression for elementwise op {op_name!r} in a fusion group; "
            f"add a rule to C_EXPRESSIONS in backends/cupy/expressions.py (known: {', '.join(sorted(C_EXPRESSIONS))})"
        )
    c_name = c_type(dtype)
    expression = rule(operands, attrs, c_name)
    if c_name in NARROW_C_TYPES:
        return f"(({c_name})({expression}))"  # back to its width: C computes it in int
    return round_to_half(expression) if dtype is DType.f16 else expression


def c_type(dtype: DType) -> str:
    """The C type a kernel computes ``dtype`` in (``C_TYPES``); an error for a dtype it has no kernels for."""
    if dtype not in C_TYPES:
        if dtype is DType.bf16:
            raise LoweringError(BF16_UNSUPPORTED)
        raise LoweringError(f"cupy backend: no CUDA kernels for dtype {dtype.value} yet; use f16, f32, f64, u8, i8, i16, i32, i64 or bool")
    return C_TYPES[dtype]


BF16_UNSUPPORTED = ("cupy backend: bfloat16 is not supported (CuPy has no bfloat16 dtype); use float16 (model.half(), "
                    "x.half()) or float32 on backend='cupy', or keep bfloat16 on backend='numpy'")


def round_to_half(expression: str) -> str:
    """A float expression rounded to the nearest float16 (ties to even) and widened back, exactly, to float."""
    return f"__half2float(__float2half_rn({expression}))"


def to_half(expression: str) -> str:
    """A float expression (holding a float16 value) as the ``__half`` a float16 output stores."""
    return f"__float2half_rn({expression})"


REDUCTIONS = {
    # op -> (reduce_expr, identity by C type, whether the result divides by the count)
    "tensor.reduce_sum": ("a + b", lambda t: f"({t})0", False),                     # sum
    "tensor.reduce_mean": ("a + b", lambda t: f"({t})0", True),                     # sum / count
    "tensor.reduce_max": (nan_max("a", "b"), lambda t: _extreme(t, low=True), False),  # max (NaN if any), identity -inf
    "tensor.reduce_min": (nan_min("a", "b"), lambda t: _extreme(t, low=False), False),  # min (NaN if any), identity +inf
}


def _extreme(t: str, low: bool) -> str:
    """-inf / +inf through CUDA intrinsics (no header needed under NVRTC), or the integer type's limits."""
    infinities = {"float": ("__int_as_float(0xff800000)", "__int_as_float(0x7f800000)"),
                  "double": ("__longlong_as_double(0xfff0000000000000ULL)", "__longlong_as_double(0x7ff0000000000000ULL)"),
                  "int": ("(-2147483647 - 1)", "2147483647"),
                  "long long": ("(-9223372036854775807LL - 1)", "9223372036854775807LL"),
                  "bool": ("false", "true")}
    return infinities[t][0 if low else 1]
