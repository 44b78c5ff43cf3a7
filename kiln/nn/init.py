"""``kiln.nn.init`` (``torch.nn.init``): initialise a Parameter in place, drawing from kiln's generator
(``kiln.manual_seed``), e.g. ``model.apply(lambda m: isinstance(m, nn.Linear) and nn.init.xavier_uniform_(m.weight))``."""

from kiln.frontend.init import (
    calculate_gain, constant_, eye_, kaiming_normal_, kaiming_uniform_, normal_, ones_, orthogonal_, trunc_normal_, uniform_,
    xavier_normal_, xavier_uniform_, zeros_,
)

__all__ = [
    "calculate_gain", "constant_", "eye_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_", "orthogonal_", "trunc_normal_",
    "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_",
]
