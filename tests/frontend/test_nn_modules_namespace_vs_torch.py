"""``kiln.nn.modules`` answers PyTorch code's ``isinstance`` questions as ``torch.nn.modules`` does: torchvision's
``set_weight_decay`` asks ``isinstance(module, nn.modules.batchnorm._BatchNorm)`` to keep norms out of weight decay,
init loops ask ``nn.modules.conv._ConvNd``."""

from __future__ import annotations

import pytest

import kiln
from oracles import libraries

LAYERS = {
    "BatchNorm1d": lambda nn: nn.BatchNorm1d(3), "BatchNorm2d": lambda nn: nn.BatchNorm2d(3),
    "BatchNorm3d": lambda nn: nn.BatchNorm3d(3), "SyncBatchNorm": lambda nn: nn.SyncBatchNorm(3),
    "LazyBatchNorm2d": lambda nn: nn.LazyBatchNorm2d(), "InstanceNorm2d": lambda nn: nn.InstanceNorm2d(3),
    "LayerNorm": lambda nn: nn.LayerNorm(3), "GroupNorm": lambda nn: nn.GroupNorm(1, 3),
    "Conv1d": lambda nn: nn.Conv1d(2, 2, 1), "Conv2d": lambda nn: nn.Conv2d(2, 2, 1), "Conv3d": lambda nn: nn.Conv3d(2, 2, 1),
    "ConvTranspose2d": lambda nn: nn.ConvTranspose2d(2, 2, 1), "ConvTranspose1d": lambda nn: nn.ConvTranspose1d(2, 2, 1),
    "Linear": lambda nn: nn.Linear(2, 2),
}
BASES = ["batchnorm._BatchNorm", "batchnorm._NormBase", "instancenorm._InstanceNorm", "conv._ConvNd",
         "conv._ConvTransposeNd", "module.Module"]


def _base(nn, dotted):
    submodule, name = dotted.split(".")
    return getattr(getattr(nn.modules, submodule), name)


@pytest.mark.parametrize("layer", LAYERS)
def test_isinstance_of_torch_nn_modules_bases_as_torch(layer):
    answers = {}
    for name in ("kiln", "torch"):
        _, nn, _ = libraries(name)
        module = LAYERS[layer](nn)
        answers[name] = {base: isinstance(module, _base(nn, base)) for base in BASES}
    assert answers["kiln"] == answers["torch"]


def test_torchvision_set_weight_decay_groups_as_torch():
    """references/classification/utils.py's walk: the norms' parameters in the no-decay group."""
    groups = {}
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        norm_classes = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                        nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 5),
                              nn.LayerNorm(5), nn.InstanceNorm1d(5, affine=True), nn.BatchNorm1d(5))
        params = {"other": [], "norm": []}
        for module_name, module in model.named_modules():
            for p_name, _ in module.named_parameters(recurse=False):
                params["norm" if isinstance(module, norm_classes) else "other"].append(f"{module_name}.{p_name}")
        groups[name] = params
    assert groups["kiln"] == groups["torch"]
    assert groups["kiln"]["norm"] == ["1.weight", "1.bias", "5.weight", "5.bias", "6.weight", "6.bias", "7.weight", "7.bias"]


def test_submodules_import_as_torch_and_hold_the_layers():
    from kiln.nn.modules.batchnorm import BatchNorm2d, _BatchNorm
    from kiln.nn.modules.conv import Conv2d, _ConvNd
    from kiln.nn.modules.module import Module

    assert BatchNorm2d is kiln.nn.BatchNorm2d and Conv2d is kiln.nn.Conv2d and Module is kiln.nn.Module
    assert issubclass(kiln.nn.BatchNorm1d, _BatchNorm) and issubclass(kiln.nn.ConvTranspose2d, _ConvNd)


def test_deriving_from_an_isinstance_only_base_says_what_to_derive_from():
    """kiln's layers do not derive from these, so a subclass could not be a working layer: refused, naming the layer."""
    with pytest.raises(TypeError, match=r"MyNorm derives from kiln\.nn\.modules\.batchnorm\._NormBase.*derive from "
                                        r"kiln\.nn\.modules\.batchnorm\._BatchNorm"):
        class MyNorm(kiln.nn.modules.batchnorm._NormBase):
            pass


def _tied(nn):
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.BatchNorm1d(2), shared)
    model.extra = nn.Linear(2, 2, bias=False)
    model.extra.weight = shared.weight
    return model


@pytest.mark.parametrize("call", [
    "named_parameters(recurse=False)", "named_parameters(prefix='model')", "named_parameters(remove_duplicate=False)",
    "named_buffers(recurse=False)", "named_buffers(prefix='model')", "named_buffers(remove_duplicate=False)",
    "named_modules()", "named_modules(prefix='model')", "named_modules(remove_duplicate=False)",
    "parameters(recurse=False)", "buffers(recurse=False)", "extra.named_parameters(recurse=False)",
    "[1].named_buffers(recurse=False)", "[1].parameters(recurse=False)"])
def test_module_walks_take_torchs_arguments(call):
    """``recurse``, ``prefix`` (joined by a dot) and ``remove_duplicate`` as PyTorch's; a tied weight or a module used
    twice is named once unless ``remove_duplicate=False``."""
    names = {}
    for name in ("kiln", "torch"):
        _, nn, _ = libraries(name)
        model = _tied(nn)
        items = list(eval(f"model{'' if call.startswith('[') else '.'}{call}"))  # noqa: S307
        names[name] = [item[0] if isinstance(item, tuple) else tuple(item.shape) for item in items]
    assert names["kiln"] == names["torch"]


def test_named_modules_memo_as_torch():
    for name in ("kiln", "torch"):
        _, nn, _ = libraries(name)
        model = _tied(nn)
        memo = {model[1]}
        assert [n for n, _ in model.named_modules(memo=memo)] == ["", "0", "extra"]
        assert model[0] in memo and len(memo) == 4
