"""``kiln.compile`` with ``torch.compile``'s arguments, keyword arguments in calls, ``None`` outputs, and
``nn.Module.compile()`` in place (``runtime/compile_arguments.py``)."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from oracles import require_torch, torch_twins


def _attention(lib):
    return lib.nn.MultiheadAttention(8, 2, batch_first=True).double()


def _padding(lib):
    return lib.tensor(np.array([[False] * 5, [False] * 3 + [True] * 2]))


def test_keyword_tensors_are_inputs_and_other_keywords_are_fixed_per_variant_as_torch():
    torch, attention, twin = torch_twins(_attention, seed=3)
    compiled = kiln.compile(attention)
    q = np.random.default_rng(0).standard_normal((2, 5, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, weights = compiled(kiln.tensor(q), kiln.tensor(q), kiln.tensor(q), key_padding_mask=_padding(kiln))
        alone, none = compiled(kiln.tensor(q), kiln.tensor(q), kiln.tensor(q), key_padding_mask=_padding(kiln),
                               need_weights=False)
    ref, ref_weights = twin(torch.tensor(q), torch.tensor(q), torch.tensor(q), key_padding_mask=_padding(torch))
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), ref_weights.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(alone.numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert none is None and len(compiled.training_variants) == 2 and all(compiled.training_variants.values())
    (out.sum() + alone.pow(2).sum()).backward()
    (ref.sum() + twin(torch.tensor(q), torch.tensor(q), torch.tensor(q), key_padding_mask=_padding(torch),
                      need_weights=False)[0].pow(2).sum()).backward()
    for p, r in zip(attention.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, r.grad.numpy(), rtol=1e-10, atol=1e-12)


class _Pooled:
    def __new__(cls, lib):
        class Pooled(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = lib.nn.Linear(3, 4)

            def forward(self, x, mask=None, reduce="sum"):
                y = self.linear(x) if mask is None else self.linear(x) * mask
                return y.sum(1) if reduce == "sum" else y.mean(1)

        return Pooled().double()


def test_positional_none_and_strings_are_fixed_per_variant_and_tensors_stay_inputs():
    torch, model, twin = torch_twins(_Pooled, seed=8)
    compiled = kiln.compile(model)
    x, mask = np.random.default_rng(3).standard_normal((2, 5, 3)), np.random.default_rng(4).random((2, 5, 1))
    for args in ((None, "mean"), (mask, "sum"), (None,)):
        out = compiled(kiln.tensor(x), *[kiln.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        ref = twin(torch.tensor(x), *[torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
        out.sum().backward(), ref.sum().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert len(compiled.training_variants) == 3 and all(compiled.training_variants.values())


def test_inference_with_keywords_and_tensors_in_gives_tensors_out():
    torch, attention, twin = torch_twins(_attention, seed=4)
    attention.eval(), twin.eval()
    q = np.random.default_rng(1).standard_normal((2, 5, 8))
    with kiln.no_grad():
        out, weights = kiln.compile(attention)(kiln.tensor(q), kiln.tensor(q), kiln.tensor(q), key_padding_mask=_padding(kiln))
    ref, _ = twin(torch.tensor(q), torch.tensor(q), torch.tensor(q), key_padding_mask=_padding(torch))
    assert isinstance(out, kiln.Tensor) and not out.requires_grad
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_the_decorator_forms_and_modes():
    @kiln.compile
    def double(x):
        return x * 2

    @kiln.compile(mode="max-autotune", fullgraph=True, dynamic=False)
    def square(x):
        return x * x

    np.testing.assert_array_equal(double(np.arange(3.0)), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(square(np.arange(3.0)), [0.0, 1.0, 4.0])
    square(np.arange(4.0))
    double(np.arange(4.0))
    assert len(square.variants) == 2 and len(double.variants) == 1  # dynamic=False: static shapes


def test_debugging_backends_and_disable_give_the_function_back_and_bad_arguments_are_refused():
    model = kiln.nn.Linear(2, 2)
    assert kiln.compile(model, backend="eager") is model and kiln.compile(model, backend="aot_eager") is model
    assert kiln.compile(model, disable=True) is model
    assert isinstance(kiln.compile(model, backend="inductor"), kiln.CompiledFunction)
    with pytest.raises(KilnError, match="mode='fastest' is not one of torch.compile's modes"):
        kiln.compile(model, mode="fastest")
    with pytest.raises(KilnError, match="TorchInductor's settings"):
        kiln.compile(model, options={"triton.cudagraphs": True})


class _Branchy:
    def __new__(cls, lib):
        class Branchy(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = lib.nn.Linear(3, 2)

            def forward(self, x):
                y = self.linear(x)
                return y if y.sum().item() > 0 else -y

        return Branchy().double()


def test_fullgraph_raises_where_the_training_forward_cannot_be_traced():
    kiln.manual_seed(0)
    model = _Branchy(kiln)
    with pytest.raises(KilnError, match="item"):
        kiln.compile(model, fullgraph=True)(kiln.tensor(np.ones((2, 3))))


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.ReLU(), lib.nn.Linear(8, 2)).double()


def test_module_compile_in_place_trains_as_torch_and_copies_are_plain_modules():
    torch, model, twin = torch_twins(_mlp, seed=5)
    model.compile()
    twin.compile(backend="eager")  # torch's own, without a C compiler: the same math
    x = np.random.default_rng(2).standard_normal((6, 4))
    for net, lib in ((model, kiln), (twin, torch)):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            lib.nn.functional.mse_loss(net(lib.tensor(x)), lib.zeros(6, 2, dtype=lib.float64)).backward()
            optimizer.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert len(model.__dict__["_compiled_call"].training_variants) == 1  # the calls went through the compiled forward
    clone = copy.deepcopy(model)
    assert "_compiled_call" not in clone.__dict__
    buffer = io.BytesIO()
    kiln.save(model, buffer)
    buffer.seek(0)
    loaded = kiln.load(buffer, weights_only=False)
    np.testing.assert_allclose(loaded(kiln.tensor(x)).detach().numpy(), model(kiln.tensor(x)).detach().numpy(), rtol=1e-12)
    with kiln.no_grad():
        assert isinstance(model(kiln.tensor(x)), kiln.Tensor)


def test_module_compile_passes_its_arguments_on():
    model = _mlp(kiln)
    with pytest.raises(KilnError, match="mode='turbo'"):
        model.compile(mode="turbo")
    model.compile(dynamic=False)
    model.eval()
    with kiln.no_grad():
        model(kiln.tensor(np.ones((2, 4)))), model(kiln.tensor(np.ones((3, 4))))
    assert len(model.__dict__["_compiled_call"].variants) == 2
    F.mse_loss(model.train()(kiln.tensor(np.ones((2, 4)))), kiln.zeros(2, 2, dtype=kiln.float64)).backward()
    assert model[0].weight.grad is not None


def test_a_compiled_training_step_function_compiles_with_fullgraph_and_trains_as_torch():
    """``@torch.compile(fullgraph=True)`` on a whole step (backward and optimizer.step inside): one graph
    (``runtime/step_capture.py``; tests/runtime/test_compiled_training_step.py tests it in depth)."""
    torch, model, twin = torch_twins(_mlp, seed=9)
    x = np.random.default_rng(5).standard_normal((6, 4))

    def step_of(lib, net):
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

        def step(inputs, targets):
            optimizer.zero_grad()
            loss = lib.nn.functional.mse_loss(net(inputs), targets)
            loss.backward()
            optimizer.step()
            return loss

        return step

    compiled = kiln.compile(step_of(kiln, model), fullgraph=True)
    reference = step_of(torch, twin)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses = [compiled(kiln.tensor(x), kiln.zeros(6, 2, dtype=kiln.float64)).item() for _ in range(3)]
    expected = [reference(torch.tensor(x), torch.zeros(6, 2, dtype=torch.float64)).item() for _ in range(3)]
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    assert all(compiled.variants.values())


def test_the_compiled_module_answers_as_the_module_and_keeps_itself_through_train_and_eval():
    """A sampling loop calls ema.eval() on torch.compile's result; model = model.train() keeps it compiled."""
    model = kiln.nn.Sequential(kiln.nn.Linear(4, 8), kiln.nn.Dropout(0.5), kiln.nn.Linear(8, 2))
    compiled = kiln.compile(model)
    assert compiled.eval() is compiled and not model.training and not compiled.training
    assert compiled.train() is compiled and model.training and compiled.training
    assert [p is q for p, q in zip(compiled.parameters(), model.parameters())] == [True] * 4
    assert list(compiled.state_dict()) == list(model.state_dict())
    compiled.eval()
    with kiln.no_grad():
        out = compiled(kiln.tensor(np.ones((3, 4), np.float32)))
    np.testing.assert_allclose(out.numpy(), model(kiln.tensor(np.ones((3, 4), np.float32))).numpy(), rtol=1e-6)
    with pytest.raises(AttributeError):
        compiled.no_such_attribute


def test_a_broadcast_input_of_batch_size_one_stays_static_beside_a_batch():
    """An attention bias of shape (1, H, L, S) next to a batch of queries (it raised 'N is already 2')."""
    torch = require_torch()
    rng = np.random.default_rng(7)
    q, bias = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((1, 3, 4, 4))

    def attend(lib, query, mask):
        return lib.nn.functional.scaled_dot_product_attention(query, query, query, attn_mask=mask)

    compiled = kiln.compile(lambda query, mask: attend(kiln, query, mask))
    for size in (2, 5, 1):
        batch = np.concatenate([q] * 3)[:size]
        np.testing.assert_allclose(compiled(batch, bias), attend(torch, torch.tensor(batch), torch.tensor(bias)).numpy(),
                                   rtol=1e-12, atol=1e-12)
    assert len(compiled.variants) == 2  # batches of 2 and 5 share one graph (the bias static); 1 and 1 make another


def test_a_torch_compiled_models_checkpoint_loads_without_its_orig_mod_prefix():
    torch, model, twin = torch_twins(_mlp, seed=10)
    for p in twin.parameters():
        p.data.add_(1.0)  # different from kiln's, so that loading shows
    state = {name: value.numpy() for name, value in torch.compile(twin).state_dict().items()}
    assert all(name.startswith("_orig_mod.") for name in state)
    result = model.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(np.array(p.data), q.detach().numpy())
    with pytest.raises(KilnError, match="unexpected keys"):
        model.load_state_dict({**state, "other.weight": np.zeros(1)})


def test_fullgraph_names_what_stops_the_trace_once_shapes_are_static_not_the_symbolic_batchs_complaint():
    x = np.ones((3, 2), np.float32)
    weight = kiln.nn.Parameter(kiln.tensor(np.ones(2, np.float32)))  # trained: a mask made from it has no values

    def joined(a, b):
        c = kiln.cat([a, b]) * weight  # symbolic batches cannot join along it: the static trace goes further
        return c[c > 0].sum()  # and stops here, which is what the user must change

    with pytest.raises(kiln.TraceError, match=r"x\[mask\] has a data-dependent shape") as caught:
        kiln.compile(joined, fullgraph=True)(kiln.tensor(x), kiln.tensor(x))
    assert "c[c > 0]" in str(caught.value)


def test_tensors_in_a_keyword_or_mixed_container_are_inputs_not_values_fixed_by_their_repr():
    """lucidrains' ``Electra.forward(input, noise={...})``: a dict of tensors given as a keyword (or a container
    holding a flag beside its tensors) was fixed whole, keyed by its repr, which prints tensors rounded, so a call with
    values close by reused the graph holding the first call's tensors (1.00001 for 1.00002). Its tensors are inputs
    now, as ``torch.compile`` takes them; the other leaves stay fixed per variant."""

    @kiln.compile(fullgraph=True)
    def scaled(x, *, extra):
        return x * extra["a"]

    @kiln.compile(fullgraph=True)
    def mixed(x, extra):
        return x * extra["a"] if extra["flag"] else x

    x = kiln.ones(2, dtype=kiln.float64)
    for value in (1.00001, 1.00002, 3.0):
        a = kiln.tensor([value, 1.0], dtype=kiln.float64)
        np.testing.assert_array_equal(scaled(x, extra={"a": a}).numpy(), [value, 1.0])
        np.testing.assert_array_equal(mixed(x, {"a": a, "flag": True}).numpy(), [value, 1.0])
        np.testing.assert_array_equal(mixed(x, {"a": a, "flag": False}).numpy(), [1.0, 1.0])
    assert len(scaled.variants) == 1 and len(mixed.variants) == 2


def test_a_namedtuple_comes_back_as_its_class():
    """A compiled function returning a namedtuple (lucidrains' ``Electra``'s ``Results``) gave a plain tuple, so
    ``out.loss`` failed; torch.compile returns the namedtuple."""
    from collections import namedtuple

    Results = namedtuple("Results", ["loss", "parts"])
    model = kiln.nn.Linear(3, 2)
    step = kiln.compile(lambda x: Results(model(x).sum(), (model(x), model(x) * 2)), fullgraph=True)
    with kiln.no_grad():
        out = step(kiln.ones(4, 3))
    assert type(out) is Results and out.parts[1].shape == (4, 2)
    out = step(kiln.ones(4, 3))
    out.loss.backward()
    assert type(out) is Results and model.weight.grad is not None
