"""Graphormer: microsoft/Graphormer's preprocessing (``graphormer/data/wrapper.py``'s ``convert_to_single_emb`` and
``preprocess_item``, ``algos.pyx``'s ``floyd_warshall`` and ``gen_edge_input`` as plain NumPy, ``collator.py``'s
padding and ``collator``), its modules (``graphormer_layers.py``'s ``GraphNodeFeature`` and ``GraphAttnBias``,
``multihead_attention.py``, the pre-LN ``GraphormerGraphEncoderLayer``, ``GraphormerGraphEncoder`` with
``init_graphormer_params``), the graph-level head of ``models/graphormer.py``, the ``l1_loss`` criteria (with and
without FLAG), ``tasks/graph_prediction.py``'s FLAG train step and ``lr.py``'s ``PolynomialDecayLR``, as written
(fairseq's ``LayerNorm``, ``FairseqDropout``, ``quant_noise``, ``utils.softmax``/``gelu``/``clip_grad_norm_`` and its
train step written out), for ``torch`` being torch or kiln: the program of ``test_porting_probes_graphormer.py``,
whose docstring says what it covers.

``upcast=True`` keeps fairseq's float32 islands (``utils.softmax(x, dim, dtype=torch.float32)`` of the scores, ``gelu``
of ``x.float()``); ``upcast=False`` computes them in the default dtype (the one change a float64 user makes). The
attention bias stays float32 either way, as Graphormer writes it (``attn_bias = torch.zeros(..., dtype=torch.float)``
and every bias written into that tensor)."""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Optional, Tuple

import numpy as np


# ---------------------------------------------------------------------------------------------------------------- algos


def floyd_warshall(adjacency_matrix):
    """``algos.pyx``'s ``floyd_warshall`` (its typed loops as Python over NumPy arrays)."""
    (nrows, ncols) = adjacency_matrix.shape
    assert nrows == ncols
    n = nrows

    adj_mat_copy = adjacency_matrix.astype(np.int64, order='C', casting='safe', copy=True)
    assert adj_mat_copy.flags['C_CONTIGUOUS']
    M = adj_mat_copy
    path = -1 * np.ones([n, n], dtype=np.int64)

    # set unreachable nodes distance to 510
    for i in range(n):
        for j in range(n):
            if i == j:
                M[i][j] = 0
            elif M[i][j] == 0:
                M[i][j] = 510

    # floyed algo
    for k in range(n):
        for i in range(n):
            M_ik = M[i][k]
            for j in range(n):
                cost_ikkj = M_ik + M[k][j]
                M_ij = M[i][j]
                if M_ij > cost_ikkj:
                    M[i][j] = cost_ikkj
                    path[i][j] = k

    # set unreachable path to 510
    for i in range(n):
        for j in range(n):
            if M[i][j] >= 510:
                path[i][j] = 510
                M[i][j] = 510

    return M, path


def get_all_edges(path, i, j):
    k = path[i][j]
    if k == -1:
        return []
    else:
        return get_all_edges(path, i, k) + [k] + get_all_edges(path, k, j)


def gen_edge_input(max_dist, path, edge_feat):
    (nrows, ncols) = path.shape
    assert nrows == ncols
    n = nrows
    max_dist_copy = max_dist

    path_copy = path.astype(np.int64, order='C', casting='safe', copy=True)
    edge_feat_copy = edge_feat.astype(np.int64, order='C', casting='safe', copy=True)
    assert path_copy.flags['C_CONTIGUOUS']
    assert edge_feat_copy.flags['C_CONTIGUOUS']

    edge_fea_all = -1 * np.ones([n, n, max_dist_copy, edge_feat.shape[-1]], dtype=np.int64)

    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if path_copy[i][j] == 510:
                continue
            path = [i] + get_all_edges(path_copy, i, j) + [j]
            num_path = len(path) - 1
            for k in range(num_path):
                edge_fea_all[i, j, k, :] = edge_feat_copy[path[k], path[k + 1], :]

    return edge_fea_all


# -------------------------------------------------------------------------------------------------- wrapper, collator


class Data:
    """What a PyG ``Data`` item carries here: its attributes."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def wrapper(torch):
    """``(convert_to_single_emb, preprocess_item)`` of ``graphormer/data/wrapper.py``."""

    @torch.jit.script
    def convert_to_single_emb(x, offset: int = 512):
        feature_num = x.size(1) if len(x.size()) > 1 else 1
        feature_offset = 1 + torch.arange(0, feature_num * offset, offset, dtype=torch.long)
        x = x + feature_offset
        return x

    def preprocess_item(item):
        edge_attr, edge_index, x = item.edge_attr, item.edge_index, item.x
        N = x.size(0)
        x = convert_to_single_emb(x)

        # node adj matrix [N, N] bool
        adj = torch.zeros([N, N], dtype=torch.bool)
        adj[edge_index[0, :], edge_index[1, :]] = True

        # edge feature here
        if len(edge_attr.size()) == 1:
            edge_attr = edge_attr[:, None]
        attn_edge_type = torch.zeros([N, N, edge_attr.size(-1)], dtype=torch.long)
        attn_edge_type[edge_index[0, :], edge_index[1, :]] = (
            convert_to_single_emb(edge_attr) + 1
        )

        shortest_path_result, path = floyd_warshall(adj.numpy())
        max_dist = np.amax(shortest_path_result)
        edge_input = gen_edge_input(max_dist, path, attn_edge_type.numpy())
        spatial_pos = torch.from_numpy((shortest_path_result)).long()
        attn_bias = torch.zeros([N + 1, N + 1], dtype=torch.float)  # with graph token

        # combine
        item.x = x
        item.attn_bias = attn_bias
        item.attn_edge_type = attn_edge_type
        item.spatial_pos = spatial_pos
        item.in_degree = adj.long().sum(dim=1).view(-1)
        item.out_degree = item.in_degree  # for undirected graph
        item.edge_input = torch.from_numpy(edge_input).long()

        return item

    return convert_to_single_emb, preprocess_item


def collation(torch):
    """``collator`` of ``graphormer/data/collator.py`` (with its padding helpers)."""

    def pad_1d_unsqueeze(x, padlen):
        x = x + 1  # pad id = 0
        xlen = x.size(0)
        if xlen < padlen:
            new_x = x.new_zeros([padlen], dtype=x.dtype)
            new_x[:xlen] = x
            x = new_x
        return x.unsqueeze(0)

    def pad_2d_unsqueeze(x, padlen):
        x = x + 1  # pad id = 0
        xlen, xdim = x.size()
        if xlen < padlen:
            new_x = x.new_zeros([padlen, xdim], dtype=x.dtype)
            new_x[:xlen, :] = x
            x = new_x
        return x.unsqueeze(0)

    def pad_attn_bias_unsqueeze(x, padlen):
        xlen = x.size(0)
        if xlen < padlen:
            new_x = x.new_zeros([padlen, padlen], dtype=x.dtype).fill_(float("-inf"))
            new_x[:xlen, :xlen] = x
            new_x[xlen:, :xlen] = 0
            x = new_x
        return x.unsqueeze(0)

    def pad_edge_type_unsqueeze(x, padlen):
        xlen = x.size(0)
        if xlen < padlen:
            new_x = x.new_zeros([padlen, padlen, x.size(-1)], dtype=x.dtype)
            new_x[:xlen, :xlen, :] = x
            x = new_x
        return x.unsqueeze(0)

    def pad_spatial_pos_unsqueeze(x, padlen):
        x = x + 1
        xlen = x.size(0)
        if xlen < padlen:
            new_x = x.new_zeros([padlen, padlen], dtype=x.dtype)
            new_x[:xlen, :xlen] = x
            x = new_x
        return x.unsqueeze(0)

    def pad_3d_unsqueeze(x, padlen1, padlen2, padlen3):
        x = x + 1
        xlen1, xlen2, xlen3, xlen4 = x.size()
        if xlen1 < padlen1 or xlen2 < padlen2 or xlen3 < padlen3:
            new_x = x.new_zeros([padlen1, padlen2, padlen3, xlen4], dtype=x.dtype)
            new_x[:xlen1, :xlen2, :xlen3, :] = x
            x = new_x
        return x.unsqueeze(0)

    def collator(items, max_node=512, multi_hop_max_dist=20, spatial_pos_max=20):
        items = [item for item in items if item is not None and item.x.size(0) <= max_node]
        items = [
            (
                item.idx,
                item.attn_bias,
                item.attn_edge_type,
                item.spatial_pos,
                item.in_degree,
                item.out_degree,
                item.x,
                item.edge_input[:, :, :multi_hop_max_dist, :],
                item.y,
            )
            for item in items
        ]
        (
            idxs,
            attn_biases,
            attn_edge_types,
            spatial_poses,
            in_degrees,
            out_degrees,
            xs,
            edge_inputs,
            ys,
        ) = zip(*items)

        for idx, _ in enumerate(attn_biases):
            attn_biases[idx][1:, 1:][spatial_poses[idx] >= spatial_pos_max] = float("-inf")
        max_node_num = max(i.size(0) for i in xs)
        max_dist = max(i.size(-2) for i in edge_inputs)
        y = torch.cat(ys)
        x = torch.cat([pad_2d_unsqueeze(i, max_node_num) for i in xs])
        edge_input = torch.cat(
            [pad_3d_unsqueeze(i, max_node_num, max_node_num, max_dist) for i in edge_inputs]
        )
        attn_bias = torch.cat(
            [pad_attn_bias_unsqueeze(i, max_node_num + 1) for i in attn_biases]
        )
        attn_edge_type = torch.cat(
            [pad_edge_type_unsqueeze(i, max_node_num) for i in attn_edge_types]
        )
        spatial_pos = torch.cat(
            [pad_spatial_pos_unsqueeze(i, max_node_num) for i in spatial_poses]
        )
        in_degree = torch.cat([pad_1d_unsqueeze(i, max_node_num) for i in in_degrees])

        return dict(
            idx=torch.LongTensor(idxs),
            attn_bias=attn_bias,
            attn_edge_type=attn_edge_type,
            spatial_pos=spatial_pos,
            in_degree=in_degree,
            out_degree=in_degree,  # for undirected graph
            x=x,
            edge_input=edge_input,
            y=y,
        )

    return collator


def graph_dataset(torch, graphs, max_node=512, multi_hop_max_dist=20, spatial_pos_max=20):
    """The items (``Data`` of ``x``, ``edge_index``, ``edge_attr``, ``y`` from the NumPy graphs) preprocessed at
    ``__getitem__`` (as ``MyPygGraphPropPredDataset``) and the ``collate_fn`` making fairseq's sample dicts (the batched
    data by ``BatchedDataDataset.collater``'s ``collator``)."""
    _, preprocess_item = wrapper(torch)

    class GraphDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(graphs)

        def __getitem__(self, idx):
            x, edge_index, edge_attr, y = graphs[idx]
            item = Data(x=torch.tensor(x), edge_index=torch.tensor(edge_index), edge_attr=torch.tensor(edge_attr),
                        y=torch.tensor(y, dtype=torch.float))
            item.idx = idx
            item.y = item.y.reshape(-1)
            return preprocess_item(item)

    collate = partial(collation(torch), max_node=max_node, multi_hop_max_dist=multi_hop_max_dist,
                      spatial_pos_max=spatial_pos_max)

    def collater(samples):
        """fairseq's ``NestedDictionaryDataset`` of ``{"nsamples": NumSamplesDataset(), "net_input": {"batched_data":
        BatchedDataDataset(...)}, "target": TargetDataset(...)}`` (``TargetDataset.collater``'s ``torch.stack``)."""
        return {
            "nsamples": len(samples),
            "net_input": {"batched_data": collate(samples)},
            "target": torch.stack([item.y for item in samples], dim=0),
        }

    return GraphDataset(), collater


# -------------------------------------------------------------------------------------------------------------- fairseq


def fairseq(torch, nn, F, upcast=True):
    """``(LayerNorm, FairseqDropout, quant_noise, softmax, get_activation_fn)``: fairseq's modules as Graphormer uses
    them (no apex: ``LayerNorm`` is ``torch.nn.LayerNorm``)."""

    def LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, export=False):
        return torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine)

    class FairseqDropout(nn.Module):
        def __init__(self, p, module_name=None):
            super().__init__()
            self.p = p
            self.module_name = module_name
            self.apply_during_inference = False

        def forward(self, x, inplace: bool = False):
            if self.p > 0 and (self.training or self.apply_during_inference):
                return F.dropout(x, p=self.p, training=True, inplace=inplace)
            else:
                return x

    def quant_noise(module, p, block_size):
        # if no quantization noise, don't register hook
        if p <= 0:
            return module
        raise NotImplementedError

    def softmax(x, dim: int, onnx_trace: bool = False):
        if onnx_trace:
            return F.softmax(x.float(), dim=dim)
        else:
            return F.softmax(x, dim=dim, dtype=torch.float32 if upcast else None)

    def gelu(x):
        return torch.nn.functional.gelu(x.float() if upcast else x).type_as(x)

    def get_activation_fn(activation: str) -> Callable:
        if activation == "relu":
            return F.relu
        elif activation == "gelu":
            return gelu
        raise RuntimeError("--activation-fn {} not supported".format(activation))

    return LayerNorm, FairseqDropout, quant_noise, softmax, get_activation_fn


def fairseq_training(torch, upcast=True):
    """``(clip_grad_norm_, multiply_grads)``: fairseq's ``utils.clip_grad_norm_`` (its CPU path: per-gradient float32
    norms, no apex; ``upcast=False`` norms in the gradients' dtype, as torch refuses ``torch.norm(g, dtype=
    torch.float32)`` of float64 gradients, a narrowing) and ``FairseqOptimizer.multiply_grads``."""

    @torch.no_grad()
    def clip_grad_norm_(params, max_norm, aggregate_norm_fn=None) -> torch.Tensor:
        def grad_exists(p):
            return p is not None and getattr(p, "grad", None) is not None

        if isinstance(params, torch.Tensor):
            params = [params]
        params = list(params)
        grads = [
            p.grad.detach() for p in params if grad_exists(p) and not hasattr(p, "expert")
        ]

        if len(grads) == 0:
            if len(params) > 0:
                return params[0].new_tensor(0.0)
            else:
                return torch.tensor(0.0)

        norm_dtype = torch.float32 if upcast else None
        if len(grads) == 1:
            total_norm = torch.norm(grads[0], p=2, dtype=norm_dtype)
        else:
            total_norm = torch.norm(
                torch.stack([torch.norm(g, p=2, dtype=norm_dtype) for g in grads])
            )

        if aggregate_norm_fn is not None:
            total_norm = aggregate_norm_fn(total_norm)

        if max_norm > 0:
            max_norm = float(max_norm)
            clip_coef = (max_norm / (total_norm + 1e-6)).clamp_(max=1)
            for g in grads:
                g.mul_(clip_coef)
        return total_norm

    def multiply_grads(params, c):
        """Multiplies grads by a constant *c*."""
        for p in params:
            if p.grad is not None:
                if torch.is_tensor(c):
                    c = c.to(p.grad.device)
                p.grad.data.mul_(c)

    return clip_grad_norm_, multiply_grads


# -------------------------------------------------------------------------------------------------------------- modules


def graphormer_modules(torch, nn, F, upcast=True):
    """``(GraphormerGraphEncoder, MultiheadAttention, init_graphormer_params)``: graphormer/modules as written."""
    LayerNorm, FairseqDropout, quant_noise, softmax, get_activation_fn = fairseq(torch, nn, F, upcast)
    Tensor = torch.Tensor

    def init_params(module, n_layers):
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=0.02 / math.sqrt(n_layers))
            if module.bias is not None:
                module.bias.data.zero_()
        if isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=0.02)

    class GraphNodeFeature(nn.Module):
        """
        Compute node features for each node in the graph.
        """

        def __init__(
            self, num_heads, num_atoms, num_in_degree, num_out_degree, hidden_dim, n_layers
        ):
            super(GraphNodeFeature, self).__init__()
            self.num_heads = num_heads
            self.num_atoms = num_atoms

            # 1 for graph token
            self.atom_encoder = nn.Embedding(num_atoms + 1, hidden_dim, padding_idx=0)
            self.in_degree_encoder = nn.Embedding(num_in_degree, hidden_dim, padding_idx=0)
            self.out_degree_encoder = nn.Embedding(
                num_out_degree, hidden_dim, padding_idx=0
            )

            self.graph_token = nn.Embedding(1, hidden_dim)

            self.apply(lambda module: init_params(module, n_layers=n_layers))

        def forward(self, batched_data):
            x, in_degree, out_degree = (
                batched_data["x"],
                batched_data["in_degree"],
                batched_data["out_degree"],
            )
            n_graph, n_node = x.size()[:2]

            # node feauture + graph token
            node_feature = self.atom_encoder(x).sum(dim=-2)  # [n_graph, n_node, n_hidden]

            node_feature = (
                node_feature
                + self.in_degree_encoder(in_degree)
                + self.out_degree_encoder(out_degree)
            )

            graph_token_feature = self.graph_token.weight.unsqueeze(0).repeat(n_graph, 1, 1)

            graph_node_feature = torch.cat([graph_token_feature, node_feature], dim=1)

            return graph_node_feature

    class GraphAttnBias(nn.Module):
        """
        Compute attention bias for each head.
        """

        def __init__(
            self,
            num_heads,
            num_atoms,
            num_edges,
            num_spatial,
            num_edge_dis,
            hidden_dim,
            edge_type,
            multi_hop_max_dist,
            n_layers,
        ):
            super(GraphAttnBias, self).__init__()
            self.num_heads = num_heads
            self.multi_hop_max_dist = multi_hop_max_dist

            self.edge_encoder = nn.Embedding(num_edges + 1, num_heads, padding_idx=0)
            self.edge_type = edge_type
            if self.edge_type == "multi_hop":
                self.edge_dis_encoder = nn.Embedding(
                    num_edge_dis * num_heads * num_heads, 1
                )
            self.spatial_pos_encoder = nn.Embedding(num_spatial, num_heads, padding_idx=0)

            self.graph_token_virtual_distance = nn.Embedding(1, num_heads)

            self.apply(lambda module: init_params(module, n_layers=n_layers))

        def forward(self, batched_data):
            attn_bias, spatial_pos, x = (
                batched_data["attn_bias"],
                batched_data["spatial_pos"],
                batched_data["x"],
            )
            # in_degree, out_degree = batched_data.in_degree, batched_data.in_degree
            edge_input, attn_edge_type = (
                batched_data["edge_input"],
                batched_data["attn_edge_type"],
            )

            n_graph, n_node = x.size()[:2]
            graph_attn_bias = attn_bias.clone()
            graph_attn_bias = graph_attn_bias.unsqueeze(1).repeat(
                1, self.num_heads, 1, 1
            )  # [n_graph, n_head, n_node+1, n_node+1]

            # spatial pos
            # [n_graph, n_node, n_node, n_head] -> [n_graph, n_head, n_node, n_node]
            spatial_pos_bias = self.spatial_pos_encoder(spatial_pos).permute(0, 3, 1, 2)
            graph_attn_bias[:, :, 1:, 1:] = graph_attn_bias[:, :, 1:, 1:] + spatial_pos_bias

            # reset spatial pos here
            t = self.graph_token_virtual_distance.weight.view(1, self.num_heads, 1)
            graph_attn_bias[:, :, 1:, 0] = graph_attn_bias[:, :, 1:, 0] + t
            graph_attn_bias[:, :, 0, :] = graph_attn_bias[:, :, 0, :] + t

            # edge feature
            if self.edge_type == "multi_hop":
                spatial_pos_ = spatial_pos.clone()
                spatial_pos_[spatial_pos_ == 0] = 1  # set pad to 1
                # set 1 to 1, x > 1 to x - 1
                spatial_pos_ = torch.where(spatial_pos_ > 1, spatial_pos_ - 1, spatial_pos_)
                if self.multi_hop_max_dist > 0:
                    spatial_pos_ = spatial_pos_.clamp(0, self.multi_hop_max_dist)
                    edge_input = edge_input[:, :, :, : self.multi_hop_max_dist, :]
                # [n_graph, n_node, n_node, max_dist, n_head]
                edge_input = self.edge_encoder(edge_input).mean(-2)
                max_dist = edge_input.size(-2)
                edge_input_flat = edge_input.permute(3, 0, 1, 2, 4).reshape(
                    max_dist, -1, self.num_heads
                )
                edge_input_flat = torch.bmm(
                    edge_input_flat,
                    self.edge_dis_encoder.weight.reshape(
                        -1, self.num_heads, self.num_heads
                    )[:max_dist, :, :],
                )
                edge_input = edge_input_flat.reshape(
                    max_dist, n_graph, n_node, n_node, self.num_heads
                ).permute(1, 2, 3, 0, 4)
                edge_input = (
                    edge_input.sum(-2) / (spatial_pos_.float().unsqueeze(-1))
                ).permute(0, 3, 1, 2)
            else:
                # [n_graph, n_node, n_node, n_head] -> [n_graph, n_head, n_node, n_node]
                edge_input = self.edge_encoder(attn_edge_type).mean(-2).permute(0, 3, 1, 2)

            graph_attn_bias[:, :, 1:, 1:] = graph_attn_bias[:, :, 1:, 1:] + edge_input
            graph_attn_bias = graph_attn_bias + attn_bias.unsqueeze(1)  # reset

            return graph_attn_bias

    class MultiheadAttention(nn.Module):
        """Multi-headed attention.

        See "Attention Is All You Need" for more details.
        """

        def __init__(
            self,
            embed_dim,
            num_heads,
            kdim=None,
            vdim=None,
            dropout=0.0,
            bias=True,
            self_attention=False,
            q_noise=0.0,
            qn_block_size=8,
        ):
            super().__init__()
            self.embed_dim = embed_dim
            self.kdim = kdim if kdim is not None else embed_dim
            self.vdim = vdim if vdim is not None else embed_dim
            self.qkv_same_dim = self.kdim == embed_dim and self.vdim == embed_dim

            self.num_heads = num_heads
            self.dropout_module = FairseqDropout(
                dropout, module_name=self.__class__.__name__
            )

            self.head_dim = embed_dim // num_heads
            assert (
                self.head_dim * num_heads == self.embed_dim
            ), "embed_dim must be divisible by num_heads"
            self.scaling = self.head_dim ** -0.5

            self.self_attention = self_attention

            assert self.self_attention, "Only support self attention"

            assert not self.self_attention or self.qkv_same_dim, (
                "Self-attention requires query, key and " "value to be of the same size"
            )

            self.k_proj = quant_noise(
                nn.Linear(self.kdim, embed_dim, bias=bias), q_noise, qn_block_size
            )
            self.v_proj = quant_noise(
                nn.Linear(self.vdim, embed_dim, bias=bias), q_noise, qn_block_size
            )
            self.q_proj = quant_noise(
                nn.Linear(embed_dim, embed_dim, bias=bias), q_noise, qn_block_size
            )

            self.out_proj = quant_noise(
                nn.Linear(embed_dim, embed_dim, bias=bias), q_noise, qn_block_size
            )

            self.reset_parameters()

            self.onnx_trace = False

        def reset_parameters(self):
            if self.qkv_same_dim:
                # Empirically observed the convergence to be much better with
                # the scaled initialization
                nn.init.xavier_uniform_(self.k_proj.weight, gain=1 / math.sqrt(2))
                nn.init.xavier_uniform_(self.v_proj.weight, gain=1 / math.sqrt(2))
                nn.init.xavier_uniform_(self.q_proj.weight, gain=1 / math.sqrt(2))
            else:
                nn.init.xavier_uniform_(self.k_proj.weight)
                nn.init.xavier_uniform_(self.v_proj.weight)
                nn.init.xavier_uniform_(self.q_proj.weight)

            nn.init.xavier_uniform_(self.out_proj.weight)
            if self.out_proj.bias is not None:
                nn.init.constant_(self.out_proj.bias, 0.0)

        def forward(
            self,
            query,
            key: Optional[Tensor],
            value: Optional[Tensor],
            attn_bias: Optional[Tensor],
            key_padding_mask: Optional[Tensor] = None,
            need_weights: bool = True,
            attn_mask: Optional[Tensor] = None,
            before_softmax: bool = False,
            need_head_weights: bool = False,
        ) -> Tuple[Tensor, Optional[Tensor]]:
            if need_head_weights:
                need_weights = True

            tgt_len, bsz, embed_dim = query.size()
            src_len = tgt_len
            assert embed_dim == self.embed_dim, f"query dim {embed_dim} != {self.embed_dim}"
            assert list(query.size()) == [tgt_len, bsz, embed_dim]
            if key is not None:
                src_len, key_bsz, _ = key.size()
                if not torch.jit.is_scripting():
                    assert key_bsz == bsz
                    assert value is not None
                    assert src_len, bsz == value.shape[:2]

            q = self.q_proj(query)
            k = self.k_proj(query)
            v = self.v_proj(query)
            q *= self.scaling

            q = (
                q.contiguous()
                .view(tgt_len, bsz * self.num_heads, self.head_dim)
                .transpose(0, 1)
            )
            if k is not None:
                k = (
                    k.contiguous()
                    .view(-1, bsz * self.num_heads, self.head_dim)
                    .transpose(0, 1)
                )
            if v is not None:
                v = (
                    v.contiguous()
                    .view(-1, bsz * self.num_heads, self.head_dim)
                    .transpose(0, 1)
                )

            assert k is not None
            assert k.size(1) == src_len

            # This is part of a workaround to get around fork/join parallelism
            # not supporting Optional types.
            if key_padding_mask is not None and key_padding_mask.dim() == 0:
                key_padding_mask = None

            if key_padding_mask is not None:
                assert key_padding_mask.size(0) == bsz
                assert key_padding_mask.size(1) == src_len
            attn_weights = torch.bmm(q, k.transpose(1, 2))
            attn_weights = self.apply_sparse_mask(attn_weights, tgt_len, src_len, bsz)

            assert list(attn_weights.size()) == [bsz * self.num_heads, tgt_len, src_len]

            if attn_bias is not None:
                attn_weights += attn_bias.view(bsz * self.num_heads, tgt_len, src_len)

            if attn_mask is not None:
                attn_mask = attn_mask.unsqueeze(0)
                attn_weights += attn_mask

            if key_padding_mask is not None:
                # don't attend to padding symbols
                attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len)
                attn_weights = attn_weights.masked_fill(
                    key_padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool),
                    float("-inf"),
                )
                attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)

            if before_softmax:
                return attn_weights, v

            attn_weights_float = attn_weights.float() if upcast else attn_weights
            attn_weights_float = softmax(
                attn_weights_float, dim=-1, onnx_trace=self.onnx_trace
            )
            attn_weights = attn_weights_float.type_as(attn_weights)
            attn_probs = self.dropout_module(attn_weights)

            assert v is not None
            attn = torch.bmm(attn_probs, v)
            assert list(attn.size()) == [bsz * self.num_heads, tgt_len, self.head_dim]

            attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
            attn = self.out_proj(attn)

            attn_weights: Optional[Tensor] = None
            if need_weights:
                attn_weights = attn_weights_float.view(
                    bsz, self.num_heads, tgt_len, src_len
                ).transpose(1, 0)
                if not need_head_weights:
                    # average attention weights over heads
                    attn_weights = attn_weights.mean(dim=0)

            return attn, attn_weights

        def apply_sparse_mask(self, attn_weights, tgt_len: int, src_len: int, bsz: int):
            return attn_weights

    class GraphormerGraphEncoderLayer(nn.Module):
        def __init__(
            self,
            embedding_dim: int = 768,
            ffn_embedding_dim: int = 3072,
            num_attention_heads: int = 8,
            dropout: float = 0.1,
            attention_dropout: float = 0.1,
            activation_dropout: float = 0.1,
            activation_fn: str = "relu",
            export: bool = False,
            q_noise: float = 0.0,
            qn_block_size: int = 8,
            init_fn: Callable = None,
            pre_layernorm: bool = False,
            sandwich_layernorm: bool = False,
        ) -> None:
            super().__init__()

            if init_fn is not None:
                init_fn()

            # Initialize parameters
            self.embedding_dim = embedding_dim
            self.num_attention_heads = num_attention_heads
            self.attention_dropout = attention_dropout
            self.q_noise = q_noise
            self.qn_block_size = qn_block_size
            self.pre_layernorm = pre_layernorm
            self.sandwich_layernorm = sandwich_layernorm

            self.dropout_module = FairseqDropout(
                dropout, module_name=self.__class__.__name__
            )
            self.activation_dropout_module = FairseqDropout(
                activation_dropout, module_name=self.__class__.__name__
            )

            # Initialize blocks
            self.activation_fn = get_activation_fn(activation_fn)
            self.self_attn = self.build_self_attention(
                self.embedding_dim,
                num_attention_heads,
                dropout=attention_dropout,
                self_attention=True,
                q_noise=q_noise,
                qn_block_size=qn_block_size,
            )

            # layer norm associated with the self attention layer
            self.self_attn_layer_norm = LayerNorm(self.embedding_dim, export=export)

            self.fc1 = self.build_fc1(
                self.embedding_dim,
                ffn_embedding_dim,
                q_noise=q_noise,
                qn_block_size=qn_block_size,
            )
            self.fc2 = self.build_fc2(
                ffn_embedding_dim,
                self.embedding_dim,
                q_noise=q_noise,
                qn_block_size=qn_block_size,
            )

            # layer norm associated with the position wise feed-forward NN
            self.final_layer_norm = LayerNorm(self.embedding_dim, export=export)

        def build_fc1(self, input_dim, output_dim, q_noise, qn_block_size):
            return quant_noise(nn.Linear(input_dim, output_dim), q_noise, qn_block_size)

        def build_fc2(self, input_dim, output_dim, q_noise, qn_block_size):
            return quant_noise(nn.Linear(input_dim, output_dim), q_noise, qn_block_size)

        def build_self_attention(
            self,
            embed_dim,
            num_attention_heads,
            dropout,
            self_attention,
            q_noise,
            qn_block_size,
        ):
            return MultiheadAttention(
                embed_dim,
                num_attention_heads,
                dropout=dropout,
                self_attention=True,
                q_noise=q_noise,
                qn_block_size=qn_block_size,
            )

        def forward(
            self,
            x: torch.Tensor,
            self_attn_bias: Optional[torch.Tensor] = None,
            self_attn_mask: Optional[torch.Tensor] = None,
            self_attn_padding_mask: Optional[torch.Tensor] = None,
        ):
            """
            LayerNorm is applied either before or after the self-attention/ffn
            modules similar to the original Transformer implementation.
            """
            # x: T x B x C
            residual = x
            if self.pre_layernorm or self.sandwich_layernorm:
                x = self.self_attn_layer_norm(x)
            x, attn = self.self_attn(
                query=x,
                key=x,
                value=x,
                attn_bias=self_attn_bias,
                key_padding_mask=self_attn_padding_mask,
                need_weights=False,
                attn_mask=self_attn_mask,
            )
            x = self.dropout_module(x)
            x = residual + x
            if not self.pre_layernorm:
                x = self.self_attn_layer_norm(x)

            residual = x
            if self.pre_layernorm or self.sandwich_layernorm:
                x = self.final_layer_norm(x)
            x = self.activation_fn(self.fc1(x))
            x = self.activation_dropout_module(x)
            x = self.fc2(x)
            x = self.dropout_module(x)
            x = residual + x
            if not self.pre_layernorm:
                x = self.final_layer_norm(x)
            return x, attn

    def init_graphormer_params(module):
        """
        Initialize the weights specific to the Graphormer Model.
        """

        def normal_(data):
            # with FSDP, module params will be on CUDA, so we cast them back to CPU
            # so that the RNG is consistent with and without FSDP
            data.copy_(data.cpu().normal_(mean=0.0, std=0.02).to(data.device))

        if isinstance(module, nn.Linear):
            normal_(module.weight.data)
            if module.bias is not None:
                module.bias.data.zero_()
        if isinstance(module, nn.Embedding):
            normal_(module.weight.data)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        if isinstance(module, MultiheadAttention):
            normal_(module.q_proj.weight.data)
            normal_(module.k_proj.weight.data)
            normal_(module.v_proj.weight.data)

    class GraphormerGraphEncoder(nn.Module):
        def __init__(
            self,
            num_atoms: int,
            num_in_degree: int,
            num_out_degree: int,
            num_edges: int,
            num_spatial: int,
            num_edge_dis: int,
            edge_type: str,
            multi_hop_max_dist: int,
            num_encoder_layers: int = 12,
            embedding_dim: int = 768,
            ffn_embedding_dim: int = 768,
            num_attention_heads: int = 32,
            dropout: float = 0.1,
            attention_dropout: float = 0.1,
            activation_dropout: float = 0.1,
            layerdrop: float = 0.0,
            encoder_normalize_before: bool = False,
            pre_layernorm: bool = False,
            apply_graphormer_init: bool = False,
            activation_fn: str = "gelu",
            embed_scale: float = None,
            freeze_embeddings: bool = False,
            n_trans_layers_to_freeze: int = 0,
            export: bool = False,
            traceable: bool = False,
            q_noise: float = 0.0,
            qn_block_size: int = 8,
        ) -> None:

            super().__init__()
            self.dropout_module = FairseqDropout(
                dropout, module_name=self.__class__.__name__
            )
            self.layerdrop = layerdrop
            self.embedding_dim = embedding_dim
            self.apply_graphormer_init = apply_graphormer_init
            self.traceable = traceable

            self.graph_node_feature = GraphNodeFeature(
                num_heads=num_attention_heads,
                num_atoms=num_atoms,
                num_in_degree=num_in_degree,
                num_out_degree=num_out_degree,
                hidden_dim=embedding_dim,
                n_layers=num_encoder_layers,
            )

            self.graph_attn_bias = GraphAttnBias(
                num_heads=num_attention_heads,
                num_atoms=num_atoms,
                num_edges=num_edges,
                num_spatial=num_spatial,
                num_edge_dis=num_edge_dis,
                edge_type=edge_type,
                multi_hop_max_dist=multi_hop_max_dist,
                hidden_dim=embedding_dim,
                n_layers=num_encoder_layers,
            )

            self.embed_scale = embed_scale

            if q_noise > 0:
                raise NotImplementedError
            else:
                self.quant_noise = None

            if encoder_normalize_before:
                self.emb_layer_norm = LayerNorm(self.embedding_dim, export=export)
            else:
                self.emb_layer_norm = None

            if pre_layernorm:
                self.final_layer_norm = LayerNorm(self.embedding_dim, export=export)

            assert self.layerdrop == 0.0  # fairseq's LayerDropModuleList left out
            self.layers = nn.ModuleList([])
            self.layers.extend(
                [
                    self.build_graphormer_graph_encoder_layer(
                        embedding_dim=self.embedding_dim,
                        ffn_embedding_dim=ffn_embedding_dim,
                        num_attention_heads=num_attention_heads,
                        dropout=self.dropout_module.p,
                        attention_dropout=attention_dropout,
                        activation_dropout=activation_dropout,
                        activation_fn=activation_fn,
                        export=export,
                        q_noise=q_noise,
                        qn_block_size=qn_block_size,
                        pre_layernorm=pre_layernorm,
                    )
                    for _ in range(num_encoder_layers)
                ]
            )

            # Apply initialization of model params after building the model
            if self.apply_graphormer_init:
                self.apply(init_graphormer_params)

            def freeze_module_params(m):
                if m is not None:
                    for p in m.parameters():
                        p.requires_grad = False

            if freeze_embeddings:
                raise NotImplementedError("Freezing embeddings is not implemented yet.")

            for layer in range(n_trans_layers_to_freeze):
                freeze_module_params(self.layers[layer])

        def build_graphormer_graph_encoder_layer(
            self,
            embedding_dim,
            ffn_embedding_dim,
            num_attention_heads,
            dropout,
            attention_dropout,
            activation_dropout,
            activation_fn,
            export,
            q_noise,
            qn_block_size,
            pre_layernorm,
        ):
            return GraphormerGraphEncoderLayer(
                embedding_dim=embedding_dim,
                ffn_embedding_dim=ffn_embedding_dim,
                num_attention_heads=num_attention_heads,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation_dropout=activation_dropout,
                activation_fn=activation_fn,
                export=export,
                q_noise=q_noise,
                qn_block_size=qn_block_size,
                pre_layernorm=pre_layernorm,
            )

        def forward(
            self,
            batched_data,
            perturb=None,
            last_state_only: bool = False,
            token_embeddings: Optional[torch.Tensor] = None,
            attn_mask: Optional[torch.Tensor] = None,
        ) -> Tuple[torch.Tensor, torch.Tensor]:
            is_tpu = False
            # compute padding mask. This is needed for multi-head attention
            data_x = batched_data["x"]
            n_graph, n_node = data_x.size()[:2]
            padding_mask = (data_x[:, :, 0]).eq(0)  # B x T x 1
            padding_mask_cls = torch.zeros(
                n_graph, 1, device=padding_mask.device, dtype=padding_mask.dtype
            )
            padding_mask = torch.cat((padding_mask_cls, padding_mask), dim=1)
            # B x (T+1) x 1

            if token_embeddings is not None:
                x = token_embeddings
            else:
                x = self.graph_node_feature(batched_data)

            if perturb is not None:
                x[:, 1:, :] += perturb

            # x: B x T x C

            attn_bias = self.graph_attn_bias(batched_data)

            if self.embed_scale is not None:
                x = x * self.embed_scale

            if self.quant_noise is not None:
                x = self.quant_noise(x)

            if self.emb_layer_norm is not None:
                x = self.emb_layer_norm(x)

            x = self.dropout_module(x)

            # account for padding while computing the representation

            # B x T x C -> T x B x C
            x = x.transpose(0, 1)

            inner_states = []
            if not last_state_only:
                inner_states.append(x)

            for layer in self.layers:
                x, _ = layer(
                    x,
                    self_attn_padding_mask=padding_mask,
                    self_attn_mask=attn_mask,
                    self_attn_bias=attn_bias,
                )
                if not last_state_only:
                    inner_states.append(x)

            graph_rep = x[0, :, :]

            if last_state_only:
                inner_states = [x]

            if self.traceable:
                return torch.stack(inner_states), graph_rep
            else:
                return inner_states, graph_rep

    return GraphormerGraphEncoder, MultiheadAttention, init_graphormer_params


# ---------------------------------------------------------------------------------------------------------------- model


def graphormer_model(torch, nn, F, args, upcast=True):
    """``GraphormerModel(args, GraphormerEncoder(args))`` of ``models/graphormer.py`` (fairseq's
    ``FairseqEncoderModel`` as ``nn.Module``, ``get_targets`` reading ``sample["target"]``)."""
    GraphormerGraphEncoder, _, init_graphormer_params = graphormer_modules(torch, nn, F, upcast)
    LayerNorm, _, _, _, get_activation_fn = fairseq(torch, nn, F, upcast)

    class GraphormerEncoder(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.max_nodes = args.max_nodes

            self.graph_encoder = GraphormerGraphEncoder(
                # < for graphormer
                num_atoms=args.num_atoms,
                num_in_degree=args.num_in_degree,
                num_out_degree=args.num_out_degree,
                num_edges=args.num_edges,
                num_spatial=args.num_spatial,
                num_edge_dis=args.num_edge_dis,
                edge_type=args.edge_type,
                multi_hop_max_dist=args.multi_hop_max_dist,
                # >
                num_encoder_layers=args.encoder_layers,
                embedding_dim=args.encoder_embed_dim,
                ffn_embedding_dim=args.encoder_ffn_embed_dim,
                num_attention_heads=args.encoder_attention_heads,
                dropout=args.dropout,
                attention_dropout=args.attention_dropout,
                activation_dropout=args.act_dropout,
                encoder_normalize_before=args.encoder_normalize_before,
                pre_layernorm=args.pre_layernorm,
                apply_graphormer_init=args.apply_graphormer_init,
                activation_fn=args.activation_fn,
            )

            self.share_input_output_embed = args.share_encoder_input_output_embed
            self.embed_out = None
            self.lm_output_learned_bias = None

            # Remove head is set to true during fine-tuning
            self.load_softmax = not getattr(args, "remove_head", False)

            self.masked_lm_pooler = nn.Linear(
                args.encoder_embed_dim, args.encoder_embed_dim
            )

            self.lm_head_transform_weight = nn.Linear(
                args.encoder_embed_dim, args.encoder_embed_dim
            )
            self.activation_fn = get_activation_fn(args.activation_fn)
            self.layer_norm = LayerNorm(args.encoder_embed_dim)

            self.lm_output_learned_bias = None
            if self.load_softmax:
                self.lm_output_learned_bias = nn.Parameter(torch.zeros(1))

                if not self.share_input_output_embed:
                    self.embed_out = nn.Linear(
                        args.encoder_embed_dim, args.num_classes, bias=False
                    )
                else:
                    raise NotImplementedError

        def reset_output_layer_parameters(self):
            self.lm_output_learned_bias = nn.Parameter(torch.zeros(1))
            if self.embed_out is not None:
                self.embed_out.reset_parameters()

        def forward(self, batched_data, perturb=None, masked_tokens=None, **unused):
            inner_states, graph_rep = self.graph_encoder(
                batched_data,
                perturb=perturb,
            )

            x = inner_states[-1].transpose(0, 1)

            # project masked tokens only
            if masked_tokens is not None:
                raise NotImplementedError

            x = self.layer_norm(self.activation_fn(self.lm_head_transform_weight(x)))

            # project back to size of vocabulary
            if self.share_input_output_embed and hasattr(
                self.graph_encoder.embed_tokens, "weight"
            ):
                x = F.linear(x, self.graph_encoder.embed_tokens.weight)
            elif self.embed_out is not None:
                x = self.embed_out(x)
            if self.lm_output_learned_bias is not None:
                x = x + self.lm_output_learned_bias

            return x

    class GraphormerModel(nn.Module):
        def __init__(self, args, encoder):
            super().__init__()
            self.encoder = encoder
            self.args = args

            if getattr(args, "apply_graphormer_init", False):
                self.apply(init_graphormer_params)
            self.encoder_embed_dim = args.encoder_embed_dim

        def get_targets(self, sample, net_output):
            return sample["target"]

        def forward(self, batched_data, **kwargs):
            return self.encoder(batched_data, **kwargs)

    return GraphormerModel(args, GraphormerEncoder(args))


def l1_loss(torch, nn, with_flag=False):
    """``GraphPredictionL1Loss.forward`` of ``criterions/l1_loss.py`` (its logging outputs as plain numbers); with
    ``with_flag``, ``GraphPredictionL1LossWithFlag``'s (the perturbation read from ``sample.get("perturb", None)``)."""

    def forward(model, sample, reduce=True):
        sample_size = sample["nsamples"]
        perturb = sample.get("perturb", None) if with_flag else None

        with torch.no_grad():
            natoms = sample["net_input"]["batched_data"]["x"].shape[1]

        logits = model(**sample["net_input"], **({"perturb": perturb} if with_flag else {}))
        logits = logits[:, 0, :]
        targets = model.get_targets(sample, [logits])

        loss = nn.L1Loss(reduction="sum")(logits, targets[: logits.size(0)])

        logging_output = {
            "sample_size": logits.size(0),
            "nsentences": sample_size,
            "ntokens": natoms,
        }
        return loss, sample_size, logging_output

    return forward


def fairseq_train_step(torch, model, criterion, optimizer, clip_norm, norm_upcast=True):
    """fairseq's ``Trainer.train_step`` for one batch on one worker, condensed: ``task.train_step`` (``model.train()``,
    the criterion, ``optimizer.backward(loss)``), the gradients times ``1 / sample_size`` (``multiply_grads``), clipped
    by ``clip_grad_norm_`` (``--clip-norm``), the optimizer's step; returns ``(loss, grad_norm)``."""
    clip_grad_norm_, multiply_grads = fairseq_training(torch, norm_upcast)
    params = list(filter(lambda p: p.requires_grad, model.parameters()))

    def train_step(sample):
        model.train()
        optimizer.zero_grad()
        loss, sample_size, logging_output = criterion(model, sample)
        loss.backward()
        multiply_grads(params, 1.0 / (sample_size or 1.0))
        grad_norm = clip_grad_norm_(params, clip_norm)
        optimizer.step()
        return loss, grad_norm

    return train_step


def flag_train_step(torch, model, criterion, optimizer, clip_norm, flag_m, flag_step_size, flag_mag, norm_upcast=True):
    """``fairseq_train_step`` around ``GraphPredictionWithFlagTask.train_step`` of ``tasks/graph_prediction.py``
    (FLAG: ``flag_m`` ascent steps on a node-feature perturbation, each backward accumulating the parameters'
    gradients); the initial perturbation's ``torch.FloatTensor(*perturb_shape).uniform_(-1, 1)`` is
    ``sample["flag_uniform"]`` where the sample has one (the libraries' generators differ: the test feeds NumPy draws);
    the AMP autocast context (disabled on CPU) left out; returns ``(loss, grad_norm, the last perturbation)``."""
    clip_grad_norm_, multiply_grads = fairseq_training(torch, norm_upcast)
    params = list(filter(lambda p: p.requires_grad, model.parameters()))

    def task_train_step(sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()

        batched_data = sample["net_input"]["batched_data"]["x"]
        n_graph, n_node = batched_data.shape[:2]
        perturb_shape = n_graph, n_node, model.encoder_embed_dim
        if flag_mag > 0:
            perturb = (
                (sample["flag_uniform"] if "flag_uniform" in sample
                 else torch.FloatTensor(*perturb_shape).uniform_(-1, 1))
                .to(batched_data.device)
            )
            perturb = perturb * flag_mag / math.sqrt(perturb_shape[-1])
        else:
            perturb = (
                torch.FloatTensor(*perturb_shape)
                .uniform_(-flag_step_size, flag_step_size)
                .to(batched_data.device)
            )
        perturb.requires_grad_()
        sample["perturb"] = perturb
        loss, sample_size, logging_output = criterion(
            model, sample
        )
        if ignore_grad:
            loss *= 0
        loss /= flag_m
        total_loss = 0
        for _ in range(flag_m - 1):
            loss.backward()  # optimizer.backward(loss)
            total_loss += loss.detach()
            perturb_data = perturb.detach() + flag_step_size * torch.sign(
                perturb.grad.detach()
            )
            if flag_mag > 0:
                perturb_data_norm = torch.norm(perturb_data, dim=-1).detach()
                exceed_mask = (perturb_data_norm > flag_mag).to(perturb_data)
                reweights = (
                    flag_mag / perturb_data_norm * exceed_mask
                    + (1 - exceed_mask)
                ).unsqueeze(-1)
                perturb_data = (perturb_data * reweights).detach()
            perturb.data = perturb_data.data
            perturb.grad[:] = 0
            sample["perturb"] = perturb
            loss, sample_size, logging_output = criterion(
                model, sample
            )
            if ignore_grad:
                loss *= 0
            loss /= flag_m
        loss.backward()  # optimizer.backward(loss)
        total_loss += loss.detach()
        logging_output["loss"] = total_loss
        return total_loss, sample_size, logging_output

    def train_step(sample):
        optimizer.zero_grad()
        loss, sample_size, logging_output = task_train_step(sample, model, criterion, optimizer, 0)
        multiply_grads(params, 1.0 / (sample_size or 1.0))
        grad_norm = clip_grad_norm_(params, clip_norm)
        optimizer.step()
        return loss, grad_norm, sample["perturb"].detach()

    return train_step


def polynomial_decay_lr(torch):
    """``PolynomialDecayLR`` of ``graphormer/lr.py``; torch 2.13's ``LRScheduler.__init__`` has no ``verbose`` (the
    one change: it is not passed on)."""
    from_module = torch.optim.lr_scheduler

    class PolynomialDecayLR(from_module._LRScheduler):

        def __init__(self, optimizer, warmup_updates, tot_updates, lr, end_lr, power, last_epoch=-1, verbose=False):
            self.warmup_updates = warmup_updates
            self.tot_updates = tot_updates
            self.lr = lr
            self.end_lr = end_lr
            self.power = power
            super(PolynomialDecayLR, self).__init__(optimizer, last_epoch)

        def get_lr(self):
            if self._step_count <= self.warmup_updates:
                self.warmup_factor = self._step_count / float(self.warmup_updates)
                lr = self.warmup_factor * self.lr
            elif self._step_count >= self.tot_updates:
                lr = self.end_lr
            else:
                warmup = self.warmup_updates
                lr_range = self.lr - self.end_lr
                pct_remaining = 1 - (self._step_count - warmup) / (
                    self.tot_updates - warmup
                )
                lr = lr_range * pct_remaining ** (self.power) + self.end_lr

            return [lr for group in self.optimizer.param_groups]

        def _get_closed_form_lr(self):
            assert False

    return PolynomialDecayLR
