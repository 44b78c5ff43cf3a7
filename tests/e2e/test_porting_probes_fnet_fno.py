"""Porting probes: an FNet block and a 1-D Fourier Neural Operator, each written once as their reference
implementations write them (``torch`` is ``torch`` or ``kiln``), trained a few Adam steps from the same weights in
float64: losses, first gradients and final parameters agree with torch 2.13 to 1e-10, eagerly and with the whole
training step in one ``kiln.compile(fullgraph=True)`` graph.

- FNet (Lee-Thorp et al. 2021): token mixing by ``torch.fft.fft(torch.fft.fft(x, dim=-1), dim=-2).real`` in place of
  attention, post-norm residual blocks with a GELU feed-forward, mean-pooled into a classifier; cross-entropy.
- FNO (Li et al. 2021, ``fourier_1d.py``): ``SpectralConv1d`` keeps the lowest ``modes`` of ``torch.fft.rfft(x)``,
  mixes channels by ``torch.einsum("bix,iox->box", x_ft[:, :, :modes], self.weights1)`` with complex weights
  ``nn.Parameter(scale * torch.rand(i, o, modes, dtype=torch.cdouble))`` (the reference's ``cfloat``, in double here
  to compare in float64), writes them into ``torch.zeros(..., dtype=torch.cdouble)`` by slice assignment and returns
  ``torch.fft.irfft(out_ft, n=x.size(-1))``; lifted by ``fc0``, two Fourier layers beside 1x1 ``Conv1d``s, GELU,
  projected by ``fc1``/``fc2``; MSE.

A complex parameter trains as torch's: kiln keeps it as its ``view_as_real`` pairs, which torch's Adam steps too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from oracles import libraries

TOLERANCE = dict(rtol=1e-10, atol=1e-12)


def fnet(torch, nn, F, dim=8, mlp_dim=16, classes=3):
    class FourierTransform(nn.Module):
        def forward(self, x):
            return torch.fft.fft(torch.fft.fft(x, dim=-1), dim=-2).real

    class FNetBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.fourier, self.norm1 = FourierTransform(), nn.LayerNorm(dim)
            self.ff = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp_dim, dim))
            self.norm2 = nn.LayerNorm(dim)

        def forward(self, x):
            x = self.norm1(x + self.fourier(x))
            return self.norm2(x + self.ff(x))

    class FNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(FNetBlock(), FNetBlock())
            self.head = nn.Linear(dim, classes)

        def forward(self, x):
            return self.head(self.blocks(x).mean(dim=1))

    return FNet()


def fno(torch, nn, F, modes=4, width=6):
    class SpectralConv1d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1):
            super().__init__()
            self.in_channels, self.out_channels, self.modes1 = in_channels, out_channels, modes1
            self.scale = 1 / (in_channels * out_channels)
            self.weights1 = nn.Parameter(self.scale * torch.rand(in_channels, out_channels, self.modes1, dtype=torch.cdouble))

        def compl_mul1d(self, input, weights):
            return torch.einsum("bix,iox->box", input, weights)

        def forward(self, x):
            batchsize = x.shape[0]
            x_ft = torch.fft.rfft(x)
            out_ft = torch.zeros(batchsize, self.out_channels, x.size(-1) // 2 + 1, dtype=torch.cdouble)
            out_ft[:, :, :self.modes1] = self.compl_mul1d(x_ft[:, :, :self.modes1], self.weights1)
            return torch.fft.irfft(out_ft, n=x.size(-1))

    class FNO1d(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc0 = nn.Linear(2, width)
            self.conv0, self.conv1 = SpectralConv1d(width, width, modes), SpectralConv1d(width, width, modes)
            self.w0, self.w1 = nn.Conv1d(width, width, 1), nn.Conv1d(width, width, 1)
            self.fc1, self.fc2 = nn.Linear(width, 16), nn.Linear(16, 1)

        def forward(self, x):
            x = self.fc0(x).permute(0, 2, 1)
            x = F.gelu(self.conv0(x) + self.w0(x))
            x = self.conv1(x) + self.w1(x)
            x = F.gelu(self.fc1(x.permute(0, 2, 1)))
            return self.fc2(x)

    return FNO1d()


def fnet_batch(rng):
    return rng.standard_normal((4, 6, 8)), rng.integers(0, 3, 4)


def fno_batch(rng):
    grid = np.linspace(0, 1, 12)
    signal = np.sin(2 * math.pi * rng.uniform(1, 3, (4, 1)) * grid)
    inputs = np.stack([signal, np.broadcast_to(grid, signal.shape)], axis=-1)
    return inputs, np.cumsum(signal, axis=1)[..., None] / 12


def twin_of(model, make):
    """The torch model holding ``model``'s weights (a complex parameter's pairs read as complex numbers)."""
    torch, nn, F = libraries("torch")
    twin = make(torch, nn, F)
    for (name, p), (twin_name, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert name == twin_name
        values = torch.tensor(np.array(p.data))
        q.data = torch.view_as_complex(values) if q.is_complex() else values
    return twin


def as_pairs(torch_tensor):
    """A torch tensor's values as kiln keeps them: a complex one as its ``view_as_real`` pairs."""
    import torch

    tensor = torch.view_as_real(torch_tensor) if torch_tensor.is_complex() else torch_tensor
    return tensor.detach().numpy()


def train(lib, model, batch, loss_of, compiled, steps=4):
    optimizer = lib.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = lib.tensor(batch[0]), lib.tensor(batch[1])

    def step(x, y):
        optimizer.zero_grad()
        loss = loss_of(lib, model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled and lib is kiln else step
    losses, first_grads = [], None
    for _ in range(steps):
        losses.append(run(inputs, targets).item())
        if first_grads is None:
            first_grads = [np.array(p.grad) if lib is kiln else as_pairs(p.grad) for p in model.parameters()]
    params = [np.array(p.data) if lib is kiln else as_pairs(p) for p in model.parameters()]
    return losses, first_grads, params


def cross_entropy(lib, logits, labels):
    return lib.nn.functional.cross_entropy(logits, labels)


def mse(lib, prediction, target):
    return lib.nn.functional.mse_loss(prediction, target)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize(("make", "make_batch", "loss_of"), [(fnet, fnet_batch, cross_entropy), (fno, fno_batch, mse)],
                         ids=["fnet", "fno"])
def test_fourier_models_train_as_torch(make, make_batch, loss_of, compiled):
    kiln.set_default_dtype(kiln.float64)
    try:
        kiln.manual_seed(0)
        model = make(*libraries("kiln"))
        twin = twin_of(model, make)
        twin.double()
        batch = make_batch(np.random.default_rng(1))
        ours = train(kiln, model, batch, loss_of, compiled)
        import torch

        theirs = train(torch, twin, batch, loss_of, compiled)
    finally:
        kiln.set_default_dtype(kiln.float32)
    np.testing.assert_allclose(ours[0], theirs[0], **TOLERANCE)
    assert ours[0][-1] < ours[0][0]  # it trains
    for name, mine, torch_values in zip(("first gradients", "parameters"), ours[1:], theirs[1:]):
        for index, (a, b) in enumerate(zip(mine, torch_values)):
            np.testing.assert_allclose(a, b, **TOLERANCE, err_msg=f"{name} #{index}")


def test_a_complex_parameter_is_its_real_view_for_the_optimizer_and_complex_in_use():
    """``nn.Parameter`` of complex values: a ``(..., 2)`` float array to the optimizer and state_dict (torch's Adam
    steps that view), a complex tensor in einsum/indexing, its ``real_view`` the same array."""
    kiln.manual_seed(0)
    layer = fno(*libraries("kiln")).conv0
    weights = layer.weights1
    assert weights.shape == (6, 6, 4, 2) and weights.dtype is kiln.float64
    assert weights.is_complex() and weights[0, 0].dtype.is_complex
    np.testing.assert_array_equal(weights[1, 2].numpy(), weights.data[1, 2, :, 0] + 1j * weights.data[1, 2, :, 1])
    assert set(layer.state_dict()) == {"weights1"}


def test_torchs_saved_fno_weights_load_into_kiln_and_give_torchs_output(tmp_path):
    """``torch.save(model.state_dict())`` with complex spectral weights: ``kiln.load`` reads the complex storages and
    ``load_state_dict`` stores them as the parameter's real pairs; the forward is torch's."""
    import torch

    torch.manual_seed(0)
    twin = fno(*libraries("torch")).double()
    torch.save(twin.state_dict(), tmp_path / "fno.pt")
    kiln.set_default_dtype(kiln.float64)
    try:
        model = fno(*libraries("kiln"))
        model.load_state_dict(kiln.load(str(tmp_path / "fno.pt")))
        inputs = fno_batch(np.random.default_rng(2))[0]
        ours = model(kiln.tensor(inputs)).numpy()
    finally:
        kiln.set_default_dtype(kiln.float32)
    np.testing.assert_allclose(ours, twin(torch.tensor(inputs)).detach().numpy(), **TOLERANCE)
    np.testing.assert_array_equal(np.asarray(model.conv0.weights1.complex_view()), twin.conv0.weights1.detach().numpy())
