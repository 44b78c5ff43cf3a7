"""DP-SGD with per-sample gradients by torch.func, model ensembling and model soups, as their authors wrote them, for
``torch`` being torch or kiln: the PyTorch tutorials ``per_sample_grads.py`` and ``ensembling.py``, Opacus'
``grad_sample/functorch.py`` + ``optimizers/optimizer.py`` (clip, ``contract("i,i...")``, noise, scale) with
``ModuleValidator.fix``'s BatchNorm -> GroupNorm, and mlfoundations/model-soups' uniform soup, greedy soup and WiSE-FT:
the program of ``test_porting_probes_dpsgd_ensembles.py``, whose docstring says what it covers and what was adapted.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace


def dpsgd_ensembles(torch, nn, F):
    """The tutorials' and repositories' functions and classes, closed over ``torch``."""
    # ``from torch.func import functional_call, grad, stack_module_state, vmap`` of the library given
    functional_call, grad, stack_module_state, vmap = (torch.func.functional_call, torch.func.grad,
                                                       torch.func.stack_module_state, torch.func.vmap)

    # ------------------------------------------------ per_sample_grads.py (the tutorial's CNN, tiny)
    class SimpleCNN(nn.Module):
        def __init__(self, norm=None):
            super(SimpleCNN, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.norm = norm if norm is not None else nn.Identity()
            self.conv2 = nn.Conv2d(4, 4, 3, 1)
            self.fc1 = nn.Linear(16, 8)
            self.fc2 = nn.Linear(8, 3)

        def forward(self, x):
            x = self.conv1(x)
            x = self.norm(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    def loss_fn(predictions, targets):
        return F.nll_loss(predictions, targets)

    def compute_grad(model, sample, target):
        sample = sample.unsqueeze(0)  # prepend batch dimension for processing
        target = target.unsqueeze(0)

        prediction = model(sample)
        loss = loss_fn(prediction, target)

        return torch.autograd.grad(loss, list(model.parameters()))

    def compute_sample_grads(model, data, targets):
        """ manually process each sample with per sample gradient """
        sample_grads = [compute_grad(model, data[i], targets[i]) for i in range(len(data))]
        sample_grads = zip(*sample_grads)
        sample_grads = [torch.stack(shards) for shards in sample_grads]
        return sample_grads

    def backward_sample_grads(model, data, targets):
        """The loop of single-sample ``backward()`` (what Opacus' tests compare against)."""
        per_sample = {name: [] for name, _ in model.named_parameters()}
        for i in range(len(data)):
            model.zero_grad()
            loss = F.cross_entropy(model(data[i].unsqueeze(0)), targets[i].unsqueeze(0))
            loss.backward()
            for name, p in model.named_parameters():
                per_sample[name].append(p.grad.detach().clone())
        return {name: torch.stack(grads) for name, grads in per_sample.items()}

    def make_ft_compute_sample_grad(model, randomness="error", has_aux=False):
        def compute_loss(params, buffers, sample, target):
            batch = sample.unsqueeze(0)
            targets = target.unsqueeze(0)

            predictions = functional_call(model, (params, buffers), (batch,))
            loss = F.cross_entropy(predictions, targets)
            if has_aux:  # the per-sample losses logged beside the gradients
                return loss, loss.detach()
            return loss

        ft_compute_grad = grad(compute_loss, has_aux=has_aux)
        ft_compute_sample_grad = vmap(ft_compute_grad, in_dims=(None, None, 0, 0), randomness=randomness)
        return ft_compute_sample_grad

    # ------------------------------------------------ Opacus: ModuleValidator.fix (BatchNorm -> GroupNorm)
    def _batchnorm_to_groupnorm(module):
        return nn.GroupNorm(min(32, module.num_features), module.num_features, affine=True)

    def fix(module):
        for name, child in module.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, name, _batchnorm_to_groupnorm(child))
            else:
                fix(child)
        return module

    # ------------------------------------------------ Opacus-style DP-SGD written with torch.func
    def per_sample_clip_factor(grads, max_grad_norm):
        per_sample_norms = torch.stack([g.reshape(g.shape[0], -1).norm(2, dim=-1) for g in grads.values()],
                                       dim=1).norm(2, dim=1)
        clip_factor = (max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
        return per_sample_norms, clip_factor

    def clip_and_accumulate(grads, clip_factor):
        return {name: torch.einsum("i,i...", clip_factor, g) for name, g in grads.items()}

    def dp_gradients(ft_compute_sample_grad, model, data, targets, max_grad_norm):
        """The clipped, summed per-sample gradients of a batch (the part torch.compile compiles)."""
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}
        grads = ft_compute_sample_grad(params, buffers, data, targets)
        per_sample_norms, clip_factor = per_sample_clip_factor(grads, max_grad_norm)
        return grads, per_sample_norms, clip_factor, clip_and_accumulate(grads, clip_factor)

    def add_noise_and_step(model, optimizer, summed, noise_multiplier, max_grad_norm, batch_size):
        for name, p in model.named_parameters():
            noise = torch.normal(mean=0, std=noise_multiplier * max_grad_norm, size=p.shape)
            p.grad = (summed[name] + noise) / batch_size
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------ Opacus grad_sample/functorch.py (per layer, from hooks)
    # https://gist.github.com/zou3519/7769506acc899d83ef1464e28f22e6cf
    def make_functional(mod, disable_autograd_tracking=False):
        params_dict = dict(mod.named_parameters())
        params_names = params_dict.keys()
        params_values = tuple(params_dict.values())

        stateless_mod = copy.deepcopy(mod)
        stateless_mod.to("meta")

        def fmodel(new_params_values, *args, **kwargs):
            new_params_dict = {
                name: value for name, value in zip(params_names, new_params_values)
            }
            return torch.func.functional_call(stateless_mod, new_params_dict, args, kwargs)

        if disable_autograd_tracking:
            params_values = torch.utils._pytree.tree_map(torch.Tensor.detach, params_values)
        return fmodel, params_values

    def prepare_layer(layer, batch_first=True):
        if len(list(layer.buffers())) > 0:
            raise NotImplementedError(
                "This layer has buffers and is not supported by Opacus"
            )
        flayer, _ = make_functional(layer)

        def compute_loss_stateless_model(params, activations, backprops):
            batched_activations = activations.unsqueeze(0)
            batched_backprops = backprops.unsqueeze(0)

            output = flayer(params, batched_activations)
            loss = (output * batched_backprops).sum()

            return loss

        ft_compute_grad = grad(compute_loss_stateless_model)
        layer.ft_compute_sample_grad = vmap(ft_compute_grad, in_dims=(None, 0, 0))

    def ft_compute_per_sample_gradient(layer, activations, backprops):
        parameters = list(layer.parameters(recurse=True))
        if not hasattr(layer, "ft_compute_sample_grad"):
            prepare_layer(layer)

        per_sample_grads = layer.ft_compute_sample_grad(
            parameters, activations[0], backprops
        )

        ret = {}
        for i_p, p in enumerate(parameters):
            ret[p] = per_sample_grads[i_p]

        return ret

    # GradSampleModule's hooks (grad_sample_module.py), loss_reduction="mean", every trainable leaf by functorch
    def add_hooks(model, loss_reduction="mean"):
        handles = []

        def capture_activations_hook(module, forward_input, _forward_output):
            if not hasattr(module, "activations"):
                module.activations = []
            module.activations.append([t.detach() for t in forward_input])

        def capture_backprops_hook(module, _forward_input, forward_output):
            backprops = forward_output[0].detach()
            activations = module.activations.pop()
            if loss_reduction == "mean":
                backprops = backprops * backprops.shape[0]
            grad_samples = ft_compute_per_sample_gradient(module, activations, backprops)
            for param, gs in grad_samples.items():
                if param.grad_sample is None:
                    param.grad_sample = gs
                else:
                    param.grad_sample += gs

        for module in model.modules():
            if any(True for _ in module.parameters(recurse=False)) and not list(module.children()):
                for p in module.parameters(recurse=False):
                    p.grad_sample = None
                prepare_layer(module)  # adapted: before the hooks, which deepcopy would copy into the functional copy
                handles.append(module.register_forward_hook(capture_activations_hook))
                handles.append(module.register_full_backward_hook(capture_backprops_hook))
        return handles

    class DPOptimizer:
        """optimizers/optimizer.py's clip_and_accumulate, add_noise, scale_grad around an original optimizer."""

        def __init__(self, optimizer, *, noise_multiplier, max_grad_norm, expected_batch_size):
            self.original_optimizer = optimizer
            self.noise_multiplier = noise_multiplier
            self.max_grad_norm = max_grad_norm
            self.expected_batch_size = expected_batch_size
            self.accumulated_iterations = 1
            self.params = [p for group in optimizer.param_groups for p in group["params"]]

        @property
        def grad_samples(self):
            return [p.grad_sample for p in self.params]

        def clip_and_accumulate(self):
            per_param_norms = [g.reshape(len(g), -1).norm(2, dim=-1) for g in self.grad_samples]
            per_sample_norms = torch.stack(per_param_norms, dim=1).norm(2, dim=1)
            per_sample_clip_factor = (self.max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
            for p in self.params:
                grad = torch.einsum("i,i...", per_sample_clip_factor, p.grad_sample)
                if getattr(p, "summed_grad", None) is not None:
                    p.summed_grad += grad
                else:
                    p.summed_grad = grad

        def add_noise(self):
            for p in self.params:
                noise = torch.normal(mean=0, std=self.noise_multiplier * self.max_grad_norm,
                                     size=p.summed_grad.shape, device=p.summed_grad.device)
                p.grad = (p.summed_grad + noise).view_as(p)

        def scale_grad(self):
            for p in self.params:
                p.grad /= self.expected_batch_size * self.accumulated_iterations

        def zero_grad(self, set_to_none=False):
            for p in self.params:
                p.grad_sample = None
                p.summed_grad = None
            self.original_optimizer.zero_grad(set_to_none)

        def step(self):
            self.clip_and_accumulate()
            self.add_noise()
            self.scale_grad()
            return self.original_optimizer.step()

    # ------------------------------------------------ a text model: EmbeddingBag / mean pooling
    class TextClassifier(nn.Module):
        def __init__(self, vocab_size=12, embed_dim=5, num_class=3, bag=True, dropout=0.0):
            super().__init__()
            self.bag = bag
            self.dropout = nn.Dropout(dropout)
            if bag:
                self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean")
            else:
                self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
            self.fc = nn.Linear(embed_dim, num_class)

        def forward(self, text):
            if self.bag:
                embedded = self.embedding(text)
            else:
                embedded = self.embedding(text).mean(dim=1)
            return self.fc(self.dropout(embedded))

    # ------------------------------------------------ ensembling.py
    class MLP(nn.Module):
        def __init__(self):
            super(MLP, self).__init__()
            self.fc1 = nn.Linear(6, 8)
            self.fc2 = nn.Linear(8, 8)
            self.fc3 = nn.Linear(8, 3)

        def forward(self, x):
            x = x.flatten(1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.fc2(x)
            x = F.relu(x)
            x = self.fc3(x)
            return x

    def ensemble(models):
        params, buffers = stack_module_state(models)
        base_model = copy.deepcopy(models[0])
        base_model = base_model.to('meta')

        def fmodel(params, buffers, x):
            return functional_call(base_model, (params, buffers), (x,))

        return params, buffers, fmodel

    def ensemble_loss(fmodel):
        def compute_loss(params, buffers, x, y):
            return F.cross_entropy(fmodel(params, buffers, x), y)
        return compute_loss

    def ensemble_sgd_step(fmodel, params, buffers, minibatches, targets, lr):
        grads = vmap(grad(ensemble_loss(fmodel)), in_dims=(0, 0, 0, 0))(params, buffers, minibatches, targets)
        return {k: params[k] - lr * grads[k] for k in params}, grads

    def ensemble_total_loss_step(fmodel, params, buffers, minibatch, targets, lr):
        """grad over the stacked params of the members' summed loss (one vmap inside)."""
        def total_loss(params):
            predictions = vmap(fmodel, in_dims=(0, 0, None))(params, buffers, minibatch)
            return sum(F.cross_entropy(p, targets) for p in predictions.unbind(0))
        grads = grad(total_loss)(params)
        return {k: params[k] - lr * grads[k] for k in params}, grads

    # ------------------------------------------------ model-soups: main.py
    def get_acc(model, x, y):
        model.eval()
        with torch.no_grad():
            logits = model(x)
        return (logits.argmax(1) == y).float().mean().item()

    def uniform_soup(state_dicts):
        return {k: sum(sd[k] for sd in state_dicts) / len(state_dicts) for k in state_dicts[0]}

    def greedy_soup(model, state_dicts, held_out):
        accuracies = []
        for sd in state_dicts:
            model.load_state_dict(sd)
            accuracies.append(get_acc(model, *held_out))
        sorted_models = sorted(range(len(state_dicts)), key=lambda i: accuracies[i], reverse=True)
        greedy_soup_ingredients = [sorted_models[0]]
        greedy_soup_params = state_dicts[sorted_models[0]]
        best_val_acc_so_far = accuracies[sorted_models[0]]
        for i in range(1, len(state_dicts)):
            new_ingredient_params = state_dicts[sorted_models[i]]
            num_ingredients = len(greedy_soup_ingredients)
            potential_greedy_soup_params = {
                k: greedy_soup_params[k].clone() * (num_ingredients / (num_ingredients + 1.)) +
                   new_ingredient_params[k].clone() * (1. / (num_ingredients + 1))
                for k in new_ingredient_params
            }
            model.load_state_dict(potential_greedy_soup_params)
            held_out_val_accuracy = get_acc(model, *held_out)
            if held_out_val_accuracy >= best_val_acc_so_far:
                greedy_soup_ingredients.append(sorted_models[i])
                best_val_acc_so_far = held_out_val_accuracy
                greedy_soup_params = potential_greedy_soup_params
        return greedy_soup_params, greedy_soup_ingredients, accuracies

    def wise_ft(theta_0, theta_1, alpha):
        # wise_ft.py: interpolate between the zero-shot and the fine-tuned weights
        assert set(theta_0.keys()) == set(theta_1.keys())
        theta = {
            key: (1 - alpha) * theta_0[key] + alpha * theta_1[key]
            for key in theta_0.keys()
        }
        return theta

    return SimpleNamespace(**{k: v for k, v in locals().items() if not k.startswith("__")})
