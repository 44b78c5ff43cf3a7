"""Vision-transformer variants as timm and their papers' repositories write them, each a function of ``(torch, nn, F)``
so the same text builds a kiln or a torch model (tiny sizes): timm's shared layers (``drop_path``, ``Mlp``,
``PatchEmbed``, ``_init_weights``), CaiT (timm ``cait.py``), DeiT's distilled ViT and ``DistillationLoss``
(facebookresearch/deit ``models.py``, ``losses.py``) with timm's ``Mixup`` and ``SoftTargetCrossEntropy``, and timm's
``CosineLRScheduler``; PVT, ConvMixer, gMLP, ResMLP and MaxViT are in ``pvt_mixer_maxvit_program.py``.

Stochastic depth is timm's ``drop_path`` (``x.new_empty(shape).bernoulli_(keep_prob)``, ``div_``); kiln's generator
draws other numbers than torch's, so a lockstep run feeds the masks: ``DropPath.fed_masks`` (a list, popped in call
order) replaces the draw when set, the rest of the function as timm writes it.
"""

from __future__ import annotations

import math

import numpy as np

IMAGE, CHANNELS, CLASSES, BATCH = 8, 3, 5, 4


def timm_layers(torch, nn, F):
    """timm's ``drop_path``/``DropPath``, ``Mlp`` and ``PatchEmbed`` (the pieces every model here shares)."""

    def drop_path(x, drop_prob: float = 0., training: bool = False, scale_by_keep: bool = True, fed_masks=None):
        if drop_prob == 0. or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # work with diff dim tensors, not just 2D ConvNets
        if fed_masks is None:
            random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        else:
            random_tensor = fed_masks.pop(0).to(x.dtype).reshape(shape).clone()  # new storage, as new_empty's
        if keep_prob > 0.0 and scale_by_keep:
            random_tensor.div_(keep_prob)
        return x * random_tensor

    class DropPath(nn.Module):
        fed_masks = None

        def __init__(self, drop_prob: float = 0., scale_by_keep: bool = True):
            super().__init__()
            self.drop_prob = drop_prob
            self.scale_by_keep = scale_by_keep

        def forward(self, x):
            return drop_path(x, self.drop_prob, self.training, self.scale_by_keep, DropPath.fed_masks)

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.drop1 = nn.Dropout(drop)
            self.fc2 = nn.Linear(hidden_features, out_features)
            self.drop2 = nn.Dropout(drop)

        def forward(self, x):
            x = self.drop1(self.act(self.fc1(x)))
            return self.drop2(self.fc2(x))

    class PatchEmbed(nn.Module):
        def __init__(self, img_size=IMAGE, patch_size=2, in_chans=CHANNELS, embed_dim=16):
            super().__init__()
            self.img_size = (img_size, img_size)
            self.patch_size = (patch_size, patch_size)
            self.grid_size = (img_size // patch_size, img_size // patch_size)
            self.num_patches = self.grid_size[0] * self.grid_size[1]
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            self.norm = nn.Identity()

        def forward(self, x):
            B, C, H, W = x.shape
            x = self.proj(x).flatten(2).transpose(1, 2)  # BCHW -> BNC
            return self.norm(x)

    return drop_path, DropPath, Mlp, PatchEmbed


def init_vit_weights(nn):
    """timm's ``_init_weights``: truncated-normal Linear weights, zero biases, unit LayerNorms."""

    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    return _init_weights


# --- CaiT (timm cait.py) ---------------------------------------------------------------------------------------------


def cait(torch, nn, F, embed_dim=16, depth=2, depth_token_only=1, num_heads=4, init_values=0.1, drop_path_rate=0.1):
    """CaiT: LayerScale blocks of talking-heads attention, then class-attention blocks on the class token."""
    drop_path, DropPath, Mlp, PatchEmbed = timm_layers(torch, nn, F)

    class ClassAttn(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.k = nn.Linear(dim, dim, bias=qkv_bias)
            self.v = nn.Linear(dim, dim, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            q = self.q(x[:, 0]).unsqueeze(1).reshape(B, 1, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
            k = self.k(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
            v = self.v(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
            q = q * self.scale
            attn = (q @ k.transpose(-2, -1))
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x_cls = (attn @ v).transpose(1, 2).reshape(B, 1, C)
            x_cls = self.proj(x_cls)
            return self.proj_drop(x_cls)

    class LayerScaleBlockClassAttn(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, drop_path=0., init_values=1e-4):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = ClassAttn(dim, num_heads=num_heads, qkv_bias=qkv_bias)
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))

        def forward(self, x, x_cls):
            u = torch.cat((x_cls, x), dim=1)
            x_cls = x_cls + self.drop_path(self.gamma_1 * self.attn(self.norm1(u)))
            x_cls = x_cls + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x_cls)))
            return x_cls

    class TalkingHeadAttn(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_l = nn.Linear(num_heads, num_heads)
            self.proj_w = nn.Linear(num_heads, num_heads)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
            attn = q @ k.transpose(-2, -1)
            attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            attn = attn.softmax(dim=-1)
            attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            x = self.proj(x)
            return self.proj_drop(x)

    class LayerScaleBlock(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, drop_path=0., init_values=1e-4):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = TalkingHeadAttn(dim, num_heads=num_heads, qkv_bias=qkv_bias)
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))

        def forward(self, x):
            x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
            x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
            return x

    class Cait(nn.Module):
        def __init__(self, num_classes=CLASSES, global_pool='token'):
            super().__init__()
            self.global_pool = global_pool
            self.patch_embed = PatchEmbed(embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
            self.pos_drop = nn.Dropout(p=0.)
            dpr = [drop_path_rate for i in range(depth)]
            self.blocks = nn.Sequential(*[LayerScaleBlock(embed_dim, num_heads, qkv_bias=True, drop_path=dpr[i],
                                                          init_values=init_values) for i in range(depth)])
            self.blocks_token_only = nn.ModuleList([LayerScaleBlockClassAttn(
                embed_dim, num_heads, qkv_bias=True, init_values=init_values) for _ in range(depth_token_only)])
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head_drop = nn.Dropout(0.)
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            nn.init.trunc_normal_(self.pos_embed, std=.02)
            nn.init.trunc_normal_(self.cls_token, std=.02)
            self.apply(init_vit_weights(nn))

        @torch.jit.ignore
        def no_weight_decay(self):
            return {'pos_embed', 'cls_token'}

        def forward_features(self, x):
            x = self.patch_embed(x)
            x = x + self.pos_embed
            x = self.pos_drop(x)
            x = self.blocks(x)
            cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
            for i, blk in enumerate(self.blocks_token_only):
                cls_tokens = blk(x, cls_tokens)
            x = torch.cat((cls_tokens, x), dim=1)
            return self.norm(x)

        def forward_head(self, x, pre_logits: bool = False):
            if self.global_pool:
                x = x[:, 1:].mean(dim=1) if self.global_pool == 'avg' else x[:, 0]
            x = self.head_drop(x)
            return x if pre_logits else self.head(x)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return Cait()


# --- DeiT (facebookresearch/deit models.py, losses.py) and timm's Mixup ----------------------------------------------


def deit_distilled(torch, nn, F, embed_dim=16, depth=2, num_heads=2):
    """DeiT's ``DistilledVisionTransformer``: class and distillation tokens, two heads, their mean at eval."""
    drop_path, DropPath, Mlp, PatchEmbed = timm_layers(torch, nn, F)

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = dim // num_heads
            self.scale = self.head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            x = F.scaled_dot_product_attention(q, k, v)
            x = x.transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4.):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class VisionTransformer(nn.Module):
        def __init__(self, num_classes=CLASSES):
            super().__init__()
            self.num_classes = num_classes
            self.num_features = self.embed_dim = embed_dim
            self.patch_embed = PatchEmbed(embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
            self.pos_drop = nn.Dropout(p=0.)
            self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head = nn.Linear(embed_dim, num_classes)
            nn.init.trunc_normal_(self.pos_embed, std=.02)
            nn.init.trunc_normal_(self.cls_token, std=.02)
            self.apply(self._init_weights)

        def _init_weights(self, m):
            init_vit_weights(nn)(m)

        @torch.jit.ignore
        def no_weight_decay(self):
            return {'pos_embed', 'cls_token', 'dist_token'}

    class DistilledVisionTransformer(VisionTransformer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
            num_patches = self.patch_embed.num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 2, self.embed_dim))
            self.head_dist = nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
            nn.init.trunc_normal_(self.dist_token, std=.02)
            nn.init.trunc_normal_(self.pos_embed, std=.02)
            self.head_dist.apply(self._init_weights)

        def forward_features(self, x):
            B = x.shape[0]
            x = self.patch_embed(x)
            cls_tokens = self.cls_token.expand(B, -1, -1)  # stole cls_tokens impl from Phil Wang, thanks
            dist_token = self.dist_token.expand(B, -1, -1)
            x = torch.cat((cls_tokens, dist_token, x), dim=1)
            x = x + self.pos_embed
            x = self.pos_drop(x)
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            return x[:, 0], x[:, 1]

        def forward(self, x):
            x, x_dist = self.forward_features(x)
            x = self.head(x)
            x_dist = self.head_dist(x_dist)
            if self.training:
                return x, x_dist
            else:
                # during inference, return the average of both classifier predictions
                return (x + x_dist) / 2

    return DistilledVisionTransformer()


def conv_teacher(torch, nn, F):
    """A small frozen CNN teacher (DeiT's is a RegNetY; its role is only ``teacher_model(inputs)``)."""
    return nn.Sequential(nn.Conv2d(CHANNELS, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, CLASSES))


def distillation_loss(torch, nn, F):
    """deit ``losses.py``'s ``DistillationLoss`` (a class of ``torch.nn.Module``)."""

    class DistillationLoss(torch.nn.Module):
        def __init__(self, base_criterion: torch.nn.Module, teacher_model: torch.nn.Module,
                     distillation_type: str, alpha: float, tau: float):
            super().__init__()
            self.base_criterion = base_criterion
            self.teacher_model = teacher_model
            assert distillation_type in ['none', 'soft', 'hard']
            self.distillation_type = distillation_type
            self.alpha = alpha
            self.tau = tau

        def forward(self, inputs, outputs, labels):
            outputs_kd = None
            if not isinstance(outputs, torch.Tensor):
                # assume that the model outputs a tuple of [outputs, outputs_kd]
                outputs, outputs_kd = outputs
            base_loss = self.base_criterion(outputs, labels)
            if self.distillation_type == 'none':
                return base_loss
            if outputs_kd is None:
                raise ValueError("When knowledge distillation is enabled, the model is expected to return a "
                                 "Tuple[Tensor, Tensor] with the output of the class_token and the dist_token")
            # don't backprop throught the teacher
            with torch.no_grad():
                teacher_outputs = self.teacher_model(inputs)
            if self.distillation_type == 'soft':
                T = self.tau
                # taken from https://github.com/peterliht/knowledge-distillation-pytorch/blob/master/model/net.py#L100
                distillation_loss = F.kl_div(
                    F.log_softmax(outputs_kd / T, dim=1),
                    # We provide the teacher's targets in log probability because we use log_target=True
                    F.log_softmax(teacher_outputs / T, dim=1),
                    reduction='sum',
                    log_target=True
                ) * (T * T) / outputs_kd.numel()
            elif self.distillation_type == 'hard':
                distillation_loss = F.cross_entropy(outputs_kd, teacher_outputs.argmax(dim=1))
            loss = base_loss * (1 - self.alpha) + distillation_loss * self.alpha
            return loss

    return DistillationLoss


def soft_target_cross_entropy(torch, nn, F):
    """timm ``loss/cross_entropy.py``'s ``SoftTargetCrossEntropy``."""

    class SoftTargetCrossEntropy(nn.Module):
        def __init__(self):
            super(SoftTargetCrossEntropy, self).__init__()

        def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            loss = torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1)
            return loss.mean()

    return SoftTargetCrossEntropy


def timm_mixup(torch):
    """timm ``data/mixup.py``'s ``Mixup`` in batch mode: ``_params_per_batch`` draws ``(lam, use_cutmix)`` from
    ``np.random`` as timm's (or returns the ones fed in ``fed``), ``rand_bbox`` draws the box's centre from it."""

    def one_hot(x, num_classes, on_value=1., off_value=0.):
        x = x.long().view(-1, 1)
        return torch.full((x.size()[0], num_classes), off_value, device=x.device).scatter_(1, x, on_value)

    def mixup_target(target, num_classes, lam=1., smoothing=0.0):
        off_value = smoothing / num_classes
        on_value = 1. - smoothing + off_value
        y1 = one_hot(target, num_classes, on_value=on_value, off_value=off_value)
        y2 = one_hot(target.flip(0), num_classes, on_value=on_value, off_value=off_value)
        return y1 * lam + y2 * (1. - lam)

    def rand_bbox(img_shape, lam, margin=0., count=None):
        ratio = np.sqrt(1 - lam)
        img_h, img_w = img_shape[-2:]
        cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
        margin_y, margin_x = int(margin * cut_h), int(margin * cut_w)
        cy = np.random.randint(0 + margin_y, img_h - margin_y, size=count)
        cx = np.random.randint(0 + margin_x, img_w - margin_x, size=count)
        yl = np.clip(cy - cut_h // 2, 0, img_h)
        yh = np.clip(cy + cut_h // 2, 0, img_h)
        xl = np.clip(cx - cut_w // 2, 0, img_w)
        xh = np.clip(cx + cut_w // 2, 0, img_w)
        return yl, yh, xl, xh

    def cutmix_bbox_and_lam(img_shape, lam, ratio_minmax=None, correct_lam=True, count=None):
        yl, yu, xl, xu = rand_bbox(img_shape, lam, count=count)
        if correct_lam or ratio_minmax is not None:
            bbox_area = (yu - yl) * (xu - xl)
            lam = 1. - bbox_area / float(img_shape[-2] * img_shape[-1])
        return (yl, yu, xl, xu), lam

    class Mixup:
        def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1,
                     num_classes=CLASSES, correct_lam=True):
            self.mixup_alpha = mixup_alpha
            self.cutmix_alpha = cutmix_alpha
            self.mix_prob = prob
            self.switch_prob = switch_prob
            self.label_smoothing = label_smoothing
            self.num_classes = num_classes
            self.correct_lam = correct_lam
            self.cutmix_minmax = None
            self.mixup_enabled = True
            self.fed = []

        def _params_per_batch(self):
            if self.fed:
                return self.fed.pop(0)
            lam = 1.
            use_cutmix = False
            if self.mixup_enabled and np.random.rand() < self.mix_prob:
                if self.mixup_alpha > 0. and self.cutmix_alpha > 0.:
                    use_cutmix = np.random.rand() < self.switch_prob
                    lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha) if use_cutmix else \
                        np.random.beta(self.mixup_alpha, self.mixup_alpha)
                elif self.mixup_alpha > 0.:
                    lam_mix = np.random.beta(self.mixup_alpha, self.mixup_alpha)
                elif self.cutmix_alpha > 0.:
                    use_cutmix = True
                    lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
                else:
                    assert False, "One of mixup_alpha > 0., cutmix_alpha > 0., cutmix_minmax not None should be true."
                lam = float(lam_mix)
            return lam, use_cutmix

        def _mix_batch(self, x):
            lam, use_cutmix = self._params_per_batch()
            if lam == 1.:
                return 1.
            if use_cutmix:
                (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(
                    x.shape, lam, ratio_minmax=self.cutmix_minmax, correct_lam=self.correct_lam)
                x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
            else:
                x_flipped = x.flip(0).mul_(1. - lam)
                x.mul_(lam).add_(x_flipped)
            return lam

        def __call__(self, x, target):
            assert len(x) % 2 == 0, 'Batch size should be even when using this'
            lam = self._mix_batch(x)
            target = mixup_target(target, self.num_classes, lam, self.label_smoothing)
            return x, target

    return Mixup()


def param_groups_weight_decay(model, weight_decay=1e-5, no_weight_decay_list=()):
    """timm ``optim/_param_groups.py``: no decay for 1-D parameters, biases and the model's ``no_weight_decay()``."""
    no_weight_decay_list = set(no_weight_decay_list)
    decay = []
    no_decay = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in no_weight_decay_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {'params': no_decay, 'weight_decay': 0.},
        {'params': decay, 'weight_decay': weight_decay}]


def timm_cosine_scheduler(optimizer, t_initial, lr_min=1e-5, warmup_t=1, warmup_lr_init=1e-4):
    """timm ``scheduler/cosine_lr.py``'s ``CosineLRScheduler`` (one cycle, warmup, per-update ``step_update``)
    writing each group's ``lr`` as timm's ``Scheduler`` does."""

    class CosineLRScheduler:
        def __init__(self):
            self.optimizer = optimizer
            for group in optimizer.param_groups:
                group.setdefault('initial_lr', group['lr'])
            self.base_values = [group['initial_lr'] for group in optimizer.param_groups]
            self.warmup_steps = [(v - warmup_lr_init) / warmup_t for v in self.base_values]
            self.update_groups(warmup_lr_init)

        def _get_lr(self, t):
            if t < warmup_t:
                return [warmup_lr_init + t * s for s in self.warmup_steps]
            t = t - warmup_t
            return [lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * t / t_initial))
                    for lr_max in self.base_values]

        def step_update(self, num_updates):
            self.update_groups(self._get_lr(num_updates))

        def update_groups(self, values):
            if not isinstance(values, (list, tuple)):
                values = [values] * len(self.optimizer.param_groups)
            for param_group, value in zip(self.optimizer.param_groups, values):
                param_group['lr'] = value

    return CosineLRScheduler()
