"""Porting probes: VQ-VAE with its EMA codebook and MoCo v2, written once as their authors wrote them
(``e2e/vqvae_moco_program.py``, ``torch`` being torch or kiln), trained in both libraries from kiln's initial state with
the same batches, and compared in float64 to 1e-10: the losses (and their parts, perplexity, accuracies), the first
gradients, the parameters and buffers after the steps, the optimizers' state (Adam's moments, SGD's momentum buffers,
read by ``optimizer.state.items()``) and eval outputs; eagerly and with the whole training iteration in one
``kiln.compile(fullgraph=True)`` graph; float32 at float32's level.

- rosinality's vq-vae-2-pytorch: ``Quantize`` with ``register_buffer``s ``embed`` (``torch.randn(dim, n_embed)``),
  ``cluster_size`` and ``embed_avg`` (``embed.clone()``), the distance ``flatten.pow(2).sum(1, keepdim=True) - 2 *
  flatten @ self.embed + self.embed.pow(2).sum(0, keepdim=True)``, ``_, embed_ind = (-dist).max(1)``,
  ``F.one_hot(embed_ind, n_embed).type(flatten.dtype)``, ``embed_ind.view(*input.shape[:-1])``, ``F.embedding(embed_id,
  self.embed.transpose(0, 1))``, the EMA updates only ``if self.training`` (``self.cluster_size.data.mul_(decay)
  .add_(embed_onehot_sum, alpha=1 - decay)``, ``embed_avg`` likewise from ``flatten.transpose(0, 1) @ embed_onehot``,
  Laplace smoothing ``(cluster_size + eps) / (n + n_embed * eps) * n``, ``self.embed.data.copy_(embed_normalized)``),
  the commitment ``(quantize.detach() - input).pow(2).mean()`` and the straight-through ``input + (quantize -
  input).detach()``; the two-level ``VQVAE`` (``Encoder``/``Decoder`` of strides 4 and 2 with ``Conv2d``,
  ``ConvTranspose2d``, ``ResBlock``'s ``out += input``, ``ReLU(inplace=True)``, ``permute``, ``torch.cat``,
  ``diff.unsqueeze(0)``), ``decode_code`` from the codes in eval mode; train_vqvae.py's iteration
  (``model.zero_grad()``, ``nn.MSELoss``, ``latent_loss.mean()``, weight 0.25) under Adam. The codebook usage's
  perplexity ``torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))`` is computed from the codes as the
  notebook does.
- zalandoresearch/pytorch-vq-vae's ``VectorQuantizer`` (no EMA): ``nn.Embedding`` with ``weight.data.uniform_(-1/K,
  1/K)``, distances with ``torch.matmul(flat_input, weight.t())``, ``torch.argmin(...).unsqueeze(1)``, one-hots by
  ``torch.zeros(..., device=inputs.device).scatter_(1, indices, 1)``, the codebook and commitment losses by
  ``F.mse_loss`` with ``detach()`` on either side, the straight-through estimator, the perplexity,
  ``.permute(0, 2, 3, 1).contiguous()``; its ``Model`` (``Residual``/``ResidualStack`` with ``nn.ReLU(True)``,
  ``bias=False`` convolutions, ``ConvTranspose2d`` decoder) and the notebook's iteration (``recon_error =
  F.mse_loss(data_recon, data) / data_variance``) under ``optim.Adam(..., amsgrad=False)``.
- facebookresearch/moco v2 (``moco/builder.py``, ``main_moco.py``): query and key encoders (a small CNN with
  ``BatchNorm2d`` whose ``fc`` the MLP head replaces), ``param_k.data.copy_(param_q.data)``, ``param_k.requires_grad =
  False``, the ``@torch.no_grad()`` momentum update rebinding ``param_k.data``, ``register_buffer("queue",
  torch.randn(dim, K))`` normalised by ``nn.functional.normalize(self.queue, dim=0)`` and assigned back, the long
  ``queue_ptr`` buffer, ``_dequeue_and_enqueue`` (``ptr = int(self.queue_ptr)``, ``self.queue[:, ptr:ptr + batch_size] =
  keys.T``, ``self.queue_ptr[0] = ptr``), ``torch.einsum('nc,nc->n', [q, k]).unsqueeze(-1)`` and ``('nc,ck->nk', [q,
  self.queue.clone().detach()])``, ``logits /= self.T``, ``torch.zeros(N, dtype=torch.long)`` labels,
  ``nn.CrossEntropyLoss``, ``accuracy()`` by ``topk``, SGD with momentum and weight decay over ``model.parameters()``,
  and ``adjust_learning_rate``'s cosine schedule written into ``param_group['lr']`` each epoch. Six steps of a batch of
  4 into a queue of 8 wrap the pointer three times.

Adapted: ``dist_fn.all_reduce`` and ``concat_all_gather`` are the identity (one process), and the distributed
shuffle-BN (``_batch_shuffle_ddp``) is left out, the BatchNorm layers kept; the notebook's ``Model`` keeps only its
``decay == 0`` branch (its ``VectorQuantizerEMA`` is probed in ``test_porting_probes_moe_vq.py``; the EMA codebook
here is rosinality's); tiny sizes; the schedule's ``epoch`` is the step. Every random draw (``torch.randn`` codebooks
and queue, the initial weights) is kiln's, loaded into torch.

What broke: ``optimizer.state.items()`` (and iterating ``optimizer.state``) gave kiln's ``id(parameter)`` keys where
torch gives the parameters, so the user's ``{names[p]: s for p, s in optimizer.state.items()}`` failed with a
``KeyError``; the user's code now sees the parameters, kiln's own code still the ids
(``frontend/optim_parameter_state.py``, ``tests/optim/test_optimizer_state_keys_vs_torch.py``). A resume from a
state dict kept in memory found that ``optimizer.state_dict()``'s ``step`` entries were snapshots where torch's are
live tensors, so a kept dict loaded back after more steps rewound Adam's step counts; they are live now
(``Optimizer.live_step``, ``tests/optim/test_optimizer_state_dict_live_vs_torch.py``). The probe resumes from
``torch.save``d files, as main_moco.py does. Otherwise the numbers agreed as first written, at 1e-10 in float64.

Also covered: rosinality's ``CycleScheduler`` (``scheduler.py``) writing ``group['lr']`` and Adam's
``group['betas'] = (momentum, group['betas'][1])`` before each ``optimizer.step()``; main_moco.py's checkpoint and
resume (``torch.save``/``torch.load`` of ``{'epoch', 'arch', 'state_dict', 'optimizer'}``, ``model.load_state_dict``,
``optimizer.load_state_dict``, the resumed run equal to the uninterrupted one); main_lincls.py on that checkpoint
(``param.requires_grad = False`` by name, ``fc.weight.data.normal_(mean=0.0, std=0.01)``, ``fc.bias.data.zero_()``,
the ``module.encoder_q.`` keys renamed and deleted in a ``list(state_dict.keys())`` loop, ``load_state_dict(...,
strict=False)`` with ``msg.missing_keys``, ``filter(lambda p: p.requires_grad, ...)``, ``model.eval()`` training,
``sanity_check`` by ``(state_dict[k].cpu() == state_dict_pre[k_pre]).all()``); the fc's ``normal_`` draw is kiln's,
copied into torch's.

Compiled: each program's whole iteration (forward, loss, backward, the scheduler, the optimizer step) is one
``kiln.compile(fullgraph=True)`` graph, with no eager fallback (no warning): the EMA buffers' ``.data.mul_``/``copy_``
written back, MoCo's step traced again for each queue pointer value (guarded ``int(self.queue_ptr)``) and each
learning rate the cosine schedule writes (guarded ``param_group['lr']``), as torch.compile recompiles on them, and the
VQ-VAE's for each ``betas`` the CycleScheduler writes.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.vqvae_moco_program import moco_v2, rosinality_vqvae, zalando_vqvae

FLOAT32 = dict(rtol=2e-4, atol=2e-5)
STEPS = 4
MOCO_ARGS = SimpleNamespace(moco_dim=8, moco_k=8, moco_m=0.9, moco_t=0.2, mlp=True, lr=0.06, momentum=0.9,
                            weight_decay=1e-2, cos=True, epochs=6, schedule=[3, 5])
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, (STEPS, 2, 3, 8, 8))  # (step, batch, C, H, W)
CROPS = RNG.uniform(-1, 1, (MOCO_ARGS.epochs, 2, 4, 3, 8, 8))  # (step, crop, batch, C, H, W)


def floats(torch, values):
    """A tensor of ``values`` in the default float dtype (the data loaders' ``.float()``)."""
    return torch.tensor(values, dtype=torch.get_default_dtype())


def optimizer_state(model, optimizer):
    """The optimizer's per-parameter state by parameter name, read as a user does: ``optimizer.state.items()``."""
    names = {p: name for name, p in model.named_parameters()}
    return {f"{names[p]}/{key}": array(value) for p, entry in optimizer.state.items() for key, value in entry.items()}


def perplexity(torch, F, codes, n_embed):
    """The notebook's perplexity of the codebook usage, of rosinality's codes."""
    avg_probs = torch.mean(F.one_hot(codes.reshape(-1), n_embed).type(torch.get_default_dtype()), dim=0)
    return torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))


def compiled(torch, step, compile_step):
    return kiln.compile(step, fullgraph=True) if compile_step and torch is kiln else step


def traced_in_full(run):
    """Whether every call of the compiled ``run`` ran a traced graph (None marks a signature run eagerly); True for
    torch's eager step."""
    variants = getattr(run, "variants", {None: True})
    return len(variants) > 0 and all(variant is not None for variant in variants.values())


def caught_compile_warnings(run, *args):
    """``run(*args)`` and the ``kiln.compile`` warnings it gave (none expected: an eager fallback warns)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*args)
    return result, [str(w.message) for w in caught if "kiln.compile" in str(w.message)]


# --- rosinality's VQ-VAE-2 with the EMA codebook ----------------------------------------------------------------------


def build_rosinality(torch, nn, F):
    R = rosinality_vqvae(torch, nn, F)
    model = R.VQVAE(channel=8, n_res_block=1, n_res_channel=4, embed_dim=4, n_embed=8)
    model.program = R
    return model


def train_rosinality(compile_step=False):
    def train(torch, nn, F, model):
        R = model.program
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        scheduler = R.CycleScheduler(optimizer, 3e-3, n_iter=STEPS + 2, momentum=(0.95, 0.85), warmup_proportion=0.5)
        run = compiled(torch, lambda img: R.train_iteration(model, optimizer, scheduler, img), compile_step)
        record = {"losses": [], "warnings": []}
        for i in range(STEPS):
            (loss, recon_loss, latent_loss), warned = caught_compile_warnings(run, floats(torch, IMAGES[i]))
            record["warnings"] += warned
            record.setdefault("grads", gradients(model))
            record["losses"].append([loss.item(), recon_loss.item(), latent_loss.item()])
            group = optimizer.param_groups[0]
            record.setdefault("groups", []).append([group["lr"], *group["betas"]])
        record.update(state=snapshot(model), optimizer=optimizer_state(model, optimizer), traced=traced_in_full(run))
        model.eval()
        with torch.no_grad():
            _, _, latent, id_t, id_b = model.encode(floats(torch, IMAGES[0]))
            decoded = model.decode_code(id_t, id_b)
        record["eval"] = dict(codes_t=array(id_t), codes_b=array(id_b), latent=array(latent), decoded=array(decoded),
                              perplexity=perplexity(torch, F, id_b, 8).item(), state=snapshot(model))
        return record

    return train


def check_rosinality(ours, theirs, **tolerance):
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert_same_records(ours, theirs, **tolerance)
    np.testing.assert_array_equal(ours["eval"]["codes_b"], theirs["eval"]["codes_b"])
    for key in ("embed", "cluster_size", "embed_avg"):  # eval mode leaves the EMA buffers alone
        name = f"quantize_b.{key}"
        np.testing.assert_array_equal(theirs["eval"]["state"][name], theirs["state"][name])
    moments = ("step", "exp_avg", "exp_avg_sq")
    assert set(ours["optimizer"]) == {f"{name}/{key}" for name in ours["grads"] for key in moments}


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_rosinality_vqvae_trains_as_torch(float64_default, compile_step):
    ours, theirs = run_in_lockstep(build_rosinality, train_rosinality(compile_step))
    check_rosinality(ours, theirs)
    assert theirs["state"]["quantize_b.cluster_size"].sum() > 0
    assert [beta1 for _, beta1, _ in theirs["groups"]] == pytest.approx([0.9166666, 0.8833333, 0.85, 0.875])


def test_rosinality_vqvae_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(build_rosinality, train_rosinality())
    assert ours["state"]["quantize_t.embed"].dtype == np.float32
    check_rosinality(ours, theirs, **FLOAT32)


# --- zalandoresearch's VQ-VAE with the codebook loss ------------------------------------------------------------------


def build_zalando(torch, nn, F):
    Z = zalando_vqvae(torch, nn, F)
    model = Z.Model(num_hiddens=8, num_residual_layers=1, num_residual_hiddens=4, num_embeddings=8, embedding_dim=4,
                    commitment_cost=0.25)
    model.program = Z
    return model


def train_zalando(compile_step=False):
    data_variance = float(np.var(IMAGES))

    def train(torch, nn, F, model):
        Z = model.program
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=False)
        run = compiled(torch, lambda data: Z.train_iteration(model, optimizer, data, data_variance), compile_step)
        record = {"losses": [], "warnings": []}
        for i in range(STEPS):
            (loss, recon_error, perplexity), warned = caught_compile_warnings(run, floats(torch, IMAGES[i]))
            record["warnings"] += warned
            record.setdefault("grads", gradients(model))
            record["losses"].append([loss.item(), recon_error.item(), perplexity.item()])
        record.update(state=snapshot(model), optimizer=optimizer_state(model, optimizer), traced=traced_in_full(run))
        model.eval()
        with torch.no_grad():
            vq_loss, data_recon, perplexity = model(floats(torch, IMAGES[0]))
        record["eval"] = dict(vq_loss=vq_loss.item(), data_recon=array(data_recon), perplexity=perplexity.item())
        return record

    return train


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_zalando_vqvae_trains_as_torch(float64_default, compile_step):
    ours, theirs = run_in_lockstep(build_zalando, train_zalando(compile_step))
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert_same_records(ours, theirs)
    assert 1 < theirs["losses"][0][2] < 8  # the perplexity: several codes in use


def test_zalando_vqvae_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(build_zalando, train_zalando())
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert ours["state"]["_vq_vae._embedding.weight"].dtype == np.float32
    assert_same_records(ours, theirs, **FLOAT32)


# --- MoCo v2 ----------------------------------------------------------------------------------------------------------


def build_moco(torch, nn, F):
    M = moco_v2(torch, nn, F)
    model, criterion, optimizer = M.make_model(MOCO_ARGS)
    model.program = (M, criterion, optimizer)
    return model


def train_moco(compile_step=False):
    """main_moco.py's epochs (one step each): the cosine lr written into the param groups, then the iteration."""

    def train(torch, nn, F, model):
        M, criterion, optimizer = model.program
        run = compiled(torch, lambda *images: M.train_iteration(images, model, criterion, optimizer), compile_step)
        record = {"losses": [], "acc": [], "queue_ptr": [], "lr": [], "warnings": []}
        for epoch in range(MOCO_ARGS.epochs):
            M.adjust_learning_rate(optimizer, epoch, MOCO_ARGS)
            (loss, output, acc1, acc5), warned = caught_compile_warnings(
                run, floats(torch, CROPS[epoch, 0]), floats(torch, CROPS[epoch, 1]))
            record["warnings"] += warned
            record.setdefault("logits", array(output))
            record.setdefault("grads", gradients(model))
            record["losses"].append(loss.item())
            record["acc"].append([acc1.item(), acc5.item()])
            record["queue_ptr"].append(model.queue_ptr.tolist())
            record["lr"].append([group["lr"] for group in optimizer.param_groups])
        record.update(state=snapshot(model), optimizer=optimizer_state(model, optimizer), traced=traced_in_full(run))
        record["frozen"] = [p.requires_grad or p.grad is not None for p in model.encoder_k.parameters()]
        return record

    return train


def check_moco(ours, theirs, **tolerance):
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert ours.pop("frozen") == theirs.pop("frozen") == [False] * 10
    assert theirs["queue_ptr"] == [[4], [0]] * 3
    assert_same_records(ours, theirs, **tolerance)
    assert set(ours["optimizer"]) == {f"{name}/momentum_buffer" for name in ours["grads"]}
    np.testing.assert_allclose(theirs["lr"][-1][0], 0.03 * (1 + math.cos(math.pi * 5 / 6)))


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_moco_v2_trains_as_torch(float64_default, compile_step):
    ours, theirs = run_in_lockstep(build_moco, train_moco(compile_step))
    check_moco(ours, theirs)
    np.testing.assert_allclose(np.linalg.norm(theirs["state"]["queue"], axis=0), 1.0, rtol=1e-12)


def test_moco_v2_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(build_moco, train_moco())
    assert ours["state"]["queue"].dtype == np.float32
    check_moco(ours, theirs, **FLOAT32)


def moco_args(**options):
    return SimpleNamespace(**{**vars(MOCO_ARGS), "arch": "small_cnn", "start_epoch": 0, **options})


def train_moco_resumed(folder, fc_init):
    """main_moco.py stopped after three epochs and resumed from its checkpoint (``torch.save``/``torch.load``,
    ``model.load_state_dict``, ``optimizer.load_state_dict``) for the other three; then main_lincls.py on the
    checkpoint: the frozen encoder_q with a new 6-way fc, three steps in eval mode, and the sanity check. The fc's
    ``normal_`` draw is kiln's, copied into torch's (``fc_init``), as ``run_in_lockstep`` copies the model's."""

    def run_epochs(torch, M, model, criterion, optimizer, args, epochs, record):
        for epoch in epochs:
            M.adjust_learning_rate(optimizer, epoch, args)
            loss, output, acc1, acc5 = M.train_iteration(
                [floats(torch, CROPS[epoch, 0]), floats(torch, CROPS[epoch, 1])], model, criterion, optimizer)
            record["losses"].append(loss.item())

    def train(torch, nn, F, model):
        M, criterion, optimizer = model.program
        where = folder / torch.__name__
        where.mkdir()
        args, record = moco_args(), {"losses": []}
        run_epochs(torch, M, model, criterion, optimizer, args, range(3), record)
        filename = str(where / "checkpoint_0002.pth.tar")
        M.save_checkpoint(M.checkpoint_of(2, args, model, optimizer), is_best=False, filename=filename)
        model, criterion, optimizer = M.make_model(args)
        args = moco_args(resume=filename)
        M.resume(args, model, optimizer)
        run_epochs(torch, M, model, criterion, optimizer, args, range(args.start_epoch, args.epochs), record)
        record.update(start_epoch=args.start_epoch, state=snapshot(model), optimizer=optimizer_state(model, optimizer))
        record["lincls"] = linear_classification(torch, M, filename, fc_init)
        return record

    return train


def linear_classification(torch, M, pretrained, fc_init):
    args = moco_args(pretrained=pretrained, num_classes=6, lr=30.0, weight_decay=0.0)
    model, criterion, optimizer = M.make_linear_classifier(args)
    if torch is kiln:
        fc_init["weight"] = array(model.fc.weight)
    else:
        model.fc.weight.data.copy_(floats(torch, fc_init["weight"]))
    targets = np.random.default_rng(3).integers(0, 6, (3, 4))
    loader = [(floats(torch, CROPS[i, 0]), torch.tensor(targets[i])) for i in range(3)]
    losses = M.train_lincls(loader, model, criterion, optimizer, 0, args)
    M.sanity_check(model.state_dict(), args.pretrained)
    return dict(losses=losses, state=snapshot(model), optimizer=optimizer_state(model, optimizer),
                trainable=[name for name, p in model.named_parameters() if p.requires_grad])


def test_moco_v2_resumed_and_linear_classification_as_torch(float64_default, tmp_path):
    fc_init = {}
    ours, theirs = run_in_lockstep(build_moco, train_moco_resumed(tmp_path, fc_init))
    assert ours.pop("start_epoch") == theirs.pop("start_epoch") == 3
    assert ours["lincls"].pop("trainable") == theirs["lincls"].pop("trainable") == ["fc.weight", "fc.bias"]
    assert_same_records(ours, theirs)
    assert 0.005 < fc_init["weight"].std() < 0.02
    _, uninterrupted = run_in_lockstep(build_moco, train_moco())
    assert_same_records(theirs["losses"], uninterrupted["losses"])
    assert_same_records(theirs["state"], uninterrupted["state"])
