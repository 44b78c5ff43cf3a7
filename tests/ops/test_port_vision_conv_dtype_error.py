"""A float64 batch into a float32 convolution (the mnist example's model before ``.double()``) is refused as by
PyTorch ("Input type (double) and bias type (float) should be the same"), with a message about the dtypes and the
user's line; kiln said the weight's shape "does not fit" the input."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError
from oracles import require_torch


def test_mixed_dtypes_are_refused_naming_the_dtypes_and_the_line():
    torch = require_torch()
    image = np.ones((2, 1, 6, 6))
    with pytest.raises(RuntimeError, match="should be the same"):
        torch.nn.Conv2d(1, 3, 3)(torch.tensor(image))
    with pytest.raises(TraceError, match=r"test_port_vision_conv_dtype_error\.py:\d+[\s\S]*one dtype[\s\S]*f64[\s\S]*f32[\s\S]*model\.double\(\)"):
        nn.Conv2d(1, 3, 3)(image)
    with pytest.raises(TraceError, match="one dtype"):
        kiln.trace(nn.Conv2d(1, 3, 3).double(), kiln.TensorSpec((2, 1, 6, 6), "float32"))


def test_matching_dtypes_and_channel_mismatches_keep_their_behaviour():
    assert nn.Conv2d(1, 3, 3).double()(np.ones((2, 1, 6, 6))).shape == (2, 3, 4, 4)
    with pytest.raises(TraceError, match="to have 2 channels, but got 1 channels instead"):  # torch's words
        nn.Conv2d(2, 3, 3)(np.ones((2, 1, 6, 6), np.float32))
