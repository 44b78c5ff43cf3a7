"""``p.data[index]`` in a ``kiln.compile``d training step is PyTorch's view of the parameter's values: an in-place
method on it writes the parameter there at every call (GatedPixelCNN's forward, ritheshkumar95/pytorch-vqvae:
``self.vert_stack.weight.data[:, :, -1].zero_()``), ``p.data[index] = v`` and ``p.data[index] *= s`` too, and a read
gives the value at the call. kiln's ``p.data`` is a NumPy array standing for the parameter's traced value, but its
indexed views were plain NumPy: the write happened once, to the array, when the trace ran (so the first call's forward
and every later call missed it) and a read gave the trace's values. ``p.detach()[:, -1].zero_()`` (torch: detach
shares the storage and is no autograd view of ``p``) was refused with gradients on, the trace taking the detach for a
differentiable view of the leaf."""

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import assert_same_records, run_in_lockstep, snapshot

BATCHES = np.random.default_rng(0).standard_normal((3, 5, 4))

WRITES = {
    "p.data[:, -1].zero_()": lambda w: w.data[:, -1].zero_(),
    "p.data[1:, :2].mul_(0.5)": lambda w: w.data[1:, :2].mul_(0.5),
    "p.data[0][1:].fill_(0.25)": lambda w: w.data[0][1:].fill_(0.25),
    "p.data[:, 0] = p.data[:, 1]": lambda w: w.data.__setitem__((slice(None), 0), w.data[:, 1]),
    "p.data[2] *= 0.5": lambda w: _scale_row(w.data),
    "p.data[[0, 2]].zero_() (a copy)": lambda w: w.data[[0, 2]].zero_(),
    "p.detach()[:, -1].zero_()": lambda w: w.detach()[:, -1].zero_(),
    "p.detach().mul_(0.5)": lambda w: w.detach().mul_(0.5),
}


def _scale_row(data):
    data[2] *= 0.5


def masked_linear(torch, nn, F, write):
    class MaskedLinear(nn.Linear):
        def forward(self, x):
            WRITES[write](self.weight)  # with gradients on, as a forward runs
            reads = self.weight.data[:, 1:].sum() + x[:, :3] * self.weight.data[0, :3]  # the values written
            return super().forward(x) + reads

    return MaskedLinear(4, 3)


def compiled_training(torch, nn, F, model):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)

    def step(x):
        loss = model(x).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if torch is kiln else step
    record = {"losses": []}
    for index, batch in enumerate(BATCHES):
        record["losses"].append(run(torch.tensor(batch)).item())
        record[f"state after step {index}"] = snapshot(model)
    return record


@pytest.mark.parametrize("write", list(WRITES))
def test_write_through_an_indexed_data_view_in_a_compiled_step_as_torch(write, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: masked_linear(torch, nn, F, write), compiled_training)
    assert_same_records(ours, theirs)

