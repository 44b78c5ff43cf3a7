"""Porting probes: a Vision Transformer and a U-Net, each written once as PyTorch code (``lib`` is ``torch`` or
``kiln``) and run in both from kiln's initial weights in float64: the first forward, the first gradients, the losses
and the state after a few steps agree to 1e-10, except where noted.

- ViT: patch embedding by a strided Conv2d then ``flatten(2).transpose(1, 2)``, a cls token expanded and ``cat``'ed,
  a learned position embedding (``trunc_normal_``, ``self.apply(_init_weights)``), ``nn.TransformerEncoder``
  (``batch_first``, ``norm_first``, GELU), the head on the cls token; AdamW with decay/no-decay param groups, a
  warmup-cosine ``LambdaLR``, ``clip_grad_norm_``, label smoothing; eval under ``inference_mode`` with a
  ``src_key_padding_mask``. The key projection's bias gets a zero gradient in exact arithmetic (softmax does not see a
  constant added to every score), so both libraries step it by Adam's ``g / sqrt(v)`` of rounding noise (~1e-17):
  its entries of ``in_proj_bias`` agree to 1e-10 absolute, not relative.
- U-Net: Conv-BN-ReLU blocks, MaxPool down, ConvTranspose2d or bilinear ``F.interpolate(align_corners=False)`` up,
  ``F.pad`` to the skip's size and ``torch.cat``; ``BCEWithLogitsLoss(pos_weight=...)`` plus a soft Dice loss; Adam.
  Adam again divides each gradient by its own running size: an element whose gradient cancels to ~1e-8 carries its
  ~1e-9 relative rounding into a ~1e-12 difference of the parameter, so the state is compared with atol 1e-11.

Both also train with the whole step in one ``kiln.compile(fullgraph=True)`` graph. That broke for the U-Net: a
``F.binary_cross_entropy_with_logits(..., pos_weight=torch.tensor([3.0]))`` in the step has a traced ``pos_weight``, refused as
"a constant of the loss", so the step ran eagerly; a traced weight is now an operand without gradient, as PyTorch's
(tests/frontend/test_loss_weights_traced_vs_torch.py). The eager programs needed no change.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot

# --- Vision Transformer ------------------------------------------------------------------------------------------


def vision_transformer(torch, nn, F, num_classes=5, dim=16, depth=2, heads=4, image=8, patch=4):
    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
            self.num_patches = (image // patch) ** 2

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)  # (B, patches, dim)

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
            layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=2 * dim, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_classes)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        def forward(self, x, padding_mask=None):
            x = self.patch_embed(x)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls, x), dim=1) + self.pos_embed
            x = self.encoder(x, src_key_padding_mask=padding_mask)
            return self.head(self.norm(x[:, 0]))

    return ViT()


def train_vit(steps=4, warmup=2):
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((3, 3, 8, 8)), np.array([0, 3, 4])

    def train(torch, nn, F, model):
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.ndim <= 1 or name in {"cls_token", "pos_embed"} else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2)

        def warmup_cosine(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)
        criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        x, y = torch.tensor(images), torch.tensor(labels)
        record = {"losses": [], "lrs": []}
        model.train()
        for _ in range(steps):
            logits = model(x)
            loss = criterion(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            record.setdefault("output", array(logits))
            record.setdefault("grads", gradients(model))
            record.setdefault("grad_norm", torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0).item())
            opt.step()
            scheduler.step()
            record["losses"].append(loss.item())
            record["lrs"].append(scheduler.get_last_lr())
        model.eval()
        with torch.inference_mode():
            padding = torch.zeros(3, 5, dtype=torch.bool)
            padding[0, 3:] = True  # the last two patches of the first image masked out
            record["eval"] = array(model(x, padding).softmax(-1))
        record["state"] = snapshot(model)
        return record

    return train


def test_vision_transformer_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(vision_transformer, train_vit())
    assert_same_records(ours, theirs, looser={"state/encoder.layers.0.self_attn.in_proj_bias": dict(rtol=0, atol=1e-10),
                                              "state/encoder.layers.1.self_attn.in_proj_bias": dict(rtol=0, atol=1e-10)})
    assert theirs["losses"][-1] < theirs["losses"][0]
    assert theirs["lrs"][-1] == [0.0, 0.0]


# --- U-Net ------------------------------------------------------------------------------------------------------


def unet(torch, nn, F, bilinear, base=4):
    class DoubleConv(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Down(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.pool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

        def forward(self, x):
            return self.pool_conv(x)

    class Up(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            if bilinear:
                self.up = nn.Conv2d(cin, cin // 2, kernel_size=1)
            else:
                self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(cin, cout)

        def forward(self, x1, x2):
            if bilinear:
                x1 = F.interpolate(x1, scale_factor=2, mode="bilinear", align_corners=False)
            x1 = self.up(x1)
            diff_y, diff_x = x2.size()[2] - x1.size()[2], x2.size()[3] - x1.size()[3]
            x1 = F.pad(x1, [diff_x // 2, diff_x - diff_x // 2, diff_y // 2, diff_y - diff_y // 2])
            return self.conv(torch.cat([x2, x1], dim=1))

    class UNet(nn.Module):
        def __init__(self, n_channels=3, n_classes=1):
            super().__init__()
            self.inc = DoubleConv(n_channels, base)
            self.down1, self.down2 = Down(base, base * 2), Down(base * 2, base * 4)
            self.up1, self.up2 = Up(base * 4, base * 2), Up(base * 2, base)
            self.outc = nn.Conv2d(base, n_classes, kernel_size=1)

        def forward(self, x):
            x1 = self.inc(x)
            x2 = self.down1(x1)
            x = self.up1(self.down2(x2), x2)
            return self.outc(self.up2(x, x1))

    return UNet()


def dice_loss(torch, logits, target, eps=1e-6):
    probs = torch.sigmoid(logits)
    inter = (probs * target).sum(dim=(1, 2, 3))
    union = probs.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return 1 - ((2 * inter + eps) / (union + eps)).mean()


def train_unet(size, steps=3):
    rng = np.random.default_rng(0)
    images, masks = rng.standard_normal((2, 3, size, size)), (rng.random((2, 1, size, size)) > 0.7).astype(np.float64)

    def train(torch, nn, F, model):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))
        x, y = torch.tensor(images), torch.tensor(masks)
        record = {"losses": []}
        model.train()
        for _ in range(steps):
            logits = model(x)
            loss = bce(logits, y) + dice_loss(torch, logits, y)
            opt.zero_grad()
            loss.backward()
            record.setdefault("output", array(logits))
            record.setdefault("grads", gradients(model))
            opt.step()
            record["losses"].append(loss.item())
        model.eval()
        with torch.no_grad():
            predicted = (torch.sigmoid(model(x)) > 0.5).float()
            record["iou"] = ((predicted * y).sum() / ((predicted + y).clamp(max=1).sum() + 1e-6)).item()
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("size", [12, 10])
def test_unet_trains_as_torch(bilinear, size, float64_default):
    """Sizes 12 and 10: 10 halves to 5 then 2, so the up path pads its 4 to the skip's 5 (``F.pad``)."""
    ours, theirs = run_in_lockstep(lambda torch, nn, F: unet(torch, nn, F, bilinear), train_unet(size))
    assert_same_records(ours, theirs, looser={"state/": dict(rtol=1e-10, atol=1e-11)})
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_vision_transformer_compiled_step_as_torch(float64_default):
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((3, 3, 8, 8)), np.array([0, 3, 4])
    train = compiled_step_training(lambda lib: (lib.tensor(images), lib.tensor(labels)),
                                   lambda lib, model: lib.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05),
                                   lambda lib, nn, F, model, x, y: F.cross_entropy(model(x), y, label_smoothing=0.1))
    ours, theirs = run_in_lockstep(vision_transformer, train)
    assert_same_records(ours, theirs, looser={"in_proj_bias": dict(rtol=0, atol=1e-10)})


@pytest.mark.parametrize("bilinear", [False, True])
def test_unet_compiled_step_with_pos_weight_built_inside_as_torch(bilinear, float64_default):
    rng = np.random.default_rng(0)
    images, masks = rng.standard_normal((2, 3, 10, 10)), (rng.random((2, 1, 10, 10)) > 0.7).astype(np.float64)

    def loss_of(lib, nn, F, model, x, y):
        logits = model(x)
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=lib.tensor([3.0])) + dice_loss(lib, logits, y)

    train = compiled_step_training(lambda lib: (lib.tensor(images), lib.tensor(masks)),
                                   lambda lib, model: lib.optim.Adam(model.parameters(), lr=1e-2), loss_of)
    ours, theirs = run_in_lockstep(lambda torch, nn, F: unet(torch, nn, F, bilinear), train)
    assert_same_records(ours, theirs, looser={"state/": dict(rtol=1e-10, atol=1e-11)})
