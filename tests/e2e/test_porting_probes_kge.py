"""Porting probe: knowledge-graph embeddings as two reference repositories write them (``e2e/kge_program.py``, written
once, ``torch`` being torch or kiln), trained a few steps in both libraries from kiln's initial weights and compared in
float64 to 1e-10: the per-step logs (losses, the regularization), the state after the steps and the evaluation.

- DeepGraphLearning/KnowledgeGraphEmbedding (the RotatE paper's code): ``KGEModel`` with ``gamma`` and
  ``embedding_range`` as frozen ``nn.Parameter(torch.Tensor([...]), requires_grad=False)`` read by ``.item()``,
  embeddings as ``nn.Parameter(torch.zeros(...))`` drawn by ``nn.init.uniform_(tensor=..., a=..., b=...)``, lookups by
  ``torch.index_select`` in the 'single', 'head-batch' and 'tail-batch' modes, and all five scores: TransE
  (``gamma - torch.norm(score, p=1, dim=2)``), DistMult, ComplEx and RotatE (``torch.chunk`` into real and imaginary
  halves; RotatE's relation a phase, ``torch.cos``/``torch.sin``, the modulus by ``torch.stack([re, im]).norm(dim=0)``),
  pRotatE (``torch.abs(torch.sin(...))`` times a trainable modulus). ``train_step`` as written: self-adversarial
  negative sampling (``F.softmax(negative_score * temperature, dim=1).detach() * F.logsigmoid(-negative_score)``),
  ``F.logsigmoid`` of the positive scores ``.squeeze(dim=1)``, the subsampling weights, the L3 regularization
  ``entity_embedding.norm(p=3)**3 + relation_embedding.norm(p=3).norm(p=3)**3`` (DistMult, ComplEx), ``.item()``
  logs; run.py's Adam over ``filter(lambda p: p.requires_grad, ...)`` rebuilt at a tenth of the rate after the warm-up
  steps. dataloader.py's ``TrainDataset`` (``np.random.randint`` negatives filtered against the true heads or tails,
  ``torch.sqrt(1 / torch.Tensor([count]))``, ``torch.LongTensor`` of a tuple and of a NumPy array, its ``collate_fn``
  with a string mode) in two ``DataLoader``s alternated by ``BidirectionalOneShotIterator``; ``test_step``'s filtered
  ranking (``TestDataset``: ``torch.LongTensor`` of a list of pairs, ``tmp[:, 0].float()`` added to float64 scores by
  ``score += filter_bias``, a ``DataLoader`` with a worker, ``torch.argsort(descending=True)``, ``(argsort[i, :] ==
  positive_arg[i]).nonzero()``, ``ranking.item()``) into MRR, MR and HITS@k. Eagerly, and with ``kiln.compile(model)``
  (torch 2.x's ``model = torch.compile(model)``: the tuple input and the mode string) under the same loop.
- thunlp/OpenKE: ``BaseModule``'s frozen ``zero_const``/``pi_const``, ``TransE`` (``nn.Embedding`` tables,
  ``xavier_uniform_`` or ``nn.init.uniform_`` of ``weight.data`` within ``embedding_range``, ``F.normalize(h, 2, -1)``,
  the ``p_norm`` distance ``torch.norm(score, self.p_norm, -1).flatten()``, the margin as a frozen parameter) and
  ``RotatE`` (``r / (range / pi)`` with ``pi`` a one-element parameter, the ``view(-1, B, d).permute(1, 0, 2)``
  layout of the 'head_batch'/'tail_batch' cross sampling), ``MarginLoss`` (``torch.max(p_score - n_score,
  -self.margin)``, with and without the adversarial weights ``F.softmax(-n_score * T).detach()``), ``SigmoidLoss``
  (``nn.LogSigmoid``, adversarial), ``NegativeSampling`` (scores split by ``score[:batch_size]`` and ``.view(-1,
  batch_size).permute(1, 0)``, ``loss_res += regul_rate * regularization``) and ``Trainer`` (the optimizer picked by
  name: SGD, Adam, Adagrad; ``Variable(torch.from_numpy(x))`` of the loader's NumPy batches). Eagerly, and with
  ``train_one_step``'s step one ``kiln.compile(fullgraph=True)`` graph.

Adaptations: the training loaders do not shuffle (``shuffle=True`` draws from each library's own generator); the
negatives come from NumPy's global generator, seeded alike before each library's run; ``np.isin`` for ``np.in1d``
(removed in NumPy 2.4); OpenKE's C++ sampler is ``openke_batches`` (the same arrays).

What broke: nothing; everything agreed as first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.kge_program import (BATCH, ENTITIES, HIDDEN, RELATIONS, TEST_TRIPLES, TRAIN_TRIPLES, kge_args, kge_model,
                             openke, openke_batches, openke_trainer, train_iterator)
from e2e.probe_lockstep import assert_same_records, compiled_module_training, run_in_lockstep, snapshot

KGE_MODELS = {
    "TransE": dict(),
    "DistMult": dict(regularization=1e-3),
    "ComplEx": dict(double_entity_embedding=True, double_relation_embedding=True, regularization=1e-3),
    "RotatE": dict(double_entity_embedding=True),
    "pRotatE": dict(),
}


def build_kge(model_name):
    options = dict(KGE_MODELS[model_name])
    options.pop("regularization", None)

    def build(torch, nn, F):
        KGEModel = kge_model(torch, nn, F)
        return KGEModel(model_name=model_name, nentity=ENTITIES, nrelation=RELATIONS, hidden_dim=HIDDEN, gamma=6.0,
                        **options)

    return build


def train_kge(model_name, steps=5, warm_up_steps=2, learning_rate=0.05):
    """run.py's training loop (its logging and checkpointing left out), then ``test_step`` on the test facts."""
    args = kge_args(regularization=KGE_MODELS[model_name].get("regularization", 0.0))

    def train(torch, nn, F, kge_model):
        np.random.seed(0)
        iterator = train_iterator(torch, args)
        current_learning_rate, warm_up = learning_rate, warm_up_steps
        optimizer = torch.optim.Adam(
            filter(lambda p: p.requires_grad, kge_model.parameters()),
            lr=current_learning_rate
        )
        training_logs = []
        for step in range(steps):
            log = kge_model.train_step(kge_model, optimizer, iterator, args)
            training_logs.append(log)
            if step >= warm_up:
                current_learning_rate = current_learning_rate / 10
                optimizer = torch.optim.Adam(
                    filter(lambda p: p.requires_grad, kge_model.parameters()),
                    lr=current_learning_rate
                )
                warm_up = warm_up * 3
        metrics = kge_model.test_step(kge_model, TEST_TRIPLES, TRAIN_TRIPLES + TEST_TRIPLES, args)
        logs = {key: [log[key] for log in training_logs] for key in training_logs[0]}
        return {"logs": logs, "metrics": metrics, "state": snapshot(kge_model)}

    return train


@pytest.mark.parametrize("model_name", KGE_MODELS)
def test_kge_model_trains_as_torch(float64_default, model_name):
    ours, theirs = run_in_lockstep(build_kge(model_name), train_kge(model_name))
    assert_same_records(ours, theirs)
    assert set(ours["metrics"]) == {"MRR", "MR", "HITS@1", "HITS@3", "HITS@10"}
    assert ("regularization" in ours["logs"]) == (model_name in ("DistMult", "ComplEx"))
    assert theirs["logs"]["loss"][-1] < theirs["logs"]["loss"][0]


@pytest.mark.parametrize("model_name", ["TransE", "RotatE"])
def test_kge_model_compiled_as_torch(float64_default, model_name):
    """``kiln.compile(model, fullgraph=True)`` under the same loop (``train_step`` and ``test_step`` call the compiled
    model with a tuple and a mode string, and read its parameters)."""
    ours, theirs = run_in_lockstep(build_kge(model_name), compiled_module_training(train_kge(model_name)))
    assert_same_records(ours, theirs)


OPENKE = {
    "TransE margin sgd": dict(model="TransE", model_options=dict(p_norm=1, norm_flag=True),
                              loss="MarginLoss", loss_options=dict(margin=5.0), opt_method="sgd", alpha=0.5),
    "TransE L2 adversarial margin adagrad": dict(model="TransE", model_options=dict(p_norm=2, norm_flag=True),
                                                 loss="MarginLoss", loss_options=dict(adv_temperature=1.0, margin=5.0),
                                                 opt_method="adagrad", alpha=0.1),
    "TransE sigmoid adam": dict(model="TransE", model_options=dict(p_norm=1, norm_flag=False, margin=6.0, epsilon=2.0),
                                loss="SigmoidLoss", loss_options=dict(adv_temperature=1.0), opt_method="adam",
                                alpha=0.05, regul_rate=0.01),
    "RotatE sigmoid adam": dict(model="RotatE", model_options=dict(margin=6.0, epsilon=2.0), loss="SigmoidLoss",
                                loss_options=dict(adv_temperature=2.0), opt_method="adam", alpha=0.05),
}


def build_openke(variant):
    config = OPENKE[variant]

    def build(torch, nn, F):
        TransE, RotatE, MarginLoss, SigmoidLoss, NegativeSampling = openke(torch, nn, F)
        model = {"TransE": TransE, "RotatE": RotatE}[config["model"]](ENTITIES, RELATIONS, dim=HIDDEN,
                                                                      **config["model_options"])
        loss = {"MarginLoss": MarginLoss, "SigmoidLoss": SigmoidLoss}[config["loss"]](**config["loss_options"])
        return NegativeSampling(model=model, loss=loss, batch_size=BATCH, regul_rate=config.get("regul_rate", 0.0))

    return build


def train_openke(variant, compiled=False, steps=4):
    """The examples' ``Trainer(model=..., data_loader=..., train_times=..., alpha=..., opt_method=...).run()``; with
    ``compiled`` kiln's ``train_one_step`` is wrapped as one ``kiln.compile(fullgraph=True)`` graph (its ``.item()``
    after the call)."""
    config = OPENKE[variant]

    def train(torch, nn, F, model):
        Trainer = openke_trainer(torch)
        trainer = Trainer(model=model, data_loader=openke_batches(steps), train_times=2, alpha=config["alpha"],
                          opt_method=config["opt_method"])
        if compiled and torch is kiln:
            step = kiln.compile(lambda data: one_step_without_item(trainer, data), fullgraph=True)
            trainer.train_one_step = lambda data: step(data).item()
        trainer.run()
        return {"losses": trainer.losses, "state": snapshot(model)}

    return train


def one_step_without_item(trainer, data):
    """``Trainer.train_one_step`` without its closing ``.item()`` (the NumPy batch converted inside the step)."""
    trainer.optimizer.zero_grad()
    loss = trainer.model({
        'batch_h': trainer.to_var(data['batch_h'], trainer.use_gpu),
        'batch_t': trainer.to_var(data['batch_t'], trainer.use_gpu),
        'batch_r': trainer.to_var(data['batch_r'], trainer.use_gpu),
        'batch_y': trainer.to_var(data['batch_y'], trainer.use_gpu),
        'mode': data['mode']
    })
    loss.backward()
    trainer.optimizer.step()
    return loss


@pytest.mark.parametrize("variant", OPENKE)
def test_openke_trains_as_torch(float64_default, variant):
    ours, theirs = run_in_lockstep(build_openke(variant), train_openke(variant))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("variant", ["TransE margin sgd", "RotatE sigmoid adam"])
def test_openke_compiled_step_as_torch(float64_default, variant):
    ours, theirs = run_in_lockstep(build_openke(variant), train_openke(variant, compiled=True))
    assert_same_records(ours, theirs)
