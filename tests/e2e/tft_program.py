"""The Temporal Fusion Transformer as pytorch-forecasting writes it: its building blocks
(``models/temporal_fusion_transformer/sub_modules.py``), the length-aware ``LSTM`` (``models/nn/rnn.py``),
``create_mask`` (``utils``), the ``QuantileLoss`` metric, and the model's ``__init__``/``forward`` (``_tft.py``) on a
small set of variables, written once for ``torch`` being torch or kiln: the program of ``test_porting_probes_tft.py``,
whose docstring says what it covers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, List, Tuple, Union

import numpy as np

HIDDEN, HEADS, HIDDEN_CONTINUOUS, LSTM_LAYERS = 8, 2, 4, 2
ENCODER_LENGTH, DECODER_LENGTH, SERIES = 6, 3, 4
QUANTILES = [0.1, 0.5, 0.9]
EMBEDDING_SIZES = {"group": (5, 3), "month": (12, 4)}
X_CATEGORICALS = ["group", "month"]
X_REALS = ["scale", "time_idx", "target"]
STATIC_CATEGORICALS, STATIC_REALS = ["group"], ["scale"]
ENCODER_CATEGORICALS, ENCODER_REALS = ["month"], ["time_idx", "target"]
DECODER_CATEGORICALS, DECODER_REALS = ["month"], ["time_idx"]


def create_mask(torch):
    """pytorch_forecasting.utils's ``create_mask``."""

    def create_mask(size: int, lengths: torch.LongTensor, inverse: bool = False) -> torch.BoolTensor:
        """
        Create boolean masks of shape len(lenghts) x size.

        An entry at (i, j) is True if lengths[i] > j.
        """
        if inverse:  # return where values are
            return torch.arange(size, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(-1)
        else:  # return where no values are
            return torch.arange(size, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(-1)

    return create_mask


# --- pytorch_forecasting/models/nn/rnn.py ----------------------------------------------------------------------------


def forecasting_rnn(torch, nn):
    """rnn.py's ``RNN`` (an ``ABC`` and ``nn.RNNBase``) and its ``LSTM(RNN, nn.LSTM)``, which packs by lengths
    (``enforce_sorted=False``) and keeps the initial state of zero-length sequences (``masked_scatter``)."""
    rnn = nn.utils.rnn
    HiddenState = Union[Tuple[torch.Tensor, torch.Tensor], torch.Tensor]

    class RNN(ABC, nn.RNNBase):
        """
        Base class flexible RNNs.

        Forward function can handle sequences of length 0.
        """

        @abstractmethod
        def handle_no_encoding(
            self, hidden_state: HiddenState, no_encoding: torch.BoolTensor, initial_hidden_state: HiddenState
        ) -> HiddenState:
            pass

        @abstractmethod
        def init_hidden_state(self, x: torch.Tensor) -> HiddenState:
            pass

        @abstractmethod
        def repeat_interleave(self, hidden_state: HiddenState, n_samples: int) -> HiddenState:
            pass

        def forward(
            self,
            x: Union[rnn.PackedSequence, torch.Tensor],
            hx: HiddenState = None,
            lengths: torch.LongTensor = None,
            enforce_sorted: bool = True,
        ) -> Tuple[Union[rnn.PackedSequence, torch.Tensor], HiddenState]:
            if isinstance(x, rnn.PackedSequence) or lengths is None:
                assert lengths is None, "cannot combine x of type PackedSequence with lengths argument"
                return super().forward(x, hx=hx)
            else:
                min_length = lengths.min()
                max_length = lengths.max()
                assert min_length >= 0, "sequence lengths must be great equals 0"

                if max_length == 0:
                    hidden_state = self.init_hidden_state(x)
                    if self.batch_first:
                        out = torch.zeros(lengths.size(0), x.size(1), self.hidden_size, dtype=x.dtype, device=x.device)
                    else:
                        out = torch.zeros(x.size(0), lengths.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
                    return out, hidden_state
                else:
                    pack_lengths = lengths.where(lengths > 0, torch.ones_like(lengths))
                    packed_out, hidden_state = super().forward(
                        rnn.pack_padded_sequence(
                            x, pack_lengths.cpu(), enforce_sorted=enforce_sorted, batch_first=self.batch_first
                        ),
                        hx=hx,
                    )
                    # replace hidden cell with initial input if encoder_length is zero to determine correct initial state
                    if min_length == 0:
                        no_encoding = (lengths == 0)[
                            None, :, None
                        ]  # shape: n_layers * n_directions x batch_size x hidden_size
                        if hx is None:
                            initial_hidden_state = self.init_hidden_state(x)
                        else:
                            initial_hidden_state = hx
                        # propagate initial hidden state when sequence length was 0
                        hidden_state = self.handle_no_encoding(hidden_state, no_encoding, initial_hidden_state)

                    # return unpacked sequence
                    out, _ = rnn.pad_packed_sequence(packed_out, batch_first=self.batch_first)
                    return out, hidden_state

    class LSTM(RNN, nn.LSTM):
        """LSTM that can handle zero-length sequences"""

        def handle_no_encoding(
            self, hidden_state: HiddenState, no_encoding: torch.BoolTensor, initial_hidden_state: HiddenState
        ) -> HiddenState:
            hidden, cell = hidden_state
            hidden = hidden.masked_scatter(no_encoding, initial_hidden_state[0])
            cell = cell.masked_scatter(no_encoding, initial_hidden_state[0])
            return hidden, cell

        def init_hidden_state(self, x: torch.Tensor) -> HiddenState:
            num_directions = 2 if self.bidirectional else 1
            if self.batch_first:
                batch_size = x.size(0)
            else:
                batch_size = x.size(1)
            hidden = torch.zeros(
                (self.num_layers * num_directions, batch_size, self.hidden_size),
                device=x.device,
                dtype=x.dtype,
            )
            cell = torch.zeros(
                (self.num_layers * num_directions, batch_size, self.hidden_size),
                device=x.device,
                dtype=x.dtype,
            )
            return hidden, cell

        def repeat_interleave(self, hidden_state: HiddenState, n_samples: int) -> HiddenState:
            hidden, cell = hidden_state
            hidden = hidden.repeat_interleave(n_samples, 1)
            cell = cell.repeat_interleave(n_samples, 1)
            return hidden, cell

    return LSTM


# --- pytorch_forecasting/models/temporal_fusion_transformer/sub_modules.py -------------------------------------------


def tft_sub_modules(torch, nn, F):
    """sub_modules.py's blocks as written: ``(TimeDistributedInterpolation, GatedLinearUnit, ResampleNorm, AddNorm,
    GateAddNorm, GatedResidualNetwork, VariableSelectionNetwork, ScaledDotProductAttention,
    InterpretableMultiHeadAttention)`` in a namespace dict."""

    class TimeDistributedInterpolation(nn.Module):
        def __init__(self, output_size: int, batch_first: bool = False, trainable: bool = False):
            super().__init__()
            self.output_size = output_size
            self.batch_first = batch_first
            self.trainable = trainable
            if self.trainable:
                self.mask = nn.Parameter(torch.zeros(self.output_size, dtype=torch.float32))
                self.gate = nn.Sigmoid()

        def interpolate(self, x):
            upsampled = F.interpolate(x.unsqueeze(1), self.output_size, mode="linear", align_corners=True).squeeze(1)
            if self.trainable:
                upsampled = upsampled * self.gate(self.mask.unsqueeze(0)) * 2.0
            return upsampled

        def forward(self, x):
            if len(x.size()) <= 2:
                return self.interpolate(x)

            # Squash samples and timesteps into a single axis
            x_reshape = x.contiguous().view(-1, x.size(-1))  # (samples * timesteps, input_size)

            y = self.interpolate(x_reshape)

            # We have to reshape Y
            if self.batch_first:
                y = y.contiguous().view(x.size(0), -1, y.size(-1))  # (samples, timesteps, output_size)
            else:
                y = y.view(-1, x.size(1), y.size(-1))  # (timesteps, samples, output_size)

            return y

    class GatedLinearUnit(nn.Module):
        """Gated Linear Unit"""

        def __init__(self, input_size: int, hidden_size: int = None, dropout: float = None):
            super().__init__()

            if dropout is not None:
                self.dropout = nn.Dropout(dropout)
            else:
                self.dropout = dropout
            self.hidden_size = hidden_size or input_size
            self.fc = nn.Linear(input_size, self.hidden_size * 2)

            self.init_weights()

        def init_weights(self):
            for n, p in self.named_parameters():
                if "bias" in n:
                    torch.nn.init.zeros_(p)
                elif "fc" in n:
                    torch.nn.init.xavier_uniform_(p)

        def forward(self, x):
            if self.dropout is not None:
                x = self.dropout(x)
            x = self.fc(x)
            x = F.glu(x, dim=-1)
            return x

    class ResampleNorm(nn.Module):
        def __init__(self, input_size: int, output_size: int = None, trainable_add: bool = True):
            super().__init__()

            self.input_size = input_size
            self.trainable_add = trainable_add
            self.output_size = output_size or input_size

            if self.input_size != self.output_size:
                self.resample = TimeDistributedInterpolation(self.output_size, batch_first=True, trainable=False)

            if self.trainable_add:
                self.mask = nn.Parameter(torch.zeros(self.output_size, dtype=torch.float))
                self.gate = nn.Sigmoid()
            self.norm = nn.LayerNorm(self.output_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.input_size != self.output_size:
                x = self.resample(x)

            if self.trainable_add:
                x = x * self.gate(self.mask) * 2.0

            output = self.norm(x)
            return output

    class AddNorm(nn.Module):
        def __init__(self, input_size: int, skip_size: int = None, trainable_add: bool = True):
            super().__init__()

            self.input_size = input_size
            self.trainable_add = trainable_add
            self.skip_size = skip_size or input_size

            if self.input_size != self.skip_size:
                self.resample = TimeDistributedInterpolation(self.input_size, batch_first=True, trainable=False)

            if self.trainable_add:
                self.mask = nn.Parameter(torch.zeros(self.input_size, dtype=torch.float))
                self.gate = nn.Sigmoid()
            self.norm = nn.LayerNorm(self.input_size)

        def forward(self, x: torch.Tensor, skip: torch.Tensor):
            if self.input_size != self.skip_size:
                skip = self.resample(skip)

            if self.trainable_add:
                skip = skip * self.gate(self.mask) * 2.0

            output = self.norm(x + skip)
            return output

    class GateAddNorm(nn.Module):
        def __init__(
            self,
            input_size: int,
            hidden_size: int = None,
            skip_size: int = None,
            trainable_add: bool = False,
            dropout: float = None,
        ):
            super().__init__()

            self.input_size = input_size
            self.hidden_size = hidden_size or input_size
            self.skip_size = skip_size or self.hidden_size
            self.dropout = dropout

            self.glu = GatedLinearUnit(self.input_size, hidden_size=self.hidden_size, dropout=self.dropout)
            self.add_norm = AddNorm(self.hidden_size, skip_size=self.skip_size, trainable_add=trainable_add)

        def forward(self, x, skip):
            output = self.glu(x)
            output = self.add_norm(output, skip)
            return output

    class GatedResidualNetwork(nn.Module):
        def __init__(
            self,
            input_size: int,
            hidden_size: int,
            output_size: int,
            dropout: float = 0.1,
            context_size: int = None,
            residual: bool = False,
        ):
            super().__init__()
            self.input_size = input_size
            self.output_size = output_size
            self.context_size = context_size
            self.hidden_size = hidden_size
            self.dropout = dropout
            self.residual = residual

            if self.input_size != self.output_size and not self.residual:
                residual_size = self.input_size
            else:
                residual_size = self.output_size

            if self.output_size != residual_size:
                self.resample_norm = ResampleNorm(residual_size, self.output_size)

            self.fc1 = nn.Linear(self.input_size, self.hidden_size)
            self.elu = nn.ELU()

            if self.context_size is not None:
                self.context = nn.Linear(self.context_size, self.hidden_size, bias=False)

            self.fc2 = nn.Linear(self.hidden_size, self.hidden_size)
            self.init_weights()

            self.gate_norm = GateAddNorm(
                input_size=self.hidden_size,
                skip_size=self.output_size,
                hidden_size=self.output_size,
                dropout=self.dropout,
                trainable_add=False,
            )

        def init_weights(self):
            for name, p in self.named_parameters():
                if "bias" in name:
                    torch.nn.init.zeros_(p)
                elif "fc1" in name or "fc2" in name:
                    torch.nn.init.kaiming_normal_(p, a=0, mode="fan_in", nonlinearity="leaky_relu")
                elif "context" in name:
                    torch.nn.init.xavier_uniform_(p)

        def forward(self, x, context=None, residual=None):
            if residual is None:
                residual = x

            if self.input_size != self.output_size and not self.residual:
                residual = self.resample_norm(residual)

            x = self.fc1(x)
            if context is not None:
                context = self.context(context)
                x = x + context
            x = self.elu(x)
            x = self.fc2(x)
            x = self.gate_norm(x, residual)
            return x

    class VariableSelectionNetwork(nn.Module):
        def __init__(
            self,
            input_sizes: Dict[str, int],
            hidden_size: int,
            input_embedding_flags: Dict[str, bool] = {},
            dropout: float = 0.1,
            context_size: int = None,
            single_variable_grns: Dict[str, GatedResidualNetwork] = {},
            prescalers: Dict[str, nn.Linear] = {},
        ):
            """
            Calcualte weights for ``num_inputs`` variables  which are each of size ``input_size``
            """
            super().__init__()

            self.hidden_size = hidden_size
            self.input_sizes = input_sizes
            self.input_embedding_flags = input_embedding_flags
            self.dropout = dropout
            self.context_size = context_size

            if self.num_inputs > 1:
                if self.context_size is not None:
                    self.flattened_grn = GatedResidualNetwork(
                        self.input_size_total,
                        min(self.hidden_size, self.num_inputs),
                        self.num_inputs,
                        self.dropout,
                        self.context_size,
                        residual=False,
                    )
                else:
                    self.flattened_grn = GatedResidualNetwork(
                        self.input_size_total,
                        min(self.hidden_size, self.num_inputs),
                        self.num_inputs,
                        self.dropout,
                        residual=False,
                    )

            self.single_variable_grns = nn.ModuleDict()
            self.prescalers = nn.ModuleDict()
            for name, input_size in self.input_sizes.items():
                if name in single_variable_grns:
                    self.single_variable_grns[name] = single_variable_grns[name]
                elif self.input_embedding_flags.get(name, False):
                    self.single_variable_grns[name] = ResampleNorm(input_size, self.hidden_size)
                else:
                    self.single_variable_grns[name] = GatedResidualNetwork(
                        input_size,
                        min(input_size, self.hidden_size),
                        output_size=self.hidden_size,
                        dropout=self.dropout,
                    )
                if name in prescalers:  # reals need to be first scaled up
                    self.prescalers[name] = prescalers[name]
                elif not self.input_embedding_flags.get(name, False):
                    self.prescalers[name] = nn.Linear(1, input_size)

            self.softmax = nn.Softmax(dim=-1)

        @property
        def input_size_total(self):
            return sum(size if name in self.input_embedding_flags else size for name, size in self.input_sizes.items())

        @property
        def num_inputs(self):
            return len(self.input_sizes)

        def forward(self, x: Dict[str, torch.Tensor], context: torch.Tensor = None):
            if self.num_inputs > 1:
                # transform single variables
                var_outputs = []
                weight_inputs = []
                for name in self.input_sizes.keys():
                    # select embedding belonging to a single input
                    variable_embedding = x[name]
                    if name in self.prescalers:
                        variable_embedding = self.prescalers[name](variable_embedding)
                    weight_inputs.append(variable_embedding)
                    var_outputs.append(self.single_variable_grns[name](variable_embedding))
                var_outputs = torch.stack(var_outputs, dim=-1)

                # calculate variable weights
                flat_embedding = torch.cat(weight_inputs, dim=-1)
                sparse_weights = self.flattened_grn(flat_embedding, context)
                sparse_weights = self.softmax(sparse_weights).unsqueeze(-2)

                outputs = var_outputs * sparse_weights
                outputs = outputs.sum(dim=-1)
            else:  # for one input, do not perform variable selection but just encoding
                name = next(iter(self.single_variable_grns.keys()))
                variable_embedding = x[name]
                if name in self.prescalers:
                    variable_embedding = self.prescalers[name](variable_embedding)
                outputs = self.single_variable_grns[name](variable_embedding)  # fast forward if only one variable
                if outputs.ndim == 3:  # -> batch size, time, hidden size, n_variables
                    sparse_weights = torch.ones(outputs.size(0), outputs.size(1), 1, 1, device=outputs.device)  #
                else:  # ndim == 2 -> batch size, hidden size, n_variables
                    sparse_weights = torch.ones(outputs.size(0), 1, 1, device=outputs.device)
            return outputs, sparse_weights

    class ScaledDotProductAttention(nn.Module):
        def __init__(self, dropout: float = None, scale: bool = True):
            super(ScaledDotProductAttention, self).__init__()
            if dropout is None:
                self.dropout = dropout
            else:
                self.dropout = nn.Dropout(p=dropout)
            self.softmax = nn.Softmax(dim=2)
            self.scale = scale

        def forward(self, q, k, v, mask=None):
            attn = torch.bmm(q, k.permute(0, 2, 1))  # query-key overlap

            if self.scale:
                dimension = torch.as_tensor(k.size(-1), dtype=attn.dtype, device=attn.device).sqrt()
                attn = attn / dimension

            if mask is not None:
                attn = attn.masked_fill(mask, -1e9)
            attn = self.softmax(attn)

            if self.dropout is not None:
                attn = self.dropout(attn)
            output = torch.bmm(attn, v)
            return output, attn

    class InterpretableMultiHeadAttention(nn.Module):
        def __init__(self, n_head: int, d_model: int, dropout: float = 0.0):
            super(InterpretableMultiHeadAttention, self).__init__()

            self.n_head = n_head
            self.d_model = d_model
            self.d_k = self.d_q = self.d_v = d_model // n_head
            self.dropout = nn.Dropout(p=dropout)

            self.v_layer = nn.Linear(self.d_model, self.d_v)
            self.q_layers = nn.ModuleList([nn.Linear(self.d_model, self.d_q) for _ in range(self.n_head)])
            self.k_layers = nn.ModuleList([nn.Linear(self.d_model, self.d_k) for _ in range(self.n_head)])
            self.attention = ScaledDotProductAttention()
            self.w_h = nn.Linear(self.d_v, self.d_model, bias=False)

            self.init_weights()

        def init_weights(self):
            for name, p in self.named_parameters():
                if "bias" not in name:
                    torch.nn.init.xavier_uniform_(p)
                else:
                    torch.nn.init.zeros_(p)

        def forward(self, q, k, v, mask=None) -> Tuple[torch.Tensor, torch.Tensor]:
            heads = []
            attns = []
            vs = self.v_layer(v)
            for i in range(self.n_head):
                qs = self.q_layers[i](q)
                ks = self.k_layers[i](k)
                head, attn = self.attention(qs, ks, vs, mask)
                head_dropout = self.dropout(head)
                heads.append(head_dropout)
                attns.append(attn)

            head = torch.stack(heads, dim=2) if self.n_head > 1 else heads[0]
            attn = torch.stack(attns, dim=2)

            outputs = torch.mean(head, dim=2) if self.n_head > 1 else head
            outputs = self.w_h(outputs)
            outputs = self.dropout(outputs)

            return outputs, attn

    return dict(TimeDistributedInterpolation=TimeDistributedInterpolation, GatedLinearUnit=GatedLinearUnit,
                ResampleNorm=ResampleNorm, AddNorm=AddNorm, GateAddNorm=GateAddNorm,
                GatedResidualNetwork=GatedResidualNetwork, VariableSelectionNetwork=VariableSelectionNetwork,
                ScaledDotProductAttention=ScaledDotProductAttention,
                InterpretableMultiHeadAttention=InterpretableMultiHeadAttention)


# --- pytorch_forecasting/metrics ------------------------------------------------------------------------------------


def quantile_loss(torch):
    """metrics/quantile.py's ``QuantileLoss`` with the ``MultiHorizonMetric`` parts a training step uses
    (``mask_losses`` by the decoder lengths, the "mean" ``reduce_loss``, ``to_prediction``)."""

    class QuantileLoss:
        """
        Quantile loss, i.e. a quantile of ``q=0.5`` will give half of the mean absolute error as it is calculated as

        Defined as ``max(q * (y-y_pred), (1-q) * (y_pred-y))``
        """

        def __init__(self, quantiles: List[float] = [0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98], reduction="mean"):
            self.quantiles = quantiles
            self.reduction = reduction

        def loss(self, y_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            # calculate quantile loss
            losses = []
            for i, q in enumerate(self.quantiles):
                errors = target - y_pred[..., i]
                losses.append(torch.max((q - 1) * errors, q * errors).unsqueeze(-1))
            losses = 2 * torch.cat(losses, dim=2)

            return losses

        def to_prediction(self, y_pred: torch.Tensor) -> torch.Tensor:
            if y_pred.ndim == 3:
                idx = self.quantiles.index(0.5)
                y_pred = y_pred[..., idx]
            return y_pred

        def mask_losses(self, losses: torch.Tensor, lengths: torch.Tensor, reduction: str = None) -> torch.Tensor:
            if reduction is None:
                reduction = self.reduction
            mask = torch.arange(losses.size(1), device=losses.device).unsqueeze(0) >= lengths.unsqueeze(-1)
            if losses.ndim > 2:
                mask = mask.unsqueeze(-1)
                dim_normalizer = losses.size(-1)
            else:
                dim_normalizer = 1.0
            # reduce to one number
            if reduction == "none":
                losses = losses.masked_fill(mask, float("nan"))
            else:
                losses = losses.masked_fill(mask, 0.0) / dim_normalizer
            return losses

        def __call__(self, y_pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            losses = self.mask_losses(self.loss(y_pred, target), lengths)
            return losses.sum() / lengths.sum()

    return QuantileLoss


# --- pytorch_forecasting/models/temporal_fusion_transformer/_tft.py ---------------------------------------------------


def temporal_fusion_transformer(torch, nn, F, dropout=0.0):
    """``TemporalFusionTransformer.__init__`` and ``forward`` as _tft.py writes them (its LightningModule plumbing,
    ``hparams`` handling and interpretation helpers left out; ``MultiEmbedding`` reduced to one ``nn.Embedding`` a
    categorical, no groups or paddings): the shared prescalers ``ModuleDict`` in every variable selection, the shared
    post-LSTM gate and norm, the LSTM state from the static context, static enrichment, interpretable attention over
    the encoder and the causal decoder, the quantile head."""
    blocks = tft_sub_modules(torch, nn, F)
    VariableSelectionNetwork, GatedResidualNetwork = blocks["VariableSelectionNetwork"], blocks["GatedResidualNetwork"]
    GatedLinearUnit, AddNorm, GateAddNorm = blocks["GatedLinearUnit"], blocks["AddNorm"], blocks["GateAddNorm"]
    InterpretableMultiHeadAttention = blocks["InterpretableMultiHeadAttention"]
    LSTM, mask_of = forecasting_rnn(torch, nn), create_mask(torch)

    class MultiEmbedding(nn.Module):
        def __init__(self, embedding_sizes, x_categoricals, max_embedding_size=None):
            super().__init__()
            self.embedding_sizes = dict(embedding_sizes)
            self.x_categoricals = x_categoricals
            self.max_embedding_size = max_embedding_size
            self.init_embeddings()

        def init_embeddings(self):
            self.embeddings = nn.ModuleDict()
            for name in self.embedding_sizes.keys():
                embedding_size = self.embedding_sizes[name][1]
                if self.max_embedding_size is not None:
                    embedding_size = min(embedding_size, self.max_embedding_size)
                # convert to list to become mutable
                self.embedding_sizes[name] = list(self.embedding_sizes[name])
                self.embedding_sizes[name][1] = embedding_size
                self.embeddings[name] = nn.Embedding(self.embedding_sizes[name][0], embedding_size)

        @property
        def output_size(self):
            return {name: s[1] for name, s in self.embedding_sizes.items()}

        def forward(self, x):
            input_vectors = {}
            for name, emb in self.embeddings.items():
                input_vectors[name] = emb(x[..., self.x_categoricals.index(name)])
            return input_vectors

    class TemporalFusionTransformer(nn.Module):
        def __init__(self, hidden_size=HIDDEN, lstm_layers=LSTM_LAYERS, attention_head_size=HEADS,
                     hidden_continuous_size=HIDDEN_CONTINUOUS, output_size=len(QUANTILES)):
            super().__init__()
            self.hidden_size, self.lstm_layers = hidden_size, lstm_layers
            self.static_variables = STATIC_CATEGORICALS + STATIC_REALS
            self.encoder_variables = ENCODER_CATEGORICALS + ENCODER_REALS
            self.decoder_variables = DECODER_CATEGORICALS + DECODER_REALS
            self.reals = X_REALS

            # processing inputs
            # embeddings
            self.input_embeddings = MultiEmbedding(
                embedding_sizes=EMBEDDING_SIZES, x_categoricals=X_CATEGORICALS, max_embedding_size=hidden_size
            )

            # continuous variable processing
            self.prescalers = nn.ModuleDict(
                {name: nn.Linear(1, hidden_continuous_size) for name in self.reals}
            )

            # variable selection for static variables
            static_input_sizes = {name: self.input_embeddings.output_size[name] for name in STATIC_CATEGORICALS}
            static_input_sizes.update({name: hidden_continuous_size for name in STATIC_REALS})
            self.static_variable_selection = VariableSelectionNetwork(
                input_sizes=static_input_sizes,
                hidden_size=hidden_size,
                input_embedding_flags={name: True for name in STATIC_CATEGORICALS},
                dropout=dropout,
                prescalers=self.prescalers,
            )

            # variable selection for encoder and decoder
            encoder_input_sizes = {name: self.input_embeddings.output_size[name] for name in ENCODER_CATEGORICALS}
            encoder_input_sizes.update({name: hidden_continuous_size for name in ENCODER_REALS})
            decoder_input_sizes = {name: self.input_embeddings.output_size[name] for name in DECODER_CATEGORICALS}
            decoder_input_sizes.update({name: hidden_continuous_size for name in DECODER_REALS})

            self.encoder_variable_selection = VariableSelectionNetwork(
                input_sizes=encoder_input_sizes,
                hidden_size=hidden_size,
                input_embedding_flags={name: True for name in ENCODER_CATEGORICALS},
                dropout=dropout,
                context_size=hidden_size,
                prescalers=self.prescalers,
                single_variable_grns={},
            )

            self.decoder_variable_selection = VariableSelectionNetwork(
                input_sizes=decoder_input_sizes,
                hidden_size=hidden_size,
                input_embedding_flags={name: True for name in DECODER_CATEGORICALS},
                dropout=dropout,
                context_size=hidden_size,
                prescalers=self.prescalers,
                single_variable_grns={},
            )

            # static encoders
            # for variable selection
            self.static_context_variable_selection = GatedResidualNetwork(
                input_size=hidden_size, hidden_size=hidden_size, output_size=hidden_size, dropout=dropout
            )

            # for hidden state of the lstm
            self.static_context_initial_hidden_lstm = GatedResidualNetwork(
                input_size=hidden_size, hidden_size=hidden_size, output_size=hidden_size, dropout=dropout
            )

            # for cell state of the lstm
            self.static_context_initial_cell_lstm = GatedResidualNetwork(
                input_size=hidden_size, hidden_size=hidden_size, output_size=hidden_size, dropout=dropout
            )

            # for post lstm static enrichment
            self.static_context_enrichment = GatedResidualNetwork(hidden_size, hidden_size, hidden_size, dropout)

            # lstm encoder (history) and decoder (future) for local processing
            self.lstm_encoder = LSTM(
                input_size=hidden_size,
                hidden_size=hidden_size,
                num_layers=lstm_layers,
                dropout=dropout if lstm_layers > 1 else 0,
                batch_first=True,
            )

            self.lstm_decoder = LSTM(
                input_size=hidden_size,
                hidden_size=hidden_size,
                num_layers=lstm_layers,
                dropout=dropout if lstm_layers > 1 else 0,
                batch_first=True,
            )

            # skip connection for lstm
            self.post_lstm_gate_encoder = GatedLinearUnit(hidden_size, dropout=dropout)
            self.post_lstm_gate_decoder = self.post_lstm_gate_encoder
            self.post_lstm_add_norm_encoder = AddNorm(hidden_size, trainable_add=False)
            self.post_lstm_add_norm_decoder = self.post_lstm_add_norm_encoder

            # static enrichment and processing past LSTM
            self.static_enrichment = GatedResidualNetwork(
                input_size=hidden_size,
                hidden_size=hidden_size,
                output_size=hidden_size,
                dropout=dropout,
                context_size=hidden_size,
            )

            # attention for long-range processing
            self.multihead_attn = InterpretableMultiHeadAttention(
                d_model=hidden_size, n_head=attention_head_size, dropout=dropout
            )
            self.post_attn_gate_norm = GateAddNorm(hidden_size, dropout=dropout, trainable_add=False)
            self.pos_wise_ff = GatedResidualNetwork(hidden_size, hidden_size, hidden_size, dropout=dropout)

            # output processing -> no dropout at this late stage
            self.pre_output_gate_norm = GateAddNorm(hidden_size, dropout=None, trainable_add=False)

            self.output_layer = nn.Linear(hidden_size, output_size)

        def expand_static_context(self, context, timesteps):
            """
            add time dimension to static context
            """
            return context[:, None].expand(-1, timesteps, -1)

        def get_attention_mask(self, encoder_lengths: torch.LongTensor, decoder_lengths: torch.LongTensor):
            """
            Returns causal mask to apply for self-attention layer.
            """
            decoder_length = decoder_lengths.max()
            # indices to which is attended
            attend_step = torch.arange(decoder_length, device=encoder_lengths.device)
            # indices for which is predicted
            predict_step = torch.arange(0, decoder_length, device=encoder_lengths.device)[:, None]
            # do not attend to steps to self or after prediction
            decoder_mask = (attend_step >= predict_step).unsqueeze(0).expand(encoder_lengths.size(0), -1, -1)
            # do not attend to steps where data is padded
            encoder_mask = mask_of(encoder_lengths.max(), encoder_lengths).unsqueeze(1).expand(-1, decoder_length, -1)
            # combine masks along attended time - first encoder and then decoder
            mask = torch.cat(
                (
                    encoder_mask,
                    decoder_mask,
                ),
                dim=2,
            )
            return mask

        def forward(self, x: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
            """
            input dimensions: n_samples x time x variables
            """
            encoder_lengths = x["encoder_lengths"]
            decoder_lengths = x["decoder_lengths"]
            x_cat = torch.cat([x["encoder_cat"], x["decoder_cat"]], dim=1)  # concatenate in time dimension
            x_cont = torch.cat([x["encoder_cont"], x["decoder_cont"]], dim=1)  # concatenate in time dimension
            timesteps = x_cont.size(1)  # encode + decode length
            max_encoder_length = int(encoder_lengths.max())
            input_vectors = self.input_embeddings(x_cat)
            input_vectors.update(
                {name: x_cont[..., idx].unsqueeze(-1) for idx, name in enumerate(X_REALS) if name in self.reals}
            )

            # Embedding and variable selection
            if len(self.static_variables) > 0:
                # static embeddings will be constant over entire batch
                static_embedding = {name: input_vectors[name][:, 0] for name in self.static_variables}
                static_embedding, static_variable_selection = self.static_variable_selection(static_embedding)
            else:
                static_embedding = torch.zeros(
                    (x_cont.size(0), self.hidden_size), dtype=x_cont.dtype, device=x_cont.device
                )
                static_variable_selection = torch.zeros((x_cont.size(0), 0), dtype=x_cont.dtype, device=x_cont.device)

            static_context_variable_selection = self.expand_static_context(
                self.static_context_variable_selection(static_embedding), timesteps
            )

            embeddings_varying_encoder = {
                name: input_vectors[name][:, :max_encoder_length] for name in self.encoder_variables
            }
            embeddings_varying_encoder, encoder_sparse_weights = self.encoder_variable_selection(
                embeddings_varying_encoder,
                static_context_variable_selection[:, :max_encoder_length],
            )

            embeddings_varying_decoder = {
                name: input_vectors[name][:, max_encoder_length:] for name in self.decoder_variables  # select decoder
            }
            embeddings_varying_decoder, decoder_sparse_weights = self.decoder_variable_selection(
                embeddings_varying_decoder,
                static_context_variable_selection[:, max_encoder_length:],
            )

            # LSTM
            # calculate initial state
            input_hidden = self.static_context_initial_hidden_lstm(static_embedding).expand(
                self.lstm_layers, -1, -1
            )
            input_cell = self.static_context_initial_cell_lstm(static_embedding).expand(self.lstm_layers, -1, -1)

            # run local encoder
            encoder_output, (hidden, cell) = self.lstm_encoder(
                embeddings_varying_encoder, (input_hidden, input_cell), lengths=encoder_lengths, enforce_sorted=False
            )

            # run local decoder
            decoder_output, _ = self.lstm_decoder(
                embeddings_varying_decoder,
                (hidden, cell),
                lengths=decoder_lengths,
                enforce_sorted=False,
            )

            # skip connection over lstm
            lstm_output_encoder = self.post_lstm_gate_encoder(encoder_output)
            lstm_output_encoder = self.post_lstm_add_norm_encoder(lstm_output_encoder, embeddings_varying_encoder)

            lstm_output_decoder = self.post_lstm_gate_decoder(decoder_output)
            lstm_output_decoder = self.post_lstm_add_norm_decoder(lstm_output_decoder, embeddings_varying_decoder)

            lstm_output = torch.cat([lstm_output_encoder, lstm_output_decoder], dim=1)

            # static enrichment
            static_context_enrichment = self.static_context_enrichment(static_embedding)
            attn_input = self.static_enrichment(
                lstm_output, self.expand_static_context(static_context_enrichment, timesteps)
            )

            # Attention
            attn_output, attn_output_weights = self.multihead_attn(
                q=attn_input[:, max_encoder_length:],  # query only for predictions
                k=attn_input,
                v=attn_input,
                mask=self.get_attention_mask(encoder_lengths=encoder_lengths, decoder_lengths=decoder_lengths),
            )

            # skip connection over attention
            attn_output = self.post_attn_gate_norm(attn_output, attn_input[:, max_encoder_length:])

            output = self.pos_wise_ff(attn_output)

            # skip connection over temporal fusion decoder (not LSTM decoder despite the LSTM output contains
            # a skip from the variable selection network)
            output = self.pre_output_gate_norm(output, lstm_output[:, max_encoder_length:])
            output = self.output_layer(output)

            return dict(
                prediction=output,
                encoder_attention=attn_output_weights[..., :max_encoder_length],
                decoder_attention=attn_output_weights[..., max_encoder_length:],
                static_variables=static_variable_selection,
                encoder_variables=encoder_sparse_weights,
                decoder_variables=decoder_sparse_weights,
                decoder_lengths=decoder_lengths,
                encoder_lengths=encoder_lengths,
            )

    return TemporalFusionTransformer


def tft_batches(count, encoder_lengths=(6, 4, 5, 0), decoder_lengths=(3, 3, 2, 3), seed=0):
    """What pytorch-forecasting's ``TimeSeriesDataSet`` loader hands the model, as NumPy arrays: ``(x, y)`` with
    ``x`` the dict of categoricals (group, month), reals (scale, time_idx, target; the decoder's target unknown, 0),
    lengths, and ``y`` the decoder's targets. A padded step is zero, as the loader pads."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        group = rng.integers(0, EMBEDDING_SIZES["group"][0], SERIES)
        start = rng.integers(0, 12, SERIES)
        steps = np.arange(ENCODER_LENGTH + DECODER_LENGTH)
        month = (start[:, None] + steps) % 12
        level = rng.standard_normal(SERIES)
        series = level[:, None] + np.sin(2 * np.pi * month / 12) + 0.1 * rng.standard_normal(month.shape)
        scale = np.repeat(np.abs(level)[:, None] + 1.0, len(steps), axis=1)
        time_idx = np.repeat((steps / len(steps))[None], SERIES, axis=0)
        target = np.where(steps < ENCODER_LENGTH, series, 0.0)
        cat = np.stack([np.repeat(group[:, None], len(steps), axis=1), month], axis=-1)
        cont = np.stack([scale, time_idx, target], axis=-1)
        valid = np.concatenate([np.arange(ENCODER_LENGTH)[None] < np.array(encoder_lengths)[:, None],
                                np.arange(DECODER_LENGTH)[None] < np.array(decoder_lengths)[:, None]], axis=1)
        cat, cont = cat * valid[..., None], cont * valid[..., None]
        x = dict(encoder_cat=cat[:, :ENCODER_LENGTH], decoder_cat=cat[:, ENCODER_LENGTH:],
                 encoder_cont=cont[:, :ENCODER_LENGTH], decoder_cont=cont[:, ENCODER_LENGTH:],
                 encoder_lengths=np.array(encoder_lengths), decoder_lengths=np.array(decoder_lengths))
        y = series[:, ENCODER_LENGTH:] * valid[:, ENCODER_LENGTH:]
        batches.append((x, y))
    return batches
