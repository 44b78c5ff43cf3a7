"""Porting probe: memory-augmented and set / metric-learning families, each written once as its reference writes it
(``torch`` is ``torch`` or ``kiln``) and run in both libraries from kiln's initial weights; float64 records (first
outputs, first gradients, losses, the state after the steps) agree to 1e-10, eagerly and with the whole step
(zero_grad, forward, loss, backward, optimizer step) one ``kiln.compile(fullgraph=True)`` graph against torch's eager
loop. The NTM and the Set Transformer also run in float32 (compiled step vs torch's eager loop) at float32's level.

- Neural Turing Machine (loudinthecloud/pytorch-ntm: ``ntm/memory.py``, ``head.py``, ``controller.py``, ``ntm.py``,
  ``aio.py``, ``tasks/copytask.py``, ``train.py``): ``register_buffer('mem_bias', torch.Tensor(N, M))`` with
  ``nn.init.uniform_``, ``mem_bias.clone().repeat(batch, 1, 1)``, content addressing by
  ``F.cosine_similarity(self.memory + 1e-16, k + 1e-16, dim=-1)`` and ``F.softmax(β * ..., dim=1)``, interpolation with
  the previous weighting, the circular shift ``_convolve`` (``torch.cat([w[-1:], w, w[:1]])``,
  ``F.conv1d(t.view(1, 1, -1), s.view(1, 1, -1)).view(-1)``) written per batch element into ``torch.zeros(wg.size())``
  by ``result[b] = ...``, sharpening ``ŵ ** γ`` over ``torch.sum(w, dim=1).view(-1, 1) + 1e-16``, the erase/add write by
  batched outer products (``self.memory = torch.Tensor(...)`` then overwritten), ``F.softplus``/``F.sigmoid``,
  ``_split_cols`` of the controller output by ``np.cumsum`` bounds, an LSTM controller whose initial state is a learned
  ``Parameter`` (``clone().repeat(1, batch, 1)``), the read biases registered as buffers from ``init_r_bias.data`` (and
  kept in a list), one memory module shared by the heads and the model (its buffer under several state_dict names),
  ``p.data.view(-1).size(0)`` to count parameters; the copy task (``inp[:seq_len, :, :seq_width] = seq``, the
  delimiter channel), ``y_out[i], _ = net()`` into ``torch.zeros(Y.size())``, ``nn.BCELoss``, RMSprop with momentum and
  alpha as copytask.py sets them, ``p.grad.data.clamp_(-10, 10)`` (or ``nn.utils.clip_grad_value_``), the binarized
  cost by ``y_out.clone().data.apply_(lambda x: 0 if x < 0.5 else 1)``; the compiled step runs the whole sequence;
  the copy task's read-out also through ``kiln.compile`` under ``no_grad`` and ``kiln.onnx.export`` (onnxruntime).
- Differentiable Neural Computer memory (ixaxaar/pytorch-dnc ``dnc/memory.py`` and ``dnc/util.py``, both interface
  layouts: one ``interface_weights`` Linear sliced by ``ξ[:, r * w + r: ...].contiguous().view(b, 1, w)``, or
  independent Linears), behind a tiny Linear controller: ``θ`` (batched cosine by ``T.norm(a, 2, 2, keepdim=True)
  .expand_as(a)`` and ``bmm``), ``σ`` (softmax on an axis through ``transpose``/``contiguous``/``view``), usage by
  ``T.prod``, the allocation weighting (``T.topk(usage, n, largest=False)``, the exclusive ``cumprod`` over
  ``T.cat((var(sorted_usage.data.new(b, 1).fill_(1)), sorted_usage), 1)``, the inverse permutation by a second
  ``topk`` and ``gather``), erase by ``T.prod(1 - w e, 1)``, the temporal link matrix with its ``1 - T.eye`` mask
  (``cuda(...)`` = ``Variable(x, requires_grad=False)``), precedence, forward/backward read modes; Adam with
  ``eps=1e-9, betas=[0.9, 0.98]`` and ``clip_grad_norm_`` as tasks/copy_task.py. The memory starts all zeros, so
  the first allocation sorts equal usages: torch's ``topk`` orders those ties its own way ([3, 5, 4, 0, 2, 1] for
  six equal values), kiln's keeps index order; the DNC treats its cells alike, so both give the same
  losses and gradients (a permutation of the cells) and the records agree to 1e-10.
- Set Transformer (juho-lee/set_transformer ``modules.py`` and the max-regression demo): MAB with
  ``torch.cat(Q_.split(dim_split, 2), 0)``, ``torch.softmax(Q_.bmm(K_.transpose(1,2))/math.sqrt(self.dim_V), 2)``, the
  optional LayerNorms found by ``getattr(self, 'ln0', None)``; ISAB's inducing points and PMA's seeds as
  ``nn.Parameter(torch.Tensor(...))`` with ``nn.init.xavier_uniform_`` and ``repeat(X.size(0), 1, 1)``; ``nn.L1Loss``
  and Adam on sets of random sizes (``np.random.randint``); inference through ``kiln.compile`` (two set sizes) and
  ``kiln.onnx.export`` run by onnxruntime, and permutation invariance; run.py's amortized clustering with models.py's
  ``SetTransformer`` (ISAB, ISAB, PMA with K seeds, SAB, SAB, Linear) and mixture_of_mvns.py / mvn_diag.py (``log_prob``
  by broadcasting, ``logsumexp(-1).mean()``, ``parse`` by ``softmax(raw[..., 0], -1)`` and ``F.softplus``; ``stats``
  by ``torch.eye(dim)[(None,)*(len(sigma.shape)-1)]``), ``optimizer.param_groups[0]['lr'] *= 0.1`` half way, eval
  labels by ``argmax``; sets of two sizes drawn once by torch's ``mog.sample``.
- Metric learning: arcface-pytorch's ``ArcMarginProduct`` (plain and easy margin) and ``AddMarginProduct``
  (``F.linear(F.normalize(input), F.normalize(self.weight))``, ``torch.sqrt((1.0 - torch.pow(cosine, 2)).clamp(0, 1))``,
  ``torch.where(cosine > self.th, phi, cosine - self.mm)``, ``one_hot.scatter_(1, label.view(-1, 1).long(), 1)``,
  ``output *= self.s``) and ``SphereProduct`` (``nn.init.xavier_uniform``, the deprecated name; ``self.iter += 1``
  moving the Python float ``self.lamb`` at every step, the ``mlambda`` list of lambdas, ``cos_theta.data.acos()``,
  ``(-1.0) ** k``, ``torch.norm(input, 2, 1)``, ``output *= NormOfFeature.view(-1, 1)``) behind an embedding net with
  PReLU and BatchNorm1d, trained as train.py (CrossEntropyLoss or ``FocalLoss(gamma=2)``, SGD over two param groups
  with weight decay, ``StepLR``, accuracy by ``output.data.cpu().numpy()`` and ``np.argmax``), also in float32 with the
  reference's ``torch.FloatTensor`` weight; the batch-hard triplet loss of NegatioN/OnlineMiningTripletLoss
  (expanded-form distances, ``distances[distances < 0] = 0``, the ``eq(0)`` mask, ``torch.eye(...).bool()`` and
  ``labels.unsqueeze(0) == labels.unsqueeze(1)`` masks, ``max``/``min`` with ``keepdim``, ``tl[tl < 0] = 0``), the
  ``torch.cdist`` + ``masked_fill`` form, and ``nn.TripletMarginLoss`` on mined triplets (``argmax``/``argmin``
  indices); duplicate embeddings (zero distances) give torch's gradients.

The float64 runs cast the data to the default dtype where the references write ``.float()`` (the one line a float64
user changes), and use ``torch.DoubleTensor`` where arcface writes ``torch.FloatTensor``. Biases that a softmax cancels
(the attention key biases ``fc_k.bias``, the mixture logit's output bias) get rounding noise for a gradient, which Adam
turns into library-dependent steps: those entries alone are compared looser, with the reason at each test.

What broke (each fixed in kiln, with a unit test that failed before the fix):

- ``y_out_binarized.apply_(lambda ...)`` (pytorch-ntm's train.py): AttributeError, kiln had no ``Tensor.apply_``
  (``frontend/tensor_apply.py``; ``tests/frontend/test_torch_surface_apply.py``).
- ``p.data.view(-1).size(0)`` (pytorch-ntm's ``calculate_num_params``): "'int' object is not callable", a parameter's
  ``.data`` (a NumPy-backed ``TorchArray``) had NumPy's ``size`` only; it is now an int that called gives torch's
  ``size()``/``size(dim)`` (``frontend/torch_array.py``; same test file).
- A checkpoint restored into another net (``load_state_dict``) left pytorch-ntm's initial reads at the new net's random
  values: ``register_buffer("read0_bias", init_r_bias.data)`` copied the array, so the write missed ``init_r_bias``
  (kept in ``self.init_r``); a buffer registered from an eager tensor now shares its memory, as torch's is the tensor
  (``frontend/module.py``; ``tests/frontend/test_register_buffer_shares_tensor_vs_torch.py``).
- ``nn.init.xavier_uniform(self.weight)`` (SphereProduct): AttributeError, kiln.nn.init lacked torch's deprecated
  names without the underscore (``frontend/init_deprecated.py``;
  ``tests/frontend/test_torch_surface_init_deprecated.py``).
- ``mog.sample`` (set_transformer's mixture_of_mvns.py): AttributeError, kiln.distributions had no ``Dirichlet``; it has
  now (torch's log_prob, entropy, moments, mode and KL; ``sample`` from NumPy's gamma sampler seeded by kiln's
  generator, eager only; no ``rsample``: ``frontend/distributions_dirichlet.py``;
  ``tests/frontend/test_torch_surface_dirichlet.py``).

Everything else agreed to 1e-10 as first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.ntm_dnc_program import (DNC_BATCH, DNC_INPUT, DNC_STEPS, NTM_BATCH, SEQ_LEN, SEQ_WIDTH, dnc_memory,
                                 encapsulated_ntm)
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.set_transformer_arcface_program import (CLASSES, EMBEDDING, FEATURES, METRIC_BATCH, MOG_B, MOG_K, SET_BATCH,
                                                 SET_DIM, SET_HEADS, SET_INDUCING, focal_loss, metric_model,
                                                 mixture_of_mvns, online_triplet_losses, set_transformer,
                                                 set_transformer_of_models_py)
from oracles import libraries

pytestmark = pytest.mark.filterwarnings("ignore:`nn.init.xavier_uniform` is now deprecated:FutureWarning")

# --- pytorch-ntm ------------------------------------------------------------------------------------------------------


def copy_task_batches(torch, num_batches, seed=1):
    """tasks/copytask.py's ``dataloader`` (lengths drawn by ``random.randint(min_len, max_len)``, here by NumPy's
    seeded generator: 3, 2, 2, so the compiled step meets two sequence lengths)."""
    rng = np.random.RandomState(seed)
    for batch_num in range(num_batches):
        seq_len = rng.randint(2, SEQ_LEN + 1)
        seq = rng.binomial(1, 0.5, (seq_len, NTM_BATCH, SEQ_WIDTH))
        seq = torch.from_numpy(seq)
        # The input includes an additional channel used for the delimiter
        inp = torch.zeros(seq_len + 1, NTM_BATCH, SEQ_WIDTH + 1)
        inp[:seq_len, :, :SEQ_WIDTH] = seq
        inp[seq_len, :, SEQ_WIDTH] = 1.0  # delimiter in our control channel
        outp = seq.clone()
        yield batch_num + 1, inp.to(torch.get_default_dtype()), outp.to(torch.get_default_dtype())


def clip_grads(net):
    """Gradient clipping to the range [10, 10]."""
    parameters = list(filter(lambda p: p.grad is not None, net.parameters()))
    for p in parameters:
        p.grad.data.clamp_(-10, 10)


def train_ntm(steps=3, compiled=False, clip_by_utility=False):
    """train.py's ``train_batch`` over the copy task (RMSprop momentum 0.9, alpha 0.95 as copytask.py; lr 1e-2 here so
    that three steps move the weights); with ``compiled`` kiln's whole step is one ``kiln.compile(fullgraph=True)``."""

    def train(torch, nn, F, net):
        criterion = nn.BCELoss()
        optimizer = torch.optim.RMSprop(net.parameters(), momentum=0.9, alpha=0.95, lr=1e-2)
        record = {"losses": [], "costs": []}

        def train_batch(X, Y):
            optimizer.zero_grad()
            inp_seq_len = X.size(0)
            outp_seq_len, batch_size, _ = Y.size()
            # New sequence
            net.init_sequence(batch_size)
            # Feed the sequence + delimiter
            for i in range(inp_seq_len):
                net(X[i])
            # Read the output (no input given)
            y_out = torch.zeros(Y.size())
            for i in range(outp_seq_len):
                y_out[i], _ = net()
            loss = criterion(y_out, Y)
            loss.backward()
            if clip_by_utility:
                nn.utils.clip_grad_value_(net.parameters(), 10)
            else:
                clip_grads(net)
            if not compiled:
                record.setdefault("first_output", array(y_out))
                record.setdefault("grads", gradients(net))
            optimizer.step()
            return loss, y_out

        run = kiln.compile(train_batch, fullgraph=True) if compiled and torch is kiln else train_batch
        for batch_num, X, Y in copy_task_batches(torch, steps):
            loss, y_out = run(X, Y)
            y_out_binarized = y_out.clone().data
            y_out_binarized.apply_(lambda x: 0 if x < 0.5 else 1)
            cost = torch.sum(torch.abs(y_out_binarized - Y.data))
            record["losses"].append(loss.item())
            record["costs"].append(cost.item() / NTM_BATCH)
        record["state"] = snapshot(net)
        record["num_params"] = net.calculate_num_params()
        return record

    return train


@pytest.mark.parametrize("clip_by_utility", [False, True], ids=["grad.data.clamp_", "clip_grad_value_"])
def test_ntm_copy_task_trains_as_torch(float64_default, clip_by_utility):
    ours, theirs = run_in_lockstep(encapsulated_ntm, train_ntm(clip_by_utility=clip_by_utility))
    assert_same_records(ours, theirs)
    assert "memory.mem_bias" in theirs["state"] and "ntm.heads.1.memory.mem_bias" in theirs["state"]
    assert set(theirs["grads"]) == {name for name, _ in encapsulated_ntm(*libraries("torch")).named_parameters()}


def evaluate_restored(path):
    """train.py's checkpoint (``torch.save(net.state_dict(), model_fname)``) loaded into a net built from another seed
    (``net.load_state_dict(torch.load(model_path))``, as the repository's notebook), then its copy-task outputs under
    ``torch.no_grad()``: the restored net must read its initial reads from the loaded ``read0_bias``."""

    def train(torch, nn, F, net):
        torch.save(net.state_dict(), str(path))
        torch.manual_seed(7)
        restored = encapsulated_ntm(torch, nn, F)
        restored.load_state_dict(torch.load(str(path)))
        _, X, Y = next(copy_task_batches(torch, 1))
        outputs = []
        for model in (net, restored):
            with torch.no_grad():
                model.init_sequence(NTM_BATCH)
                for i in range(X.size(0)):
                    model(X[i])
                outputs.append(array(torch.stack([model()[0] for _ in range(Y.size(0))])))
        np.testing.assert_array_equal(outputs[1], outputs[0])
        return {"outputs": outputs[1]}

    return train


def test_ntm_checkpoint_restores_as_torch(float64_default, tmp_path):
    ours, theirs = run_in_lockstep(encapsulated_ntm, evaluate_restored(tmp_path / "copy-task.model"))
    assert_same_records(ours, theirs)


def test_ntm_compiled_step_over_the_sequence_as_torch(float64_default):
    ours, theirs = run_in_lockstep(encapsulated_ntm, train_ntm(compiled=True))
    assert_same_records(ours, theirs)


def test_ntm_copy_inference_compiled_and_exported_as_torch(tmp_path):
    """The copy task's read-out (``init_sequence``, the input loop, ``net()`` per output step) as one module: under
    ``no_grad`` through ``kiln.compile(fullgraph=True)`` and ``kiln.onnx.export`` run by onnxruntime, against torch's
    eager model. float32: onnxruntime has no float64 ``Conv`` kernel (the circular shift's ``F.conv1d``)."""
    from oracles import require

    onnxruntime = require("onnxruntime")

    def copy_inference(torch, nn, F, net):
        class CopyInference(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, X):
                self.net.init_sequence(X.size(1))
                for i in range(X.size(0)):
                    self.net(X[i])
                return torch.stack([self.net()[0] for _ in range(X.size(0) - 1)])

        model = CopyInference(net).eval()
        _, X, Y = next(copy_task_batches(torch, 1))
        with torch.no_grad():
            record = {"eager": array(model(X))}
            if torch is kiln:
                record["compiled"] = array(kiln.compile(model, fullgraph=True)(X))
                kiln.onnx.export(model, (X,), str(tmp_path / "ntm.onnx"), input_names=["X"])
                session = onnxruntime.InferenceSession(str(tmp_path / "ntm.onnx"))
                record["onnx"] = session.run(None, {"X": array(X)})[0]
        return record

    ours, theirs = run_in_lockstep(encapsulated_ntm, copy_inference)
    for key in ours:
        assert_same_records(ours[key], theirs["eager"], rtol=2e-5, atol=2e-6, where=key)


def test_ntm_float32_compiled_step_as_torch():
    """As the repository trains (float32 ``torch.Tensor`` buffers, ``inp.float()``), at float32's level."""
    ours, theirs = run_in_lockstep(encapsulated_ntm, train_ntm(steps=1, compiled=True))
    assert ours["state"]["ntm.fc.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


# --- set_transformer ------------------------------------------------------------------------------------------------


def gen_data(rng, batch_size, max_length=6):
    """The demo's ``gen_data`` (NumPy's generator passed in): sets of integers, the target their max."""
    length = rng.randint(1, max_length + 1)
    x = rng.randint(1, 100, (batch_size, length))
    y = np.max(x, axis=1)
    x, y = np.expand_dims(x, axis=2), np.expand_dims(y, axis=1)
    return x, y


def train_set_transformer(steps=3, compiled=False):
    """The demo's ``train`` (Adam, ``nn.L1Loss``; lr 1e-2 here for a few steps); ``torch.from_numpy(x).float()`` is
    ``.to(default dtype)`` so that the float64 runs stay float64 (the one line a float64 user changes)."""

    def train(torch, nn, F, model):
        rng = np.random.RandomState(3)
        optim = torch.optim.Adam(model.parameters(), lr=1e-2)
        criterion = nn.L1Loss()
        record = {"losses": []}

        def step(x, y):
            loss = criterion(model(x), y)
            optim.zero_grad()
            loss.backward()
            if not compiled:
                record.setdefault("grads", gradients(model))
            optim.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for _ in range(steps):
            x, y = gen_data(rng, batch_size=SET_BATCH)
            dtype = torch.get_default_dtype()
            x, y = torch.from_numpy(x).to(dtype) / 100, torch.from_numpy(y).to(dtype) / 100
            if not compiled:
                record.setdefault("first_output", array(model(x)))
            record["losses"].append(run(x, y).item())
        record["state"] = snapshot(model)
        return record

    return train


def _set_transformer_sab(torch, nn, F):
    return set_transformer(torch, nn, F, isab=False)


@pytest.mark.parametrize("build", [set_transformer, _set_transformer_sab], ids=["ISAB + LayerNorm", "SAB"])
def test_set_transformer_max_regression_trains_as_torch(float64_default, build):
    ours, theirs = run_in_lockstep(build, train_set_transformer())
    assert_same_records(ours, theirs)
    assert ours["first_output"].shape == (SET_BATCH, 1)


def test_set_transformer_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(set_transformer, train_set_transformer(compiled=True))
    assert_same_records(ours, theirs)


def test_set_transformer_float32_compiled_step_as_torch():
    """float32, at float32's level. ``fc_k``'s bias adds ``q . b_k`` to every score of a query alike, so softmax
    cancels it: its gradient is rounding noise (1e-9 in float32), which Adam turns into steps up to ~lr/10,
    differently in each library (as ``nn.MultiheadAttention``'s key bias, ``probe_lockstep.split_key_bias``); it is
    compared looser, everything else tight."""
    ours, theirs = run_in_lockstep(set_transformer, train_set_transformer(compiled=True))
    assert ours["state"]["dec.1.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6, looser={"fc_k.bias": dict(rtol=0, atol=5e-3)})


def test_set_transformer_is_permutation_invariant_compiled_and_exported(float64_default, tmp_path):
    """Inference through ``kiln.compile`` (one compile, sets of two sizes) and ``kiln.onnx.export`` run by
    onnxruntime agree with torch's eager model; permuting a set's elements leaves the output."""
    from oracles import require

    onnxruntime = require("onnxruntime")
    sets = np.random.RandomState(4).rand(SET_BATCH, 5, 1)
    variants = (sets, sets[:, [4, 2, 0, 1, 3]], sets[:, :3])  # a permutation of each set, smaller sets
    outputs = {}
    kiln.manual_seed(0)
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        model = set_transformer(torch, nn, F)
        if name == "kiln":
            initial = snapshot(model)
            forward = kiln.compile(model)
            outputs["compiled"] = [array(forward(kiln.tensor(x))) for x in variants]
            model.eval()
            kiln.onnx.export(model, (kiln.tensor(sets),), str(tmp_path / "set.onnx"), input_names=["x"])
            session = onnxruntime.InferenceSession(str(tmp_path / "set.onnx"))
            outputs["onnx"] = session.run(None, {"x": sets})[0]
        else:
            model.load_state_dict({key: torch.tensor(value) for key, value in initial.items()})
            with torch.no_grad():
                outputs["torch"] = [array(model(torch.tensor(x))) for x in variants]
    assert_same_records(outputs["compiled"], outputs["torch"])
    assert_same_records(outputs["onnx"], outputs["torch"][0])
    assert_same_records(outputs["torch"][1], outputs["torch"][0])


def _amortized_clustering_net(torch, nn, F):
    """models.py's ``SetTransformer(D, K, dim_output)`` (ISAB, ISAB; PMA with K seeds, SAB, SAB, Linear), tiny."""
    return set_transformer_of_models_py(torch, nn, F)(2, MOG_K, 2 * 2, num_inds=SET_INDUCING, dim_hidden=SET_DIM,
                                                        num_heads=SET_HEADS)


def train_amortized_clustering(num_steps=4, compiled=False):
    """run.py's ``train`` (Adam, ``optimizer.param_groups[0]['lr'] *= 0.1`` half way, ``loss = -ll`` of
    ``mog.log_prob(X, *mvn.parse(net(X)))``) on sets drawn once by torch's ``mog.sample`` (the libraries' generators
    differ), of two sizes (``np.random.randint(N_min, N_max)``)."""
    torch_oracle = libraries("torch")[0]
    torch_oracle.manual_seed(0)
    _, mog = mixture_of_mvns(torch_oracle, torch_oracle.nn.functional)
    sets = [mog.sample(MOG_B, N, MOG_K).double().numpy() for N in (6, 6, 4, 6)[:num_steps]]

    def train(torch, nn, F, net):
        mvn, mog = mixture_of_mvns(torch, F)
        optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
        record = {"losses": []}

        def step(X):
            net.train()
            optimizer.zero_grad()
            ll = mog.log_prob(X, *mvn.parse(net(X)))
            loss = -ll
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for t, X in enumerate(sets, start=1):
            if t == int(0.5 * num_steps):
                optimizer.param_groups[0]['lr'] *= 0.1
            record["losses"].append(run(torch.tensor(X)).item())
        net.eval()
        with torch.no_grad():
            pi, params = mvn.parse(net(torch.tensor(sets[0])))
            ll, labels = mog.log_prob(torch.tensor(sets[0]), pi, params, return_labels=True)
            record["eval"] = {"ll": ll.item(), "labels": array(labels), "cov": array(mvn.stats(params)[1])}
        record["state"] = state = snapshot(net)
        state["dec.3.bias (pi logit)"], state["dec.3.bias"] = state["dec.3.bias"][:1], state["dec.3.bias"][1:]
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_set_transformer_amortized_clustering_as_torch(float64_default, compiled):
    """Biases that softmax cancels get rounding noise for a gradient, which Adam turns into steps of ~1e-11: the key
    biases (``fc_k.bias``: see ``test_set_transformer_float32_compiled_step_as_torch``) and the output bias of the
    mixture logit (``parse``'s ``torch.softmax(raw[..., 0], -1)`` over the K seeds' outputs, which share it); they
    are compared looser, everything else to 1e-10."""
    ours, theirs = run_in_lockstep(_amortized_clustering_net, train_amortized_clustering(compiled=compiled))
    noise = dict(rtol=0, atol=1e-9)
    assert_same_records(ours, theirs, looser={"fc_k.bias": noise, "pi logit": noise})


def test_mixture_of_mvns_sampling_runs_as_torch(float64_default):
    """``mog.sample(B, N, K, return_gt=True)`` in kiln: Dirichlet mixing weights on the simplex, Categorical labels in
    [0, K) of shape (B, N) after ``transpose(0, 1).contiguous()``, the points gathered from their component, and the
    ground truth's ``log_prob`` what torch computes from the same draws."""
    import kiln.nn.functional as kiln_F

    kiln.manual_seed(3)
    _, mog = mixture_of_mvns(kiln, kiln_F)
    X, labels, pi, (mu, sigma) = mog.sample(MOG_B, 7, MOG_K, return_gt=True)
    assert tuple(X.shape) == (MOG_B, 7, 2) and tuple(labels.shape) == (MOG_B, 7) and labels.dtype == kiln.int64
    np.testing.assert_allclose(array(pi).sum(-1), 1.0, rtol=1e-12)
    assert set(np.unique(array(labels))) <= set(range(MOG_K))
    chosen = np.take_along_axis(array(mu), np.repeat(array(labels)[..., None], 2, -1), 1)
    assert np.abs(array(X) - chosen).max() < 0.3 * 6
    torch = libraries("torch")[0]
    _, torch_mog = mixture_of_mvns(torch, torch.nn.functional)
    theirs = torch_mog.log_prob(torch.tensor(array(X)), torch.tensor(array(pi)),
                                (torch.tensor(array(mu)), torch.tensor(array(sigma))))
    assert mog.log_prob(X, pi, (mu, sigma)).item() == pytest.approx(theirs.item(), rel=1e-12)


# --- arcface-pytorch (models/metrics.py) and online triplet mining ---------------------------------------------------

def _metric_batches(steps, dtype=np.float64):
    rng = np.random.default_rng(6)
    labels = np.tile(np.arange(CLASSES), METRIC_BATCH // CLASSES)
    centers = rng.standard_normal((CLASSES, FEATURES))
    return [((centers[labels] + 0.8 * rng.standard_normal((METRIC_BATCH, FEATURES))).astype(dtype), labels)
            for _ in range(steps)]


def train_margin_head(steps=3, compiled=False, dtype=np.float64, focal=False):
    """train.py: ``criterion = torch.nn.CrossEntropyLoss()``, SGD over ``[{'params': model.parameters()},
    {'params': metric_fc.parameters()}]`` with weight decay, ``StepLR``; ``output = metric_fc(feature, label)``."""

    def train(torch, nn, F, model):
        criterion = focal_loss(torch, nn) if focal else torch.nn.CrossEntropyLoss()
        body = [p for name, p in model.named_parameters() if not name.startswith("metric_fc")]
        optimizer = torch.optim.SGD([{'params': body}, {'params': model.metric_fc.parameters()}],
                                    lr=0.1, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
        record = {"losses": [], "accuracies": []}

        def step(data_input, label):
            feature = model(data_input)
            output = model.metric_fc(feature, label)
            loss = criterion(output, label)
            optimizer.zero_grad()
            loss.backward()
            if not compiled:
                record.setdefault("first_output", array(output))
                record.setdefault("grads", gradients(model))
            optimizer.step()
            return loss, output

        model.train()
        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for data_input, label in _metric_batches(steps, dtype):
            loss, output = run(torch.from_numpy(data_input), torch.from_numpy(label).long())
            scheduler.step()
            output = output.data.cpu().numpy()
            output = np.argmax(output, axis=1)
            record["accuracies"].append(np.mean((output == label).astype(int)))
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        return record

    return train


def _arc_easy_margin(torch, nn, F):
    return metric_model(torch, nn, F, easy_margin=True)


def _add_margin(torch, nn, F):
    return metric_model(torch, nn, F, head="add")


def _sphere_margin(torch, nn, F):
    return metric_model(torch, nn, F, head="sphere")


MARGIN_HEADS = pytest.mark.parametrize("build", [metric_model, _arc_easy_margin, _add_margin, _sphere_margin],
                                       ids=["ArcFace", "ArcFace easy margin", "CosFace", "SphereFace"])


@MARGIN_HEADS
def test_margin_head_trains_as_torch(float64_default, build):
    ours, theirs = run_in_lockstep(build, train_margin_head())
    assert_same_records(ours, theirs)


@MARGIN_HEADS
def test_margin_head_compiled_step_as_torch(float64_default, build):
    ours, theirs = run_in_lockstep(build, train_margin_head(compiled=True))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_sphereface_with_focal_loss_as_torch(float64_default, compiled):
    """SphereFace's ``self.iter += 1`` in forward moves ``self.lamb`` (a Python float) at every step: each compiled
    call uses the current one, as torch's eager loop does; ``FocalLoss(gamma=2)`` as train.py's focal_loss option."""
    ours, theirs = run_in_lockstep(_sphere_margin, train_margin_head(steps=4, compiled=compiled, focal=True))
    assert_same_records(ours, theirs)


def test_arcface_float32_as_written():
    """The reference's ``torch.FloatTensor`` weight with float32 data, the compiled step, at float32's level."""
    def build(torch, nn, F):
        return metric_model(torch, nn, F, weight_type=torch.FloatTensor)

    ours, theirs = run_in_lockstep(build, train_margin_head(compiled=True, dtype=np.float32))
    assert ours["state"]["metric_fc.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-5)


def _embedder(torch, nn, F):
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, EMBEDDING))


def train_triplet(variant, steps=3, compiled=False):
    """A few SGD steps of the embedding net on a batch-hard loss. Distances ignore a shift of every embedding, so the
    last Linear's bias gets rounding noise for a gradient (1e-17): Adam would turn that into steps of ~lr, differently
    in each library; SGD keeps them at the noise's size."""
    def train(torch, nn, F, model):
        loss_fn = online_triplet_losses(torch, variant)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        record = {"losses": []}

        def step(x, labels):
            optimizer.zero_grad()
            loss = loss_fn(labels, model(x), 1.0)
            loss.backward()
            if not compiled:
                record.setdefault("grads", gradients(model))
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for x, labels in _metric_batches(steps):
            record["losses"].append(run(torch.from_numpy(x), torch.from_numpy(labels)).item())
        record["state"] = snapshot(model)
        return record

    return train


TRIPLET_VARIANTS = pytest.mark.parametrize("variant", ["expanded", "cdist", "TripletMarginLoss"])


@TRIPLET_VARIANTS
def test_batch_hard_triplet_loss_trains_as_torch(float64_default, variant):
    ours, theirs = run_in_lockstep(_embedder, train_triplet(variant))
    assert_same_records(ours, theirs)
    assert theirs["losses"][0] > 0


@TRIPLET_VARIANTS
def test_batch_hard_triplet_loss_compiled_step_as_torch(float64_default, variant):
    ours, theirs = run_in_lockstep(_embedder, train_triplet(variant, compiled=True))
    assert_same_records(ours, theirs)


def test_pairwise_distances_with_duplicate_embeddings_as_torch(float64_default):
    """Duplicate embeddings: the expanded form's zero distances (``mask * 1e-16``, ``(1 - mask) * sqrt``) and
    ``cdist``'s zero diagonal and duplicates give torch's values and gradients (no NaN)."""
    base = np.random.default_rng(8).standard_normal((4, 3))
    embeddings, labels = np.concatenate([base, base[:2]]), np.array([0, 1, 0, 1, 0, 1])
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        record = {}
        for variant in ("expanded", "cdist"):
            leaf = torch.tensor(embeddings, requires_grad=True)
            loss = online_triplet_losses(torch, variant)(torch.tensor(labels), leaf * 1.0, 0.5)
            loss.backward()
            record[variant] = {"loss": loss.item(), "grad": array(leaf.grad)}
        results.append(record)
    assert_same_records(*results)
    assert all(np.isfinite(entry["grad"]).all() for entry in results[1].values())


# --- pytorch-dnc (dnc/memory.py, dnc/util.py) ------------------------------------------------------------------------

def _dnc_independent_linears(torch, nn, F):
    return dnc_memory(torch, nn, F, independent_linears=True)


def train_dnc(steps=3, compiled=False):
    """tasks/copy_task.py's loss (MSE of the output against the input sequence) and optimizer (Adam, ``eps=1e-9``,
    ``betas=[0.9, 0.98]``; lr 1e-2 here), ``T.nn.utils.clip_grad_norm_(rnn.parameters(), args.clip)``."""
    sequences = np.random.default_rng(9).standard_normal((steps, DNC_BATCH, DNC_STEPS, DNC_INPUT))

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-9, betas=[0.9, 0.98])
        record = {"losses": []}

        def step(input_data):
            optimizer.zero_grad()
            output = model(input_data)
            loss = F.mse_loss(output, input_data)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 50)
            if not compiled:
                record.setdefault("first_output", array(output))
                record.setdefault("grads", gradients(model))
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for sequence in sequences:
            record["losses"].append(run(torch.tensor(sequence)).item())
        record["state"] = snapshot(model)
        return record

    return train


DNC_VARIANTS = pytest.mark.parametrize("build", [dnc_memory, _dnc_independent_linears],
                                       ids=["interface_weights", "independent_linears"])


@DNC_VARIANTS
def test_dnc_memory_trains_as_torch(float64_default, build):
    ours, theirs = run_in_lockstep(build, train_dnc())
    assert_same_records(ours, theirs)


@DNC_VARIANTS
def test_dnc_memory_compiled_step_as_torch(float64_default, build):
    ours, theirs = run_in_lockstep(build, train_dnc(compiled=True))
    assert_same_records(ours, theirs)
