"""Porting probes: graph neural networks in plain PyTorch (as people write them without torch_geometric, and as its
``MessagePassing`` does inside), written once (``torch`` is torch or kiln) and trained a few Adam steps from kiln's
initial weights in float64: the first logits, the first gradients, the losses, the parameters after and the accuracy on
held-out nodes agree to 1e-10, eagerly and with the whole step as one ``kiln.compile(fullgraph=True)`` graph against
torch's eager loop; one float32 run (how GNNs are trained) at float32's level.

- GCN (Kipf & Welling) on an edge list: self loops by ``cat`` with ``arange(n).unsqueeze(0).repeat(2, 1)``, the degree by
  ``scatter_add_`` of ones, ``deg.pow(-0.5)`` with ``deg_inv_sqrt[deg_inv_sqrt == float('inf')] = 0``, the symmetric
  norm ``deg_inv_sqrt[row] * deg_inv_sqrt[col]``, messages by ``index_select`` and aggregation by ``index_add_``;
  and the dense form ``D^-1/2 (A + I) D^-1/2 X W`` (``torch.eye``, ``torch.diag``).
- GAT (PyG's GATConv): per-head attention logits ``(x * att).sum(-1)`` gathered per edge, ``leaky_relu``, the segment
  softmax over each node's incoming edges (``scatter_reduce(..., 'amax', include_self=False)``, ``exp``,
  ``index_add_``), messages weighted and summed by ``index_add_``, ``elu`` between layers.
- pyGAT's sparse GAT: per-edge ``exp(-leakyrelu(a [h_i || h_j]))`` put in a ``torch.sparse_coo_tensor`` and multiplied
  by ``torch.sparse.mm`` (its ``SpecialSpmm`` without the custom autograd Function), row sums by ``sparse.mm`` with ones,
  heads registered by ``add_module``.
- GraphSAGE (mean aggregation: ``index_add_`` of ``x[src]`` over the counts, ``F.normalize``) with a graph-level readout
  ``global_mean_pool`` over a batch of small graphs (``index_add_`` by the ``batch`` vector).
Node classification takes the loss on the training nodes (``F.cross_entropy(out[data.train_mask],
data.y[data.train_mask])``), Adam with weight decay (PyG's gcn.py); graph classification the pooled logits.

What broke: ``sparse_coo_tensor`` built its dense form in NumPy, so the sparse GAT's attention weights silently got no
gradient (the first gradients of ``a`` were missing); it is now built in the graph
(``tests/frontend/test_sparse_coo_values_grad_vs_torch.py``). What does not trace: ``torch.bincount``, whose length depends on the values (refused by ``kiln.compile`` with an
error naming the line and what to write instead, checked below; PyTorch 2.13's ``torch.compile(fullgraph=True)``
traces it with an unbacked size). kiln's trace has no data-dependent dims, so the compiled steps count a segment's
members by ``scatter_add_`` of ones (as ``torch_scatter``'s ``scatter_mean`` does). ``out[train_mask]`` with a mask
that is an input of the step or a tensor the step reads from its closure (PyG's ``data.train_mask``) was refused too;
its values are now specialized and guarded per call (``frontend/pending_masked_rows.py``), so PyG's loss compiles as
written (checked below); the other compiled steps write the masked mean as ``(loss * mask).sum() / mask.sum()``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot

NODES, FEATURES, HIDDEN, CLASSES, GRAPHS = 9, 5, 4, 3, 3


def gnn_layers(torch, nn, F, count_by="bincount"):
    """The layers; ``count_by`` picks how SAGE and the mean pool count members: ``torch.bincount`` or ``scatter_add_``."""

    def add_self_loops(edge_index, num_nodes):
        loops = torch.arange(num_nodes, device=edge_index.device).unsqueeze(0).repeat(2, 1)
        return torch.cat([edge_index, loops], dim=1)

    def count(index, size, dtype):
        if count_by == "bincount":
            return torch.bincount(index, minlength=size).to(dtype)
        return torch.zeros(size, dtype=dtype).scatter_add_(0, index, torch.ones(index.size(0), dtype=dtype))

    class GCNConv(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.lin = nn.Linear(in_channels, out_channels, bias=False)
            self.bias = nn.Parameter(torch.zeros(out_channels))

        def forward(self, x, edge_index):
            num_nodes = x.size(0)
            edge_index = add_self_loops(edge_index, num_nodes)
            row, col = edge_index
            deg = torch.zeros(num_nodes, dtype=x.dtype).scatter_add_(0, col, torch.ones(col.size(0), dtype=x.dtype))
            deg_inv_sqrt = deg.pow(-0.5)
            deg_inv_sqrt[deg_inv_sqrt == float("inf")] = 0
            norm = deg_inv_sqrt[row] * deg_inv_sqrt[col]
            x = self.lin(x)
            msg = norm.view(-1, 1) * x.index_select(0, row)
            out = torch.zeros_like(x).index_add_(0, col, msg)
            return out + self.bias

    class DenseGCNConv(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(in_channels, out_channels))
            nn.init.xavier_uniform_(self.weight)

        def forward(self, x, adj):
            a_hat = adj + torch.eye(adj.size(0), dtype=adj.dtype)
            d_inv_sqrt = torch.diag(a_hat.sum(1).pow(-0.5))
            return d_inv_sqrt @ a_hat @ d_inv_sqrt @ (x @ self.weight)

    class GraphConvolution(nn.Module):  # tkipf/pygcn's layer (torch.Tensor for its torch.FloatTensor: float64 here)
        def __init__(self, in_features, out_features, bias=True):
            super(GraphConvolution, self).__init__()
            self.in_features, self.out_features = in_features, out_features
            self.weight = nn.Parameter(torch.Tensor(in_features, out_features))
            self.bias = nn.Parameter(torch.Tensor(out_features)) if bias else None
            self.reset_parameters()

        def reset_parameters(self):
            stdv = 1. / math.sqrt(self.weight.size(1))
            self.weight.data.uniform_(-stdv, stdv)
            if self.bias is not None:
                self.bias.data.uniform_(-stdv, stdv)

        def forward(self, input, adj):
            support = torch.mm(input, self.weight)
            output = torch.spmm(adj, support)
            return output + self.bias if self.bias is not None else output

    class GATConv(nn.Module):
        def __init__(self, in_channels, out_channels, heads=2, negative_slope=0.2):
            super().__init__()
            self.heads, self.out_channels, self.negative_slope = heads, out_channels, negative_slope
            self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
            self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
            self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
            nn.init.xavier_uniform_(self.att_src)
            nn.init.xavier_uniform_(self.att_dst)
            self.bias = nn.Parameter(torch.zeros(heads * out_channels))

        def forward(self, x, edge_index):
            N, H, C = x.size(0), self.heads, self.out_channels
            src, dst = add_self_loops(edge_index, N)
            x = self.lin(x).view(-1, H, C)
            alpha_src, alpha_dst = (x * self.att_src).sum(dim=-1), (x * self.att_dst).sum(dim=-1)
            alpha = F.leaky_relu(alpha_src.index_select(0, src) + alpha_dst.index_select(0, dst), self.negative_slope)
            index = dst.unsqueeze(-1).expand_as(alpha)
            alpha_max = torch.zeros(N, H, dtype=alpha.dtype).scatter_reduce(0, index, alpha, reduce="amax",
                                                                            include_self=False)
            alpha = (alpha - alpha_max.index_select(0, dst)).exp()
            alpha_sum = torch.zeros(N, H, dtype=alpha.dtype).index_add_(0, dst, alpha)
            alpha = alpha / (alpha_sum.index_select(0, dst) + 1e-16)
            out = torch.zeros(N, H, C, dtype=x.dtype).index_add_(0, dst, x.index_select(0, src) * alpha.unsqueeze(-1))
            return out.view(-1, H * C) + self.bias

    class SpGraphAttentionLayer(nn.Module):  # pyGAT's sparse layer, its SpecialSpmm as sparse_coo_tensor + sparse.mm
        def __init__(self, in_features, out_features, alpha=0.2, concat=True):
            super(SpGraphAttentionLayer, self).__init__()
            self.out_features, self.concat = out_features, concat
            self.W = nn.Parameter(torch.zeros(size=(in_features, out_features)))
            nn.init.xavier_normal_(self.W.data, gain=1.414)
            self.a = nn.Parameter(torch.zeros(size=(1, 2 * out_features)))
            nn.init.xavier_normal_(self.a.data, gain=1.414)
            self.leakyrelu = nn.LeakyReLU(alpha)

        def forward(self, input, edge):
            N = input.size()[0]
            h = torch.mm(input, self.W)
            edge_h = torch.cat((h[edge[0, :], :], h[edge[1, :], :]), dim=1).t()
            edge_e = torch.exp(-self.leakyrelu(self.a.mm(edge_h).squeeze()))
            attention = torch.sparse_coo_tensor(edge, edge_e, torch.Size([N, N]))
            e_rowsum = torch.sparse.mm(attention, torch.ones(size=(N, 1)))
            h_prime = torch.sparse.mm(attention, h)
            h_prime = h_prime.div(e_rowsum)
            return F.elu(h_prime) if self.concat else h_prime

    class SAGEConv(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.lin_l = nn.Linear(in_channels, out_channels)
            self.lin_r = nn.Linear(in_channels, out_channels, bias=False)

        def forward(self, x, edge_index):
            src, dst = edge_index
            summed = torch.zeros_like(x).index_add_(0, dst, x[src])
            mean = summed / count(dst, x.size(0), x.dtype).clamp(min=1).unsqueeze(-1)
            return F.normalize(self.lin_l(mean) + self.lin_r(x), p=2.0, dim=-1)

    def global_mean_pool(x, batch, size):
        summed = torch.zeros(size, x.size(1), dtype=x.dtype).index_add_(0, batch, x)
        return summed / count(batch, size, x.dtype).clamp(min=1).view(-1, 1)

    return GCNConv, DenseGCNConv, GraphConvolution, GATConv, SpGraphAttentionLayer, SAGEConv, global_mean_pool


def gnn_models(torch, nn, F, count_by="bincount"):
    (GCNConv, DenseGCNConv, GraphConvolution, GATConv, SpGraphAttentionLayer, SAGEConv,
     global_mean_pool) = gnn_layers(torch, nn, F, count_by)

    class GCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = GCNConv(FEATURES, HIDDEN), GCNConv(HIDDEN, CLASSES)

        def forward(self, x, edge_index):
            x = F.dropout(F.relu(self.conv1(x, edge_index)), p=0.0, training=self.training)
            return self.conv2(x, edge_index)

    class DenseGCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = DenseGCNConv(FEATURES, HIDDEN), DenseGCNConv(HIDDEN, CLASSES)

        def forward(self, x, adj):
            return self.conv2(F.relu(self.conv1(x, adj)), adj)

    class SparseGCN(nn.Module):  # pygcn's model
        def __init__(self, nfeat=FEATURES, nhid=HIDDEN, nclass=CLASSES, dropout=0.0):
            super(SparseGCN, self).__init__()
            self.gc1, self.gc2 = GraphConvolution(nfeat, nhid), GraphConvolution(nhid, nclass)
            self.dropout = dropout

        def forward(self, x, adj):
            x = F.relu(self.gc1(x, adj))
            x = F.dropout(x, self.dropout, training=self.training)
            x = self.gc2(x, adj)
            return F.log_softmax(x, dim=1)

    class GAT(nn.Module):
        def __init__(self, heads=2):
            super().__init__()
            self.conv1, self.conv2 = GATConv(FEATURES, HIDDEN, heads=heads), GATConv(HIDDEN * heads, CLASSES, heads=1)

        def forward(self, x, edge_index):
            return self.conv2(F.elu(self.conv1(x, edge_index)), edge_index)

    class SpGAT(nn.Module):  # pyGAT's model; the edges with self loops, as pyGAT's adjacency has them
        def __init__(self, nfeat=FEATURES, nhid=HIDDEN, nclass=CLASSES, nheads=2):
            super(SpGAT, self).__init__()
            self.attentions = [SpGraphAttentionLayer(nfeat, nhid, concat=True) for _ in range(nheads)]
            for i, attention in enumerate(self.attentions):
                self.add_module('attention_{}'.format(i), attention)
            self.out_att = SpGraphAttentionLayer(nhid * nheads, nclass, concat=False)

        def forward(self, x, edge_index):
            adj = torch.cat([edge_index, torch.arange(x.size(0)).unsqueeze(0).repeat(2, 1)], dim=1)
            x = torch.cat([att(x, adj) for att in self.attentions], dim=1)
            x = F.elu(self.out_att(x, adj))
            return F.log_softmax(x, dim=1)

    class GraphSAGE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = SAGEConv(FEATURES, HIDDEN), SAGEConv(HIDDEN, HIDDEN)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x, edge_index, batch):
            x = F.relu(self.conv1(x, edge_index))
            x = F.relu(self.conv2(x, edge_index))
            return self.head(global_mean_pool(x, batch, GRAPHS))

    return {"gcn": GCN, "dense-gcn": DenseGCN, "pygcn": SparseGCN, "gat": GAT, "sparse-gat": SpGAT, "sage": GraphSAGE}


def graph(seed=0, edges=16):
    """A random undirected graph (both directions of each edge), features, labels, train/test masks, its dense
    adjacency, and the node-to-graph ``batch`` vector cutting it into GRAPHS graphs with their labels."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, NODES, edges)
    dst = (src + rng.integers(1, NODES, edges)) % NODES
    edge_index = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])])
    adj = np.zeros((NODES, NODES))
    adj[edge_index[0], edge_index[1]] = 1.0
    train_mask = np.zeros(NODES, bool)
    train_mask[rng.permutation(NODES)[:5]] = True
    batch = np.repeat(np.arange(GRAPHS), [2, 3, 4])
    return dict(x=rng.standard_normal((NODES, FEATURES)), edge_index=edge_index, adj=adj,
                y=rng.integers(0, CLASSES, NODES), train_mask=train_mask, test_mask=~train_mask, batch=batch,
                graph_y=np.array([0, 2, 1]), idx_train=np.flatnonzero(train_mask))


def row_normalized(adj):
    """pygcn's ``normalize(adj + sp.eye(n))`` (D^-1 (A + I)) as COO parts ``(row, col, data, shape)``; pygcn does it in
    scipy, NumPy here (scipy is no test dependency)."""
    mx = adj + np.eye(adj.shape[0])
    mx = mx / mx.sum(1, keepdims=True)
    row, col = np.nonzero(mx)
    return row, col, mx[row, col], mx.shape


def sparse_mx_to_torch_sparse_tensor(torch, sparse_mx):
    """pygcn's conversion (``torch.sparse_coo_tensor`` for its legacy ``torch.sparse.FloatTensor``)."""
    row, col, data, shape = sparse_mx
    indices = torch.from_numpy(np.vstack((row, col)).astype(np.int64))
    values = torch.from_numpy(data).to(torch.get_default_dtype())
    return torch.sparse_coo_tensor(indices, values, torch.Size(shape))


def model_inputs(name, data):
    """The model's forward arguments (as tensors of the data's library)."""
    if name == "dense-gcn":
        return data["x"], data["adj"]
    if name == "pygcn":
        return data["x"], data["sparse_adj"]
    if name == "sage":
        return data["x"], data["edge_index"], data["batch"]
    return data["x"], data["edge_index"]


def build(name, count_by="bincount"):
    return lambda torch, nn, F: gnn_models(torch, nn, F, count_by)[name]()


def tensors(torch, data):
    """The data as tensors, floats in the default dtype (``torch.from_numpy(x).float()`` when it is float32), and
    pygcn's normalized sparse adjacency."""
    result = {key: torch.tensor(value, dtype=torch.get_default_dtype() if value.dtype.kind == "f" else None)
              for key, value in data.items()}
    return dict(result, sparse_adj=sparse_mx_to_torch_sparse_tensor(torch, row_normalized(data["adj"])))


def node_loss(F, name, out, data):
    """The graph labels' loss (sage), pygcn's ``F.nll_loss(output[idx_train], labels[idx_train])``, or PyG's
    ``F.cross_entropy(out[data.train_mask], data.y[data.train_mask])``."""
    if name == "sage":
        return F.cross_entropy(out, data["graph_y"])
    if name == "pygcn":
        return F.nll_loss(out[data["idx_train"]], data["y"][data["idx_train"]])
    return F.cross_entropy(out[data["train_mask"]], data["y"][data["train_mask"]])


def train_eagerly(name, steps=3):
    def train(torch, nn, F, model):
        data = tensors(torch, graph())
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
        record = {"losses": []}
        for _ in range(steps):
            model.train()
            optimizer.zero_grad()
            out = model(*model_inputs(name, data))
            loss = node_loss(F, name, out, data)
            loss.backward()
            record.setdefault("logits", array(out))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        model.eval()
        with torch.no_grad():
            pred = model(*model_inputs(name, data)).argmax(dim=1)
        if name != "sage":
            record["test_correct"] = int((pred[data["test_mask"]] == data["y"][data["test_mask"]]).sum())
        record["pred"], record["state"] = pred.tolist(), snapshot(model)
        record["dtypes"] = [str(t.dtype).split(".")[-1] for t in (out, loss, pred)]
        return record

    return train


@pytest.mark.parametrize("name", ["gcn", "dense-gcn", "pygcn", "gat", "sparse-gat", "sage"])
def test_gnn_trains_as_torch(name, float64_default):
    ours, theirs = run_in_lockstep(build(name), train_eagerly(name))
    assert ours.pop("dtypes") == theirs.pop("dtypes")
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def masked_node_loss(name):
    def loss_of(torch, nn, F, model, *batch):
        *inputs, y, mask, idx_train = batch
        out = model(*inputs)
        if name in ("sage", "pygcn"):
            return node_loss(F, name, out, {"graph_y": y, "y": y, "idx_train": idx_train})
        mask = mask.to(out.dtype)
        return (F.cross_entropy(out, y, reduction="none") * mask).sum() / mask.sum()

    return loss_of


def step_batch(name):
    def make_batch(lib):
        data = tensors(lib, graph())
        labels = data["graph_y"] if name == "sage" else data["y"]
        return model_inputs(name, data) + (labels, data["train_mask"], data["idx_train"])

    return make_batch


def adam(torch, model):
    return torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)


@pytest.mark.parametrize("name", ["gcn", "dense-gcn", "pygcn", "gat", "sparse-gat", "sage"])
def test_gnn_compiled_step_as_torch(name, float64_default):
    """The graph is an input of the compiled step (a new edge list of the same size reuses the graph)."""
    train = compiled_step_training(step_batch(name), adam, masked_node_loss(name))
    ours, theirs = run_in_lockstep(build(name, count_by="scatter_add"), train)
    assert_same_records(ours, theirs)


def test_gat_float32_trains_as_torch():
    """float32 throughout (the default dtype): values at float32's level; the orders of summation differ."""
    ours, theirs = run_in_lockstep(build("gat"), train_eagerly("gat"))
    assert ours.pop("dtypes") == theirs.pop("dtypes") == ["float32", "float32", "int64"]
    assert_same_records(ours, theirs, rtol=2e-5, atol=1e-6)


def pyg_masked_node_loss(torch, nn, F, model, *batch):
    """PyG's gcn.py loss as written: ``F.cross_entropy(out[data.train_mask], data.y[data.train_mask])``."""
    *inputs, y, mask, _ = batch
    out = model(*inputs)
    return F.cross_entropy(out[mask], y[mask])


def test_gcn_compiled_step_with_pygs_masked_loss_as_torch(float64_default):
    """``out[train_mask]`` with the mask an input of the step: its values are specialized and guarded, so the step
    compiles with PyG's loss as written (kiln refused it: "x[mask] has a data-dependent shape")."""
    train = compiled_step_training(step_batch("gcn"), adam, pyg_masked_node_loss)
    ours, theirs = run_in_lockstep(build("gcn", count_by="scatter_add"), train)
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("what, words", [("bincount", "bincount() has a data-dependent shape")])
def test_compiled_data_dependent_shapes_are_refused_clearly(what, words, float64_default):
    """PyG's ``train()`` reads ``data`` from its closure; kiln lifts those tensors to graph inputs, so
    ``torch.bincount`` is refused with the line and what to write instead."""
    kiln.manual_seed(0)
    data = tensors(kiln, graph())
    name = "gcn" if what == "mask" else "sage"
    model = gnn_models(kiln, kiln.nn, kiln.nn.functional)[name]()
    optimizer = adam(kiln, model)

    def train():
        optimizer.zero_grad()
        out = model(*model_inputs(name, data))
        if name == "sage":
            loss = kiln.nn.functional.cross_entropy(out, data["graph_y"])
        else:
            loss = kiln.nn.functional.cross_entropy(out[data["train_mask"]], data["y"][data["train_mask"]])
        loss.backward()
        optimizer.step()
        return float(loss)

    with pytest.raises(kiln.TraceError, match=r"test_porting_probes_gnn.py:\d+ in .*\n.*" + words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        kiln.compile(train, fullgraph=True)()
