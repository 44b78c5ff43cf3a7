"""Porting probe: MobileSAM (ChaoningZhang/MobileSAM: ``tiny_vit_sam.py``'s TinyViT image encoder, ``build_sam_vit_t``
and the decoupled distillation of its ``train.py``), written once (``mobile_sam_program.py``) and run in kiln and torch
2.13 from kiln's initial weights, compared to 1e-10 in float64, eagerly and with the whole distillation step one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

What is in it: ``Conv2d_BN`` (a ``Sequential`` built by ``add_module``, BatchNorm2d with ``bn_weight_init=0.0`` by
``nn.init.constant_``, and ``fuse()`` under ``@torch.no_grad()`` reading ``self._modules.values()`` and writing
``m.weight.data.copy_``), ``MBConv`` with ``x += shortcut``, ``PatchMerging`` (``x.ndim == 3``, ``len(x)``),
TinyViT's ``Attention`` (offsets of ``itertools.product`` points, ``torch.LongTensor(idxs).view(N, N)`` registered
non-persistent, ``attention_biases[:, attention_bias_idxs]`` gathered with its gradient, ``split([key_dim, key_dim,
d], dim=3)``) and its ``train(mode)`` override caching ``ab`` on ``eval()``, windows with and without padding and the
unpartitioned path, ``local_conv`` depthwise, ``dpr = [x.item() for x in torch.linspace(...)]``, layer-wise lr decay
stored on parameters (``p.lr_scale``, ``p.param_name``) and AdamW groups built from it with
``no_weight_decay_keywords``; the distillation loss ``((pred - target) ** 2).sum(1).mean().sqrt()`` against teacher
embeddings saved by ``np.save`` and loaded by a ``Dataset`` (``torch.from_numpy(np.load(...))``) through a
``DataLoader``; the eval forward through ``kiln.compile``, every ``Conv2d_BN`` fused by ``fuse()``; MobileSAM's
``Sam.forward`` with SAM's prompt encoder and mask decoder.

What broke: ``model.eval()`` never ran ``Attention.train`` (kiln's ``Module.train`` set every module's flag itself), so
``self.ab`` was missing in the eval forward; ``Module.train`` now recurses through the children's ``train`` as torch's
(``frontend/module.py``, ``tests/frontend/test_module_train_override_vs_torch.py``).
"""

from __future__ import annotations

import numpy as np

import kiln
from e2e.mobile_sam_program import TINY_IMAGE, mobile_sam, param_groups_lrd, tiny_vit
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.sam_program import GRID, PROMPT_DIM

LOOSER = {"eval": dict(rtol=1e-9, atol=1e-10), "mlp.fc2.bias": dict(rtol=0, atol=1e-10)}
"""The eval outputs pass LayerNorm2d, which scales the steps' rounding differences near zero by the inverse std. A
block's last bias before a ``PatchMerging`` adds a per-channel constant that the merging's 1x1 conv and train-mode
BatchNorm cancel: its gradient is rounding noise that AdamW turns into steps of ~1e-12, differently in each library
(as ``probe_lockstep.split_key_bias`` says of attention key biases)."""


def customized_mseloss(pred_feats, target_feats):
    return ((pred_feats - target_feats) ** 2).sum(1).mean().sqrt()


def _teacher_files(folder):
    """train.py's data: images and the teacher's (SAM ViT-H) embeddings saved one ``.npy`` each."""
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(folder / f"img_{i}.npy", rng.standard_normal((3, TINY_IMAGE, TINY_IMAGE)))
        np.save(folder / f"feat_{i}.npy", rng.standard_normal((PROMPT_DIM, GRID, GRID)))
    return folder


def distillation(folder, compiled=False, epochs=1):
    def train(torch, nn, F, model):
        class SamDistillDataset(torch.utils.data.Dataset):
            def __init__(self, root, n):
                self.paths = [(root / f"img_{i}.npy", root / f"feat_{i}.npy") for i in range(n)]

            def __len__(self):
                return len(self.paths)

            def __getitem__(self, idx):
                img_path, feat_path = self.paths[idx]
                return torch.from_numpy(np.load(img_path)), torch.from_numpy(np.load(feat_path))

        loader = torch.utils.data.DataLoader(SamDistillDataset(folder, 4), batch_size=2, shuffle=False)
        optimizer = torch.optim.AdamW(param_groups_lrd(model, 1e-3, 0.05), lr=1e-3)
        record = {"losses": []}

        def step(imgs, target_feats):
            optimizer.zero_grad()
            pred_feats = model(imgs)
            loss = customized_mseloss(pred_feats, target_feats)
            loss.backward()
            if not compiled:
                record.setdefault("grads", gradients(model))
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for _ in range(epochs):
            for imgs, target_feats in loader:
                record["losses"].append(run(imgs, target_feats).item())
        model.eval()
        with torch.no_grad():
            record["eval"] = array(model(torch.from_numpy(np.load(folder / "img_0.npy"))[None]))
        record["state"] = snapshot(model)
        record["groups"] = [(group["lr"], group["weight_decay"], len(group["params"])) for group in
                            optimizer.param_groups]
        return record

    return train


def test_tiny_vit_distills_as_torch(float64_default, tmp_path):
    ours, theirs = run_in_lockstep(tiny_vit, distillation(_teacher_files(tmp_path)))
    assert_same_records(ours, theirs, looser=LOOSER)
    assert "layers.1.blocks.0.attn.attention_biases" in theirs["grads"]
    assert "layers.1.blocks.0.attn.ab" not in theirs["state"]  # non-persistent
    assert len(theirs["groups"]) > 4 and min(lr for lr, _, _ in theirs["groups"]) < 1e-3


def test_tiny_vit_compiled_distillation_step_as_torch(float64_default, tmp_path):
    ours, theirs = run_in_lockstep(tiny_vit, distillation(_teacher_files(tmp_path), compiled=True))
    assert_same_records(ours, theirs, looser=LOOSER)


def _fused(torch, model):
    """Every ``Conv2d_BN`` replaced by its ``fuse()``d conv (the deployment step)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child).__name__ == "Conv2d_BN":
                setattr(module, child_name, child.fuse())
    return model


def test_tiny_vit_eval_compiled_and_fused_as_torch(float64_default):
    """A train step moves the BatchNorm statistics; then ``eval()`` (``ab`` cached), the forward through
    ``kiln.compile(fullgraph=True)``, and the same model with every ``Conv2d_BN`` fused, against torch."""
    x = np.random.default_rng(4).standard_normal((2, 3, TINY_IMAGE, TINY_IMAGE))

    def evaluate(torch, nn, F, model):
        model(torch.tensor(x)).sum().backward()  # train mode: running statistics move
        model.eval()
        with torch.no_grad():
            eager = array(model(torch.tensor(x)))
            compiled = array((kiln.compile(model, fullgraph=True) if torch is kiln else model)(torch.tensor(x)))
            fused = array(_fused(torch, model)(torch.tensor(x)))
        return {"eager": eager, "compiled": compiled, "fused": fused}

    ours, theirs = run_in_lockstep(tiny_vit, evaluate)
    assert_same_records(ours, theirs)
    np.testing.assert_allclose(theirs["fused"], theirs["eager"], rtol=1e-9, atol=1e-10)


def _mobile_sam_float64(torch, nn, F):
    return mobile_sam(torch, nn, F, pe_dtype=torch.float64)


def test_mobile_sam_predicts_as_torch(float64_default):
    """``Sam.forward`` over the TinyViT encoder (eval): a point prompt and a box, multimask output."""
    rng = np.random.default_rng(5)
    image = rng.random((3, 100, 128)) * 255

    def predict(torch, nn, F, sam):
        sam.eval()
        batched_input = [{"image": torch.tensor(image), "original_size": (50, 64),
                          "point_coords": torch.tensor([[[40.0, 30.0]]], dtype=torch.float),
                          "point_labels": torch.tensor([[1]]), "boxes": torch.tensor([[10.0, 12.0, 90.0, 70.0]])}]
        (output,) = sam(batched_input, multimask_output=True)
        return {key: array(value) for key, value in output.items()}

    ours, theirs = run_in_lockstep(_mobile_sam_float64, predict)
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)
    assert theirs["masks"].shape == (1, 3, 50, 64)
