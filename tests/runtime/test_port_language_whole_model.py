"""``kiln.save(model, f)`` and ``kiln.load(f, weights_only=False)``, as word_language_model saves its best model
(``with open(args.save, 'wb') as f: torch.save(model, f)``) and reloads it: the whole module, class and all, through a
binary file; tied weights stay tied, a mask cached on the module comes back, and loading refuses without
``weights_only=False`` as ``torch.load`` does. State dicts go through file objects too."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import CheckpointError


class TiedLanguageModel(nn.Module):
    def __init__(self, ntoken=13, width=6):
        super().__init__()
        self.encoder, self.rnn, self.decoder = nn.Embedding(ntoken, width), nn.LSTM(width, width, 2), nn.Linear(width, ntoken)
        self.decoder.weight = self.encoder.weight
        self.src_mask = None

    def forward(self, input, hidden):
        if self.src_mask is None or self.src_mask.size(0) != len(input):
            self.src_mask = kiln.triu(kiln.full((len(input), len(input)), float("-inf")), diagonal=1)
        output, hidden = self.rnn(self.encoder(input), hidden)
        return self.decoder(output + self.src_mask.sum(0).clamp(min=-1.0)[:, None, None]), hidden


def _run(model, tokens):
    model.eval()
    zeros = kiln.zeros(2, tokens.shape[1], 6)
    return model(kiln.tensor(tokens), (zeros, zeros))[0].numpy()


def test_a_whole_model_round_trips_through_a_binary_file(tmp_path):
    kiln.manual_seed(0)
    model = TiedLanguageModel()
    tokens = np.random.default_rng(0).integers(0, 13, (5, 2))
    expected = _run(model, tokens)
    with open(tmp_path / "model.pt", "wb") as f:
        kiln.save(model, f)
    with open(tmp_path / "model.pt", "rb") as f:
        loaded = kiln.load(f, weights_only=False)
    assert type(loaded) is TiedLanguageModel and loaded.decoder.weight is loaded.encoder.weight
    np.testing.assert_array_equal(loaded.src_mask.numpy(), model.src_mask.numpy())
    np.testing.assert_array_equal(_run(loaded, tokens), expected)
    assert [name for name, _ in loaded.named_parameters()] == [name for name, _ in model.named_parameters()]


def test_loading_a_whole_model_needs_weights_only_false(tmp_path):
    kiln.save(TiedLanguageModel(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="weights_only=False"):
        kiln.load(tmp_path / "model.pt")


def test_a_state_dict_goes_through_file_objects_in_torchs_order():
    kiln.manual_seed(1)
    model, other = TiedLanguageModel(), TiedLanguageModel()
    buffer = io.BytesIO()
    kiln.save(model.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(kiln.load(buffer, map_location="cpu"))
    np.testing.assert_array_equal(other.rnn.weight_hh_l1.data, model.rnn.weight_hh_l1.data)


def test_a_module_that_cannot_be_pickled_says_what_to_save_instead():
    def local_class():
        class Local(nn.Module):
            pass

        return Local()

    with pytest.raises(CheckpointError, match="save model.state_dict"):
        kiln.save(local_class(), io.BytesIO())
