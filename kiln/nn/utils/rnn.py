"""``kiln.nn.utils.rnn``: variable-length sequences for the recurrent layers, as ``torch.nn.utils.rnn``
(``frontend/rnn_utils.py`` says how kiln masks where PyTorch packs)."""

from kiln.frontend.rnn_utils import PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence

__all__ = ["PackedSequence", "pack_padded_sequence", "pack_sequence", "pad_packed_sequence", "pad_sequence"]
