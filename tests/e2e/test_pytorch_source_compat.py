"""PyTorch model source runs on kiln unchanged: each model below is written once against ``torch``-style names
(``lib`` is ``torch`` or ``kiln``, ``nn`` and ``F`` likewise) with the idioms real code uses: ``nn.ReLU(inplace=True)``
and ``out += identity``, ``x.view(B, T, h, d).transpose(1, 2)``, ``mask == 0`` into ``masked_fill``, a class token
``expand(B, -1, -1)`` and ``cat``, ``torch.arange`` positions, ``topk`` routing, ``einsum``, index assignment,
``split``, ``chunk``, weight tying, ``apply(init_fn)``. kiln's compiled training step and PyTorch's eager one start
from the same weights and take the same SGD steps on the same batches; their losses agree at every step (float32)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lockstep import sgd_in_lockstep
from oracles import libraries, require


_libraries = libraries


def resnet(lib, nn, F):
    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding="same", bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
            self.blocks = nn.Sequential(Block(8), Block(8))
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(lib.flatten(self.pool(self.blocks(self.stem(x))), 1))

    return Net()


def gpt(lib, nn, F, vocab=17, width=16, heads=2, context=8):
    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.register_buffer("bias", lib.tensor(np.tril(np.ones((context, context), np.float32))).reshape(1, 1, context, context))

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(width, dim=2)
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(width), CausalSelfAttention(), nn.LayerNorm(width)
            self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(width, 4 * width), c_proj=nn.Linear(4 * width, width), act=nn.GELU(approximate="tanh")))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            m = self.mlp
            return x + m.c_proj(m.act(m.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
            self.h = nn.ModuleList([Block() for _ in range(2)])
            self.ln_f, self.lm_head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)
            self.wte.weight = self.lm_head.weight  # weight tying

        def forward(self, idx):
            b, t = idx.size()
            x = self.wte(idx) + self.wpe(lib.arange(0, t, dtype=lib.long))
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x)).view(-1, vocab)

    return GPT()


def vit(lib, nn, F, width=16, patch=4, image=8):
    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, width, patch, patch)
            self.cls = nn.Parameter(lib.zeros(1, 1, width) + 0.1)
            self.pos = nn.Parameter(lib.linspace(-0.1, 0.1, (image // patch) ** 2 * width + width).reshape(1, -1, width))
            self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, 4)

        def forward(self, x):
            x = self.proj(x).flatten(2).transpose(1, 2)
            x = lib.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1) + self.pos
            scores = lib.einsum("bid,bjd->bij", x, x) / math.sqrt(width)
            x = x + lib.einsum("bij,bjd->bid", scores.softmax(-1), x)
            return self.head(self.norm(x)[:, 0])

    return ViT()


def moe(lib, nn, F, width=8, experts=4, k=2):
    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(width, experts)
            self.experts = nn.ModuleList([nn.Linear(width, width) for _ in range(experts)])
            self.out = nn.Linear(width, 3)

        def forward(self, x):
            top_values, top_indices = lib.topk(self.gate(x), k, dim=-1)
            weights = F.softmax(top_values, dim=-1)
            mixed = lib.zeros_like(x)
            for index, expert in enumerate(self.experts):
                mixed = mixed + (weights * (top_indices == index).float()).sum(-1, keepdim=True) * expert(x)
            return self.out(mixed)

    return MoE()


def unet(lib, nn, F):
    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True))
            self.pool = nn.MaxPool2d(2)
            self.mid = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
            self.up = nn.ConvTranspose2d(8, 4, kernel_size=2, stride=2)
            self.out = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            skip = self.down(x)
            y = self.up(self.mid(self.pool(skip)))
            y[:, :, 0, :] = 0.0  # index assignment: a border row zeroed
            y = lib.cat([y, skip], dim=1)
            return self.out(y).permute(0, 2, 3, 1).reshape(-1, 2)

    return UNet()


def _init_weights(nn, seed):
    rng = np.random.default_rng(seed)

    def init(module):
        for name, parameter in list(module.named_parameters()):
            if "." not in name:
                parameter.data[...] = rng.uniform(-0.3, 0.3, parameter.data.shape)

    return init


MODELS = {  # builder, input maker (rng -> x), classes (targets of the flattened logits)
    "resnet": (resnet, lambda rng: rng.standard_normal((4, 3, 6, 6)).astype(np.float32), 5, 4),
    "gpt": (gpt, lambda rng: rng.integers(0, 17, (3, 8)), 17, 24),
    "vit": (vit, lambda rng: rng.standard_normal((4, 3, 8, 8)).astype(np.float32), 4, 4),
    "moe": (moe, lambda rng: rng.standard_normal((8, 8)).astype(np.float32), 3, 8),
    "unet": (unet, lambda rng: rng.standard_normal((2, 1, 4, 4)).astype(np.float32), 2, 32),
}


@pytest.mark.parametrize("name", MODELS)
def test_the_same_source_trains_in_lockstep_on_kiln_and_torch(name):
    torch = require("torch")
    build, make_input, classes, targets = MODELS[name]
    ours = build(*_libraries("kiln"))
    ours.apply(_init_weights(None, 1))
    theirs = build(*_libraries("torch"))
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    batches = [(make_input(rng), rng.integers(0, classes, targets)) for _ in range(3)]
    assert len(list(sgd_in_lockstep(torch, ours, theirs, batches, "cross_entropy", lr=0.05, rtol=2e-4, batch_dim=None))) == 3


@pytest.mark.parametrize("name", ["resnet", "gpt"])
def test_state_dict_keys_come_in_torchs_order_with_tied_weights_under_both_names(name):
    require("torch")
    build = MODELS[name][0]
    ours, theirs = build(*_libraries("kiln")), build(*_libraries("torch"))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({key: value.detach().numpy() for key, value in theirs.state_dict().items()})
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], value.detach().numpy())
    if name == "gpt":  # a checkpoint that lists the tied weight once (kiln's before) still loads
        once = {key: value for key, value in ours.state_dict().items() if key != "lm_head.weight"}
        ours.load_state_dict(once)
