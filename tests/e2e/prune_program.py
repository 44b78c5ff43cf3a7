"""The pruning probe's program (``test_porting_probes_prune_swa_sched.py``): the PyTorch pruning tutorial's LeNet
and its iterative prune-and-finetune loop (lottery-ticket style), written once as a function of ``(torch, nn, F)``."""

from __future__ import annotations

import importlib

import numpy as np

BATCH, CLASSES, SIDE = 6, 5, 10


def prune_module(torch):
    """``import torch.nn.utils.prune as prune`` for either library."""
    return importlib.import_module(torch.__name__ + ".nn.utils.prune")


def lenet(torch, nn, F):
    """The tutorial's LeNet, small: conv1 -> pool -> conv2 -> fc1 -> fc2 on 10x10 inputs."""

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 3, 3)
            self.conv2 = nn.Conv2d(3, 4, 3)
            self.fc1 = nn.Linear(4 * 2 * 2, 12)
            self.fc2 = nn.Linear(12, CLASSES)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.relu(self.conv2(x))
            x = x.view(-1, int(x.nelement() / x.shape[0]))
            x = F.relu(self.fc1(x))
            return self.fc2(x)

    return LeNet()


def pruned_lenet(torch, nn, F):
    """The LeNet with fc1's weight pruned at random (kiln's draw; torch's twin loads kiln's mask with the state_dict)."""
    model = lenet(torch, nn, F)
    prune_module(torch).random_unstructured(model.fc1, name="weight", amount=0.3)
    return model


def batch(torch):
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.normal(size=(BATCH, 1, SIDE, SIDE)))
    y = torch.tensor(rng.integers(0, CLASSES, size=BATCH))
    return x, y


def sparsity(torch, module, name="weight"):
    """The tutorial's printout: the percentage of zeros in ``module.<name>``."""
    tensor = getattr(module, name)
    return 100. * float(torch.sum(tensor == 0)) / float(tensor.nelement())


def parameters_to_prune(model):
    return ((model.conv1, "weight"), (model.conv2, "weight"), (model.fc1, "weight"), (model.fc2, "weight"))


def prune_round(torch, model, round_index):
    """One pruning round: global L1 over the four weights; in the first round also L1 on conv1's bias, L2 channels of
    conv2 (a PruningContainer with the global mask) and a custom method from the tutorial on fc2's bias."""
    prune = prune_module(torch)

    class FooBarPruningMethod(prune.BasePruningMethod):
        """Prune every other entry in a tensor"""
        PRUNING_TYPE = 'unstructured'

        def compute_mask(self, t, default_mask):
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    def foobar_unstructured(module, name):
        FooBarPruningMethod.apply(module, name)
        return module

    if round_index == 0:
        prune.l1_unstructured(model.conv1, name="bias", amount=1)
        prune.ln_structured(model.conv2, name="weight", amount=0.25, n=2, dim=0)
        foobar_unstructured(model.fc2, name="bias")
    prune.global_unstructured(parameters_to_prune(model), pruning_method=prune.L1Unstructured, amount=0.2)


def prune_and_finetune(rounds=2, steps=2, compiled=False):
    """``train`` for ``run_in_lockstep``: ``rounds`` of (prune, then ``steps`` SGD-momentum steps), then
    ``prune.remove`` makes the pruning permanent. Records the state_dict keys, the hooks' kinds, the sparsities, the
    losses and the state after each round. ``compiled``: kiln's step is one ``kiln.compile(fullgraph=True)`` graph."""

    def train(torch, nn, F, model):
        import kiln

        prune = prune_module(torch)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = batch(torch)

        def step(x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "rounds": {}, "structure": [],  # structure: names and kinds, compared with ==
                  "first_forward": model(x).detach().numpy().copy()}  # (torch's twin: its pre-hook recomputes
        # fc1.weight from the loaded weight_orig and weight_mask; global_unstructured reads that attribute)
        for round_index in range(rounds):
            prune_round(torch, model, round_index)
            (container,) = model.conv2._forward_pre_hooks.values()
            record["structure"].append({
                "keys": list(model.state_dict().keys()), "pruned": prune.is_pruned(model),
                "hooks": type(container).__name__, "container": [type(method).__name__ for method in container]})
            record["rounds"][round_index] = ({
                "sparsity": [sparsity(torch, module) for module, _ in parameters_to_prune(model)],
                "forward": model(x).detach().numpy().copy()})
            record["losses"] += [run(x, y).item() for _ in range(steps)]
            record["rounds"][round_index]["grad"] = model.conv2.weight_orig.grad.numpy().copy()
        for module, name in parameters_to_prune(model):
            prune.remove(module, name)
        record["structure"].append({"keys": list(model.state_dict().keys()), "pruned": prune.is_pruned(model),
                                    "params": [name for name, _ in model.named_parameters()]})
        record["state"] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        return record

    return train


def prune_rounds_through_compiled_model(rounds=2, steps=2):
    """``train`` for ``compiled_module_training``: ``model = torch.compile(model)`` then rounds of global L1 pruning of
    the original module (``model._orig_mod``) and eager SGD steps through the compiled model; each round registers
    new masks, which the compiled forward must read."""

    def train(torch, nn, F, model):
        prune = prune_module(torch)
        inner = getattr(model, "_orig_mod", model)
        x, y = batch(torch)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        record = {"losses": [], "first_forward": model(x).detach().numpy().copy()}
        for _ in range(rounds):
            prune.global_unstructured(parameters_to_prune(inner), pruning_method=prune.L1Unstructured, amount=0.3)
            for _ in range(steps):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                record["losses"].append(loss.item())
        with torch.no_grad():
            record["eval"] = model(x).numpy().copy()
        record["state"] = {k: v.detach().numpy().copy() for k, v in inner.state_dict().items()}
        return record

    return train
