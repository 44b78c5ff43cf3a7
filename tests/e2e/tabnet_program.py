"""TabNet, small, as dreamquark-ai/tabnet writes it (pytorch_tabnet/sparsemax.py's sparsemax and entmax15,
tab_network.py's ``TabNet`` and its pretraining network, utils.py's ``create_explain_matrix``), written once for
``torch`` being torch or kiln: the program of ``test_porting_probes_tabnet_nbeats_mae.py``, whose docstring says what it
covers."""

from __future__ import annotations

import numpy as np


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
