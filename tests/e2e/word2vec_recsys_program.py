"""The programs of tests/e2e/test_porting_probes_word2vec_recsys.py, each written once as its reference writes it
(``torch`` is ``torch`` or ``kiln``): word2vec's skip-gram with negative sampling, NCF (GMF + MLP towers), a two-tower
retrieval model with in-batch negatives, ``nn.EmbeddingBag`` pooling, and the knowledge-graph embeddings TransE,
DistMult and ComplEx."""

from __future__ import annotations

import numpy as np

VOCAB, DIM, WINDOW, NEGATIVES = 14, 6, 2, 3
"""word2vec: the vocabulary, the embedding size, the context words per centre word, the negatives per context word."""

WORD_COUNTS = np.array([30, 21, 17, 12, 10, 9, 7, 6, 5, 4, 3, 2, 2, 1], np.float64)
"""A corpus's word frequencies, most frequent first (index 0 is also the padding word in theeluwin's vocabulary)."""


def skip_gram(torch, nn, F, sparse=True):
    """Skip-gram with negative sampling as theeluwin/pytorch-sgns and Xiaofei's word2vec write it: input and output
    tables (``sparse=True`` for SparseAdam or sparse SGD), the input table drawn from ``uniform_(-0.5 / D, 0.5 / D)``
    and the output table ``zero_()``ed in place, negatives drawn by ``torch.multinomial(unigram ** 0.75, ...,
    replacement=True)`` unless fed (``negatives``, so the two libraries see the same words)."""

    class SGNS(nn.Module):
        def __init__(self, vocab_size=VOCAB, embedding_size=DIM, n_negs=NEGATIVES, weights=WORD_COUNTS):
            super().__init__()
            self.vocab_size, self.n_negs = vocab_size, n_negs
            self.ivectors = nn.Embedding(vocab_size, embedding_size, sparse=sparse)
            self.ovectors = nn.Embedding(vocab_size, embedding_size, sparse=sparse)
            initrange = 0.5 / embedding_size
            self.ivectors.weight.data.uniform_(-initrange, initrange)
            self.ovectors.weight.data.zero_()
            wf = np.power(weights, 0.75)
            wf = wf / wf.sum()
            self.weights = torch.FloatTensor(wf)

        def sample(self, batch_size, context_size):
            return torch.multinomial(self.weights, batch_size * context_size * self.n_negs, replacement=True).view(batch_size, -1)

        def forward(self, iword, owords, nwords=None):
            batch_size, context_size = iword.size()[0], owords.size()[1]
            if nwords is None:
                nwords = self.sample(batch_size, context_size)
            ivectors = self.ivectors(iword).unsqueeze(2)
            ovectors = self.ovectors(owords)
            nvectors = self.ovectors(nwords).neg()
            oloss = F.logsigmoid(torch.bmm(ovectors, ivectors).squeeze()).mean(1)
            nloss = F.logsigmoid(torch.bmm(nvectors, ivectors).squeeze()).view(-1, context_size, self.n_negs).sum(2).mean(1)
            return -(oloss + nloss).mean()

        def nearest(self, word, k=3):
            """The ``k`` words closest to ``word`` by cosine similarity of the input vectors, itself excluded."""
            with torch.no_grad():
                vectors = self.ivectors.weight.data
                similarity = F.cosine_similarity(vectors[word].unsqueeze(0), vectors, dim=1)
                similarity[word] = -float("inf")
                return torch.topk(similarity, k).indices.tolist()

    return SGNS()


def skipgram_batches(steps, batch=5, seed=0):
    """``(iword, owords, nwords)`` as NumPy int64 arrays: centre words, their contexts, their negatives."""
    rng = np.random.default_rng(seed)
    probabilities = WORD_COUNTS / WORD_COUNTS.sum()
    draw = lambda *shape: rng.choice(VOCAB, size=shape, p=probabilities)  # noqa: E731
    return [(draw(batch), draw(batch, 2 * WINDOW), draw(batch, 2 * WINDOW * NEGATIVES)) for _ in range(steps)]


USERS, ITEMS, FACTORS, LAYERS = 7, 9, 4, 2
"""NCF: users, items, the predictive factors, the MLP tower's layers."""


def ncf(torch, nn, F, model="NeuMF-end", dropout=0.0, GMF_model=None, MLP_model=None):
    """guoyang9/NCF's model.py: GMF (user * item embeddings) and MLP (``torch.cat`` of the two, a tower halving the
    width) towers concatenated into one logit; NeuMF-pre starts from trained GMF and MLP models (``weight.data.copy_``,
    the two predict layers concatenated and halved)."""

    class NCF(nn.Module):
        def __init__(self, user_num=USERS, item_num=ITEMS, factor_num=FACTORS, num_layers=LAYERS, dropout=dropout,
                     model=model, GMF_model=GMF_model, MLP_model=MLP_model):
            super(NCF, self).__init__()
            self.dropout = dropout
            self.model = model
            self.GMF_model = GMF_model
            self.MLP_model = MLP_model
            self.embed_user_GMF = nn.Embedding(user_num, factor_num)
            self.embed_item_GMF = nn.Embedding(item_num, factor_num)
            self.embed_user_MLP = nn.Embedding(user_num, factor_num * (2 ** (num_layers - 1)))
            self.embed_item_MLP = nn.Embedding(item_num, factor_num * (2 ** (num_layers - 1)))
            MLP_modules = []
            for i in range(num_layers):
                input_size = factor_num * (2 ** (num_layers - i))
                MLP_modules.append(nn.Dropout(p=self.dropout))
                MLP_modules.append(nn.Linear(input_size, input_size // 2))
                MLP_modules.append(nn.ReLU())
            self.MLP_layers = nn.Sequential(*MLP_modules)
            predict_size = factor_num if self.model in ['MLP', 'GMF'] else factor_num * 2
            self.predict_layer = nn.Linear(predict_size, 1)
            self._init_weight_()

        def _init_weight_(self):
            if not self.model == 'NeuMF-pre':
                nn.init.normal_(self.embed_user_GMF.weight, std=0.01)
                nn.init.normal_(self.embed_user_MLP.weight, std=0.01)
                nn.init.normal_(self.embed_item_GMF.weight, std=0.01)
                nn.init.normal_(self.embed_item_MLP.weight, std=0.01)
                for m in self.MLP_layers:
                    if isinstance(m, nn.Linear):
                        nn.init.xavier_uniform_(m.weight)
                nn.init.kaiming_uniform_(self.predict_layer.weight, a=1, nonlinearity='sigmoid')
                for m in self.modules():
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        m.bias.data.zero_()
            else:
                self.embed_user_GMF.weight.data.copy_(self.GMF_model.embed_user_GMF.weight)
                self.embed_item_GMF.weight.data.copy_(self.GMF_model.embed_item_GMF.weight)
                self.embed_user_MLP.weight.data.copy_(self.MLP_model.embed_user_MLP.weight)
                self.embed_item_MLP.weight.data.copy_(self.MLP_model.embed_item_MLP.weight)
                for (m1, m2) in zip(self.MLP_layers, self.MLP_model.MLP_layers):
                    if isinstance(m1, nn.Linear) and isinstance(m2, nn.Linear):
                        m1.weight.data.copy_(m2.weight)
                        m1.bias.data.copy_(m2.bias)
                predict_weight = torch.cat([self.GMF_model.predict_layer.weight, self.MLP_model.predict_layer.weight], dim=1)
                precit_bias = self.GMF_model.predict_layer.bias + self.MLP_model.predict_layer.bias
                self.predict_layer.weight.data.copy_(0.5 * predict_weight)
                self.predict_layer.bias.data.copy_(0.5 * precit_bias)

        def forward(self, user, item):
            if not self.model == 'MLP':
                embed_user_GMF = self.embed_user_GMF(user)
                embed_item_GMF = self.embed_item_GMF(item)
                output_GMF = embed_user_GMF * embed_item_GMF
            if not self.model == 'GMF':
                embed_user_MLP = self.embed_user_MLP(user)
                embed_item_MLP = self.embed_item_MLP(item)
                interaction = torch.cat((embed_user_MLP, embed_item_MLP), -1)
                output_MLP = self.MLP_layers(interaction)
            if self.model == 'GMF':
                concat = output_GMF
            elif self.model == 'MLP':
                concat = output_MLP
            else:
                concat = torch.cat((output_GMF, output_MLP), -1)
            prediction = self.predict_layer(concat)
            return prediction.view(-1)

    return NCF()


def hit(gt_item, pred_items):
    if gt_item in pred_items:
        return 1
    return 0


def ndcg(gt_item, pred_items):
    if gt_item in pred_items:
        index = pred_items.index(gt_item)
        return np.reciprocal(np.log2(index + 2))
    return 0


def ncf_metrics(torch, model, test_batches, top_k):
    """NCF's evaluate.metrics: each batch is one user's held-out item (first) and sampled negatives, ranked by
    ``torch.topk`` and read back by ``torch.take``."""
    HR, NDCG = [], []
    for user, item in test_batches:
        predictions = model(user, item)
        _, indices = torch.topk(predictions, top_k)
        recommends = torch.take(item, indices).cpu().numpy().tolist()
        gt_item = item[0].item()
        HR.append(hit(gt_item, recommends))
        NDCG.append(ndcg(gt_item, recommends))
    return np.mean(HR), np.mean(NDCG)


def ncf_dataset(torch, features, num_item, train_mat, num_ng=0, is_training=None):
    """NCF's data_utils.NCFData (``train_mat``, a scipy ``dok_matrix`` there, is a set of pairs here: the same ``in``):
    positives and ``num_ng`` negatives per positive drawn by ``np.random.randint`` in ``ng_sample`` each epoch."""

    class NCFData(torch.utils.data.Dataset):
        def __init__(self, features, num_item, train_mat=None, num_ng=0, is_training=None):
            super(NCFData, self).__init__()
            self.features_ps = features
            self.num_item = num_item
            self.train_mat = train_mat
            self.num_ng = num_ng
            self.is_training = is_training
            self.labels = [0 for _ in range(len(features))]

        def ng_sample(self):
            assert self.is_training, 'no need to sampling when testing'
            self.features_ng = []
            for x in self.features_ps:
                u = x[0]
                for t in range(self.num_ng):
                    j = np.random.randint(self.num_item)
                    while (u, j) in self.train_mat:
                        j = np.random.randint(self.num_item)
                    self.features_ng.append([u, j])
            labels_ps = [1 for _ in range(len(self.features_ps))]
            labels_ng = [0 for _ in range(len(self.features_ng))]
            self.features_fill = self.features_ps + self.features_ng
            self.labels_fill = labels_ps + labels_ng

        def __len__(self):
            return (self.num_ng + 1) * len(self.labels)

        def __getitem__(self, idx):
            features = self.features_fill if self.is_training else self.features_ps
            labels = self.labels_fill if self.is_training else self.labels
            user = features[idx][0]
            item = features[idx][1]
            label = labels[idx]
            return user, item, label

    return NCFData(features, num_item, train_mat, num_ng, is_training)


def ncf_data(seed=0, num_ng=2):
    """NCF's data_utils.NCFData: each observed (user, item) labelled 1 and ``num_ng`` unobserved items per pair
    labelled 0 (NumPy draws, as the reference's ``np.random.randint``), and one leave-one-out test list per user."""
    rng = np.random.default_rng(seed)
    observed = {(u, i) for u in range(USERS) for i in rng.choice(ITEMS, 3, replace=False)}
    users, items, labels = [], [], []
    for u, i in sorted(observed):
        users.append(u), items.append(i), labels.append(1)
        for _ in range(num_ng):
            j = int(rng.integers(ITEMS))
            while (u, j) in observed:
                j = int(rng.integers(ITEMS))
            users.append(u), items.append(j), labels.append(0)
    tests = [(np.full(5, u), np.concatenate([[sorted(i for v, i in observed if v == u)[0]],
                                             rng.choice([i for i in range(ITEMS) if (u, i) not in observed], 4, replace=False)]))
             for u in range(USERS)]
    return np.array(users), np.array(items), np.array(labels, np.float64), tests


HISTORY, TEMPERATURE = 4, 0.1
"""Two-tower: the items of a user's padded history (item 0 pads), the softmax temperature."""


def two_tower(torch, nn, F, dim=4, hidden=8):
    """A two-tower retrieval model as the in-batch-softmax write-ups write it (Yi et al. 2019): the query tower pools
    the user's padded history by ``nn.EmbeddingBag(mode="mean", padding_idx=0)`` beside the user's own embedding, the
    candidate tower embeds the item; both end in ``F.normalize``."""

    class TwoTower(nn.Module):
        def __init__(self, num_users=USERS, num_items=ITEMS, dim=dim, hidden=hidden):
            super().__init__()
            self.user_emb = nn.Embedding(num_users, dim)
            self.history = nn.EmbeddingBag(num_items, dim, mode="mean", padding_idx=0)
            self.item_emb = nn.Embedding(num_items, dim)
            self.user_tower = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
            self.item_tower = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

        def query(self, user_ids, history):
            features = torch.cat([self.user_emb(user_ids), self.history(history)], dim=-1)
            return F.normalize(self.user_tower(features), dim=-1)

        def candidate(self, item_ids):
            return F.normalize(self.item_tower(self.item_emb(item_ids)), dim=-1)

        def forward(self, user_ids, history, item_ids):
            return self.query(user_ids, history), self.candidate(item_ids)

    return TwoTower()


def in_batch_softmax_loss(torch, F, q, c, item_ids, item_log_prob, temperature=TEMPERATURE):
    """Each query's own item against the batch's other items: ``q @ c.T / temperature``, the sampling bias removed
    (logQ correction), the other copies of a query's own item masked out, ``labels = torch.arange(B)``."""
    logits = q @ c.T / temperature
    logits = logits - item_log_prob[item_ids]
    same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    mask = same & ~torch.eye(len(item_ids), dtype=torch.bool)
    logits = logits.masked_fill(mask, float('-inf'))
    labels = torch.arange(q.size(0), device=q.device)
    return F.cross_entropy(logits, labels)


def two_tower_batches(steps, batch=6, seed=1):
    """``(user_ids, history, item_ids)`` NumPy batches (an item repeats within a batch, a history is padded with 0)
    and the items' log sampling probabilities."""
    rng = np.random.default_rng(seed)
    popularity = np.linspace(2.0, 1.0, ITEMS)
    popularity /= popularity.sum()
    batches = []
    for _ in range(steps):
        history = rng.integers(1, ITEMS, (batch, HISTORY))
        history[np.arange(HISTORY) >= rng.integers(1, HISTORY + 1, (batch, 1))] = 0
        history[0] = 0  # a new user: an all-padding history pools to zeros
        items = rng.choice(ITEMS, batch, p=popularity)
        items[1] = items[2]
        batches.append((rng.integers(0, USERS, batch), history, items))
    return batches, np.log(popularity)


def recall_at_k(torch, model, users, history, held_out, k=3):
    """Retrieval as served: every item's candidate vector scored against each query, the top ``k`` kept."""
    with torch.no_grad():
        scores = model.query(users, history) @ model.candidate(torch.arange(ITEMS)).T
        top = scores.topk(k, dim=1).indices
        return (top == held_out.unsqueeze(1)).any(dim=1).float().mean().item()


TEXT_VOCAB, TEXT_CLASSES = 16, 3
"""The text-classification tutorial's vocabulary and classes, tiny."""


def text_classifier(torch, nn, F, mode="mean", padding_idx=None, include_last_offset=False):
    """PyTorch's text classification tutorial (``TextClassificationModel``): ``nn.EmbeddingBag`` over a flat batch of
    token ids with ``offsets``, a Linear head, ``init_weights`` by ``uniform_`` and ``zero_()`` on ``.data``; the
    bag's ``mode``, ``padding_idx`` and ``include_last_offset`` as a caller sets them, ``per_sample_weights`` passed
    through (``mode="sum"``)."""

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size=TEXT_VOCAB, embed_dim=5, num_class=TEXT_CLASSES):
            super(TextClassificationModel, self).__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False, mode=mode, padding_idx=padding_idx,
                                             include_last_offset=include_last_offset)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.fc.weight.data.uniform_(-initrange, initrange)
            self.fc.bias.data.zero_()

        def forward(self, text, offsets, per_sample_weights=None):
            embedded = self.embedding(text, offsets, per_sample_weights=per_sample_weights)
            return self.fc(embedded)

    return TextClassificationModel()


def text_batches(steps, batch=4, seed=2):
    """Lists of ``(label, token ids)`` as the tutorial's iterator yields them; one text is empty, one is all padding
    (token 0)."""
    rng = np.random.default_rng(seed)
    data = [[(int(rng.integers(TEXT_CLASSES)), rng.integers(0, TEXT_VOCAB, rng.integers(1, 6))) for _ in range(batch)]
            for _ in range(steps)]
    data[0][1] = (1, np.array([], np.int64))
    data[1][2] = (0, np.array([0, 0]))
    return data


def collate_batch(torch, batch, include_last_offset=False):
    """The tutorial's ``collate_batch``: labels, the texts concatenated, offsets by ``cumsum`` of the lengths."""
    label_list, text_list, offsets = [], [], [0]
    for _label, _text in batch:
        label_list.append(_label)
        processed_text = torch.tensor(_text, dtype=torch.int64)
        text_list.append(processed_text)
        offsets.append(processed_text.size(0))
    label_list = torch.tensor(label_list, dtype=torch.int64)
    offsets = torch.tensor(offsets if include_last_offset else offsets[:-1]).cumsum(dim=0)
    text_list = torch.cat(text_list)
    return label_list, text_list, offsets


ENTITIES, RELATIONS, KG_DIM = 8, 3, 4
"""Knowledge graph: entities, relations, the embedding size."""

TRIPLES = np.array([[0, 0, 1], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 0, 5], [5, 1, 6], [6, 2, 7], [7, 0, 0]])
"""(head, relation, tail) facts."""


def transe(torch, nn, F, norm=1, max_norm=None):
    """mklimasz/TransE-PyTorch's model.py: entity and relation tables with a padding row (``padding_idx``), uniform
    init in ``6 / sqrt(dim)`` through ``weight.data``, relations L1-normalised once by ``.data[:-1, :].div_(...)``,
    entities L2-normalised at each forward the same way, ``nn.MarginRankingLoss(reduction='none')`` with target -1.
    ``max_norm`` instead gives the entity table ``nn.Embedding(..., max_norm=max_norm)`` (the other common TransE
    code), which renormalises the rows looked up, and drops the ``.data`` division."""

    class TransE(nn.Module):
        def __init__(self, entity_count=ENTITIES, relation_count=RELATIONS, device="cpu", norm=norm, dim=KG_DIM, margin=1.0):
            super(TransE, self).__init__()
            self.entity_count = entity_count
            self.relation_count = relation_count
            self.device = device
            self.norm = norm
            self.dim = dim
            self.entities_emb = self._init_enitity_emb()
            self.relations_emb = self._init_relation_emb()
            self.criterion = nn.MarginRankingLoss(margin=margin, reduction='none')

        def _init_enitity_emb(self):
            entities_emb = nn.Embedding(num_embeddings=self.entity_count + 1, embedding_dim=self.dim,
                                        padding_idx=self.entity_count, max_norm=max_norm)
            uniform_range = 6 / np.sqrt(self.dim)
            entities_emb.weight.data.uniform_(-uniform_range, uniform_range)
            return entities_emb

        def _init_relation_emb(self):
            relations_emb = nn.Embedding(num_embeddings=self.relation_count + 1, embedding_dim=self.dim,
                                         padding_idx=self.relation_count)
            uniform_range = 6 / np.sqrt(self.dim)
            relations_emb.weight.data.uniform_(-uniform_range, uniform_range)
            # -1 to avoid nan for OOV vector
            relations_emb.weight.data[:-1, :].div_(relations_emb.weight.data[:-1, :].norm(p=1, dim=1, keepdim=True))
            return relations_emb

        def forward(self, positive_triplets, negative_triplets):
            if max_norm is None:
                # -1 to avoid nan for OOV vector
                self.entities_emb.weight.data[:-1, :].div_(self.entities_emb.weight.data[:-1, :].norm(p=2, dim=1, keepdim=True))
            assert positive_triplets.size()[1] == 3
            positive_distances = self._distance(positive_triplets)
            assert negative_triplets.size()[1] == 3
            negative_distances = self._distance(negative_triplets)
            return self.loss(positive_distances, negative_distances), positive_distances, negative_distances

        def predict(self, triplets):
            return self._distance(triplets)

        def loss(self, positive_distances, negative_distances):
            target = torch.tensor([-1], dtype=torch.long, device=self.device)
            return self.criterion(positive_distances, negative_distances, target)

        def _distance(self, triplets):
            assert triplets.size()[1] == 3
            heads = triplets[:, 0]
            relations = triplets[:, 1]
            tails = triplets[:, 2]
            return (self.entities_emb(heads) + self.relations_emb(relations) - self.entities_emb(tails)).norm(p=self.norm, dim=1)

    return TransE()


def corrupted(torch, positive_triples, head_or_tail, random_entities):
    """TransE's main.py: each triple's head or tail (``head_or_tail`` 1 or 0) replaced by a random entity."""
    local_heads, local_relations, local_tails = (positive_triples[:, i] for i in range(3))
    broken_heads = torch.where(head_or_tail == 1, random_entities, local_heads)
    broken_tails = torch.where(head_or_tail == 0, random_entities, local_tails)
    return torch.stack((broken_heads, local_relations, broken_tails), dim=1)


def hit_at_k(torch, predictions, ground_truth_idx, k=3):
    """TransE's metric.hit_at_k: distances, smallest first."""
    zero_tensor = torch.tensor([0])
    one_tensor = torch.tensor([1])
    _, indices = predictions.topk(k=k, largest=False)
    return torch.where(indices == ground_truth_idx, one_tensor, zero_tensor).sum().item()


def mrr(predictions, ground_truth_idx):
    """TransE's metric.mrr: the reciprocal rank of each true entity by ``argsort`` and ``nonzero``."""
    indices = predictions.argsort()
    return (1.0 / (indices == ground_truth_idx).nonzero()[:, 1].float().add(1.0)).sum().item()


def kg_1n(torch, nn, F, model="DistMult", input_dropout=0.0):
    """TimDettmers/ConvE's DistMult and Complex (model.py): 1-N scoring of (head, relation) against every entity by
    ``torch.mm(..., self.emb_e.weight.transpose(1, 0))``, ``xavier_normal_`` init on ``.data``, ``padding_idx=0``,
    ``torch.sigmoid`` and ``BCELoss``, real and imaginary parts as separate tables for Complex."""
    xavier_normal_ = nn.init.xavier_normal_  # the reference's from torch.nn.init import xavier_normal_

    class DistMult(nn.Module):
        def __init__(self, num_entities=ENTITIES, num_relations=RELATIONS, embedding_dim=KG_DIM):
            super(DistMult, self).__init__()
            self.emb_e = nn.Embedding(num_entities, embedding_dim, padding_idx=0)
            self.emb_rel = nn.Embedding(num_relations, embedding_dim, padding_idx=0)
            self.inp_drop = nn.Dropout(input_dropout)
            self.loss = nn.BCELoss()

        def init(self):
            xavier_normal_(self.emb_e.weight.data)
            xavier_normal_(self.emb_rel.weight.data)

        def forward(self, e1, rel):
            e1_embedded = self.emb_e(e1)
            rel_embedded = self.emb_rel(rel)
            e1_embedded = e1_embedded.squeeze()
            rel_embedded = rel_embedded.squeeze()
            e1_embedded = self.inp_drop(e1_embedded)
            rel_embedded = self.inp_drop(rel_embedded)
            pred = torch.mm(e1_embedded * rel_embedded, self.emb_e.weight.transpose(1, 0))
            pred = torch.sigmoid(pred)
            return pred

    class Complex(nn.Module):
        def __init__(self, num_entities=ENTITIES, num_relations=RELATIONS, embedding_dim=KG_DIM):
            super(Complex, self).__init__()
            self.num_entities = num_entities
            self.emb_e_real = nn.Embedding(num_entities, embedding_dim, padding_idx=0)
            self.emb_e_img = nn.Embedding(num_entities, embedding_dim, padding_idx=0)
            self.emb_rel_real = nn.Embedding(num_relations, embedding_dim, padding_idx=0)
            self.emb_rel_img = nn.Embedding(num_relations, embedding_dim, padding_idx=0)
            self.inp_drop = nn.Dropout(input_dropout)
            self.loss = nn.BCELoss()

        def init(self):
            xavier_normal_(self.emb_e_real.weight.data)
            xavier_normal_(self.emb_e_img.weight.data)
            xavier_normal_(self.emb_rel_real.weight.data)
            xavier_normal_(self.emb_rel_img.weight.data)

        def forward(self, e1, rel):
            e1_embedded_real = self.emb_e_real(e1).squeeze()
            rel_embedded_real = self.emb_rel_real(rel).squeeze()
            e1_embedded_img = self.emb_e_img(e1).squeeze()
            rel_embedded_img = self.emb_rel_img(rel).squeeze()
            e1_embedded_real = self.inp_drop(e1_embedded_real)
            rel_embedded_real = self.inp_drop(rel_embedded_real)
            e1_embedded_img = self.inp_drop(e1_embedded_img)
            rel_embedded_img = self.inp_drop(rel_embedded_img)
            realrealreal = torch.mm(e1_embedded_real * rel_embedded_real, self.emb_e_real.weight.transpose(1, 0))
            realimgimg = torch.mm(e1_embedded_real * rel_embedded_img, self.emb_e_img.weight.transpose(1, 0))
            imgrealimg = torch.mm(e1_embedded_img * rel_embedded_real, self.emb_e_img.weight.transpose(1, 0))
            imgimgreal = torch.mm(e1_embedded_img * rel_embedded_img, self.emb_e_real.weight.transpose(1, 0))
            pred = realrealreal + realimgimg + imgrealimg - imgimgreal
            pred = torch.sigmoid(pred)
            return pred

    network = {"DistMult": DistMult, "Complex": Complex}[model]()
    network.init()
    return network


def one_to_n_targets(torch, e1, rel, label_smoothing=0.2):
    """ConvE's ``e2_multi``: every known tail of each (head, relation) marked 1, then label smoothing
    ``((1.0 - epsilon) * e2_multi) + (1.0 / e2_multi.size(1))``."""
    e2_multi = torch.zeros(len(e1), ENTITIES)
    for row, (head, relation) in enumerate(zip(e1.tolist(), rel.tolist())):
        for h, r, t in TRIPLES.tolist():
            if (h, r) == (head, relation):
                e2_multi[row, t] = 1.0
    return ((1.0 - label_smoothing) * e2_multi) + (1.0 / e2_multi.size(1))


def complex_view(torch, nn, F, rank=KG_DIM, init_size=1e-1):
    """ComplEx scored in complex arithmetic: each table row holds ``rank`` (real, imag) pairs, read by
    ``torch.view_as_complex(x.view(-1, rank, 2))``; the score is ``Re(<h, r, conj(t)>)`` against every entity and
    training is facebookresearch/kbc's: cross-entropy over the entities, the N3 regulariser on the factors' moduli,
    tables scaled by ``weight.data *= init_size``."""

    class ComplExView(nn.Module):
        def __init__(self, sizes=(ENTITIES, RELATIONS), rank=rank):
            super().__init__()
            self.rank = rank
            self.embeddings = nn.ModuleList([nn.Embedding(s, 2 * rank, sparse=False) for s in sizes])
            self.embeddings[0].weight.data *= init_size
            self.embeddings[1].weight.data *= init_size

        def as_complex(self, x):
            return torch.view_as_complex(x.view(-1, self.rank, 2))

        def forward(self, x):
            lhs = self.as_complex(self.embeddings[0](x[:, 0]))
            rel = self.as_complex(self.embeddings[1](x[:, 1]))
            rhs = self.as_complex(self.embeddings[0](x[:, 2]))
            to_score = self.as_complex(self.embeddings[0].weight)
            scores = torch.real((lhs * rel) @ torch.conj(to_score).transpose(0, 1))
            return scores, (lhs.abs(), rel.abs(), rhs.abs())

    return ComplExView()


def n3(torch, factors, weight=1e-2):
    """kbc's N3 regulariser: ``weight * sum(|f| ** 3) / batch`` over the factors."""
    norm = 0
    for f in factors:
        norm += weight * torch.sum(torch.abs(f) ** 3)
    return norm / factors[0].shape[0]



CONTEXT_SIZE, EMBEDDING_DIM = 2, 5
TEST_SENTENCE = """When forty winters shall besiege thy brow,
And dig deep trenches in thy beauty's field,
Thy youth's proud livery so gazed on now,
Will be a totter'd weed of small worth held:""".split()
"""PyTorch's word embeddings tutorial: its n-gram sizes and the start of Shakespeare's Sonnet 2."""


def ngram_language_modeler(torch, nn, F, adaptive=False):
    """The tutorial's ``NGramLanguageModeler`` (``embeddings(inputs).view((1, -1))``, ReLU, ``log_softmax``, trained by
    ``nn.NLLLoss``); ``adaptive`` swaps the output layer for ``nn.AdaptiveLogSoftmaxWithLoss`` (large vocabularies'
    softmax, its ``.loss`` and ``log_prob``), as word models over big vocabularies write it."""
    vocab = sorted(set(TEST_SENTENCE))

    class NGramLanguageModeler(nn.Module):
        def __init__(self, vocab_size, embedding_dim, context_size):
            super(NGramLanguageModeler, self).__init__()
            self.embeddings = nn.Embedding(vocab_size, embedding_dim)
            self.linear1 = nn.Linear(context_size * embedding_dim, 16)
            if adaptive:
                self.out = nn.AdaptiveLogSoftmaxWithLoss(16, vocab_size, cutoffs=[4, 12], div_value=2.0)
            else:
                self.linear2 = nn.Linear(16, vocab_size)

        def forward(self, inputs, target=None):
            embeds = self.embeddings(inputs).view((1, -1))
            out = F.relu(self.linear1(embeds))
            if adaptive:
                return self.out(out, target).loss if target is not None else self.out.log_prob(out)
            out = self.linear2(out)
            log_probs = F.log_softmax(out, dim=1)
            return log_probs

    return NGramLanguageModeler(len(vocab), EMBEDDING_DIM, CONTEXT_SIZE)


def ngrams():
    """The tutorial's ``(context, target)`` trigrams and ``word_to_ix``."""
    vocab = sorted(set(TEST_SENTENCE))
    word_to_ix = {word: i for i, word in enumerate(vocab)}
    return ([([TEST_SENTENCE[i - j - 1] for j in range(CONTEXT_SIZE)], TEST_SENTENCE[i])
             for i in range(CONTEXT_SIZE, len(TEST_SENTENCE))], word_to_ix)


def glove(torch, nn, F, num_embeddings=VOCAB, embedding_dim=DIM):
    """GloVe as the common PyTorch ports write it: word and context tables with biases (``nn.Embedding(n, 1)``,
    ``.squeeze()``), ``weight.data.uniform_(-1, 1)`` and ``.zero_()``, the score ``sum(w_i * w_j) + b_i + b_j``."""

    class GloveModel(nn.Module):
        def __init__(self, num_embeddings, embedding_dim):
            super(GloveModel, self).__init__()
            self.wi = nn.Embedding(num_embeddings, embedding_dim)
            self.wj = nn.Embedding(num_embeddings, embedding_dim)
            self.bi = nn.Embedding(num_embeddings, 1)
            self.bj = nn.Embedding(num_embeddings, 1)
            self.wi.weight.data.uniform_(-1, 1)
            self.wj.weight.data.uniform_(-1, 1)
            self.bi.weight.data.zero_()
            self.bj.weight.data.zero_()

        def forward(self, i_indices, j_indices):
            w_i = self.wi(i_indices)
            w_j = self.wj(j_indices)
            b_i = self.bi(i_indices).squeeze()
            b_j = self.bj(j_indices).squeeze()
            x = torch.sum(w_i * w_j, dim=1) + b_i + b_j
            return x

    return GloveModel(num_embeddings, embedding_dim)


def glove_weight(torch, x, x_max=10, alpha=0.75):
    """GloVe's ``f(X_ij) = min((X_ij / x_max) ** alpha, 1)`` by ``torch.min`` with ``ones_like``."""
    wx = (x / x_max) ** alpha
    wx = torch.min(wx, torch.ones_like(wx))
    return wx


def wmse_loss(torch, F, weights, inputs, targets):
    loss = weights * F.mse_loss(inputs, targets, reduction='none')
    return torch.mean(loss)


def cooccurrences(seed=9, pairs=12):
    """``(i, j, X_ij)``: word pairs and their (positive) co-occurrence counts."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, pairs), rng.integers(0, VOCAB, pairs), rng.integers(1, 25, pairs).astype(np.float64)
