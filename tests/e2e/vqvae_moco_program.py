"""VQ-VAE and MoCo v2 as their authors wrote them, for ``torch`` being torch or kiln: the program of
``test_porting_probes_vqvae_moco.py``, whose docstring says what it covers and what was adapted.

- rosinality's vq-vae-2-pytorch ``vqvae.py`` (``Quantize``, ``ResBlock``, ``Encoder``, ``Decoder``, ``VQVAE``),
  ``scheduler.py`` (``CycleScheduler``) and ``train_vqvae.py``'s iteration (``dist_fn.all_reduce`` is the identity on
  one process);
- zalandoresearch/pytorch-vq-vae's notebook (``VectorQuantizer``, ``Residual``, ``ResidualStack``, ``Encoder``,
  ``Decoder``, ``Model``) and its training iteration;
- facebookresearch/moco's ``moco/builder.py`` (``MoCo``, without the distributed batch shuffle: ``concat_all_gather``
  is the identity on one process), ``main_moco.py``'s ``train`` iteration, ``adjust_learning_rate``, ``accuracy``,
  ``save_checkpoint`` and its resume, and ``main_lincls.py``'s linear classification (frozen backbone, pre-trained keys
  renamed, ``train`` in eval mode, ``sanity_check``), around a small CNN (the ``base_encoder``) whose ``fc`` the MLP
  head replaces.
"""

from __future__ import annotations

import math
import os
from math import cos, pi
import shutil
from types import SimpleNamespace


def rosinality_vqvae(torch, nn, F):
    """vq-vae-2-pytorch's ``vqvae.py``, closed over ``torch``."""

    class Quantize(nn.Module):
        def __init__(self, dim, n_embed, decay=0.99, eps=1e-5):
            super().__init__()

            self.dim = dim
            self.n_embed = n_embed
            self.decay = decay
            self.eps = eps

            embed = torch.randn(dim, n_embed)
            self.register_buffer("embed", embed)
            self.register_buffer("cluster_size", torch.zeros(n_embed))
            self.register_buffer("embed_avg", embed.clone())

        def forward(self, input):
            flatten = input.reshape(-1, self.dim)
            dist = (
                flatten.pow(2).sum(1, keepdim=True)
                - 2 * flatten @ self.embed
                + self.embed.pow(2).sum(0, keepdim=True)
            )
            _, embed_ind = (-dist).max(1)
            embed_onehot = F.one_hot(embed_ind, self.n_embed).type(flatten.dtype)
            embed_ind = embed_ind.view(*input.shape[:-1])
            quantize = self.embed_code(embed_ind)

            if self.training:
                embed_onehot_sum = embed_onehot.sum(0)
                embed_sum = flatten.transpose(0, 1) @ embed_onehot

                # dist_fn.all_reduce(embed_onehot_sum); dist_fn.all_reduce(embed_sum): one process

                self.cluster_size.data.mul_(self.decay).add_(
                    embed_onehot_sum, alpha=1 - self.decay
                )
                self.embed_avg.data.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
                n = self.cluster_size.sum()
                cluster_size = (
                    (self.cluster_size + self.eps) / (n + self.n_embed * self.eps) * n
                )
                embed_normalized = self.embed_avg / cluster_size.unsqueeze(0)
                self.embed.data.copy_(embed_normalized)

            diff = (quantize.detach() - input).pow(2).mean()
            quantize = input + (quantize - input).detach()

            return quantize, diff, embed_ind

        def embed_code(self, embed_id):
            return F.embedding(embed_id, self.embed.transpose(0, 1))

    class ResBlock(nn.Module):
        def __init__(self, in_channel, channel):
            super().__init__()

            self.conv = nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(in_channel, channel, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channel, in_channel, 1),
            )

        def forward(self, input):
            out = self.conv(input)
            out += input

            return out

    class Encoder(nn.Module):
        def __init__(self, in_channel, channel, n_res_block, n_res_channel, stride):
            super().__init__()

            if stride == 4:
                blocks = [
                    nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channel // 2, channel, 4, stride=2, padding=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channel, channel, 3, padding=1),
                ]

            elif stride == 2:
                blocks = [
                    nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channel // 2, channel, 3, padding=1),
                ]

            for i in range(n_res_block):
                blocks.append(ResBlock(channel, n_res_channel))

            blocks.append(nn.ReLU(inplace=True))

            self.blocks = nn.Sequential(*blocks)

        def forward(self, input):
            return self.blocks(input)

    class Decoder(nn.Module):
        def __init__(
            self, in_channel, out_channel, channel, n_res_block, n_res_channel, stride
        ):
            super().__init__()

            blocks = [nn.Conv2d(in_channel, channel, 3, padding=1)]

            for i in range(n_res_block):
                blocks.append(ResBlock(channel, n_res_channel))

            blocks.append(nn.ReLU(inplace=True))

            if stride == 4:
                blocks.extend(
                    [
                        nn.ConvTranspose2d(channel, channel // 2, 4, stride=2, padding=1),
                        nn.ReLU(inplace=True),
                        nn.ConvTranspose2d(
                            channel // 2, out_channel, 4, stride=2, padding=1
                        ),
                    ]
                )

            elif stride == 2:
                blocks.append(
                    nn.ConvTranspose2d(channel, out_channel, 4, stride=2, padding=1)
                )

            self.blocks = nn.Sequential(*blocks)

        def forward(self, input):
            return self.blocks(input)

    class VQVAE(nn.Module):
        def __init__(
            self,
            in_channel=3,
            channel=128,
            n_res_block=2,
            n_res_channel=32,
            embed_dim=64,
            n_embed=512,
            decay=0.99,
        ):
            super().__init__()

            self.enc_b = Encoder(in_channel, channel, n_res_block, n_res_channel, stride=4)
            self.enc_t = Encoder(channel, channel, n_res_block, n_res_channel, stride=2)
            self.quantize_conv_t = nn.Conv2d(channel, embed_dim, 1)
            self.quantize_t = Quantize(embed_dim, n_embed)
            self.dec_t = Decoder(
                embed_dim, embed_dim, channel, n_res_block, n_res_channel, stride=2
            )
            self.quantize_conv_b = nn.Conv2d(embed_dim + channel, embed_dim, 1)
            self.quantize_b = Quantize(embed_dim, n_embed)
            self.upsample_t = nn.ConvTranspose2d(
                embed_dim, embed_dim, 4, stride=2, padding=1
            )
            self.dec = Decoder(
                embed_dim + embed_dim,
                in_channel,
                channel,
                n_res_block,
                n_res_channel,
                stride=4,
            )

        def forward(self, input):
            quant_t, quant_b, diff, _, _ = self.encode(input)
            dec = self.decode(quant_t, quant_b)

            return dec, diff

        def encode(self, input):
            enc_b = self.enc_b(input)
            enc_t = self.enc_t(enc_b)

            quant_t = self.quantize_conv_t(enc_t).permute(0, 2, 3, 1)
            quant_t, diff_t, id_t = self.quantize_t(quant_t)
            quant_t = quant_t.permute(0, 3, 1, 2)
            diff_t = diff_t.unsqueeze(0)

            dec_t = self.dec_t(quant_t)
            enc_b = torch.cat([dec_t, enc_b], 1)

            quant_b = self.quantize_conv_b(enc_b).permute(0, 2, 3, 1)
            quant_b, diff_b, id_b = self.quantize_b(quant_b)
            quant_b = quant_b.permute(0, 3, 1, 2)
            diff_b = diff_b.unsqueeze(0)

            return quant_t, quant_b, diff_t + diff_b, id_t, id_b

        def decode(self, quant_t, quant_b):
            upsample_t = self.upsample_t(quant_t)
            quant = torch.cat([upsample_t, quant_b], 1)
            dec = self.dec(quant)

            return dec

        def decode_code(self, code_t, code_b):
            quant_t = self.quantize_t.embed_code(code_t)
            quant_t = quant_t.permute(0, 3, 1, 2)
            quant_b = self.quantize_b.embed_code(code_b)
            quant_b = quant_b.permute(0, 3, 1, 2)

            dec = self.decode(quant_t, quant_b)

            return dec

    def train_iteration(model, optimizer, scheduler, img, latent_loss_weight=0.25):
        """train_vqvae.py's ``train`` loop body (the meters and sample images left out)."""
        criterion = nn.MSELoss()
        model.zero_grad()

        out, latent_loss = model(img)
        recon_loss = criterion(out, img)
        latent_loss = latent_loss.mean()
        loss = recon_loss + latent_loss_weight * latent_loss
        loss.backward()

        if scheduler is not None:
            scheduler.step()
        optimizer.step()
        return loss, recon_loss, latent_loss

    return SimpleNamespace(Quantize=Quantize, VQVAE=VQVAE, CycleScheduler=CycleScheduler,
                           train_iteration=train_iteration)


# ---------------------------------------------------------------- vq-vae-2-pytorch's scheduler.py


def anneal_linear(start, end, proportion):
    return start + proportion * (end - start)


def anneal_cos(start, end, proportion):
    cos_val = cos(pi * proportion) + 1

    return end + (start - end) / 2 * cos_val


class Phase:
    def __init__(self, start, end, n_iter, anneal_fn):
        self.start, self.end = start, end
        self.n_iter = n_iter
        self.anneal_fn = anneal_fn
        self.n = 0

    def step(self):
        self.n += 1

        return self.anneal_fn(self.start, self.end, self.n / self.n_iter)

    def reset(self):
        self.n = 0

    @property
    def is_done(self):
        return self.n >= self.n_iter


class CycleScheduler:
    def __init__(
        self,
        optimizer,
        lr_max,
        n_iter,
        momentum=(0.95, 0.85),
        divider=25,
        warmup_proportion=0.3,
        phase=('linear', 'cos'),
    ):
        self.optimizer = optimizer

        phase1 = int(n_iter * warmup_proportion)
        phase2 = n_iter - phase1
        lr_min = lr_max / divider

        phase_map = {'linear': anneal_linear, 'cos': anneal_cos}

        self.lr_phase = [
            Phase(lr_min, lr_max, phase1, phase_map[phase[0]]),
            Phase(lr_max, lr_min / 1e4, phase2, phase_map[phase[1]]),
        ]

        self.momentum = momentum

        if momentum is not None:
            mom1, mom2 = momentum
            self.momentum_phase = [
                Phase(mom1, mom2, phase1, phase_map[phase[0]]),
                Phase(mom2, mom1, phase2, phase_map[phase[1]]),
            ]

        else:
            self.momentum_phase = []

        self.phase = 0

    def step(self):
        lr = self.lr_phase[self.phase].step()

        if self.momentum is not None:
            momentum = self.momentum_phase[self.phase].step()

        else:
            momentum = None

        for group in self.optimizer.param_groups:
            group['lr'] = lr

            if self.momentum is not None:
                if 'betas' in group:
                    group['betas'] = (momentum, group['betas'][1])

                else:
                    group['momentum'] = momentum

        if self.lr_phase[self.phase].is_done:
            self.phase += 1

        if self.phase >= len(self.lr_phase):
            for phase in self.lr_phase:
                phase.reset()

            for phase in self.momentum_phase:
                phase.reset()

            self.phase = 0

        return lr, momentum


def zalando_vqvae(torch, nn, F):
    """pytorch-vq-vae's notebook (the codebook-loss quantizer), closed over ``torch``."""

    class VectorQuantizer(nn.Module):
        def __init__(self, num_embeddings, embedding_dim, commitment_cost):
            super(VectorQuantizer, self).__init__()

            self._embedding_dim = embedding_dim
            self._num_embeddings = num_embeddings

            self._embedding = nn.Embedding(self._num_embeddings, self._embedding_dim)
            self._embedding.weight.data.uniform_(-1/self._num_embeddings, 1/self._num_embeddings)
            self._commitment_cost = commitment_cost

        def forward(self, inputs):
            # convert inputs from BCHW -> BHWC
            inputs = inputs.permute(0, 2, 3, 1).contiguous()
            input_shape = inputs.shape

            # Flatten input
            flat_input = inputs.view(-1, self._embedding_dim)

            # Calculate distances
            distances = (torch.sum(flat_input**2, dim=1, keepdim=True)
                        + torch.sum(self._embedding.weight**2, dim=1)
                        - 2 * torch.matmul(flat_input, self._embedding.weight.t()))

            # Encoding
            encoding_indices = torch.argmin(distances, dim=1).unsqueeze(1)
            encodings = torch.zeros(encoding_indices.shape[0], self._num_embeddings, device=inputs.device)
            encodings.scatter_(1, encoding_indices, 1)

            # Quantize and unflatten
            quantized = torch.matmul(encodings, self._embedding.weight).view(input_shape)

            # Loss
            e_latent_loss = F.mse_loss(quantized.detach(), inputs)
            q_latent_loss = F.mse_loss(quantized, inputs.detach())
            loss = q_latent_loss + self._commitment_cost * e_latent_loss

            quantized = inputs + (quantized - inputs).detach()
            avg_probs = torch.mean(encodings, dim=0)
            perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))

            # convert quantized from BHWC -> BCHW
            return loss, quantized.permute(0, 3, 1, 2).contiguous(), perplexity, encodings

    class Residual(nn.Module):
        def __init__(self, in_channels, num_hiddens, num_residual_hiddens):
            super(Residual, self).__init__()
            self._block = nn.Sequential(
                nn.ReLU(True),
                nn.Conv2d(in_channels=in_channels,
                          out_channels=num_residual_hiddens,
                          kernel_size=3, stride=1, padding=1, bias=False),
                nn.ReLU(True),
                nn.Conv2d(in_channels=num_residual_hiddens,
                          out_channels=num_hiddens,
                          kernel_size=1, stride=1, bias=False)
            )

        def forward(self, x):
            return x + self._block(x)

    class ResidualStack(nn.Module):
        def __init__(self, in_channels, num_hiddens, num_residual_layers, num_residual_hiddens):
            super(ResidualStack, self).__init__()
            self._num_residual_layers = num_residual_layers
            self._layers = nn.ModuleList([Residual(in_channels, num_hiddens, num_residual_hiddens)
                                 for _ in range(self._num_residual_layers)])

        def forward(self, x):
            for i in range(self._num_residual_layers):
                x = self._layers[i](x)
            return F.relu(x)

    class Encoder(nn.Module):
        def __init__(self, in_channels, num_hiddens, num_residual_layers, num_residual_hiddens):
            super(Encoder, self).__init__()

            self._conv_1 = nn.Conv2d(in_channels=in_channels,
                                     out_channels=num_hiddens//2,
                                     kernel_size=4,
                                     stride=2, padding=1)
            self._conv_2 = nn.Conv2d(in_channels=num_hiddens//2,
                                     out_channels=num_hiddens,
                                     kernel_size=4,
                                     stride=2, padding=1)
            self._conv_3 = nn.Conv2d(in_channels=num_hiddens,
                                     out_channels=num_hiddens,
                                     kernel_size=3,
                                     stride=1, padding=1)
            self._residual_stack = ResidualStack(in_channels=num_hiddens,
                                                 num_hiddens=num_hiddens,
                                                 num_residual_layers=num_residual_layers,
                                                 num_residual_hiddens=num_residual_hiddens)

        def forward(self, inputs):
            x = self._conv_1(inputs)
            x = F.relu(x)

            x = self._conv_2(x)
            x = F.relu(x)

            x = self._conv_3(x)
            return self._residual_stack(x)

    class Decoder(nn.Module):
        def __init__(self, in_channels, num_hiddens, num_residual_layers, num_residual_hiddens):
            super(Decoder, self).__init__()

            self._conv_1 = nn.Conv2d(in_channels=in_channels,
                                     out_channels=num_hiddens,
                                     kernel_size=3,
                                     stride=1, padding=1)

            self._residual_stack = ResidualStack(in_channels=num_hiddens,
                                                 num_hiddens=num_hiddens,
                                                 num_residual_layers=num_residual_layers,
                                                 num_residual_hiddens=num_residual_hiddens)

            self._conv_trans_1 = nn.ConvTranspose2d(in_channels=num_hiddens,
                                                    out_channels=num_hiddens//2,
                                                    kernel_size=4,
                                                    stride=2, padding=1)

            self._conv_trans_2 = nn.ConvTranspose2d(in_channels=num_hiddens//2,
                                                    out_channels=3,
                                                    kernel_size=4,
                                                    stride=2, padding=1)

        def forward(self, inputs):
            x = self._conv_1(inputs)

            x = self._residual_stack(x)

            x = self._conv_trans_1(x)
            x = F.relu(x)

            return self._conv_trans_2(x)

    class Model(nn.Module):
        def __init__(self, num_hiddens, num_residual_layers, num_residual_hiddens,
                     num_embeddings, embedding_dim, commitment_cost):
            super(Model, self).__init__()

            self._encoder = Encoder(3, num_hiddens,
                                    num_residual_layers,
                                    num_residual_hiddens)
            self._pre_vq_conv = nn.Conv2d(in_channels=num_hiddens,
                                          out_channels=embedding_dim,
                                          kernel_size=1,
                                          stride=1)
            self._vq_vae = VectorQuantizer(num_embeddings, embedding_dim,
                                           commitment_cost)
            self._decoder = Decoder(embedding_dim,
                                    num_hiddens,
                                    num_residual_layers,
                                    num_residual_hiddens)

        def forward(self, x):
            z = self._encoder(x)
            z = self._pre_vq_conv(z)
            loss, quantized, perplexity, _ = self._vq_vae(z)
            x_recon = self._decoder(quantized)

            return loss, x_recon, perplexity

    def train_iteration(model, optimizer, data, data_variance):
        """The notebook's training loop body."""
        optimizer.zero_grad()

        vq_loss, data_recon, perplexity = model(data)
        recon_error = F.mse_loss(data_recon, data) / data_variance
        loss = recon_error + vq_loss
        loss.backward()

        optimizer.step()
        return loss, recon_error, perplexity

    return SimpleNamespace(VectorQuantizer=VectorQuantizer, Model=Model, train_iteration=train_iteration)


def moco_v2(torch, nn, F):
    """moco's ``builder.py`` and ``main_moco.py``'s pieces, closed over ``torch``; ``SmallCNN`` is the
    ``base_encoder`` (``models.__dict__[args.arch]``), built with ``num_classes=dim`` as the builder does."""

    class SmallCNN(nn.Module):
        def __init__(self, num_classes=128, width=6):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(2 * width)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return self.fc(x)

    class MoCo(nn.Module):
        """
        Build a MoCo model with: a query encoder, a key encoder, and a queue
        https://arxiv.org/abs/1911.05722
        """
        def __init__(self, base_encoder, dim=128, K=65536, m=0.999, T=0.07, mlp=False):
            """
            dim: feature dimension (default: 128)
            K: queue size; number of negative keys (default: 65536)
            m: moco momentum of updating key encoder (default: 0.999)
            T: softmax temperature (default: 0.07)
            """
            super(MoCo, self).__init__()

            self.K = K
            self.m = m
            self.T = T

            # create the encoders
            # num_classes is the output fc dimension
            self.encoder_q = base_encoder(num_classes=dim)
            self.encoder_k = base_encoder(num_classes=dim)

            if mlp:  # hack: brute-force replacement
                dim_mlp = self.encoder_q.fc.weight.shape[1]
                self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
                self.encoder_k.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_k.fc)

            for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                param_k.data.copy_(param_q.data)  # initialize
                param_k.requires_grad = False  # not update by gradient

            # create the queue
            self.register_buffer("queue", torch.randn(dim, K))
            self.queue = nn.functional.normalize(self.queue, dim=0)

            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

        @torch.no_grad()
        def _momentum_update_key_encoder(self):
            """
            Momentum update of the key encoder
            """
            for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                param_k.data = param_k.data * self.m + param_q.data * (1. - self.m)

        @torch.no_grad()
        def _dequeue_and_enqueue(self, keys):
            # gather keys before updating queue
            keys = concat_all_gather(keys)

            batch_size = keys.shape[0]

            ptr = int(self.queue_ptr)
            assert self.K % batch_size == 0  # for simplicity

            # replace the keys at ptr (dequeue and enqueue)
            self.queue[:, ptr:ptr + batch_size] = keys.T
            ptr = (ptr + batch_size) % self.K  # move pointer

            self.queue_ptr[0] = ptr

        def forward(self, im_q, im_k):
            """
            Input:
                im_q: a batch of query images
                im_k: a batch of key images
            Output:
                logits, targets
            """

            # compute query features
            q = self.encoder_q(im_q)  # queries: NxC
            q = nn.functional.normalize(q, dim=1)

            # compute key features
            with torch.no_grad():  # no gradient to keys
                self._momentum_update_key_encoder()  # update the key encoder

                # (the shuffle for making use of BN, _batch_shuffle_ddp, is skipped on one process)
                k = self.encoder_k(im_k)  # keys: NxC
                k = nn.functional.normalize(k, dim=1)

            # compute logits
            # Einstein sum is more intuitive
            # positive logits: Nx1
            l_pos = torch.einsum('nc,nc->n', [q, k]).unsqueeze(-1)
            # negative logits: NxK
            l_neg = torch.einsum('nc,ck->nk', [q, self.queue.clone().detach()])

            # logits: Nx(1+K)
            logits = torch.cat([l_pos, l_neg], dim=1)

            # apply temperature
            logits /= self.T

            # labels: positive key indicators
            labels = torch.zeros(logits.shape[0], dtype=torch.long)

            # dequeue and enqueue
            self._dequeue_and_enqueue(k)

            return logits, labels

    @torch.no_grad()
    def concat_all_gather(tensor):
        """``torch.distributed.all_gather`` over a world of one: the tensor itself."""
        return tensor

    def adjust_learning_rate(optimizer, epoch, args):
        """Decay the learning rate based on schedule"""
        lr = args.lr
        if args.cos:  # cosine lr schedule
            lr *= 0.5 * (1. + math.cos(math.pi * epoch / args.epochs))
        else:  # stepwise lr schedule
            for milestone in args.schedule:
                lr *= 0.1 if epoch >= milestone else 1.
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr

    def accuracy(output, target, topk=(1,)):
        """Computes the accuracy over the k top predictions for the specified values of k"""
        with torch.no_grad():
            maxk = max(topk)
            batch_size = target.size(0)

            _, pred = output.topk(maxk, 1, True, True)
            pred = pred.t()
            correct = pred.eq(target.view(1, -1).expand_as(pred))

            res = []
            for k in topk:
                correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
                res.append(correct_k.mul_(100.0 / batch_size))
            return res

    def make_model(args):
        """main_worker's model, criterion and optimizer."""
        model = MoCo(SmallCNN, args.moco_dim, args.moco_k, args.moco_m, args.moco_t, args.mlp)
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), args.lr,
                                    momentum=args.momentum,
                                    weight_decay=args.weight_decay)
        return model, criterion, optimizer

    def train_iteration(images, model, criterion, optimizer):
        """main_moco.py's ``train`` loop body (``images[0]``, ``images[1]``: the two crops)."""
        # compute output
        output, target = model(im_q=images[0], im_k=images[1])
        loss = criterion(output, target)

        # acc1/acc5 are (K+1)-way contrast classifier accuracy
        # measure accuracy and record loss
        acc1, acc5 = accuracy(output, target, topk=(1, 5))

        # compute gradient and do SGD step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss, output, acc1, acc5

    def save_checkpoint(state, is_best, filename='checkpoint.pth.tar'):
        torch.save(state, filename)
        if is_best:
            shutil.copyfile(filename, 'model_best.pth.tar')

    def checkpoint_of(epoch, args, model, optimizer):
        """main_moco.py's checkpoint; the state_dict under ``module.`` as DistributedDataParallel names it."""
        return {
            'epoch': epoch + 1,
            'arch': args.arch,
            'state_dict': {'module.' + k: v for k, v in model.state_dict().items()},
            'optimizer': optimizer.state_dict(),
        }

    def resume(args, model, optimizer):
        """main_worker's ``if args.resume:`` (the ``module.`` prefix dropped again: one process, no DDP wrapper)."""
        if os.path.isfile(args.resume):
            checkpoint = torch.load(args.resume)
            args.start_epoch = checkpoint['epoch']
            model.load_state_dict({k[len('module.'):]: v for k, v in checkpoint['state_dict'].items()})
            optimizer.load_state_dict(checkpoint['optimizer'])

    def make_linear_classifier(args):
        """main_lincls.py's main_worker: the frozen backbone, the fc initialised, the pre-trained weights loaded, SGD
        over the two trainable parameters."""
        # create model
        model = SmallCNN(num_classes=args.num_classes)

        # freeze all layers but the last fc
        for name, param in model.named_parameters():
            if name not in ['fc.weight', 'fc.bias']:
                param.requires_grad = False
        # init the fc layer
        model.fc.weight.data.normal_(mean=0.0, std=0.01)
        model.fc.bias.data.zero_()

        # load from pre-trained, before DistributedDataParallel constructor
        if args.pretrained:
            if os.path.isfile(args.pretrained):
                checkpoint = torch.load(args.pretrained, map_location="cpu")

                # rename moco pre-trained keys
                state_dict = checkpoint['state_dict']
                for k in list(state_dict.keys()):
                    # retain only encoder_q up to before the embedding layer
                    if k.startswith('module.encoder_q') and not k.startswith('module.encoder_q.fc'):
                        # remove prefix
                        state_dict[k[len("module.encoder_q."):]] = state_dict[k]
                    # delete renamed or unused k
                    del state_dict[k]

                args.start_epoch = 0
                msg = model.load_state_dict(state_dict, strict=False)
                assert set(msg.missing_keys) == {"fc.weight", "fc.bias"}

        criterion = nn.CrossEntropyLoss()

        # optimize only the linear classifier
        parameters = list(filter(lambda p: p.requires_grad, model.parameters()))
        assert len(parameters) == 2  # fc.weight, fc.bias
        optimizer = torch.optim.SGD(parameters, args.lr,
                                    momentum=args.momentum,
                                    weight_decay=args.weight_decay)
        return model, criterion, optimizer

    def train_lincls(train_loader, model, criterion, optimizer, epoch, args):
        """main_lincls.py's ``train`` (the meters left out)."""
        """
        Switch to eval mode:
        Under the protocol of linear classification on frozen features/models,
        it is not legitimate to change any part of the pre-trained model.
        BatchNorm in train mode may revise running mean/std (even if it receives
        no gradient), which are part of the model parameters too.
        """
        model.eval()
        losses = []
        for i, (images, target) in enumerate(train_loader):
            # compute output
            output = model(images)
            loss = criterion(output, target)

            # measure accuracy and record loss
            acc1, acc5 = accuracy(output, target, topk=(1, 5))
            losses.append((loss.item(), acc1[0].item(), acc5[0].item()))

            # compute gradient and do SGD step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return losses

    def sanity_check(state_dict, pretrained_weights):
        """
        Linear classifier should not change any weights other than the linear layer.
        This sanity check asserts nothing wrong happens (e.g., BN stats updated).
        """
        checkpoint = torch.load(pretrained_weights, map_location="cpu")
        state_dict_pre = checkpoint['state_dict']

        for k in list(state_dict.keys()):
            # only ignore fc layer
            if 'fc.weight' in k or 'fc.bias' in k:
                continue

            # name in pretrained model
            k_pre = 'module.encoder_q.' + k[len('module.'):] \
                if k.startswith('module.') else 'module.encoder_q.' + k

            assert ((state_dict[k].cpu() == state_dict_pre[k_pre]).all()), \
                '{} is changed in linear classifier training.'.format(k)

    return SimpleNamespace(MoCo=MoCo, SmallCNN=SmallCNN, adjust_learning_rate=adjust_learning_rate,
                           accuracy=accuracy, make_model=make_model, train_iteration=train_iteration,
                           save_checkpoint=save_checkpoint, checkpoint_of=checkpoint_of, resume=resume,
                           make_linear_classifier=make_linear_classifier, train_lincls=train_lincls,
                           sanity_check=sanity_check)
