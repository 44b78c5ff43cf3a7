"""``TransformedFamily``: the base of the families ``torch.distributions`` defines as a ``TransformedDistribution``
with parameters of their own (``Gumbel``, ``Weibull``, ``Pareto``, ``Kumaraswamy``, ``InverseGamma``, ``HalfNormal``,
``HalfCauchy``).

```python
class Weibull(TransformedFamily):
    def __init__(self, scale, concentration, validate_args=None):
        self._set_parameters(validate_args, scale=scale, concentration=concentration)
    def _base(self): return Exponential(self._filled(1.0), validate_args=False)
    def _transforms(self): return [PowerTransform(self.concentration.reciprocal()), AffineTransform(0, self.scale)]
```

The parameters are stored, checked (``validate_args``, naming the family) and broadcast as any family's
(``Distribution._set_parameters``); ``base_dist`` and ``transforms`` are built from them where they are read, so such a
distribution may be built outside a trace (a fixed prior in a Module's ``__init__``) and used in every step, as
``Normal(0.0, 1.0)``, and ``expand`` broadcasts the parameters. Sampling, ``log_prob``, ``cdf`` and ``icdf`` are
``TransformedDistribution``'s, as torch's.
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import Distribution
from kiln.frontend.distributions_transformed import TransformedDistribution
from kiln.frontend.distributions_transforms import Transform


class TransformedFamily(TransformedDistribution):
    """A ``TransformedDistribution`` whose base and transforms are functions of its own parameters (module docstring);
    a family sets its parameters with ``_set_parameters`` and defines ``_base`` and ``_transforms``."""

    def __init__(self, validate_args: bool | None = None, **params: Any):
        self._set_parameters(validate_args, **params)

    @property
    def base_dist(self) -> Distribution:  # type: ignore[override]
        return self._base()

    @property
    def transforms(self) -> list[Transform]:  # type: ignore[override]
        return self._transforms()

    def _base(self) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} defines no base distribution")

    def _transforms(self) -> list[Transform]:
        raise NotImplementedError(f"{type(self).__name__} defines no transforms")

    def expand(self, batch_shape: Sequence[Dim], _instance: Any = None) -> "TransformedFamily":
        """The same family with its parameters broadcast to ``batch_shape`` (its base and transforms follow them)."""
        return Distribution.expand(self, batch_shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return Distribution.__repr__(self)


__all__ = ["TransformedFamily"]
