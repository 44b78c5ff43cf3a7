"""I-JEPA as facebookresearch/ijepa writes it (``src/models/vision_transformer.py``, ``src/masks/multiblock.py``,
``src/masks/utils.py``, ``src/utils/tensors.py``, ``src/utils/schedulers.py``, ``src/utils/logging.py``,
``src/helper.py`` and ``src/train.py``'s ``train_step``) and a top-k sparse autoencoder as openai/sparse_autoencoder
(``model.py``: ``Autoencoder``, ``TopK``; ``train.py``'s ``eps=6.25e-10`` Adam) and EleutherAI/sae (``sae.py``: ``Sae``
with ``W_dec``, the AuxK loss, the unit-norm decoder and its gradient projection; ``utils.py``'s ``eager_decode``;
``trainer.py``'s ``num_tokens_since_fired``) write it, once for ``torch`` being torch or kiln: the program of
``test_porting_probes_ijepa_sae.py``, whose docstring says what it covers and what was adapted."""

from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import contextmanager
import math
from functools import partial
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np


# --- I-JEPA: src/models/vision_transformer.py (NumPy position embeddings) ---------------------------------------------

def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=float)
    grid_w = np.arange(grid_size, dtype=float)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)

    grid = grid.reshape([2, 1, grid_size, grid_size])
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0

    # use half of dimensions to encode grid_h
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)

    emb = np.concatenate([emb_h, emb_w], axis=1)  # (H*W, D)
    return emb


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=float)
    omega /= embed_dim / 2.
    omega = 1. / 10000**omega   # (D/2,)

    pos = pos.reshape(-1)   # (M,)
    out = np.einsum('m,d->md', pos, omega)   # (M, D/2), outer product

    emb_sin = np.sin(out)  # (M, D/2)
    emb_cos = np.cos(out)  # (M, D/2)

    emb = np.concatenate([emb_sin, emb_cos], axis=1)  # (M, D)
    return emb


def ijepa(torch, nn, F):
    """The repository's modules and helpers, closed over ``torch``."""

    # ------------------------------------------------------------ src/utils/tensors.py, src/masks/utils.py
    def _no_grad_trunc_normal_(tensor, mean, std, a, b):
        # Cut & paste from PyTorch official master until it's in a few official releases - RW
        def norm_cdf(x):
            # Computes standard normal cumulative distribution function
            return (1. + math.erf(x / math.sqrt(2.))) / 2.

        with torch.no_grad():
            l = norm_cdf((a - mean) / std)  # noqa: E741 (as tensors.py writes it)
            u = norm_cdf((b - mean) / std)
            tensor.uniform_(2 * l - 1, 2 * u - 1)
            tensor.erfinv_()
            tensor.mul_(std * math.sqrt(2.))
            tensor.add_(mean)
            tensor.clamp_(min=a, max=b)
            return tensor

    def trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
        # type: (Tensor, float, float, float, float) -> Tensor
        return _no_grad_trunc_normal_(tensor, mean, std, a, b)

    def apply_masks(x, masks):
        """
        :param x: tensor of shape [B (batch-size), N (num-patches), D (feature-dim)]
        :param masks: list of tensors containing indices of patches in [N] to keep
        """
        all_x = []
        for m in masks:
            mask_keep = m.unsqueeze(-1).repeat(1, 1, x.size(-1))
            all_x += [torch.gather(x, dim=1, index=mask_keep)]
        return torch.cat(all_x, dim=0)

    def repeat_interleave_batch(x, B, repeat):
        N = len(x) // B
        x = torch.cat([
            torch.cat([x[i*B:(i+1)*B] for _ in range(repeat)], dim=0)
            for i in range(N)
        ], dim=0)
        return x

    # ------------------------------------------------------------ src/models/vision_transformer.py
    def drop_path(x, drop_prob: float = 0., training: bool = False):
        if drop_prob == 0. or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # work with diff dim tensors, not just 2D ConvNets
        random_tensor = keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)
        random_tensor.floor_()  # binarize
        output = x.div(keep_prob) * random_tensor
        return output

    class DropPath(nn.Module):
        def __init__(self, drop_prob=None):
            super(DropPath, self).__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return drop_path(x, self.drop_prob, self.training)

    class MLP(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, out_features)
            self.drop = nn.Dropout(drop)

        def forward(self, x):
            x = self.fc1(x)
            x = self.act(x)
            x = self.drop(x)
            x = self.fc2(x)
            x = self.drop(x)
            return x

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim ** -0.5

            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]

            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)

            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            x = self.proj(x)
            x = self.proj_drop(x)
            return x, attn

    class Block(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, qk_scale=None, drop=0., attn_drop=0.,
                     drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = Attention(
                dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = MLP(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

        def forward(self, x, return_attention=False):
            y, attn = self.attn(self.norm1(x))
            if return_attention:
                return attn
            x = x + self.drop_path(y)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x

    class PatchEmbed(nn.Module):
        """ Image to Patch Embedding
        """
        def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
            super().__init__()
            num_patches = (img_size // patch_size) * (img_size // patch_size)
            self.img_size = img_size
            self.patch_size = patch_size
            self.num_patches = num_patches

            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            B, C, H, W = x.shape
            x = self.proj(x).flatten(2).transpose(1, 2)
            return x

    class VisionTransformerPredictor(nn.Module):
        """ Vision Transformer """
        def __init__(self, num_patches, embed_dim=768, predictor_embed_dim=384, depth=6, num_heads=12,
                     mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                     drop_path_rate=0.0, norm_layer=nn.LayerNorm, init_std=0.02, **kwargs):
            super().__init__()
            self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim, bias=True)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # stochastic depth decay rule
            # --
            self.predictor_pos_embed = nn.Parameter(torch.zeros(1, num_patches, predictor_embed_dim),
                                                    requires_grad=False)
            predictor_pos_embed = get_2d_sincos_pos_embed(self.predictor_pos_embed.shape[-1],
                                                          int(num_patches**.5),
                                                          cls_token=False)
            self.predictor_pos_embed.data.copy_(torch.from_numpy(predictor_pos_embed).float().unsqueeze(0))
            # --
            self.predictor_blocks = nn.ModuleList([
                Block(
                    dim=predictor_embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                    qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i],
                    norm_layer=norm_layer)
                for i in range(depth)])
            self.predictor_norm = norm_layer(predictor_embed_dim)
            self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim, bias=True)
            # ------
            self.init_std = init_std
            trunc_normal_(self.mask_token, std=self.init_std)
            self.apply(self._init_weights)
            self.fix_init_weight()

        def fix_init_weight(self):
            def rescale(param, layer_id):
                param.div_(math.sqrt(2.0 * layer_id))

            for layer_id, layer in enumerate(self.predictor_blocks):
                rescale(layer.attn.proj.weight.data, layer_id + 1)
                rescale(layer.mlp.fc2.weight.data, layer_id + 1)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=self.init_std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)
            elif isinstance(m, nn.Conv2d):
                trunc_normal_(m.weight, std=self.init_std)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        def forward(self, x, masks_x, masks):
            assert (masks is not None) and (masks_x is not None), 'Cannot run predictor without mask indices'

            if not isinstance(masks_x, list):
                masks_x = [masks_x]

            if not isinstance(masks, list):
                masks = [masks]

            # -- Batch Size
            B = len(x) // len(masks_x)

            # -- map from encoder-dim to pedictor-dim
            x = self.predictor_embed(x)

            # -- add positional embedding to x tokens
            x_pos_embed = self.predictor_pos_embed.repeat(B, 1, 1)
            x += apply_masks(x_pos_embed, masks_x)

            _, N_ctxt, D = x.shape

            # -- concat mask tokens to x
            pos_embs = self.predictor_pos_embed.repeat(B, 1, 1)
            pos_embs = apply_masks(pos_embs, masks)
            pos_embs = repeat_interleave_batch(pos_embs, B, repeat=len(masks_x))
            # --
            pred_tokens = self.mask_token.repeat(pos_embs.size(0), pos_embs.size(1), 1)
            # --
            pred_tokens += pos_embs
            x = x.repeat(len(masks), 1, 1)
            x = torch.cat([x, pred_tokens], dim=1)

            # -- fwd prop
            for blk in self.predictor_blocks:
                x = blk(x)
            x = self.predictor_norm(x)

            # -- return preds for mask tokens
            x = x[:, N_ctxt:]
            x = self.predictor_proj(x)

            return x

    class VisionTransformer(nn.Module):
        """ Vision Transformer """
        def __init__(self, img_size=[224], patch_size=16, in_chans=3, embed_dim=768, predictor_embed_dim=384,
                     depth=12, predictor_depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
                     drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=nn.LayerNorm, init_std=0.02,
                     **kwargs):
            super().__init__()
            self.num_features = self.embed_dim = embed_dim
            self.num_heads = num_heads
            # --
            self.patch_embed = PatchEmbed(
                img_size=img_size[0],
                patch_size=patch_size,
                in_chans=in_chans,
                embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            # --
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim), requires_grad=False)
            pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1],
                                                int(self.patch_embed.num_patches**.5),
                                                cls_token=False)
            self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
            # --
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # stochastic depth decay rule
            self.blocks = nn.ModuleList([
                Block(
                    dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                    drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer)
                for i in range(depth)])
            self.norm = norm_layer(embed_dim)
            # ------
            self.init_std = init_std
            self.apply(self._init_weights)
            self.fix_init_weight()

        def fix_init_weight(self):
            def rescale(param, layer_id):
                param.div_(math.sqrt(2.0 * layer_id))

            for layer_id, layer in enumerate(self.blocks):
                rescale(layer.attn.proj.weight.data, layer_id + 1)
                rescale(layer.mlp.fc2.weight.data, layer_id + 1)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=self.init_std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)
            elif isinstance(m, nn.Conv2d):
                trunc_normal_(m.weight, std=self.init_std)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        def forward(self, x, masks=None):
            if masks is not None:
                if not isinstance(masks, list):
                    masks = [masks]

            # -- patchify x
            x = self.patch_embed(x)
            B, N, D = x.shape

            # -- add positional embedding to x
            pos_embed = self.interpolate_pos_encoding(x, self.pos_embed)
            x = x + pos_embed

            # -- mask x
            if masks is not None:
                x = apply_masks(x, masks)

            # -- fwd prop
            for i, blk in enumerate(self.blocks):
                x = blk(x)

            if self.norm is not None:
                x = self.norm(x)

            return x

        def interpolate_pos_encoding(self, x, pos_embed):
            npatch = x.shape[1] - 1
            N = pos_embed.shape[1] - 1
            if npatch == N:
                return pos_embed
            class_emb = pos_embed[:, 0]
            pos_embed = pos_embed[:, 1:]
            dim = x.shape[-1]
            pos_embed = nn.functional.interpolate(
                pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
                scale_factor=math.sqrt(npatch / N),
                mode='bicubic',
            )
            pos_embed = pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
            return torch.cat((class_emb.unsqueeze(0), pos_embed), dim=1)

    def vit_predictor(**kwargs):
        model = VisionTransformerPredictor(
            mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            **kwargs)
        return model

    def vit_micro(patch_size=16, **kwargs):
        """``vit_tiny`` (embed_dim 192, depth 12, 3 heads) at a probe's size."""
        model = VisionTransformer(
            patch_size=patch_size, embed_dim=8, depth=1, num_heads=2, mlp_ratio=4,
            qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)
        return model

    # ------------------------------------------------------------ src/helper.py
    def init_model(device, patch_size=16, model_name='vit_base', crop_size=224, pred_depth=6, pred_emb_dim=384):
        encoder = {'vit_micro': vit_micro}[model_name](
            img_size=[crop_size],
            patch_size=patch_size)
        predictor = vit_predictor(
            num_patches=encoder.patch_embed.num_patches,
            embed_dim=encoder.embed_dim,
            predictor_embed_dim=pred_emb_dim,
            depth=pred_depth,
            num_heads=encoder.num_heads)

        def init_weights(m):
            if isinstance(m, torch.nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    torch.nn.init.constant_(m.bias, 0)
            elif isinstance(m, torch.nn.LayerNorm):
                torch.nn.init.constant_(m.bias, 0)
                torch.nn.init.constant_(m.weight, 1.0)

        for m in encoder.modules():
            init_weights(m)

        for m in predictor.modules():
            init_weights(m)

        encoder.to(device)
        predictor.to(device)
        return encoder, predictor

    def init_opt(encoder, predictor, iterations_per_epoch, start_lr, ref_lr, warmup, num_epochs, wd=1e-6,
                 final_wd=1e-6, final_lr=0.0, use_bfloat16=False, ipe_scale=1.25):
        param_groups = [
            {
                'params': (p for n, p in encoder.named_parameters()
                           if ('bias' not in n) and (len(p.shape) != 1))
            }, {
                'params': (p for n, p in predictor.named_parameters()
                           if ('bias' not in n) and (len(p.shape) != 1))
            }, {
                'params': (p for n, p in encoder.named_parameters()
                           if ('bias' in n) or (len(p.shape) == 1)),
                'WD_exclude': True,
                'weight_decay': 0
            }, {
                'params': (p for n, p in predictor.named_parameters()
                           if ('bias' in n) or (len(p.shape) == 1)),
                'WD_exclude': True,
                'weight_decay': 0
            }
        ]

        optimizer = torch.optim.AdamW(param_groups)
        scheduler = WarmupCosineSchedule(
            optimizer,
            warmup_steps=int(warmup*iterations_per_epoch),
            start_lr=start_lr,
            ref_lr=ref_lr,
            final_lr=final_lr,
            T_max=int(ipe_scale*num_epochs*iterations_per_epoch))
        wd_scheduler = CosineWDSchedule(
            optimizer,
            ref_wd=wd,
            final_wd=final_wd,
            T_max=int(ipe_scale*num_epochs*iterations_per_epoch))
        scaler = torch.cuda.amp.GradScaler() if use_bfloat16 else None
        return optimizer, scaler, scheduler, wd_scheduler

    # ------------------------------------------------------------ src/utils/logging.py
    class AverageMeter(object):
        """computes and stores the average and current value"""

        def __init__(self):
            self.reset()

        def reset(self):
            self.val = 0
            self.avg = 0
            self.max = float('-inf')
            self.min = float('inf')
            self.sum = 0
            self.count = 0

        def update(self, val, n=1):
            self.val = val
            try:
                self.max = max(val, self.max)
                self.min = min(val, self.min)
            except Exception:
                pass
            self.sum += val * n
            self.count += n
            self.avg = self.sum / self.count

    def grad_logger(named_params):
        stats = AverageMeter()
        stats.first_layer = None
        stats.last_layer = None
        for n, p in named_params:
            if (p.grad is not None) and not (n.endswith('.bias') or len(p.shape) == 1):
                grad_norm = float(torch.norm(p.grad.data))
                stats.update(grad_norm)
                if 'qkv' in n:
                    stats.last_layer = grad_norm
                    if stats.first_layer is None:
                        stats.first_layer = grad_norm
        if stats.first_layer is None or stats.last_layer is None:
            stats.first_layer = stats.last_layer = 0.
        return stats

    return SimpleNamespace(**{name: value for name, value in locals().items() if not name.startswith("_")},
                           MaskCollator=mask_collator_class(torch), WarmupCosineSchedule=WarmupCosineSchedule,
                           CosineWDSchedule=CosineWDSchedule)


# --- I-JEPA: src/utils/schedulers.py -----------------------------------------------------------------------------------

class WarmupCosineSchedule(object):

    def __init__(self, optimizer, warmup_steps, start_lr, ref_lr, T_max, last_epoch=-1, final_lr=0.):
        self.optimizer = optimizer
        self.start_lr = start_lr
        self.ref_lr = ref_lr
        self.final_lr = final_lr
        self.warmup_steps = warmup_steps
        self.T_max = T_max - warmup_steps
        self._step = 0.

    def step(self):
        self._step += 1
        if self._step < self.warmup_steps:
            progress = float(self._step) / float(max(1, self.warmup_steps))
            new_lr = self.start_lr + progress * (self.ref_lr - self.start_lr)
        else:
            # -- progress after warmup
            progress = float(self._step - self.warmup_steps) / float(max(1, self.T_max))
            new_lr = max(self.final_lr,
                         self.final_lr + (self.ref_lr - self.final_lr) * 0.5 * (1. + math.cos(math.pi * progress)))

        for group in self.optimizer.param_groups:
            group['lr'] = new_lr

        return new_lr


class CosineWDSchedule(object):

    def __init__(self, optimizer, ref_wd, T_max, final_wd=0.):
        self.optimizer = optimizer
        self.ref_wd = ref_wd
        self.final_wd = final_wd
        self.T_max = T_max
        self._step = 0.

    def step(self):
        self._step += 1
        progress = self._step / self.T_max
        new_wd = self.final_wd + (self.ref_wd - self.final_wd) * 0.5 * (1. + math.cos(math.pi * progress))

        if self.final_wd <= self.ref_wd:
            new_wd = max(self.final_wd, new_wd)
        else:
            new_wd = min(self.final_wd, new_wd)

        for group in self.optimizer.param_groups:
            if ('WD_exclude' not in group) or not group['WD_exclude']:
                group['weight_decay'] = new_wd
        return new_wd


# --- I-JEPA: src/masks/multiblock.py (without the worker-shared ``multiprocessing.Value`` counter) ----------------------

def mask_collator_class(torch):
    """``MaskCollator``: block sizes from a ``torch.Generator`` seeded by the iteration, block corners from
    ``torch.randint``, ``torch.nonzero(mask.flatten())`` and ``default_collate`` of the index lists."""

    class MaskCollator(object):

        def __init__(self, input_size=(224, 224), patch_size=16, enc_mask_scale=(0.2, 0.8),
                     pred_mask_scale=(0.2, 0.8), aspect_ratio=(0.3, 3.0), nenc=1, npred=2, min_keep=4,
                     allow_overlap=False):
            super(MaskCollator, self).__init__()
            if not isinstance(input_size, tuple):
                input_size = (input_size, ) * 2
            self.patch_size = patch_size
            self.height, self.width = input_size[0] // patch_size, input_size[1] // patch_size
            self.enc_mask_scale = enc_mask_scale
            self.pred_mask_scale = pred_mask_scale
            self.aspect_ratio = aspect_ratio
            self.nenc = nenc
            self.npred = npred
            self.min_keep = min_keep  # minimum number of patches to keep
            self.allow_overlap = allow_overlap  # whether to allow overlap b/w enc and pred masks
            self._itr_counter = -1  # collator is shared across worker processes

        def step(self):
            self._itr_counter += 1
            return self._itr_counter

        def _sample_block_size(self, generator, scale, aspect_ratio_scale):
            _rand = torch.rand(1, generator=generator).item()
            # -- Sample block scale
            min_s, max_s = scale
            mask_scale = min_s + _rand * (max_s - min_s)
            max_keep = int(self.height * self.width * mask_scale)
            # -- Sample block aspect-ratio
            min_ar, max_ar = aspect_ratio_scale
            aspect_ratio = min_ar + _rand * (max_ar - min_ar)
            # -- Compute block height and width (given scale and aspect-ratio)
            h = int(round(math.sqrt(max_keep * aspect_ratio)))
            w = int(round(math.sqrt(max_keep / aspect_ratio)))
            while h >= self.height:
                h -= 1
            while w >= self.width:
                w -= 1

            return (h, w)

        def _sample_block_mask(self, b_size, acceptable_regions=None):
            h, w = b_size

            def constrain_mask(mask, tries=0):
                """ Helper to restrict given mask to a set of acceptable regions """
                N = max(int(len(acceptable_regions)-tries), 0)
                for k in range(N):
                    mask *= acceptable_regions[k]
            # --
            # -- Loop to sample masks until we find a valid one
            tries = 0
            timeout = og_timeout = 20
            valid_mask = False
            while not valid_mask:
                # -- Sample block top-left corner
                top = torch.randint(0, self.height - h, (1,))
                left = torch.randint(0, self.width - w, (1,))
                mask = torch.zeros((self.height, self.width), dtype=torch.int32)
                mask[top:top+h, left:left+w] = 1
                # -- Constrain mask to a set of acceptable regions
                if acceptable_regions is not None:
                    constrain_mask(mask, tries)
                mask = torch.nonzero(mask.flatten())
                # -- If mask too small try again
                valid_mask = len(mask) > self.min_keep
                if not valid_mask:
                    timeout -= 1
                    if timeout == 0:
                        tries += 1
                        timeout = og_timeout
            mask = mask.squeeze()
            # --
            mask_complement = torch.ones((self.height, self.width), dtype=torch.int32)
            mask_complement[top:top+h, left:left+w] = 0
            # --
            return mask, mask_complement

        def __call__(self, batch):
            B = len(batch)

            collated_batch = torch.utils.data.default_collate(batch)

            seed = self.step()
            g = torch.Generator()
            g.manual_seed(seed)
            p_size = self._sample_block_size(
                generator=g,
                scale=self.pred_mask_scale,
                aspect_ratio_scale=self.aspect_ratio)
            e_size = self._sample_block_size(
                generator=g,
                scale=self.enc_mask_scale,
                aspect_ratio_scale=(1., 1.))

            collated_masks_pred, collated_masks_enc = [], []
            min_keep_pred = self.height * self.width
            min_keep_enc = self.height * self.width
            for _ in range(B):

                masks_p, masks_C = [], []
                for _ in range(self.npred):
                    mask, mask_C = self._sample_block_mask(p_size)
                    masks_p.append(mask)
                    masks_C.append(mask_C)
                    min_keep_pred = min(min_keep_pred, len(mask))
                collated_masks_pred.append(masks_p)

                acceptable_regions = masks_C
                if self.allow_overlap:
                    acceptable_regions = None

                masks_e = []
                for _ in range(self.nenc):
                    mask, _ = self._sample_block_mask(e_size, acceptable_regions=acceptable_regions)
                    masks_e.append(mask)
                    min_keep_enc = min(min_keep_enc, len(mask))
                collated_masks_enc.append(masks_e)

            collated_masks_pred = [[cm[:min_keep_pred] for cm in cm_list] for cm_list in collated_masks_pred]
            collated_masks_pred = torch.utils.data.default_collate(collated_masks_pred)
            # --
            collated_masks_enc = [[cm[:min_keep_enc] for cm in cm_list] for cm_list in collated_masks_enc]
            collated_masks_enc = torch.utils.data.default_collate(collated_masks_enc)

            return collated_batch, collated_masks_enc, collated_masks_pred

    return MaskCollator


# --- I-JEPA: src/train.py ----------------------------------------------------------------------------------------------

IJEPA_ARGS = dict(
    meta=dict(use_bfloat16=False, model_name='vit_micro', pred_depth=1, pred_emb_dim=8),
    mask=dict(allow_overlap=False, patch_size=2, num_enc_masks=1, min_keep=3, enc_mask_scale=(0.85, 1.0),
              num_pred_masks=2, pred_mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5)),
    data=dict(batch_size=2, crop_size=12),
    optimization=dict(ema=[0.996, 1.0], ipe_scale=1.0, weight_decay=0.04, final_weight_decay=0.4, epochs=2,
                      warmup=1, start_lr=0.0002, lr=0.001, final_lr=1e-06))


class IJepaRun:
    """train.py's ``main`` set-up (``init_model``, the target encoder a ``copy.deepcopy`` frozen by ``requires_grad =
    False``, ``MaskCollator``, ``init_opt``, the momentum generator) and its ``train_step``."""

    def __init__(self, torch, nn, F, args=IJEPA_ARGS, ipe=2):
        self.torch, self.F = torch, F
        self.J = J = ijepa(torch, nn, F)
        meta, mask, optimization = args['meta'], args['mask'], args['optimization']
        crop_size = args['data']['crop_size']
        self.encoder, self.predictor = J.init_model(
            device=torch.device('cpu'), patch_size=mask['patch_size'], crop_size=crop_size,
            pred_depth=meta['pred_depth'], pred_emb_dim=meta['pred_emb_dim'], model_name=meta['model_name'])
        self.target_encoder = copy.deepcopy(self.encoder)
        self.mask_collator = J.MaskCollator(
            input_size=crop_size, patch_size=mask['patch_size'], pred_mask_scale=mask['pred_mask_scale'],
            enc_mask_scale=mask['enc_mask_scale'], aspect_ratio=mask['aspect_ratio'], nenc=mask['num_enc_masks'],
            npred=mask['num_pred_masks'], allow_overlap=mask['allow_overlap'], min_keep=mask['min_keep'])
        ema, ipe_scale, num_epochs = optimization['ema'], optimization['ipe_scale'], optimization['epochs']
        self.optimizer, self.scaler, self.scheduler, self.wd_scheduler = J.init_opt(
            encoder=self.encoder, predictor=self.predictor, wd=float(optimization['weight_decay']),
            final_wd=float(optimization['final_weight_decay']), start_lr=optimization['start_lr'],
            ref_lr=optimization['lr'], final_lr=optimization['final_lr'], iterations_per_epoch=ipe,
            warmup=optimization['warmup'], num_epochs=num_epochs, ipe_scale=ipe_scale,
            use_bfloat16=meta['use_bfloat16'])
        for p in self.target_encoder.parameters():
            p.requires_grad = False
        # -- momentum schedule
        self.momentum_scheduler = (ema[0] + i*(ema[1]-ema[0])/(ipe*num_epochs*ipe_scale)
                                   for i in range(int(ipe*num_epochs*ipe_scale)+1))

    def forward_target(self, imgs, masks_enc, masks_pred):
        torch, F, J = self.torch, self.F, self.J
        with torch.no_grad():
            h = self.target_encoder(imgs)
            h = F.layer_norm(h, (h.size(-1),))  # normalize over feature-dim
            B = len(h)
            # -- create targets (masked regions of h)
            h = J.apply_masks(h, masks_pred)
            h = J.repeat_interleave_batch(h, B, repeat=len(masks_enc))
            return h

    def forward_context(self, imgs, masks_enc, masks_pred):
        z = self.encoder(imgs, masks_enc)
        z = self.predictor(z, masks_enc, masks_pred)
        return z

    def loss_fn(self, z, h):
        loss = self.F.smooth_l1_loss(z, h)
        return loss  # AllReduce.apply(loss) is the identity on one process

    def momentum_update(self, m):
        """Step 3: the target encoder's EMA."""
        with self.torch.no_grad():
            for param_q, param_k in zip(self.encoder.parameters(), self.target_encoder.parameters()):
                param_k.data.mul_(m).add_((1.-m) * param_q.detach().data)

    def train_step(self, imgs, masks_enc, masks_pred, record=None):
        """train.py's ``train_step`` (``use_bfloat16`` off): the schedulers, the target, the context, smooth L1, backward,
        AdamW, ``grad_logger``, ``zero_grad`` and the EMA with ``next(momentum_scheduler)``."""
        _new_lr = self.scheduler.step()
        _new_wd = self.wd_scheduler.step()
        h = self.forward_target(imgs, masks_enc, masks_pred)
        z = self.forward_context(imgs, masks_enc, masks_pred)
        loss = self.loss_fn(z, h)
        loss.backward()
        if record is not None and "grads" not in record:
            record["grads"] = {name: p.grad.detach().clone() for name, p in
                               [*self.encoder.named_parameters(), *self.predictor.named_parameters()]
                               if p.grad is not None}
        self.optimizer.step()
        grad_stats = self.J.grad_logger(self.encoder.named_parameters())
        self.optimizer.zero_grad()
        self.momentum_update(next(self.momentum_scheduler))
        return (float(loss), _new_lr, _new_wd, grad_stats)


# --- top-k SAE: openai/sparse_autoencoder model.py and EleutherAI/sae sae.py ------------------------------------------

def topk_sae(torch, nn, F):
    """openai's ``TopK`` activation and ``Autoencoder`` (``pre_bias``, ``latent_bias``, the ``stats_last_nonzero``
    buffer), with EleutherAI's ``W_dec`` parameter, unit-norm decoder, gradient projection and AuxK loss; the decoder
    three ways: openai's ``decoder`` ``nn.Linear`` on the dense latents, EleutherAI's ``eager_decode`` (``scatter_``
    into ``new_zeros`` and ``@ W_dec.mT``) and ``F.embedding_bag`` with ``per_sample_weights``."""

    class TopK(nn.Module):
        def __init__(self, k: int, postact_fn=nn.ReLU()) -> None:
            super().__init__()
            self.k = k
            self.postact_fn = postact_fn

        def forward(self, x):
            topk = torch.topk(x, k=self.k, dim=-1)
            values = self.postact_fn(topk.values)
            # make all other values 0
            result = torch.zeros_like(x)
            result.scatter_(-1, topk.indices, values)
            return result

    def eager_decode(top_indices, top_acts, W_dec):
        buf = top_acts.new_zeros(top_acts.shape[:-1] + (W_dec.shape[-1],))
        acts = buf.scatter_(dim=-1, index=top_indices, src=top_acts)
        return acts @ W_dec.mT

    def embedding_bag_decode(top_indices, top_acts, W_dec):
        return F.embedding_bag(top_indices, W_dec.mT, per_sample_weights=top_acts, mode="sum")

    class ForwardOutput(NamedTuple):
        sae_out: object
        latents_pre_act: object
        latents: object
        fvu: object
        auxk_loss: object

    class Autoencoder(nn.Module):
        """Sparse autoencoder

        Implements:
            latents = activation(encoder(x - pre_bias) + latent_bias)
            recons = decoder(latents) + pre_bias
        """

        def __init__(self, n_latents: int, n_inputs: int, k: int, decoder_impl: str = "linear") -> None:
            super().__init__()

            self.pre_bias = nn.Parameter(torch.zeros(n_inputs))
            self.encoder: nn.Module = nn.Linear(n_inputs, n_latents, bias=False)
            self.latent_bias = nn.Parameter(torch.zeros(n_latents))
            self.activation = TopK(k)
            self.k = k
            self.W_dec = nn.Parameter(self.encoder.weight.data.clone())
            self.set_decoder_norm_to_unit_norm()
            self.decoder_impl = decoder_impl

            self.stats_last_nonzero: torch.Tensor
            self.register_buffer("stats_last_nonzero", torch.zeros(n_latents, dtype=torch.long))

        def encode_pre_act(self, x, latent_slice: slice = slice(None)):
            x = x - self.pre_bias
            latents_pre_act = F.linear(
                x, self.encoder.weight[latent_slice], self.latent_bias[latent_slice]
            )
            return latents_pre_act

        def decode(self, latents):
            if self.decoder_impl == "linear":
                return F.linear(latents, self.W_dec.t()) + self.pre_bias
            topk = torch.topk(latents, k=self.k, dim=-1)
            decode = eager_decode if self.decoder_impl == "eager" else embedding_bag_decode
            return decode(topk.indices, topk.values, self.W_dec.mT) + self.pre_bias

        def decode_sparse(self, top_indices, top_acts):
            return eager_decode(top_indices, top_acts, self.W_dec.mT) + self.pre_bias

        def forward(self, x, dead_mask=None, auxk=None):
            latents_pre_act = self.encode_pre_act(x)
            latents = self.activation(latents_pre_act)
            recons = self.decode(latents)

            # set all indices of self.stats_last_nonzero where (latents != 0) to 0
            self.stats_last_nonzero *= (latents == 0).all(dim=0).long()
            self.stats_last_nonzero += 1

            e = recons - x
            fvu = ((recons - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean()
            if dead_mask is not None:
                # Don't include living latents in this loss
                auxk_latents = torch.where(dead_mask[None], latents_pre_act, -torch.inf)
                # Top-k dead latents
                auxk_acts, auxk_indices = auxk_latents.topk(auxk, sorted=False)
                auxk_acts = torch.relu(auxk_acts)
                e_hat = self.decode_sparse(auxk_indices, auxk_acts) - self.pre_bias
                auxk_loss = (e_hat - e.detach()).pow(2).sum(-1)
                auxk_loss = torch.mean(auxk_loss / (x - x.mean(0)).pow(2).sum(-1))
            else:
                auxk_loss = recons.new_tensor(0.0)
            return ForwardOutput(recons, latents_pre_act, latents, fvu, auxk_loss)

        @torch.no_grad()
        def set_decoder_norm_to_unit_norm(self):
            eps = torch.finfo(self.W_dec.dtype).eps
            self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True) + eps

        @torch.no_grad()
        def remove_gradient_parallel_to_decoder_directions(self):
            assert self.W_dec.grad is not None  # keep pyright happy

            parallel_component = torch.einsum("... d, ... d -> ...", self.W_dec.grad, self.W_dec.data)
            self.W_dec.grad -= torch.einsum("..., ... d -> ... d", parallel_component, self.W_dec.data)

    return SimpleNamespace(TopK=TopK, Autoencoder=Autoencoder, eager_decode=eager_decode,
                           embedding_bag_decode=embedding_bag_decode)


SAE_LATENTS, SAE_INPUTS, SAE_K, SAE_AUXK, SAE_BATCH = 24, 8, 3, 4, 6
DEAD_THRESHOLD, AUXK_ALPHA = 6, 1 / 32


class SaeRun:
    """The training loop: openai's Adam (``eps=6.25e-10``), EleutherAI's unit-norm decoder before each step,
    ``dead_mask = num_tokens_since_fired > dead_feature_threshold``, ``loss = fvu + auxk_alpha * auxk_loss``, the
    gradient projection before ``optimizer.step()``, ``did_fire[latent_indices.flatten()] = True`` and the
    ``num_tokens_since_fired`` bookkeeping under ``no_grad``."""

    def __init__(self, torch, nn, F, sae, lr=1e-2):
        self.torch, self.sae = torch, sae
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr, eps=6.25e-10)
        self.num_tokens_since_fired = torch.zeros(SAE_LATENTS, dtype=torch.long)
        self.did_fire = torch.zeros(SAE_LATENTS, dtype=torch.bool)

    def step(self, x, record=None):
        torch, sae = self.torch, self.sae
        # Make sure the W_dec is still unit-norm
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x, dead_mask=self.num_tokens_since_fired > DEAD_THRESHOLD, auxk=SAE_AUXK)
        loss = out.fvu + AUXK_ALPHA * out.auxk_loss
        loss.backward()
        # Update the did_fire mask
        topk = torch.topk(out.latents_pre_act, k=sae.k, dim=-1)
        self.did_fire[topk.indices.flatten()] = True
        if record is not None and "grads" not in record:
            record["grads"] = {name: p.grad.detach().clone() for name, p in sae.named_parameters()}
        sae.remove_gradient_parallel_to_decoder_directions()
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            self.num_tokens_since_fired += len(x)
            self.num_tokens_since_fired[self.did_fire] = 0
            self.did_fire.zero_()
        return loss, out.fvu, out.auxk_loss


# --- top-k SAE: openai/sparse_autoencoder train.py (FastAutoencoder) with kernels.py's references ---------------------

def openai_fast_sae(torch, nn, F, fp32=True):
    """train.py's ``FastAutoencoder`` (its ``EncWrapper`` autograd Function defined in ``forward``, the
    ``stats_last_nonzero`` update by ``scatter_add_`` inside it, ``auxk_mask_fn``'s ``x.data *= dead_mask``),
    ``unit_norm_decoder_``, ``unit_norm_decoder_grad_adjustment_``, ``sharded_grad_norm``, ``EmaModel`` and
    ``training_loop_``, with kernels.py's Triton kernels replaced by the dense computations their docstrings state (the
    ``K > 512`` path of ``triton_dense_dense_sparseout_matmul`` is the repository's own). ``fp32=False`` (the float64
    runs) makes the kernels' float32 casts (``.float()``, ``dtype=torch.float32``) keep the default dtype."""

    def fp32_(tensor):
        return tensor.float() if fp32 else tensor

    # ---------------------------------------------------------------- kernels.py (Triton kernels as their references)
    def triton_sparse_transpose_dense_matmul(sparse_indices, sparse_values, dense, N, BLOCK_SIZE_AK=128):
        """calculates sparse.T @ dense (i.e reducing along the collated dimension of sparse)"""
        K = sparse_indices.shape[1]
        A = dense.shape[0]
        # COO-format and sorted
        sorted_indices = sparse_indices.view(-1).sort()
        coo_indices = torch.stack(
            [
                torch.arange(A, device=sparse_indices.device).repeat_interleave(K)[
                    sorted_indices.indices
                ],
                sorted_indices.values,
            ]
        )  # shape (2, A * K)
        coo_values = sparse_values.view(-1)[sorted_indices.indices]  # shape (A * K,)
        out = torch.zeros(N, dense.shape[1], device=dense.device, dtype=coo_values.dtype)
        return out.index_add_(0, coo_indices[1], coo_values[:, None] * dense[coo_indices[0]])

    def triton_sparse_dense_matmul(sparse_indices, sparse_values, dense):
        """calculates sparse @ dense (i.e reducing along the uncollated dimension of sparse)"""
        N = dense.shape[0]
        A = sparse_indices.shape[0]
        sparse = torch.zeros(A, N, device=dense.device, dtype=sparse_values.dtype)
        return sparse.scatter_(1, sparse_indices, sparse_values) @ dense

    def triton_dense_dense_sparseout_matmul(dense1, dense2, at_indices):
        """equivalent to (dense1 @ dense2).gather(1, at_indices)"""
        return (dense1 @ dense2).gather(1, at_indices)

    class TritonDecoderAutograd(torch.autograd.Function):
        @staticmethod
        def forward(ctx, sparse_indices, sparse_values, decoder_weight):
            ctx.save_for_backward(sparse_indices, sparse_values, decoder_weight)
            return triton_sparse_dense_matmul(sparse_indices, sparse_values, decoder_weight.T)

        @staticmethod
        def backward(ctx, grad_output):
            sparse_indices, sparse_values, decoder_weight = ctx.saved_tensors

            assert grad_output.is_contiguous(), "grad_output must be contiguous"

            decoder_grad = triton_sparse_transpose_dense_matmul(
                sparse_indices, sparse_values, grad_output, N=decoder_weight.shape[1]
            ).T

            return (
                None,
                triton_dense_dense_sparseout_matmul(grad_output, decoder_weight, sparse_indices),
                # decoder is contiguous when transposed so this is a matching layout
                decoder_grad,
                None,
            )

    def triton_add_mul_(x, a, b, c):
        """does x += a * b * c"""
        if len(a.shape) == 1:
            a = a[None, :].broadcast_to(x.shape)

        if len(b.shape) == 1:
            b = b[None, :].broadcast_to(x.shape)

        assert x.shape == a.shape == b.shape
        x += a * b * c

    def mse(output, target):  # fusing fp32 cast and MSE to save memory
        assert output.shape == target.shape
        assert len(output.shape) == 2
        assert output.stride(1) == 1
        assert target.stride(1) == 1

        a, b = output.shape

        class _MSE(torch.autograd.Function):
            @staticmethod
            def forward(ctx, output, target):
                ctx.save_for_backward(output, target)
                return ((fp32_(output) - fp32_(target)) * (fp32_(output) - fp32_(target))).sum(-1) / b

            @staticmethod
            def backward(ctx, grad_output):
                output, target = ctx.saved_tensors
                res = fp32_(output - target)
                res *= grad_output[:, None] * 2 / b
                return res, None

        return _MSE.apply(output, target).mean()

    def normalized_mse(recon, xs):
        # only used for auxk
        xs_mu = xs.mean(dim=0)

        loss = mse(recon, xs) / mse(
            xs_mu[None, :].broadcast_to(xs.shape), xs
        )

        return loss

    # ---------------------------------------------------------------- train.py (one process: TRIVIAL_COMMS)
    def sharded_topk(x, k, sh_comm, capacity_factor=None):
        if capacity_factor is not None:
            k_in = min(int(k * capacity_factor // 1), k)
        else:
            k_in = k

        topk = torch.topk(x, k=k_in, dim=-1)
        inds = topk.indices
        vals = topk.values

        assert sh_comm is None
        return inds, vals

    class FastAutoencoder(nn.Module):
        """
        Top-K Autoencoder with sparse kernels. Implements:

            latents = relu(topk(encoder(x - pre_bias) + latent_bias))
            recons = decoder(latents) + pre_bias
        """

        def __init__(self, n_dirs_local: int, d_model: int, k: int, auxk, dead_steps_threshold: int):
            super().__init__()
            self.n_dirs_local = n_dirs_local
            self.d_model = d_model
            self.k = k
            self.auxk = auxk
            self.dead_steps_threshold = dead_steps_threshold

            self.encoder = nn.Linear(d_model, n_dirs_local, bias=False)
            self.decoder = nn.Linear(n_dirs_local, d_model, bias=False)

            self.pre_bias = nn.Parameter(torch.zeros(d_model))
            self.latent_bias = nn.Parameter(torch.zeros(n_dirs_local))

            self.stats_last_nonzero: torch.Tensor
            self.register_buffer("stats_last_nonzero", torch.zeros(n_dirs_local, dtype=torch.long))

            def auxk_mask_fn(x):
                dead_mask = self.stats_last_nonzero > dead_steps_threshold
                x.data *= dead_mask  # inplace to save memory
                return x

            self.auxk_mask_fn = auxk_mask_fn

            ## initialization

            # "tied" init
            self.decoder.weight.data = self.encoder.weight.data.T.clone()

            # store decoder in column major layout for kernel
            self.decoder.weight.data = self.decoder.weight.data.T.contiguous().T

            unit_norm_decoder_(self)

        def forward(self, x):
            class EncWrapper(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x, pre_bias, weight, latent_bias):
                    x = x - pre_bias
                    latents_pre_act = F.linear(x, weight, latent_bias)

                    inds, vals = sharded_topk(
                        latents_pre_act,
                        k=self.k,
                        sh_comm=None,
                        capacity_factor=4,
                    )

                    ## set num nonzero stat ##
                    tmp = torch.zeros_like(self.stats_last_nonzero)
                    tmp.scatter_add_(
                        0,
                        inds.reshape(-1),
                        (vals > 1e-3).to(tmp.dtype).reshape(-1),
                    )
                    self.stats_last_nonzero *= 1 - tmp.clamp(max=1)
                    self.stats_last_nonzero += 1
                    ## end stats ##

                    ## auxk
                    if self.auxk is not None:  # for auxk
                        # IMPORTANT: has to go after stats update!
                        # WARN: auxk_mask_fn can mutate latents_pre_act!
                        auxk_inds, auxk_vals = sharded_topk(
                            self.auxk_mask_fn(latents_pre_act),
                            k=self.auxk,
                            sh_comm=None,
                            capacity_factor=2,
                        )
                        ctx.save_for_backward(x, weight, inds, auxk_inds)
                    else:
                        ctx.save_for_backward(x, weight, inds)
                        auxk_inds = None
                        auxk_vals = None

                    ## end auxk

                    return (
                        inds,
                        vals,
                        auxk_inds,
                        auxk_vals,
                    )

                @staticmethod
                def backward(ctx, _, grad_vals, __, grad_auxk_vals):
                    # encoder backwards
                    if self.auxk is not None:
                        x, weight, inds, auxk_inds = ctx.saved_tensors

                        all_inds = torch.cat((inds, auxk_inds), dim=-1)
                        all_grad_vals = torch.cat((grad_vals, grad_auxk_vals), dim=-1)
                    else:
                        x, weight, inds = ctx.saved_tensors

                        all_inds = inds
                        all_grad_vals = grad_vals

                    grad_sum = torch.zeros(self.n_dirs_local, dtype=grad_vals.dtype, device=grad_vals.device)
                    grad_sum.scatter_add_(
                        -1, all_inds.flatten(), all_grad_vals.flatten().to(grad_vals.dtype)
                    )

                    return (
                        None,
                        # pre_bias grad optimization - can reduce before mat-vec multiply
                        -(grad_sum @ weight),
                        triton_sparse_transpose_dense_matmul(all_inds, all_grad_vals, x, N=self.n_dirs_local),
                        grad_sum,
                    )

            pre_bias = self.pre_bias

            # encoder
            inds, vals, auxk_inds, auxk_vals = EncWrapper.apply(
                x, pre_bias, self.encoder.weight, self.latent_bias
            )

            vals = torch.relu(vals)
            if auxk_vals is not None:
                auxk_vals = torch.relu(auxk_vals)

            recons = self.decode_sparse(inds, vals)

            return recons, {
                "auxk_inds": auxk_inds,
                "auxk_vals": auxk_vals,
            }

        def decode_sparse(self, inds, vals):
            recons = TritonDecoderAutograd.apply(inds, vals, self.decoder.weight)

            return recons + self.pre_bias

    def unit_norm_decoder_(autoencoder) -> None:
        """
        Unit normalize the decoder weights of an autoencoder.
        """
        autoencoder.decoder.weight.data /= autoencoder.decoder.weight.data.norm(dim=0)

    def unit_norm_decoder_grad_adjustment_(autoencoder) -> None:
        """project out gradient information parallel to the dictionary vectors - assumes that the decoder is already
        unit normed"""

        assert autoencoder.decoder.weight.grad is not None

        triton_add_mul_(
            autoencoder.decoder.weight.grad,
            torch.einsum("bn,bn->n", autoencoder.decoder.weight.data, autoencoder.decoder.weight.grad),
            autoencoder.decoder.weight.data,
            c=-1,
        )

    def sharded_grad_norm(autoencoder, exclude=None):
        if exclude is None:
            exclude = []
        total_sq_norm = torch.zeros((), device="cpu", dtype=torch.float32 if fp32 else None)
        exclude = set(exclude)

        for param in autoencoder.parameters():
            if param in exclude:
                continue
            if param.grad is not None:
                sq_norm = (fp32_(param.grad) ** 2).sum()
                total_sq_norm += sq_norm  # one shard: comms.sh_sum is the identity
        return total_sq_norm.sqrt()

    class EmaModel:
        def __init__(self, model, ema_multiplier):
            self.model = model
            self.ema_multiplier = ema_multiplier
            self.ema_weights = [torch.zeros_like(x, requires_grad=False) for x in model.parameters()]
            self.ema_steps = 0

        def step(self):
            torch._foreach_lerp_(
                self.ema_weights,
                list(self.model.parameters()),
                1 - self.ema_multiplier,
            )
            self.ema_steps += 1

        # context manager for setting the autoencoder weights to the EMA weights
        @contextmanager
        def use_ema_weights(self):
            assert self.ema_steps > 0

            # apply bias correction
            bias_correction = 1 - self.ema_multiplier**self.ema_steps
            ema_weights_bias_corrected = torch._foreach_div(self.ema_weights, bias_correction)

            with torch.no_grad():
                with temporary_weight_swap(self.model, ema_weights_bias_corrected):
                    yield

    @contextmanager
    def temporary_weight_swap(model, new_weights):
        for _p, new_p in zip(model.parameters(), new_weights, strict=True):
            assert _p.shape == new_p.shape
            _p.data, new_p.data = new_p.data, _p.data

        yield

        for _p, new_p in zip(model.parameters(), new_weights, strict=True):
            assert _p.shape == new_p.shape
            _p.data, new_p.data = new_p.data, _p.data

    def loss_fn(ae, flat_acts_train_batch, recons, info, mse_scale, auxk_coef):
        """main()'s loss lambda (the logger's ``logkv`` returns its value)."""
        return (
            # MSE
            mse_scale * mse(recons, flat_acts_train_batch)
            # AuxK
            + auxk_coef
            * normalized_mse(
                ae.decode_sparse(
                    info["auxk_inds"],
                    info["auxk_vals"],
                ),
                flat_acts_train_batch - recons.detach() + ae.pre_bias.detach(),
            ).nan_to_num(0)
        )

    def training_step(ae, opt, ema, flat_acts_train_batch, mse_scale, auxk_coef, clip_grad):
        """One iteration of ``training_loop_`` (no GradScaler, autocast nor data-parallel all-reduce: one CPU
        process)."""
        recons, info = ae(flat_acts_train_batch)
        loss = loss_fn(ae, flat_acts_train_batch, recons, info, mse_scale, auxk_coef)
        loss.backward()

        unit_norm_decoder_(ae)
        unit_norm_decoder_grad_adjustment_(ae)

        # gradient clipping
        if clip_grad is not None:
            grad_norm = sharded_grad_norm(ae)
            grads = [x.grad for x in ae.parameters() if x.grad is not None]
            torch._foreach_mul_(grads, clip_grad / torch.clamp(grad_norm, min=clip_grad))

        if ema is not None:
            ema.step()

        # take step with optimizer (training_loop_ never zeroes the gradients)
        opt.step()
        return loss

    return SimpleNamespace(FastAutoencoder=FastAutoencoder, EmaModel=EmaModel, training_step=training_step,
                           unit_norm_decoder_=unit_norm_decoder_, mse=mse, normalized_mse=normalized_mse)


# --- top-k SAE: EleutherAI/sae sae.py, utils.py and trainer.py as written ---------------------------------------------

def eleuther_sae(torch, nn, F):
    """``Sae`` (``forward`` with the walrus ``(num_dead := int(dead_mask.sum())) > 0`` branch, ``k_aux = x.shape[-1] //
    2``, ``fvu`` over ``sum(0)``, ``sae_out.new_tensor(0.0)``), utils.py's ``geometric_median`` and ``eager_decode``, and
    one iteration of ``SaeTrainer.fit`` (``b_dec.data = median`` first, ``hiddens.chunk(micro_acc_steps)``,
    ``loss.div(acc_steps).backward()``, ``clip_grad_norm_``, the ``did_fire``/``num_tokens_since_fired`` defaultdicts,
    ``dead_pct`` by ``mask.mean(dtype=torch.float32)``)."""

    class EncoderOutput(NamedTuple):
        top_acts: object
        top_indices: object

    class ForwardOutput(NamedTuple):
        sae_out: object
        latent_acts: object
        latent_indices: object
        fvu: object
        auxk_loss: object

    @torch.no_grad()
    def geometric_median(points, max_iter: int = 100, tol: float = 1e-5):
        """Compute the geometric median `points`. Used for initializing decoder bias."""
        # Initialize our guess as the mean of the points
        guess = points.mean(dim=0)
        prev = torch.zeros_like(guess)

        # Weights for iteratively reweighted least squares
        weights = torch.ones(len(points), device=points.device)

        for _ in range(max_iter):
            prev = guess

            # Compute the weights
            weights = 1 / torch.norm(points - guess, dim=1)

            # Normalize the weights
            weights /= weights.sum()

            # Compute the new geometric median
            guess = (weights.unsqueeze(1) * points).sum(dim=0)

            # Early stopping condition
            if torch.norm(guess - prev) < tol:
                break

        return guess

    def eager_decode(top_indices, top_acts, W_dec):
        buf = top_acts.new_zeros(top_acts.shape[:-1] + (W_dec.shape[-1],))
        acts = buf.scatter_(dim=-1, index=top_indices, src=top_acts)
        return acts @ W_dec.mT

    decoder_impl = eager_decode

    class Sae(nn.Module):
        def __init__(self, d_in: int, cfg, device="cpu", dtype=None, *, decoder: bool = True):
            super().__init__()
            self.cfg = cfg
            self.d_in = d_in
            d_sae = cfg.num_latents or d_in * cfg.expansion_factor

            self.encoder = nn.Linear(d_in, d_sae, device=device, dtype=dtype)
            self.encoder.bias.data.zero_()

            self.W_dec = nn.Parameter(self.encoder.weight.data.clone()) if decoder else None
            if decoder and self.cfg.normalize_decoder:
                self.set_decoder_norm_to_unit_norm()

            self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype, device=device))

        @property
        def device(self):
            return self.encoder.weight.device

        @property
        def dtype(self):
            return self.encoder.weight.dtype

        def pre_acts(self, x):
            # Remove decoder bias as per Anthropic
            sae_in = x.to(self.dtype) - self.b_dec
            out = self.encoder(sae_in)

            return nn.functional.relu(out) if not self.cfg.signed else out

        def select_topk(self, latents):
            """Select the top-k latents."""
            if self.cfg.signed:
                _, top_indices = latents.abs().topk(self.cfg.k, sorted=False)
                top_acts = latents.gather(dim=-1, index=top_indices)

                return EncoderOutput(top_acts, top_indices)

            return EncoderOutput(*latents.topk(self.cfg.k, sorted=False))

        def decode(self, top_acts, top_indices):
            assert self.W_dec is not None, "Decoder weight was not initialized."

            y = decoder_impl(top_indices, top_acts.to(self.dtype), self.W_dec.mT)
            return y + self.b_dec

        def forward(self, x, dead_mask=None):
            pre_acts = self.pre_acts(x)
            top_acts, top_indices = self.select_topk(pre_acts)

            # Decode and compute residual
            sae_out = self.decode(top_acts, top_indices)
            e = sae_out - x

            # Used as a denominator for putting everything on a reasonable scale
            total_variance = (x - x.mean(0)).pow(2).sum(0)

            # Second decoder pass for AuxK loss
            if dead_mask is not None and (num_dead := int(dead_mask.sum())) > 0:
                # Heuristic from Appendix B.1 in the paper
                k_aux = x.shape[-1] // 2

                # Reduce the scale of the loss if there are a small number of dead latents
                scale = min(num_dead / k_aux, 1.0)
                k_aux = min(k_aux, num_dead)

                # Don't include living latents in this loss
                auxk_latents = torch.where(dead_mask[None], pre_acts, -torch.inf)

                # Top-k dead latents
                auxk_acts, auxk_indices = auxk_latents.topk(k_aux, sorted=False)

                # Encourage the top ~50% of dead latents to predict the residual of the
                # top k living latents
                e_hat = self.decode(auxk_acts, auxk_indices)
                auxk_loss = (e_hat - e).pow(2).sum(0)
                auxk_loss = scale * torch.mean(auxk_loss / total_variance)
            else:
                auxk_loss = sae_out.new_tensor(0.0)

            l2_loss = e.pow(2).sum(0)
            fvu = torch.mean(l2_loss / total_variance)

            return ForwardOutput(
                sae_out,
                top_acts,
                top_indices,
                fvu,
                auxk_loss,
            )

        @torch.no_grad()
        def set_decoder_norm_to_unit_norm(self):
            assert self.W_dec is not None, "Decoder weight was not initialized."

            eps = torch.finfo(self.W_dec.dtype).eps
            norm = torch.norm(self.W_dec.data, dim=1, keepdim=True)
            self.W_dec.data /= norm + eps

        @torch.no_grad()
        def remove_gradient_parallel_to_decoder_directions(self):
            assert self.W_dec is not None, "Decoder weight was not initialized."
            assert self.W_dec.grad is not None  # keep pyright happy

            parallel_component = torch.einsum("... d, ... d -> ...", self.W_dec.grad, self.W_dec.data)
            self.W_dec.grad -= torch.einsum("..., ... d -> ... d", parallel_component, self.W_dec.data)

    class SaeTrainer:
        """``SaeTrainer`` for one hookpoint fed its activations directly (no model hooks, DDP or wandb)."""

        def __init__(self, cfg, sae, lr):
            self.cfg = cfg
            self.saes = {"layer": sae}
            self.optimizer = torch.optim.Adam((p for s in self.saes.values() for p in s.parameters()), lr=lr)
            self.num_latents = sae.W_dec.shape[0]
            self.did_fire = defaultdict(lambda: torch.zeros(self.num_latents, dtype=torch.bool))
            self.num_tokens_since_fired = defaultdict(lambda: torch.zeros(self.num_latents, dtype=torch.long))

        def fit_step(self, i, hiddens, record):
            num_tokens_in_step = hiddens.shape[0]
            name, raw = "layer", self.saes["layer"]
            # On the first iteration, initialize the decoder bias
            if i == 0:
                median = geometric_median(hiddens)
                raw.b_dec.data = median.to(raw.dtype)
            # Make sure the W_dec is still unit-norm
            if raw.cfg.normalize_decoder:
                raw.set_decoder_norm_to_unit_norm()

            acc_steps = self.cfg.grad_acc_steps * self.cfg.micro_acc_steps
            for chunk in hiddens.chunk(self.cfg.micro_acc_steps):
                out = raw(
                    chunk,
                    dead_mask=(
                        self.num_tokens_since_fired[name]
                        > self.cfg.dead_feature_threshold
                        if self.cfg.auxk_alpha > 0
                        else None
                    ),
                )
                record["fvu"].append(float(out.fvu.detach()))
                record["auxk"].append(float(out.auxk_loss.detach()))

                loss = out.fvu + self.cfg.auxk_alpha * out.auxk_loss
                loss.div(acc_steps).backward()

                # Update the did_fire mask
                self.did_fire[name][out.latent_indices.flatten()] = True

            # Clip gradient norm independently for each SAE
            torch.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)

            if self.cfg.sae.normalize_decoder:
                for sae in self.saes.values():
                    sae.remove_gradient_parallel_to_decoder_directions()

            self.optimizer.step()
            self.optimizer.zero_grad()

            with torch.no_grad():
                # Update the dead feature mask
                for name, counts in self.num_tokens_since_fired.items():
                    counts += num_tokens_in_step
                    counts[self.did_fire[name]] = 0
                self.did_fire.clear()

            mask = self.num_tokens_since_fired[name] > self.cfg.dead_feature_threshold
            record["dead_pct"].append(mask.mean(dtype=torch.float32).item())

    return SimpleNamespace(Sae=Sae, SaeTrainer=SaeTrainer, geometric_median=geometric_median)


def eleuther_config(**options):
    """``SaeConfig`` and ``TrainConfig`` as attribute bags (tiny: 24 latents of 8 inputs, k 3)."""
    sae = SimpleNamespace(expansion_factor=3, normalize_decoder=True, num_latents=0, k=SAE_K, signed=False)
    return SimpleNamespace(sae=sae, grad_acc_steps=1, micro_acc_steps=2, auxk_alpha=1 / 32, dead_feature_threshold=6,
                           **options)
