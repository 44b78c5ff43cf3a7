"""``kiln.nn``: PyTorch's names for modules and layers (``kiln.nn.Linear``), plus Keras's ``Dense``."""

from kiln.frontend.keras import Dense
from kiln.frontend.layers import Linear, ReLU, Sequential, Sigmoid, Softmax, Tanh
from kiln.frontend.layers_conv import AvgPool2d, BatchNorm2d, Conv2d, MaxPool2d
from kiln.frontend.containers import ModuleDict, ModuleList
from kiln.frontend.layers_transformer import (
    GELU, Dropout, Embedding, Flatten, LayerNorm, MultiheadAttention, MultiHeadAttention, TransformerDecoder, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer, Unflatten,
)
from kiln.frontend.losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss
from kiln.frontend.module import Buffer, Module, Parameter
from kiln.nn import functional

__all__ = [
    "Buffer", "Dense", "Linear", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "functional",
    "AvgPool2d", "BatchNorm2d", "Conv2d", "Dropout", "Embedding", "Flatten", "GELU", "LayerNorm", "MaxPool2d", "MultiHeadAttention", "MultiheadAttention",
    "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "Unflatten", "ModuleDict", "ModuleList",
    "BCEWithLogitsLoss", "CrossEntropyLoss", "HuberLoss", "L1Loss", "MSELoss", "NLLLoss", "SmoothL1Loss",
]
