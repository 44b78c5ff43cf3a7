"""A parameter group holding float32 and float64 parameters, the whole step one ``kiln.compile(fullgraph=True)``
graph: the group's ``lr`` input took the first parameter's dtype, and the other's update op refused it
('hyper-parameter operands are 0-d f32 scalars, got tensor<f64>'). A mixed group's lr is fed in float64 now and each
update reads it in its parameter's dtype, rounded once as torch's kernels read the Python float
(``runtime/step_graph.py``: ``hyper_input_dtype``, ``parameter_hyper``). Against torch 2.13's eager loop."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

OPTIMIZERS = {
    "SGD": lambda torch, params: torch.optim.SGD(params, lr=0.1),
    "SGD momentum": lambda torch, params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
    "Adam": lambda torch, params: torch.optim.Adam(params, lr=0.01),
    "AdamW": lambda torch, params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("first", ["float64", "float32"], ids=["float64 first", "float32 first"])
def test_mixed_dtype_group_steps_as_torch(name, first):
    results = []
    for library in ("kiln", "torch"):
        torch, nn, F = libraries(library)
        wide = nn.Parameter(torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64))
        narrow = nn.Parameter(torch.tensor([0.5, -1.0, 0.25], dtype=torch.float32))
        optimizer = OPTIMIZERS[name](torch, [wide, narrow] if first == "float64" else [narrow, wide])

        def step(x):
            optimizer.zero_grad()
            loss = ((wide * x) ** 2).sum() + ((narrow * x.float()).sin()).sum()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if library == "kiln" else step
        for _ in range(3):
            run(torch.tensor([1.0, 3.0, -2.0], dtype=torch.float64))
        results.append((np.array(wide.detach().numpy()), np.array(narrow.detach().numpy())))
    (our_wide, our_narrow), (their_wide, their_narrow) = results
    assert our_wide.dtype == np.float64 and our_narrow.dtype == np.float32
    np.testing.assert_allclose(our_wide, their_wide, rtol=1e-12)
    np.testing.assert_allclose(our_narrow, their_narrow, rtol=2e-6)
