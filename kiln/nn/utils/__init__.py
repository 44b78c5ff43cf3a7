"""``kiln.nn.utils``: PyTorch's ``torch.nn.utils`` helpers that kiln has (``kiln.nn.utils.rnn``)."""

from kiln.nn.utils import rnn

__all__ = ["rnn"]
