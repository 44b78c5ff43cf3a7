"""rosinality/stylegan2-pytorch: ``model.py`` (every class), ``op/fused_act.py`` and ``op/upfirdn2d.py`` in their CPU
forms, ``op/conv2d_gradfix.py``'s CPU fallbacks and ``train.py``'s helpers and loop body, as written, for ``torch``
being torch or kiln: the program of ``test_porting_probes_stylegan2.py``, whose docstring says what it covers and what
was adapted.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections import abc
from types import SimpleNamespace


def stylegan2(torch, nn, F, shrink=1):
    """The repository's functions and classes, closed over ``torch``. ``shrink`` divides the channel tables of
    ``Generator`` and ``Discriminator`` (512 channels at 4x4 and 8x8 in the repository) so a tiny model fits a test."""
    autograd = torch.autograd

    # ------------------------------------------------------------ op/conv2d_gradfix.py (the CPU fallbacks)
    enabled = True
    weight_gradients_disabled = False

    @contextlib.contextmanager
    def no_weight_gradients():
        nonlocal weight_gradients_disabled

        old = weight_gradients_disabled
        weight_gradients_disabled = True
        yield
        weight_gradients_disabled = old

    def could_use_op(input):
        if (not enabled) or (not torch.backends.cudnn.enabled):
            return False

        if input.device.type != "cuda":
            return False

        return True

    def conv2d_gradfix_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        assert not could_use_op(input)  # the CUDA op (conv2d_gradfix's custom Function) is not ported

        return F.conv2d(
            input=input,
            weight=weight,
            bias=bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
        )

    def conv2d_gradfix_conv_transpose2d(
        input,
        weight,
        bias=None,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        dilation=1,
    ):
        assert not could_use_op(input)

        return F.conv_transpose2d(
            input=input,
            weight=weight,
            bias=bias,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
        )

    conv2d_gradfix = SimpleNamespace(conv2d=conv2d_gradfix_conv2d, conv_transpose2d=conv2d_gradfix_conv_transpose2d,
                                     no_weight_gradients=no_weight_gradients)

    # ------------------------------------------------------------ op/fused_act.py (the CPU branch)
    class FusedLeakyReLU(nn.Module):
        def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
            super().__init__()

            if bias:
                self.bias = nn.Parameter(torch.zeros(channel))

            else:
                self.bias = None

            self.negative_slope = negative_slope
            self.scale = scale

        def forward(self, input):
            return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)

    def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5):
        if input.device.type == "cpu":
            if bias is not None:
                rest_dim = [1] * (input.ndim - bias.ndim - 1)
                return (
                    F.leaky_relu(
                        input + bias.view(1, bias.shape[0], *rest_dim), negative_slope=0.2
                    )
                    * scale
                )

            else:
                return F.leaky_relu(input, negative_slope=0.2) * scale

        raise NotImplementedError("the CUDA FusedLeakyReLUFunction is not ported")

    # ------------------------------------------------------------ op/upfirdn2d.py (the CPU branch)
    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
        if not isinstance(up, abc.Iterable):
            up = (up, up)

        if not isinstance(down, abc.Iterable):
            down = (down, down)

        if len(pad) == 2:
            pad = (pad[0], pad[1], pad[0], pad[1])

        if input.device.type == "cpu":
            out = upfirdn2d_native(input, kernel, *up, *down, *pad)

        else:
            raise NotImplementedError("the CUDA UpFirDn2d is not ported")

        return out

    def upfirdn2d_native(
        input, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1
    ):
        _, channel, in_h, in_w = input.shape
        input = input.reshape(-1, in_h, in_w, 1)

        _, in_h, in_w, minor = input.shape
        kernel_h, kernel_w = kernel.shape

        out = input.view(-1, in_h, 1, in_w, 1, minor)
        out = F.pad(out, [0, 0, 0, up_x - 1, 0, 0, 0, up_y - 1])
        out = out.view(-1, in_h * up_y, in_w * up_x, minor)

        out = F.pad(
            out, [0, 0, max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)]
        )
        out = out[
            :,
            max(-pad_y0, 0) : out.shape[1] - max(-pad_y1, 0),
            max(-pad_x0, 0) : out.shape[2] - max(-pad_x1, 0),
            :,
        ]

        out = out.permute(0, 3, 1, 2)
        out = out.reshape(
            [-1, 1, in_h * up_y + pad_y0 + pad_y1, in_w * up_x + pad_x0 + pad_x1]
        )
        w = torch.flip(kernel, [0, 1]).view(1, 1, kernel_h, kernel_w)
        out = F.conv2d(out, w)
        out = out.reshape(
            -1,
            minor,
            in_h * up_y + pad_y0 + pad_y1 - kernel_h + 1,
            in_w * up_x + pad_x0 + pad_x1 - kernel_w + 1,
        )
        out = out.permute(0, 2, 3, 1)
        out = out[:, ::down_y, ::down_x, :]

        out_h = (in_h * up_y + pad_y0 + pad_y1 - kernel_h + down_y) // down_y
        out_w = (in_w * up_x + pad_x0 + pad_x1 - kernel_w + down_x) // down_x

        return out.view(-1, channel, out_h, out_w)

    # ------------------------------------------------------------ model.py
    class PixelNorm(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, input):
            return input * torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)

    def make_kernel(k):
        k = torch.tensor(k, dtype=torch.float32)

        if k.ndim == 1:
            k = k[None, :] * k[:, None]

        k /= k.sum()

        return k

    class Upsample(nn.Module):
        def __init__(self, kernel, factor=2):
            super().__init__()

            self.factor = factor
            kernel = make_kernel(kernel) * (factor ** 2)
            self.register_buffer("kernel", kernel)

            p = kernel.shape[0] - factor

            pad0 = (p + 1) // 2 + factor - 1
            pad1 = p // 2

            self.pad = (pad0, pad1)

        def forward(self, input):
            out = upfirdn2d(input, self.kernel, up=self.factor, down=1, pad=self.pad)

            return out

    class Downsample(nn.Module):
        def __init__(self, kernel, factor=2):
            super().__init__()

            self.factor = factor
            kernel = make_kernel(kernel)
            self.register_buffer("kernel", kernel)

            p = kernel.shape[0] - factor

            pad0 = (p + 1) // 2
            pad1 = p // 2

            self.pad = (pad0, pad1)

        def forward(self, input):
            out = upfirdn2d(input, self.kernel, up=1, down=self.factor, pad=self.pad)

            return out

    class Blur(nn.Module):
        def __init__(self, kernel, pad, upsample_factor=1):
            super().__init__()

            kernel = make_kernel(kernel)

            if upsample_factor > 1:
                kernel = kernel * (upsample_factor ** 2)

            self.register_buffer("kernel", kernel)

            self.pad = pad

        def forward(self, input):
            out = upfirdn2d(input, self.kernel, pad=self.pad)

            return out

    class EqualConv2d(nn.Module):
        def __init__(
            self, in_channel, out_channel, kernel_size, stride=1, padding=0, bias=True
        ):
            super().__init__()

            self.weight = nn.Parameter(
                torch.randn(out_channel, in_channel, kernel_size, kernel_size)
            )
            self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)

            self.stride = stride
            self.padding = padding

            if bias:
                self.bias = nn.Parameter(torch.zeros(out_channel))

            else:
                self.bias = None

        def forward(self, input):
            out = conv2d_gradfix.conv2d(
                input,
                self.weight * self.scale,
                bias=self.bias,
                stride=self.stride,
                padding=self.padding,
            )

            return out

        def __repr__(self):
            return (
                f"{self.__class__.__name__}({self.weight.shape[1]}, {self.weight.shape[0]},"
                f" {self.weight.shape[2]}, stride={self.stride}, padding={self.padding})"
            )

    class EqualLinear(nn.Module):
        def __init__(
            self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1, activation=None
        ):
            super().__init__()

            self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))

            if bias:
                self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))

            else:
                self.bias = None

            self.activation = activation

            self.scale = (1 / math.sqrt(in_dim)) * lr_mul
            self.lr_mul = lr_mul

        def forward(self, input):
            if self.activation:
                out = F.linear(input, self.weight * self.scale)
                out = fused_leaky_relu(out, self.bias * self.lr_mul)

            else:
                out = F.linear(
                    input, self.weight * self.scale, bias=self.bias * self.lr_mul
                )

            return out

        def __repr__(self):
            return (
                f"{self.__class__.__name__}({self.weight.shape[1]}, {self.weight.shape[0]})"
            )

    class ModulatedConv2d(nn.Module):
        def __init__(
            self,
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            demodulate=True,
            upsample=False,
            downsample=False,
            blur_kernel=[1, 3, 3, 1],
            fused=True,
        ):
            super().__init__()

            self.eps = 1e-8
            self.kernel_size = kernel_size
            self.in_channel = in_channel
            self.out_channel = out_channel
            self.upsample = upsample
            self.downsample = downsample

            if upsample:
                factor = 2
                p = (len(blur_kernel) - factor) - (kernel_size - 1)
                pad0 = (p + 1) // 2 + factor - 1
                pad1 = p // 2 + 1

                self.blur = Blur(blur_kernel, pad=(pad0, pad1), upsample_factor=factor)

            if downsample:
                factor = 2
                p = (len(blur_kernel) - factor) + (kernel_size - 1)
                pad0 = (p + 1) // 2
                pad1 = p // 2

                self.blur = Blur(blur_kernel, pad=(pad0, pad1))

            fan_in = in_channel * kernel_size ** 2
            self.scale = 1 / math.sqrt(fan_in)
            self.padding = kernel_size // 2

            self.weight = nn.Parameter(
                torch.randn(1, out_channel, in_channel, kernel_size, kernel_size)
            )

            self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

            self.demodulate = demodulate
            self.fused = fused

        def __repr__(self):
            return (
                f"{self.__class__.__name__}({self.in_channel}, {self.out_channel}, {self.kernel_size}, "
                f"upsample={self.upsample}, downsample={self.downsample})"
            )

        def forward(self, input, style):
            batch, in_channel, height, width = input.shape

            if not self.fused:
                weight = self.scale * self.weight.squeeze(0)
                style = self.modulation(style)

                if self.demodulate:
                    w = weight.unsqueeze(0) * style.view(batch, 1, in_channel, 1, 1)
                    dcoefs = (w.square().sum((2, 3, 4)) + 1e-8).rsqrt()

                input = input * style.reshape(batch, in_channel, 1, 1)

                if self.upsample:
                    weight = weight.transpose(0, 1)
                    out = conv2d_gradfix.conv_transpose2d(
                        input, weight, padding=0, stride=2
                    )
                    out = self.blur(out)

                elif self.downsample:
                    input = self.blur(input)
                    out = conv2d_gradfix.conv2d(input, weight, padding=0, stride=2)

                else:
                    out = conv2d_gradfix.conv2d(input, weight, padding=self.padding)

                if self.demodulate:
                    out = out * dcoefs.view(batch, -1, 1, 1)

                return out

            style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
            weight = self.scale * self.weight * style

            if self.demodulate:
                demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)

            weight = weight.view(
                batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size
            )

            if self.upsample:
                input = input.view(1, batch * in_channel, height, width)
                weight = weight.view(
                    batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size
                )
                weight = weight.transpose(1, 2).reshape(
                    batch * in_channel, self.out_channel, self.kernel_size, self.kernel_size
                )
                out = conv2d_gradfix.conv_transpose2d(
                    input, weight, padding=0, stride=2, groups=batch
                )
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
                out = self.blur(out)

            elif self.downsample:
                input = self.blur(input)
                _, _, height, width = input.shape
                input = input.view(1, batch * in_channel, height, width)
                out = conv2d_gradfix.conv2d(
                    input, weight, padding=0, stride=2, groups=batch
                )
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)

            else:
                input = input.view(1, batch * in_channel, height, width)
                out = conv2d_gradfix.conv2d(
                    input, weight, padding=self.padding, groups=batch
                )
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)

            return out

    class NoiseInjection(nn.Module):
        def __init__(self):
            super().__init__()

            self.weight = nn.Parameter(torch.zeros(1))

        def forward(self, image, noise=None):
            if noise is None:
                batch, _, height, width = image.shape
                noise = image.new_empty(batch, 1, height, width).normal_()

            return image + self.weight * noise

    class ConstantInput(nn.Module):
        def __init__(self, channel, size=4):
            super().__init__()

            self.input = nn.Parameter(torch.randn(1, channel, size, size))

        def forward(self, input):
            batch = input.shape[0]
            out = self.input.repeat(batch, 1, 1, 1)

            return out

    class StyledConv(nn.Module):
        def __init__(
            self,
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            upsample=False,
            blur_kernel=[1, 3, 3, 1],
            demodulate=True,
        ):
            super().__init__()

            self.conv = ModulatedConv2d(
                in_channel,
                out_channel,
                kernel_size,
                style_dim,
                upsample=upsample,
                blur_kernel=blur_kernel,
                demodulate=demodulate,
            )

            self.noise = NoiseInjection()
            # self.bias = nn.Parameter(torch.zeros(1, out_channel, 1, 1))
            # self.activate = ScaledLeakyReLU(0.2)
            self.activate = FusedLeakyReLU(out_channel)

        def forward(self, input, style, noise=None):
            out = self.conv(input, style)
            out = self.noise(out, noise=noise)
            # out = out + self.bias
            out = self.activate(out)

            return out

    class ToRGB(nn.Module):
        def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=[1, 3, 3, 1]):
            super().__init__()

            if upsample:
                self.upsample = Upsample(blur_kernel)

            self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
            self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

        def forward(self, input, style, skip=None):
            out = self.conv(input, style)
            out = out + self.bias

            if skip is not None:
                skip = self.upsample(skip)

                out = out + skip

            return out

    def channel_table(channel_multiplier):
        """The repository's table, each entry divided by ``shrink``."""
        return {
            4: 512 // shrink,
            8: 512 // shrink,
            16: 512 // shrink,
            32: 512 // shrink,
            64: 256 * channel_multiplier // shrink,
            128: 128 * channel_multiplier // shrink,
            256: 64 * channel_multiplier // shrink,
            512: 32 * channel_multiplier // shrink,
            1024: 16 * channel_multiplier // shrink,
        }

    class Generator(nn.Module):
        def __init__(
            self,
            size,
            style_dim,
            n_mlp,
            channel_multiplier=2,
            blur_kernel=[1, 3, 3, 1],
            lr_mlp=0.01,
        ):
            super().__init__()

            self.size = size

            self.style_dim = style_dim

            layers = [PixelNorm()]

            for i in range(n_mlp):
                layers.append(
                    EqualLinear(
                        style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu"
                    )
                )

            self.style = nn.Sequential(*layers)

            self.channels = channel_table(channel_multiplier)

            self.input = ConstantInput(self.channels[4])
            self.conv1 = StyledConv(
                self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel
            )
            self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)

            self.log_size = int(math.log(size, 2))
            self.num_layers = (self.log_size - 2) * 2 + 1

            self.convs = nn.ModuleList()
            self.upsamples = nn.ModuleList()
            self.to_rgbs = nn.ModuleList()
            self.noises = nn.Module()

            in_channel = self.channels[4]

            for layer_idx in range(self.num_layers):
                res = (layer_idx + 5) // 2
                shape = [1, 1, 2 ** res, 2 ** res]
                self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(*shape))

            for i in range(3, self.log_size + 1):
                out_channel = self.channels[2 ** i]

                self.convs.append(
                    StyledConv(
                        in_channel,
                        out_channel,
                        3,
                        style_dim,
                        upsample=True,
                        blur_kernel=blur_kernel,
                    )
                )

                self.convs.append(
                    StyledConv(
                        out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel
                    )
                )

                self.to_rgbs.append(ToRGB(out_channel, style_dim))

                in_channel = out_channel

            self.n_latent = self.log_size * 2 - 2

        def make_noise(self):
            device = self.input.input.device

            noises = [torch.randn(1, 1, 2 ** 2, 2 ** 2, device=device)]

            for i in range(3, self.log_size + 1):
                for _ in range(2):
                    noises.append(torch.randn(1, 1, 2 ** i, 2 ** i, device=device))

            return noises

        def mean_latent(self, n_latent):
            latent_in = torch.randn(
                n_latent, self.style_dim, device=self.input.input.device
            )
            latent = self.style(latent_in).mean(0, keepdim=True)

            return latent

        def get_latent(self, input):
            return self.style(input)

        def forward(
            self,
            styles,
            return_latents=False,
            inject_index=None,
            truncation=1,
            truncation_latent=None,
            input_is_latent=False,
            noise=None,
            randomize_noise=True,
        ):
            if not input_is_latent:
                styles = [self.style(s) for s in styles]

            if noise is None:
                if randomize_noise:
                    noise = [None] * self.num_layers
                else:
                    noise = [
                        getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)
                    ]

            if truncation < 1:
                style_t = []

                for style in styles:
                    style_t.append(
                        truncation_latent + truncation * (style - truncation_latent)
                    )

                styles = style_t

            if len(styles) < 2:
                inject_index = self.n_latent

                if styles[0].ndim < 3:
                    latent = styles[0].unsqueeze(1).repeat(1, inject_index, 1)

                else:
                    latent = styles[0]

            else:
                if inject_index is None:
                    inject_index = random.randint(1, self.n_latent - 1)

                latent = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
                latent2 = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)

                latent = torch.cat([latent, latent2], 1)

            out = self.input(latent)
            out = self.conv1(out, latent[:, 0], noise=noise[0])

            skip = self.to_rgb1(out, latent[:, 1])

            i = 1
            for conv1, conv2, noise1, noise2, to_rgb in zip(
                self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
            ):
                out = conv1(out, latent[:, i], noise=noise1)
                out = conv2(out, latent[:, i + 1], noise=noise2)
                skip = to_rgb(out, latent[:, i + 2], skip)

                i += 2

            image = skip

            if return_latents:
                return image, latent

            else:
                return image, None

    class ConvLayer(nn.Sequential):
        def __init__(
            self,
            in_channel,
            out_channel,
            kernel_size,
            downsample=False,
            blur_kernel=[1, 3, 3, 1],
            bias=True,
            activate=True,
        ):
            layers = []

            if downsample:
                factor = 2
                p = (len(blur_kernel) - factor) + (kernel_size - 1)
                pad0 = (p + 1) // 2
                pad1 = p // 2

                layers.append(Blur(blur_kernel, pad=(pad0, pad1)))

                stride = 2
                self.padding = 0

            else:
                stride = 1
                self.padding = kernel_size // 2

            layers.append(
                EqualConv2d(
                    in_channel,
                    out_channel,
                    kernel_size,
                    padding=self.padding,
                    stride=stride,
                    bias=bias and not activate,
                )
            )

            if activate:
                layers.append(FusedLeakyReLU(out_channel, bias=bias))

            super().__init__(*layers)

    class ResBlock(nn.Module):
        def __init__(self, in_channel, out_channel, blur_kernel=[1, 3, 3, 1]):
            super().__init__()

            self.conv1 = ConvLayer(in_channel, in_channel, 3)
            self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True)

            self.skip = ConvLayer(
                in_channel, out_channel, 1, downsample=True, activate=False, bias=False
            )

        def forward(self, input):
            out = self.conv1(input)
            out = self.conv2(out)

            skip = self.skip(input)
            out = (out + skip) / math.sqrt(2)

            return out

    class Discriminator(nn.Module):
        def __init__(self, size, channel_multiplier=2, blur_kernel=[1, 3, 3, 1]):
            super().__init__()

            channels = channel_table(channel_multiplier)

            convs = [ConvLayer(3, channels[size], 1)]

            log_size = int(math.log(size, 2))

            in_channel = channels[size]

            for i in range(log_size, 2, -1):
                out_channel = channels[2 ** (i - 1)]

                convs.append(ResBlock(in_channel, out_channel, blur_kernel))

                in_channel = out_channel

            self.convs = nn.Sequential(*convs)

            self.stddev_group = 4
            self.stddev_feat = 1

            self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
            self.final_linear = nn.Sequential(
                EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
                EqualLinear(channels[4], 1),
            )

        def forward(self, input):
            out = self.convs(input)

            batch, channel, height, width = out.shape
            group = min(batch, self.stddev_group)
            stddev = out.view(
                group, -1, self.stddev_feat, channel // self.stddev_feat, height, width
            )
            stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
            stddev = stddev.mean([2, 3, 4], keepdims=True).squeeze(2)
            stddev = stddev.repeat(group, 1, height, width)
            out = torch.cat([out, stddev], 1)

            out = self.final_conv(out)

            out = out.view(batch, -1)
            out = self.final_linear(out)

            return out

    # ------------------------------------------------------------ train.py
    def requires_grad(model, flag=True):
        for p in model.parameters():
            p.requires_grad = flag

    def accumulate(model1, model2, decay=0.999):
        par1 = dict(model1.named_parameters())
        par2 = dict(model2.named_parameters())

        for k in par1.keys():
            par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)

    def d_logistic_loss(real_pred, fake_pred):
        real_loss = F.softplus(-real_pred)
        fake_loss = F.softplus(fake_pred)

        return real_loss.mean() + fake_loss.mean()

    def d_r1_loss(real_pred, real_img):
        with conv2d_gradfix.no_weight_gradients():
            grad_real, = autograd.grad(
                outputs=real_pred.sum(), inputs=real_img, create_graph=True
            )
        grad_penalty = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()

        return grad_penalty

    def g_nonsaturating_loss(fake_pred):
        loss = F.softplus(-fake_pred).mean()

        return loss

    def g_path_regularize(fake_img, latents, mean_path_length, decay=0.01):
        noise = torch.randn_like(fake_img) / math.sqrt(
            fake_img.shape[2] * fake_img.shape[3]
        )
        grad, = autograd.grad(
            outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True
        )
        path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))

        path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)

        path_penalty = (path_lengths - path_mean).pow(2).mean()

        return path_penalty, path_mean.detach(), path_lengths

    def make_noise(batch, latent_dim, n_noise, device):
        if n_noise == 1:
            return torch.randn(batch, latent_dim, device=device)

        noises = torch.randn(n_noise, batch, latent_dim, device=device).unbind(0)

        return noises

    def mixing_noise(batch, latent_dim, prob, device):
        if prob > 0 and random.random() < prob:
            return make_noise(batch, latent_dim, 2, device)

        else:
            return [make_noise(batch, latent_dim, 1, device)]

    def make_optimizers(args, generator, discriminator):
        """train.py's ``__main__``: Adam with the lazy-regularization ratio in ``lr`` and ``betas``."""
        g_reg_ratio = args.g_reg_every / (args.g_reg_every + 1)
        d_reg_ratio = args.d_reg_every / (args.d_reg_every + 1)

        g_optim = torch.optim.Adam(
            generator.parameters(),
            lr=args.lr * g_reg_ratio,
            betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio),
        )
        d_optim = torch.optim.Adam(
            discriminator.parameters(),
            lr=args.lr * d_reg_ratio,
            betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio),
        )
        return g_optim, d_optim

    def training_steps(args, generator, discriminator, g_optim, d_optim):
        """train()'s loop body as its four optimizer steps (the D step, R1, the G step, the path-length step), each a
        function a user may hand to ``torch.compile``; ``inject_index`` is None in the loop as written (the generator
        draws it)."""

        def d_step(real_img, noise, inject_index=None):
            fake_img, _ = generator(noise, inject_index=inject_index)
            fake_pred = discriminator(fake_img)
            real_pred = discriminator(real_img)
            d_loss = d_logistic_loss(real_pred, fake_pred)

            discriminator.zero_grad()
            d_loss.backward()
            d_optim.step()

            return d_loss, real_pred.mean(), fake_pred.mean()

        def d_reg_step(real_img):
            real_img.requires_grad = True
            real_img_aug = real_img  # the ``else`` of ``if args.augment:`` (ADA is not ported)

            real_pred = discriminator(real_img_aug)
            r1_loss = d_r1_loss(real_pred, real_img)

            discriminator.zero_grad()
            (args.r1 / 2 * r1_loss * args.d_reg_every + 0 * real_pred[0]).backward()

            d_optim.step()

            return r1_loss

        def g_step(noise, inject_index=None):
            fake_img, _ = generator(noise, inject_index=inject_index)
            fake_pred = discriminator(fake_img)
            g_loss = g_nonsaturating_loss(fake_pred)

            generator.zero_grad()
            g_loss.backward()
            g_optim.step()

            return g_loss

        def g_reg_step(noise, mean_path_length, inject_index=None):
            fake_img, latents = generator(noise, return_latents=True, inject_index=inject_index)

            path_loss, mean_path_length, path_lengths = g_path_regularize(
                fake_img, latents, mean_path_length
            )

            generator.zero_grad()
            weighted_path_loss = args.path_regularize * args.g_reg_every * path_loss

            if args.path_batch_shrink:
                weighted_path_loss += 0 * fake_img[0, 0, 0, 0]

            weighted_path_loss.backward()

            g_optim.step()

            return path_loss, mean_path_length, path_lengths

        return SimpleNamespace(d_step=d_step, d_reg_step=d_reg_step, g_step=g_step, g_reg_step=g_reg_step)

    def train(args, loader, generator, discriminator, g_optim, d_optim, g_ema, device, steps, log):
        """train()'s loop without ADA, DDP, logging and checkpoints: ``steps`` are ``training_steps``' (or compiled
        ones, with ``steps.inject_index(noise)`` drawing the style-mixing index outside them), ``log(name, value)``
        is handed what train.py puts in ``loss_dict``; a checkpoint every ``args.save_every`` iterations (10000 in
        train.py) in ``args.checkpoint_dir``."""
        loader = iter(loader)

        mean_path_length = 0

        r1_loss = torch.tensor(0.0, device=device)
        path_loss = torch.tensor(0.0, device=device)
        path_lengths = torch.tensor(0.0, device=device)

        accum = 0.5 ** (32 / (10 * 1000))

        for idx in range(args.iter):
            i = idx + args.start_iter

            real_img = next(loader)

            requires_grad(generator, False)
            requires_grad(discriminator, True)

            noise = mixing_noise(args.batch, args.latent, args.mixing, device)
            d_loss, real_score, fake_score = steps.d_step(real_img, noise, steps.inject_index(noise))
            log("d", d_loss)
            log("real_score", real_score)
            log("fake_score", fake_score)
            log("d_grads", discriminator)

            d_regularize = i % args.d_reg_every == 0

            if d_regularize:
                r1_loss = steps.d_reg_step(real_img)
                log("r1_grads", discriminator)

            log("r1", r1_loss)

            requires_grad(generator, True)
            requires_grad(discriminator, False)

            noise = mixing_noise(args.batch, args.latent, args.mixing, device)
            g_loss = steps.g_step(noise, steps.inject_index(noise))
            log("g", g_loss)
            log("g_grads", generator)

            g_regularize = i % args.g_reg_every == 0

            if g_regularize:
                path_batch_size = max(1, args.batch // args.path_batch_shrink)
                noise = mixing_noise(path_batch_size, args.latent, args.mixing, device)
                path_loss, mean_path_length, path_lengths = steps.g_reg_step(
                    noise, mean_path_length, steps.inject_index(noise)
                )
                log("path_grads", generator)
                log("mean_path_length", mean_path_length)

            log("path", path_loss)
            log("path_length", path_lengths.mean())

            accumulate(g_ema, generator, accum)

            if i % args.save_every == 0:
                torch.save(
                    {
                        "g": generator.state_dict(),
                        "d": discriminator.state_dict(),
                        "g_ema": g_ema.state_dict(),
                        "g_optim": g_optim.state_dict(),
                        "d_optim": d_optim.state_dict(),
                        "args": args,
                        "ada_aug_p": 0.0,
                    },
                    os.path.join(args.checkpoint_dir, f"{str(i).zfill(6)}.pt"),
                )

        return mean_path_length

    def load_checkpoint(args, generator, discriminator, g_ema, g_optim, d_optim):
        """train.py's ``if args.ckpt is not None:`` block (``weights_only=False``: the checkpoint pickles ``args``,
        which torch>=2.6's default refuses)."""
        print("load model:", args.ckpt)

        ckpt = torch.load(args.ckpt, map_location=lambda storage, loc: storage, weights_only=False)

        try:
            ckpt_name = os.path.basename(args.ckpt)
            args.start_iter = int(os.path.splitext(ckpt_name)[0])

        except ValueError:
            pass

        generator.load_state_dict(ckpt["g"])
        discriminator.load_state_dict(ckpt["d"])
        g_ema.load_state_dict(ckpt["g_ema"])

        g_optim.load_state_dict(ckpt["g_optim"])
        d_optim.load_state_dict(ckpt["d_optim"])

    return SimpleNamespace(**{name: value for name, value in locals().items() if not name.startswith("_")})
