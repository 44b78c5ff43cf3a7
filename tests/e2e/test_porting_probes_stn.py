"""Porting probe: Spatial Transformer Networks, written once as PyTorch users write them (``torch`` is ``torch`` or
``kiln``) and run in both from kiln's initial weights.

- The PyTorch tutorial's ``Net`` (``spatial_transformer_tutorial.py``, verbatim but for the sizes' names): a
  localization net (``Conv2d``, ``MaxPool2d``, ``ReLU(True)``), the ``fc_loc`` regressor initialised to the identity by
  ``fc_loc[2].weight.data.zero_()`` and ``fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0],
  dtype=torch.float))``, ``F.affine_grid(theta, x.size())`` then ``F.grid_sample(x, grid)``, the classifier after it
  (``Dropout2d``, ``F.dropout(training=self.training)``, ``log_softmax``), ``F.nll_loss`` and SGD; trained end to end so
  the gradient reaches theta through ``grid_sample``. Every mode (bilinear, nearest), padding mode (zeros, border,
  reflection) and ``align_corners``. Dropout's p is 0: kiln's generator draws other masks than torch's.
- The gradients with respect to the input, the grid (``retain_grad``) and theta of ``grid_sample(x, affine_grid(theta))``
  for every mode and padding mode, at the identity theta too (the STN's start: every sample point lies exactly on a
  pixel, where bilinear's gradient with respect to the grid jumps, so the points must be the same to the last bit).
- A learned flow field warping the input, two ways: ``grid = base_grid + flow.permute(0, 2, 3, 1)`` on the identity
  ``affine_grid`` (optical-flow warping), and VoxelMorph's ``SpatialTransformer`` (an ``arange`` ``meshgrid`` buffer
  made float32 by ``.type(torch.FloatTensor)``, ``new_locs[:, i, ...] = 2 * (new_locs[:, i, ...] / (shape[i] - 1) -
  0.5)`` written in place on a tensor that requires grad, ``permute`` then ``[..., [1, 0]]``), in 2-D and 3-D.

float64 to 1e-10 eagerly and with the whole SGD (Adam for the flows) step in one ``kiln.compile(fullgraph=True)`` graph
against torch's eager loop; the tutorial's float32 at float32's level (rtol 1e-5, atol 1e-6: after three steps the
transformed images differ by up to 2e-6, float32 convolution sums in another order).

What broke: at the identity theta (the tutorial's init) a third of the sample points fell an ulp to the other side of
their pixel (kiln's base grid was NumPy's ``linspace``, and it unnormalised with two roundings where torch's kernel
fuses a multiply-add), so the gradient reaching theta took the other side's slope: losses off by 1e-3 after one step.
kiln's ``linspace`` and base grid now give torch's bits and the unnormalisation is fused
(``tests/frontend/test_linspace_bits_vs_torch.py``, ``tests/layers/test_grid_sample_identity_grid_vs_torch.py``).
``grid_sample(mode='nearest')`` left theta's ``.grad`` None (torch: zeros; an optimizer skips a None). VoxelMorph's
``Normal(0, 1e-1).sample(...)`` weight was float32 under the float64 default
(``tests/distributions/test_python_number_parameters_dtype_vs_torch.py``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot
from oracles import libraries, require_torch

IMAGE, BATCH = 28, 4
MODES = list(itertools.product(("bilinear", "nearest"), ("zeros", "border", "reflection"), (False, True)))


def stn_net(mode="bilinear", padding_mode="zeros", align_corners=False, dropout=0.0):
    def build(torch, nn, F):
        class Net(nn.Module):
            def __init__(self):
                super(Net, self).__init__()
                self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
                self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
                self.conv2_drop = nn.Dropout2d(dropout)
                self.fc1 = nn.Linear(320, 50)
                self.fc2 = nn.Linear(50, 10)

                # Spatial transformer localization-network
                self.localization = nn.Sequential(
                    nn.Conv2d(1, 8, kernel_size=7),
                    nn.MaxPool2d(2, stride=2),
                    nn.ReLU(True),
                    nn.Conv2d(8, 10, kernel_size=5),
                    nn.MaxPool2d(2, stride=2),
                    nn.ReLU(True)
                )

                # Regressor for the 3 * 2 affine matrix
                self.fc_loc = nn.Sequential(
                    nn.Linear(10 * 3 * 3, 32),
                    nn.ReLU(True),
                    nn.Linear(32, 3 * 2)
                )

                # Initialize the weights/bias with identity transformation
                self.fc_loc[2].weight.data.zero_()
                self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

            # Spatial transformer network forward function
            def stn(self, x):
                xs = self.localization(x)
                xs = xs.view(-1, 10 * 3 * 3)
                theta = self.fc_loc(xs)
                theta = theta.view(-1, 2, 3)

                grid = F.affine_grid(theta, x.size(), align_corners=align_corners)
                x = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
                return x

            def forward(self, x):
                # transform the input
                x = self.stn(x)

                # Perform the usual forward pass
                x = F.relu(F.max_pool2d(self.conv1(x), 2))
                x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
                x = x.view(-1, 320)
                x = F.relu(self.fc1(x))
                x = F.dropout(x, p=dropout, training=self.training)
                x = self.fc2(x)
                return F.log_softmax(x, dim=1)

        return Net()

    return build


def _digits(steps, seed=0):
    """MNIST-like batches: a bright stroke at a random offset on noise, labels 0..9."""
    rng = np.random.default_rng(seed)
    images = 0.1 * rng.standard_normal((steps, BATCH, 1, IMAGE, IMAGE))
    for step, item in itertools.product(range(steps), range(BATCH)):
        row, column = rng.integers(4, 20, 2)
        images[step, item, 0, row:row + 6, column:column + 2] += 1.0
    return images, rng.integers(0, 10, (steps, BATCH))


def train_stn(steps=3):
    images, labels = _digits(steps)

    def train(torch, nn, F, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        dtype = torch.get_default_dtype()
        record = {"losses": []}
        model.train()
        for step in range(steps):
            data, target = torch.tensor(images[step], dtype=dtype), torch.tensor(labels[step])
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            record.setdefault("output", array(output))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        model.eval()
        with torch.no_grad():
            record["transformed"] = array(model.stn(torch.tensor(images[0], dtype=dtype)))
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("mode,padding_mode,align_corners", [("bilinear", "zeros", False), ("bilinear", "zeros", True),
                                                              ("bilinear", "border", False), ("bilinear", "reflection", True),
                                                              ("nearest", "zeros", False), ("nearest", "reflection", True)])
def test_stn_tutorial_trains_as_torch(mode, padding_mode, align_corners, float64_default):
    ours, theirs = run_in_lockstep(stn_net(mode, padding_mode, align_corners), train_stn())
    assert_same_records(ours, theirs)
    theta_gradient = np.abs(theirs["grads"]["fc_loc.2.weight"]).max()
    assert theta_gradient == 0 if mode == "nearest" else theta_gradient > 0  # through grid_sample (nearest's is zero)


def _stn_loss(torch, nn, F, model, data, target):
    return F.nll_loss(model(data), target)


@pytest.mark.parametrize("mode,padding_mode,align_corners", [("bilinear", "zeros", False), ("nearest", "reflection", True),
                                                              ("bilinear", "border", True)])
def test_stn_compiled_step_as_torch(mode, padding_mode, align_corners, float64_default):
    images, labels = _digits(1)
    train = compiled_step_training(lambda lib: (lib.tensor(images[0]), lib.tensor(labels[0])),
                                   lambda lib, model: lib.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), _stn_loss)
    ours, theirs = run_in_lockstep(stn_net(mode, padding_mode, align_corners), train)
    assert_same_records(ours, theirs)


def test_stn_tutorial_float32_as_torch():
    require_torch()
    ours, theirs = run_in_lockstep(stn_net(), train_stn())
    assert ours["output"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)


# --- grid_sample's gradients through an affine grid -------------------------------------------------------------------

THETAS = {"identity": np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]] * 2),
          "rotated, zoomed out": np.array([[[0.8, -0.6, 0.1], [0.6, 0.8, -0.2]], [[1.4, 0.2, -0.3], [-0.1, 1.2, 0.25]]])}


def _sampled_gradients(torch, F, image, theta, mode, padding_mode, align_corners):
    x = torch.tensor(image, requires_grad=True)
    theta = torch.tensor(theta, requires_grad=True)
    grid = F.affine_grid(theta, x.size(), align_corners=align_corners)
    grid.retain_grad()
    out = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    weights = torch.tensor(np.linspace(-1.0, 2.0, out.numel()).reshape(out.shape))
    (out * weights).sum().backward()
    return {"grid": array(grid), "out": array(out), "x.grad": array(x.grad), "grid.grad": array(grid.grad),
            "theta.grad": array(theta.grad)}


GRADIENT_CASES = ([mode + ("rotated, zoomed out",) for mode in MODES + [("bicubic", "zeros", False), ("bicubic", "border", True)]]
                  + [("bilinear", "zeros", False, "identity"), ("bilinear", "reflection", True, "identity"),
                     ("nearest", "border", False, "identity")])


@pytest.mark.parametrize("mode,padding_mode,align_corners,theta", GRADIENT_CASES)
def test_grid_sample_gradients_through_affine_grid_as_torch(mode, padding_mode, align_corners, theta):
    image = np.random.default_rng(1).standard_normal((2, 3, 5, 7))
    ours, theirs = (_sampled_gradients(*libraries(name)[::2], image, THETAS[theta], mode, padding_mode, align_corners)
                    for name in ("kiln", "torch"))
    if theta == "identity":  # bit for bit: the points sit on pixels, where bilinear's gradient in the grid jumps
        np.testing.assert_array_equal(ours["grid"], theirs["grid"])
    assert_same_records(ours, theirs)


# --- a learned flow field -------------------------------------------------------------------------------------------

FLOW_IMAGE = 6


def flow_warp_net(torch, nn, F):
    """Optical-flow style warping: a conv predicts a flow field added to the identity grid."""

    class FlowWarp(nn.Module):
        def __init__(self, channels=2):
            super().__init__()
            self.flow = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 2, 3, padding=1))

        def forward(self, x):
            flow = 0.3 * self.flow(x)
            identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=x.dtype).unsqueeze(0).expand(x.size(0), 2, 3)
            base_grid = F.affine_grid(identity, x.size(), align_corners=False)
            grid = base_grid + flow.permute(0, 2, 3, 1)
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False), flow

    return FlowWarp()


def voxelmorph_net(ndims):
    def build(torch, nn, F):
        class SpatialTransformer(nn.Module):
            """N-D Spatial Transformer (voxelmorph/torch/layers.py)."""

            def __init__(self, size, mode='bilinear'):
                super().__init__()
                self.mode = mode
                vectors = [torch.arange(0, s) for s in size]
                grids = torch.meshgrid(vectors, indexing='ij')
                grid = torch.stack(grids)
                grid = torch.unsqueeze(grid, 0)
                grid = grid.type(torch.FloatTensor)
                self.register_buffer('grid', grid, persistent=False)

            def forward(self, src, flow):
                new_locs = self.grid + flow
                shape = flow.shape[2:]
                for i in range(len(shape)):
                    new_locs[:, i, ...] = 2 * (new_locs[:, i, ...] / (shape[i] - 1) - 0.5)
                if len(shape) == 2:
                    new_locs = new_locs.permute(0, 2, 3, 1)
                    new_locs = new_locs[..., [1, 0]]
                elif len(shape) == 3:
                    new_locs = new_locs.permute(0, 2, 3, 4, 1)
                    new_locs = new_locs[..., [2, 1, 0]]
                return F.grid_sample(src, new_locs, align_corners=True, mode=self.mode)

        class Registration(nn.Module):
            def __init__(self):
                super().__init__()
                Conv = getattr(nn, 'Conv%dd' % ndims)
                self.unet_lite = nn.Sequential(Conv(2, 8, 3, padding=1), nn.LeakyReLU(0.2), Conv(8, 8, 3, padding=1),
                                               nn.LeakyReLU(0.2))
                self.flow = Conv(8, ndims, kernel_size=3, padding=1)
                self.flow.weight = nn.Parameter(torch.distributions.Normal(0, 1e-1).sample(self.flow.weight.shape))
                self.flow.bias = nn.Parameter(torch.zeros(self.flow.bias.shape))
                self.transformer = SpatialTransformer((FLOW_IMAGE,) * ndims)

            def forward(self, source, target):
                x = torch.cat([source, target], dim=1)
                flow_field = self.flow(self.unet_lite(x))
                return self.transformer(source, flow_field), flow_field

        return Registration()

    return build


def _flow_loss(torch, F, model, source, target):
    if isinstance(model.flow, torch.nn.Sequential):  # FlowWarp: the pair stacked on channels
        moved, flow = model(torch.cat([source, target], dim=1))
        moved = moved[:, :1]
    else:
        moved, flow = model(source, target)
    smooth = (flow[:, :, 1:] - flow[:, :, :-1]).pow(2).mean() + (flow[..., 1:] - flow[..., :-1]).pow(2).mean()
    return F.mse_loss(moved, target) + 0.1 * smooth


def _flow_batches(ndims, steps):
    """``(steps, 2, N, 1, *spatial)``: a smooth source and the target it is shifted by a pixel to."""
    rng = np.random.default_rng(7)
    source = rng.standard_normal((steps, 2, 1) + (FLOW_IMAGE,) * ndims)
    for axis in range(3, 3 + ndims):
        source = source + np.roll(source, 1, axis) + np.roll(source, -1, axis)
    return np.stack([source, np.roll(source, 1, 3)], 1) / 3.0 ** ndims


def train_flow(ndims, steps=3):
    """``steps`` Adam steps registering one pair."""
    batch = _flow_batches(ndims, 1)[0]

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        record = {"losses": []}
        for step in range(steps):
            source, target = torch.tensor(batch[0]), torch.tensor(batch[1])
            optimizer.zero_grad()
            loss = _flow_loss(torch, F, model, source, target)
            loss.backward()
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        return record

    return train


FLOW_MODELS = {"flow + base grid": (flow_warp_net, 2), "voxelmorph 2-D": (voxelmorph_net(2), 2),
               "voxelmorph 3-D": (voxelmorph_net(3), 3)}


@pytest.mark.parametrize("model", list(FLOW_MODELS))
def test_learned_flow_warping_trains_as_torch(model, float64_default):
    build, ndims = FLOW_MODELS[model]
    ours, theirs = run_in_lockstep(build, train_flow(ndims))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("model", list(FLOW_MODELS))
def test_learned_flow_warping_compiled_step_as_torch(model, float64_default):
    build, ndims = FLOW_MODELS[model]
    batch = _flow_batches(ndims, 1)[0]
    train = compiled_step_training(lambda lib: (lib.tensor(batch[0]), lib.tensor(batch[1])),
                                   lambda lib, model: lib.optim.Adam(model.parameters(), lr=1e-2),
                                   lambda lib, nn, F, model, source, target: _flow_loss(lib, F, model, source, target))
    ours, theirs = run_in_lockstep(build, train)
    assert_same_records(ours, theirs)
