"""S4D (state-spaces/s4 ``models/s4/s4d.py`` with ``example.py``'s ``S4Model`` and ``setup_optimizer``) and the Hyena
operator (HazyResearch safari ``standalone_hyena.py``), each written once as its reference writes it (``torch`` is
``torch`` or ``kiln``) for ``tests/e2e/test_porting_probes_s4_hyena_retnet.py``. einops' ``rearrange`` and ``repeat``
(not installed here) are written as the ``transpose``/``view``/``permute``/``expand`` they stand for; a float64 run
draws S4D's complex ``C`` as ``cdouble`` where the reference writes ``cfloat``."""

from __future__ import annotations

import math


def s4_model(torch, nn, F, d_input=2, d_output=3, d_model=4, n_layers=2, d_state=8, lr=0.001, dropout=0.0):
    """example.py's ``S4Model`` of s4d.py's ``S4D`` layers (``lr=min(0.001, args.lr)`` for the kernel)."""
    complex_dtype = torch.cdouble if torch.get_default_dtype() == torch.float64 else torch.cfloat  # reference: cfloat

    class S4DKernel(nn.Module):
        """Generate convolution kernel from diagonal SSM parameters."""

        def __init__(self, d_model, N=64, dt_min=0.001, dt_max=0.1, lr=None):
            super().__init__()
            H = d_model
            log_dt = torch.rand(H) * (
                math.log(dt_max) - math.log(dt_min)
            ) + math.log(dt_min)

            C = torch.randn(H, N // 2, dtype=complex_dtype)
            self.C = nn.Parameter(torch.view_as_real(C))
            self.register("log_dt", log_dt, lr)

            log_A_real = torch.log(0.5 * torch.ones(H, N//2))
            A_imag = math.pi * torch.arange(N//2).unsqueeze(0).expand(H, N//2)  # repeat(arange(N//2), 'n -> h n', h=H)
            self.register("log_A_real", log_A_real, lr)
            self.register("A_imag", A_imag, lr)

        def forward(self, L):
            dt = torch.exp(self.log_dt)  # (H)
            C = torch.view_as_complex(self.C)  # (H N)
            A = -torch.exp(self.log_A_real) + 1j * self.A_imag  # (H N)

            dtA = A * dt.unsqueeze(-1)  # (H N)
            K = dtA.unsqueeze(-1) * torch.arange(L, device=A.device)  # (H N L)
            C = C * (torch.exp(dtA)-1.) / A
            K = 2 * torch.einsum('hn, hnl -> hl', C, torch.exp(K)).real

            return K

        def register(self, name, tensor, lr=None):
            """Register a tensor with a configurable learning rate and 0 weight decay"""
            if lr == 0.0:
                self.register_buffer(name, tensor)
            else:
                self.register_parameter(name, nn.Parameter(tensor))

                optim = {"weight_decay": 0.0}
                if lr is not None: optim["lr"] = lr  # noqa: E701  (as written)
                setattr(getattr(self, name), "_optim", optim)

    class S4D(nn.Module):
        def __init__(self, d_model, d_state=64, dropout=0.0, transposed=True, **kernel_args):
            super().__init__()
            self.h = d_model
            self.n = d_state
            self.d_output = self.h
            self.transposed = transposed

            self.D = nn.Parameter(torch.randn(self.h))
            self.kernel = S4DKernel(self.h, N=self.n, **kernel_args)
            self.activation = nn.GELU()
            self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()  # DropoutNd in the repository
            self.output_linear = nn.Sequential(
                nn.Conv1d(self.h, 2*self.h, kernel_size=1),
                nn.GLU(dim=-2),
            )

        def forward(self, u, **kwargs):
            """ Input and output shape (B, H, L) """
            if not self.transposed: u = u.transpose(-1, -2)  # noqa: E701
            L = u.size(-1)

            k = self.kernel(L=L)  # (H L)

            k_f = torch.fft.rfft(k, n=2*L)  # (H L)
            u_f = torch.fft.rfft(u, n=2*L)  # (B H L)
            y = torch.fft.irfft(u_f*k_f, n=2*L)[..., :L]  # (B H L)

            y = y + u * self.D.unsqueeze(-1)

            y = self.dropout(self.activation(y))
            y = self.output_linear(y)
            if not self.transposed: y = y.transpose(-1, -2)  # noqa: E701
            return y, None

    class S4Model(nn.Module):
        def __init__(self, d_input, d_output=10, d_model=256, n_layers=4, dropout=0.2, prenorm=False):
            super().__init__()
            self.prenorm = prenorm
            self.encoder = nn.Linear(d_input, d_model)
            self.s4_layers = nn.ModuleList()
            self.norms = nn.ModuleList()
            self.dropouts = nn.ModuleList()
            for _ in range(n_layers):
                self.s4_layers.append(
                    S4D(d_model, d_state=d_state, dropout=dropout, transposed=True, lr=lr)
                )
                self.norms.append(nn.LayerNorm(d_model))
                self.dropouts.append(nn.Dropout1d(dropout))
            self.decoder = nn.Linear(d_model, d_output)

        def forward(self, x):
            """Input x is shape (B, L, d_input)"""
            x = self.encoder(x)  # (B, L, d_input) -> (B, L, d_model)

            x = x.transpose(-1, -2)  # (B, L, d_model) -> (B, d_model, L)
            for layer, norm, dropout in zip(self.s4_layers, self.norms, self.dropouts):
                z = x
                if self.prenorm:
                    z = norm(z.transpose(-1, -2)).transpose(-1, -2)
                z, _ = layer(z)
                z = dropout(z)
                x = z + x
                if not self.prenorm:
                    x = norm(x.transpose(-1, -2)).transpose(-1, -2)

            x = x.transpose(-1, -2)
            x = x.mean(dim=1)
            x = self.decoder(x)  # (B, d_model) -> (B, d_output)
            return x

    return S4Model(d_input, d_output, d_model, n_layers, dropout=dropout)


def setup_optimizer(torch, model, lr, weight_decay, epochs):
    """example.py's: the parameters with an ``_optim`` attribute get their own AdamW groups."""
    optim = torch.optim
    all_parameters = list(model.parameters())
    params = [p for p in all_parameters if not hasattr(p, "_optim")]
    optimizer = optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    hps = [getattr(p, "_optim") for p in all_parameters if hasattr(p, "_optim")]
    hps = [
        dict(s) for s in sorted(list(dict.fromkeys(frozenset(hp.items()) for hp in hps)))
    ]  # Unique dicts
    for hp in hps:
        params = [p for p in all_parameters if getattr(p, "_optim", None) == hp]
        optimizer.add_param_group(
            {"params": params, **hp}
        )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    return optimizer, scheduler


def hyena(torch, nn, F, d_model=4, l_max=8, order=2, filter_order=8, vocab=7):
    """standalone_hyena.py's ``HyenaOperator`` as the mixer of a one-block language model."""

    def fftconv(u, k, D):
        seqlen = u.shape[-1]
        fft_size = 2 * seqlen

        k_f = torch.fft.rfft(k, n=fft_size) / fft_size
        u_f = torch.fft.rfft(u.to(dtype=k.dtype), n=fft_size)

        if len(u.shape) > 3: k_f = k_f.unsqueeze(1)  # noqa: E701
        y = torch.fft.irfft(u_f * k_f, n=fft_size, norm='forward')[..., :seqlen]

        out = y + u * D.unsqueeze(-1)
        return out.to(dtype=u.dtype)

    class OptimModule(nn.Module):
        """Registers buffers/parameters with configurable optimizer hyperparameters"""

        def register(self, name, tensor, lr=None, wd=0.0):
            if lr == 0.0:
                self.register_buffer(name, tensor)
            else:
                self.register_parameter(name, nn.Parameter(tensor))

                optim = {}
                if lr is not None: optim["lr"] = lr  # noqa: E701
                if wd is not None: optim["weight_decay"] = wd  # noqa: E701
                setattr(getattr(self, name), "_optim", optim)

    class Sin(nn.Module):
        def __init__(self, dim, w=10, train_freq=True):
            super().__init__()
            self.freq = nn.Parameter(w * torch.ones(1, dim)) if train_freq else w * torch.ones(1, dim)

        def forward(self, x):
            return torch.sin(self.freq * x)

    class PositionalEmbedding(OptimModule):
        def __init__(self, emb_dim: int, seq_len: int, lr_pos_emb: float = 1e-5, **kwargs):
            """Complex exponential positional embeddings for Hyena filters."""
            super().__init__()

            self.seq_len = seq_len
            t = torch.linspace(0, 1, self.seq_len)[None, :, None]  # 1, L, 1

            if emb_dim > 1:
                bands = (emb_dim - 1) // 2
            t_rescaled = torch.linspace(0, seq_len - 1, seq_len)[None, :, None]
            w = 2 * math.pi * t_rescaled / seq_len  # 1, L, 1

            f = torch.linspace(1e-4, bands - 1, bands)[None, None]
            z = torch.exp(-1j * f * w)
            z = torch.cat([t, z.real, z.imag], dim=-1)
            self.register("z", z, lr=lr_pos_emb)
            self.register("t", t, lr=0.0)

        def forward(self, L):
            return self.z[:, :L], self.t[:, :L]

    class ExponentialModulation(OptimModule):
        def __init__(self, d_model, fast_decay_pct=0.3, slow_decay_pct=1.5, target=1e-2, modulation_lr=0.0,
                     modulate: bool = True, shift: float = 0.0, **kwargs):
            super().__init__()
            self.modulate = modulate
            self.shift = shift
            max_decay = math.log(target) / fast_decay_pct
            min_decay = math.log(target) / slow_decay_pct
            deltas = torch.linspace(min_decay, max_decay, d_model)[None, None]
            self.register("deltas", deltas, lr=modulation_lr)

        def forward(self, t, x):
            if self.modulate:
                decay = torch.exp(-t * self.deltas.abs())
                x = x * (decay + self.shift)
            return x

    class HyenaFilter(OptimModule):
        def __init__(self, d_model, emb_dim=3, order=16, fused_fft_conv=False, seq_len=1024, lr=1e-3,
                     lr_pos_emb=1e-5, dropout=0.0, w=1, wd=0, bias=True, num_inner_mlps=2, normalized=False,
                     **kwargs):
            """Implicit long filter with modulation."""
            super().__init__()
            self.d_model = d_model
            self.use_bias = bias
            self.fused_fft_conv = fused_fft_conv
            self.bias = nn.Parameter(torch.randn(self.d_model))
            self.dropout = nn.Dropout(dropout)

            act = Sin(dim=order, w=w)
            self.emb_dim = emb_dim
            assert emb_dim % 2 != 0 and emb_dim >= 3, "emb_dim must be odd and greater or equal to 3"
            self.seq_len = seq_len

            self.pos_emb = PositionalEmbedding(emb_dim, seq_len, lr_pos_emb)

            self.implicit_filter = nn.Sequential(
                nn.Linear(emb_dim, order),
                act,
            )
            for i in range(num_inner_mlps):
                self.implicit_filter.append(nn.Linear(order, order))
                self.implicit_filter.append(act)

            self.implicit_filter.append(nn.Linear(order, d_model, bias=False))

            self.modulation = ExponentialModulation(d_model, **kwargs)

            self.normalized = normalized
            for c in self.implicit_filter.children():
                for name, v in c.state_dict().items():
                    optim = {"weight_decay": wd, "lr": lr}
                    setattr(getattr(c, name), "_optim", optim)

        def filter(self, L, *args, **kwargs):
            z, t = self.pos_emb(L)
            h = self.implicit_filter(z)
            h = self.modulation(t, h)
            return h

        def forward(self, x, L, k=None, bias=None, *args, **kwargs):
            if k is None: k = self.filter(L)  # noqa: E701
            k = k[0] if type(k) is tuple else k
            y = fftconv(x, k, bias)
            return y

    class HyenaOperator(nn.Module):
        def __init__(self, d_model, l_max, order=2, filter_order=64, dropout=0.0, filter_dropout=0.0,
                     **filter_args):
            super().__init__()
            self.d_model = d_model
            self.l_max = l_max
            self.order = order
            inner_width = d_model * (order + 1)
            self.dropout = nn.Dropout(dropout)
            self.in_proj = nn.Linear(d_model, inner_width)
            self.out_proj = nn.Linear(d_model, d_model)

            self.short_filter = nn.Conv1d(
                inner_width,
                inner_width,
                3,
                padding=2,
                groups=inner_width
            )
            self.filter_fn = HyenaFilter(
                d_model * (order - 1),
                order=filter_order,
                seq_len=l_max,
                channels=1,
                dropout=filter_dropout,
                **filter_args
            )

        def forward(self, u, *args, **kwargs):
            l = u.size(-2)  # noqa: E741
            l_filter = min(l, self.l_max)
            u = self.in_proj(u)
            u = u.transpose(1, 2)  # rearrange(u, 'b l d -> b d l')

            uc = self.short_filter(u)[..., :l_filter]
            *x, v = uc.split(self.d_model, dim=1)

            k = self.filter_fn.filter(l_filter)[0]
            k = k.view(l_filter, self.order - 1, self.d_model).permute(1, 2, 0)  # 'l (o d) -> o d l'
            bias = self.filter_fn.bias.view(self.order - 1, self.d_model)  # rearrange(bias, '(o d) -> o d')

            for o, x_i in enumerate(reversed(x[1:])):
                v = self.dropout(v * x_i)
                v = self.filter_fn(v, l_filter, k=k[o], bias=bias[o])

            y = (v * x[0]).transpose(1, 2)  # rearrange(v * x[0], 'b d l -> b l d')

            y = self.out_proj(y)
            return y

    class HyenaLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, d_model)
            self.mixer = HyenaOperator(d_model, l_max, order=order, filter_order=filter_order)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab)

        def forward(self, tokens):
            x = self.embedding(tokens)
            x = x + self.mixer(self.norm(x))
            return self.head(x)

    return HyenaLM()
