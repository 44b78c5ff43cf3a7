"""``kiln.nn``: PyTorch's names for modules and layers (``kiln.nn.Linear``), plus Keras's ``Dense``."""

from kiln.frontend.keras import Dense
from kiln.frontend.layers import Linear, ReLU, Sequential, Sigmoid, Softmax, Tanh
from kiln.frontend.module import Module, Parameter
from kiln.nn import functional

__all__ = ["Dense", "Linear", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "functional"]
