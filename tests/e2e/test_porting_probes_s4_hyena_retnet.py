"""Porting probes: long-sequence models built on complex numbers and FFTs, each written once as its reference writes
it (``torch`` is ``torch`` or ``kiln``) and run in both from kiln's initial weights: the first outputs, the first
gradients, the losses and the state after a few optimizer steps agree to 1e-10 in float64, eagerly and with the whole
step (zero_grad, forward, loss, backward, optimizer step) one ``kiln.compile(fullgraph=True)`` graph against torch's
eager loop; float32 (how they train) at float32's level.

- S4D (state-spaces/s4 ``models/s4/s4d.py`` and ``example.py``): ``S4DKernel`` keeps its complex ``C`` as
  ``nn.Parameter(torch.view_as_real(C))`` and reads ``torch.view_as_complex(self.C)``; ``A = -torch.exp(log_A_real) +
  1j * A_imag``, the Vandermonde kernel ``dtA.unsqueeze(-1) * torch.arange(L)``, ``C * (torch.exp(dtA)-1.) / A``,
  ``2 * torch.einsum('hn, hnl -> hl', C, torch.exp(K)).real``; the FFT convolution ``torch.fft.rfft(u, n=2*L)``,
  ``torch.fft.irfft(u_f*k_f, n=2*L)[..., :L]``, the D skip, GELU, ``Conv1d`` + ``GLU(dim=-2)``; ``S4Model``'s
  post-norm residual stack with ``nn.Dropout1d``; ``register`` sets ``_optim`` on the kernel's parameters
  (``setattr(getattr(self, name), "_optim", optim)``) and ``setup_optimizer`` reads them back (``hasattr``,
  ``frozenset`` dedup, ``optimizer.add_param_group``) for AdamW groups with their own lr and no weight decay, under
  ``CosineAnnealingLR``; the eval loop's ``outputs.max(1)``, ``predicted.eq(targets).sum().item()``.
- Hyena (HazyResearch safari ``standalone_hyena.py``): ``PositionalEmbedding`` (``torch.exp(-1j * f * w)``,
  ``torch.cat([t, z.real, z.imag])``, a parameter with lr 1e-5 and a buffer by ``register(..., lr=0.0)``),
  ``ExponentialModulation``, ``Sin`` with a learned frequency, one ``Sin`` module shared by the implicit filter MLP
  (so ``state_dict`` holds ``implicit_filter.1.freq``, ``.3.freq`` and ``.5.freq``, one parameter), ``_optim`` set
  through ``c.state_dict()`` keys, ``fftconv`` (``rfft(k, n=fft_size) / fft_size``, ``irfft(..., norm='forward')``,
  ``u.to(dtype=k.dtype)``), the short depthwise ``Conv1d(padding=2, groups=inner_width)`` cropped causal,
  ``*x, v = uc.split(d_model, dim=1)``, the order-2 recurrence; einops' ``rearrange`` (not installed here) as the
  ``transpose``/``view``/``permute`` it stands for. The reference's causality check
  (``torch.autograd.grad(y[:, t, :].sum(), x)``) too.
- RetNet (Jamie-Stirling/RetNet ``src/retention.py``, ``xpos_relative_position.py``, ``src/real/retnet.py``): xPos
  (``torch.arange(0, seq_len, dtype=torch.float)`` einsum'd with the default dtype's ``inv_freq``, ``.to(x)``,
  ``rotate_every_two`` by ``torch.stack((-x2, x1), dim=-1).flatten(-2)``, ``duplicate_interleave`` by
  ``view``/``repeat``), the decay mask (``ones_like(..., dtype=torch.bool).triu_(diagonal=1)``,
  ``masked_fill(mask, float("inf"))``, ``gammas ** distance``), ``torch.einsum("bld,ndh->bnlh")``, ``GroupNorm`` over
  ``reshape(-1, v_dim)``, ``nn.Parameter(gammas, requires_grad=False)``, per-head ``SimpleRetention`` modules holding
  ``self.W_Q[i]`` (views of the parameter, read again after the optimizer's in-place steps) for the recurrent form,
  which gives the parallel form's outputs (compiled too); ONNX export of the parallel form run by onnxruntime.
- Complex RetNet (Jamie-Stirling/RetNet ``src/complex/retention.py``, ``src/util.py``, ``src/retnet.py``):
  ``torch.complex(X, torch.zeros_like(X))``, ``torch.exp(i * n * self.theta)`` with ``i = torch.complex(
  torch.tensor(0.0), torch.tensor(1.0))``, ``Theta.conj()``, complex ``nn.Parameter``s ``W_G``, ``W_O`` read as
  ``self.W_G.to(self.complex_type)``, ``D[n, m] = self.gamma ** (n - m)`` written element by element,
  ``ComplexGroupNorm`` (``X.var(dim=2)`` of complex values), ``ComplexLayerNorm`` (``X.abs().var``), a complex swish
  ``x * torch.sigmoid(x)`` and tanh-GELU, the recurrent form with ``torch.tensor(n, dtype=complex_type)``, logits
  ``X.real``. The reference hard-codes complex64 (``precision="single"``); the float64 runs add a ``"double"`` branch
  beside it, the one change a float64 user makes.

ONNX export of the FFT models is refused by kiln by design (``backends/onnx/lowering_fft.py``: onnxruntime's DFT is
not exact enough); the refusal names the op and the user's line (checked).

What broke: the complex RetNet. ``X.var(dim=2, keepdim=True)`` of a complex tensor was refused (torch: the real
variance, ``|z - mean|^2`` averaged), ``torch.sigmoid`` and ``torch.tanh`` of complex values were refused, and
``self.W_G.to(self.complex_type)`` of a complex ``Parameter`` made its stored ``(..., 2)`` real pairs complex (a
matmul shape error). Complex tensors now have ``var``/``std``, ``tanh`` and ``sigmoid`` as torch's, and a complex
parameter's ``.to(complex dtype)`` is its complex tensor (``frontend/complex_tensor.py``,
``frontend/complex_parameter.py``; ``tests/frontend/test_complex_var_tanh_sigmoid_vs_torch.py``). The xPos RetNet's
ONNX export came out of onnxruntime 1e-9 off torch's in float64: ONNX's ``LayerNormalization`` (kiln's layer and group
norm) carries ``epsilon`` as a float32, 1e-5 rounded by 2.5e-13, felt where the variance is small; a float64 norm now
exports spelled out with its float64 eps (``backends/onnx/lowering_nn.py``;
``tests/onnx/test_layer_norm_float64_epsilon.py``). The lockstep helpers load kiln's real pairs into torch's complex
parameters and compare torch's complex state and gradients as pairs (``tests/e2e/probe_lockstep.py``). S4D, Hyena and
the xPos RetNet trained to 1e-10 as first written.
"""

from __future__ import annotations

import io
import math
from copy import deepcopy

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require

# the complex RetNet's recurrent form writes torch.tensor(n, dtype=complex_type) of a tensor n, which torch warns about
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor")

# --------------------------------------------------------------------------------------------------------- S4D


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
            A_imag = math.pi * torch.arange(N//2).unsqueeze(0).expand(H, N//2)  # repeat(torch.arange(N//2), 'n -> h n', h=H)
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


SEQUENCES = np.random.default_rng(0).standard_normal((3, 10, 2))
LABELS = np.random.default_rng(1).integers(0, 3, 3)


def s4_batch(torch):
    return torch.tensor(SEQUENCES, dtype=torch.get_default_dtype()), torch.tensor(LABELS)


def s4_loss(torch, nn, F, model, inputs, targets):
    criterion = nn.CrossEntropyLoss()
    outputs = model(inputs)
    return outputs, criterion(outputs, targets)


def s4_optimizer(torch, model, steps=3):
    return setup_optimizer(torch, model, lr=0.01, weight_decay=0.01, epochs=steps)


def s4_eval(torch, model, inputs, targets, compiled):
    """example.py's eval(): ``model.eval()``, ``torch.no_grad()``, accuracy by ``outputs.max(1)``."""
    model.eval()
    forward = kiln.compile(model, fullgraph=True) if compiled and torch is kiln else model
    with torch.no_grad():
        outputs = forward(inputs)
        _, predicted = outputs.max(1)
        correct = predicted.eq(targets).sum().item()
    return {"eval": array(outputs), "correct": correct}


# -------------------------------------------------------------------------------------------------------- Hyena


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
        """ Interface for Module that allows registering buffers/parameters with configurable optimizer hyperparameters """

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


TOKENS = np.random.default_rng(2).integers(0, 7, (2, 9))


def token_batch(torch):
    return (torch.tensor(TOKENS),)


def next_token_loss(torch, nn, F, model, tokens):
    logits = model(tokens[:, :-1])
    return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))


def hyena_optimizer(torch, model, steps=3):
    return setup_optimizer(torch, model, lr=0.01, weight_decay=0.1, epochs=steps)


# ------------------------------------------------------------------------------------------------ RetNet (xPos)


def retnet(torch, nn, F, layers=2, hidden_dim=8, ffn_size=8, heads=2):
    """src/real/retnet.py's ``RetNet`` of src/retention.py's ``MultiScaleRetention`` (einops replaced)."""

    def fixed_pos_embedding(x):
        seq_len, dim = x.shape
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim) / dim))
        sinusoid_inp = (
            torch.einsum("i , j -> i j", torch.arange(0, seq_len, dtype=torch.float), inv_freq).to(x)
        )
        return torch.sin(sinusoid_inp), torch.cos(sinusoid_inp)

    def rotate_every_two(x):
        x1 = x[:, :, ::2]
        x2 = x[:, :, 1::2]
        x = torch.stack((-x2, x1), dim=-1)
        return x.flatten(-2)

    def duplicate_interleave(m):
        dim0 = m.shape[0]
        m = m.view(-1, 1)  # flatten the matrix
        m = m.repeat(1, 2)  # repeat all elements into the 2nd dimension
        m = m.view(dim0, -1)  # reshape into a matrix, interleaving the copy
        return m

    def apply_rotary_pos_emb(x, sin, cos, scale=1):
        sin, cos = map(lambda t: duplicate_interleave(t * scale), (sin, cos))
        return (x * cos) + (rotate_every_two(x) * sin)

    class XPOS(nn.Module):
        def __init__(self, head_dim, scale_base=512):
            super().__init__()
            self.head_dim = head_dim
            self.scale_base = scale_base
            self.register_buffer(
                "scale", (torch.arange(0, head_dim, 2) + 0.4 * head_dim) / (1.4 * head_dim)
            )

        def forward(self, x, offset=0, downscale=False):
            length = x.shape[1]
            min_pos = 0
            max_pos = length + offset + min_pos
            scale = self.scale ** torch.arange(min_pos, max_pos, 1).to(self.scale).div(self.scale_base)[:, None]
            sin, cos = fixed_pos_embedding(scale)

            if scale.shape[0] > length:
                scale = scale[-length:]
                sin = sin[-length:]
                cos = cos[-length:]

            if downscale:
                scale = 1 / scale

            x = apply_rotary_pos_emb(x, sin, cos, scale)
            return x

    class SimpleRetention(nn.Module):
        def __init__(self, hidden_size, gamma, W_Q=None, W_K=None, W_V=None, head_size=None, double_v_dim=False):
            super(SimpleRetention, self).__init__()
            self.hidden_size = hidden_size
            if head_size is None:
                head_size = hidden_size
            self.head_size = head_size
            self.v_dim = head_size * 2 if double_v_dim else head_size
            self.gamma = gamma
            self.W_Q = nn.Parameter(torch.randn(hidden_size, head_size) / hidden_size) if W_Q is None else W_Q
            self.W_K = nn.Parameter(torch.randn(hidden_size, head_size) / hidden_size) if W_K is None else W_K
            self.W_V = nn.Parameter(torch.randn(hidden_size, self.v_dim) / hidden_size) if W_V is None else W_V
            self.xpos = XPOS(head_size)

        def forward_recurrent(self, x_n, s_n_1, n):
            Q = (x_n @ self.W_Q)
            K = (x_n @ self.W_K)

            Q = self.xpos(Q, n + 1)
            K = self.xpos(K, n + 1, downscale=True)

            V = x_n @ self.W_V
            s_n = self.gamma * s_n_1 + (K.transpose(-1, -2) @ V)
            return (Q @ s_n), s_n

    def _build_decay_gammas(num_heads, device=None, dtype=None):
        xmin, xmax = math.log(1 / 32), math.log(1 / 512)
        x = torch.linspace(xmin, xmax, steps=num_heads, device=device, dtype=dtype)
        return 1 - torch.exp(x)

    def _build_decay_mask(query_length, key_length, decay_gammas, device=None, dtype=None):
        query_pos = torch.arange(query_length, device=device, dtype=dtype)
        key_pos = torch.arange(key_length, device=device, dtype=dtype)

        distance = torch.abs(query_pos.unsqueeze(-1) - key_pos.unsqueeze(0))
        distance_mask = torch.ones_like(distance, dtype=torch.bool, device=device).triu_(diagonal=1)
        distance = distance.masked_fill(distance_mask, float("inf"))

        distance = distance[None]  # rearrange(distance, "n s -> () n s")
        decay_gammas = decay_gammas[:, None, None]  # rearrange(decay_gammas, "h -> h () ()")
        return decay_gammas ** distance

    class MultiScaleRetention(nn.Module):
        def __init__(self, hidden_size, heads, double_v_dim=False):
            super(MultiScaleRetention, self).__init__()
            self.hidden_size = hidden_size
            self.v_dim = hidden_size * 2 if double_v_dim else hidden_size
            self.heads = heads
            assert hidden_size % heads == 0, "hidden_size must be divisible by heads"
            self.head_size = hidden_size // heads
            self.head_v_dim = self.head_size * 2 if double_v_dim else self.head_size
            self.xpos = XPOS(self.head_size)

            self.swish = nn.SiLU()

            self.W_Q = nn.Parameter(torch.randn(self.heads, hidden_size, self.head_size) / hidden_size)
            self.W_K = nn.Parameter(torch.randn(self.heads, hidden_size, self.head_size) / hidden_size)
            self.W_V = nn.Parameter(torch.randn(self.heads, hidden_size, self.head_v_dim) / hidden_size)

            self.gammas_list = _build_decay_gammas(self.heads, self.W_Q.device, self.W_Q.dtype)
            self.gammas = nn.Parameter(self.gammas_list, requires_grad=False)
            self.gammas_list = deepcopy(self.gammas_list).detach().cpu().tolist()

            self.W_G = nn.Parameter(torch.randn(hidden_size, self.v_dim) / hidden_size)
            self.W_O = nn.Parameter(torch.randn(self.v_dim, hidden_size) / hidden_size)
            self.group_norm = nn.GroupNorm(heads, self.v_dim)

            self.retentions = nn.ModuleList([
                SimpleRetention(self.hidden_size, gamma, self.W_Q[i], self.W_K[i],
                                self.W_V[i], self.head_size, double_v_dim)
                for i, gamma in enumerate(self.gammas_list)
            ])

        def forward(self, X):
            batch, sq_len, _ = X.shape
            _, key_len, _ = X.shape
            q_proj = torch.einsum("bld,ndh->bnlh", X, self.W_Q)  # einops' einsum(X, W_Q, "b l d, n d h -> b n l h")
            k_proj = torch.einsum("bld,ndh->bnlh", X, self.W_K)
            v_proj = torch.einsum("bld,ndv->bnlv", X, self.W_V)

            q_proj = q_proj.reshape(-1, sq_len, self.head_size)  # rearrange(q_proj, "b n l h -> (b n) l h")
            k_proj = k_proj.reshape(-1, key_len, self.head_size)
            q_proj = self.xpos(q_proj)
            k_proj = self.xpos(k_proj, downscale=True)
            decay = _build_decay_mask(sq_len, key_len, self.gammas, q_proj.device, dtype=q_proj.dtype).unsqueeze(0)
            ret = q_proj @ k_proj.permute(0, 2, 1)
            ret = ret.view(batch, self.heads, sq_len, key_len)  # rearrange(ret, "(b n) l h -> b n l h", b=batch)
            ret = (ret * decay) @ v_proj
            ret = ret.permute(0, 2, 1, 3).reshape(batch, sq_len, -1)  # rearrange(ret, "b n l h -> b l (n h)")
            ret_shape = ret.shape
            ret = self.group_norm(ret.reshape(-1, self.v_dim)).reshape(ret_shape)

            return (self.swish(X @ self.W_G) * ret) @ self.W_O

        def forward_recurrent(self, x_n, s_n_1s, n):
            Y = []
            s_ns = []
            for i in range(self.heads):
                y, s_n = self.retentions[i].forward_recurrent(
                    x_n[:, :, :], s_n_1s[i], n
                )
                Y.append(y)
                s_ns.append(s_n)

            Y = torch.cat(Y, dim=2)
            Y_shape = Y.shape
            Y = self.group_norm(Y.reshape(-1, self.v_dim)).reshape(Y_shape)

            return (self.swish(x_n @ self.W_G) * Y) @ self.W_O, s_ns

    class RetNet(nn.Module):
        def __init__(self, layers, hidden_dim, ffn_size, heads):
            super(RetNet, self).__init__()
            self.layers = layers
            self.hidden_dim = hidden_dim
            self.ffn_size = ffn_size
            self.heads = heads

            self.retentions = nn.ModuleList([
                MultiScaleRetention(hidden_dim, heads)
                for _ in range(layers)
            ])
            self.ffns = nn.ModuleList([
                nn.Sequential(
                    nn.Linear(hidden_dim, ffn_size),
                    nn.SiLU(),
                    nn.Linear(ffn_size, hidden_dim)
                )
                for _ in range(layers)
            ])
            self.layer_norms_1 = nn.ModuleList([nn.LayerNorm(hidden_dim) for _ in range(layers)])
            self.layer_norms_2 = nn.ModuleList([nn.LayerNorm(hidden_dim) for _ in range(layers)])

        def forward(self, X):
            for i in range(self.layers):
                Y = self.retentions[i](self.layer_norms_1[i](X)) + X
                X = self.ffns[i](self.layer_norms_2[i](Y)) + Y
            return X

        def forward_recurrent(self, x_n, s_n_1s, n):
            s_ns = []
            for i in range(self.layers):
                o_n, s_n = self.retentions[i].forward_recurrent(self.layer_norms_1[i](x_n), s_n_1s[i], n)
                y_n = o_n + x_n
                s_ns.append(s_n)
                x_n = self.ffns[i](self.layer_norms_2[i](y_n)) + y_n
            return x_n, s_ns

    return RetNet(layers, hidden_dim, ffn_size, heads)


RETNET_INPUTS = np.random.default_rng(3).random((2, 5, 8))
RETNET_TARGETS = np.random.default_rng(4).standard_normal((2, 5, 8))


def retnet_batch(torch):
    dtype = torch.get_default_dtype()
    return torch.tensor(RETNET_INPUTS, dtype=dtype), torch.tensor(RETNET_TARGETS, dtype=dtype)


def retnet_loss(torch, nn, F, model, X, target):
    Y = model(X)
    return Y, F.mse_loss(Y, target)


def adam(torch, model):
    return torch.optim.Adam(model.parameters(), lr=0.01), None


def retnet_recurrent(torch, retnet, X, forward_recurrent=None):
    """tests.py's ``test_retnet`` loop: one step per position from zero states."""
    forward_recurrent = forward_recurrent or retnet.forward_recurrent
    batch_size, sequence_length, hidden_size = X.shape
    heads, layers = retnet.heads, retnet.layers
    s_n_1s = [
        [
            torch.zeros(hidden_size // heads, hidden_size // heads).unsqueeze(0).repeat(batch_size, 1, 1)
            for _ in range(heads)
        ]
        for _ in range(layers)
    ]
    Y_recurrent = []
    for i in range(sequence_length):
        y_n, s_ns = forward_recurrent(X[:, i:i+1, :], s_n_1s, i)
        Y_recurrent.append(y_n)
        s_n_1s = s_ns
    return torch.concat(Y_recurrent, dim=1)


def retnet_eval(torch, model, X, target, compiled):
    """The parallel and the recurrent forms after training (the recurrent one reads the heads' ``W_Q[i]`` views of
    the updated parameters); compiled, kiln's ``forward_recurrent`` is ``kiln.compile``d."""
    recurrent_step = kiln.compile(model.forward_recurrent, fullgraph=True) if compiled and torch is kiln else None
    with torch.no_grad():
        return {"parallel": array(model(X)), "recurrent": array(retnet_recurrent(torch, model, X, recurrent_step))}


# ------------------------------------------------------------------------------------------------ complex RetNet


def complex_retnet(torch, nn, F, layers=2, hidden_dim=4, ffn_size=6, heads=2, vocab_size=5, precision=None):
    """src/retnet.py's ``RetNetCLM`` of src/complex/retention.py and src/util.py; ``precision`` None is "double"
    under a float64 default dtype, else the reference's "single"."""
    if precision is None:
        precision = "double" if torch.get_default_dtype() == torch.float64 else "single"

    def types(precision):
        if precision == "double":  # the float64 runs' branch beside the reference's "half" and "single"
            return torch.complex128, torch.float64
        elif precision == "single":
            return torch.complex64, torch.float32

    complex_type, real_type = types(precision)

    class ComplexGroupNorm(nn.Module):
        def __init__(self, num_groups, num_channels, eps=1e-5):
            super(ComplexGroupNorm, self).__init__()
            self.num_groups = num_groups
            self.num_channels = num_channels
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(num_channels, dtype=real_type))
            self.bias = nn.Parameter(torch.zeros(num_channels, dtype=real_type))

        def forward(self, X):
            X = X.reshape(-1, self.num_groups, self.num_channels // self.num_groups)
            mean = X.mean(dim=2, keepdim=True)
            var = X.var(dim=2, keepdim=True)
            X = (X - mean) / torch.sqrt(var + self.eps)
            X = X.reshape(-1, self.num_channels)
            X = X * self.weight + self.bias
            return X

    class ComplexLayerNorm(nn.Module):
        def __init__(self, num_channels, eps=1e-5):
            super(ComplexLayerNorm, self).__init__()
            self.num_channels = num_channels
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(num_channels, dtype=real_type))
            self.bias = nn.Parameter(torch.zeros(num_channels, dtype=real_type))

        def forward(self, X):
            X_shape = X.shape
            X = X.reshape(-1, X_shape[-1])
            mean = X.mean(dim=1, keepdim=True)
            var = X.abs().var(dim=1, keepdim=True)
            X = (X - mean) / torch.sqrt(var + self.eps)
            X = X * self.weight + self.bias
            X = X.reshape(X_shape)
            return X

    class ComplexFFN(nn.Module):
        def __init__(self, hidden_size, ffn_size):
            super(ComplexFFN, self).__init__()
            self.W1 = nn.Parameter(torch.randn(hidden_size, ffn_size, dtype=real_type) / math.sqrt(hidden_size))
            self.W2 = nn.Parameter(torch.randn(ffn_size, hidden_size, dtype=real_type) / math.sqrt(ffn_size))
            self.gelu = lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))

        def forward(self, X):
            X = X @ self.W1.to(X)
            X = self.gelu(X)
            X = X @ self.W2.to(X)
            return X

    class SimpleRetention(nn.Module):
        def __init__(self, hidden_size, gamma, precision="single"):
            super(SimpleRetention, self).__init__()
            self.complex_type, self.real_type = types(precision)
            self.precision = precision
            self.hidden_size = hidden_size
            self.gamma = gamma

            self.i = torch.complex(torch.tensor(0.0), torch.tensor(1.0))

            self.W_Q = nn.Parameter(torch.randn(hidden_size, hidden_size, dtype=self.real_type) / hidden_size)
            self.W_K = nn.Parameter(torch.randn(hidden_size, hidden_size, dtype=self.real_type) / hidden_size)
            self.W_V = nn.Parameter(torch.randn(hidden_size, hidden_size, dtype=self.real_type) / hidden_size)

            self.theta = torch.randn(hidden_size) / hidden_size
            self.theta = nn.Parameter(self.theta)

        def forward(self, X):
            sequence_length = X.shape[1]
            D = self._get_D(sequence_length).to(X.device)

            if X.dtype != self.complex_type:
                X = torch.complex(X, torch.zeros_like(X)).to(self.complex_type)

            i = self.i.to(X.device)
            ns = torch.arange(1, sequence_length + 1, dtype=self.real_type, device=X.device)
            ns = torch.complex(ns, torch.zeros_like(ns)).to(self.complex_type)
            Theta = []

            for n in ns:
                Theta.append(torch.exp(i * n * self.theta))

            Theta = torch.stack(Theta, dim=0)

            Theta_bar = Theta.conj()

            Q = (X @ self.W_Q.to(self.complex_type)) * Theta.unsqueeze(0)
            K = (X @ self.W_K.to(self.complex_type)) * Theta_bar.unsqueeze(0)
            V = X @ self.W_V.to(self.complex_type)
            att = (Q @ K.permute(0, 2, 1)) * D.unsqueeze(0)

            return att @ V

        def forward_recurrent(self, x_n, s_n_1, n):
            if x_n.dtype != self.complex_type:
                x_n = torch.complex(x_n, torch.zeros_like(x_n)).to(self.complex_type)

            n = torch.tensor(n, dtype=self.complex_type, device=x_n.device)

            Theta = torch.exp(self.i * n * self.theta)
            Theta_bar = Theta.conj()

            Q = (x_n @ self.W_Q.to(self.complex_type)) * Theta
            K = (x_n @ self.W_K.to(self.complex_type)) * Theta_bar
            V = x_n @ self.W_V.to(self.complex_type)

            s_n = self.gamma * s_n_1 + K.unsqueeze(2) @ V.unsqueeze(1)

            return (Q.unsqueeze(1) @ s_n).squeeze(1), s_n

        def _get_D(self, sequence_length):
            D = torch.zeros((sequence_length, sequence_length), dtype=self.real_type, requires_grad=False)
            for n in range(sequence_length):
                for m in range(sequence_length):
                    if n >= m:
                        D[n, m] = self.gamma ** (n - m)
            return D.to(self.complex_type)

    class MultiScaleRetention(nn.Module):
        def __init__(self, hidden_size, heads, precision="single"):
            super(MultiScaleRetention, self).__init__()
            self.hidden_size = hidden_size
            self.heads = heads
            self.precision = precision
            assert hidden_size % heads == 0, "hidden_size must be divisible by heads"
            self.head_size = hidden_size // heads
            self.complex_type, self.real_type = types(precision)

            self.gammas = (1 - torch.exp(torch.linspace(math.log(1/32), math.log(1/512), heads,
                                                        dtype=self.real_type))).detach().cpu().tolist()

            self.swish = lambda x: x * torch.sigmoid(x)
            self.W_G = nn.Parameter(torch.randn(hidden_size, hidden_size, dtype=self.complex_type) / hidden_size)
            self.W_O = nn.Parameter(torch.randn(hidden_size, hidden_size, dtype=self.complex_type) / hidden_size)
            self.group_norm = ComplexGroupNorm(heads, hidden_size)

            self.retentions = nn.ModuleList([
                SimpleRetention(self.head_size, gamma, precision) for gamma in self.gammas
            ])

        def forward(self, X):
            if X.dtype != self.complex_type:
                X = torch.complex(X, torch.zeros_like(X)).to(self.complex_type)

            Y = []
            for i in range(self.heads):
                Y.append(self.retentions[i](X[:, :, i*self.head_size:(i+1)*self.head_size]))

            Y = torch.cat(Y, dim=2)
            Y = self.group_norm(Y.reshape(-1, self.hidden_size)).reshape(X.shape)

            return (self.swish(X @ self.W_G.to(self.complex_type)) * Y) @ self.W_O.to(self.complex_type)

        def forward_recurrent(self, x_n, s_n_1s, n):
            if x_n.dtype != self.complex_type:
                x_n = torch.complex(x_n, torch.zeros_like(x_n)).to(self.complex_type)
            n = torch.tensor(n, dtype=self.complex_type, device=x_n.device)

            Y = []
            s_ns = []
            for i in range(self.heads):
                y, s_n = self.retentions[i].forward_recurrent(
                    x_n[:, i*self.head_size:(i+1)*self.head_size], s_n_1s[i], n
                    )
                Y.append(y)
                s_ns.append(s_n)

            Y = torch.cat(Y, dim=1)
            Y = self.group_norm(Y)
            return (self.swish(x_n @ self.W_G.to(self.complex_type)) * Y) @ self.W_O.to(self.complex_type), s_ns

    class RetNet(nn.Module):
        def __init__(self, layers, hidden_dim, ffn_size, heads):
            super(RetNet, self).__init__()
            self.layers = layers
            self.hidden_dim = hidden_dim
            self.ffn_size = ffn_size
            self.heads = heads

            self.retentions = nn.ModuleList([
                MultiScaleRetention(hidden_dim, heads, precision)
                for _ in range(layers)
            ])
            self.ffns = nn.ModuleList([
                ComplexFFN(hidden_dim, ffn_size)
                for _ in range(layers)
            ])
            self.layer_norm = ComplexLayerNorm(hidden_dim)

        def forward(self, X):
            for i in range(self.layers):
                Y = self.retentions[i](self.layer_norm(X)) + X
                X = self.ffns[i](self.layer_norm(Y)) + Y
            return X

        def forward_recurrent(self, x_n, s_n_1s, n):
            s_ns = []
            for i in range(self.layers):
                o_n, s_n = self.retentions[i].forward_recurrent(self.layer_norm(x_n), s_n_1s[i], n)
                y_n = o_n + x_n
                s_ns.append(s_n)
                x_n = self.ffns[i](self.layer_norm(y_n)) + y_n
            return x_n, s_ns

    class RetNetCLM(nn.Module):
        def __init__(self, layers, hidden_dim, ffn_size, heads, vocab_size):
            """NOTE: softmax not included!"""
            super(RetNetCLM, self).__init__()
            self.layers = layers
            self.hidden_dim = hidden_dim
            self.ffn_size = ffn_size
            self.heads = heads
            self.vocab_size = vocab_size

            self.retnet = RetNet(layers, hidden_dim, ffn_size, heads)
            self.embed = nn.Embedding(vocab_size, hidden_dim)
            self.proj = nn.Parameter(torch.randn(hidden_dim, vocab_size, dtype=real_type) / hidden_dim)

        def forward(self, input_ids):
            X = self.embed(input_ids)
            X = self.retnet(X)
            X = X @ self.proj.to(X.dtype)
            return X.real

        def forward_recurrent(self, input_ids, s_n_1s, n):
            X = self.embed(input_ids)
            X, s_ns = self.retnet.forward_recurrent(X, s_n_1s, n)
            X = X @ self.proj.to(X.dtype)
            return X.real, s_ns

    return RetNetCLM(layers, hidden_dim, ffn_size, heads, vocab_size)


CLM_TOKENS = np.random.default_rng(5).integers(0, 5, (2, 6))


def clm_batch(torch):
    return (torch.tensor(CLM_TOKENS),)


def clm_eval(torch, model, tokens, compiled):
    """The parallel logits and ``sample()``'s recurrent loop over the prompt (``forward_recurrent(input_ids[:, i],
    s_n_1s, i+1)`` from zero complex states)."""
    complex_type = model.retnet.retentions[0].complex_type
    size = model.hidden_dim // model.heads
    s_n_1s = [[torch.zeros(size, size, dtype=complex_type).unsqueeze(0).repeat(tokens.shape[0], 1, 1)
               for _ in range(model.heads)] for _ in range(model.layers)]
    recurrent = []
    with torch.no_grad():
        for i in range(tokens.shape[1]):
            X, s_n_1s = model.forward_recurrent(tokens[:, i], s_n_1s, i + 1)
            recurrent.append(X)
        return {"parallel": array(model(tokens)), "recurrent": array(torch.stack(recurrent, dim=1))}


# --------------------------------------------------------------------------------------------------- training


def training(make_batch, loss_of, make_optimizer, evaluate=None, compiled=False, steps=3):
    """A ``run_in_lockstep`` train: ``steps`` optimizer steps (the scheduler stepped after each, as example.py's
    epochs), then ``evaluate(torch, model, *batch, compiled)``. Eagerly it records the first outputs and gradients;
    ``compiled``, kiln's whole step is one ``kiln.compile(fullgraph=True)`` graph (torch's stays eager)."""

    def train(torch, nn, F, model):
        optimizer, scheduler = make_optimizer(torch, model)
        batch = make_batch(torch)
        record = {"losses": [], "groups": [(len(g["params"]), g["lr"], g["weight_decay"])
                                           for g in optimizer.param_groups]}

        def step(*batch):
            optimizer.zero_grad()
            outputs, loss = loss_of(torch, nn, F, model, *batch)
            loss.backward()
            if not compiled:
                record.setdefault("outputs", array(outputs))
                record.setdefault("grads", gradients(model))
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        model.train()
        for _ in range(steps):
            record["losses"].append(run(*batch).item())
            if scheduler is not None:
                scheduler.step()
        record["state"] = snapshot(model)
        if evaluate is not None:
            record.update(evaluate(torch, model, *batch, compiled))
        return record

    return train


WORKLOADS = {
    "s4d": (s4_model, training, (s4_batch, s4_loss, s4_optimizer, s4_eval)),
    "hyena": (hyena, training, (token_batch, next_token_loss, hyena_optimizer)),
    "retnet": (retnet, training, (retnet_batch, retnet_loss, adam, retnet_eval)),
    "complex retnet": (complex_retnet, training, (clm_batch, next_token_loss, adam, clm_eval)),
}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_trains_as_torch_in_float64(name, compiled, float64_default):
    build, make_training, arguments = WORKLOADS[name]
    ours, theirs = run_in_lockstep(build, make_training(*arguments, compiled=compiled))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]
    if "recurrent" in ours:  # the recurrent form gives the parallel form's outputs, in kiln as in the reference
        np.testing.assert_allclose(ours["recurrent"], ours["parallel"], rtol=1e-10, atol=1e-12)


def test_optimizer_groups_read_back_from_the_optim_attributes():
    """s4's kernel parameters carry ``_optim`` (lr 1e-3, no weight decay) into their own AdamW group; Hyena's
    positional embedding (lr 1e-5) and implicit filter (lr 1e-3, weight decay 0) theirs, its shared ``Sin`` frequency
    once, though ``state_dict`` names it three times."""
    kiln.manual_seed(0)
    lib, nn, F = libraries("kiln")
    optimizer, _ = s4_optimizer(lib, s4_model(lib, nn, F))
    assert [(len(g["params"]), g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (16, 0.01, 0.01), (6, 0.001, 0.0)]
    model = hyena(lib, nn, F)
    assert {"mixer.filter_fn.implicit_filter.1.freq", "mixer.filter_fn.implicit_filter.5.freq"} <= set(
        model.state_dict())
    optimizer, _ = hyena_optimizer(lib, model)
    assert [(len(g["params"]), g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (12, 0.01, 0.1), (1, 1e-05, 0.0), (8, 0.001, 0)]


# float32: S4D's kernel gradients (log_A_real, A_imag) are ~1e-8, rounding noise in float32 that AdamW's
# normalisation turns into steps of up to its lr (1e-3), differently in each library: those states compare looser.
FLOAT32_LOOSER = {"kernel.A_imag": dict(rtol=0, atol=2 * 3 * 1e-3), "kernel.log_A_real": dict(rtol=0, atol=2 * 3e-3),
                  "eval": dict(rtol=0, atol=1e-3)}


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_compiled_step_in_float32_as_torch(name):
    build, make_training, arguments = WORKLOADS[name]
    ours, theirs = run_in_lockstep(build, make_training(*arguments, compiled=True))
    assert ours["state"][next(iter(ours["state"]))].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6, looser=FLOAT32_LOOSER)


def test_hyena_is_causal_as_the_reference_checks(float64_default):
    """standalone_hyena.py's check: ``torch.autograd.grad(y[:, t, :].sum(), x)`` is zero at positions after t (FFT
    rounding, 1e-18) and torch's before."""
    grads = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        kiln.manual_seed(0)
        layer = hyena(*libraries("kiln")).mixer
        if torch is not kiln:
            twin = hyena(torch, nn, F).mixer
            twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(layer).items()})
            layer = twin
        x = torch.tensor(np.random.default_rng(6).standard_normal((1, 8, 4)), requires_grad=True)
        y = layer(x)
        grads.append(array(torch.autograd.grad(y[:, 5, :].sum(), x)[0]))
    ours, theirs = grads
    assert np.abs(ours[0, 6:]).max() < 1e-15 and np.abs(ours[0, :6]).sum(-1).min() > 1e-6
    np.testing.assert_allclose(ours[0, :6], theirs[0, :6], rtol=1e-10, atol=1e-13)


def test_retnet_parallel_form_exports_to_onnx_and_runs_in_onnxruntime_as_torch(float64_default):
    """``kiln.onnx.export`` of the xPos RetNet's parallel form, run by onnxruntime: torch's outputs in float64 (its
    GroupNorm and LayerNorms with their float64 eps, not ``LayerNormalization``'s float32 attribute)."""
    onnxruntime = require("onnxruntime")
    outputs = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        kiln.manual_seed(0)
        model = retnet(*libraries("kiln")).eval()
        X = retnet_batch(kiln)[0]
        if torch is kiln:
            buffer = io.BytesIO()
            kiln.onnx.export(model, (X,), buffer, input_names=["X"], output_names=["Y"])
            session = onnxruntime.InferenceSession(buffer.getvalue())
            outputs.append(session.run(None, {"X": RETNET_INPUTS})[0])
        else:
            twin = retnet(torch, nn, F).eval()
            twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
            with torch.no_grad():
                outputs.append(array(twin(torch.tensor(RETNET_INPUTS))))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-10, atol=1e-12)


def test_s4d_onnx_export_is_refused_naming_the_fft_and_the_line():
    """kiln refuses ONNX export of its Fourier transforms (``backends/onnx/lowering_fft.py``), naming the op and the
    user's line."""
    kiln.manual_seed(0)
    model = s4_model(*libraries("kiln")).eval()
    with pytest.raises(kiln.compiler.errors.LoweringError, match=r"fft\.r2c \(from .*test_porting_probes_s4_hyena"):
        kiln.onnx.export(model, (s4_batch(kiln)[0],), io.BytesIO())
