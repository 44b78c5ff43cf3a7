"""``kiln.nn.utils.prune`` (``frontend/prune.py``) against ``torch.nn.utils.prune`` 2.13 in float64: each method's mask
on the same weights, masks combined in a ``PruningContainer``, ``global_unstructured`` (with importance scores),
``remove``, the names in ``state_dict``, the hook registry, the gradient through the mask, and torch's errors. The
random methods draw from each library's own generator, so they are checked for what they prune (how many entries,
whole channels)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

WEIGHT = np.sin(np.arange(48.0) * 1.7).reshape(4, 3, 2, 2)
LINEAR = np.cos(np.arange(30.0) * 0.9).reshape(5, 6)


def _setup(name):
    """``(lib, nn, prune, conv, linear)``: a Conv2d and a Linear with the weights above, in float64."""
    lib, nn, _ = libraries(name)
    prune = importlib.import_module(lib.__name__ + ".nn.utils.prune")
    conv, linear = nn.Conv2d(3, 4, 2).double(), nn.Linear(6, 5).double()
    with lib.no_grad():
        conv.weight.copy_(lib.tensor(WEIGHT))
        linear.weight.copy_(lib.tensor(LINEAR))
        linear.bias.copy_(lib.tensor(np.arange(5.0) - 2))
    return lib, nn, prune, conv, linear


def _both(fn):
    """``fn(lib, nn, prune, conv, linear)`` in kiln and in torch."""
    require_torch()
    return [fn(*_setup(name)) for name in ("kiln", "torch")]


def _array(tensor):
    return np.array(tensor.detach().numpy())


@pytest.mark.parametrize("method", ["l1", "l1_count", "ln2_dim0", "ln1_dim1", "lninf_dim_neg", "identity", "custom", "l1_scores"])
def test_mask_of_each_method_as_torch(method):
    def pruned(lib, nn, prune, conv, linear):
        if method == "l1":
            prune.l1_unstructured(conv, "weight", amount=0.3)
        elif method == "l1_count":
            prune.l1_unstructured(linear, "bias", amount=2)
        elif method == "ln2_dim0":
            prune.ln_structured(conv, "weight", amount=0.5, n=2, dim=0)
        elif method == "ln1_dim1":
            prune.ln_structured(conv, "weight", amount=1, n=1, dim=1)
        elif method == "lninf_dim_neg":
            prune.ln_structured(linear, "weight", amount=0.4, n=float("inf"), dim=-1)
        elif method == "identity":
            prune.identity(conv, "weight")
        elif method == "custom":
            prune.custom_from_mask(linear, "weight", mask=lib.tensor(LINEAR > 0))
        else:
            prune.l1_unstructured(linear, "weight", amount=0.5, importance_scores=lib.tensor(np.abs(LINEAR[::-1].copy())))
        return {name: _array(t) for module in (conv, linear) for name, t in module.state_dict().items()} | {
            "weight": _array(conv.weight), "linear weight": _array(linear.weight), "bias": _array(linear.bias)}

    ours, theirs = _both(pruned)
    assert list(ours) == list(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_repeated_pruning_combines_in_a_container_as_torch():
    """The tutorial's iterative pruning: the second method prunes among the kept entries (structured: the kept
    channels); the hook is one PruningContainer holding both, and the registry maps ids to hooks as torch's."""

    def pruned(lib, nn, prune, conv, linear):
        prune.l1_unstructured(conv, "weight", amount=0.25)
        prune.ln_structured(conv, "weight", amount=0.5, n=2, dim=0)
        prune.l1_unstructured(conv, "weight", amount=3)
        (hook,) = conv._forward_pre_hooks.values()
        return {"kinds": [type(hook).__name__] + [type(method).__name__ for method in hook], "mask": _array(conv.weight_mask),
                "name": hook._tensor_name, "pruned": prune.is_pruned(nn.Sequential(conv))}

    ours, theirs = _both(pruned)
    np.testing.assert_array_equal(ours.pop("mask"), theirs.pop("mask"))
    assert ours == theirs == {"kinds": ["PruningContainer", "L1Unstructured", "LnStructured", "L1Unstructured"],
                              "name": "weight", "pruned": True}


def test_global_unstructured_with_importance_scores_as_torch():
    def pruned(lib, nn, prune, conv, linear):
        prune.l1_unstructured(linear, "weight", amount=0.2)  # an existing mask: its zeros stay and count
        scores = {(conv, "weight"): lib.tensor(np.abs(WEIGHT) * 0.5)}
        prune.global_unstructured([(conv, "weight"), (linear, "weight"), (linear, "bias")],
                                  pruning_method=prune.L1Unstructured, importance_scores=scores, amount=25)
        return [_array(conv.weight_mask), _array(linear.weight_mask), _array(linear.bias_mask)]

    ours, theirs = _both(pruned)
    for got, want in zip(ours, theirs):
        np.testing.assert_array_equal(got, want)


def test_forward_gradient_and_remove_as_torch():
    """The masked weight is recomputed before each forward (a write to weight_orig shows), the gradient reaches
    weight_orig through the mask, and remove() leaves a Parameter named weight holding the zeros."""

    def run(lib, nn, prune, conv, linear):
        prune.ln_structured(linear, "weight", amount=2, n=1, dim=0)
        with lib.no_grad():
            linear.weight_orig.mul_(2)
        x = lib.tensor(np.linspace(-1, 1, 12).reshape(2, 6))
        out = linear(x)
        (out ** 2).sum().backward()
        grad = _array(linear.weight_orig.grad)
        prune.remove(linear, "weight")
        return {"out": _array(out), "grad": grad, "weight": _array(linear.weight), "keys": list(linear.state_dict()),
                "parameter": isinstance(linear.weight, nn.Parameter), "hooks": len(linear._forward_pre_hooks),
                "params": [name for name, _ in linear.named_parameters()], "pruned": prune.is_pruned(linear)}

    ours, theirs = _both(run)
    for key in ("out", "grad", "weight"):
        np.testing.assert_allclose(ours.pop(key), theirs.pop(key), rtol=1e-12, atol=1e-15, err_msg=key)
    assert ours == theirs == {"keys": ["bias", "weight"], "parameter": True, "hooks": 0, "params": ["bias", "weight"],
                              "pruned": False}


def test_pruned_state_dict_loads_into_a_pruned_twin():
    """A pruned checkpoint loads into a model pruned with identity (weight_orig and weight_mask), as scripts do."""
    _, nn, prune, conv, linear = _setup("kiln")
    prune.l1_unstructured(linear, "weight", amount=0.5)
    state = linear.state_dict()
    twin = nn.Linear(6, 5).double()
    prune.identity(twin, "weight")
    twin.load_state_dict(state)
    x = kiln.tensor(np.ones((1, 6)))
    np.testing.assert_array_equal(_array(twin(x)), _array(linear(x)))
    assert float(twin.weight_mask.sum()) == 15


def test_random_methods_prune_what_torch_says():
    _, nn, prune, conv, linear = _setup("kiln")
    kiln.manual_seed(3)
    prune.random_unstructured(linear, "weight", amount=0.4)
    assert int((linear.weight_mask == 0).sum()) == 12 and int((linear.weight == 0).sum()) == 12
    prune.random_structured(conv, "weight", amount=2, dim=1)
    channels = _array(conv.weight_mask).sum(axis=(0, 2, 3))
    assert sorted(channels.tolist()) == [0.0, 0.0, 16.0]


@pytest.mark.parametrize("call, error, message", [
    (lambda prune, conv, linear: prune.l1_unstructured(linear, "weight", amount=1.5), ValueError,
     "amount=1.5 should either be a float in the range"),
    (lambda prune, conv, linear: prune.l1_unstructured(linear, "weight", amount=31), ValueError,
     "amount=31 should be smaller than the number of parameters to prune=30"),
    (lambda prune, conv, linear: prune.l1_unstructured(linear, "weight", amount="a"), TypeError, "Invalid type for amount"),
    (lambda prune, conv, linear: prune.ln_structured(linear, "bias", amount=1, n=2, dim=0), ValueError,
     "Structured pruning can only be applied to multidimensional tensors"),
    (lambda prune, conv, linear: prune.remove(linear, "weight"), ValueError,
     "Parameter 'weight' of module .* has to be pruned before pruning can be removed"),
    (lambda prune, conv, linear: prune.global_unstructured([(linear, "weight")], pruning_method=prune.LnStructured,
                                                           amount=1, n=1, dim=0), TypeError, 'Only "unstructured" PRUNING_TYPE'),
])
def test_errors_as_torch(call, error, message):
    def failed(lib, nn, prune, conv, linear):
        with pytest.raises(error, match=message):
            call(prune, conv, linear)
        return [n for n, _ in linear.named_parameters()], list(linear.state_dict())  # a failed pruning is undone

    ours, theirs = _both(failed)
    assert ours == theirs
