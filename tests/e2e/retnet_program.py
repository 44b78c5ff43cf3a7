"""RetNets written once as their references write them (``torch`` is ``torch`` or ``kiln``) for
``tests/e2e/test_porting_probes_s4_hyena_retnet.py``: Jamie Stirling's real RetNet with xPos (``src/retention.py``,
``src/xpos_relative_position.py``, ``src/real/retnet.py``) and complex RetNet (``src/complex/retention.py``,
``src/util.py``, ``src/retnet.py``). einops is written as the ``reshape``/``view``/``permute`` it stands for. The
complex RetNet fixes complex64 (``precision="single"``); the float64 runs take a ``"double"`` branch beside it."""

from __future__ import annotations

import math
from copy import deepcopy


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
