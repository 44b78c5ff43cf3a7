"""Porting probe: a Conformer as ``torchaudio.models.Conformer`` writes it (``torch`` is ``torch`` or ``kiln``), run
in both libraries from kiln's initial weights.

- ``_lengths_to_padding_mask``: ``int(torch.max(lengths).item())``, ``torch.arange(max_length, dtype=lengths.dtype)
  .expand(batch_size, max_length) >= lengths.unsqueeze(1)``.
- ``_FeedForwardModule`` (LayerNorm, Linear, SiLU, Dropout, Linear) applied as a half step (``x * 0.5 + residual``)
  before and after.
- Self-attention: ``nn.MultiheadAttention`` (sequence first) with ``key_padding_mask`` and ``need_weights=False``.
- ``_ConvolutionModule``: LayerNorm, ``transpose(1, 2)``, pointwise ``Conv1d`` to twice the channels, ``GLU(dim=1)``,
  depthwise ``Conv1d(groups=num_channels)`` with 'SAME' padding, ``BatchNorm1d`` (or ``GroupNorm(1, ...)``), SiLU,
  pointwise ``Conv1d``; convolution before or after attention (``convolution_first``); the final LayerNorm.
- Trained as an acoustic encoder: a linear head, ``log_softmax``, ``F.ctc_loss`` over the true lengths; AdamW with a
  warmup by ``LambdaLR``, ``clip_grad_norm_``.

Checked against torch 2.13 in float64 to 1e-10 (first outputs, first gradients, losses, parameters and BatchNorm
buffers after the steps, eval outputs), eagerly and with the whole training step in one ``kiln.compile(fullgraph=True)``
graph against torch's eager loop; float32 (how Conformers train) at float32's level.

What broke (later): the compiled step with the mask made inside ``forward`` (``int(torch.max(lengths).item())``) was
refused by ``kiln.compile``; a value read from the inputs is now specialized and guarded
(``frontend/value_guards.py``, ``tests/runtime/test_compiled_value_guards.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot, split_key_bias

BATCH, FRAMES, FEATURES, VOCAB = 3, 7, 8, 5
LENGTHS = [7, 5, 4]


def conformer(torch, nn, F, use_group_norm=False, convolution_first=False, num_layers=2):
    from typing import Optional, Tuple

    def _lengths_to_padding_mask(lengths: torch.Tensor) -> torch.Tensor:
        batch_size = lengths.shape[0]
        max_length = int(torch.max(lengths).item())
        padding_mask = torch.arange(max_length, device=lengths.device, dtype=lengths.dtype).expand(
            batch_size, max_length
        ) >= lengths.unsqueeze(1)
        return padding_mask

    class _ConvolutionModule(torch.nn.Module):
        def __init__(
            self,
            input_dim: int,
            num_channels: int,
            depthwise_kernel_size: int,
            dropout: float = 0.0,
            bias: bool = False,
            use_group_norm: bool = False,
        ) -> None:
            super().__init__()
            if (depthwise_kernel_size - 1) % 2 != 0:
                raise ValueError("depthwise_kernel_size must be odd to achieve 'SAME' padding.")
            self.layer_norm = torch.nn.LayerNorm(input_dim)
            self.sequential = torch.nn.Sequential(
                torch.nn.Conv1d(
                    input_dim,
                    2 * num_channels,
                    1,
                    stride=1,
                    padding=0,
                    bias=bias,
                ),
                torch.nn.GLU(dim=1),
                torch.nn.Conv1d(
                    num_channels,
                    num_channels,
                    depthwise_kernel_size,
                    stride=1,
                    padding=(depthwise_kernel_size - 1) // 2,
                    groups=num_channels,
                    bias=bias,
                ),
                torch.nn.GroupNorm(num_groups=1, num_channels=num_channels)
                if use_group_norm
                else torch.nn.BatchNorm1d(num_channels),
                torch.nn.SiLU(),
                torch.nn.Conv1d(
                    num_channels,
                    input_dim,
                    kernel_size=1,
                    stride=1,
                    padding=0,
                    bias=bias,
                ),
                torch.nn.Dropout(dropout),
            )

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            x = self.layer_norm(input)
            x = x.transpose(1, 2)
            x = self.sequential(x)
            return x.transpose(1, 2)

    class _FeedForwardModule(torch.nn.Module):
        def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
            super().__init__()
            self.sequential = torch.nn.Sequential(
                torch.nn.LayerNorm(input_dim),
                torch.nn.Linear(input_dim, hidden_dim, bias=True),
                torch.nn.SiLU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden_dim, input_dim, bias=True),
                torch.nn.Dropout(dropout),
            )

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return self.sequential(input)

    class ConformerLayer(torch.nn.Module):
        def __init__(
            self,
            input_dim: int,
            ffn_dim: int,
            num_attention_heads: int,
            depthwise_conv_kernel_size: int,
            dropout: float = 0.0,
            use_group_norm: bool = False,
            convolution_first: bool = False,
        ) -> None:
            super().__init__()

            self.ffn1 = _FeedForwardModule(input_dim, ffn_dim, dropout=dropout)

            self.self_attn_layer_norm = torch.nn.LayerNorm(input_dim)
            self.self_attn = torch.nn.MultiheadAttention(input_dim, num_attention_heads, dropout=dropout)
            self.self_attn_dropout = torch.nn.Dropout(dropout)

            self.conv_module = _ConvolutionModule(
                input_dim=input_dim,
                num_channels=input_dim,
                depthwise_kernel_size=depthwise_conv_kernel_size,
                dropout=dropout,
                bias=True,
                use_group_norm=use_group_norm,
            )

            self.ffn2 = _FeedForwardModule(input_dim, ffn_dim, dropout=dropout)
            self.final_layer_norm = torch.nn.LayerNorm(input_dim)
            self.convolution_first = convolution_first

        def _apply_convolution(self, input: torch.Tensor) -> torch.Tensor:
            residual = input
            input = input.transpose(0, 1)
            input = self.conv_module(input)
            input = input.transpose(0, 1)
            input = residual + input
            return input

        def forward(self, input: torch.Tensor, key_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
            residual = input
            x = self.ffn1(input)
            x = x * 0.5 + residual

            if self.convolution_first:
                x = self._apply_convolution(x)

            residual = x
            x = self.self_attn_layer_norm(x)
            x, _ = self.self_attn(
                query=x,
                key=x,
                value=x,
                key_padding_mask=key_padding_mask,
                need_weights=False,
            )
            x = self.self_attn_dropout(x)
            x = x + residual

            if not self.convolution_first:
                x = self._apply_convolution(x)

            residual = x
            x = self.ffn2(x)
            x = x * 0.5 + residual

            x = self.final_layer_norm(x)
            return x

    class Conformer(torch.nn.Module):
        def __init__(
            self,
            input_dim: int,
            num_heads: int,
            ffn_dim: int,
            num_layers: int,
            depthwise_conv_kernel_size: int,
            dropout: float = 0.0,
            use_group_norm: bool = False,
            convolution_first: bool = False,
        ):
            super().__init__()

            self.conformer_layers = torch.nn.ModuleList(
                [
                    ConformerLayer(
                        input_dim,
                        ffn_dim,
                        num_heads,
                        depthwise_conv_kernel_size,
                        dropout=dropout,
                        use_group_norm=use_group_norm,
                        convolution_first=convolution_first,
                    )
                    for _ in range(num_layers)
                ]
            )

        def forward(self, input: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            encoder_padding_mask = _lengths_to_padding_mask(lengths)

            x = input.transpose(0, 1)
            for layer in self.conformer_layers:
                x = layer(x, encoder_padding_mask)
            return x.transpose(0, 1), lengths

    class AcousticModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Conformer(input_dim=FEATURES, num_heads=2, ffn_dim=16, num_layers=num_layers,
                                     depthwise_conv_kernel_size=3, use_group_norm=use_group_norm,
                                     convolution_first=convolution_first)
            self.head = nn.Linear(FEATURES, VOCAB)

        def forward(self, features, lengths):
            encoded, lengths = self.encoder(features, lengths)
            return self.head(encoded).log_softmax(-1), lengths

    model = AcousticModel()
    model.lengths_to_padding_mask = _lengths_to_padding_mask
    return model


def _utterances(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((BATCH, FRAMES, FEATURES))
    for row, length in enumerate(LENGTHS):
        features[row, length:] = 0.0  # padded frames, as a collate_fn pads them
    targets = rng.integers(1, VOCAB, (BATCH, 3))
    return features, targets, np.array([3, 2, 2])


def ctc_loss_of(torch, F, model, features, lengths, targets, target_lengths):
    log_probs, output_lengths = model(features, lengths)
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, output_lengths, target_lengths, blank=0)
    return log_probs, loss


def make_optimizer(torch, model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 2))
    return optimizer, scheduler


def train_conformer(steps=3):
    feature_values, target_values, target_length_values = _utterances()

    def train(torch, nn, F, model):
        optimizer, scheduler = make_optimizer(torch, model)
        features = torch.tensor(feature_values, dtype=torch.get_default_dtype())
        lengths, targets = torch.tensor(LENGTHS), torch.tensor(target_values)
        target_lengths = torch.tensor(target_length_values)
        record = {"losses": []}
        model.train()
        for _ in range(steps):
            log_probs, loss = ctc_loss_of(torch, F, model, features, lengths, targets, target_lengths)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("log_probs", array(log_probs))
            record.setdefault("grads", gradients(model))
            record.setdefault("grad_norm", float(nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
            optimizer.step()
            scheduler.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        model.eval()
        with torch.no_grad():
            record["eval"] = array(model(features, lengths)[0])
        return record

    return train


# Two parameters whose gradient is analytically zero, so rounding noise that Adam (eps 1e-9) turns into steps of up to
# ~1e-9 in float64 and up to lr in float32: the attention's key bias (softmax cancels it: split_key_bias) and the
# depthwise conv's bias right before BatchNorm1d (training-mode BatchNorm subtracts each channel's mean), whose drift
# the BatchNorm's running mean takes in (times its momentum), and so the eval outputs (bias minus running mean).
LOOSER_FLOAT64 = {"key bias": dict(rtol=0, atol=1e-10), "sequential.2.bias": dict(rtol=0, atol=1e-8),
                  "sequential.3.running_mean": dict(rtol=0, atol=1e-9), "eval": dict(rtol=0, atol=1e-9)}
VARIANTS = {"batch norm": dict(), "group norm, convolution first": dict(use_group_norm=True, convolution_first=True)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conformer_trains_as_torch(variant, float64_default):
    options = VARIANTS[variant]
    ours, theirs = map(split_key_bias, run_in_lockstep(lambda torch, nn, F: conformer(torch, nn, F, **options),
                                                       train_conformer()))
    assert_same_records(ours, theirs, looser=LOOSER_FLOAT64)
    assert theirs["losses"][-1] < theirs["losses"][0]


def encode_with_mask(model, features, encoder_padding_mask):
    """``Conformer.forward`` given the padding mask (what ``ConformerLayer``'s own users write), then the head."""
    x = features.transpose(0, 1)
    for layer in model.encoder.conformer_layers:
        x = layer(x, encoder_padding_mask)
    return model.head(x.transpose(0, 1)).log_softmax(-1)


def compiled_conformer_training(mask_given):
    """The whole step (zero_grad, forward, CTC loss, backward, clip, AdamW step) compiled in kiln, torch's eager loop
    in torch; the padding mask made in the step from the lengths (``Conformer.forward``), or given to it."""
    feature_values, target_values, target_length_values = _utterances()

    def train(torch, nn, F, model):
        optimizer, scheduler = make_optimizer(torch, model)

        def train_step(features, lengths, targets, target_lengths, *padding_mask):
            optimizer.zero_grad()
            if mask_given:
                log_probs = encode_with_mask(model, features, *padding_mask)
                loss = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, blank=0)
            else:
                _, loss = ctc_loss_of(torch, F, model, features, lengths, targets, target_lengths)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        lengths = torch.tensor(LENGTHS)
        mask = (model.lengths_to_padding_mask(lengths),) if mask_given else ()
        batch = (torch.tensor(feature_values), lengths, torch.tensor(target_values), torch.tensor(target_length_values))
        losses = []
        for _ in range(3):
            losses.append(run(*batch, *mask).item())
            scheduler.step()
        return {"losses": losses, "state": snapshot(model)}

    return train


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conformer_compiled_step_as_torch(variant, float64_default):
    options = VARIANTS[variant]
    ours, theirs = map(split_key_bias, run_in_lockstep(lambda torch, nn, F: conformer(torch, nn, F, **options),
                                                       compiled_conformer_training(mask_given=True)))
    assert_same_records(ours, theirs, looser=LOOSER_FLOAT64)


def test_conformer_compiled_step_with_lengths_to_padding_mask_inside(float64_default):
    """``Conformer.forward`` makes its mask with ``int(torch.max(lengths).item())``: torch.compile(fullgraph=True)
    traces that (an unbacked size); kiln refused the ``item()`` of the traced lengths, and now specializes on the
    value, guarded (``frontend/value_guards.py``)."""
    ours, theirs = map(split_key_bias, run_in_lockstep(conformer, compiled_conformer_training(mask_given=False)))
    assert_same_records(ours, theirs, looser=LOOSER_FLOAT64)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conformer_float32_as_torch(variant):
    """In float32 the noise steps of the parameters above reach lr (3e-3) and, through the BatchNorm's running mean,
    the eval outputs: with BatchNorm the first outputs, gradients and the losses are compared; with GroupNorm (no
    bias before a batch norm) everything but the attention's key bias, to float32's level."""
    options = VARIANTS[variant]
    ours, theirs = map(split_key_bias, run_in_lockstep(lambda torch, nn, F: conformer(torch, nn, F, **options),
                                                       train_conformer()))
    assert ours["log_probs"].dtype == np.float32
    if not options.get("use_group_norm"):
        ours, theirs = ({key: value for key, value in record.items() if key not in ("state", "eval")}
                        for record in (ours, theirs))
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6, looser={"key bias": dict(rtol=0, atol=2 * 3 * 3e-3)})
