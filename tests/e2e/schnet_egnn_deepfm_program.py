"""The models of ``test_porting_probes_schnet_egnn_deepfm.py``, each written once as its reference writes it (``torch``
is ``torch`` or ``kiln``): SchNet (torch_geometric's ``nn/models/schnet.py`` without PyG), EGNN (vgsatorras/egnn's
``models/egnn_clean/egnn_clean.py``), DeepFM and Wide&Deep (rixwew/pytorch-fm's ``torchfm/layer.py`` and
``torchfm/model/``) with a multi-hot field through ``nn.EmbeddingBag``, and a two-tower retrieval model (PaiNN and
pytorch-fm's other models are in ``painn_torchfm_program.py``)."""

from __future__ import annotations

import math

import numpy as np

PI = math.pi


def schnet(torch, nn, F, hidden_channels=8, num_filters=8, num_interactions=2, num_gaussians=10, cutoff=3.0):
    """SchNet as ``torch_geometric.nn.models.schnet`` writes it; ``propagate`` of CFConv written out (``x_j`` gathered
    by ``edge_index[0]``, summed at ``edge_index[1]`` by ``index_add_``); the interaction graph built eagerly by
    ``radius_graph`` (``cdist``, a mask, ``nonzero``) or given (``forward(z, pos, batch, edge_index)``)."""

    class GaussianSmearing(nn.Module):
        def __init__(self, start=0.0, stop=5.0, num_gaussians=50):
            super().__init__()
            offset = torch.linspace(start, stop, num_gaussians)
            self.coeff = -0.5 / (offset[1] - offset[0]).item()**2
            self.register_buffer('offset', offset)

        def forward(self, dist):
            dist = dist.view(-1, 1) - self.offset.view(1, -1)
            return torch.exp(self.coeff * torch.pow(dist, 2))

    class ShiftedSoftplus(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = torch.log(torch.tensor(2.0)).item()

        def forward(self, x):
            return F.softplus(x) - self.shift

    class CFConv(nn.Module):
        def __init__(self, in_channels, out_channels, num_filters, nn_filter, cutoff):
            super().__init__()
            self.lin1 = nn.Linear(in_channels, num_filters, bias=False)
            self.lin2 = nn.Linear(num_filters, out_channels)
            self.nn = nn_filter
            self.cutoff = cutoff
            self.reset_parameters()

        def reset_parameters(self):
            torch.nn.init.xavier_uniform_(self.lin1.weight)
            torch.nn.init.xavier_uniform_(self.lin2.weight)
            self.lin2.bias.data.fill_(0)

        def forward(self, x, edge_index, edge_weight, edge_attr):
            C = 0.5 * (torch.cos(edge_weight * PI / self.cutoff) + 1.0)
            W = self.nn(edge_attr) * C.view(-1, 1)
            x = self.lin1(x)
            x = self.propagate(edge_index, x=x, W=W)
            x = self.lin2(x)
            return x

        def propagate(self, edge_index, x, W):
            src, dst = edge_index
            msg = self.message(x[src], W)
            return torch.zeros(x.size(0), msg.size(1), dtype=msg.dtype).index_add_(0, dst, msg)

        def message(self, x_j, W):
            return x_j * W

    class InteractionBlock(nn.Module):
        def __init__(self, hidden_channels, num_gaussians, num_filters, cutoff):
            super().__init__()
            self.mlp = nn.Sequential(
                nn.Linear(num_gaussians, num_filters),
                ShiftedSoftplus(),
                nn.Linear(num_filters, num_filters),
            )
            self.conv = CFConv(hidden_channels, hidden_channels, num_filters, self.mlp, cutoff)
            self.act = ShiftedSoftplus()
            self.lin = nn.Linear(hidden_channels, hidden_channels)
            self.reset_parameters()

        def reset_parameters(self):
            torch.nn.init.xavier_uniform_(self.mlp[0].weight)
            self.mlp[0].bias.data.fill_(0)
            torch.nn.init.xavier_uniform_(self.mlp[2].weight)
            self.mlp[2].bias.data.fill_(0)
            self.conv.reset_parameters()
            torch.nn.init.xavier_uniform_(self.lin.weight)
            self.lin.bias.data.fill_(0)

        def forward(self, x, edge_index, edge_weight, edge_attr):
            x = self.conv(x, edge_index, edge_weight, edge_attr)
            x = self.act(x)
            x = self.lin(x)
            return x

    def radius_graph(pos, r, batch):
        dist = torch.cdist(pos, pos)
        mask = (dist < r) & (batch.view(-1, 1) == batch.view(1, -1))
        mask = mask & ~torch.eye(pos.size(0), dtype=torch.bool)
        return mask.nonzero().t()

    def scatter(src, index, dim=0, dim_size=None, reduce='sum'):
        dim_size = int(index.max()) + 1 if dim_size is None else dim_size
        out = torch.zeros(dim_size, *src.shape[1:], dtype=src.dtype)
        return out.scatter_add_(dim, index.view(-1, 1).expand_as(src), src)

    class SchNet(nn.Module):
        def __init__(self, hidden_channels=128, num_filters=128, num_interactions=6, num_gaussians=50, cutoff=10.0,
                     readout='add', mean=None, std=None):
            super().__init__()
            self.hidden_channels = hidden_channels
            self.cutoff = cutoff
            self.readout = readout
            self.mean, self.std = mean, std
            self.embedding = nn.Embedding(100, hidden_channels, padding_idx=0)
            self.distance_expansion = GaussianSmearing(0.0, cutoff, num_gaussians)
            self.interactions = nn.ModuleList()
            for _ in range(num_interactions):
                block = InteractionBlock(hidden_channels, num_gaussians, num_filters, cutoff)
                self.interactions.append(block)
            self.lin1 = nn.Linear(hidden_channels, hidden_channels // 2)
            self.act = ShiftedSoftplus()
            self.lin2 = nn.Linear(hidden_channels // 2, 1)
            self.reset_parameters()

        def reset_parameters(self):
            self.embedding.reset_parameters()
            for interaction in self.interactions:
                interaction.reset_parameters()
            torch.nn.init.xavier_uniform_(self.lin1.weight)
            self.lin1.bias.data.fill_(0)
            torch.nn.init.xavier_uniform_(self.lin2.weight)
            self.lin2.bias.data.fill_(0)

        def interaction_graph(self, pos, batch):
            edge_index = radius_graph(pos, r=self.cutoff, batch=batch)
            row, col = edge_index
            edge_weight = (pos[row] - pos[col]).norm(dim=-1)
            return edge_index, edge_weight

        def forward(self, z, pos, batch=None, edge_index=None, num_graphs=None):
            batch = torch.zeros_like(z) if batch is None else batch
            h = self.embedding(z)
            if edge_index is None:
                edge_index, edge_weight = self.interaction_graph(pos, batch)
            else:
                row, col = edge_index
                edge_weight = (pos[row] - pos[col]).norm(dim=-1)
            edge_attr = self.distance_expansion(edge_weight)
            for interaction in self.interactions:
                h = h + interaction(h, edge_index, edge_weight, edge_attr)
            h = self.lin1(h)
            h = self.act(h)
            h = self.lin2(h)
            if self.mean is not None and self.std is not None:
                h = h * self.std + self.mean
            return scatter(h, batch, dim=0, dim_size=num_graphs, reduce=self.readout)

    model = SchNet(hidden_channels, num_filters, num_interactions, num_gaussians, cutoff, mean=0.1, std=2.0)
    model.radius_graph = radius_graph
    return model


def schnet_loss(torch, F, model, z, pos, batch, energy, forces, edge_index=None, num_graphs=None, rho=10.0):
    """The energy-and-forces loss of SchNet's MD17 training: forces as minus the gradient of the energy with respect
    to the positions (``create_graph=True``, so ``backward`` differentiates through it again)."""
    pos = pos.clone().requires_grad_(True)
    pred = model(z, pos, batch, edge_index, num_graphs).view(-1)
    pred_forces = -torch.autograd.grad(pred.sum(), pos, create_graph=True)[0]
    loss = F.mse_loss(pred, energy) + rho * F.mse_loss(pred_forces, forces)
    return pred, pred_forces, loss


def egnn(torch, nn, F, in_node_nf=3, hidden_nf=8, out_node_nf=2, in_edge_nf=1, n_layers=2, attention=True,
         normalize=True, tanh=True, coords_agg='mean', gcl_coord_model=False):
    """EGNN as ``egnn_clean.py`` writes it (one ``nn.SiLU()`` shared by every MLP, as its default argument is);
    ``gcl_coord_model`` the original ``models/gcl.py``'s coordinate update instead: ``torch.clamp(trans, min=-100,
    max=100)`` and ``coord += agg*self.coords_weight``, in place on the coordinates given (the caller's tensor)."""

    def unsorted_segment_sum(data, segment_ids, num_segments):
        result_shape = (num_segments, data.size(1))
        result = data.new_full(result_shape, 0)  # Init empty result tensor.
        segment_ids = segment_ids.unsqueeze(-1).expand(-1, data.size(1))
        result.scatter_add_(0, segment_ids, data)
        return result

    def unsorted_segment_mean(data, segment_ids, num_segments):
        result_shape = (num_segments, data.size(1))
        segment_ids = segment_ids.unsqueeze(-1).expand(-1, data.size(1))
        result = data.new_full(result_shape, 0)  # Init empty result tensor.
        count = data.new_full(result_shape, 0)
        result.scatter_add_(0, segment_ids, data)
        count.scatter_add_(0, segment_ids, torch.ones_like(data))
        return result / count.clamp(min=1)

    class E_GCL(nn.Module):
        def __init__(self, input_nf, output_nf, hidden_nf, edges_in_d=0, act_fn=nn.SiLU(), residual=True,
                     attention=False, normalize=False, coords_agg='mean', tanh=False):
            super(E_GCL, self).__init__()
            input_edge = input_nf * 2
            self.residual = residual
            self.attention = attention
            self.normalize = normalize
            self.coords_agg = coords_agg
            self.tanh = tanh
            self.epsilon = 1e-8
            edge_coords_nf = 1

            self.edge_mlp = nn.Sequential(
                nn.Linear(input_edge + edge_coords_nf + edges_in_d, hidden_nf),
                act_fn,
                nn.Linear(hidden_nf, hidden_nf),
                act_fn)

            self.node_mlp = nn.Sequential(
                nn.Linear(hidden_nf + input_nf, hidden_nf),
                act_fn,
                nn.Linear(hidden_nf, output_nf))

            layer = nn.Linear(hidden_nf, 1, bias=False)
            torch.nn.init.xavier_uniform_(layer.weight, gain=0.001)

            coord_mlp = []
            coord_mlp.append(nn.Linear(hidden_nf, hidden_nf))
            coord_mlp.append(act_fn)
            coord_mlp.append(layer)
            if self.tanh:
                coord_mlp.append(nn.Tanh())
            self.coord_mlp = nn.Sequential(*coord_mlp)

            if self.attention:
                self.att_mlp = nn.Sequential(
                    nn.Linear(hidden_nf, 1),
                    nn.Sigmoid())

        def edge_model(self, source, target, radial, edge_attr):
            if edge_attr is None:  # Unused.
                out = torch.cat([source, target, radial], dim=1)
            else:
                out = torch.cat([source, target, radial, edge_attr], dim=1)
            out = self.edge_mlp(out)
            if self.attention:
                att_val = self.att_mlp(out)
                out = out * att_val
            return out

        def node_model(self, x, edge_index, edge_attr, node_attr):
            row, col = edge_index
            agg = unsorted_segment_sum(edge_attr, row, num_segments=x.size(0))
            if node_attr is not None:
                agg = torch.cat([x, agg, node_attr], dim=1)
            else:
                agg = torch.cat([x, agg], dim=1)
            out = self.node_mlp(agg)
            if self.residual:
                out = x + out
            return out, agg

        def coord_model(self, coord, edge_index, coord_diff, edge_feat):
            if gcl_coord_model:
                return self.gcl_coord_model(coord, edge_index, coord_diff, edge_feat)
            row, col = edge_index
            trans = coord_diff * self.coord_mlp(edge_feat)
            if self.coords_agg == 'sum':
                agg = unsorted_segment_sum(trans, row, num_segments=coord.size(0))
            elif self.coords_agg == 'mean':
                agg = unsorted_segment_mean(trans, row, num_segments=coord.size(0))
            else:
                raise Exception('Wrong coords_agg parameter' % self.coords_agg)
            coord = coord + agg
            return coord

        def gcl_coord_model(self, coord, edge_index, coord_diff, edge_feat, coords_weight=1.0):
            row, col = edge_index
            trans = coord_diff * self.coord_mlp(edge_feat)
            trans = torch.clamp(trans, min=-100, max=100)  # This is never activated but just in case it explosed
            agg = unsorted_segment_mean(trans, row, num_segments=coord.size(0))
            coord += agg*coords_weight
            return coord

        def coord2radial(self, edge_index, coord):
            row, col = edge_index
            coord_diff = coord[row] - coord[col]
            radial = torch.sum(coord_diff**2, 1).unsqueeze(1)

            if self.normalize:
                norm = torch.sqrt(radial).detach() + self.epsilon
                coord_diff = coord_diff / norm

            return radial, coord_diff

        def forward(self, h, edge_index, coord, edge_attr=None, node_attr=None):
            row, col = edge_index
            radial, coord_diff = self.coord2radial(edge_index, coord)

            edge_feat = self.edge_model(h[row], h[col], radial, edge_attr)
            coord = self.coord_model(coord, edge_index, coord_diff, edge_feat)
            h, agg = self.node_model(h, edge_index, edge_feat, node_attr)

            return h, coord, edge_attr

    class EGNN(nn.Module):
        def __init__(self, in_node_nf, hidden_nf, out_node_nf, in_edge_nf=0, device='cpu', act_fn=nn.SiLU(),
                     n_layers=4, residual=True, attention=False, normalize=False, tanh=False):
            super(EGNN, self).__init__()
            self.hidden_nf = hidden_nf
            self.device = device
            self.n_layers = n_layers
            self.embedding_in = nn.Linear(in_node_nf, self.hidden_nf)
            self.embedding_out = nn.Linear(self.hidden_nf, out_node_nf)
            for i in range(0, n_layers):
                self.add_module("gcl_%d" % i, E_GCL(self.hidden_nf, self.hidden_nf, self.hidden_nf,
                                                    edges_in_d=in_edge_nf, act_fn=act_fn, residual=residual,
                                                    attention=attention, normalize=normalize, tanh=tanh,
                                                    coords_agg=coords_agg))
            self.to(self.device)

        def forward(self, h, x, edges, edge_attr):
            h = self.embedding_in(h)
            for i in range(0, self.n_layers):
                h, x, _ = self._modules["gcl_%d" % i](h, edges, x, edge_attr=edge_attr)
            h = self.embedding_out(h)
            return h, x

    return EGNN(in_node_nf, hidden_nf, out_node_nf, in_edge_nf, n_layers=n_layers, attention=attention,
                normalize=normalize, tanh=tanh)


def get_edges(n_nodes):
    rows, cols = [], []
    for i in range(n_nodes):
        for j in range(n_nodes):
            if i != j:
                rows.append(i)
                cols.append(j)
    edges = [rows, cols]
    return edges


def get_edges_batch(torch, n_nodes, batch_size):
    """egnn_clean.py's fully connected edges of ``batch_size`` graphs of ``n_nodes`` (``torch.LongTensor`` of lists)."""
    edges = get_edges(n_nodes)
    edge_attr = torch.ones(len(edges[0]) * batch_size, 1)
    edges = [torch.LongTensor(edges[0]), torch.LongTensor(edges[1])]
    if batch_size == 1:
        return edges, edge_attr
    elif batch_size > 1:
        rows, cols = [], []
        for i in range(batch_size):
            rows.append(edges[0] + n_nodes * i)
            cols.append(edges[1] + n_nodes * i)
        edges = [torch.cat(rows), torch.cat(cols)]
    return edges, edge_attr


def torchfm(torch, nn, F, field_dims, embed_dim=4, mlp_dims=(8, 4), dropout=0.0, model='deepfm', bag_size=None):
    """pytorch-fm's DeepFM or Wide&Deep; ``bag_size`` adds a multi-hot field (a bag of ids with weights) embedded by
    ``nn.EmbeddingBag(mode='sum')`` as one more field of the FM and the MLP (``forward(x, bag, offsets, weights)``)."""

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

    class FactorizationMachine(torch.nn.Module):
        def __init__(self, reduce_sum=True):
            super().__init__()
            self.reduce_sum = reduce_sum

        def forward(self, x):
            square_of_sum = torch.sum(x, dim=1) ** 2
            sum_of_square = torch.sum(x ** 2, dim=1)
            ix = square_of_sum - sum_of_square
            if self.reduce_sum:
                ix = torch.sum(ix, dim=1, keepdim=True)
            return 0.5 * ix

    class MultiLayerPerceptron(torch.nn.Module):
        def __init__(self, input_dim, embed_dims, dropout, output_layer=True):
            super().__init__()
            layers = list()
            for embed_dim in embed_dims:
                layers.append(torch.nn.Linear(input_dim, embed_dim))
                layers.append(torch.nn.BatchNorm1d(embed_dim))
                layers.append(torch.nn.ReLU())
                layers.append(torch.nn.Dropout(p=dropout))
                input_dim = embed_dim
            if output_layer:
                layers.append(torch.nn.Linear(input_dim, 1))
            self.mlp = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.mlp(x)

    class MultiHotField(torch.nn.Module):
        """A multi-hot field's embedding and its linear term, each a sum over the bag (``EmbeddingBag``)."""

        def __init__(self, num_ids, embed_dim):
            super().__init__()
            self.embedding = torch.nn.EmbeddingBag(num_ids, embed_dim, mode='sum')
            self.fc = torch.nn.EmbeddingBag(num_ids, 1, mode='sum')
            torch.nn.init.xavier_uniform_(self.embedding.weight.data)

        def forward(self, bag, offsets, weights):
            return (self.embedding(bag, offsets, per_sample_weights=weights).unsqueeze(1),
                    self.fc(bag, offsets, per_sample_weights=weights))

    class DeepFactorizationMachineModel(torch.nn.Module):
        def __init__(self, field_dims, embed_dim, mlp_dims, dropout):
            super().__init__()
            self.linear = FeaturesLinear(field_dims)
            self.fm = FactorizationMachine(reduce_sum=True)
            self.embedding = FeaturesEmbedding(field_dims, embed_dim)
            num_fields = len(field_dims) + (bag_size is not None)
            self.bag = MultiHotField(bag_size, embed_dim) if bag_size is not None else None
            self.embed_output_dim = num_fields * embed_dim
            self.mlp = MultiLayerPerceptron(self.embed_output_dim, mlp_dims, dropout)

        def forward(self, x, *bag):
            embed_x, linear = self.embedding(x), self.linear(x)
            if bag:
                bag_x, bag_linear = self.bag(*bag)
                embed_x, linear = torch.cat([embed_x, bag_x], dim=1), linear + bag_linear
            x = linear + self.fm(embed_x) + self.mlp(embed_x.view(-1, self.embed_output_dim))
            return torch.sigmoid(x.squeeze(1))

    class WideAndDeepModel(torch.nn.Module):
        def __init__(self, field_dims, embed_dim, mlp_dims, dropout):
            super().__init__()
            self.linear = FeaturesLinear(field_dims)
            self.embedding = FeaturesEmbedding(field_dims, embed_dim)
            self.embed_output_dim = len(field_dims) * embed_dim
            self.mlp = MultiLayerPerceptron(self.embed_output_dim, mlp_dims, dropout)

        def forward(self, x):
            embed_x = self.embedding(x)
            x = self.linear(x) + self.mlp(embed_x.view(-1, self.embed_output_dim))
            return torch.sigmoid(x.squeeze(1))

    if model == 'deepfm':
        return DeepFactorizationMachineModel(field_dims, embed_dim, list(mlp_dims), dropout)
    return WideAndDeepModel(field_dims, embed_dim, list(mlp_dims), dropout)


def two_tower(torch, nn, F, num_users, num_items, dim=6, hidden=8, temperature=0.1):
    """A two-tower retrieval model: embedding + MLP towers, L2-normalized; in-batch negatives with the logQ
    correction of each item's sampling frequency (a buffer)."""

    class Tower(nn.Module):
        def __init__(self, num_ids):
            super().__init__()
            self.embedding = nn.Embedding(num_ids, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

        def forward(self, ids):
            return F.normalize(self.mlp(self.embedding(ids)), dim=-1)

    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.query_tower = Tower(num_users)
            self.candidate_tower = Tower(num_items)
            self.temperature = temperature
            self.register_buffer('item_freq', torch.ones(num_items) / num_items)

        def forward(self, user_ids, item_ids):
            q = self.query_tower(user_ids)
            c = self.candidate_tower(item_ids)
            logits = q @ c.T / self.temperature - torch.log(self.item_freq[item_ids])
            labels = torch.arange(q.size(0))
            return F.cross_entropy(logits, labels)

        @torch.no_grad()
        def recall_at_k(self, user_ids, target, k):
            q = self.query_tower(user_ids)
            c = self.candidate_tower(torch.arange(num_items))
            topk = torch.topk(q @ c.T, k, dim=1).indices
            return (topk == target[:, None]).any(1).float().mean()

    return TwoTower()

