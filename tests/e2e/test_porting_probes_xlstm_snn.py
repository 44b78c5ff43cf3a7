"""Porting probe: xLSTM as NX-AI's ``xlstm`` package writes its pure-PyTorch parts, and spiking networks as snnTorch
writes them (``e2e/xlstm_snn_program.py``, written once, ``torch`` being torch or kiln), trained a few steps in both
libraries from kiln's initial weights and compared in float64 to 1e-10 (first outputs, first gradients, losses, the
state after the steps); float32 at float32's level.

- mLSTM: ``parallel_stabilized_simple`` (``F.logsigmoid`` forget gates, ``torch.cat`` of zeros and ``torch.cumsum``,
  ``.repeat(1, 1, 1, S + 1)`` minus its transpose, the ``torch.tril(torch.ones((S, S), dtype=torch.bool))`` mask (or
  the cell's non-persistent ``causal_mask`` buffer), ``torch.where(ltr, ..., -float("inf"))``, ``max_log_D, _ =
  torch.max(..., dim=-1, keepdim=True)``, ``torch.maximum(C.sum(dim=-1, keepdim=True).abs(), torch.exp(-max_log_D))``)
  and ``recurrent_step_stabilized_simple`` (``q.squeeze_(2).unsqueeze(-1)``, the stabilizer ``m`` by ``torch.max``),
  the two forms agreeing with ``eps=0``, values and input gradients; ``mLSTMCell`` (``torch.cat([q, k, v])`` gate
  input, ``bias_linspace_init_`` by ``torch.linspace`` and ``param.copy_`` under ``no_grad``), ``MultiHeadLayerNorm``
  (``F.group_norm`` over heads with the residual ``1.0 + self.weight`` of the bias-free ``LayerNorm``),
  ``LinearHeadwiseExpand`` (``torch.einsum("...hd,hod->...ho")``), ``CausalConv1d`` (a depthwise ``nn.Conv1d`` padded
  by ``kernel_size - 1`` and cut) and its ``step`` (``conv_state.copy_(torch.roll(...))``, ``conv_state[:, -1:, :] =
  x``, ``y += conv1d_bias``), ``mLSTMLayer`` (``torch.split(x_inner, split_size_or_sections=..., dim=-1)``, SiLU
  gate, ``learnable_skip``), two ``xLSTMBlock``s in an ``xLSTMLMModel`` trained with experiments/main.py's loop: AdamW
  over ``get_weight_decay_optim_groups()``, ``cross_entropy(..., ignore_index=-1)``, a ``LinearWarmupCosineAnnealing``
  ``LRScheduler`` subclass; then the model's recurrent ``step`` token by token (a nested ``state`` dict) against the
  parallel forward.
- sLSTM: ``slstm_forward`` (``torch.zeros`` state and gate stores written by ``states_all[:, i + 1] = states``, ``g[i] =
  gates``, the per-head recurrent matmul chain over ``x.unbind(dim=0)``) and ``slstm_forward_pointwise`` (exponential
  input gate, ``torch.unbind`` of the gate pre-activations, ``if torch.all(n == 0.0)``), in an ``sLSTMLayer`` (causal
  conv, four headwise gates, group norm) with ``return_last_state=True``, trained with Adam.
- snnTorch: ``SpikingNeuron``/``LIF``/``Leaky`` as written (``torch.as_tensor`` threshold/beta buffers or a learnt
  ``nn.Parameter`` beta, ``self.beta.clamp(0, 1)``, the ``reset_mechanism_val`` buffer, ``mem_reset``'s
  ``.clone().detach()``, ``if not mem == None``, ``self.mem = torch.zeros_like(input_)`` over a ``zeros(0)`` buffer,
  ``init_leaky()``), the ``ATan`` and ``FastSigmoid`` surrogates (``torch.autograd.Function``, ``(input_ > 0).float()``,
  ``ctx.save_for_backward``, ``ctx.alpha``, ``grad_output.clone()``, ``(...).pow_(2)``); tutorial 5's ``Net`` (the
  time loop, ``torch.stack(spk2_rec)``, the loss summed in a ``torch.zeros((1), dtype=torch.float)``) with Adam, its
  test pass under ``no_grad`` with ``net.eval()`` and ``output.sum(dim=0).max(1)`` accuracy; tutorial 6's
  ``nn.Sequential`` CSNN (``init_hidden=True``, ``output=True``, ``utils.reset``), ``SF.ce_rate_loss``,
  ``SF.ce_count_loss``, ``SF.accuracy_rate``. snnTorch's ``.float()`` spikes make a float64 network a dtype error in
  both libraries (tested); the float64 runs return spikes in the input's dtype, their losses still summed in float32.

Compiled: the LM's training step, tutorial 5's step (time loop unrolled, the ATan Function at every neuron and step,
the ``mem`` buffers reassigned, a learnt beta) and tutorial 6's step are each one ``kiln.compile(step,
fullgraph=True)`` graph, as torch.compile(fullgraph=True) could trace them; the sLSTM step branches on the state (``if
torch.all(n == 0.0)``), which torch.compile(fullgraph=True) refuses too, so ``kiln.compile(step)`` runs it eagerly with
one warning naming that line.

What broke (each fixed, with a regression test):
- ``torch.split(x, split_size_or_sections=..., dim=-1)`` was a TypeError: ``kiln.split`` forwarded to the method,
  whose parameter is ``split_size`` (``frontend/torch_functions.py``; tests/frontend/test_torch_keywords_vs_torch.py).
- A buffer assigned a tensor that requires grad (``self.mem = self.state_function(input_)``) kept only its values:
  backpropagation through time stopped at each step's read of ``self.mem`` (``frontend/module.py``'s
  ``_assign_buffer``; tests/frontend/test_buffer_assignment_vs_torch.py).
- Traced, reading a reassigned buffer gave its latest value: every ``mem`` appended to ``mem_rec`` was the last one
  (``TraceContext.rebind_buffer``); and a buffer assigned a tensor of another shape (``zeros(0)`` then ``(B, H)``)
  failed in the write-back (``runtime/compiled_write_back.py``'s ``write_buffer``, also used by
  ``compiled_training.py``).
- ``f32.add_(f64)`` (``loss += nll`` into snnTorch's float32 zeros) rounded the float64 operand before adding, where
  torch adds in float64 and rounds once (``frontend/tensor_inplace.py``'s ``_float_like``;
  tests/frontend/test_inplace_vs_torch.py).
- ``kiln.compile``'s symbolic batch dim compared unequal to every number: xLSTM's generation ``step`` asserted on
  its second call (``conv1d_step``'s ``assert x.shape[0] == conv_state.shape[0]``), and ``if x.shape[0] == 2`` took
  the wrong branch silently; a comparison of it with a number in the user's code now retraces with static shapes, as
  torch.compile specializes (``frontend/symbolic_dims.py``; tests/runtime/test_batch_dim_compared_with_numbers.py).

Adaptations: random tokens and inputs, small sizes, no autocast, a few steps.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.xlstm_snn_program import snntorch, xlstm
from oracles import libraries

VOCAB, EMBED, HEADS, CONTEXT, BATCH, STEPS = 11, 8, 2, 6, 3, 4
TOKENS = (np.random.default_rng(0).integers(0, VOCAB, (STEPS, BATCH, 1)) + 3 * np.arange(CONTEXT + 1)) % VOCAB
TOKENS[:, 0, -1] = -1  # a label the loss ignores (ignore_index=-1)


def xlstm_lm(torch, nn, F):
    X = xlstm(torch, nn, F)
    return X.xLSTMLMModel(X.xLSTMLMModelConfig(vocab_size=VOCAB, embedding_dim=EMBED, num_blocks=2, num_heads=HEADS,
                                                context_length=CONTEXT))


def lm_optimizer(torch, model):
    """experiments/main.py's AdamW over the weight-decay groups."""
    optim_groups = model.get_weight_decay_optim_groups()
    return torch.optim.AdamW(
        (
            {"weight_decay": 0.1, "params": optim_groups[0]},
            {"weight_decay": 0.0, "params": optim_groups[1]},
        ),
        lr=1e-2,
    )


def lm_loss(torch, nn, F, model, inputs, labels):
    outputs = model(inputs)
    return nn.functional.cross_entropy(outputs.view(-1, VOCAB), labels.view(-1), ignore_index=-1)


def train_lm(torch, nn, F, model, compiled=False):
    """experiments/main.py's loop (no autocast): zero_grad, forward, cross entropy with ``ignore_index=-1``, backward,
    AdamW, the warm-up + cosine schedule stepped after each step; then the model's ``step`` over the first batch's
    tokens one at a time, the parallel and the recurrent forms' logits."""
    X = xlstm(torch, nn, F)
    optimizer = lm_optimizer(torch, model)
    lr_scheduler = X.LinearWarmupCosineAnnealing(optimizer, warmup_steps=2, decay_until_step=STEPS, max_lr=1e-2,
                                                 min_lr=1e-3)
    record = {"losses": [], "lrs": []}

    def step(inputs, labels):
        optimizer.zero_grad()
        loss = lm_loss(torch, nn, F, model, inputs, labels)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
    for tokens in TOKENS:
        inputs, labels = torch.tensor(tokens[:, :-1]), torch.tensor(tokens[:, 1:])
        if not compiled and not record["losses"]:
            record["logits"] = array(model(inputs))
            lm_loss(torch, nn, F, model, inputs, labels).backward()
            record["grads"] = gradients(model)
        loss = run(inputs, labels)
        lr_scheduler.step()
        record["losses"].append(loss.item())
        record["lrs"].append(optimizer.param_groups[0]["lr"])
    record["state"] = snapshot(model)
    inputs = torch.tensor(TOKENS[0, :, :-1])
    with torch.no_grad():
        parallel = model(inputs)
        state, recurrent = None, []
        for t in range(CONTEXT):
            logits, state = model.step(inputs[:, t:t + 1], state=state)
            recurrent.append(logits)
        record["parallel"], record["recurrent"] = array(parallel), array(torch.cat(recurrent, dim=1))
    return record


def test_xlstm_lm_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(xlstm_lm, train_lm)
    assert_same_records(ours, theirs)
    # the two forms stabilise differently (a row's max against a running max), so eps=1e-6 weighs differently
    np.testing.assert_allclose(ours["recurrent"], ours["parallel"], rtol=1e-5, atol=1e-7)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_xlstm_lm_float32_trains_as_torch():
    ours, theirs = run_in_lockstep(xlstm_lm, train_lm)
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def test_xlstm_lm_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(xlstm_lm, lambda *args: train_lm(*args, compiled=True))
    assert_same_records(ours, theirs)


def mlstm_backends(torch, nn, F):
    """No model: the backend functions run on the same fed inputs in both libraries."""
    return nn.Module()


GATE_INPUTS = {name: np.random.default_rng(seed).normal(size=(2, HEADS, CONTEXT, shape)) * scale
               for seed, (name, shape, scale) in enumerate([("q", 4, 1.0), ("k", 4, 1.0), ("v", 4, 1.0),
                                                            ("i", 1, 2.0), ("f", 1, 2.0)])}


def run_mlstm_forms(torch, nn, F, _):
    """``parallel_stabilized_simple`` over the sequence and ``recurrent_step_stabilized_simple`` step by step (its
    ``squeeze_`` of the inputs), each differentiated with respect to the inputs; with the default ``eps=1e-6`` and with
    ``eps=0``."""
    X = xlstm(torch, nn, F)
    record = {}
    for eps in (1e-6, 0.0):
        for form in ("parallel", "recurrent"):
            leaves = {name: torch.tensor(value, requires_grad=True) for name, value in GATE_INPUTS.items()}
            q, k, v, i, f = (2.0 * leaf for leaf in leaves.values())  # computed, as the layer's (squeeze_ of a
            # leaf's view is refused by both libraries: test_recurrent_step_on_leaf_views_refused_as_torch)
            if form == "parallel":
                h = X.parallel_stabilized_simple(q, k, v, i, f, eps=eps)
            else:
                B, NH, S, DH = q.shape
                c_state = torch.zeros(size=(B, NH, DH, DH), dtype=q.dtype)
                n_state = torch.zeros(size=(B, NH, DH, 1), dtype=q.dtype)
                m_state = torch.zeros(size=(B, NH, 1, 1), dtype=q.dtype)
                hs = []
                for t in range(S):
                    # each step's q, k, v its own tensors, as the layer's step makes them: squeeze_ on slices of one
                    # tensor counts a write on its storage, and torch's backward refuses the matmul's saved v
                    h_t, (c_state, n_state, m_state) = X.recurrent_step_stabilized_simple(
                        c_state, n_state, m_state, q[:, :, t:t + 1].clone(), k[:, :, t:t + 1].clone(),
                        v[:, :, t:t + 1].clone(), i[:, :, t:t + 1], f[:, :, t:t + 1], eps=eps)
                    hs.append(h_t)
                h = torch.cat(hs, dim=2)
            (h * torch.tensor(GATE_INPUTS["v"])).sum().backward()
            record[f"{form}, eps={eps}"] = {"h": array(h),
                                            "grads": {name: array(leaf.grad) for name, leaf in leaves.items()}}
    return record


def test_mlstm_parallel_and_recurrent_forms_as_torch(float64_default):
    """Both forms agree between the libraries; with ``eps=0`` they agree with each other (with ``eps``, not to
    1e-5: the forms stabilise differently, a row's max against a running max, so ``eps`` weighs differently)."""
    ours, theirs = run_in_lockstep(mlstm_backends, run_mlstm_forms)
    # the first step's h is scale-invariant in q: its gradient is 0, left as rounding noise of ~1e-12 by the
    # recurrent form's cancellations (terms of ~1e4), in each library differently
    assert_same_records(ours, theirs, looser={"recurrent": dict(rtol=1e-10, atol=1e-10)})
    assert_same_records(ours["recurrent, eps=0.0"], ours["parallel, eps=0.0"], atol=1e-10)


def test_recurrent_step_on_leaf_views_refused_as_torch():
    """``q.squeeze_(2)`` on a slice of a leaf that requires grad: torch's RuntimeError in both libraries."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        q = torch.zeros(2, HEADS, CONTEXT, 4, requires_grad=True)
        with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad is being used in an "
                                               "in-place operation"):
            q[:, :, :1].squeeze_(2)


SEQUENCE = np.random.default_rng(7).normal(size=(STEPS, BATCH, CONTEXT, EMBED))
TARGETS = np.random.default_rng(8).normal(size=(STEPS, BATCH, CONTEXT, EMBED))


def slstm_layer(torch, nn, F):
    X = xlstm(torch, nn, F)
    return X.sLSTMLayer(X.sLSTMLayerConfig(embedding_dim=EMBED, num_heads=HEADS, conv1d_kernel_size=4))


def train_slstm(torch, nn, F, layer, compiled=False):
    """The sLSTM layer (causal conv, headwise gates, the vanilla recurrence with its stabilizer state ``m``) regressed
    on targets with Adam; the last states returned by ``return_last_state=True``."""
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    record = {"losses": []}

    def step(x, target):
        optimizer.zero_grad()
        out, state = layer(x, return_last_state=True)
        loss = F.mse_loss(out, target)
        loss.backward()
        optimizer.step()
        return loss, state["slstm_state"], state["conv_state"]

    run = kiln.compile(step) if compiled and torch is kiln else step
    for x, target in zip(SEQUENCE, TARGETS):
        x, target = torch.tensor(x), torch.tensor(target)
        if not record["losses"]:
            out, _ = layer(x, return_last_state=True)
            F.mse_loss(out, target).backward()
            record.update(output=array(out), grads=gradients(layer))
        loss, slstm_state, conv_state = run(x, target)
        record["losses"].append(loss.item())
    record.update(state=snapshot(layer), slstm_state=array(slstm_state), conv_state=array(conv_state))
    return record


INPUT_GATE_BIAS_NOISE = {"slstm_cell._bias_": dict(rtol=1e-10, atol=1e-10)}
"""Adding a constant to every input-gate pre-activation shifts the stabilizer ``m`` alike and leaves ``y`` as it is:
the input gates' bias gets a gradient of 0, rounding noise of ~1e-18 in each library differently, which Adam turns into
steps of ~1e-11 (the bias's other gates compared at 1e-10 too, relative)."""


def test_slstm_layer_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(slstm_layer, train_slstm)
    assert_same_records(ours, theirs, looser=INPUT_GATE_BIAS_NOISE)


def test_slstm_layer_compiled_step_falls_back_as_torch(float64_default):
    """``if torch.all(n == 0.0)`` branches on the state: no single graph holds the step (torch.compile(fullgraph=True)
    refuses it too); ``kiln.compile(step)`` runs it eagerly with one warning naming that line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, theirs = run_in_lockstep(slstm_layer, lambda *args: train_slstm(*args, compiled=True))
    assert_same_records(ours, theirs, looser=INPUT_GATE_BIAS_NOISE)
    assert [str(w.message) for w in caught if "runs eagerly" in str(w.message) and "if torch.all(n == 0.0)" in str(w.message)]


NUM_INPUTS, NUM_HIDDEN, NUM_OUTPUTS, NUM_STEPS, SNN_BATCH, SNN_BATCHES = 20, 12, 4, 8, 6, 3
SNN_DATA = np.random.default_rng(3).uniform(0, 1, (SNN_BATCHES, SNN_BATCH, 1, 4, 5))
SNN_TARGETS = np.random.default_rng(4).integers(0, NUM_OUTPUTS, (SNN_BATCHES, SNN_BATCH))


def tutorial5_net(torch, nn, F, float_spikes=True, learn_beta=False):
    """snnTorch tutorial 5's ``Net``: ``fc1 -> Leaky -> fc2 -> Leaky`` over ``num_steps`` with ``init_leaky`` states."""
    snn = snntorch(torch, nn, F, float_spikes=float_spikes)
    beta = 0.95
    num_steps = NUM_STEPS

    class Net(nn.Module):
        def __init__(self):
            super().__init__()

            # Initialize layers
            self.fc1 = nn.Linear(NUM_INPUTS, NUM_HIDDEN)
            self.lif1 = snn.Leaky(beta=beta, learn_beta=learn_beta)
            self.fc2 = nn.Linear(NUM_HIDDEN, NUM_OUTPUTS)
            self.lif2 = snn.Leaky(beta=beta, learn_beta=learn_beta)

        def forward(self, x):

            # Initialize hidden states at t=0
            mem1 = self.lif1.init_leaky()
            mem2 = self.lif2.init_leaky()

            # Record the final layer
            spk2_rec = []
            mem2_rec = []

            for step in range(num_steps):
                cur1 = self.fc1(x)
                spk1, mem1 = self.lif1(cur1, mem1)
                cur2 = self.fc2(spk1)
                spk2, mem2 = self.lif2(cur2, mem2)
                spk2_rec.append(spk2)
                mem2_rec.append(mem2)

            return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)

    return Net()


def tutorial5_loss(torch, nn, F, net, data, targets):
    """The tutorial's loss: ``nn.CrossEntropyLoss`` of the output membrane at each step, summed into
    ``torch.zeros((1), dtype=dtype)`` (``dtype = torch.float``)."""
    loss = nn.CrossEntropyLoss()
    spk_rec, mem_rec = net(data.view(SNN_BATCH, -1))
    loss_val = torch.zeros((1), dtype=torch.float)
    for step in range(NUM_STEPS):
        loss_val += loss(mem_rec[step], targets)
    return loss_val, spk_rec


def train_tutorial5(torch, nn, F, net, compiled=False):
    """Tutorial 5's minibatch loop (Adam, ``lr=5e-4`` there, 5e-2 here so that spikes change in a few steps), the
    test loss under ``torch.no_grad()`` with ``net.eval()``, the accuracy by ``output.sum(dim=0).max(1)``."""
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-2, betas=(0.9, 0.999))
    record = {"losses": [], "test_losses": [], "spike_counts": []}

    def step(data, targets):
        loss_val, spk_rec = tutorial5_loss(torch, nn, F, net, data, targets)
        optimizer.zero_grad()
        loss_val.backward()
        optimizer.step()
        return loss_val, spk_rec

    run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
    for data, targets in zip(SNN_DATA, SNN_TARGETS):
        data, targets = torch.tensor(data, dtype=torch.get_default_dtype()), torch.tensor(targets)
        if not compiled and not record["losses"]:
            loss_val, spk_rec = tutorial5_loss(torch, nn, F, net, data, targets)
            loss_val.backward()
            record.update(first_loss=loss_val.item(), first_spikes=array(spk_rec), grads=gradients(net))
        net.train()
        loss_val, spk_rec = run(data, targets)
        record["losses"].append(loss_val.item())
        record["spike_counts"].append(array(spk_rec.sum(dim=0)))
        with torch.no_grad():
            net.eval()
            test_loss, test_spk = tutorial5_loss(torch, nn, F, net, data, targets)
            record["test_losses"].append(test_loss.item())
            _, idx = test_spk.sum(dim=0).max(1)
            record.setdefault("accuracies", []).append(np.mean((targets == idx).detach().cpu().numpy()))
    record.update(state=snapshot(net), dtypes=[str(t.dtype).split(".")[-1] for t in (spk_rec, loss_val, net.lif1.mem)])
    return record


def test_snn_tutorial5_float32_trains_as_torch():
    """As written: ``.float()`` spikes in a float32 network; values at float32's level (no spike flips)."""
    ours, theirs = run_in_lockstep(tutorial5_net, train_tutorial5)
    assert ours.pop("dtypes") == theirs.pop("dtypes") == ["float32", "float32", "float32"]
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)
    assert theirs["first_spikes"].sum() > 0


def test_snn_tutorial5_float64_trains_as_torch(float64_default):
    """float64 spikes (``float_spikes=False``): the loss is still accumulated in snnTorch's float32 ``dtype``
    (``loss_val += `` of float64 cross entropies rounds to float32), its gradient a float32 one cast to float64."""
    ours, theirs = run_in_lockstep(lambda *a: tutorial5_net(*a, float_spikes=False),
                                   train_tutorial5)
    assert ours.pop("dtypes") == theirs.pop("dtypes") == ["float64", "float32", "float64"]
    assert_same_records(ours, theirs)


def test_snn_tutorial5_learn_beta_compiled_step_as_torch(float64_default):
    """The whole step (the time loop unrolled, the ATan ``autograd.Function`` at each neuron and step, the ``self.mem``
    buffer rebound, ``beta.clamp(0, 1)`` of a learnt beta) one ``kiln.compile(fullgraph=True)`` graph."""
    build = lambda *a: tutorial5_net(*a, float_spikes=False, learn_beta=True)  # noqa: E731
    ours, theirs = run_in_lockstep(build, lambda *a: train_tutorial5(*a, compiled=True))
    assert ours.pop("dtypes") == theirs.pop("dtypes")
    assert_same_records(ours, theirs)
    assert theirs["state"]["lif1.beta"] != 0.95


def tutorial6_csnn(torch, nn, F, float_spikes=True):
    """snnTorch tutorial 6's convolutional SNN: an ``nn.Sequential`` with ``Leaky(init_hidden=True)`` neurons (the
    membrane kept in each neuron's ``mem`` buffer between calls), the fast-sigmoid surrogate, a learnt ``beta``."""
    snn = snntorch(torch, nn, F, float_spikes=float_spikes)
    spike_grad = snn.fast_sigmoid(slope=25)
    beta = 0.9
    return nn.Sequential(nn.Conv2d(1, 8, 2),
                         nn.MaxPool2d(2),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, learn_beta=True),
                         nn.Conv2d(8, 16, 1),
                         nn.MaxPool2d(1),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
                         nn.Flatten(),
                         nn.Linear(16 * 1 * 2, NUM_OUTPUTS),
                         snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, output=True))


def forward_pass(torch, net, num_steps, data, reset):
    mem_rec = []
    spk_rec = []
    reset(net)  # resets hidden states for all LIF neurons in net

    for step in range(num_steps):
        spk_out, mem_out = net(data)
        spk_rec.append(spk_out)
        mem_rec.append(mem_out)

    return torch.stack(spk_rec), torch.stack(mem_rec)


def train_tutorial6(torch, nn, F, net, compiled=False, float_spikes=True):
    """Tutorial 6's loop: ``SF.ce_rate_loss()`` of the output spikes, Adam ``lr=1e-2``, ``SF.accuracy_rate``; then the
    count loss ``SF.ce_count_loss()`` on the last batch."""
    SF = snn = snntorch(torch, nn, F, float_spikes=float_spikes)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.9, 0.999))
    loss_fn = SF.ce_rate_loss()
    record = {"losses": [], "accuracies": []}

    def step(data, targets):
        spk_rec, mem_rec = forward_pass(torch, net, NUM_STEPS, data, snn.reset)
        loss_val = loss_fn(spk_rec, targets)
        optimizer.zero_grad()
        loss_val.backward()
        optimizer.step()
        return loss_val, spk_rec

    run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
    for data, targets in zip(SNN_DATA, SNN_TARGETS):
        data, targets = torch.tensor(8 * data, dtype=torch.get_default_dtype()), torch.tensor(targets)
        net.train()
        loss_val, spk_rec = run(data, targets)
        record["losses"].append(loss_val.item())
        record["accuracies"].append(SF.accuracy_rate(spk_rec, targets))
        record.setdefault("spikes", []).append(array(spk_rec))
    with torch.no_grad():
        spk_rec, _ = forward_pass(torch, net, NUM_STEPS, data, snn.reset)
        record["count_loss"] = SF.ce_count_loss()(spk_rec, targets).item()
    record["state"] = snapshot(net)
    return record


def test_snn_tutorial6_csnn_float32_trains_as_torch():
    ours, theirs = run_in_lockstep(tutorial6_csnn, train_tutorial6)
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)
    assert theirs["spikes"][-1].sum() > 0


FLOAT32_LOSSES = {"loss": dict(rtol=2.4e-7, atol=0)}
"""snnTorch's losses are summed in its float32 ``dtype``: float64 values a few ulps apart (a trained step's last bits)
may round to neighbouring float32 values; their gradients are float32 constants (``1 / B / num_steps``) either way."""


def test_snn_tutorial6_csnn_float64_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(lambda *a: tutorial6_csnn(*a, float_spikes=False),
                                   lambda *a: train_tutorial6(*a, float_spikes=False))
    assert_same_records(ours, theirs, looser=FLOAT32_LOSSES)


def test_snn_tutorial6_csnn_compiled_step_as_torch(float64_default):
    """The step (``utils.reset``, the unrolled time loop through the ``nn.Sequential``, the neurons' ``self.mem``
    buffers rebound at each step, the fast-sigmoid Function, ``ce_rate_loss``) one ``kiln.compile(fullgraph=True)``
    graph."""
    ours, theirs = run_in_lockstep(lambda *a: tutorial6_csnn(*a, float_spikes=False),
                                   lambda *a: train_tutorial6(*a, compiled=True, float_spikes=False))
    assert_same_records(ours, theirs, looser=FLOAT32_LOSSES)


def test_float_spikes_into_a_float64_layer_refused_as_torch(float64_default):
    """snnTorch's ``.float()`` spikes fed to a float64 ``nn.Linear``: torch's dtype error in both libraries (why the
    float64 runs return spikes in their input's dtype)."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        snn = snntorch(torch, nn, F)
        spk, _ = snn.Leaky(beta=0.9)(torch.ones(2, 3), None)
        assert spk.dtype == torch.float32
        with pytest.raises(RuntimeError, match="dtype"):  # torch: "mat1 and mat2 must have the same dtype, ..."
            nn.Linear(3, 2)(spk)


def test_compiled_shape_comparison_with_the_batch_dim_as_torch(float64_default):
    """xLSTM's generation loop, ``kiln.compile(model.step)`` (its ``state`` dict argument, stored into, runs eagerly
    with a warning, as torch.compile replays the stores), against the eager steps."""
    kiln.manual_seed(0)
    model = xlstm_lm(*libraries("kiln"))
    inputs = kiln.tensor(TOKENS[0, :, :-1])
    records = []
    with kiln.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in (model.step, kiln.compile(model.step)):
            state, logits = None, []
            for t in range(CONTEXT):
                out, state = step(inputs[:, t:t + 1], state=state)
                logits.append(array(out))
            records.append(np.concatenate(logits, axis=1))
    np.testing.assert_allclose(records[1], records[0], rtol=1e-12)
