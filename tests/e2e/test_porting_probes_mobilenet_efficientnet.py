"""Porting probes: MobileNetV3 and EfficientNet-B0 blocks as torchvision writes them, run once as PyTorch code (``torch``
is ``torch`` or ``kiln``) in both libraries from kiln's initial weights in float64: the first output, the first
gradients, the losses, the state after a few steps, the EMA model and eval outputs agree, eagerly and with the whole
step (zero_grad, forward, backward, RMSprop, the EMA update) in one ``kiln.compile(fullgraph=True)`` graph against
torch's eager loop; and once in float32.

The program (torchvision's ``mobilenetv3.py``, ``efficientnet.py``, ``ops/misc.py``, ``ops/stochastic_depth.py`` and
references/classification's ``train.py``/``utils.py`` idioms): ``_make_divisible``, ``Conv2dNormActivation`` (a
``nn.Sequential`` subclass, ``inplace=True`` activations), depthwise convs (``groups=channels``), squeeze-excitation
(``AdaptiveAvgPool2d(1)`` -> 1x1 convs -> Hardsigmoid or Sigmoid scale), Hardswish/ReLU/SiLU, ``BatchNorm2d(eps=1e-3,
momentum=0.01)`` through ``functools.partial``, the residual by ``result += input``, stochastic depth in "row" mode
(``torch.empty(size).bernoulli_(survival_rate)``, ``div_``), ``kaiming_normal_(mode="fan_out")`` / ``normal_(0, 0.01)``
/ ``uniform_`` init over ``self.modules()``, ``nn.Dropout(inplace=True)`` classifier, ``CrossEntropyLoss(
label_smoothing=0.1)``, RMSprop with TF's ``eps=0.0316, alpha=0.9``, ``set_weight_decay``'s groups (norms by
``isinstance(m, nn.modules.batchnorm._BatchNorm)`` without decay), ``AveragedModel(get_ema_multi_avg_fn,
use_buffers=True)``, channels_last model and inputs.

What broke: ``nn.modules.batchnorm._BatchNorm`` (kiln had no ``kiln.nn.modules``) and ``named_parameters(recurse=False)``
(``tests/frontend/test_nn_modules_namespace_vs_torch.py``; ``named_modules()`` also named a module used twice twice).
Tolerance: PyTorch 2.13's CPU Hardsigmoid backward multiplies by float32's 1/6 (0.16666667163...) even in float64
(``test_torch_hardsigmoid_slope_is_float32s_one_sixth``); kiln's slope is the exact 1/6, so MobileNetV3's gradients
upstream of an SE gate differ from torch's by 3e-8 relative and its run is compared at rtol 1e-6; EfficientNet (Sigmoid
gates) agrees to 1e-10. Stochastic depth draws from each library's own generator, so the eager lockstep replays kiln's
``bernoulli_`` draws into torch's run (both programs unchanged); the compiled lockstep runs with ``p = 0`` and the
compiled step's own draws are checked for their statistics. The classifier's dropout is ``p=0`` in lockstep.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require_torch

def mobilenet_family(torch, nn, F, variant="mobilenet_v3", stochastic_depth_prob=0.2, dropout=0.0, num_classes=5):
    def _make_divisible(v, divisor, min_value=None):
        if min_value is None:
            min_value = divisor
        new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
        if new_v < 0.9 * v:
            new_v += divisor
        return new_v

    def stochastic_depth(input, p, mode, training=True):
        if p < 0.0 or p > 1.0:
            raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
        if mode not in ["batch", "row"]:
            raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
        if not training or p == 0.0:
            return input
        survival_rate = 1.0 - p
        if mode == "row":
            size = [input.shape[0]] + [1] * (input.ndim - 1)
        else:
            size = [1] * input.ndim
        noise = torch.empty(size, dtype=input.dtype, device=input.device)
        noise = noise.bernoulli_(survival_rate)
        if survival_rate > 0.0:
            noise.div_(survival_rate)
        return input * noise

    class StochasticDepth(nn.Module):
        def __init__(self, p, mode):
            super().__init__()
            self.p, self.mode = p, mode

        def forward(self, input):
            return stochastic_depth(input, self.p, self.mode, self.training)

    class Conv2dNormActivation(nn.Sequential):
        def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, norm_layer=None,
                     activation_layer=nn.ReLU, dilation=1, inplace=True):
            padding = (kernel_size - 1) // 2 * dilation
            layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                                groups=groups, bias=norm_layer is None)]
            if norm_layer is not None:
                layers.append(norm_layer(out_channels))
            if activation_layer is not None:
                params = {} if inplace is None else {"inplace": inplace}
                layers.append(activation_layer(**params))
            super().__init__(*layers)
            self.out_channels = out_channels

    class SqueezeExcitation(nn.Module):
        def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
            self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
            self.activation = activation()
            self.scale_activation = scale_activation()

        def _scale(self, input):
            scale = self.avgpool(input)
            scale = self.fc1(scale)
            scale = self.activation(scale)
            scale = self.fc2(scale)
            return self.scale_activation(scale)

        def forward(self, input):
            scale = self._scale(input)
            return scale * input

    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)

    class InvertedResidual(nn.Module):
        """MobileNetV3's block: expand (1x1), depthwise, Hardsigmoid SE, project; Hardswish or ReLU."""

        def __init__(self, input_channels, kernel, expanded_channels, out_channels, use_se, use_hs, stride):
            super().__init__()
            self.use_res_connect = stride == 1 and input_channels == out_channels
            activation_layer = nn.Hardswish if use_hs else nn.ReLU
            layers = []
            if expanded_channels != input_channels:
                layers.append(Conv2dNormActivation(input_channels, expanded_channels, kernel_size=1,
                                                   norm_layer=norm_layer, activation_layer=activation_layer))
            layers.append(Conv2dNormActivation(expanded_channels, expanded_channels, kernel_size=kernel, stride=stride,
                                               groups=expanded_channels, norm_layer=norm_layer,
                                               activation_layer=activation_layer))
            if use_se:
                squeeze_channels = _make_divisible(expanded_channels // 4, 8)
                layers.append(SqueezeExcitation(expanded_channels, squeeze_channels, scale_activation=nn.Hardsigmoid))
            layers.append(Conv2dNormActivation(expanded_channels, out_channels, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=None))
            self.block = nn.Sequential(*layers)

        def forward(self, input):
            result = self.block(input)
            if self.use_res_connect:
                result += input
            return result

    class MBConv(nn.Module):
        """EfficientNet's block: SiLU, SE with max(1, in // 4) squeeze channels, stochastic depth on the residual."""

        def __init__(self, expand_ratio, kernel, stride, input_channels, out_channels, sd_prob):
            super().__init__()
            self.use_res_connect = stride == 1 and input_channels == out_channels
            layers = []
            expanded_channels = _make_divisible(input_channels * expand_ratio, 8)
            if expanded_channels != input_channels:
                layers.append(Conv2dNormActivation(input_channels, expanded_channels, kernel_size=1,
                                                   norm_layer=norm_layer, activation_layer=nn.SiLU))
            layers.append(Conv2dNormActivation(expanded_channels, expanded_channels, kernel_size=kernel, stride=stride,
                                               groups=expanded_channels, norm_layer=norm_layer,
                                               activation_layer=nn.SiLU))
            squeeze_channels = max(1, input_channels // 4)
            layers.append(SqueezeExcitation(expanded_channels, squeeze_channels, activation=partial(nn.SiLU, inplace=True)))
            layers.append(Conv2dNormActivation(expanded_channels, out_channels, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=None))
            self.block = nn.Sequential(*layers)
            self.stochastic_depth = StochasticDepth(sd_prob, "row")

        def forward(self, input):
            result = self.block(input)
            if self.use_res_connect:
                result = self.stochastic_depth(result)
                result += input
            return result

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            stem = _make_divisible(8 * 1.0, 8)
            if variant == "mobilenet_v3":
                blocks = [InvertedResidual(stem, 3, 16, 8, True, False, 1),
                          InvertedResidual(8, 3, 24, 16, False, True, 2),
                          InvertedResidual(16, 5, 40, 16, True, True, 1)]
                act, last_channel = nn.Hardswish, 24
            else:
                specs = [(1, 3, 1, stem, 8), (4, 3, 2, 8, 16), (4, 5, 1, 16, 16)]
                blocks = [MBConv(e, k, s, i, o, stochastic_depth_prob * index / len(specs))
                          for index, (e, k, s, i, o) in enumerate(specs)]
                act, last_channel = nn.SiLU, 4 * 16
            self.features = nn.Sequential(
                Conv2dNormActivation(3, stem, kernel_size=3, stride=2, norm_layer=norm_layer, activation_layer=act),
                *blocks,
                Conv2dNormActivation(16, 32, kernel_size=1, norm_layer=norm_layer, activation_layer=act))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            if variant == "mobilenet_v3":
                self.classifier = nn.Sequential(nn.Linear(32, last_channel), nn.Hardswish(inplace=True),
                                                nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
            else:
                self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(32, num_classes))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    if variant == "mobilenet_v3":
                        nn.init.normal_(m.weight, 0, 0.01)
                    else:
                        init_range = 1.0 / math.sqrt(m.out_features)
                        nn.init.uniform_(m.weight, -init_range, init_range)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            x = self.features(x)
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return self.classifier(x)

    return TinyNet()


def set_weight_decay(torch, nn, model, weight_decay, norm_weight_decay=0.0):
    """torchvision references/classification/utils.py's, without custom keys."""
    norm_classes = (
        nn.modules.batchnorm._BatchNorm,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.LocalResponseNorm,
    )
    params = {"other": [], "norm": []}
    params_weight_decay = {"other": weight_decay, "norm": norm_weight_decay}

    def _add_params(module, prefix=""):
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, norm_classes):
                params["norm"].append(p)
                continue
            params["other"].append(p)
        for child_name, child_module in module.named_children():
            child_prefix = f"{prefix}.{child_name}" if prefix != "" else child_name
            _add_params(child_module, prefix=child_prefix)

    _add_params(model)
    return [{"params": params[key], "weight_decay": params_weight_decay[key]} for key in params if len(params[key]) > 0]


# --- lockstep runs ---------------------------------------------------------------------------------------------------

STEPS, BATCH, IMAGE, CLASSES = 3, 4, 8, 5


def _data(steps=STEPS):
    rng = np.random.default_rng(0)
    return rng.standard_normal((steps, BATCH, 3, IMAGE, IMAGE)), rng.integers(0, CLASSES, (steps, BATCH))


def _training_pieces(torch, nn, model, decay=0.9):
    """torchvision's recipe: channels_last, the EMA (``use_buffers=True``: BN statistics averaged too), RMSprop with
    TF's eps/alpha over ``set_weight_decay``'s groups, the label-smoothed loss."""
    model.to(memory_format=torch.channels_last)
    swa_utils = torch.optim.swa_utils
    ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)
    parameters = set_weight_decay(torch, nn, model, 1e-2)
    optimizer = torch.optim.RMSprop(parameters, lr=0.01, momentum=0.9, weight_decay=1e-2, eps=0.0316, alpha=0.9)
    return ema, optimizer, nn.CrossEntropyLoss(label_smoothing=0.1)


def _evaluated(torch, record, model, ema, images):
    model.eval()
    ema.eval()
    x = torch.tensor(images[0]).contiguous(memory_format=torch.channels_last)
    record["eval"], record["ema_eval"] = array(model(x)), array(ema(x))
    record["state"], record["ema"] = snapshot(model), snapshot(ema)
    return record


class BernoulliReplay:
    """Kiln's ``Tensor.bernoulli_`` draws recorded, then given in order as torch's (the libraries' generators draw
    other numbers for a seed): the stochastic depth masks are then the same in both runs."""

    def __init__(self, monkeypatch):
        self.monkeypatch, self.draws, self.replayed = monkeypatch, [], 0

    def install(self, torch):
        if torch is kiln:
            original = kiln.Tensor.bernoulli_

            def recording(tensor, p=0.5, **kwargs):
                drawn = original(tensor, p, **kwargs)
                self.draws.append(array(drawn))
                return drawn

            self.monkeypatch.setattr(kiln.Tensor, "bernoulli_", recording)
            return
        self.monkeypatch.undo()

        def replaying(tensor, p=0.5, **kwargs):
            self.replayed += 1
            return tensor.copy_(torch.tensor(self.draws[self.replayed - 1]))

        self.monkeypatch.setattr(torch.Tensor, "bernoulli_", replaying)


def train_eagerly(replay, steps=STEPS, image_dtype=np.float64):
    images, labels = _data(steps)
    images = images.astype(image_dtype)

    def train(torch, nn, F, model):
        replay.install(torch)
        ema, optimizer, criterion = _training_pieces(torch, nn, model)
        record = {"losses": []}
        for step in range(steps):
            output = model(torch.tensor(images[step]).contiguous(memory_format=torch.channels_last))
            loss = criterion(output, torch.tensor(labels[step]))
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("output", array(output))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            ema.update_parameters(model)
            record["losses"].append(loss.item())
        return _evaluated(torch, record, model, ema, images)

    return train


TOLERANCES = {"mobilenet_v3": dict(rtol=1e-6, atol=1e-12), "efficientnet": dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize("variant", ["mobilenet_v3", "efficientnet"])
def test_trains_as_torch(variant, monkeypatch, float64_default):
    replay = BernoulliReplay(monkeypatch)
    build = partial(mobilenet_family, variant=variant, stochastic_depth_prob=0.6)
    ours, theirs = run_in_lockstep(lambda torch, nn, F: build(torch, nn, F), train_eagerly(replay))
    assert_same_records(ours, theirs, **TOLERANCES[variant])
    if variant == "efficientnet":  # the last block's rows kept with probability 1 - 0.6 * 2 / 3, some dropped
        masks = np.concatenate([d.reshape(-1) for d in replay.draws])
        assert len(replay.draws) == replay.replayed == STEPS and set(masks) == {0.0, 1.0}


def train_compiled(steps=STEPS):
    images, labels = _data(steps)

    def train(torch, nn, F, model):
        ema, optimizer, criterion = _training_pieces(torch, nn, model)

        def train_step(x, y):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            ema.update_parameters(model)
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        batches = [(torch.tensor(images[s]).contiguous(memory_format=torch.channels_last), torch.tensor(labels[s]))
                   for s in range(steps)]
        record = {"losses": [run(*batch).item() for batch in batches]}
        return _evaluated(torch, record, model, ema, images)

    return train


@pytest.mark.parametrize("variant", ["mobilenet_v3", "efficientnet"])
def test_compiled_step_as_torch(variant, float64_default):
    build = partial(mobilenet_family, variant=variant, stochastic_depth_prob=0.0)
    ours, theirs = run_in_lockstep(lambda torch, nn, F: build(torch, nn, F), train_compiled())
    assert_same_records(ours, theirs, **TOLERANCES[variant])


def test_mobilenet_v3_float32_as_torch(monkeypatch):
    """float32, as the family trains: rounding apart (different conv/matmul summation orders)."""
    replay = BernoulliReplay(monkeypatch)
    ours, theirs = run_in_lockstep(partial(mobilenet_family, variant="mobilenet_v3"),
                                   train_eagerly(replay, image_dtype=np.float32))
    assert ours["output"].dtype == theirs["output"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=1e-6)


def test_compiled_step_draws_stochastic_depth_rows():
    """The compiled step draws stochastic depth inside its graph: a fresh mask each call (the losses of one batch
    differ between calls while the weights do not change: lr 0), rows dropped or kept whole."""
    lib, nn, F = libraries("kiln")
    kiln.manual_seed(0)
    model = mobilenet_family(lib, nn, F, variant="efficientnet", stochastic_depth_prob=1.0).double()
    block = model.features[3]
    optimizer = lib.optim.RMSprop(model.parameters(), lr=0.0)

    def train_step(x):
        optimizer.zero_grad()
        out = block(x)
        (out - x).square().sum().backward()
        optimizer.step()
        return out.detach() - x

    x = lib.tensor(np.random.default_rng(1).standard_normal((64, 16, 4, 4)))
    run = kiln.compile(train_step, fullgraph=True)
    branches = [np.asarray(run(x)).reshape(64, -1) for _ in range(3)]
    kept = [np.abs(b).max(1) > 0 for b in branches]
    for branch, rows in zip(branches, kept):
        assert np.all(branch[~rows] == 0) and 10 < rows.sum() < 54  # drop probability 2/3 here: 1.0 * 2 / 3
    assert (kept[0] != kept[1]).any() and (kept[1] != kept[2]).any()


def test_torch_hardsigmoid_slope_is_float32s_one_sixth():
    """Why MobileNetV3 is compared at rtol 1e-6: torch 2.13's CPU Hardsigmoid backward multiplies by float32's 1/6 in
    float64 too; kiln's slope is 1/6 (central finite differences in float64 agree with kiln)."""
    torch = require_torch()
    x = np.array([-2.5, -1.0, 0.25, 2.0])
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.hardsigmoid(theirs).sum().backward()
    ours = kiln.tensor(x, requires_grad=True)
    kiln.nn.functional.hardsigmoid(ours).sum().backward()
    h = 1e-6
    difference = (np.minimum(np.maximum(x + h + 3, 0), 6) - np.minimum(np.maximum(x - h + 3, 0), 6)) / 6 / (2 * h)
    np.testing.assert_allclose(np.array(ours.grad), difference, rtol=1e-9)
    assert theirs.grad.numpy().tolist() == [float(np.float32(1) / np.float32(6))] * 4
    assert np.array(ours.grad).tolist() == [1 / 6] * 4


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_classifier_dropout_in_place_in_train_mode(name):
    """``nn.Dropout(p=0.5, inplace=True)`` after ``nn.Hardswish(inplace=True)`` in train mode, each library with its
    own draws: the next Linear sees each activation zeroed or scaled by 2, about half kept, in both."""
    torch, nn, F = libraries(name)
    model = mobilenet_family(torch, nn, F, variant="mobilenet_v3", dropout=0.5).double()
    seen = {}  # the hooks return None: a value returned would replace the output
    model.classifier[1].register_forward_hook(lambda m, i, output: seen.update(activation=array(output)))
    model.classifier[3].register_forward_pre_hook(lambda m, inputs: seen.update(dropped=array(inputs[0])))
    model(torch.tensor(np.random.default_rng(3).standard_normal((64, 3, IMAGE, IMAGE))))
    activation, dropped = seen["activation"], seen["dropped"]
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 2 * activation[kept], rtol=1e-12)
    assert 0.4 < kept[activation != 0].mean() < 0.6
