"""``nn.ParameterList`` holding ``None``: Transformer-XL's ``ProjectedAdaptiveLogSoftmax`` appends ``None`` to
``out_projs`` for each cluster needing no projection, reads ``self.out_projs[i]`` (None: no projection), and
``MemTransformerLM`` may assign another list's parameter into such a slot (``tie_projs``). torch's list counts and
indexes the ``None`` (no parameter, no state entry); kiln's refused it ("holds Parameters or numeric arrays")."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import require_torch


def parameter_list_record(lib):
    projections = lib.nn.ParameterList()
    projections.append(None)
    projections.append(lib.nn.Parameter(lib.ones(2, 3)))
    projections.append(None)
    record = {"len": len(projections), "entries": [type(p).__name__ for p in projections],
              "first": projections[0] is None, "last": projections[-1] is None, "slice": len(projections[:2]),
              "names": [name for name, _ in projections.named_parameters()], "state": list(projections.state_dict())}
    projections[0] = lib.nn.Parameter(lib.zeros(3))  # tie_projs: another list's parameter in the slot
    projections[1] = None
    record.update(after_names=[name for name, _ in projections.named_parameters()],
                  after_entries=[type(p).__name__ for p in projections], after_len=len(projections),
                  count=sum(p.numel() for p in projections.parameters()))
    return record


def test_parameter_list_holds_none_as_torch():
    torch = require_torch()
    assert parameter_list_record(kiln) == parameter_list_record(torch)


def test_a_none_projection_in_a_model_trains_as_torch():
    """The adaptive softmax's use: ``proj = self.out_projs[0]``, a linear map only where it is not None."""
    torch = require_torch()
    weights = np.random.default_rng(0).standard_normal((2, 4, 3))
    grads = []
    for lib in (kiln, torch):
        projections = lib.nn.ParameterList([None, lib.nn.Parameter(lib.tensor(weights[1][:3]))])
        x = lib.tensor(weights[0])
        for proj in projections:
            x = x if proj is None else lib.nn.functional.linear(x, proj.t().contiguous())
        x.sum().backward()
        grads.append(np.array(projections[1].grad.numpy()))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)
