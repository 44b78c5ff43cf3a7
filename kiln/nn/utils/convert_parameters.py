"""``kiln.nn.utils.convert_parameters``: the module path ``torch.nn.utils.convert_parameters``, the functions of
``frontend/nn_utils.py``."""

from kiln.frontend.nn_utils import parameters_to_vector, vector_to_parameters

__all__ = ["parameters_to_vector", "vector_to_parameters"]
