"""The training-utilities probe's programs (``test_porting_probes_prune_swa_sched.py``), each written once as a
function of ``(torch, nn, F)``: torchcontrib/PyTorch's SWA recipe (``AveragedModel``, ``SWALR``, ``update_bn``) with
an EMA kept three ways, the LR schedulers as training scripts step them (per batch, per epoch, fractional epochs, on a
plateau metric) and resume them from a checkpoint mid-run, and the gradient-clipping / bfloat16-autocast loop."""

from __future__ import annotations

import io
from copy import deepcopy

import numpy as np

from e2e.probe_lockstep import snapshot

FEATURES, HIDDEN, OUTPUTS, BATCH = 4, 8, 3, 6


def mlp(torch, nn, F):
    """A small classifier with BatchNorm (so ``update_bn`` has running statistics to recompute)."""
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUTPUTS))


def mlp_layer_norm(torch, nn, F):
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.GELU(), nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, OUTPUTS))


def loader(torch, batches=3, dtype=np.float64):
    rng = np.random.default_rng(11)
    return [(torch.tensor(rng.normal(size=(BATCH, FEATURES)).astype(dtype)), torch.tensor(rng.integers(0, OUTPUTS, BATCH)))
            for _ in range(batches)]


def arrays(tensors):
    return {str(i): np.array(t.detach().numpy()) for i, t in enumerate(tensors)}


# --- SWA and EMA ------------------------------------------------------------------------------------------------------


def swa_training(compiled=False, epochs=4, swa_start=2):
    """PyTorch's SWA recipe: SGD with a cosine schedule, from ``swa_start`` on ``swa_model.update_parameters`` and
    ``SWALR`` each epoch, then ``update_bn`` over the loader; an EMA ``AveragedModel`` (``get_ema_multi_avg_fn``,
    ``use_buffers=True``) updated each step, and two hand-kept EMAs of the parameters (``torch._foreach_mul_`` /
    ``_foreach_add_``, and ``lerp_``) under ``no_grad``. ``compiled``: kiln's step (with the EMA updates) is one
    ``kiln.compile(fullgraph=True)`` graph."""

    def train(torch, nn, F, model):
        import kiln

        swa_utils = torch.optim.swa_utils
        data = loader(torch)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        swa_model = swa_utils.AveragedModel(model)
        ema_model = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
        swa_scheduler = swa_utils.SWALR(optimizer, swa_lr=0.02, anneal_epochs=2, anneal_strategy="linear")
        ema_params = [p.detach().clone() for p in model.parameters()]
        ema_lerp = [p.detach().clone() for p in model.parameters()]

        def step(x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            ema_model.update_parameters(model)
            with torch.no_grad():
                torch._foreach_mul_(ema_params, 0.95)
                torch._foreach_add_(ema_params, [p.detach() for p in model.parameters()], alpha=0.05)
                for average, p in zip(ema_lerp, model.parameters()):
                    average.lerp_(p, 0.1)
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "lrs": []}
        for epoch in range(epochs):
            record["losses"] += [run(x, y).item() for x, y in data]
            if epoch >= swa_start:
                swa_model.update_parameters(model)
                swa_scheduler.step()
            else:
                scheduler.step()
            record["lrs"].append(optimizer.param_groups[0]["lr"])
        swa_utils.update_bn([x for x, _ in data], swa_model)
        record.update(swa=snapshot(swa_model), ema=snapshot(ema_model), ema_foreach=arrays(ema_params),
                      ema_lerp=arrays(ema_lerp), swa_output=swa_model(data[0][0]).detach().numpy().copy(),
                      swa_lr_state=[swa_scheduler.last_epoch, swa_scheduler._step_count, *swa_scheduler.get_last_lr()])
        return record

    return train


def timm_style_ema_training(compiled=False, epochs=2, decay=0.9):
    """timm's ``ModelEmaV2`` (a ``deepcopy`` in eval mode, ``ema_v.copy_(update_fn(ema_v, model_v))`` over
    ``state_dict().values()`` under ``no_grad``, the int ``num_batches_tracked`` too) beside an EMA kept with
    ``torch._foreach_lerp_`` and its buffers copied (ema-pytorch's / ModelEmaV3's form), updated in the step."""

    def train(torch, nn, F, model):
        import kiln

        class ModelEmaV2(nn.Module):
            def __init__(self, model, decay=0.9999, device=None):
                super(ModelEmaV2, self).__init__()
                self.module = deepcopy(model)
                self.module.eval()
                self.decay = decay
                self.device = device

            def _update(self, model, update_fn):
                with torch.no_grad():
                    for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                        if self.device is not None:
                            model_v = model_v.to(device=self.device)
                        ema_v.copy_(update_fn(ema_v, model_v))

            def update(self, model):
                self._update(model, update_fn=lambda e, m: self.decay * e + (1. - self.decay) * m)

        data = loader(torch)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model_ema = ModelEmaV2(model, decay=decay)
        lerped = deepcopy(model).eval().requires_grad_(False)

        def step(x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            model_ema.update(model)
            with torch.no_grad():
                torch._foreach_lerp_(tuple(lerped.parameters()), tuple(model.parameters()), weight=1. - decay)
                for ema_buffer, buffer in zip(lerped.buffers(), model.buffers()):
                    ema_buffer.copy_(buffer)
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [run(x, y).item() for _ in range(epochs) for x, y in data]}
        record.update(model_ema=snapshot(model_ema.module), lerped=snapshot(lerped),
                      ema_eval=model_ema.module(data[0][0]).detach().numpy().copy())
        return record

    return train


# --- LR schedulers in a loop, checkpointed mid-run ------------------------------------------------------------------


SCHEDULES = {  # name: (optimizer, scheduler, how it is stepped)
    "OneCycleLR cos": (lambda torch, params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
                       lambda torch, opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, epochs=4, steps_per_epoch=3),
                       "batch"),
    "OneCycleLR linear three_phase": (
        lambda torch, params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01),
        lambda torch, opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=12, anneal_strategy="linear",
                                                               three_phase=True, pct_start=0.25),
        "batch"),
    "CosineAnnealingWarmRestarts": (
        lambda torch, params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
        lambda torch, opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=1e-3),
        "fractional"),
    "ReduceLROnPlateau": (
        lambda torch, params: torch.optim.Adam(params, lr=0.05),
        lambda torch, opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0, cooldown=1,
                                                                      min_lr=0.01, threshold=0.1),
        "plateau"),
    "SequentialLR": (
        lambda torch, params: torch.optim.SGD(params, lr=0.1),
        lambda torch, opt: torch.optim.lr_scheduler.SequentialLR(opt, schedulers=[
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=2),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3, eta_min=0.01)], milestones=[2]),
        "epoch"),
    "ChainedScheduler": (
        lambda torch, params: torch.optim.RMSprop(params, lr=0.01, momentum=0.5),
        lambda torch, opt: torch.optim.lr_scheduler.ChainedScheduler([
            torch.optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2),
            torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)]),
        "epoch"),
    "LambdaLR warmup": (
        lambda torch, params: torch.optim.Adam(params, lr=0.01, betas=(0.9, 0.98), eps=1e-9),
        lambda torch, opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda=lambda step: 8 ** -0.5 * min((step + 1) ** -0.5, (step + 1) * 3 ** -1.5)),
        "batch"),
    "CyclicLR momentum": (
        lambda torch, params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
        lambda torch, opt: torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2, mode="exp_range",
                                                             gamma=0.9, cycle_momentum=True, base_momentum=0.8,
                                                             max_momentum=0.95),
        "batch"),
}


def scheduled_training(name, compiled=False, epochs=4, resume_at=2):
    """Train with ``SCHEDULES[name]``, stepping it as scripts do (after each batch; each epoch; ``step(epoch + i /
    iters)``; ``step(metric)`` with the epoch's accuracy); after ``resume_at`` epochs save model, optimizer and
    scheduler state_dicts (``lib.save`` to a buffer), build a new optimizer and scheduler, load them and go on.
    Records each step's ``get_last_lr()`` and momentum, the losses and the final state."""
    make_optimizer, make_scheduler, stepping = SCHEDULES[name]

    def train(torch, nn, F, model):
        import kiln

        data = loader(torch)
        optimizer = make_optimizer(torch, model.parameters())
        scheduler = make_scheduler(torch, optimizer)
        record = {"losses": [], "lrs": [], "momenta": []}

        def step(x, y):
            optimizer.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            return loss, (logits.argmax(dim=1) == y).float().mean()

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step  # compiled once: the resumed
        for epoch in range(epochs):  # optimizer rebinds the name the step reads
            if epoch == resume_at:
                optimizer, scheduler = resumed(torch, model, optimizer, scheduler, make_optimizer, make_scheduler)
            accuracy = 0.0
            for i, (x, y) in enumerate(data):
                loss, correct = run(x, y)
                record["losses"].append(loss.item())
                accuracy += correct.item() / len(data)
                if stepping == "batch":
                    scheduler.step()
                elif stepping == "fractional":
                    scheduler.step(epoch + i / len(data))
                record["lrs"].append(optimizer.param_groups[0]["lr"])
                group = optimizer.param_groups[0]
                record["momenta"].append(group["betas"][0] if "betas" in group else group.get("momentum", 0.0))
            if stepping == "epoch":
                scheduler.step()
            elif stepping == "plateau":
                scheduler.step(round(accuracy, 6) + 0.01 * epoch)
            record["lrs"].append(scheduler.get_last_lr()[0])
        record["state"] = snapshot(model)
        return record

    return train


def resumed(torch, model, optimizer, scheduler, make_optimizer, make_scheduler):
    """A checkpoint written and read back (``torch.save``/``torch.load``, ``kiln.save``/``kiln.load``), restored into a
    new optimizer and scheduler, as a resumed script does."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    model.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(torch, model.parameters())
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler = make_scheduler(torch, optimizer)
    scheduler.load_state_dict(checkpoint["scheduler"])
    return optimizer, scheduler


# --- clipping, parameters_to_vector and bfloat16 autocast with a GradScaler -----------------------------------------


def clipped_training(compiled=False, steps=3):
    """The float64 loop with ``clip_grad_norm_(..., foreach=True, error_if_nonfinite=True)`` (eager: a compiled step
    refuses the check, which raises on a value the trace does not have) then ``clip_grad_value_``, an L2 penalty
    through ``parameters_to_vector``, and the flat gradient ``parameters_to_vector(p.grad ...)`` recorded;
    ``vector_to_parameters`` writes a perturbed copy back at the end (a sharpness-style probe)."""

    def train(torch, nn, F, model):
        import kiln

        (x, y), = loader(torch, batches=1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        compiling = compiled and torch is kiln
        record = {"losses": [], "norms": [], "flat_grads": {}}

        def step(x, y):
            optimizer.zero_grad(set_to_none=True)
            penalty = torch.nn.utils.parameters_to_vector(model.parameters()).pow(2).sum()
            loss = F.cross_entropy(model(x), y) + 1e-3 * penalty
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5, norm_type=2.0, foreach=True,
                                                  error_if_nonfinite=not compiling)
            torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=0.05, foreach=True)
            optimizer.step()
            return loss, norm

        run = kiln.compile(step, fullgraph=True) if compiling else step
        for index in range(steps):
            loss, norm = run(x, y)
            record["losses"].append(loss.item())
            record["norms"].append(norm.item())
            grads = [p.grad for p in model.parameters()]
            record["flat_grads"][str(index)] = torch.nn.utils.parameters_to_vector(grads).numpy().copy()
        vector = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        torch.nn.utils.vector_to_parameters(vector + 0.01 * torch.sign(vector), model.parameters())
        record["state"] = snapshot(model)
        return record

    return train


def autocast_scaler_training(steps=4):
    """The mixed-precision loop as scripts write it: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward and
    loss, ``GradScaler("cpu")`` scaling the backward, ``unscale_`` before ``clip_grad_norm_``, ``scaler.step`` and
    ``scaler.update`` (eagerly: a compiled step refuses a GradScaler, whose scale changes between calls)."""

    def train(torch, nn, F, model):
        (x, y), = loader(torch, batches=1, dtype=np.float32)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
        record = {"losses": [], "norms": [], "scales": []}
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            record["dtypes"] = [str(logits.dtype).split(".")[-1], str(loss.dtype).split(".")[-1]]
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            record["norms"].append(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5, foreach=True).item())
            scaler.step(optimizer)
            scaler.update()
            record["losses"].append(loss.float().item())
            record["scales"].append(scaler.get_scale())
        record["scaler"] = {key: value for key, value in scaler.state_dict().items()}
        record["state"] = snapshot(model)
        return record

    return train
