"""wav2vec 2.0 pre-training as Hugging Face's ``modeling_wav2vec2.py`` and ``run_wav2vec2_pretraining_no_trainer.py``
write it (a tiny config written out, no ``transformers`` import), as one program text over ``(torch, nn, F)`` so it
runs on kiln and on torch (see ``test_porting_probes_wav2vec2.py``).

The collator's NumPy helpers and the script's gradient helpers are in ``wav2vec2_collator.py``.

Changes from the reference, each for lockstep runs only: the Gumbel noise of the
quantizer's ``gumbel_softmax`` can be fed (``gumbels``; kiln's generator draws other numbers than torch's), written as
torch's ``F.gumbel_softmax`` computes it; ``upcast`` is the reference's ``.float()`` (fp16 training's upcast), which a
float64 run replaces by the identity (``upcast=False``) to keep float64 throughout.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from e2e.wav2vec2_collator import _compute_mask_indices

CONFIG = SimpleNamespace(
    conv_dim=(8, 8), conv_kernel=(5, 3), conv_stride=(3, 2), conv_bias=False, feat_extract_activation="gelu",
    feat_extract_norm="group", do_stable_layer_norm=False,
    hidden_size=12, num_attention_heads=2, intermediate_size=16, num_hidden_layers=2, hidden_act="gelu",
    num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, layer_norm_eps=1e-5, layerdrop=0.0,
    hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
    feat_quantizer_dropout=0.0, initializer_range=0.02, mask_time_prob=0.5, mask_time_length=2, mask_time_min_masks=2,
    mask_feature_prob=0.0, mask_feature_length=2, mask_feature_min_masks=0,
    num_codevector_groups=2, num_codevectors_per_group=4, codevector_dim=8, proj_codevector_dim=6, num_negatives=3,
    contrastive_logits_temperature=0.1, diversity_loss_weight=0.1)
# wav2vec2-large-lv60's layout: layer-norm conv layers, pre-norm ("stable layer norm") encoder, attention masks
LARGE_CONFIG = SimpleNamespace(**{**vars(CONFIG), "feat_extract_norm": "layer", "do_stable_layer_norm": True,
                                  "conv_bias": True})


def wav2vec2_for_pretraining(torch, nn, F, config=CONFIG, upcast=True, legacy_weight_norm=True,
                             fullgraph_edits=False):
    """``Wav2Vec2ForPreTraining`` (group-norm feature encoder, post-norm transformer: wav2vec2-base's layout) with
    HF's ``_init_weights`` applied; ``legacy_weight_norm`` picks ``nn.utils.weight_norm`` (the brief's form) over
    ``nn.utils.parametrizations.weight_norm`` (what HF picks where torch has it). ``fullgraph_edits`` makes the two
    edits a torch.compile(fullgraph=True) user must make, as both are Python branches on a value the graph computes
    (data-dependent control flow, which torch refuses too): LayerDrop draws ``torch.rand([])`` only where
    ``layerdrop > 0``, and ``logits[1:][neg_is_pos] = float("-inf")`` is written without ``if neg_is_pos.any()``."""
    ACT2FN = {"gelu": nn.GELU()}

    def to_float(tensor):
        return tensor.float() if upcast else tensor

    class Wav2Vec2NoLayerNormConvLayer(nn.Module):
        def __init__(self, config, layer_id=0):
            super().__init__()
            self.in_conv_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
            self.out_conv_dim = config.conv_dim[layer_id]

            self.conv = nn.Conv1d(
                self.in_conv_dim,
                self.out_conv_dim,
                kernel_size=config.conv_kernel[layer_id],
                stride=config.conv_stride[layer_id],
                bias=config.conv_bias,
            )
            self.activation = ACT2FN[config.feat_extract_activation]

        def forward(self, hidden_states):
            hidden_states = self.conv(hidden_states)
            hidden_states = self.activation(hidden_states)
            return hidden_states

    class Wav2Vec2LayerNormConvLayer(nn.Module):
        def __init__(self, config, layer_id=0):
            super().__init__()
            self.in_conv_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
            self.out_conv_dim = config.conv_dim[layer_id]

            self.conv = nn.Conv1d(
                self.in_conv_dim,
                self.out_conv_dim,
                kernel_size=config.conv_kernel[layer_id],
                stride=config.conv_stride[layer_id],
                bias=config.conv_bias,
            )
            self.layer_norm = nn.LayerNorm(self.out_conv_dim, elementwise_affine=True)
            self.activation = ACT2FN[config.feat_extract_activation]

        def forward(self, hidden_states):
            hidden_states = self.conv(hidden_states)

            hidden_states = hidden_states.transpose(-2, -1)
            hidden_states = self.layer_norm(hidden_states)
            hidden_states = hidden_states.transpose(-2, -1)

            hidden_states = self.activation(hidden_states)
            return hidden_states

    class Wav2Vec2GroupNormConvLayer(nn.Module):
        def __init__(self, config, layer_id=0):
            super().__init__()
            self.in_conv_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
            self.out_conv_dim = config.conv_dim[layer_id]

            self.conv = nn.Conv1d(
                self.in_conv_dim,
                self.out_conv_dim,
                kernel_size=config.conv_kernel[layer_id],
                stride=config.conv_stride[layer_id],
                bias=config.conv_bias,
            )
            self.activation = ACT2FN[config.feat_extract_activation]

            self.layer_norm = nn.GroupNorm(num_groups=self.out_conv_dim, num_channels=self.out_conv_dim, affine=True)

        def forward(self, hidden_states):
            hidden_states = self.conv(hidden_states)
            hidden_states = self.layer_norm(hidden_states)
            hidden_states = self.activation(hidden_states)
            return hidden_states

    class Wav2Vec2SamePadLayer(nn.Module):
        def __init__(self, num_conv_pos_embeddings):
            super().__init__()
            self.num_pad_remove = 1 if num_conv_pos_embeddings % 2 == 0 else 0

        def forward(self, hidden_states):
            if self.num_pad_remove > 0:
                hidden_states = hidden_states[:, :, : -self.num_pad_remove]
            return hidden_states

    class Wav2Vec2PositionalConvEmbedding(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.conv = nn.Conv1d(
                config.hidden_size,
                config.hidden_size,
                kernel_size=config.num_conv_pos_embeddings,
                padding=config.num_conv_pos_embeddings // 2,
                groups=config.num_conv_pos_embedding_groups,
            )

            weight_norm = nn.utils.weight_norm
            if hasattr(nn.utils.parametrizations, "weight_norm") and not legacy_weight_norm:
                weight_norm = nn.utils.parametrizations.weight_norm

            self.conv = weight_norm(self.conv, name="weight", dim=2)

            self.padding = Wav2Vec2SamePadLayer(config.num_conv_pos_embeddings)
            self.activation = ACT2FN[config.feat_extract_activation]

        def forward(self, hidden_states):
            hidden_states = hidden_states.transpose(1, 2)

            hidden_states = self.conv(hidden_states)
            hidden_states = self.padding(hidden_states)
            hidden_states = self.activation(hidden_states)

            hidden_states = hidden_states.transpose(1, 2)
            return hidden_states

    class Wav2Vec2FeatureEncoder(nn.Module):
        """Construct the features from raw audio waveform"""

        def __init__(self, config):
            super().__init__()
            if config.feat_extract_norm == "group":
                conv_layers = [Wav2Vec2GroupNormConvLayer(config, layer_id=0)] + [
                    Wav2Vec2NoLayerNormConvLayer(config, layer_id=i + 1) for i in range(len(config.conv_dim) - 1)
                ]
            elif config.feat_extract_norm == "layer":
                conv_layers = [Wav2Vec2LayerNormConvLayer(config, layer_id=i) for i in range(len(config.conv_dim))]
            self.conv_layers = nn.ModuleList(conv_layers)
            self.gradient_checkpointing = False
            self._requires_grad = True

        def _freeze_parameters(self):
            for param in self.parameters():
                param.requires_grad = False
            self._requires_grad = False

        def forward(self, input_values):
            hidden_states = input_values[:, None]

            # make sure hidden_states require grad for gradient_checkpointing
            if self._requires_grad and self.training:
                hidden_states.requires_grad = True

            for conv_layer in self.conv_layers:
                hidden_states = conv_layer(hidden_states)

            return hidden_states

    class Wav2Vec2FeatureProjection(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
            self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
            self.dropout = nn.Dropout(config.feat_proj_dropout)

        def forward(self, hidden_states):
            # non-projected hidden states are needed for quantization
            norm_hidden_states = self.layer_norm(hidden_states)
            hidden_states = self.projection(norm_hidden_states)
            hidden_states = self.dropout(hidden_states)
            return hidden_states, norm_hidden_states

    class Wav2Vec2Attention(nn.Module):
        """Multi-headed attention from 'Attention Is All You Need' paper"""

        def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True):
            super().__init__()
            self.embed_dim = embed_dim
            self.num_heads = num_heads
            self.dropout = dropout
            self.head_dim = embed_dim // num_heads
            self.scaling = self.head_dim**-0.5

            self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

        def _shape(self, tensor, seq_len, bsz):
            return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

        def forward(self, hidden_states, attention_mask=None):
            bsz, tgt_len, _ = hidden_states.size()

            # get query proj
            query_states = self.q_proj(hidden_states) * self.scaling
            key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
            value_states = self._shape(self.v_proj(hidden_states), -1, bsz)

            proj_shape = (bsz * self.num_heads, -1, self.head_dim)
            query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
            key_states = key_states.reshape(*proj_shape)
            value_states = value_states.reshape(*proj_shape)

            src_len = key_states.size(1)
            attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))

            if attention_mask is not None:
                attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
                attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)

            attn_weights = nn.functional.softmax(attn_weights, dim=-1)
            attn_probs = nn.functional.dropout(attn_weights, p=self.dropout, training=self.training)
            attn_output = torch.bmm(attn_probs, value_states)

            attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim)
            attn_output = attn_output.transpose(1, 2)
            attn_output = attn_output.reshape(bsz, tgt_len, self.embed_dim)

            attn_output = self.out_proj(attn_output)
            return attn_output, None, None

    class Wav2Vec2FeedForward(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.intermediate_dropout = nn.Dropout(config.activation_dropout)
            self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
            self.intermediate_act_fn = ACT2FN[config.hidden_act]
            self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
            self.output_dropout = nn.Dropout(config.hidden_dropout)

        def forward(self, hidden_states):
            hidden_states = self.intermediate_dense(hidden_states)
            hidden_states = self.intermediate_act_fn(hidden_states)
            hidden_states = self.intermediate_dropout(hidden_states)

            hidden_states = self.output_dense(hidden_states)
            hidden_states = self.output_dropout(hidden_states)
            return hidden_states

    class Wav2Vec2EncoderLayer(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.attention = Wav2Vec2Attention(
                embed_dim=config.hidden_size,
                num_heads=config.num_attention_heads,
                dropout=config.attention_dropout,
            )
            self.dropout = nn.Dropout(config.hidden_dropout)
            self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.feed_forward = Wav2Vec2FeedForward(config)
            self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

        def forward(self, hidden_states, attention_mask=None):
            attn_residual = hidden_states
            hidden_states, attn_weights, _ = self.attention(hidden_states, attention_mask=attention_mask)
            hidden_states = self.dropout(hidden_states)
            hidden_states = attn_residual + hidden_states

            hidden_states = self.layer_norm(hidden_states)
            hidden_states = hidden_states + self.feed_forward(hidden_states)
            hidden_states = self.final_layer_norm(hidden_states)
            return (hidden_states,)

    class Wav2Vec2Encoder(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.pos_conv_embed = Wav2Vec2PositionalConvEmbedding(config)
            self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.dropout = nn.Dropout(config.hidden_dropout)
            self.layers = nn.ModuleList([Wav2Vec2EncoderLayer(config) for _ in range(config.num_hidden_layers)])

        def forward(self, hidden_states, attention_mask=None):
            if attention_mask is not None:
                # make sure padded tokens output 0
                expand_attention_mask = attention_mask.unsqueeze(-1).repeat(1, 1, hidden_states.shape[2])
                hidden_states[~expand_attention_mask] = 0

                # extend attention_mask
                attention_mask = 1.0 - attention_mask[:, None, None, :].to(dtype=hidden_states.dtype)
                attention_mask = attention_mask * torch.finfo(hidden_states.dtype).min
                attention_mask = attention_mask.expand(
                    attention_mask.shape[0], 1, attention_mask.shape[-1], attention_mask.shape[-1]
                )

            position_embeddings = self.pos_conv_embed(hidden_states)
            hidden_states = hidden_states + position_embeddings
            hidden_states = self.layer_norm(hidden_states)
            hidden_states = self.dropout(hidden_states)

            for layer in self.layers:
                # add LayerDrop (see https://arxiv.org/abs/1909.11556 for description)
                if not fullgraph_edits:
                    dropout_probability = torch.rand([])

                    skip_the_layer = True if self.training and (dropout_probability < self.config.layerdrop) else False
                else:  # what a torch.compile(fullgraph=True) user writes: no branch on a traced draw
                    skip_the_layer = self.training and self.config.layerdrop > 0 and (
                        torch.rand([]) < self.config.layerdrop).item()
                if not skip_the_layer:
                    layer_outputs = layer(hidden_states, attention_mask=attention_mask)
                    hidden_states = layer_outputs[0]

            return (hidden_states,)

    class Wav2Vec2EncoderLayerStableLayerNorm(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.attention = Wav2Vec2Attention(
                embed_dim=config.hidden_size,
                num_heads=config.num_attention_heads,
                dropout=config.attention_dropout,
            )
            self.dropout = nn.Dropout(config.hidden_dropout)
            self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.feed_forward = Wav2Vec2FeedForward(config)
            self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

        def forward(self, hidden_states, attention_mask=None):
            attn_residual = hidden_states
            hidden_states = self.layer_norm(hidden_states)
            hidden_states, attn_weights, _ = self.attention(hidden_states, attention_mask=attention_mask)
            hidden_states = self.dropout(hidden_states)
            hidden_states = attn_residual + hidden_states
            hidden_states = hidden_states + self.feed_forward(self.final_layer_norm(hidden_states))
            return (hidden_states,)

    class Wav2Vec2EncoderStableLayerNorm(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.pos_conv_embed = Wav2Vec2PositionalConvEmbedding(config)
            self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.dropout = nn.Dropout(config.hidden_dropout)
            self.layers = nn.ModuleList(
                [Wav2Vec2EncoderLayerStableLayerNorm(config) for _ in range(config.num_hidden_layers)]
            )

        def forward(self, hidden_states, attention_mask=None):
            if attention_mask is not None:
                # make sure padded tokens output 0
                expand_attention_mask = attention_mask.unsqueeze(-1).repeat(1, 1, hidden_states.shape[2])
                hidden_states[~expand_attention_mask] = 0

                # extend attention_mask
                attention_mask = 1.0 - attention_mask[:, None, None, :].to(dtype=hidden_states.dtype)
                attention_mask = attention_mask * torch.finfo(hidden_states.dtype).min
                attention_mask = attention_mask.expand(
                    attention_mask.shape[0], 1, attention_mask.shape[-1], attention_mask.shape[-1]
                )

            position_embeddings = self.pos_conv_embed(hidden_states)
            hidden_states = hidden_states + position_embeddings
            hidden_states = self.dropout(hidden_states)

            for layer in self.layers:
                # add LayerDrop (see https://arxiv.org/abs/1909.11556 for description)
                if not fullgraph_edits:
                    dropout_probability = torch.rand([])

                    skip_the_layer = True if self.training and (dropout_probability < self.config.layerdrop) else False
                else:  # what a torch.compile(fullgraph=True) user writes: no branch on a traced draw
                    skip_the_layer = self.training and self.config.layerdrop > 0 and (
                        torch.rand([]) < self.config.layerdrop).item()
                if not skip_the_layer:
                    layer_outputs = layer(hidden_states, attention_mask=attention_mask)
                    hidden_states = layer_outputs[0]

            hidden_states = self.layer_norm(hidden_states)
            return (hidden_states,)

    class Wav2Vec2GumbelVectorQuantizer(nn.Module):
        """Vector quantization using gumbel softmax. See `[CATEGORICAL REPARAMETERIZATION WITH
        GUMBEL-SOFTMAX](https://arxiv.org/pdf/1611.01144.pdf) for more information."""

        def __init__(self, config):
            super().__init__()
            self.num_groups = config.num_codevector_groups
            self.num_vars = config.num_codevectors_per_group

            if config.codevector_dim % self.num_groups != 0:
                raise ValueError(
                    f"`config.codevector_dim {config.codevector_dim} must be divisible "
                    f"by `config.num_codevector_groups` {self.num_groups} for concatenation"
                )

            # storage for codebook variables (codewords)
            self.codevectors = nn.Parameter(
                torch.Tensor(1, self.num_groups * self.num_vars, config.codevector_dim // self.num_groups)
            )
            self.weight_proj = nn.Linear(config.conv_dim[-1], self.num_groups * self.num_vars)

            # can be decayed for training
            self.temperature = 2

        @staticmethod
        def _compute_perplexity(probs, mask=None):
            if mask is not None:
                mask_extended = mask.flatten()[:, None, None].expand(probs.shape)
                probs = torch.where(mask_extended, probs, torch.zeros_like(probs))
                marginal_probs = probs.sum(dim=0) / mask.sum()
            else:
                marginal_probs = probs.mean(dim=0)

            perplexity = torch.exp(-torch.sum(marginal_probs * torch.log(marginal_probs + 1e-7), dim=-1)).sum()
            return perplexity

        def forward(self, hidden_states, mask_time_indices=None, gumbels=None):
            batch_size, sequence_length, hidden_size = hidden_states.shape

            # project to codevector dim
            hidden_states = self.weight_proj(hidden_states)
            hidden_states = hidden_states.view(batch_size * sequence_length * self.num_groups, -1)

            if self.training:
                # sample code vector probs via gumbel in differentiateable way
                codevector_probs = gumbel_softmax(
                    to_float(hidden_states), tau=self.temperature, hard=True, gumbels=gumbels
                ).type_as(hidden_states)

                # compute perplexity
                codevector_soft_dist = torch.softmax(
                    to_float(hidden_states.view(batch_size * sequence_length, self.num_groups, -1)), dim=-1
                )
                perplexity = self._compute_perplexity(codevector_soft_dist, mask_time_indices)
            else:
                # take argmax in non-differentiable way
                # comptute hard codevector distribution (one hot)
                codevector_idx = hidden_states.argmax(dim=-1)
                codevector_probs = hidden_states.new_zeros(hidden_states.shape).scatter_(
                    -1, codevector_idx.view(-1, 1), 1.0
                )
                codevector_probs = codevector_probs.view(batch_size * sequence_length, self.num_groups, -1)

                perplexity = self._compute_perplexity(codevector_probs, mask_time_indices)

            codevector_probs = codevector_probs.view(batch_size * sequence_length, -1)
            # use probs to retrieve codevectors
            codevectors_per_group = codevector_probs.unsqueeze(-1) * self.codevectors
            codevectors = codevectors_per_group.view(batch_size * sequence_length, self.num_groups, self.num_vars, -1)
            codevectors = codevectors.sum(-2).view(batch_size, sequence_length, -1)

            return codevectors, perplexity

    def gumbel_softmax(logits, tau, hard, gumbels=None, dim=-1):
        """``nn.functional.gumbel_softmax`` (``gumbels`` None), or what it computes from the given Gumbel noise
        (torch's own code: ``(logits + gumbels) / tau``, softmax, the argmax's one-hot by ``scatter_``, straight
        through)."""
        if gumbels is None:
            return nn.functional.gumbel_softmax(logits, tau=tau, hard=hard)
        y_soft = ((logits + gumbels) / tau).softmax(dim)
        index = y_soft.max(dim, keepdim=True)[1]
        y_hard = torch.zeros_like(logits).scatter_(dim, index, 1.0)
        return y_hard - y_soft.detach() + y_soft

    class Wav2Vec2PreTrainedModel(nn.Module):
        def _get_feat_extract_output_lengths(self, input_lengths):
            def _conv_out_length(input_length, kernel_size, stride):
                return torch.div(input_length - kernel_size, stride, rounding_mode="floor") + 1

            for kernel_size, stride in zip(self.config.conv_kernel, self.config.conv_stride):
                input_lengths = _conv_out_length(input_lengths, kernel_size, stride)
            return input_lengths

        def _get_feature_vector_attention_mask(self, feature_vector_length, attention_mask):
            # Effectively attention_mask.sum(-1), but not inplace to be able to run
            # on inference mode.
            non_padded_lengths = attention_mask.cumsum(dim=-1)[:, -1]

            output_lengths = self._get_feat_extract_output_lengths(non_padded_lengths)
            output_lengths = output_lengths.to(torch.long)

            batch_size = attention_mask.shape[0]

            attention_mask = torch.zeros(
                (batch_size, feature_vector_length), dtype=attention_mask.dtype, device=attention_mask.device
            )
            # these two operations makes sure that all values before the output lengths idxs are attended to
            attention_mask[(torch.arange(attention_mask.shape[0], device=attention_mask.device), output_lengths - 1)] = 1
            attention_mask = attention_mask.flip([-1]).cumsum(-1).flip([-1]).bool()
            return attention_mask

    class Wav2Vec2Model(Wav2Vec2PreTrainedModel):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.feature_extractor = Wav2Vec2FeatureEncoder(config)
            self.feature_projection = Wav2Vec2FeatureProjection(config)

            # model only needs masking vector if mask prob is > 0.0
            if config.mask_time_prob > 0.0:
                self.masked_spec_embed = nn.Parameter(torch.Tensor(config.hidden_size).uniform_())

            self.spec_augment_random = np.random  # the feature mask's draws (a RandomState in lockstep runs)

            if config.do_stable_layer_norm:
                self.encoder = Wav2Vec2EncoderStableLayerNorm(config)
            else:
                self.encoder = Wav2Vec2Encoder(config)

        def _mask_hidden_states(self, hidden_states, mask_time_indices=None):
            # generate indices & apply SpecAugment along time axis
            batch_size, sequence_length, hidden_size = hidden_states.size()

            if mask_time_indices is not None:
                # apply SpecAugment along time axis with given mask_time_indices
                hidden_states[mask_time_indices] = self.masked_spec_embed.to(hidden_states.dtype)

            if self.config.mask_feature_prob > 0 and self.training:
                # generate indices & apply SpecAugment along feature axis
                mask_feature_indices = _compute_mask_indices(
                    (batch_size, hidden_size),
                    mask_prob=self.config.mask_feature_prob,
                    mask_length=self.config.mask_feature_length,
                    min_masks=self.config.mask_feature_min_masks,
                    random=self.spec_augment_random,
                )
                mask_feature_indices = torch.tensor(mask_feature_indices, device=hidden_states.device, dtype=torch.bool)
                mask_feature_indices = mask_feature_indices[:, None].expand(-1, sequence_length, -1)
                hidden_states[mask_feature_indices] = 0

            return hidden_states

        def forward(self, input_values, attention_mask=None, mask_time_indices=None):
            extract_features = self.feature_extractor(input_values)
            extract_features = extract_features.transpose(1, 2)

            if attention_mask is not None:
                # compute reduced attention_mask corresponding to feature vectors
                attention_mask = self._get_feature_vector_attention_mask(extract_features.shape[1], attention_mask)

            hidden_states, extract_features = self.feature_projection(extract_features)
            hidden_states = self._mask_hidden_states(hidden_states, mask_time_indices=mask_time_indices)

            encoder_outputs = self.encoder(hidden_states, attention_mask=attention_mask)
            hidden_states = encoder_outputs[0]
            return hidden_states, extract_features

    class Wav2Vec2ForPreTraining(Wav2Vec2PreTrainedModel):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.wav2vec2 = Wav2Vec2Model(config)
            self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)

            self.quantizer = Wav2Vec2GumbelVectorQuantizer(config)

            self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
            self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)

        def set_gumbel_temperature(self, temperature: int):
            """Set the Gumbel softmax temperature to a given value. Only necessary for training"""
            self.quantizer.temperature = temperature

        def freeze_feature_encoder(self):
            self.wav2vec2.feature_extractor._freeze_parameters()

        @staticmethod
        def compute_contrastive_logits(target_features, negative_features, predicted_features, temperature: int = 0.1):
            target_features = torch.cat([target_features, negative_features], dim=0)

            logits = torch.cosine_similarity(to_float(predicted_features), to_float(target_features), dim=-1).type_as(
                target_features
            )

            # apply temperature
            logits = logits / temperature
            return logits

        def forward(self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None,
                    gumbels=None):
            if mask_time_indices is not None:
                mask_time_indices = mask_time_indices.to(torch.bool)

            outputs = self.wav2vec2(input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices)

            # 1. project all transformed features (including masked) to final vq dim
            transformer_features = self.project_hid(outputs[0])

            # 2. quantize all (unmasked) extracted features and project to final vq dim
            extract_features = self.dropout_features(outputs[1])

            quantized_features, codevector_perplexity = self.quantizer(
                extract_features, mask_time_indices=mask_time_indices, gumbels=gumbels
            )

            quantized_features = quantized_features.to(self.project_q.weight.dtype)
            quantized_features = self.project_q(quantized_features)

            loss = contrastive_loss = diversity_loss = None
            if sampled_negative_indices is not None:
                batch_size, sequence_length, hidden_size = quantized_features.shape

                # sample negative quantized vectors BTC => (BxT)C
                negative_quantized_features = quantized_features.view(-1, hidden_size)[
                    sampled_negative_indices.long().view(-1)
                ]
                negative_quantized_features = negative_quantized_features.view(
                    batch_size, sequence_length, -1, hidden_size
                ).permute(2, 0, 1, 3)

                # 4. compute logits, corresponding to `logs = sim(c_t, [q_t, \sim{q}_t]) / \kappa`
                logits = self.compute_contrastive_logits(
                    quantized_features[None, :],
                    negative_quantized_features,
                    transformer_features,
                    self.config.contrastive_logits_temperature,
                )

                # 5. if a negative vector is identical to the positive (i.e. when codebook utilization is low),
                # its cosine similarity will be masked
                neg_is_pos = (quantized_features == negative_quantized_features).all(-1)

                if fullgraph_edits or neg_is_pos.any():
                    logits[1:][neg_is_pos] = float("-inf")

                # 6. compute contrastive loss \mathbf{L}_m = cross_entropy(logs) =
                logits = logits.transpose(0, 2).reshape(-1, logits.size(0))
                target = ((1 - mask_time_indices.long()) * -100).transpose(0, 1).flatten()

                contrastive_loss = nn.functional.cross_entropy(to_float(logits), target, reduction="sum")
                # 7. compute diversity loss: \mathbf{L}_d
                num_codevectors = self.config.num_codevectors_per_group * self.config.num_codevector_groups
                diversity_loss = ((num_codevectors - codevector_perplexity) / num_codevectors) * mask_time_indices.sum()

                # 8. \mathbf{L} = \mathbf{L}_m + \alpha * \mathbf{L}_d
                loss = contrastive_loss + self.config.diversity_loss_weight * diversity_loss

            return SimpleNamespace(loss=loss, projected_states=transformer_features,
                                   projected_quantized_states=quantized_features,
                                   codevector_perplexity=codevector_perplexity, contrastive_loss=contrastive_loss,
                                   diversity_loss=diversity_loss)

    def _init_weights(module):
        """HF's ``Wav2Vec2PreTrainedModel._init_weights``."""
        if isinstance(module, Wav2Vec2ForPreTraining):
            module.project_hid.reset_parameters()
            module.project_q.reset_parameters()
        elif isinstance(module, Wav2Vec2GumbelVectorQuantizer):
            module.weight_proj.weight.data.normal_(mean=0.0, std=1)
            module.weight_proj.bias.data.zero_()
            nn.init.uniform_(module.codevectors)
        elif isinstance(module, Wav2Vec2PositionalConvEmbedding):
            nn.init.normal_(
                module.conv.weight,
                mean=0,
                std=2 * math.sqrt(1 / (module.conv.kernel_size[0] * module.conv.in_channels)),
            )
            nn.init.constant_(module.conv.bias, 0)
        elif isinstance(module, Wav2Vec2FeatureProjection):
            k = math.sqrt(1 / module.projection.in_features)
            nn.init.uniform_(module.projection.weight, a=-k, b=k)
            nn.init.uniform_(module.projection.bias, a=-k, b=k)
        elif isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        elif isinstance(module, nn.Conv1d):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                k = math.sqrt(module.groups / (module.in_channels * module.kernel_size[0]))
                nn.init.uniform_(module.bias, a=-k, b=k)

    model = Wav2Vec2ForPreTraining(config)
    model.apply(_init_weights)
    return model
