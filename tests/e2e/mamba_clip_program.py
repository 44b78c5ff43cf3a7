"""johnma2006/mamba-minimal's ``model.py`` (``ModelArgs``, ``Mamba``, ``ResidualBlock``, ``MambaBlock``, ``RMSNorm``)
with its demo's ``generate``, and mlfoundations/open_clip's contrastive training (``transformer.py``'s
``ResidualAttentionBlock``, ``Transformer``, ``VisionTransformer``, ``text_global_pool``; ``model.py``'s ``CLIP``;
``loss.py``'s ``ClipLoss``; ``open_clip_train``'s ``train_one_epoch``, ``cosine_lr``, ``get_autocast`` and main.py's
AdamW parameter groups) as written, for ``torch`` being torch or kiln: the program of
``test_porting_probes_mamba_clip.py``, whose docstring says what it covers and what was adapted.
"""

import math
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import numpy as np


# ------------------------------------------------------------------------------------------- a tiny local einops


def einops(torch):
    """The three einops calls model.py makes (``from einops import rearrange, repeat, einsum``), for named axes."""

    def letters(pattern):
        names = {}

        def side(axes):
            return "".join(names.setdefault(name, chr(ord("a") + len(names))) for name in axes.split())

        inputs, output = pattern.split("->")
        return ",".join(side(axes) for axes in inputs.split(",")) + "->" + side(output)

    def einsum(*tensors_and_pattern):
        *tensors, pattern = tensors_and_pattern
        return torch.einsum(letters(pattern), *tensors)

    def rearrange(x, pattern):
        inputs, output = (axes.split() for axes in pattern.split("->"))
        return x.permute(*[inputs.index(name) for name in output])

    def repeat(x, pattern, **sizes):
        inputs, output = (axes.split() for axes in pattern.split("->"))
        view = x.reshape([x.shape[inputs.index(name)] if name in inputs else 1 for name in output])
        return view.expand([sizes.get(name, -1) for name in output])

    return rearrange, repeat, einsum


# ----------------------------------------------------------------------------------------------- mamba-minimal


def mamba_minimal(torch, nn, F):
    """model.py's classes (and the demo's ``generate``), closed over ``torch``."""
    rearrange, repeat, einsum = einops(torch)

    @dataclass
    class ModelArgs:
        d_model: int
        n_layer: int
        vocab_size: int
        d_state: int = 16
        expand: int = 2
        dt_rank: Union[int, str] = 'auto'
        d_conv: int = 4
        pad_vocab_size_multiple: int = 8
        conv_bias: bool = True
        bias: bool = False

        def __post_init__(self):
            self.d_inner = int(self.expand * self.d_model)

            if self.dt_rank == 'auto':
                self.dt_rank = math.ceil(self.d_model / 16)

            if self.vocab_size % self.pad_vocab_size_multiple != 0:
                self.vocab_size += (self.pad_vocab_size_multiple
                                    - self.vocab_size % self.pad_vocab_size_multiple)

    class Mamba(nn.Module):
        def __init__(self, args: ModelArgs):
            """Full Mamba model."""
            super().__init__()
            self.args = args

            self.embedding = nn.Embedding(args.vocab_size, args.d_model)
            self.layers = nn.ModuleList([ResidualBlock(args) for _ in range(args.n_layer)])
            self.norm_f = RMSNorm(args.d_model)

            self.lm_head = nn.Linear(args.d_model, args.vocab_size, bias=False)
            self.lm_head.weight = self.embedding.weight  # Tie output projection to embedding weights.
                                                         # See "Weight Tying" paper

        def forward(self, input_ids):
            x = self.embedding(input_ids)

            for layer in self.layers:
                x = layer(x)

            x = self.norm_f(x)
            logits = self.lm_head(x)

            return logits

    class ResidualBlock(nn.Module):
        def __init__(self, args: ModelArgs):
            """Simple block wrapping Mamba block with normalization and residual connection."""
            super().__init__()
            self.args = args
            self.mixer = MambaBlock(args)
            self.norm = RMSNorm(args.d_model)

        def forward(self, x):
            output = self.mixer(self.norm(x)) + x

            return output

    class MambaBlock(nn.Module):
        def __init__(self, args: ModelArgs):
            """A single Mamba block, as described in Figure 3 in Section 3.4 in the Mamba paper [1]."""
            super().__init__()
            self.args = args

            self.in_proj = nn.Linear(args.d_model, args.d_inner * 2, bias=args.bias)

            self.conv1d = nn.Conv1d(
                in_channels=args.d_inner,
                out_channels=args.d_inner,
                bias=args.conv_bias,
                kernel_size=args.d_conv,
                groups=args.d_inner,
                padding=args.d_conv - 1,
            )

            # x_proj takes in `x` and outputs the input-specific Δ, B, C
            self.x_proj = nn.Linear(args.d_inner, args.dt_rank + args.d_state * 2, bias=False)

            # dt_proj projects Δ from dt_rank to d_in
            self.dt_proj = nn.Linear(args.dt_rank, args.d_inner, bias=True)

            A = repeat(torch.arange(1, args.d_state + 1), 'n -> d n', d=args.d_inner)
            self.A_log = nn.Parameter(torch.log(A))
            self.D = nn.Parameter(torch.ones(args.d_inner))
            self.out_proj = nn.Linear(args.d_inner, args.d_model, bias=args.bias)

        def forward(self, x):
            (b, l, d) = x.shape

            x_and_res = self.in_proj(x)  # shape (b, l, 2 * d_in)
            (x, res) = x_and_res.split(split_size=[self.args.d_inner, self.args.d_inner], dim=-1)

            x = rearrange(x, 'b l d_in -> b d_in l')
            x = self.conv1d(x)[:, :, :l]
            x = rearrange(x, 'b d_in l -> b l d_in')

            x = F.silu(x)

            y = self.ssm(x)

            y = y * F.silu(res)

            output = self.out_proj(y)

            return output

        def ssm(self, x):
            (d_in, n) = self.A_log.shape

            # Compute ∆ A B C D, the state space parameters.
            A = -torch.exp(self.A_log.float())  # shape (d_in, n)
            D = self.D.float()

            x_dbl = self.x_proj(x)  # (b, l, dt_rank + 2*n)

            (delta, B, C) = x_dbl.split(split_size=[self.args.dt_rank, n, n], dim=-1)  # delta: (b, l, dt_rank). B, C: (b, l, n)
            delta = F.softplus(self.dt_proj(delta))  # (b, l, d_in)

            y = self.selective_scan(x, delta, A, B, C, D)  # This is similar to run_SSM(A, B, C, u) in The Annotated S4 [2]

            return y

        def selective_scan(self, u, delta, A, B, C, D):
            (b, l, d_in) = u.shape
            n = A.shape[1]

            # Discretize continuous parameters (A, B)
            deltaA = torch.exp(einsum(delta, A, 'b l d_in, d_in n -> b l d_in n'))
            deltaB_u = einsum(delta, B, u, 'b l d_in, b l n, b l d_in -> b l d_in n')

            # Perform selective scan (see scan_SSM() in The Annotated S4 [2])
            x = torch.zeros((b, d_in, n), device=deltaA.device)
            ys = []
            for i in range(l):
                x = deltaA[:, i] * x + deltaB_u[:, i]
                y = einsum(x, C[:, i, :], 'b d_in n, b n -> b d_in')
                ys.append(y)
            y = torch.stack(ys, dim=1)  # shape (b, l, d_in)

            y = y + u * D

            return y

    class RMSNorm(nn.Module):
        def __init__(self,
                     d_model: int,
                     eps: float = 1e-5):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(d_model))

        def forward(self, x):
            output = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

            return output

    # demo.ipynb's generate (the Hugging Face tokenizer replaced by ``tokenizer``, a character one)
    def generate(model,
                 tokenizer,
                 prompt: str,
                 n_tokens_to_gen: int = 50,
                 sample: bool = True,
                 top_k: int = 40):
        model.eval()

        input_ids = tokenizer(prompt, return_tensors='pt').input_ids

        for token_n in range(n_tokens_to_gen):
            with torch.no_grad():
                indices_to_input = input_ids
                next_token_logits = model(indices_to_input)[:, -1]

            probs = F.softmax(next_token_logits, dim=-1)
            (batch, vocab_size) = probs.shape

            if top_k is not None:
                (values, indices) = torch.topk(probs, k=top_k)
                probs[probs < values[:, -1, None]] = 0
                probs = probs / probs.sum(axis=1, keepdims=True)

            if sample:
                next_indices = torch.multinomial(probs, num_samples=1)
            else:
                next_indices = torch.argmax(probs, dim=-1)[:, None]

            input_ids = torch.cat([input_ids, next_indices], dim=1)

        output_completions = [tokenizer.decode(output.tolist()) for output in input_ids][0]

        return output_completions

    return ModelArgs, Mamba, generate


def mamba_training(torch, nn, F, model, weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.95),
                   num_warmup_steps=2, num_training_steps=8):
    """A training setup for the model (mamba-minimal has none): nanoGPT's ``configure_optimizers`` (AdamW, decay
    for the 2-d and up parameters, none for norms and biases) and transformers' ``get_cosine_schedule_with_warmup`` as
    a ``LambdaLR``."""
    param_dict = {pn: p for pn, p in model.named_parameters() if p.requires_grad}
    decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
    nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
    optim_groups = [
        {'params': decay_params, 'weight_decay': weight_decay},
        {'params': nodecay_params, 'weight_decay': 0.0},
    ]
    optimizer = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas)

    def lr_lambda(current_step, num_cycles=0.5):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, -1)
    return optimizer, scheduler


def mamba_step(torch, F, model, optimizer, grad_clip=1.0):
    """One iteration on a batch of the token stream: next-token cross-entropy, backward, ``clip_grad_norm_``, AdamW."""

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return loss, norm

    return step


# ------------------------------------------------------------------------------------------------------ open_clip


def open_clip(torch, nn, F):
    """transformer.py, model.py's CLIP and loss.py's ClipLoss, closed over ``torch``."""
    checkpoint = torch.utils.checkpoint.checkpoint

    class LayerNorm(nn.LayerNorm):
        """Subclass torch's LayerNorm (with cast back to input dtype)."""

        def forward(self, x: torch.Tensor):
            orig_type = x.dtype
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.to(orig_type)

    class ResidualAttentionBlock(nn.Module):
        def __init__(
                self,
                d_model: int,
                n_head: int,
                mlp_ratio: float = 4.0,
                ls_init_value: float = None,
                act_layer: Callable = nn.GELU,
                norm_layer: Callable = LayerNorm,
                is_cross_attention: bool = False,
        ):
            super().__init__()

            self.ln_1 = norm_layer(d_model)
            self.attn = nn.MultiheadAttention(d_model, n_head)
            self.ls_1 = nn.Identity()
            if is_cross_attention:
                self.ln_1_kv = norm_layer(d_model)

            self.ln_2 = norm_layer(d_model)
            mlp_width = int(d_model * mlp_ratio)
            self.mlp = nn.Sequential(OrderedDict([
                ("c_fc", nn.Linear(d_model, mlp_width)),
                ("gelu", act_layer()),
                ("c_proj", nn.Linear(mlp_width, d_model))
            ]))
            self.ls_2 = nn.Identity()

        def attention(
                self,
                q_x: torch.Tensor,
                k_x: Optional[torch.Tensor] = None,
                v_x: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None,
        ):
            k_x = k_x if k_x is not None else q_x
            v_x = v_x if v_x is not None else q_x

            attn_mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
            return self.attn(
                q_x, k_x, v_x, need_weights=False, attn_mask=attn_mask
            )[0]

        def forward(
                self,
                q_x: torch.Tensor,
                k_x: Optional[torch.Tensor] = None,
                v_x: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None,
        ):
            k_x = self.ln_1_kv(k_x) if hasattr(self, "ln_1_kv") and k_x is not None else None
            v_x = self.ln_1_kv(v_x) if hasattr(self, "ln_1_kv") and v_x is not None else None
            x = q_x + self.ls_1(self.attention(q_x=self.ln_1(q_x), k_x=k_x, v_x=v_x, attn_mask=attn_mask))
            x = x + self.ls_2(self.mlp(self.ln_2(x)))
            return x

    def _expand_token(token, batch_size: int):
        return token.view(1, 1, -1).expand(batch_size, -1, -1)

    class Transformer(nn.Module):
        def __init__(
                self,
                width: int,
                layers: int,
                heads: int,
                mlp_ratio: float = 4.0,
                ls_init_value: float = None,
                act_layer: Callable = nn.GELU,
                norm_layer: Callable = LayerNorm,
        ):
            super().__init__()
            self.width = width
            self.layers = layers
            self.grad_checkpointing = False

            self.resblocks = nn.ModuleList([
                ResidualAttentionBlock(
                    width,
                    heads,
                    mlp_ratio,
                    ls_init_value=ls_init_value,
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                )
                for _ in range(layers)
            ])

        def get_cast_dtype(self) -> torch.dtype:
            if hasattr(self.resblocks[0].mlp.c_fc, 'int8_original_dtype'):
                return self.resblocks[0].mlp.c_fc.int8_original_dtype
            return self.resblocks[0].mlp.c_fc.weight.dtype

        def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None):
            x = x.transpose(0, 1).contiguous()    # NLD -> LND
            for r in self.resblocks:
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    # TODO: handle kwargs https://github.com/pytorch/pytorch/issues/79887#issuecomment-1161758372
                    x = checkpoint(r, x, None, None, attn_mask)
                else:
                    x = r(x, attn_mask=attn_mask)
            x = x.transpose(0, 1)    # LND -> NLD
            return x

    class VisionTransformer(nn.Module):
        output_tokens: torch.jit.Final[bool]

        def __init__(
                self,
                image_size: int,
                patch_size: int,
                width: int,
                layers: int,
                heads: int,
                mlp_ratio: float,
                output_dim: int = 512,
                pool_type: str = 'tok',
                act_layer: Callable = nn.GELU,
                norm_layer: Callable = LayerNorm,
                output_tokens: bool = False,
        ):
            super().__init__()
            assert pool_type in ('tok', 'avg', 'none')
            self.output_tokens = output_tokens
            image_height, image_width = self.image_size = (image_size, image_size)
            patch_height, patch_width = self.patch_size = (patch_size, patch_size)
            self.grid_size = (image_height // patch_height, image_width // patch_width)
            self.output_dim = output_dim

            self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size,
                                   bias=False)

            # class embeddings and positional embeddings
            scale = width ** -0.5
            self.class_embedding = nn.Parameter(scale * torch.randn(width))
            self.positional_embedding = nn.Parameter(
                scale * torch.randn(self.grid_size[0] * self.grid_size[1] + 1, width))

            self.patch_dropout = nn.Identity()

            self.ln_pre = norm_layer(width)
            self.transformer = Transformer(
                width,
                layers,
                heads,
                mlp_ratio,
                act_layer=act_layer,
                norm_layer=norm_layer,
            )

            self.attn_pool = None
            pool_dim = width
            self.pool_type = pool_type

            self.ln_post = norm_layer(pool_dim)
            self.proj = nn.Parameter(scale * torch.randn(pool_dim, output_dim))

        @torch.jit.ignore
        def set_grad_checkpointing(self, enable=True):
            self.transformer.grad_checkpointing = enable

        def _global_pool(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            if self.pool_type == 'avg':
                pooled, tokens = x[:, 1:].mean(dim=1), x[:, 1:]
            elif self.pool_type == 'tok':
                pooled, tokens = x[:, 0], x[:, 1:]
            else:
                pooled = tokens = x

            return pooled, tokens

        def forward(self, x: torch.Tensor):
            x = self.conv1(x)  # shape = [*, width, grid, grid]
            x = x.reshape(x.shape[0], x.shape[1], -1)  # shape = [*, width, grid ** 2]
            x = x.permute(0, 2, 1)  # shape = [*, grid ** 2, width]

            # class embeddings and positional embeddings
            x = torch.cat([_expand_token(self.class_embedding, x.shape[0]).to(x.dtype), x], dim=1)
            # shape = [*, grid ** 2 + 1, width]
            x = x + self.positional_embedding.to(x.dtype)

            x = self.patch_dropout(x)
            x = self.ln_pre(x)
            x = self.transformer(x)

            x = self.ln_post(x)
            pooled, tokens = self._global_pool(x)

            if self.proj is not None:
                pooled = pooled @ self.proj

            if self.output_tokens:
                return pooled, tokens

            return pooled

    def text_global_pool(x, text: Optional[torch.Tensor] = None, pool_type: str = 'argmax'):
        if pool_type == 'first':
            pooled, tokens = x[:, 0], x[:, 1:]
        elif pool_type == 'last':
            pooled, tokens = x[:, -1], x[:, :-1]
        elif pool_type == 'argmax':
            # take features from the eot embedding (eot_token is the highest number in each sequence)
            assert text is not None
            pooled, tokens = x[torch.arange(x.shape[0]), text.argmax(dim=-1)], x
        else:
            pooled = tokens = x

        return pooled, tokens

    @dataclass
    class CLIPVisionCfg:
        layers: int = 12
        width: int = 768
        head_width: int = 64
        mlp_ratio: float = 4.0
        patch_size: int = 16
        image_size: int = 224

    @dataclass
    class CLIPTextCfg:
        context_length: int = 77
        vocab_size: int = 49408
        width: int = 512
        heads: int = 8
        layers: int = 12
        pool_type: str = 'argmax'

    class CLIP(nn.Module):
        def __init__(
                self,
                embed_dim: int,
                vision_cfg: CLIPVisionCfg,
                text_cfg: CLIPTextCfg,
                init_logit_scale: float = np.log(1 / 0.07),
                output_dict: bool = False,
        ):
            super().__init__()
            self.output_dict = output_dict

            self.visual = VisionTransformer(
                image_size=vision_cfg.image_size,
                patch_size=vision_cfg.patch_size,
                width=vision_cfg.width,
                layers=vision_cfg.layers,
                heads=vision_cfg.width // vision_cfg.head_width,
                mlp_ratio=vision_cfg.mlp_ratio,
                output_dim=embed_dim,
            )

            # _build_text_tower's TextTransformer, unpacked into the model as CLIP does
            self.transformer = Transformer(width=text_cfg.width, layers=text_cfg.layers, heads=text_cfg.heads)
            self.context_length = text_cfg.context_length
            self.vocab_size = text_cfg.vocab_size
            self.token_embedding = nn.Embedding(text_cfg.vocab_size, text_cfg.width)
            self.positional_embedding = nn.Parameter(torch.empty(text_cfg.context_length, text_cfg.width))
            self.ln_final = LayerNorm(text_cfg.width)
            self.text_projection = nn.Parameter(torch.empty(text_cfg.width, embed_dim))
            self.text_pool_type = text_cfg.pool_type
            self.register_buffer('attn_mask', self.build_causal_mask(), persistent=False)

            self.logit_scale = nn.Parameter(torch.ones([]) * init_logit_scale)
            self.logit_bias = None
            self.init_parameters()

        @torch.jit.ignore
        def set_grad_checkpointing(self, enable=True):
            self.visual.set_grad_checkpointing(enable)
            self.transformer.grad_checkpointing = enable

        def build_causal_mask(self):
            # lazily create causal attention mask, with full attention between the tokens
            # pytorch uses additive attention mask; fill with -inf
            mask = torch.empty(self.context_length, self.context_length)
            mask.fill_(float("-inf"))
            mask.triu_(1)  # zero out the lower diagonal
            return mask

        def init_parameters(self):
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            nn.init.normal_(self.positional_embedding, std=0.01)

            proj_std = (self.transformer.width ** -0.5) * ((2 * self.transformer.layers) ** -0.5)
            attn_std = self.transformer.width ** -0.5
            fc_std = (2 * self.transformer.width) ** -0.5
            for block in self.transformer.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

            if self.text_projection is not None:
                nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

        def encode_image(self, image, normalize: bool = False):
            features = self.visual(image)
            return F.normalize(features, dim=-1) if normalize else features

        def encode_text(self, text, normalize: bool = False):
            cast_dtype = self.transformer.get_cast_dtype()

            x = self.token_embedding(text).to(cast_dtype)  # [batch_size, n_ctx, d_model]

            x = x + self.positional_embedding.to(cast_dtype)
            x = self.transformer(x, attn_mask=self.attn_mask)
            x = self.ln_final(x)  # [batch_size, n_ctx, transformer.width]
            x, _ = text_global_pool(x, text, self.text_pool_type)
            if self.text_projection is not None:
                if isinstance(self.text_projection, nn.Linear):
                    x = self.text_projection(x)
                else:
                    x = x @ self.text_projection

            return F.normalize(x, dim=-1) if normalize else x

        def forward(
                self,
                image: Optional[torch.Tensor] = None,
                text: Optional[torch.Tensor] = None,
        ):
            image_features = self.encode_image(image, normalize=True) if image is not None else None
            text_features = self.encode_text(text, normalize=True) if text is not None else None

            if self.output_dict:
                out_dict = {
                    "image_features": image_features,
                    "text_features": text_features,
                    "logit_scale": self.logit_scale.exp()
                }
                if self.logit_bias is not None:
                    out_dict['logit_bias'] = self.logit_bias
                return out_dict

            if self.logit_bias is not None:
                return image_features, text_features, self.logit_scale.exp(), self.logit_bias
            return image_features, text_features, self.logit_scale.exp()

    class ClipLoss(nn.Module):

        def __init__(
                self,
                local_loss=False,
                gather_with_grad=False,
                cache_labels=False,
                rank=0,
                world_size=1,
                use_horovod=False,
        ):
            super().__init__()
            self.local_loss = local_loss
            self.gather_with_grad = gather_with_grad
            self.cache_labels = cache_labels
            self.rank = rank
            self.world_size = world_size
            self.use_horovod = use_horovod

            # cache state
            self.prev_num_logits = 0
            self.labels = {}

        def get_ground_truth(self, device, num_logits) -> torch.Tensor:
            # calculated ground-truth and cache if enabled
            if self.prev_num_logits != num_logits or device not in self.labels:
                labels = torch.arange(num_logits, device=device, dtype=torch.long)
                if self.world_size > 1 and self.local_loss:
                    labels = labels + num_logits * self.rank
                if self.cache_labels:
                    self.labels[device] = labels
                    self.prev_num_logits = num_logits
            else:
                labels = self.labels[device]
            return labels

        def get_logits(self, image_features, text_features, logit_scale):
            logits_per_image = logit_scale * image_features @ text_features.T
            logits_per_text = logit_scale * text_features @ image_features.T
            return logits_per_image, logits_per_text

        def forward(self, image_features, text_features, logit_scale, output_dict=False):
            device = image_features.device
            logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)

            labels = self.get_ground_truth(device, logits_per_image.shape[0])

            total_loss = (
                F.cross_entropy(logits_per_image, labels) +
                F.cross_entropy(logits_per_text, labels)
            ) / 2

            return {"contrastive_loss": total_loss} if output_dict else total_loss

    return CLIPVisionCfg, CLIPTextCfg, CLIP, ClipLoss


def open_clip_train(torch, nn, F):
    """open_clip_train's scheduler.py, precision.py, main.py's optimizer and train.py's ``train_one_epoch``."""

    def assign_learning_rate(optimizer, new_lr):
        for param_group in optimizer.param_groups:
            param_group["lr"] = new_lr

    def _warmup_lr(base_lr, warmup_length, step):
        return base_lr * (step + 1) / warmup_length

    def cosine_lr(optimizer, base_lr, warmup_length, steps):
        def _lr_adjuster(step):
            if step < warmup_length:
                lr = _warmup_lr(base_lr, warmup_length, step)
            else:
                e = step - warmup_length
                es = steps - warmup_length
                lr = 0.5 * (1 + np.cos(np.pi * e / es)) * base_lr
            assign_learning_rate(optimizer, lr)
            return lr

        return _lr_adjuster

    def get_autocast(precision, device_type='cuda'):
        if precision == 'amp':
            amp_dtype = torch.float16
        elif precision == 'amp_bfloat16' or precision == 'amp_bf16':
            amp_dtype = torch.bfloat16
        else:
            return suppress

        def _autocast():
            return torch.amp.autocast(device_type=device_type, dtype=amp_dtype, enabled=False)

        return _autocast

    def get_input_dtype(precision: str):
        input_dtype = None
        if precision in ('bf16', 'pure_bf16'):
            input_dtype = torch.bfloat16
        elif precision in ('fp16', 'pure_fp16'):
            input_dtype = torch.float16
        return input_dtype

    def create_optimizer(model, args):
        exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or 'logit_scale' in n
        include = lambda n, p: not exclude(n, p)

        named_parameters = list(model.named_parameters())
        gain_or_bias_params = [p for n, p in named_parameters if exclude(n, p) and p.requires_grad]
        rest_params = [p for n, p in named_parameters if include(n, p) and p.requires_grad]

        optimizer = torch.optim.AdamW(
            [
                {"params": gain_or_bias_params, "weight_decay": 0.},
                {"params": rest_params, "weight_decay": args.wd},
            ],
            lr=args.lr,
            betas=(args.beta1, args.beta2),
            eps=args.eps,
        )
        scaler = torch.amp.GradScaler("cuda", enabled=False) if args.precision == "amp" else None
        return optimizer, scaler

    def unwrap_model(model):
        if hasattr(model, 'module'):
            return model.module
        else:
            return model

    def backward(total_loss, scaler):
        if scaler is not None:
            scaler.scale(total_loss).backward()
        else:
            total_loss.backward()

    def train_one_epoch(model, data, loss, epoch, optimizer, scaler, scheduler, args, compile_step=None):
        """train.py's loop (logging replaced by a history of each step's losses, logit scale and lr). The body after
        the features are cached is ``optimization_step`` (reading the accumulated batches and features from this
        function's variables, as the loop body does), so that ``compile_step`` can compile it."""
        device = torch.device(args.device)
        autocast = get_autocast(args.precision, device_type=device.type)
        input_dtype = get_input_dtype(args.precision)

        model.train()

        dataloader = data['train']
        num_batches_per_epoch = len(dataloader) // args.accum_freq

        if args.accum_freq > 1:
            accum_images, accum_texts, accum_features = [], [], {}

        def optimization_step(images, texts):
            if args.accum_freq == 1:
                with autocast():
                    model_out = model(images, texts)
                    logit_scale = model_out["logit_scale"]
                    losses = loss(**model_out, output_dict=True)

                    total_loss = sum(losses.values())
                    losses["loss"] = total_loss

                backward(total_loss, scaler)
            else:
                # Now, ready to take gradients for the last accum_freq batches.
                # Re-do the forward pass for those batches, and use the cached features from the other batches as negatives.
                # Call backwards each time, but only step optimizer at the end.
                optimizer.zero_grad()
                for j in range(args.accum_freq):
                    images = accum_images[j]
                    texts = accum_texts[j]
                    with autocast():
                        model_out = model(images, texts)

                        inputs_no_accum = {}
                        inputs_no_accum["logit_scale"] = logit_scale = model_out.pop("logit_scale")
                        if "logit_bias" in model_out:
                            inputs_no_accum["logit_bias"] = model_out.pop("logit_bias")

                        inputs = {}
                        for key, val in accum_features.items():
                            accumulated = accum_features[key]
                            inputs[key] = torch.cat(accumulated[:j] + [model_out[key]] + accumulated[j + 1:])

                        losses = loss(**inputs, **inputs_no_accum, output_dict=True)
                        del inputs
                        del inputs_no_accum
                        total_loss = sum(losses.values())
                        losses["loss"] = total_loss

                    backward(total_loss, scaler)

            if scaler is not None:
                if args.grad_clip_norm is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm, norm_type=2.0)
                scaler.step(optimizer)
                scaler.update()
            else:
                if args.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm, norm_type=2.0)
                optimizer.step()

            # Note: we clamp to 4.6052 = ln(100), as in the original paper.
            with torch.no_grad():
                unwrap_model(model).logit_scale.clamp_(0, math.log(100))
            return losses, logit_scale

        if compile_step is not None:
            optimization_step = compile_step(optimization_step)

        history = []
        for i, batch in enumerate(dataloader):
            i_accum = i // args.accum_freq
            step = num_batches_per_epoch * epoch + i_accum

            if not args.skip_scheduler:
                scheduler(step)

            images, texts = batch
            images = images.to(device=device, dtype=input_dtype, non_blocking=True)
            texts = texts.to(device=device, non_blocking=True)

            optimizer.zero_grad()

            if args.accum_freq == 1:
                losses, logit_scale = optimization_step(images, texts)
            else:
                # First, cache the features without any gradient tracking.
                with torch.no_grad():
                    with autocast():
                        model_out = model(images, texts)

                        for f in ("logit_scale", "logit_bias"):
                            model_out.pop(f, None)

                        for key, val in model_out.items():
                            if key in accum_features:
                                accum_features[key].append(val)
                            else:
                                accum_features[key] = [val]

                    accum_images.append(images)
                    accum_texts.append(texts)

                # If (i + 1) % accum_freq is not zero, move on to the next batch.
                if ((i + 1) % args.accum_freq) > 0:
                    continue

                losses, logit_scale = optimization_step(images, texts)

            # reset gradient accum, if enabled
            if args.accum_freq > 1:
                accum_images, accum_texts, accum_features = [], [], {}

            history.append({"loss": losses["loss"].item(), "contrastive_loss": losses["contrastive_loss"].item(),
                            "logit_scale": logit_scale.item(), "lr": optimizer.param_groups[0]["lr"]})
        return history

    return cosine_lr, create_optimizer, train_one_epoch
