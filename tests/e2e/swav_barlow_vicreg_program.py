"""SwAV's ResNet (facebookresearch/swav src/resnet50.py) and the Barlow Twins and VICReg models (barlowtwins main.py,
vicreg main_vicreg.py) on a small ResNet, written once for ``torch`` being torch or kiln: the programs of
``test_porting_probes_dino_swav_barlow.py``, whose docstring says what it covers."""

from __future__ import annotations


# --- SwAV: src/resnet50.py and main_swav.py's arguments ---------------------------------------------------------------


SWAV_BATCH, FEAT_DIM, HIDDEN_MLP, PROTOTYPES, QUEUE_LENGTH, WIDTH = 4, 8, 12, 10, 8, 4


def swav_resnet(torch, nn, F, normalize=True, output_dim=FEAT_DIM, hidden_mlp=HIDDEN_MLP,
                nmb_prototypes=PROTOTYPES):
    """resnet50.py's ``ResNet`` (one ``BasicBlock`` stage of width ``WIDTH`` here): the ``ConstantPad2d`` stem, the
    projection head, ``nn.functional.normalize`` and the ``prototypes`` Linear without bias; ``forward`` groups the crops
    by resolution as DINO's wrapper, accumulating by ``torch.cat((output, _out))``."""

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=None):
            super(BasicBlock, self).__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = norm_layer(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
            self.bn2 = norm_layer(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.bn2(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self, block, layers, zero_init_residual=False, normalize=False, output_dim=0, hidden_mlp=0,
                     nmb_prototypes=0, eval_mode=False):
            super(ResNet, self).__init__()
            norm_layer = nn.BatchNorm2d
            self._norm_layer = norm_layer
            self.eval_mode = eval_mode
            self.padding = nn.ConstantPad2d(1, 0.0)
            self.inplanes = num_out_filters = WIDTH
            self.conv1 = nn.Conv2d(3, num_out_filters, kernel_size=3, stride=1, padding=0, bias=False)
            self.bn1 = norm_layer(num_out_filters)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = self._make_layer(block, num_out_filters, layers[0])
            num_out_filters *= 2
            self.layer2 = self._make_layer(block, num_out_filters, layers[1], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.l2norm = normalize
            if output_dim == 0:
                self.projection_head = None
            elif hidden_mlp == 0:
                self.projection_head = nn.Linear(num_out_filters * block.expansion, output_dim)
            else:
                self.projection_head = nn.Sequential(
                    nn.Linear(num_out_filters * block.expansion, hidden_mlp),
                    nn.BatchNorm1d(hidden_mlp),
                    nn.ReLU(inplace=True),
                    nn.Linear(hidden_mlp, output_dim),
                )
            self.prototypes = None
            if nmb_prototypes > 0:
                self.prototypes = nn.Linear(output_dim, nmb_prototypes, bias=False)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
            if zero_init_residual:
                for m in self.modules():
                    if isinstance(m, BasicBlock):
                        nn.init.constant_(m.bn2.weight, 0)

        def _make_layer(self, block, planes, blocks, stride=1):
            norm_layer = self._norm_layer
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                    norm_layer(planes * block.expansion),
                )
            layers = [block(self.inplanes, planes, stride, downsample, norm_layer)]
            self.inplanes = planes * block.expansion
            for _ in range(1, blocks):
                layers.append(block(self.inplanes, planes, norm_layer=norm_layer))
            return nn.Sequential(*layers)

        def forward_backbone(self, x):
            x = self.padding(x)
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.relu(x)
            x = self.layer1(x)
            x = self.layer2(x)
            if self.eval_mode:
                return x
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return x

        def forward_head(self, x):
            if self.projection_head is not None:
                x = self.projection_head(x)
            if self.l2norm:
                x = nn.functional.normalize(x, dim=1, p=2)
            if self.prototypes is not None:
                return x, self.prototypes(x)
            return x

        def forward(self, inputs):
            if not isinstance(inputs, list):
                inputs = [inputs]
            idx_crops = torch.cumsum(torch.unique_consecutive(
                torch.tensor([inp.shape[-1] for inp in inputs]),
                return_counts=True,
            )[1], 0)
            start_idx = 0
            for end_idx in idx_crops:
                _out = self.forward_backbone(torch.cat(inputs[start_idx: end_idx]))
                if start_idx == 0:
                    output = _out
                else:
                    output = torch.cat((output, _out))
                start_idx = end_idx
            return self.forward_head(output)

    return ResNet(BasicBlock, [1, 1], normalize=normalize, output_dim=output_dim, hidden_mlp=hidden_mlp,
                  nmb_prototypes=nmb_prototypes)


class SwavArgs:
    """main_swav.py's arguments (small): 2 crops of 8 and 2 of 4 pixels, both large crops assigned."""
    nmb_crops = [2, 2]
    crops_for_assign = [0, 1]
    temperature = 0.1
    epsilon = 0.05
    sinkhorn_iterations = 3
    world_size = 1
    freeze_prototypes_niters = 2
    queue_length = QUEUE_LENGTH
    epoch_queue_starts = 0
    base_lr, final_lr, start_warmup, warmup_epochs, epochs = 0.6, 0.0006, 0, 1, 2


# --- Barlow Twins (facebookresearch/barlowtwins main.py) and VICReg (facebookresearch/vicreg main_vicreg.py) ---------

SSL_BATCH, SSL_IMAGE, EMBEDDING = 8, 6, 8


def tiny_resnet(torch, nn, zero_init_residual=True):
    """The ``torchvision.models.resnet50(zero_init_residual=True)`` backbone, small: a conv stem, one residual block
    whose last BatchNorm starts at zero, global average pooling and ``fc`` (replaced by ``nn.Identity()``)."""

    class Block(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + x)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, EMBEDDING, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(EMBEDDING)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = Block(EMBEDDING)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(EMBEDDING, 10)
            if zero_init_residual:
                nn.init.constant_(self.layer1.bn2.weight, 0)

        def forward(self, x):
            x = self.layer1(self.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def off_diagonal(x):
    # return a flattened view of the off-diagonal elements of a square matrix
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


class SslArgs:
    projector = "16-16-12"
    mlp = "16-12"
    batch_size = SSL_BATCH
    lambd = 0.0051
    sim_coeff, std_coeff, cov_coeff = 25.0, 25.0, 1.0
    epochs = 2
    learning_rate_weights, learning_rate_biases = 0.2, 0.0048
    weight_decay = 1.5e-6


def barlow_twins(torch, nn, F, args=SslArgs()):
    """main.py's ``BarlowTwins``: the projector of ``Linear(bias=False)``, ``BatchNorm1d``, ``ReLU(inplace=True)``;
    ``self.bn = nn.BatchNorm1d(sizes[-1], affine=False)``; the loss from ``c = self.bn(z1).T @ self.bn(z2)``,
    ``c.div_(batch_size)``, ``torch.diagonal(c).add_(-1).pow_(2).sum()`` (in place on a view of ``c``) and
    ``off_diagonal(c).pow_(2).sum()``."""

    class BarlowTwins(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.args = args
            self.backbone = tiny_resnet(torch, nn)
            self.backbone.fc = nn.Identity()
            sizes = [EMBEDDING] + list(map(int, args.projector.split('-')))
            layers = []
            for i in range(len(sizes) - 2):
                layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=False))
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
            self.projector = nn.Sequential(*layers)
            self.bn = nn.BatchNorm1d(sizes[-1], affine=False)

        def forward(self, y1, y2):
            z1 = self.projector(self.backbone(y1))
            z2 = self.projector(self.backbone(y2))
            c = self.bn(z1).T @ self.bn(z2)
            c.div_(self.args.batch_size)
            on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
            off_diag = off_diagonal(c).pow_(2).sum()
            loss = on_diag + self.args.lambd * off_diag
            return loss

    return BarlowTwins(args)


def vicreg(torch, nn, F, args=SslArgs()):
    """main_vicreg.py's ``VICReg`` and ``Projector``; ``FullGatherLayer`` (a ``torch.autograd.Function`` returning a
    tuple, its backward stacking the gradients) for one process: ``all_gather`` copies ``x`` into the one slot."""

    class FullGatherLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            output = [torch.zeros_like(x) for _ in range(1)]
            output[0].copy_(x)  # dist.all_gather(output, x)
            return tuple(output)

        @staticmethod
        def backward(ctx, *grads):
            all_gradients = torch.stack(grads)
            return all_gradients[0]  # dist.all_reduce(all_gradients); all_gradients[dist.get_rank()]

    def Projector(args, embedding):
        mlp_spec = f"{embedding}-{args.mlp}"
        layers = []
        f = list(map(int, mlp_spec.split("-")))
        for i in range(len(f) - 2):
            layers.append(nn.Linear(f[i], f[i + 1]))
            layers.append(nn.BatchNorm1d(f[i + 1]))
            layers.append(nn.ReLU(True))
        layers.append(nn.Linear(f[-2], f[-1], bias=False))
        return nn.Sequential(*layers)

    class VICReg(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.args = args
            self.num_features = int(args.mlp.split("-")[-1])
            self.backbone, self.embedding = tiny_resnet(torch, nn), EMBEDDING
            self.backbone.fc = nn.Identity()
            self.projector = Projector(args, self.embedding)

        def forward(self, x, y):
            x = self.projector(self.backbone(x))
            y = self.projector(self.backbone(y))
            repr_loss = F.mse_loss(x, y)
            x = torch.cat(FullGatherLayer.apply(x), dim=0)
            y = torch.cat(FullGatherLayer.apply(y), dim=0)
            x = x - x.mean(dim=0)
            y = y - y.mean(dim=0)
            std_x = torch.sqrt(x.var(dim=0) + 0.0001)
            std_y = torch.sqrt(y.var(dim=0) + 0.0001)
            std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
            cov_x = (x.T @ x) / (self.args.batch_size - 1)
            cov_y = (y.T @ y) / (self.args.batch_size - 1)
            cov_loss = off_diagonal(cov_x).pow_(2).sum().div(
                self.num_features
            ) + off_diagonal(cov_y).pow_(2).sum().div(self.num_features)
            loss = (
                self.args.sim_coeff * repr_loss
                + self.args.std_coeff * std_loss
                + self.args.cov_coeff * cov_loss
            )
            return loss

    return VICReg(args)
