"""Programs for ``test_porting_probes_style_adversarial.py``, each written once against torch-style names (``torch`` is
``torch`` or ``kiln``): a small MNIST-like classifier, the FGSM tutorial's attack, PGD as the adversarial-training
repositories write it (Madry's ``LinfPGDAttack``, "Fast is better than free"'s ``attack_pgd``, TRADES' ``trades_loss``
and ``_pgd_whitebox``), Grad-CAM, integrated gradients, SmoothGrad and DeepDream. Random starts are given as arrays
(``noise``) so that both libraries see the same draws. The probes' data (``digits``, ``batch``, ``style_images``)
closes the file."""

from __future__ import annotations

import functools

import numpy as np

SIDE, CLASSES, BATCH = 10, 10, 8


def classifier(torch, nn, F, batch_norm=True):
    """The FGSM tutorial's LeNet, narrowed (``conv1``, ``conv2``, ``fc1``, ``fc2``, ``log_softmax``), with a
    ``BatchNorm2d`` after ``conv1`` so that ``model.eval()`` and ``model.train()`` inside an attack matter."""

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.bn1 = nn.BatchNorm2d(4) if batch_norm else nn.Identity()
            self.conv2 = nn.Conv2d(4, 6, 3)
            self.fc1 = nn.Linear(24, 12)
            self.fc2 = nn.Linear(12, CLASSES)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))
            x = F.relu(self.conv2(x))
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    return Net()


# --- the FGSM tutorial ---------------------------------------------------------------------------------------------


def fgsm_attack(torch, image, epsilon, data_grad):
    sign_data_grad = data_grad.sign()
    perturbed_image = image + epsilon * sign_data_grad
    perturbed_image = torch.clamp(perturbed_image, 0, 1)
    return perturbed_image


def denorm(torch, batch, mean=[0.1307], std=[0.3081]):
    if isinstance(mean, list):
        mean = torch.tensor(mean)
    if isinstance(std, list):
        std = torch.tensor(std)
    return batch * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)


def normalize(torch, batch, mean=(0.1307,), std=(0.3081,)):
    """``transforms.Normalize((0.1307,), (0.3081,))`` on a batch."""
    return (batch - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def fgsm_test(torch, F, model, test_loader, epsilon):
    """The tutorial's ``test``: one image at a time, skipped when already misclassified, FGSM on the denormalised
    image, renormalised, and the examples kept as NumPy arrays."""
    correct = 0
    adv_examples = []
    for data, target in test_loader:
        data.requires_grad = True
        output = model(data)
        init_pred = output.max(1, keepdim=True)[1]
        if init_pred.item() != target.item():
            continue
        loss = F.nll_loss(output, target)
        model.zero_grad()
        loss.backward()
        data_grad = data.grad.data
        data_denorm = denorm(torch, data)
        perturbed_data = fgsm_attack(torch, data_denorm, epsilon, data_grad)
        perturbed_data_normalized = normalize(torch, perturbed_data)
        output = model(perturbed_data_normalized)
        final_pred = output.max(1, keepdim=True)[1]
        if final_pred.item() == target.item():
            correct += 1
            if epsilon == 0 and len(adv_examples) < 5:
                adv_ex = perturbed_data.squeeze().detach().cpu().numpy()
                adv_examples.append((init_pred.item(), final_pred.item(), adv_ex))
        else:
            if len(adv_examples) < 5:
                adv_ex = perturbed_data.squeeze().detach().cpu().numpy()
                adv_examples.append((init_pred.item(), final_pred.item(), adv_ex))
    final_acc = correct / float(len(test_loader))
    return final_acc, adv_examples


# --- PGD: Madry et al.'s LinfPGDAttack (as the PyTorch adversarial-training repositories write it) -----------------


def linf_pgd_attack(torch, F, noise=None, epsilon=0.3, k=4, alpha=0.1):
    """``LinfPGDAttack`` of the CIFAR/MNIST adversarial-training repositories: a random start by
    ``torch.zeros_like(x).uniform_(-epsilon, epsilon)`` (``noise``, when given, is that draw), ``k`` steps of
    ``torch.autograd.grad`` under ``torch.enable_grad()``, projection by ``torch.min(torch.max(...))``, ``clamp``."""

    class LinfPGDAttack(object):
        def __init__(self, model):
            self.model = model

        def perturb(self, x_natural, y):
            x = x_natural.detach()
            start = torch.zeros_like(x).uniform_(-epsilon, epsilon) if noise is None else noise
            x = x + start
            for i in range(k):
                x.requires_grad_()
                with torch.enable_grad():
                    logits = self.model(x)
                    loss = F.cross_entropy(logits, y)
                grad = torch.autograd.grad(loss, [x])[0]
                x = x.detach() + alpha * torch.sign(grad.detach())
                x = torch.min(torch.max(x, x_natural - epsilon), x_natural + epsilon)
                x = torch.clamp(x, 0, 1)
            return x

    return LinfPGDAttack


def madry_train_step(torch, nn, model, adversary, optimizer, inputs, targets):
    """One batch of the repositories' ``train(epoch)``: the attack with the model in eval mode (as
    ``adversary.perturb`` is called under ``net.eval()`` in the TRADES-style variants), then the adversarial loss in
    train mode; returns the loss and the number of adversarial examples classified right."""
    criterion = nn.CrossEntropyLoss()
    model.eval()
    adv = adversary.perturb(inputs, targets)
    model.train()
    optimizer.zero_grad()
    adv_outputs = model(adv)
    loss = criterion(adv_outputs, targets)
    loss.backward()
    optimizer.step()
    _, predicted = adv_outputs.max(1)
    return loss, predicted.eq(targets).sum()


# --- TRADES (Zhang et al., trades.py) -----------------------------------------------------------------------------


def squared_l2_norm(x):
    flattened = x.view(x.unsqueeze(0).shape[0], -1)
    return (flattened ** 2).sum(1)


def l2_norm(x):
    return squared_l2_norm(x).sqrt()


def trades_loss(torch, nn, F, model, x_natural, y, optimizer, noise, step_size=0.05, epsilon=0.3, perturb_steps=3,
                beta=6.0, distance='l_inf'):
    """trades.py's ``trades_loss`` as written (``nn.KLDivLoss(size_average=False)``, ``Variable``,
    ``torch.enable_grad()``, the l_2 branch's ``optim.SGD([delta])`` with ``delta.grad`` renormed in place and
    ``delta.data.renorm_``); ``noise`` is its ``torch.randn(x_natural.shape).cuda().detach()`` draw."""
    Variable, optim = torch.autograd.Variable, torch.optim  # from torch.autograd import Variable; import torch.optim
    # define KL-loss
    criterion_kl = nn.KLDivLoss(size_average=False)
    model.eval()
    batch_size = len(x_natural)
    # generate adversarial example
    x_adv = x_natural.detach() + 0.001 * noise.detach()
    if distance == 'l_inf':
        for _ in range(perturb_steps):
            x_adv.requires_grad_()
            with torch.enable_grad():
                loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                       F.softmax(model(x_natural), dim=1))
            grad = torch.autograd.grad(loss_kl, [x_adv])[0]
            x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
            x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
            x_adv = torch.clamp(x_adv, 0.0, 1.0)
    elif distance == 'l_2':
        delta = 0.001 * noise.detach()
        delta = Variable(delta.data, requires_grad=True)

        # Setup optimizers
        optimizer_delta = optim.SGD([delta], lr=epsilon / perturb_steps * 2)

        for _ in range(perturb_steps):
            adv = x_natural + delta

            # optimize
            optimizer_delta.zero_grad()
            with torch.enable_grad():
                loss = (-1) * criterion_kl(F.log_softmax(model(adv), dim=1),
                                           F.softmax(model(x_natural), dim=1))
            loss.backward()
            # renorming gradient
            grad_norms = delta.grad.view(batch_size, -1).norm(p=2, dim=1)
            delta.grad.div_(grad_norms.view(-1, 1, 1, 1))
            # avoid nan or inf if gradient is 0
            if (grad_norms == 0).any():
                delta.grad[grad_norms == 0] = torch.randn_like(delta.grad[grad_norms == 0])
            optimizer_delta.step()

            # projection
            delta.data.add_(x_natural)
            delta.data.clamp_(0, 1).sub_(x_natural)
            delta.data.renorm_(p=2, dim=0, maxnorm=epsilon)
        x_adv = Variable(x_natural + delta, requires_grad=False)
    else:
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()

    x_adv = Variable(torch.clamp(x_adv, 0.0, 1.0), requires_grad=False)
    # zero gradient
    optimizer.zero_grad()
    # calculate robust loss
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                                    F.softmax(model(x_natural), dim=1))
    loss = loss_natural + beta * loss_robust
    return loss


def pgd_whitebox(torch, nn, optim, model, X, y, random_noise=None, epsilon=0.3, num_steps=3, step_size=0.1):
    """pgd_attack_cifar10.py's ``_pgd_whitebox``: ``Variable(X.data, requires_grad=True)`` rebuilt each step, a fresh
    ``optim.SGD([X_pgd])`` only for its ``zero_grad``, ``X_pgd.grad.data.sign()``; ``random_noise`` is its
    ``torch.FloatTensor(*X_pgd.shape).uniform_(-epsilon, epsilon)`` draw (None: no random start)."""
    Variable = torch.autograd.Variable  # from torch.autograd import Variable
    out = model(X)
    err = (out.data.max(1)[1] != y.data).float().sum()
    X_pgd = Variable(X.data, requires_grad=True)
    if random_noise is not None:
        X_pgd = Variable(X_pgd.data + random_noise, requires_grad=True)

    for _ in range(num_steps):
        opt = optim.SGD([X_pgd], lr=1e-3)
        opt.zero_grad()

        with torch.enable_grad():
            loss = nn.CrossEntropyLoss()(model(X_pgd), y)
        loss.backward()
        eta = step_size * X_pgd.grad.data.sign()
        X_pgd = Variable(X_pgd.data + eta, requires_grad=True)
        eta = torch.clamp(X_pgd.data - X.data, -epsilon, epsilon)
        X_pgd = Variable(X.data + eta, requires_grad=True)
        X_pgd = Variable(torch.clamp(X_pgd, 0, 1.0), requires_grad=True)
    err_pgd = (model(X_pgd).data.max(1)[1] != y.data).float().sum()
    return err, err_pgd, X_pgd


# --- "Fast is better than free" (Wong et al., utils.py and train_fgsm.py) ----------------------------------------


def uniform_start(delta, i, epsilon, start=None):
    """``delta[:, i, :, :].uniform_(-epsilon[i][0][0].item(), epsilon[i][0][0].item())``; with ``start`` (a draw in
    [-1, 1) of delta's shape) that draw scaled instead, so both libraries start alike."""
    if start is None:
        delta[:, i, :, :].uniform_(-epsilon[i][0][0].item(), epsilon[i][0][0].item())
    else:
        delta[:, i, :, :].copy_(start[:, i, :, :] * epsilon[i][0][0].item())


def clamp(torch, X, lower_limit, upper_limit):
    return torch.max(torch.min(X, upper_limit), lower_limit)


def attack_pgd(torch, F, model, X, y, epsilon, alpha, attack_iters, restarts, starts, lower_limit, upper_limit):
    """utils.py's ``attack_pgd`` (amp's ``scale_loss`` dropped): per-channel random starts by
    ``delta[:, i, :, :].uniform_(...)`` (``uniform_start``), the steps only on the images
    still classified right (``torch.where(...)`` of one argument, ``delta.data[index[0], :, :, :] = d``), the best
    restart kept by ``max_delta[all_loss >= max_loss] = ...``."""
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    for zz in range(restarts):
        delta = torch.zeros_like(X)
        for i in range(len(epsilon)):
            uniform_start(delta, i, epsilon, starts[zz])
        delta.data = clamp(torch, delta, lower_limit - X, upper_limit - X)
        delta.requires_grad = True
        for _ in range(attack_iters):
            output = model(X + delta)
            index = torch.where(output.max(1)[1] == y)
            if len(index[0]) == 0:
                break
            loss = F.cross_entropy(output, y)
            loss.backward()
            grad = delta.grad.detach()
            d = delta[index[0], :, :, :]
            g = grad[index[0], :, :, :]
            d = clamp(torch, d + alpha * torch.sign(g), -epsilon, epsilon)
            d = clamp(torch, d, lower_limit - X[index[0], :, :, :], upper_limit - X[index[0], :, :, :])
            delta.data[index[0], :, :, :] = d
            delta.grad.zero_()
        all_loss = F.cross_entropy(model(X + delta), y, reduction='none').detach()
        max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
        max_loss = torch.max(max_loss, all_loss)
    return max_delta


def fast_fgsm_train_step(torch, F, model, opt, criterion, X, y, start, epsilon, alpha, lower_limit, upper_limit):
    """train_fgsm.py's loop body with ``--delta-init random``: ``delta.data = clamp(...)``,
    ``delta.data[:X.size(0)] = clamp(...)``, ``delta = delta.detach()``, then the step on ``X + delta``."""
    delta = torch.zeros_like(X)
    for i in range(len(epsilon)):
        uniform_start(delta, i, epsilon, start)
    delta.data = clamp(torch, delta, lower_limit - X, upper_limit - X)
    delta.requires_grad = True
    output = model(X + delta[:X.size(0)])
    loss = F.cross_entropy(output, y)
    loss.backward()
    grad = delta.grad.detach()
    delta.data = clamp(torch, delta + alpha * torch.sign(grad), -epsilon, epsilon)
    delta.data[:X.size(0)] = clamp(torch, delta[:X.size(0)], lower_limit - X, upper_limit - X)
    delta = delta.detach()
    output = model(X + delta[:X.size(0)])
    loss = criterion(output, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


# --- saliency: Grad-CAM, integrated gradients, SmoothGrad, DeepDream ------------------------------------------------


def grad_cam(torch, F):
    """Grad-CAM as the tutorials write it: the target layer's activations by ``register_forward_hook``, their
    gradient by ``register_full_backward_hook`` (``grad_output[0]``), the weights by the spatial mean of the gradient,
    ``F.relu`` of the weighted sum, ``F.interpolate`` (bilinear) to the input size, min-max normalised."""

    class GradCAM:
        def __init__(self, model, target_layer):
            self.model = model
            self.gradients = None
            self.activations = None
            self.handles = [target_layer.register_forward_hook(self.save_activation),
                            target_layer.register_full_backward_hook(self.save_gradient)]

        def save_activation(self, module, input, output):
            self.activations = output.detach()

        def save_gradient(self, module, grad_input, grad_output):
            self.gradients = grad_output[0].detach()

        def __call__(self, x, class_idx=None):
            self.model.eval()
            logits = self.model(x)
            if class_idx is None:
                class_idx = logits.argmax(dim=1)
            self.model.zero_grad()
            score = logits.gather(1, class_idx.view(-1, 1)).sum()
            score.backward()
            weights = self.gradients.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * self.activations).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[2:], mode='bilinear', align_corners=False)
            cam = cam - cam.amin(dim=(2, 3), keepdim=True)
            cam = cam / (cam.amax(dim=(2, 3), keepdim=True) + 1e-8)
            return cam, class_idx

        def remove(self):
            for handle in self.handles:
                handle.remove()

    return GradCAM


def grad_cam_tensor_hook(torch, F, model, layer, x, index):
    """jacobgil's pytorch-grad-cam way (``ActivationsAndGradients``): a forward hook that keeps the activation and
    calls ``output.register_hook`` to keep its gradient; the target by a one-hot vector
    (``one_hot[0][index] = 1``, ``torch.sum(one_hot * output)``), ``backward(retain_graph=True)``, the weights by
    ``np.mean(grads, axis=(2, 3))`` on ``.cpu().data.numpy()``, the CAM in NumPy."""
    import numpy as np
    activations, gradients = [], []

    def save_activation(module, input, output):
        activations.append(output.cpu().detach())

        def _store_grad(grad):
            gradients.insert(0, grad.cpu().detach())  # gradients arrive in reverse order
        output.register_hook(_store_grad)

    handle = layer.register_forward_hook(save_activation)
    output = model(x)
    one_hot = np.zeros((1, output.size()[-1]), dtype=np.float32)
    one_hot[0][index] = 1
    one_hot = torch.from_numpy(one_hot).requires_grad_(True)
    one_hot = torch.sum(one_hot * output)
    model.zero_grad()
    one_hot.backward(retain_graph=True)
    handle.remove()
    grads_val = gradients[-1].cpu().data.numpy()
    target = activations[-1].cpu().data.numpy()[0, :]
    weights = np.mean(grads_val, axis=(2, 3))[0, :]
    cam = np.zeros(target.shape[1:], dtype=np.float32)
    for i, w in enumerate(weights):
        cam += w * target[i, :, :]
    cam = np.maximum(cam, 0)
    cam = cam - np.min(cam)
    cam = cam / (np.max(cam) + 1e-12)
    return cam, one_hot


def integrated_gradients(torch, model, inputs, target, baseline=None, steps=8):
    """Integrated gradients batched (captum's Riemann trapezoid): ``torch.linspace`` alphas viewed to broadcast, the
    path as one batch, ``torch.autograd.grad`` of the target scores, averaged and scaled by ``inputs - baseline``;
    returns the attributions and the completeness gap ``F(x) - F(baseline) - sum(attributions)``."""
    if baseline is None:
        baseline = torch.zeros_like(inputs)
    alphas = torch.linspace(0, 1, steps + 1).view(-1, 1, 1, 1)
    path = baseline + alphas * (inputs - baseline)
    path.requires_grad_()
    scores = model(path)[:, target]
    grads = torch.autograd.grad(scores.sum(), path)[0]
    avg_grads = ((grads[:-1] + grads[1:]) / 2.0).mean(dim=0, keepdim=True)
    attributions = (inputs - baseline) * avg_grads
    with torch.no_grad():
        gap = scores[-1] - scores[0] - attributions.sum()
    return attributions, gap


def integrated_gradients_loop(torch, model, inputs, target, steps=8):
    """The IG paper's reference code: a Python list of scaled inputs, one ``backward`` each with
    ``x.grad`` read and the average by ``np.average``, times ``inputs - baseline`` in NumPy."""
    import numpy as np
    baseline = 0 * inputs
    scaled_inputs = [baseline + (float(i) / steps) * (inputs - baseline) for i in range(0, steps + 1)]
    grads = []
    for scaled in scaled_inputs:
        scaled = scaled.clone().detach().requires_grad_(True)
        output = model(scaled)
        model.zero_grad()
        output[0, target].backward()
        grads.append(scaled.grad.detach().cpu().numpy()[0])
    avg_grads = np.average(np.array(grads)[:-1], axis=0)
    return (inputs - baseline).detach().cpu().numpy()[0] * avg_grads


def smooth_grad(torch, model, x, target, noises, sigma=0.15, magnitude=True):
    """SmoothGrad: the gradient of the target score at ``x + noise`` (``noises``: the ``torch.randn_like(x) * sigma``
    draws, given), accumulated in a ``torch.zeros_like`` total (squared with ``magnitude``), divided by the count."""
    total_gradients = torch.zeros_like(x)
    for noise in noises:
        x_plus_noise = (x + noise * sigma).detach()
        x_plus_noise.requires_grad = True
        output = model(x_plus_noise)
        one_hot = torch.zeros_like(output)
        one_hot[:, target] = 1
        model.zero_grad()
        output.backward(gradient=one_hot)
        grad = x_plus_noise.grad.data
        total_gradients += grad * grad if magnitude else grad
    return total_gradients / len(noises)


def deep_dream(torch, model, layer, image, iterations=4, lr=0.05):
    """DeepDream's gradient ascent on a layer's activation norm (the activation kept by a forward hook), as the
    popular PyTorch ports write it: ``image.grad.data.zero_()``, ``loss = activation.norm()``, then
    ``image.data += lr * image.grad.data / image.grad.data.abs().mean()`` and ``clamp_`` on ``.data``."""
    activations = {}

    def hook(module, input, output):
        activations['target'] = output

    handle = layer.register_forward_hook(hook)
    image = image.clone().detach().requires_grad_(True)
    norms = []
    for _ in range(iterations):
        if image.grad is not None:
            image.grad.data.zero_()
        model(image)
        loss = activations['target'].norm()
        loss.backward()
        image.data += lr * image.grad.data / image.grad.data.abs().mean()
        image.data.clamp_(0, 1)
        norms.append(loss.item())
    handle.remove()
    return image.detach(), norms


# --- neural style transfer (the PyTorch tutorial's model building, with the variants its ports write) ---------------


def style_transfer(torch, nn, F):
    """The tutorial's ``ContentLoss``/``StyleLoss``/``Normalization`` and ``get_style_model_and_losses`` walking a
    VGG-like ``features`` by ``cnn.children()``, with the variants its ports write: max pooling replaced by
    ``nn.AvgPool2d`` (Gatys et al.'s choice), a total-variation term, ``style_weight`` per layer. Returns
    ``(get_style_model_and_losses, total_variation)``."""

    class ContentLoss(nn.Module):
        def __init__(self, target,):
            super(ContentLoss, self).__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super(StyleLoss, self).__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super(Normalization, self).__init__()
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

        def forward(self, img):
            return (img - self.mean) / self.std

    def get_style_model_and_losses(cnn, mean, std, style_img, content_img, content_layers=('conv_3',),
                                   style_layers=('conv_1', 'conv_2', 'conv_3', 'conv_4'), avg_pool=False):
        normalization = Normalization(mean, std)
        content_losses = []
        style_losses = []
        model = nn.Sequential(normalization)
        i = 0
        for layer in cnn.children():
            if isinstance(layer, nn.Conv2d):
                i += 1
                name = 'conv_{}'.format(i)
            elif isinstance(layer, nn.ReLU):
                name = 'relu_{}'.format(i)
                layer = nn.ReLU(inplace=False)
            elif isinstance(layer, nn.MaxPool2d):
                name = 'pool_{}'.format(i)
                if avg_pool:
                    layer = nn.AvgPool2d(kernel_size=layer.kernel_size, stride=layer.stride)
            else:
                raise RuntimeError('Unrecognized layer: {}'.format(layer.__class__.__name__))
            model.add_module(name, layer)
            if name in content_layers:
                target = model(content_img).detach()
                content_loss = ContentLoss(target)
                model.add_module("content_loss_{}".format(i), content_loss)
                content_losses.append(content_loss)
            if name in style_layers:
                target_feature = model(style_img).detach()
                style_loss = StyleLoss(target_feature)
                model.add_module("style_loss_{}".format(i), style_loss)
                style_losses.append(style_loss)
        for i in range(len(model) - 1, -1, -1):
            if isinstance(model[i], ContentLoss) or isinstance(model[i], StyleLoss):
                break
        model = model[:(i + 1)]
        return model, style_losses, content_losses

    def total_variation(img):
        return (torch.sum(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]))
                + torch.sum(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :])))

    return get_style_model_and_losses, total_variation


def vgg_like_features(nn):
    """A narrow VGG-like ``features`` (conv, ReLU(inplace=True), max pooling in VGG's order) for ``vgg19().features``."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(inplace=True), nn.MaxPool2d(2, 2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))


def style_step(torch, optimizer, model, input_img, style_losses, content_losses, total_variation,
               style_weight=1e4, content_weight=1.0, tv_weight=1e-3):
    """One step of the Adam variant: ``zero_grad``, the model run for its loss modules' side effects, the weighted
    sum (``+=`` over the modules' ``.loss``), ``backward``, ``step``, then ``input_img.data.clamp_(0, 1)``."""
    optimizer.zero_grad()
    model(input_img)
    style_score = 0
    content_score = 0
    for sl in style_losses:
        style_score += sl.loss
    for cl in content_losses:
        content_score += cl.loss
    loss = style_weight * style_score + content_weight * content_score + tv_weight * total_variation(input_img)
    loss.backward()
    optimizer.step()
    input_img.data.clamp_(0, 1)
    return loss


# --- the probes' data and the compiled/eager switch -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def digits():
    """The bundled 8x8 digits in [0, 1], padded to ``(N, 1, 10, 10)`` float64, and their labels."""
    from kiln.runtime.data import load_digits

    x, y = load_digits()
    pad = (SIDE - 8) // 2
    return np.pad(x.reshape(-1, 1, 8, 8).astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad))), y


def batch(torch, start, size=BATCH, normalized=False, dtype=np.float64, textured=False):
    """Digits ``start:start + size`` as ``torch`` tensors (``normalize``d, as the FGSM tutorial's loader, if asked).

    ``textured``: ``0.9 * digit + 0.1 * uniform noise`` (seeded by ``start``), still in [0, 1]. The digits' constant
    zero background makes max-pool windows whose entries tie in exact arithmetic; torch's convolution rounds some of
    them 1 ulp apart (with or without mkldnn), which routes the max-pool gradient to another element. Probes whose
    result follows that gradient's sign (FGSM, free adversarial training) take textured images, so no window ties.
    """
    x, y = digits()
    x = x[start:start + size]
    if textured:
        x = 0.9 * x + 0.1 * np.random.default_rng(start).uniform(size=x.shape)
    images = torch.tensor(x.astype(dtype))
    return (normalize(torch, images) if normalized else images), torch.tensor(y[start:start + size])


def style_images():
    """``(content, style, noise)``: a coloured digit, diagonal stripes, uniform noise; ``(1, 3, 12, 12)`` in [0, 1]."""
    x, _ = digits()
    grey = np.pad(x[300, 0], 1)
    content = grey * np.array([1.0, 0.7, 0.2]).reshape(3, 1, 1) + (1 - grey) * np.array([0.1, 0.3, 0.9]).reshape(3, 1, 1)
    i, j = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    style = 0.5 * (1 + np.stack([np.sin((i + j) / f) for f in (1.5, 2.5, 4.0)]))
    return content[None], style[None], np.random.default_rng(3).uniform(size=(1, 3, 12, 12))


def compiled(torch, fn, compile_it):
    """``kiln.compile(fn, fullgraph=True)`` when ``torch`` is kiln and ``compile_it``; else ``fn`` (torch's eager code)."""
    import kiln

    return kiln.compile(fn, fullgraph=True) if compile_it and torch is kiln else fn


def deep_dream_layers(torch, nn, network, at_layer, image, iterations=3, lr=0.05, compile_step=lambda step: step):
    """eriklindernoren/PyTorch-Deep-Dream's ``dream``: the net cut after the target layer by
    ``nn.Sequential(*layers[: (at_layer + 1)])``, ``Variable(Tensor(image), requires_grad=True)``, ``model.zero_grad()``,
    the output's norm, ``avg_grad`` by NumPy on ``image.grad.data.cpu().numpy()``, ``image.data += norm_lr *
    image.grad.data``, ``image.grad.data.zero_()``; ``compile_step`` wraps one step (``kiln.compile``)."""
    Variable = torch.autograd.Variable  # from torch.autograd import Variable
    layers = list(network.children())
    model = nn.Sequential(*layers[: (at_layer + 1)])
    image = Variable(image.clone(), requires_grad=True)

    def step():
        model.zero_grad()
        out = model(image)
        loss = out.norm()
        loss.backward()
        avg_grad = image.grad.data.abs().mean()
        norm_lr = lr / avg_grad
        image.data += norm_lr * image.grad.data
        image.grad.data.zero_()
        return loss

    run = compile_step(step)
    return [run().item() for _ in range(iterations)], image.cpu().data.numpy()
