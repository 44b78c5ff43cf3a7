"""PatchTST (yuqinie98/PatchTST ``PatchTST_supervised/layers/PatchTST_backbone.py``, ``layers/RevIN.py``,
``models/PatchTST.py``) and DeepAR (zhykoties/TimeSeries ``model/net.py``, ``train.py``) for
``test_porting_probes_timeseries.py``, each written once as its reference writes it (``torch`` is ``torch`` or
``kiln``); small sizes, the departures marked ``# probe:``."""

from __future__ import annotations

from typing import Optional

import numpy as np

PATCH_SEQ, PATCH_LEN, PATCH_STRIDE, PATCH_TARGET, PATCH_VARS = 12, 4, 2, 4, 3


def patchtst(torch, nn, F, n_layers=2, d_model=8, n_heads=2, d_ff=16, revin=True, padding_patch='end',
             individual=False, subtract_last=False, norm='BatchNorm'):
    """``models/PatchTST.py``'s ``Model`` (no decomposition) around ``PatchTST_backbone`` with RevIN, end padding,
    BatchNorm in ``Transpose`` sandwiches (or ``norm='LayerNorm'``), residual attention and the flatten head (one per
    variable with ``individual``)."""
    Tensor = torch.Tensor

    class RevIN(nn.Module):
        def __init__(self, num_features: int, eps=1e-5, affine=True, subtract_last=False):
            super(RevIN, self).__init__()
            self.num_features = num_features
            self.eps = eps
            self.affine = affine
            self.subtract_last = subtract_last
            if self.affine:
                self._init_params()

        def forward(self, x, mode: str):
            if mode == 'norm':
                self._get_statistics(x)
                x = self._normalize(x)
            elif mode == 'denorm':
                x = self._denormalize(x)
            else:
                raise NotImplementedError
            return x

        def _init_params(self):
            self.affine_weight = nn.Parameter(torch.ones(self.num_features))
            self.affine_bias = nn.Parameter(torch.zeros(self.num_features))

        def _get_statistics(self, x):
            dim2reduce = tuple(range(1, x.ndim - 1))
            if self.subtract_last:
                self.last = x[:, -1, :].unsqueeze(1)
            else:
                self.mean = torch.mean(x, dim=dim2reduce, keepdim=True).detach()
            self.stdev = torch.sqrt(torch.var(x, dim=dim2reduce, keepdim=True, unbiased=False) + self.eps).detach()

        def _normalize(self, x):
            if self.subtract_last:
                x = x - self.last
            else:
                x = x - self.mean
            x = x / self.stdev
            if self.affine:
                x = x * self.affine_weight
                x = x + self.affine_bias
            return x

        def _denormalize(self, x):
            if self.affine:
                x = x - self.affine_bias
                x = x / (self.affine_weight + self.eps * self.eps)
            x = x * self.stdev
            if self.subtract_last:
                x = x + self.last
            else:
                x = x + self.mean
            return x

    class Transpose(nn.Module):
        def __init__(self, *dims, contiguous=False):
            super().__init__()
            self.dims, self.contiguous = dims, contiguous

        def forward(self, x):
            if self.contiguous:
                return x.transpose(*self.dims).contiguous()
            else:
                return x.transpose(*self.dims)

    def get_activation_fn(activation):
        if callable(activation):
            return activation()
        elif activation.lower() == "relu":
            return nn.ReLU()
        elif activation.lower() == "gelu":
            return nn.GELU()
        raise ValueError(f'{activation} is not available. You can use "relu", "gelu", or a callable')

    def positional_encoding(pe, learn_pe, q_len, d_model):
        if pe == 'zeros':
            W_pos = torch.empty((q_len, d_model))
            nn.init.uniform_(W_pos, -0.02, 0.02)
        else:
            raise ValueError(f"{pe} is not a valid pe (positional encoder) in this probe")
        return nn.Parameter(W_pos, requires_grad=learn_pe)

    class _ScaledDotProductAttention(nn.Module):
        def __init__(self, d_model, n_heads, attn_dropout=0., res_attention=False, lsa=False):
            super().__init__()
            self.attn_dropout = nn.Dropout(attn_dropout)
            self.res_attention = res_attention
            head_dim = d_model // n_heads
            self.scale = nn.Parameter(torch.tensor(head_dim ** -0.5), requires_grad=lsa)
            self.lsa = lsa

        def forward(self, q: Tensor, k: Tensor, v: Tensor, prev: Optional[Tensor] = None,
                    key_padding_mask: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None):
            attn_scores = torch.matmul(q, k) * self.scale
            if prev is not None:
                attn_scores = attn_scores + prev
            if attn_mask is not None:
                if attn_mask.dtype == torch.bool:
                    attn_scores.masked_fill_(attn_mask, -np.inf)
                else:
                    attn_scores += attn_mask
            if key_padding_mask is not None:
                attn_scores.masked_fill_(key_padding_mask.unsqueeze(1).unsqueeze(2), -np.inf)
            attn_weights = F.softmax(attn_scores, dim=-1)
            attn_weights = self.attn_dropout(attn_weights)
            output = torch.matmul(attn_weights, v)
            if self.res_attention:
                return output, attn_weights, attn_scores
            else:
                return output, attn_weights

    class _MultiheadAttention(nn.Module):
        def __init__(self, d_model, n_heads, d_k=None, d_v=None, res_attention=False, attn_dropout=0., proj_dropout=0.,
                     qkv_bias=True, lsa=False):
            super().__init__()
            d_k = d_model // n_heads if d_k is None else d_k
            d_v = d_model // n_heads if d_v is None else d_v
            self.n_heads, self.d_k, self.d_v = n_heads, d_k, d_v
            self.W_Q = nn.Linear(d_model, d_k * n_heads, bias=qkv_bias)
            self.W_K = nn.Linear(d_model, d_k * n_heads, bias=qkv_bias)
            self.W_V = nn.Linear(d_model, d_v * n_heads, bias=qkv_bias)
            self.res_attention = res_attention
            self.sdp_attn = _ScaledDotProductAttention(d_model, n_heads, attn_dropout=attn_dropout,
                                                       res_attention=self.res_attention, lsa=lsa)
            self.to_out = nn.Sequential(nn.Linear(n_heads * d_v, d_model), nn.Dropout(proj_dropout))

        def forward(self, Q: Tensor, K: Optional[Tensor] = None, V: Optional[Tensor] = None,
                    prev: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                    attn_mask: Optional[Tensor] = None):
            bs = Q.size(0)
            if K is None:
                K = Q
            if V is None:
                V = Q
            q_s = self.W_Q(Q).view(bs, -1, self.n_heads, self.d_k).transpose(1, 2)
            k_s = self.W_K(K).view(bs, -1, self.n_heads, self.d_k).permute(0, 2, 3, 1)
            v_s = self.W_V(V).view(bs, -1, self.n_heads, self.d_v).transpose(1, 2)
            if self.res_attention:
                output, attn_weights, attn_scores = self.sdp_attn(q_s, k_s, v_s, prev=prev,
                                                                  key_padding_mask=key_padding_mask,
                                                                  attn_mask=attn_mask)
            else:
                output, attn_weights = self.sdp_attn(q_s, k_s, v_s, key_padding_mask=key_padding_mask,
                                                     attn_mask=attn_mask)
            output = output.transpose(1, 2).contiguous().view(bs, -1, self.n_heads * self.d_v)
            output = self.to_out(output)
            if self.res_attention:
                return output, attn_weights, attn_scores
            else:
                return output, attn_weights

    class TSTEncoderLayer(nn.Module):
        def __init__(self, q_len, d_model, n_heads, d_k=None, d_v=None, d_ff=256, store_attn=False,
                     norm='BatchNorm', attn_dropout=0, dropout=0., bias=True, activation="gelu", res_attention=False,
                     pre_norm=False):
            super().__init__()
            assert not d_model % n_heads, f"d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            d_k = d_model // n_heads if d_k is None else d_k
            d_v = d_model // n_heads if d_v is None else d_v
            self.res_attention = res_attention
            self.self_attn = _MultiheadAttention(d_model, n_heads, d_k, d_v, attn_dropout=attn_dropout,
                                                 proj_dropout=dropout, res_attention=res_attention)
            self.dropout_attn = nn.Dropout(dropout)
            if "batch" in norm.lower():
                self.norm_attn = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))
            else:
                self.norm_attn = nn.LayerNorm(d_model)
            self.ff = nn.Sequential(nn.Linear(d_model, d_ff, bias=bias),
                                    get_activation_fn(activation),
                                    nn.Dropout(dropout),
                                    nn.Linear(d_ff, d_model, bias=bias))
            self.dropout_ffn = nn.Dropout(dropout)
            if "batch" in norm.lower():
                self.norm_ffn = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))
            else:
                self.norm_ffn = nn.LayerNorm(d_model)
            self.pre_norm = pre_norm
            self.store_attn = store_attn

        def forward(self, src: Tensor, prev: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                    attn_mask: Optional[Tensor] = None):
            if self.pre_norm:
                src = self.norm_attn(src)
            if self.res_attention:
                src2, attn, scores = self.self_attn(src, src, src, prev, key_padding_mask=key_padding_mask,
                                                    attn_mask=attn_mask)
            else:
                src2, attn = self.self_attn(src, src, src, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
            if self.store_attn:
                self.attn = attn
            src = src + self.dropout_attn(src2)
            if not self.pre_norm:
                src = self.norm_attn(src)
            if self.pre_norm:
                src = self.norm_ffn(src)
            src2 = self.ff(src)
            src = src + self.dropout_ffn(src2)
            if not self.pre_norm:
                src = self.norm_ffn(src)
            if self.res_attention:
                return src, scores
            else:
                return src

    class TSTEncoder(nn.Module):
        def __init__(self, q_len, d_model, n_heads, d_k=None, d_v=None, d_ff=None, norm='BatchNorm',
                     attn_dropout=0., dropout=0., activation='gelu', res_attention=False, n_layers=1, pre_norm=False,
                     store_attn=False):
            super().__init__()
            self.layers = nn.ModuleList([TSTEncoderLayer(q_len, d_model, n_heads=n_heads, d_k=d_k, d_v=d_v, d_ff=d_ff,
                                                         norm=norm, attn_dropout=attn_dropout, dropout=dropout,
                                                         activation=activation, res_attention=res_attention,
                                                         pre_norm=pre_norm, store_attn=store_attn)
                                         for i in range(n_layers)])
            self.res_attention = res_attention

        def forward(self, src: Tensor, key_padding_mask: Optional[Tensor] = None,
                    attn_mask: Optional[Tensor] = None):
            output = src
            scores = None
            if self.res_attention:
                for mod in self.layers:
                    output, scores = mod(output, prev=scores, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
                return output
            else:
                for mod in self.layers:
                    output = mod(output, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
                return output

    class TSTiEncoder(nn.Module):  # i means channel-independent
        def __init__(self, c_in, patch_num, patch_len, n_layers=3, d_model=128, n_heads=16, d_ff=256,
                     norm='BatchNorm', attn_dropout=0., dropout=0., act="gelu", store_attn=False, res_attention=True,
                     pre_norm=False, pe='zeros', learn_pe=True):
            super().__init__()
            self.patch_num = patch_num
            self.patch_len = patch_len
            q_len = patch_num
            self.W_P = nn.Linear(patch_len, d_model)
            self.seq_len = q_len
            self.W_pos = positional_encoding(pe, learn_pe, q_len, d_model)
            self.dropout = nn.Dropout(dropout)
            self.encoder = TSTEncoder(q_len, d_model, n_heads, d_ff=d_ff, norm=norm, attn_dropout=attn_dropout,
                                      dropout=dropout, pre_norm=pre_norm, activation=act,
                                      res_attention=res_attention, n_layers=n_layers, store_attn=store_attn)

        def forward(self, x) -> Tensor:  # x: [bs x nvars x patch_len x patch_num]
            n_vars = x.shape[1]
            x = x.permute(0, 1, 3, 2)  # x: [bs x nvars x patch_num x patch_len]
            x = self.W_P(x)  # x: [bs x nvars x patch_num x d_model]
            u = torch.reshape(x, (x.shape[0] * x.shape[1], x.shape[2], x.shape[3]))
            u = self.dropout(u + self.W_pos)  # u: [bs * nvars x patch_num x d_model]
            z = self.encoder(u)  # z: [bs * nvars x patch_num x d_model]
            z = torch.reshape(z, (-1, n_vars, z.shape[-2], z.shape[-1]))  # z: [bs x nvars x patch_num x d_model]
            z = z.permute(0, 1, 3, 2)  # z: [bs x nvars x d_model x patch_num]
            return z

    class Flatten_Head(nn.Module):
        def __init__(self, individual, n_vars, nf, target_window, head_dropout=0):
            super().__init__()
            self.individual = individual
            self.n_vars = n_vars
            if self.individual:
                self.linears = nn.ModuleList()
                self.dropouts = nn.ModuleList()
                self.flattens = nn.ModuleList()
                for i in range(self.n_vars):
                    self.flattens.append(nn.Flatten(start_dim=-2))
                    self.linears.append(nn.Linear(nf, target_window))
                    self.dropouts.append(nn.Dropout(head_dropout))
            else:
                self.flatten = nn.Flatten(start_dim=-2)
                self.linear = nn.Linear(nf, target_window)
                self.dropout = nn.Dropout(head_dropout)

        def forward(self, x):  # x: [bs x nvars x d_model x patch_num]
            if self.individual:
                x_out = []
                for i in range(self.n_vars):
                    z = self.flattens[i](x[:, i, :, :])  # z: [bs x d_model * patch_num]
                    z = self.linears[i](z)  # z: [bs x target_window]
                    z = self.dropouts[i](z)
                    x_out.append(z)
                x = torch.stack(x_out, dim=1)  # x: [bs x nvars x target_window]
            else:
                x = self.flatten(x)
                x = self.linear(x)
                x = self.dropout(x)
            return x

    class PatchTST_backbone(nn.Module):
        def __init__(self, c_in, context_window, target_window, patch_len, stride, n_layers=3, d_model=128,
                     n_heads=16, d_ff=256, norm='BatchNorm', dropout=0., act="gelu", res_attention=True,
                     pe='zeros', learn_pe=True, head_dropout=0, padding_patch=None, individual=False, revin=True,
                     affine=True, subtract_last=False):
            super().__init__()
            self.revin = revin
            if self.revin:
                self.revin_layer = RevIN(c_in, affine=affine, subtract_last=subtract_last)
            self.patch_len = patch_len
            self.stride = stride
            self.padding_patch = padding_patch
            patch_num = int((context_window - patch_len) / stride + 1)
            if padding_patch == 'end':  # can be modified to general case
                self.padding_patch_layer = nn.ReplicationPad1d((0, stride))
                patch_num += 1
            self.backbone = TSTiEncoder(c_in, patch_num=patch_num, patch_len=patch_len, n_layers=n_layers,
                                        d_model=d_model, n_heads=n_heads, d_ff=d_ff, norm=norm, dropout=dropout,
                                        act=act, res_attention=res_attention, pe=pe, learn_pe=learn_pe)
            self.head_nf = d_model * patch_num
            self.n_vars = c_in
            self.individual = individual
            self.head = Flatten_Head(self.individual, self.n_vars, self.head_nf, target_window,
                                     head_dropout=head_dropout)

        def forward(self, z):  # z: [bs x nvars x seq_len]
            if self.revin:
                z = z.permute(0, 2, 1)
                z = self.revin_layer(z, 'norm')
                z = z.permute(0, 2, 1)
            if self.padding_patch == 'end':
                z = self.padding_patch_layer(z)
            z = z.unfold(dimension=-1, size=self.patch_len, step=self.stride)  # z: [bs x nvars x patch_num x patch_len]
            z = z.permute(0, 1, 3, 2)  # z: [bs x nvars x patch_len x patch_num]
            z = self.backbone(z)  # z: [bs x nvars x d_model x patch_num]
            z = self.head(z)  # z: [bs x nvars x target_window]
            if self.revin:
                z = z.permute(0, 2, 1)
                z = self.revin_layer(z, 'denorm')
                z = z.permute(0, 2, 1)
            return z

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = PatchTST_backbone(c_in=PATCH_VARS, context_window=PATCH_SEQ, target_window=PATCH_TARGET,
                                           patch_len=PATCH_LEN, stride=PATCH_STRIDE, n_layers=n_layers,
                                           d_model=d_model, n_heads=n_heads, d_ff=d_ff, padding_patch=padding_patch,
                                           revin=revin, individual=individual, subtract_last=subtract_last,
                                           norm=norm)

        def forward(self, x):  # x: [Batch, Input length, Channel]
            x = x.permute(0, 2, 1)  # x: [Batch, Channel, Input length]
            x = self.model(x)
            x = x.permute(0, 2, 1)  # x: [Batch, Input length, Channel]
            return x

    return Model()


class DeepARParams:
    """zhykoties' ``params.json`` for a tiny run (``utils.Params``: attributes)."""
    num_class, embedding_dim, cov_dim = 3, 2, 2
    lstm_hidden_dim, lstm_layers, lstm_dropout = 5, 2, 0.0
    train_window, predict_start, predict_steps, sample_times = 6, 4, 2, 3
    device = "cpu"


def deepar(torch, nn, F, params=DeepARParams):
    """``model/net.py``'s ``Net``: an embedding of the series id, an LSTM over (lagged value, covariates, embedding)
    with the forget gates' biases set to 1, and a Gaussian head (``mu``; ``sigma`` by ``Softplus``) read from every
    layer's hidden state; ``test`` samples ancestrally, its noise fed (``noise`` stands for ``gaussian.sample()``)."""

    class Net(nn.Module):
        def __init__(self, params):
            super(Net, self).__init__()
            self.params = params
            self.embedding = nn.Embedding(params.num_class, params.embedding_dim)
            self.lstm = nn.LSTM(input_size=1 + params.cov_dim + params.embedding_dim,
                                hidden_size=params.lstm_hidden_dim,
                                num_layers=params.lstm_layers,
                                bias=True,
                                batch_first=False,
                                dropout=params.lstm_dropout)
            # initialize LSTM forget gate bias to be 1 as recommanded by
            # http://proceedings.mlr.press/v37/jozefowicz15.pdf
            for names in self.lstm._all_weights:
                for name in filter(lambda n: "bias" in n, names):
                    bias = getattr(self.lstm, name)
                    n = bias.size(0)
                    start, end = n // 4, n // 2
                    bias.data[start:end].fill_(1.)
            self.relu = nn.ReLU()
            self.distribution_mu = nn.Linear(params.lstm_hidden_dim * params.lstm_layers, 1)
            self.distribution_presigma = nn.Linear(params.lstm_hidden_dim * params.lstm_layers, 1)
            self.distribution_sigma = nn.Softplus()

        def forward(self, x, idx, hidden, cell):
            onehot_embed = self.embedding(idx)
            lstm_input = torch.cat((x, onehot_embed), dim=2)
            output, (hidden, cell) = self.lstm(lstm_input, (hidden, cell))
            # use h from all three layers to calculate mu and sigma
            hidden_permute = hidden.permute(1, 2, 0).contiguous().view(hidden.shape[1], -1)
            pre_sigma = self.distribution_presigma(hidden_permute)
            mu = self.distribution_mu(hidden_permute)
            sigma = self.distribution_sigma(pre_sigma)  # softplus to make sure standard deviation is positive
            return torch.squeeze(mu), torch.squeeze(sigma), hidden, cell

        def init_hidden(self, input_size):
            return torch.zeros(self.params.lstm_layers, input_size, self.params.lstm_hidden_dim,
                               device=self.params.device)

        def init_cell(self, input_size):
            return torch.zeros(self.params.lstm_layers, input_size, self.params.lstm_hidden_dim,
                               device=self.params.device)

        def test(self, x, v_batch, id_batch, hidden, cell, noise):  # probe: noise for gaussian.sample()
            batch_size = x.shape[1]
            samples = torch.zeros(self.params.sample_times, batch_size, self.params.predict_steps,
                                  device=self.params.device)
            for j in range(self.params.sample_times):
                decoder_hidden = hidden
                decoder_cell = cell
                for t in range(self.params.predict_steps):
                    mu_de, sigma_de, decoder_hidden, decoder_cell = self(x[self.params.predict_start + t].unsqueeze(0),
                                                                         id_batch, decoder_hidden, decoder_cell)
                    gaussian = torch.distributions.normal.Normal(mu_de, sigma_de)
                    pred = gaussian.mean + gaussian.stddev * noise[j, :, t]  # probe: gaussian.sample()  # not scaled
                    samples[j, :, t] = pred * v_batch[:, 0] + v_batch[:, 1]
                    if t < (self.params.predict_steps - 1):
                        x[self.params.predict_start + t + 1, :, 0] = pred
            sample_mu = torch.median(samples, dim=0)[0]
            sample_sigma = samples.std(dim=0)
            return samples, sample_mu, sample_sigma

    return Net(params)


def deepar_loss_fn(torch, mu, sigma, labels):
    """``net.loss_fn``: the Gaussian negative log-likelihood of the observed (non-zero) labels."""
    zero_index = (labels != 0)
    distribution = torch.distributions.normal.Normal(mu[zero_index], sigma[zero_index])
    likelihood = distribution.log_prob(labels[zero_index])
    return -torch.mean(likelihood)


def deepar_window_loss(torch, model, train_batch, labels_batch, idx, params=DeepARParams):
    """``train.py``'s ``train`` body for one batch (already ``permute``d to time first): teacher forcing, a missing
    (zero) lagged value replaced by the previous step's ``mu``, the loss summed over the window into ``torch.zeros(1)``
    in place."""
    batch_size = train_batch.shape[1]
    loss = torch.zeros(1, device=params.device)
    hidden = model.init_hidden(batch_size)
    cell = model.init_cell(batch_size)
    mu = None  # probe: for pyflakes (the reference reads mu only after t = 0 set it)
    for t in range(params.train_window):
        # if z_t is missing, replace it by output mu from the last time step
        zero_index = (train_batch[t, :, 0] == 0)
        if t > 0 and torch.sum(zero_index) > 0:
            train_batch[t, zero_index, 0] = mu[zero_index]
        mu, sigma, hidden, cell = model(train_batch[t].unsqueeze_(0).clone(), idx, hidden, cell)
        loss += deepar_loss_fn(torch, mu, sigma, labels_batch[t])
    return loss


def quantile_loss(torch, y_pred, target, quantiles=(0.1, 0.5, 0.9)):
    """pytorch-forecasting's ``QuantileLoss.loss``: the pinball loss of each quantile."""
    losses = []
    for i, q in enumerate(quantiles):
        errors = target - y_pred[..., i]
        losses.append(torch.max((q - 1) * errors, q * errors).unsqueeze(-1))
    losses = 2 * torch.cat(losses, dim=2)
    return losses


def mase_loss(torch, y_pred, target, encoder_target):
    """pytorch-forecasting's ``MASE``: the absolute error scaled by the in-sample one-step naive forecast's error."""
    scaling = (encoder_target[:, 1:] - encoder_target[:, :-1]).abs().mean(1)
    return (y_pred - target).abs() / scaling.unsqueeze(-1)
