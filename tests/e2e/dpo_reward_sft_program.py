"""Preference and SFT training as huggingface/trl (``DPOTrainer``, ``RewardTrainer``,
``DataCollatorForCompletionOnlyLM``, ``trainer/utils.py``) and eric-mitchell/direct-preference-optimization
(``trainers.py``, ``utils.py``) write it, around a tiny GPT-2 written as ``transformers``' ``modeling_gpt2.py`` writes
it, for ``torch`` being torch or kiln: the program of ``test_porting_probes_dpo_reward_sft.py``, whose docstring says
what it covers and what was adapted."""

from __future__ import annotations

import math
import warnings
from copy import deepcopy
from functools import partial
from types import SimpleNamespace

import numpy as np

PAD, EOS = 0, 1
RESPONSE_TEMPLATE = [2, 3]  # "### Response:\n" as token ids
VOCAB = 12


class GPT2Config(SimpleNamespace):
    """The few fields of ``transformers.GPT2Config`` the model reads."""

    def __init__(self, **overrides):
        fields = dict(vocab_size=VOCAB, n_positions=12, n_embd=8, n_layer=2, n_head=2, n_inner=None,
                      resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, layer_norm_epsilon=1e-5,
                      initializer_range=0.2, scale_attn_weights=True, pad_token_id=PAD, num_labels=1)
        super().__init__(**{**fields, **overrides})


class ModelOutput(dict):
    """``transformers``' ``ModelOutput``: read by key (``["logits"]``) or attribute (``.logits``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def modeling_gpt2(torch, nn, F):
    """``modeling_gpt2.py``'s classes (``Conv1D`` from ``pytorch_utils.py``), closed over ``torch``."""

    class Conv1D(nn.Module):
        def __init__(self, nf, nx):
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.empty(nx, nf))
            self.bias = nn.Parameter(torch.zeros(nf))
            nn.init.normal_(self.weight, std=0.02)

        def forward(self, x):
            size_out = x.size()[:-1] + (self.nf,)
            x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
            x = x.view(size_out)
            return x

    class GPT2Attention(nn.Module):
        def __init__(self, config):
            super().__init__()
            max_positions = config.n_positions
            self.register_buffer(
                "bias",
                torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                    1, 1, max_positions, max_positions
                ),
                persistent=False,
            )
            self.embed_dim = config.n_embd
            self.num_heads = config.n_head
            self.head_dim = self.embed_dim // self.num_heads
            self.split_size = self.embed_dim
            self.scale_attn_weights = config.scale_attn_weights
            self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
            self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
            self.attn_dropout = nn.Dropout(config.attn_pdrop)
            self.resid_dropout = nn.Dropout(config.resid_pdrop)

        def _attn(self, query, key, value, attention_mask=None):
            attn_weights = torch.matmul(query, key.transpose(-1, -2))
            if self.scale_attn_weights:
                attn_weights = attn_weights / torch.full(
                    [], value.size(-1) ** 0.5, dtype=attn_weights.dtype, device=attn_weights.device
                )
            query_length, key_length = query.size(-2), key.size(-2)
            causal_mask = self.bias[:, :, key_length - query_length : key_length, :key_length]
            attn_weights = attn_weights.masked_fill(~causal_mask, torch.finfo(attn_weights.dtype).min)
            if attention_mask is not None:
                attn_weights = attn_weights + attention_mask
            attn_weights = nn.functional.softmax(attn_weights, dim=-1)
            attn_weights = attn_weights.type(value.dtype)
            attn_weights = self.attn_dropout(attn_weights)
            attn_output = torch.matmul(attn_weights, value)
            return attn_output, attn_weights

        def _split_heads(self, tensor, num_heads, attn_head_size):
            new_shape = tensor.size()[:-1] + (num_heads, attn_head_size)
            tensor = tensor.view(new_shape)
            return tensor.permute(0, 2, 1, 3)  # (batch, head, seq_length, head_features)

        def _merge_heads(self, tensor, num_heads, attn_head_size):
            tensor = tensor.permute(0, 2, 1, 3).contiguous()
            new_shape = tensor.size()[:-2] + (num_heads * attn_head_size,)
            return tensor.view(new_shape)

        def forward(self, hidden_states, attention_mask=None):
            query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
            query = self._split_heads(query, self.num_heads, self.head_dim)
            key = self._split_heads(key, self.num_heads, self.head_dim)
            value = self._split_heads(value, self.num_heads, self.head_dim)
            attn_output, attn_weights = self._attn(query, key, value, attention_mask)
            attn_output = self._merge_heads(attn_output, self.num_heads, self.head_dim)
            attn_output = self.c_proj(attn_output)
            attn_output = self.resid_dropout(attn_output)
            return attn_output

    class GPT2MLP(nn.Module):
        def __init__(self, intermediate_size, config):
            super().__init__()
            embed_dim = config.n_embd
            self.c_fc = Conv1D(intermediate_size, embed_dim)
            self.c_proj = Conv1D(embed_dim, intermediate_size)
            self.act = nn.GELU(approximate="tanh")  # ACT2FN["gelu_pytorch_tanh"]
            self.dropout = nn.Dropout(config.resid_pdrop)

        def forward(self, hidden_states):
            hidden_states = self.c_fc(hidden_states)
            hidden_states = self.act(hidden_states)
            hidden_states = self.c_proj(hidden_states)
            hidden_states = self.dropout(hidden_states)
            return hidden_states

    class GPT2Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            hidden_size = config.n_embd
            inner_dim = config.n_inner if config.n_inner is not None else 4 * hidden_size
            self.ln_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
            self.attn = GPT2Attention(config)
            self.ln_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = GPT2MLP(inner_dim, config)

        def forward(self, hidden_states, attention_mask=None):
            residual = hidden_states
            hidden_states = self.ln_1(hidden_states)
            attn_output = self.attn(hidden_states, attention_mask=attention_mask)
            hidden_states = attn_output + residual
            residual = hidden_states
            hidden_states = self.ln_2(hidden_states)
            feed_forward_hidden_states = self.mlp(hidden_states)
            hidden_states = residual + feed_forward_hidden_states
            return hidden_states

    class GPT2PreTrainedModel(nn.Module):
        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, Conv1D)):
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
                if module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)
            for name, p in module.named_parameters():
                if name == "c_proj.weight":
                    p.data.normal_(mean=0.0, std=(self.config.initializer_range / math.sqrt(2 * self.config.n_layer)))

        def post_init(self):
            self.apply(self._init_weights)

        def get_input_embeddings(self):
            return self.transformer.wte  # getattr(self, self.base_model_prefix).get_input_embeddings()

        def enable_input_require_grads(self):
            def make_inputs_require_grads(module, input, output):
                output.requires_grad_(True)

            self._require_grads_hook = self.get_input_embeddings().register_forward_hook(make_inputs_require_grads)

        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            if gradient_checkpointing_kwargs is None:
                gradient_checkpointing_kwargs = {"use_reentrant": True}
            gradient_checkpointing_func = partial(torch.utils.checkpoint.checkpoint, **gradient_checkpointing_kwargs)
            for module in self.modules():
                if hasattr(module, "gradient_checkpointing"):
                    module._gradient_checkpointing_func = gradient_checkpointing_func
                    module.gradient_checkpointing = True

    class GPT2Model(GPT2PreTrainedModel):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.embed_dim = config.n_embd
            self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
            self.wpe = nn.Embedding(config.n_positions, self.embed_dim)
            self.drop = nn.Dropout(config.embd_pdrop)
            self.h = nn.ModuleList([GPT2Block(config) for _ in range(config.n_layer)])
            self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
            self.gradient_checkpointing = False

        def forward(self, input_ids, attention_mask=None):
            input_shape = input_ids.size()
            input_ids = input_ids.view(-1, input_shape[-1])
            batch_size = input_ids.shape[0]
            position_ids = torch.arange(0, input_shape[-1], dtype=torch.long, device=input_ids.device)
            position_ids = position_ids.unsqueeze(0)
            if attention_mask is not None:
                attention_mask = attention_mask.view(batch_size, -1)
                attention_mask = attention_mask[:, None, None, :]
                dtype = self.wte.weight.dtype  # ModuleUtilsMixin.dtype: the first parameter's
                attention_mask = attention_mask.to(dtype=dtype)  # fp16 compatibility
                attention_mask = (1.0 - attention_mask) * torch.finfo(dtype).min
            inputs_embeds = self.wte(input_ids)
            position_embeds = self.wpe(position_ids)
            hidden_states = inputs_embeds + position_embeds
            hidden_states = self.drop(hidden_states)
            output_shape = (-1,) + input_shape[1:] + (hidden_states.size(-1),)
            for block in self.h:
                if self.gradient_checkpointing and self.training:
                    hidden_states = self._gradient_checkpointing_func(block.__call__, hidden_states, attention_mask)
                else:
                    hidden_states = block(hidden_states, attention_mask=attention_mask)
            hidden_states = self.ln_f(hidden_states)
            return hidden_states.view(output_shape)

    class GPT2LMHeadModel(GPT2PreTrainedModel):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.transformer = GPT2Model(config)
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.post_init()
            self.lm_head.weight = self.transformer.wte.weight  # tie_weights()

        def forward(self, input_ids, attention_mask=None, labels=None):
            hidden_states = self.transformer(input_ids, attention_mask=attention_mask)
            lm_logits = self.lm_head(hidden_states)
            loss = None
            if labels is not None:
                # Shift so that tokens < n predict n
                shift_logits = lm_logits[..., :-1, :].contiguous()
                shift_labels = labels[..., 1:].contiguous()
                loss = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1),
                                       ignore_index=-100)
            return ModelOutput(loss=loss, logits=lm_logits)

    class GPT2ForSequenceClassification(GPT2PreTrainedModel):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.num_labels = config.num_labels
            self.transformer = GPT2Model(config)
            self.score = nn.Linear(config.n_embd, self.num_labels, bias=False)
            self.post_init()

        def forward(self, input_ids, attention_mask=None, return_dict=True):
            hidden_states = self.transformer(input_ids, attention_mask=attention_mask)
            logits = self.score(hidden_states)
            batch_size, sequence_length = input_ids.shape[:2]
            # if no pad token found, use modulo instead of reverse indexing for ONNX compatibility
            sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1
            sequence_lengths = sequence_lengths % input_ids.shape[-1]
            sequence_lengths = sequence_lengths.to(logits.device)
            pooled_logits = logits[torch.arange(batch_size, device=logits.device), sequence_lengths]
            return ModelOutput(logits=pooled_logits)

    return SimpleNamespace(Conv1D=Conv1D, GPT2LMHeadModel=GPT2LMHeadModel,
                           GPT2ForSequenceClassification=GPT2ForSequenceClassification)


def trl_utils(torch, nn, F):
    """``trl``'s helpers: ``trainer/utils.py`` (``pad_to_length``, ``disable_dropout_in_model``,
    ``DPODataCollatorWithPadding``, ``RewardDataCollatorWithPadding``, ``compute_accuracy``),
    ``models/modeling_base.py`` (``create_reference_model``) and ``DataCollatorForCompletionOnlyLM`` over ``transformers``'
    ``DataCollatorForLanguageModeling(mlm=False)``."""
    from_lists = lambda lists, value: torch.nn.utils.rnn.pad_sequence(  # noqa: E731
        [torch.LongTensor(ids) for ids in lists], batch_first=True, padding_value=value)

    def pad_to_length(tensor, length, pad_value, dim=-1):
        if tensor.size(dim) >= length:
            return tensor
        else:
            pad_size = list(tensor.shape)
            pad_size[dim] = length - tensor.size(dim)
            return torch.cat(
                [
                    tensor,
                    pad_value * torch.ones(*pad_size, dtype=tensor.dtype, device=tensor.device),
                ],
                dim=dim,
            )

    def disable_dropout_in_model(model):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0

    def create_reference_model(model):
        parameter_names = [n for n, _ in model.named_parameters()]
        ref_model = deepcopy(model)
        for param_name in parameter_names:
            param = ref_model.get_parameter(param_name)
            param.requires_grad = False
        return ref_model.eval()

    def dpo_collate(features, pad_token_id=PAD, label_pad_token_id=-100):
        padded_batch = {}
        for k in features[0].keys():
            if k.endswith("_input_ids") or k.endswith("_attention_mask") or k.endswith("_labels"):
                if k.endswith("_input_ids"):
                    padding_value = pad_token_id
                elif k.endswith("_labels"):
                    padding_value = label_pad_token_id
                else:
                    padding_value = 0
                padded_batch[k] = from_lists([ex[k] for ex in features], padding_value)
        return padded_batch

    def reward_collate(features, pad_token_id=PAD):
        batch = {}
        for side in ("chosen", "rejected"):
            batch[f"input_ids_{side}"] = from_lists([f[f"input_ids_{side}"] for f in features], pad_token_id)
            batch[f"attention_mask_{side}"] = from_lists([f[f"attention_mask_{side}"] for f in features], 0)
        if "margin" in features[0]:
            batch["margin"] = torch.tensor([f["margin"] for f in features], dtype=torch.float)
        return batch

    def completion_only_collate(examples, response_token_ids=RESPONSE_TEMPLATE, ignore_index=-100):
        input_ids = from_lists([ex["input_ids"] for ex in examples], PAD)
        batch = {"input_ids": input_ids, "attention_mask": (input_ids != PAD).long()}
        labels = batch["input_ids"].clone()
        labels[labels == PAD] = -100
        batch["labels"] = labels
        for i in range(len(examples)):
            response_token_ids_start_idx = None
            for idx in np.where(batch["labels"][i] == response_token_ids[0])[0]:
                # `response_token_ids` is `'### Response:\n'`, here we are just making sure that the token IDs match
                if response_token_ids == batch["labels"][i][idx : idx + len(response_token_ids)].tolist():
                    response_token_ids_start_idx = idx
            if response_token_ids_start_idx is None:
                warnings.warn("Could not find response key in the following instance; its labels ignored")
                batch["labels"][i, :] = ignore_index
            else:
                response_token_ids_end_idx = response_token_ids_start_idx + len(response_token_ids)
                # Make pytorch loss function ignore all tokens up through the end of the response key
                batch["labels"][i, :response_token_ids_end_idx] = ignore_index
        return batch

    def compute_accuracy(eval_pred):
        predictions, labels = eval_pred
        # Here, predictions is rewards_chosen and rewards_rejected.
        # We want to see how much of the time rewards_chosen > rewards_rejected.
        if np.array(predictions[:, 0] == predictions[:, 1], dtype=float).sum() > 0:
            warnings.warn("There are equal predictions")
        predictions = np.argmax(predictions, axis=1)
        accuracy = np.array(predictions == labels, dtype=float).mean().item()
        return {"accuracy": accuracy}

    return SimpleNamespace(pad_to_length=pad_to_length, disable_dropout_in_model=disable_dropout_in_model,
                           create_reference_model=create_reference_model, dpo_collate=dpo_collate,
                           reward_collate=reward_collate, completion_only_collate=completion_only_collate,
                           compute_accuracy=compute_accuracy)


def mitchell_dpo(torch, nn, F, logits_dtype=None):
    """eric-mitchell/direct-preference-optimization's ``trainers.py`` functions and ``BasePreferenceTrainer``'s
    ``concatenated_forward``, ``get_batch_metrics``, ``clip_gradient`` and warmup scheduler. ``logits_dtype`` is the
    repository's ``torch.float32`` (``.logits.to(torch.float32)``); the float64 test passes float64."""
    pad_to_length = trl_utils(torch, nn, F).pad_to_length
    logits_dtype = torch.float32 if logits_dtype is None else logits_dtype

    def preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                        reference_rejected_logps, beta, label_smoothing=0.0, ipo=False, reference_free=False):
        pi_logratios = policy_chosen_logps - policy_rejected_logps
        ref_logratios = reference_chosen_logps - reference_rejected_logps

        if reference_free:
            ref_logratios = 0

        logits = pi_logratios - ref_logratios  # also known as h_{\pi_\theta}^{y_w,y_l}

        if ipo:
            losses = (logits - 1/(2 * beta)) ** 2  # Eq. 17 of https://arxiv.org/pdf/2310.12036v2.pdf
        else:
            # Eq. 3 https://ericmitchell.ai/cdpo.pdf; label_smoothing=0 gives original DPO
            losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing

        chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps).detach()
        rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps).detach()

        return losses, chosen_rewards, rejected_rewards

    def _get_batch_logps(logits, labels, average_log_prob=False):
        assert logits.shape[:-1] == labels.shape

        labels = labels[:, 1:].clone()
        logits = logits[:, :-1, :]
        loss_mask = (labels != -100)

        # dummy token; we'll ignore the losses on these tokens later
        labels[labels == -100] = 0

        per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)

        if average_log_prob:
            return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
        else:
            return (per_token_logps * loss_mask).sum(-1)

    def concatenated_inputs(batch):
        max_length = max(batch['chosen_input_ids'].shape[1], batch['rejected_input_ids'].shape[1])
        concatenated_batch = {}
        for k in batch:
            if k.startswith('chosen') and isinstance(batch[k], torch.Tensor):
                pad_value = -100 if 'labels' in k else 0
                concatenated_key = k.replace('chosen', 'concatenated')
                concatenated_batch[concatenated_key] = pad_to_length(batch[k], max_length, pad_value=pad_value)
        for k in batch:
            if k.startswith('rejected') and isinstance(batch[k], torch.Tensor):
                pad_value = -100 if 'labels' in k else 0
                concatenated_key = k.replace('rejected', 'concatenated')
                concatenated_batch[concatenated_key] = torch.cat((
                    concatenated_batch[concatenated_key],
                    pad_to_length(batch[k], max_length, pad_value=pad_value),
                ), dim=0)
        return concatenated_batch

    def concatenated_forward(model, batch):
        concatenated_batch = concatenated_inputs(batch)
        all_logits = model(concatenated_batch['concatenated_input_ids'],
                           attention_mask=concatenated_batch['concatenated_attention_mask']).logits.to(logits_dtype)
        all_logps = _get_batch_logps(all_logits, concatenated_batch['concatenated_labels'], average_log_prob=False)
        chosen_logps = all_logps[:batch['chosen_input_ids'].shape[0]]
        rejected_logps = all_logps[batch['chosen_input_ids'].shape[0]:]
        return chosen_logps, rejected_logps

    def get_batch_metrics(policy, reference_model, batch, loss_config, train=True):
        """``all_gather_if_needed`` is the identity on one process."""
        metrics = {}
        train_test = 'train' if train else 'eval'

        if loss_config.name in {'dpo', 'ipo'}:
            policy_chosen_logps, policy_rejected_logps = concatenated_forward(policy, batch)
            with torch.no_grad():
                reference_chosen_logps, reference_rejected_logps = concatenated_forward(reference_model, batch)

            if loss_config.name == 'dpo':
                loss_kwargs = {'beta': loss_config.beta, 'reference_free': loss_config.reference_free,
                               'label_smoothing': loss_config.label_smoothing, 'ipo': False}
            elif loss_config.name == 'ipo':
                loss_kwargs = {'beta': loss_config.beta, 'ipo': True}
            else:
                raise ValueError(f'unknown loss {loss_config.name}')

            losses, chosen_rewards, rejected_rewards = preference_loss(
                policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                **loss_kwargs)

            reward_accuracies = (chosen_rewards > rejected_rewards).float()

            metrics[f'rewards_{train_test}/chosen'] = chosen_rewards.cpu().numpy().tolist()
            metrics[f'rewards_{train_test}/rejected'] = rejected_rewards.cpu().numpy().tolist()
            metrics[f'rewards_{train_test}/accuracies'] = reward_accuracies.cpu().numpy().tolist()
            metrics[f'rewards_{train_test}/margins'] = (chosen_rewards - rejected_rewards).cpu().numpy().tolist()

            policy_rejected_logps = policy_rejected_logps.detach()
            metrics[f'logps_{train_test}/rejected'] = policy_rejected_logps.cpu().numpy().tolist()

        elif loss_config.name == 'sft':
            policy_chosen_logits = policy(batch['chosen_input_ids'],
                                          attention_mask=batch['chosen_attention_mask']).logits.to(logits_dtype)
            policy_chosen_logps = _get_batch_logps(policy_chosen_logits, batch['chosen_labels'], average_log_prob=False)

            losses = -policy_chosen_logps

        policy_chosen_logps = policy_chosen_logps.detach()
        metrics[f'logps_{train_test}/chosen'] = policy_chosen_logps.cpu().numpy().tolist()

        all_devices_losses = losses.detach()
        metrics[f'loss/{train_test}'] = all_devices_losses.cpu().numpy().tolist()

        return losses.mean(), metrics

    def clip_gradient(policy, max_grad_norm):
        return torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm).item()

    def warmup_scheduler(optimizer, warmup_steps):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: min(1.0, (step + 1) / (warmup_steps + 1)))

    return SimpleNamespace(preference_loss=preference_loss, _get_batch_logps=_get_batch_logps,
                           concatenated_inputs=concatenated_inputs, concatenated_forward=concatenated_forward,
                           get_batch_metrics=get_batch_metrics, clip_gradient=clip_gradient,
                           warmup_scheduler=warmup_scheduler)


def trl_dpo(torch, nn, F):
    """``DPOTrainer``'s ``concatenated_inputs``, ``dpo_loss``, ``get_batch_logps``, ``concatenated_forward`` and
    ``get_batch_loss_metrics`` (trl 0.7), over a ``self`` holding ``beta``, ``label_smoothing``, ``loss_type``,
    ``reference_free`` and ``ref_model``."""
    pad_to_length = trl_utils(torch, nn, F).pad_to_length

    class DPOTrainer:
        def __init__(self, ref_model, beta=0.1, label_smoothing=0.0, loss_type="sigmoid", reference_free=False,
                     label_pad_token_id=-100, padding_value=PAD):
            self.ref_model, self.beta, self.label_smoothing = ref_model, beta, label_smoothing
            self.loss_type, self.reference_free = loss_type, reference_free
            self.label_pad_token_id, self.padding_value = label_pad_token_id, padding_value

        @staticmethod
        def concatenated_inputs(batch, label_pad_token_id=-100, padding_value=0):
            concatenated_batch = {}
            max_length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
            for k in batch:
                if k.startswith("chosen") and isinstance(batch[k], torch.Tensor):
                    if "labels" in k:
                        pad_value = label_pad_token_id
                    elif k.endswith("_input_ids"):
                        pad_value = padding_value
                    elif k.endswith("_attention_mask"):
                        pad_value = 0
                    concatenated_key = k.replace("chosen", "concatenated")
                    concatenated_batch[concatenated_key] = pad_to_length(batch[k], max_length, pad_value=pad_value)
            for k in batch:
                if k.startswith("rejected") and isinstance(batch[k], torch.Tensor):
                    if "labels" in k:
                        pad_value = label_pad_token_id
                    elif k.endswith("_input_ids"):
                        pad_value = padding_value
                    elif k.endswith("_attention_mask"):
                        pad_value = 0
                    concatenated_key = k.replace("rejected", "concatenated")
                    concatenated_batch[concatenated_key] = torch.cat(
                        (
                            concatenated_batch[concatenated_key],
                            pad_to_length(batch[k], max_length, pad_value=pad_value),
                        ),
                        dim=0,
                    ).to(device="cpu")
            return concatenated_batch

        def dpo_loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                     reference_rejected_logps):
            pi_logratios = policy_chosen_logps - policy_rejected_logps
            if self.reference_free:
                ref_logratios = torch.tensor([0], dtype=pi_logratios.dtype, device=pi_logratios.device)
            else:
                ref_logratios = reference_chosen_logps - reference_rejected_logps

            logits = pi_logratios - ref_logratios

            if self.loss_type == "sigmoid":
                losses = (
                    -F.logsigmoid(self.beta * logits) * (1 - self.label_smoothing)
                    - F.logsigmoid(-self.beta * logits) * self.label_smoothing
                )
            elif self.loss_type == "hinge":
                losses = torch.relu(1 - self.beta * logits)
            elif self.loss_type == "ipo":
                # eqn (17) of the paper where beta is the regularization parameter for the IPO loss, denoted by tau.
                losses = (logits - 1 / (2 * self.beta)) ** 2
            elif self.loss_type == "kto_pair":
                # eqn (7) of the HALOs paper
                chosen_KL = (policy_chosen_logps - reference_chosen_logps).mean().clamp(min=0)
                rejected_KL = (policy_rejected_logps - reference_rejected_logps).mean().clamp(min=0)

                chosen_logratios = policy_chosen_logps - reference_chosen_logps
                rejected_logratios = policy_rejected_logps - reference_rejected_logps
                # As described in the KTO report, the KL term for chosen (rejected) is estimated using the rejected (chosen) half.
                losses = torch.cat(
                    (
                        1 - F.sigmoid(self.beta * (chosen_logratios - rejected_KL)),
                        1 - F.sigmoid(self.beta * (chosen_KL - rejected_logratios)),
                    ),
                    0,
                )
            else:
                raise ValueError(f"Unknown loss type: {self.loss_type}.")

            chosen_rewards = self.beta * (policy_chosen_logps - reference_chosen_logps).detach()
            rejected_rewards = self.beta * (policy_rejected_logps - reference_rejected_logps).detach()

            return losses, chosen_rewards, rejected_rewards

        @staticmethod
        def get_batch_logps(logits, labels, average_log_prob=False, label_pad_token_id=-100):
            if logits.shape[:-1] != labels.shape:
                raise ValueError("Logits (batch and sequence length dim) and labels must have the same shape.")

            labels = labels[:, 1:].clone()
            logits = logits[:, :-1, :]
            loss_mask = labels != label_pad_token_id

            # dummy token; we'll ignore the losses on these tokens later
            labels[labels == label_pad_token_id] = 0

            per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)

            if average_log_prob:
                return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
            else:
                return (per_token_logps * loss_mask).sum(-1)

        def concatenated_forward(self, model, batch):
            concatenated_batch = self.concatenated_inputs(
                batch, label_pad_token_id=self.label_pad_token_id, padding_value=self.padding_value)
            len_chosen = batch["chosen_labels"].shape[0]

            all_logits = model(
                concatenated_batch["concatenated_input_ids"],
                attention_mask=concatenated_batch["concatenated_attention_mask"],
            ).logits

            all_logps = self.get_batch_logps(
                all_logits,
                concatenated_batch["concatenated_labels"],
                average_log_prob=self.loss_type == "ipo",
                label_pad_token_id=self.label_pad_token_id,
            )

            chosen_logps = all_logps[:len_chosen]
            rejected_logps = all_logps[len_chosen:]

            chosen_logits = all_logits[:len_chosen]
            rejected_logits = all_logits[len_chosen:]

            return (chosen_logps, rejected_logps, chosen_logits, rejected_logits)

        def get_batch_loss_metrics(self, model, batch, train_eval="train"):
            metrics = {}

            (
                policy_chosen_logps,
                policy_rejected_logps,
                policy_chosen_logits,
                policy_rejected_logits,
            ) = self.concatenated_forward(model, batch)

            with torch.no_grad():
                (
                    reference_chosen_logps,
                    reference_rejected_logps,
                    _,
                    _,
                ) = self.concatenated_forward(self.ref_model, batch)

            losses, chosen_rewards, rejected_rewards = self.dpo_loss(
                policy_chosen_logps,
                policy_rejected_logps,
                reference_chosen_logps,
                reference_rejected_logps,
            )
            reward_accuracies = (chosen_rewards > rejected_rewards).float()

            prefix = "eval_" if train_eval == "eval" else ""
            metrics[f"{prefix}rewards/chosen"] = chosen_rewards.mean().cpu()
            metrics[f"{prefix}rewards/rejected"] = rejected_rewards.mean().cpu()
            metrics[f"{prefix}rewards/accuracies"] = reward_accuracies.mean().cpu()
            metrics[f"{prefix}rewards/margins"] = (chosen_rewards - rejected_rewards).mean().cpu()
            metrics[f"{prefix}logps/rejected"] = policy_rejected_logps.detach().mean().cpu()
            metrics[f"{prefix}logps/chosen"] = policy_chosen_logps.detach().mean().cpu()
            metrics[f"{prefix}logits/rejected"] = policy_rejected_logits.detach().mean().cpu()
            metrics[f"{prefix}logits/chosen"] = policy_chosen_logits.detach().mean().cpu()

            return losses.mean(), metrics

    return DPOTrainer


def trl_reward(torch, nn, F):
    """``RewardTrainer.compute_loss`` (its margin and ``center_rewards_coefficient``) and ``prediction_step``'s
    preference probabilities, over a ``self`` holding ``args``."""

    class RewardTrainer:
        def __init__(self, center_rewards_coefficient=None):
            self.args = SimpleNamespace(center_rewards_coefficient=center_rewards_coefficient)

        def compute_loss(self, model, inputs, return_outputs=False):
            rewards_chosen = model(
                input_ids=inputs["input_ids_chosen"],
                attention_mask=inputs["attention_mask_chosen"],
                return_dict=True,
            )["logits"]
            rewards_rejected = model(
                input_ids=inputs["input_ids_rejected"],
                attention_mask=inputs["attention_mask_rejected"],
                return_dict=True,
            )["logits"]
            # calculate loss, optionally modulate with margin
            if "margin" in inputs:
                loss = -nn.functional.logsigmoid(rewards_chosen - rewards_rejected - inputs["margin"]).mean()
            else:
                loss = -nn.functional.logsigmoid(rewards_chosen - rewards_rejected).mean()

            if self.args.center_rewards_coefficient is not None:
                loss += self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)

            if return_outputs:
                return loss, {
                    "rewards_chosen": rewards_chosen,
                    "rewards_rejected": rewards_rejected,
                }
            return loss

        def prediction_step(self, model, inputs):
            with torch.no_grad():
                loss, logits_dict = self.compute_loss(model, inputs, return_outputs=True)
            loss = loss.detach()
            logits = tuple(v for k, v in logits_dict.items())
            logits = tuple(v.detach() for v in logits)  # nested_detach
            # Stack accepted against rejected, mean over logits
            # and softmax to get preferences between accepted and rejected to sum to 1
            logits = torch.stack(logits).mean(dim=2).softmax(dim=0).T
            labels = torch.zeros(logits.shape[0])
            return loss, logits, labels

    return RewardTrainer


def hf_trainer(torch, nn, F):
    """``transformers.Trainer``'s optimizer groups (``get_decay_parameter_names``), the linear warmup schedule
    (``optimization.py``), and ``training_step``'s loss scaling for gradient accumulation."""

    def get_parameter_names(model, forbidden_layer_types):
        result = []
        for name, child in model.named_children():
            result += [
                f"{name}.{n}"
                for n in get_parameter_names(child, forbidden_layer_types)
                if not isinstance(child, tuple(forbidden_layer_types))
            ]
        # Add model specific parameters (defined with nn.Parameter) since they are not in any child.
        result += list(model._parameters.keys())
        return result

    def create_optimizer(opt_model, learning_rate=1e-2, weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999,
                         adam_epsilon=1e-8):
        decay_parameters = get_parameter_names(opt_model, [nn.LayerNorm])
        decay_parameters = [name for name in decay_parameters if "bias" not in name]
        optimizer_grouped_parameters = [
            {
                "params": [p for n, p in opt_model.named_parameters() if (n in decay_parameters and p.requires_grad)],
                "weight_decay": weight_decay,
            },
            {
                "params": [p for n, p in opt_model.named_parameters() if (n not in decay_parameters and p.requires_grad)],
                "weight_decay": 0.0,
            },
        ]
        optimizer_kwargs = {"lr": learning_rate, "betas": (adam_beta1, adam_beta2), "eps": adam_epsilon}
        return torch.optim.AdamW(optimizer_grouped_parameters, **optimizer_kwargs)

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

    def sft_loss(model, inputs):
        """``SFTTrainer`` = ``Trainer.compute_loss``: the LM's own shifted ``cross_entropy`` with ``ignore_index``,
        written out as ``GPT2LMHeadModel`` does after its forward."""
        logits = model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        shift_logits = logits[..., :-1, :].contiguous()
        shift_labels = inputs["labels"][..., 1:].contiguous()
        V = shift_logits.size(-1)
        return F.cross_entropy(shift_logits.view(-1, V), shift_labels.view(-1), ignore_index=-100)

    def training_step(model, inputs, compute_loss, gradient_accumulation_steps):
        model.train()
        loss = compute_loss(model, inputs)
        loss = loss / gradient_accumulation_steps
        loss.backward()
        return loss.detach()

    return SimpleNamespace(get_parameter_names=get_parameter_names, create_optimizer=create_optimizer,
                           get_linear_schedule_with_warmup=get_linear_schedule_with_warmup, sft_loss=sft_loss,
                           training_step=training_step)


# ------------------------------------------------------------------------------------------------- the data (NumPy)

def preference_rows(count, seed=0):
    """``count`` tokenized pairs as ``DPOTrainer.tokenize_row`` builds them: prompt + response + EOS, labels the
    prompt's as -100; chosen and rejected of different lengths."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        prompt = rng.integers(4, VOCAB, rng.integers(2, 4)).tolist()
        row = {}
        for side in ("chosen", "rejected"):
            response = rng.integers(4, VOCAB, rng.integers(1, 5)).tolist() + [EOS]
            ids = prompt + response
            row[f"{side}_input_ids"] = ids
            row[f"{side}_attention_mask"] = [1] * len(ids)
            row[f"{side}_labels"] = [-100] * len(prompt) + response
        rows.append(row)
    return rows


def reward_rows(count, seed=1, margins=True):
    """``RewardTrainer``'s tokenized pairs (``input_ids_chosen``, ...), with a ``margin`` column."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        row = {}
        for side in ("chosen", "rejected"):
            ids = rng.integers(4, VOCAB, rng.integers(2, 7)).tolist()
            row[f"input_ids_{side}"], row[f"attention_mask_{side}"] = ids, [1] * len(ids)
        if margins:
            row["margin"] = float(rng.uniform(0, 1))
        rows.append(row)
    return rows


def completion_rows(count, seed=2):
    """Instruction/response texts as ids: prompt tokens, the response template, the response, EOS; one in each four
    lacks the template (the collator warns and ignores it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        prompt = rng.integers(4, VOCAB, rng.integers(1, 4)).tolist()
        template = [] if index % 4 == 3 else RESPONSE_TEMPLATE
        rows.append({"input_ids": prompt + template + rng.integers(4, VOCAB, rng.integers(1, 4)).tolist() + [EOS]})
    return rows
