"""I-JEPA as facebookresearch/ijepa writes it (``src/models/vision_transformer.py``, ``src/masks/multiblock.py``,
``src/masks/utils.py``, ``src/utils/tensors.py``, ``src/utils/schedulers.py``, ``src/utils/logging.py``,
``src/helper.py`` and ``src/train.py``'s ``train_step``), once for ``torch`` being torch or kiln: a program of
``test_porting_probes_ijepa_sae.py``, whose docstring says what it covers and what was adapted (the sparse
autoencoders are in ``sae_program.py``)."""

from __future__ import annotations

import copy
import math
from functools import partial
from types import SimpleNamespace

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
