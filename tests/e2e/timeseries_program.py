"""The forecasting models of ``test_porting_probes_timeseries.py``, each written once as its reference repository writes
it (``torch`` is ``torch`` or ``kiln``): Informer (zhouhaoyi/Informer2020 ``models/attn.py``, ``encoder.py``,
``decoder.py``, ``embed.py``, ``utils/masking.py``), Autoformer (thuml/Autoformer ``layers/AutoCorrelation.py``,
``Autoformer_EncDec.py``, ``models/Autoformer.py``), PatchTST (yuqinie98/PatchTST ``layers/PatchTST_backbone.py``,
``RevIN.py``) and DeepAR (zhykoties/TimeSeries ``model/net.py``: an LSTM over lagged inputs and covariates with a
Gaussian head). Small sizes; the departures from the references are marked ``# probe:``."""

from __future__ import annotations

import math
from math import sqrt

import numpy as np

SEQ_LEN, LABEL_LEN, PRED_LEN, CHANNELS, D_MODEL, HEADS, D_FF, MARKS = 8, 4, 4, 2, 8, 2, 16, 3


def fixed_index_sample(torch):
    """Stands for ``torch.randint(L_K, (L_Q, sample_k))`` in ``_prob_QK``: the same indices in both libraries (their
    generators differ) and in every step, drawn from NumPy by the shape."""
    def sample(high, size):
        return torch.tensor(np.random.default_rng(100 * size[0] + size[1]).integers(high, size=size))
    return sample


def informer(torch, nn, F, sample_index=None, output_attention=False):
    """Informer with ProbSparse self-attention (unmasked in the encoder, masked in the decoder), one distilling
    ``ConvLayer`` between the two encoder layers, full cross-attention; ``sample_index`` replaces ``torch.randint``;
    ``output_attention``: the forward also returns the encoder's attention maps (``--output_attention``)."""
    sample_index = sample_index or torch.randint

    class TriangularCausalMask():
        def __init__(self, B, L, device="cpu"):
            mask_shape = [B, 1, L, L]
            with torch.no_grad():
                self._mask = torch.triu(torch.ones(mask_shape, dtype=torch.bool), diagonal=1).to(device)

        @property
        def mask(self):
            return self._mask

    class ProbMask():
        def __init__(self, B, H, L, index, scores, device="cpu"):
            _mask = torch.ones(L, scores.shape[-1], dtype=torch.bool).to(device).triu(1)
            _mask_ex = _mask[None, None, :].expand(B, H, L, scores.shape[-1])
            indicator = _mask_ex[torch.arange(B)[:, None, None],
                                 torch.arange(H)[None, :, None],
                                 index, :].to(device)
            self._mask = indicator.view(scores.shape).to(device)

        @property
        def mask(self):
            return self._mask

    class FullAttention(nn.Module):
        def __init__(self, mask_flag=True, factor=5, scale=None, attention_dropout=0.1, output_attention=False):
            super(FullAttention, self).__init__()
            self.scale = scale
            self.mask_flag = mask_flag
            self.output_attention = output_attention
            self.dropout = nn.Dropout(attention_dropout)

        def forward(self, queries, keys, values, attn_mask):
            B, L, H, E = queries.shape
            _, S, _, D = values.shape
            scale = self.scale or 1. / sqrt(E)
            scores = torch.einsum("blhe,bshe->bhls", queries, keys)
            if self.mask_flag:
                if attn_mask is None:
                    attn_mask = TriangularCausalMask(B, L, device=queries.device)
                scores.masked_fill_(attn_mask.mask, -np.inf)
            A = self.dropout(torch.softmax(scale * scores, dim=-1))
            V = torch.einsum("bhls,bshd->blhd", A, values)
            return (V.contiguous(), A) if self.output_attention else (V.contiguous(), None)

    class ProbAttention(nn.Module):
        def __init__(self, mask_flag=True, factor=5, scale=None, attention_dropout=0.1, output_attention=False):
            super(ProbAttention, self).__init__()
            self.factor = factor
            self.scale = scale
            self.mask_flag = mask_flag
            self.output_attention = output_attention
            self.dropout = nn.Dropout(attention_dropout)

        def _prob_QK(self, Q, K, sample_k, n_top):  # n_top: c*ln(L_q)
            # Q [B, H, L, D]
            B, H, L_K, E = K.shape
            _, _, L_Q, _ = Q.shape
            # calculate the sampled Q_K
            K_expand = K.unsqueeze(-3).expand(B, H, L_Q, L_K, E)
            index_sample = sample_index(L_K, (L_Q, sample_k))  # probe: torch.randint(L_K, (L_Q, sample_k))
            K_sample = K_expand[:, :, torch.arange(L_Q).unsqueeze(1), index_sample, :]
            Q_K_sample = torch.matmul(Q.unsqueeze(-2), K_sample.transpose(-2, -1)).squeeze()
            # find the Top_k query with sparisty measurement
            M = Q_K_sample.max(-1)[0] - torch.div(Q_K_sample.sum(-1), L_K)
            M_top = M.topk(n_top, sorted=False)[1]
            # use the reduced Q to calculate Q_K
            Q_reduce = Q[torch.arange(B)[:, None, None],
                         torch.arange(H)[None, :, None],
                         M_top, :]  # factor*ln(L_q)
            Q_K = torch.matmul(Q_reduce, K.transpose(-2, -1))  # factor*ln(L_q)*L_k
            return Q_K, M_top

        def _get_initial_context(self, V, L_Q):
            B, H, L_V, D = V.shape
            if not self.mask_flag:
                V_sum = V.mean(dim=-2)
                contex = V_sum.unsqueeze(-2).expand(B, H, L_Q, V_sum.shape[-1]).clone()
            else:  # use mask
                assert (L_Q == L_V)  # requires that L_Q == L_V, i.e. for self-attention only
                contex = V.cumsum(dim=-2)
            return contex

        def _update_context(self, context_in, V, scores, index, L_Q, attn_mask):
            B, H, L_V, D = V.shape
            if self.mask_flag:
                attn_mask = ProbMask(B, H, L_Q, index, scores, device=V.device)
                scores.masked_fill_(attn_mask.mask, -np.inf)
            attn = torch.softmax(scores, dim=-1)  # nn.Softmax(dim=-1)(scores)
            context_in[torch.arange(B)[:, None, None],
                       torch.arange(H)[None, :, None],
                       index, :] = torch.matmul(attn, V).type_as(context_in)
            if self.output_attention:
                attns = (torch.ones([B, H, L_V, L_V]) / L_V).type_as(attn).to(attn.device)
                attns[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], index, :] = attn
                return (context_in, attns)
            else:
                return (context_in, None)

        def forward(self, queries, keys, values, attn_mask):
            B, L_Q, H, D = queries.shape
            _, L_K, _, _ = keys.shape
            queries = queries.transpose(2, 1)
            keys = keys.transpose(2, 1)
            values = values.transpose(2, 1)
            U_part = self.factor * np.ceil(np.log(L_K)).astype('int').item()  # c*ln(L_k)
            u = self.factor * np.ceil(np.log(L_Q)).astype('int').item()  # c*ln(L_q)
            U_part = U_part if U_part < L_K else L_K
            u = u if u < L_Q else L_Q
            scores_top, index = self._prob_QK(queries, keys, sample_k=U_part, n_top=u)
            # add scale factor
            scale = self.scale or 1. / sqrt(D)
            if scale is not None:
                scores_top = scores_top * scale
            # get the context
            context = self._get_initial_context(values, L_Q)
            # update the context with selected top_k queries
            context, attn = self._update_context(context, values, scores_top, index, L_Q, attn_mask)
            return context.transpose(2, 1).contiguous(), attn

    class AttentionLayer(nn.Module):
        def __init__(self, attention, d_model, n_heads, d_keys=None, d_values=None, mix=False):
            super(AttentionLayer, self).__init__()
            d_keys = d_keys or (d_model // n_heads)
            d_values = d_values or (d_model // n_heads)
            self.inner_attention = attention
            self.query_projection = nn.Linear(d_model, d_keys * n_heads)
            self.key_projection = nn.Linear(d_model, d_keys * n_heads)
            self.value_projection = nn.Linear(d_model, d_values * n_heads)
            self.out_projection = nn.Linear(d_values * n_heads, d_model)
            self.n_heads = n_heads
            self.mix = mix

        def forward(self, queries, keys, values, attn_mask):
            B, L, _ = queries.shape
            _, S, _ = keys.shape
            H = self.n_heads
            queries = self.query_projection(queries).view(B, L, H, -1)
            keys = self.key_projection(keys).view(B, S, H, -1)
            values = self.value_projection(values).view(B, S, H, -1)
            out, attn = self.inner_attention(queries, keys, values, attn_mask)
            if self.mix:
                out = out.transpose(2, 1).contiguous()
            out = out.view(B, L, -1)
            return self.out_projection(out), attn

    class ConvLayer(nn.Module):
        def __init__(self, c_in):
            super(ConvLayer, self).__init__()
            padding = 1  # probe: `1 if torch.__version__>='1.5.0' else 2` (kiln.__version__ is kiln's own, 0.1.0)
            self.downConv = nn.Conv1d(in_channels=c_in, out_channels=c_in, kernel_size=3, padding=padding,
                                      padding_mode='circular')
            self.norm = nn.BatchNorm1d(c_in)
            self.activation = nn.ELU()
            self.maxPool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

        def forward(self, x):
            x = self.downConv(x.permute(0, 2, 1))
            x = self.norm(x)
            x = self.activation(x)
            x = self.maxPool(x)
            x = x.transpose(1, 2)
            return x

    class EncoderLayer(nn.Module):
        def __init__(self, attention, d_model, d_ff=None, dropout=0.1, activation="relu"):
            super(EncoderLayer, self).__init__()
            d_ff = d_ff or 4 * d_model
            self.attention = attention
            self.conv1 = nn.Conv1d(in_channels=d_model, out_channels=d_ff, kernel_size=1)
            self.conv2 = nn.Conv1d(in_channels=d_ff, out_channels=d_model, kernel_size=1)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.dropout = nn.Dropout(dropout)
            self.activation = F.relu if activation == "relu" else F.gelu

        def forward(self, x, attn_mask=None):
            new_x, attn = self.attention(x, x, x, attn_mask=attn_mask)
            x = x + self.dropout(new_x)
            y = x = self.norm1(x)
            y = self.dropout(self.activation(self.conv1(y.transpose(-1, 1))))
            y = self.dropout(self.conv2(y).transpose(-1, 1))
            return self.norm2(x + y), attn

    class Encoder(nn.Module):
        def __init__(self, attn_layers, conv_layers=None, norm_layer=None):
            super(Encoder, self).__init__()
            self.attn_layers = nn.ModuleList(attn_layers)
            self.conv_layers = nn.ModuleList(conv_layers) if conv_layers is not None else None
            self.norm = norm_layer

        def forward(self, x, attn_mask=None):
            attns = []
            for attn_layer, conv_layer in zip(self.attn_layers, self.conv_layers):
                x, attn = attn_layer(x, attn_mask=attn_mask)
                x = conv_layer(x)
                attns.append(attn)
            x, attn = self.attn_layers[-1](x, attn_mask=attn_mask)
            attns.append(attn)
            if self.norm is not None:
                x = self.norm(x)
            return x, attns

    class DecoderLayer(nn.Module):
        def __init__(self, self_attention, cross_attention, d_model, d_ff=None, dropout=0.1, activation="relu"):
            super(DecoderLayer, self).__init__()
            d_ff = d_ff or 4 * d_model
            self.self_attention = self_attention
            self.cross_attention = cross_attention
            self.conv1 = nn.Conv1d(in_channels=d_model, out_channels=d_ff, kernel_size=1)
            self.conv2 = nn.Conv1d(in_channels=d_ff, out_channels=d_model, kernel_size=1)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.norm3 = nn.LayerNorm(d_model)
            self.dropout = nn.Dropout(dropout)
            self.activation = F.relu if activation == "relu" else F.gelu

        def forward(self, x, cross, x_mask=None, cross_mask=None):
            x = x + self.dropout(self.self_attention(x, x, x, attn_mask=x_mask)[0])
            x = self.norm1(x)
            x = x + self.dropout(self.cross_attention(x, cross, cross, attn_mask=cross_mask)[0])
            y = x = self.norm2(x)
            y = self.dropout(self.activation(self.conv1(y.transpose(-1, 1))))
            y = self.dropout(self.conv2(y).transpose(-1, 1))
            return self.norm3(x + y)

    class Decoder(nn.Module):
        def __init__(self, layers, norm_layer=None):
            super(Decoder, self).__init__()
            self.layers = nn.ModuleList(layers)
            self.norm = norm_layer

        def forward(self, x, cross, x_mask=None, cross_mask=None):
            for layer in self.layers:
                x = layer(x, cross, x_mask=x_mask, cross_mask=cross_mask)
            if self.norm is not None:
                x = self.norm(x)
            return x

    class Informer(nn.Module):
        def __init__(self, enc_in, dec_in, c_out, out_len, factor=1, d_model=D_MODEL, n_heads=HEADS, d_ff=D_FF,
                     dropout=0.0, activation='gelu'):
            super(Informer, self).__init__()
            self.pred_len = out_len
            self.enc_embedding = DataEmbedding(torch, nn, enc_in, d_model)
            self.dec_embedding = DataEmbedding(torch, nn, dec_in, d_model)
            self.encoder = Encoder(
                [EncoderLayer(AttentionLayer(ProbAttention(False, factor, attention_dropout=dropout,
                                                           output_attention=output_attention), d_model, n_heads),
                              d_model, d_ff, dropout=dropout, activation=activation) for _ in range(2)],
                [ConvLayer(d_model)],
                norm_layer=torch.nn.LayerNorm(d_model))
            self.decoder = Decoder(
                [DecoderLayer(AttentionLayer(ProbAttention(True, factor, attention_dropout=dropout), d_model, n_heads),
                              AttentionLayer(FullAttention(False, factor, attention_dropout=dropout), d_model, n_heads),
                              d_model, d_ff, dropout=dropout, activation=activation)],
                norm_layer=torch.nn.LayerNorm(d_model))
            self.projection = nn.Linear(d_model, c_out, bias=True)

        def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
            enc_out = self.enc_embedding(x_enc, x_mark_enc)
            enc_out, attns = self.encoder(enc_out)
            dec_out = self.dec_embedding(x_dec, x_mark_dec)
            dec_out = self.decoder(dec_out, enc_out)
            dec_out = self.projection(dec_out)
            if output_attention:
                return dec_out[:, -self.pred_len:, :], attns
            else:
                return dec_out[:, -self.pred_len:, :]  # [B, L, D]

    return Informer(CHANNELS, CHANNELS, CHANNELS, PRED_LEN)


def DataEmbedding(torch, nn, c_in, d_model, with_position=True):
    """embed.py's ``DataEmbedding`` (``TokenEmbedding`` + ``PositionalEmbedding`` + ``TimeFeatureEmbedding``;
    Autoformer's ``DataEmbedding_wo_pos`` without the position)."""

    class PositionalEmbedding(nn.Module):
        def __init__(self, d_model, max_len=5000):
            super(PositionalEmbedding, self).__init__()
            # Compute the positional encodings once in log space.
            pe = torch.zeros(max_len, d_model).float()
            pe.require_grad = False
            position = torch.arange(0, max_len).float().unsqueeze(1)
            div_term = (torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model)).exp()
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0)
            self.register_buffer('pe', pe)

        def forward(self, x):
            return self.pe[:, :x.size(1)]

    class TokenEmbedding(nn.Module):
        def __init__(self, c_in, d_model):
            super(TokenEmbedding, self).__init__()
            padding = 1  # probe: `1 if torch.__version__>='1.5.0' else 2`
            self.tokenConv = nn.Conv1d(in_channels=c_in, out_channels=d_model, kernel_size=3, padding=padding,
                                       padding_mode='circular')
            for m in self.modules():
                if isinstance(m, nn.Conv1d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='leaky_relu')

        def forward(self, x):
            x = self.tokenConv(x.permute(0, 2, 1)).transpose(1, 2)
            return x

    class TimeFeatureEmbedding(nn.Module):
        def __init__(self, d_model, d_inp=MARKS):
            super(TimeFeatureEmbedding, self).__init__()
            self.embed = nn.Linear(d_inp, d_model, bias=False)

        def forward(self, x):
            return self.embed(x)

    class DataEmbeddingModule(nn.Module):
        def __init__(self, c_in, d_model, dropout=0.0):
            super().__init__()
            self.value_embedding = TokenEmbedding(c_in=c_in, d_model=d_model)
            self.position_embedding = PositionalEmbedding(d_model=d_model) if with_position else None
            self.temporal_embedding = TimeFeatureEmbedding(d_model=d_model)
            self.dropout = nn.Dropout(p=dropout)

        def forward(self, x, x_mark):
            x = self.value_embedding(x) + self.temporal_embedding(x_mark)
            if self.position_embedding is not None:
                x = x + self.position_embedding(x)
            return self.dropout(x)

    return DataEmbeddingModule(c_in, d_model)


def autoformer(torch, nn, F, moving_avg=3, factor=1):
    """Autoformer: series decomposition, two encoder layers and one decoder layer of AutoCorrelation (the training
    aggregation with ``torch.roll`` in train mode, the inference one with ``torch.gather`` in eval mode)."""

    class my_Layernorm(nn.Module):
        """Special designed layernorm for the seasonal part"""
        def __init__(self, channels):
            super(my_Layernorm, self).__init__()
            self.layernorm = nn.LayerNorm(channels)

        def forward(self, x):
            x_hat = self.layernorm(x)
            bias = torch.mean(x_hat, dim=1).unsqueeze(1).repeat(1, x.shape[1], 1)
            return x_hat - bias

    class moving_avg_block(nn.Module):  # probe: `moving_avg` in the reference (the name is this builder's argument)
        """Moving average block to highlight the trend of time series"""
        def __init__(self, kernel_size, stride):
            super(moving_avg_block, self).__init__()
            self.kernel_size = kernel_size
            self.avg = nn.AvgPool1d(kernel_size=kernel_size, stride=stride, padding=0)

        def forward(self, x):
            # padding on the both ends of time series
            front = x[:, 0:1, :].repeat(1, (self.kernel_size - 1) // 2, 1)
            end = x[:, -1:, :].repeat(1, (self.kernel_size - 1) // 2, 1)
            x = torch.cat([front, x, end], dim=1)
            x = self.avg(x.permute(0, 2, 1))
            x = x.permute(0, 2, 1)
            return x

    class series_decomp(nn.Module):
        """Series decomposition block"""
        def __init__(self, kernel_size):
            super(series_decomp, self).__init__()
            self.moving_avg = moving_avg_block(kernel_size, stride=1)

        def forward(self, x):
            moving_mean = self.moving_avg(x)
            res = x - moving_mean
            return res, moving_mean

    class AutoCorrelation(nn.Module):
        def __init__(self, mask_flag=True, factor=1, scale=None, attention_dropout=0.1, output_attention=False):
            super(AutoCorrelation, self).__init__()
            self.factor = factor
            self.scale = scale
            self.mask_flag = mask_flag
            self.output_attention = output_attention
            self.dropout = nn.Dropout(attention_dropout)

        def time_delay_agg_training(self, values, corr):
            """SpeedUp version of Autocorrelation (a batch-normalization style design); for the training phase."""
            head = values.shape[1]
            channel = values.shape[2]
            length = values.shape[3]
            # find top k
            top_k = int(self.factor * math.log(length))
            mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
            index = torch.topk(torch.mean(mean_value, dim=0), top_k, dim=-1)[1]
            weights = torch.stack([mean_value[:, index[i]] for i in range(top_k)], dim=-1)
            # update corr
            tmp_corr = torch.softmax(weights, dim=-1)
            # aggregation
            tmp_values = values
            delays_agg = torch.zeros_like(values).float()
            for i in range(top_k):
                pattern = torch.roll(tmp_values, -int(index[i]), -1)
                delays_agg = delays_agg + pattern * \
                    (tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length))
            return delays_agg

        def time_delay_agg_inference(self, values, corr):
            """SpeedUp version of Autocorrelation (a batch-normalization style design); for the inference phase."""
            batch = values.shape[0]
            head = values.shape[1]
            channel = values.shape[2]
            length = values.shape[3]
            # index init
            init_index = torch.arange(length).unsqueeze(0).unsqueeze(0).unsqueeze(0)\
                .repeat(batch, head, channel, 1).to(values.device)  # probe: .cuda() in the reference
            # find top k
            top_k = int(self.factor * math.log(length))
            mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
            weights, delay = torch.topk(mean_value, top_k, dim=-1)
            # update corr
            tmp_corr = torch.softmax(weights, dim=-1)
            # aggregation
            tmp_values = values.repeat(1, 1, 1, 2)
            delays_agg = torch.zeros_like(values).float()
            for i in range(top_k):
                tmp_delay = init_index + delay[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1)\
                    .repeat(1, head, channel, length)
                pattern = torch.gather(tmp_values, dim=-1, index=tmp_delay)
                delays_agg = delays_agg + pattern * \
                    (tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length))
            return delays_agg

        def forward(self, queries, keys, values, attn_mask):
            B, L, H, E = queries.shape
            _, S, _, D = values.shape
            if L > S:
                zeros = torch.zeros_like(queries[:, :(L - S), :]).float()
                values = torch.cat([values, zeros], dim=1)
                keys = torch.cat([keys, zeros], dim=1)
            else:
                values = values[:, :L, :, :]
                keys = keys[:, :L, :, :]
            # period-based dependencies
            q_fft = torch.fft.rfft(queries.permute(0, 2, 3, 1).contiguous(), dim=-1)
            k_fft = torch.fft.rfft(keys.permute(0, 2, 3, 1).contiguous(), dim=-1)
            res = q_fft * torch.conj(k_fft)
            corr = torch.fft.irfft(res, n=L, dim=-1)
            # time delay agg
            if self.training:
                V = self.time_delay_agg_training(values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2)
            else:
                V = self.time_delay_agg_inference(values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2)
            if self.output_attention:
                return (V.contiguous(), corr.permute(0, 3, 1, 2))
            else:
                return (V.contiguous(), None)

    class AutoCorrelationLayer(nn.Module):
        def __init__(self, correlation, d_model, n_heads, d_keys=None, d_values=None):
            super(AutoCorrelationLayer, self).__init__()
            d_keys = d_keys or (d_model // n_heads)
            d_values = d_values or (d_model // n_heads)
            self.inner_correlation = correlation
            self.query_projection = nn.Linear(d_model, d_keys * n_heads)
            self.key_projection = nn.Linear(d_model, d_keys * n_heads)
            self.value_projection = nn.Linear(d_model, d_values * n_heads)
            self.out_projection = nn.Linear(d_values * n_heads, d_model)
            self.n_heads = n_heads

        def forward(self, queries, keys, values, attn_mask):
            B, L, _ = queries.shape
            _, S, _ = keys.shape
            H = self.n_heads
            queries = self.query_projection(queries).view(B, L, H, -1)
            keys = self.key_projection(keys).view(B, S, H, -1)
            values = self.value_projection(values).view(B, S, H, -1)
            out, attn = self.inner_correlation(queries, keys, values, attn_mask)
            out = out.view(B, L, -1)
            return self.out_projection(out), attn

    class EncoderLayer(nn.Module):
        def __init__(self, attention, d_model, d_ff=None, moving_avg=25, dropout=0.1, activation="relu"):
            super(EncoderLayer, self).__init__()
            d_ff = d_ff or 4 * d_model
            self.attention = attention
            self.conv1 = nn.Conv1d(in_channels=d_model, out_channels=d_ff, kernel_size=1, bias=False)
            self.conv2 = nn.Conv1d(in_channels=d_ff, out_channels=d_model, kernel_size=1, bias=False)
            self.decomp1 = series_decomp(moving_avg)
            self.decomp2 = series_decomp(moving_avg)
            self.dropout = nn.Dropout(dropout)
            self.activation = F.relu if activation == "relu" else F.gelu

        def forward(self, x, attn_mask=None):
            new_x, attn = self.attention(x, x, x, attn_mask=attn_mask)
            x = x + self.dropout(new_x)
            x, _ = self.decomp1(x)
            y = x
            y = self.dropout(self.activation(self.conv1(y.transpose(-1, 1))))
            y = self.dropout(self.conv2(y).transpose(-1, 1))
            res, _ = self.decomp2(x + y)
            return res, attn

    class Encoder(nn.Module):
        def __init__(self, attn_layers, conv_layers=None, norm_layer=None):
            super(Encoder, self).__init__()
            self.attn_layers = nn.ModuleList(attn_layers)
            self.conv_layers = nn.ModuleList(conv_layers) if conv_layers is not None else None
            self.norm = norm_layer

        def forward(self, x, attn_mask=None):
            attns = []
            for attn_layer in self.attn_layers:
                x, attn = attn_layer(x, attn_mask=attn_mask)
                attns.append(attn)
            if self.norm is not None:
                x = self.norm(x)
            return x, attns

    class DecoderLayer(nn.Module):
        def __init__(self, self_attention, cross_attention, d_model, c_out, d_ff=None,
                     moving_avg=25, dropout=0.1, activation="relu"):
            super(DecoderLayer, self).__init__()
            d_ff = d_ff or 4 * d_model
            self.self_attention = self_attention
            self.cross_attention = cross_attention
            self.conv1 = nn.Conv1d(in_channels=d_model, out_channels=d_ff, kernel_size=1, bias=False)
            self.conv2 = nn.Conv1d(in_channels=d_ff, out_channels=d_model, kernel_size=1, bias=False)
            self.decomp1 = series_decomp(moving_avg)
            self.decomp2 = series_decomp(moving_avg)
            self.decomp3 = series_decomp(moving_avg)
            self.dropout = nn.Dropout(dropout)
            self.projection = nn.Conv1d(in_channels=d_model, out_channels=c_out, kernel_size=3, stride=1, padding=1,
                                        padding_mode='circular', bias=False)
            self.activation = F.relu if activation == "relu" else F.gelu

        def forward(self, x, cross, x_mask=None, cross_mask=None):
            x = x + self.dropout(self.self_attention(x, x, x, attn_mask=x_mask)[0])
            x, trend1 = self.decomp1(x)
            x = x + self.dropout(self.cross_attention(x, cross, cross, attn_mask=cross_mask)[0])
            x, trend2 = self.decomp2(x)
            y = x
            y = self.dropout(self.activation(self.conv1(y.transpose(-1, 1))))
            y = self.dropout(self.conv2(y).transpose(-1, 1))
            x, trend3 = self.decomp3(x + y)
            residual_trend = trend1 + trend2 + trend3
            residual_trend = self.projection(residual_trend.permute(0, 2, 1)).transpose(1, 2)
            return x, residual_trend

    class Decoder(nn.Module):
        def __init__(self, layers, norm_layer=None, projection=None):
            super(Decoder, self).__init__()
            self.layers = nn.ModuleList(layers)
            self.norm = norm_layer
            self.projection = projection

        def forward(self, x, cross, x_mask=None, cross_mask=None, trend=None):
            for layer in self.layers:
                x, residual_trend = layer(x, cross, x_mask=x_mask, cross_mask=cross_mask)
                trend = trend + residual_trend
            if self.norm is not None:
                x = self.norm(x)
            if self.projection is not None:
                x = self.projection(x)
            return x, trend

    class Autoformer(nn.Module):
        def __init__(self, enc_in, dec_in, c_out, d_model=D_MODEL, n_heads=HEADS, d_ff=D_FF, dropout=0.0,
                     activation='gelu'):
            super(Autoformer, self).__init__()
            self.label_len, self.pred_len = LABEL_LEN, PRED_LEN
            self.decomp = series_decomp(moving_avg)
            self.enc_embedding = DataEmbedding(torch, nn, enc_in, d_model, with_position=False)
            self.dec_embedding = DataEmbedding(torch, nn, dec_in, d_model, with_position=False)
            self.encoder = Encoder(
                [EncoderLayer(AutoCorrelationLayer(AutoCorrelation(False, factor, attention_dropout=dropout),
                                                   d_model, n_heads),
                              d_model, d_ff, moving_avg=moving_avg, dropout=dropout, activation=activation)
                 for _ in range(2)],
                norm_layer=my_Layernorm(d_model))
            self.decoder = Decoder(
                [DecoderLayer(AutoCorrelationLayer(AutoCorrelation(True, factor, attention_dropout=dropout),
                                                   d_model, n_heads),
                              AutoCorrelationLayer(AutoCorrelation(False, factor, attention_dropout=dropout),
                                                   d_model, n_heads),
                              d_model, c_out, d_ff, moving_avg=moving_avg, dropout=dropout, activation=activation)],
                norm_layer=my_Layernorm(d_model),
                projection=nn.Linear(d_model, c_out, bias=True))

        def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
            # decomp init
            mean = torch.mean(x_enc, dim=1).unsqueeze(1).repeat(1, self.pred_len, 1)
            zeros = torch.zeros([x_dec.shape[0], self.pred_len, x_dec.shape[2]], device=x_enc.device)
            seasonal_init, trend_init = self.decomp(x_enc)
            # decoder input
            trend_init = torch.cat([trend_init[:, -self.label_len:, :], mean], dim=1)
            seasonal_init = torch.cat([seasonal_init[:, -self.label_len:, :], zeros], dim=1)
            # enc
            enc_out = self.enc_embedding(x_enc, x_mark_enc)
            enc_out, attns = self.encoder(enc_out)
            # dec
            dec_out = self.dec_embedding(seasonal_init, x_mark_dec)
            seasonal_part, trend_part = self.decoder(dec_out, enc_out, trend=trend_init)
            # final
            dec_out = trend_part + seasonal_part
            return dec_out[:, -self.pred_len:, :]  # [B, L, D]

    return Autoformer(CHANNELS, CHANNELS, CHANNELS)
