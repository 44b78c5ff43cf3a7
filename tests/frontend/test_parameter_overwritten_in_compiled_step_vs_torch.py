"""A ``kiln.compile``d training step that overwrites a trained parameter under ``no_grad`` before its forward reads it
(Glow's ActNorm data-dependent init: ``self.loc.data.copy_(-mean)`` on the first batch) trains the parameter from the
value written, as PyTorch's eager step does: the parameter stays a leaf that ``backward()`` reaches and the optimizer
updates. kiln's trace made such a parameter's written value its only value, and the parameter no graph input:
``backward()`` then found no trained parameter (or skipped this one, so the optimizer left it at the written value)."""

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import assert_same_records, run_in_lockstep, snapshot

BATCHES = np.random.default_rng(0).standard_normal((3, 5, 4))

OVERWRITES = {
    "p.data.copy_": lambda torch, p, value: p.data.copy_(value),
    "p.copy_ under no_grad": lambda torch, p, value: p.copy_(value),
    "p.data = value": lambda torch, p, value: setattr(p, "data", value),
    "p.data.fill_": lambda torch, p, value: p.data.fill_(0.25),
}


def centred(torch, nn, F, overwrite, every_call):
    """A layer whose ``loc`` is set from its input (on the first call only, or at every call), then trained."""

    class Centred(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(4))
            self.scale = nn.Parameter(torch.ones(4))
            self.initialized = False

        def forward(self, x):
            if every_call or not self.initialized:
                with torch.no_grad():
                    OVERWRITES[overwrite](torch, self.loc, -x.mean(0))
                self.initialized = True
            return ((self.scale * (x + self.loc)) ** 2).sum() + self.loc.sum()

    return Centred()


def compiled_training(torch, nn, F, model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x):
        optimizer.zero_grad()
        loss = model(x)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if torch is kiln else step
    record = {"losses": []}
    for index, batch in enumerate(BATCHES):
        record["losses"].append(run(torch.tensor(batch)).item())
        record[f"state after step {index}"] = snapshot(model)
    return record


@pytest.mark.parametrize("every_call", [False, True], ids=["first call", "every call"])
@pytest.mark.parametrize("overwrite", list(OVERWRITES))
def test_parameter_overwritten_before_its_read_is_trained_as_torch(overwrite, every_call, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: centred(torch, nn, F, overwrite, every_call), compiled_training)
    assert_same_records(ours, theirs)
    assert not np.allclose(ours["state after step 0"]["loc"], -BATCHES[0].mean(0))  # trained from the value written
