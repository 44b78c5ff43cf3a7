"""Programs for ``test_porting_probes_attacks_saliency_more.py``, written once against torch-style names: guided
backpropagation as utkuozbulak's pytorch-cnn-visualizations writes it (module backward hooks that replace ReLU's
``grad_in``), input-gradient regularisation (double backpropagation), the Carlini-Wagner L2 attack as torchattacks
writes it, DeepFool as the LTS4 reference writes it, "Adversarial training for free!", Grad-CAM++ and Score-CAM,
AutoAttack's APGD. neural-style-pt and lucent are in ``neural_style_pt_lucent_program.py``."""

from __future__ import annotations

import copy

import numpy as np

SIDE, CLASSES = 10, 10


def features_classifier(torch, nn):
    """A VGG-style classifier with ``features`` (ReLU modules, as guided backprop needs) and ``classifier``."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU())
            self.classifier = nn.Sequential(nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, CLASSES))

        def forward(self, x):
            x = self.features(x)
            x = x.view(x.size(0), -1)
            return self.classifier(x)

    return Net()


# --- guided backpropagation (pytorch-cnn-visualizations, guided_backprop.py) ----------------------------------------


def guided_backprop(torch, nn):
    class GuidedBackprop():
        """Produces gradients generated with guided back propagation from the given image"""

        def __init__(self, model):
            self.model = model
            self.gradients = None
            self.forward_relu_outputs = []
            self.model.eval()
            self.update_relus()
            self.hook_layers()

        def hook_layers(self):
            def hook_function(module, grad_in, grad_out):
                self.gradients = grad_in[0]
            first_layer = list(self.model.features._modules.items())[0][1]
            first_layer.register_full_backward_hook(hook_function)

        def update_relus(self):
            """Updates relu activation functions so that 1- stores output in forward pass 2- imputes zero for
            gradient values that are less than zero"""
            def relu_backward_hook_function(module, grad_in, grad_out):
                corresponding_forward_output = self.forward_relu_outputs[-1]
                corresponding_forward_output[corresponding_forward_output > 0] = 1
                modified_grad_out = corresponding_forward_output * torch.clamp(grad_in[0], min=0.0)
                del self.forward_relu_outputs[-1]  # Remove last forward output
                return (modified_grad_out,)

            def relu_forward_hook_function(module, ten_in, ten_out):
                self.forward_relu_outputs.append(ten_out)

            for pos, module in self.model.features._modules.items():
                if isinstance(module, nn.ReLU):
                    module.register_full_backward_hook(relu_backward_hook_function)
                    module.register_forward_hook(relu_forward_hook_function)

        def generate_gradients(self, input_image, target_class):
            input_image = input_image.clone().requires_grad_(True)
            model_output = self.model(input_image)
            self.model.zero_grad()
            one_hot_output = torch.FloatTensor(1, model_output.size()[-1]).zero_()
            one_hot_output[0][target_class] = 1
            model_output.backward(gradient=one_hot_output.to(model_output.dtype))
            gradients_as_arr = self.gradients.data.numpy()[0]
            return gradients_as_arr

    return GuidedBackprop


def positive_and_negative_saliency(gradient):
    """misc_functions.py's ``get_positive_negative_saliency``."""
    pos_saliency = (np.maximum(0, gradient) / gradient.max())
    neg_saliency = (np.maximum(0, -gradient) / -gradient.min())
    return pos_saliency, neg_saliency


# --- input-gradient regularisation (double backpropagation) ----------------------------------------------------------


def input_gradient_regularized_step(torch, F, model, optimizer, x, y, lam=0.1):
    """Ross & Doshi-Velez's "right for the right reasons" / Drucker & LeCun's double backpropagation: the loss plus
    the squared norm of its gradient by the input, taken with ``create_graph=True`` and differentiated again."""
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    grad_x, = torch.autograd.grad(loss, x, create_graph=True)
    penalty = grad_x.pow(2).sum(dim=(1, 2, 3)).mean()
    total = loss + lam * penalty
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return loss.detach(), penalty.detach()


# --- Carlini-Wagner L2 (torchattacks' CW) ---------------------------------------------------------------------------


def cw_attack(torch, nn, model, images, labels, c=1.0, kappa=0.0, steps=6, lr=0.05):
    """torchattacks' ``CW.forward`` (untargeted): ``w`` in tanh space (``atanh`` by ``inverse_tanh_space``), Adam on
    ``[w]``, ``nn.MSELoss(reduction='none')`` summed per image, the f-function by ``torch.eye(...)[labels]``,
    ``torch.max((1 - one_hot) * outputs, dim=1)[0]`` and ``torch.masked_select``, the best adversarial images kept
    by a mask (``mask.view([-1] + [1] * (dim - 1))``), early stop on ``steps // 10``."""

    def tanh_space(x):
        return 1 / 2 * (torch.tanh(x) + 1)

    def inverse_tanh_space(x):
        return torch.atanh(torch.clamp(x * 2 - 1, min=-1, max=1))

    def f(outputs, labels):
        one_hot_labels = torch.eye(outputs.shape[1]).to(outputs.device)[labels]
        other = torch.max((1 - one_hot_labels) * outputs, dim=1)[0]
        real = torch.max(one_hot_labels * outputs, dim=1)[0]
        return torch.clamp((real - other), min=-kappa)

    images = images.clone().detach()
    labels = labels.clone().detach()
    w = inverse_tanh_space(images * 0.998 + 0.001).detach()
    w.requires_grad = True
    best_adv_images = images.clone().detach()
    best_L2 = 1e10 * torch.ones((len(images))).to(images.device)
    prev_cost = 1e10
    dim = len(images.shape)
    MSELoss = nn.MSELoss(reduction="none")
    Flatten = nn.Flatten()
    optimizer = torch.optim.Adam([w], lr=lr)
    costs = []
    for step in range(steps):
        adv_images = tanh_space(w)
        current_L2 = MSELoss(Flatten(adv_images), Flatten(images)).sum(dim=1)
        L2_loss = current_L2.sum()
        outputs = model(adv_images)
        f_loss = f(outputs, labels).sum()
        cost = L2_loss + c * f_loss
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        pre = torch.argmax(outputs.detach(), 1)
        condition = (pre != labels).float()
        mask = condition * (best_L2 > current_L2.detach())
        best_L2 = mask * current_L2.detach() + (1 - mask) * best_L2
        mask = mask.view([-1] + [1] * (dim - 1))
        best_adv_images = mask * adv_images.detach() + (1 - mask) * best_adv_images
        costs.append(cost.item())
        if step % max(steps // 10, 1) == 0:
            if cost.item() > prev_cost:
                return best_adv_images, costs
            prev_cost = cost.item()
    return best_adv_images, costs


# --- DeepFool (LTS4/DeepFool, python/deepfool.py) -------------------------------------------------------------------


def deepfool(torch, image, net, num_classes=4, overshoot=0.02, max_iter=5):
    """deepfool.py as written (CPU branch): NumPy bookkeeping, ``image[None, :, :, :]``, ``.data.cpu().numpy()``,
    ``x.grad.data.cpu().numpy().copy()``, ``x.grad.zero_()``, ``fs[0, I[k]].backward(retain_graph=True)``, the
    perturbation rebuilt by ``torch.from_numpy(r_tot)`` each step."""
    Variable = torch.autograd.Variable  # from torch.autograd import Variable
    f_image = net.forward(Variable(image[None, :, :, :], requires_grad=True)).data.cpu().numpy().flatten()
    I = (np.array(f_image)).flatten().argsort()[::-1]
    I = I[0:num_classes]
    label = I[0]

    input_shape = image.cpu().numpy().shape
    pert_image = copy.deepcopy(image)
    w = np.zeros(input_shape)
    r_tot = np.zeros(input_shape)

    loop_i = 0
    x = Variable(pert_image[None, :], requires_grad=True)
    fs = net.forward(x)
    k_i = label

    while k_i == label and loop_i < max_iter:
        pert = np.inf
        fs[0, I[0]].backward(retain_graph=True)
        grad_orig = x.grad.data.cpu().numpy().copy()

        for k in range(1, num_classes):
            x.grad.zero_()
            fs[0, I[k]].backward(retain_graph=True)
            cur_grad = x.grad.data.cpu().numpy().copy()

            # set new w_k and new f_k
            w_k = cur_grad - grad_orig
            f_k = (fs[0, I[k]] - fs[0, I[0]]).data.cpu().numpy()

            pert_k = abs(f_k) / np.linalg.norm(w_k.flatten())

            # determine which w_k to use
            if pert_k < pert:
                pert = pert_k
                w = w_k

        # compute r_i and r_tot
        # Added 1e-4 for numerical stability
        r_i = (pert + 1e-4) * w / np.linalg.norm(w)
        r_tot = np.float64(r_tot + r_i)

        pert_image = image + (1 + overshoot) * torch.from_numpy(r_tot).to(image.dtype)

        x = Variable(pert_image, requires_grad=True)
        fs = net.forward(x)
        k_i = np.argmax(fs.data.cpu().numpy().flatten())

        loop_i += 1

    r_tot = (1 + overshoot) * r_tot

    return r_tot, loop_i, label, k_i, pert_image


# --- "Adversarial training for free!" (Shafahi et al., mahyarnajibi/FreeAdversarialTraining, main_free.py) ----------


def free_adversarial_train(torch, nn, model, optimizer, batches, mean, std, epsilon=0.3, fgsm_step=0.1, n_repeats=3,
                           compile_replay=lambda replay: replay):
    """main_free.py's ``train``: one ``global_noise_data`` perturbation kept across minibatches, each minibatch
    replayed ``n_repeats`` times; ``Variable(global_noise_data[0:input.size(0)], requires_grad=True)``, the input
    clamped and normalised in place (``in1.clamp_(0, 1.0); in1.sub_(mean).div_(std)`` on a tensor that requires grad),
    one backward for both the weights and the noise, ``global_noise_data[0:input.size(0)] += pert.data``,
    ``global_noise_data.clamp_(-epsilon, epsilon)``; ``compile_replay`` wraps one replay (``kiln.compile``)."""
    Variable = torch.autograd.Variable  # from torch.autograd import Variable
    criterion = nn.CrossEntropyLoss()
    global_noise_data = torch.zeros([len(batches[0][0])] + list(batches[0][0].shape[1:]))
    mean = torch.Tensor(np.array(mean)[:, np.newaxis, np.newaxis]).expand(batches[0][0].shape[1:])
    std = torch.Tensor(np.array(std)[:, np.newaxis, np.newaxis]).expand(batches[0][0].shape[1:])

    def fgsm(gradz, step_size):
        return step_size * torch.sign(gradz)

    def replay(input, target):
        # Ascend on the global noise
        noise_batch = Variable(global_noise_data[0:input.size(0)], requires_grad=True)
        in1 = input + noise_batch
        in1.clamp_(0, 1.0)
        in1.sub_(mean).div_(std)
        output = model(in1)
        loss = criterion(output, target)

        # compute gradient and do SGD step
        optimizer.zero_grad()
        loss.backward()

        # Update the noise for the next iteration
        pert = fgsm(noise_batch.grad, fgsm_step)
        global_noise_data[0:input.size(0)] += pert.data
        global_noise_data.clamp_(-epsilon, epsilon)

        optimizer.step()
        return loss

    model.train()
    run = compile_replay(replay)
    losses = []
    for i, (input, target) in enumerate(batches):
        for j in range(n_repeats):
            losses.append(run(input, target).item())
    return losses, global_noise_data


# --- Grad-CAM++ (1Konny/gradcam_plus_plus-pytorch) and Score-CAM (haofanwang/Score-CAM) ------------------------------


def grad_cam_plus_plus(torch, F, model, target_layer, input, size):
    """gradcam.py's ``GradCAMpp.forward``: the old ``register_backward_hook`` keeping ``grad_output[0]``, the score
    ``logit[:, logit.max(1)[-1]].squeeze()``, alpha with ``torch.where(alpha_denom != 0.0, ...)``,
    ``F.relu(score.exp() * gradients)``, ``F.upsample`` (deprecated, bilinear), min-max by ``.data``."""
    self_gradients, self_activations = dict(), dict()

    def backward_hook(module, grad_input, grad_output):
        self_gradients['value'] = grad_output[0]

    def forward_hook(module, input, output):
        self_activations['value'] = output

    handles = [target_layer.register_forward_hook(forward_hook), target_layer.register_backward_hook(backward_hook)]
    b, c, h, w = input.size()
    logit = model(input)
    score = logit[:, logit.max(1)[-1]].squeeze()
    model.zero_grad()
    score.backward(retain_graph=False)
    gradients = self_gradients['value']  # dS/dA
    activations = self_activations['value']  # A
    b, k, u, v = gradients.size()
    alpha_num = gradients.pow(2)
    alpha_denom = gradients.pow(2).mul(2) + \
        activations.mul(gradients.pow(3)).view(b, k, u * v).sum(-1, keepdim=True).view(b, k, 1, 1)
    alpha_denom = torch.where(alpha_denom != 0.0, alpha_denom, torch.ones_like(alpha_denom))
    alpha = alpha_num.div(alpha_denom + 1e-7)
    positive_gradients = F.relu(score.exp() * gradients)  # ReLU(dY/dA) == ReLU(exp(S)*dS/dA))
    weights = (alpha * positive_gradients).view(b, k, u * v).sum(-1).view(b, k, 1, 1)
    saliency_map = (weights * activations).sum(1, keepdim=True)
    saliency_map = F.relu(saliency_map)
    saliency_map = F.upsample(saliency_map, size=size, mode='bilinear', align_corners=False)
    saliency_map_min, saliency_map_max = saliency_map.min(), saliency_map.max()
    saliency_map = (saliency_map - saliency_map_min).div(saliency_map_max - saliency_map_min).data
    for handle in handles:
        handle.remove()
    return saliency_map, logit


def score_cam(torch, F, model, target_layer, input):
    """cam/scorecam.py's ``ScoreCAM.forward``: one forward with the activations kept by a hook, then under
    ``torch.no_grad()`` each upsampled, normalised activation map masks the input, scored by ``F.softmax(output)``
    (no dim: torch's implicit-dim warning) and accumulated with ``+=``; ``continue`` on a flat map."""
    self_activations = dict()

    def forward_hook(module, input, output):
        self_activations['value'] = output

    handle = target_layer.register_forward_hook(forward_hook)
    b, c, h, w = input.size()
    logit = model(input)
    predicted_class = logit.max(1)[-1]
    activations = self_activations['value']
    b, k, u, v = activations.size()
    score_saliency_map = torch.zeros((1, 1, h, w))
    with torch.no_grad():
        for i in range(k):
            # upsampling
            saliency_map = torch.unsqueeze(activations[:, i, :, :], 1)
            saliency_map = F.interpolate(saliency_map, size=(h, w), mode='bilinear', align_corners=False)
            if saliency_map.max() == saliency_map.min():
                continue
            # normalize to 0-1
            norm_saliency_map = (saliency_map - saliency_map.min()) / (saliency_map.max() - saliency_map.min())
            # how much increase if keeping the highlighted region
            # predication on masked input
            output = model(input * norm_saliency_map)
            output = F.softmax(output)
            score = output[0][predicted_class]
            score_saliency_map += score * saliency_map
    handle.remove()
    score_saliency_map = F.relu(score_saliency_map)
    score_saliency_map_min, score_saliency_map_max = score_saliency_map.min(), score_saliency_map.max()
    if score_saliency_map_min == score_saliency_map_max:
        return None
    score_saliency_map = (score_saliency_map - score_saliency_map_min).div(score_saliency_map_max - score_saliency_map_min).data
    return score_saliency_map


# --- APGD (fra31/auto-attack, autopgd_base.py, Linf) ---------------------------------------------------------------


def apgd(torch, nn, model, x, y, start, loss='ce', eps=0.3, n_iter=10, eot_iter=1, thr_decr=.75):
    """``APGDAttack.attack_single_run`` (Linf) as written: the start ``x + eps * normalize(t)`` (``t``: its
    ``2 * torch.rand(x.shape) - 1`` draw, given as ``start``), the EOT gradient by ``torch.autograd.grad`` under
    ``enable_grad``, the momentum step, ``(pred == 0).nonzero().squeeze()`` indices (a 0-d one for a single image)
    assigned into ``x_best_adv``, ``x_best``, ``grad_best``, the step-size halving by ``check_oscillation`` with
    ``step_size[ind_fl_osc] /= 2.0`` and ``x_adv[ind_fl_osc] = ...`` under ``no_grad``; the DLR loss by ``sort``."""
    ndims = len(x.shape[1:])
    n_iter_2, n_iter_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)

    def normalize(x):
        t = x.abs().view(x.shape[0], -1).max(1)[0]
        return x / (t.view(-1, *([1] * ndims)) + 1e-12)

    def check_oscillation(x, j, k, y5, k3=0.75):
        t = torch.zeros(x.shape[1])
        for counter5 in range(k):
            t += (x[j - counter5] > x[j - counter5 - 1]).float()
        return (t <= k * k3 * torch.ones_like(t)).float()

    def dlr_loss(x, y):
        x_sorted, ind_sorted = x.sort(dim=1)
        ind = (ind_sorted[:, -1] == y).float()
        u = torch.arange(x.shape[0])
        return -(x[u, y] - x_sorted[:, -2] * ind - x_sorted[:, -1] * (1. - ind)) / (
            x_sorted[:, -1] - x_sorted[:, -3] + 1e-12)

    t = start
    x_adv = x + eps * torch.ones_like(x).detach() * normalize(t)
    x_adv = x_adv.clamp(0., 1.)
    x_best = x_adv.clone()
    x_best_adv = x_adv.clone()
    loss_steps = torch.zeros([n_iter, x.shape[0]])
    loss_best_steps = torch.zeros([n_iter + 1, x.shape[0]])
    acc_steps = torch.zeros_like(loss_best_steps)
    criterion_indiv = nn.CrossEntropyLoss(reduction='none') if loss == 'ce' else dlr_loss

    x_adv.requires_grad_()
    grad = torch.zeros_like(x)
    for _ in range(eot_iter):
        with torch.enable_grad():
            logits = model(x_adv)
            loss_indiv = criterion_indiv(logits, y)
            loss = loss_indiv.sum()
        grad += torch.autograd.grad(loss, [x_adv])[0].detach()
    grad /= float(eot_iter)
    grad_best = grad.clone()

    acc = logits.detach().max(1)[1] == y
    acc_steps[0] = acc + 0
    loss_best = loss_indiv.detach().clone()

    alpha = 2.
    step_size = alpha * eps * torch.ones([x.shape[0], *([1] * ndims)]).detach()
    x_adv_old = x_adv.clone()
    k = n_iter_2 + 0
    counter3 = 0
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones_like(loss_best)

    for i in range(n_iter):
        # gradient step
        with torch.no_grad():
            x_adv = x_adv.detach()
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            x_adv_1 = x_adv + step_size * torch.sign(grad)
            x_adv_1 = torch.clamp(torch.min(torch.max(x_adv_1, x - eps), x + eps), 0.0, 1.0)
            x_adv_1 = torch.clamp(torch.min(torch.max(
                x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps), 0.0, 1.0)
            x_adv = x_adv_1 + 0.

        # get gradient
        x_adv.requires_grad_()
        grad = torch.zeros_like(x)
        for _ in range(eot_iter):
            with torch.enable_grad():
                logits = model(x_adv)
                loss_indiv = criterion_indiv(logits, y)
                loss = loss_indiv.sum()
            grad += torch.autograd.grad(loss, [x_adv])[0].detach()
        grad /= float(eot_iter)

        pred = logits.detach().max(1)[1] == y
        acc = torch.min(acc, pred)
        acc_steps[i + 1] = acc + 0
        ind_pred = (pred == 0).nonzero().squeeze()
        x_best_adv[ind_pred] = x_adv[ind_pred] + 0.

        # check step size
        with torch.no_grad():
            y1 = loss_indiv.detach().clone()
            loss_steps[i] = y1 + 0
            ind = (y1 > loss_best).nonzero().squeeze()
            x_best[ind] = x_adv[ind].clone()
            grad_best[ind] = grad[ind].clone()
            loss_best[ind] = y1[ind] + 0
            loss_best_steps[i + 1] = loss_best + 0

            counter3 += 1

            if counter3 == k:
                fl_oscillation = check_oscillation(loss_steps, i, k, loss_best, k3=thr_decr)
                fl_reduce_no_impr = (1. - reduced_last_check) * (loss_best_last_check >= loss_best).float()
                fl_oscillation = torch.max(fl_oscillation, fl_reduce_no_impr)
                reduced_last_check = fl_oscillation.clone()
                loss_best_last_check = loss_best.clone()

                if fl_oscillation.sum() > 0:
                    ind_fl_osc = (fl_oscillation > 0).nonzero().squeeze()
                    step_size[ind_fl_osc] /= 2.0

                    x_adv[ind_fl_osc] = x_best[ind_fl_osc].clone()
                    grad[ind_fl_osc] = grad_best[ind_fl_osc].clone()

                k = max(k - size_decr, n_iter_min)
                counter3 = 0

    return x_best, acc, loss_best, x_best_adv, acc_steps, step_size


# --- an adversarial patch (Brown et al.'s targeted patch, as the PyTorch re-implementations write it) ----------------


def patch_step(torch, F, model, patch, optimizer, target):
    """One patch update: the patch written into a ``clone()`` of the images by slice assignment (gradients flow to the
    patch through it), a targeted cross-entropy, SGD on ``[patch]``, ``patch.clamp_(0, 1)`` under ``no_grad``; the
    position given (its random draw)."""
    def step(x, y0, x0):
        adv = x.clone()
        adv[:, :, y0:y0 + patch.shape[2], x0:x0 + patch.shape[3]] = patch
        loss = F.cross_entropy(model(adv), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
        return loss
    return step
