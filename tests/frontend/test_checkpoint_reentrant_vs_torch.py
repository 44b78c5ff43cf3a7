"""``checkpoint(..., use_reentrant=True)`` with no tensor argument requiring grad, as PyTorch 2.13: the reentrant
checkpoint is an ``autograd.Function`` of its tensor arguments, so the parameters used inside get no gradient, with
PyTorch's warning. Hugging Face's gradient checkpointing (reentrant by default) over a frozen embedding meets this:
the layers do not train until ``enable_input_require_grads`` makes the embedding's output require grad."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import run_in_lockstep, snapshot
from oracles import libraries

WARNING = "None of the inputs have requires_grad=True. Gradients will be None"
IDS = np.array([[1, 3, 2], [4, 0, 1]])


def frozen_embedding_model(torch, nn, F):
    """A frozen embedding, one checkpointed Linear block, a trained head."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.embed.weight.requires_grad_(False)
            self.block = nn.Linear(4, 4)
            self.head = nn.Linear(4, 1)
            self.use_reentrant = True

        def forward(self, ids):
            hidden = self.embed(ids)
            hidden = torch.utils.checkpoint.checkpoint(self.block.__call__, hidden, use_reentrant=self.use_reentrant)
            return self.head(torch.tanh(hidden)).square().mean()

    return Model()


def gradient_presence(torch, model):
    model(torch.tensor(IDS)).backward()
    return {name: p.grad is not None for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_reentrant_checkpoint_of_inputs_without_grad_gives_no_gradients_and_warns(name):
    torch, nn, F = libraries(name)
    model = frozen_embedding_model(torch, nn, F)
    with pytest.warns(UserWarning, match=WARNING):
        present = gradient_presence(torch, model)
    assert present == {"embed.weight": False, "block.weight": False, "block.bias": False, "head.weight": True,
                       "head.bias": True}


@pytest.mark.parametrize("name", ["kiln", "torch"])
@pytest.mark.filterwarnings("error")
def test_inputs_requiring_grad_or_the_non_reentrant_checkpoint_give_gradients(name):
    torch, nn, F = libraries(name)
    for make_input_require_grad in (True, False):
        model = frozen_embedding_model(torch, nn, F)
        if make_input_require_grad:  # transformers' enable_input_require_grads
            model.embed.register_forward_hook(lambda module, input, output: output.requires_grad_(True))
        else:
            model.use_reentrant = False
        assert gradient_presence(torch, model) == {"embed.weight": False, "block.weight": True, "block.bias": True,
                                                   "head.weight": True, "head.bias": True}


@pytest.mark.parametrize("compiled", [False, True])
def test_a_training_step_through_it_as_torch(compiled, float64_default):
    """SGD steps, eager and as one ``kiln.compile(fullgraph=True)`` step: the checkpointed block stays as it was."""

    def train(torch, nn, F, model):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)

        def step(ids):
            optimizer.zero_grad()
            loss = model(ids)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        with pytest.warns(UserWarning, match=WARNING):
            losses = [run(torch.tensor(IDS)).item() for _ in range(2)]
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = run_in_lockstep(frozen_embedding_model, train)
    np.testing.assert_allclose(ours["losses"], theirs["losses"], rtol=1e-12)
    for key, value in theirs["state"].items():
        np.testing.assert_allclose(ours["state"][key], value, rtol=1e-12, atol=1e-14, err_msg=key)
    initial = run_in_lockstep(frozen_embedding_model, lambda torch, nn, F, model: snapshot(model))[0]
    assert np.array_equal(ours["state"]["block.weight"], initial["block.weight"])
