"""The sequential and graph recommenders of tests/e2e/test_porting_probes_word2vec_recsys.py, each written once as its
reference writes it (``torch`` is ``torch`` or ``kiln``): SASRec (self-attentive next-item prediction), LightGCN and
NGCF (propagation over the user-item graph by ``torch.sparse.mm``)."""

from __future__ import annotations

import numpy as np

SEQ_USERS, SEQ_ITEMS, MAXLEN = 4, 10, 5
"""SASRec: users, items (0 pads a sequence), the sequence length."""


def sasrec(torch, nn, F, num_blocks=2, norm_first=False, hidden_units=8, num_heads=2, dropout_rate=0.0):
    """pmixer/SASRec.pytorch's model.py: item and position tables with ``padding_idx=0``, sequences read by
    ``torch.LongTensor(log_seqs)`` from NumPy, ``seqs *= dim ** 0.5`` in place, positions by ``np.tile`` masked by
    ``poss *= (log_seqs != 0)``, ``nn.MultiheadAttention`` (sequence first) under a causal bool ``attn_mask``, a
    point-wise feed-forward of two ``Conv1d(kernel_size=1)`` with ``outputs += inputs``, post- or pre-norm. Given
    tensors instead of NumPy arrays (a compiled step's), the positions are ``torch.arange(...).tile(...)``."""

    class PointWiseFeedForward(nn.Module):
        def __init__(self, hidden_units, dropout_rate):
            super(PointWiseFeedForward, self).__init__()
            self.conv1 = nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
            self.dropout1 = nn.Dropout(p=dropout_rate)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
            self.dropout2 = nn.Dropout(p=dropout_rate)

        def forward(self, inputs):
            outputs = self.dropout2(self.conv2(self.relu(self.dropout1(self.conv1(inputs.transpose(-1, -2))))))
            outputs = outputs.transpose(-1, -2)  # as Conv1D requires (N, C, Length)
            outputs += inputs
            return outputs

    class SASRec(nn.Module):
        def __init__(self, user_num=SEQ_USERS, item_num=SEQ_ITEMS):
            super(SASRec, self).__init__()
            self.user_num, self.item_num = user_num, item_num
            self.dev = "cpu"
            self.norm_first = norm_first
            self.item_emb = nn.Embedding(self.item_num + 1, hidden_units, padding_idx=0)
            self.pos_emb = nn.Embedding(MAXLEN + 1, hidden_units, padding_idx=0)
            self.emb_dropout = nn.Dropout(p=dropout_rate)
            self.attention_layernorms = nn.ModuleList()
            self.attention_layers = nn.ModuleList()
            self.forward_layernorms = nn.ModuleList()
            self.forward_layers = nn.ModuleList()
            self.last_layernorm = nn.LayerNorm(hidden_units, eps=1e-8)
            for _ in range(num_blocks):
                self.attention_layernorms.append(nn.LayerNorm(hidden_units, eps=1e-8))
                self.attention_layers.append(nn.MultiheadAttention(hidden_units, num_heads, dropout_rate))
                self.forward_layernorms.append(nn.LayerNorm(hidden_units, eps=1e-8))
                self.forward_layers.append(PointWiseFeedForward(hidden_units, dropout_rate))

        def log2feats(self, log_seqs):
            if isinstance(log_seqs, np.ndarray):  # the reference: NumPy batches
                seqs = self.item_emb(torch.LongTensor(log_seqs).to(self.dev))
                seqs *= self.item_emb.embedding_dim ** 0.5
                poss = np.tile(np.arange(1, log_seqs.shape[1] + 1), [log_seqs.shape[0], 1])
                poss *= (log_seqs != 0)
                seqs += self.pos_emb(torch.LongTensor(poss).to(self.dev))
            else:  # tensors, as its TODO suggests (torch.arange on the device) and a compiled step needs
                seqs = self.item_emb(log_seqs)
                seqs *= self.item_emb.embedding_dim ** 0.5
                poss = torch.arange(1, log_seqs.shape[1] + 1, device=self.dev).tile(log_seqs.shape[0], 1)
                seqs += self.pos_emb(poss * (log_seqs != 0))
            seqs = self.emb_dropout(seqs)
            tl = seqs.shape[1]  # time dim len for enforce causality
            attention_mask = ~torch.tril(torch.ones((tl, tl), dtype=torch.bool, device=self.dev))
            for i in range(len(self.attention_layers)):
                seqs = torch.transpose(seqs, 0, 1)
                if self.norm_first:
                    x = self.attention_layernorms[i](seqs)
                    mha_outputs, _ = self.attention_layers[i](x, x, x, attn_mask=attention_mask)
                    seqs = seqs + mha_outputs
                    seqs = torch.transpose(seqs, 0, 1)
                    seqs = seqs + self.forward_layers[i](self.forward_layernorms[i](seqs))
                else:
                    Q = self.attention_layernorms[i](seqs)
                    mha_outputs, _ = self.attention_layers[i](Q, seqs, seqs, attn_mask=attention_mask)
                    seqs = Q + mha_outputs
                    seqs = torch.transpose(seqs, 0, 1)
                    seqs = self.forward_layernorms[i](seqs)
                    seqs = self.forward_layers[i](seqs)
            return self.last_layernorm(seqs)  # (U, T, C) -> (U, -1, C)

        def forward(self, user_ids, log_seqs, pos_seqs, neg_seqs):  # for training
            log_feats = self.log2feats(log_seqs)
            long = (lambda x: torch.LongTensor(x).to(self.dev)) if isinstance(log_seqs, np.ndarray) else (lambda x: x)
            pos_embs = self.item_emb(long(pos_seqs))
            neg_embs = self.item_emb(long(neg_seqs))
            pos_logits = (log_feats * pos_embs).sum(dim=-1)
            neg_logits = (log_feats * neg_embs).sum(dim=-1)
            return pos_logits, neg_logits

        def predict(self, user_ids, log_seqs, item_indices):  # for inference
            log_feats = self.log2feats(log_seqs)
            final_feat = log_feats[:, -1, :]
            item_embs = self.item_emb(torch.LongTensor(item_indices).to(self.dev))  # (U, I, C)
            return item_embs.matmul(final_feat.unsqueeze(-1)).squeeze(-1)

    model = SASRec()
    for name, param in model.named_parameters():
        try:
            nn.init.xavier_normal_(param.data)
        except:  # noqa: E722  (main.py: "just ignore those failed init layers", the 1-D ones)
            pass
    model.pos_emb.weight.data[0, :] = 0
    model.item_emb.weight.data[0, :] = 0
    return model


def sasrec_batches(steps, seed=5):
    """WarpSampler's ``(u, seq, pos, neg)`` NumPy batches: left-padded histories, next items, random negatives."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        seq = rng.integers(1, SEQ_ITEMS + 1, (SEQ_USERS, MAXLEN))
        seq[np.arange(MAXLEN) < rng.integers(0, MAXLEN - 1, (SEQ_USERS, 1))] = 0
        pos = np.concatenate([seq[:, 1:], rng.integers(1, SEQ_ITEMS + 1, (SEQ_USERS, 1))], axis=1) * (seq != 0)
        neg = rng.integers(1, SEQ_ITEMS + 1, (SEQ_USERS, MAXLEN)) * (pos != 0)
        batches.append((np.arange(1, SEQ_USERS + 1), seq, pos, neg))
    return batches


GCN_USERS, GCN_ITEMS, GCN_DIM = 5, 7, 4
"""LightGCN: users, items, the embedding size."""


def light_gcn(torch, nn, F, n_layers=2, float_type="DoubleTensor"):
    """gusye1234/LightGCN-PyTorch: the normalized user-item adjacency built by scipy.sparse (``getSparseGraph``) and
    converted by ``torch.sparse.<float_type>(index, data, torch.Size(shape))`` then ``.coalesce()``; ``computer``
    propagates ``torch.sparse.mm(graph, all_emb)`` per layer and averages the layers (``torch.stack``, ``mean``,
    ``torch.split``); BPR by ``softplus(neg - pos)`` with the ego embeddings' L2 term. The reference converts with
    ``FloatTensor``; a float64 run writes ``DoubleTensor`` (``torch.sparse.mm`` needs one dtype)."""
    import scipy.sparse as sp

    def interactions():
        rng = np.random.default_rng(6)
        pairs = sorted({(u, int(i)) for u in range(GCN_USERS) for i in rng.choice(GCN_ITEMS, 2, replace=False)})
        train_user, train_item = np.array(pairs).T
        return sp.csr_matrix((np.ones(len(train_user)), (train_user, train_item)), shape=(GCN_USERS, GCN_ITEMS))

    class LightGCN(nn.Module):
        def __init__(self):
            super(LightGCN, self).__init__()
            self.num_users, self.num_items, self.latent_dim, self.n_layers = GCN_USERS, GCN_ITEMS, GCN_DIM, n_layers
            self.UserItemNet = interactions()
            self.embedding_user = nn.Embedding(num_embeddings=self.num_users, embedding_dim=self.latent_dim)
            self.embedding_item = nn.Embedding(num_embeddings=self.num_items, embedding_dim=self.latent_dim)
            nn.init.normal_(self.embedding_user.weight, std=0.1)
            nn.init.normal_(self.embedding_item.weight, std=0.1)
            self.f = nn.Sigmoid()
            self.Graph = self.getSparseGraph()

        def _convert_sp_mat_to_sp_tensor(self, X):
            coo = X.tocoo().astype(np.float32 if float_type == "FloatTensor" else np.float64)
            row = torch.Tensor(coo.row).long()
            col = torch.Tensor(coo.col).long()
            index = torch.stack([row, col])
            data = getattr(torch, float_type)(coo.data)
            return getattr(torch.sparse, float_type)(index, data, torch.Size(coo.shape))

        def getSparseGraph(self):
            adj_mat = sp.dok_matrix((self.num_users + self.num_items, self.num_users + self.num_items), dtype=np.float32)
            adj_mat = adj_mat.tolil()
            R = self.UserItemNet.tolil()
            adj_mat[:self.num_users, self.num_users:] = R
            adj_mat[self.num_users:, :self.num_users] = R.T
            adj_mat = adj_mat.todok()
            rowsum = np.array(adj_mat.sum(axis=1))
            d_inv = np.power(rowsum, -0.5).flatten()
            d_inv[np.isinf(d_inv)] = 0.
            d_mat = sp.diags(d_inv)
            norm_adj = d_mat.dot(adj_mat)
            norm_adj = norm_adj.dot(d_mat)
            norm_adj = norm_adj.tocsr()
            Graph = self._convert_sp_mat_to_sp_tensor(norm_adj)
            return Graph.coalesce()

        def computer(self):
            users_emb = self.embedding_user.weight
            items_emb = self.embedding_item.weight
            all_emb = torch.cat([users_emb, items_emb])
            embs = [all_emb]
            for layer in range(self.n_layers):
                all_emb = torch.sparse.mm(self.Graph, all_emb)
                embs.append(all_emb)
            embs = torch.stack(embs, dim=1)
            light_out = torch.mean(embs, dim=1)
            users, items = torch.split(light_out, [self.num_users, self.num_items])
            return users, items

        def getUsersRating(self, users):
            all_users, all_items = self.computer()
            users_emb = all_users[users.long()]
            return self.f(torch.matmul(users_emb, all_items.t()))

        def getEmbedding(self, users, pos_items, neg_items):
            all_users, all_items = self.computer()
            users_emb, pos_emb, neg_emb = all_users[users], all_items[pos_items], all_items[neg_items]
            return users_emb, pos_emb, neg_emb, self.embedding_user(users), self.embedding_item(pos_items), self.embedding_item(neg_items)

        def bpr_loss(self, users, pos, neg):
            (users_emb, pos_emb, neg_emb, userEmb0, posEmb0, negEmb0) = self.getEmbedding(users.long(), pos.long(), neg.long())
            reg_loss = (1 / 2) * (userEmb0.norm(2).pow(2) + posEmb0.norm(2).pow(2) + negEmb0.norm(2).pow(2)) / float(len(users))
            pos_scores = torch.sum(torch.mul(users_emb, pos_emb), dim=1)
            neg_scores = torch.sum(torch.mul(users_emb, neg_emb), dim=1)
            loss = torch.mean(torch.nn.functional.softplus(neg_scores - pos_scores))
            return loss, reg_loss

    return LightGCN()


def bpr_samples(model, steps, seed=7):
    """UniformSample_original_python: a user, one of its items, an item it has not, drawn by NumPy."""
    rng = np.random.default_rng(seed)
    positives = [model.UserItemNet[u].nonzero()[1] for u in range(GCN_USERS)]
    batches = []
    for _ in range(steps):
        users = rng.integers(0, GCN_USERS, 6)
        pos = np.array([rng.choice(positives[u]) for u in users])
        neg = np.array([rng.choice(np.setdiff1d(np.arange(GCN_ITEMS), positives[u])) for u in users])
        batches.append((users, pos, neg))
    return batches


def ngcf(torch, nn, F, layer_size=(4, 4), node_dropout=0.0, mess_dropout=(0.0, 0.0), decay=1e-3, batch_size=6):
    """huangtinglin/NGCF-PyTorch's model: ``nn.ParameterDict`` embeddings and per-layer weights from
    ``xavier_uniform_(torch.empty(...))`` (``weight_dict.update``), the adjacency by ``torch.LongTensor([coo.row,
    coo.col])`` and ``torch.sparse.FloatTensor(i, v, coo.shape)``, node dropout by ``sparse_dropout`` (``_indices``,
    ``_values``, ``_nnz``, a floor-of-uniform mask; the rate 0 keeps every entry, so the two libraries agree), graph and
    bi-interaction messages, ``nn.LeakyReLU`` and ``nn.Dropout`` made in ``forward``, ``F.normalize``, BPR by
    ``nn.LogSigmoid()`` with the embeddings' L2 term. LightGCN's user-item graph, symmetric-normalized (``plain_adj``
    plus self loops is NGCF's ``norm_adj``; its ``mean_adj`` choice is the left-normalized one)."""
    import scipy.sparse as sp

    class NGCF(nn.Module):
        def __init__(self, n_user, n_item, norm_adj):
            super(NGCF, self).__init__()
            self.n_user, self.n_item = n_user, n_item
            self.device = "cpu"
            self.emb_size = GCN_DIM
            self.batch_size = batch_size
            self.node_dropout = node_dropout
            self.mess_dropout = list(mess_dropout)
            self.norm_adj = norm_adj
            self.layers = list(layer_size)
            self.decay = decay
            self.embedding_dict, self.weight_dict = self.init_weight()
            self.sparse_norm_adj = self._convert_sp_mat_to_sp_tensor(self.norm_adj).to(self.device)

        def init_weight(self):
            initializer = nn.init.xavier_uniform_
            embedding_dict = nn.ParameterDict({
                'user_emb': nn.Parameter(initializer(torch.empty(self.n_user, self.emb_size))),
                'item_emb': nn.Parameter(initializer(torch.empty(self.n_item, self.emb_size)))
            })
            weight_dict = nn.ParameterDict()
            layers = [self.emb_size] + self.layers
            for k in range(len(self.layers)):
                weight_dict.update({'W_gc_%d' % k: nn.Parameter(initializer(torch.empty(layers[k], layers[k + 1])))})
                weight_dict.update({'b_gc_%d' % k: nn.Parameter(initializer(torch.empty(1, layers[k + 1])))})
                weight_dict.update({'W_bi_%d' % k: nn.Parameter(initializer(torch.empty(layers[k], layers[k + 1])))})
                weight_dict.update({'b_bi_%d' % k: nn.Parameter(initializer(torch.empty(1, layers[k + 1])))})
            return embedding_dict, weight_dict

        def _convert_sp_mat_to_sp_tensor(self, X):
            coo = X.tocoo()
            i = torch.LongTensor(np.array([coo.row, coo.col]))  # the reference's LongTensor([row, col]) of a list
            v = torch.from_numpy(coo.data).double()  # .float() in the reference: float64 here, as torch.sparse.mm needs
            return torch.sparse.FloatTensor(i, v, coo.shape)

        def sparse_dropout(self, x, rate, noise_shape):
            random_tensor = 1 - rate
            random_tensor += torch.rand(noise_shape).to(x.device)
            dropout_mask = torch.floor(random_tensor).type(torch.bool)
            i = x._indices()
            v = x._values()
            i = i[:, dropout_mask]
            v = v[dropout_mask]
            out = torch.sparse.FloatTensor(i, v, x.shape).to(x.device)
            return out * (1. / (1 - rate))

        def create_bpr_loss(self, users, pos_items, neg_items):
            pos_scores = torch.sum(torch.mul(users, pos_items), axis=1)
            neg_scores = torch.sum(torch.mul(users, neg_items), axis=1)
            maxi = nn.LogSigmoid()(pos_scores - neg_scores)
            mf_loss = -1 * torch.mean(maxi)
            regularizer = (torch.norm(users) ** 2 + torch.norm(pos_items) ** 2 + torch.norm(neg_items) ** 2) / 2
            emb_loss = self.decay * regularizer / self.batch_size
            return mf_loss + emb_loss, mf_loss, emb_loss

        def rating(self, u_g_embeddings, pos_i_g_embeddings):
            return torch.matmul(u_g_embeddings, pos_i_g_embeddings.t())

        def forward(self, users, pos_items, neg_items, drop_flag=True):
            A_hat = self.sparse_dropout(self.sparse_norm_adj, self.node_dropout,
                                        self.sparse_norm_adj._nnz()) if drop_flag else self.sparse_norm_adj
            ego_embeddings = torch.cat([self.embedding_dict['user_emb'], self.embedding_dict['item_emb']], 0)
            all_embeddings = [ego_embeddings]
            for k in range(len(self.layers)):
                side_embeddings = torch.sparse.mm(A_hat, ego_embeddings)
                sum_embeddings = torch.matmul(side_embeddings, self.weight_dict['W_gc_%d' % k]) + self.weight_dict['b_gc_%d' % k]
                bi_embeddings = torch.mul(ego_embeddings, side_embeddings)
                bi_embeddings = torch.matmul(bi_embeddings, self.weight_dict['W_bi_%d' % k]) + self.weight_dict['b_bi_%d' % k]
                ego_embeddings = nn.LeakyReLU(negative_slope=0.2)(sum_embeddings + bi_embeddings)
                ego_embeddings = nn.Dropout(self.mess_dropout[k])(ego_embeddings)
                norm_embeddings = F.normalize(ego_embeddings, p=2, dim=1)
                all_embeddings += [norm_embeddings]
            all_embeddings = torch.cat(all_embeddings, 1)
            u_g_embeddings = all_embeddings[:self.n_user, :]
            i_g_embeddings = all_embeddings[self.n_user:, :]
            u_g_embeddings = u_g_embeddings[users, :]
            pos_i_g_embeddings = i_g_embeddings[pos_items, :]
            neg_i_g_embeddings = i_g_embeddings[neg_items, :]
            return u_g_embeddings, pos_i_g_embeddings, neg_i_g_embeddings

    graph = light_gcn(torch, nn, F).getSparseGraph()  # the user-item graph, D^-1/2 A D^-1/2, as a dense-held tensor
    norm_adj = sp.coo_matrix(np.array(graph.to_dense().detach().numpy())) + sp.eye(GCN_USERS + GCN_ITEMS)
    return NGCF(GCN_USERS, GCN_ITEMS, norm_adj.tocsr())


DIN_ITEMS, DIN_CATES, DIN_LEN, DIN_DIM = 9, 4, 5, 4
"""DIN: items, categories, the behaviour sequence's length, the embedding size."""


def din(torch, nn, F, weight_normalization=False, use_dice=True):
    """Deep Interest Network as DeepCTR-Torch writes it: item and category embeddings (``nn.init.normal_(std=1e-4)``),
    ``AttentionSequencePoolingLayer`` (``LocalActivationUnit`` on ``[q, k, q - k, q * k]``, the key mask from
    ``torch.arange(max_length).repeat(batch_size, 1) < keys_length.view(-1, 1)``, ``torch.where`` with zero (or
    ``-2 ** 32 + 1`` then softmax) paddings, ``torch.matmul`` pooling), and a DNN with ``Dice`` (``BatchNorm1d`` of the
    input, a learned ``alpha``, ``torch.transpose`` for 3-D inputs)."""

    class Dice(nn.Module):
        def __init__(self, emb_size, dim=2, epsilon=1e-8, device='cpu'):
            super(Dice, self).__init__()
            assert dim == 2 or dim == 3
            self.bn = nn.BatchNorm1d(emb_size, eps=epsilon)
            self.sigmoid = nn.Sigmoid()
            self.dim = dim
            if self.dim == 2:
                self.alpha = nn.Parameter(torch.zeros((emb_size,)).to(device))
            else:
                self.alpha = nn.Parameter(torch.zeros((emb_size, 1)).to(device))

        def forward(self, x):
            assert x.dim() == self.dim
            if self.dim == 2:
                x_p = self.sigmoid(self.bn(x))
                out = self.alpha * (1 - x_p) * x + x_p * x
            else:
                x = torch.transpose(x, 1, 2)
                x_p = self.sigmoid(self.bn(x))
                out = self.alpha * (1 - x_p) * x + x_p * x
                out = torch.transpose(out, 1, 2)
            return out

    class DNN(nn.Module):
        def __init__(self, inputs_dim, hidden_units, dice_dim=2, init_std=0.0001):
            super(DNN, self).__init__()
            hidden_units = [inputs_dim] + list(hidden_units)
            self.linears = nn.ModuleList([nn.Linear(hidden_units[i], hidden_units[i + 1]) for i in range(len(hidden_units) - 1)])
            self.activation_layers = nn.ModuleList(
                [Dice(hidden_units[i + 1], dice_dim) if use_dice else nn.ReLU(inplace=True) for i in range(len(hidden_units) - 1)])
            self.dropout = nn.Dropout(0)
            for name, tensor in self.linears.named_parameters():
                if 'weight' in name:
                    nn.init.normal_(tensor, mean=0, std=init_std * 100)

        def forward(self, inputs):
            deep_input = inputs
            for i in range(len(self.linears)):
                fc = self.linears[i](deep_input)
                fc = self.activation_layers[i](fc)
                fc = self.dropout(fc)
                deep_input = fc
            return deep_input

    class LocalActivationUnit(nn.Module):
        def __init__(self, hidden_units=(8, 4), embedding_dim=4):
            super(LocalActivationUnit, self).__init__()
            self.dnn = DNN(inputs_dim=4 * embedding_dim, hidden_units=hidden_units, dice_dim=3)
            self.dense = nn.Linear(hidden_units[-1], 1)

        def forward(self, query, user_behavior):
            user_behavior_len = user_behavior.size(1)
            queries = query.expand(-1, user_behavior_len, -1)
            attention_input = torch.cat([queries, user_behavior, queries - user_behavior, queries * user_behavior], dim=-1)
            attention_output = self.dnn(attention_input)
            return self.dense(attention_output)

    class AttentionSequencePoolingLayer(nn.Module):
        def __init__(self, embedding_dim):
            super(AttentionSequencePoolingLayer, self).__init__()
            self.weight_normalization = weight_normalization
            self.local_att = LocalActivationUnit(embedding_dim=embedding_dim)

        def forward(self, query, keys, keys_length):
            batch_size, max_length, _ = keys.size()
            keys_masks = torch.arange(max_length, device=keys_length.device, dtype=keys_length.dtype).repeat(batch_size, 1)
            keys_masks = keys_masks < keys_length.view(-1, 1)
            keys_masks = keys_masks.unsqueeze(1)
            attention_score = self.local_att(query, keys)
            outputs = torch.transpose(attention_score, 1, 2)
            if self.weight_normalization:
                paddings = torch.ones_like(outputs) * (-2 ** 32 + 1)
            else:
                paddings = torch.zeros_like(outputs)
            outputs = torch.where(keys_masks, outputs, paddings)
            if self.weight_normalization:
                outputs = F.softmax(outputs, dim=-1)
            return torch.matmul(outputs, keys)

    class DIN(nn.Module):
        def __init__(self):
            super(DIN, self).__init__()
            self.item_emb = nn.Embedding(DIN_ITEMS, DIN_DIM)
            self.cate_emb = nn.Embedding(DIN_CATES, DIN_DIM)
            for table in (self.item_emb, self.cate_emb):
                nn.init.normal_(table.weight, mean=0, std=0.0001 * 100)
            self.attention = AttentionSequencePoolingLayer(embedding_dim=2 * DIN_DIM)
            self.dnn = DNN(inputs_dim=4 * DIN_DIM + 1, hidden_units=(8, 4))
            self.dnn_linear = nn.Linear(4, 1, bias=False)

        def forward(self, item, cate, hist_item, hist_cate, hist_length, price):
            query = torch.cat([self.item_emb(item), self.cate_emb(cate)], dim=-1).unsqueeze(1)  # (B, 1, 2d)
            keys = torch.cat([self.item_emb(hist_item), self.cate_emb(hist_cate)], dim=-1)  # (B, T, 2d)
            hist = self.attention(query, keys, hist_length)  # (B, 1, 2d)
            dnn_input = torch.cat([query.squeeze(1), hist.squeeze(1), price.unsqueeze(1)], dim=-1)
            y_pred = torch.sigmoid(self.dnn_linear(self.dnn(dnn_input)))
            return y_pred.squeeze(-1)

    return DIN()


def din_batches(steps, batch=6, seed=8):
    """``(item, cate, hist_item, hist_cate, hist_length, price, label)``: padded histories of varying length."""
    rng = np.random.default_rng(seed)
    cate_of = rng.integers(0, DIN_CATES, DIN_ITEMS)
    batches = []
    for _ in range(steps):
        item = rng.integers(1, DIN_ITEMS, batch)
        hist_item = rng.integers(1, DIN_ITEMS, (batch, DIN_LEN))
        hist_length = rng.integers(1, DIN_LEN + 1, batch)
        hist_item[np.arange(DIN_LEN) >= hist_length[:, None]] = 0
        batches.append((item, cate_of[item], hist_item, cate_of[hist_item], hist_length, rng.random(batch),
                        (rng.random(batch) < 0.5).astype(np.float64)))
    return batches
