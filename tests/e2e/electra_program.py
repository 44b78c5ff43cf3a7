"""ELECTRA pre-training: lucidrains' ``electra-pytorch`` (``electra_pytorch/electra_pytorch.py``: ``Electra`` and its
helpers; ``pretraining/openwebtext/pretrain.py``: ``tie_weights``, ``LogitsAdapter``, the weight-decay groups, the
warmup schedule and the step) around Hugging Face's ``ElectraForMaskedLM`` and ``ElectraForPreTraining``
(``models/electra/modeling_electra.py``, the pieces these two use, without importing transformers), for ``torch``
being torch or kiln: the program of ``test_porting_probes_electra.py``, whose docstring says what it covers.

One addition: ``Electra.forward`` takes ``noise`` (a dict of NumPy-drawn uniforms and token ids) standing for its
draws (``uniform_``, ``torch.rand``, ``torch.randint``), as the libraries' generators draw different numbers; without
it the draws are the library's own, as written."""

from __future__ import annotations

import math
from collections import namedtuple
from functools import partial, reduce

import numpy as np

PAD, CLS, SEP, MASK = 0, 1, 2, 3

Results = namedtuple('Results', [
    'loss',
    'mlm_loss',
    'disc_loss',
    'gen_acc',
    'disc_acc',
    'disc_labels',
    'disc_predictions'
])


class ElectraConfig:
    """``transformers.ElectraConfig``'s fields these models read (its defaults, tiny sizes given by the caller)."""

    def __init__(self, vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                 num_attention_heads=4, intermediate_size=1024, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                 initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0, position_embedding_type="absolute"):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.pad_token_id = pad_token_id
        self.position_embedding_type = position_embedding_type


def modeling_electra(torch, nn):
    """modeling_electra.py's classes: ``(ElectraForMaskedLM, ElectraForPreTraining)``."""
    ACT2FN = {"gelu": nn.functional.gelu}

    class ElectraEmbeddings(nn.Module):
        """Construct the embeddings from word, position and token_type embeddings."""

        def __init__(self, config):
            super().__init__()
            self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)

            # self.LayerNorm is not snake-cased to stick with TensorFlow model variable name and be able to load
            # any TensorFlow checkpoint file
            self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

            # position_ids (1, len position emb) is contiguous in memory and exported when serialized
            self.register_buffer(
                "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
            )
            self.position_embedding_type = getattr(config, "position_embedding_type", "absolute")
            self.register_buffer(
                "token_type_ids", torch.zeros(self.position_ids.size(), dtype=torch.long), persistent=False
            )

        def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                    past_key_values_length=0):
            if input_ids is not None:
                input_shape = input_ids.size()
            else:
                input_shape = inputs_embeds.size()[:-1]

            seq_length = input_shape[1]

            if position_ids is None:
                position_ids = self.position_ids[:, past_key_values_length : seq_length + past_key_values_length]

            # Setting the token_type_ids to the registered buffer in constructor where it is all zeros, which usually
            # occurs when its auto-generated, registered buffer helps users when tracing the model without passing
            # token_type_ids, solves issue #5664
            if token_type_ids is None:
                if hasattr(self, "token_type_ids"):
                    buffered_token_type_ids = self.token_type_ids[:, :seq_length]
                    buffered_token_type_ids_expanded = buffered_token_type_ids.expand(input_shape[0], seq_length)
                    token_type_ids = buffered_token_type_ids_expanded
                else:
                    token_type_ids = torch.zeros(input_shape, dtype=torch.long, device=self.position_ids.device)

            if inputs_embeds is None:
                inputs_embeds = self.word_embeddings(input_ids)
            token_type_embeddings = self.token_type_embeddings(token_type_ids)

            embeddings = inputs_embeds + token_type_embeddings
            if self.position_embedding_type == "absolute":
                position_embeddings = self.position_embeddings(position_ids)
                embeddings += position_embeddings
            embeddings = self.LayerNorm(embeddings)
            embeddings = self.dropout(embeddings)
            return embeddings

    class ElectraSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.num_attention_heads = config.num_attention_heads
            self.attention_head_size = int(config.hidden_size / config.num_attention_heads)
            self.all_head_size = self.num_attention_heads * self.attention_head_size

            self.query = nn.Linear(config.hidden_size, self.all_head_size)
            self.key = nn.Linear(config.hidden_size, self.all_head_size)
            self.value = nn.Linear(config.hidden_size, self.all_head_size)

            self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

        def transpose_for_scores(self, x):
            new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
            x = x.view(new_x_shape)
            return x.permute(0, 2, 1, 3)

        def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False):
            mixed_query_layer = self.query(hidden_states)

            key_layer = self.transpose_for_scores(self.key(hidden_states))
            value_layer = self.transpose_for_scores(self.value(hidden_states))
            query_layer = self.transpose_for_scores(mixed_query_layer)

            # Take the dot product between "query" and "key" to get the raw attention scores.
            attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))

            attention_scores = attention_scores / math.sqrt(self.attention_head_size)
            if attention_mask is not None:
                # Apply the attention mask is (precomputed for all layers in ElectraModel forward() function)
                attention_scores = attention_scores + attention_mask

            # Normalize the attention scores to probabilities.
            attention_probs = nn.functional.softmax(attention_scores, dim=-1)

            # This is actually dropping out entire tokens to attend to, which might
            # seem a bit unusual, but is taken from the original Transformer paper.
            attention_probs = self.dropout(attention_probs)

            # Mask heads if we want to
            if head_mask is not None:
                attention_probs = attention_probs * head_mask

            context_layer = torch.matmul(attention_probs, value_layer)

            context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
            new_context_layer_shape = context_layer.size()[:-2] + (self.all_head_size,)
            context_layer = context_layer.view(new_context_layer_shape)

            outputs = (context_layer, attention_probs) if output_attentions else (context_layer,)
            return outputs

    class ElectraSelfOutput(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

        def forward(self, hidden_states, input_tensor):
            hidden_states = self.dense(hidden_states)
            hidden_states = self.dropout(hidden_states)
            hidden_states = self.LayerNorm(hidden_states + input_tensor)
            return hidden_states

    class ElectraAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.self = ElectraSelfAttention(config)
            self.output = ElectraSelfOutput(config)

        def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False):
            self_outputs = self.self(hidden_states, attention_mask, head_mask, output_attentions)
            attention_output = self.output(self_outputs[0], hidden_states)
            outputs = (attention_output,) + self_outputs[1:]  # add attentions if we output them
            return outputs

    class ElectraIntermediate(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
            self.intermediate_act_fn = ACT2FN[config.hidden_act]

        def forward(self, hidden_states):
            hidden_states = self.dense(hidden_states)
            hidden_states = self.intermediate_act_fn(hidden_states)
            return hidden_states

    class ElectraOutput(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

        def forward(self, hidden_states, input_tensor):
            hidden_states = self.dense(hidden_states)
            hidden_states = self.dropout(hidden_states)
            hidden_states = self.LayerNorm(hidden_states + input_tensor)
            return hidden_states

    class ElectraLayer(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.attention = ElectraAttention(config)
            self.intermediate = ElectraIntermediate(config)
            self.output = ElectraOutput(config)

        def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False):
            self_attention_outputs = self.attention(hidden_states, attention_mask, head_mask,
                                                    output_attentions=output_attentions)
            attention_output = self_attention_outputs[0]
            outputs = self_attention_outputs[1:]  # add self attentions if we output attention weights
            # apply_chunking_to_forward(self.feed_forward_chunk, 0, 1, attention_output): chunk size 0 calls it once
            layer_output = self.feed_forward_chunk(attention_output)
            outputs = (layer_output,) + outputs
            return outputs

        def feed_forward_chunk(self, attention_output):
            intermediate_output = self.intermediate(attention_output)
            layer_output = self.output(intermediate_output, attention_output)
            return layer_output

    class ElectraEncoder(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.layer = nn.ModuleList([ElectraLayer(config) for _ in range(config.num_hidden_layers)])

        def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
                    output_hidden_states=False):
            all_hidden_states = () if output_hidden_states else None
            for i, layer_module in enumerate(self.layer):
                if output_hidden_states:
                    all_hidden_states = all_hidden_states + (hidden_states,)
                layer_head_mask = head_mask[i] if head_mask is not None else None
                layer_outputs = layer_module(hidden_states, attention_mask, layer_head_mask, output_attentions)
                hidden_states = layer_outputs[0]
            if output_hidden_states:
                all_hidden_states = all_hidden_states + (hidden_states,)
            return tuple(v for v in [hidden_states, all_hidden_states] if v is not None)

    class ElectraPreTrainedModel(nn.Module):
        """``PreTrainedModel``'s parts these models use: ``post_init`` (``_init_weights`` over the modules, then
        ``tie_weights``), ``dtype``, ``get_extended_attention_mask`` and ``get_head_mask`` (ModuleUtilsMixin)."""

        base_model_prefix = "electra"

        def __init__(self, config):
            super().__init__()
            self.config = config

        def _init_weights(self, module):
            """Initialize the weights"""
            if isinstance(module, nn.Linear):
                # Slightly different from the TF version which uses truncated_normal for initialization
                # cf https://github.com/pytorch/pytorch/pull/5617
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
                if module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def post_init(self):
            self.apply(self._init_weights)
            self.tie_weights()

        @property
        def base_model(self):
            return getattr(self, self.base_model_prefix, self)

        def get_input_embeddings(self):
            base_model = getattr(self, self.base_model_prefix, self)
            if base_model is not self:
                return base_model.get_input_embeddings()
            raise NotImplementedError

        def get_output_embeddings(self):
            return None

        def tie_weights(self):
            output_embeddings = self.get_output_embeddings()
            if output_embeddings is not None:
                self._tie_or_clone_weights(output_embeddings, self.get_input_embeddings())

        def _tie_or_clone_weights(self, output_embeddings, input_embeddings):
            """Tie or clone module weights depending of whether we are using TorchScript or not"""
            output_embeddings.weight = input_embeddings.weight

            if getattr(output_embeddings, "bias", None) is not None:
                output_embeddings.bias.data = nn.functional.pad(
                    output_embeddings.bias.data,
                    (0, output_embeddings.weight.shape[0] - output_embeddings.bias.shape[0],),
                    "constant",
                    0,
                )
            if hasattr(output_embeddings, "out_features") and hasattr(input_embeddings, "num_embeddings"):
                output_embeddings.out_features = input_embeddings.num_embeddings

        @property
        def dtype(self):
            return next(self.parameters()).dtype

        def get_extended_attention_mask(self, attention_mask, input_shape, dtype=None):
            if dtype is None:
                dtype = self.dtype
            if attention_mask.dim() == 3:
                extended_attention_mask = attention_mask[:, None, :, :]
            elif attention_mask.dim() == 2:
                # Provided a padding mask of dimensions [batch_size, seq_length]
                # - the model is an encoder, so make the mask broadcastable to [batch_size, num_heads, seq_length, seq_length]
                extended_attention_mask = attention_mask[:, None, None, :]
            else:
                raise ValueError(
                    f"Wrong shape for input_ids (shape {input_shape}) or attention_mask (shape {attention_mask.shape})"
                )
            # Since attention_mask is 1.0 for positions we want to attend and 0.0 for
            # masked positions, this operation will create a tensor which is 0.0 for
            # positions we want to attend and the dtype's smallest value for masked positions.
            extended_attention_mask = extended_attention_mask.to(dtype=dtype)  # fp16 compatibility
            extended_attention_mask = (1.0 - extended_attention_mask) * torch.finfo(dtype).min
            return extended_attention_mask

        def get_head_mask(self, head_mask, num_hidden_layers):
            return [None] * num_hidden_layers if head_mask is None else head_mask

    class ElectraModel(ElectraPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.embeddings = ElectraEmbeddings(config)

            if config.embedding_size != config.hidden_size:
                self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)

            self.encoder = ElectraEncoder(config)
            self.config = config
            # Initialize weights and apply final processing
            self.post_init()

        def get_input_embeddings(self):
            return self.embeddings.word_embeddings

        def set_input_embeddings(self, value):
            self.embeddings.word_embeddings = value

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    head_mask=None, inputs_embeds=None, output_attentions=False, output_hidden_states=False):
            if input_ids is not None and inputs_embeds is not None:
                raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
            elif input_ids is not None:
                input_shape = input_ids.size()
            elif inputs_embeds is not None:
                input_shape = inputs_embeds.size()[:-1]
            else:
                raise ValueError("You have to specify either input_ids or inputs_embeds")

            batch_size, seq_length = input_shape
            device = input_ids.device if input_ids is not None else inputs_embeds.device

            if attention_mask is None:
                attention_mask = torch.ones(input_shape, device=device)
            if token_type_ids is None:
                if hasattr(self.embeddings, "token_type_ids"):
                    buffered_token_type_ids = self.embeddings.token_type_ids[:, :seq_length]
                    buffered_token_type_ids_expanded = buffered_token_type_ids.expand(batch_size, seq_length)
                    token_type_ids = buffered_token_type_ids_expanded
                else:
                    token_type_ids = torch.zeros(input_shape, dtype=torch.long, device=device)

            extended_attention_mask = self.get_extended_attention_mask(attention_mask, input_shape)
            head_mask = self.get_head_mask(head_mask, self.config.num_hidden_layers)

            hidden_states = self.embeddings(
                input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids,
                inputs_embeds=inputs_embeds
            )

            if hasattr(self, "embeddings_project"):
                hidden_states = self.embeddings_project(hidden_states)

            hidden_states = self.encoder(
                hidden_states,
                attention_mask=extended_attention_mask,
                head_mask=head_mask,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )

            return hidden_states

    class ElectraDiscriminatorPredictions(nn.Module):
        """Prediction module for the discriminator, made up of two dense layers."""

        def __init__(self, config):
            super().__init__()

            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.activation = ACT2FN[config.hidden_act]
            self.dense_prediction = nn.Linear(config.hidden_size, 1)
            self.config = config

        def forward(self, discriminator_hidden_states):
            hidden_states = self.dense(discriminator_hidden_states)
            hidden_states = self.activation(hidden_states)
            logits = self.dense_prediction(hidden_states).squeeze(-1)

            return logits

    class ElectraGeneratorPredictions(nn.Module):
        """Prediction module for the generator, made up of two dense layers."""

        def __init__(self, config):
            super().__init__()

            self.activation = ACT2FN["gelu"]
            self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
            self.dense = nn.Linear(config.hidden_size, config.embedding_size)

        def forward(self, generator_hidden_states):
            hidden_states = self.dense(generator_hidden_states)
            hidden_states = self.activation(hidden_states)
            hidden_states = self.LayerNorm(hidden_states)

            return hidden_states

    class ElectraForPreTraining(ElectraPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)

            self.electra = ElectraModel(config)
            self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
            # Initialize weights and apply final processing
            self.post_init()

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                    output_hidden_states=None):
            discriminator_hidden_states = self.electra(
                input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            )
            discriminator_sequence_output = discriminator_hidden_states[0]

            logits = self.discriminator_predictions(discriminator_sequence_output)

            loss = None
            if labels is not None:
                loss_fct = nn.BCEWithLogitsLoss()
                if attention_mask is not None:
                    active_loss = attention_mask.view(-1, discriminator_sequence_output.shape[1]) == 1
                    active_logits = logits.view(-1, discriminator_sequence_output.shape[1])[active_loss]
                    active_labels = labels[active_loss]
                    loss = loss_fct(active_logits, active_labels.float())
                else:
                    loss = loss_fct(logits.view(-1, discriminator_sequence_output.shape[1]), labels.float())

            output = (logits,) + discriminator_hidden_states[1:]
            return ((loss,) + output) if loss is not None else output

    class ElectraForMaskedLM(ElectraPreTrainedModel):
        _tied_weights_keys = ["generator_lm_head.weight"]

        def __init__(self, config):
            super().__init__(config)

            self.electra = ElectraModel(config)
            self.generator_predictions = ElectraGeneratorPredictions(config)

            self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)
            # Initialize weights and apply final processing
            self.post_init()

        def get_output_embeddings(self):
            return self.generator_lm_head

        def set_output_embeddings(self, word_embeddings):
            self.generator_lm_head = word_embeddings

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                    output_hidden_states=None):
            generator_hidden_states = self.electra(
                input_ids, attention_mask, token_type_ids, position_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states,
            )
            generator_sequence_output = generator_hidden_states[0]

            prediction_scores = self.generator_predictions(generator_sequence_output)
            prediction_scores = self.generator_lm_head(prediction_scores)

            loss = None
            # Masked language modeling softmax layer
            if labels is not None:
                loss_fct = nn.CrossEntropyLoss()  # -100 index = padding token
                loss = loss_fct(prediction_scores.view(-1, self.config.vocab_size), labels.view(-1))

            output = (prediction_scores,) + generator_hidden_states[1:]
            return ((loss,) + output) if loss is not None else output

    return ElectraForMaskedLM, ElectraForPreTraining


def electra_pytorch(torch, nn, F):
    """electra_pytorch.py's helpers and ``Electra`` (``HiddenLayerExtractor``, for ``discr_dim > 0``, left out):
    ``(Electra, helpers)``; each draw can be fed (see the module docstring)."""

    # helpers

    def log(t, eps=1e-9):
        return torch.log(t + eps)

    def uniform_(t, fed=None):  # t.uniform_(0, 1), or the fed draw written into t
        return t.uniform_(0, 1) if fed is None else t.copy_(fed[tuple(slice(n) for n in t.shape)])

    def gumbel_noise(t, fed=None):
        noise = uniform_(torch.zeros_like(t), fed)
        return -log(-log(noise))

    def gumbel_sample(t, temperature=1., fed=None):
        return ((t / temperature) + gumbel_noise(t, fed)).argmax(dim=-1)

    def prob_mask_like(t, prob, fed=None):
        return uniform_(torch.zeros_like(t).float(), fed) < prob

    def mask_with_tokens(t, token_ids):
        init_no_mask = torch.full_like(t, False, dtype=torch.bool)
        mask = reduce(lambda acc, el: acc | (t == el), token_ids, init_no_mask)
        return mask

    def get_mask_subset_with_prob(mask, prob, fed=None):
        batch, seq_len, device = *mask.shape, mask.device
        max_masked = math.ceil(prob * seq_len)

        num_tokens = mask.sum(dim=-1, keepdim=True)
        mask_excess = (mask.cumsum(dim=-1) > (num_tokens * prob).ceil())
        mask_excess = mask_excess[:, :max_masked]

        rand = (torch.rand((batch, seq_len), device=device) if fed is None else torch.zeros((batch, seq_len)).copy_(fed)).masked_fill(~mask, -1e9)
        _, sampled_indices = rand.topk(max_masked, dim=-1)
        sampled_indices = (sampled_indices + 1).masked_fill_(mask_excess, 0)

        new_mask = torch.zeros((batch, seq_len + 1), device=device)
        new_mask.scatter_(-1, sampled_indices, 1)
        return new_mask[:, 1:].bool()

    # main electra class

    class Electra(nn.Module):
        def __init__(
            self,
            generator,
            discriminator,
            *,
            num_tokens = None,
            discr_dim = -1,
            discr_layer = -1,
            mask_prob = 0.15,
            replace_prob = 0.85,
            random_token_prob = 0.,
            mask_token_id = 2,
            pad_token_id = 0,
            mask_ignore_token_ids = [],
            disc_weight = 50.,
            gen_weight = 1.,
            temperature = 1.):
            super().__init__()

            self.generator = generator
            self.discriminator = discriminator

            # mlm related probabilities
            self.mask_prob = mask_prob
            self.replace_prob = replace_prob

            self.num_tokens = num_tokens
            self.random_token_prob = random_token_prob

            # token ids
            self.pad_token_id = pad_token_id
            self.mask_token_id = mask_token_id
            self.mask_ignore_token_ids = set([*mask_ignore_token_ids, pad_token_id])

            # sampling temperature
            self.temperature = temperature

            # loss weights
            self.disc_weight = disc_weight
            self.gen_weight = gen_weight

        def forward(self, input, noise=None, **kwargs):
            noise = noise or {}
            b, t = input.shape

            replace_prob = prob_mask_like(input, self.replace_prob, noise.get("replace"))

            # do not mask [pad] tokens, or any other tokens in the tokens designated to be excluded ([cls], [sep])
            # also do not include these special tokens in the tokens chosen at random
            no_mask = mask_with_tokens(input, self.mask_ignore_token_ids)
            mask = get_mask_subset_with_prob(~no_mask, self.mask_prob, noise.get("subset"))

            # get mask indices
            mask_indices = torch.nonzero(mask, as_tuple=True)

            # mask input with mask tokens with probability of `replace_prob` (keep tokens the same with probability 1 - replace_prob)
            masked_input = input.clone().detach()

            # set inverse of mask to padding tokens for labels
            gen_labels = input.masked_fill(~mask, self.pad_token_id)

            # clone the mask, for potential modification if random tokens are involved
            # not to be mistakened for the mask above, which is for all tokens, whether not replaced nor replaced with random tokens
            masking_mask = mask.clone()

            # if random token probability > 0 for mlm
            if self.random_token_prob > 0:
                assert self.num_tokens is not None, 'Number of tokens (num_tokens) must be passed to Electra for randomizing tokens during masked language modeling'

                random_token_prob = prob_mask_like(input, self.random_token_prob, noise.get("random"))
                random_tokens = (torch.randint(0, self.num_tokens, input.shape, device=input.device)
                                 if "tokens" not in noise else noise["tokens"])
                random_no_mask = mask_with_tokens(random_tokens, self.mask_ignore_token_ids)
                random_token_prob &= ~random_no_mask
                masked_input = torch.where(random_token_prob, random_tokens, masked_input)

                # remove random token prob mask from masking mask
                masking_mask = masking_mask & ~random_token_prob

            # [mask] input
            masked_input = masked_input.masked_fill(masking_mask * replace_prob, self.mask_token_id)

            # get generator output and get mlm loss
            logits = self.generator(masked_input, **kwargs)

            mlm_loss = F.cross_entropy(
                logits.transpose(1, 2),
                gen_labels,
                ignore_index = self.pad_token_id
            )

            # use mask from before to select logits that need sampling
            sample_logits = logits[mask_indices]

            # sample
            sampled = gumbel_sample(sample_logits, temperature = self.temperature, fed = noise.get("gumbel"))

            # scatter the sampled values back to the input
            disc_input = input.clone()
            disc_input[mask_indices] = sampled.detach()

            # generate discriminator labels, with replaced as True and original as False
            disc_labels = (input != disc_input).float().detach()

            # get discriminator predictions of replaced / original
            non_padded_indices = torch.nonzero(input != self.pad_token_id, as_tuple=True)

            # get discriminator output and binary cross entropy loss
            disc_logits = self.discriminator(disc_input, **kwargs)
            disc_logits = disc_logits.reshape_as(disc_labels)

            disc_loss = F.binary_cross_entropy_with_logits(
                disc_logits[non_padded_indices],
                disc_labels[non_padded_indices]
            )

            # gather metrics
            with torch.no_grad():
                gen_predictions = torch.argmax(logits, dim=-1)
                disc_predictions = torch.round((torch.sign(disc_logits) + 1.0) * 0.5)
                gen_acc = (gen_labels[mask] == gen_predictions[mask]).float().mean()
                disc_acc = 0.5 * (disc_labels[mask] == disc_predictions[mask]).float().mean() + 0.5 * (disc_labels[~mask] == disc_predictions[~mask]).float().mean()

            # return weighted sum of losses
            return Results(self.gen_weight * mlm_loss + self.disc_weight * disc_loss, mlm_loss, disc_loss, gen_acc, disc_acc, disc_labels, disc_predictions)

    helpers = dict(prob_mask_like=prob_mask_like, mask_with_tokens=mask_with_tokens,
                   get_mask_subset_with_prob=get_mask_subset_with_prob, gumbel_sample=gumbel_sample)
    return Electra, helpers


def pretrain(torch, nn):
    """pretrain.py's ``tie_weights``, ``LogitsAdapter``, ``get_params_without_weight_decay_ln`` and transformers'
    ``get_linear_schedule_with_warmup`` (its ``partial`` form)."""

    def tie_weights(generator, discriminator):
        generator.electra.embeddings.word_embeddings = discriminator.electra.embeddings.word_embeddings
        generator.electra.embeddings.position_embeddings = discriminator.electra.embeddings.position_embeddings
        generator.electra.embeddings.token_type_embeddings = discriminator.electra.embeddings.token_type_embeddings

    class LogitsAdapter(torch.nn.Module):
        def __init__(self, adaptee):
            super().__init__()
            self.adaptee = adaptee

        def forward(self, *args, **kwargs):
            return self.adaptee(*args, **kwargs)[0]

    def get_params_without_weight_decay_ln(named_params, weight_decay):
        no_decay = ['bias', 'LayerNorm.weight']
        optimizer_grouped_parameters = [
            {
                'params': [p for n, p in named_params if not any(nd in n for nd in no_decay)],
                'weight_decay': weight_decay,
            },
            {
                'params': [p for n, p in named_params if any(nd in n for nd in no_decay)],
                'weight_decay': 0.0,
            },
        ]
        return optimizer_grouped_parameters

    def _get_linear_schedule_with_warmup_lr_lambda(current_step, *, num_warmup_steps, num_training_steps):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - current_step) / float(max(1, num_training_steps - num_warmup_steps)))

    def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
        lr_lambda = partial(
            _get_linear_schedule_with_warmup_lr_lambda,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, last_epoch)

    return tie_weights, LogitsAdapter, get_params_without_weight_decay_ln, get_linear_schedule_with_warmup


VOCAB, EMBED, SEQ, BATCH = 24, 8, 10, 4
GENERATOR = dict(vocab_size=VOCAB, embedding_size=EMBED, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=16, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, initializer_range=0.2)
DISCRIMINATOR = dict(GENERATOR, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=24)


def electra_model(torch, nn, F, random_token_prob=0.1, mask_prob=0.25):
    """pretrain.py's model: the generator (smaller) and discriminator built, their embeddings tied by ``tie_weights``;
    then ``generator.tie_weights()`` ties the generator's head to the shared word embeddings (the ELECTRA paper's
    shared embeddings; pretrain.py ties the modules after ``post_init`` tied the head to the generator's own word
    embeddings, which the swap leaves as the head's only user)."""
    ElectraForMaskedLM, ElectraForPreTraining = modeling_electra(torch, nn)
    Electra, _ = electra_pytorch(torch, nn, F)
    tie_weights, LogitsAdapter, _, _ = pretrain(torch, nn)
    generator = ElectraForMaskedLM(ElectraConfig(**GENERATOR))
    discriminator = ElectraForPreTraining(ElectraConfig(**DISCRIMINATOR))
    tie_weights(generator, discriminator)
    generator.tie_weights()
    return Electra(LogitsAdapter(generator), LogitsAdapter(discriminator), num_tokens=VOCAB, mask_token_id=MASK,
                   pad_token_id=PAD, mask_prob=mask_prob, mask_ignore_token_ids=[CLS, SEP],
                   random_token_prob=random_token_prob)


def token_batches(count, seed=0):
    """``count`` batches of ``[CLS] words [SEP] [PAD]...`` rows (lengths 5 to SEQ) and their attention masks."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        ids = np.full((BATCH, SEQ), PAD)
        for row, length in enumerate(rng.integers(5, SEQ + 1, BATCH)):
            ids[row, :length] = [CLS, *rng.integers(MASK + 1, VOCAB, length - 2), SEP]
        batches.append((ids, (ids != PAD).astype(np.int64)))
    return batches


def noise_draws(torch, count, seed=1):
    """Each step's draws for ``Electra.forward(noise=...)`` as ``torch`` tensors: the uniforms of ``prob_mask_like`` (replace, random),
    ``torch.rand`` of ``get_mask_subset_with_prob``, ``torch.randint``'s tokens and the Gumbel uniforms (rows enough
    for every token)."""
    rng = np.random.default_rng(seed)
    draws = [{"replace": rng.uniform(0, 1, (BATCH, SEQ)).astype(np.float32),
             "subset": rng.uniform(0, 1, (BATCH, SEQ)),
             "random": rng.uniform(0, 1, (BATCH, SEQ)).astype(np.float32),
             "tokens": rng.integers(0, VOCAB, (BATCH, SEQ)),
             "gumbel": rng.uniform(0, 1, (BATCH * SEQ, VOCAB))} for _ in range(count)]
    return [{key: torch.tensor(value) for key, value in draw.items()} for draw in draws]
