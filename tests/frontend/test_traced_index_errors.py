"""A traced tensor used as a Python int (a slice bound, a size) whose value the trace cannot know: a located
``TypeError`` (``frontend/traced_index_errors.py``) saying what to do, in an ONNX export and in ``kiln.compile``."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.frontend.traced_index_errors import TracedIndexError


class CropToSize(nn.Module):
    """SAM's ``mask_postprocessing`` in small: crop to a size given as a tensor input."""

    def forward(self, masks, size):
        size = size.to(kiln.int64)
        return masks[..., : size[0], : size[1]]


def test_a_size_read_from_an_onnx_export_input_is_refused_at_the_users_line():
    with pytest.raises(TypeError) as raised:
        kiln.onnx.export(CropToSize(), (kiln.zeros(1, 1, 8, 8), kiln.tensor([5.0, 6.0])), io.BytesIO())
    assert isinstance(raised.value, TracedIndexError)
    message = str(raised.value)
    assert "test_traced_index_errors.py" in message and "masks[..., : size[0], : size[1]]" in message
    assert "the file must serve every input" in message and "pass the size as a Python int" in message


def test_a_size_read_from_a_trained_parameter_is_refused_in_compile():
    class CropByParameter(nn.Module):
        def __init__(self):
            super().__init__()
            self.width = nn.Parameter(kiln.tensor([3.0]))

        def forward(self, x):
            return x[:, : self.width.long()[0]]

    with pytest.raises(TypeError, match="specializes such a value only when it is computed from the call's inputs"):
        kiln.compile(CropByParameter(), fullgraph=True)(kiln.zeros(2, 6))


def test_a_size_read_from_a_compiled_calls_input_is_specialized():
    crop = kiln.compile(CropToSize(), fullgraph=True)
    assert np.asarray(crop(kiln.zeros(1, 1, 8, 8), kiln.tensor([5.0, 6.0]))).shape == (1, 1, 5, 6)
    assert np.asarray(crop(kiln.zeros(1, 1, 8, 8), kiln.tensor([2.0, 7.0]))).shape == (1, 1, 2, 7)
