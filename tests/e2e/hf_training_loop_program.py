"""The program of ``test_porting_probes_hf_training_loop.py``, written once as Hugging Face-style scripts write it
(``transformers``' Trainer, ``run_glue_no_trainer.py``, ``run_mlm_no_trainer.py`` and ``accelerate``'s examples,
without importing those libraries): ``torch`` is ``torch`` or ``kiln``."""

from __future__ import annotations

import math
import os
from collections import Counter
from functools import partial

import numpy as np

from kiln.runtime.data.text import load_pydoc_corpus

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def corpus_sentences(count=48, vocab_size=40):
    """``count`` short whitespace-tokenized lines of Python's bundled docs text as id lists (``[CLS] ... [SEP]``, words
    outside the ``vocab_size`` most common ones as ``[UNK]``), and each one's label (whether it has a digit)."""
    lines = [line.split() for line in load_pydoc_corpus().splitlines() if 3 <= len(line.split()) <= 9][:count]
    common = [word for word, _ in Counter(w for line in lines for w in line).most_common(vocab_size - len(SPECIAL))]
    vocab = {word: index for index, word in enumerate(SPECIAL + common)}
    ids = [[CLS] + [vocab.get(word, UNK) for word in line] + [SEP] for line in lines]
    labels = [int(any(ch.isdigit() or ch == "(" for ch in " ".join(line))) for line in lines]
    return ids, labels, len(vocab)


def text_dataset(torch, ids, labels):
    """A map-style Dataset as a tokenized ``datasets`` corpus behaves: each item a dict of tensors."""

    class TokenizedDataset(torch.utils.data.Dataset):
        def __init__(self, ids, labels):
            self.ids, self.labels = ids, labels

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, index):
            return {"input_ids": torch.tensor(self.ids[index], dtype=torch.long), "labels": self.labels[index]}

    return TokenizedDataset(ids, labels)


def pad_collate(torch, batch):
    """``DataCollatorWithPadding``: pad to the batch's longest, attention mask 1 on real tokens."""
    input_ids = torch.nn.utils.rnn.pad_sequence([item["input_ids"] for item in batch], batch_first=True,
                                                padding_value=PAD)
    attention_mask = (input_ids != PAD).long()
    labels = torch.tensor([item["labels"] for item in batch])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def bucket_batch_sampler(torch, lengths, batch_size, generator):
    """A BucketSampler-style batch sampler: shuffle by ``torch.randperm(generator=...)``, sort each mega-batch of 4
    batches by length (longest first), cut it into batches, yield lists of indices."""

    class BucketBatchSampler(torch.utils.data.Sampler):
        def __init__(self):
            self.lengths, self.batch_size, self.generator = lengths, batch_size, generator

        def __len__(self):
            return math.ceil(len(self.lengths) / self.batch_size)

        def __iter__(self):
            order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
            mega = self.batch_size * 4
            for start in range(0, len(order), mega):
                chunk = sorted(order[start:start + mega], key=lambda i: -self.lengths[i])
                for first in range(0, len(chunk), self.batch_size):
                    yield chunk[first:first + self.batch_size]

    return BucketBatchSampler()


def seed_worker(torch, worker_id):
    """``worker_init_fn`` as the reproducibility docs write it (never called with ``num_workers=0``)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)


def loader(torch, dataset, batch_size, seed, drop_last=True):
    """``DataLoader(train_dataset, shuffle by a seeded RandomSampler, collate_fn=..., drop_last, num_workers=0)``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                       collate_fn=partial(pad_collate, torch), num_workers=0,
                                       worker_init_fn=partial(seed_worker, torch))


def mask_tokens(torch, inputs, vocab_size, generator, mlm_probability=0.15):
    """``DataCollatorForLanguageModeling.torch_mask_tokens``: 15% of the non-special tokens chosen, 80% of those
    ``[MASK]``, 10% a random word, 10% kept; labels -100 elsewhere."""
    labels = inputs.clone()
    probability_matrix = torch.full(labels.shape, mlm_probability)
    special_tokens_mask = inputs <= MASK
    probability_matrix.masked_fill_(special_tokens_mask, value=0.0)
    masked_indices = torch.bernoulli(probability_matrix, generator=generator).bool()
    labels[~masked_indices] = -100
    indices_replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & masked_indices
    inputs[indices_replaced] = MASK
    indices_random = (torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool() & masked_indices
                      & ~indices_replaced)
    random_words = torch.randint(vocab_size, labels.shape, dtype=torch.long, generator=generator)
    inputs[indices_random] = random_words[indices_random]
    return inputs, labels


def mlm_collate(torch, vocab_size, generator, batch):
    """``DataCollatorForLanguageModeling`` as a DataLoader's ``collate_fn``: pad, then mask 15% (80-10-10)."""
    padded = pad_collate(torch, batch)
    input_ids, labels = mask_tokens(torch, padded["input_ids"], vocab_size, generator)
    return {"input_ids": input_ids, "attention_mask": padded["attention_mask"], "labels": labels}


def get_linear_schedule_with_warmup(torch, optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    def lr_lambda(current_step: int):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - current_step) / float(max(1, num_training_steps - num_warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, last_epoch)


def _get_cosine_schedule_with_warmup_lr_lambda(current_step, *, num_warmup_steps, num_training_steps, num_cycles):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def get_cosine_schedule_with_warmup(torch, optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5,
                                    last_epoch=-1):
    lr_lambda = partial(_get_cosine_schedule_with_warmup_lr_lambda, num_warmup_steps=num_warmup_steps,
                        num_training_steps=num_training_steps, num_cycles=num_cycles)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, last_epoch)


def grouped_adamw(torch, model, lr=1e-2, weight_decay=0.01):
    """``run_glue_no_trainer.py``'s two parameter groups: no weight decay on biases and LayerNorm weights."""
    no_decay = ["bias", "LayerNorm.weight"]
    optimizer_grouped_parameters = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
         "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
         "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(optimizer_grouped_parameters, lr=lr)


def bert_classifier(torch, nn, F, vocab_size, hidden=16, heads=2, max_len=16, num_labels=2, masked_lm=False):
    """A one-layer BERT for sequence classification (``masked_lm``: its MLM head over every position, labels -100
    ignored), named as ``modeling_bert`` names it (``LayerNorm``)."""

    class BertSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_attention_heads, self.attention_head_size = heads, hidden // heads
            self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

        def transpose_for_scores(self, x):
            new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
            return x.view(new_x_shape).permute(0, 2, 1, 3)

        def forward(self, hidden_states, extended_attention_mask):
            q, k, v = (self.transpose_for_scores(layer(hidden_states)) for layer in (self.query, self.key, self.value))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
            probs = nn.functional.softmax(scores + extended_attention_mask, dim=-1)
            context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
            return context.view(context.size()[:-2] + (hidden,))

    class BertLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = BertSelfAttention()
            self.output = nn.Linear(hidden, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
            self.intermediate = nn.Linear(hidden, 4 * hidden)
            self.ffn_output = nn.Linear(4 * hidden, hidden)
            self.ffn_LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x, mask):
            x = self.LayerNorm(x + self.output(self.attention(x, mask)))
            return self.ffn_LayerNorm(x + self.ffn_output(F.gelu(self.intermediate(x))))

    class BertForSequenceClassification(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=PAD)
            self.position_embeddings = nn.Embedding(max_len, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
            self.register_buffer("position_ids", torch.arange(max_len).expand((1, -1)), persistent=False)
            self.layer = BertLayer()
            self.pooler = nn.Linear(hidden, hidden)
            self.classifier = nn.Linear(hidden, vocab_size if masked_lm else num_labels)

        def forward(self, input_ids, attention_mask, labels=None):
            seq_length = input_ids.size(1)
            position_ids = self.position_ids[:, :seq_length]
            x = self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(position_ids))
            extended = attention_mask[:, None, None, :].to(dtype=x.dtype)
            extended = (1.0 - extended) * torch.finfo(x.dtype).min
            x = self.layer(x, extended)
            if masked_lm:
                logits = self.classifier(x)
                loss = None if labels is None else F.cross_entropy(logits.view(-1, vocab_size), labels.view(-1))
                return loss, logits
            logits = self.classifier(torch.tanh(self.pooler(x[:, 0])))
            loss = None if labels is None else F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
            return loss, logits

    return BertForSequenceClassification()


def gpt_lm(torch, nn, F, vocab_size, hidden=16, heads=2, block_size=16):
    """A one-block GPT-2-style LM (``nn.MultiheadAttention`` with a causal mask, tied head, shifted labels)."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(approximate="tanh"), nn.Linear(4 * hidden, hidden))

        def forward(self, x, causal, key_padding_mask):
            h = self.ln_1(x)
            x = x + self.attn(h, h, h, attn_mask=causal, key_padding_mask=key_padding_mask, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class GPTLMHeadModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab_size, hidden), nn.Embedding(block_size, hidden)
            self.h, self.ln_f = Block(), nn.LayerNorm(hidden)
            self.lm_head = nn.Linear(hidden, vocab_size, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, input_ids, attention_mask, labels=None):
            t = input_ids.size(1)
            pos = torch.arange(0, t, dtype=torch.long)
            causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
            x = self.h(self.wte(input_ids) + self.wpe(pos), causal, attention_mask == 0)
            logits = self.lm_head(self.ln_f(x))
            if labels is None:
                return None, logits
            shift_logits = logits[..., :-1, :].contiguous()
            shift_labels = labels[..., 1:].contiguous()
            loss = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1),
                                   ignore_index=-100)
            return loss, logits

    return GPTLMHeadModel()


def lm_labels(batch):
    """The causal-LM collator's labels: the inputs with padding as -100."""
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    return {**batch, "labels": labels}


def evaluate(torch, model, eval_batches):
    """The eval loop: ``model.eval()``, ``torch.inference_mode()``, metrics by ``.detach().cpu().item()``."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for batch in eval_batches:
            loss, logits = model(**batch)
            total_loss += loss.detach().cpu().item()
            if logits.dim() == 2:
                correct += (logits.argmax(dim=-1) == batch["labels"]).sum().item()
                count += batch["labels"].numel()
    return {"eval_loss": total_loss / len(eval_batches), "accuracy": correct / max(count, 1)}


def make_optimizer_and_scheduler(torch, model, num_update_steps, schedule="linear"):
    """Grouped AdamW and its warmup schedule, as the scripts build them before the loop (and again on resume)."""
    optimizer = grouped_adamw(torch, model)
    make = get_linear_schedule_with_warmup if schedule == "linear" else get_cosine_schedule_with_warmup
    return optimizer, make(torch, optimizer, num_warmup_steps=2, num_training_steps=num_update_steps)


def train_epoch(torch, model, optimizer, lr_scheduler, train_batches, accumulation_steps, record):
    """One epoch: loss / accumulation_steps, clip and step every k batches (and at the epoch's end),
    ``zero_grad(set_to_none=True)``; losses, norms and learning rates into ``record``."""
    model.train()
    for step, batch in enumerate(train_batches):
        loss = model(**batch)[0]
        loss = loss / accumulation_steps
        loss.backward()
        record["losses"].append(loss.detach().cpu().item())
        if (step + 1) % accumulation_steps == 0 or step == len(train_batches) - 1:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            record["grad_norms"].append(float(norm))
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record["lrs"].append(lr_scheduler.get_last_lr()[0])


def fine_tune(torch, model, train_batches, eval_batches, checkpoint_dir, epochs=3, accumulation_steps=2,
              schedule="linear", patience=2):
    """``run_glue_no_trainer.py``'s loop: grouped AdamW, a warmup schedule, gradient accumulation, eval per epoch,
    best checkpoint saved (``.bin``, optimizer and scheduler in ``.pt``) and early stopping; the best state loaded back
    at the end."""
    num_update_steps = epochs * math.ceil(len(train_batches) / accumulation_steps)
    optimizer, lr_scheduler = make_optimizer_and_scheduler(torch, model, num_update_steps, schedule)
    best, bad_epochs, record = float("inf"), 0, {"losses": [], "lrs": [], "grad_norms": [], "eval": []}
    best_path = os.path.join(checkpoint_dir, "pytorch_model.bin")
    for epoch in range(epochs):
        train_epoch(torch, model, optimizer, lr_scheduler, train_batches, accumulation_steps, record)
        metrics = evaluate(torch, model, eval_batches)
        record["eval"].append([metrics["eval_loss"], metrics["accuracy"]])
        if metrics["eval_loss"] < best:
            best, bad_epochs = metrics["eval_loss"], 0
            torch.save(model.state_dict(), best_path)
            torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                        "epoch": epoch}, os.path.join(checkpoint_dir, "training_state.pt"))
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
    model.load_state_dict(torch.load(best_path))
    record["best_eval"] = list(evaluate(torch, model, eval_batches).values())
    record["training_state_epoch"] = torch.load(os.path.join(checkpoint_dir, "training_state.pt"))["epoch"]
    return record


def interrupted_and_resumed(torch, build, train_batches, checkpoint_dir, epochs=2, accumulation_steps=2):
    """Trainer's ``resume_from_checkpoint``: one epoch, the model, optimizer and scheduler saved
    (``pytorch_model.bin``, ``optimizer.pt``, ``scheduler.pt``), then a fresh model, optimizer and scheduler loaded from
    them train the remaining epochs. Returns the record and the model."""
    num_update_steps = epochs * math.ceil(len(train_batches) / accumulation_steps)
    record = {"losses": [], "lrs": [], "grad_norms": []}
    model = build()
    optimizer, lr_scheduler = make_optimizer_and_scheduler(torch, model, num_update_steps)
    train_epoch(torch, model, optimizer, lr_scheduler, train_batches, accumulation_steps, record)
    files = {name: os.path.join(checkpoint_dir, name) for name in ("pytorch_model.bin", "optimizer.pt", "scheduler.pt")}
    torch.save(model.state_dict(), files["pytorch_model.bin"])
    torch.save(optimizer.state_dict(), files["optimizer.pt"])
    torch.save(lr_scheduler.state_dict(), files["scheduler.pt"])
    model = build()
    model.load_state_dict(torch.load(files["pytorch_model.bin"], map_location="cpu"))
    optimizer, lr_scheduler = make_optimizer_and_scheduler(torch, model, num_update_steps)
    optimizer.load_state_dict(torch.load(files["optimizer.pt"], map_location="cpu"))
    lr_scheduler.load_state_dict(torch.load(files["scheduler.pt"]))
    for _ in range(epochs - 1):
        train_epoch(torch, model, optimizer, lr_scheduler, train_batches, accumulation_steps, record)
    return record, model
