"""``kiln.nn``: PyTorch's names for modules and layers (``kiln.nn.Linear``), plus Keras's ``Dense``."""

from kiln.frontend.keras import Dense
from kiln.frontend.layers import CosineSimilarity, Linear, PairwiseDistance, ReLU, Sequential, Sigmoid, Softmax, Tanh
from kiln.frontend.layers_conv import (
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d, MaxPool2d,
)
from kiln.frontend.containers import ModuleDict, ModuleList, ParameterDict, ParameterList
from kiln.frontend.layers_transformer import (
    GELU, Dropout, Embedding, Flatten, LayerNorm, MultiheadAttention, MultiHeadAttention, Transformer, TransformerDecoder, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer, Unflatten,
)
from kiln.frontend.losses import (
    BCELoss, BCEWithLogitsLoss, CosineEmbeddingLoss, CrossEntropyLoss, GaussianNLLLoss, HingeEmbeddingLoss, HuberLoss, KLDivLoss, L1Loss,
    MarginRankingLoss, MSELoss, MultiLabelSoftMarginLoss, MultiMarginLoss, NLLLoss, PoissonNLLLoss, SmoothL1Loss, SoftMarginLoss,
    TripletMarginLoss, CTCLoss,
)
from kiln.frontend.module import Buffer, Module, Parameter
from kiln.frontend import layers_activation, layers_extra, layers_norm, layers_pool1d, layers_recurrent, layers_spatial
from kiln.frontend.layers_activation import *  # noqa: F401,F403
from kiln.frontend.layers_norm import *  # noqa: F401,F403
from kiln.frontend.layers_recurrent import *  # noqa: F401,F403
from kiln.frontend.layers_spatial import *  # noqa: F401,F403
from kiln.frontend.layers_pool1d import *  # noqa: F401,F403
from kiln.frontend.layers_extra import *  # noqa: F401,F403
from kiln.nn import functional, init, utils

__all__ = [
    "Buffer", "Dense", "Linear", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "functional", "init", "utils",
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "BatchNorm2d", "Conv1d", "Conv2d", "ConvTranspose2d", "Dropout", "Embedding", "Flatten", "GELU", "LayerNorm", "MaxPool2d", "MultiHeadAttention", "MultiheadAttention",
    "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "Unflatten", "ModuleDict",
    "ModuleList", "ParameterDict", "ParameterList", "CosineSimilarity", "PairwiseDistance",
    "BCEWithLogitsLoss", "CrossEntropyLoss", "HuberLoss", "L1Loss", "MSELoss", "NLLLoss", "SmoothL1Loss",
    "BCELoss", "CosineEmbeddingLoss", "GaussianNLLLoss", "HingeEmbeddingLoss", "KLDivLoss", "MarginRankingLoss", "MultiLabelSoftMarginLoss",
    "MultiMarginLoss", "PoissonNLLLoss", "SoftMarginLoss", "TripletMarginLoss", "CTCLoss",
]
__all__ += layers_activation.__all__ + layers_norm.__all__ + layers_recurrent.__all__ + layers_spatial.__all__ + layers_pool1d.__all__
__all__ += layers_extra.__all__

from kiln.frontend import layers_conv3d  # noqa: E402
from kiln.frontend.layers_conv3d import *  # noqa: E402,F401,F403  (Conv3d, MaxPool3d, AvgPool3d, BatchNorm3d, ...)

__all__ += layers_conv3d.__all__

from kiln.frontend import layers_lazy  # noqa: E402
from kiln.frontend.layers_lazy import *  # noqa: E402,F401,F403  (LazyLinear, LazyConv*d, LazyConvTranspose*d, LazyBatchNorm*d, ...)

__all__ += layers_lazy.__all__

from kiln.frontend import layers_more  # noqa: E402
from kiln.frontend.layers_more import *  # noqa: E402,F401,F403  (AdaptiveLogSoftmaxWithLoss, FractionalMaxPool2d/3d, CrossMapLRN2d)

__all__ += layers_more.__all__

from kiln.frontend.linear_cross_entropy import LinearCrossEntropyLoss, LinearCrossEntropyOptions  # noqa: E402

__all__ += ["LinearCrossEntropyLoss", "LinearCrossEntropyOptions"]

from kiln.nn import parallel  # noqa: E402
from kiln.nn.parallel import DataParallel  # noqa: E402  (one process: the module itself; kiln.distributed's for MPI)

__all__ += ["DataParallel", "parallel"]
from kiln.nn import attention  # noqa: E402  (torch.nn.attention: sdpa_kernel, SDPBackend)
from kiln.nn import modules  # noqa: E402,F401  (torch.nn.modules: batchnorm._BatchNorm, conv._ConvNd, ...)
