"""``kiln.nn.utils.parametrize``: ``torch.nn.utils.parametrize`` (``frontend/parametrize.py`` says how a parametrized
tensor reads inside and outside a trace)."""

from kiln.frontend.parametrize import (ParametrizationError, ParametrizationList, cached, is_parametrized, on_arrays,
                                       register_parametrization, remove_parametrizations, type_before_parametrizations)

__all__ = ["ParametrizationError", "ParametrizationList", "cached", "is_parametrized", "on_arrays", "register_parametrization",
           "remove_parametrizations", "type_before_parametrizations"]
