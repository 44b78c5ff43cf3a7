"""A ``kiln.compile``'d function whose Python reads a value computed from its inputs (``int(lengths.max())``,
``if mask.any():``, Glow's ``if self.initialized.item() == 0:``) is traced with the call's value and guarded on it
(``frontend/value_guards.py``): a call giving the same value reuses the graph, another traces a variant, as
``torch.compile`` specializes. kiln refused these with "item() of a traced tensor" (torchaudio's Conformer's
``lengths_to_padding_mask`` could not be compiled with ``fullgraph=True``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries, require_torch


def padding_mask(torch):
    def mask(x, lengths):  # torchaudio's lengths_to_padding_mask, then a masked mean
        max_length = int(torch.max(lengths).item())
        padding = torch.arange(max_length, dtype=lengths.dtype).expand(len(lengths), max_length) >= lengths.unsqueeze(1)
        kept = x[:, :max_length].masked_fill(padding, 0.0)
        return kept.sum(dim=1) / lengths

    return mask


def _variants(compiled):
    """The graphs compiled for its calls (the per-signature ones and those superseded when a guard failed)."""
    variants = [*compiled.variants.values(), *(v for earlier in compiled.superseded.values() for v in earlier)]
    return sum(hasattr(variant, "executable") for variant in variants)


def test_a_length_read_with_item_specializes_and_guards_as_torch():
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((3, 6))
    compiled = kiln.compile(padding_mask(kiln), fullgraph=True)
    for lengths in ([2, 5, 3], [5, 1, 1], [4, 4, 2], [3, 5, 5]):
        ours = compiled(kiln.tensor(x), kiln.tensor(lengths))
        theirs = padding_mask(torch)(torch.tensor(x), torch.tensor(lengths))
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-15)
    assert _variants(compiled) == 2  # max 5, then 4; the last call reuses the first variant


def test_a_branch_on_an_input_mask_takes_each_branch_as_torch():
    torch = require_torch()

    def clip_negatives(lib):
        def clip(x):
            if (x < 0).any():  # a data-dependent branch: specialized on its truth value
                return lib.where(x < 0, x * 0.1, x)
            return x * 2

        return clip

    compiled = kiln.compile(clip_negatives(kiln), fullgraph=True)
    for values in ([1.0, -2.0], [1.0, 2.0], [-3.0, 4.0], [5.0, 6.0]):
        ours = compiled(kiln.tensor(values))
        theirs = clip_negatives(torch)(torch.tensor(values))
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-7)
    assert _variants(compiled) == 2


def act_norm(torch, nn):
    class ActNorm(nn.Module):  # rosinality/glow-pytorch's: data-dependent init on the first forward
        def __init__(self, channels):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
            self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
            self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

        def initialize(self, x):
            with torch.no_grad():
                flatten = x.permute(1, 0, 2, 3).contiguous().view(x.shape[1], -1)
                mean = flatten.mean(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3)
                std = flatten.std(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3)
                self.loc.data.copy_(-mean)
                self.scale.data.copy_(1 / (std + 1e-6))

        def forward(self, x):
            if self.initialized.item() == 0:
                self.initialize(x)
                self.initialized.fill_(1)
            return self.scale * (x + self.loc)

    return ActNorm(2).double()


def test_glow_act_norm_initializes_once_in_a_compiled_step_as_torch():
    """The buffer read by ``item()`` is a guard source: the first call traces the initializing branch, the buffer
    written to 1 fails the guard, and the second call traces the plain one; the steps train loc and scale as torch's."""
    torch = require_torch()
    batches = [np.random.default_rng(k).standard_normal((4, 2, 3, 3)) * (k + 2) + k for k in range(3)]
    records = {}
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        model = act_norm(lib, nn)
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1)

        def step(batch):
            optimizer.zero_grad()
            y = model(batch)
            (y**2).mean().backward()
            optimizer.step()
            return y.detach()

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        outputs = [np.array(run(lib.tensor(batch)).numpy()) for batch in batches]
        records[name] = outputs + [np.array(model.loc.detach().numpy()), np.array(model.scale.detach().numpy()),
                                   int(model.initialized)]
    for ours, theirs in zip(records["kiln"], records["torch"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_a_closure_tensor_read_as_a_value_is_guarded_when_written_outside():
    limit = kiln.tensor([1, 1])
    compiled = kiln.compile(lambda x: x[: int(limit.sum())] * 2, fullgraph=True)  # an op on the lifted tensor
    assert compiled(kiln.arange(5.0)).tolist() == [0.0, 2.0]
    limit[1] = 2
    assert compiled(kiln.arange(5.0)).tolist() == [0.0, 2.0, 4.0]


def test_a_training_forward_reading_a_length_gets_torch_gradients():
    torch = require_torch()
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    grads = {}
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        lib.manual_seed(0) if lib is kiln else None
        linear = nn.Linear(3, 2).double()
        if lib is torch:
            linear.load_state_dict({key: torch.tensor(value) for key, value in grads["state"].items()})
        else:
            grads["state"] = {key: np.array(value.detach().numpy()) for key, value in linear.state_dict().items()}

        def pooled(inputs, lengths):
            width = int(lengths.max())
            return linear(inputs[:, :width]).sum(dim=1) / lengths.unsqueeze(1)

        forward = kiln.compile(pooled, fullgraph=True) if lib is kiln else pooled
        for lengths in ([2, 4], [4, 1], [3, 3]):
            forward(lib.tensor(x), lib.tensor(lengths, dtype=lib.float64)).pow(2).sum().backward()
        grads[name] = [np.array(p.grad.numpy()) for p in linear.parameters()]
    for ours, theirs in zip(grads["kiln"], grads["torch"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_a_value_that_changes_at_every_call_stops_at_the_recompile_limit():
    x = kiln.arange(12.0)
    strict = kiln.compile(lambda x, n: x[: int(n.sum())], fullgraph=True)
    for k in range(8):
        assert len(strict(x, kiln.tensor([k, 0]))) == k
    with pytest.raises(KilnError, match="recompile_limit.*differs at every call"):
        strict(x, kiln.tensor([8, 0]))
    lenient = kiln.compile(lambda x, n: x[: int(n.sum())])
    with pytest.warns(UserWarning, match="differs at every call"):
        lengths = [len(lenient(x, kiln.tensor([k, 1]))) for k in range(10)]
    assert lengths == [k + 1 for k in range(10)]


def test_a_training_forward_whose_value_changes_at_every_call_stops_at_the_recompile_limit():
    linear = kiln.nn.Linear(1, 1)
    strict = kiln.compile(lambda x, n: linear(x[: int(n)]), fullgraph=True)
    x = kiln.ones(12, 1)
    for k in range(1, 9):  # 8 variants
        strict(x, kiln.tensor(k)).sum().backward()
    with pytest.raises(KilnError, match="recompile_limit.*differs at every call"):
        strict(x, kiln.tensor(9))
    lenient = kiln.compile(lambda x, n: linear(x[: int(n)]))
    with pytest.warns(UserWarning, match="differs at every call"):
        sizes = [len(lenient(x, kiln.tensor(k))) for k in range(1, 11)]
    assert sizes == list(range(1, 11))


def test_a_value_read_through_detach_is_specialized():
    compiled = kiln.compile(lambda x, n: x[: int(n.detach().sum())] * 2, fullgraph=True)
    assert compiled(kiln.arange(6.0), kiln.tensor([1.0, 1.0])).tolist() == [0.0, 2.0]
    assert compiled(kiln.arange(6.0), kiln.tensor([1.0, 2.0])).tolist() == [0.0, 2.0, 4.0]


def test_a_value_behind_an_impure_op_is_no_guard_program():
    """A guard program runs again before each call: an op with effects (a collective) never goes into one, as
    ``trace_known_values`` refuses it for constants."""
    from kiln.compiler.ir import Builder, DType, Graph, TensorType
    from kiln.frontend.value_guards import program_for

    graph = Graph("g")
    builder = Builder(graph)
    x = graph.add_input(TensorType((3,), DType.f32), "x")
    total = builder.op("tensor.reduce_sum", builder.op("comm.allreduce", x, op="sum", world_size=2), axes=None)
    assert program_for(total, lambda value: value is x) is None
    assert program_for(builder.op("tensor.reduce_sum", x, axes=None), lambda value: value is x) is not None
