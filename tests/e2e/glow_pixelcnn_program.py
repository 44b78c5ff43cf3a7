"""The models of ``test_porting_probes_glow_pixelcnn.py`` (whose docstring says what they cover), written once for
``torch`` being torch or kiln: rosinality/glow-pytorch's Glow and a Gated PixelCNN as its reference writes it."""

from __future__ import annotations

from math import log, pi

import numpy as np
from scipy import linalg as la


def glow(torch, nn, F, conv_lu=True, initialized_flag="buffer", n_flow=2, n_block=2, in_channel=3, filter_size=8,
         affine=True):
    """Glow as model.py writes it: ``conv_lu`` picks ``InvConv2dLU`` or ``InvConv2d`` (slogdet) in the split blocks;
    ``initialized_flag`` "buffer" is model.py's uint8 buffer read by ``.item()``, "bool" chaiyujin/glow-pytorch's
    ``self.inited`` Python flag (what ``torch.compile(fullgraph=True)`` can trace). ``InvConv2d`` casts its float64
    slogdet back with ``.float()``, the float32 model's dtype; in float64 to the default dtype instead."""
    logdet_cast = (lambda d: d.float()) if torch.get_default_dtype() == torch.float32 else (lambda d: d.double())
    logabs = lambda x: torch.log(torch.abs(x))  # noqa: E731 (as model.py writes it)

    class ActNorm(nn.Module):
        def __init__(self, in_channel, logdet=True):
            super().__init__()

            self.loc = nn.Parameter(torch.zeros(1, in_channel, 1, 1))
            self.scale = nn.Parameter(torch.ones(1, in_channel, 1, 1))

            if initialized_flag == "buffer":
                self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
            else:  # chaiyujin/glow-pytorch's ``self.inited = False``: a Python flag torch.compile can read
                self.inited = False
            self.logdet = logdet

        def initialize(self, input):
            with torch.no_grad():
                flatten = input.permute(1, 0, 2, 3).contiguous().view(input.shape[1], -1)
                mean = (
                    flatten.mean(1)
                    .unsqueeze(1)
                    .unsqueeze(2)
                    .unsqueeze(3)
                    .permute(1, 0, 2, 3)
                )
                std = (
                    flatten.std(1)
                    .unsqueeze(1)
                    .unsqueeze(2)
                    .unsqueeze(3)
                    .permute(1, 0, 2, 3)
                )

                self.loc.data.copy_(-mean)
                self.scale.data.copy_(1 / (std + 1e-6))

        def forward(self, input):
            _, _, height, width = input.shape

            if initialized_flag == "buffer":
                if self.initialized.item() == 0:
                    self.initialize(input)
                    self.initialized.fill_(1)
            elif not self.inited:
                self.initialize(input)
                self.inited = True

            log_abs = logabs(self.scale)

            logdet = height * width * torch.sum(log_abs)

            if self.logdet:
                return self.scale * (input + self.loc), logdet

            else:
                return self.scale * (input + self.loc)

        def reverse(self, output):
            return output / self.scale - self.loc

    class InvConv2d(nn.Module):
        def __init__(self, in_channel):
            super().__init__()

            weight = torch.randn(in_channel, in_channel)
            q, _ = torch.linalg.qr(weight)
            weight = q.unsqueeze(2).unsqueeze(3)
            self.weight = nn.Parameter(weight)

        def forward(self, input):
            _, _, height, width = input.shape

            out = F.conv2d(input, self.weight)
            logdet = (
                height * width * logdet_cast(torch.slogdet(self.weight.squeeze().double())[1])
            )

            return out, logdet

        def reverse(self, output):
            return F.conv2d(
                output, self.weight.squeeze().inverse().unsqueeze(2).unsqueeze(3)
            )

    class InvConv2dLU(nn.Module):
        def __init__(self, in_channel):
            super().__init__()

            weight = torch.randn(in_channel, in_channel)
            q, _ = torch.linalg.qr(weight)
            w_p, w_l, w_u = la.lu(q.numpy())
            w_s = np.diag(w_u)
            w_u = np.triu(w_u, 1)
            u_mask = np.triu(np.ones_like(w_u), 1)
            l_mask = u_mask.T

            w_p = torch.from_numpy(w_p)
            w_l = torch.from_numpy(w_l)
            w_s = torch.from_numpy(w_s)
            w_u = torch.from_numpy(w_u)

            self.register_buffer("w_p", w_p)
            self.register_buffer("u_mask", torch.from_numpy(u_mask))
            self.register_buffer("l_mask", torch.from_numpy(l_mask))
            self.register_buffer("s_sign", torch.sign(w_s))
            self.register_buffer("l_eye", torch.eye(l_mask.shape[0]))
            self.w_l = nn.Parameter(w_l)
            self.w_s = nn.Parameter(logabs(w_s))
            self.w_u = nn.Parameter(w_u)

        def forward(self, input):
            _, _, height, width = input.shape

            weight = self.calc_weight()

            out = F.conv2d(input, weight)
            logdet = height * width * torch.sum(self.w_s)

            return out, logdet

        def calc_weight(self):
            weight = (
                self.w_p
                @ (self.w_l * self.l_mask + self.l_eye)
                @ ((self.w_u * self.u_mask) + torch.diag(self.s_sign * torch.exp(self.w_s)))
            )

            return weight.unsqueeze(2).unsqueeze(3)

        def reverse(self, output):
            weight = self.calc_weight()

            return F.conv2d(output, weight.squeeze().inverse().unsqueeze(2).unsqueeze(3))

    class ZeroConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, padding=1):
            super().__init__()

            self.conv = nn.Conv2d(in_channel, out_channel, 3, padding=0)
            self.conv.weight.data.zero_()
            self.conv.bias.data.zero_()
            self.scale = nn.Parameter(torch.zeros(1, out_channel, 1, 1))

        def forward(self, input):
            out = F.pad(input, [1, 1, 1, 1], value=1)
            out = self.conv(out)
            out = out * torch.exp(self.scale * 3)

            return out

    class AffineCoupling(nn.Module):
        def __init__(self, in_channel, filter_size=512, affine=True):
            super().__init__()

            self.affine = affine

            self.net = nn.Sequential(
                nn.Conv2d(in_channel // 2, filter_size, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(filter_size, filter_size, 1),
                nn.ReLU(inplace=True),
                ZeroConv2d(filter_size, in_channel if self.affine else in_channel // 2),
            )

            self.net[0].weight.data.normal_(0, 0.05)
            self.net[0].bias.data.zero_()

            self.net[2].weight.data.normal_(0, 0.05)
            self.net[2].bias.data.zero_()

        def forward(self, input):
            in_a, in_b = input.chunk(2, 1)

            if self.affine:
                log_s, t = self.net(in_a).chunk(2, 1)
                # s = torch.exp(log_s)
                s = F.sigmoid(log_s + 2)
                # out_a = s * in_a + t
                out_b = (in_b + t) * s

                logdet = torch.sum(torch.log(s).view(input.shape[0], -1), 1)

            else:
                net_out = self.net(in_a)
                out_b = in_b + net_out
                logdet = None

            return torch.cat([in_a, out_b], 1), logdet

        def reverse(self, output):
            out_a, out_b = output.chunk(2, 1)

            if self.affine:
                log_s, t = self.net(out_a).chunk(2, 1)
                # s = torch.exp(log_s)
                s = F.sigmoid(log_s + 2)
                # in_a = (out_a - t) / s
                in_b = out_b / s - t

            else:
                net_out = self.net(out_a)
                in_b = out_b - net_out

            return torch.cat([out_a, in_b], 1)

    class Flow(nn.Module):
        def __init__(self, in_channel, affine=True, conv_lu=True):
            super().__init__()

            self.actnorm = ActNorm(in_channel)

            if conv_lu:
                self.invconv = InvConv2dLU(in_channel)

            else:
                self.invconv = InvConv2d(in_channel)

            self.coupling = AffineCoupling(in_channel, filter_size=filter_size, affine=affine)

        def forward(self, input):
            out, logdet = self.actnorm(input)
            out, det1 = self.invconv(out)
            out, det2 = self.coupling(out)

            logdet = logdet + det1
            if det2 is not None:
                logdet = logdet + det2

            return out, logdet

        def reverse(self, output):
            input = self.coupling.reverse(output)
            input = self.invconv.reverse(input)
            input = self.actnorm.reverse(input)

            return input

    def gaussian_log_p(x, mean, log_sd):
        return -0.5 * log(2 * pi) - log_sd - 0.5 * (x - mean) ** 2 / torch.exp(2 * log_sd)

    def gaussian_sample(eps, mean, log_sd):
        return mean + torch.exp(log_sd) * eps

    class Block(nn.Module):
        def __init__(self, in_channel, n_flow, split=True, affine=True, conv_lu=True):
            super().__init__()

            squeeze_dim = in_channel * 4

            self.flows = nn.ModuleList()
            for i in range(n_flow):
                self.flows.append(Flow(squeeze_dim, affine=affine, conv_lu=conv_lu))

            self.split = split

            if split:
                self.prior = ZeroConv2d(in_channel * 2, in_channel * 4)

            else:
                self.prior = ZeroConv2d(in_channel * 4, in_channel * 8)

        def forward(self, input):
            b_size, n_channel, height, width = input.shape
            squeezed = input.view(b_size, n_channel, height // 2, 2, width // 2, 2)
            squeezed = squeezed.permute(0, 1, 3, 5, 2, 4)
            out = squeezed.contiguous().view(b_size, n_channel * 4, height // 2, width // 2)

            logdet = 0

            for flow in self.flows:
                out, det = flow(out)
                logdet = logdet + det

            if self.split:
                out, z_new = out.chunk(2, 1)
                mean, log_sd = self.prior(out).chunk(2, 1)
                log_p = gaussian_log_p(z_new, mean, log_sd)
                log_p = log_p.view(b_size, -1).sum(1)

            else:
                zero = torch.zeros_like(out)
                mean, log_sd = self.prior(zero).chunk(2, 1)
                log_p = gaussian_log_p(out, mean, log_sd)
                log_p = log_p.view(b_size, -1).sum(1)
                z_new = out

            return out, logdet, log_p, z_new

        def reverse(self, output, eps=None, reconstruct=False):
            input = output

            if reconstruct:
                if self.split:
                    input = torch.cat([output, eps], 1)

                else:
                    input = eps

            else:
                if self.split:
                    mean, log_sd = self.prior(input).chunk(2, 1)
                    z = gaussian_sample(eps, mean, log_sd)
                    input = torch.cat([output, z], 1)

                else:
                    zero = torch.zeros_like(input)
                    # zero = F.pad(zero, [1, 1, 1, 1], value=1)
                    mean, log_sd = self.prior(zero).chunk(2, 1)
                    z = gaussian_sample(eps, mean, log_sd)
                    input = z

            for flow in self.flows[::-1]:
                input = flow.reverse(input)

            b_size, n_channel, height, width = input.shape

            unsqueezed = input.view(b_size, n_channel // 4, 2, 2, height, width)
            unsqueezed = unsqueezed.permute(0, 1, 4, 2, 5, 3)
            unsqueezed = unsqueezed.contiguous().view(
                b_size, n_channel // 4, height * 2, width * 2
            )

            return unsqueezed

    class Glow(nn.Module):
        def __init__(
            self, in_channel, n_flow, n_block, affine=True, conv_lu=True
        ):
            super().__init__()

            self.blocks = nn.ModuleList()
            n_channel = in_channel
            for i in range(n_block - 1):
                self.blocks.append(Block(n_channel, n_flow, affine=affine, conv_lu=conv_lu))
                n_channel *= 2
            self.blocks.append(Block(n_channel, n_flow, split=False, affine=affine))

        def forward(self, input):
            log_p_sum = 0
            logdet = 0
            out = input
            z_outs = []

            for block in self.blocks:
                out, det, log_p, z_new = block(out)
                z_outs.append(z_new)
                logdet = logdet + det

                if log_p is not None:
                    log_p_sum = log_p_sum + log_p

            return log_p_sum, logdet, z_outs

        def reverse(self, z_list, reconstruct=False):
            for i, block in enumerate(self.blocks[::-1]):
                if i == 0:
                    input = block.reverse(z_list[-1], z_list[-1], reconstruct=reconstruct)

                else:
                    input = block.reverse(input, z_list[-(i + 1)], reconstruct=reconstruct)

            return input

    return Glow(in_channel, n_flow, n_block, affine=affine, conv_lu=conv_lu)


def gated_pixelcnn(torch, nn, F, input_dim=16, dim=8, n_layers=3, n_classes=3):
    """ritheshkumar95/pytorch-vqvae's modules.py GatedPixelCNN (the VQ-VAE prior), small."""

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            try:
                nn.init.xavier_uniform_(m.weight.data)
                m.bias.data.fill_(0)
            except AttributeError:
                print("Skipping initialization of ", classname)

    class GatedActivation(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            x, y = x.chunk(2, dim=1)
            return F.tanh(x) * F.sigmoid(y)

    class GatedMaskedConv2d(nn.Module):
        def __init__(self, mask_type, dim, kernel, residual=True, n_classes=10):
            super().__init__()
            assert kernel % 2 == 1, print("Kernel size must be odd")
            self.mask_type = mask_type
            self.residual = residual

            self.class_cond_embedding = nn.Embedding(
                n_classes, 2 * dim
            )

            kernel_shp = (kernel // 2 + 1, kernel)  # (ceil(n/2), n)
            padding_shp = (kernel // 2, kernel // 2)
            self.vert_stack = nn.Conv2d(
                dim, dim * 2,
                kernel_shp, 1, padding_shp
            )

            self.vert_to_horiz = nn.Conv2d(2 * dim, 2 * dim, 1)

            kernel_shp = (1, kernel // 2 + 1)
            padding_shp = (0, kernel // 2)
            self.horiz_stack = nn.Conv2d(
                dim, dim * 2,
                kernel_shp, 1, padding_shp
            )

            self.horiz_resid = nn.Conv2d(dim, dim, 1)

            self.gate = GatedActivation()

        def make_causal(self):
            self.vert_stack.weight.data[:, :, -1].zero_()  # Mask final row
            self.horiz_stack.weight.data[:, :, :, -1].zero_()  # Mask final column

        def forward(self, x_v, x_h, h):
            if self.mask_type == 'A':
                self.make_causal()

            h = self.class_cond_embedding(h)
            h_vert = self.vert_stack(x_v)
            h_vert = h_vert[:, :, :x_v.size(-1), :]
            out_v = self.gate(h_vert + h[:, :, None, None])

            h_horiz = self.horiz_stack(x_h)
            h_horiz = h_horiz[:, :, :, :x_h.size(-2)]
            v2h = self.vert_to_horiz(h_vert)

            out = self.gate(v2h + h_horiz + h[:, :, None, None])
            if self.residual:
                out_h = self.horiz_resid(out) + x_h
            else:
                out_h = self.horiz_resid(out)

            return out_v, out_h

    class GatedPixelCNN(nn.Module):
        def __init__(self, input_dim=256, dim=64, n_layers=15, n_classes=10):
            super().__init__()
            self.dim = dim

            # Create embedding layer to embed input
            self.embedding = nn.Embedding(input_dim, dim)

            # Building the PixelCNN layer by layer
            self.layers = nn.ModuleList()

            # Initial block with Mask-A convolution
            # Rest with Mask-B convolutions
            for i in range(n_layers):
                mask_type = 'A' if i == 0 else 'B'
                kernel = 7 if i == 0 else 3
                residual = False if i == 0 else True

                self.layers.append(
                    GatedMaskedConv2d(mask_type, dim, kernel, residual, n_classes)
                )

            # Add the output layer
            self.output_conv = nn.Sequential(
                nn.Conv2d(dim, 512, 1),
                nn.ReLU(True),
                nn.Conv2d(512, input_dim, 1)
            )

            self.apply(weights_init)

        def forward(self, x, label):
            shp = x.size() + (-1, )
            x = self.embedding(x.view(-1)).view(shp)  # (B, H, W, C)
            x = x.permute(0, 3, 1, 2)  # (B, C, W, W)

            x_v, x_h = (x, x)
            for i, layer in enumerate(self.layers):
                x_v, x_h = layer(x_v, x_h, label)

            return self.output_conv(x_h)

        def generate(self, label, shape=(8, 8), batch_size=64):
            param = next(self.parameters())
            x = torch.zeros(
                (batch_size, *shape),
                dtype=torch.int64, device=param.device
            )

            for i in range(shape[0]):
                for j in range(shape[1]):
                    logits = self.forward(x, label)
                    probs = F.softmax(logits[:, :, i, j], -1)
                    x.data[:, i, j].copy_(
                        probs.multinomial(1).squeeze().data
                    )
            return x

    return GatedPixelCNN(input_dim, dim, n_layers, n_classes)
