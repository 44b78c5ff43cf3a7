"""Porting probes: MoCo v2 and BYOL, each written once as PyTorch users write them (``torch`` is ``torch`` or
``kiln``) and run in both from kiln's initial weights: in float64 the logits, accuracies, first gradients, losses and
the whole state after a few steps (the key/target encoders, MoCo's ``queue`` and ``queue_ptr`` buffers, BatchNorm's
running statistics) agree to 1e-10, eagerly and with the whole training step in one ``kiln.compile(fullgraph=True)``
graph against torch's eager loop; a float32 run agrees at float32's level.

- MoCo v2 (facebookresearch/moco ``builder.py`` without the distributed gathers; the batch shuffle for BN by a fed-in
  permutation and ``torch.argsort``): query and key encoders (a small ResNet-style net, the MLP head swapped in by
  ``encoder_q.fc = nn.Sequential(...)``), the key encoder copied by ``param_k.data.copy_(param_q.data)`` and frozen by
  ``param_k.requires_grad = False``, the momentum update under ``@torch.no_grad()`` rebinding ``param_k.data``, a
  registered ``queue`` buffer normalised by ``nn.functional.normalize(dim=0)`` and assigned back, ``_dequeue_and_enqueue``
  writing ``self.queue[:, ptr:ptr + batch_size] = keys.T`` with ``ptr = int(self.queue_ptr)`` and
  ``self.queue_ptr[0] = ptr``, logits by ``torch.einsum('nc,nc->n', [q, k])`` and ``('nc,ck->nk')``, ``logits /= T``,
  labels ``torch.zeros(N, dtype=torch.long)``, ``CrossEntropyLoss``, main_moco's top-k ``accuracy``, and SGD with
  momentum and weight decay over ``model.parameters()`` (the frozen key encoder included, as main_moco passes it).
- BYOL (lucidrains' byol-pytorch): ``NetWrapper`` taking the representation by a forward hook on the encoder's
  penultimate layer, a projector and predictor ``MLP`` with ``BatchNorm1d`` and ``ReLU(inplace=True)``, the target
  encoder a ``copy.deepcopy`` with ``requires_grad`` off, both views through one ``torch.cat`` and ``.chunk(2)``, the
  regression loss as ``2 - 2 * (x * y).sum(dim=-1)`` of normalised vectors and as ``2 - 2 * F.cosine_similarity``,
  and the EMA update rebinding ``ma_params.data``; SGD with momentum (``_byol_optimizer`` says why not Adam).

What broke: the numbers agreed as first written. BYOL first had ``target_proj_one.detach_()`` on the ``chunk``
outputs: torch refuses that ("Can't detach views in-place"), kiln wrote the detached values through the view, which
cuts the base's gradient there; kiln now refuses it with torch's words
(``tests/frontend/test_detach_inplace_views_vs_torch.py``), and the probe keeps byol-pytorch's current ``.detach()``.
MoCo's ``ptr = int(self.queue_ptr)`` reads a buffer's value in Python: ``kiln.compile`` ran that step eagerly with
its warning; it now specializes on the pointer, guarded (``frontend/value_guards.py``), so the whole step is one
``fullgraph=True`` graph per pointer value (``test_moco_v2_compiled_step_as_torch``); BYOL's whole step is one graph.
Tolerances: 1e-10 in float64 throughout; BYOL uses SGD, not Adam (``_byol_optimizer`` says why).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

BATCH, IMAGE, DIM, QUEUE = 4, 6, 8, 8
FLOAT32 = dict(rtol=2e-4, atol=2e-5)


def floats(torch, values):
    """A tensor of ``values`` in the default float dtype (the batches are float64 arrays)."""
    return torch.tensor(values, dtype=torch.get_default_dtype())


def small_resnet(torch, nn, F):
    class BasicBlock(nn.Module):
        def __init__(self, planes):
            super().__init__()
            self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class SmallResNet(nn.Module):
        def __init__(self, num_classes=DIM, width=6):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = BasicBlock(width)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer1(x)
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return self.fc(x)

    return SmallResNet


# --- MoCo v2 ---------------------------------------------------------------------------------------------------------


def moco(torch, nn, F, K=QUEUE, m=0.9, T=0.2, mlp=True):
    base_encoder = small_resnet(torch, nn, F)

    class MoCo(nn.Module):
        def __init__(self, base_encoder, dim=DIM, K=K, m=m, T=T, mlp=mlp):
            super().__init__()
            self.K, self.m, self.T = K, m, T
            self.encoder_q = base_encoder(num_classes=dim)
            self.encoder_k = base_encoder(num_classes=dim)
            if mlp:  # hack: brute-force replacement
                dim_mlp = self.encoder_q.fc.weight.shape[1]
                self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
                self.encoder_k.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_k.fc)
            for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                param_k.data.copy_(param_q.data)  # initialize
                param_k.requires_grad = False  # not update by gradient
            self.register_buffer("queue", torch.randn(dim, K))
            self.queue = nn.functional.normalize(self.queue, dim=0)
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

        @torch.no_grad()
        def _momentum_update_key_encoder(self):
            for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                param_k.data = param_k.data * self.m + param_q.data * (1.0 - self.m)

        @torch.no_grad()
        def _dequeue_and_enqueue(self, keys):
            batch_size = keys.shape[0]
            ptr = int(self.queue_ptr)
            assert self.K % batch_size == 0  # for simplicity
            self.queue[:, ptr:ptr + batch_size] = keys.T
            ptr = (ptr + batch_size) % self.K  # move pointer
            self.queue_ptr[0] = ptr

        @torch.no_grad()
        def _batch_shuffle(self, x, idx_shuffle):
            """builder.py's ``_batch_shuffle_ddp`` on one process (the permutation fed in: the libraries draw other
            numbers for one seed)."""
            idx_unshuffle = torch.argsort(idx_shuffle)
            return x[idx_shuffle], idx_unshuffle

        def forward(self, im_q, im_k, idx_shuffle):
            q = self.encoder_q(im_q)  # queries: NxC
            q = nn.functional.normalize(q, dim=1)
            with torch.no_grad():  # no gradient to keys
                self._momentum_update_key_encoder()
                im_k, idx_unshuffle = self._batch_shuffle(im_k, idx_shuffle)
                k = self.encoder_k(im_k)  # keys: NxC
                k = nn.functional.normalize(k, dim=1)
                k = k[idx_unshuffle]
            l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
            l_neg = torch.einsum("nc,ck->nk", [q, self.queue.clone().detach()])
            logits = torch.cat([l_pos, l_neg], dim=1)
            logits /= self.T
            labels = torch.zeros(logits.shape[0], dtype=torch.long)
            self._dequeue_and_enqueue(k)
            return logits, labels

    return MoCo(base_encoder)


def accuracy(torch, output, target, topk=(1,)):
    """main_moco.py's accuracy over the k top predictions."""
    with torch.no_grad():
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
            res.append(correct_k.mul_(100.0 / batch_size))
        return res


def _moco_batches(steps):
    rng = np.random.default_rng(1)
    images = rng.standard_normal((steps, 2, BATCH, 3, IMAGE, IMAGE))
    return images, [rng.permutation(BATCH) for _ in range(steps)]


def _moco_optimizer(torch, model):
    return torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=1e-2)


def train_moco(steps=3):
    """main_moco.py's loop; three steps of a batch of 4 into a queue of 8 wrap the pointer back to 0."""
    images, shuffles = _moco_batches(steps)

    def train(torch, nn, F, model):
        criterion = nn.CrossEntropyLoss()
        optimizer = _moco_optimizer(torch, model)
        record = {"losses": [], "acc": [], "queue_ptr": []}
        for step in range(steps):
            output, target = model(im_q=floats(torch, images[step, 0]), im_k=floats(torch, images[step, 1]),
                                   idx_shuffle=torch.tensor(shuffles[step]))
            loss = criterion(output, target)
            acc1, acc5 = accuracy(torch, output, target, topk=(1, 5))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            record.setdefault("logits", array(output))
            record.setdefault("grads", gradients(model))
            record["losses"].append(loss.item())
            record["acc"].append([acc1.item(), acc5.item()])
            record["queue_ptr"].append(model.queue_ptr.tolist())
            record.setdefault("dtypes", [str(target.dtype), str(model.queue_ptr.dtype), str(output.dtype)])
        record["state"] = snapshot(model)
        record["frozen"] = [p.requires_grad for p in model.encoder_k.parameters()]
        record["key_grads"] = [p.grad is None for p in model.encoder_k.parameters()]
        return record

    return train


def _assert_moco(ours, theirs, **tolerance):
    assert ours["dtypes"] == [d.replace("torch.", "kiln.") for d in theirs["dtypes"]]
    assert ours["frozen"] == theirs["frozen"] == [False] * len(ours["frozen"])
    assert ours["key_grads"] == theirs["key_grads"] == [True] * len(ours["key_grads"])
    assert theirs["queue_ptr"] == [[4], [0], [4]]
    for key in ("dtypes", "frozen", "key_grads"):
        ours.pop(key), theirs.pop(key)
    assert_same_records(ours, theirs, **tolerance)


def test_moco_v2_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(moco, train_moco())
    _assert_moco(ours, theirs)
    np.testing.assert_allclose(np.linalg.norm(theirs["state"]["queue"], axis=0), 1.0, rtol=1e-12)


def test_moco_v2_trains_as_torch_in_float32():
    """MoCo trains in float32: the same run at float32's level."""
    ours, theirs = run_in_lockstep(moco, train_moco())
    assert ours["state"]["queue"].dtype == np.float32
    _assert_moco(ours, theirs, **FLOAT32)


def train_moco_compiled(steps=3):
    """main_moco.py's step (forward, loss, ``zero_grad``, backward, SGD) as one compiled graph in kiln; the queue
    pointer read by ``int(self.queue_ptr)`` is guarded, so each pointer value has its own trace."""
    images, shuffles = _moco_batches(steps)

    def train(torch, nn, F, model):
        criterion = nn.CrossEntropyLoss()
        optimizer = _moco_optimizer(torch, model)

        def train_step(im_q, im_k, idx_shuffle):
            output, target = model(im_q=im_q, im_k=im_k, idx_shuffle=idx_shuffle)
            loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss.detach(), output.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        record = {"losses": [], "logits": []}
        for step in range(steps):
            loss, logits = run(floats(torch, images[step, 0]), floats(torch, images[step, 1]), torch.tensor(shuffles[step]))
            record["losses"].append(loss.item())
            record["logits"].append(array(logits))
        record["state"] = snapshot(model)
        record["grads"] = gradients(model)
        record["queue_ptr"] = model.queue_ptr.tolist()
        return record

    return train


def test_moco_v2_compiled_step_as_torch(float64_default):
    """``int(self.queue_ptr)`` reads a buffer's value in Python: the trace specializes on it, guarded, so the step is
    one ``fullgraph=True`` graph per pointer value (the buffer written by the step fails the guard: traced again)."""
    ours, theirs = run_in_lockstep(moco, train_moco_compiled())
    assert theirs["queue_ptr"] == [4]
    assert_same_records(ours, theirs)


# --- BYOL ------------------------------------------------------------------------------------------------------------


def byol(torch, nn, F, projection_size=6, projection_hidden_size=10, moving_average_decay=0.9, cosine=False):
    base_encoder = small_resnet(torch, nn, F)

    def loss_fn(x, y):
        if cosine:
            return 2 - 2 * F.cosine_similarity(x, y, dim=-1)
        x = F.normalize(x, dim=-1, p=2)
        y = F.normalize(y, dim=-1, p=2)
        return 2 - 2 * (x * y).sum(dim=-1)

    class EMA:
        def __init__(self, beta):
            self.beta = beta

        def update_average(self, old, new):
            if old is None:
                return new
            return old * self.beta + (1 - self.beta) * new

    def update_moving_average(ema_updater, ma_model, current_model):
        for current_params, ma_params in zip(current_model.parameters(), ma_model.parameters()):
            old_weight, up_weight = ma_params.data, current_params.data
            ma_params.data = ema_updater.update_average(old_weight, up_weight)

    def set_requires_grad(model, val):
        for p in model.parameters():
            p.requires_grad = val

    def MLP(dim, projection_size, hidden_size):
        return nn.Sequential(nn.Linear(dim, hidden_size), nn.BatchNorm1d(hidden_size), nn.ReLU(inplace=True),
                             nn.Linear(hidden_size, projection_size))

    class NetWrapper(nn.Module):
        """The representation from a forward hook on ``net``'s penultimate child, then the projector."""

        def __init__(self, net, projection_size, projection_hidden_size, layer=-2):
            super().__init__()
            self.net, self.layer = net, layer
            self.hidden = {}
            self.projector = MLP(6, projection_size, projection_hidden_size)
            children = [*self.net.children()]
            children[self.layer].register_forward_hook(self._hook)

        def _hook(self, _, input, output):
            self.hidden[output.device] = torch.flatten(output, 1)

        def get_representation(self, x):
            self.hidden.clear()
            _ = self.net(x)
            hidden = self.hidden[x.device]
            self.hidden.clear()
            assert hidden is not None, f"hidden layer {self.layer} never emitted an output"
            return hidden

        def forward(self, x):
            representation = self.get_representation(x)
            return self.projector(representation), representation

    class BYOL(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.online_encoder = NetWrapper(net, projection_size, projection_hidden_size)
            self.target_ema_updater = EMA(moving_average_decay)
            self.online_predictor = MLP(projection_size, projection_size, projection_hidden_size)
            self.target_encoder = copy.deepcopy(self.online_encoder)
            set_requires_grad(self.target_encoder, False)

        def update_moving_average(self):
            update_moving_average(self.target_ema_updater, self.target_encoder, self.online_encoder)

        def forward(self, image_one, image_two, return_embedding=False):
            if return_embedding:
                return self.online_encoder(image_one)
            images = torch.cat((image_one, image_two), dim=0)
            online_projections, _ = self.online_encoder(images)
            online_predictions = self.online_predictor(online_projections)
            online_pred_one, online_pred_two = online_predictions.chunk(2, dim=0)
            with torch.no_grad():
                target_projections, _ = self.target_encoder(images)
                target_projections = target_projections.detach()
                target_proj_one, target_proj_two = target_projections.chunk(2, dim=0)
            loss_one = loss_fn(online_pred_one, target_proj_two.detach())
            loss_two = loss_fn(online_pred_two, target_proj_one.detach())
            loss = loss_one + loss_two
            return loss.mean()

    return BYOL(base_encoder(num_classes=DIM))


def _byol_batches(steps):
    rng = np.random.default_rng(2)
    return rng.standard_normal((steps, 2, BATCH, 3, IMAGE, IMAGE))


def _byol_optimizer(torch, learner):
    """SGD with momentum, not the README's Adam: the biases of the Linear layers feeding a BatchNorm1d (projector.0,
    projector.3 through predictor.0, predictor.0) have a zero gradient, computed as rounding noise (~5e-15 against
    ~1 for their weights), which Adam's ``m / (sqrt(v) + eps)`` scales up to steps of ~1e-9 (all of ``lr`` in float32),
    different noise in each library; the target projection (no BatchNorm after it) carries them into the loss."""
    return torch.optim.SGD(learner.parameters(), lr=0.05, momentum=0.9)


NOISE_BIASES = ("grads/online_encoder.projector.0.bias", "grads/online_encoder.projector.3.bias",
                "grads/online_predictor.0.bias")


def train_byol(steps=3):
    images = _byol_batches(steps)

    def train(torch, nn, F, learner):
        optimizer = _byol_optimizer(torch, learner)
        record = {"losses": []}
        for step in range(steps):
            loss = learner(floats(torch, images[step, 0]), floats(torch, images[step, 1]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            learner.update_moving_average()
            record.setdefault("grads", gradients(learner))
            record["losses"].append(loss.item())
        projection, embedding = learner(floats(torch, images[0, 0]), None, return_embedding=True)
        record["embedding"], record["projection"] = array(embedding), array(projection)
        record["state"] = snapshot(learner)
        record["target_frozen"] = [p.requires_grad or p.grad is not None for p in learner.target_encoder.parameters()]
        return record

    return train


def _byol_build(cosine):
    return lambda torch, nn, F: byol(torch, nn, F, cosine=cosine)


@pytest.mark.parametrize("cosine", [False, True], ids=["normalize-dot", "cosine_similarity"])
def test_byol_trains_as_torch(cosine, float64_default):
    ours, theirs = run_in_lockstep(_byol_build(cosine), train_byol())
    assert not any(ours["target_frozen"]) and not any(theirs["target_frozen"])
    assert_same_records(ours, theirs)
    state = theirs["state"]
    assert not np.allclose(state["target_encoder.projector.0.weight"], state["online_encoder.projector.0.weight"])


def test_byol_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(_byol_build(False), train_byol())
    assert ours["state"]["online_encoder.projector.0.weight"].dtype == np.float32
    noise = dict(rtol=0, atol=1e-4)  # the rounding-noise gradients of the biases before BatchNorm (_byol_optimizer)
    assert_same_records(ours, theirs, **FLOAT32, looser={key: noise for key in NOISE_BIASES})


def train_byol_compiled(steps=3):
    """The loop of byol-pytorch's README (loss, ``zero_grad``, backward, Adam, ``update_moving_average``) as one
    compiled graph in kiln."""
    images = _byol_batches(steps)

    def train(torch, nn, F, learner):
        optimizer = _byol_optimizer(torch, learner)

        def train_step(image_one, image_two):
            loss = learner(image_one, image_two)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            learner.update_moving_average()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        losses = [run(floats(torch, images[step, 0]), floats(torch, images[step, 1])).item() for step in range(steps)]
        return {"losses": losses, "state": snapshot(learner), "grads": gradients(learner)}

    return train


@pytest.mark.parametrize("cosine", [False, True], ids=["normalize-dot", "cosine_similarity"])
def test_byol_compiled_step_as_torch(cosine, float64_default):
    ours, theirs = run_in_lockstep(_byol_build(cosine), train_byol_compiled())
    assert_same_records(ours, theirs)
