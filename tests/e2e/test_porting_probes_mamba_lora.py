"""Porting probes: a Mamba block with its pure-PyTorch selective scan, and LoRA fine-tuning of a frozen transformer,
each written once as PyTorch code (``torch`` is ``torch`` or ``kiln``) and run in both from kiln's initial weights in
float64: the first forward, the first gradients, the losses and the state after a few steps agree to 1e-10, eagerly
and with the whole step in one ``kiln.compile(fullgraph=True)`` graph (against torch's eager loop).

- Mamba (johnma2006/mamba-minimal's ``MambaBlock``, without its ``.float()`` casts so the block stays float64):
  ``in_proj`` split into ``x`` and the gate, a depthwise causal ``nn.Conv1d(groups=d_inner, padding=d_conv - 1)``
  sliced ``[:, :, :l]``, SiLU, ``x_proj`` split into ``delta, B, C``, ``F.softplus(dt_proj(delta))``,
  ``A = -torch.exp(A_log)``, ``torch.exp(torch.einsum(...))`` and a three-operand ``einsum`` for ``delta * B * u``; the
  scan either sequential (a Python loop over time, ``torch.stack``) or parallel: Mamba-2's ``segsum`` (``cumsum`` of
  a ``tril``-masked repeat, ``masked_fill(~mask, -torch.inf)``) exponentiated into the decay matrix, then ``einsum``.
  Adam. Then greedy generation by mamba_simple's recurrent ``step`` under ``torch.inference_mode()`` (the conv window
  by ``conv_state.copy_(torch.roll(...))`` and ``conv_state[:, :, -1] = x``, the SSM state by ``copy_``): its logits
  are the full forward's, and torch's. (mamba_simple computes ``A`` by ``-torch.exp(self.A_log.float())``; kept
  float64 here: NumPy's float32 ``exp``, which kiln's NumPy backend runs, is off by up to ~2 ulp where torch's is
  within ~0.5, so a float32 ``A`` agrees with torch to ~1e-7 only.)
- LoRA: a small pre-norm transformer (causal SDPA), frozen by ``requires_grad_(False)``; adapters wrap the
  ``nn.Linear`` modules found by ``named_modules()`` and replace them by ``setattr`` on their parent (``lora_A`` by
  ``kaiming_uniform_``, scaling alpha / r), only the adapters in AdamW; then ``merge`` (``weight += B @ A * scaling``
  under ``torch.no_grad()``) gives the unmerged outputs. The same adapters also as
  ``torch.nn.utils.parametrize.register_parametrization`` on the weights, frozen by name afterwards (loralib's
  ``mark_only_lora_as_trainable``) and merged by ``remove_parametrizations(leave_parametrized=True)``. ``lora_B`` is
  drawn rather than zero so that the first step's gradients reach every ``lora_A``.

What broke: ``torch.log(A)`` of Mamba's integer ``A = torch.arange(1, d_state + 1).repeat(d_inner, 1)`` was refused
("tensor.log needs a floating-point operand"); ``exp``, ``log``, ``sqrt``, ``tanh`` and ``sigmoid`` of an integer or
bool tensor now return the default float dtype, as PyTorch's (``tests/frontend/test_int_to_float_unary_vs_torch.py``).
Everything else ran unchanged, eagerly and compiled, to 1e-10.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, compiled_step_training, gradients,
                                run_in_lockstep, snapshot)

# --- Mamba ----------------------------------------------------------------------------------------------------------


def mamba_model(torch, nn, F, parallel_scan, d_model=4, n_layer=2, vocab_size=7, d_state=3, d_conv=3, expand=2):
    d_inner = expand * d_model
    dt_rank = math.ceil(d_model / 16)

    def segsum(x):
        T = x.size(-1)
        x = x[..., None].repeat(*([1] * x.dim()), T)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)
        x = x.masked_fill(~mask, 0)
        x_segsum = torch.cumsum(x, dim=-2)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=0)
        return x_segsum.masked_fill(~mask, -torch.inf)

    class MambaBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_proj = nn.Linear(d_model, d_inner * 2, bias=False)
            self.conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=d_conv, groups=d_inner, padding=d_conv - 1)
            self.x_proj = nn.Linear(d_inner, dt_rank + d_state * 2, bias=False)
            self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
            A = torch.arange(1, d_state + 1).repeat(d_inner, 1)
            self.A_log = nn.Parameter(torch.log(A))
            self.D = nn.Parameter(torch.ones(d_inner))
            self.out_proj = nn.Linear(d_inner, d_model, bias=False)

        def forward(self, x):
            (b, l, d) = x.shape
            x_and_res = self.in_proj(x)
            (x, res) = x_and_res.split(split_size=[d_inner, d_inner], dim=-1)
            x = x.transpose(1, 2)
            x = self.conv1d(x)[:, :, :l]
            x = x.transpose(1, 2)
            x = F.silu(x)
            y = self.ssm(x)
            y = y * F.silu(res)
            return self.out_proj(y)

        def ssm(self, x):
            (d_in, n) = self.A_log.shape
            A = -torch.exp(self.A_log)
            D = self.D
            x_dbl = self.x_proj(x)
            (delta, B, C) = x_dbl.split(split_size=[dt_rank, n, n], dim=-1)
            delta = F.softplus(self.dt_proj(delta))
            scan = self.parallel_scan if parallel_scan else self.selective_scan
            return scan(x, delta, A, B, C, D)

        def selective_scan(self, u, delta, A, B, C, D):
            (b, l, d_in) = u.shape
            n = A.shape[1]
            deltaA = torch.exp(torch.einsum("bld,dn->bldn", delta, A))
            deltaB_u = torch.einsum("bld,bln,bld->bldn", delta, B, u)
            x = torch.zeros((b, d_in, n), device=deltaA.device)
            ys = []
            for i in range(l):
                x = deltaA[:, i] * x + deltaB_u[:, i]
                y = torch.einsum("bdn,bn->bd", x, C[:, i, :])
                ys.append(y)
            y = torch.stack(ys, dim=1)
            return y + u * D

        def parallel_scan(self, u, delta, A, B, C, D):
            log_decay = torch.einsum("bld,dn->bdnl", delta, A)
            decay = torch.exp(segsum(log_decay))  # (b, d, n, t, s): prod of deltaA over (s, t]
            deltaB_u = torch.einsum("bld,bln,bld->bldn", delta, B, u)
            states = torch.einsum("bdnts,bsdn->btdn", decay, deltaB_u)
            return torch.einsum("btdn,btn->btd", states, C) + u * D

        def step(self, hidden_states, conv_state, ssm_state):
            """One token (B, 1, D) with the cached conv window and SSM state, as mamba_simple's ``Mamba.step``."""
            xz = self.in_proj(hidden_states.squeeze(1))
            x, z = xz.chunk(2, dim=-1)
            conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
            conv_state[:, :, -1] = x
            x = torch.sum(conv_state * self.conv1d.weight.squeeze(1), dim=-1) + self.conv1d.bias
            x = F.silu(x)
            dt, B, C = torch.split(self.x_proj(x), [dt_rank, d_state, d_state], dim=-1)
            dt = F.softplus(self.dt_proj(dt))
            A = -torch.exp(self.A_log)
            dA = torch.exp(torch.einsum("bd,dn->bdn", dt, A))
            dB = torch.einsum("bd,bn->bdn", dt, B)
            ssm_state.copy_(ssm_state * dA + x.unsqueeze(-1) * dB)
            y = torch.einsum("bdn,bn->bd", ssm_state, C) + self.D * x
            return self.out_proj(y * F.silu(z)).unsqueeze(1)

    class ResidualBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = MambaBlock()
            self.norm = nn.RMSNorm(d_model)

        def forward(self, x):
            return self.mixer(self.norm(x)) + x

        def step(self, x, conv_state, ssm_state):
            return self.mixer.step(self.norm(x), conv_state, ssm_state) + x

    class Mamba(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, d_model)
            self.layers = nn.ModuleList([ResidualBlock() for _ in range(n_layer)])
            self.norm_f = nn.RMSNorm(d_model)
            self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
            self.lm_head.weight = self.embedding.weight

        def forward(self, input_ids):
            x = self.embedding(input_ids)
            for layer in self.layers:
                x = layer(x)
            return self.lm_head(self.norm_f(x))

        def allocate_inference_cache(self, batch_size, dtype=None):
            return [(torch.zeros(batch_size, d_inner, d_conv, dtype=dtype),
                     torch.zeros(batch_size, d_inner, d_state, dtype=dtype)) for _ in self.layers]

        @torch.inference_mode()
        def generate(self, input_ids, max_new_tokens):
            """Greedy decoding, one cached step per token (the prompt fed token by token); the logits of each step."""
            cache = self.allocate_inference_cache(input_ids.shape[0], dtype=self.embedding.weight.dtype)
            tokens, logits = input_ids[:, :1], []
            for t in range(input_ids.shape[1] + max_new_tokens - 1):
                x = self.embedding(tokens[:, -1:])
                for layer, (conv_state, ssm_state) in zip(self.layers, cache):
                    x = layer.step(x, conv_state, ssm_state)
                logits.append(self.lm_head(self.norm_f(x))[:, -1])
                following = input_ids[:, t + 1:t + 2] if t + 1 < input_ids.shape[1] else logits[-1].argmax(-1, keepdim=True)
                tokens = torch.cat([tokens, following], dim=1)
            return tokens, torch.stack(logits, dim=1)

    return Mamba()


TOKENS = np.random.default_rng(5).integers(0, 7, (2, 6))
SCANS = {"sequential scan": False, "parallel segsum scan": True}


def language_model_loss(F, model, tokens):
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))


def train_mamba(steps=3):
    def train(torch, nn, F, model):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        tokens = torch.tensor(TOKENS)
        record = {"losses": [], "output": array(model(tokens))}
        for _ in range(steps):
            loss = language_model_loss(F, model, tokens)
            opt.zero_grad()
            loss.backward()
            record.setdefault("grads", gradients(model))
            opt.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("scan", SCANS)
def test_mamba_trains_as_torch(scan, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: mamba_model(torch, nn, F, SCANS[scan]), train_mamba())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_mamba_scans_agree(float64_default):
    """The parallel scan is the sequential one reordered: same outputs to rounding, in kiln."""
    from oracles import libraries

    import kiln

    lib, nn, F = libraries("kiln")
    outputs = []
    for parallel in (False, True):
        kiln.manual_seed(0)
        outputs.append(array(mamba_model(lib, nn, F, parallel)(lib.tensor(TOKENS))))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-12, atol=1e-14)


def test_mamba_cached_generation_as_torch(float64_default):
    """After training, greedy generation by the recurrent ``step`` (conv window by ``copy_(torch.roll(...))`` and
    ``conv_state[:, :, -1] = x``, SSM state by ``copy_``) under ``torch.inference_mode()``: its logits over the prompt
    are the full forward's, and the tokens and logits are torch's."""
    def train_then_generate(torch, nn, F, model):
        record = train_mamba()(torch, nn, F, model)
        tokens, logits = model.generate(torch.tensor(TOKENS[:, :4]), max_new_tokens=4)
        with torch.no_grad():
            record["full_forward"] = array(model(tokens[:, :-1]))
        record.update(tokens=array(tokens), step_logits=array(logits))
        return record

    ours, theirs = run_in_lockstep(lambda torch, nn, F: mamba_model(torch, nn, F, parallel_scan=False), train_then_generate)
    assert_same_records(ours, theirs)
    np.testing.assert_array_equal(ours["tokens"][:, :4], TOKENS[:, :4])
    for record in (ours, theirs):
        np.testing.assert_allclose(record["step_logits"], record["full_forward"], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("scan", SCANS)
def test_mamba_compiled_step_as_torch(scan, float64_default):
    train = compiled_step_training(lambda lib: (lib.tensor(TOKENS),),
                                   lambda torch, model: torch.optim.Adam(model.parameters(), lr=1e-2),
                                   lambda torch, nn, F, model, tokens: language_model_loss(F, model, tokens))
    ours, theirs = run_in_lockstep(lambda torch, nn, F: mamba_model(torch, nn, F, SCANS[scan]), train)
    assert_same_records(ours, theirs)


# --- LoRA -----------------------------------------------------------------------------------------------------------


def pretrained_transformer(torch, nn, F, dim=8, heads=2, vocab=7, depth=2):
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.v_proj, self.o_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (proj(x).view(b, t, heads, -1).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(y.transpose(1, 2).reshape(b, t, dim))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = Attention()
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.layers = nn.ModuleList(Layer() for _ in range(depth))
            self.ln_f = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, vocab, bias=False)

        def forward(self, tokens):
            x = self.embed(tokens)
            for layer in self.layers:
                x = layer(x)
            return self.head(self.ln_f(x))

    return TinyLM()


def lora_program(torch, nn, F):
    class LoRALinear(nn.Module):
        def __init__(self, base: nn.Linear, r: int = 2, alpha: int = 4):
            super().__init__()
            self.base = base
            self.r, self.scaling = r, alpha / r
            self.lora_A = nn.Parameter(torch.zeros(r, base.in_features))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)
            self.merged = False

        def forward(self, x):
            out = self.base(x)
            if not self.merged:
                out = out + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling
            return out

        @torch.no_grad()
        def merge(self):
            self.base.weight += (self.lora_B @ self.lora_A) * self.scaling
            self.merged = True

    class LoRAParametrization(nn.Module):
        def __init__(self, out_features, in_features, r=2, alpha=4):
            super().__init__()
            self.scaling = alpha / r
            self.lora_A = nn.Parameter(torch.empty(r, in_features))
            self.lora_B = nn.Parameter(torch.zeros(out_features, r))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

        def forward(self, weight):
            return weight + (self.lora_B @ self.lora_A) * self.scaling

    def inject_lora(model, targets=("q_proj", "v_proj", "mlp.0")):
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Linear) and name.endswith(targets):
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, LoRALinear(module))
        return model

    def parametrize_lora(model, targets=("q_proj", "v_proj", "mlp.0")):
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and name.endswith(targets):
                torch.nn.utils.parametrize.register_parametrization(
                    module, "weight", LoRAParametrization(module.out_features, module.in_features))
        return model

    return LoRALinear, inject_lora, parametrize_lora


def lora_model(torch, nn, F, how):
    """The pretrained model (its weights drawn, as if loaded), frozen, with adapters; the adapters' B drawn too so
    that the first step's gradients reach every A."""
    model = pretrained_transformer(torch, nn, F)
    _, inject_lora, parametrize_lora = lora_program(torch, nn, F)
    if how == "wrapped Linear":
        model.requires_grad_(False)
        model = inject_lora(model)
    else:  # loralib's mark_only_lora_as_trainable, after the adapters are in
        model = parametrize_lora(model)
        for name, param in model.named_parameters():
            param.requires_grad = "lora_" in name
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.1)
    return model


def train_lora(steps=3):
    def train(torch, nn, F, model):
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.01)
        tokens = torch.tensor(TOKENS)
        record = {"losses": []}
        for _ in range(steps):
            loss = language_model_loss(F, model, tokens)
            opt.zero_grad()
            loss.backward()
            record.setdefault("grads", gradients(model))
            opt.step()
            record["losses"].append(loss.item())
        frozen = [p for p in model.parameters() if not p.requires_grad]
        record["frozen_without_grad"] = len(frozen) > 0 and all(p.grad is None for p in frozen)
        record["state"] = snapshot(model)
        model.eval()
        with torch.no_grad():
            record["output"] = array(model(tokens))
        return record

    return train


LORA = ("wrapped Linear", "register_parametrization")


@pytest.mark.parametrize("how", LORA)
def test_lora_fine_tunes_as_torch(how, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: lora_model(torch, nn, F, how), train_lora())
    assert_same_records(ours, theirs)
    assert len(theirs["grads"]) == 12 and all("lora_" in name for name in theirs["grads"])
    assert theirs["frozen_without_grad"] == 1.0
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("how", LORA)
def test_lora_merge_gives_the_adapted_outputs(how, float64_default):
    """After training, merging folds ``B @ A * scaling`` into each frozen weight (``merge()`` of the wrapper, or
    ``parametrize.remove_parametrizations(..., leave_parametrized=True)``): the merged model's outputs are the adapted
    ones (both libraries), and the merged weights agree between them."""
    def train_and_merge(torch, nn, F, model):
        record = train_lora()(torch, nn, F, model)
        for module in list(model.modules()):
            if type(module).__name__ == "LoRALinear":
                module.merge()
            elif torch.nn.utils.parametrize.is_parametrized(module, "weight"):
                torch.nn.utils.parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        with torch.no_grad():
            record["merged_output"] = array(model(torch.tensor(TOKENS)))
        record["merged_state"] = snapshot(model)
        return record

    ours, theirs = run_in_lockstep(lambda torch, nn, F: lora_model(torch, nn, F, how), train_and_merge)
    assert_same_records(ours, theirs)
    for record in (ours, theirs):
        np.testing.assert_allclose(record["merged_output"], record["output"], rtol=1e-12, atol=1e-13)
    frozen, merged = MERGED_WEIGHT[how]
    assert not np.allclose(ours["merged_state"][merged], ours["state"][frozen])
    assert not any("lora_" in name for name in theirs["merged_state"]) or how == "wrapped Linear"


MERGED_WEIGHT = {"wrapped Linear": ("layers.0.attn.q_proj.base.weight",) * 2,
                 "register_parametrization": ("layers.0.attn.q_proj.parametrizations.weight.original",
                                              "layers.0.attn.q_proj.weight")}


@pytest.mark.parametrize("how", LORA)
def test_lora_compiled_step_as_torch(how, float64_default):
    train = compiled_step_training(
        lambda lib: (lib.tensor(TOKENS),),
        lambda torch, model: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2),
        lambda torch, nn, F, model, tokens: language_model_loss(F, model, tokens))
    ours, theirs = run_in_lockstep(lambda torch, nn, F: lora_model(torch, nn, F, how), train)
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("family", ["Mamba", "LoRA"])
def test_compiled_model_in_the_eager_loop_as_torch(family, float64_default):
    """``model = torch.compile(model)`` then the usual eager loop (forward compiled, backward and the optimizer eager;
    LoRA's frozen base stays without ``.grad``)."""
    if family == "Mamba":
        build, train = (lambda torch, nn, F: mamba_model(torch, nn, F, parallel_scan=True)), train_mamba()
    else:
        build, train = (lambda torch, nn, F: lora_model(torch, nn, F, "wrapped Linear")), train_lora()
    ours, theirs = run_in_lockstep(build, compiled_module_training(train))
    assert_same_records(ours, theirs)
