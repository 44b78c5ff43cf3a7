"""Real PyTorch programs from pytorch/examples, ported to kiln by changing the imports, checked against PyTorch in float64.

Each program is written once against torch-style names (``lib`` is ``torch`` or ``kiln``, ``nn`` and ``F`` likewise),
with the original's model and the idioms its loop uses; the data is scikit-learn's bundled 8x8 digits instead of
MNIST (shapes shrunk to match). kiln and PyTorch start from the same weights and see the same batches; losses,
parameters and buffers agree to ~1e-10, both for PyTorch's own loop run eagerly and for kiln's compiled step.

- ``mnist/main.py``: a CNN with Dropout, Adadelta, StepLR(gamma), log_softmax + nll_loss, ``reduction='sum'`` and
  ``argmax(dim=1, keepdim=True).eq(...).sum().item()`` in ``test()``, ``model.train()/eval()``, ``no_grad``, and the
  state_dict saved and loaded back.
- ``mnist_rnn/main.py``: an LSTM over the image's rows (``batch_first``), BatchNorm1d on its last output, Dropout2d.
- ``regression/main.py``: polynomial features by ``cat`` of powers, one Linear, ``fc.zero_grad()``, smooth_l1_loss,
  the hand-written update ``param.data.add_(-0.1 * param.grad)``, a ``loss.item()`` stopping criterion (which fires at
  the same batch in both), ``'{:+.2f}'.format(w)``.
- ``mnist_forward_forward/main.py``: Forward-Forward, a ``Layer(nn.Linear)`` that owns its Adam and overrides
  ``train``, local per-layer losses, ``.detach()`` between layers, ``overlay_y_on_x`` by index assignment,
  ``torch.tensor(allowed)[torch.randint(n, size=(1,))]``.

Dropout draws differ between the two libraries' generators, so the lockstep tests run the programs with ``p=0`` (in
training mode); one test trains the CNN with its dropout on. Random inputs (regression's batches) are kiln's draws,
replayed to torch. The trained models also export to ONNX with torch's outputs in onnxruntime. Where kiln still needs
a different idiom than PyTorch's the port says so in a comment starting ``kiln:``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import kiln
from oracles import libraries, require, require_torch

TIGHT = dict(rtol=1e-10, atol=1e-12)


_libraries = libraries


def _digits(count: int, offset: int = 0):
    """``count`` digits from ``offset``, normalised as the MNIST example's transform does (mean 0.1307, std 0.3081 of
    MNIST: the digits' own here), as float64 images ``(N, 1, 8, 8)`` and int64 labels."""
    x, y = _all_digits()
    return x[offset:offset + count].reshape(-1, 1, 8, 8), y[offset:offset + count]


@functools.lru_cache(maxsize=1)
def _all_digits():
    from kiln.runtime.data import load_digits

    x, y = load_digits()
    return (x.astype(np.float64) - x.mean()) / x.std(), y


def _loader(lib, x, y, batch_size):
    """``lib.utils.data.DataLoader`` over a ``TensorDataset`` of the arrays (in order: both libraries see the same
    batches)."""
    return lib.utils.data.DataLoader(lib.utils.data.TensorDataset(lib.tensor(x), lib.tensor(y)), batch_size=batch_size)


def _same_weights(torch, model, twin) -> None:
    """PyTorch's twin takes kiln's initial weights (a kiln state_dict loads into torch by name, as arrays)."""
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})


def _assert_same_state(model, twin) -> None:
    theirs = twin.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(np.asarray(value), theirs[name].detach().numpy(), **TIGHT, err_msg=name)


# --- mnist/main.py ----------------------------------------------------------------------------------------------------


def mnist_net(lib, nn, F, dropout=(0.25, 0.5)):
    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, 1)
            self.dropout1 = nn.Dropout(dropout[0])
            self.dropout2 = nn.Dropout(dropout[1])
            self.fc1 = nn.Linear(64, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = lib.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    return Net()


def mnist_train(F, model, device, train_loader, optimizer, epoch, log):
    """The example's ``train()`` (``log_interval`` 1, its prints appended to ``log``): the losses."""
    model.train()
    losses = []
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
            epoch, batch_idx * len(data), len(train_loader.dataset),
            100. * batch_idx / len(train_loader), loss.item()))
    return losses


def mnist_test(lib, F, model, device, test_loader, log):
    """The example's ``test()`` (its print appended to ``log``): the summed loss and the count of correct predictions."""
    model.eval()
    test_loss = 0
    correct = 0
    with lib.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()
    log.append('\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'.format(
        test_loss / len(test_loader.dataset), correct, len(test_loader.dataset),
        100. * correct / len(test_loader.dataset)))
    return test_loss, correct


def _mnist_main(lib, nn, F, model, epochs=2, dtype=np.float64, train_count=96, log=None):
    """The example's ``main()`` after the model is built: Adadelta(lr=1.0), StepLR(step_size=1, gamma=0.7), and per epoch
    train, test, ``scheduler.step()``; returns the train losses and the test results per epoch."""
    use_cuda = lib.cuda.is_available()
    use_mps = lib.backends.mps.is_available()
    if use_cuda:
        device = lib.device("cuda")
    elif use_mps:
        device = lib.device("mps")
    else:
        device = lib.device("cpu")
    model = model.to(device)
    optimizer = lib.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = lib.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    x, y = _digits(train_count)
    x_test, y_test = _digits(60, offset=1000)
    train_loader = _loader(lib, x.astype(dtype), y, 32)
    test_loader = _loader(lib, x_test.astype(dtype), y_test, 30)
    history, log = [], [] if log is None else log
    for epoch in range(1, epochs + 1):
        losses = mnist_train(F, model, device, train_loader, optimizer, epoch, log)
        history.append((losses, mnist_test(lib, F, model, device, test_loader, log)))
        scheduler.step()
    return history


def _mnist_twins(dropout):
    torch = require_torch()
    kiln.manual_seed(1)
    model = mnist_net(*_libraries("kiln"), dropout=dropout).double()
    twin = mnist_net(*_libraries("torch"), dropout=dropout).double()
    _same_weights(torch, model, twin)
    return torch, model, twin


def test_mnist_cnn_eager_loop_matches_torch_in_float64():
    # kiln's dropout masks are not torch's: lockstep runs the program with p=0 (still in train mode)
    torch, model, twin = _mnist_twins(dropout=(0.0, 0.0))
    log, torch_log = [], []
    ours, theirs = _mnist_main(*_libraries("kiln"), model, log=log), _mnist_main(*_libraries("torch"), twin, log=torch_log)
    assert log == torch_log and len(log) == 2 * (3 + 1)  # the printed progress, to its last digit
    for (losses, (test_loss, correct)), (torch_losses, (torch_test_loss, torch_correct)) in zip(ours, theirs):
        np.testing.assert_allclose(losses, torch_losses, rtol=1e-10)
        assert test_loss == pytest.approx(torch_test_loss, rel=1e-10) and correct == torch_correct
    _assert_same_state(model, twin)


def test_mnist_cnn_compiled_step_matches_torch_in_float64():
    torch, model, twin = _mnist_twins(dropout=(0.0, 0.0))
    optimizer = kiln.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = kiln.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    step = kiln.compile_train_step(model, kiln.nn.functional.nll_loss, optimizer)
    x, y = _digits(96)
    ours = []
    for _ in range(2):
        ours += [float(step(xb, yb)) for xb, yb in _loader(kiln, x, y, 32)]
        scheduler.step()
    theirs = sum((history[0] for history in _mnist_main(*_libraries("torch"), twin)), [])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    _assert_same_state(model, twin)
    x_test, _ = _digits(60, offset=1000)
    model.eval(), twin.eval()
    np.testing.assert_allclose(kiln.compile(model)(x_test), twin(torch.tensor(x_test)).detach().numpy(), **TIGHT)


def test_mnist_cnn_with_dropout_trains_and_its_saved_state_dict_reloads(tmp_path):
    kiln.manual_seed(2)
    import kiln.nn as nn
    import kiln.nn.functional as F

    model = mnist_net(kiln, nn, F)
    history = _mnist_main(kiln, nn, F, model, epochs=3, dtype=np.float32, train_count=480)
    assert history[-1][0][-1] < history[0][0][0] and history[-1][1][1] > 30  # loss falls; most of 60 held-out digits right
    kiln.save(model.state_dict(), tmp_path / "mnist_cnn.pt")
    reloaded = mnist_net(kiln, nn, F)
    reloaded.load_state_dict(kiln.load(tmp_path / "mnist_cnn.pt"))
    x_test, y_test = _digits(60, offset=1000)
    test_loader = _loader(kiln, x_test.astype(np.float32), y_test, 30)
    assert mnist_test(kiln, F, reloaded, kiln.device("cpu"), test_loader, []) == pytest.approx(history[-1][1], rel=1e-6)


# --- mnist_rnn/main.py ------------------------------------------------------------------------------------------------


def mnist_rnn_net(lib, nn, F, dropout=(0.25, 0.5)):
    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.rnn = nn.LSTM(input_size=8, hidden_size=16, batch_first=True)
            self.batchnorm = nn.BatchNorm1d(16)
            self.dropout1 = nn.Dropout2d(dropout[0])
            self.dropout2 = nn.Dropout2d(dropout[1])
            self.fc1 = nn.Linear(16, 12)
            self.fc2 = nn.Linear(12, 10)

        def forward(self, input):
            # (batch, 1, 8, 8) -> (batch, 8 rows, 8 pixels), as the RNN wants with batch_first=True
            input = input.reshape(-1, 8, 8)
            output, hidden = self.rnn(input)
            output = output[:, -1, :]  # the last step's output
            output = self.batchnorm(output)
            output = self.dropout1(output)
            output = self.fc1(output)
            output = F.relu(output)
            output = self.dropout2(output)
            output = self.fc2(output)
            output = F.log_softmax(output, dim=1)
            return output

    return Net()


def _rnn_twins():
    torch = require_torch()
    kiln.manual_seed(3)
    model = mnist_rnn_net(*_libraries("kiln"), dropout=(0.0, 0.0)).double()
    twin = mnist_rnn_net(*_libraries("torch"), dropout=(0.0, 0.0)).double()
    _same_weights(torch, model, twin)
    return torch, model, twin


def _rnn_optimizer(lib, model):
    optimizer = lib.optim.Adadelta(model.parameters(), lr=0.1)
    return optimizer, lib.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)


def test_mnist_rnn_eager_loop_matches_torch_in_float64():
    torch, model, twin = _rnn_twins()
    x, y = _digits(64)
    x_test, y_test = _digits(40, offset=1200)
    for lib, net in ((kiln, model), (torch, twin)):
        F = _libraries("kiln" if lib is kiln else "torch")[2]
        optimizer, scheduler = _rnn_optimizer(lib, net)
        net.results, net.log = [], []
        for epoch in range(1, 3):
            losses = mnist_train(F, net, lib.device("cpu"), _loader(lib, x, y, 16), optimizer, epoch, net.log)
            net.results.append((losses, mnist_test(lib, F, net, lib.device("cpu"), _loader(lib, x_test, y_test, 20), net.log)))
            scheduler.step()
    assert model.log == twin.log
    for (losses, (test_loss, correct)), (torch_losses, (torch_test_loss, torch_correct)) in zip(model.results, twin.results):
        np.testing.assert_allclose(losses, torch_losses, rtol=1e-10)
        assert test_loss == pytest.approx(torch_test_loss, rel=1e-10) and correct == torch_correct
    _assert_same_state(model, twin)  # the LSTM's weights and BatchNorm1d's running statistics


def test_mnist_rnn_compiled_step_matches_torch_in_float64():
    torch, model, twin = _rnn_twins()
    optimizer, scheduler = _rnn_optimizer(kiln, model)
    torch_optimizer, torch_scheduler = _rnn_optimizer(torch, twin)
    step = kiln.compile_train_step(model, kiln.nn.functional.nll_loss, optimizer)
    x, y = _digits(64)
    for epoch in range(2):
        for xb, yb in _loader(kiln, x, y, 16):
            loss = float(step(xb, yb))
            torch_optimizer.zero_grad()
            expected = torch.nn.functional.nll_loss(twin(torch.tensor(np.asarray(xb))), torch.tensor(np.asarray(yb)))
            expected.backward()
            torch_optimizer.step()
            assert loss == pytest.approx(expected.item(), rel=1e-10)
        scheduler.step(), torch_scheduler.step()
    _assert_same_state(model, twin)
    model.eval(), twin.eval()
    np.testing.assert_allclose(kiln.compile(model)(x[:10]), twin(torch.tensor(x[:10])).detach().numpy(), **TIGHT)


# --- regression/main.py -----------------------------------------------------------------------------------------------

POLY_DEGREE = 4


def regression_main(lib, F, fc, W_target, b_target, randn, max_batches=2000):
    """The example's script: fit ``fc`` to a degree-4 polynomial on fresh random batches until the loss is below 1e-3;
    returns the losses, the batch count and the two printed polynomials."""

    def make_features(x):
        """Builds features i.e. a matrix with columns [x, x^2, x^3, x^4]."""
        x = x.unsqueeze(1)
        return lib.cat([x ** i for i in range(1, POLY_DEGREE + 1)], 1)

    def f(x):
        return x.mm(W_target) + b_target.item()

    def poly_desc(W, b):
        result = 'y = '
        for i, w in enumerate(W):
            result += '{:+.2f} x^{} '.format(w, i + 1)
        result += '{:+.2f}'.format(b[0])
        return result

    def get_batch(batch_size=32):
        random = randn(batch_size)
        x = make_features(random)
        y = f(x)
        return x, y

    losses = []
    for batch_idx in range(1, max_batches + 1):
        batch_x, batch_y = get_batch()
        fc.zero_grad()
        output = F.smooth_l1_loss(fc(batch_x), batch_y)
        loss = output.item()
        losses.append(loss)
        output.backward()
        for param in fc.parameters():
            param.data.add_(-0.1 * param.grad)
        if loss < 1e-3:
            break
    return losses, batch_idx, poly_desc(fc.weight.view(-1), fc.bias), poly_desc(W_target.view(-1), b_target)


def _replayed(torch, draws):
    """PyTorch's ``randn`` for the twin: kiln's draws, in order (the two generators differ)."""
    replay = iter(draws)
    return lambda size: torch.tensor(np.asarray(next(replay)))


def _recorded(draws):
    def randn(size):
        draws.append(kiln.randn(size, dtype=kiln.float64))
        return draws[-1]

    return randn


def _regression_twins():
    torch = require_torch()
    kiln.manual_seed(9)  # a polynomial the script fits in ~200 batches
    W_target = kiln.randn(POLY_DEGREE, 1, dtype=kiln.float64) * 5
    b_target = kiln.randn(1, dtype=kiln.float64) * 5
    fc = kiln.nn.Linear(W_target.size(0), 1).double()
    twin = torch.nn.Linear(POLY_DEGREE, 1).double()
    _same_weights(torch, fc, twin)
    return torch, (W_target, b_target), (torch.tensor(np.asarray(W_target)), torch.tensor(np.asarray(b_target))), fc, twin


def test_regression_eager_script_matches_torch_in_float64():
    torch, targets, torch_targets, fc, twin = _regression_twins()
    draws = []
    losses, batches, learned, actual = regression_main(kiln, kiln.nn.functional, fc, *targets, _recorded(draws))
    torch_losses, torch_batches, torch_learned, torch_actual = regression_main(
        torch, torch.nn.functional, twin, *torch_targets, _replayed(torch, draws))
    assert batches == torch_batches < 2000 and losses[-1] < 1e-3  # the stopping criterion fires at the same batch
    # the last losses are 1e4 times the first ones' scale below it: residuals of near-cancelling terms, so an absolute
    # tolerance of 1e-12 of the first loss
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-9, atol=1e-11)
    _assert_same_state(fc, twin)
    assert (learned, actual) == (torch_learned, torch_actual)
    assert learned.startswith("y = ") and learned.count("x^") == 4
    for module, lib, (x, y) in ((fc, kiln, draws[:2]), (twin, torch, [torch.tensor(np.asarray(d)) for d in draws[:2]])):
        lib.nn.functional.smooth_l1_loss(module(x.unsqueeze(1) ** lib.arange(1, 5)), y.unsqueeze(1)).backward()
        module.weight.grad.data.zero_()  # the older examples' per-parameter zeroing; the bias keeps accumulating
        lib.nn.functional.smooth_l1_loss(module(y.unsqueeze(1) ** lib.arange(1, 5)), x.unsqueeze(1)).backward()
    np.testing.assert_allclose(fc.weight.grad, twin.weight.grad.numpy(), **TIGHT)
    np.testing.assert_allclose(fc.bias.grad, twin.bias.grad.numpy(), **TIGHT)


def test_regression_compiled_step_matches_torch_in_float64():
    torch, targets, _, fc, twin = _regression_twins()
    step = kiln.compile_train_step(fc, kiln.nn.functional.smooth_l1_loss, kiln.optim.SGD(fc.parameters(), lr=0.1))
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    W_target, b_target = (np.asarray(t) for t in targets)
    for batch_idx in range(1, 2001):
        x = np.asarray(kiln.randn(32, dtype=kiln.float64))
        x = np.stack([x ** i for i in range(1, POLY_DEGREE + 1)], 1)
        y = x @ W_target + b_target.item()
        loss = float(step(x, y))
        torch_optimizer.zero_grad()
        expected = torch.nn.functional.smooth_l1_loss(twin(torch.tensor(x)), torch.tensor(y))
        expected.backward()
        torch_optimizer.step()
        assert loss == pytest.approx(expected.item(), rel=1e-9, abs=1e-11)
        if loss < 1e-3:
            break
    assert loss < 1e-3 and batch_idx < 2000, batch_idx
    _assert_same_state(fc, twin)


# --- mnist_forward_forward/main.py -------------------------------------------------------------------------------------


def forward_forward(lib, nn, args, device=None):
    """The example's program: ``get_y_neg``, ``overlay_y_on_x``, ``Net`` and ``Layer`` (``args`` as its argparse's)."""

    def get_y_neg(y):
        y_neg = y.clone()
        for idx, y_samp in enumerate(y):
            allowed_indices = list(range(10))
            allowed_indices.remove(y_samp.item())
            y_neg[idx] = lib.tensor(allowed_indices)[lib.randint(len(allowed_indices), size=(1,))].item()
        return y_neg.to(device)

    def overlay_y_on_x(x, y, classes=10):
        x_ = x.clone()
        x_[:, :classes] *= 0.0
        x_[range(x.shape[0]), y] = x.max()
        return x_

    class Net(nn.Module):
        def __init__(self, dims):
            super().__init__()
            self.layers = []
            for d in range(len(dims) - 1):
                self.layers = self.layers + [Layer(dims[d], dims[d + 1]).to(device)]

        def predict(self, x):
            goodness_per_label = []
            for label in range(10):
                h = overlay_y_on_x(x, label)
                goodness = []
                for layer in self.layers:
                    h = layer(h)
                    goodness = goodness + [h.pow(2).mean(1)]
                goodness_per_label += [sum(goodness).unsqueeze(1)]
            goodness_per_label = lib.cat(goodness_per_label, 1)
            return goodness_per_label.argmax(1)

        def train(self, x_pos, x_neg):
            h_pos, h_neg = x_pos, x_neg
            for i, layer in enumerate(self.layers):
                h_pos, h_neg = layer.train(h_pos, h_neg)

    class Layer(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            super().__init__(in_features, out_features, bias, device, dtype)
            self.relu = nn.ReLU()
            self.opt = lib.optim.Adam(self.parameters(), lr=args.lr)
            self.threshold = args.threshold
            self.num_epochs = args.epochs
            self.losses = []

        def forward(self, x):
            x_direction = x / (x.norm(2, 1, keepdim=True) + 1e-4)
            return self.relu(lib.mm(x_direction, self.weight.T) + self.bias.unsqueeze(0))

        def train(self, x_pos, x_neg):
            for i in range(self.num_epochs):
                g_pos = self.forward(x_pos).pow(2).mean(1)
                g_neg = self.forward(x_neg).pow(2).mean(1)
                loss = lib.log1p(
                    lib.exp(
                        lib.cat([-g_pos + self.threshold, g_neg - self.threshold])
                    )
                ).mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.losses.append(loss.item())
            return self.forward(x_pos).detach(), self.forward(x_neg).detach()

    return Net, overlay_y_on_x, get_y_neg


class _Args:
    lr, threshold, epochs = 0.03, 2.0, 6


def _forward_forward_twins(dims=(64, 24, 24)):
    """kiln's and torch's ``Net(dims)`` with the same float64 weights, and their program functions."""
    torch = require_torch()
    kiln.manual_seed(5)
    Net, overlay, get_y_neg = forward_forward(kiln, kiln.nn, _Args)
    TorchNet, torch_overlay, _ = forward_forward(torch, torch.nn, _Args)
    net, twin = Net(list(dims)), TorchNet(list(dims))
    for layer, torch_layer in zip(net.layers, twin.layers):
        layer.double(), torch_layer.double()  # in place: each layer's Adam keeps its parameters
        _same_weights(torch, layer, torch_layer)
    return torch, (net, overlay, get_y_neg), (twin, torch_overlay)


def test_forward_forward_eager_program_matches_torch_in_float64():
    torch, (net, overlay, get_y_neg), (twin, torch_overlay) = _forward_forward_twins()
    x, y = _digits(80)
    x, y = x.reshape(len(x), -1), kiln.tensor(y)
    y_neg = get_y_neg(y)
    assert (np.asarray(y_neg) != np.asarray(y)).all() and ((0 <= np.asarray(y_neg)) & (np.asarray(y_neg) < 10)).all()
    x = kiln.tensor(x)
    net.train(overlay(x, y), overlay(x, y_neg))
    tx, ty, ty_neg = (torch.tensor(np.asarray(a)) for a in (x, y, y_neg))
    twin.train(torch_overlay(tx, ty), torch_overlay(tx, ty_neg))
    for layer, torch_layer in zip(net.layers, twin.layers):
        np.testing.assert_allclose(layer.losses, torch_layer.losses, rtol=1e-10)
        _assert_same_state(layer, torch_layer)
    error = 1.0 - net.predict(x).eq(y).float().mean().item()
    assert error == pytest.approx(1.0 - twin.predict(tx).eq(ty).float().mean().item(), abs=1e-12) and error < 0.9
    # predict compiles as written (its overlays index the batch by range(x.shape[0]): static shapes)
    np.testing.assert_array_equal(kiln.compile(net.predict, batch_dim=None)(np.asarray(x)), twin.predict(tx).numpy())


def test_forward_forward_layer_steps_compile_and_match_torch_in_float64():
    """Each layer's local loss as a compiled step: the layer's own forward twice (positive and negative data) and its
    own Adam; the detached outputs feed the next layer's step, as the program's ``.detach()`` does."""
    torch, (net, overlay, _), (twin, torch_overlay) = _forward_forward_twins()
    x, y = _digits(80)
    x = x.reshape(len(x), -1)
    y_neg = (y + 1 + np.arange(len(y)) % 9) % 10
    h_pos, h_neg = (np.asarray(overlay(kiln.tensor(x), kiln.tensor(labels))) for labels in (y, y_neg))
    for layer in net.layers:
        # kiln: the margins are a cat along the batch dim, which a symbolic dim cannot be (N + N): static shapes
        step = kiln.compile_train_step(_Goodness(layer), _forward_forward_loss, layer.opt, batch_dim=None)
        layer.losses = [float(step(h_pos, h_neg, np.zeros(len(h_pos)))) for _ in range(_Args.epochs)]
        h_pos, h_neg = (np.asarray(layer(kiln.tensor(h)).detach()) for h in (h_pos, h_neg))
    tx = torch.tensor(x)
    twin.train(torch_overlay(tx, torch.tensor(y)), torch_overlay(tx, torch.tensor(y_neg)))
    for layer, torch_layer in zip(net.layers, twin.layers):
        np.testing.assert_allclose(layer.losses, torch_layer.losses, rtol=1e-10)
        _assert_same_state(layer, torch_layer)


class _Goodness(kiln.nn.Module):
    """A Forward-Forward layer's two goodness margins, ``[threshold - g_pos, g_neg - threshold]``, from its own forward."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x_pos, x_neg):
        g_pos = self.layer(x_pos).pow(2).mean(1)
        g_neg = self.layer(x_neg).pow(2).mean(1)
        return kiln.cat([-g_pos + self.layer.threshold, g_neg - self.layer.threshold])


def _forward_forward_loss(margins, _):
    return kiln.log1p(kiln.exp(margins)).mean()


# --- deployment: the ported models in onnxruntime ---------------------------------------------------------------------


@pytest.mark.parametrize(("build", "dtype"), [(mnist_net, np.float32), (mnist_rnn_net, np.float64)], ids=["mnist-cnn", "mnist-rnn"])
def test_the_ported_models_export_to_onnx_with_torchs_outputs(build, dtype, tmp_path):
    """In eval mode (BatchNorm1d's running statistics moved by a training-mode forward first), exported with
    ``kiln.export_onnx`` and run by onnxruntime, the models give torch's log-probabilities: the LSTM in float64, the CNN
    in float32 (onnxruntime's Conv has no float64 kernel)."""
    torch, ort = require_torch(), require("onnxruntime")
    kiln.manual_seed(6)
    model = build(*_libraries("kiln")).to(dtype)
    twin = build(*_libraries("torch")).to(torch.float64 if dtype == np.float64 else torch.float32)
    _same_weights(torch, model, twin)
    x = _digits(12, offset=600)[0].astype(dtype)
    with kiln.no_grad(), torch.no_grad():
        model.train()(kiln.tensor(x)), twin.train()(torch.tensor(x))  # dropout aside, the running statistics move alike
    model.eval(), twin.eval()
    path = str(tmp_path / "model.onnx")
    kiln.export_onnx(model, [kiln.TensorSpec(x.shape, np.dtype(dtype).name)], path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        expected = twin(torch.tensor(x)).numpy()
    tolerance = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(output, expected, **tolerance)
