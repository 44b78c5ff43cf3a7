"""Two linear-attention LMs, tiny, written once for ``torch`` being torch or kiln: the Performer (FAVOR+ attention, its
projections redrawn) and the Linformer (projected keys and values) as lucidrains writes them: the program of
``test_porting_probes_reformer_performer_longformer.py``, whose docstring says what it covers."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from e2e.reformer_program import SEQ, VOCAB


# ------------------------------------------------------------------------------------------------------------ performer


def performer(torch, nn, F, causal=False, dim=8, depth=2, heads=2, nb_features=None, feature_redraw_interval=2,
              gaussian_seed=7):
    """A PerformerLM as performer_pytorch.py writes it (``SelfAttention`` without local heads, ``PreLayerNorm``,
    ``SequentialSequence``), every ``torch.randn`` of the projections fed from ``np.random.default_rng(gaussian_seed)``
    in draw order (the ``randn`` below), so both libraries QR-decompose the same blocks."""
    rng = np.random.default_rng(gaussian_seed)

    def randn(shape, device=None):  # torch.randn(shape, device=device), fed
        return torch.tensor(rng.standard_normal(shape)).to(torch.get_default_dtype())

    def exists(val):
        return val is not None

    def empty(tensor):
        return tensor.numel() == 0

    def default(val, d):
        return val if exists(val) else d

    def get_module_device(module):
        return next(module.parameters()).device

    def find_modules(nn_module, type):
        return [module for module in nn_module.modules() if isinstance(module, type)]

    def softmax_kernel(data, *, projection_matrix, is_query, normalize_data=True, eps=1e-4, device=None):
        b, h, *_ = data.shape

        data_normalizer = (data.shape[-1] ** -0.25) if normalize_data else 1.

        ratio = (projection_matrix.shape[0] ** -0.5)

        projection = projection_matrix.expand(b, h, -1, -1)  # repeat(projection_matrix, 'j d -> b h j d', b=b, h=h)
        projection = projection.type_as(data)

        data_dash = torch.einsum('...id,...jd->...ij', (data_normalizer * data), projection)

        diag_data = data ** 2
        diag_data = torch.sum(diag_data, dim=-1)
        diag_data = (diag_data / 2.0) * (data_normalizer ** 2)
        diag_data = diag_data.unsqueeze(dim=-1)

        if is_query:
            data_dash = ratio * (
                torch.exp(data_dash - diag_data -
                          torch.amax(data_dash, dim=-1, keepdim=True).detach()) + eps)
        else:
            data_dash = ratio * (
                torch.exp(data_dash - diag_data - torch.amax(data_dash, dim=(-1, -2), keepdim=True).detach()) + eps)

        return data_dash.type_as(data)

    def orthogonal_matrix_chunk(cols, device=None):
        unstructured_block = randn((cols, cols), device=device)
        q, r = torch.linalg.qr(unstructured_block.cpu(), mode='reduced')
        q, r = map(lambda t: t.to(device), (q, r))
        return q.t()

    def gaussian_orthogonal_random_matrix(nb_rows, nb_columns, scaling=0, device=None):
        nb_full_blocks = int(nb_rows / nb_columns)

        block_list = []

        for _ in range(nb_full_blocks):
            q = orthogonal_matrix_chunk(nb_columns, device=device)
            block_list.append(q)

        remaining_rows = nb_rows - nb_full_blocks * nb_columns
        if remaining_rows > 0:
            q = orthogonal_matrix_chunk(nb_columns, device=device)
            block_list.append(q[:remaining_rows])

        final_matrix = torch.cat(block_list)

        if scaling == 0:
            multiplier = randn((nb_rows, nb_columns), device=device).norm(dim=1)
        elif scaling == 1:
            multiplier = math.sqrt((float(nb_columns))) * torch.ones((nb_rows,), device=device)
        else:
            raise ValueError(f'Invalid scaling {scaling}')

        return torch.diag(multiplier) @ final_matrix

    def linear_attention(q, k, v):
        k_cumsum = k.sum(dim=-2)
        D_inv = 1. / torch.einsum('...nd,...d->...n', q, k_cumsum.type_as(q))
        context = torch.einsum('...nd,...ne->...de', k, v)
        out = torch.einsum('...de,...nd,...n->...ne', context, q, D_inv)
        return out

    def causal_linear_attention_noncuda(q, k, v, chunk_size=128, eps=1e-6):
        last_k_cumsum = 0
        last_context_cumsum = 0
        outs = []

        for q, k, v in zip(*map(lambda t: t.chunk(chunk_size, dim=-2), (q, k, v))):
            k_cumsum = last_k_cumsum + k.cumsum(dim=-2)

            D_inv = 1. / torch.einsum('...nd,...nd->...n', q, k_cumsum.type_as(q) + eps)
            context = torch.einsum('...nd,...ne->...nde', k, v)
            context_cumsum = last_context_cumsum + context.cumsum(dim=-3)
            out = torch.einsum('...nde,...nd,...n->...ne', context_cumsum, q, D_inv)

            last_k_cumsum = k_cumsum[:, :, -1:]
            last_context_cumsum = context_cumsum[:, :, -1:]
            outs.append(out)

        return torch.cat(outs, dim=-2)

    class FastAttention(nn.Module):
        def __init__(self, dim_heads, nb_features=None, ortho_scaling=0, causal=False):
            super().__init__()
            nb_features = default(nb_features, int(dim_heads * math.log(dim_heads)))

            self.dim_heads = dim_heads
            self.nb_features = nb_features
            self.ortho_scaling = ortho_scaling

            self.create_projection = partial(gaussian_orthogonal_random_matrix, nb_rows=self.nb_features,
                                             nb_columns=dim_heads, scaling=ortho_scaling)
            projection_matrix = self.create_projection()
            self.register_buffer('projection_matrix', projection_matrix)

            self.causal = causal
            if causal:  # fast_transformers' CUDA kernel is not installed: the reference falls back to this
                self.causal_linear_fn = partial(causal_linear_attention_noncuda, chunk_size=2)

        @torch.no_grad()
        def redraw_projection_matrix(self, device):
            projections = self.create_projection(device=device)
            self.projection_matrix.copy_(projections)
            del projections

        def forward(self, q, k, v):
            device = q.device
            create_kernel = partial(softmax_kernel, projection_matrix=self.projection_matrix, device=device)
            q = create_kernel(q, is_query=True)
            k = create_kernel(k, is_query=False)
            attn_fn = linear_attention if not self.causal else self.causal_linear_fn
            out = attn_fn(q, k, v)
            return out

    class ProjectionUpdater(nn.Module):
        def __init__(self, instance, feature_redraw_interval):
            super().__init__()
            self.instance = instance
            self.feature_redraw_interval = feature_redraw_interval
            self.register_buffer('calls_since_last_redraw', torch.tensor(0))

        def fix_projections_(self):
            self.feature_redraw_interval = None

        def redraw_projections(self):
            model = self.instance

            if not self.training:
                return

            if exists(self.feature_redraw_interval) and self.calls_since_last_redraw >= self.feature_redraw_interval:
                device = get_module_device(model)

                fast_attentions = find_modules(model, FastAttention)
                for fast_attention in fast_attentions:
                    fast_attention.redraw_projection_matrix(device)

                self.calls_since_last_redraw.zero_()
                return

            self.calls_since_last_redraw += 1

    class PreLayerNorm(nn.Module):
        def __init__(self, dim, fn):
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.fn = fn

        def forward(self, x, **kwargs):
            return self.fn(self.norm(x), **kwargs)

    class FeedForward(nn.Module):
        def __init__(self, dim, mult=4, dropout=0., activation=None, glu=False):
            super().__init__()
            activation = default(activation, nn.GELU)
            self.glu = glu
            self.w1 = nn.Linear(dim, dim * mult * (2 if glu else 1))
            self.act = activation()
            self.dropout = nn.Dropout(dropout)
            self.w2 = nn.Linear(dim * mult, dim)

        def forward(self, x, **kwargs):
            if not self.glu:
                x = self.w1(x)
                x = self.act(x)
            else:
                x, v = self.w1(x).chunk(2, dim=-1)
                x = self.act(x) * v
            x = self.dropout(x)
            x = self.w2(x)
            return x

    class SelfAttention(nn.Module):
        def __init__(self, dim, causal=False, heads=8, dim_head=64, nb_features=None, dropout=0.):
            super().__init__()
            assert dim % heads == 0, 'dimension must be divisible by number of heads'
            dim_head = default(dim_head, dim // heads)
            inner_dim = dim_head * heads
            self.fast_attention = FastAttention(dim_head, nb_features, causal=causal)
            self.heads = heads
            self.global_heads = heads
            self.to_q = nn.Linear(dim, inner_dim)
            self.to_k = nn.Linear(dim, inner_dim)
            self.to_v = nn.Linear(dim, inner_dim)
            self.to_out = nn.Linear(inner_dim, dim)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, pos_emb=None, context=None, mask=None, context_mask=None, **kwargs):
            b, n, _, h, gh = *x.shape, self.heads, self.global_heads
            cross_attend = exists(context)
            context = default(context, x)
            context_mask = default(context_mask, mask) if not cross_attend else context_mask
            q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
            # rearrange(t, 'b n (h d) -> b h n d', h=h)
            q, k, v = map(lambda t: t.reshape(b, t.shape[1], h, -1).transpose(1, 2), (q, k, v))
            (q, lq), (k, lk), (v, lv) = map(lambda t: (t[:, :gh], t[:, gh:]), (q, k, v))

            attn_outs = []
            if not empty(q):
                if exists(context_mask):
                    global_mask = context_mask[:, None, :, None]
                    v.masked_fill_(~global_mask, 0.)
                out = self.fast_attention(q, k, v)
                attn_outs.append(out)

            out = torch.cat(attn_outs, dim=1)
            out = out.transpose(1, 2).reshape(b, n, -1)  # rearrange(out, 'b h n d -> b n (h d)')
            out = self.to_out(out)
            return self.dropout(out)

    class SequentialSequence(nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.layers = layers

        def forward(self, x, **kwargs):
            for (f, g) in self.layers:
                x = x + f(x, **kwargs)
                x = x + g(x)
            return x

    class Performer(nn.Module):
        def __init__(self, dim, depth, heads, dim_head, causal=False, ff_mult=4, nb_features=None,
                     feature_redraw_interval=1000, auto_check_redraw=True):
            super().__init__()
            layers = nn.ModuleList([])
            for _ in range(depth):
                layers.append(nn.ModuleList([
                    PreLayerNorm(dim, SelfAttention(dim, causal=causal, heads=heads, dim_head=dim_head,
                                                    nb_features=nb_features)),
                    PreLayerNorm(dim, FeedForward(dim, mult=ff_mult))
                ]))
            self.net = SequentialSequence(layers)
            self.auto_check_redraw = auto_check_redraw
            self.proj_updater = ProjectionUpdater(self.net, feature_redraw_interval)

        def fix_projection_matrices_(self):
            self.proj_updater.feature_redraw_interval = None

        def forward(self, x, **kwargs):
            if self.auto_check_redraw:
                self.proj_updater.redraw_projections()
            return self.net(x, **kwargs)

    class PerformerLM(nn.Module):
        def __init__(self, *, num_tokens, max_seq_len, dim, depth, heads, dim_head=64, causal=False, ff_mult=4,
                     nb_features=None, feature_redraw_interval=1000):
            super().__init__()
            self.max_seq_len = max_seq_len
            self.token_emb = nn.Embedding(num_tokens, dim)
            self.pos_emb = nn.Embedding(max_seq_len, dim)
            nn.init.normal_(self.token_emb.weight, std=0.02)
            nn.init.normal_(self.pos_emb.weight, std=0.02)
            self.performer = Performer(dim, depth, heads, dim_head, causal, ff_mult, nb_features,
                                       feature_redraw_interval)
            self.norm = nn.LayerNorm(dim)
            self.to_out = nn.Linear(dim, num_tokens)

        def fix_projection_matrices_(self):
            self.performer.fix_projection_matrices_()

        def forward(self, x, return_encodings=False, **kwargs):
            _, n, device = *x.shape, x.device  # (b unused, as the reference)
            assert n <= self.max_seq_len, f'sequence length {n} must be less than the max sequence length {self.max_seq_len}'
            x = self.token_emb(x)
            x += self.pos_emb(torch.arange(n, device=device))
            x = self.performer(x, **kwargs)
            x = self.norm(x)
            if return_encodings:
                return x
            return self.to_out(x)

    return PerformerLM(num_tokens=VOCAB, max_seq_len=SEQ, dim=dim, depth=depth, heads=heads, dim_head=dim // heads,
                       causal=causal, nb_features=nb_features, feature_redraw_interval=feature_redraw_interval)


def causal_performer(torch, nn, F):
    return performer(torch, nn, F, causal=True)


# ------------------------------------------------------------------------------------------------------------ linformer


def linformer(torch, nn, F, dim=8, depth=2, heads=2, k=4, one_kv_head=True, share_kv=False):
    """A Linformer LM as lucidrains/linformer writes it (``LinformerSelfAttention``, ``PreNorm``, ``FeedForward``,
    ``SequentialSequence``); ``one_kv_head`` by default, so the key/value head is ``expand``ed over the heads."""

    def default(val, default_val):
        return val if val is not None else default_val

    def init_(tensor):
        dim = tensor.shape[-1]
        std = 1 / math.sqrt(dim)
        tensor.uniform_(-std, std)
        return tensor

    class PreNorm(nn.Module):
        def __init__(self, dim, fn):
            super().__init__()
            self.fn = fn
            self.norm = nn.LayerNorm(dim)

        def forward(self, x):
            x = self.norm(x)
            return self.fn(x)

    class GELU_(nn.Module):
        def forward(self, x):
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))

    GELU = nn.GELU if hasattr(nn, 'GELU') else GELU_

    class FeedForward(nn.Module):
        def __init__(self, dim, mult=4, dropout=0., activation=None, glu=False):
            super().__init__()
            activation = default(activation, GELU)
            self.glu = glu
            self.w1 = nn.Linear(dim, dim * mult * (2 if glu else 1))
            self.act = activation()
            self.dropout = nn.Dropout(dropout)
            self.w2 = nn.Linear(dim * mult, dim)

        def forward(self, x, **kwargs):
            if not self.glu:
                x = self.w1(x)
                x = self.act(x)
            else:
                x, v = self.w1(x).chunk(2, dim=-1)
                x = self.act(x) * v
            x = self.dropout(x)
            x = self.w2(x)
            return x

    class LinformerSelfAttention(nn.Module):
        def __init__(self, dim, seq_len, k=256, heads=8, dim_head=None, one_kv_head=False, share_kv=False,
                     dropout=0.):
            super().__init__()
            assert (dim % heads) == 0, 'dimension must be divisible by the number of heads'
            self.seq_len = seq_len
            self.k = k
            self.heads = heads
            dim_head = default(dim_head, dim // heads)
            self.dim_head = dim_head
            self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
            kv_dim = dim_head if one_kv_head else (dim_head * heads)
            self.to_k = nn.Linear(dim, kv_dim, bias=False)
            self.proj_k = nn.Parameter(init_(torch.zeros(seq_len, k)))
            self.share_kv = share_kv
            if not share_kv:
                self.to_v = nn.Linear(dim, kv_dim, bias=False)
                self.proj_v = nn.Parameter(init_(torch.zeros(seq_len, k)))
            self.dropout = nn.Dropout(dropout)
            self.to_out = nn.Linear(dim_head * heads, dim)

        def forward(self, x, context=None, **kwargs):
            b, n, _, d_h, h, k = *x.shape, self.dim_head, self.heads, self.k  # (d unused, as the reference)

            kv_len = n if context is None else context.shape[1]
            assert kv_len <= self.seq_len, f'the sequence length of the key / values must be {self.seq_len} - {kv_len} given'

            queries = self.to_q(x)

            proj_seq_len = lambda args: torch.einsum('bnd,nk->bkd', *args)  # noqa: E731 (as the reference)

            kv_input = x if context is None else context

            keys = self.to_k(kv_input)
            values = self.to_v(kv_input) if not self.share_kv else keys

            kv_projs = (self.proj_k, self.proj_v if not self.share_kv else self.proj_k)

            # allow for variable sequence lengths (less than maximum sequence length) by slicing projections
            if kv_len < self.seq_len:
                kv_projs = map(lambda t: t[:kv_len], kv_projs)

            # project keys and values along the sequence length dimension to k
            keys, values = map(proj_seq_len, zip((keys, values), kv_projs))

            # merge head into batch for queries and key / values
            queries = queries.reshape(b, n, h, -1).transpose(1, 2)

            merge_key_values = lambda t: t.reshape(b, k, -1, d_h).transpose(1, 2).expand(-1, h, -1, -1)  # noqa: E731
            keys, values = map(merge_key_values, (keys, values))

            # attention
            dots = torch.einsum('bhnd,bhkd->bhnk', queries, keys) * (d_h ** -0.5)
            attn = dots.softmax(dim=-1)
            attn = self.dropout(attn)
            out = torch.einsum('bhnk,bhkd->bhnd', attn, values)

            # split heads
            out = out.transpose(1, 2).reshape(b, n, -1)
            return self.to_out(out)

    class SequentialSequence(nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.layers = layers

        def forward(self, x):
            for attn, ff in self.layers:
                x = x + attn(x)
                x = x + ff(x)
            return x

    class LinformerLM(nn.Module):
        def __init__(self, num_tokens, dim, seq_len, depth, k=256, heads=8, dim_head=None, one_kv_head=False,
                     share_kv=False):
            super().__init__()
            self.token_emb = nn.Embedding(num_tokens, dim)
            self.pos_emb = nn.Embedding(seq_len, dim)
            layers = nn.ModuleList([])
            for _ in range(depth):
                attn = LinformerSelfAttention(dim, seq_len, k=k, heads=heads, dim_head=dim_head,
                                              one_kv_head=one_kv_head, share_kv=share_kv)
                ff = FeedForward(dim)
                layers.append(nn.ModuleList([PreNorm(dim, attn), PreNorm(dim, ff)]))
            self.linformer = SequentialSequence(layers)
            self.to_logits = nn.Linear(dim, num_tokens)

        def forward(self, x):
            x = self.token_emb(x)
            x = self.pos_emb(torch.arange(x.shape[1], device=x.device)) + x
            x = self.linformer(x)
            out = self.to_logits(x)
            return out

    return LinformerLM(VOCAB, dim, SEQ, depth, k=k, heads=heads, one_kv_head=one_kv_head, share_kv=share_kv)


def linformer_shared_kv(torch, nn, F):
    return linformer(torch, nn, F, one_kv_head=False, share_kv=True)
