"""Style-transfer and super-resolution programs from pytorch/examples and PyTorch's tutorials, ported to kiln by
changing the imports, checked against PyTorch 2.13 in float64.

Each program is written once against torch-style names (``lib`` is ``torch`` or ``kiln``, ``nn`` and ``F`` likewise),
keeping the original's model and the idioms of its loop; kiln and PyTorch start from the same weights (kiln's, loaded
into torch) and see the same batches, and losses and parameters agree to ~1e-10, eagerly and compiled.

- ``fast_neural_style``: ``transformer_net.py`` (ReflectionPad2d + Conv2d layers, ``InstanceNorm2d(affine=True)``,
  residual blocks, ``UpsampleConvLayer`` by ``F.interpolate(mode='nearest', scale_factor=2)``), ``vgg.py``'s four
  feature slices and their namedtuple (a small random-weight net laid out as VGG16's ``features``: no download),
  ``utils.py``'s ``gram_matrix`` (``bmm``) and ``normalize_batch`` (``new_tensor`` mean/std, in-place ``div_``),
  ``neural_style.py``'s ``train()`` (MSELoss content + style loss, Adam, ``.item()`` aggregates, the log line,
  ``eval()`` and the saved state_dict) and ``stylize()`` (``no_grad``, the checkpoint's stale ``running_*`` keys
  dropped by regex, ONNX export, ``clone().clamp(0, 255)`` for the saved image).
- ``super_resolution``: ``model.py`` (Conv2d + ReLU + PixelShuffle, ``init.orthogonal_`` with
  ``init.calculate_gain('relu')``), ``main.py``'s ``train()``/``test()`` (MSELoss, Adam, PSNR by
  ``10 * log10(1 / mse.item())``), ``checkpoint()`` by ``save(model)`` of the whole model and ``super_resolve.py``'s
  reload.
- The neural-style tutorial (Gatys et al.): content and style losses as modules holding ``.detach()``-ed targets,
  inserted into an ``nn.Sequential`` rebuilt from a conv net's children, the INPUT image optimised by
  ``optim.LBFGS([input_img])`` with ``input_img.clamp_(0, 1)`` under ``no_grad`` inside the closure.

Images are the bundled 8x8 digits upscaled to 16x16 (three channels by colouring) and a generated striped style
image; channel counts are shrunk so each test runs in seconds.
"""

from __future__ import annotations

import functools
import re
from collections import namedtuple
from math import log10

import numpy as np

import kiln
from oracles import libraries, require, require_torch

TIGHT = dict(rtol=1e-10, atol=1e-12)


_libraries = libraries


def _same_weights(torch, model, twin) -> None:
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})


def _assert_same_state(model, twin, rounding_noise=None) -> None:
    """Every entry of the state_dicts agrees tightly, except those named by ``rounding_noise`` (a regex): parameters
    whose true gradient is zero, so Adam's update follows the sign of rounding noise, in either library; those moved at
    most Adam's bound (``lr`` per step) in both."""
    theirs = twin.state_dict()
    for name, value in model.state_dict().items():
        tolerance = dict(atol=2 * STYLE_ARGS.lr * 8) if rounding_noise and re.search(rounding_noise, name) else TIGHT
        np.testing.assert_allclose(np.asarray(value), theirs[name].detach().numpy(), **tolerance, err_msg=name)


# TransformerNet's parameters with a zero gradient: a convolution's bias in front of InstanceNorm (the normalisation
# subtracts it again), and a residual block's last shift (added to the residual stream, whose every reader is a
# convolution into InstanceNorm)
ZERO_GRADIENT = r"^((conv\d|res\d\.conv\d|deconv[12])\.conv2d|res\d\.in2)\.bias$"


@functools.lru_cache(maxsize=1)
def _upscaled_digits():
    """The digits as 16x16 grey images in [0, 1] (each pixel repeated 2x2), float64 ``(N, 1, 16, 16)``."""
    from kiln.runtime.data import load_digits

    x, _ = load_digits()
    return np.kron(x.reshape(-1, 1, 8, 8) / 16.0, np.ones((2, 2)))


def _coloured_digits(count: int, offset: int = 0):
    """``count`` digits as RGB images in [0, 255] (the example's ``ToTensor`` then ``x.mul(255)``), ink and paper
    coloured differently (no channel constant: its weights' gradient would be rounding noise, which Adam amplifies)."""
    grey = _upscaled_digits()[offset:offset + count]
    ink, paper = np.array([1.0, 0.7, 0.2]).reshape(1, 3, 1, 1), np.array([0.1, 0.3, 0.9]).reshape(1, 3, 1, 1)
    return 255.0 * (grey * ink + (1 - grey) * paper)


def _striped_style(size: int = 16):
    """A generated style image in [0, 255]: diagonal stripes, a different frequency per channel, ``(3, size, size)``."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return 127.5 * (1 + np.stack([np.sin((i + j) / f) for f in (1.5, 2.5, 4.0)]))


# --- fast_neural_style/neural_style/transformer_net.py ----------------------------------------------------------------


def transformer_net(lib, nn, F, widths=(4, 8, 8)):
    """The example's ``TransformerNet`` with its channels ``(32, 64, 128)`` shrunk to ``widths``."""
    w1, w2, w3 = widths

    class ConvLayer(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride):
            super(ConvLayer, self).__init__()
            reflection_padding = kernel_size // 2
            self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            out = self.reflection_pad(x)
            out = self.conv2d(out)
            return out

    class ResidualBlock(nn.Module):
        def __init__(self, channels):
            super(ResidualBlock, self).__init__()
            self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in1 = nn.InstanceNorm2d(channels, affine=True)
            self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in2 = nn.InstanceNorm2d(channels, affine=True)
            self.relu = nn.ReLU()

        def forward(self, x):
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            out = out + residual
            return out

    class UpsampleConvLayer(nn.Module):
        """Upsamples the input and then does a convolution (better than ConvTranspose2d's checkerboards)."""

        def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
            super(UpsampleConvLayer, self).__init__()
            self.upsample = upsample
            reflection_padding = kernel_size // 2
            self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            x_in = x
            if self.upsample:
                x_in = F.interpolate(x_in, mode='nearest', scale_factor=self.upsample)
            out = self.reflection_pad(x_in)
            out = self.conv2d(out)
            return out

    class TransformerNet(nn.Module):
        def __init__(self):
            super(TransformerNet, self).__init__()
            # Initial convolution layers
            self.conv1 = ConvLayer(3, w1, kernel_size=9, stride=1)
            self.in1 = nn.InstanceNorm2d(w1, affine=True)
            self.conv2 = ConvLayer(w1, w2, kernel_size=3, stride=2)
            self.in2 = nn.InstanceNorm2d(w2, affine=True)
            self.conv3 = ConvLayer(w2, w3, kernel_size=3, stride=2)
            self.in3 = nn.InstanceNorm2d(w3, affine=True)
            # Residual layers
            self.res1 = ResidualBlock(w3)
            self.res2 = ResidualBlock(w3)
            self.res3 = ResidualBlock(w3)
            self.res4 = ResidualBlock(w3)
            self.res5 = ResidualBlock(w3)
            # Upsampling Layers
            self.deconv1 = UpsampleConvLayer(w3, w2, kernel_size=3, stride=1, upsample=2)
            self.in4 = nn.InstanceNorm2d(w2, affine=True)
            self.deconv2 = UpsampleConvLayer(w2, w1, kernel_size=3, stride=1, upsample=2)
            self.in5 = nn.InstanceNorm2d(w1, affine=True)
            self.deconv3 = ConvLayer(w1, 3, kernel_size=9, stride=1)
            # Non-linearities
            self.relu = nn.ReLU()

        def forward(self, X):
            y = self.relu(self.in1(self.conv1(X)))
            y = self.relu(self.in2(self.conv2(y)))
            y = self.relu(self.in3(self.conv3(y)))
            y = self.res1(y)
            y = self.res2(y)
            y = self.res3(y)
            y = self.res4(y)
            y = self.res5(y)
            y = self.relu(self.in4(self.deconv1(y)))
            y = self.relu(self.in5(self.deconv2(y)))
            y = self.deconv3(y)
            return y

    return TransformerNet()


# --- fast_neural_style/neural_style/vgg.py ----------------------------------------------------------------------------

VGG_WIDTHS = (4, 6, 8, 8)


def vgg_features(nn, widths=VGG_WIDTHS):
    """torchvision's ``vgg16().features`` layout up to ``relu4_3`` (the same layer indices), random weights and
    narrow channels: what ``models.vgg16(pretrained=True).features`` is to the example."""
    layers, in_channels = [], 3
    for block, (width, convs) in enumerate(zip(widths, (2, 2, 3, 3))):
        if block:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        for _ in range(convs):
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
    return nn.Sequential(*layers)


def vgg16(lib, nn, features, requires_grad=False):
    class Vgg16(nn.Module):
        def __init__(self, requires_grad=False):
            super(Vgg16, self).__init__()
            vgg_pretrained_features = features
            self.slice1 = nn.Sequential()
            self.slice2 = nn.Sequential()
            self.slice3 = nn.Sequential()
            self.slice4 = nn.Sequential()
            for x in range(4):
                self.slice1.add_module(str(x), vgg_pretrained_features[x])
            for x in range(4, 9):
                self.slice2.add_module(str(x), vgg_pretrained_features[x])
            for x in range(9, 16):
                self.slice3.add_module(str(x), vgg_pretrained_features[x])
            for x in range(16, 23):
                self.slice4.add_module(str(x), vgg_pretrained_features[x])
            if not requires_grad:
                for param in self.parameters():
                    param.requires_grad = False

        def forward(self, X):
            h = self.slice1(X)
            h_relu1_2 = h
            h = self.slice2(h)
            h_relu2_2 = h
            h = self.slice3(h)
            h_relu3_3 = h
            h = self.slice4(h)
            h_relu4_3 = h
            vgg_outputs = namedtuple("VggOutputs", ['relu1_2', 'relu2_2', 'relu3_3', 'relu4_3'])
            out = vgg_outputs(h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3)
            return out

    return Vgg16(requires_grad=requires_grad)


# --- fast_neural_style/neural_style/utils.py --------------------------------------------------------------------------


def gram_matrix(y):
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    gram = features.bmm(features_t) / (ch * h * w)
    return gram


def normalize_batch(batch):
    # normalize using imagenet mean and std
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


def save_image(data):
    """``utils.save_image`` up to the PIL call: the uint8 HWC array it would write."""
    img = data.clone().clamp(0, 255).numpy()
    img = img.transpose(1, 2, 0).astype("uint8")
    return img


# --- fast_neural_style/neural_style/neural_style.py -------------------------------------------------------------------

StyleArgs = namedtuple("StyleArgs", "batch_size epochs lr content_weight style_weight log_interval")
STYLE_ARGS = StyleArgs(batch_size=2, epochs=2, lr=1e-3, content_weight=1e5, style_weight=1e10, log_interval=1)


def _loader(lib, x, batch_size):
    """The example's ``datasets.ImageFolder`` loader: ``(image, label)`` batches, in order."""
    dataset = lib.utils.data.TensorDataset(lib.tensor(x), lib.tensor(np.zeros(len(x), dtype=np.int64)))
    return lib.utils.data.DataLoader(dataset, batch_size=batch_size)


def style_train(lib, nn, F, transformer, vgg, train_loader, style, args=STYLE_ARGS, log=None):
    """The example's ``train()`` after the model and data are built: the per-batch losses ``(content, style)``."""
    device = lib.device("cpu")
    optimizer = lib.optim.Adam(transformer.parameters(), args.lr)
    mse_loss = nn.MSELoss()
    style = style.repeat(args.batch_size, 1, 1, 1).to(device)
    features_style = vgg(normalize_batch(style))
    gram_style = [gram_matrix(y) for y in features_style]
    losses, log = [], [] if log is None else log
    for e in range(args.epochs):
        transformer.train()
        agg_content_loss = 0.
        agg_style_loss = 0.
        count = 0
        for batch_id, (x, _) in enumerate(train_loader):
            n_batch = len(x)
            count += n_batch
            optimizer.zero_grad()
            x = x.to(device)
            y = transformer(x)
            y = normalize_batch(y)
            x = normalize_batch(x)
            features_y = vgg(y)
            features_x = vgg(x)
            content_loss = args.content_weight * mse_loss(features_y.relu2_2, features_x.relu2_2)
            style_loss = 0.
            for ft_y, gm_s in zip(features_y, gram_style):
                gm_y = gram_matrix(ft_y)
                style_loss += mse_loss(gm_y, gm_s[:n_batch, :, :])
            style_loss *= args.style_weight
            total_loss = content_loss + style_loss
            total_loss.backward()
            optimizer.step()
            agg_content_loss += content_loss.item()
            agg_style_loss += style_loss.item()
            losses.append((content_loss.item(), style_loss.item()))
            if (batch_id + 1) % args.log_interval == 0:
                mesg = "Epoch {}:\t[{}/{}]\tcontent: {:.6f}\tstyle: {:.6f}\ttotal: {:.6f}".format(
                    e + 1, count, len(train_loader.dataset),
                    agg_content_loss / (batch_id + 1),
                    agg_style_loss / (batch_id + 1),
                    (agg_content_loss + agg_style_loss) / (batch_id + 1)
                )
                log.append(mesg)
    # save model
    transformer.eval().cpu()
    return losses


def stylize(lib, style_model, state_dict, content_image, export_onnx=None):
    """The example's ``stylize()`` from the loaded checkpoint on: the output image, exported to ONNX when asked."""
    device = lib.device("cpu")
    content_image = content_image.unsqueeze(0).to(device)
    with lib.no_grad():
        # remove saved deprecated running_* keys in InstanceNorm from the checkpoint
        for k in list(state_dict.keys()):
            if re.search(r'in\d+\.running_(mean|var)$', k):
                del state_dict[k]
        style_model.load_state_dict(state_dict)
        style_model.to(device)
        style_model.eval()
        if export_onnx:
            lib.onnx.export(style_model, content_image, export_onnx, opset_version=17)
        output = style_model(content_image).cpu()
    return save_image(output[0]), output


def _style_twins():
    torch = require_torch()
    kiln.manual_seed(11)
    ours = transformer_net(*_libraries("kiln")).double(), vgg16(kiln, kiln.nn, vgg_features(kiln.nn)).double()
    theirs = transformer_net(*_libraries("torch")).double(), vgg16(torch, torch.nn, vgg_features(torch.nn)).double()
    for model, twin in zip(ours, theirs):
        _same_weights(torch, model, twin)
    return torch, ours, theirs


def test_fast_neural_style_eager_train_matches_torch_in_float64():
    torch, (transformer, vgg), (torch_transformer, torch_vgg) = _style_twins()
    x, style = _coloured_digits(4), _striped_style()
    log, torch_log = [], []
    ours = style_train(*_libraries("kiln"), transformer, vgg, _loader(kiln, x, 2), kiln.tensor(style), log=log)
    theirs = style_train(*_libraries("torch"), torch_transformer, torch_vgg, _loader(torch, x, 2), torch.tensor(style),
                         log=torch_log)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert log == torch_log and len(log) == 4
    _assert_same_state(transformer, torch_transformer, ZERO_GRADIENT)
    _assert_same_state(vgg, torch_vgg)  # requires_grad=False: VGG is left alone
    assert not transformer.training


class StyleLossStep(kiln.nn.Module):
    """The loop body of ``train()`` up to the loss, as one module for ``kiln.compile_train_step``: the transformed and
    the original batch through VGG (the loss function scores the two against the style's Gram matrices)."""

    def __init__(self, transformer, vgg):
        super().__init__()
        self.transformer, self.vgg = transformer, vgg

    def forward(self, x):
        y = self.transformer(x)
        return self.vgg(normalize_batch(y)), self.vgg(normalize_batch(x))


def _compiled_style_loss(gram_style, args=STYLE_ARGS):
    mse_loss = kiln.nn.MSELoss()

    def loss_fn(features, x):
        n_batch = len(x)  # kiln: a number under batch_dim=None; a symbolic batch cannot slice the constant gm_s below
        features_y, features_x = features
        content_loss = args.content_weight * mse_loss(features_y.relu2_2, features_x.relu2_2)
        style_loss = 0.
        for ft_y, gm_s in zip(features_y, gram_style):
            gm_y = gram_matrix(ft_y)
            style_loss += mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= args.style_weight
        return content_loss + style_loss

    return loss_fn


def test_fast_neural_style_compiled_step_then_stylize_and_onnx_match_torch(tmp_path):
    torch, (transformer, vgg), (torch_transformer, torch_vgg) = _style_twins()
    x, style = _coloured_digits(4), _striped_style()
    with kiln.no_grad():
        features_style = vgg(normalize_batch(kiln.tensor(style).repeat(STYLE_ARGS.batch_size, 1, 1, 1)))
        gram_style = [gram_matrix(y) for y in features_style]
    step = kiln.compile_train_step(StyleLossStep(transformer, vgg), _compiled_style_loss(gram_style),
                                   kiln.optim.Adam(transformer.parameters(), STYLE_ARGS.lr), batch_dim=None)
    ours = [float(step(xb, xb)) for _ in range(STYLE_ARGS.epochs) for xb, _ in _loader(kiln, x, 2)]
    theirs = style_train(*_libraries("torch"), torch_transformer, torch_vgg, _loader(torch, x, 2), torch.tensor(style))
    np.testing.assert_allclose(ours, [content + style for content, style in theirs], rtol=1e-10)
    _assert_same_state(transformer, torch_transformer, ZERO_GRADIENT)
    transformer.eval()
    # neural_style.py saves ``transformer.state_dict()``; stylize() reloads it, dropping InstanceNorm's stale keys
    kiln.save(transformer.state_dict(), tmp_path / "style.model")
    checkpoint = {**kiln.load(tmp_path / "style.model"), "in1.running_mean": np.zeros(4), "res2.in1.running_var": np.ones(8)}
    content = _coloured_digits(1, offset=500)[0]
    image, output = stylize(kiln, transformer_net(*_libraries("kiln")).double(), dict(checkpoint), kiln.tensor(content))
    torch_image, torch_output = stylize(torch, torch_transformer, torch_transformer.state_dict(), torch.tensor(content))
    np.testing.assert_allclose(np.asarray(output), torch_output.numpy(), **TIGHT)
    np.testing.assert_array_equal(image, torch_image)
    assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
    np.testing.assert_allclose(kiln.compile(transformer)(content[None]), torch_output.numpy(), **TIGHT)  # compiled stylize
    # --export_onnx, in float32: onnxruntime's CPU Conv has no double kernel
    _, output32 = stylize(kiln, transformer_net(*_libraries("kiln")), checkpoint, kiln.tensor(content.astype(np.float32)),
                          export_onnx=str(tmp_path / "style.onnx"))
    session = require("onnxruntime").InferenceSession(str(tmp_path / "style.onnx"))
    (onnx_output,) = session.run(None, {session.get_inputs()[0].name: content[None].astype(np.float32)})
    np.testing.assert_allclose(onnx_output, np.asarray(output32), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(onnx_output, torch_output.numpy(), rtol=1e-4, atol=1e-2)


# --- super_resolution/model.py and main.py ----------------------------------------------------------------------------


def super_resolution_net_class(nn, init, widths=(8, 8, 4)):
    """The example's ``Net`` (channels ``(64, 64, 32)`` shrunk to ``widths``)."""
    w1, w2, w3 = widths

    class Net(nn.Module):
        def __init__(self, upscale_factor):
            super(Net, self).__init__()
            self.relu = nn.ReLU()
            self.conv1 = nn.Conv2d(1, w1, (5, 5), (1, 1), (2, 2))
            self.conv2 = nn.Conv2d(w1, w2, (3, 3), (1, 1), (1, 1))
            self.conv3 = nn.Conv2d(w2, w3, (3, 3), (1, 1), (1, 1))
            self.conv4 = nn.Conv2d(w3, upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
            self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
            self._initialize_weights()

        def forward(self, x):
            x = self.relu(self.conv1(x))
            x = self.relu(self.conv2(x))
            x = self.relu(self.conv3(x))
            x = self.pixel_shuffle(self.conv4(x))
            return x

        def _initialize_weights(self):
            init.orthogonal_(self.conv1.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv2.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv3.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv4.weight)

    return Net


# module level, as model.py's: ``save(model)`` pickles the class by reference
SuperResolutionNet = super_resolution_net_class(kiln.nn, kiln.nn.init)
SuperResolutionNet.__qualname__ = SuperResolutionNet.__name__ = "SuperResolutionNet"


def _super_resolution_data(count: int, offset: int = 0):
    """``(input, target)`` pairs as the example's: a 16x16 image (target: the upscaled digit, softened by a 3x3 box blur
    so it is not a plain pixel repeat) and its 8x8 shrunk copy (input: every other pixel), both in [0, 1]."""
    target = _upscaled_digits()[offset:offset + count]
    padded = np.pad(target, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[..., i:i + 16, j:j + 16] for i in range(3) for j in range(3)) / 9
    return blurred[..., ::2, ::2], blurred


def super_resolution_main(lib, nn, model, epochs=2, log=None):
    """The example's ``main.py`` after the model is built: per epoch ``train(epoch)``, ``test()``; returns the train
    losses and the average PSNRs."""
    device = lib.device("cpu")
    criterion = nn.MSELoss()
    optimizer = lib.optim.Adam(model.parameters(), lr=0.01)
    train_set, test_set = super_resolution_dataset(lib, 8), super_resolution_dataset(lib, 6, offset=900)
    # the example shuffles the training set; the two libraries' generators differ, so both read it in order. Its
    # --threads 4 worker processes: kiln's loader starts them (forked, batches in order, the same as in-process); the
    # torch twin reads in-process, which keeps its half of the test fast
    threads = 4 if lib is kiln else 0
    training_data_loader = lib.utils.data.DataLoader(dataset=train_set, num_workers=threads, batch_size=4, shuffle=False)
    testing_data_loader = lib.utils.data.DataLoader(dataset=test_set, num_workers=threads, batch_size=3, shuffle=False)
    losses, psnrs, log = [], [], [] if log is None else log

    def train(epoch):
        epoch_loss = 0
        for iteration, batch in enumerate(training_data_loader, 1):
            input, target = batch[0].to(device), batch[1].to(device)
            optimizer.zero_grad()
            loss = criterion(model(input), target)
            epoch_loss += loss.item()
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
            log.append("===> Epoch[{}]({}/{}): Loss: {:.4f}".format(epoch, iteration, len(training_data_loader), loss.item()))
        log.append("===> Epoch {} Complete: Avg. Loss: {:.4f}".format(epoch, epoch_loss / len(training_data_loader)))

    def test():
        avg_psnr = 0
        with lib.no_grad():
            for batch in testing_data_loader:
                input, target = batch[0].to(device), batch[1].to(device)
                prediction = model(input)
                mse = criterion(prediction, target)
                psnr = 10 * log10(1 / mse.item())
                avg_psnr += psnr
        psnrs.append(avg_psnr / len(testing_data_loader))
        log.append("===> Avg. PSNR: {:.4f} dB".format(avg_psnr / len(testing_data_loader)))

    for epoch in range(1, epochs + 1):
        train(epoch)
        test()
    return losses, psnrs


def super_resolution_dataset(lib, count, offset=0):
    """``data.py``'s ``get_training_set``: dataset.py's ``DatasetFromFolder`` (a ``data.Dataset`` subclass with
    ``__getitem__``/``__len__`` and input/target transforms) over the digits instead of BSDS300's files."""

    class DatasetFromFolder(lib.utils.data.Dataset):
        def __init__(self, images, input_transform=None, target_transform=None):
            super(DatasetFromFolder, self).__init__()
            self.images = images
            self.input_transform = input_transform
            self.target_transform = target_transform

        def __getitem__(self, index):
            input = self.images[index]
            target = input.copy()
            if self.input_transform:
                input = self.input_transform(input)
            if self.target_transform:
                target = self.target_transform(target)
            return input, target

        def __len__(self):
            return len(self.images)

    _, high = _super_resolution_data(count, offset)
    # input_transform: the example's Resize(crop_size // upscale_factor), here every other pixel, as below
    return DatasetFromFolder(list(high), input_transform=lambda image: lib.tensor(image[:, ::2, ::2]),
                             target_transform=lib.tensor)


def _pairs_loader(lib, x, y, batch_size):
    return lib.utils.data.DataLoader(lib.utils.data.TensorDataset(lib.tensor(x), lib.tensor(y)), batch_size=batch_size)


def _super_resolution_twins():
    torch = require_torch()
    kiln.manual_seed(5)
    model = SuperResolutionNet(upscale_factor=2).double()
    twin = super_resolution_net_class(torch.nn, torch.nn.init)(upscale_factor=2).double()
    _same_weights(torch, model, twin)  # orthogonal_ draws from each library's generator: torch takes kiln's
    return torch, model, twin


def test_super_resolution_init_is_orthogonal_with_relu_gain():
    model = SuperResolutionNet(upscale_factor=2)
    for conv, gain in ((model.conv1, 2 ** 0.5), (model.conv3, 2 ** 0.5), (model.conv4, 1.0)):
        rows = np.asarray(conv.weight.data, dtype=np.float64).reshape(conv.weight.shape[0], -1)
        np.testing.assert_allclose(rows @ rows.T, gain ** 2 * np.eye(len(rows)), atol=1e-5)


def test_super_resolution_eager_main_matches_torch_and_checkpoint_reloads(tmp_path):
    torch, model, twin = _super_resolution_twins()
    log, torch_log = [], []
    (losses, psnrs), (torch_losses, torch_psnrs) = (super_resolution_main(kiln, kiln.nn, model, log=log),
                                                      super_resolution_main(torch, torch.nn, twin, log=torch_log))
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-10)
    np.testing.assert_allclose(psnrs, torch_psnrs, rtol=1e-10)
    assert log == torch_log
    assert min(psnrs) > 15  # dB: mean squared error under 0.03 on [0, 1] images (four steps do not train it further)
    _assert_same_state(model, twin)
    # checkpoint(epoch): the whole model; super_resolve.py loads it and upscales one image
    model_out_path = tmp_path / "model_epoch_2.pth"
    kiln.save(model, model_out_path)
    model = kiln.load(model_out_path, weights_only=False)
    low, _ = _super_resolution_data(1, offset=1000)
    input = kiln.tensor(low[0, 0]).view(1, -1, 8, 8)
    out = model(input)
    out_img_y = out[0].detach().numpy()
    out_img_y *= 255.0
    out_img_y = out_img_y.clip(0, 255)
    expected = (twin(torch.tensor(low)).detach().numpy()[0] * 255.0).clip(0, 255)
    np.testing.assert_allclose(out_img_y, expected, **TIGHT)
    assert out_img_y.shape == (1, 16, 16)


def test_super_resolution_compiled_step_matches_torch_in_float64():
    torch, model, twin = _super_resolution_twins()
    step = kiln.compile_train_step(model, kiln.nn.MSELoss(), kiln.optim.Adam(model.parameters(), lr=0.01))
    ours = [float(step(x, y)) for _ in range(2) for x, y in _pairs_loader(kiln, *_super_resolution_data(8), 4)]
    theirs, _ = super_resolution_main(torch, torch.nn, twin)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    _assert_same_state(model, twin)
    low, _ = _super_resolution_data(3, offset=900)
    np.testing.assert_allclose(kiln.compile(model)(low), twin(torch.tensor(low)).detach().numpy(), **TIGHT)


# --- the neural style tutorial (Gatys et al.): optimising the input image ---------------------------------------------


def gatys_program(lib, nn, F, optim):
    """The tutorial's loss modules, model builder and ``run_style_transfer``, written against ``lib``."""

    class ContentLoss(nn.Module):
        def __init__(self, target,):
            super(ContentLoss, self).__init__()
            # we 'detach' the target content from the tree used to dynamically compute the gradient
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    def gram_matrix(input):
        a, b, c, d = input.size()  # a=batch size(=1), b=number of feature maps, (c,d)=dimensions of a feature map
        features = input.view(a * b, c * d)
        G = lib.mm(features, features.t())
        # 'normalize' the values of the gram matrix by dividing by the number of element in each feature maps
        return G.div(a * b * c * d)

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super(StyleLoss, self).__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super(Normalization, self).__init__()
            # .view the mean and std to make them [C x 1 x 1] so that they can directly work with image Tensor of
            # shape [B x C x H x W]
            self.mean = lib.tensor(mean).view(-1, 1, 1)
            self.std = lib.tensor(std).view(-1, 1, 1)

        def forward(self, img):
            return (img - self.mean) / self.std

    def get_style_model_and_losses(cnn, normalization_mean, normalization_std, style_img, content_img,
                                   content_layers=('conv_4',), style_layers=('conv_1', 'conv_2', 'conv_3', 'conv_4', 'conv_5')):
        normalization = Normalization(normalization_mean, normalization_std)
        content_losses = []
        style_losses = []
        model = nn.Sequential(normalization)
        i = 0  # increment every time we see a conv
        for layer in cnn.children():
            if isinstance(layer, nn.Conv2d):
                i += 1
                name = 'conv_{}'.format(i)
            elif isinstance(layer, nn.ReLU):
                name = 'relu_{}'.format(i)
                # the in-place version doesn't play very nicely with the ContentLoss and StyleLoss we insert below
                layer = nn.ReLU(inplace=False)
            elif isinstance(layer, nn.MaxPool2d):
                name = 'pool_{}'.format(i)
            elif isinstance(layer, nn.BatchNorm2d):
                name = 'bn_{}'.format(i)
            else:
                raise RuntimeError('Unrecognized layer: {}'.format(layer.__class__.__name__))
            model.add_module(name, layer)
            if name in content_layers:
                target = model(content_img).detach()
                content_loss = ContentLoss(target)
                model.add_module("content_loss_{}".format(i), content_loss)
                content_losses.append(content_loss)
            if name in style_layers:
                target_feature = model(style_img).detach()
                style_loss = StyleLoss(target_feature)
                model.add_module("style_loss_{}".format(i), style_loss)
                style_losses.append(style_loss)
        # now we trim off the layers after the last content and style losses
        for i in range(len(model) - 1, -1, -1):
            if isinstance(model[i], ContentLoss) or isinstance(model[i], StyleLoss):
                break
        model = model[:(i + 1)]
        return model, style_losses, content_losses

    def run_style_transfer(cnn, normalization_mean, normalization_std, content_img, style_img, input_img, num_steps=300,
                           style_weight=1000000, content_weight=1, log=None):
        model, style_losses, content_losses = get_style_model_and_losses(cnn, normalization_mean, normalization_std,
                                                                         style_img, content_img)
        # We want to optimize the input and not the model parameters so we update all the requires_grad fields
        input_img.requires_grad_(True)
        model.eval()
        model.requires_grad_(False)
        optimizer = optim.LBFGS([input_img])
        run = [0]
        scores = []
        while run[0] <= num_steps:

            def closure():
                # correct the values of updated input image
                with lib.no_grad():
                    input_img.clamp_(0, 1)
                optimizer.zero_grad()
                model(input_img)
                style_score = 0
                content_score = 0
                for sl in style_losses:
                    style_score += sl.loss
                for cl in content_losses:
                    content_score += cl.loss
                style_score *= style_weight
                content_score *= content_weight
                loss = style_score + content_score
                loss.backward()
                run[0] += 1
                scores.append((style_score.item(), content_score.item()))
                if run[0] % 5 == 0:
                    log.append("run {}:".format(run))
                    log.append('Style Loss : {:4f} Content Loss: {:4f}'.format(style_score.item(), content_score.item()))
                return style_score + content_score

            optimizer.step(closure)
        # a last correction...
        with lib.no_grad():
            input_img.clamp_(0, 1)
        return input_img, scores, model

    return run_style_transfer


def small_vgg19_features(nn):
    """A VGG19-like ``features`` (conv, relu, pool in its order, narrow, random weights) standing in for
    ``vgg19(weights=...).features``."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(inplace=True), nn.MaxPool2d(2, 2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True))


def _gatys_images():
    """``(style, content)`` as the tutorial's ``image_loader`` gives them: ``(1, 3, 16, 16)`` in [0, 1]."""
    return _striped_style()[None] / 255.0, _coloured_digits(1, offset=300) / 255.0


def test_gatys_style_transfer_optimises_the_input_image_as_torch_does():
    torch = require_torch()
    kiln.manual_seed(4)
    cnn = small_vgg19_features(kiln.nn).double().eval()
    torch_cnn = small_vgg19_features(torch.nn).double().eval()
    _same_weights(torch, cnn, torch_cnn)
    style, content = _gatys_images()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    results = []
    for lib, net in ((kiln, cnn), (torch, torch_cnn)):
        import_name = "kiln" if lib is kiln else "torch"
        run_style_transfer = gatys_program(*_libraries(import_name), lib.optim)
        device = lib.device("cuda" if lib.cuda.is_available() else "cpu")
        lib.set_default_device(device)
        content_img, style_img = lib.tensor(content).to(device), lib.tensor(style).to(device)
        input_img = content_img.clone()
        log = []
        output, scores, model = run_style_transfer(net, lib.tensor(mean, dtype=lib.float64), lib.tensor(std, dtype=lib.float64),
                                                   content_img, style_img, input_img, num_steps=25, log=log)
        results.append((np.array(output.detach().numpy()), scores, log, [name for name, _ in model.named_children()]))
        lib.set_default_device(None)
    (image, scores, log, layers), (torch_image, torch_scores, torch_log, torch_layers) = results
    assert layers == torch_layers and layers[-1] == "style_loss_5"  # trimmed after the last loss module
    assert len(scores) == 40  # two L-BFGS steps of max_iter=20 closure calls
    # The 30th call follows an overshooting step (the loss jumps ~100x); from there rounding is amplified ~300x more.
    # Measured as PyTorch against itself with the content image scaled by 1 ulp: scores 1e-11 apart before, 3.1e-9
    # after, the image 1.04e-8 (kiln against PyTorch: 3.3e-12, 1.06e-9, 3.5e-9); bounds ~10x those
    assert sum(torch_scores[29]) > 50 * sum(torch_scores[28])
    np.testing.assert_allclose(scores[:29], torch_scores[:29], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores[29:], torch_scores[29:], rtol=3e-8, atol=1e-12)
    # the printed progress: the same lines (a last {:4f} digit may round apart at ~1e-10)
    assert [line.split(":")[0] for line in log] == [line.split(":")[0] for line in torch_log] and len(log) == 16
    np.testing.assert_allclose(image, torch_image, rtol=0, atol=1e-7)
    assert image.min() >= 0 and image.max() <= 1 and sum(scores[-1]) < sum(scores[0]) / 2
    assert not np.allclose(np.asarray(content), image)  # the input image moved; the network did not
    _assert_same_state(cnn, torch_cnn)
