"""Porting probes: embedding-heavy training code (tests/e2e/word2vec_recsys_program.py), each written once as its
reference writes it (``torch`` is ``torch`` or ``kiln``) and run in both from kiln's initial weights in float64: the
first outputs and gradients, the losses, the state after a few optimizer steps and the evaluation metrics agree to
1e-10 (a float32 loss to float32's precision), eagerly and with the whole step (zero_grad, forward, loss, backward,
optimizer step) one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop. The sequential and graph
recommenders (SASRec, LightGCN, NGCF, DIN) are tests/e2e/test_porting_probes_sequential_graph_recsys.py.

- word2vec, skip-gram with negative sampling (theeluwin/pytorch-sgns, Xiaofei's word2vec): ``nn.Embedding(sparse=True)``
  input and output tables, ``weight.data.uniform_(-0.5 / D, 0.5 / D)`` and ``.zero_()``, ``torch.bmm`` of the gathered
  vectors, ``F.logsigmoid``, ``torch.FloatTensor(unigram ** 0.75)`` weights for ``torch.multinomial(...,
  replacement=True)`` negatives, ``optim.SparseAdam`` and plain ``optim.SGD`` on the sparse gradients; nearest
  neighbours by ``F.cosine_similarity`` of ``weight.data`` under ``torch.no_grad``. The negatives are fed so both
  libraries see the same words (their generators differ); kiln's own draws are checked for their law and for being
  the same eagerly and compiled under ``kiln.manual_seed``. A sparse lookup in a fullgraph step is refused, naming it.
- PyTorch's word embeddings tutorial: ``NGramLanguageModeler`` on Sonnet 2's trigrams (``embeddings(inputs).view((1,
  -1))``, ``nn.NLLLoss``, one trigram a step, ``total_loss += loss.item()``), and with ``nn.AdaptiveLogSoftmaxWithLoss``
  as its output layer (0-wide tail projections at this size).
- GloVe (the common PyTorch ports): word/context tables and ``nn.Embedding(n, 1)`` biases (``.squeeze()``), the
  weighting ``torch.min((x / x_max) ** alpha, torch.ones_like(...))``, ``mse_loss(reduction='none')`` weighted and
  averaged against ``torch.log(x_ij)``, Adagrad; the kept vectors ``W + W~``.
- NCF (guoyang9/NCF): GMF and MLP towers, ``torch.cat``, ``nn.BCEWithLogitsLoss`` against ``label.float()``, the
  ``normal_``/``xavier_uniform_``/``kaiming_uniform_(a=1, nonlinearity='sigmoid')`` init, NeuMF-pre from trained GMF and
  MLP models by ``weight.data.copy_``, HR and NDCG by ``torch.topk`` and ``torch.take``; ONNX export of the scorer;
  main.py's epochs over ``NCFData`` (``ng_sample`` by ``np.random.randint``) through a ``DataLoader``, a short last batch.
- A two-tower retrieval model with in-batch negatives: ``q @ c.T / temperature``, logQ correction, the other copies of
  a positive masked by ``masked_fill(-inf)``, ``labels = torch.arange(B)``; the query tower pools a padded history by
  ``nn.EmbeddingBag(mode="mean", padding_idx=0)``; recall@k of every item; ONNX export of the query tower.
- PyTorch's text classification tutorial: ``nn.EmbeddingBag`` with ``offsets`` from ``cumsum``, ``mode`` sum, mean
  and max, ``per_sample_weights``, ``padding_idx``, ``include_last_offset``, an empty bag, ``clip_grad_norm_``, SGD
  with ``StepLR``.
- Knowledge-graph embeddings: TransE (mklimasz/TransE-PyTorch: L1/L2 distances, the entity table L2-normalised in
  ``forward`` by ``weight.data[:-1, :].div_(...)``, ``nn.MarginRankingLoss(reduction='none')``, corrupted triples by
  ``torch.where``, hits@k and MRR by ``topk``/``argsort``/``nonzero``; and the ``nn.Embedding(max_norm=1)`` form),
  ConvE's DistMult and ComplEx (1-N scoring by ``torch.mm`` against the whole table, label smoothing, ``BCELoss``),
  and ComplEx in complex arithmetic (``torch.view_as_complex``, ``torch.conj``, ``torch.real``, kbc's N3 regulariser
  with Adagrad).

The scorers export to ONNX (``kiln.onnx.export``, run by onnxruntime, against torch's eager outputs): NCF, the query
tower, TransE's ``predict``, ConvE's ComplEx, the ``view_as_complex`` ComplEx, SASRec's ``predict``, LightGCN's ratings.

What broke, fixed with focused tests:
- ``F.cosine_similarity`` / ``F.normalize`` / ``F.pairwise_distance`` / ``norm`` / ``std`` / ``var`` of a parameter's
  ``.data`` raised ``AttributeError`` (a NumPy dtype has no ``is_float``): word2vec's nearest neighbours
  (tests/frontend/test_torch_array_distance_functions.py).
- ``BCEWithLogitsLoss`` of float64 logits against NCF's ``label.float()`` was refused; torch 2.13 takes two float dtypes,
  the loss in the target's (tests/frontend/test_bce_with_logits_mixed_dtypes_vs_torch.py).
- ``nn.Embedding(max_norm=...)`` was refused in any trace; it now renormalizes in the graph
  (tests/layers/test_embedding_max_norm_compiled_step_vs_torch.py). With it a silent bug showed: in a compiled step, a
  parameter read before an in-place write outside autograd (``no_grad``, ``.data``, each renormalizing lookup) lost
  that read's gradient (TransE: three of four lookups); ``backward()`` now sums the gradients of every value the
  parameter held (tests/runtime/test_compiled_reads_before_no_grad_writes.py).
- ``nn.EmbeddingBag(scale_grad_by_freq=True)`` was refused; it now scales as torch documents
  (tests/layers/test_embedding_bag_scale_grad_by_freq_vs_torch.py; torch 2.13's CPU kernel divides by the wrong count
  for mixed counts, pytorch/pytorch#190063, so no probe here compares it with torch's EmbeddingBag).
- ``torch.multinomial`` drew silently from weights torch refuses (NaN, negative, a zero row, no samples asked); it
  raises torch's errors now (tests/frontend/test_multinomial_checks_vs_torch.py).
- ``nn.Linear(0, n)`` divided by zero at init, so ``nn.AdaptiveLogSoftmaxWithLoss`` (the large-vocabulary word models'
  softmax) with a small ``in_features`` could not be built (tests/layers/test_linear_without_inputs_vs_torch.py).
- ``torch.LongTensor(t)`` of a traced ``t`` read it through NumPy and raised (SASRec's ``predict`` exported to ONNX);
  it is ``t``, as torch's alias (tests/frontend/test_legacy_constructor_of_traced_tensor.py). More in
  tests/e2e/test_porting_probes_sequential_graph_recsys.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, loaded_state, run_in_lockstep, snapshot
from e2e.sequential_graph_recsys_program import GCN_USERS, SEQ_ITEMS, SEQ_USERS, light_gcn, sasrec, sasrec_batches
from e2e.word2vec_recsys_program import (ENTITIES, ITEMS, TRIPLES, VOCAB, WORD_COUNTS, collate_batch, complex_view,
                                         cooccurrences, corrupted, glove, glove_weight, hit_at_k, in_batch_softmax_loss,
                                         kg_1n, mrr, n3, ncf, ncf_data, ncf_dataset, ncf_metrics, ngram_language_modeler,
                                         ngrams, one_to_n_targets, recall_at_k, skip_gram, skipgram_batches, text_batches,
                                         text_classifier, transe, two_tower, two_tower_batches, wmse_loss)
from oracles import libraries, require, require_torch

FLOAT32_LOSS = {"losses": dict(rtol=1e-6, atol=0)}
"""A loss computed in float32 (NCF's ``label.float()`` target): compared at float32's precision."""


def lockstep_step(torch, step, compiled):
    """``step`` as kiln runs it (one fullgraph graph when ``compiled``) or as torch runs it (eagerly)."""
    return kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step


# --- word2vec ---------------------------------------------------------------------------------------------------


def train_sgns(optimizer_name, compiled=False, steps=3):
    batches = skipgram_batches(steps)

    def train(torch, nn, F, model):
        if optimizer_name == "SparseAdam":
            optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=0.05)
        elif optimizer_name == "SGD":
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

        def step(iword, owords, nwords):
            optimizer.zero_grad()
            loss = model(iword, owords, nwords)
            loss.backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        record = {"losses": [], "grads": {}}
        for index, (iword, owords, nwords) in enumerate(batches):
            record["losses"].append(run(torch.tensor(iword), torch.tensor(owords), torch.tensor(nwords)).item())
            record["grads"][index] = gradients(model)  # a sparse .grad by its dense form
        record["state"] = snapshot(model)
        record["nearest"] = model.nearest(1)
        return record

    return train


@pytest.mark.parametrize("optimizer_name", ["SparseAdam", "SGD"])
def test_sgns_with_sparse_tables_trains_as_torch(float64_default, optimizer_name):
    ours, theirs = run_in_lockstep(skip_gram, train_sgns(optimizer_name))
    assert_same_records(ours, theirs)
    assert ours["grads"][0]["ovectors.weight"].any() and not ours["grads"][0]["ivectors.weight"].any()  # v starts at 0


def test_sgns_dense_whole_step_compiled_as_torch(float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: skip_gram(torch, nn, F, sparse=False), train_sgns("Adam", True))
    assert_same_records(ours, theirs)


def test_sgns_sparse_lookup_in_a_fullgraph_step_is_refused_naming_it(float64_default):
    with pytest.raises(kiln.KilnError, match=r"in forward: ivectors = self.ivectors\(iword\).*\n.*embedding\(sparse=True\) "
                                             r"inside a kiln.compile'd training step.*pass sparse=False"):
        run_in_lockstep(skip_gram, train_sgns("SGD", compiled=True, steps=1))


def test_sgns_negatives_by_multinomial_follow_the_unigram_law_and_the_seed():
    lib, nn, F = libraries("kiln")
    model = skip_gram(lib, nn, F, sparse=False)
    kiln.manual_seed(3)
    first = model.sample(4, 4)
    kiln.manual_seed(3)
    assert first.shape == (4, 4 * 3) and first.dtype == kiln.int64 and (model.sample(4, 4) == first).all().item()
    kiln.manual_seed(1)
    frequencies = np.bincount(kiln.multinomial(model.weights, 100_000, replacement=True).numpy(), minlength=VOCAB) / 1e5
    law = WORD_COUNTS ** 0.75 / (WORD_COUNTS ** 0.75).sum()
    np.testing.assert_allclose(frequencies, law, atol=5 * np.sqrt(law.max() / 1e5))  # 5 standard deviations


def test_sgns_drawing_its_negatives_in_a_compiled_step_draws_as_eagerly():
    """The step draws its negatives itself (no ``nwords``): compiled, the same words as eagerly under one seed."""
    losses = []
    for compiled in (False, True):
        lib, nn, F = libraries("kiln")
        kiln.manual_seed(0)
        model = skip_gram(lib, nn, F, sparse=False)
        optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)

        def step(iword, owords):
            optimizer.zero_grad()
            loss = model(iword, owords)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled else step
        iword, owords, _ = skipgram_batches(1)[0]
        kiln.manual_seed(5)
        losses.append([run(kiln.tensor(iword), kiln.tensor(owords)).item() for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    assert len(set(losses[0])) == 3


def test_sgns_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(skip_gram, train_sgns("SparseAdam"))
    assert ours["state"]["ivectors.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-6, atol=1e-7)


def train_ngram(compiled=False, epochs=2, adaptive=False):
    """The tutorial's loop: one trigram a step, ``model.zero_grad()``, SGD, ``total_loss += loss.item()`` per epoch,
    then ``model.embeddings.weight[word_to_ix["beauty"]]`` ("beauty's" in these lines)."""
    grams, word_to_ix = ngrams()

    def train(torch, nn, F, model):
        losses = []
        loss_function = nn.NLLLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

        def step(context_idxs, target):
            model.zero_grad()
            if adaptive:
                loss = model(context_idxs, target)
            else:
                log_probs = model(context_idxs)
                loss = loss_function(log_probs, target)
            loss.backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        for epoch in range(epochs):
            total_loss = 0
            for context, target in grams:
                context_idxs = torch.tensor([word_to_ix[w] for w in context], dtype=torch.long)
                loss = run(context_idxs, torch.tensor([word_to_ix[target]], dtype=torch.long))
                total_loss += loss.item()
            losses.append(total_loss)
        return {"losses": losses, "beauty": array(model.embeddings.weight[word_to_ix["beauty's"]]), "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("adaptive", [False, True], ids=["log_softmax", "AdaptiveLogSoftmaxWithLoss"])
def test_ngram_language_model_tutorial_trains_as_torch(float64_default, adaptive, compiled):
    build = lambda torch, nn, F: ngram_language_modeler(torch, nn, F, adaptive=adaptive)  # noqa: E731
    ours, theirs = run_in_lockstep(build, train_ngram(compiled, adaptive=adaptive))
    assert_same_records(ours, theirs)


def train_glove(compiled=False, steps=3):
    i_idx, j_idx, counts = cooccurrences()

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)

        def step(i_indices, j_indices, x_ij):
            optimizer.zero_grad()
            outputs = model(i_indices, j_indices)
            weights_x = glove_weight(torch, x_ij)
            loss = wmse_loss(torch, F, weights_x, outputs, torch.log(x_ij))
            loss.backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        batch = (torch.tensor(i_idx), torch.tensor(j_idx), torch.tensor(counts))
        record = {"losses": [run(*batch).item() for _ in range(steps)], "state": snapshot(model)}
        with torch.no_grad():  # the vectors kept: W + W~
            record["vectors"] = array(model.wi.weight + model.wj.weight)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_glove_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(glove, train_glove(compiled))
    assert_same_records(ours, theirs)


# --- NCF ----------------------------------------------------------------------------------------------------------


def train_ncf(compiled=False, steps=3, optimizer_name="Adam"):
    users, items, labels, tests = ncf_data()

    def train(torch, nn, F, model):
        loss_function = nn.BCEWithLogitsLoss()
        if optimizer_name == "Adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        user, item, label = torch.tensor(users), torch.tensor(items), torch.tensor(labels)

        def step(user, item, label):
            model.zero_grad()
            prediction = model(user, item)
            loss = loss_function(prediction, label)
            loss.backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        record = {"first": array(model(user, item))}
        record["losses"] = [run(user, item, label.float()).item() for _ in range(steps)]
        record["state"] = snapshot(model)
        model.eval()
        record["HR, NDCG"] = ncf_metrics(torch, model, [(torch.tensor(u), torch.tensor(i)) for u, i in tests], 2)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_ncf_neumf_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(ncf, train_ncf(compiled))
    assert_same_records(ours, theirs, looser=FLOAT32_LOSS)
    assert isinstance(ours["losses"][0], float) and ours["losses"][2] < ours["losses"][0]


def train_ncf_by_loader(compiled=False, epochs=2):
    """main.py's epochs: ``train_loader.dataset.ng_sample()`` (NumPy draws, seeded alike for both libraries), batches
    from a ``DataLoader`` (in order: its shuffle draws from each library's own generator), the last one short."""
    users, items, _, _ = ncf_data()
    positives = [[int(u), int(i)] for u, i in zip(users, items)][::3]  # ncf_data's positives (each followed by 2 negatives)

    def train(torch, nn, F, model):
        dataset = ncf_dataset(torch, positives, ITEMS, {tuple(x) for x in positives}, num_ng=2, is_training=True)
        train_loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False, num_workers=0)
        loss_function = nn.BCEWithLogitsLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

        def step(user, item, label):
            model.zero_grad()
            prediction = model(user, item)
            loss = loss_function(prediction, label)
            loss.backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        saved, record = np.random.get_state(), {"losses": []}
        np.random.seed(0)  # main.py's global NumPy draws, the same for both libraries (restored after)
        try:
            for epoch in range(epochs):
                model.train()
                train_loader.dataset.ng_sample()
                for user, item, label in train_loader:
                    label = label.float()
                    record["losses"].append(run(user, item, label).item())
        finally:
            np.random.set_state(saved)
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_ncf_trains_from_its_data_loader_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(ncf, train_ncf_by_loader(compiled))
    assert_same_records(ours, theirs, looser=FLOAT32_LOSS)
    assert len(ours["losses"]) == 2 * 4  # 63 samples an epoch: three batches of 16 and one of 15


def neumf_pre(torch, nn, F):
    """NeuMF-pre as main.py builds it: the GMF and MLP models (trained, here as initialised) copied in."""
    gmf, mlp = ncf(torch, nn, F, model="GMF"), ncf(torch, nn, F, model="MLP")
    return ncf(torch, nn, F, model="NeuMF-pre", GMF_model=gmf, MLP_model=mlp)


def test_ncf_neumf_pre_from_gmf_and_mlp_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(neumf_pre, train_ncf(True, optimizer_name="SGD"))
    assert_same_records(ours, theirs, looser=FLOAT32_LOSS)


def test_ncf_scorer_exports_to_onnx_as_torch_scores(tmp_path):
    ort = require("onnxruntime")
    require("onnx")
    torch = require_torch()
    kiln.manual_seed(0)
    model = ncf(*libraries("kiln")).eval()
    twin = ncf(*libraries("torch")).eval()
    twin.load_state_dict({k: torch.tensor(v) for k, v in snapshot(model).items()})
    user, item = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 8])
    path = str(tmp_path / "ncf.onnx")
    kiln.onnx.export(model, (kiln.tensor(user), kiln.tensor(item)), path, input_names=["user", "item"],
                     output_names=["score"], dynamic_axes={"user": {0: "batch"}, "item": {0: "batch"}})
    users, items = np.arange(6), np.array([1, 2, 3, 8, 0, 0])
    scores = ort.InferenceSession(path).run(None, {"user": users, "item": items})[0]
    np.testing.assert_allclose(scores, twin(torch.tensor(users), torch.tensor(items)).detach().numpy(), rtol=1e-5, atol=1e-7)


# --- two-tower retrieval ------------------------------------------------------------------------------------------


def train_two_tower(compiled=False, steps=3):
    batches, log_probability = two_tower_batches(steps)

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        item_log_prob = torch.tensor(log_probability)

        def step(user_ids, history, item_ids):
            optimizer.zero_grad()
            q, c = model(user_ids, history, item_ids)
            loss = in_batch_softmax_loss(torch, F, q, c, item_ids, item_log_prob)
            loss.backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        first = [torch.tensor(a) for a in batches[0]]
        record = {"first": [array(x) for x in model(*first)]}
        record["losses"] = [run(*[torch.tensor(a) for a in batch]).item() for batch in batches]
        record["state"] = snapshot(model)
        record["recall@3"] = recall_at_k(torch, model, *first)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_two_tower_in_batch_softmax_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(two_tower, train_two_tower(compiled))
    assert_same_records(ours, theirs)


def test_two_tower_query_tower_exports_to_onnx(tmp_path):
    ort = require("onnxruntime")
    require("onnx")
    lib, nn, F = libraries("kiln")
    kiln.manual_seed(0)
    model = two_tower(lib, nn, F)

    class QueryTower(nn.Module):
        def __init__(self, towers):
            super().__init__()
            self.towers = towers

        def forward(self, user_ids, history):
            return self.towers.query(user_ids, history)

    tower = QueryTower(model).eval()
    (users, history, _), = two_tower_batches(1)[0][:1]
    path = str(tmp_path / "query.onnx")
    kiln.onnx.export(tower, (kiln.tensor(users), kiln.tensor(history)), path, input_names=["user", "history"])
    query = ort.InferenceSession(path).run(None, {"user": users, "history": history})[0]
    np.testing.assert_allclose(query, tower(kiln.tensor(users), kiln.tensor(history)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(query, axis=1), 1.0, rtol=1e-5)


# --- EmbeddingBag: the text classification tutorial ---------------------------------------------------------------


def train_text(compiled=False, steps=3, weighted=False, include_last_offset=False):
    data = text_batches(steps)

    def train(torch, nn, F, model):
        criterion = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.1)

        def step(label, text, offsets, weights):
            optimizer.zero_grad()
            predicted_label = model(text, offsets, weights)
            loss = criterion(predicted_label, label)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            return loss, predicted_label

        run = lockstep_step(torch, step, compiled)
        record = {"losses": [], "correct": []}
        for index, batch in enumerate(data):
            label, text, offsets = collate_batch(torch, batch, include_last_offset)
            weights = torch.linspace(0.5, 1.5, len(text)) if weighted else None
            if index == 0:
                model(text, offsets, weights).sum().backward()
                record["first grads"] = gradients(model)
                model.zero_grad()
            loss, predicted_label = run(label, text, offsets, weights)
            record["losses"].append(loss.item())
            record["correct"].append((predicted_label.argmax(1) == label).sum().item())
            scheduler.step()
        record["state"] = snapshot(model)
        return record

    return train


BAGS = {"mean": dict(mode="mean"), "sum, per_sample_weights": dict(mode="sum", weighted=True), "max": dict(mode="max"),
        "mean, padding_idx": dict(mode="mean", padding_idx=0), "max, padding_idx": dict(mode="max", padding_idx=0),
        "sum, per_sample_weights, padding_idx": dict(mode="sum", padding_idx=0, weighted=True),
        "sum, include_last_offset": dict(mode="sum", include_last_offset=True, weighted=True)}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("bag", BAGS.values(), ids=BAGS.keys())
def test_text_classifier_embedding_bag_trains_as_torch(float64_default, bag, compiled):
    bag = dict(bag)
    weighted, last = bag.pop("weighted", False), bag.get("include_last_offset", False)
    build = lambda torch, nn, F: text_classifier(torch, nn, F, **bag)  # noqa: E731
    ours, theirs = run_in_lockstep(build, train_text(compiled, weighted=weighted, include_last_offset=last))
    assert_same_records(ours, theirs)


# --- knowledge-graph embeddings -----------------------------------------------------------------------------------


def train_transe(compiled=False, steps=3):
    rng = np.random.default_rng(4)
    draws = [(rng.integers(0, 2, len(TRIPLES)), rng.integers(0, ENTITIES, len(TRIPLES))) for _ in range(steps)]

    def train(torch, nn, F, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        positive_triples = torch.tensor(TRIPLES)

        def step(positive_triples, negative_triples):
            optimizer.zero_grad()
            loss, pd, nd = model(positive_triples, negative_triples)
            loss.mean().backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        record = {"losses": []}
        for head_or_tail, random_entities in draws:
            negative_triples = corrupted(torch, positive_triples, torch.tensor(head_or_tail), torch.tensor(random_entities))
            record["losses"].append(array(run(positive_triples, negative_triples)))
        record["state"] = snapshot(model)
        model.eval()
        with torch.no_grad():  # every entity as the tail of each fact, as TransE's test.py ranks them
            heads = torch.tensor(TRIPLES[:, 0]).reshape(-1, 1).repeat(1, ENTITIES)
            relations = torch.tensor(TRIPLES[:, 1]).reshape(-1, 1).repeat(1, ENTITIES)
            tails = torch.arange(ENTITIES).repeat(len(TRIPLES), 1)
            predictions = model.predict(torch.stack((heads, relations, tails), dim=2).reshape(-1, 3)).reshape(len(TRIPLES), -1)
            ground_truth = torch.tensor(TRIPLES[:, 2]).reshape(-1, 1)
            record["hits@3"], record["mrr"] = hit_at_k(torch, predictions, ground_truth), mrr(predictions, ground_truth)
        return record

    return train


TRANSE = {"L1": dict(norm=1), "L2": dict(norm=2), "max_norm=1": dict(max_norm=1)}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("variant", TRANSE.values(), ids=TRANSE.keys())
def test_transe_trains_as_torch(float64_default, variant, compiled):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: transe(torch, nn, F, **variant), train_transe(compiled))
    assert_same_records(ours, theirs)


def train_one_to_n(compiled=False, steps=3):
    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        e1, rel = torch.tensor(TRIPLES[:, :1]), torch.tensor(TRIPLES[:, 1:2])
        e2_multi = one_to_n_targets(torch, e1.view(-1), rel.view(-1))

        def step(e1, rel, e2_multi):
            optimizer.zero_grad()
            pred = model.forward(e1, rel)
            loss = model.loss(pred, e2_multi)
            loss.backward()
            optimizer.step()
            return loss

        run = lockstep_step(torch, step, compiled)
        record = {"first": array(model(e1, rel))}
        record["losses"] = [run(e1, rel, e2_multi).item() for _ in range(steps)]
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("model", ["DistMult", "Complex"])
def test_conve_distmult_and_complex_train_as_torch(float64_default, model, compiled):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: kg_1n(torch, nn, F, model=model), train_one_to_n(compiled))
    assert_same_records(ours, theirs)


def train_complex_view(compiled=False, steps=3):
    def train(torch, nn, F, model):
        optimizer = torch.optim.Adagrad(model.parameters(), lr=0.1)
        loss = nn.CrossEntropyLoss(reduction='mean')
        input_batch = torch.tensor(TRIPLES)

        def step(input_batch):
            optimizer.zero_grad()
            predictions, factors = model.forward(input_batch)
            truth = input_batch[:, 2]
            l_fit = loss(predictions, truth)
            l_reg = n3(torch, factors)
            total = l_fit + l_reg
            total.backward()
            optimizer.step()
            return total

        run = lockstep_step(torch, step, compiled)
        record = {"first": array(model(input_batch)[0])}
        record["losses"] = [run(input_batch).item() for _ in range(steps)]
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_complex_by_view_as_complex_with_n3_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(complex_view, train_complex_view(compiled))
    assert_same_records(ours, theirs)


# --- scorers exported to ONNX -------------------------------------------------------------------------------------

SCORERS = {
    "TransE predict": (transe, lambda m, triplets: m.predict(triplets), (TRIPLES,)),
    "ConvE ComplEx": (lambda t, n, f: kg_1n(t, n, f, model="Complex"), lambda m, e1, rel: m(e1, rel),
                      (TRIPLES[:, :1].copy(), TRIPLES[:, 1:2].copy())),
    "view_as_complex ComplEx": (complex_view, lambda m, x: m(x)[0], (TRIPLES,)),
    "SASRec predict": (lambda t, n, f: sasrec(t, n, f, num_blocks=1), lambda m, seqs, items: m.predict(None, seqs, items),
                       (sasrec_batches(1)[0][1], np.tile(np.arange(1, SEQ_ITEMS + 1), (SEQ_USERS, 1)))),
    "LightGCN ratings": (lambda t, n, f: light_gcn(t, n, f, float_type="FloatTensor"), lambda m, users: m.getUsersRating(users),
                         (np.arange(GCN_USERS),)),
}


@pytest.mark.filterwarnings("ignore:divide by zero encountered in power")
@pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor")
@pytest.mark.parametrize("scorer", SCORERS.values(), ids=SCORERS.keys())
def test_scorer_exports_to_onnx_as_torch_scores(tmp_path, scorer):
    ort = require("onnxruntime")
    require("onnx")
    require("scipy")
    torch = require_torch()
    build, score, inputs = scorer
    kiln.manual_seed(0)
    models = [build(*libraries(name)).eval() for name in ("kiln", "torch")]
    models[1].load_state_dict(loaded_state(torch, models[1], snapshot(models[0])))
    wrapped = []
    for lib, model in zip((kiln, torch), models):
        class Scorer(lib.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, *args):
                return score(self.model, *args)

        wrapped.append(Scorer(model))
    path = str(tmp_path / "scorer.onnx")
    kiln.onnx.export(wrapped[0], tuple(kiln.tensor(a) for a in inputs), path)
    session = ort.InferenceSession(path)
    scores = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})[0]
    with torch.no_grad():
        np.testing.assert_allclose(scores, wrapped[1](*[torch.tensor(a) for a in inputs]).numpy(), rtol=1e-4, atol=1e-5)
