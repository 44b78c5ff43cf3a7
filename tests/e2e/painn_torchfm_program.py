"""More models of ``test_porting_probes_schnet_egnn_deepfm.py``, written once as their reference writes them
(``torch`` is ``torch`` or ``kiln``): pytorch-fm's other interaction layers (DCN, FFM, IPNN/OPNN, xDeepFM, AFM) and
schnetpack's PaiNN with its energy-and-forces loss."""

from __future__ import annotations

import math

import numpy as np


def torchfm_interactions(torch, nn, F, field_dims, embed_dim=4, model='dcn'):
    """More of pytorch-fm's models, their interaction layers as ``layer.py`` writes them: DCN's ``CrossNetwork``
    (``ParameterList`` of biases), the field-aware FM (``ModuleList`` of embeddings, ``torch.stack``), the product
    networks (``x[:, row] * x[:, col]``; the outer product's ``kernel_type='mat'`` by ``torch.sum`` of broadcasts),
    xDeepFM's ``CompressedInteractionNetwork`` (``Conv1d``, ``torch.split``) and the attentional FM (softmax over the
    pairs, ``F.dropout`` with ``training=self.training``)."""

    class FeaturesLinear(torch.nn.Module):
        def __init__(self, field_dims, output_dim=1):
            super().__init__()
            self.fc = torch.nn.Embedding(sum(field_dims), output_dim)
            self.bias = torch.nn.Parameter(torch.zeros((output_dim,)))
            self.offsets = np.array((0, *np.cumsum(field_dims)[:-1]), dtype=np.int64)

        def forward(self, x):
            x = x + x.new_tensor(self.offsets).unsqueeze(0)
            return torch.sum(self.fc(x), dim=1) + self.bias

    class FeaturesEmbedding(torch.nn.Module):
        def __init__(self, field_dims, embed_dim):
            super().__init__()
            self.embedding = torch.nn.Embedding(sum(field_dims), embed_dim)
            self.offsets = np.array((0, *np.cumsum(field_dims)[:-1]), dtype=np.int64)
            torch.nn.init.xavier_uniform_(self.embedding.weight.data)

        def forward(self, x):
            x = x + x.new_tensor(self.offsets).unsqueeze(0)
            return self.embedding(x)

    class FieldAwareFactorizationMachine(torch.nn.Module):
        def __init__(self, field_dims, embed_dim):
            super().__init__()
            self.num_fields = len(field_dims)
            self.embeddings = torch.nn.ModuleList([
                torch.nn.Embedding(sum(field_dims), embed_dim) for _ in range(self.num_fields)
            ])
            self.offsets = np.array((0, *np.cumsum(field_dims)[:-1]), dtype=np.int64)
            for embedding in self.embeddings:
                torch.nn.init.xavier_uniform_(embedding.weight.data)

        def forward(self, x):
            x = x + x.new_tensor(self.offsets).unsqueeze(0)
            xs = [self.embeddings[i](x) for i in range(self.num_fields)]
            ix = list()
            for i in range(self.num_fields - 1):
                for j in range(i + 1, self.num_fields):
                    ix.append(xs[j][:, i] * xs[i][:, j])
            ix = torch.stack(ix, dim=1)
            return ix

    class CrossNetwork(torch.nn.Module):
        def __init__(self, input_dim, num_layers):
            super().__init__()
            self.num_layers = num_layers
            self.w = torch.nn.ModuleList([
                torch.nn.Linear(input_dim, 1, bias=False) for _ in range(num_layers)
            ])
            self.b = torch.nn.ParameterList([
                torch.nn.Parameter(torch.zeros((input_dim,))) for _ in range(num_layers)
            ])

        def forward(self, x):
            x0 = x
            for i in range(self.num_layers):
                xw = self.w[i](x)
                x = x0 * xw + self.b[i] + x
            return x

    class InnerProductNetwork(torch.nn.Module):
        def forward(self, x):
            num_fields = x.shape[1]
            row, col = list(), list()
            for i in range(num_fields - 1):
                for j in range(i + 1, num_fields):
                    row.append(i), col.append(j)
            return torch.sum(x[:, row] * x[:, col], dim=2)

    class OuterProductNetwork(torch.nn.Module):
        def __init__(self, num_fields, embed_dim, kernel_type='mat'):
            super().__init__()
            num_ix = num_fields * (num_fields - 1) // 2
            if kernel_type == 'mat':
                kernel_shape = embed_dim, num_ix, embed_dim
            elif kernel_type == 'vec':
                kernel_shape = num_ix, embed_dim
            elif kernel_type == 'num':
                kernel_shape = num_ix, 1
            else:
                raise ValueError('unknown kernel type: ' + kernel_type)
            self.kernel_type = kernel_type
            self.kernel = torch.nn.Parameter(torch.zeros(kernel_shape))
            torch.nn.init.xavier_uniform_(self.kernel.data)

        def forward(self, x):
            num_fields = x.shape[1]
            row, col = list(), list()
            for i in range(num_fields - 1):
                for j in range(i + 1, num_fields):
                    row.append(i), col.append(j)
            p, q = x[:, row], x[:, col]
            if self.kernel_type == 'mat':
                kp = torch.sum(p.unsqueeze(1) * self.kernel, dim=-1).permute(0, 2, 1)
                return torch.sum(kp * q, -1)
            else:
                return torch.sum(p * q * self.kernel.unsqueeze(0), -1)

    class CompressedInteractionNetwork(torch.nn.Module):
        def __init__(self, input_dim, cross_layer_sizes, split_half=True):
            super().__init__()
            self.num_layers = len(cross_layer_sizes)
            self.split_half = split_half
            self.conv_layers = torch.nn.ModuleList()
            prev_dim, fc_input_dim = input_dim, 0
            for i in range(self.num_layers):
                cross_layer_size = cross_layer_sizes[i]
                self.conv_layers.append(torch.nn.Conv1d(input_dim * prev_dim, cross_layer_size, 1,
                                                        stride=1, dilation=1, bias=True))
                if self.split_half and i != self.num_layers - 1:
                    cross_layer_size //= 2
                prev_dim = cross_layer_size
                fc_input_dim += prev_dim
            self.fc = torch.nn.Linear(fc_input_dim, 1)

        def forward(self, x):
            xs = list()
            x0, h = x.unsqueeze(2), x
            for i in range(self.num_layers):
                x = x0 * h.unsqueeze(1)
                batch_size, f0_dim, fin_dim, embed_dim = x.shape
                x = x.view(batch_size, f0_dim * fin_dim, embed_dim)
                x = F.relu(self.conv_layers[i](x))
                if self.split_half and i != self.num_layers - 1:
                    x, h = torch.split(x, x.shape[1] // 2, dim=1)
                else:
                    h = x
                xs.append(x)
            return self.fc(torch.sum(torch.cat(xs, dim=1), 2))

    class AttentionalFactorizationMachine(torch.nn.Module):
        def __init__(self, embed_dim, attn_size, dropouts):
            super().__init__()
            self.attention = torch.nn.Linear(embed_dim, attn_size)
            self.projection = torch.nn.Linear(attn_size, 1)
            self.fc = torch.nn.Linear(embed_dim, 1)
            self.dropouts = dropouts

        def forward(self, x):
            num_fields = x.shape[1]
            row, col = list(), list()
            for i in range(num_fields - 1):
                for j in range(i + 1, num_fields):
                    row.append(i), col.append(j)
            p, q = x[:, row], x[:, col]
            inner_product = p * q
            attn_scores = F.relu(self.attention(inner_product))
            attn_scores = F.softmax(self.projection(attn_scores), dim=1)
            attn_scores = F.dropout(attn_scores, p=self.dropouts[0], training=self.training)
            attn_output = torch.sum(attn_scores * inner_product, dim=1)
            attn_output = F.dropout(attn_output, p=self.dropouts[1], training=self.training)
            return self.fc(attn_output)

    class Model(torch.nn.Module):
        """The model of ``model``: a linear term plus its interaction layer's logit, ``torch.sigmoid(x.squeeze(1))``."""

        def __init__(self):
            super().__init__()
            num_fields = len(field_dims)
            self.embed_output_dim = num_fields * embed_dim
            self.linear = FeaturesLinear(field_dims)
            if model == 'ffm':
                self.ffm = FieldAwareFactorizationMachine(field_dims, embed_dim)
            else:
                self.embedding = FeaturesEmbedding(field_dims, embed_dim)
            if model == 'dcn':
                self.cn = CrossNetwork(self.embed_output_dim, 2)
                self.head = torch.nn.Linear(self.embed_output_dim, 1)
            elif model in ('ipnn', 'opnn'):
                self.pn = InnerProductNetwork() if model == 'ipnn' else OuterProductNetwork(num_fields, embed_dim)
                self.head = torch.nn.Linear(num_fields * (num_fields - 1) // 2 + self.embed_output_dim, 1)
            elif model == 'xdeepfm':
                self.cin = CompressedInteractionNetwork(num_fields, (4, 4), split_half=True)
            elif model == 'afm':
                self.afm = AttentionalFactorizationMachine(embed_dim, 4, (0.0, 0.0))

        def forward(self, x):
            linear = self.linear(x)
            if model == 'ffm':
                ffm_term = torch.sum(torch.sum(self.ffm(x), dim=1), dim=1, keepdim=True)
                return torch.sigmoid((linear + ffm_term).squeeze(1))
            embed_x = self.embedding(x)
            if model == 'dcn':
                out = self.head(self.cn(embed_x.view(-1, self.embed_output_dim)))
            elif model in ('ipnn', 'opnn'):
                cross_term = self.pn(embed_x)
                out = self.head(torch.cat([embed_x.view(-1, self.embed_output_dim), cross_term], dim=1))
            elif model == 'xdeepfm':
                out = self.cin(embed_x)
            else:
                out = self.afm(embed_x)
            return torch.sigmoid((linear + out).squeeze(1))

    return Model()


def painn(torch, nn, F, n_atom_basis=8, n_interactions=2, n_rbf=6, cutoff=3.0):
    """PaiNN as schnetpack writes it (``representation/painn.py``, ``nn/radial.py``, ``nn/cutoff.py``, ``nn/base.py``
    ``Dense``, ``nn/scatter.py``), with an ``Atomwise`` energy head: scalar and vector features ``(N, 1, F)`` and
    ``(N, 3, F)``, filters ``torch.split`` per interaction, messages summed by ``index_add``; ``forward(Z, R, idx_i,
    idx_j, idx_m, n_molecules)`` gives each molecule's energy."""

    class Dense(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, activation=None,
                     weight_init=torch.nn.init.xavier_uniform_, bias_init=torch.nn.init.zeros_):
            self.weight_init = weight_init
            self.bias_init = bias_init
            super(Dense, self).__init__(in_features, out_features, bias)
            self.activation = activation
            if self.activation is None:
                self.activation = nn.Identity()

        def reset_parameters(self):
            self.weight_init(self.weight)
            if self.bias is not None:
                self.bias_init(self.bias)

        def forward(self, input):
            y = F.linear(input, self.weight, self.bias)
            y = self.activation(y)
            return y

    def scatter_add(x, idx_i, dim_size, dim=0):
        shape = list(x.shape)
        shape[dim] = dim_size
        tmp = torch.zeros(shape, dtype=x.dtype, device=x.device)
        y = tmp.index_add(dim, idx_i, x)
        return y

    class GaussianRBF(nn.Module):
        def __init__(self, n_rbf, cutoff, start=0.0, trainable=False):
            super(GaussianRBF, self).__init__()
            self.n_rbf = n_rbf
            offset = torch.linspace(start, cutoff, n_rbf)
            widths = torch.abs(offset[1] - offset[0]) * torch.ones_like(offset)
            if trainable:
                self.widths = nn.Parameter(widths)
                self.offsets = nn.Parameter(offset)
            else:
                self.register_buffer("widths", widths)
                self.register_buffer("offsets", offset)

        def forward(self, inputs):
            coeff = -0.5 / torch.pow(self.widths, 2)
            diff = inputs[..., None] - self.offsets
            y = torch.exp(coeff * torch.pow(diff, 2))
            return y

    class CosineCutoff(nn.Module):
        def __init__(self, cutoff):
            super(CosineCutoff, self).__init__()
            self.register_buffer("cutoff", torch.FloatTensor([cutoff]))

        def forward(self, input):
            input_cut = 0.5 * (torch.cos(input * math.pi / self.cutoff) + 1.0)
            input_cut *= (input < self.cutoff).float()
            return input_cut

    class PaiNNInteraction(nn.Module):
        def __init__(self, n_atom_basis, activation):
            super(PaiNNInteraction, self).__init__()
            self.n_atom_basis = n_atom_basis
            self.interatomic_context_net = nn.Sequential(
                Dense(n_atom_basis, n_atom_basis, activation=activation),
                Dense(n_atom_basis, 3 * n_atom_basis, activation=None),
            )

        def forward(self, q, mu, Wij, dir_ij, idx_i, idx_j, n_atoms):
            x = self.interatomic_context_net(q)
            xj = x[idx_j]
            muj = mu[idx_j]
            x = Wij * xj
            dq, dmuR, dmumu = torch.split(x, self.n_atom_basis, dim=-1)
            dq = scatter_add(dq, idx_i, dim_size=n_atoms)
            dmu = dmuR * dir_ij[..., None] + dmumu * muj
            dmu = scatter_add(dmu, idx_i, dim_size=n_atoms)
            q = q + dq
            mu = mu + dmu
            return q, mu

    class PaiNNMixing(nn.Module):
        def __init__(self, n_atom_basis, activation, epsilon=1e-8):
            super(PaiNNMixing, self).__init__()
            self.n_atom_basis = n_atom_basis
            self.intraatomic_context_net = nn.Sequential(
                Dense(2 * n_atom_basis, n_atom_basis, activation=activation),
                Dense(n_atom_basis, 3 * n_atom_basis, activation=None),
            )
            self.mu_channel_mix = Dense(n_atom_basis, 2 * n_atom_basis, activation=None, bias=False)
            self.epsilon = epsilon

        def forward(self, q, mu):
            mu_mix = self.mu_channel_mix(mu)
            mu_V, mu_W = torch.split(mu_mix, self.n_atom_basis, dim=-1)
            mu_Vn = torch.sqrt(torch.sum(mu_V**2, dim=-2, keepdim=True) + self.epsilon)
            ctx = torch.cat([q, mu_Vn], dim=-1)
            x = self.intraatomic_context_net(ctx)
            dq_intra, dmu_intra, dqmu_intra = torch.split(x, self.n_atom_basis, dim=-1)
            dmu_intra = dmu_intra * mu_W
            dqmu_intra = dqmu_intra * torch.sum(mu_V * mu_W, dim=-2, keepdim=True)
            q = q + dq_intra + dqmu_intra
            mu = mu + dmu_intra
            return q, mu

    class PaiNN(nn.Module):
        def __init__(self, n_atom_basis, n_interactions, radial_basis, cutoff_fn, activation=F.silu,
                     max_z=100, shared_interactions=False, shared_filters=False, epsilon=1e-8):
            super(PaiNN, self).__init__()
            self.n_atom_basis = n_atom_basis
            self.n_interactions = n_interactions
            self.cutoff_fn = cutoff_fn
            self.cutoff = cutoff_fn.cutoff
            self.radial_basis = radial_basis
            self.embedding = nn.Embedding(max_z, n_atom_basis, padding_idx=0)
            self.share_filters = shared_filters
            self.filter_net = Dense(self.radial_basis.n_rbf, self.n_interactions * n_atom_basis * 3, activation=None)
            self.interactions = nn.ModuleList([PaiNNInteraction(n_atom_basis=self.n_atom_basis, activation=activation)
                                               for _ in range(n_interactions)])
            self.mixing = nn.ModuleList([PaiNNMixing(n_atom_basis=self.n_atom_basis, activation=activation,
                                                     epsilon=epsilon) for _ in range(n_interactions)])
            self.outnet = nn.Sequential(Dense(n_atom_basis, n_atom_basis // 2, activation=F.silu),
                                        Dense(n_atom_basis // 2, 1, activation=None))

        def forward(self, atomic_numbers, R, idx_i, idx_j, idx_m, n_molecules):
            r_ij = R[idx_j] - R[idx_i]
            n_atoms = atomic_numbers.shape[0]
            d_ij = torch.norm(r_ij, dim=1, keepdim=True)
            dir_ij = r_ij / d_ij
            phi_ij = self.radial_basis(d_ij)
            fcut = self.cutoff_fn(d_ij)
            filters = self.filter_net(phi_ij) * fcut[..., None]
            filter_list = torch.split(filters, 3 * self.n_atom_basis, dim=-1)
            q = self.embedding(atomic_numbers)[:, None]
            qs = q.shape
            mu = torch.zeros((qs[0], 3, qs[2]), device=q.device)
            for i, (interaction, mixing) in enumerate(zip(self.interactions, self.mixing)):
                q, mu = interaction(q, mu, filter_list[i], dir_ij, idx_i, idx_j, n_atoms)
                q, mu = mixing(q, mu)
            q = q.squeeze(1)
            y = self.outnet(q)
            return torch.squeeze(scatter_add(y, idx_m, dim_size=n_molecules), -1)

    return PaiNN(n_atom_basis, n_interactions, GaussianRBF(n_rbf, cutoff), CosineCutoff(cutoff))


def painn_loss(torch, F, model, Z, R, idx_i, idx_j, idx_m, energy, forces, n_molecules=2, rho=10.0):
    """schnetpack's ``Forces`` output module: ``-grad(energy, R, grad_outputs=torch.ones_like(energy),
    create_graph=True, retain_graph=True)``, and a weighted MSE of energies and forces."""
    R = R.clone().requires_grad_()
    pred = model(Z, R, idx_i, idx_j, idx_m, n_molecules)
    go = [torch.ones_like(pred)]
    dEdR = torch.autograd.grad([pred], [R], grad_outputs=go, create_graph=True, retain_graph=True)[0]
    pred_forces = -dEdR
    loss = F.mse_loss(pred, energy) + rho * F.mse_loss(pred_forces, forces)
    return pred, pred_forces, loss
