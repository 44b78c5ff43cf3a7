"""chaiyujin/glow-pytorch's model (glow/thops.py, modules.py and models.py), written once for ``torch`` being torch or
kiln: the program of ``test_porting_probes_glow_chaiyujin.py``, whose docstring says what it covers."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def floats(torch, values):
    """``values`` (NumPy float64) as a tensor of the default dtype, as a DataLoader gives float32 images."""
    return torch.tensor(values, dtype=torch.get_default_dtype())


def chaiyujin_glow(torch, nn, F, image_shape=(4, 4, 3), hidden_channels=8, K=2, L=2, flow_permutation="invconv",
                   flow_coupling="affine", LU_decomposed=True, y_classes=3, learn_top=True, y_condition=True,
                   batch_size=4, n_bins=32.0, fed_noise=True, assert_prior=True):
    """chaiyujin/glow-pytorch's glow/thops.py, modules.py and models.py (hparams as arguments); ``fed_noise``: the
    dequantisation noise of ``normal_flow`` is ``self.noise`` (set by the caller, the same in both libraries)
    rather than ``torch.normal``'s draw; ``assert_prior`` False leaves out ``prior``'s
    ``assert torch.sum(h) == 0.0``."""

    class thops:
        @staticmethod
        def onehot(y, num_classes):
            y_onehot = torch.zeros(y.size(0), num_classes).to(y.device)
            if len(y.size()) == 1:
                y_onehot = y_onehot.scatter_(1, y.unsqueeze(-1), 1)
            elif len(y.size()) == 2:
                y_onehot = y_onehot.scatter_(1, y, 1)
            else:
                raise ValueError("[onehot]: y should be in shape [B], or [B, C]")
            return y_onehot

        @staticmethod
        def sum(tensor, dim=None, keepdim=False):
            if dim is None:
                # sum up all dim
                return torch.sum(tensor)
            else:
                if isinstance(dim, int):
                    dim = [dim]
                dim = sorted(dim)
                for d in dim:
                    tensor = tensor.sum(dim=d, keepdim=True)
                if not keepdim:
                    for i, d in enumerate(dim):
                        tensor.squeeze_(d-i)
                return tensor

        @staticmethod
        def mean(tensor, dim=None, keepdim=False):
            if dim is None:
                # mean all dim
                return torch.mean(tensor)
            else:
                if isinstance(dim, int):
                    dim = [dim]
                dim = sorted(dim)
                for d in dim:
                    tensor = tensor.mean(dim=d, keepdim=True)
                if not keepdim:
                    for i, d in enumerate(dim):
                        tensor.squeeze_(d-i)
                return tensor

        @staticmethod
        def split_feature(tensor, type="split"):
            """
            type = ["split", "cross"]
            """
            C = tensor.size(1)
            if type == "split":
                return tensor[:, :C // 2, ...], tensor[:, C // 2:, ...]
            elif type == "cross":
                return tensor[:, 0::2, ...], tensor[:, 1::2, ...]

        @staticmethod
        def cat_feature(tensor_a, tensor_b):
            return torch.cat((tensor_a, tensor_b), dim=1)

        @staticmethod
        def pixels(tensor):
            return int(tensor.size(2) * tensor.size(3))

    class _ActNorm(nn.Module):
        def __init__(self, num_features, scale=1.):
            super().__init__()
            # register mean and scale
            size = [1, num_features, 1, 1]
            self.register_parameter("bias", nn.Parameter(torch.zeros(*size)))
            self.register_parameter("logs", nn.Parameter(torch.zeros(*size)))
            self.num_features = num_features
            self.scale = float(scale)
            self.inited = False

        def _check_input_dim(self, input):
            return NotImplemented

        def initialize_parameters(self, input):
            self._check_input_dim(input)
            if not self.training:
                return
            assert input.device == self.bias.device
            with torch.no_grad():
                bias = thops.mean(input.clone(), dim=[0, 2, 3], keepdim=True) * -1.0
                vars = thops.mean((input.clone() + bias) ** 2, dim=[0, 2, 3], keepdim=True)
                logs = torch.log(self.scale/(torch.sqrt(vars)+1e-6))
                self.bias.data.copy_(bias.data)
                self.logs.data.copy_(logs.data)
                self.inited = True

        def _center(self, input, reverse=False):
            if not reverse:
                return input + self.bias
            else:
                return input - self.bias

        def _scale(self, input, logdet=None, reverse=False):
            logs = self.logs
            if not reverse:
                input = input * torch.exp(logs)
            else:
                input = input * torch.exp(-logs)
            if logdet is not None:
                """
                logs is log_std of `mean of channels`
                so we need to multiply pixels
                """
                dlogdet = thops.sum(logs) * thops.pixels(input)
                if reverse:
                    dlogdet *= -1
                logdet = logdet + dlogdet
            return input, logdet

        def forward(self, input, logdet=None, reverse=False):
            if not self.inited:
                self.initialize_parameters(input)
            self._check_input_dim(input)
            # no need to permute dims as old version
            if not reverse:
                # center and scale
                input = self._center(input, reverse)
                input, logdet = self._scale(input, logdet, reverse)
            else:
                # scale and center
                input, logdet = self._scale(input, logdet, reverse)
                input = self._center(input, reverse)
            return input, logdet

    class ActNorm2d(_ActNorm):
        def __init__(self, num_features, scale=1.):
            super().__init__(num_features, scale)

        def _check_input_dim(self, input):
            assert len(input.size()) == 4
            assert input.size(1) == self.num_features, (
                "[ActNorm]: input should be in shape as `BCHW`,"
                " channels should be {} rather than {}".format(
                    self.num_features, input.size()))

    class LinearZeros(nn.Linear):
        def __init__(self, in_channels, out_channels, logscale_factor=3):
            super().__init__(in_channels, out_channels)
            self.logscale_factor = logscale_factor
            # set logs parameter
            self.register_parameter("logs", nn.Parameter(torch.zeros(out_channels)))
            # init
            self.weight.data.zero_()
            self.bias.data.zero_()

        def forward(self, input):
            output = super().forward(input)
            return output * torch.exp(self.logs * self.logscale_factor)

    class Conv2d(nn.Conv2d):
        pad_dict = {
            "same": lambda kernel, stride: [((k - 1) * s + 1) // 2 for k, s in zip(kernel, stride)],
            "valid": lambda kernel, stride: [0 for _ in kernel]
        }

        @staticmethod
        def get_padding(padding, kernel_size, stride):
            # make paddding
            if isinstance(padding, str):
                if isinstance(kernel_size, int):
                    kernel_size = [kernel_size, kernel_size]
                if isinstance(stride, int):
                    stride = [stride, stride]
                padding = padding.lower()
                try:
                    padding = Conv2d.pad_dict[padding](kernel_size, stride)
                except KeyError:
                    raise ValueError("{} is not supported".format(padding))
            return padding

        def __init__(self, in_channels, out_channels,
                     kernel_size=[3, 3], stride=[1, 1],
                     padding="same", do_actnorm=True, weight_std=0.05):
            padding = Conv2d.get_padding(padding, kernel_size, stride)
            super().__init__(in_channels, out_channels, kernel_size, stride,
                             padding, bias=(not do_actnorm))
            # init weight with std
            self.weight.data.normal_(mean=0.0, std=weight_std)
            if not do_actnorm:
                self.bias.data.zero_()
            else:
                self.actnorm = ActNorm2d(out_channels)
            self.do_actnorm = do_actnorm

        def forward(self, input):
            x = super().forward(input)
            if self.do_actnorm:
                x, _ = self.actnorm(x)
            return x

    class Conv2dZeros(nn.Conv2d):
        def __init__(self, in_channels, out_channels,
                     kernel_size=[3, 3], stride=[1, 1],
                     padding="same", logscale_factor=3):
            padding = Conv2d.get_padding(padding, kernel_size, stride)
            super().__init__(in_channels, out_channels, kernel_size, stride, padding)
            # logscale_factor
            self.logscale_factor = logscale_factor
            self.register_parameter("logs", nn.Parameter(torch.zeros(out_channels, 1, 1)))
            # init
            self.weight.data.zero_()
            self.bias.data.zero_()

        def forward(self, input):
            output = super().forward(input)
            return output * torch.exp(self.logs * self.logscale_factor)

    class Permute2d(nn.Module):
        def __init__(self, num_channels, shuffle):
            super().__init__()
            self.num_channels = num_channels
            self.indices = np.arange(self.num_channels - 1, -1, -1).astype(np.int64)
            self.indices_inverse = np.zeros((self.num_channels), dtype=np.int64)
            for i in range(self.num_channels):
                self.indices_inverse[self.indices[i]] = i
            if shuffle:
                self.reset_indices()

        def reset_indices(self):
            np.random.shuffle(self.indices)
            for i in range(self.num_channels):
                self.indices_inverse[self.indices[i]] = i

        def forward(self, input, reverse=False):
            assert len(input.size()) == 4
            if not reverse:
                return input[:, self.indices, :, :]
            else:
                return input[:, self.indices_inverse, :, :]

    class InvertibleConv1x1(nn.Module):
        def __init__(self, num_channels, LU_decomposed=False):
            super().__init__()
            w_shape = [num_channels, num_channels]
            w_init = np.linalg.qr(np.random.randn(*w_shape))[0].astype(np.float32)
            if not LU_decomposed:
                # Sample a random orthogonal matrix:
                self.register_parameter("weight", nn.Parameter(torch.Tensor(w_init)))
            else:
                np_p, np_l, np_u = scipy.linalg.lu(w_init)
                np_s = np.diag(np_u)
                np_sign_s = np.sign(np_s)
                np_log_s = np.log(np.abs(np_s))
                np_u = np.triu(np_u, k=1)
                l_mask = np.tril(np.ones(w_shape, dtype=np.float32), -1)
                eye = np.eye(*w_shape, dtype=np.float32)

                self.register_buffer('p', torch.Tensor(np_p.astype(np.float32)))
                self.register_buffer('sign_s', torch.Tensor(np_sign_s.astype(np.float32)))
                self.l = nn.Parameter(torch.Tensor(np_l.astype(np.float32)))
                self.log_s = nn.Parameter(torch.Tensor(np_log_s.astype(np.float32)))
                self.u = nn.Parameter(torch.Tensor(np_u.astype(np.float32)))
                self.l_mask = torch.Tensor(l_mask)
                self.eye = torch.Tensor(eye)
            self.w_shape = w_shape
            self.LU = LU_decomposed

        def get_weight(self, input, reverse):
            w_shape = self.w_shape
            if not self.LU:
                pixels = thops.pixels(input)
                dlogdet = torch.slogdet(self.weight)[1] * pixels
                if not reverse:
                    weight = self.weight.view(w_shape[0], w_shape[1], 1, 1)
                else:
                    weight = torch.inverse(self.weight.double()).float()\
                                  .view(w_shape[0], w_shape[1], 1, 1)
                return weight, dlogdet
            else:
                self.p = self.p.to(input.device)
                self.sign_s = self.sign_s.to(input.device)
                self.l_mask = self.l_mask.to(input.device)
                self.eye = self.eye.to(input.device)
                l = self.l * self.l_mask + self.eye
                u = self.u * self.l_mask.transpose(0, 1).contiguous() + torch.diag(self.sign_s * torch.exp(self.log_s))
                dlogdet = thops.sum(self.log_s) * thops.pixels(input)
                if not reverse:
                    w = torch.matmul(self.p, torch.matmul(l, u))
                else:
                    l = torch.inverse(l.double()).float()
                    u = torch.inverse(u.double()).float()
                    w = torch.matmul(u, torch.matmul(l, self.p.inverse()))
                return w.view(w_shape[0], w_shape[1], 1, 1), dlogdet

        def forward(self, input, logdet=None, reverse=False):
            """
            log-det = log|abs(|W|)| * pixels
            """
            weight, dlogdet = self.get_weight(input, reverse)
            if not reverse:
                z = F.conv2d(input, weight)
                if logdet is not None:
                    logdet = logdet + dlogdet
                return z, logdet
            else:
                z = F.conv2d(input, weight)
                if logdet is not None:
                    logdet = logdet - dlogdet
                return z, logdet

    class GaussianDiag:
        Log2PI = float(np.log(2 * np.pi))

        @staticmethod
        def likelihood(mean, logs, x):
            """
            lnL = -1/2 * { ln|Var| + ((X - Mu)^T)(Var^-1)(X - Mu) + kln(2*PI) }
                    k = 1 (Independent)
                    Var = logs ** 2
            """
            return -0.5 * (logs * 2. + ((x - mean) ** 2) / torch.exp(logs * 2.) + GaussianDiag.Log2PI)

        @staticmethod
        def logp(mean, logs, x):
            likelihood = GaussianDiag.likelihood(mean, logs, x)
            return thops.sum(likelihood, dim=[1, 2, 3])

        @staticmethod
        def sample(mean, logs, eps_std=None):
            eps_std = eps_std or 1
            eps = torch.normal(mean=torch.zeros_like(mean),
                               std=torch.ones_like(logs) * eps_std)
            return mean + torch.exp(logs) * eps

    def squeeze2d(input, factor=2):
        assert factor >= 1 and isinstance(factor, int)
        if factor == 1:
            return input
        size = input.size()
        B = size[0]
        C = size[1]
        H = size[2]
        W = size[3]
        assert H % factor == 0 and W % factor == 0, "{}".format((H, W))
        x = input.view(B, C, H // factor, factor, W // factor, factor)
        x = x.permute(0, 1, 3, 5, 2, 4).contiguous()
        x = x.view(B, C * factor * factor, H // factor, W // factor)
        return x

    def unsqueeze2d(input, factor=2):
        assert factor >= 1 and isinstance(factor, int)
        factor2 = factor ** 2
        if factor == 1:
            return input
        size = input.size()
        B = size[0]
        C = size[1]
        H = size[2]
        W = size[3]
        assert C % (factor2) == 0, "{}".format(C)
        x = input.view(B, C // factor2, factor, factor, H, W)
        x = x.permute(0, 1, 4, 2, 5, 3).contiguous()
        x = x.view(B, C // (factor2), H * factor, W * factor)
        return x

    class SqueezeLayer(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, input, logdet=None, reverse=False):
            if not reverse:
                output = squeeze2d(input, self.factor)
                return output, logdet
            else:
                output = unsqueeze2d(input, self.factor)
                return output, logdet

    class Split2d(nn.Module):
        def __init__(self, num_channels):
            super().__init__()
            self.conv = Conv2dZeros(num_channels // 2, num_channels)

        def split2d_prior(self, z):
            h = self.conv(z)
            return thops.split_feature(h, "cross")

        def forward(self, input, logdet=0., reverse=False, eps_std=None):
            if not reverse:
                z1, z2 = thops.split_feature(input, "split")
                mean, logs = self.split2d_prior(z1)
                logdet = GaussianDiag.logp(mean, logs, z2) + logdet
                return z1, logdet
            else:
                z1 = input
                mean, logs = self.split2d_prior(z1)
                z2 = GaussianDiag.sample(mean, logs, eps_std)
                z = thops.cat_feature(z1, z2)
                return z, logdet

    def f(in_channels, out_channels, hidden_channels):
        return nn.Sequential(
            Conv2d(in_channels, hidden_channels), nn.ReLU(inplace=False),
            Conv2d(hidden_channels, hidden_channels, kernel_size=[1, 1]), nn.ReLU(inplace=False),
            Conv2dZeros(hidden_channels, out_channels))

    class FlowStep(nn.Module):
        FlowCoupling = ["additive", "affine"]
        FlowPermutation = {
            "reverse": lambda obj, z, logdet, rev: (obj.reverse(z, rev), logdet),
            "shuffle": lambda obj, z, logdet, rev: (obj.shuffle(z, rev), logdet),
            "invconv": lambda obj, z, logdet, rev: obj.invconv(z, logdet, rev)
        }

        def __init__(self, in_channels, hidden_channels,
                     actnorm_scale=1.0,
                     flow_permutation="invconv",
                     flow_coupling="additive",
                     LU_decomposed=False):
            # check configures
            assert flow_coupling in FlowStep.FlowCoupling,\
                "flow_coupling should be in `{}`".format(FlowStep.FlowCoupling)
            assert flow_permutation in FlowStep.FlowPermutation,\
                "float_permutation should be in `{}`".format(
                    FlowStep.FlowPermutation.keys())
            super().__init__()
            self.flow_permutation = flow_permutation
            self.flow_coupling = flow_coupling
            # 1. actnorm
            self.actnorm = ActNorm2d(in_channels, actnorm_scale)
            # 2. permute
            if flow_permutation == "invconv":
                self.invconv = InvertibleConv1x1(
                    in_channels, LU_decomposed=LU_decomposed)
            elif flow_permutation == "shuffle":
                self.shuffle = Permute2d(in_channels, shuffle=True)
            else:
                self.reverse = Permute2d(in_channels, shuffle=False)
            # 3. coupling
            if flow_coupling == "additive":
                self.f = f(in_channels // 2, in_channels - in_channels // 2, hidden_channels)
            elif flow_coupling == "affine":
                self.f = f(in_channels // 2, 2 * (in_channels - in_channels // 2), hidden_channels)

        def forward(self, input, logdet=None, reverse=False):
            if not reverse:
                return self.normal_flow(input, logdet)
            else:
                return self.reverse_flow(input, logdet)

        def normal_flow(self, input, logdet):
            assert input.size(1) % 2 == 0
            # 1. actnorm
            z, logdet = self.actnorm(input, logdet=logdet, reverse=False)
            # 2. permute
            z, logdet = FlowStep.FlowPermutation[self.flow_permutation](
                self, z, logdet, False)
            # 3. coupling
            z1, z2 = thops.split_feature(z, "split")
            if self.flow_coupling == "additive":
                z2 = z2 + self.f(z1)
            elif self.flow_coupling == "affine":
                h = self.f(z1)
                shift, scale = thops.split_feature(h, "cross")
                scale = torch.sigmoid(scale + 2.)
                z2 = z2 + shift
                z2 = z2 * scale
                logdet = thops.sum(torch.log(scale), dim=[1, 2, 3]) + logdet
            z = thops.cat_feature(z1, z2)
            return z, logdet

        def reverse_flow(self, input, logdet):
            assert input.size(1) % 2 == 0
            # 1.coupling
            z1, z2 = thops.split_feature(input, "split")
            if self.flow_coupling == "additive":
                z2 = z2 - self.f(z1)
            elif self.flow_coupling == "affine":
                h = self.f(z1)
                shift, scale = thops.split_feature(h, "cross")
                scale = torch.sigmoid(scale + 2.)
                z2 = z2 / scale
                z2 = z2 - shift
                logdet = -thops.sum(torch.log(scale), dim=[1, 2, 3]) + logdet
            z = thops.cat_feature(z1, z2)
            # 2. permute
            z, logdet = FlowStep.FlowPermutation[self.flow_permutation](
                self, z, logdet, True)
            # 3. actnorm
            z, logdet = self.actnorm(z, logdet=logdet, reverse=True)
            return z, logdet

    class FlowNet(nn.Module):
        def __init__(self, image_shape, hidden_channels, K, L,
                     actnorm_scale=1.0,
                     flow_permutation="invconv",
                     flow_coupling="additive",
                     LU_decomposed=False):
            """
                                 K                                      K
            --> [Squeeze] -> [FlowStep] -> [Split] -> [Squeeze] -> [FlowStep]
                   ^                           v
                   |          (L - 1)          |
                   + --------------------------+
            """
            super().__init__()
            self.layers = nn.ModuleList()
            self.output_shapes = []
            self.K = K
            self.L = L
            H, W, C = image_shape
            assert C == 1 or C == 3, ("image_shape should be HWC, like (64, 64, 3)"
                                      "C == 1 or C == 3")
            for i in range(L):
                # 1. Squeeze
                C, H, W = C * 4, H // 2, W // 2
                self.layers.append(SqueezeLayer(factor=2))
                self.output_shapes.append([-1, C, H, W])
                # 2. K FlowStep
                for _ in range(K):
                    self.layers.append(
                        FlowStep(in_channels=C,
                                 hidden_channels=hidden_channels,
                                 actnorm_scale=actnorm_scale,
                                 flow_permutation=flow_permutation,
                                 flow_coupling=flow_coupling,
                                 LU_decomposed=LU_decomposed))
                    self.output_shapes.append(
                        [-1, C, H, W])
                # 3. Split2d
                if i < L - 1:
                    self.layers.append(Split2d(num_channels=C))
                    self.output_shapes.append([-1, C // 2, H, W])
                    C = C // 2

        def forward(self, input, logdet=0., reverse=False, eps_std=None):
            if not reverse:
                return self.encode(input, logdet)
            else:
                return self.decode(input, eps_std)

        def encode(self, z, logdet=0.0):
            for layer, shape in zip(self.layers, self.output_shapes):
                z, logdet = layer(z, logdet, reverse=False)
            return z, logdet

        def decode(self, z, eps_std=None):
            for layer in reversed(self.layers):
                if isinstance(layer, Split2d):
                    z, logdet = layer(z, logdet=0, reverse=True, eps_std=eps_std)
                else:
                    z, logdet = layer(z, logdet=0, reverse=True)
            return z

    class Glow(nn.Module):
        BCE = nn.BCEWithLogitsLoss()
        CE = nn.CrossEntropyLoss()

        def __init__(self):
            super().__init__()
            self.flow = FlowNet(image_shape=image_shape,
                                hidden_channels=hidden_channels,
                                K=K,
                                L=L,
                                actnorm_scale=1.0,
                                flow_permutation=flow_permutation,
                                flow_coupling=flow_coupling,
                                LU_decomposed=LU_decomposed)
            self.y_classes = y_classes
            # for prior
            if learn_top:
                C = self.flow.output_shapes[-1][1]
                self.learn_top = Conv2dZeros(C * 2, C * 2)
            if y_condition:
                C = self.flow.output_shapes[-1][1]
                self.project_ycond = LinearZeros(
                    y_classes, 2 * C)
                self.project_class = LinearZeros(
                    C, y_classes)
            # register prior hidden
            num_device = 1
            assert batch_size % num_device == 0
            self.register_parameter(
                "prior_h",
                nn.Parameter(torch.zeros([batch_size // num_device,
                                          self.flow.output_shapes[-1][1] * 2,
                                          self.flow.output_shapes[-1][2],
                                          self.flow.output_shapes[-1][3]])))

        def prior(self, y_onehot=None):
            B, C = self.prior_h.size(0), self.prior_h.size(1)
            h = self.prior_h.detach().clone()
            if assert_prior:
                assert torch.sum(h) == 0.0
            if learn_top:
                h = self.learn_top(h)
            if y_condition:
                assert y_onehot is not None
                yp = self.project_ycond(y_onehot).view(B, C, 1, 1)
                h += yp
            return thops.split_feature(h, "split")

        def forward(self, x=None, y_onehot=None, z=None,
                    eps_std=None, reverse=False):
            if not reverse:
                return self.normal_flow(x, y_onehot)
            else:
                return self.reverse_flow(z, y_onehot, eps_std)

        def normal_flow(self, x, y_onehot):
            pixels = thops.pixels(x)
            z = x + (self.noise if fed_noise else torch.normal(mean=torch.zeros_like(x),
                                                               std=torch.ones_like(x) * (1. / n_bins)))
            logdet = torch.zeros_like(x[:, 0, 0, 0])
            logdet += float(-np.log(n_bins) * pixels)
            # encode
            z, objective = self.flow(z, logdet=logdet, reverse=False)
            # prior
            mean, logs = self.prior(y_onehot)
            objective += GaussianDiag.logp(mean, logs, z)

            if y_condition:
                y_logits = self.project_class(z.mean(2).mean(2))
            else:
                y_logits = None

            # return
            nll = (-objective) / float(np.log(2.) * pixels)
            return z, nll, y_logits

        def reverse_flow(self, z, y_onehot, eps_std):
            with torch.no_grad():
                mean, logs = self.prior(y_onehot)
                if z is None:
                    z = GaussianDiag.sample(mean, logs, eps_std)
                x = self.flow(z, eps_std=eps_std, reverse=True)
            return x

        def set_actnorm_init(self, inited=True):
            for name, m in self.named_modules():
                if (m.__class__.__name__.find("ActNorm") >= 0):
                    m.inited = inited

        @staticmethod
        def loss_generative(nll):
            # Generative loss
            return torch.mean(nll)

        @staticmethod
        def loss_multi_classes(y_logits, y_onehot):
            if y_logits is None:
                return 0
            else:
                return Glow.BCE(y_logits, y_onehot.float())

        @staticmethod
        def loss_class(y_logits, y):
            if y_logits is None:
                return 0
            else:
                return Glow.CE(y_logits, y.long())

    model = Glow()
    model.thops = thops
    return model
