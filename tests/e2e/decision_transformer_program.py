"""The Decision Transformer as kzl/decision-transformer writes it (decision_transformer.py over trajectory_gpt2.py's
GPT-2), tiny, written once for ``torch`` being torch or kiln: the program of
``test_porting_probes_td3_dreamer_dt.py``, whose docstring says what it covers."""

from __future__ import annotations

import math
from types import SimpleNamespace


# --- Decision Transformer: kzl/decision-transformer's decision_transformer.py, trajectory_gpt2.py, seq_trainer.py ---

DT_STATE, DT_ACT, DT_HIDDEN, DT_HEADS, DT_K, DT_EP_LEN, DT_BATCH, DT_WARMUP = 3, 2, 8, 2, 4, 20, 3, 3


def decision_transformer(torch, nn, F, dtype=None):
    """``DecisionTransformer`` as decision_transformer.py writes it, over trajectory_gpt2.py's GPT-2 written out (no
    positional embeddings, as there; HF's ``Conv1D``, the ``tril`` ``bias`` buffer with ``masked_bias``, the
    ``(1.0 - attention_mask) * -10000.0`` extended mask, ``gelu_new``, HF's ``_init_weights``). ``dtype`` None is
    ``get_action``'s ``torch.float32`` casts as written."""
    dtype = dtype or torch.float32

    class Conv1D(nn.Module):
        def __init__(self, nf, nx):
            super().__init__()
            self.nf = nf
            w = torch.empty(nx, nf)
            nn.init.normal_(w, std=0.02)
            self.weight = nn.Parameter(w)
            self.bias = nn.Parameter(torch.zeros(nf))

        def forward(self, x):
            size_out = x.size()[:-1] + (self.nf,)
            x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
            x = x.view(*size_out)
            return x

    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    class Attention(nn.Module):
        def __init__(self, nx, n_ctx, config, scale=False):
            super().__init__()
            n_state = nx
            assert n_state % config.n_head == 0
            self.register_buffer(
                "bias", torch.tril(torch.ones((n_ctx, n_ctx), dtype=torch.uint8)).view(1, 1, n_ctx, n_ctx))
            self.register_buffer("masked_bias", torch.tensor(-1e4))
            self.n_head = config.n_head
            self.split_size = n_state
            self.scale = scale
            self.c_attn = Conv1D(3 * n_state, nx)
            self.c_proj = Conv1D(n_state, nx)
            self.attn_dropout = nn.Dropout(config.attn_pdrop)
            self.resid_dropout = nn.Dropout(config.resid_pdrop)

        def _attn(self, q, k, v, attention_mask=None):
            w = torch.matmul(q, k)
            if self.scale:
                w = w / (float(v.size(-1)) ** 0.5)
            nd, ns = w.size(-2), w.size(-1)
            mask = self.bias[:, :, ns - nd: ns, :ns]
            w = torch.where(mask.bool(), w, self.masked_bias.to(w.dtype))
            if attention_mask is not None:
                w = w + attention_mask
            w = nn.Softmax(dim=-1)(w)
            w = self.attn_dropout(w)
            return torch.matmul(w, v)

        def merge_heads(self, x):
            x = x.permute(0, 2, 1, 3).contiguous()
            new_x_shape = x.size()[:-2] + (x.size(-2) * x.size(-1),)
            return x.view(*new_x_shape)

        def split_heads(self, x, k=False):
            new_x_shape = x.size()[:-1] + (self.n_head, x.size(-1) // self.n_head)
            x = x.view(*new_x_shape)
            if k:
                return x.permute(0, 2, 3, 1)  # (batch, head, head_features, seq_length)
            else:
                return x.permute(0, 2, 1, 3)  # (batch, head, seq_length, head_features)

        def forward(self, hidden_states, attention_mask=None):
            query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
            query = self.split_heads(query)
            key = self.split_heads(key, k=True)
            value = self.split_heads(value)
            a = self._attn(query, key, value, attention_mask)
            a = self.merge_heads(a)
            a = self.c_proj(a)
            a = self.resid_dropout(a)
            return a

    class MLP(nn.Module):
        def __init__(self, n_state, config):  # in MLP: n_state=3072 (4 * n_embd)
            super().__init__()
            nx = config.n_embd
            self.c_fc = Conv1D(n_state, nx)
            self.c_proj = Conv1D(nx, n_state)
            self.act = gelu_new
            self.dropout = nn.Dropout(config.resid_pdrop)

        def forward(self, x):
            h = self.act(self.c_fc(x))
            h2 = self.c_proj(h)
            return self.dropout(h2)

    class Block(nn.Module):
        def __init__(self, n_ctx, config, scale=False):
            super().__init__()
            hidden_size = config.n_embd
            inner_dim = config.n_inner if config.n_inner is not None else 4 * hidden_size
            self.ln_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
            self.attn = Attention(hidden_size, n_ctx, config, scale)
            self.ln_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = MLP(inner_dim, config)

        def forward(self, hidden_states, attention_mask=None):
            attn_output = self.attn(self.ln_1(hidden_states), attention_mask=attention_mask)
            hidden_states = attn_output + hidden_states
            feed_forward_hidden_states = self.mlp(self.ln_2(hidden_states))
            hidden_states = hidden_states + feed_forward_hidden_states
            return hidden_states

    class GPT2Model(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.drop = nn.Dropout(config.embd_pdrop)
            self.h = nn.ModuleList([Block(config.n_ctx, config, scale=True) for _ in range(config.n_layer)])
            self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
            self.apply(self._init_weights)
            for name, p in self.named_parameters():
                if "c_proj" in name and "weight" in name:
                    p.data.normal_(mean=0.0, std=(config.initializer_range / math.sqrt(2 * config.n_layer)))

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Embedding, Conv1D)):
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
                if isinstance(module, (nn.Linear, Conv1D)) and module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def forward(self, inputs_embeds=None, attention_mask=None):
            input_shape = inputs_embeds.size()[:-1]
            batch_size = inputs_embeds.shape[0]
            if attention_mask is not None:
                attention_mask = attention_mask.view(batch_size, -1)
                attention_mask = attention_mask[:, None, None, :]
                attention_mask = attention_mask.to(dtype=next(self.parameters()).dtype)  # fp16 compatibility
                attention_mask = (1.0 - attention_mask) * -10000.0
            hidden_states = inputs_embeds  # no position embeddings (trajectory_gpt2.py)
            hidden_states = self.drop(hidden_states)
            output_shape = input_shape + (hidden_states.size(-1),)
            for block in self.h:
                hidden_states = block(hidden_states, attention_mask=attention_mask)
            hidden_states = self.ln_f(hidden_states)
            hidden_states = hidden_states.view(*output_shape)
            return {'last_hidden_state': hidden_states}

    class TrajectoryModel(nn.Module):
        def __init__(self, state_dim, act_dim, max_length=None):
            super().__init__()
            self.state_dim = state_dim
            self.act_dim = act_dim
            self.max_length = max_length

    class DecisionTransformer(TrajectoryModel):
        def __init__(self, state_dim, act_dim, hidden_size, max_length=None, max_ep_len=4096, action_tanh=True,
                     **kwargs):
            super().__init__(state_dim, act_dim, max_length=max_length)
            self.hidden_size = hidden_size
            config = SimpleNamespace(vocab_size=1, n_embd=hidden_size, n_ctx=3 * max_length, n_inner=4 * hidden_size,
                                     layer_norm_epsilon=1e-5, initializer_range=0.02, **kwargs)
            self.transformer = GPT2Model(config)
            self.embed_timestep = nn.Embedding(max_ep_len, hidden_size)
            self.embed_return = torch.nn.Linear(1, hidden_size)
            self.embed_state = torch.nn.Linear(self.state_dim, hidden_size)
            self.embed_action = torch.nn.Linear(self.act_dim, hidden_size)
            self.embed_ln = nn.LayerNorm(hidden_size)
            self.predict_state = torch.nn.Linear(hidden_size, self.state_dim)
            self.predict_action = nn.Sequential(
                *([nn.Linear(hidden_size, self.act_dim)] + ([nn.Tanh()] if action_tanh else []))
            )
            self.predict_return = torch.nn.Linear(hidden_size, 1)

        def forward(self, states, actions, rewards, returns_to_go, timesteps, attention_mask=None):
            batch_size, seq_length = states.shape[0], states.shape[1]
            if attention_mask is None:
                attention_mask = torch.ones((batch_size, seq_length), dtype=torch.long)
            state_embeddings = self.embed_state(states)
            action_embeddings = self.embed_action(actions)
            returns_embeddings = self.embed_return(returns_to_go)
            time_embeddings = self.embed_timestep(timesteps)
            state_embeddings = state_embeddings + time_embeddings
            action_embeddings = action_embeddings + time_embeddings
            returns_embeddings = returns_embeddings + time_embeddings
            stacked_inputs = torch.stack(
                (returns_embeddings, state_embeddings, action_embeddings), dim=1
            ).permute(0, 2, 1, 3).reshape(batch_size, 3 * seq_length, self.hidden_size)
            stacked_inputs = self.embed_ln(stacked_inputs)
            stacked_attention_mask = torch.stack(
                (attention_mask, attention_mask, attention_mask), dim=1
            ).permute(0, 2, 1).reshape(batch_size, 3 * seq_length)
            transformer_outputs = self.transformer(
                inputs_embeds=stacked_inputs,
                attention_mask=stacked_attention_mask,
            )
            x = transformer_outputs['last_hidden_state']
            x = x.reshape(batch_size, seq_length, 3, self.hidden_size).permute(0, 2, 1, 3)
            return_preds = self.predict_return(x[:, 2])
            state_preds = self.predict_state(x[:, 2])
            action_preds = self.predict_action(x[:, 1])
            return state_preds, action_preds, return_preds

        def get_action(self, states, actions, rewards, returns_to_go, timesteps, **kwargs):
            states = states.reshape(1, -1, self.state_dim)
            actions = actions.reshape(1, -1, self.act_dim)
            returns_to_go = returns_to_go.reshape(1, -1, 1)
            timesteps = timesteps.reshape(1, -1)
            if self.max_length is not None:
                states = states[:, -self.max_length:]
                actions = actions[:, -self.max_length:]
                returns_to_go = returns_to_go[:, -self.max_length:]
                timesteps = timesteps[:, -self.max_length:]
                attention_mask = torch.cat([torch.zeros(self.max_length - states.shape[1]), torch.ones(states.shape[1])])
                attention_mask = attention_mask.to(dtype=torch.long, device=states.device).reshape(1, -1)
                states = torch.cat(
                    [torch.zeros((states.shape[0], self.max_length - states.shape[1], self.state_dim),
                                 device=states.device), states],
                    dim=1).to(dtype=dtype)
                actions = torch.cat(
                    [torch.zeros((actions.shape[0], self.max_length - actions.shape[1], self.act_dim),
                                 device=actions.device), actions],
                    dim=1).to(dtype=dtype)
                returns_to_go = torch.cat(
                    [torch.zeros((returns_to_go.shape[0], self.max_length - returns_to_go.shape[1], 1),
                                 device=returns_to_go.device), returns_to_go],
                    dim=1).to(dtype=dtype)
                timesteps = torch.cat(
                    [torch.zeros((timesteps.shape[0], self.max_length - timesteps.shape[1]), device=timesteps.device),
                     timesteps],
                    dim=1
                ).to(dtype=torch.long)
            else:
                attention_mask = None
            _, action_preds, return_preds = self.forward(
                states, actions, None, returns_to_go, timesteps, attention_mask=attention_mask, **kwargs)
            return action_preds[0, -1]

    return DecisionTransformer(
        state_dim=DT_STATE, act_dim=DT_ACT, max_length=DT_K, max_ep_len=DT_EP_LEN, hidden_size=DT_HIDDEN, n_layer=1,
        n_head=DT_HEADS, activation_function='relu', n_positions=1024, resid_pdrop=0.0, attn_pdrop=0.0,
        embd_pdrop=0.0)
