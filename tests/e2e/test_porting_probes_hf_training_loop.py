"""Porting probe: the training-loop idioms of Hugging Face-style scripts (``transformers``' Trainer and
``run_glue_no_trainer.py`` / ``run_mlm_no_trainer.py``, ``accelerate``'s examples), written once in
``hf_training_loop_program.py`` (``torch`` is ``torch`` or ``kiln``) and run against torch 2.13.

Data side: a map-style ``Dataset`` over whitespace-tokenized lines of Python's bundled docs, a ``DataLoader`` with a
seeded ``RandomSampler``, ``drop_last``, ``num_workers=0``, ``worker_init_fn`` and a ``collate_fn`` padding to the
batch's longest (``pad_sequence``, attention masks), a BucketSampler-style batch sampler (``torch.randperm`` with a
seeded ``Generator``), and ``DataCollatorForLanguageModeling``'s 15% / 80-10-10 masking (``torch.full``,
``torch.bernoulli``, ``masked_fill_``, boolean-mask assignment, ``torch.randint`` with a generator). kiln's random
streams are its own (NumPy's), so torch's DataLoader is fed kiln's sample order and must give the same batches; the
masking is checked for what it computes (labels, specials, proportions, reproducibility).

Loop: AdamW with the two ``no_decay`` parameter groups, ``get_linear_schedule_with_warmup`` /
``get_cosine_schedule_with_warmup`` (``LambdaLR`` with a closure and a ``partial``), gradient accumulation
(``loss / accumulation_steps``, a step every k batches and at the epoch's end), ``clip_grad_norm_``,
``zero_grad(set_to_none=True)``, ``model.train()``/``eval()`` per epoch, evaluation under ``torch.inference_mode()``
with ``.detach().cpu().item()`` metrics, early stopping, the best checkpoint saved (``pytorch_model.bin``, optimizer
and scheduler state in ``training_state.pt``) and loaded back. A one-layer BERT classifier and a GPT-style LM (tied
head, causal ``nn.MultiheadAttention`` with a key padding mask, shifted labels with -100) trained by it in float64
lockstep to 1e-10: eagerly, with the model ``kiln.compile``d (``accelerate``'s ``torch.compile`` of the forward,
``loss.backward()`` outside), and with the accumulation micro-step and the update step as two
``kiln.compile(fullgraph=True)`` graphs against torch's eager loop. Also: Trainer's ``resume_from_checkpoint``
(model, ``optimizer.pt``, ``scheduler.pt`` into fresh objects; bit-exact with the uninterrupted run), the BERT's MLM
head trained from a masking ``collate_fn``, float32 at float32's level, and the fine-tuned classifier through
``kiln.onnx.export`` with dynamic batch and sequence axes in onnxruntime.

What broke: the ONNX export of the fine-tuned BERT with a dynamic sequence axis: ``self.position_ids[:, :seq_length]``
(a fixed dim sliced up to the symbolic length), the pooler's ``hidden_states[:, 0]`` and the GPT's last-token
``logits[:, -1, :]`` (ints on a symbolic dim) were TraceErrors; they now trace as takes (``frontend/symbolic_dims.py``, tested in
``tests/frontend/test_symbolic_prefix_slice_vs_torch.py``). The loop, data and masking idioms agreed as first
written. kiln's random streams (``Generator``, ``randperm``, ``bernoulli``) are NumPy's, not torch's: the same seed gives
other draws, so lockstep runs feed torch kiln's order.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e import hf_training_loop_program as program
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep, snapshot, split_key_bias
from oracles import require_torch

BATCH = 4


@pytest.fixture(scope="module")
def corpus():
    return program.corpus_sentences()


def kiln_batches(corpus, seed=0):
    """One epoch of kiln's DataLoader as NumPy dicts (train), and the eval batches in order."""
    ids, labels, _ = corpus
    train = program.loader(kiln, program.text_dataset(kiln, ids[:32], labels[:32]), BATCH, seed)
    evaluation = kiln.utils.data.DataLoader(program.text_dataset(kiln, ids[32:], labels[32:]), batch_size=8,
                                            collate_fn=lambda b: program.pad_collate(kiln, b))
    as_numpy = lambda batches: [{k: array(v) for k, v in batch.items()} for batch in batches]  # noqa: E731
    return as_numpy(train), as_numpy(evaluation)


def as_lib(lib, batches, transform=lambda batch: batch):
    return [transform({key: lib.tensor(value) for key, value in batch.items()}) for batch in batches]


def test_dataloader_batches_as_torchs_for_kilns_order(corpus):
    torch = require_torch()
    ids, labels, _ = corpus
    dataset = program.text_dataset(kiln, ids[:30], labels[:30])
    ours = list(program.loader(kiln, dataset, BATCH, seed=3))
    generator = kiln.Generator()
    generator.manual_seed(3)
    order = list(kiln.utils.data.RandomSampler(dataset, generator=generator))
    assert sorted(order) == list(range(30)) and len(ours) == 30 // BATCH  # drop_last drops the 2 left over
    theirs = list(torch.utils.data.DataLoader(program.text_dataset(torch, ids[:30], labels[:30]), batch_size=BATCH,
                                              sampler=order, drop_last=True,
                                              collate_fn=lambda b: program.pad_collate(torch, b)))
    for mine, other in zip(ours, theirs):
        assert mine["input_ids"].dtype == kiln.int64 and mine["attention_mask"].dtype == kiln.int64
        assert_same_records({k: array(v) for k, v in mine.items()}, {k: array(v) for k, v in other.items()})
    again = list(program.loader(kiln, dataset, BATCH, seed=3))
    assert all(np.array_equal(array(a["input_ids"]), array(b["input_ids"])) for a, b in zip(ours, again))


def test_bucket_batch_sampler_as_torchs_for_kilns_permutation(corpus):
    torch = require_torch()
    ids, labels, _ = corpus
    lengths = [len(x) for x in ids[:20]]
    generator = kiln.Generator().manual_seed(5)
    sampler = program.bucket_batch_sampler(kiln, lengths, BATCH, generator)
    first, second = list(sampler), list(sampler)
    assert first != second and sorted(sum(first, [])) == list(range(20))  # the generator moves on per epoch
    assert all(lengths[b[0]] == max(lengths[i] for i in b) for b in first)
    ours = list(kiln.utils.data.DataLoader(program.text_dataset(kiln, ids[:20], labels[:20]), batch_sampler=first,
                                           collate_fn=lambda b: program.pad_collate(kiln, b)))
    theirs = list(torch.utils.data.DataLoader(program.text_dataset(torch, ids[:20], labels[:20]), batch_sampler=first,
                                              collate_fn=lambda b: program.pad_collate(torch, b)))
    assert len(ours) == len(theirs) == 5
    for mine, other in zip(ours, theirs):
        assert_same_records({k: array(v) for k, v in mine.items()}, {k: array(v) for k, v in other.items()})


def test_mlm_masking_computes_what_the_collator_does(corpus):
    ids, _, vocab_size = corpus
    inputs = kiln.nn.utils.rnn.pad_sequence([kiln.tensor(x * 20) for x in ids[:16]], batch_first=True)
    original = array(inputs)
    masked, labels = program.mask_tokens(kiln, inputs.clone(), vocab_size, kiln.Generator().manual_seed(1))
    masked, labels = array(masked), array(labels)
    chosen = labels != -100
    assert np.array_equal(labels[chosen], original[chosen]) and not chosen[original <= program.MASK].any()
    assert np.array_equal(masked[~chosen], original[~chosen])
    assert 0.11 < chosen.sum() / (original > program.MASK).sum() < 0.19
    assert 0.7 < (masked[chosen] == program.MASK).mean() < 0.9
    again = program.mask_tokens(kiln, inputs.clone(), vocab_size, kiln.Generator().manual_seed(1))
    assert np.array_equal(array(again[0]), masked)


def fine_tuning(batches, tmp_path, schedule, transform=lambda batch: batch, **options):
    train_batches, eval_batches = batches

    def train(lib, nn, F, model):
        directory = tmp_path / lib.__name__
        directory.mkdir()
        record = program.fine_tune(lib, model, as_lib(lib, train_batches, transform),
                                   as_lib(lib, eval_batches, transform), str(directory), schedule=schedule, **options)
        return {**record, "state": snapshot(model)}

    return train


def bert(corpus):
    return lambda lib, nn, F: program.bert_classifier(lib, nn, F, corpus[2])


def gpt(corpus):
    return lambda lib, nn, F: program.gpt_lm(lib, nn, F, corpus[2])


KEY_BIAS = {"key bias": dict(rtol=1e-10, atol=1e-10)}  # rounding noise through AdamW: see split_key_bias
BERT_KEY_BIAS = {"attention.key.bias": dict(rtol=1e-10, atol=1e-10)}  # the same for the hand-written attention's
# In float32 that noise moves the key bias by up to lr a step, differently in each library (softmax cancels it).
BERT_KEY_BIAS_FLOAT32 = {"attention.key.bias": dict(rtol=0, atol=0.1)}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_bert_fine_tuning_loop_as_torch(corpus, tmp_path, schedule, float64_default):
    ours, theirs = run_in_lockstep(bert(corpus), fine_tuning(kiln_batches(corpus), tmp_path, schedule))
    assert len(ours["lrs"]) == 12 and ours["lrs"][:2] == pytest.approx([5e-3, 1e-2])  # warmup of 2 steps
    assert_same_records(ours, theirs, looser=BERT_KEY_BIAS)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-model"])
def test_gpt_lm_loop_as_torch(corpus, tmp_path, compiled, float64_default):
    """The LM trained by the loop; ``compiled``: kiln's model wrapped in ``kiln.compile`` as accelerate wraps it in
    ``torch.compile`` (the forward compiled, ``loss.backward()``, clipping and the step outside)."""
    train = fine_tuning(kiln_batches(corpus), tmp_path, "cosine", program.lm_labels, epochs=2)
    wrapped = lambda lib, nn, F, model: train(lib, nn, F, kiln.compile(model, fullgraph=True)  # noqa: E731
                                              if lib is kiln and compiled else model)
    ours, theirs = run_in_lockstep(gpt(corpus), wrapped)
    assert ours["eval"][-1][0] < ours["eval"][0][0] + 0.5
    assert_same_records(split_key_bias(ours), split_key_bias(theirs), looser=KEY_BIAS)


def accumulating_steps(batches, accumulation_steps=2, epochs=2):
    """The loop's two kinds of calls, each one ``kiln.compile(fullgraph=True)`` graph in kiln (torch's eager loop in
    torch): the micro-step (forward, ``loss / k``, backward) and the update step (the last micro-step, clipping,
    AdamW, ``zero_grad(set_to_none=True)``); the ``LambdaLR`` warmup steps between calls, outside the graph."""

    def train(lib, nn, F, model):
        optimizer = program.grouped_adamw(lib, model)
        scheduler = program.get_linear_schedule_with_warmup(lib, optimizer, 2, epochs * len(batches) // 2)

        def micro(batch):
            loss = model(**batch)[0] / accumulation_steps
            loss.backward()
            return loss.detach()

        def update(batch):
            loss = micro(batch)
            norm = lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss, norm

        if lib is kiln:
            micro, update = kiln.compile(micro, fullgraph=True), kiln.compile(update, fullgraph=True)
        model.train()
        losses, norms = [], []
        for _ in range(epochs):
            for step, batch in enumerate(as_lib(lib, batches, program.lm_labels)):
                if (step + 1) % accumulation_steps:
                    losses.append(micro(batch).item())
                    continue
                loss, norm = update(batch)
                losses.append(loss.item())
                norms.append(norm.item())
                scheduler.step()
        return {"losses": losses, "norms": norms, "lrs": scheduler.get_last_lr(), "state": snapshot(model)}

    return train


def test_gpt_accumulation_steps_compiled_as_torchs_eager_loop(corpus, float64_default):
    ours, theirs = run_in_lockstep(gpt(corpus), accumulating_steps(kiln_batches(corpus)[0]))
    assert_same_records(split_key_bias(ours), split_key_bias(theirs), looser=KEY_BIAS)


def test_bert_early_stopping_restores_the_best_checkpoint(corpus, tmp_path, float64_default):
    """Five epochs of cosine schedule with patience 1 at a high learning rate: the loop stops once the eval loss
    rises, and the state loaded back from ``pytorch_model.bin`` is the best epoch's (same in both libraries)."""
    ours, theirs = run_in_lockstep(bert(corpus), fine_tuning(kiln_batches(corpus), tmp_path, "cosine", epochs=5,
                                                             patience=1, accumulation_steps=1))
    assert_same_records(ours, theirs, looser=BERT_KEY_BIAS)
    evals = [loss for loss, _ in ours["eval"]]
    assert len(evals) < 5  # stopped early
    assert ours["best_eval"][0] == min(evals) and ours["training_state_epoch"] == evals.index(min(evals))


def test_bert_fine_tuning_loop_in_float32_as_torch(corpus, tmp_path):
    """float32 (how the scripts train): the same loop, agreeing at float32's level."""
    ours, theirs = run_in_lockstep(bert(corpus), fine_tuning(kiln_batches(corpus), tmp_path, "linear", epochs=2))
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5, looser=BERT_KEY_BIAS_FLOAT32)


def test_fine_tuned_bert_exports_to_onnx_with_a_dynamic_sequence(corpus, tmp_path):
    """The fine-tuned classifier exported as the scripts export it (``input_ids``, ``attention_mask``, dynamic batch
    and sequence axes) runs in onnxruntime as kiln's and torch's eager forward, on a longer batch than traced."""
    import onnxruntime

    torch = require_torch()
    train_batches, eval_batches = kiln_batches(corpus)
    kiln.manual_seed(0)
    model = program.bert_classifier(kiln, kiln.nn, kiln.nn.functional, corpus[2])
    program.fine_tune(kiln, model, as_lib(kiln, train_batches), as_lib(kiln, eval_batches), str(tmp_path), epochs=1)
    model.eval()
    first = as_lib(kiln, train_batches[:1])[0]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    path = str(tmp_path / "model.onnx")
    kiln.onnx.export(model, (first["input_ids"], first["attention_mask"]), path,
                     input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_axes=axes)
    twin = program.bert_classifier(torch, torch.nn, torch.nn.functional, corpus[2]).eval()
    twin.load_state_dict({k: torch.tensor(v) for k, v in snapshot(model).items()})
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    batch = eval_batches[0]
    outputs = session.run(None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    with torch.inference_mode():
        expected = array(twin(torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"]))[1])
    ours = array(model(kiln.tensor(batch["input_ids"]), kiln.tensor(batch["attention_mask"]))[1])
    assert batch["input_ids"].shape[1] != train_batches[0]["input_ids"].shape[1]
    np.testing.assert_allclose(outputs[-1], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_resume_from_checkpoint_continues_as_the_uninterrupted_run_and_torch(corpus, tmp_path, float64_default):
    """Trainer's resume: an epoch, model/optimizer/scheduler saved and loaded into fresh objects, an epoch more; the
    losses, learning rates and final state equal the uninterrupted two epochs' and torch's resumed run."""
    train_batches, _ = kiln_batches(corpus)
    build = bert(corpus)

    def resumed(lib, nn, F, model):
        directory = tmp_path / lib.__name__
        directory.mkdir()
        initial = snapshot(model)

        def fresh():
            twin = build(lib, nn, F)
            twin.load_state_dict({key: lib.tensor(value) for key, value in initial.items()})
            return twin

        record, trained = program.interrupted_and_resumed(lib, fresh, as_lib(lib, train_batches), str(directory))
        return {**record, "state": snapshot(trained)}

    ours, theirs = run_in_lockstep(build, resumed)
    assert_same_records(ours, theirs, looser=BERT_KEY_BIAS)
    kiln.manual_seed(0)
    straight = bert(corpus)(kiln, kiln.nn, kiln.nn.functional)
    num_update_steps = 2 * len(train_batches) // 2
    record = {"losses": [], "lrs": [], "grad_norms": []}
    optimizer, scheduler = program.make_optimizer_and_scheduler(kiln, straight, num_update_steps)
    for _ in range(2):
        program.train_epoch(kiln, straight, optimizer, scheduler, as_lib(kiln, train_batches), 2, record)
    assert_same_records({**record, "state": snapshot(straight)}, ours, rtol=0, atol=0)


def test_masked_lm_from_a_masking_collate_fn_as_torch(corpus, tmp_path, float64_default):
    """run_mlm_no_trainer: ``DataCollatorForLanguageModeling`` as the DataLoader's ``collate_fn`` (a seeded
    generator); kiln's masked batches (torch's draws differ) train the BERT's MLM head in both libraries alike."""
    ids, labels, vocab_size = corpus
    generator = kiln.Generator().manual_seed(7)
    make = lambda part: kiln.utils.data.DataLoader(  # noqa: E731
        program.text_dataset(kiln, ids[part], labels[part]), batch_size=BATCH, shuffle=False,
        collate_fn=lambda b: program.mlm_collate(kiln, vocab_size, generator, b))
    batches = [[{k: array(v) for k, v in batch.items()} for batch in make(part)]
               for part in (slice(0, 24), slice(32, 40))]
    chosen = np.concatenate([(batch["labels"] != -100).ravel() for batch in batches[0]])
    assert 0 < chosen.mean() < 0.3
    build = lambda lib, nn, F: program.bert_classifier(lib, nn, F, vocab_size, masked_lm=True)  # noqa: E731
    ours, theirs = run_in_lockstep(build, fine_tuning(batches, tmp_path, "linear", epochs=2))
    assert_same_records(ours, theirs, looser=BERT_KEY_BIAS)


def test_gpt_last_token_logits_export_with_a_dynamic_sequence(corpus, tmp_path):
    """Generation's ``logits[:, -1, :]`` of the LM (causal ``triu`` mask and ``arange`` positions of the traced
    length) exported with dynamic batch and sequence axes: onnxruntime as torch's eager forward on other lengths."""
    import onnxruntime

    torch = require_torch()
    kiln.manual_seed(0)
    ours = program.gpt_lm(kiln, kiln.nn, kiln.nn.functional, corpus[2]).eval()
    twin = program.gpt_lm(torch, torch.nn, torch.nn.functional, corpus[2]).eval()
    twin.load_state_dict({k: torch.tensor(v) for k, v in snapshot(ours).items()})
    last = lambda model: lambda input_ids, attention_mask: model(input_ids, attention_mask)[1][:, -1, :]  # noqa: E731
    ids = np.random.default_rng(0).integers(5, corpus[2], (2, 6))
    path = str(tmp_path / "gpt.onnx")
    axes = {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask")}
    kiln.onnx.export(last(ours), (kiln.tensor(ids), kiln.tensor(np.ones_like(ids))), path,
                     input_names=["input_ids", "attention_mask"], dynamic_axes=axes)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for length in (3, 9):
        ids = np.random.default_rng(length).integers(5, corpus[2], (3, length))
        (result,) = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        with torch.inference_mode():
            expected = last(twin)(torch.tensor(ids), torch.ones(3, length, dtype=torch.long)).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)
