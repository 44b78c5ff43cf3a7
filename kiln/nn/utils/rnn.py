"""``kiln.nn.utils.rnn``: variable-length sequences for the recurrent layers, as ``torch.nn.utils.rnn``
(``frontend/rnn_utils.py``: PyTorch's packed layout where the lengths are known when packing, masking where they are
known only when a compiled step runs)."""

from kiln.frontend.rnn_utils import (MaskedFieldError, PackedSequence, pack_padded_sequence, pack_sequence,
                                     pad_packed_sequence, pad_sequence, unpack_sequence, unpad_sequence)

__all__ = ["MaskedFieldError", "PackedSequence", "pack_padded_sequence", "pack_sequence", "pad_packed_sequence", "pad_sequence",
           "unpack_sequence", "unpad_sequence"]
