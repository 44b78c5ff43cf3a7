"""``nn.ConvTranspose{1,2,3}d``'s ``padding_mode``, as torch 2.13's: ``"zeros"`` accepted (by keyword or in its
position after ``dilation``; kiln's ConvTranspose2d took no such argument), anything else refused with torch's
ValueError sentence."""

from __future__ import annotations

import pytest

from oracles import libraries


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_zeros_padding_mode_accepted_as_torch(spatial):
    reprs = []
    for name in ("kiln", "torch"):
        _, nn, _ = libraries(name)
        layer = getattr(nn, f"ConvTranspose{spatial}d")
        by_keyword = layer(2, 3, 3, stride=2, padding_mode="zeros")
        by_position = layer(2, 3, 3, 2, 0, 0, 1, True, 1, "zeros")
        assert by_keyword.padding_mode == by_position.padding_mode == "zeros"
        reprs.append(repr(by_keyword))
    assert reprs[0] == reprs[1]


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_other_padding_modes_refused_as_torch(spatial, padding_mode):
    messages = []
    for name in ("kiln", "torch"):
        _, nn, _ = libraries(name)
        with pytest.raises(ValueError) as error:
            getattr(nn, f"ConvTranspose{spatial}d")(2, 3, 3, padding_mode=padding_mode)
        messages.append(str(error.value))
    assert messages[0].startswith(messages[1])
