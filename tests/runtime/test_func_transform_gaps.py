"""``torch.func`` gaps against torch 2.13: ensembles trained through ``stack_module_state``'s stacked leaves, ``vmap``'s
keyword arguments and tuple/None ``out_dims``, ``jacrev(chunk_size=)`` and ``jacfwd(randomness=)``, BatchNorm's running
statistics updated in place on the buffers given to ``functional_call`` (under ``grad``, ``vjp`` and ``vmap``, or
torch's errors), and the deprecated ``torch.nn.utils.stateless.functional_call``
(``runtime/vmap.py``, ``runtime/traced_transform.py``, ``runtime/torch_func.py``, ``frontend/functional_call.py``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries, require
from tree_close import assert_trees_close

RTOL = 1e-10
X = np.random.default_rng(0).standard_normal((6, 3))
BN_X = np.array([[1.0, 2.0], [3.0, 5.0]])


def _close(ours, theirs):
    assert_trees_close(ours, theirs, RTOL)


def _both(program):
    """``program(lib, nn)`` on kiln and on torch."""
    return [program(*libraries(name)[:2]) for name in ("kiln", "torch")]


def _linear(lib, nn, seed):
    model = nn.Linear(3, 2).double()
    weights = np.random.default_rng(seed)
    with lib.no_grad():
        model.weight.copy_(lib.tensor(weights.standard_normal((2, 3))))
        model.bias.copy_(lib.tensor(weights.standard_normal(2)))
    return model


# --- 1. stack_module_state: stacked parameters are new leaves that require grad ----------------------------------------


def test_an_ensemble_trains_through_stacked_parameters():
    def program(lib, nn):
        models = [_linear(lib, nn, seed) for seed in (1, 2)]
        x = lib.tensor(X[:4])
        params, buffers = lib.func.stack_module_state(models)
        flags = {name: (p.requires_grad, p.is_leaf) for name, p in params.items()}
        loss = lambda p, b: lib.func.functional_call(models[0], (p, b), (x,)).pow(2).mean()  # noqa: E731
        lib.func.vmap(loss)(params, buffers).sum().backward()
        return flags, {name: p.grad for name, p in params.items()}, models[0].weight.grad

    (flags, grads, untouched), (torch_flags, torch_grads, _) = _both(program)
    assert flags == torch_flags == {"weight": (True, True), "bias": (True, True)}
    assert grads["weight"].shape == (2, 2, 3) and untouched is None
    _close(grads, torch_grads)


def test_stacked_buffers_require_no_grad_and_frozen_parameters_stay_frozen():
    def program(lib, nn):
        models = [nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).double() for _ in range(3)]
        for model in models:
            model[0].bias.requires_grad_(False)
        params, buffers = lib.func.stack_module_state(models)
        return ({name: (tuple(p.shape), p.requires_grad) for name, p in params.items()},
                {name: (tuple(b.shape), b.requires_grad) for name, b in buffers.items()})

    ours, theirs = _both(program)
    assert ours == theirs


@pytest.mark.parametrize("case, message", [
    ("none", "stack_module_state: Expected at least one model, got 0."),
    ("modes", "stack_module_state: Expected all models to have the same training/eval mode."),
    ("classes", "stack_module_state: Expected all models to be of the same class."),
    ("flags", "Expected weight from each model to have the same .requires_grad"),
])
def test_stack_module_state_refuses_as_torch(case, message):
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        models = {"none": [], "modes": [nn.Linear(2, 2), nn.Linear(2, 2).eval()],
                  "classes": [nn.Linear(2, 2), nn.Bilinear(2, 2, 2)],
                  "flags": [nn.Linear(2, 2), nn.Linear(2, 2).requires_grad_(False)]}[case]
        with pytest.raises(RuntimeError, match=message.replace(".", r"\.")):
            lib.func.stack_module_state(models)


# --- 2. vmap passes keyword arguments through, unmapped ----------------------------------------------------------------


def test_vmap_passes_keyword_arguments_unmapped():
    def program(lib, nn):
        x = lib.tensor(X)
        scaled = lib.func.vmap(lambda x, scale=1.0: x * scale)
        outer = lib.func.vmap(lambda x, *, other: x * other)(x, other=lib.tensor(X))  # (6, 6, 3): other is unmapped
        mixed = lib.func.vmap(lambda x, y, shift=0.0, power=1: (x + y + shift) ** power, in_dims=(0, None))
        return scaled(x, scale=3.0), scaled(x, scale=2.0), scaled(x), outer, mixed(x, x[0], shift=1.5, power=2)

    ours, theirs = _both(program)
    assert ours[3].shape == (6, 6, 3)
    _close(ours, theirs)


def test_a_keyword_tensor_that_requires_grad_gets_its_gradient():
    def program(lib, nn):
        x, scale = lib.tensor(X), lib.tensor(X[0]).requires_grad_()
        lib.func.vmap(lambda x, scale: (x * scale).sin())(x, scale=scale).sum().backward()
        return scale.grad

    _close(*_both(program))


def test_vmap_with_keywords_inside_grad_and_the_in_dims_still_checked():
    def program(lib, nn):
        x = lib.tensor(X)
        loss = lambda w: lib.func.vmap(lambda row, w: (row * w).sum().tanh())(x, w=w).sum()  # noqa: E731
        return lib.func.grad(loss)(lib.tensor(X[1]))

    _close(*_both(program))
    with pytest.raises(ValueError, match=r"in_dims=\(0, 0\) has 2 entries for 1 items"):
        kiln.func.vmap(lambda x, scale: x * scale, in_dims=(0, 0))(kiln.tensor(X), scale=2.0)


# --- 3. out_dims: a tuple per result, None for a result no mapped input reaches -----------------------------------------


def test_tuple_nested_dict_and_none_out_dims_place_each_result_as_torch():
    def program(lib, nn):
        x, vmap = lib.tensor(X), lib.func.vmap
        return (vmap(lambda x: (x.sum(), x * 2), out_dims=(0, 1))(x),
                vmap(lambda x: (x.sum(), lib.ones(2, dtype=lib.float64)), out_dims=(0, None))(x),
                vmap(lambda x: (x * 2, (x, x.sum())), out_dims=(0, (1, 0)))(x),
                vmap(lambda x: {"a": x, "b": x.sum()}, out_dims={"a": 1, "b": 0})(x),
                vmap(lambda x: x * 2, out_dims=(1,))(x), vmap(lambda x: (x * 2,), out_dims=1)(x),
                vmap(lambda x: x * 2, out_dims=-1)(x))

    ours, theirs = _both(program)
    assert [tuple(t.shape) for t in ours[0]] == [(6,), (3, 6)] and tuple(ours[1][1].shape) == (2,)
    _close(ours, theirs)


def test_out_dims_gradients_match_torch():
    def program(lib, nn):
        x = lib.tensor(X).requires_grad_()
        total, doubled = lib.func.vmap(lambda x: (x.sin().sum(), x * x), out_dims=(0, 1))(x)
        (total.sum() + (doubled * lib.tensor(X.T)).sum()).backward()
        return x.grad

    _close(*_both(program))


@pytest.mark.parametrize("out_dims, message", [
    ((0, None), "can not return a BatchedTensor when out_dim is None"),
    (None, "can not return a BatchedTensor when out_dim is None"),
    ("a", "`out_dims` must be an int, None or a python collection of ints"),
    ((0, 1, 0), "(out_dims.*not compatible with the structure of|not compatible with the structure of the results)"),
])
def test_bad_out_dims_are_refused_with_torchs_words(out_dims, message):
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        fn = (lambda x: x * 2) if out_dims is None else (lambda x: (x.sum(), x * 2))
        with pytest.raises(ValueError, match=message) as caught:
            lib.func.vmap(fn, out_dims=out_dims)(lib.tensor(X))
        if name == "kiln":
            assert "test_func_transform_gaps.py" in str(caught.value) and "<string>" not in str(caught.value)


def test_in_dims_errors_name_in_dims_and_the_users_line():
    with pytest.raises(ValueError, match=r"(?s)test_func_transform_gaps\.py:\d+.*vmap: in_dims gives input 0 .*-2 <= in_dim < 2"):
        kiln.func.vmap(lambda x: x * 2, in_dims=2)(kiln.tensor(X))
    with pytest.raises(ValueError, match="Expected all tensors to have the same size in the mapped dimension"):
        kiln.func.vmap(lambda x, y: x * y)(kiln.tensor(X), kiln.ones(5, 3, dtype=kiln.float64))
    with pytest.raises(kiln.TraceError, match=r"(?s)test_func_transform_gaps\.py:\d+.*out_axes must be an int"):
        kiln.vmap(lambda a: a, out_axes=(0,))  # kiln's own vmap: an int, named at the user's line


# --- 4. torch's signatures: jacrev(chunk_size=), jacfwd(randomness=), vmap(randomness=, chunk_size=) -------------------


def test_jacrev_chunk_size_and_jacfwd_randomness_give_torchs_values():
    def program(lib, nn):
        f = lambda x: (x.sin() * x.sum()).exp()  # noqa: E731
        x = lib.tensor(X[0])
        return (lib.func.jacrev(f, chunk_size=2)(x), lib.func.jacrev(f, chunk_size=1, has_aux=False)(x),
                lib.func.jacfwd(f, randomness="same")(x), lib.func.jacfwd(f, has_aux=False, randomness="different")(x),
                lib.func.vmap(f, randomness="different", chunk_size=4)(lib.tensor(X)))

    _close(*_both(program))


@pytest.mark.parametrize("call, kind, message", [
    (lambda lib: lib.func.jacrev(lambda x: x, chunk_size=0), ValueError, "jacrev: `chunk_size` should be greater than 0."),
    (lambda lib: lib.func.jacfwd(lambda x: x, randomness="foo")(lib.ones(2)), RuntimeError,
     "Only allowed values for randomness are 'error', 'different', or 'same'. Got foo"),
    (lambda lib: lib.func.vmap(lambda x: x, chunk_size=0), ValueError,
     "vmap: chunk_size should be None or greater than 0. (got 0)"),
    (lambda lib: lib.func.vmap(lambda x: x, randomness="foo"), RuntimeError, "Only allowed values for randomness"),
])
def test_bad_chunk_size_and_randomness_are_refused_as_torch(call, kind, message):
    for name in ("kiln", "torch"):
        with pytest.raises(kind, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            call(libraries(name)[0])


# --- 5. BatchNorm's running statistics: in place on the buffers given to functional_call -------------------------------


def _batch_norm(lib, nn):
    return nn.BatchNorm1d(2).double(), lib.tensor(BN_X)


def _state(bn):
    return [bn.running_mean, bn.running_var, bn.num_batches_tracked]


@pytest.mark.parametrize("given", ["detached", "cloned"])
def test_grad_updates_the_given_buffers_as_torch(given):
    def program(lib, nn):
        bn, x = _batch_norm(lib, nn)
        params = {k: v.detach() for k, v in bn.named_parameters()}
        buffers = {k: v.detach() if given == "detached" else v.clone() for k, v in bn.named_buffers()}
        loss = lambda p, b: lib.func.functional_call(bn, (p, b), (x,)).pow(3).sum()  # noqa: E731
        first = lib.func.grad(loss)(params, buffers)
        second, value = lib.func.grad_and_value(loss)(params, buffers)  # a second step: the statistics move again
        return first, second, value, _state(bn), buffers

    ours, theirs = _both(program)
    _close(ours, theirs)


@pytest.mark.parametrize("case", ["closed over", "counter closed over"])
def test_vjp_refuses_to_update_buffers_it_closes_over_as_torch(case):
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        bn, x = _batch_norm(lib, nn)
        params = {k: v.detach() for k, v in bn.named_parameters()}
        buffers = {k: v.clone() for k, v in bn.named_buffers()}
        floats = {k: v for k, v in buffers.items() if k != "num_batches_tracked"}
        counter = {"num_batches_tracked": buffers["num_batches_tracked"]}
        with pytest.raises(RuntimeError, match="mutate a captured Tensor|read from outside it"):
            if case == "closed over":
                lib.func.vjp(lambda p: lib.func.functional_call(bn, (p, buffers), (x,)), params)
            else:
                lib.func.vjp(lambda p, b: lib.func.functional_call(bn, (p, b, counter), (x,)), params, floats)


def test_plain_functional_call_updates_cloned_buffers_as_torch():
    def program(lib, nn):
        bn, x = _batch_norm(lib, nn)
        params = {k: v.detach() for k, v in bn.named_parameters()}
        buffers = {k: v.clone() for k, v in bn.named_buffers()}
        out = lib.func.functional_call(bn, (params, buffers), (x,))
        return out, buffers, _state(bn)

    _close(*_both(program))


def test_vmap_over_stacked_buffers_updates_each_models_statistics():
    def program(lib, nn):
        models = [nn.BatchNorm1d(2).double() for _ in range(3)]
        params, buffers = lib.func.stack_module_state(models)
        xs = lib.tensor(np.random.default_rng(3).standard_normal((3, 4, 2)))
        call = lambda p, b, x: lib.func.functional_call(models[0], (p, b), (x,))  # noqa: E731
        out = lib.func.vmap(call)(params, buffers, xs)
        out = lib.func.vmap(call)(params, buffers, xs * 2)
        return out, buffers, _state(models[0])

    _close(*_both(program))


@pytest.mark.parametrize("case", ["module", "unmapped buffers"])
def test_vmap_refuses_unbatched_running_statistics_as_torch(case):
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        bn = nn.BatchNorm1d(2).double()
        xs = lib.tensor(np.random.default_rng(3).standard_normal((3, 4, 2)))
        buffers = {k: v.detach() for k, v in bn.named_buffers()}
        fn = bn if case == "module" else lambda x: lib.func.functional_call(bn, buffers, (x,))
        with pytest.raises(RuntimeError, match="Batch norm got a batched tensor as input while the running_mean or "
                                               "running_var, which will be updated in place, were not batched"):
            lib.func.vmap(fn)(xs)


def test_grad_writes_the_modules_own_buffers_where_torch_refuses():
    """A difference kept on purpose: torch.func refuses to update buffers the function closes over; kiln writes them, as
    its compiled training steps do (existing kiln code differentiates models in training mode this way). The values
    are torch's update, the one it makes on buffers given explicitly."""
    torch, nn = libraries("torch")[:2]
    bn, x = _batch_norm(torch, nn)
    with pytest.raises(RuntimeError, match="that would mutate a captured Tensor"):
        torch.func.grad(lambda p: torch.func.functional_call(bn, p, (x,)).pow(3).sum())({k: v.detach() for k, v in bn.named_parameters()})

    def program(lib, nn, captured):
        bn, x = _batch_norm(lib, nn)
        params, buffers = {k: v.detach() for k, v in bn.named_parameters()}, {k: v.detach() for k, v in bn.named_buffers()}
        loss = lambda p, b: lib.func.functional_call(bn, (p, b), (x,)).pow(3).sum()  # noqa: E731
        if captured:
            return lib.func.grad(lambda p: lib.func.functional_call(bn, p, (x,)).pow(3).sum())(params), _state(bn)
        return lib.func.grad(loss)(params, buffers), _state(bn)

    _close(program(kiln, kiln.nn, True), program(torch, nn, False))


def test_eval_mode_leaves_the_buffers_alone_under_grad_and_vmap():
    def program(lib, nn):
        bn, x = _batch_norm(lib, nn)
        bn.eval()
        params = {k: v.detach() for k, v in bn.named_parameters()}
        buffers = {k: v.clone() for k, v in bn.named_buffers()}
        g = lib.func.grad(lambda p: lib.func.functional_call(bn, (p, buffers), (x,)).pow(3).sum())(params)
        v = lib.func.vmap(lambda row: lib.func.functional_call(bn, (params, buffers), (row[None],)))(x)
        return g, v, buffers, _state(bn)

    _close(*_both(program))


# --- 6. torch.nn.utils.stateless.functional_call ---------------------------------------------------------------------


def test_stateless_functional_call_warns_and_delegates_as_torch():
    def program(lib, nn):
        model = _linear(lib, nn, 4)
        x, weight = lib.tensor(X), lib.tensor(np.ones((2, 3)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = lib.nn.utils.stateless.functional_call(model, {"weight": weight}, (x,))
            strict = lib.nn.utils.stateless.functional_call(model, {"weight": weight, "bias": lib.zeros(2, dtype=lib.float64)},
                                                            x, strict=True)
        return out, strict, [(w.category, str(w.message), w.filename) for w in caught]

    (out, strict, caught), (torch_out, torch_strict, torch_caught) = _both(program)
    _close((out, strict), (torch_out, torch_strict))
    assert [(c.__name__, m) for c, m, _ in caught] == [(c.__name__, m) for c, m, _ in torch_caught]
    assert caught[0][0] is FutureWarning and caught[0][2] == __file__
    require("torch")
