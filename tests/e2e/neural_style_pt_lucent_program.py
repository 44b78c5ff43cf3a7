"""Image-optimisation programs for ``test_porting_probes_attacks_saliency_more.py``, written once against torch-style
names (``torch`` is ``torch`` or ``kiln``): neural-style-pt's loss modules and ``stylize`` loop, and lucent's
FFT-parametrised channel visualisation."""

from __future__ import annotations

import copy

import numpy as np


# --- neural-style-pt (ProGamerGov/neural-style-pt, neural_style.py) --------------------------------------------------


def neural_style_pt(torch, nn, dtype):
    """neural_style.py's loss modules, net building and ``feval`` loop, as written: modes ``'capture'``/``'loss'``
    set from outside, ``ScaleGradients`` (a ``torch.autograd.Function`` normalising the gradient) with
    ``-normalize_gradients``, style blending by ``self.target.add(self.G.detach().mul(blend_weight))`` from an empty
    ``torch.Tensor()``, ``normalize_weights`` by ``max(i.target.size())``, the image an ``nn.Parameter`` optimised by
    ``optim.LBFGS(..., tolerance_change=-1, tolerance_grad=-1)`` or Adam, Caffe's BGR preprocessing. ``dtype`` is its
    ``torch.FloatTensor`` (``torch.DoubleTensor`` in float64). Returns ``stylize(cnn, content_image, style_images,
    init_image=None, optimizer_name='lbfgs', ...)``."""

    class ScaleGradients(torch.autograd.Function):
        @staticmethod
        def forward(self, input_tensor, strength):
            self.strength = strength
            return input_tensor

        @staticmethod
        def backward(self, grad_output):
            grad_input = grad_output.clone()
            grad_input = grad_input / (torch.norm(grad_input, keepdim=True) + 1e-8)
            return grad_input * self.strength * self.strength, None

    class ContentLoss(nn.Module):
        def __init__(self, strength, normalize):
            super(ContentLoss, self).__init__()
            self.strength = strength
            self.crit = nn.MSELoss()
            self.mode = 'None'
            self.normalize = normalize

        def forward(self, input):
            if self.mode == 'loss':
                loss = self.crit(input, self.target)
                if self.normalize:
                    loss = ScaleGradients.apply(loss, self.strength)
                self.loss = loss * self.strength
            elif self.mode == 'capture':
                self.target = input.detach()
            return input

    class GramMatrix(nn.Module):
        def forward(self, input):
            B, C, H, W = input.size()
            x_flat = input.view(C, H * W)
            return torch.mm(x_flat, x_flat.t())

    class StyleLoss(nn.Module):
        def __init__(self, strength, normalize):
            super(StyleLoss, self).__init__()
            self.target = torch.Tensor()
            self.strength = strength
            self.gram = GramMatrix()
            self.crit = nn.MSELoss()
            self.mode = 'None'
            self.blend_weight = None
            self.normalize = normalize

        def forward(self, input):
            self.G = self.gram(input)
            self.G = self.G.div(input.nelement())
            if self.mode == 'capture':
                if self.blend_weight == None:  # noqa: E711 (as written)
                    self.target = self.G.detach()
                elif self.target.nelement() == 0:
                    self.target = self.G.detach().mul(self.blend_weight)
                else:
                    self.target = self.target.add(self.G.detach().mul(self.blend_weight))
            elif self.mode == 'loss':
                loss = self.crit(self.G, self.target)
                if self.normalize:
                    loss = ScaleGradients.apply(loss, self.strength)
                self.loss = self.strength * loss
            return input

    class TVLoss(nn.Module):
        def __init__(self, strength):
            super(TVLoss, self).__init__()
            self.strength = strength

        def forward(self, input):
            self.x_diff = input[:, :, 1:, :] - input[:, :, :-1, :]
            self.y_diff = input[:, :, :, 1:] - input[:, :, :, :-1]
            self.loss = self.strength * (torch.sum(torch.abs(self.x_diff)) + torch.sum(torch.abs(self.y_diff)))
            return input

    def normalize_weights(content_losses, style_losses):
        for n, i in enumerate(content_losses):
            i.strength = i.strength / max(i.target.size())
        for n, i in enumerate(style_losses):
            i.strength = i.strength / max(i.target.size())

    def preprocess(image):
        """Caffe's input: RGB -> BGR by ``[[2, 1, 0]]``, ``* 256``, the mean subtracted, ``unsqueeze(0)``."""
        tensor = (image[[2, 1, 0]] * 256)
        mean = torch.tensor([103.939, 116.779, 123.68]).view(3, 1, 1)
        return (tensor - mean).unsqueeze(0).type(dtype)

    def deprocess(output_tensor):
        mean = torch.tensor([103.939, 116.779, 123.68]).view(3, 1, 1)
        output_tensor = (output_tensor.squeeze(0).cpu() + mean) / 256
        return output_tensor[[2, 1, 0]].clamp_(0, 1)

    def stylize(cnn, content_image, style_images, init_image=None, optimizer_name='lbfgs', num_iterations=6,
                content_layers=('relu_2',), style_layers=('relu_1', 'relu_2', 'relu_3'), content_weight=5e0,
                style_weight=1e2, tv_weight=1e-3, normalize_gradients=False, normalize_weights_=False,
                style_blend_weights=None, learning_rate=1.0):
        content_image = preprocess(content_image)
        style_images_caffe = [preprocess(image) for image in style_images]
        if style_blend_weights is None:
            style_blend_weights = [1.0 / len(style_images)] * len(style_images)
        cnn = copy.deepcopy(cnn)
        content_losses, style_losses, tv_losses = [], [], []
        next_content_idx, next_style_idx = 1, 1
        net = nn.Sequential()
        c, r = 0, 0
        if tv_weight > 0:
            tv_mod = TVLoss(tv_weight).type(dtype)
            net.add_module(str(len(net)), tv_mod)
            tv_losses.append(tv_mod)
        for i, layer in enumerate(list(cnn), 1):
            if next_content_idx <= len(content_layers) or next_style_idx <= len(style_layers):
                if isinstance(layer, nn.Conv2d):
                    net.add_module(str(len(net)), layer)
                    c += 1
                if isinstance(layer, nn.ReLU):
                    net.add_module(str(len(net)), layer)
                    r += 1
                    if 'relu_' + str(r) in content_layers:
                        loss_module = ContentLoss(content_weight, normalize_gradients)
                        net.add_module(str(len(net)), loss_module)
                        content_losses.append(loss_module)
                        next_content_idx += 1
                    if 'relu_' + str(r) in style_layers:
                        loss_module = StyleLoss(style_weight, normalize_gradients)
                        net.add_module(str(len(net)), loss_module)
                        style_losses.append(loss_module)
                        next_style_idx += 1
                if isinstance(layer, nn.MaxPool2d) or isinstance(layer, nn.AvgPool2d):
                    net.add_module(str(len(net)), layer)

        # Capture content targets
        for i in content_losses:
            i.mode = 'capture'
        net(content_image)
        for i in content_losses:
            i.mode = 'None'
        for i, image in enumerate(style_images_caffe):
            for j in style_losses:
                j.mode = 'capture'
                j.blend_weight = style_blend_weights[i]
            net(style_images_caffe[i])
        for i in content_losses:
            i.mode = 'loss'
        for i in style_losses:
            i.mode = 'loss'
        if normalize_weights_:
            normalize_weights(content_losses, style_losses)
        for param in net.parameters():
            param.requires_grad = False

        img = content_image.clone() if init_image is None else preprocess(init_image)
        img = nn.Parameter(img)

        losses = []
        num_calls = [0]

        def feval():
            num_calls[0] += 1
            optimizer.zero_grad()
            net(img)
            loss = 0
            for mod in content_losses:
                loss += mod.loss
            for mod in style_losses:
                loss += mod.loss
            if tv_weight > 0:
                for mod in tv_losses:
                    loss += mod.loss
            loss.backward()
            losses.append(loss.item())
            return loss

        if optimizer_name == 'lbfgs':
            optimizer = torch.optim.LBFGS([img], max_iter=num_iterations, tolerance_change=-1, tolerance_grad=-1)
            loopVal = 1
        else:
            optimizer = torch.optim.Adam([img], lr=learning_rate)
            loopVal = num_iterations - 1
        while num_calls[0] <= loopVal:
            optimizer.step(feval)
        return deprocess(img.detach()), losses, [len(net), [s.strength for s in style_losses]]

    return stylize


# --- feature visualisation (lucent: optvis/param/spatial.py, color.py, render.py) -----------------------------------


def rfft2d_freqs(h, w):
    """Computes 2D spectrum frequencies."""
    fy = np.fft.fftfreq(h)[:, None]
    # when we have an odd input dimension we need to keep one additional
    # entry for the last dimension to get the Nyquist frequency right
    if w % 2 == 1:
        fx = np.fft.fftfreq(w)[: w // 2 + 2]
    else:
        fx = np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def fft_image(torch, shape, init, decay_power=1):
    """lucent's ``fft_image``: the spectrum's real and imaginary parts as one leaf (``init``: its ``torch.randn(...)
    * sd`` draw), scaled by ``1 / max(freq, 1 / max(w, h)) ** decay_power``, ``torch.view_as_complex``,
    ``torch.fft.irfftn(..., s=(h, w), norm='ortho')``, divided by the magic 4."""
    batch, channels, h, w = shape
    freqs = rfft2d_freqs(h, w)
    spectrum_real_imag_t = init.clone().requires_grad_(True)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    scale = torch.tensor(scale).to(init.dtype)[None, None, ..., None]

    def inner():
        scaled_spectrum_t = scale * spectrum_real_imag_t
        if type(scaled_spectrum_t) is not torch.complex64:
            scaled_spectrum_t = torch.view_as_complex(scaled_spectrum_t)
        image = torch.fft.irfftn(scaled_spectrum_t, s=(h, w), norm='ortho')
        image = image[:batch, :channels, :h, :w]
        magic = 4.0  # Magic constant from Lucid library; increasing this seems to reduce saturation
        image = image / magic
        return image
    return [spectrum_real_imag_t], inner


def to_valid_rgb(torch, image_f, decorrelate=True):
    """lucent's color.py: the colour decorrelation by ``torch.matmul`` with the normalised SVD square root of the
    ImageNet colour correlation (``permute`` to channels last and back), then ``torch.sigmoid``."""
    color_correlation_svd_sqrt = np.asarray([[0.26, 0.09, 0.02],
                                             [0.27, 0.00, -0.05],
                                             [0.27, -0.09, 0.03]]).astype("float32")
    max_norm_svd_sqrt = np.max(np.linalg.norm(color_correlation_svd_sqrt, axis=0))
    color_correlation_normalized = color_correlation_svd_sqrt / max_norm_svd_sqrt

    def _linear_decorrelate_color(tensor):
        t_permute = tensor.permute(0, 2, 3, 1)
        t_permute = torch.matmul(t_permute, torch.tensor(color_correlation_normalized.T).to(tensor.dtype))
        tensor = t_permute.permute(0, 3, 1, 2)
        return tensor

    def inner():
        image = image_f()
        if decorrelate:
            image = _linear_decorrelate_color(image)
        return torch.sigmoid(image)
    return inner


def render_channel(torch, model, layer, channel, init, size, thresholds=(2, 4),
                   shifts=((1, -1), (0, 2), (-2, 0), (1, 1))):
    """lucent's ``render_vis`` with the objective ``channel(layer, n)`` (``-activation[:, n].mean()``), the layer's
    output kept by a forward hook, a jitter by ``torch.roll`` (its random shifts given), Adam at 5e-2; the image at
    each threshold. ``init`` has the spectrum's shape for an image of ``size``."""
    params, image_f = fft_image(torch, (1, 3) + tuple(size), init)
    image_f = to_valid_rgb(torch, image_f)
    optimizer = torch.optim.Adam(params, lr=5e-2)
    features = {}
    hook = layer.register_forward_hook(lambda module, input, output: features.__setitem__('layer', output))
    images, losses = [], []
    model.eval()
    for i in range(1, max(thresholds) + 1):
        def closure():
            optimizer.zero_grad()
            dy, dx = shifts[(i - 1) % len(shifts)]
            model(torch.roll(image_f(), shifts=(dy, dx), dims=(2, 3)))
            loss = -features['layer'][:, channel].mean()
            loss.backward()
            return loss
        losses.append(optimizer.step(closure).item())
        if i in thresholds:
            images.append(image_f().detach().cpu().numpy().transpose(0, 2, 3, 1))
    hook.remove()
    return images, losses
