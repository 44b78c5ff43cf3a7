"""``checkpoint(function, *args)`` and ``checkpoint_sequential`` without ``use_reentrant``, as PyTorch 2.13: a warning
that it should be passed, then the reentrant variant. open_clip's ``Transformer`` calls ``checkpoint(r, x, None,
None, attn_mask)`` under ``set_grad_checkpointing()`` (timm's ``checkpoint_seq`` and older scripts likewise); kiln
took it as ``use_reentrant=False``, so a block fed by a frozen tower got gradients that PyTorch gives it none of, and
keywords for ``function`` that PyTorch refuses (``ValueError``) were accepted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from oracles import libraries

UNSET = "the use_reentrant parameter should be passed explicitly"
NO_GRAD = "None of the inputs have requires_grad=True. Gradients will be None"


def frozen_stem_model(torch, nn, sequential=False):
    """A frozen embedding feeding a checkpointed block (``checkpoint`` or ``checkpoint_sequential``), then a head."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.embed.requires_grad_(False)
            self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
            self.head = nn.Linear(4, 1)

        def forward(self, ids):
            hidden = self.embed(ids)
            if sequential:
                hidden = torch.utils.checkpoint.checkpoint_sequential(self.blocks, 2, hidden)
            else:
                hidden = torch.utils.checkpoint.checkpoint(self.blocks, hidden)
            return self.head(hidden).square().mean()

    return Model()


@pytest.mark.parametrize("sequential", [False, True], ids=["checkpoint", "checkpoint_sequential"])
@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_left_out_use_reentrant_warns_and_is_reentrant(name, sequential):
    torch, nn, _ = libraries(name)
    model = frozen_stem_model(torch, nn, sequential)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(torch.tensor(np.array([[1, 3, 2], [4, 0, 1]]))).backward()
    messages = [str(warning.message) for warning in caught]
    assert any(UNSET in message for message in messages) and NO_GRAD in messages
    trained = {key: p.grad is not None for key, p in model.named_parameters()}
    last_segment_plain = sequential  # checkpoint_sequential leaves its last segment (Tanh, Linear) outside
    assert trained == {"embed.weight": False, "blocks.0.weight": False, "blocks.0.bias": False,
                       "blocks.2.weight": last_segment_plain, "blocks.2.bias": last_segment_plain,
                       "head.weight": True, "head.bias": True}


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_left_out_use_reentrant_refuses_keywords_for_the_function(name):
    torch, _, _ = libraries(name)
    with pytest.warns(UserWarning, match=UNSET), pytest.raises(ValueError, match="(?i)unexpected keyword arguments"):
        torch.utils.checkpoint.checkpoint(lambda x, scale=1.0: x * scale, torch.ones(2, requires_grad=True), scale=2.0)


@pytest.mark.parametrize("name", ["kiln", "torch"])
@pytest.mark.filterwarnings("error")
def test_a_given_use_reentrant_does_not_warn(name):
    torch, _, _ = libraries(name)
    x = torch.ones(2, requires_grad=True)
    for use_reentrant in (True, False):
        torch.utils.checkpoint.checkpoint(lambda t: t * 2, x, use_reentrant=use_reentrant).sum().backward()
    assert x.grad.tolist() == [4.0, 4.0]
