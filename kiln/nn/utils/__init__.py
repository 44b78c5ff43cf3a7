"""``kiln.nn.utils``: PyTorch's ``torch.nn.utils`` helpers that kiln has: ``rnn`` (packed sequences), ``parametrize``,
``prune``, and ``parametrizations`` (``weight_norm``, ``spectral_norm``, ``orthogonal``), the legacy ``weight_norm`` /
``remove_weight_norm`` and ``spectral_norm`` / ``remove_spectral_norm``, ``parameters_to_vector``/``vector_to_parameters``
(also as ``convert_parameters``), ``clip_grad_norm_``/``clip_grad_value_`` (``get_total_norm``, ``clip_grads_with_norm_``;
also as ``clip_grad``), the conv/linear + BatchNorm ``fusion`` (``fuse_conv_bn_eval``...), ``skip_init`` and the deprecated ``stateless``
(``functional_call``)."""

from kiln.frontend.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval, fuse_linear_bn_weights
from kiln.frontend.nn_utils import (clip_grad_norm, clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm,
                                    parameters_to_vector, vector_to_parameters)
from kiln.frontend.skip_init import skip_init
from kiln.frontend.spectral_norm_legacy import remove_spectral_norm, spectral_norm
from kiln.frontend.weight_norm_legacy import remove_weight_norm, weight_norm
from kiln.nn.utils import clip_grad, convert_parameters, fusion, parametrizations, parametrize, prune, rnn, stateless

__all__ = ["clip_grad", "clip_grad_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "convert_parameters",
           "fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights", "fusion",
           "get_total_norm", "parameters_to_vector", "parametrizations", "parametrize", "prune", "remove_spectral_norm",
           "remove_weight_norm", "rnn", "skip_init", "spectral_norm", "stateless", "vector_to_parameters", "weight_norm"]
