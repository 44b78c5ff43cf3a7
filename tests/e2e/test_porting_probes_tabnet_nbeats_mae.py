"""Porting probes: TabNet, N-BEATS and MAE, each written once as its reference writes it (``torch`` is ``torch`` or
``kiln``) and run in both from kiln's initial weights: first outputs, first gradients, losses, the state after a few
steps (BatchNorm buffers included) and what the trained model computes agree to 1e-10 in float64, eagerly and with the
whole step one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop; float32 at float32's level; TabNet,
the MAE encoder and the whole MAE (its noise draw an input) also through ``kiln.onnx.export`` in onnxruntime against
torch.

- TabNet (dreamquark-ai/tabnet ``sparsemax.py``, ``tab_network.py``, ``abstract_model.py``, ``utils.py``):
  ``Sparsemax`` and ``Entmax15`` as ``torch.autograd.Function``s (``ctx.dim``, ``save_for_backward``, ``input -=
  max_val``, ``_threshold_and_support`` by ``torch.sort(descending=True)``, ``cumsum``, ``_make_ix_like``'s ``arange``
  ``view`` + ``transpose``, ``gather``, ``tau /= ...``, ``clamp``; the backward's ``grad_input[output == 0] = 0``,
  ``torch.where``), ``GBN`` (``x.chunk(int(np.ceil(x.shape[0] / vbs)), 0)``: chunks of 4, 4, 2, then ``torch.cat``),
  shared and independent GLU blocks scaled by ``torch.sqrt(torch.FloatTensor([0.5]).to(x.device))`` (a float32
  tensor times float64 activations in the float64 runs), ``initialize_glu``/``initialize_non_glu`` (``xavier_normal_``
  with NumPy gains), the attentive transformer and ``prior = torch.mul(self.gamma - M, prior)``, ``M_loss``, the
  v4 group attention matrix, ``EmbeddingGenerator`` (bool ``continuous_idx`` set by a list index, its
  ``embedding_group_matrix`` filled element by element, ``x[:, i].float().view(-1, 1)`` and embeddings of
  ``x[:, i].long()`` concatenated), ``_train_batch`` (``param.grad = None``, ``loss - lambda_sparse * M_loss``,
  ``clip_grad_norm_``), Adam with ``StepLR``, ``explain`` (``forward_masks`` with ``M_explain +=``, kiln.compile'd in
  the compiled runs; the reducing matrix, ``normalize``) and ``predict_proba``; self-supervised pretraining
  (``TabNetPretraining``: ``RandomObfuscator``'s ``(group_matrix > 0) + 0.`` and ``torch.bernoulli`` draw, fed; the
  encoder's ``prior = 1 - obfuscated_groups``, ``TabNetDecoder``; metrics.py's ``UnsupervisedLoss`` with
  ``batch_means[batch_means == 0] = 1`` and ``batch_stds[batch_stds == 0] = batch_means[batch_stds == 0]`` over a
  constant column).
- N-BEATS (philipperemy/n-beats ``model.py``; ElementAI/N-BEATS ``losses.py`` and ``trainer.py``): trend (``np.array([t
  ** i ...])`` basis), seasonality (cos/sin bases) and generic blocks, shared thetas (``self.theta_f_fc =
  self.theta_b_fc = ...``), shared blocks in a stack, blocks kept in plain lists with their parameters in
  ``self.parameters = nn.ParameterList(self.parameters)`` (a submodule named like the method), the doubly residual
  stacking, ``squeeze_last_dim``, intermediate outputs by ``f.detach().numpy()``; MAPE, SMAPE (``forecast.data``) and
  MASE with ``divide_no_nan`` (``result[result != result] = .0; result[result == np.inf] = .0``, zero targets in every
  batch); Adam, ``clip_grad_norm_``, ``float(training_loss)``, ``param_group["lr"]`` decayed between (compiled) steps;
  ElementAI's own ``NBeats`` (``x.flip(dims=(1,))``, ``x[:, -1:]``, ``(residuals - backcast) * input_mask``), its
  generic basis (``theta[:, -forecast_size:]``) and interpretable bases (polynomial and Fourier templates as frozen
  ``nn.Parameter``s, ``t.einsum('bp,pt->bt', ...)``), the interpretable model's blocks repeated in one ``ModuleList``
  (shared weights: ``state_dict`` names each entry, ``parameters()`` each tensor once).
- MAE (facebookresearch/mae ``models_mae.py``, ``util/pos_embed.py``, ``util/lr_decay.py``, ``util/lr_sched.py``): 2-D
  sin-cos tables copied by ``.data.copy_(torch.from_numpy(...).float().unsqueeze(0))`` into frozen parameters,
  ``xavier_uniform_(w.view([w.shape[0], -1]))`` of the patch conv's ``.data``, ``normal_(std=.02)`` tokens,
  ``self.apply(self._init_weights)``, ``random_masking`` (the noise fed: the libraries' ``torch.rand`` differ;
  ``argsort`` twice, ``gather`` with ``unsqueeze(-1).repeat(1, 1, D)``, ``mask[:, :len_keep] = 0``), ``cls_token
  .expand``, ``mask_token.repeat``, the unshuffle by gather, ``patchify``/``unpatchify`` by ``einsum``,
  ``norm_pix_loss`` (``var``, ``** .5``), ``(loss * mask).sum() / mask.sum()``; engine_pretrain.py's loop with
  ``accum_iter`` 2 (``torch.cuda.amp.autocast()``, ``loss /= accum_iter``, misc.py's ``NativeScalerWithGradNormCount``
  over a disabled ``GradScaler`` with ``get_grad_norm_``, ``update_grad`` every other call: in the compiled runs two
  variants of one compiled step, the gradients accumulating between calls), AdamW over ``param_groups_lrd``'s
  layer-wise groups (``lr_scale`` keys) with ``adjust_learning_rate`` between calls, inference by
  ``kiln.compile(model, fullgraph=True)`` in the compiled runs. Fine-tuning (models_vit.py, main_finetune.py): the
  pretraining checkpoint through ``torch.save``/``torch.load(map_location='cpu')`` into the global-pool ViT
  (``del self.norm``), ``interpolate_pos_embed`` (bicubic ``F.interpolate`` of the 4x4 table to 6x6),
  ``load_state_dict(strict=False)``'s ``missing_keys``/``unexpected_keys``, ``trunc_normal_`` of the head,
  ``LabelSmoothingCrossEntropy``, AdamW over ``param_groups_lrd``. misc.py's ``save_model``/``load_model``: the
  checkpoint (model, optimizer with its ``lr_scale`` groups, scaler, ``args``) through a buffer and one more step.

Adaptations: ``from torch.nn import Linear, ...`` is written ``Linear = torch.nn.Linear`` (an import names the real
module); philipperemy's N-BEATS bases are ``.double()`` and ElementAI's templates ``t.float64`` in the float64 runs
(the reference's float32 basis meets float64 thetas in ``mm``, which both libraries refuse: checked); ElementAI's
``np.float`` is ``np.float64``; MAE's ``random_masking`` takes the noise as an argument.

What broke: ``Sparsemax.__init__`` sets ``self.dim`` before ``super().__init__()``, which kiln refused (now a plain
attribute is kept and a parameter, buffer or submodule there raises torch's AttributeError; frontend/module.py,
tests/frontend/test_module_methods.py). N-BEATS' ``self.parameters = nn.ParameterList(...)`` shadowed the
``parameters`` method in kiln (kiln keeps registered entries in ``__dict__``; a name that is one of the class's
methods now stays in the registry only, as torch's; same files). The sparsemax ``Function``'s ``input -= max_val``
did not reach the caller's tensor in kiln, and kiln's ``custom.vjp`` read the input after the write, so its gradient
also ran through the write (harmless for sparsemax, whose gradient sums to zero over a row; 2x for ``input.mul_(2)``);
now the caller's tensor is written and the gradient is the backward's alone (frontend/custom_function.py,
tests/autodiff/test_custom_function.py, ``test_sparsemax_shifts_its_input_in_place_as_torch``). The compiled
pretraining step stopped at ``batch_means[batch_stds == 0]`` (a data-dependent shape, which kiln refused to trace;
torch.compile takes it): ``a[mask] = b[mask]`` under masks computed alike is now one ``where``
(frontend/pending_masked_rows.py, tests/frontend/test_pending_masked_rows_traced_vs_torch.py). The whole MAE's ONNX
file (its ``torch.rand`` a ``uniform.0`` input) did not load in onnxruntime: the seed input, made at the draw, sat
among the weights' inputs and shifted every later weight's name and shape; it now follows them (runtime/export.py,
tests/onnx/test_onnx_export_draw_before_weights.py). Everything else agreed as first written.
"""

from __future__ import annotations


import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require, require_torch


# --- TabNet: pytorch_tabnet/sparsemax.py -----------------------------------------------------------------------------


def sparsemax_module(torch, nn, F):
    """pytorch_tabnet/sparsemax.py as written (``Function`` is ``torch.autograd.Function``)."""
    Function = torch.autograd.Function

    def _make_ix_like(input, dim=0):
        d = input.size(dim)
        rho = torch.arange(1, d + 1, device=input.device, dtype=input.dtype)
        view = [1] * input.dim()
        view[0] = -1
        return rho.view(view).transpose(0, dim)

    class SparsemaxFunction(Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input -= max_val  # same numerical stability trick as for softmax
            tau, supp_size = SparsemaxFunction._threshold_and_support(input, dim=dim)
            output = torch.clamp(input - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0

            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze()
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            input_srt, _ = torch.sort(input, descending=True, dim=dim)
            input_cumsum = input_srt.cumsum(dim) - 1
            rhos = _make_ix_like(input, dim)
            support = rhos * input_srt > input_cumsum

            support_size = support.sum(dim=dim).unsqueeze(dim)
            tau = input_cumsum.gather(dim, support_size - 1)
            tau /= support_size.to(input.dtype)
            return tau, support_size

    sparsemax = SparsemaxFunction.apply

    class Sparsemax(nn.Module):
        def __init__(self, dim=-1):
            self.dim = dim
            super(Sparsemax, self).__init__()

        def forward(self, input):
            return sparsemax(input, self.dim)

    class Entmax15Function(Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input = input - max_val  # same numerical stability trick as for softmax
            input = input / 2  # divide by 2 to solve actual Entmax
            tau_star, _ = Entmax15Function._threshold_and_support(input, dim)
            output = torch.clamp(input - tau_star, min=0) ** 2
            ctx.save_for_backward(output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            Y, = ctx.saved_tensors
            gppr = Y.sqrt()  # = 1 / g'' (Y)
            dX = grad_output * gppr
            q = dX.sum(ctx.dim) / gppr.sum(ctx.dim)
            q = q.unsqueeze(ctx.dim)
            dX -= q * gppr
            return dX, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            Xsrt, _ = torch.sort(input, descending=True, dim=dim)
            rho = _make_ix_like(input, dim)
            mean = Xsrt.cumsum(dim) / rho
            mean_sq = (Xsrt ** 2).cumsum(dim) / rho
            ss = rho * (mean_sq - mean ** 2)
            delta = (1 - ss) / rho
            delta_nz = torch.clamp(delta, 0)
            tau = mean - torch.sqrt(delta_nz)
            support_size = (tau <= Xsrt).sum(dim).unsqueeze(dim)
            tau_star = tau.gather(dim, support_size - 1)
            return tau_star, support_size

    entmax15 = Entmax15Function.apply

    class Entmax15(nn.Module):
        def __init__(self, dim=-1):
            self.dim = dim
            super(Entmax15, self).__init__()

        def forward(self, input):
            return entmax15(input, self.dim)

    return Sparsemax, Entmax15


def test_sparsemax_shifts_its_input_in_place_as_torch(float64_default):
    """``SparsemaxFunction.forward``'s ``input -= max_val`` writes the caller's tensor (torch's forward shares its
    storage); the gradient is the reference backward's alone, to the tensor as it was (also for a later use of the
    shifted tensor); outputs sum to 1 and are sparse; ``Entmax15`` rebinds instead and leaves its input alone."""
    x0 = np.random.default_rng(4).standard_normal((4, 6)) * 2
    weights = np.random.default_rng(5).standard_normal((4, 6))
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        Sparsemax, Entmax15 = sparsemax_module(torch, nn, F)
        record = {}
        for selector in (Sparsemax(dim=-1), Entmax15(dim=-1)):
            leaf = torch.tensor(x0, requires_grad=True)
            x = leaf * 1
            out = selector(x)
            ((out * torch.tensor(weights)).sum() + (x * x).sum()).backward()
            kind = type(selector).__name__
            record[kind] = {"out": array(out), "x after": array(x), "grad": array(leaf.grad)}
        records.append(record)
    assert_same_records(records[0], records[1])
    ours = records[0]
    np.testing.assert_allclose(ours["Sparsemax"]["x after"], x0 - x0.max(-1, keepdims=True))
    np.testing.assert_allclose(ours["Entmax15"]["x after"], x0)
    for kind in ("Sparsemax", "Entmax15"):
        np.testing.assert_allclose(ours[kind]["out"].sum(-1), 1.0)
        assert (ours[kind]["out"] == 0).any()


# --- TabNet: pytorch_tabnet/tab_network.py ---------------------------------------------------------------------------


def tabnet(torch, nn, F, mask_type="sparsemax", input_dim=6, output_dim=3, cat_idxs=(1, 4), cat_dims=(4, 3),
           cat_emb_dim=(2, 1), n_d=4, n_a=4, n_steps=2, virtual_batch_size=4, pretraining=False):
    """tab_network.py's TabNet (v4: group attention matrix, ``EmbeddingGenerator``), classes as written."""
    Linear, BatchNorm1d, ReLU = torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU  # from torch.nn import ...

    Sparsemax, Entmax15 = sparsemax_module(torch, nn, F)

    def initialize_non_glu(module, input_dim, output_dim):
        gain_value = np.sqrt((input_dim + output_dim) / np.sqrt(4 * input_dim))
        torch.nn.init.xavier_normal_(module.weight, gain=gain_value)
        return

    def initialize_glu(module, input_dim, output_dim):
        gain_value = np.sqrt((input_dim + output_dim) / np.sqrt(input_dim))
        torch.nn.init.xavier_normal_(module.weight, gain=gain_value)
        return

    class GBN(torch.nn.Module):
        """Ghost Batch Normalization https://arxiv.org/abs/1705.08741"""

        def __init__(self, input_dim, virtual_batch_size=128, momentum=0.01):
            super(GBN, self).__init__()
            self.input_dim = input_dim
            self.virtual_batch_size = virtual_batch_size
            self.bn = BatchNorm1d(self.input_dim, momentum=momentum)

        def forward(self, x):
            chunks = x.chunk(int(np.ceil(x.shape[0] / self.virtual_batch_size)), 0)
            res = [self.bn(x_) for x_ in chunks]
            return torch.cat(res, dim=0)

    class TabNetEncoder(torch.nn.Module):
        def __init__(self, input_dim, output_dim, n_d=8, n_a=8, n_steps=3, gamma=1.3, n_independent=2, n_shared=2,
                     epsilon=1e-15, virtual_batch_size=128, momentum=0.02, mask_type="sparsemax",
                     group_attention_matrix=None):
            super(TabNetEncoder, self).__init__()
            self.input_dim = input_dim
            self.output_dim = output_dim
            self.is_multi_task = isinstance(output_dim, list)
            self.n_d = n_d
            self.n_a = n_a
            self.n_steps = n_steps
            self.gamma = gamma
            self.epsilon = epsilon
            self.n_independent = n_independent
            self.n_shared = n_shared
            self.virtual_batch_size = virtual_batch_size
            self.mask_type = mask_type
            self.initial_bn = BatchNorm1d(self.input_dim, momentum=0.01)
            self.group_attention_matrix = group_attention_matrix

            if self.group_attention_matrix is None:
                # no groups
                self.group_attention_matrix = torch.eye(self.input_dim)
                self.attention_dim = self.input_dim
            else:
                self.attention_dim = self.group_attention_matrix.shape[0]

            if self.n_shared > 0:
                shared_feat_transform = torch.nn.ModuleList()
                for i in range(self.n_shared):
                    if i == 0:
                        shared_feat_transform.append(Linear(self.input_dim, 2 * (n_d + n_a), bias=False))
                    else:
                        shared_feat_transform.append(Linear(n_d + n_a, 2 * (n_d + n_a), bias=False))
            else:
                shared_feat_transform = None

            self.initial_splitter = FeatTransformer(self.input_dim, n_d + n_a, shared_feat_transform,
                                                    n_glu_independent=self.n_independent,
                                                    virtual_batch_size=self.virtual_batch_size, momentum=momentum)

            self.feat_transformers = torch.nn.ModuleList()
            self.att_transformers = torch.nn.ModuleList()

            for step in range(n_steps):
                transformer = FeatTransformer(self.input_dim, n_d + n_a, shared_feat_transform,
                                              n_glu_independent=self.n_independent,
                                              virtual_batch_size=self.virtual_batch_size, momentum=momentum)
                attention = AttentiveTransformer(n_a, self.attention_dim, group_matrix=group_attention_matrix,
                                                 virtual_batch_size=self.virtual_batch_size, momentum=momentum,
                                                 mask_type=self.mask_type)
                self.feat_transformers.append(transformer)
                self.att_transformers.append(attention)

        def forward(self, x, prior=None):
            x = self.initial_bn(x)

            bs = x.shape[0]  # batch size
            if prior is None:
                prior = torch.ones((bs, self.attention_dim)).to(x.device)

            M_loss = 0
            att = self.initial_splitter(x)[:, self.n_d:]
            steps_output = []
            for step in range(self.n_steps):
                M = self.att_transformers[step](prior, att)
                M_loss += torch.mean(torch.sum(torch.mul(M, torch.log(M + self.epsilon)), dim=1))
                # update prior
                prior = torch.mul(self.gamma - M, prior)
                # output
                M_feature_level = torch.matmul(M, self.group_attention_matrix)
                masked_x = torch.mul(M_feature_level, x)
                out = self.feat_transformers[step](masked_x)
                d = ReLU()(out[:, :self.n_d])
                steps_output.append(d)
                # update attention
                att = out[:, self.n_d:]

            M_loss /= self.n_steps
            return steps_output, M_loss

        def forward_masks(self, x):
            x = self.initial_bn(x)
            bs = x.shape[0]  # batch size
            prior = torch.ones((bs, self.attention_dim)).to(x.device)
            M_explain = torch.zeros(x.shape).to(x.device)
            att = self.initial_splitter(x)[:, self.n_d:]
            masks = {}

            for step in range(self.n_steps):
                M = self.att_transformers[step](prior, att)
                M_feature_level = torch.matmul(M, self.group_attention_matrix)
                masks[step] = M_feature_level
                # update prior
                prior = torch.mul(self.gamma - M, prior)
                # output
                masked_x = torch.mul(M_feature_level, x)
                out = self.feat_transformers[step](masked_x)
                d = ReLU()(out[:, :self.n_d])
                # explain
                step_importance = torch.sum(d, axis=1)
                M_explain += torch.mul(M_feature_level, step_importance.unsqueeze(dim=1))
                # update attention
                att = out[:, self.n_d:]

            return M_explain, masks

    class TabNetNoEmbeddings(torch.nn.Module):
        def __init__(self, input_dim, output_dim, n_d=8, n_a=8, n_steps=3, gamma=1.3, n_independent=2, n_shared=2,
                     epsilon=1e-15, virtual_batch_size=128, momentum=0.02, mask_type="sparsemax",
                     group_attention_matrix=None):
            super(TabNetNoEmbeddings, self).__init__()
            self.input_dim = input_dim
            self.output_dim = output_dim
            self.is_multi_task = isinstance(output_dim, list)
            self.n_d = n_d
            self.n_a = n_a
            self.n_steps = n_steps
            self.gamma = gamma
            self.epsilon = epsilon
            self.n_independent = n_independent
            self.n_shared = n_shared
            self.virtual_batch_size = virtual_batch_size
            self.mask_type = mask_type
            self.initial_bn = BatchNorm1d(self.input_dim, momentum=0.01)

            self.encoder = TabNetEncoder(input_dim=input_dim, output_dim=output_dim, n_d=n_d, n_a=n_a,
                                         n_steps=n_steps, gamma=gamma, n_independent=n_independent,
                                         n_shared=n_shared, epsilon=epsilon, virtual_batch_size=virtual_batch_size,
                                         momentum=momentum, mask_type=mask_type,
                                         group_attention_matrix=group_attention_matrix)

            if self.is_multi_task:
                self.multi_task_mappings = torch.nn.ModuleList()
                for task_dim in output_dim:
                    task_mapping = Linear(n_d, task_dim, bias=False)
                    initialize_non_glu(task_mapping, n_d, task_dim)
                    self.multi_task_mappings.append(task_mapping)
            else:
                self.final_mapping = Linear(n_d, output_dim, bias=False)
                initialize_non_glu(self.final_mapping, n_d, output_dim)

        def forward(self, x):
            res = 0
            steps_output, M_loss = self.encoder(x)
            res = torch.sum(torch.stack(steps_output, dim=0), dim=0)

            if self.is_multi_task:
                # Result will be in list format
                out = []
                for task_mapping in self.multi_task_mappings:
                    out.append(task_mapping(res))
            else:
                out = self.final_mapping(res)
            return out, M_loss

        def forward_masks(self, x):
            return self.encoder.forward_masks(x)

    class TabNet(torch.nn.Module):
        def __init__(self, input_dim, output_dim, n_d=8, n_a=8, n_steps=3, gamma=1.3, cat_idxs=[], cat_dims=[],
                     cat_emb_dim=1, n_independent=2, n_shared=2, epsilon=1e-15, virtual_batch_size=128,
                     momentum=0.02, mask_type="sparsemax", group_attention_matrix=[]):
            super(TabNet, self).__init__()
            self.cat_idxs = cat_idxs or []
            self.cat_dims = cat_dims or []
            self.cat_emb_dim = cat_emb_dim

            self.input_dim = input_dim
            self.output_dim = output_dim
            self.n_d = n_d
            self.n_a = n_a
            self.n_steps = n_steps
            self.gamma = gamma
            self.epsilon = epsilon
            self.n_independent = n_independent
            self.n_shared = n_shared
            self.mask_type = mask_type

            if self.n_steps <= 0:
                raise ValueError("n_steps should be a positive integer.")
            if self.n_independent == 0 and self.n_shared == 0:
                raise ValueError("n_shared and n_independent can't be both zero.")

            self.virtual_batch_size = virtual_batch_size
            self.embedder = EmbeddingGenerator(input_dim, cat_dims, cat_idxs, cat_emb_dim, group_attention_matrix)
            self.post_embed_dim = self.embedder.post_embed_dim

            self.tabnet = TabNetNoEmbeddings(self.post_embed_dim, output_dim, n_d, n_a, n_steps, gamma,
                                             n_independent, n_shared, epsilon, virtual_batch_size, momentum,
                                             mask_type, self.embedder.embedding_group_matrix)

        def forward(self, x):
            x = self.embedder(x)
            return self.tabnet(x)

        def forward_masks(self, x):
            x = self.embedder(x)
            return self.tabnet.forward_masks(x)

    class AttentiveTransformer(torch.nn.Module):
        def __init__(self, input_dim, group_dim, group_matrix, virtual_batch_size=128, momentum=0.02,
                     mask_type="sparsemax"):
            super(AttentiveTransformer, self).__init__()
            self.fc = Linear(input_dim, group_dim, bias=False)
            initialize_non_glu(self.fc, input_dim, group_dim)
            self.bn = GBN(group_dim, virtual_batch_size=virtual_batch_size, momentum=momentum)

            if mask_type == "sparsemax":
                # Sparsemax
                self.selector = Sparsemax(dim=-1)
            elif mask_type == "entmax":
                # Entmax
                self.selector = Entmax15(dim=-1)
            else:
                raise NotImplementedError("Please choose either sparsemax or entmax as masktype")

        def forward(self, priors, processed_feat):
            x = self.fc(processed_feat)
            x = self.bn(x)
            x = torch.mul(x, priors)
            x = self.selector(x)
            return x

    class FeatTransformer(torch.nn.Module):
        def __init__(self, input_dim, output_dim, shared_layers, n_glu_independent, virtual_batch_size=128,
                     momentum=0.02):
            super(FeatTransformer, self).__init__()
            params = {"n_glu": n_glu_independent, "virtual_batch_size": virtual_batch_size, "momentum": momentum}

            if shared_layers is None:
                # no shared layers
                self.shared = torch.nn.Identity()
                is_first = True
            else:
                self.shared = GLU_Block(input_dim, output_dim, first=True, shared_layers=shared_layers,
                                        n_glu=len(shared_layers), virtual_batch_size=virtual_batch_size,
                                        momentum=momentum)
                is_first = False

            if n_glu_independent == 0:
                # no independent layers
                self.specifics = torch.nn.Identity()
            else:
                spec_input_dim = input_dim if is_first else output_dim
                self.specifics = GLU_Block(spec_input_dim, output_dim, first=is_first, **params)

        def forward(self, x):
            x = self.shared(x)
            x = self.specifics(x)
            return x

    class GLU_Block(torch.nn.Module):
        def __init__(self, input_dim, output_dim, n_glu=2, first=False, shared_layers=None, virtual_batch_size=128,
                     momentum=0.02):
            super(GLU_Block, self).__init__()
            self.first = first
            self.shared_layers = shared_layers
            self.n_glu = n_glu
            self.glu_layers = torch.nn.ModuleList()

            params = {"virtual_batch_size": virtual_batch_size, "momentum": momentum}

            fc = shared_layers[0] if shared_layers else None
            self.glu_layers.append(GLU_Layer(input_dim, output_dim, fc=fc, **params))
            for glu_id in range(1, self.n_glu):
                fc = shared_layers[glu_id] if shared_layers else None
                self.glu_layers.append(GLU_Layer(output_dim, output_dim, fc=fc, **params))

        def forward(self, x):
            scale = torch.sqrt(torch.FloatTensor([0.5]).to(x.device))
            if self.first:  # the first layer of the block has no scale multiplication
                x = self.glu_layers[0](x)
                layers_left = range(1, self.n_glu)
            else:
                layers_left = range(self.n_glu)

            for glu_id in layers_left:
                x = torch.add(x, self.glu_layers[glu_id](x))
                x = x * scale
            return x

    class GLU_Layer(torch.nn.Module):
        def __init__(self, input_dim, output_dim, fc=None, virtual_batch_size=128, momentum=0.02):
            super(GLU_Layer, self).__init__()

            self.output_dim = output_dim
            if fc:
                self.fc = fc
            else:
                self.fc = Linear(input_dim, 2 * output_dim, bias=False)
            initialize_glu(self.fc, input_dim, 2 * output_dim)

            self.bn = GBN(2 * output_dim, virtual_batch_size=virtual_batch_size, momentum=momentum)

        def forward(self, x):
            x = self.fc(x)
            x = self.bn(x)
            out = torch.mul(x[:, :self.output_dim], torch.sigmoid(x[:, self.output_dim:]))
            return out

    class EmbeddingGenerator(torch.nn.Module):
        def __init__(self, input_dim, cat_dims, cat_idxs, cat_emb_dims, group_matrix):
            super(EmbeddingGenerator, self).__init__()

            if cat_dims == [] and cat_idxs == []:
                self.skip_embedding = True
                self.post_embed_dim = input_dim
                self.embedding_group_matrix = group_matrix.to(group_matrix.device)
                return
            else:
                self.skip_embedding = False

            self.post_embed_dim = int(input_dim + np.sum(cat_emb_dims) - len(cat_emb_dims))

            self.embeddings = torch.nn.ModuleList()

            for cat_dim, emb_dim in zip(cat_dims, cat_emb_dims):
                self.embeddings.append(torch.nn.Embedding(cat_dim, emb_dim))

            # record continuous indices
            self.continuous_idx = torch.ones(input_dim, dtype=torch.bool)
            self.continuous_idx[cat_idxs] = 0

            # update group matrix
            n_groups = group_matrix.shape[0]
            self.embedding_group_matrix = torch.empty((n_groups, self.post_embed_dim), device=group_matrix.device)
            for group_idx in range(n_groups):
                post_emb_idx = 0
                cat_feat_counter = 0
                for init_feat_idx in range(input_dim):
                    if self.continuous_idx[init_feat_idx] == 1:
                        # this means that no embedding is applied to this column
                        self.embedding_group_matrix[group_idx, post_emb_idx] = group_matrix[group_idx, init_feat_idx]  # noqa
                        post_emb_idx += 1
                    else:
                        # this is a categorical feature which creates multiple embeddings
                        n_embeddings = cat_emb_dims[cat_feat_counter]
                        self.embedding_group_matrix[group_idx, post_emb_idx:post_emb_idx+n_embeddings] = group_matrix[group_idx, init_feat_idx] / n_embeddings  # noqa
                        post_emb_idx += n_embeddings
                        cat_feat_counter += 1

        def forward(self, x):
            """Apply embeddings to inputs (batch_size, input_dim) -> (batch_size, self.post_embed_dim)."""
            if self.skip_embedding:
                # no embeddings required
                return x

            cols = []
            cat_feat_counter = 0
            for feat_init_idx, is_continuous in enumerate(self.continuous_idx):
                # Enumerate through continuous idx boolean mask to apply embeddings
                if is_continuous:
                    cols.append(x[:, feat_init_idx].float().view(-1, 1))
                else:
                    cols.append(self.embeddings[cat_feat_counter](x[:, feat_init_idx].long()))
                    cat_feat_counter += 1
            # concat
            post_embeddings = torch.cat(cols, dim=1)
            return post_embeddings

    class TabNetDecoder(torch.nn.Module):
        def __init__(self, input_dim, n_d=8, n_steps=3, n_independent=1, n_shared=1, virtual_batch_size=128,
                     momentum=0.02):
            super(TabNetDecoder, self).__init__()
            self.input_dim = input_dim
            self.n_d = n_d
            self.n_steps = n_steps
            self.n_independent = n_independent
            self.n_shared = n_shared
            self.virtual_batch_size = virtual_batch_size

            self.feat_transformers = torch.nn.ModuleList()

            if self.n_shared > 0:
                shared_feat_transform = torch.nn.ModuleList()
                for i in range(self.n_shared):
                    shared_feat_transform.append(Linear(n_d, 2 * n_d, bias=False))
            else:
                shared_feat_transform = None

            for step in range(n_steps):
                transformer = FeatTransformer(n_d, n_d, shared_feat_transform, n_glu_independent=self.n_independent,
                                              virtual_batch_size=self.virtual_batch_size, momentum=momentum)
                self.feat_transformers.append(transformer)

            self.reconstruction_layer = Linear(n_d, self.input_dim, bias=False)
            initialize_non_glu(self.reconstruction_layer, n_d, self.input_dim)

        def forward(self, steps_output):
            res = 0
            for step_nb, step_output in enumerate(steps_output):
                x = self.feat_transformers[step_nb](step_output)
                res = torch.add(res, x)
            res = self.reconstruction_layer(res)
            return res

    class RandomObfuscator(torch.nn.Module):
        """``fed_groups``, when set, replaces the ``torch.bernoulli`` draw (the libraries' generators differ)."""

        def __init__(self, pretraining_ratio, group_matrix):
            super(RandomObfuscator, self).__init__()
            self.pretraining_ratio = pretraining_ratio
            # group matrix is set to boolean here to pass all posssible information
            self.group_matrix = (group_matrix > 0) + 0.
            self.num_groups = group_matrix.shape[0]
            self.fed_groups = None

        def forward(self, x):
            bs = x.shape[0]
            obfuscated_groups = torch.bernoulli(
                self.pretraining_ratio * torch.ones((bs, self.num_groups), device=x.device)
            ) if self.fed_groups is None else self.fed_groups
            obfuscated_vars = torch.matmul(obfuscated_groups, self.group_matrix)
            masked_input = torch.mul(1 - obfuscated_vars, x)
            return masked_input, obfuscated_groups, obfuscated_vars

    class TabNetPretraining(torch.nn.Module):
        def __init__(self, input_dim, pretraining_ratio=0.2, n_d=8, n_a=8, n_steps=3, gamma=1.3, cat_idxs=[],
                     cat_dims=[], cat_emb_dim=1, n_independent=2, n_shared=2, epsilon=1e-15, virtual_batch_size=128,
                     momentum=0.02, mask_type="sparsemax", n_shared_decoder=1, n_indep_decoder=1,
                     group_attention_matrix=None):
            super(TabNetPretraining, self).__init__()

            self.cat_idxs = cat_idxs or []
            self.cat_dims = cat_dims or []
            self.cat_emb_dim = cat_emb_dim

            self.input_dim = input_dim
            self.n_d = n_d
            self.n_a = n_a
            self.n_steps = n_steps
            self.gamma = gamma
            self.epsilon = epsilon
            self.n_independent = n_independent
            self.n_shared = n_shared
            self.mask_type = mask_type
            self.pretraining_ratio = pretraining_ratio
            self.n_shared_decoder = n_shared_decoder
            self.n_indep_decoder = n_indep_decoder

            if self.n_steps <= 0:
                raise ValueError("n_steps should be a positive integer.")
            if self.n_independent == 0 and self.n_shared == 0:
                raise ValueError("n_shared and n_independent can't be both zero.")

            self.virtual_batch_size = virtual_batch_size
            self.embedder = EmbeddingGenerator(input_dim, cat_dims, cat_idxs, cat_emb_dim, group_attention_matrix)
            self.post_embed_dim = self.embedder.post_embed_dim

            self.masker = RandomObfuscator(self.pretraining_ratio,
                                           group_matrix=self.embedder.embedding_group_matrix)
            self.encoder = TabNetEncoder(input_dim=self.post_embed_dim, output_dim=self.post_embed_dim, n_d=n_d,
                                         n_a=n_a, n_steps=n_steps, gamma=gamma, n_independent=n_independent,
                                         n_shared=n_shared, epsilon=epsilon, virtual_batch_size=virtual_batch_size,
                                         momentum=momentum, mask_type=mask_type,
                                         group_attention_matrix=self.embedder.embedding_group_matrix)
            self.decoder = TabNetDecoder(self.post_embed_dim, n_d=n_d, n_steps=n_steps,
                                         n_independent=self.n_indep_decoder, n_shared=self.n_shared_decoder,
                                         virtual_batch_size=virtual_batch_size, momentum=momentum)

        def forward(self, x):
            """Returns: res, embedded_x, obf_vars (the reconstruction, the embedded input, the obfuscated ones)."""
            embedded_x = self.embedder(x)
            if self.training:
                masked_x, obfuscated_groups, obfuscated_vars = self.masker(embedded_x)
                # set prior of encoder with obfuscated groups
                prior = 1 - obfuscated_groups
                steps_out, _ = self.encoder(masked_x, prior=prior)
                res = self.decoder(steps_out)
                return res, embedded_x, obfuscated_vars
            else:
                steps_out, _ = self.encoder(embedded_x)
                res = self.decoder(steps_out)
                return res, embedded_x, torch.ones(embedded_x.shape).to(x.device)

        def forward_masks(self, x):
            embedded_x = self.embedder(x)
            return self.encoder.forward_masks(embedded_x)

    def create_group_matrix(list_groups, input_dim):  # utils.py, without groups
        return torch.eye(input_dim)

    group_matrix = create_group_matrix([], input_dim)
    if pretraining:
        return TabNetPretraining(input_dim, pretraining_ratio=0.5, n_d=n_d, n_a=n_a, n_steps=n_steps,
                                 cat_idxs=list(cat_idxs), cat_dims=list(cat_dims), cat_emb_dim=list(cat_emb_dim),
                                 virtual_batch_size=virtual_batch_size, mask_type=mask_type,
                                 group_attention_matrix=group_matrix)
    return TabNet(input_dim, output_dim, n_d=n_d, n_a=n_a, n_steps=n_steps, cat_idxs=list(cat_idxs),
                  cat_dims=list(cat_dims), cat_emb_dim=list(cat_emb_dim), virtual_batch_size=virtual_batch_size,
                  mask_type=mask_type, group_attention_matrix=group_matrix)


def create_explain_matrix(input_dim, cat_emb_dim, cat_idxs, post_embed_dim):
    """utils.py's reducing matrix (post-embedding columns -> input columns), dense instead of ``csc_matrix``."""
    if isinstance(cat_emb_dim, int):
        all_emb_impact = [cat_emb_dim - 1] * len(cat_idxs)
    else:
        all_emb_impact = [emb_dim - 1 for emb_dim in cat_emb_dim]

    acc_emb = 0
    nb_emb = 0
    indices_trick = []
    for i in range(input_dim):
        if i not in cat_idxs:
            indices_trick.append([i + acc_emb])
        else:
            indices_trick.append(range(i + acc_emb, i + acc_emb + all_emb_impact[nb_emb] + 1))
            acc_emb += all_emb_impact[nb_emb]
            nb_emb += 1

    reducing_matrix = np.zeros((post_embed_dim, input_dim))
    for i, cols in enumerate(indices_trick):
        reducing_matrix[cols, i] = 1
    return reducing_matrix


TABNET_ROWS, TABNET_BATCH = 20, 10


def _tabular_data(rows=TABNET_ROWS, seed=0):
    """Six columns, the 2nd (4 levels) and 5th (3 levels) categorical as float codes (as a NumPy matrix holds them),
    three classes that depend on both kinds."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 6))
    X[:, 1] = rng.integers(0, 4, rows)
    X[:, 4] = rng.integers(0, 3, rows)
    y = ((X[:, 0] > 0).astype(int) + (X[:, 1] >= 2) + (X[:, 4] == 2)) % 3
    return X, y


def train_tabnet(epochs=2, compiled=False, lambda_sparse=1e-3, clip_value=1):
    """abstract_model.py's ``_train_batch`` (``param.grad = None``, ``loss - lambda_sparse * M_loss``,
    ``clip_grad_norm_``, Adam) over batches of ``TABNET_BATCH`` (ghost batches of 4: chunks 4, 4, 2), ``StepLR`` per
    epoch, then ``explain`` (``forward_masks`` in eval mode, the reducing matrix, ``normalize``) and ``predict_proba``;
    with ``compiled`` kiln's whole batch step is one ``kiln.compile(fullgraph=True)`` graph."""
    X, y = _tabular_data()

    def train(torch, nn, F, network):
        optimizer = torch.optim.Adam(network.parameters(), lr=2e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
        loss_fn = torch.nn.functional.cross_entropy
        record = {"losses": []}
        with torch.no_grad():
            network.eval()
            output, M_loss = network(torch.tensor(X).float())
            record["first_output"], record["first_M_loss"] = array(output), M_loss.item()
            network.train()

        def compute_loss(y_pred, y_true):
            return loss_fn(y_pred, y_true.long())

        def _train_batch(X, y):
            X = X.to("cpu").float()
            y = y.to("cpu").float()
            for param in network.parameters():
                param.grad = None
            output, M_loss = network(X)
            loss = compute_loss(output, y)
            # Add the overall sparsity loss
            loss = loss - lambda_sparse * M_loss
            loss.backward()
            if not compiled and "grads" not in record:
                record["grads"] = gradients(network)
            if clip_value:
                torch.nn.utils.clip_grad_norm_(network.parameters(), clip_value)
            optimizer.step()
            return loss

        run = kiln.compile(_train_batch, fullgraph=True) if compiled and torch is kiln else _train_batch
        for epoch in range(epochs):
            for start in range(0, TABNET_ROWS, TABNET_BATCH):
                loss = run(torch.tensor(X[start:start + TABNET_BATCH]), torch.tensor(y[start:start + TABNET_BATCH]))
                record["losses"].append(loss.cpu().detach().numpy().item())
            scheduler.step()
        record["state"] = snapshot(network)
        forward_masks = kiln.compile(network.forward_masks) if compiled and torch is kiln else network.forward_masks
        record["explain"], record["masks"] = explain(torch, network, X, forward_masks)
        with torch.no_grad():
            record["proba"] = array(torch.nn.Softmax(dim=1)(network(torch.tensor(X).float())[0]))
        return record

    return train


def UnsupervisedLoss(torch, y_pred, embedded_x, obf_vars, eps=1e-9):
    """pytorch_tabnet/metrics.py's pretraining loss: the reconstruction error of the obfuscated variables, each
    normalised by the batch's variance of that variable."""
    errors = y_pred - embedded_x
    reconstruction_errors = torch.mul(errors, obf_vars) ** 2
    batch_means = torch.mean(embedded_x, dim=0)
    batch_means[batch_means == 0] = 1

    batch_stds = torch.std(embedded_x, dim=0) ** 2
    batch_stds[batch_stds == 0] = batch_means[batch_stds == 0]
    features_loss = torch.matmul(reconstruction_errors, 1 / batch_stds)
    # compute the number of obfuscated variables to reconstruct
    nb_reconstructed_variables = torch.sum(obf_vars, dim=1)
    # take the mean of the reconstructed variable errors
    features_loss = features_loss / (nb_reconstructed_variables + eps)
    # here we take the mean per batch, contrary to the paper
    loss = torch.mean(features_loss)
    return loss


def train_tabnet_pretraining(epochs=2, compiled=False):
    """pretraining.py's ``_train_batch`` (``param.grad = None``, ``output, embedded_x, obf_vars =
    self.network(X)``, ``UnsupervisedLoss``, Adam) on data with a constant column (``batch_stds == 0``: the means
    replace it, one of them 0 and so 1); the obfuscation draws fed; eval-mode reconstruction after."""
    X, _ = _tabular_data()
    X[:, 3] = 0.0  # a constant continuous column: its variance is 0 and its mean 0
    groups = (np.random.default_rng(7).random((epochs * TABNET_ROWS // TABNET_BATCH, TABNET_BATCH, 6)) < 0.5)

    def train(torch, nn, F, network):
        optimizer = torch.optim.Adam(network.parameters(), lr=2e-2)
        record = {"losses": []}

        def _train_batch(X, obfuscated_groups):
            X = X.to("cpu").float()
            network.masker.fed_groups = obfuscated_groups
            for param in network.parameters():
                param.grad = None
            output, embedded_x, obf_vars = network(X)
            loss = UnsupervisedLoss(torch, output, embedded_x, obf_vars)
            loss.backward()
            if not compiled and "grads" not in record:
                record["grads"] = gradients(network)
            optimizer.step()
            return loss

        run = kiln.compile(_train_batch, fullgraph=True) if compiled and torch is kiln else _train_batch
        network.train()
        batch = 0
        for epoch in range(epochs):
            for start in range(0, TABNET_ROWS, TABNET_BATCH):
                fed = torch.tensor(groups[batch]).to(torch.get_default_dtype())  # as bernoulli of torch.ones draws
                loss = run(torch.tensor(X[start:start + TABNET_BATCH]), fed)
                record["losses"].append(loss.item())
                batch += 1
        record["state"] = snapshot(network)
        network.eval()
        with torch.no_grad():
            res, embedded_x, ones = network(torch.tensor(X).float())
            record["eval"] = {"res": array(res), "embedded": array(embedded_x), "ones": array(ones),
                              "loss": UnsupervisedLoss(torch, res, embedded_x, ones).item()}
        return record

    return train


def _tabnet_pretraining(torch, nn, F):
    return tabnet(torch, nn, F, pretraining=True)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_tabnet_pretraining_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(_tabnet_pretraining, train_tabnet_pretraining(compiled=compiled))
    assert_same_records(ours, theirs)


def explain(torch, network, X, forward_masks, normalize=True):
    """abstract_model.py's ``explain`` over one batch (``forward_masks`` is the network's, or kiln's compiled)."""
    network.eval()
    reducing_matrix = create_explain_matrix(network.input_dim, network.cat_emb_dim, network.cat_idxs,
                                            network.post_embed_dim)
    data = torch.tensor(X).float()
    M_explain, masks = forward_masks(data)
    for key, value in masks.items():
        masks[key] = value.cpu().detach().numpy() @ reducing_matrix
    res_explain = M_explain.cpu().detach().numpy() @ reducing_matrix
    if normalize:
        res_explain /= np.sum(res_explain, axis=1)[:, None]
    return res_explain, masks


@pytest.mark.parametrize("mask_type", ["sparsemax", "entmax"])
def test_tabnet_trains_as_torch(float64_default, mask_type):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: tabnet(torch, nn, F, mask_type=mask_type), train_tabnet())
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("mask_type", ["entmax"])  # sparsemax's compiled step: test_tabnet_pretraining_as_torch
def test_tabnet_compiled_step_as_torch(float64_default, mask_type):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: tabnet(torch, nn, F, mask_type=mask_type),
                                   train_tabnet(compiled=True))
    assert_same_records(ours, theirs)


def test_tabnet_float32_as_torch():
    """float32 (``X.float()`` as the reference feeds it), the compiled step against torch's eager loop over one epoch:
    the ghost batch of two rows normalises each column to about +-1, so its gradient is mostly rounding, which Adam
    turns into steps; the two libraries' float32 trajectories separate about tenfold a step after that (eagerly too)."""
    ours, theirs = run_in_lockstep(tabnet, train_tabnet(epochs=1, compiled=True))
    assert ours["proba"].dtype == theirs["proba"].dtype == np.float32
    sparse = dict(rtol=1e-3, atol=5e-5)  # sparsemax's threshold moves with the rounding of every entry of its row
    assert_same_records(ours, theirs, rtol=2e-5, atol=1e-5, looser={"explain": sparse, "masks": sparse})


def onnx_matches_torch(build, train, inputs, export_dir, rtol=1e-5, atol=1e-6, wrap=None, **export_options):
    """``build`` trained by ``train`` in kiln, written by ``kiln.onnx.export`` (eval mode; ``wrap(lib, nn, model)``
    the module exported, if given) and run by onnxruntime on ``inputs`` (NumPy arrays), gives the outputs of torch's
    twin holding kiln's trained state in eval mode."""
    ort = require("onnxruntime")
    wrap = wrap or (lambda lib, nn, model: model)
    kiln.manual_seed(0)
    model = build(*libraries("kiln"))
    train(*libraries("kiln"), model)
    model.eval()
    path = str(export_dir / "model.onnx")
    kiln.onnx.export(wrap(kiln, kiln.nn, model), tuple(kiln.tensor(x) for x in inputs), path, **export_options)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {given.name: x for given, x in zip(session.get_inputs(), inputs)})
    torch, nn, F = libraries("torch")
    twin = build(torch, nn, F)
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    with torch.no_grad():
        expected = wrap(torch, nn, twin.eval())(*[torch.tensor(x) for x in inputs])
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(outputs) == len(expected)
    for output, value in zip(outputs, expected):
        assert output.dtype == array(value).dtype
        np.testing.assert_allclose(output, array(value), rtol=rtol, atol=atol)


def test_tabnet_exports_to_onnx_with_torchs_outputs(tmp_path):
    """The trained float32 TabNet (embeddings, ghost batch norm in eval, sparsemax's sort/cumsum/gather) in
    onnxruntime gives torch's logits and ``M_loss``."""
    require_torch()
    X = _tabular_data(rows=7, seed=3)[0].astype(np.float32)
    onnx_matches_torch(tabnet, train_tabnet(epochs=1), [X], tmp_path, input_names=["X"])


# --- N-BEATS: philipperemy/n-beats nbeats_pytorch/model.py -----------------------------------------------------------


BACKCAST, FORECAST, UNITS, SERIES = 8, 4, 16, 6


def nbeats(torch, nn, F, stack_types=("trend", "seasonality", "generic"), share_weights_in_stack=False,
           basis_float=True):
    """model.py's ``NBeatsNet`` as written (its ``print`` lines left out): the blocks live in plain lists, their
    parameters in ``self.parameters = nn.ParameterList(...)`` (shadowing the method's name, as the reference does);
    ``basis_float`` False writes ``.double()`` for the bases' ``.float()`` (float64 runs: torch's ``mm`` does not mix
    dtypes)."""

    def basis(array):
        return array.float() if basis_float else array.double()

    class NBeatsNet(nn.Module):
        SEASONALITY_BLOCK = 'seasonality'
        TREND_BLOCK = 'trend'
        GENERIC_BLOCK = 'generic'

        def __init__(self, device=torch.device('cpu'), stack_types=(TREND_BLOCK, SEASONALITY_BLOCK),
                     nb_blocks_per_stack=3, forecast_length=5, backcast_length=10, thetas_dim=(4, 8),
                     share_weights_in_stack=False, hidden_layer_units=256, nb_harmonics=None):
            super(NBeatsNet, self).__init__()
            self.forecast_length = forecast_length
            self.backcast_length = backcast_length
            self.hidden_layer_units = hidden_layer_units
            self.nb_blocks_per_stack = nb_blocks_per_stack
            self.share_weights_in_stack = share_weights_in_stack
            self.nb_harmonics = nb_harmonics
            self.stack_types = stack_types
            self.stacks = []
            self.thetas_dim = thetas_dim
            self.parameters = []
            self.device = device
            for stack_id in range(len(self.stack_types)):
                self.stacks.append(self.create_stack(stack_id))
            self.parameters = nn.ParameterList(self.parameters)
            self.to(self.device)
            self._loss = None
            self._opt = None
            self._gen_intermediate_outputs = False
            self._intermediary_outputs = []

        def create_stack(self, stack_id):
            stack_type = self.stack_types[stack_id]
            blocks = []
            for block_id in range(self.nb_blocks_per_stack):
                block_init = NBeatsNet.select_block(stack_type)
                if self.share_weights_in_stack and block_id != 0:
                    block = blocks[-1]  # pick up the last one when we share weights.
                else:
                    block = block_init(self.hidden_layer_units, self.thetas_dim[stack_id], self.device,
                                       self.backcast_length, self.forecast_length, self.nb_harmonics)
                    self.parameters.extend(block.parameters())
                blocks.append(block)
            return blocks

        @staticmethod
        def select_block(block_type):
            if block_type == NBeatsNet.SEASONALITY_BLOCK:
                return SeasonalityBlock
            elif block_type == NBeatsNet.TREND_BLOCK:
                return TrendBlock
            else:
                return GenericBlock

        def get_generic_and_interpretable_outputs(self):
            g_pred = sum([a['value'][0] for a in self._intermediary_outputs if 'generic' in a['layer'].lower()])
            i_pred = sum([a['value'][0] for a in self._intermediary_outputs if 'generic' not in a['layer'].lower()])
            outputs = {o['layer']: o['value'][0] for o in self._intermediary_outputs}
            return g_pred, i_pred, outputs

        def forward(self, backcast):
            self._intermediary_outputs = []
            backcast = squeeze_last_dim(backcast)
            forecast = torch.zeros(size=(backcast.size()[0], self.forecast_length,))  # maybe batch size here.
            for stack_id in range(len(self.stacks)):
                for block_id in range(len(self.stacks[stack_id])):
                    b, f = self.stacks[stack_id][block_id](backcast)
                    backcast = backcast.to(self.device) - b
                    forecast = forecast.to(self.device) + f
                    block_type = self.stacks[stack_id][block_id].__class__.__name__
                    layer_name = f'stack_{stack_id}-{block_type}_{block_id}'
                    if self._gen_intermediate_outputs:
                        self._intermediary_outputs.append({'value': f.detach().numpy(), 'layer': layer_name})
            return backcast, forecast

    def squeeze_last_dim(tensor):
        if len(tensor.shape) == 3 and tensor.shape[-1] == 1:  # (128, 10, 1) => (128, 10).
            return tensor[..., 0]
        return tensor

    def seasonality_model(thetas, t, device):
        p = thetas.size()[-1]
        assert p <= thetas.shape[1], 'thetas_dim is too big.'
        p1, p2 = (p // 2, p // 2) if p % 2 == 0 else (p // 2, p // 2 + 1)
        s1 = basis(torch.tensor(np.array([np.cos(2 * np.pi * i * t) for i in range(p1)])))  # H/2-1
        s2 = basis(torch.tensor(np.array([np.sin(2 * np.pi * i * t) for i in range(p2)])))
        S = torch.cat([s1, s2])
        return thetas.mm(S.to(device))

    def trend_model(thetas, t, device):
        p = thetas.size()[-1]
        assert p <= 4, 'thetas_dim is too big.'
        T = basis(torch.tensor(np.array([t ** i for i in range(p)])))
        return thetas.mm(T.to(device))

    def linear_space(backcast_length, forecast_length, is_forecast=True):
        horizon = forecast_length if is_forecast else backcast_length
        return np.arange(0, horizon) / horizon

    class Block(nn.Module):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, share_thetas=False,
                     nb_harmonics=None):
            super(Block, self).__init__()
            self.units = units
            self.thetas_dim = thetas_dim
            self.backcast_length = backcast_length
            self.forecast_length = forecast_length
            self.share_thetas = share_thetas
            self.fc1 = nn.Linear(backcast_length, units)
            self.fc2 = nn.Linear(units, units)
            self.fc3 = nn.Linear(units, units)
            self.fc4 = nn.Linear(units, units)
            self.device = device
            self.backcast_linspace = linear_space(backcast_length, forecast_length, is_forecast=False)
            self.forecast_linspace = linear_space(backcast_length, forecast_length, is_forecast=True)
            if share_thetas:
                self.theta_f_fc = self.theta_b_fc = nn.Linear(units, thetas_dim, bias=False)
            else:
                self.theta_b_fc = nn.Linear(units, thetas_dim, bias=False)
                self.theta_f_fc = nn.Linear(units, thetas_dim, bias=False)

        def forward(self, x):
            x = squeeze_last_dim(x)
            x = F.relu(self.fc1(x.to(self.device)))
            x = F.relu(self.fc2(x))
            x = F.relu(self.fc3(x))
            x = F.relu(self.fc4(x))
            return x

    class SeasonalityBlock(Block):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, nb_harmonics=None):
            if nb_harmonics:
                super(SeasonalityBlock, self).__init__(units, nb_harmonics, device, backcast_length,
                                                       forecast_length, share_thetas=True)
            else:
                super(SeasonalityBlock, self).__init__(units, forecast_length, device, backcast_length,
                                                       forecast_length, share_thetas=True)

        def forward(self, x):
            x = super(SeasonalityBlock, self).forward(x)
            backcast = seasonality_model(self.theta_b_fc(x), self.backcast_linspace, self.device)
            forecast = seasonality_model(self.theta_f_fc(x), self.forecast_linspace, self.device)
            return backcast, forecast

    class TrendBlock(Block):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, nb_harmonics=None):
            super(TrendBlock, self).__init__(units, thetas_dim, device, backcast_length,
                                             forecast_length, share_thetas=True)

        def forward(self, x):
            x = super(TrendBlock, self).forward(x)
            backcast = trend_model(self.theta_b_fc(x), self.backcast_linspace, self.device)
            forecast = trend_model(self.theta_f_fc(x), self.forecast_linspace, self.device)
            return backcast, forecast

    class GenericBlock(Block):
        def __init__(self, units, thetas_dim, device, backcast_length=10, forecast_length=5, nb_harmonics=None):
            super(GenericBlock, self).__init__(units, thetas_dim, device, backcast_length, forecast_length)

            self.backcast_fc = nn.Linear(thetas_dim, backcast_length)
            self.forecast_fc = nn.Linear(thetas_dim, forecast_length)

        def forward(self, x):
            # no constraint for generic arch.
            x = super(GenericBlock, self).forward(x)

            theta_b = self.theta_b_fc(x)
            theta_f = self.theta_f_fc(x)

            backcast = self.backcast_fc(theta_b)  # generic. 3.3.
            forecast = self.forecast_fc(theta_f)  # generic. 3.3.

            return backcast, forecast

    return NBeatsNet(stack_types=stack_types, nb_blocks_per_stack=2, forecast_length=FORECAST,
                     backcast_length=BACKCAST, thetas_dim=(3, 4, 5), share_weights_in_stack=share_weights_in_stack,
                     hidden_layer_units=UNITS)


# --- N-BEATS: ElementAI/N-BEATS models/nbeats.py -------------------------------------------------------------------


def elementai_nbeats(t, nn, F, interpretable=True, basis_dtype=None):
    """models/nbeats.py's ``NBeats`` (``flip``, ``x[:, -1:]``, masked residuals) with the interpretable factory (one
    trend and one seasonality block, each repeated in the ``ModuleList``: shared weights) or the generic one; the
    bases are frozen ``nn.Parameter``s in ``basis_dtype`` (the reference's ``t.float32``; float64 runs: ``einsum``
    does not mix dtypes); ``np.float`` is ``np.float64`` (NumPy 1.24 removed the alias)."""
    basis_dtype = basis_dtype or t.float32

    class NBeatsBlock(t.nn.Module):
        def __init__(self, input_size, theta_size: int, basis_function: t.nn.Module, layers: int, layer_size: int):
            super().__init__()
            self.layers = t.nn.ModuleList([t.nn.Linear(in_features=input_size, out_features=layer_size)] +
                                          [t.nn.Linear(in_features=layer_size, out_features=layer_size)
                                           for _ in range(layers - 1)])
            self.basis_parameters = t.nn.Linear(in_features=layer_size, out_features=theta_size)
            self.basis_function = basis_function

        def forward(self, x: t.Tensor):
            block_input = x
            for layer in self.layers:
                block_input = t.relu(layer(block_input))
            basis_parameters = self.basis_parameters(block_input)
            return self.basis_function(basis_parameters)

    class NBeats(t.nn.Module):
        def __init__(self, blocks: t.nn.ModuleList):
            super().__init__()
            self.blocks = blocks

        def forward(self, x: t.Tensor, input_mask: t.Tensor) -> t.Tensor:
            residuals = x.flip(dims=(1,))
            input_mask = input_mask.flip(dims=(1,))
            forecast = x[:, -1:]
            for i, block in enumerate(self.blocks):
                backcast, block_forecast = block(residuals)
                residuals = (residuals - backcast) * input_mask
                forecast = forecast + block_forecast
            return forecast

    class GenericBasis(t.nn.Module):
        def __init__(self, backcast_size: int, forecast_size: int):
            super().__init__()
            self.backcast_size = backcast_size
            self.forecast_size = forecast_size

        def forward(self, theta: t.Tensor):
            return theta[:, :self.backcast_size], theta[:, -self.forecast_size:]

    class TrendBasis(t.nn.Module):
        def __init__(self, degree_of_polynomial: int, backcast_size: int, forecast_size: int):
            super().__init__()
            self.polynomial_size = degree_of_polynomial + 1  # degree of polynomial with constant term
            self.backcast_time = t.nn.Parameter(
                t.tensor(np.concatenate([np.power(np.arange(backcast_size, dtype=np.float64) / backcast_size, i)[None, :]
                                         for i in range(self.polynomial_size)]), dtype=basis_dtype),
                requires_grad=False)
            self.forecast_time = t.nn.Parameter(
                t.tensor(np.concatenate([np.power(np.arange(forecast_size, dtype=np.float64) / forecast_size, i)[None, :]
                                         for i in range(self.polynomial_size)]), dtype=basis_dtype),
                requires_grad=False)

        def forward(self, theta: t.Tensor):
            backcast = t.einsum('bp,pt->bt', theta[:, self.polynomial_size:], self.backcast_time)
            forecast = t.einsum('bp,pt->bt', theta[:, :self.polynomial_size], self.forecast_time)
            return backcast, forecast

    class SeasonalityBasis(t.nn.Module):
        def __init__(self, harmonics: int, backcast_size: int, forecast_size: int):
            super().__init__()
            self.frequency = np.append(np.zeros(1, dtype=np.float32),
                                       np.arange(harmonics, harmonics / 2 * forecast_size,
                                                 dtype=np.float32) / harmonics)[None, :]
            backcast_grid = -2 * np.pi * (
                np.arange(backcast_size, dtype=np.float32)[:, None] / forecast_size) * self.frequency
            forecast_grid = 2 * np.pi * (
                np.arange(forecast_size, dtype=np.float32)[:, None] / forecast_size) * self.frequency
            self.backcast_cos_template = t.nn.Parameter(t.tensor(np.transpose(np.cos(backcast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)
            self.backcast_sin_template = t.nn.Parameter(t.tensor(np.transpose(np.sin(backcast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)
            self.forecast_cos_template = t.nn.Parameter(t.tensor(np.transpose(np.cos(forecast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)
            self.forecast_sin_template = t.nn.Parameter(t.tensor(np.transpose(np.sin(forecast_grid)),
                                                                 dtype=basis_dtype), requires_grad=False)

        def forward(self, theta: t.Tensor):
            params_per_harmonic = theta.shape[1] // 4
            backcast_harmonics_cos = t.einsum('bp,pt->bt', theta[:, 2 * params_per_harmonic:3 * params_per_harmonic],
                                              self.backcast_cos_template)
            backcast_harmonics_sin = t.einsum('bp,pt->bt', theta[:, 3 * params_per_harmonic:],
                                              self.backcast_sin_template)
            backcast = backcast_harmonics_sin + backcast_harmonics_cos
            forecast_harmonics_cos = t.einsum('bp,pt->bt', theta[:, :params_per_harmonic],
                                              self.forecast_cos_template)
            forecast_harmonics_sin = t.einsum('bp,pt->bt', theta[:, params_per_harmonic:2 * params_per_harmonic],
                                              self.forecast_sin_template)
            forecast = forecast_harmonics_sin + forecast_harmonics_cos
            return backcast, forecast

    def interpretable_model(input_size, output_size, trend_blocks, trend_layers, trend_layer_size,
                            degree_of_polynomial, seasonality_blocks, seasonality_layers, seasonality_layer_size,
                            num_of_harmonics):
        trend_block = NBeatsBlock(input_size=input_size,
                                  theta_size=2 * (degree_of_polynomial + 1),
                                  basis_function=TrendBasis(degree_of_polynomial=degree_of_polynomial,
                                                            backcast_size=input_size,
                                                            forecast_size=output_size),
                                  layers=trend_layers,
                                  layer_size=trend_layer_size)
        seasonality_block = NBeatsBlock(input_size=input_size,
                                        theta_size=4 * int(
                                            np.ceil(num_of_harmonics / 2 * output_size) - (num_of_harmonics - 1)),
                                        basis_function=SeasonalityBasis(harmonics=num_of_harmonics,
                                                                        backcast_size=input_size,
                                                                        forecast_size=output_size),
                                        layers=seasonality_layers,
                                        layer_size=seasonality_layer_size)
        return NBeats(t.nn.ModuleList(
            [trend_block for _ in range(trend_blocks)] + [seasonality_block for _ in range(seasonality_blocks)]))

    def generic_model(input_size: int, output_size: int, stacks: int, layers: int, layer_size: int):
        return NBeats(t.nn.ModuleList([NBeatsBlock(input_size=input_size,
                                                   theta_size=input_size + output_size,
                                                   basis_function=GenericBasis(backcast_size=input_size,
                                                                               forecast_size=output_size),
                                                   layers=layers,
                                                   layer_size=layer_size)
                                       for _ in range(stacks)]))

    if interpretable:
        return interpretable_model(BACKCAST, FORECAST, trend_blocks=2, trend_layers=2, trend_layer_size=UNITS,
                                   degree_of_polynomial=2, seasonality_blocks=2, seasonality_layers=2,
                                   seasonality_layer_size=UNITS, num_of_harmonics=1)
    return generic_model(BACKCAST, FORECAST, stacks=3, layers=2, layer_size=UNITS)


# --- N-BEATS: ElementAI/N-BEATS common/torch/losses.py and experiments/trainer.py ---------------------------------


def nbeats_losses(t):
    """losses.py as written (``t`` is ``torch``)."""

    def divide_no_nan(a, b):
        """a/b where the resulted NaN or Inf are replaced by 0."""
        result = a / b
        result[result != result] = .0
        result[result == np.inf] = .0
        return result

    def mape_loss(forecast, target, mask):
        weights = divide_no_nan(mask, target)
        return t.mean(t.abs((forecast - target) * weights))

    def smape_2_loss(forecast, target, mask):
        return 200 * t.mean(divide_no_nan(t.abs(forecast - target),
                                          t.abs(forecast.data) + t.abs(target.data)) * mask)

    def mase_loss(insample, freq, forecast, target, mask):
        masep = t.mean(t.abs(insample[:, freq:] - insample[:, :-freq]), dim=1)
        masked_masep_inv = divide_no_nan(mask, masep[:, None])
        return t.mean(t.abs(target - forecast) * masked_masep_inv)

    def __loss_fn(loss_name):
        def loss(x, freq, forecast, target, target_mask):
            if loss_name == 'MAPE':
                return mape_loss(forecast, target, target_mask)
            elif loss_name == 'MASE':
                return mase_loss(x, freq, forecast, target, target_mask)
            elif loss_name == 'SMAPE':
                return smape_2_loss(forecast, target, target_mask)
            else:
                raise Exception(f'Unknown loss function: {loss_name}')
        return loss

    return __loss_fn


def _series_windows(steps, dtype=np.float64):
    """``steps`` batches of (insample, insample mask, target, target mask): trend + season + noise; a zero target in
    every batch (MAPE's ``mask / target`` is inf there, SMAPE's 0/0 where the forecast is 0 too), masked-out history
    and horizon entries (short series)."""
    rng = np.random.default_rng(1)
    time = np.arange(BACKCAST + FORECAST)
    batches = []
    for _ in range(steps):
        level, slope, phase = rng.uniform(1, 3, (3, SERIES, 1))
        series = level + 0.1 * slope * time + np.sin(2 * np.pi * time / 4 + phase) + 0.1 * rng.standard_normal(
            (SERIES, BACKCAST + FORECAST))
        x, y = series[:, :BACKCAST].copy(), series[:, BACKCAST:].copy()
        x_mask, y_mask = np.ones_like(x), np.ones_like(y)
        x[0, :3], x_mask[0, :3] = 0, 0
        y[1, 2] = 0
        y[2, 3], y_mask[2, 3] = 0, 0
        batches.append(tuple(value.astype(dtype) for value in (x, x_mask, y, y_mask)))
    return batches


def train_nbeats(loss_name="MAPE", iterations=4, compiled=False, dtype=np.float64, learning_rate=1e-3,
                 elementai=False):
    """trainer.py's loop: Adam, ``clip_grad_norm_(..., 1.0)``, the loss NaN check by ``float(training_loss)``, the
    step decay of ``param_group["lr"]`` after each step, on philipperemy's model (``_, forecast = model(x)``) or,
    with ``elementai``, ElementAI's (``forecast = model(x, x_mask)``); with ``compiled`` kiln's zero_grad-to-step is
    one ``kiln.compile(fullgraph=True)`` graph."""
    batches = _series_windows(iterations, dtype)

    def train(t, nn, F, model):
        to_tensor = t.tensor
        optimizer = t.optim.Adam(model.parameters(), lr=learning_rate)
        training_loss_fn = nbeats_losses(t)(loss_name)
        timeseries_frequency = 2
        lr_decay_step = iterations // 3
        if lr_decay_step == 0:
            lr_decay_step = 1
        record = {"losses": [], "lrs": []}
        with t.no_grad():
            if elementai:
                record["first_output"] = array(model(to_tensor(batches[0][0]), to_tensor(batches[0][1])))
            else:
                record["first_output"] = dict(zip(("backcast", "forecast"),
                                                  map(array, model(to_tensor(batches[0][0])))))

        def step(x, x_mask, y, y_mask):
            optimizer.zero_grad()
            if elementai:
                forecast = model(x, x_mask)
            else:
                _, forecast = model(x)
            training_loss = training_loss_fn(x, timeseries_frequency, forecast, y, y_mask)
            training_loss.backward()
            if not compiled and "grads" not in record:
                record["grads"] = {str(i): array(p.grad) for i, p in enumerate(model.parameters()) if p.grad is not None}
            t.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return training_loss

        run = kiln.compile(step, fullgraph=True) if compiled and t is kiln else step
        for i in range(1, iterations + 1):
            model.train()
            x, x_mask, y, y_mask = map(to_tensor, batches[i - 1])
            training_loss = run(x, x_mask, y, y_mask)
            if np.isnan(float(training_loss)):
                break
            record["losses"].append(float(training_loss))
            for param_group in optimizer.param_groups:
                param_group["lr"] = learning_rate * 0.5 ** (i // lr_decay_step)
            record["lrs"].append(optimizer.param_groups[0]["lr"])
        record["state"] = snapshot(model)
        if elementai:
            return record
        model.eval()
        model._gen_intermediate_outputs = True
        with t.no_grad():
            model(to_tensor(batches[0][0][:1]))
        g_pred, i_pred, outputs = model.get_generic_and_interpretable_outputs()
        record["interpretable"] = {"generic": g_pred, "interpretable": i_pred, **outputs}
        return record

    return train


def _nbeats_float64(torch, nn, F, **options):
    return nbeats(torch, nn, F, basis_float=False, **options)


FLOAT_OF_LOSS = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")  # torch's


@FLOAT_OF_LOSS
@pytest.mark.parametrize("loss_name", ["MAPE", "SMAPE", "MASE"])
def test_nbeats_trains_as_torch(float64_default, loss_name):
    ours, theirs = run_in_lockstep(_nbeats_float64, train_nbeats(loss_name))
    assert_same_records(ours, theirs)
    assert ours["lrs"] == theirs["lrs"] == [1e-3 * 0.5 ** i for i in range(1, 5)]
    assert set(ours["state"]) == {f"parameters.{i}" for i in range(len(ours["state"]))}


@FLOAT_OF_LOSS
@pytest.mark.parametrize(("loss_name", "share_weights_in_stack"), [("SMAPE", False), ("MAPE", True)])
def test_nbeats_compiled_step_as_torch(float64_default, loss_name, share_weights_in_stack):
    """The compiled step reads each call's ``param_group["lr"]`` (set between steps by the decay); SMAPE's
    ``forecast.data`` is a constant in the graph as in torch's; shared blocks are called twice a forward."""
    ours, theirs = run_in_lockstep(
        lambda torch, nn, F: _nbeats_float64(torch, nn, F, share_weights_in_stack=share_weights_in_stack),
        train_nbeats(loss_name, compiled=True))
    assert_same_records(ours, theirs)


@FLOAT_OF_LOSS
def test_nbeats_float32_as_torch():
    """As written: float32 bases (``.float()``), float32 windows, the compiled step against torch's eager loop."""
    ours, theirs = run_in_lockstep(nbeats, train_nbeats("SMAPE", compiled=True, dtype=np.float32))
    assert ours["first_output"]["forecast"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def _elementai_float64(torch, nn, F, **options):
    return elementai_nbeats(torch, nn, F, basis_dtype=torch.float64, **options)


@FLOAT_OF_LOSS
@pytest.mark.parametrize(("interpretable", "loss_name", "compiled"),
                         [(True, "MASE", False), (True, "SMAPE", True), (False, "MAPE", True)],
                         ids=["interpretable-eager", "interpretable-compiled", "generic-compiled"])
def test_elementai_nbeats_trains_as_torch(float64_default, interpretable, loss_name, compiled):
    """The shared blocks appear once per ``ModuleList`` entry in ``state_dict`` (torch's keys) and once in
    ``parameters()``."""
    ours, theirs = run_in_lockstep(lambda torch, nn, F: _elementai_float64(torch, nn, F, interpretable=interpretable),
                                   train_nbeats(loss_name, compiled=compiled, elementai=True))
    assert_same_records(ours, theirs)
    if interpretable:
        assert {"blocks.0.basis_function.backcast_time", "blocks.1.basis_function.backcast_time",
                "blocks.3.basis_function.forecast_sin_template"} <= set(ours["state"])


def test_nbeats_float32_basis_with_float64_weights_is_refused_as_torch(float64_default):
    """The reference's ``.float()`` bases under float64 weights: ``thetas.mm(S)`` mixes dtypes, which torch's ``mm``
    refuses, and so does kiln."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        model = nbeats(torch, nn, F)
        with pytest.raises(RuntimeError, match="dtype"):
            model(torch.zeros(2, BACKCAST))


# --- MAE: facebookresearch/mae models_mae.py, util/pos_embed.py, util/lr_decay.py, util/lr_sched.py --------------


IMG, PATCH, EMBED, MAE_BATCH = 8, 2, 8, 3


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)
    return np.concatenate([emb_h, emb_w], axis=1)  # (H*W, D)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.
    omega = 1. / 10000**omega  # (D/2,)
    pos = pos.reshape(-1)  # (M,)
    out = np.einsum('m,d->md', pos, omega)  # (M, D/2), outer product
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D)


def timm_parts(torch, nn, F):
    """timm 0.3.2's ``PatchEmbed``, ``Attention``, ``Mlp`` and ``Block`` (what models_mae.py and models_vit.py import)."""
    class PatchEmbed(nn.Module):
        def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
            super().__init__()
            self.img_size = (img_size, img_size)
            self.patch_size = (patch_size, patch_size)
            self.num_patches = (img_size // patch_size) * (img_size // patch_size)
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            x = self.proj(x)
            return self.proj_drop(x)

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features, act_layer=nn.GELU, drop=0.):
            super().__init__()
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, in_features)
            self.drop = nn.Dropout(drop)

        def forward(self, x):
            return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    class Block(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, qk_scale=None, norm_layer=nn.LayerNorm):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale)
            self.drop_path = nn.Identity()
            self.norm2 = norm_layer(dim)
            self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

        def forward(self, x):
            x = x + self.drop_path(self.attn(self.norm1(x)))
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x

    return PatchEmbed, Block


def mae(torch, nn, F, norm_pix_loss=True):
    """models_mae.py's ``MaskedAutoencoderViT`` (timm's parts inlined: ``timm_parts``); ``noise`` may be fed to
    ``random_masking`` (as later versions of the file allow) since the libraries' ``torch.rand`` differ."""
    from functools import partial

    PatchEmbed, Block = timm_parts(torch, nn, F)

    class MaskedAutoencoderViT(nn.Module):
        """Masked Autoencoder with VisionTransformer backbone"""

        def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=1024, depth=24, num_heads=16,
                     decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.,
                     norm_layer=nn.LayerNorm, norm_pix_loss=False):
            super().__init__()

            # MAE encoder specifics
            self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
            num_patches = self.patch_embed.num_patches

            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)

            self.blocks = nn.ModuleList([
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, qk_scale=None, norm_layer=norm_layer)
                for i in range(depth)])
            self.norm = norm_layer(embed_dim)

            # MAE decoder specifics
            self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)

            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))

            self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                                  requires_grad=False)  # fixed sin-cos embedding

            self.decoder_blocks = nn.ModuleList([
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, qk_scale=None,
                      norm_layer=norm_layer)
                for i in range(decoder_depth)])

            self.decoder_norm = norm_layer(decoder_embed_dim)
            self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)  # decoder to patch

            self.norm_pix_loss = norm_pix_loss

            self.initialize_weights()

        def initialize_weights(self):
            # initialize (and freeze) pos_embed by sin-cos embedding
            pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], int(self.patch_embed.num_patches**.5),
                                                cls_token=True)
            self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))

            decoder_pos_embed = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1],
                                                        int(self.patch_embed.num_patches**.5), cls_token=True)
            self.decoder_pos_embed.data.copy_(torch.from_numpy(decoder_pos_embed).float().unsqueeze(0))

            # initialize patch_embed like nn.Linear (instead of nn.Conv2d)
            w = self.patch_embed.proj.weight.data
            torch.nn.init.xavier_uniform_(w.view([w.shape[0], -1]))

            # timm's trunc_normal_(std=.02) is effectively normal_(std=0.02) as cutoff is too big (2.)
            torch.nn.init.normal_(self.cls_token, std=.02)
            torch.nn.init.normal_(self.mask_token, std=.02)

            # initialize nn.Linear and nn.LayerNorm
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                # we use xavier_uniform following official JAX ViT:
                torch.nn.init.xavier_uniform_(m.weight)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        def patchify(self, imgs):
            """imgs: (N, 3, H, W) -> x: (N, L, patch_size**2 *3)"""
            p = self.patch_embed.patch_size[0]
            assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0

            h = w = imgs.shape[2] // p
            x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p))
            x = torch.einsum('nchpwq->nhwpqc', x)
            x = x.reshape(shape=(imgs.shape[0], h * w, p**2 * 3))
            return x

        def unpatchify(self, x):
            """x: (N, L, patch_size**2 *3) -> imgs: (N, 3, H, W)"""
            p = self.patch_embed.patch_size[0]
            h = w = int(x.shape[1]**.5)
            assert h * w == x.shape[1]

            x = x.reshape(shape=(x.shape[0], h, w, p, p, 3))
            x = torch.einsum('nhwpqc->nchpwq', x)
            imgs = x.reshape(shape=(x.shape[0], 3, h * p, h * p))
            return imgs

        def random_masking(self, x, mask_ratio, noise=None):
            """Per-sample random masking by per-sample shuffling (argsort of random noise). x: [N, L, D]"""
            N, L, D = x.shape  # batch, length, dim
            len_keep = int(L * (1 - mask_ratio))

            if noise is None:
                noise = torch.rand(N, L, device=x.device)  # noise in [0, 1]

            # sort noise for each sample
            ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
            ids_restore = torch.argsort(ids_shuffle, dim=1)

            # keep the first subset
            ids_keep = ids_shuffle[:, :len_keep]
            x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))

            # generate the binary mask: 0 is keep, 1 is remove
            mask = torch.ones([N, L], device=x.device)
            mask[:, :len_keep] = 0
            # unshuffle to get the binary mask
            mask = torch.gather(mask, dim=1, index=ids_restore)

            return x_masked, mask, ids_restore

        def forward_encoder(self, x, mask_ratio, noise=None):
            # embed patches
            x = self.patch_embed(x)

            # add pos embed w/o cls token
            x = x + self.pos_embed[:, 1:, :]

            # masking: length -> length * mask_ratio
            x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)

            # append cls token
            cls_token = self.cls_token + self.pos_embed[:, :1, :]
            cls_tokens = cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)

            # apply Transformer blocks
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)

            return x, mask, ids_restore

        def forward_decoder(self, x, ids_restore):
            # embed tokens
            x = self.decoder_embed(x)

            # append mask tokens to sequence
            mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
            x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
            x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
            x = torch.cat([x[:, :1, :], x_], dim=1)  # append cls token

            # add pos embed
            x = x + self.decoder_pos_embed

            # apply Transformer blocks
            for blk in self.decoder_blocks:
                x = blk(x)
            x = self.decoder_norm(x)

            # predictor projection
            x = self.decoder_pred(x)

            # remove cls token
            x = x[:, 1:, :]

            return x

        def forward_loss(self, imgs, pred, mask):
            """imgs: [N, 3, H, W], pred: [N, L, p*p*3], mask: [N, L], 0 is keep, 1 is remove"""
            target = self.patchify(imgs)
            if self.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.e-6)**.5

            loss = (pred - target) ** 2
            loss = loss.mean(dim=-1)  # [N, L], mean loss per patch

            loss = (loss * mask).sum() / mask.sum()  # mean loss on removed patches
            return loss

        def forward(self, imgs, mask_ratio=0.75, noise=None):
            latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
            pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
            loss = self.forward_loss(imgs, pred, mask)
            return loss, pred, mask

    return MaskedAutoencoderViT(img_size=IMG, patch_size=PATCH, embed_dim=EMBED, depth=2, num_heads=2,
                                decoder_embed_dim=EMBED, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6), norm_pix_loss=norm_pix_loss)


def param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=[], layer_decay=.75):
    """util/lr_decay.py: parameter groups for layer-wise lr decay (BEiT)."""
    param_group_names = {}
    param_groups = {}

    num_layers = len(model.blocks) + 1

    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))

    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue

        # no decay: all 1D parameters and model specific ones
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay = "no_decay"
            this_decay = 0.
        else:
            g_decay = "decay"
            this_decay = weight_decay

        layer_id = get_layer_id_for_vit(n, num_layers)
        group_name = "layer_%d_%s" % (layer_id, g_decay)

        if group_name not in param_group_names:
            this_scale = layer_scales[layer_id]

            param_group_names[group_name] = {"lr_scale": this_scale, "weight_decay": this_decay, "params": []}
            param_groups[group_name] = {"lr_scale": this_scale, "weight_decay": this_decay, "params": []}

        param_group_names[group_name]["params"].append(n)
        param_groups[group_name]["params"].append(p)

    return list(param_groups.values())


def get_layer_id_for_vit(name, num_layers):
    """Assign a parameter with its layer id (BEiT)."""
    if name in ['cls_token', 'pos_embed']:
        return 0
    elif name.startswith('patch_embed'):
        return 0
    elif name.startswith('blocks'):
        return int(name.split('.')[1]) + 1
    else:
        return num_layers


def adjust_learning_rate(optimizer, epoch, args):
    """util/lr_sched.py: decay the learning rate with half-cycle cosine after warmup."""
    if epoch < args.warmup_epochs:
        lr = args.lr * epoch / args.warmup_epochs
    else:
        lr = args.min_lr + (args.lr - args.min_lr) * 0.5 * \
            (1. + math.cos(math.pi * (epoch - args.warmup_epochs) / (args.epochs - args.warmup_epochs)))
    for param_group in optimizer.param_groups:
        if "lr_scale" in param_group:
            param_group["lr"] = lr * param_group["lr_scale"]
        else:
            param_group["lr"] = lr
    return lr


def _images(steps, dtype=np.float64):
    rng = np.random.default_rng(2)
    imgs = rng.standard_normal((steps, MAE_BATCH, 3, IMG, IMG)).astype(dtype)
    noises = rng.random((steps, MAE_BATCH, (IMG // PATCH) ** 2)).astype(dtype)
    return imgs, noises


def get_grad_norm_(torch, parameters, norm_type: float = 2.0):
    """util/misc.py's gradient norm for the loss scaler's report."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    parameters = [p for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if len(parameters) == 0:
        return torch.tensor(0.)
    device = parameters[0].grad.device
    if norm_type == math.inf:
        total_norm = max(p.grad.detach().abs().max().to(device) for p in parameters)
    else:
        total_norm = torch.norm(torch.stack([torch.norm(p.grad.detach(), norm_type).to(device)
                                             for p in parameters]), norm_type)
    return total_norm


def native_scaler(torch):
    """util/misc.py's ``NativeScalerWithGradNormCount`` (``torch.cuda.amp.GradScaler``: disabled on a CPU, with
    torch's warning, in both libraries)."""

    class NativeScalerWithGradNormCount:
        state_dict_key = "amp_scaler"

        def __init__(self):
            self._scaler = torch.cuda.amp.GradScaler()

        def __call__(self, loss, optimizer, clip_grad=None, parameters=None, create_graph=False, update_grad=True):
            self._scaler.scale(loss).backward(create_graph=create_graph)
            if update_grad:
                if clip_grad is not None:
                    assert parameters is not None
                    self._scaler.unscale_(optimizer)  # unscale the gradients of optimizer's assigned params in-place
                    norm = torch.nn.utils.clip_grad_norm_(parameters, clip_grad)
                else:
                    self._scaler.unscale_(optimizer)
                    norm = get_grad_norm_(torch, parameters)
                self._scaler.step(optimizer)
                self._scaler.update()
            else:
                norm = None
            return norm

        def state_dict(self):
            return self._scaler.state_dict()

    return NativeScalerWithGradNormCount()


AMP_ON_CPU = pytest.mark.filterwarnings("ignore:.*is deprecated. Please use", "ignore:.*CUDA is not available")


def train_mae(steps=4, compiled=False, dtype=np.float64):
    """engine_pretrain.py's ``train_one_epoch`` (``accum_iter`` 2: ``adjust_learning_rate`` every other iteration from
    ``data_iter_step / len(data_loader) + epoch``, ``torch.cuda.amp.autocast()``, ``loss /= accum_iter``, the loss
    scaler's ``update_grad`` every other call, ``optimizer.zero_grad()`` after it) with main_finetune.py's optimizer
    (``AdamW(param_groups_lrd(...))``, the per-group ``lr_scale``); with ``compiled`` kiln's forward-to-step is one
    ``kiln.compile(fullgraph=True)`` graph (two variants: with and without the update; the gradients accumulate across
    calls), its lr set between calls. Then ``unpatchify`` of the prediction, ``kiln.compile``d in the compiled runs."""
    import argparse

    imgs, noises = _images(steps, dtype)
    args = argparse.Namespace(lr=1e-2, min_lr=1e-4, warmup_epochs=1, epochs=2, mask_ratio=0.75, weight_decay=0.05,
                              accum_iter=2)

    def train(torch, nn, F, model):
        param_groups = param_groups_lrd(model, args.weight_decay, no_weight_decay_list={'pos_embed', 'cls_token'},
                                        layer_decay=0.75)
        optimizer = torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.95))
        loss_scaler = native_scaler(torch)
        record = {"losses": [], "lrs": [], "norms": []}
        with torch.no_grad():
            loss, pred, mask = model(torch.tensor(imgs[0]), mask_ratio=args.mask_ratio, noise=torch.tensor(noises[0]))
            record["first"] = {"loss": loss.item(), "pred": array(pred), "mask": array(mask)}

        def step(samples, noise, update_grad):
            with torch.cuda.amp.autocast():
                loss, _, _ = model(samples, mask_ratio=args.mask_ratio, noise=noise)
            loss /= accum_iter
            norm = loss_scaler(loss, optimizer, parameters=model.parameters(), update_grad=update_grad)
            if not compiled and "grads" not in record:
                record["grads"] = gradients(model)
            if update_grad:
                optimizer.zero_grad()
            return loss, norm

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        model.train(True)
        accum_iter = args.accum_iter
        optimizer.zero_grad()
        epoch, data_loader = 1, list(zip(imgs, noises))  # the epoch after the warmup: the cosine decay
        for data_iter_step, (samples, noise) in enumerate(data_loader):
            if data_iter_step % accum_iter == 0:
                lr = adjust_learning_rate(optimizer, data_iter_step / len(data_loader) + epoch, args)
                record["lrs"].append([group["lr"] for group in optimizer.param_groups])
            update_grad = (data_iter_step + 1) % accum_iter == 0
            loss, norm = run(torch.tensor(samples), torch.tensor(noise), update_grad)
            loss_value = loss.item() * accum_iter
            assert math.isfinite(loss_value)
            record["losses"].append(loss_value)
            if update_grad:
                record["norms"].append(norm.item())
        assert lr > 0
        record["state"] = snapshot(model)
        infer = kiln.compile(model, fullgraph=True) if compiled and torch is kiln else model
        with torch.no_grad():
            _, pred, mask = infer(torch.tensor(imgs[0]), mask_ratio=args.mask_ratio, noise=torch.tensor(noises[0]))
            record["reconstruction"] = array(model.unpatchify(pred))
        return record

    return train


def split_qkv_key_bias(record):
    """``split_key_bias`` for timm's fused ``qkv.bias``: the key third's gradient is rounding noise (softmax cancels
    ``q . b_k``), which AdamW turns into steps of ~1e-12 in float64, different in each library; compared looser."""
    state = dict(record["state"])
    for name in [name for name in state if name.endswith("qkv.bias")]:
        bias = state.pop(name)
        third = len(bias) // 3
        state[name + " (query, value)"] = np.concatenate([bias[:third], bias[2 * third:]])
        state[name.replace("qkv.bias", "key bias")] = bias[third:2 * third]
    return {**record, "state": state}


KEY_BIAS = {"key bias": dict(rtol=0, atol=1e-10)}


@AMP_ON_CPU
def test_mae_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mae, train_mae())
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)
    assert ours["first"]["mask"].sum(1).tolist() == [12.0] * MAE_BATCH
    assert len(ours["lrs"][0]) == 8  # layers 0 (cls token, patch embed) to 3 (norm, decoder), decay or not


@AMP_ON_CPU
def test_mae_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mae, train_mae(compiled=True))
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)


@AMP_ON_CPU
def test_mae_float32_as_torch():
    """As written (float32 sin-cos tables, images and weights), the compiled step against torch's eager loop."""
    ours, theirs = run_in_lockstep(lambda torch, nn, F: mae(torch, nn, F, norm_pix_loss=False),
                                   train_mae(compiled=True, dtype=np.float32))
    assert ours["reconstruction"].dtype == np.float32
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), rtol=2e-5, atol=2e-6,
                        looser={"key bias": dict(rtol=0, atol=3e-2)})  # up to lr a step in float32


def mae_encoder(torch, nn, model):
    """The encoder as deployed for features: ``forward_encoder(imgs, mask_ratio, noise)`` (masking by the fed noise)."""

    class Encoder(nn.Module):
        def __init__(self, mae):
            super().__init__()
            self.mae = mae

        def forward(self, imgs, noise):
            return self.mae.forward_encoder(imgs, 0.75, noise)

    return Encoder(model)


@AMP_ON_CPU
def test_mae_encoder_exports_to_onnx_with_torchs_outputs(tmp_path):
    """The trained float32 MAE encoder (patch conv, sin-cos positions, argsort masking, gathers, cls token, blocks)
    in onnxruntime gives torch's latent, mask and ``ids_restore``."""
    require_torch()
    imgs, noises = _images(1, np.float32)
    onnx_matches_torch(mae, train_mae(steps=1, dtype=np.float32), [imgs[0], noises[0]], tmp_path, wrap=mae_encoder,
                       input_names=["imgs", "noise"])


# --- MAE fine-tuning: models_vit.py, util/pos_embed.py's interpolate_pos_embed, main_finetune.py ---------------------


def vit_base(torch, nn, F, img_size=12, global_pool=True, num_classes=3):
    """models_vit.py's ``VisionTransformer`` (global pooling: ``fc_norm``, ``del self.norm``) over a minimal timm
    ``VisionTransformer`` (patch embed, learned ``pos_embed`` and ``cls_token``, blocks, norm, head)."""
    from functools import partial

    PatchEmbed, Block = timm_parts(torch, nn, F)

    class TimmVisionTransformer(nn.Module):
        def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                     num_heads=12, mlp_ratio=4., qkv_bias=True, norm_layer=None):
            super().__init__()
            norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
            self.num_classes = num_classes
            self.num_features = self.embed_dim = embed_dim
            self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                          embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
            self.pos_drop = nn.Dropout(p=0.)
            self.blocks = nn.ModuleList([Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                               qkv_bias=qkv_bias, norm_layer=norm_layer) for i in range(depth)])
            self.norm = norm_layer(embed_dim)
            self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        def forward(self, x):
            x = self.forward_features(x)
            x = self.head(x)
            return x

    class VisionTransformer(TimmVisionTransformer):
        """Vision Transformer with support for global average pooling"""

        def __init__(self, global_pool=False, **kwargs):
            super(VisionTransformer, self).__init__(**kwargs)

            self.global_pool = global_pool
            if self.global_pool:
                norm_layer = kwargs['norm_layer']
                embed_dim = kwargs['embed_dim']
                self.fc_norm = norm_layer(embed_dim)

                del self.norm  # remove the original norm

        def forward_features(self, x):
            B = x.shape[0]
            x = self.patch_embed(x)

            cls_tokens = self.cls_token.expand(B, -1, -1)  # stole cls_tokens impl from Phil Wang, thanks
            x = torch.cat((cls_tokens, x), dim=1)
            x = x + self.pos_embed
            x = self.pos_drop(x)

            for blk in self.blocks:
                x = blk(x)

            if self.global_pool:
                x = x[:, 1:, :].mean(dim=1)  # global pool without cls token
                outcome = self.fc_norm(x)
            else:
                x = self.norm(x)
                outcome = x[:, 0]

            return outcome

    return VisionTransformer(img_size=img_size, patch_size=PATCH, embed_dim=EMBED, depth=2, num_heads=2, mlp_ratio=2,
                             qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), global_pool=global_pool,
                             num_classes=num_classes)


def interpolate_pos_embed(torch, model, checkpoint_model):
    """util/pos_embed.py: the checkpoint's position table resized (bicubic) to the model's grid."""
    if 'pos_embed' in checkpoint_model:
        pos_embed_checkpoint = checkpoint_model['pos_embed']
        embedding_size = pos_embed_checkpoint.shape[-1]
        num_patches = model.patch_embed.num_patches
        num_extra_tokens = model.pos_embed.shape[-2] - num_patches
        # height (== width) for the checkpoint position embedding
        orig_size = int((pos_embed_checkpoint.shape[-2] - num_extra_tokens) ** 0.5)
        # height (== width) for the new position embedding
        new_size = int(num_patches ** 0.5)
        # class_token and dist_token are kept unchanged
        if orig_size != new_size:
            extra_tokens = pos_embed_checkpoint[:, :num_extra_tokens]
            # only the position tokens are interpolated
            pos_tokens = pos_embed_checkpoint[:, num_extra_tokens:]
            pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
            pos_tokens = torch.nn.functional.interpolate(
                pos_tokens, size=(new_size, new_size), mode='bicubic', align_corners=False)
            pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
            new_pos_embed = torch.cat((extra_tokens, pos_tokens), dim=1)
            checkpoint_model['pos_embed'] = new_pos_embed


def label_smoothing_cross_entropy(torch, nn, F, smoothing=0.1):
    """timm's ``LabelSmoothingCrossEntropy`` (main_finetune.py's criterion without mixup)."""

    class LabelSmoothingCrossEntropy(nn.Module):
        def __init__(self, smoothing=0.1):
            super(LabelSmoothingCrossEntropy, self).__init__()
            assert smoothing < 1.0
            self.smoothing = smoothing
            self.confidence = 1. - smoothing

        def forward(self, x, target):
            logprobs = F.log_softmax(x, dim=-1)
            nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
            nll_loss = nll_loss.squeeze(1)
            smooth_loss = -logprobs.mean(dim=-1)
            loss = self.confidence * nll_loss + self.smoothing * smooth_loss
            return loss.mean()

    return LabelSmoothingCrossEntropy(smoothing)


def finetune_mae(tmp_path, steps=2, compiled=False, img_size=12):
    """main_finetune.py after pretraining: the MAE checkpoint (``torch.save({'model': ...})``) loaded by
    ``torch.load(..., map_location='cpu')`` into models_vit's ViT at a larger image (positions interpolated 4x4 ->
    6x6), head keys of another shape removed, ``load_state_dict(strict=False)`` with its ``missing_keys`` asserted,
    ``trunc_normal_(model.head.weight, std=2e-5)`` (checked, then the head set from fed draws: the generators differ),
    AdamW over ``param_groups_lrd`` (the use it was written for), ``LabelSmoothingCrossEntropy``; with ``compiled`` the
    step is one ``kiln.compile(fullgraph=True)`` graph."""
    rng = np.random.default_rng(9)
    images = rng.standard_normal((steps, MAE_BATCH, 3, img_size, img_size))
    labels = rng.integers(0, 3, (steps, MAE_BATCH))
    head, head_bias = rng.standard_normal((3, EMBED)) * 2e-2, rng.standard_normal(3) * 0.1

    def train(torch, nn, F, pretrained):
        path = str(tmp_path / f"{torch.__name__}-checkpoint.pth")
        torch.save({"model": pretrained.state_dict(), "epoch": 1}, path)
        model = vit_base(torch, nn, F, img_size=img_size)
        checkpoint = torch.load(path, map_location='cpu')
        checkpoint_model = checkpoint['model']
        state_dict = model.state_dict()
        checkpoint_model['head.weight'] = torch.zeros(5, EMBED)  # a pretraining head of another size
        for k in ['head.weight', 'head.bias']:
            if k in checkpoint_model and checkpoint_model[k].shape != state_dict[k].shape:
                del checkpoint_model[k]
        interpolate_pos_embed(torch, model, checkpoint_model)
        msg = model.load_state_dict(checkpoint_model, strict=False)
        assert set(msg.missing_keys) == {'head.weight', 'head.bias', 'fc_norm.weight', 'fc_norm.bias'}
        assert 'decoder_embed.weight' in msg.unexpected_keys and 'norm.weight' in msg.unexpected_keys
        torch.nn.init.trunc_normal_(model.head.weight, std=2e-5)
        assert 5e-6 < float(model.head.weight.detach().std()) < 5e-5  # the cutoff (-2, 2) is absolute: a normal draw here
        with torch.no_grad():  # the fed draws: trunc_normal_'s, and nn.Linear's default one of the missing head.bias
            model.head.weight.copy_(torch.tensor(head))
            model.head.bias.copy_(torch.tensor(head_bias))
        param_groups = param_groups_lrd(model, 0.05, no_weight_decay_list={'pos_embed', 'cls_token'},
                                        layer_decay=0.75)
        optimizer = torch.optim.AdamW(param_groups, lr=1e-2)
        criterion = label_smoothing_cross_entropy(torch, nn, F)
        record = {"pos_embed": array(model.pos_embed), "losses": []}

        def step(samples, targets):
            outputs = model(samples)
            loss = criterion(outputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        model.train(True)
        for samples, targets in zip(images, labels):
            record["losses"].append(run(torch.tensor(samples), torch.tensor(targets)).item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_mae_finetunes_from_the_pretraining_checkpoint_as_torch(float64_default, tmp_path, compiled):
    ours, theirs = run_in_lockstep(mae, finetune_mae(tmp_path, compiled=compiled))
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)
    assert ours["pos_embed"].shape == (1, 37, EMBED) and "norm.weight" not in ours["state"]


@AMP_ON_CPU
def test_mae_with_its_own_noise_draw_exports_to_onnx_with_torchs_outputs(tmp_path):
    """The whole MAE as written (``noise = torch.rand(N, L)`` inside ``random_masking``) through ``kiln.onnx.export``:
    the draw is the file's ``uniform.0`` input (kiln's documented form); fed the probe's noise, onnxruntime gives the
    loss, prediction and mask torch computes with that noise."""
    ort = require("onnxruntime")
    imgs, noises = _images(1, np.float32)
    kiln.manual_seed(0)
    model = mae(*libraries("kiln")).eval()
    path = str(tmp_path / "mae.onnx")
    kiln.onnx.export(model, (kiln.tensor(imgs[0]),), path, input_names=["imgs"])
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [given.name for given in session.get_inputs()] == ["imgs", "rng_seed", "uniform.0"]
    outputs = session.run(None, {"imgs": imgs[0], "rng_seed": np.array(0, np.int64), "uniform.0": noises[0]})
    torch, nn, F = libraries("torch")
    twin = mae(torch, nn, F)
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    with torch.no_grad():
        expected = twin.eval()(torch.tensor(imgs[0]), noise=torch.tensor(noises[0]))
    for output, value in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(output, array(value), rtol=1e-5, atol=1e-6)


def resume_mae(steps=3):
    """misc.py's ``save_model`` (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``, ``args`` a Namespace) after
    two steps, then ``load_model``: ``torch.load(..., map_location='cpu', weights_only=False)``, the state into a fresh
    model, ``optimizer.load_state_dict`` into a fresh AdamW over ``param_groups_lrd`` (the ``lr_scale`` keys come back)
    and the scaler's state; one more step after ``adjust_learning_rate``."""
    import argparse
    import io

    imgs, noises = _images(steps)
    args = argparse.Namespace(lr=1e-2, min_lr=1e-4, warmup_epochs=1, epochs=2, mask_ratio=0.75)

    def fresh_optimizer(torch, model):
        groups = param_groups_lrd(model, 0.05, no_weight_decay_list={'pos_embed', 'cls_token'}, layer_decay=0.75)
        return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))

    def train(torch, nn, F, model):
        optimizer, loss_scaler = fresh_optimizer(torch, model), native_scaler(torch)
        for step in range(steps - 1):
            loss, _, _ = model(torch.tensor(imgs[step]), args.mask_ratio, torch.tensor(noises[step]))
            loss_scaler(loss, optimizer, parameters=model.parameters())
            optimizer.zero_grad()
        checkpoint_file = io.BytesIO()
        torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': 1,
                    'scaler': loss_scaler.state_dict(), 'args': args}, checkpoint_file)
        checkpoint_file.seek(0)
        checkpoint = torch.load(checkpoint_file, map_location='cpu', weights_only=False)
        resumed = mae(torch, nn, F)
        resumed.load_state_dict(checkpoint['model'])
        optimizer = fresh_optimizer(torch, resumed)
        optimizer.load_state_dict(checkpoint['optimizer'])
        loss_scaler = native_scaler(torch)
        loss_scaler._scaler.load_state_dict(checkpoint['scaler'])
        start_epoch = checkpoint['epoch'] + 1
        assert start_epoch == 2 and checkpoint['args'].lr == args.lr
        adjust_learning_rate(optimizer, 1.5, args)
        loss, _, _ = resumed(torch.tensor(imgs[-1]), args.mask_ratio, torch.tensor(noises[-1]))
        loss_scaler(loss, optimizer, parameters=resumed.parameters())
        return {"lr_scales": [group["lr_scale"] for group in optimizer.param_groups], "loss": loss.item(),
                "state": snapshot(resumed)}

    return train


@AMP_ON_CPU
def test_mae_resumes_from_its_checkpoint_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mae, resume_mae())
    assert_same_records(split_qkv_key_bias(ours), split_qkv_key_bias(theirs), looser=KEY_BIAS)
