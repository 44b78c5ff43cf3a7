"""``kiln.nn.utils``: PyTorch's ``torch.nn.utils`` helpers that kiln has: ``rnn`` (packed sequences),
``parameters_to_vector``/``vector_to_parameters``, and ``clip_grad_norm_``/``clip_grad_value_``, which point to the
compiled step's clipping options."""

from kiln.frontend.nn_utils import clip_grad_norm_, clip_grad_value_, parameters_to_vector, vector_to_parameters
from kiln.nn.utils import rnn

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "rnn", "vector_to_parameters"]
