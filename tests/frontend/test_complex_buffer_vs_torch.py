"""A complex buffer (``frontend/complex_parameter.py``'s ``ComplexBuffer``): ``self.register_buffer("freqs_cis",
torch.polar(torch.ones_like(freqs), freqs))`` as torchtitan's Llama keeps its rotary table, read by slicing and complex
products in the forward. kiln kept a ``Buffer`` of complex values that acted as a real tensor (the trace refused it:
'the IR holds no complex values'); it is kept as a complex parameter is, its ``view_as_real`` pairs, and used as the
complex tensor. Against torch 2.13 in float64: outputs and gradients eagerly, compiled (``fullgraph=True``) and in a
compiled training step; ``load_state_dict`` of torch's complex buffer; reassignment; ``persistent=False``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

X = np.random.default_rng(0).standard_normal((2, 5, 4))


def _rotary(lib, persistent=True):
    class Rotary(lib.nn.Module):
        def __init__(self, dim=4, end=6, theta=10000.0):
            super().__init__()
            freqs = 1.0 / (theta ** (lib.arange(0, dim, 2)[: (dim // 2)].double() / dim))
            freqs = lib.outer(lib.arange(end, dtype=lib.float64), freqs)
            self.register_buffer("freqs_cis", lib.polar(lib.ones_like(freqs), freqs), persistent=persistent)
            self.weight = lib.nn.Parameter(lib.linspace(0.5, 2.0, dim, dtype=lib.float64))

        def forward(self, x):
            x_ = lib.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
            freqs_cis = self.freqs_cis[: x.shape[1]]
            return lib.view_as_real(x_ * freqs_cis).flatten(2) * self.weight

    return Rotary()


def _outputs_and_gradients(lib, model):
    x = lib.tensor(X, requires_grad=True)
    out = model(x)
    (out * out).sum().backward()
    return [np.asarray(v.detach().numpy()) for v in (out, x.grad, model.weight.grad)]


def test_a_complex_buffer_reads_as_torchs_with_gradients():
    torch = require_torch()
    model = _rotary(kiln)
    assert model.freqs_cis.is_complex() and "freqs_cis" in dict(model.named_buffers())
    assert not any(p is model.freqs_cis for p in model.parameters())
    for ours, theirs in zip(_outputs_and_gradients(kiln, model), _outputs_and_gradients(torch, _rotary(torch))):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_a_complex_buffer_in_a_compiled_forward_and_training_step_as_torch():
    torch = require_torch()
    model, twin = _rotary(kiln), _rotary(torch)
    with kiln.no_grad():
        compiled = kiln.compile(model, fullgraph=True)(kiln.tensor(X))
    np.testing.assert_allclose(compiled.numpy(), twin(torch.tensor(X)).detach().numpy(), rtol=1e-12, atol=1e-12)
    weights = []
    for lib, module in ((kiln, model), (torch, twin)):
        optimizer = lib.optim.SGD(module.parameters(), lr=0.1)

        def step(x):
            optimizer.zero_grad()
            loss = (module(x) ** 2).mean()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        for _ in range(2):
            run(lib.tensor(X))
        weights.append(np.asarray(module.weight.detach().numpy()))
    np.testing.assert_allclose(*weights, rtol=1e-12, atol=1e-12)


def test_state_dict_load_reassignment_and_non_persistent_complex_buffers():
    """kiln's ``state_dict`` holds the pairs (as for a complex parameter); torch's complex entry loads; a complex
    tensor assigned to the name is the buffer's new value; ``persistent=False`` stays out of ``state_dict``."""
    torch = require_torch()
    model, twin = _rotary(kiln), _rotary(torch)
    assert model.state_dict()["freqs_cis"].shape == (6, 2, 2)
    state = twin.state_dict()
    state["freqs_cis"] = state["freqs_cis"] * (1 - 2j)
    model.load_state_dict(state)
    np.testing.assert_allclose(np.asarray(model.freqs_cis.complex_view()), state["freqs_cis"].numpy(), rtol=1e-15)
    model.freqs_cis = kiln.polar(kiln.ones(6, 2, dtype=kiln.float64), kiln.zeros(6, 2, dtype=kiln.float64))
    assert model.freqs_cis.is_complex() and "freqs_cis" in model.state_dict()
    np.testing.assert_allclose(model(kiln.tensor(X)).numpy(), X * np.linspace(0.5, 2.0, 4), rtol=1e-15)
    assert "freqs_cis" not in _rotary(kiln, persistent=False).state_dict()


def _complex_dtype_name(tensor):
    dtype = tensor.complex_view().dtype if hasattr(tensor, "complex_view") else tensor.dtype
    return str(dtype).split(".")[-1]


@pytest.mark.parametrize("cast", ["float", "double", "half"])
def test_casting_the_module_leaves_complex_buffers_and_parameters_as_torch(cast):
    """``model.float()``/``double()``/``half()`` cast floating tensors only: a complex buffer or parameter keeps its
    dtype, as torch's (kiln cast their float pairs: complex128 became complex64)."""
    require_torch()
    names = []
    for lib in (kiln, libraries("torch")[0]):
        model = _rotary(lib)
        model.spectral = lib.nn.Parameter(lib.ones(3, dtype=lib.complex128))
        getattr(model, cast)()
        names.append([_complex_dtype_name(t) for t in (model.freqs_cis, model.spectral)] + [_complex_dtype_name(
            model.weight)])
    assert names[0] == names[1] and names[0][:2] == ["complex128", "complex128"]
