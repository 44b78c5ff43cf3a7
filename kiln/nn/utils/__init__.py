"""``kiln.nn.utils``: PyTorch's ``torch.nn.utils`` helpers that kiln has: ``rnn`` (packed sequences), ``parametrize``
and ``parametrizations`` (``weight_norm``, ``spectral_norm``, ``orthogonal``), the legacy ``weight_norm`` /
``remove_weight_norm`` and ``spectral_norm`` / ``remove_spectral_norm``, ``parameters_to_vector``/``vector_to_parameters``, and ``clip_grad_norm_``/``clip_grad_value_`` (``get_total_norm``,
``clip_grads_with_norm_``), which point to the compiled step's clipping options."""

from kiln.frontend.nn_utils import (clip_grad_norm, clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm,
                                    parameters_to_vector, vector_to_parameters)
from kiln.frontend.spectral_norm_legacy import remove_spectral_norm, spectral_norm
from kiln.frontend.weight_norm_legacy import remove_weight_norm, weight_norm
from kiln.nn.utils import parametrizations, parametrize, rnn

__all__ = ["clip_grad_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm", "parameters_to_vector",
           "parametrizations", "parametrize", "remove_spectral_norm", "remove_weight_norm", "rnn", "spectral_norm",
           "vector_to_parameters", "weight_norm"]
