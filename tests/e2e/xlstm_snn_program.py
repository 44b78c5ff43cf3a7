"""xLSTM as NX-AI's ``xlstm`` package writes its pure-PyTorch parts (``blocks/mlstm/backends.py``, ``blocks/mlstm/
cell.py``, ``blocks/mlstm/layer.py``, ``blocks/slstm/src/vanilla/slstm.py``, ``components/{conv,ln,linear_headwise,
init}.py``, ``xlstm_lm_model.py``) and a spiking network as snnTorch writes it (``snntorch/_neurons/{neurons,leaky}.py``,
``snntorch/surrogate.py``, ``snntorch/functional/{loss,acc}.py``, ``snntorch/utils.py``), for ``torch`` being torch or
kiln: the program of ``test_porting_probes_xlstm_snn.py``, whose docstring says what it covers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np


def xlstm(torch, nn, F):
    """The classes and functions of NX-AI's xlstm (their docstrings shortened, the CUDA kernels left out)."""

    # components/init.py
    def bias_linspace_init_(param: torch.Tensor, start: float = 3.4, end: float = 6.0) -> torch.Tensor:
        """Linearly spaced bias init across dimensions."""
        assert param.dim() == 1, f"param must be 1-dimensional (typically a bias), got {param.dim()}"
        n_dims = param.shape[0]
        init_vals = torch.linspace(start, end, n_dims)
        with torch.no_grad():
            param.copy_(init_vals)
        return param

    def small_init_init_(param: torch.Tensor, dim: int) -> torch.Tensor:
        """Transformers without Tears' small init."""
        std = math.sqrt(2 / (5 * dim))
        torch.nn.init.normal_(param, mean=0.0, std=std)
        return param

    def wang_init_(param: torch.Tensor, dim: int, num_blocks: int):
        std = 2 / num_blocks / math.sqrt(dim)
        torch.nn.init.normal_(param, mean=0.0, std=std)
        return param

    # components/ln.py
    class LayerNorm(nn.Module):
        """LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False."""

        def __init__(self, ndim: int = -1, weight: bool = True, bias: bool = False, eps: float = 1e-5,
                     residual_weight: bool = True):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(ndim)) if weight else None
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
            self.eps = eps
            self.residual_weight = residual_weight
            self.ndim = ndim
            self.reset_parameters()

        @property
        def weight_proxy(self) -> torch.Tensor:
            if self.weight is None:
                return None
            if self.residual_weight:
                return 1.0 + self.weight
            else:
                return self.weight

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return F.layer_norm(input, normalized_shape=(self.ndim,), weight=self.weight_proxy, bias=self.bias,
                                eps=self.eps)

        def reset_parameters(self):
            if self.weight_proxy is not None:
                if self.residual_weight:
                    nn.init.zeros_(self.weight)
                else:
                    nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    class MultiHeadLayerNorm(LayerNorm):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            assert input.dim() == 4, "Input must be 4D tensor (B, NH, S, DH)"
            B, NH, S, DH = input.shape

            gn_in_1 = input.transpose(1, 2)  # (B, S, NH, DH)
            gn_in_2 = gn_in_1.reshape(B * S, NH * DH)  # (B * S, NH * DH)
            out = F.group_norm(
                gn_in_2,
                num_groups=NH,
                weight=self.weight_proxy,
                bias=self.bias,
                eps=self.eps,
            )
            # (B * S), (NH * DH) -> (B, S, NH, DH) -> (B, NH, S, DH)
            out = out.view(B, S, NH, DH).transpose(1, 2)
            return out

    # components/conv.py
    @dataclass
    class CausalConv1dConfig:
        feature_dim: int = None  # F
        kernel_size: int = 4
        causal_conv_bias: bool = True
        channel_mixing: bool = False
        conv1d_kwargs: dict = field(default_factory=dict)

        def __post_init__(self):
            assert self.kernel_size >= 0, "kernel_size must be >= 0"

    def conv1d_step(x, conv_state, conv1d_weight, conv1d_bias=None):
        """x (B, S, D), conv_state (B, KS, D), conv1d_weight (KS, D)."""
        assert x.shape[0] == conv_state.shape[0], (
            f"x has batch size {x.shape[0]} but conv_state has batch size {conv_state.shape[0]}")
        assert x.shape[2] == conv_state.shape[2], (
            f"x has feature dimension {x.shape[2]} but conv_state has feature dimension {conv_state.shape[2]}")
        assert x.shape[1] == 1, f"x has sequence length {x.shape[1]} but it should be 1"
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=1))
        conv_state[:, -1:, :] = x
        y = torch.sum(conv_state * conv1d_weight, dim=1, keepdim=True)
        if conv1d_bias is not None:
            y += conv1d_bias
        return y, conv_state

    class CausalConv1d(nn.Module):
        """Causal depthwise convolution of a (B, T, F) time series."""

        config_class = CausalConv1dConfig

        def __init__(self, config: CausalConv1dConfig):
            super().__init__()
            self.config = config
            self.groups = self.config.feature_dim
            if self.config.channel_mixing:
                self.groups = 1
            if self.config.kernel_size == 0:
                self.conv = None  # Noop
            else:
                self.pad = self.config.kernel_size - 1  # padding of this size assures temporal causality.
                self.conv = nn.Conv1d(
                    in_channels=self.config.feature_dim,
                    out_channels=self.config.feature_dim,
                    kernel_size=self.config.kernel_size,
                    padding=self.pad,
                    groups=self.groups,
                    bias=self.config.causal_conv_bias,
                    **self.config.conv1d_kwargs,
                )
            # B, C, L
            self.reset_parameters()

        def reset_parameters(self, **kwargs):
            self.conv.reset_parameters()

        def _create_weight_decay_optim_groups(self):
            if self.config.kernel_size == 0:
                return (), ()
            else:
                weight_decay = (self.conv.weight,)
                no_weight_decay = ()
                if self.config.causal_conv_bias:
                    no_weight_decay += (self.conv.bias,)
                return weight_decay, no_weight_decay

        def forward(self, x: torch.Tensor, conv_state: torch.Tensor = None, return_last_state: bool = False):
            if conv_state is not None:
                x = torch.cat([conv_state, x], dim=1)

            if self.config.kernel_size == 0:
                return x
            y = x.transpose(2, 1)  # (B,F,T) tensor - now in the right shape for conv layer.
            y = self.conv(y)  # (B,F,T+pad) tensor
            if conv_state is not None:
                y = y[:, :, conv_state.shape[1]:]

            if return_last_state:
                return y[:, :, : -self.pad].transpose(2, 1), x[:, -self.pad:]
            else:
                return y[:, :, : -self.pad].transpose(2, 1)

        def step(self, x: torch.Tensor, conv_state: tuple = None):
            if self.config.kernel_size == 0:
                return x, conv_state

            B, S, D = x.shape

            if conv_state is None:
                conv_state = (
                    torch.zeros(
                        size=(B, self.config.kernel_size, D),
                        device=self.conv.weight.device,
                        dtype=self.conv.weight.dtype,
                    ),
                )

            y, conv_state = conv1d_step(
                x,
                conv_state[0],
                self.conv.weight[:, 0, :].transpose(0, 1),  # rearrange(, "D 1 KS -> KS D")
                conv1d_bias=self.conv.bias,
            )
            return y, (conv_state,)

    # components/linear_headwise.py
    @dataclass
    class LinearHeadwiseExpandConfig:
        in_features: int = 0
        num_heads: int = -1
        expand_factor_up: float = 1
        _out_features: int = -1
        bias: bool = True
        trainable_weight: bool = True
        trainable_bias: bool = True

        def __post_init__(self):
            assert self.num_heads > 0, "num_heads must be set"
            assert self.num_heads <= self.in_features, "num_heads must be <= in_features"
            assert self.in_features % self.num_heads == 0, "in_features must be a multiple of num_heads"

            if self._out_features < 0:
                self._out_features = round(self.expand_factor_up * self.in_features)

    class LinearHeadwiseExpand(nn.Module):
        """A structured (block-diagonal) projection: each head of the input projected separately."""

        config_class = LinearHeadwiseExpandConfig

        def __init__(self, config: LinearHeadwiseExpandConfig):
            super().__init__()
            self.config = config
            in_features = self.config.in_features
            num_heads = self.config.num_heads
            out_features_per_head = config._out_features // num_heads
            self.weight = nn.Parameter(
                torch.empty(num_heads, out_features_per_head, in_features // num_heads),
                requires_grad=config.trainable_weight,
            )
            if config.bias:
                self.bias = nn.Parameter(torch.empty(config._out_features), requires_grad=config.trainable_bias)
            else:
                self.bias = None
            self.reset_parameters()

        def reset_parameters(self, **kwargs):
            # small init
            nn.init.normal_(self.weight.data, mean=0.0, std=math.sqrt(2 / 5 / self.weight.shape[-1]))
            if self.bias is not None:
                nn.init.zeros_(self.bias.data)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            x = x.view(*shape[:-1], self.config.num_heads, -1)
            x = torch.einsum("...hd,hod->...ho", x, self.weight)
            x = x.reshape(*shape[:-1], -1)
            if self.bias is not None:
                x = x + self.bias
            return x

    # blocks/mlstm/backends.py
    def parallel_stabilized_simple(
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        igate_preact: torch.Tensor,
        fgate_preact: torch.Tensor,
        lower_triangular_matrix: torch.Tensor = None,
        stabilize_rowwise: bool = True,
        eps: float = 1e-6,
        **kwargs,
    ) -> torch.Tensor:
        """The mLSTM cell in parallel form, stabilized: (B, NH, S, DH) queries, keys, values, (B, NH, S, 1) gate
        pre-activations -> (B, NH, S, DH) h_tilde_state."""

        B, NH, S, DH = queries.shape
        _dtype, _device = queries.dtype, queries.device

        # forget gate matrix
        log_fgates = torch.nn.functional.logsigmoid(fgate_preact)  # (B, NH, S, 1)
        if lower_triangular_matrix is None or S < lower_triangular_matrix.size(-1):
            ltr = torch.tril(torch.ones((S, S), dtype=torch.bool, device=_device))
        else:
            ltr = lower_triangular_matrix
        assert ltr.dtype == torch.bool, f"lower_triangular_matrix must be of dtype bool, got {ltr.dtype}"

        log_fgates_cumsum = torch.cat(
            [
                torch.zeros((B, NH, 1, 1), dtype=_dtype, device=_device),
                torch.cumsum(log_fgates, dim=-2),
            ],
            dim=-2,
        )  # (B, NH, S+1, 1)
        # for each batch/head this is a matrix of shape (S+1, S+1) containing the cumsum of the log forget gate values
        # in the second dimension (colum dimension). Each row has the same is a copy of the first row.
        # First entry of each row is zero.
        rep_log_fgates_cumsum = log_fgates_cumsum.repeat(1, 1, 1, S + 1)  # (B, NH, S+1, S+1)
        # Now in each row cut off / subtract the forgetgate values of the later timesteps
        # where col j > row i
        _log_fg_matrix = rep_log_fgates_cumsum - rep_log_fgates_cumsum.transpose(-2, -1)  # (B, NH, S+1, S+1)
        # Causal masking & selection of the correct submatrix, such that forgetgate at timestep t is not applied
        # to the input at timestep t
        log_fg_matrix = torch.where(ltr, _log_fg_matrix[:, :, 1:, 1:], -float("inf"))  # (B, NH, S, S)

        # gate decay matrix D (combination of forget gate and input gate)
        log_D_matrix = log_fg_matrix + igate_preact.transpose(-2, -1)  # (B, NH, S, S)
        # D matrix stabilization
        if stabilize_rowwise:
            max_log_D, _ = torch.max(log_D_matrix, dim=-1, keepdim=True)  # (B, NH, S, 1)
        else:
            max_log_D = torch.max(log_D_matrix.view(B, NH, -1), dim=-1, keepdim=True)[0].unsqueeze(-1)
            # (B, NH, 1, 1)
        log_D_matrix_stabilized = log_D_matrix - max_log_D  # (B, NH, S, S)
        D_matrix = torch.exp(log_D_matrix_stabilized)  # (B, NH, S, S)

        keys_scaled = keys / math.sqrt(DH)

        # combination matrix C
        qk_matrix = queries @ keys_scaled.transpose(-2, -1)  # (B, NH, S, S)
        C_matrix = qk_matrix * D_matrix  # (B, NH, S, S)
        normalizer = torch.maximum(C_matrix.sum(dim=-1, keepdim=True).abs(), torch.exp(-max_log_D))  # (B, NH, S, 1)
        # (B, NH, S, S)
        C_matrix_normalized = C_matrix / (normalizer + eps)

        # retrieved values
        h_tilde_state = C_matrix_normalized @ values  # (B, NH, S, DH)

        return h_tilde_state

    def recurrent_step_stabilized_simple(
        c_state: torch.Tensor,
        n_state: torch.Tensor,
        m_state: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        igate_preact: torch.Tensor,
        fgate_preact: torch.Tensor,
        eps: float = 1e-6,
        **kwargs,
    ):
        """One step of the mLSTM in recurrent form: c (B, NH, DH, DH), n (B, NH, DH, 1), m (B, NH, 1, 1), q, k, v
        (B, NH, 1, DH), gate pre-activations (B, NH, 1, 1) -> (h (B, NH, 1, DH), (c, n, m))."""
        B, NH, S, DH = q.shape
        # projections
        q, k, v = q.squeeze_(2).unsqueeze(-1), k.squeeze_(2).unsqueeze(-1), v.squeeze_(2).unsqueeze(-1)  # (B, NH, DH, 1)

        # gates
        log_fg_act = torch.nn.functional.logsigmoid(fgate_preact)  # (B, NH, 1, 1)

        # update rule
        m_state_new = torch.max(log_fg_act + m_state, igate_preact)  # (B, NH, 1, 1)

        fg_act = torch.exp(log_fg_act + m_state - m_state_new)  # (B, NH, 1, 1)
        ig_act = torch.exp(igate_preact - m_state_new)  # (B, NH, 1, 1)

        k_scaled = k / math.sqrt(DH)

        c_state_new = fg_act * c_state + ig_act * (k_scaled @ v.transpose(-1, -2))  # (B, NH, DH, DH)
        n_state_new = fg_act * n_state + ig_act * k_scaled  # (B, NH, DH, 1)

        h_num = q.transpose(-1, -2) @ c_state_new  # (B, NH, 1, DH)

        qn_dotproduct = q.transpose(-1, -2) @ n_state_new  # (B, NH, 1, 1)
        max_val = torch.exp(-m_state_new)  # (B, NH, 1, 1)
        h_denom = torch.maximum(qn_dotproduct.abs(), max_val) + eps
        h = h_num / h_denom  # (B, NH, 1, DH) / (B, NH, 1, 1) = (B, NH, 1, DH)

        return h, (c_state_new, n_state_new, m_state_new)

    # blocks/mlstm/cell.py
    @dataclass
    class mLSTMCellConfig:
        context_length: int = -1
        embedding_dim: int = -1
        num_heads: int = -1

    class mLSTMCell(nn.Module):
        config_class = mLSTMCellConfig

        def __init__(self, config: mLSTMCellConfig):
            super().__init__()
            self.config = config

            self.backend_fn = parallel_stabilized_simple
            self.backend_fn_step = recurrent_step_stabilized_simple

            self.igate = nn.Linear(3 * config.embedding_dim, config.num_heads)
            self.fgate = nn.Linear(3 * config.embedding_dim, config.num_heads)

            self.outnorm = MultiHeadLayerNorm(ndim=config.embedding_dim, weight=True, bias=False)

            self.register_buffer(
                "causal_mask",
                torch.tril(torch.ones(config.context_length, config.context_length, dtype=torch.bool)),
                persistent=False,
            )

            self.reset_parameters()

        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
            B, S, _ = q.shape  # (B, S, H)

            if_gate_input = torch.cat([q, k, v], dim=-1)
            q = q.view(B, S, self.config.num_heads, -1)  # (B, S, NH, DH)
            k = k.view(B, S, self.config.num_heads, -1)  # (B, S, NH, DH)
            v = v.view(B, S, self.config.num_heads, -1)  # (B, S, NH, DH)

            q = q.transpose(1, 2)  # (B, NH, S, DH)
            k = k.transpose(1, 2)  # (B, NH, S, DH)
            v = v.transpose(1, 2)  # (B, NH, S, DH)

            # compute input and forget gate pre-activations
            igate_preact = self.igate(if_gate_input)  # (B, S, NH)
            igate_preact = igate_preact.transpose(-1, -2).unsqueeze(-1)  # (B, NH, S, 1)
            fgate_preact = self.fgate(if_gate_input)  # (B, S, NH)
            fgate_preact = fgate_preact.transpose(-1, -2).unsqueeze(-1)  # (B, NH, S, 1)#

            h_state = self.backend_fn(
                queries=q,
                keys=k,
                values=v,
                igate_preact=igate_preact,
                fgate_preact=fgate_preact,
                lower_triangular_matrix=self.causal_mask,
            )  # (B, NH, S, DH)

            h_state_norm = self.outnorm(h_state)  # (B, NH, S, DH)
            h_state_norm = h_state_norm.transpose(1, 2).reshape(B, S, -1)  # (B, NH, S, DH) -> (B, S, NH, DH) -> (B, S, H)

            return h_state_norm

        def step(self, q, k, v, mlstm_state=None, **kwargs):
            B, S, _ = q.shape  # (B, S, H)
            assert S == 1, f"mLSTMCell.step only supports sequence length S=1, but got S={S}."

            if_gate_input = torch.cat([q, k, v], dim=-1)
            q = q.view(B, S, self.config.num_heads, -1)  # (B, S, NH, DH)
            k = k.view(B, S, self.config.num_heads, -1)  # (B, S, NH, DH)
            v = v.view(B, S, self.config.num_heads, -1)  # (B, S, NH, DH)

            _, _, NH, DH = q.shape

            q = q.transpose(1, 2)  # (B, NH, S, DH)
            k = k.transpose(1, 2)  # (B, NH, S, DH)
            v = v.transpose(1, 2)  # (B, NH, S, DH)

            # compute input and forget gate pre-activations
            igate_preact = self.igate(if_gate_input)  # (B, S, NH)
            igate_preact = igate_preact.transpose(-1, -2).unsqueeze(-1)  # (B, NH, S, 1)
            fgate_preact = self.fgate(if_gate_input)  # (B, S, NH)
            fgate_preact = fgate_preact.transpose(-1, -2).unsqueeze(-1)  # (B, NH, S, 1)

            if mlstm_state is None:
                c_state = torch.zeros(size=(B, NH, DH, DH), device=q.device, dtype=q.dtype)
                n_state = torch.zeros(size=(B, NH, DH, 1), device=q.device, dtype=q.dtype)
                m_state = torch.zeros(size=(B, NH, 1, 1), device=q.device, dtype=q.dtype)
            else:
                c_state, n_state, m_state = mlstm_state
                c_state = c_state.to(device=q.device, dtype=q.dtype)
                n_state = n_state.to(device=q.device, dtype=q.dtype)
                m_state = m_state.to(device=q.device, dtype=q.dtype)

            assert c_state.shape == (B, NH, DH, DH), f"Expected c_state shape {(B, NH, DH, DH)}, but got {c_state.shape}."
            assert n_state.shape == (B, NH, DH, 1), f"Expected n_state shape {(B, NH, DH, 1)}, but got {n_state.shape}."
            assert m_state.shape == (B, NH, 1, 1), f"Expected m_state shape {(B, NH, 1, 1)}, but got {m_state.shape}."

            h_state, mlstm_state = self.backend_fn_step(
                c_state=c_state,
                n_state=n_state,
                m_state=m_state,
                q=q,
                k=k,
                v=v,
                igate_preact=igate_preact,
                fgate_preact=fgate_preact,
            )  # (B, NH, 1 DH), ((B, NH, DH, DH), (B, NH, DH, 1), (B, NH, 1, 1))

            h_state_norm = self.outnorm(h_state)  # (B, NH, S, DH)
            h_state_norm = h_state_norm.transpose(1, 2).reshape(B, S, -1)  # (B, NH, S, DH) -> (B, S, NH, DH) -> (B, S, H)

            return h_state_norm, mlstm_state

        def reset_parameters(self):
            self.outnorm.reset_parameters()
            # forget gate initialization
            torch.nn.init.zeros_(self.fgate.weight)
            bias_linspace_init_(self.fgate.bias, start=3.0, end=6.0)
            # input gate initialization
            torch.nn.init.zeros_(self.igate.weight)
            torch.nn.init.normal_(self.igate.bias, mean=0.0, std=0.1)

    # blocks/mlstm/layer.py
    @dataclass
    class mLSTMLayerConfig:
        conv1d_kernel_size: int = 4
        qkv_proj_blocksize: int = 4
        num_heads: int = 4
        proj_factor: float = 2.0
        embedding_dim: int = -1
        bias: bool = False
        dropout: float = 0.0
        context_length: int = -1
        _num_blocks: int = 1
        _inner_embedding_dim: int = None

        def __post_init__(self):
            self._inner_embedding_dim = round(self.proj_factor * self.embedding_dim)

    class mLSTMLayer(nn.Module):
        config_class = mLSTMLayerConfig

        def __init__(self, config: mLSTMLayerConfig):
            super().__init__()
            self.config = config

            self.proj_up = nn.Linear(
                in_features=self.config.embedding_dim,
                out_features=2 * self.config._inner_embedding_dim,
                bias=self.config.bias,
            )

            num_proj_heads = round(self.config._inner_embedding_dim // self.config.qkv_proj_blocksize)
            self.q_proj = LinearHeadwiseExpand(
                config=LinearHeadwiseExpandConfig(
                    in_features=self.config._inner_embedding_dim,
                    num_heads=num_proj_heads,
                    bias=self.config.bias,
                )
            )
            self.k_proj = LinearHeadwiseExpand(
                config=LinearHeadwiseExpandConfig(
                    in_features=self.config._inner_embedding_dim,
                    num_heads=num_proj_heads,
                    bias=self.config.bias,
                )
            )
            self.v_proj = LinearHeadwiseExpand(
                config=LinearHeadwiseExpandConfig(
                    in_features=self.config._inner_embedding_dim,
                    num_heads=num_proj_heads,
                    bias=self.config.bias,
                )
            )

            self.conv1d = CausalConv1d(
                config=CausalConv1dConfig(
                    feature_dim=self.config._inner_embedding_dim,
                    kernel_size=self.config.conv1d_kernel_size,
                )
            )
            self.conv_act_fn = nn.SiLU()
            self.mlstm_cell = mLSTMCell(
                config=mLSTMCellConfig(
                    context_length=self.config.context_length,
                    embedding_dim=self.config._inner_embedding_dim,
                    num_heads=self.config.num_heads,
                )
            )
            self.ogate_act_fn = nn.SiLU()

            self.learnable_skip = nn.Parameter(torch.ones(self.config._inner_embedding_dim, requires_grad=True))

            self.proj_down = nn.Linear(
                in_features=self.config._inner_embedding_dim,
                out_features=self.config.embedding_dim,
                bias=self.config.bias,
            )
            self.dropout = nn.Dropout(self.config.dropout)
            self.reset_parameters()

        def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
            B, S, _ = x.shape

            # up-projection
            x_inner = self.proj_up(x)
            x_mlstm, z = torch.split(x_inner, split_size_or_sections=self.config._inner_embedding_dim, dim=-1)

            # mlstm branch
            x_mlstm_conv = self.conv1d(x_mlstm)
            x_mlstm_conv_act = self.conv_act_fn(x_mlstm_conv)

            q = self.q_proj(x_mlstm_conv_act)
            k = self.k_proj(x_mlstm_conv_act)
            v = self.v_proj(x_mlstm)

            h_tilde_state = self.mlstm_cell(q=q, k=k, v=v)

            h_tilde_state_skip = h_tilde_state + (self.learnable_skip * x_mlstm_conv_act)

            # output / z branch
            h_state = h_tilde_state_skip * self.ogate_act_fn(z)

            # down-projection
            y = self.dropout(self.proj_down(h_state))
            return y

        def step(self, x: torch.Tensor, mlstm_state=None, conv_state=None):
            B, S, _ = x.shape

            # up-projection
            x_inner = self.proj_up(x)
            x_mlstm, z = torch.split(x_inner, split_size_or_sections=self.config._inner_embedding_dim, dim=-1)

            # mlstm branch
            x_mlstm_conv, conv_state = self.conv1d.step(x_mlstm, conv_state=conv_state)
            x_mlstm_conv_act = self.conv_act_fn(x_mlstm_conv)

            q = self.q_proj(x_mlstm_conv_act)
            k = self.k_proj(x_mlstm_conv_act)
            v = self.v_proj(x_mlstm)

            h_tilde_state, mlstm_state = self.mlstm_cell.step(q=q, k=k, v=v, mlstm_state=mlstm_state)

            h_tilde_state_skip = h_tilde_state + (self.learnable_skip * x_mlstm_conv_act)

            # output / z branch
            h_state = h_tilde_state_skip * self.ogate_act_fn(z)

            # down-projection
            y = self.dropout(self.proj_down(h_state))
            return y, {"mlstm_state": mlstm_state, "conv_state": conv_state}

        def reset_parameters(self):
            # init inproj
            small_init_init_(self.proj_up.weight, dim=self.config.embedding_dim)
            if self.proj_up.bias is not None:
                nn.init.zeros_(self.proj_up.bias)
            # init outproj
            wang_init_(self.proj_down.weight, dim=self.config.embedding_dim, num_blocks=self.config._num_blocks)
            if self.proj_down.bias is not None:
                nn.init.zeros_(self.proj_down.bias)

            nn.init.ones_(self.learnable_skip)

            def _init_qkv_proj(qkv_proj: LinearHeadwiseExpand):
                # use the embedding dim instead of the inner embedding dim
                small_init_init_(qkv_proj.weight, dim=self.config.embedding_dim)
                if qkv_proj.bias is not None:
                    nn.init.zeros_(qkv_proj.bias)

            _init_qkv_proj(self.q_proj)
            _init_qkv_proj(self.k_proj)
            _init_qkv_proj(self.v_proj)

            self.mlstm_cell.reset_parameters()

    # blocks/xlstm_block.py, mLSTM blocks only (no feedforward)
    class xLSTMBlock(nn.Module):
        def __init__(self, config: mLSTMLayerConfig):
            super().__init__()
            self.config = config
            self.xlstm_norm = LayerNorm(ndim=config.embedding_dim, weight=True, bias=False)
            self.xlstm = mLSTMLayer(config)
            self.ffn_norm = None
            self.ffn = None
            self.reset_parameters()

        def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
            x = x + self.xlstm(self.xlstm_norm(x), **kwargs)
            if self.ffn is not None:
                x = x + self.ffn(self.ffn_norm(x), **kwargs)
            return x

        def step(self, x: torch.Tensor, **kwargs):
            x_xlstm, xlstm_state = self.xlstm.step(self.xlstm_norm(x), **kwargs)
            x = x + x_xlstm
            if self.ffn is not None:
                x = x + self.ffn(self.ffn_norm(x), **kwargs)
            return x, xlstm_state

        def reset_parameters(self) -> None:
            self.xlstm.reset_parameters()
            self.xlstm_norm.reset_parameters()

    # xlstm_block_stack.py and xlstm_lm_model.py
    @dataclass
    class xLSTMLMModelConfig:
        vocab_size: int = -1
        embedding_dim: int = 8
        num_blocks: int = 2
        num_heads: int = 2
        context_length: int = 6
        tie_weights: bool = False
        add_embedding_dropout: bool = False
        dropout: float = 0.0

        def block_config(self):
            return mLSTMLayerConfig(num_heads=self.num_heads, embedding_dim=self.embedding_dim,
                                    context_length=self.context_length, dropout=self.dropout,
                                    _num_blocks=self.num_blocks)

    class xLSTMBlockStack(nn.Module):
        def __init__(self, config: xLSTMLMModelConfig):
            super().__init__()
            self.config = config
            self.blocks = nn.ModuleList([xLSTMBlock(config.block_config()) for _ in range(config.num_blocks)])
            self.post_blocks_norm = LayerNorm(ndim=config.embedding_dim)

        def reset_parameters(self) -> None:
            for block in self.blocks:
                block.reset_parameters()
            self.post_blocks_norm.reset_parameters()

        def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
            for block in self.blocks:
                x = block(x, **kwargs)
            x = self.post_blocks_norm(x)
            return x

        def step(self, x: torch.Tensor, state: dict = None):
            if state is None:
                state = {}
            for block_idx, block in enumerate(self.blocks):
                x, state[f"block_{block_idx}"] = block.step(x, **state.get(f"block_{block_idx}", {}))
            x = self.post_blocks_norm(x)
            return x, state

    class WeightDecayOptimGroupMixin:
        """components/util.py's mixin, shortened: the weights of two or more dimensions decay, the rest not."""

        def get_weight_decay_optim_groups(self, **kwargs):
            weight_decay, no_weight_decay = self._create_weight_decay_optim_groups(**kwargs)
            # remove duplicates (tied weights)
            weight_decay = tuple({id(p): p for p in weight_decay}.values())
            no_weight_decay = tuple({id(p): p for p in no_weight_decay}.values())
            assert not ({id(p) for p in weight_decay} & {id(p) for p in no_weight_decay})
            return weight_decay, no_weight_decay

        def _create_weight_decay_optim_groups(self, **kwargs):
            weight_decay, no_weight_decay = [], []
            for name, param in self.named_parameters():
                if param.requires_grad:
                    if param.ndim < 2 or "norm" in name:
                        no_weight_decay.append(param)
                    else:
                        weight_decay.append(param)
            return tuple(weight_decay), tuple(no_weight_decay)

    class xLSTMLMModel(WeightDecayOptimGroupMixin, nn.Module):
        config_class = xLSTMLMModelConfig

        def __init__(self, config: xLSTMLMModelConfig, **kwargs):
            super().__init__()
            self.config = config

            self.xlstm_block_stack = xLSTMBlockStack(config=config)
            self.token_embedding = nn.Embedding(num_embeddings=config.vocab_size, embedding_dim=config.embedding_dim)
            self.emb_dropout = nn.Dropout(config.dropout) if config.add_embedding_dropout else nn.Identity()

            self.lm_head = nn.Linear(
                in_features=config.embedding_dim,
                out_features=config.vocab_size,
                bias=False,
            )
            if config.tie_weights:
                self.lm_head.weight = self.token_embedding.weight
            self.reset_parameters()

        def reset_parameters(self):
            self.xlstm_block_stack.reset_parameters()

            small_init_init_(self.token_embedding.weight, dim=self.config.embedding_dim)

            if not self.config.tie_weights:
                small_init_init_(self.lm_head.weight, dim=self.config.embedding_dim)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.token_embedding(idx)
            x = self.emb_dropout(x)
            x = self.xlstm_block_stack(x)
            logits = self.lm_head(x)
            return logits

        def step(self, idx: torch.Tensor, state: dict = None, **kwargs):
            x = self.token_embedding(idx)
            x = self.emb_dropout(x)
            x, state = self.xlstm_block_stack.step(x, state=state, **kwargs)
            logits = self.lm_head(x)
            return logits, state

    # blocks/slstm/src/vanilla/slstm.py
    def slstm_forward_pointwise(Wx, Ry, b, states, constants):
        """Wx, Ry (B, 4*H), b (1, 4*H), states (4, B, H) -> (new states (4, B, H), gates (4, B, H))."""
        _ = constants
        raw = Wx + Ry + b
        y, c, n, m = torch.unbind(states.view(4, states.shape[1], -1), dim=0)
        # raw = raw.view(-1, 4, -1)
        iraw, fraw, zraw, oraw = torch.unbind(raw.view(raw.shape[0], 4, -1), dim=1)
        # with torch.no_grad():  # THE difference to maxg aka max_gradient (here max / max_static)
        logfplusm = m + torch.nn.functional.logsigmoid(fraw)
        if torch.all(n == 0.0):
            mnew = iraw
        else:
            mnew = torch.max(iraw, logfplusm)
        ogate = torch.sigmoid(oraw)
        igate = torch.exp(iraw - mnew)
        fgate = torch.exp(logfplusm - mnew)
        cnew = fgate * c + igate * torch.tanh(zraw)
        nnew = fgate * n + igate
        ynew = ogate * cnew / nnew

        # shapes ([B,H], [B,H], [B,H]), ([B,H],[B,H],[B,H],[B,H])
        return torch.stack((ynew, cnew, nnew, mnew), dim=0), torch.stack((igate, fgate, zraw, ogate), dim=0)

    def slstm_forward(x, states, R, b, pointwise_forward, constants={}):
        """x (S, B, 4*H), states (4, B, H), R (NH, DH, 4*DH), b (4*H) -> (states_all (4, S+1, B, H), last states,
        gates (S, 4, B, H)); only the first state (y) recurs through R, head by head."""
        num_states = states.shape[0]
        sequence_dim = x.shape[0]
        num_gates_r = R.shape[2] // R.shape[1]
        hidden_dim = R.shape[1] * R.shape[0]
        batch_dim = x.shape[1]
        num_heads = R.shape[0]
        num_gates_t = 4

        assert batch_dim == states.shape[1]
        assert hidden_dim == states.shape[2]

        g = torch.zeros([sequence_dim + 1, num_gates_t, batch_dim, hidden_dim], device=x.device, dtype=x.dtype)

        states_all = torch.zeros([num_states, sequence_dim + 1, batch_dim, hidden_dim], device=x.device, dtype=x.dtype)
        states_all[:, 0] = states
        for i, Wx_t in enumerate(x.unbind(dim=0)):
            Ry = (
                states[0]
                .reshape(batch_dim, num_heads, 1, -1)
                .matmul(R.reshape(1, num_heads, -1, num_gates_r * hidden_dim // num_heads))
                .reshape(batch_dim, num_heads, num_gates_r, -1)
                .transpose(1, 2)
                .reshape(batch_dim, -1)
            )
            sdtype = states.dtype
            states, gates = pointwise_forward(Wx_t, Ry, b, states, constants=constants)
            states = states.to(dtype=sdtype)
            g[i] = gates
            states_all[:, i + 1] = states

        # shapes ([S, B, H], ([B,H], [B,H], [B,H], [B,H])
        return states_all, states, g

    # blocks/slstm/cell.py (the vanilla backend) and blocks/slstm/layer.py, shortened
    @dataclass
    class sLSTMLayerConfig:
        embedding_dim: int = -1
        num_heads: int = 2
        conv1d_kernel_size: int = 4
        dropout: float = 0.0
        _block_idx: int = 0
        _num_blocks: int = 1

        @property
        def head_dim(self):
            return self.embedding_dim // self.num_heads

    class sLSTMCell(nn.Module):
        config_class = sLSTMLayerConfig

        def __init__(self, config: sLSTMLayerConfig):
            super().__init__()
            self.config = config
            NH, DH = config.num_heads, config.head_dim
            self._recurrent_kernel_ = nn.Parameter(torch.empty(NH, DH, 4 * DH))
            self._bias_ = nn.Parameter(torch.empty(NH, 4, DH))
            self.reset_parameters()

        def reset_parameters(self):
            NH, DH = self.config.num_heads, self.config.head_dim
            for h in range(NH):
                for i, gate in enumerate(["i", "f", "z", "o"]):
                    torch.nn.init.uniform_(self._recurrent_kernel_[h, :, i * DH:(i + 1) * DH],
                                           -1.0 / math.sqrt(DH), 1.0 / math.sqrt(DH))
            with torch.no_grad():
                self._bias_.zero_()
                # "powerlaw_blockdependent" forget gate bias
                ratio_0_to_1 = self.config._block_idx / (self.config._num_blocks - 1) if self.config._num_blocks > 1 else 0.0
                self._bias_[:, 1] = -(-5.0 + 12.0 * (torch.arange(DH) / (DH - 1)) ** (0.3 + 1.3 * ratio_0_to_1))

        def forward(self, input, state=None):
            """input (B, S, 4*H) in the gate order i, f, z, o -> (y (B, S, H), last state (4, B, H))."""
            B, S, _ = input.shape
            if state is None:
                state = torch.zeros((4, B, self.config.embedding_dim), dtype=input.dtype, device=input.device)
            bias = self._bias_.transpose(0, 1).reshape(-1)  # (NH, 4, DH) -> (4 * NH * DH) gate-major
            states_all, last_state, _ = slstm_forward(input.transpose(0, 1), state, self._recurrent_kernel_, bias,
                                                      slstm_forward_pointwise)
            y = states_all[0, 1:].transpose(0, 1)
            return y, last_state

    class sLSTMLayer(nn.Module):
        config_class = sLSTMLayerConfig

        def __init__(self, config: sLSTMLayerConfig):
            super().__init__()
            self.config = config

            if self.config.conv1d_kernel_size > 0:
                self.conv1d = CausalConv1d(
                    config=CausalConv1dConfig(
                        feature_dim=self.config.embedding_dim,
                        kernel_size=self.config.conv1d_kernel_size,
                    )
                )
                self.conv_act_fn = nn.SiLU()

            self.fgate = LinearHeadwiseExpand(
                config=LinearHeadwiseExpandConfig(
                    in_features=self.config.embedding_dim,
                    num_heads=self.config.num_heads,
                    bias=False,
                )
            )
            self.igate = LinearHeadwiseExpand(
                config=LinearHeadwiseExpandConfig(
                    in_features=self.config.embedding_dim,
                    num_heads=self.config.num_heads,
                    bias=False,
                )
            )
            self.zgate = LinearHeadwiseExpand(
                config=LinearHeadwiseExpandConfig(
                    in_features=self.config.embedding_dim,
                    num_heads=self.config.num_heads,
                    bias=False,
                )
            )
            self.ogate = LinearHeadwiseExpand(
                config=LinearHeadwiseExpandConfig(
                    in_features=self.config.embedding_dim,
                    num_heads=self.config.num_heads,
                    bias=False,
                )
            )

            self.slstm_cell = sLSTMCell(self.config)
            self.group_norm = MultiHeadLayerNorm(ndim=self.config.embedding_dim)
            self.dropout = nn.Dropout(self.config.dropout)

        def forward(self, x: torch.Tensor, conv_state=None, slstm_state=None, return_last_state=False, **kwargs):
            B, S, _ = x.shape

            if self.config.conv1d_kernel_size > 0:
                if return_last_state:
                    x_conv, conv_state = self.conv1d(x, conv_state, return_last_state=return_last_state)
                else:
                    x_conv = self.conv1d(x, conv_state, return_last_state=return_last_state)
                x_conv = self.conv_act_fn(x_conv)
            else:
                x_conv = x

            i, f, z, o = (
                self.fgate(x_conv),
                self.igate(x_conv),
                self.zgate(x),
                self.ogate(x),
            )

            y, slstm_state = self.slstm_cell(torch.cat([i, f, z, o], dim=-1), state=slstm_state)

            y = self.dropout(y)

            out = self.group_norm(y.view(B, S, self.config.num_heads, -1).transpose(1, 2)).transpose(1, 2).reshape(B, S, -1)

            if return_last_state:
                return out, {"conv_state": conv_state, "slstm_state": slstm_state}
            else:
                return out

    class LinearWarmupCosineAnnealing(torch.optim.lr_scheduler.LRScheduler):
        """experiments/lr_scheduler.py: linear warm-up, then cosine decay to ``min_lr`` at ``decay_until_step``."""

        def __init__(self, optimizer, warmup_steps, decay_until_step, max_lr, min_lr, last_epoch=-1):
            self.warmup_steps = warmup_steps
            self.decay_until_step = decay_until_step
            self.max_lr = max_lr
            self.min_lr = min_lr
            super().__init__(optimizer, last_epoch)

        def get_lr(self):
            return [self._get_lr(self.last_epoch) for _ in self.base_lrs]

        def _get_lr(self, step):
            if step < self.warmup_steps:
                return self.max_lr * (step + 1) / self.warmup_steps
            if step > self.decay_until_step:
                return self.min_lr
            if self.warmup_steps <= step <= self.decay_until_step:
                decay_ratio = (step - self.warmup_steps) / (self.decay_until_step - self.warmup_steps)
                assert 0.0 <= decay_ratio <= 1.0
                coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
                return self.min_lr + coeff * (self.max_lr - self.min_lr)

    return SimpleNamespace(**{name: value for name, value in locals().items()
                              if name not in ("torch", "nn", "F")})


def snntorch(torch, nn, F, float_spikes=True):
    """snnTorch's ``Leaky`` neuron (with ``SpikingNeuron``/``LIF`` bases), its surrogates, losses, accuracy and
    ``utils.reset``, as written (argument checks and unused reset modes shortened). ``float_spikes=False`` makes the
    surrogates return spikes in their input's dtype (``.to(input_.dtype)`` for ``.float()``), the one change a float64
    network needs (``.float()`` spikes fed to a float64 ``nn.Linear`` are a dtype error in torch)."""

    dtype = torch.float

    def spikes_of(input_):
        return (input_ > 0).float() if float_spikes else (input_ > 0).to(input_.dtype)

    # surrogate.py
    class ATan(torch.autograd.Function):
        """Surrogate gradient of the Heaviside step function: the derivative of the shifted arc-tangent."""

        @staticmethod
        def forward(ctx, input_, alpha=2.0):
            ctx.save_for_backward(input_)
            ctx.alpha = alpha
            out = spikes_of(input_)
            return out

        @staticmethod
        def backward(ctx, grad_output):
            (input_,) = ctx.saved_tensors
            grad_input = grad_output.clone()
            grad = (
                ctx.alpha
                / 2
                / (1 + (math.pi / 2 * ctx.alpha * input_).pow_(2))
                * grad_input
            )
            return grad, None

    def atan(alpha=2.0):
        """ArcTan surrogate gradient enclosed with a parameterized slope."""
        alpha = alpha

        def inner(x):
            return ATan.apply(x, alpha)

        return inner

    class FastSigmoid(torch.autograd.Function):
        """Surrogate gradient of the Heaviside step function: the derivative of the fast sigmoid."""

        @staticmethod
        def forward(ctx, input_, slope=25):
            ctx.save_for_backward(input_)
            ctx.slope = slope
            out = spikes_of(input_)
            return out

        @staticmethod
        def backward(ctx, grad_output):
            (input_,) = ctx.saved_tensors
            grad_input = grad_output.clone()
            grad = grad_input / (ctx.slope * torch.abs(input_) + 1.0) ** 2
            return grad, None

    def fast_sigmoid(slope=25):
        """FastSigmoid surrogate gradient enclosed with a parameterized slope."""
        slope = slope

        def inner(x):
            return FastSigmoid.apply(x, slope)

        return inner

    # _neurons/neurons.py
    class SpikingNeuron(nn.Module):
        """Parent class for spiking neuron models."""

        instances = []
        reset_dict = {
            "subtract": 0,
            "zero": 1,
            "none": 2,
        }

        def __init__(
            self,
            threshold=1.0,
            spike_grad=None,
            surrogate_disable=False,
            init_hidden=False,
            inhibition=False,
            learn_threshold=False,
            reset_mechanism="subtract",
            state_quant=False,
            output=False,
            graded_spikes_factor=1.0,
            learn_graded_spikes_factor=False,
        ):
            super().__init__()

            SpikingNeuron.instances.append(self)

            if spike_grad is None:
                self.spike_grad = atan()
            else:
                self.spike_grad = spike_grad

            self.init_hidden = init_hidden
            self.inhibition = inhibition
            self.output = output
            self.surrogate_disable = surrogate_disable

            self._snn_register_buffer(
                threshold=threshold,
                learn_threshold=learn_threshold,
                reset_mechanism=reset_mechanism,
                graded_spikes_factor=graded_spikes_factor,
                learn_graded_spikes_factor=learn_graded_spikes_factor,
            )
            self._reset_mechanism = reset_mechanism
            self.state_quant = state_quant

        def fire(self, mem):
            """Generates spike if mem > threshold. Returns spk."""

            if self.state_quant:
                mem = self.state_quant(mem)

            mem_shift = mem - self.threshold
            spk = self.spike_grad(mem_shift)

            spk = spk * self.graded_spikes_factor

            return spk

        def mem_reset(self, mem):
            """Generates detached reset signal if mem > threshold. Returns reset."""
            mem_shift = mem - self.threshold
            reset = self.spike_grad(mem_shift).clone().detach()

            return reset

        def _snn_register_buffer(self, threshold, learn_threshold, reset_mechanism, graded_spikes_factor,
                                 learn_graded_spikes_factor):
            """Set variables as learnable parameters else register them in the buffer."""

            self._threshold_buffer(threshold, learn_threshold)
            self._graded_spikes_buffer(graded_spikes_factor, learn_graded_spikes_factor)

            # reset buffer
            try:
                # if reset_mechanism_val is loaded from .pt, override
                # reset_mechanism
                if torch.is_tensor(self.reset_mechanism_val):
                    self.reset_mechanism = list(SpikingNeuron.reset_dict)[self.reset_mechanism_val]
            except AttributeError:
                # reset_mechanism_val has not yet been created, create it
                self._reset_mechanism_buffer(reset_mechanism)

        def _graded_spikes_buffer(self, graded_spikes_factor, learn_graded_spikes_factor):
            if not isinstance(graded_spikes_factor, torch.Tensor):
                graded_spikes_factor = torch.as_tensor(graded_spikes_factor)
            if learn_graded_spikes_factor:
                self.graded_spikes_factor = nn.Parameter(graded_spikes_factor)
            else:
                self.register_buffer("graded_spikes_factor", graded_spikes_factor)

        def _threshold_buffer(self, threshold, learn_threshold):
            if not isinstance(threshold, torch.Tensor):
                threshold = torch.as_tensor(threshold)
            if learn_threshold:
                self.threshold = nn.Parameter(threshold)
            else:
                self.register_buffer("threshold", threshold)

        def _reset_mechanism_buffer(self, reset_mechanism):
            """Assign mapping to each reset mechanism state. Must be of type tensor to store in GPU memory."""
            reset_mechanism_val = torch.as_tensor(SpikingNeuron.reset_dict[reset_mechanism])
            self.register_buffer("reset_mechanism_val", reset_mechanism_val)

        @property
        def reset_mechanism(self):
            """0: subtract, 1: zero, 2: none."""
            return self._reset_mechanism

        @reset_mechanism.setter
        def reset_mechanism(self, new_reset_mechanism):
            self.reset_mechanism_val = torch.as_tensor(SpikingNeuron.reset_dict[new_reset_mechanism])
            self._reset_mechanism = new_reset_mechanism

    class LIF(SpikingNeuron):
        """Parent class for leaky integrate and fire neuron models."""

        def __init__(
            self,
            beta,
            threshold=1.0,
            spike_grad=None,
            surrogate_disable=False,
            init_hidden=False,
            inhibition=False,
            learn_beta=False,
            learn_threshold=False,
            reset_mechanism="subtract",
            state_quant=False,
            output=False,
            graded_spikes_factor=1.0,
            learn_graded_spikes_factor=False,
        ):
            super().__init__(
                threshold,
                spike_grad,
                surrogate_disable,
                init_hidden,
                inhibition,
                learn_threshold,
                reset_mechanism,
                state_quant,
                output,
                graded_spikes_factor,
                learn_graded_spikes_factor,
            )

            self._lif_register_buffer(
                beta,
                learn_beta,
            )
            self._reset_mechanism = reset_mechanism

        def _lif_register_buffer(self, beta, learn_beta):
            """Set variables as learnable parameters else register them in the buffer."""
            self._beta_buffer(beta, learn_beta)

        def _beta_buffer(self, beta, learn_beta):
            if not isinstance(beta, torch.Tensor):
                beta = torch.as_tensor(beta)  # TODO: or .tensor() if no copy
            if learn_beta:
                self.beta = nn.Parameter(beta)
            else:
                self.register_buffer("beta", beta)

    # _neurons/leaky.py
    class Leaky(LIF):
        """First-order leaky integrate-and-fire neuron model: U[t+1] = beta U[t] + I_in[t+1] - R U_thr."""

        def __init__(
            self,
            beta,
            threshold=1.0,
            spike_grad=None,
            surrogate_disable=False,
            init_hidden=False,
            inhibition=False,
            learn_beta=False,
            learn_threshold=False,
            reset_mechanism="subtract",
            state_quant=False,
            output=False,
            graded_spikes_factor=1.0,
            learn_graded_spikes_factor=False,
            reset_delay=True,
        ):
            super().__init__(
                beta,
                threshold,
                spike_grad,
                surrogate_disable,
                init_hidden,
                inhibition,
                learn_beta,
                learn_threshold,
                reset_mechanism,
                state_quant,
                output,
                graded_spikes_factor,
                learn_graded_spikes_factor,
            )

            self._init_mem()

            if self.reset_mechanism_val == 0:  # reset by subtraction
                self.state_function = self._base_sub
            elif self.reset_mechanism_val == 1:  # reset to zero
                self.state_function = self._base_zero
            elif self.reset_mechanism_val == 2:  # no reset, pure integration
                self.state_function = self._base_int

            self.reset_delay = reset_delay

        def _init_mem(self):
            mem = torch.zeros(0)
            self.register_buffer("mem", mem, False)

        def reset_mem(self):
            self.mem = torch.zeros_like(self.mem, device=self.mem.device)
            return self.mem

        def init_leaky(self):
            """Deprecated, use :class:`Leaky.reset_mem` instead"""
            return self.reset_mem()

        def forward(self, input_, mem=None):

            if not mem == None:  # noqa: E711 (as written)
                self.mem = mem

            if self.init_hidden and not mem == None:  # noqa: E711
                raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")

            if not self.mem.shape == input_.shape:
                self.mem = torch.zeros_like(input_, device=self.mem.device)

            self.reset = self.mem_reset(self.mem)
            self.mem = self.state_function(input_)

            if self.state_quant:
                self.mem = self.state_quant(self.mem)

            if self.inhibition:
                spk = self.fire_inhibition(self.mem.size(0), self.mem)  # batch_size
            else:
                spk = self.fire(self.mem)

            if not self.reset_delay:
                do_reset = spk / self.graded_spikes_factor - self.reset  # avoid double reset
                if self.reset_mechanism_val == 0:  # reset by subtraction
                    self.mem = self.mem - do_reset * self.threshold
                elif self.reset_mechanism_val == 1:  # reset to zero
                    self.mem = self.mem - do_reset * self.mem

            if self.output:
                return spk, self.mem
            elif self.init_hidden:
                return spk
            else:
                return spk, self.mem

        def _base_state_function(self, input_):
            base_fn = self.beta.clamp(0, 1) * self.mem + input_
            return base_fn

        def _base_sub(self, input_):
            return self._base_state_function(input_) - self.reset * self.threshold

        def _base_zero(self, input_):
            self.mem = (1 - self.reset) * self.mem
            return self._base_state_function(input_)

        def _base_int(self, input_):
            return self._base_state_function(input_)

    # utils.py
    def reset(net):
        """Check for the types of LIF neurons contained in net. Reset their hidden parameters to zero and detach
        them from the current computation graph."""
        for layer in net.modules():
            if hasattr(layer, "reset_mem"):
                layer.reset_mem()
        return net

    # functional/loss.py
    def _prediction_check(spk_out):
        device = spk_out.device
        num_steps = spk_out.size(0)
        num_outputs = spk_out.size(-1)
        return device, num_steps, num_outputs

    class LossFunctions:
        def __init__(self, reduction, weight):
            self.reduction = reduction
            self.weight = weight

        def __call__(self, spk_out, targets):
            loss = self._compute_loss(spk_out, targets)
            return self._reduce(loss)

        def _intermediate_reduction(self):
            return self.reduction if self.reduction != "mean" else "none"

        def _reduce(self, loss):
            # if reduction was mean, we need to manually average the loss
            return loss.mean() if self.reduction == "mean" else loss

    class ce_rate_loss(LossFunctions):
        """Cross entropy of the output spikes at each time step, averaged over time."""

        def __init__(self, population_code=False, num_classes=False, reduction="mean", weight=None):
            super().__init__(reduction=reduction, weight=weight)
            self.population_code = population_code
            self.num_classes = num_classes
            self.__name__ = "ce_rate_loss"

        def _compute_loss(self, spk_out, targets):
            device, num_steps, num_outputs = _prediction_check(spk_out)
            log_softmax_fn = nn.LogSoftmax(dim=-1)
            loss_fn = nn.NLLLoss(reduction=self._intermediate_reduction(), weight=self.weight)

            log_p_y = log_softmax_fn(spk_out)

            loss_shape = (spk_out.size(1)) if self._intermediate_reduction() == "none" else (1)
            loss = torch.zeros(loss_shape, dtype=dtype, device=device)

            for step in range(num_steps):
                loss += loss_fn(log_p_y[step], targets)

            return loss / num_steps

    class ce_count_loss(LossFunctions):
        """Cross entropy of the spike counts summed over time."""

        def __init__(self, population_code=False, num_classes=False, reduction="mean", weight=None):
            super().__init__(reduction=reduction, weight=weight)
            self.population_code = population_code
            self.num_classes = num_classes
            self.__name__ = "ce_count_loss"

        def _compute_loss(self, spk_out, targets):
            log_softmax_fn = nn.LogSoftmax(dim=-1)
            loss_fn = nn.NLLLoss(reduction=self._intermediate_reduction(), weight=self.weight)

            spike_count = torch.sum(spk_out, 0)  # B x C
            log_p_y = log_softmax_fn(spike_count)

            loss = loss_fn(log_p_y, targets)

            return loss

    # functional/acc.py
    def accuracy_rate(spk_out, targets, population_code=False, num_classes=False):
        """The fraction of the batch whose most-spiking output neuron is the target."""
        _, idx = spk_out.sum(dim=0).max(1)
        accuracy = np.mean((targets == idx).detach().cpu().numpy())
        return accuracy

    return SimpleNamespace(**{name: value for name, value in locals().items()
                              if name not in ("torch", "nn", "F")})
