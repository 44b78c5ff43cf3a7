"""KellerJordan/Muon's ``muon.py`` (``zeropower_via_newtonschulz5``, ``muon_update``, the single-device ``Muon``) and
the GPT of KellerJordan/modded-nanogpt's speedrun ``train_gpt.py`` (late 2024 / early 2025 records: ``norm``,
``CastedLinear``, ``Rotary``, QK-norm attention with value embeddings, the ReLU² MLP, the U-net skips, the softcapped
logits) with its hybrid Muon + AdamW setup, ``get_lr`` schedule and Muon momentum warmup, as written, for ``torch``
being torch or kiln: the program of ``test_porting_probes_muon_speedrun.py``, whose docstring says what it covers and
what was adapted.
"""

from __future__ import annotations

from types import SimpleNamespace


def muon_speedrun(torch, nn, F, bfloat16_newton_schulz=True, float32_logits=True, compile_newton_schulz=False):
    """The repositories' functions and classes, closed over ``torch``. ``bfloat16_newton_schulz=False`` keeps the
    Newton-Schulz iteration in its input's dtype (``X = G.bfloat16()`` becomes ``X = G``); ``float32_logits=False``
    leaves out the loss's ``logits.float()`` (an identity on float32 logits): the float64 comparison's edits.
    ``compile_newton_schulz`` applies the speedrun's ``@torch.compile`` to ``zeropower_via_newtonschulz5``."""

    # ------------------------------------------------------------------------------- Muon: muon.py
    def zeropower_via_newtonschulz5(G, steps: int):
        """
        Newton-Schulz iteration to compute the zeroth power / orthogonalization of G. We opt to use a
        quintic iteration whose coefficients are selected to maximize the slope at zero. For the purpose
        of minimizing steps, it turns out to be empirically effective to keep increasing the slope at
        zero even beyond the point where the iteration no longer converges all the way to one everywhere
        on the interval. This iteration therefore does not produce UV^T but rather something like US'V^T
        where S' is diagonal with S_{ii}' ~ Uniform(0.5, 1.5), which turns out not to hurt model
        performance at all relative to UV^T, where USV^T = G is the SVD.
        """
        assert G.ndim >= 2 # batched Muon implementation by @scottjmaddox, and put into practice in the record by @YouJiacheng
        a, b, c = (3.4445, -4.7750,  2.0315)
        X = G.bfloat16() if bfloat16_newton_schulz else G
        if G.size(-2) > G.size(-1):
            X = X.mT

        # Ensure spectral norm is at most 1
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        # Perform the NS iterations
        for _ in range(steps):
            A = X @ X.mT
            B = b * A + c * A @ A # quintic computation strategy adapted from suggestion by @jxbz, @leloykun, and @YouJiacheng
            X = a * X + B @ X

        if G.size(-2) > G.size(-1):
            X = X.mT
        return X

    if compile_newton_schulz:
        zeropower_via_newtonschulz5 = torch.compile(zeropower_via_newtonschulz5)

    def muon_update(grad, momentum, beta=0.95, ns_steps=5, nesterov=True):
        momentum.lerp_(grad, 1 - beta)
        update = grad.lerp_(momentum, beta) if nesterov else momentum
        if update.ndim == 4: # for the case of conv filters
            update = update.view(len(update), -1)
        update = zeropower_via_newtonschulz5(update, steps=ns_steps)
        update *= max(1, grad.size(-2) / grad.size(-1))**0.5
        return update

    class Muon(torch.optim.Optimizer):
        """
        Muon - MomentUm Orthogonalized by Newton-schulz

        https://kellerjordan.github.io/posts/muon/

        Muon internally runs standard SGD-momentum, and then performs an orthogonalization post-
        processing step, in which each 2D parameter's update is replaced with the nearest orthogonal
        matrix. For efficient orthogonalization we use a Newton-Schulz iteration, which has the
        advantage that it can be stably run in bfloat16 on the GPU.

        Muon should only be used for hidden weight layers. The input embedding, final output layer,
        and any internal gains or biases should be optimized using a standard method such as AdamW.
        Hidden convolutional weights can be trained using Muon by viewing them as 2D and then
        collapsing their last 3 dimensions.
        """
        def __init__(self, params, lr=0.02, weight_decay=0, momentum=0.95, nesterov=True, ns_steps=5):
            defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        # continue
                        p.grad = torch.zeros_like(p)  # Force synchronization
                    state = self.state[p]
                    if len(state) == 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    update = muon_update(p.grad, state["momentum_buffer"], beta=group["momentum"],
                                         ns_steps=group["ns_steps"], nesterov=group["nesterov"])
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update.reshape(p.shape), alpha=-group["lr"])

            return loss

    # ---------------------------------------------------------------- the speedrun's model: train_gpt.py
    def norm(x):
        return F.rms_norm(x, (x.size(-1),))

    class CastedLinear(nn.Linear):

        def __init__(self, in_features, out_features):
            super().__init__(in_features, out_features, bias=False)

        def forward(self, x):
            return F.linear(x, self.weight.type_as(x))

    class Rotary(nn.Module):

        def __init__(self, dim, max_seq_len=65536, dtype=torch.float32):
            super().__init__()
            # half-truncate RoPE by @YouJiacheng
            inv_freq = (1 / 1024) ** torch.linspace(0, 1, steps=dim//4, dtype=dtype)
            inv_freq = torch.cat([inv_freq, inv_freq.new_zeros(dim//4)])
            self.register_buffer('inv_freq', inv_freq, persistent=False)
            t = torch.arange(max_seq_len, dtype=dtype)
            theta = torch.einsum('i,j -> ij', t, inv_freq)
            self.cos = nn.Buffer(theta.cos(), persistent=False)
            self.sin = nn.Buffer(theta.sin(), persistent=False)

        def forward(self, x):
            cos, sin = self.cos[None, :x.size(-3), None, :], self.sin[None, :x.size(-3), None, :]
            x1, x2 = x.float().chunk(2, dim=-1)
            y1 = x1 * cos + x2 * sin
            y2 = x1 * (-sin) + x2 * cos
            return torch.cat((y1, y2), 3).type_as(x)

    class CausalSelfAttention(nn.Module):

        def __init__(self, dim, num_heads, max_seq_len, rotary_dtype):
            super().__init__()
            assert dim % num_heads == 0
            self.num_heads = num_heads
            self.c_q = CastedLinear(dim, dim)
            self.c_k = CastedLinear(dim, dim)
            self.c_v = CastedLinear(dim, dim)
            # value residual lambda
            self.lambdas = nn.Parameter(torch.tensor([0.5, 0.5])) # @Grad62304977
            self.rotary = Rotary(dim // num_heads, max_seq_len, rotary_dtype) # dim // num_heads = head_dim
            self.c_proj = CastedLinear(dim, dim)
            self.c_proj.weight.detach().zero_() # zero init suggested by @Grad62304977
            # scale the attention logits by given constant, instead of the default head_dim**-0.5, by @leloykun
            self.attn_scale = 0.12

        def forward(self, x, ve):
            B, T = x.size(0), x.size(1) # batch size, sequence length
            q = self.c_q(x).view(B, T, self.num_heads, -1)
            k = self.c_k(x).view(B, T, self.num_heads, -1)
            v = self.c_v(x).view(B, T, self.num_heads, -1)
            if ve is not None:
                v = self.lambdas[0] * v + self.lambdas[1] * ve.view_as(v) # @KoszarskyB & @Grad62304977
            else: # skip mid-layers token value embeddings by @YouJiacheng
                v = self.lambdas[0] * v
            q, k = norm(q), norm(k) # QK norm @Grad62304977
            q, k = self.rotary(q), self.rotary(k)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, scale=self.attn_scale)
            y = y.transpose(1, 2).contiguous().view_as(x) # re-assemble all head outputs side by side
            y = self.c_proj(y)
            return y

    class MLP(nn.Module):

        def __init__(self, dim):
            super().__init__()
            self.c_fc   = CastedLinear(dim, 4 * dim)
            self.c_proj = CastedLinear(4 * dim, dim)
            self.c_proj.weight.detach().zero_() # zero init suggested by @Grad62304977

        def forward(self, x):
            x = self.c_fc(x)
            x = F.relu(x).square() # https://arxiv.org/abs/2109.08668v2; ~1-2% better than GELU; suggested by @SKYLINEZ007 and @Grad62304977
            x = self.c_proj(x)
            return x

    class Block(nn.Module):

        def __init__(self, model_dim, num_heads, max_seq_len, rotary_dtype, use_attn=True):
            super().__init__()
            self.attn = CausalSelfAttention(model_dim, num_heads, max_seq_len, rotary_dtype) if use_attn else None
            self.mlp = MLP(model_dim)
            self.lambdas = nn.Parameter(torch.tensor([1., 0.]))

        def forward(self, x, ve, x0):
            x = self.lambdas[0] * x + self.lambdas[1] * x0
            if self.attn is not None:
                x = x + self.attn(norm(x), ve)
            x = x + self.mlp(norm(x))
            return x

    class ValueEmbedding(nn.Module):
        def __init__(self, vocab_size, model_dim):
            super().__init__()
            self.embed = nn.ModuleList([nn.Embedding(vocab_size, model_dim) for _ in range(2)])

        def forward(self, inputs):
            ve = [emb(inputs) for emb in self.embed]
            # 01 ... 01 structure on token value embeddings by @YouJiacheng, improved on @leloykun's U-net structure
            ve = [ve[0], ve[1]] + [None] * (self.num_layers - 4) + [ve[0], ve[1]]
            return ve

    class GPT(nn.Module):

        def __init__(self, vocab_size, num_layers, num_heads, model_dim, max_seq_len=64, softcap="tanh",
                     rotary_dtype=torch.float32):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, model_dim)
            self.blocks = nn.ModuleList([Block(model_dim, num_heads, max_seq_len, rotary_dtype, use_attn=(i != 2))
                                         for i in range(num_layers)])
            # token value embeddings by @KoszarskyB - inspired by @Grad62304977's value residual learning
            self.value_embeds = ValueEmbedding(vocab_size, model_dim)
            self.value_embeds.num_layers = num_layers
            self.lm_head = CastedLinear(model_dim, vocab_size)
            self.lm_head.weight.detach().zero_() # @Grad62304977
            self.softcap = softcap
            # U-net design by @brendanh0gan
            self.num_encoder_layers = num_layers // 2 # Half of the layers for encoder
            self.num_decoder_layers = num_layers - self.num_encoder_layers # Remaining for decoder
            # Add learnable skip connection weights for decoder layers
            self.skip_weights = nn.Parameter(torch.ones(self.num_decoder_layers))

        def forward(self, input_seq, target_seq):
            x = self.embed(input_seq) # token embeddings of shape (b, t, model_dim)
            x = norm(x) # @Grad62304977
            x0 = x
            ve = self.value_embeds(input_seq)
            ve_enc, ve_dec = ve[:self.num_encoder_layers], ve[self.num_encoder_layers:]

            # Store outputs for U-Net skip connections
            skip_connections = []
            # Encoder pass - process only the first half of the blocks
            for i in range(self.num_encoder_layers):
                x = self.blocks[i](x, ve_enc[i], x0)
                skip_connections.append(x)
            # Decoder pass - process the remaining blocks with weighted skip connections
            for i in range(self.num_decoder_layers):
                x = x + self.skip_weights[i] * skip_connections.pop()
                x = self.blocks[self.num_encoder_layers + i](x, ve_dec[i], x0)

            x = norm(x)
            logits = self.lm_head(x)
            if self.softcap == "tanh":
                logits = 30 * torch.tanh(logits / 30) # @Grad62304977
            else: # @KoszarskyB noticed the tanh softcap is a sigmoid in disguise
                logits = 30 * torch.sigmoid(logits / 7.5)
            logits = logits.float() if float32_logits else logits
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), target_seq.view(-1))
            return loss

    # ------------------------------------------------------------------ train_gpt.py's optimizer setup
    def make_optimizers(model, muon_lr=0.05, muon_weight_decay=0.01):
        # collect the parameters to optimize
        hidden_matrix_params = [p for p in model.blocks.parameters() if p.ndim >= 2]
        embed_params = [model.embed.weight, *model.value_embeds.parameters()]
        scalar_params = [p for p in model.parameters() if p.ndim < 2]
        head_params = [model.lm_head.weight]
        # sanity check
        params_collections = [hidden_matrix_params, embed_params, scalar_params, head_params]
        optimized_parameters_set = {p for params in params_collections for p in params}
        assert optimized_parameters_set == {*model.parameters()}
        assert len(optimized_parameters_set) == sum(len(lst) for lst in params_collections)

        # init the optimizer(s)
        adam_param_groups = [dict(params=head_params, lr=0.008), dict(params=embed_params, lr=0.6),
                             dict(params=scalar_params, lr=0.04)]
        # small adam epsilon by @YouJiacheng. this is an alternate method of fixing the world_size dependence
        optimizer1 = torch.optim.AdamW(adam_param_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
        optimizer2 = Muon(hidden_matrix_params, lr=muon_lr, momentum=0.95, weight_decay=muon_weight_decay)
        optimizers = [optimizer1, optimizer2]
        for opt in optimizers:
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
        return optimizers

    # learning rate schedule: stable then decay
    def get_lr(step, num_iterations, cooldown_frac=0.4):
        x = step / num_iterations # progress in training
        assert 0 <= x < 1
        if x < 1 - cooldown_frac:
            return 1.0
        else:
            w = (1 - x) / cooldown_frac
            return w * 1.0 + (1 - w) * 0.1

    def set_hyperparameters(optimizers, step, num_iterations, momentum_warmup_steps=300):
        # set optimization hyperparameters
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * get_lr(step, num_iterations)
        for group in optimizers[1].param_groups:
            frac = min(step / momentum_warmup_steps, 1) # momentum warmup for muon
            group["momentum"] = (1 - frac) * 0.85 + frac * 0.95

    def train_step(model, optimizers, inputs, targets, zero_optimizers=False):
        # --------------- TRAINING SECTION -----------------
        loss = model(inputs, targets)
        loss.backward()
        # step the optimizers
        for opt in optimizers:
            opt.step()
        # null the gradients
        if zero_optimizers:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
        return loss

    return SimpleNamespace(zeropower_via_newtonschulz5=zeropower_via_newtonschulz5, muon_update=muon_update,
                           Muon=Muon, norm=norm, CastedLinear=CastedLinear, Rotary=Rotary, GPT=GPT,
                           make_optimizers=make_optimizers, get_lr=get_lr, set_hyperparameters=set_hyperparameters,
                           train_step=train_step)

