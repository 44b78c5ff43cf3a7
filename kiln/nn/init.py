"""``kiln.nn.init`` (``torch.nn.init``): initialise a Parameter in place, drawing from kiln's generator
(``kiln.manual_seed``), e.g. ``model.apply(lambda m: isinstance(m, nn.Linear) and nn.init.xavier_uniform_(m.weight))``.
The names without the underscore are torch's deprecated aliases (a ``FutureWarning``, then the same write);
torch's private ``_calculate_fan_in_and_fan_out`` and ``_calculate_correct_fan`` are here too, as reference code calls
them (not in ``__all__``, as in torch)."""

from kiln.frontend.init import (
    calculate_gain, constant_, dirac_, eye_, kaiming_normal_, kaiming_uniform_, normal_, ones_, orthogonal_, sparse_,
    trunc_normal_, uniform_, xavier_normal_, xavier_uniform_, zeros_,
)
from kiln.frontend.init import _calculate_correct_fan, _calculate_fan_in_and_fan_out  # noqa: F401 (private, as torch's)
from kiln.frontend.init_deprecated import deprecated_init

uniform = deprecated_init(uniform_)
normal = deprecated_init(normal_)
constant = deprecated_init(constant_)
eye = deprecated_init(eye_)
dirac = deprecated_init(dirac_)
sparse = deprecated_init(sparse_)
xavier_uniform = deprecated_init(xavier_uniform_)
xavier_normal = deprecated_init(xavier_normal_)
kaiming_uniform = deprecated_init(kaiming_uniform_)
kaiming_normal = deprecated_init(kaiming_normal_)
orthogonal = deprecated_init(orthogonal_)

__all__ = [
    "calculate_gain", "constant_", "dirac_", "eye_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_", "orthogonal_",
    "sparse_", "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_",
    "uniform", "normal", "constant", "dirac", "eye", "sparse", "xavier_uniform", "xavier_normal", "kaiming_uniform",
    "kaiming_normal", "orthogonal",
]
