"""Porting probes: Glow (rosinality/glow-pytorch's model.py and train.py, small: 2 blocks of 2 flow steps on 3x4x4
images) and PixelCNN (jzbontar/pixelcnn-pytorch's main.py, small: 3 masked 5x5 convolutions of 8 maps on 1x6x6
images), each written once as that code writes it (``torch`` is ``torch`` or ``kiln``) and run in both libraries from
kiln's initial weights: first outputs, first gradients, losses and the state after a few steps agree to 1e-10 in
float64, eagerly and with the whole step (zero_grad, forward, loss, backward, Adam step) one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop; float32 (how both train) at float32's level.

Glow: ``ActNorm`` with its data-dependent init (the ``initialized`` uint8 buffer read by ``.item()`` and set by
``fill_(1)``, ``permute(1, 0, 2, 3).contiguous().view(C, -1)``, ``mean``/``std`` of the first batch copied into the
parameters by ``.data.copy_`` under ``torch.no_grad``; train.py's first iteration is that init pass), the invertible
1x1 convolution in both forms (``InvConv2d``: an orthogonal init by ``torch.linalg.qr``, ``torch.slogdet`` of the
weight in double; ``InvConv2dLU``: ``scipy.linalg.lu`` of it through ``.numpy()``, ``torch.from_numpy`` buffers
``w_p``, ``u_mask`` (``np.triu(ones, 1)``), ``l_mask``, ``s_sign`` (``torch.sign``), ``l_eye``, the log-abs ``w_s``,
the weight ``w_p @ (w_l * l_mask + l_eye) @ (w_u * u_mask + torch.diag(s_sign * torch.exp(w_s)))``), the affine
coupling (``chunk``, ``F.sigmoid(log_s + 2)``, ``torch.log(s).view(B, -1)`` summed), ``ZeroConv2d`` (zeroed ``.data``,
``F.pad(value=1)``, ``torch.exp(self.scale * 3)``), squeeze by ``view``/``permute``/``contiguous``, split priors with
``gaussian_log_p``, the bits-per-dim loss of train.py (``n_bits`` = 5: ``torch.floor``, uniform dequantisation, its
noise fed rather than drawn by ``torch.rand_like``), and ``reverse``: sampling from ``calc_z_shapes`` at temperature
0.7 and reconstruction (``reconstruct=True``) through the inverse 1x1 convolution ``weight.squeeze().inverse()``,
compared between the libraries and with the input. The slogdet and inverse paths' gradients are checked in float64
against torch's. The compiled steps run with chaiyujin/glow-pytorch's Python flag ``self.inited`` and with model.py's
buffer, whose ``if self.initialized.item() == 0`` ``torch.compile(fullgraph=True)`` refuses (torch 2.13: "Could not
guard on data-dependent expression") and kiln.compile specializes and guards (``frontend/value_guards.py``); ActNorm's
init runs in train.py's eager pass first, or inside the first compiled call; the trained model then samples through
``kiln.compile(model.reverse)``. Glow's forward (after its init) goes through ``kiln.onnx.export`` in float32
(onnxruntime has no float64 Conv).

PixelCNN: ``MaskedConv2d(nn.Conv2d)`` with ``register_buffer('mask', self.weight.data.clone())``, ``mask.fill_(1)``,
``self.mask[:, :, kH // 2, kW // 2 + (mask_type == 'B'):] = 0`` and ``self.weight.data *= self.mask`` in ``forward``
before ``super().forward(x)``; ``BatchNorm2d``, ``ReLU(True)``, a 256-way 1x1 head, ``F.cross_entropy`` against
``(input.data[:, 0] * 255).long()``; sampling pixel by pixel with ``F.softmax(out[:, :, i, j])`` (implicit dim, warned
as torch warns) and ``torch.multinomial(probs, 1).float() / 255.`` into ``sample[:, :, i, j]`` under ``no_grad`` in
eval mode: the draws come from each library's generator, so what is compared is what can be: the probabilities of a
fixed image, the draws' shape and values (multiples of 1/255), and that every step's probabilities are the full
forward's of the finished sample (the masks are causal). Sampling also runs through ``kiln.compile(net)`` and the
eval model through ``kiln.onnx.export`` in onnxruntime.

Gated PixelCNN (ritheshkumar95/pytorch-vqvae's modules.py, the VQ-VAE prior; small): ``GatedMaskedConv2d`` with
vertical and horizontal stacks, a class-conditional ``nn.Embedding`` added as ``h[:, :, None, None]``, the gate
``F.tanh(x) * F.sigmoid(y)`` of ``x.chunk(2, dim=1)``, ``make_causal`` zeroing the mask-'A' kernels' last row and column
through ``self.vert_stack.weight.data[:, :, -1].zero_()`` in every forward, ``self.apply(weights_init)`` with
``nn.init.xavier_uniform_(m.weight.data)``, the input ``nn.Embedding`` of ``x.view(-1)``, pixelcnn_prior.py's loss on
``logits.permute(0, 2, 3, 1).contiguous()``, and ``generate`` (``x.data[:, i, j].copy_(probs.multinomial(1).squeeze()
.data)`` into an int64 tensor): trained eagerly and as one compiled step.

What broke: a ``kiln.compile``d step that overwrites a trained parameter under ``no_grad`` before reading it (ActNorm's
init inside the first compiled call, ``self.loc.data.copy_(-mean)``) dropped the parameter from the step: the trace
took the written value as its only value, so ``backward()`` skipped it (the optimizer left it at the written value) or
found no trained parameter at all; it now stays a trained leaf (``frontend/tensor_inplace.py``,
tests/frontend/test_parameter_overwritten_in_compiled_step_vs_torch.py). ``kiln.onnx.export`` of the PixelCNN
refused ``self.weight.data *= self.mask`` in its trace ("mul_ on a parameter inside a traced function"), which
``torch.onnx.export`` (its TorchScript exporter, ``dynamo=False``: the default one needs onnxscript, not installed
here) exports reading the masked weight; the export's trace now takes the written value
(``TraceContext.exporting``, tests/onnx/test_onnx_export_parameter_written_in_forward.py). In a compiled step,
``weight.data[:, :, -1].zero_()`` (Gated PixelCNN) wrote the NumPy array once, when the trace ran, and reads of
``p.data[index]`` gave the trace's values: the losses differed from the first step; an indexed view of a traced
``p.data`` now stands for the parameter's value there (``frontend/torch_array.py``,
tests/frontend/test_parameter_data_index_in_compiled_step_vs_torch.py). Everything else agreed to 1e-10 as first
written.
"""

from __future__ import annotations

import io
import warnings
from math import log

import numpy as np
import pytest

import kiln
from e2e.glow_pixelcnn_program import gated_pixelcnn, glow
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import require

# model.py's torch.from_numpy(np.diag(w_u)): NumPy's diag is a read-only view, which torch warns about once
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")

IMAGE, CHANNELS, N_BITS, BATCH = 4, 3, 5, 4
N_BINS = 2.0 ** N_BITS


def calc_z_shapes(n_channel, input_size, n_flow, n_block):
    z_shapes = []

    for i in range(n_block - 1):
        input_size //= 2
        n_channel *= 2

        z_shapes.append((n_channel, input_size, input_size))

    input_size //= 2
    z_shapes.append((n_channel * 4, input_size, input_size))

    return z_shapes


def calc_loss(log_p, logdet, image_size, n_bins):
    # log_p = calc_log_p([z_list])
    n_pixel = image_size * image_size * 3

    loss = -log(n_bins) * n_pixel
    loss = loss + logdet + log_p

    return (
        (-loss / (log(2) * n_pixel)).mean(),
        (log_p / (log(2) * n_pixel)).mean(),
        (logdet / (log(2) * n_pixel)).mean(),
    )


def floats(torch, values):
    """``values`` (NumPy float64) as a tensor of the default dtype, as a DataLoader gives float32 images."""
    return torch.tensor(values, dtype=torch.get_default_dtype())


def _glow_batches(steps, seed=0):
    """``steps + 1`` batches in [0, 1) (the first for the init pass) and their dequantisation noise."""
    rng, shape = np.random.default_rng(seed), (steps + 1, BATCH, CHANNELS, IMAGE, IMAGE)
    return rng.random(shape), rng.random(shape)


def preprocess(torch, image):
    """train.py's quantisation to ``n_bits``, centred."""
    image = image * 255

    if N_BITS < 8:
        image = torch.floor(image / 2 ** (8 - N_BITS))

    return image / N_BINS - 0.5


def glow_loss(torch, model, image, noise):
    log_p, logdet, z_outs = model(image + noise / N_BINS)
    logdet = logdet.mean()
    loss, log_p, log_det = calc_loss(log_p, logdet, IMAGE, N_BINS)
    return loss, z_outs


def z_sample_values(temp=0.7, n_sample=2, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n_sample, *shape)) * temp for shape in calc_z_shapes(CHANNELS, IMAGE, 2, 2)]


def train_glow(steps=2):
    """train.py's loop: the init pass (``torch.no_grad``, ``continue``), then Adam steps; then ``reverse``."""
    images, noises = _glow_batches(steps)

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        record = {"losses": []}
        for i in range(steps + 1):
            image = preprocess(torch, floats(torch, images[i]))
            noise = floats(torch, noises[i])
            if i == 0:
                with torch.no_grad():
                    log_p, logdet, _ = model(image + noise / N_BINS)
                record["initialized state"] = snapshot(model)
                continue
            loss, z_outs = glow_loss(torch, model, image, noise)
            model.zero_grad()
            loss.backward()
            record.setdefault("first grads", gradients(model))
            record.setdefault("first z", {str(k): array(z) for k, z in enumerate(z_outs)})
            optimizer.param_groups[0]["lr"] = 1e-3
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        with torch.no_grad():
            record["samples"] = array(model.reverse([floats(torch, z) for z in z_sample_values()]))
            _, _, z_outs = model(image)
            record["reconstruction"] = array(model.reverse(z_outs, reconstruct=True))
            record["input"] = array(image)
        return record

    return train


@pytest.mark.parametrize("conv_lu", [True, False], ids=["InvConv2dLU", "InvConv2d"])
def test_glow_trains_and_samples_as_torch(conv_lu, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: glow(torch, nn, F, conv_lu=conv_lu), train_glow())
    assert_same_records(ours, theirs)
    assert ours["initialized state"]["blocks.0.flows.0.actnorm.initialized"] == 1
    np.testing.assert_allclose(ours["reconstruction"], ours["input"], atol=1e-10)  # reverse inverts forward
    assert theirs["losses"][-1] < theirs["losses"][0]


def compiled_glow_training(optimizer_of, init_pass=True, steps=3):
    """The whole step (forward, bits-per-dim loss, zero_grad, backward, optimizer step) compiled in kiln, torch's
    eager loop in torch; ActNorm's init in train.py's eager pass first, or (``init_pass`` False) in the first call.
    Then samples through ``kiln.compile(model.reverse)`` in kiln."""
    images, noises = _glow_batches(steps)

    def train(torch, nn, F, model):
        optimizer = optimizer_of(torch, model)
        batches = [(preprocess(torch, floats(torch, images[i])), floats(torch, noises[i])) for i in range(steps + 1)]
        if init_pass:
            with torch.no_grad():
                model(batches[0][0] + batches[0][1] / N_BINS)

        def step(image, noise):
            loss, _ = glow_loss(torch, model, image, noise)
            model.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if torch is kiln else step
        losses = [run(*batch).item() for batch in batches[1 if init_pass else 0:]]
        reverse = kiln.compile(model.reverse, fullgraph=True) if torch is kiln else model.reverse
        with torch.no_grad():
            samples = array(reverse([floats(torch, z) for z in z_sample_values()]))
        return {"losses": losses, "state": snapshot(model), "samples": samples}

    return train


def adam(torch, model):
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def sgd(torch, model):
    return torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)


@pytest.mark.parametrize("conv_lu", [True, False], ids=["InvConv2dLU", "InvConv2d"])
def test_glow_compiled_step_as_torch(conv_lu, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: glow(torch, nn, F, conv_lu=conv_lu, initialized_flag="bool"),
                                   compiled_glow_training(adam))
    assert_same_records(ours, theirs)


def test_glow_compiled_step_initializing_actnorm_in_its_first_call_as_torch(float64_default):
    """ActNorm's init traced into the first call (``self.loc.data.copy_(-mean)`` under ``no_grad``, then the flag set:
    the second call traces again without it, as torch.compile's guard on the flag). SGD: on the init batch the first
    ActNorm's ``loc`` has an analytically zero gradient (the batch mean is what it removed), whose rounding noise
    Adam (eps 1e-8) would turn into steps of ~1e-11, differently in each library."""
    ours, theirs = run_in_lockstep(lambda torch, nn, F: glow(torch, nn, F, initialized_flag="bool"),
                                   compiled_glow_training(sgd, init_pass=False))
    assert_same_records(ours, theirs)


def test_glow_compiled_step_with_models_initialized_buffer_as_torch(float64_default):
    """model.py's ``if self.initialized.item() == 0`` branches on a buffer's value: torch.compile(fullgraph=True)
    refuses it ("Could not guard on data-dependent expression", torch 2.13), kiln.compile specializes the trace on the
    value read and guards it (``frontend/value_guards.py``), so the step compiles whole and trains as torch's eager
    loop, with the init in the first call (the buffer's ``fill_(1)`` written back; SGD as above)."""
    ours, theirs = run_in_lockstep(glow, compiled_glow_training(sgd, init_pass=False))
    assert_same_records(ours, theirs)


def reverse_path_loss(torch, model, image, z_values):
    """What the slogdet and inverse paths give: the forward's log-density and log-determinant of ``image``, and the
    sample ``reverse`` draws from ``z_values``."""
    log_p, logdet, _ = model(floats(torch, image))
    sample = model.reverse([floats(torch, z) for z in z_values])
    return logdet.mean() + log_p.mean() + (sample ** 2).mean()


@pytest.mark.parametrize("conv_lu", [True, False], ids=["InvConv2dLU", "InvConv2d"])
def test_glow_slogdet_and_inverse_gradients_as_torch(conv_lu, float64_default):
    """d/dweights of a loss through ``torch.slogdet`` (InvConv2d), ``sum(w_s)`` (LU) and the reverse pass's
    ``weight.squeeze().inverse()`` after a few steps (the ZeroConv2d priors and couplings no longer zero)."""
    z_values, image = z_sample_values(temp=1.0, n_sample=3, seed=2), _glow_batches(0, seed=3)[0][0] - 0.5

    def train(torch, nn, F, model):
        record = train_glow(steps=1)(torch, nn, F, model)
        model.zero_grad()
        reverse_path_loss(torch, model, image, z_values).backward()
        return {"grads": gradients(model), "state": record["state"]}

    ours, theirs = run_in_lockstep(lambda torch, nn, F: glow(torch, nn, F, conv_lu=conv_lu), train)
    assert_same_records(ours, theirs)
    weight = "blocks.0.flows.0.invconv." + ("w_s" if conv_lu else "weight")
    assert np.abs(ours["grads"][weight]).max() > 1e-3


PIXELS, MAPS = 6, 8


def pixelcnn(torch, nn, F, fm=MAPS, layers=3, kernel=5):
    """main.py's network (7 masked 7x7 layers of 64 maps there)."""

    class MaskedConv2d(nn.Conv2d):
        def __init__(self, mask_type, *args, **kwargs):
            super(MaskedConv2d, self).__init__(*args, **kwargs)
            assert mask_type in {'A', 'B'}
            self.register_buffer('mask', self.weight.data.clone())
            _, _, kH, kW = self.weight.size()
            self.mask.fill_(1)
            self.mask[:, :, kH // 2, kW // 2 + (mask_type == 'B'):] = 0
            self.mask[:, :, kH // 2 + 1:] = 0

        def forward(self, x):
            self.weight.data *= self.mask
            return super(MaskedConv2d, self).forward(x)

    pad = kernel // 2
    net = [MaskedConv2d('A', 1, fm, kernel, 1, pad, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True)]
    for _ in range(layers - 1):
        net += [MaskedConv2d('B', fm, fm, kernel, 1, pad, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True)]
    net.append(nn.Conv2d(fm, 256, 1))
    return nn.Sequential(*net)


def _pixel_batches(steps, seed=0):
    """MNIST-like batches: intensities k / 255 (``ToTensor`` of uint8 images)."""
    return np.random.default_rng(seed).integers(0, 256, (steps, BATCH, 1, PIXELS, PIXELS)) / 255.


def pixelcnn_loss(torch, F, net, input):
    target = (input.data[:, 0] * 255).long()
    return F.cross_entropy(net(input), target)


def sample_pixels(torch, F, net, n_sample=2):
    """main.py's sampling loop (eval mode, no gradients); returns the sample and each step's probabilities."""
    sample = torch.Tensor(n_sample, 1, PIXELS, PIXELS)
    sample.fill_(0)
    net.train(False)
    seen = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Implicit dimension choice for softmax")
        for i in range(PIXELS):
            for j in range(PIXELS):
                out = net(sample)
                probs = F.softmax(out[:, :, i, j]).data
                seen[(i, j)] = array(probs)
                sample[:, :, i, j] = torch.multinomial(probs, 1).float() / 255.
    return sample, seen


def check_sample(torch, F, net, sample, seen):
    """The draws are intensities k / 255 of the sample's shape, and each step's probabilities are the full forward's
    of the finished sample at that pixel (the masks let no later pixel in)."""
    drawn = array(sample) * 255
    assert drawn.shape == (2, 1, PIXELS, PIXELS) and np.allclose(drawn, np.round(drawn), atol=1e-4)
    assert drawn.min() >= 0 and drawn.max() <= 255
    with torch.no_grad():
        full = array(F.softmax(net(sample), dim=1))
    rtol = 1e-9 if full.dtype == np.float64 else 1e-5
    for (i, j), probs in seen.items():
        np.testing.assert_allclose(probs, full[:, :, i, j], rtol=rtol, atol=1e-14)


def train_pixelcnn(steps=3, compiled=False):
    """main.py's loop (Adam, its default lr), then sampling; ``compiled``: the whole step and the sampler's forward
    ``kiln.compile``d in kiln (torch's eager loop in torch)."""
    batches = _pixel_batches(steps + 1)

    def train(torch, nn, F, net):
        optimizer = torch.optim.Adam(net.parameters())

        def step(input):
            loss = pixelcnn_loss(torch, F, net, input)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "first logits": array(net(floats(torch, batches[0])))}
        if not compiled:
            pixelcnn_loss(torch, F, net, floats(torch, batches[0])).backward()
            record["first grads"] = gradients(net)
        for input in batches[:steps]:
            record["losses"].append(run(floats(torch, input)).item())
        record["state"] = snapshot(net)
        torch.manual_seed(0)
        sampler = kiln.compile(net, fullgraph=True) if compiled and torch is kiln else net
        sample, seen = sample_pixels(torch, F, sampler)
        check_sample(torch, F, net, sample, seen)
        record["weights after sampling"] = {"A": array(net[0].weight), "B": array(net[3].weight)}
        with torch.no_grad():
            record["probabilities of an image"] = array(F.softmax(net(floats(torch, batches[steps])), dim=1))
        return record

    return train


def test_pixelcnn_trains_and_samples_as_torch(float64_default):
    ours, theirs = run_in_lockstep(pixelcnn, train_pixelcnn())
    assert_same_records(ours, theirs)
    for name, index in (("A", 0), ("B", 3)):  # each forward wrote the weight through .data: zero where masked
        assert not (ours["weights after sampling"][name] * (1 - ours["state"][f"{index}.mask"])).any()
    assert ours["state"]["0.mask"][0, 0, 2, 2] == 0 and ours["state"]["3.mask"][0, 0, 2, 2] == 1  # 'A' hides the centre
    assert theirs["losses"][0] == pytest.approx(log(256), rel=0.1)  # about uniform over the 256 intensities


def test_pixelcnn_compiled_step_and_sampler_as_torch(float64_default):
    """``self.weight.data *= self.mask`` traced into the compiled step (before the conv reads it, each call) and into
    the compiled sampler's forward."""
    ours, theirs = run_in_lockstep(pixelcnn, train_pixelcnn(compiled=True))
    assert_same_records(ours, theirs)


def test_glow_and_pixelcnn_float32_as_torch():
    """Both as they train, in float32 (InvConv2d's slogdet cast back by ``.float()``), at float32's level."""
    glows = run_in_lockstep(lambda torch, nn, F: glow(torch, nn, F, conv_lu=False), train_glow())
    pixelcnns = run_in_lockstep(pixelcnn, train_pixelcnn())
    assert glows[0]["first z"]["0"].dtype == np.float32 and pixelcnns[0]["first logits"].dtype == np.float32
    for ours, theirs in (glows, pixelcnns):
        assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


def onnx_outputs(torch, model, x, output_names):
    """kiln: ``kiln.onnx.export`` of the eval model run by onnxruntime; torch: its eval forward (the oracle)."""
    model.eval()
    if torch is not kiln:
        with torch.no_grad():
            return dict(zip(output_names, map(array, flatten(model(x)))))
    file = io.BytesIO()
    kiln.onnx.export(model, (x,), file, input_names=["x"], output_names=output_names)
    return dict(zip(output_names, require("onnxruntime").InferenceSession(file.getvalue()).run(None, {"x": array(x)})))


def flatten(outputs):
    """Glow's ``(log_p, logdet, z_outs)`` as the export's flat outputs; a tensor as itself."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [leaf for item in outputs for leaf in (item if isinstance(item, list) else [item])]


def test_glow_and_pixelcnn_through_onnx_as_torch():
    """Float32 (onnxruntime has no float64 Conv): Glow's forward after train.py's init pass (chaiyujin's flag: the
    buffer's ``.item()`` is a value the exported graph does not have) gives log_p, logdet and the z's; PixelCNN's
    eval forward writes its masked weights through ``.data`` in the export's trace."""
    images, noises = _glow_batches(1)

    def export_glow(torch, nn, F, model):
        with torch.no_grad():
            model(preprocess(torch, floats(torch, images[0])))
        return {"outputs": onnx_outputs(torch, model, preprocess(torch, floats(torch, images[1])),
                                        ["log_p", "logdet", "z0", "z1"])}

    def export_pixelcnn(torch, nn, F, net):
        return {"logits": onnx_outputs(torch, net, floats(torch, _pixel_batches(1)[0]), ["logits"])}

    for build, export in ((lambda torch, nn, F: glow(torch, nn, F, initialized_flag="bool"), export_glow),
                          (pixelcnn, export_pixelcnn)):
        ours, theirs = run_in_lockstep(build, export)
        assert_same_records(ours, theirs, rtol=1e-5, atol=1e-5)



def train_gated_pixelcnn(compiled=False, steps=3, K=16):
    """pytorch-vqvae's pixelcnn_prior.py loop on discrete latents with class labels (Adam, 3e-4), ``logits.permute(0,
    2, 3, 1).contiguous()``, ``criterion(logits.view(-1, K), latents.view(-1))``; then ``generate``."""
    rng = np.random.default_rng(0)
    latents, labels = rng.integers(0, K, (steps, BATCH, 5, 5)), rng.integers(0, 3, (steps, BATCH))

    def train(torch, nn, F, model):
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        criterion = nn.CrossEntropyLoss()

        def step(latents, labels):
            logits = model(latents, labels)
            logits = logits.permute(0, 2, 3, 1).contiguous()
            loss = criterion(logits.view(-1, K), latents.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [run(torch.tensor(latents[i]), torch.tensor(labels[i])).item() for i in range(steps)]}
        record["state"] = snapshot(model)
        model.eval()
        torch.manual_seed(0)
        generated = array(model.generate(torch.tensor([0, 2]), shape=(3, 3), batch_size=2))
        assert generated.dtype == np.int64 and generated.shape == (2, 3, 3)
        assert generated.min() >= 0 and generated.max() < K
        record["masked after sampling"] = array(model.layers[0].vert_stack.weight)[:, :, -1]
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_gated_pixelcnn_trains_as_torch(compiled, float64_default):
    """The mask 'A' layer zeroes its kernels' last row and column through ``weight.data[...]`` views in every forward,
    also inside the compiled step (each call, before the convolutions read them)."""
    ours, theirs = run_in_lockstep(gated_pixelcnn, train_gated_pixelcnn(compiled))
    assert_same_records(ours, theirs)
    assert ours["state"]["layers.0.vert_stack.weight"][:, :, -1].any()  # Adam moved them after the last step's write
    assert not ours["masked after sampling"].any()  # and generate's forwards zeroed them again
