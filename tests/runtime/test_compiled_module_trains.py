"""``model = kiln.compile(model)`` in a PyTorch-style training loop, as ``torch.compile``'s module trains: a call on
tensors that need gradients runs the compiled forward and records it as one op of the eager chain, whose backward is
compiled with the loss's (``runtime/compiled_training.py``); inference stays compiled; a forward that cannot be traced
runs eagerly, warned once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from kiln.runtime.eager_backward import chain_of
from oracles import torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


def _batches(count=5, size=8, seed=4):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 6)), rng.integers(0, 3, size)) for _ in range(count)]


def _train(net, parameters, lib, batches, make_optimizer):
    optimizer = make_optimizer(lib, parameters)
    for x, y in batches:
        optimizer.zero_grad()
        lib.nn.functional.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward()
        optimizer.step()


@pytest.mark.parametrize("make_optimizer", [lambda lib, ps: lib.optim.SGD(ps, lr=0.3, momentum=0.9),
                                            lambda lib, ps: lib.optim.AdamW(ps, lr=0.05, weight_decay=0.1)],
                         ids=["sgd", "adamw"])
def test_a_compiled_module_trains_in_an_eager_loop_as_torch_without_warning(make_optimizer):
    torch, model, twin = torch_twins(_net, seed=4)
    compiled = kiln.compile(model)
    batches = _batches() + _batches(1, size=3, seed=5)  # a last, smaller batch compiles a second variant
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(compiled, model.parameters(), kiln, batches, make_optimizer)
    _train(twin, twin.parameters(), torch, batches, make_optimizer)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert len(compiled.training_variants) == 2 and all(compiled.training_variants.values()) and not compiled.trained_eagerly


def test_the_forward_is_one_op_of_the_chain_not_op_by_op():
    kiln.manual_seed(0)
    model = _net(kiln)
    loss = F.cross_entropy(kiln.compile(model)(kiln.tensor(np.ones((4, 6)))), kiln.tensor(np.zeros(4, np.int64)))
    names = [op.name for op in chain_of([loss.value])]
    calls = [op for op in chain_of([loss.value]) if op.name == "custom.vjp"]
    assert len(calls) == 1 and calls[0].attrs["function"] == "kiln.compile(Sequential)"
    assert "tensor.matmul" not in names and "tensor.tanh" not in names  # the model's ops ran compiled


def test_two_forwards_before_one_backward_keep_their_own_activations():
    torch, model, twin = torch_twins(_net, seed=2)
    compiled = kiln.compile(model)
    x1, x2 = np.random.default_rng(0).standard_normal((2, 5, 6))
    (compiled(kiln.tensor(x1)).sum() * 2 + compiled(kiln.tensor(x2)).tanh().sum()).backward()
    (twin(torch.tensor(x1)).sum() * 2 + twin(torch.tensor(x2)).tanh().sum()).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-12)


def _generator(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 6), lib.nn.ReLU(), lib.nn.Linear(6, 6)).double()


def test_gradients_flow_through_a_compiled_module_to_its_input_and_the_module_before_it():
    """A GAN's compiled discriminator: the generator's parameters get their gradients through it."""
    torch, generator, g_twin = torch_twins(_generator, seed=1)
    _, critic, c_twin = torch_twins(_net, seed=3)
    compiled = kiln.compile(critic)
    z = np.random.default_rng(1).standard_normal((7, 3))
    compiled(generator(kiln.tensor(z))).logsumexp(1).mean().backward()
    c_twin(g_twin(torch.tensor(z))).logsumexp(1).mean().backward()
    for p, q in zip([*generator.parameters(), *critic.parameters()], [*g_twin.parameters(), *c_twin.parameters()]):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_autograd_grad_with_respect_to_an_input_of_a_compiled_module():
    torch, model, twin = torch_twins(_net, seed=5)
    x = np.random.default_rng(2).standard_normal((4, 6))
    kx, tx = kiln.tensor(x).requires_grad_(), torch.tensor(x, requires_grad=True)
    (kg,) = kiln.autograd.grad(kiln.compile(model)(kx).pow(2).sum(), kx)
    (tg,) = torch.autograd.grad(twin(tx).pow(2).sum(), tx)
    np.testing.assert_allclose(kg.numpy(), tg.numpy(), rtol=1e-12, atol=1e-12)


class _TwoHeads:
    def __new__(cls, lib):
        class TwoHeads(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.head = lib.nn.Linear(6, 5), lib.nn.Linear(5, 2)

            def forward(self, x):
                h = self.body(x).relu()
                return {"logits": self.head(h), "pair": (h.sum(1), h.argmax(1))}

        return TwoHeads().double()


def test_nested_outputs_keep_their_structure_and_an_integer_output_needs_no_gradient():
    torch, model, twin = torch_twins(_TwoHeads, seed=6)
    x = np.random.default_rng(3).standard_normal((4, 6))
    out, ref = kiln.compile(model)(kiln.tensor(x)), twin(torch.tensor(x))
    assert set(out) == {"logits", "pair"} and isinstance(out["pair"], tuple)
    assert out["logits"].requires_grad and not out["pair"][1].requires_grad and out["pair"][1].dtype == kiln.int64
    np.testing.assert_array_equal(out["pair"][1].numpy(), ref["pair"][1].numpy())
    (out["logits"].sum() + out["pair"][0].pow(2).sum()).backward()
    (ref["logits"].sum() + ref["pair"][0].pow(2).sum()).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-12)


def _bn_net(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 8), lib.nn.BatchNorm1d(8), lib.nn.ReLU(), lib.nn.Linear(8, 3)).double()


def test_batch_norm_running_statistics_and_gradients_match_torch_and_a_frozen_layer_gets_none():
    torch, model, twin = torch_twins(_bn_net, seed=7)
    for frozen in (model[0], twin[0]):
        for p in frozen.parameters():
            p.requires_grad_(False)
    optimizers = kiln.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2), \
        torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=0.2)
    compiled = kiln.compile(model)
    for x, y in _batches(3, seed=8):
        for net, lib, optimizer in ((compiled, kiln, optimizers[0]), (twin, torch, optimizers[1])):
            optimizer.zero_grad()
            lib.nn.functional.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward()
            optimizer.step()
    assert model[0].weight.grad is None
    for (name, kept), (_, ref) in zip(model.state_dict().items(), twin.state_dict().items()):
        np.testing.assert_allclose(np.array(kept), ref.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)
    for p in model[0].parameters():
        p.requires_grad_(True)  # unfrozen: a new variant differentiates it
    F.cross_entropy(compiled(kiln.tensor(np.ones((8, 6)))), kiln.tensor(np.zeros(8, np.int64))).backward()
    assert model[0].weight.grad is not None and len(compiled.training_variants) == 2


def test_dropout_draws_a_mask_per_call_and_its_gradient_follows_the_mask():
    kiln.manual_seed(1)
    model = kiln.nn.Sequential(kiln.nn.Linear(6, 40), kiln.nn.Dropout(0.5)).double()
    compiled = kiln.compile(model)
    x = np.random.default_rng(4).standard_normal((30, 6))
    outs = []
    for _ in range(2):
        model[0].weight.grad = None
        out = compiled(kiln.tensor(x))
        out.sum().backward()
        pre = x @ np.array(model[0].weight.data).T + np.array(model[0].bias.data)
        scale = out.numpy() / pre  # the mask over 1 - p: 0 or 2
        assert set(np.round(np.unique(scale), 9)) == {0.0, 2.0}
        np.testing.assert_allclose(model[0].weight.grad, scale.T @ x, rtol=1e-10)
        outs.append(out.numpy())
    assert not np.array_equal(outs[0] == 0, outs[1] == 0)  # a fresh mask each call
    (variant,) = compiled.training_variants.values()
    assert not [op.name for op in variant.split.backward.ops if "random" in op.name]  # the mask is a residual


class _DataDependent:
    def __new__(cls, lib):
        class DataDependent(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = lib.nn.Linear(6, 3)

            def forward(self, x):
                y = self.linear(x)
                return y * 2 if y.sum().item() > 0 else y  # Python control flow on a value: no trace

        return DataDependent().double()


def test_a_forward_that_cannot_be_traced_runs_eagerly_warned_once_and_still_trains():
    torch, model, twin = torch_twins(_DataDependent, seed=9)
    compiled = kiln.compile(model)
    x = np.random.default_rng(5).standard_normal((4, 6))
    with pytest.warns(UserWarning, match="runs eagerly"):
        compiled(kiln.tensor(x)).pow(2).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled(kiln.tensor(x)).pow(2).sum().backward()  # same signature: eager again, no second warning
    twin(torch.tensor(x)).pow(2).sum().backward()
    twin(torch.tensor(x)).pow(2).sum().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert compiled.trained_eagerly and list(compiled.training_variants.values()) == [None]


def test_a_gradient_penalty_through_a_compiled_critic_reaches_its_weights_as_torch():
    """WGAN-GP: the second derivative runs through the compiled call's residuals, recomputed with a chain."""
    torch, critic, twin = torch_twins(_net, seed=11)
    compiled = kiln.compile(critic)
    mix = np.random.default_rng(6).standard_normal((5, 6))
    for net, lib in ((compiled, kiln), (twin, torch)):
        x = lib.tensor(mix).requires_grad_()
        (g,) = lib.autograd.grad(net(x).logsumexp(1).sum(), x, create_graph=True)
        ((g.norm(2, dim=1) - 1) ** 2).mean().backward()
    for p, q in zip(critic.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_backward_create_graph_then_a_penalty_on_the_gradients_as_torch():
    torch, model, twin = torch_twins(_bn_net, seed=12)
    compiled = kiln.compile(model)
    x, y = _batches(1, seed=13)[0]
    for net, lib, module in ((compiled, kiln, model), (twin, torch, twin)):
        lib.nn.functional.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward(create_graph=True)
        sum((p.grad ** 2).sum() for p in module.parameters()).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad.detach().numpy(), q.grad.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_double_backward_through_a_compiled_call_that_draws_random_numbers_is_refused_clearly():
    kiln.manual_seed(0)
    model = kiln.nn.Sequential(kiln.nn.Linear(6, 8), kiln.nn.Dropout(0.3), kiln.nn.Linear(8, 1)).double()
    x = kiln.tensor(np.ones((2, 6))).requires_grad_()
    out = kiln.compile(model)(x).sum()
    with pytest.raises(KilnError, match=r"kiln.compile\(Sequential\).*draws random numbers.*eval\(\)"):
        kiln.autograd.grad(out, x, create_graph=True)


def test_inference_calls_stay_compiled_and_warn_nothing():
    kiln.manual_seed(0)
    model = _net(kiln)
    compiled = kiln.compile(model)
    x = np.random.default_rng(0).standard_normal((4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arrays = compiled(x)  # NumPy in: the compiled function, NumPy out
        model.eval()
        with kiln.no_grad():
            tensor = compiled(kiln.tensor(x))
    assert isinstance(arrays, np.ndarray) and isinstance(tensor, kiln.Tensor) and not tensor.requires_grad
    assert len(compiled.variants) == 1 and not compiled.training_variants
    np.testing.assert_allclose(arrays, model(kiln.tensor(x)).numpy(), rtol=1e-12)


def test_a_module_in_eval_mode_still_trains_as_torch_when_gradients_are_on():
    """Fine-tuning with frozen BatchNorm statistics: eval() mode, gradients to the weights."""
    torch, model, twin = torch_twins(_bn_net, seed=15)
    compiled = kiln.compile(model)
    for net, lib, module in ((compiled, kiln, model), (twin, torch, twin)):
        module.eval()
        optimizer = lib.optim.SGD(module.parameters(), lr=0.1)
        for x, y in _batches(2, seed=16):
            optimizer.zero_grad()
            lib.nn.functional.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward()
            optimizer.step()
    for (name, kept), (_, ref) in zip(model.state_dict().items(), twin.state_dict().items()):
        np.testing.assert_allclose(np.array(kept), ref.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)
    assert len(compiled.training_variants) == 1 and not compiled.variants


def test_past_the_recompile_limit_new_shapes_run_eagerly_warned_once_and_still_train():
    torch, model, twin = torch_twins(_net, seed=14)
    compiled = kiln.compile(model)
    compiled.recompile_limit = 2
    batches = [_batches(1, size=size, seed=size)[0] for size in (3, 4, 5, 6, 3)]
    with pytest.warns(UserWarning, match="recompile_limit") as caught:
        _train(compiled, model.parameters(), kiln, batches, lambda lib, ps: lib.optim.SGD(ps, lr=0.2))
    _train(twin, twin.parameters(), torch, batches, lambda lib, ps: lib.optim.SGD(ps, lr=0.2))
    assert len(caught) == 1 and [v is not None for v in compiled.training_variants.values()] == [True, True, False, False]
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
