"""``biject_to`` and ``transform_to``: ``torch.distributions.constraint_registry``'s two registries, which map a
constraint to a transform from unconstrained reals onto it (for optimizing or sampling a constrained parameter in
unconstrained space), with torch's table:

```
constraint                                biject_to                          transform_to
real                                      identity_transform                 identity_transform
independent(c, n)                         IndependentTransform(biject_to(c), n)   ... transform_to(c) ...
greater_than(a), greater_than_eq(a)       Compose(Exp, Affine(a, 1))         the same
  (positive and nonnegative are these, with a = 0, as torch's)
less_than(b)                              Compose(Exp, Affine(b, -1))        the same
interval(a, b), half_open_interval(a, b)  Sigmoid (a, b = 0, 1) or           the same
  (unit_interval is interval(0, 1))         Compose(Sigmoid, Affine(a, b - a))
simplex                                   StickBreakingTransform             SoftmaxTransform
lower_cholesky                            (none)                             LowerCholeskyTransform
positive_definite, positive_semidefinite  (none)                             PositiveDefiniteTransform
corr_cholesky                             CorrCholeskyTransform              CorrCholeskyTransform
cat(cs, dim, lengths), stack(cs, dim)     Cat/StackTransform of each part's  the same with transform_to
```

torch keys its registries by constraint class; kiln's constraints are one class told apart by ``Constraint.kind``
(torch's class name in snake case, set by ``kiln.distributions.constraints``' factories and where each named constant is defined), so a
registry keys by kind, and by class for a user's own ``Constraint`` subclass. ``register`` takes a constraint (its
kind, or its class when it has none), a factory of ``kiln.distributions.constraints`` (``constraints.interval``), a
kind string, or a ``Constraint`` subclass. A constraint with no factory raises torch's ``NotImplementedError``.
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.frontend.distributions import Constraint
from kiln.frontend.distributions_transform_functors import CatTransform, IndependentTransform, StackTransform
from kiln.frontend.distributions_transforms import (AffineTransform, ComposeTransform, ExpTransform, SigmoidTransform,
                                                    Transform, identity_transform)
from kiln.frontend.distributions_transforms_cholesky import (CorrCholeskyTransform, LowerCholeskyTransform,
                                                             PositiveDefiniteTransform)
from kiln.frontend.distributions_transforms_more import SoftmaxTransform, StickBreakingTransform

Factory = Callable[[Constraint], Transform]
CONSTRAINTS_MODULE = "kiln.distributions.constraints"  # its factories' kinds are their names


def _key(constraint: Any) -> Any:
    """What a registry files ``constraint`` under: a kind string, or a ``Constraint`` subclass."""
    if isinstance(constraint, str):
        return constraint
    if isinstance(constraint, Constraint):
        return constraint.kind or type(constraint)
    if isinstance(constraint, type) and issubclass(constraint, Constraint):
        return constraint
    if callable(constraint) and getattr(constraint, "__module__", "") == CONSTRAINTS_MODULE:
        return constraint.__name__  # a factory: constraints.interval files under "interval"
    raise TypeError(f"Expected constraint to be either a Constraint subclass or instance, but got {constraint}")


class ConstraintRegistry:
    """torch's ``ConstraintRegistry``: ``registry(constraint)`` is the registered factory's transform for it."""

    def __init__(self) -> None:
        self._registry: dict[Any, Factory] = {}

    def register(self, constraint: Any, factory: Factory | None = None) -> Any:
        """Register ``factory`` for ``constraint``'s kind (or class); without ``factory``, a decorator."""
        if factory is None:
            return lambda factory: self.register(constraint, factory)
        self._registry[_key(constraint)] = factory
        return factory

    def __call__(self, constraint: Constraint) -> Transform:
        factory = self._factory(constraint)
        if factory is None:
            name = constraint.kind or type(constraint).__name__
            raise NotImplementedError(f"Cannot transform {name} constraints ({constraint.describe!r} has no "
                                      "transform registered; add one with .register(constraint, factory))")
        return factory(constraint)

    def _factory(self, constraint: Constraint) -> Factory | None:
        """The kind's factory, else the nearest registered class in the constraint's MRO."""
        if getattr(constraint, "kind", None) in self._registry:
            return self._registry[constraint.kind]
        for cls in type(constraint).__mro__:
            if cls in self._registry:
                return self._registry[cls]
        return None


biject_to = ConstraintRegistry()
transform_to = ConstraintRegistry()


def _register_both(kinds: tuple[str, ...], factory: Factory) -> None:
    for kind in kinds:
        biject_to.register(kind, factory)
        transform_to.register(kind, factory)


def _to_real(constraint: Constraint) -> Transform:
    return identity_transform


def _to_greater_than(constraint: Constraint) -> Transform:
    return ComposeTransform([ExpTransform(), AffineTransform(constraint.lower_bound, 1)])


def _to_less_than(constraint: Constraint) -> Transform:
    return ComposeTransform([ExpTransform(), AffineTransform(constraint.upper_bound, -1)])


def _is(bound: Any, number: float) -> bool:
    return isinstance(bound, (int, float)) and bound == number


def _to_interval(constraint: Constraint) -> Transform:
    """Sigmoid onto ``[0, 1]``, scaled onto ``[a, b]`` unless ``a, b`` are the numbers 0, 1 (torch's special case)."""
    low, high = constraint.lower_bound, constraint.upper_bound
    if _is(low, 0) and _is(high, 1):
        return SigmoidTransform()
    return ComposeTransform([SigmoidTransform(), AffineTransform(low, high - low)])


def _to_corr_cholesky(constraint: Constraint) -> Transform:
    return CorrCholeskyTransform()


def _independent(registry: ConstraintRegistry) -> Factory:
    return lambda c: IndependentTransform(registry(c.base_constraint), c.reinterpreted_batch_ndims)


def _cat(registry: ConstraintRegistry) -> Factory:
    return lambda c: CatTransform([registry(part) for part in c.cseq], c.dim, c.lengths)


def _stack(registry: ConstraintRegistry) -> Factory:
    return lambda c: StackTransform([registry(part) for part in c.cseq], c.dim)


_register_both(("real",), _to_real)
_register_both(("greater_than", "greater_than_eq"), _to_greater_than)
_register_both(("less_than",), _to_less_than)
_register_both(("interval", "half_open_interval"), _to_interval)
_register_both(("corr_cholesky",), _to_corr_cholesky)
for _registry in (biject_to, transform_to):
    _registry.register("independent", _independent(_registry))
    _registry.register("cat", _cat(_registry))
    _registry.register("stack", _stack(_registry))
biject_to.register("simplex", lambda c: StickBreakingTransform())
transform_to.register("simplex", lambda c: SoftmaxTransform())
transform_to.register("lower_cholesky", lambda c: LowerCholeskyTransform())
transform_to.register("positive_definite", lambda c: PositiveDefiniteTransform())
transform_to.register("positive_semidefinite", lambda c: PositiveDefiniteTransform())

__all__ = ["ConstraintRegistry", "biject_to", "transform_to"]
