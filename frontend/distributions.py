"""``kiln.distributions``' base: ``Distribution`` with ``torch.distributions``' interface (``batch_shape``,
``event_shape``, ``sample``/``rsample``, ``log_prob``, ``entropy``, ``mean``, ``variance``, ``expand``...), and the
parameter handling its families share.

A distribution computes with traced tensors: build and use it inside a traced function (a Module's ``forward``, a loss
given to ``kiln.compile_train_step``, ``kiln.compile``, ``kiln.grad``). Parameters may be traced tensors, Parameters,
Python numbers or NumPy arrays; the numbers, arrays and eager tensors are checked when the distribution is built
(``validate_args``, as PyTorch's, raising ``ValueError``; ``log_prob``'s value too) and become constants of the
distribution's dtype when it is used, so a fixed prior such as ``Normal(0.0, 1.0)`` may be built once outside any trace
(in a Module's ``__init__``) and used in every step. Traced values are only known when the step runs, so they cannot be
checked: an invalid traced scale gives NaN, as PyTorch's ``validate_args=False`` does. Outside a trace, reading a
parameter or calling a method runs eagerly (``runtime/eager.py``), as ``F.*`` and ``kiln.randn`` do:
``Normal(0.0, 1.0).log_prob(0.3).item()``.

Draws (``sample``, ``rsample``) come from the traced step's seed (``tensor.random_uniform``, as dropout and
``kiln.randn_like``): ``kiln.compile_train_step`` gives fresh numbers each step, ``kiln.compile(fn, seed=0)`` each
call. The numbers are kiln's, the statistics PyTorch's.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import Dim, DType, broadcast_shapes, format_shape
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.torch_dtypes import get_default_dtype
from kiln.frontend.torch_functions import rand_like, randn_like
from kiln.frontend.trace import TraceContext, located_error, user_location


class InvalidParameterError(KilnError, ValueError):
    """A distribution's concrete parameter, or a value given to ``log_prob``, is outside its constraint (PyTorch
    raises ``ValueError`` there too)."""


# Constraints: what validate_args checks on concrete values --------------------------------------------------------


class Constraint:
    """A set of allowed values: ``check(array)`` is elementwise, ``describe`` words it for an error. ``kind`` names
    torch's constraint class it stands for (``"interval"``, ``"positive"``; None for an ad-hoc one) and ``params``
    holds that class's attributes, readable as torch's (``constraint.lower_bound``): what ``biject_to`` and
    ``transform_to`` dispatch on (``frontend/distributions_constraint_registry.py``)."""

    def __init__(self, describe: str, check: Callable[[np.ndarray], np.ndarray], event_dim: int = 0, *,
                 kind: str | None = None, params: dict[str, Any] | None = None):
        self.describe, self.check, self.event_dim = describe, check, event_dim
        self.kind, self.params = kind, dict(params or {})

    def __getattr__(self, name: str) -> Any:
        """A parameter of the constraint (torch's attribute: ``lower_bound``, ``base_constraint``...)."""
        params = self.__dict__.get("params") or {}
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} {self.__dict__.get('describe', '')!r} has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"Constraint({self.describe})"


real = Constraint("a real number (not NaN)", lambda x: x == x, kind="real")
positive = Constraint("positive (> 0)", lambda x: x > 0, kind="greater_than", params={"lower_bound": 0.0})
nonnegative = Constraint("non-negative (>= 0)", lambda x: x >= 0, kind="greater_than_eq", params={"lower_bound": 0.0})
unit_interval = Constraint("a probability in [0, 1]", lambda x: (x >= 0) & (x <= 1), kind="interval",
                           params={"lower_bound": 0.0, "upper_bound": 1.0})
boolean = Constraint("0 or 1", lambda x: (x == 0) | (x == 1), kind="boolean")


def whole(x: Any) -> np.ndarray:
    """``x % 1 == 0`` as torch's integer checks compute it (False for inf and NaN), without NumPy's warning."""
    with np.errstate(invalid="ignore"):
        return np.asarray(x) % 1 == 0


nonnegative_integer = Constraint("a non-negative integer", lambda x: whole(x) & (x >= 0), kind="integer_greater_than",
                                 params={"lower_bound": 0})
real_vector = Constraint("a vector of real numbers (not NaN)", lambda x: np.all(x == x, axis=-1), event_dim=1,
                         kind="independent", params={"base_constraint": real, "reinterpreted_batch_ndims": 1})
unnormalized_simplex = Constraint(
    "a vector of non-negative finite weights with a positive sum (normalized to sum to 1)",
    lambda x: np.all((x >= 0) & np.isfinite(x), axis=-1) & (np.sum(x, axis=-1) > 0), event_dim=1)


def concrete_values(value: Any) -> np.ndarray | None:
    """The values ``validate_args`` checks: a number's or an array's, an eager tensor's (torch checks tensors too);
    None for a traced tensor, whose values do not exist yet."""
    from kiln.frontend.eager_data_dependent import concrete_array  # lazily: eager values build on the Tensor

    return concrete_array(value) if isinstance(value, Tensor) else np.asarray(value)


def invalid_parameter(message: str) -> InvalidParameterError:
    """An ``InvalidParameterError`` whose message starts with the user's source line, as ``located_error``'s."""
    location = user_location()
    return InvalidParameterError(f"{location.describe() if location else '<unknown>'}\n  {message}")


# Parameters -------------------------------------------------------------------------------------------------------

_default_validate_args = True


def _raw(value: Any) -> Any:
    """A parameter as stored: a traced Tensor (or a Parameter) as given, anything else as a NumPy array."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"a distribution parameter must be a tensor, a number or an array of numbers, got {value!r}")
    return array


def common_dtype(values: Sequence[Any]) -> DType:
    """PyTorch's ``broadcast_all`` dtype: a floating tensor's, else a floating NumPy array's or scalar's (float64 stays
    float64, as ``kiln.tensor`` keeps it), else the default dtype (Python numbers and lists, as torch's
    ``broadcast_all``: ``Normal(0, 1).sample()`` is float64 under ``set_default_dtype(float64)``)."""
    for value in values:
        if isinstance(value, Tensor) and value.dtype.is_float:
            return value.dtype
    for value in values:
        if isinstance(value, (np.ndarray, np.floating)) and value.dtype.kind == "f":
            return DType.of(value.dtype)
    return get_default_dtype()


def shape_of(raw: Any) -> tuple[Dim, ...]:
    return tuple(raw.shape)


def as_shape(sample_shape: Any, where: str) -> tuple[Dim, ...]:
    """``sample_shape`` as a tuple: an int, or a sequence of ints (a symbolic dim name too)."""
    shape = (sample_shape,) if isinstance(sample_shape, (int, np.integer, str)) else sample_shape
    if not isinstance(shape, (tuple, list)) or not all(isinstance(d, str) or (isinstance(d, (int, np.integer)) and d >= 0) for d in shape):
        raise located_error(f"{where}: sample_shape must be a tuple of non-negative ints (torch.Size), got {sample_shape!r}")
    return tuple(d if isinstance(d, str) else int(d) for d in shape)


def constant(array: Any, dtype: DType) -> Tensor:
    return apply("tensor.constant", value=np.asarray(array, dtype=dtype.numpy))


def broadcast(tensor: Tensor, shape: tuple[Dim, ...]) -> Tensor:
    return tensor if tuple(tensor.shape) == tuple(shape) else tensor.broadcast_to(shape)


def sum_rightmost(value: Tensor, dims: int) -> Tensor:
    """``value`` summed over its last ``dims`` dims (PyTorch's ``_sum_rightmost``)."""
    return value if dims == 0 else value.sum(tuple(range(-dims, 0)))


class Distribution:
    """``torch.distributions.Distribution``: the shapes, sampling and scoring interface every family fills in."""

    arg_constraints: ClassVar[dict[str, Constraint]] = {}
    """The constraint of each parameter, checked on concrete values when ``validate_args``."""
    support: ClassVar[Constraint | None] = None
    """The values ``log_prob`` accepts; concrete values given to it are checked when ``validate_args``."""
    has_rsample: ClassVar[bool] = False
    has_enumerate_support: ClassVar[bool] = False
    event_dims: ClassVar[dict[str, int]] = {}
    """Trailing dims of a parameter that belong to one event (Categorical's classes), not to the batch."""

    def __init__(self, batch_shape: Sequence[Dim] = (), event_shape: Sequence[Dim] = (), validate_args: bool | None = None):
        self._batch_shape, self._event_shape = tuple(batch_shape), tuple(event_shape)
        self._validate_args = _default_validate_args if validate_args is None else bool(validate_args)

    @staticmethod
    def set_default_validate_args(value: bool) -> None:
        """Whether distributions check their concrete parameters by default (True, as PyTorch's under ``__debug__``)."""
        global _default_validate_args
        if value not in (True, False):
            raise ValueError(f"set_default_validate_args takes True or False, got {value!r}")
        _default_validate_args = value

    # parameters ---------------------------------------------------------------------------------------------------

    def _set_parameters(self, validate_args: bool | None, **params: Any) -> None:
        """Store the parameters as given, check the concrete ones, and set the batch shape from their broadcast."""
        self._raw = {name: _raw(value) for name, value in params.items()}
        self._dtype = common_dtype(list(params.values()))
        self._cache: dict[Any, Tensor] = {}
        self._cache_context: Any = None
        shapes = [shape_of(raw)[: len(shape_of(raw)) - self.event_dims.get(name, 0)] for name, raw in self._raw.items()]
        for name, raw in self._raw.items():
            if len(shape_of(raw)) < self.event_dims.get(name, 0):
                raise self._invalid(f"`{name}` parameter must be at least one-dimensional, got shape {format_shape(shape_of(raw))}")
        try:
            batch_shape = broadcast_shapes(*shapes)
        except KilnError:
            described = ", ".join(f"{name} {format_shape(shape_of(raw))}" for name, raw in self._raw.items())
            raise self._invalid(f"the parameters' shapes do not broadcast: {described}") from None
        Distribution.__init__(self, batch_shape, (), validate_args)
        if self._validate_args:
            for name, raw in self._raw.items():
                array = concrete_values(raw)
                if array is not None:
                    self._check(name, self.arg_constraints[name], array)

    def _invalid(self, message: str) -> InvalidParameterError:
        return invalid_parameter(f"{type(self).__name__}: {message}")

    def _check(self, name: str, constraint: Constraint, array: np.ndarray) -> None:
        ok = np.asarray(constraint.check(np.asarray(array, dtype=np.float64)))
        if ok.all():
            return
        events = (~ok).reshape(ok.shape + (1,) * constraint.event_dim)  # a bad vector or matrix shows all its values
        bad = np.asarray(array)[np.broadcast_to(events, np.shape(array))]
        found = np.array2string(bad.ravel()[:6], precision=6) + (" ..." if bad.size > 6 else "")
        raise self._invalid(
            f"expected {name} (shape {format_shape(array.shape)}) to be {constraint.describe}, but found invalid "
            f"values {found}; fix the value, or pass validate_args=False to skip the check (a traced value is never checked)")

    def _parameter(self, name: str) -> Tensor:
        """The parameter as a traced tensor of the distribution's dtype, broadcast to the batch (and event) shape."""
        self._context(name)
        raw = self._raw[name]
        tensor = raw if isinstance(raw, Tensor) else constant(raw, self._dtype)
        tensor = tensor if tensor.dtype is self._dtype else tensor.to(self._dtype)
        return broadcast(tensor, self._batch_shape + shape_of(raw)[len(shape_of(raw)) - self.event_dims.get(name, 0):])

    def _traced(self, name: str, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()`` once per trace (and grad mode): what PyTorch's ``lazy_property`` caches per instance."""
        context = self._context(name)
        if context.eager:
            return compute()  # eager: its parameters may be read anew (a Parameter), so nothing is kept
        if self._cache_context is None or self._cache_context() is not context:
            self._cache, self._cache_context = {}, weakref.ref(context)
        key = (name, context.grad_enabled)
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _context(self, what: str) -> TraceContext:
        """The trace being recorded, or outside one the eager context (``runtime/eager.py``): ``log_prob`` then runs at once."""
        return TraceContext.current()

    @property
    def dtype(self) -> DType:
        return self._dtype

    def _filled(self, value: float) -> Tensor:
        """``value`` over the batch shape in the distribution's dtype (torch's ``full(batch_shape, value)``: an
        infinite variance, a base distribution's unit scale)."""
        self._context("a constant")
        return broadcast(constant(value, self._dtype), self._batch_shape)

    def _value(self, value: Any, method: str = "log_prob", support: Constraint | None = None, dtype: DType | None = None) -> Tensor:
        """``value`` given to ``method`` as a traced tensor; a concrete one is first checked against ``support`` (the
        distribution's by default) when ``validate_args``."""
        self._context(method)
        array, support = concrete_values(value), support or self.support
        if self._validate_args and isinstance(value, Tensor):
            self._check_sample_shape(tuple(value.shape), method)
        if self._validate_args and support is not None and array is not None:
            self._check(f"the value given to {method}", support, array)
        return value if isinstance(value, Tensor) else constant(array, dtype or self._dtype)

    def _probability(self, value: Any) -> Tensor:
        """``value`` given to ``icdf`` as a traced tensor, never checked, as torch's ``icdf``s (no ``_validate_sample``):
        outside ``[0, 1]`` the formula's value comes out (``Normal(0, 1).icdf(1.5)`` is NaN, ``Uniform``'s extrapolates)."""
        self._context("icdf")
        return value if isinstance(value, Tensor) else constant(concrete_values(value), self._dtype)

    def _check_sample_shape(self, shape: tuple[Dim, ...], method: str) -> None:
        """torch's ``_validate_sample``: the value ends in the event shape and broadcasts with batch + event shape,
        else its ``ValueError`` (a symbolic dim matches anything)."""
        event, expected = self._event_shape, self._batch_shape + self._event_shape
        agree = lambda a, b: a == b or isinstance(a, str) or isinstance(b, str)  # noqa: E731
        if len(shape) < len(event) or not all(map(agree, shape[len(shape) - len(event):], event)):
            raise self._invalid(f"The right-most size of value must match event_shape: {format_shape(shape)} vs "
                                f"{format_shape(event)} (the value given to {method})")
        if not all(a == 1 or b == 1 or agree(a, b) for a, b in zip(reversed(shape), reversed(expected))):
            raise self._invalid(f"Value is not broadcastable with batch_shape+event_shape: {format_shape(shape)} vs "
                                f"{format_shape(expected)} (the value given to {method})")

    # shapes -------------------------------------------------------------------------------------------------------

    @property
    def batch_shape(self) -> tuple[Dim, ...]:
        return self._batch_shape

    @property
    def event_shape(self) -> tuple[Dim, ...]:
        return self._event_shape

    def _extended_shape(self, sample_shape: Any = ()) -> tuple[Dim, ...]:
        return as_shape(sample_shape, f"{type(self).__name__}.sample") + self._batch_shape + self._event_shape

    def expand(self, batch_shape: Sequence[Dim], _instance: Any = None) -> "Distribution":
        """The same distribution over a larger batch: each parameter broadcast to ``batch_shape`` (no copy)."""
        batch_shape = tuple(batch_shape)
        try:
            if broadcast_shapes(self._batch_shape, batch_shape) != batch_shape:
                raise KilnError
        except KilnError:
            raise located_error(f"{type(self).__name__}.expand: batch shape {format_shape(self._batch_shape)} does not "
                                f"broadcast to {format_shape(batch_shape)}") from None
        new = copy.copy(self)
        new._raw = {name: self._expanded(raw, batch_shape + shape_of(raw)[len(shape_of(raw)) - self.event_dims.get(name, 0):])
                    for name, raw in self._raw.items()}
        new._batch_shape, new._cache, new._cache_context = batch_shape, {}, None
        return new

    @staticmethod
    def _expanded(raw: Any, shape: tuple[Dim, ...]) -> Any:
        return broadcast(raw, shape) if isinstance(raw, Tensor) else np.broadcast_to(raw, shape)

    # sampling -----------------------------------------------------------------------------------------------------

    def _uniform(self, shape: tuple[Dim, ...]) -> Tensor:
        """U[0, 1) draws of ``shape`` from the step's seed, in the distribution's dtype."""
        self._context("sample")
        return rand_like(broadcast(constant(0.0, self._dtype), shape))

    def _standard_normal(self, shape: tuple[Dim, ...]) -> Tensor:
        self._context("sample")
        return randn_like(broadcast(constant(0.0, self._dtype), shape))

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """Draws shaped ``sample_shape + batch_shape + event_shape``, with no gradient (PyTorch's ``torch.no_grad``)."""
        with no_grad():
            return self.rsample(sample_shape).detach()

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        """Reparameterized draws: a differentiable function of the parameters and of parameter-free noise."""
        raise NotImplementedError(f"{type(self).__name__} has no rsample (no reparameterization: its samples are discrete); "
                                  "use sample(), and a score-function (REINFORCE) estimator for gradients")

    def sample_n(self, n: int) -> Tensor:
        return self.sample((n,))

    # moments and scores -------------------------------------------------------------------------------------------

    def _missing(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} has no {what} (as in torch.distributions)")

    @property
    def mean(self) -> Tensor:
        raise self._missing("mean")

    @property
    def mode(self) -> Tensor:
        raise self._missing("mode")

    @property
    def variance(self) -> Tensor:
        raise self._missing("variance")

    @property
    def stddev(self) -> Tensor:
        return self.variance.sqrt()

    def log_prob(self, value: Any) -> Tensor:
        raise self._missing("log_prob")

    def cdf(self, value: Any) -> Tensor:
        raise self._missing("cdf")

    def icdf(self, value: Any) -> Tensor:
        raise self._missing("icdf")

    def entropy(self) -> Tensor:
        raise self._missing("entropy")

    def perplexity(self) -> Tensor:
        return self.entropy().exp()

    def enumerate_support(self, expand: bool = True) -> Tensor:
        raise self._missing("enumerate_support")

    def __repr__(self) -> str:
        params = ", ".join(f"{name}: {_describe(raw)}" for name, raw in getattr(self, "_raw", {}).items())
        return f"{type(self).__name__}({params})"


def numpy_sample(distribution: Distribution, sample_shape: Any,
                 draw: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]) -> Tensor:
    """Draws by NumPy from a distribution's concrete parameters: ``draw(rng, shape)`` with ``shape`` ``sample_shape +
    batch_shape + event_shape`` and ``rng`` seeded from kiln's generator (``kiln.manual_seed`` repeats them), as a
    tensor of the distribution's dtype with no gradient. Outside a trace only (the families whose samplers kiln does
    not trace: Gamma, Beta, Dirichlet, Poisson, Binomial); inside one, an error at the user's line says what to do."""
    from kiln.frontend.init import draw_seed  # lazily: kiln's generator

    name = type(distribution).__name__
    if not TraceContext.current().eager:
        raise located_error(f"{name}.sample inside a traced function: kiln draws it from concrete parameters only; "
                            "draw it outside the compiled function and pass it in")
    shape = distribution._extended_shape(sample_shape)
    return constant(draw(np.random.default_rng(int(draw_seed())), shape), distribution.dtype)


def _describe(raw: Any) -> str:
    if isinstance(raw, Tensor) or np.ndim(raw):
        return f"shape {format_shape(shape_of(raw))}"
    return repr(raw.item())


__all__ = ["Constraint", "Distribution", "InvalidParameterError", "concrete_values", "numpy_sample"]
