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

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries

pytestmark = pytest.mark.filterwarnings("ignore:`nn.init.xavier_uniform` is now deprecated:FutureWarning")

# --- pytorch-ntm ------------------------------------------------------------------------------------------------------

SEQ_WIDTH, SEQ_LEN, NTM_BATCH, CONTROLLER, MEMORY_N, MEMORY_M = 3, 3, 2, 10, 8, 4


def encapsulated_ntm(torch, nn, F):
    """ntm/memory.py, ntm/head.py, ntm/controller.py, ntm/ntm.py and ntm/aio.py as the repository writes them."""
    Parameter = nn.Parameter

    def _convolve(w, s):
        """Circular convolution implementation."""
        assert s.size(0) == 3
        t = torch.cat([w[-1:], w, w[:1]])
        c = F.conv1d(t.view(1, 1, -1), s.view(1, 1, -1)).view(-1)
        return c

    class NTMMemory(nn.Module):
        def __init__(self, N, M):
            super(NTMMemory, self).__init__()
            self.N = N
            self.M = M
            self.register_buffer('mem_bias', torch.Tensor(N, M))
            stdev = 1 / (np.sqrt(N + M))
            nn.init.uniform_(self.mem_bias, -stdev, stdev)

        def reset(self, batch_size):
            self.batch_size = batch_size
            self.memory = self.mem_bias.clone().repeat(batch_size, 1, 1)

        def size(self):
            return self.N, self.M

        def read(self, w):
            return torch.matmul(w.unsqueeze(1), self.memory).squeeze(1)

        def write(self, w, e, a):
            self.prev_mem = self.memory
            self.memory = torch.Tensor(self.batch_size, self.N, self.M)
            erase = torch.matmul(w.unsqueeze(-1), e.unsqueeze(1))
            add = torch.matmul(w.unsqueeze(-1), a.unsqueeze(1))
            self.memory = self.prev_mem * (1 - erase) + add

        def address(self, k, β, g, s, γ, w_prev):
            wc = self._similarity(k, β)
            wg = self._interpolate(w_prev, wc, g)
            ŵ = self._shift(wg, s)
            w = self._sharpen(ŵ, γ)
            return w

        def _similarity(self, k, β):
            k = k.view(self.batch_size, 1, -1)
            w = F.softmax(β * F.cosine_similarity(self.memory + 1e-16, k + 1e-16, dim=-1), dim=1)
            return w

        def _interpolate(self, w_prev, wc, g):
            return g * wc + (1 - g) * w_prev

        def _shift(self, wg, s):
            result = torch.zeros(wg.size())
            for b in range(self.batch_size):
                result[b] = _convolve(wg[b], s[b])
            return result

        def _sharpen(self, ŵ, γ):
            w = ŵ ** γ
            w = torch.div(w, torch.sum(w, dim=1).view(-1, 1) + 1e-16)
            return w

    def _split_cols(mat, lengths):
        """Split a 2D matrix to variable length columns."""
        assert mat.size()[1] == sum(lengths), "Lengths must be summed to num columns"
        l = np.cumsum([0] + lengths)  # noqa: E741 (as head.py writes it)
        results = []
        for s, e in zip(l[:-1], l[1:]):
            results += [mat[:, s:e]]
        return results

    class NTMHeadBase(nn.Module):
        def __init__(self, memory, controller_size):
            super(NTMHeadBase, self).__init__()
            self.memory = memory
            self.N, self.M = memory.size()
            self.controller_size = controller_size

        def _address_memory(self, k, β, g, s, γ, w_prev):
            # Handle Activations
            k = k.clone()
            β = F.softplus(β)
            g = F.sigmoid(g)
            s = F.softmax(s, dim=1)
            γ = 1 + F.softplus(γ)
            w = self.memory.address(k, β, g, s, γ, w_prev)
            return w

    class NTMReadHead(NTMHeadBase):
        def __init__(self, memory, controller_size):
            super(NTMReadHead, self).__init__(memory, controller_size)
            # Corresponding to k, β, g, s, γ sizes from the paper
            self.read_lengths = [self.M, 1, 1, 3, 1]
            self.fc_read = nn.Linear(controller_size, sum(self.read_lengths))
            self.reset_parameters()

        def create_new_state(self, batch_size):
            # The state holds the previous time step address weightings
            return torch.zeros(batch_size, self.N)

        def reset_parameters(self):
            # Initialize the linear layers
            nn.init.xavier_uniform_(self.fc_read.weight, gain=1.4)
            nn.init.normal_(self.fc_read.bias, std=0.01)

        def is_read_head(self):
            return True

        def forward(self, embeddings, w_prev):
            o = self.fc_read(embeddings)
            k, β, g, s, γ = _split_cols(o, self.read_lengths)
            # Read from memory
            w = self._address_memory(k, β, g, s, γ, w_prev)
            r = self.memory.read(w)
            return r, w

    class NTMWriteHead(NTMHeadBase):
        def __init__(self, memory, controller_size):
            super(NTMWriteHead, self).__init__(memory, controller_size)
            # Corresponding to k, β, g, s, γ, e, a sizes from the paper
            self.write_lengths = [self.M, 1, 1, 3, 1, self.M, self.M]
            self.fc_write = nn.Linear(controller_size, sum(self.write_lengths))
            self.reset_parameters()

        def create_new_state(self, batch_size):
            return torch.zeros(batch_size, self.N)

        def reset_parameters(self):
            nn.init.xavier_uniform_(self.fc_write.weight, gain=1.4)
            nn.init.normal_(self.fc_write.bias, std=0.01)

        def is_read_head(self):
            return False

        def forward(self, embeddings, w_prev):
            o = self.fc_write(embeddings)
            k, β, g, s, γ, e, a = _split_cols(o, self.write_lengths)
            # e should be in [0, 1]
            e = F.sigmoid(e)
            # Write to memory
            w = self._address_memory(k, β, g, s, γ, w_prev)
            self.memory.write(w, e, a)
            return w

    class LSTMController(nn.Module):
        def __init__(self, num_inputs, num_outputs, num_layers):
            super(LSTMController, self).__init__()
            self.num_inputs = num_inputs
            self.num_outputs = num_outputs
            self.num_layers = num_layers
            self.lstm = nn.LSTM(input_size=num_inputs, hidden_size=num_outputs, num_layers=num_layers)
            # The hidden state is a learned parameter
            self.lstm_h_bias = Parameter(torch.randn(self.num_layers, 1, self.num_outputs) * 0.05)
            self.lstm_c_bias = Parameter(torch.randn(self.num_layers, 1, self.num_outputs) * 0.05)
            self.reset_parameters()

        def create_new_state(self, batch_size):
            # Dimension: (num_layers * num_directions, batch, hidden_size)
            lstm_h = self.lstm_h_bias.clone().repeat(1, batch_size, 1)
            lstm_c = self.lstm_c_bias.clone().repeat(1, batch_size, 1)
            return lstm_h, lstm_c

        def reset_parameters(self):
            for p in self.lstm.parameters():
                if p.dim() == 1:
                    nn.init.constant_(p, 0)
                else:
                    stdev = 5 / (np.sqrt(self.num_inputs + self.num_outputs))
                    nn.init.uniform_(p, -stdev, stdev)

        def size(self):
            return self.num_inputs, self.num_outputs

        def forward(self, x, prev_state):
            x = x.unsqueeze(0)
            outp, state = self.lstm(x, prev_state)
            return outp.squeeze(0), state

    class NTM(nn.Module):
        def __init__(self, num_inputs, num_outputs, controller, memory, heads):
            super(NTM, self).__init__()
            self.num_inputs = num_inputs
            self.num_outputs = num_outputs
            self.controller = controller
            self.memory = memory
            self.heads = heads
            self.N, self.M = memory.size()
            _, self.controller_size = controller.size()
            # Initialize the initial previous read values to random biases
            self.num_read_heads = 0
            self.init_r = []
            for head in heads:
                if head.is_read_head():
                    init_r_bias = torch.randn(1, self.M) * 0.01
                    self.register_buffer("read{}_bias".format(self.num_read_heads), init_r_bias.data)
                    self.init_r += [init_r_bias]
                    self.num_read_heads += 1
            assert self.num_read_heads > 0, "heads list must contain at least a single read head"
            # Initialize a fully connected layer to produce the actual output:
            #   [controller_output; previous_reads ] -> output
            self.fc = nn.Linear(self.controller_size + self.num_read_heads * self.M, num_outputs)
            self.reset_parameters()

        def create_new_state(self, batch_size):
            init_r = [r.clone().repeat(batch_size, 1) for r in self.init_r]
            controller_state = self.controller.create_new_state(batch_size)
            heads_state = [head.create_new_state(batch_size) for head in self.heads]
            return init_r, controller_state, heads_state

        def reset_parameters(self):
            # Initialize the linear layer
            nn.init.xavier_uniform_(self.fc.weight, gain=1)
            nn.init.normal_(self.fc.bias, std=0.01)

        def forward(self, x, prev_state):
            # Unpack the previous state
            prev_reads, prev_controller_state, prev_heads_states = prev_state
            # Use the controller to get an embeddings
            inp = torch.cat([x] + prev_reads, dim=1)
            controller_outp, controller_state = self.controller(inp, prev_controller_state)
            # Read/Write from the list of heads
            reads = []
            heads_states = []
            for head, prev_head_state in zip(self.heads, prev_heads_states):
                if head.is_read_head():
                    r, head_state = head(controller_outp, prev_head_state)
                    reads += [r]
                else:
                    head_state = head(controller_outp, prev_head_state)
                heads_states += [head_state]
            # Generate Output
            inp2 = torch.cat([controller_outp] + reads, dim=1)
            o = F.sigmoid(self.fc(inp2))
            # Pack the current state
            state = (reads, controller_state, heads_states)
            return o, state

    class EncapsulatedNTM(nn.Module):
        def __init__(self, num_inputs, num_outputs, controller_size, controller_layers, num_heads, N, M):
            super(EncapsulatedNTM, self).__init__()
            # Save args
            self.num_inputs = num_inputs
            self.num_outputs = num_outputs
            self.controller_size = controller_size
            self.controller_layers = controller_layers
            self.num_heads = num_heads
            self.N = N
            self.M = M
            # Create the NTM components
            memory = NTMMemory(N, M)
            controller = LSTMController(num_inputs + M * num_heads, controller_size, controller_layers)
            heads = nn.ModuleList([])
            for i in range(num_heads):
                heads += [
                    NTMReadHead(memory, controller_size),
                    NTMWriteHead(memory, controller_size)
                ]
            self.ntm = NTM(num_inputs, num_outputs, controller, memory, heads)
            self.memory = memory

        def init_sequence(self, batch_size):
            """Initializing the state."""
            self.batch_size = batch_size
            self.memory.reset(batch_size)
            self.previous_state = self.ntm.create_new_state(batch_size)

        def forward(self, x=None):
            if x is None:
                x = torch.zeros(self.batch_size, self.num_inputs)
            o, self.previous_state = self.ntm(x, self.previous_state)
            return o, self.previous_state

        def calculate_num_params(self):
            """Returns the total number of parameters."""
            num_params = 0
            for p in self.parameters():
                num_params += p.data.view(-1).size(0)
            return num_params

    # CopyTaskModelTraining.default_net (controller_layers 1, num_heads 1), tiny
    return EncapsulatedNTM(SEQ_WIDTH + 1, SEQ_WIDTH, CONTROLLER, 1, 1, MEMORY_N, MEMORY_M)


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

SET_BATCH, SET_DIM, SET_HEADS, SET_INDUCING = 4, 8, 2, 3


def set_transformer(torch, nn, F, isab=True):
    """modules.py (MAB, SAB, ISAB, PMA) as juho-lee/set_transformer writes it; the max-regression demo's
    ``SmallSetTransformer`` (SAB, SAB, PMA, Linear; ``isab`` puts an ISAB with inducing points first and LayerNorms
    in, as models.py's ``SetTransformer(ln=True)``)."""

    class MAB(nn.Module):
        def __init__(self, dim_Q, dim_K, dim_V, num_heads, ln=False):
            super(MAB, self).__init__()
            self.dim_V = dim_V
            self.num_heads = num_heads
            self.fc_q = nn.Linear(dim_Q, dim_V)
            self.fc_k = nn.Linear(dim_K, dim_V)
            self.fc_v = nn.Linear(dim_K, dim_V)
            if ln:
                self.ln0 = nn.LayerNorm(dim_V)
                self.ln1 = nn.LayerNorm(dim_V)
            self.fc_o = nn.Linear(dim_V, dim_V)

        def forward(self, Q, K):
            Q = self.fc_q(Q)
            K, V = self.fc_k(K), self.fc_v(K)

            dim_split = self.dim_V // self.num_heads
            Q_ = torch.cat(Q.split(dim_split, 2), 0)
            K_ = torch.cat(K.split(dim_split, 2), 0)
            V_ = torch.cat(V.split(dim_split, 2), 0)

            A = torch.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(self.dim_V), 2)
            O = torch.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)  # noqa: E741 (as modules.py writes it)
            O = O if getattr(self, 'ln0', None) is None else self.ln0(O)  # noqa: E741
            O = O + F.relu(self.fc_o(O))  # noqa: E741
            O = O if getattr(self, 'ln1', None) is None else self.ln1(O)  # noqa: E741
            return O

    class SAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, ln=False):
            super(SAB, self).__init__()
            self.mab = MAB(dim_in, dim_in, dim_out, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(X, X)

    class ISAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, num_inds, ln=False):
            super(ISAB, self).__init__()
            self.I = nn.Parameter(torch.Tensor(1, num_inds, dim_out))
            nn.init.xavier_uniform_(self.I)
            self.mab0 = MAB(dim_out, dim_in, dim_out, num_heads, ln=ln)
            self.mab1 = MAB(dim_in, dim_out, dim_out, num_heads, ln=ln)

        def forward(self, X):
            H = self.mab0(self.I.repeat(X.size(0), 1, 1), X)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, dim, num_heads, num_seeds, ln=False):
            super(PMA, self).__init__()
            self.S = nn.Parameter(torch.Tensor(1, num_seeds, dim))
            nn.init.xavier_uniform_(self.S)
            self.mab = MAB(dim, dim, dim, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(self.S.repeat(X.size(0), 1, 1), X)

    class SmallSetTransformer(nn.Module):
        def __init__(self,):
            super().__init__()
            first = (ISAB(1, SET_DIM, SET_HEADS, SET_INDUCING, ln=True) if isab
                     else SAB(dim_in=1, dim_out=SET_DIM, num_heads=SET_HEADS))
            self.enc = nn.Sequential(
                first,
                SAB(dim_in=SET_DIM, dim_out=SET_DIM, num_heads=SET_HEADS, ln=isab),
            )
            self.dec = nn.Sequential(
                PMA(dim=SET_DIM, num_heads=SET_HEADS, num_seeds=1, ln=isab),
                nn.Linear(in_features=SET_DIM, out_features=1),
            )

        def forward(self, x):
            x = self.enc(x)
            x = self.dec(x)
            return x.squeeze(-1)

    return SmallSetTransformer()


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


def mixture_of_mvns(torch, F):
    """mixture_of_mvns.py and mvn_diag.py as the repository writes them (``plot`` left out): sampling by
    ``Dirichlet(torch.ones(K)).sample(torch.Size([B]))`` and ``Categorical(probs=pi).sample(torch.Size([N]))``, the
    diagonal Gaussian's ``log_prob`` by broadcasting, ``ll.logsumexp(-1).mean()``, ``parse`` of the network output."""
    distributions = torch.distributions  # the file's ``from torch.distributions import (Dirichlet, Categorical)``

    class MultivariateNormal(object):
        def __init__(self, dim):
            self.dim = dim

    class MixtureOfMVNs(object):
        def __init__(self, mvn):
            self.mvn = mvn

        def sample(self, B, N, K, return_gt=False):
            device = 'cpu' if not torch.cuda.is_available() \
                else torch.cuda.current_device()
            pi = distributions.Dirichlet(torch.ones(K)).sample(torch.Size([B])).to(device)
            labels = distributions.Categorical(probs=pi).sample(torch.Size([N])).to(device)
            labels = labels.transpose(0, 1).contiguous()

            X, params = self.mvn.sample(B, K, labels)
            if return_gt:
                return X, labels, pi, params
            else:
                return X

        def log_prob(self, X, pi, params, return_labels=False):
            ll = self.mvn.log_prob(X, params)
            ll = ll + (pi + 1e-10).log().unsqueeze(-2)
            if return_labels:
                labels = ll.argmax(-1)
                return ll.logsumexp(-1).mean(), labels
            else:
                return ll.logsumexp(-1).mean()

        def parse(self, raw):
            return self.mvn.parse(raw)

    class MultivariateNormalDiag(MultivariateNormal):
        def __init__(self, dim):
            super(MultivariateNormalDiag, self).__init__(dim)

        def sample(self, B, K, labels):
            N = labels.shape[-1]
            device = labels.device
            mu = -4 + 8*torch.rand(B, K, self.dim).to(device)
            sigma = 0.3*torch.ones(B, K, self.dim).to(device)
            eps = torch.randn(B, N, self.dim).to(device)

            rlabels = labels.unsqueeze(-1).repeat(1, 1, self.dim)
            X = torch.gather(mu, 1, rlabels) + \
                eps * torch.gather(sigma, 1, rlabels)
            return X, (mu, sigma)

        def log_prob(self, X, params):
            mu, sigma = params
            X = X.unsqueeze(2)
            mu = mu.unsqueeze(1)
            sigma = sigma.unsqueeze(1)
            diff = X - mu
            ll = -0.5*math.log(2*math.pi) - sigma.log() - 0.5*(diff.pow(2)/sigma.pow(2))
            return ll.sum(-1)

        def stats(self, params):
            mu, sigma = params
            I = torch.eye(self.dim)[(None,)*(len(sigma.shape)-1)].to(sigma.device)  # noqa: E741 (as mvn_diag.py)
            cov = sigma.pow(2).unsqueeze(-1) * I
            return mu, cov

        def parse(self, raw):
            pi = torch.softmax(raw[..., 0], -1)
            mu = raw[..., 1:1+self.dim]
            sigma = F.softplus(raw[..., 1+self.dim:])
            return pi, (mu, sigma)

    mvn = MultivariateNormalDiag(2)
    return mvn, MixtureOfMVNs(mvn)


MOG_K, MOG_B = 2, 3


def _amortized_clustering_net(torch, nn, F):
    """models.py's ``SetTransformer(D, K, dim_output)`` (ISAB, ISAB; PMA with K seeds, SAB, SAB, Linear), tiny."""
    return set_transformer_of_models_py(torch, nn, F)(2, MOG_K, 2 * 2, num_inds=SET_INDUCING, dim_hidden=SET_DIM,
                                                        num_heads=SET_HEADS)


def set_transformer_of_models_py(torch, nn, F):
    small = set_transformer(torch, nn, F)  # the module classes, from the blocks of the max-regression net
    ISAB, PMA, SAB = type(small.enc[0]), type(small.dec[0]), type(small.enc[1])

    class SetTransformer(nn.Module):
        def __init__(self, dim_input, num_outputs, dim_output,
                     num_inds=32, dim_hidden=128, num_heads=4, ln=False):
            super(SetTransformer, self).__init__()
            self.enc = nn.Sequential(
                ISAB(dim_input, dim_hidden, num_heads, num_inds, ln=ln),
                ISAB(dim_hidden, dim_hidden, num_heads, num_inds, ln=ln))
            self.dec = nn.Sequential(
                PMA(dim_hidden, num_heads, num_outputs, ln=ln),
                SAB(dim_hidden, dim_hidden, num_heads, ln=ln),
                SAB(dim_hidden, dim_hidden, num_heads, ln=ln),
                nn.Linear(dim_hidden, dim_output))

        def forward(self, X):
            return self.dec(self.enc(X))

    return SetTransformer


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

FEATURES, EMBEDDING, CLASSES, METRIC_BATCH = 6, 5, 4, 8


def margin_heads(torch, nn, F, weight_type):
    """ronghuaiyang/arcface-pytorch's ``ArcMarginProduct`` and ``AddMarginProduct`` (``device='cuda'`` of the one-hot
    left out); ``weight_type`` is the reference's ``torch.FloatTensor`` or, in the float64 runs,
    ``torch.DoubleTensor``."""
    Parameter = nn.Parameter

    class ArcMarginProduct(nn.Module):
        def __init__(self, in_features, out_features, s=30.0, m=0.50, easy_margin=False):
            super(ArcMarginProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.s = s
            self.m = m
            self.weight = Parameter(weight_type(out_features, in_features))
            nn.init.xavier_uniform_(self.weight)

            self.easy_margin = easy_margin
            self.cos_m = math.cos(m)
            self.sin_m = math.sin(m)
            self.th = math.cos(math.pi - m)
            self.mm = math.sin(math.pi - m) * m

        def forward(self, input, label):
            # --------------------------- cos(theta) & phi(theta) ---------------------------
            cosine = F.linear(F.normalize(input), F.normalize(self.weight))
            sine = torch.sqrt((1.0 - torch.pow(cosine, 2)).clamp(0, 1))
            phi = cosine * self.cos_m - sine * self.sin_m
            if self.easy_margin:
                phi = torch.where(cosine > 0, phi, cosine)
            else:
                phi = torch.where(cosine > self.th, phi, cosine - self.mm)
            # --------------------------- convert label to one-hot ---------------------------
            one_hot = torch.zeros(cosine.size())
            one_hot.scatter_(1, label.view(-1, 1).long(), 1)
            # -------------torch.where(out_i = {x_i if condition_i else y_i) -------------
            # you can use torch.where if your torch.__version__ is 0.4
            output = (one_hot * phi) + ((1.0 - one_hot) * cosine)
            output *= self.s
            return output

    class AddMarginProduct(nn.Module):
        def __init__(self, in_features, out_features, s=30.0, m=0.40):
            super(AddMarginProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.s = s
            self.m = m
            self.weight = Parameter(weight_type(out_features, in_features))
            nn.init.xavier_uniform_(self.weight)

        def forward(self, input, label):
            cosine = F.linear(F.normalize(input), F.normalize(self.weight))
            phi = cosine - self.m
            one_hot = torch.zeros(cosine.size())
            one_hot.scatter_(1, label.view(-1, 1).long(), 1)
            output = (one_hot * phi) + ((1.0 - one_hot) * cosine)
            output *= self.s
            return output

    class SphereProduct(nn.Module):
        def __init__(self, in_features, out_features, m=4):
            super(SphereProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.m = m
            self.base = 1000.0
            self.gamma = 0.12
            self.power = 1
            self.LambdaMin = 5.0
            self.iter = 0
            self.weight = Parameter(weight_type(out_features, in_features))
            nn.init.xavier_uniform(self.weight)

            # duplication formula
            self.mlambda = [
                lambda x: x ** 0,
                lambda x: x ** 1,
                lambda x: 2 * x ** 2 - 1,
                lambda x: 4 * x ** 3 - 3 * x,
                lambda x: 8 * x ** 4 - 8 * x ** 2 + 1,
                lambda x: 16 * x ** 5 - 20 * x ** 3 + 5 * x
            ]

        def forward(self, input, label):
            # lambda = max(lambda_min,base*(1+gamma*iteration)^(-power))
            self.iter += 1
            self.lamb = max(self.LambdaMin, self.base * (1 + self.gamma * self.iter) ** (-1 * self.power))

            # --------------------------- cos(theta) & phi(theta) ---------------------------
            cos_theta = F.linear(F.normalize(input), F.normalize(self.weight))
            cos_theta = cos_theta.clamp(-1, 1)
            cos_m_theta = self.mlambda[self.m](cos_theta)
            theta = cos_theta.data.acos()
            k = (self.m * theta / 3.14159265).floor()
            phi_theta = ((-1.0) ** k) * cos_m_theta - 2 * k
            NormOfFeature = torch.norm(input, 2, 1)

            # --------------------------- convert label to one-hot ---------------------------
            one_hot = torch.zeros(cos_theta.size())
            one_hot = one_hot.cuda() if cos_theta.is_cuda else one_hot
            one_hot.scatter_(1, label.view(-1, 1), 1)

            # --------------------------- Calculate output ---------------------------
            output = (one_hot * (phi_theta - cos_theta) / (1 + self.lamb)) + cos_theta
            output *= NormOfFeature.view(-1, 1)

            return output

    return ArcMarginProduct, AddMarginProduct, SphereProduct


def focal_loss(torch, nn):
    """arcface-pytorch's models/focal_loss.py (train.py's ``FocalLoss(gamma=2)``)."""

    class FocalLoss(nn.Module):

        def __init__(self, gamma=0, eps=1e-7):
            super(FocalLoss, self).__init__()
            self.gamma = gamma
            self.eps = eps
            self.ce = torch.nn.CrossEntropyLoss()

        def forward(self, input, target):
            logp = self.ce(input, target)
            p = torch.exp(-logp)
            loss = (1 - p) ** self.gamma * logp
            return loss.mean()

    return FocalLoss(gamma=2)


def metric_model(torch, nn, F, head="arc", easy_margin=False, weight_type=None):
    """A tiny embedding net and the margin head, as arcface-pytorch's train.py pairs ``model`` and ``metric_fc``."""
    ArcMarginProduct, AddMarginProduct, SphereProduct = margin_heads(torch, nn, F, weight_type or torch.DoubleTensor)

    class Embedder(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(FEATURES, 16), nn.PReLU(), nn.Linear(16, EMBEDDING))
            self.bn = nn.BatchNorm1d(EMBEDDING)
            if head == "arc":
                self.metric_fc = ArcMarginProduct(EMBEDDING, CLASSES, s=30, m=0.5, easy_margin=easy_margin)
            elif head == "sphere":
                self.metric_fc = SphereProduct(EMBEDDING, CLASSES, m=4)
            else:
                self.metric_fc = AddMarginProduct(EMBEDDING, CLASSES, s=30, m=0.35)

        def forward(self, x):
            return self.bn(self.features(x))

    return Embedder()


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


def online_triplet_losses(torch, variant):
    """NegatioN/OnlineMiningTripletLoss's ``batch_hard_triplet_loss`` (the expanded-form distances, masks from
    ``labels.unsqueeze(0) == labels.unsqueeze(1)``, ``distances[distances < 0] = 0``, ``tl[tl < 0] = 0``); the
    ``cdist`` form with ``masked_fill`` as other repositories write it; ``nn.TripletMarginLoss`` on mined triplets."""

    def _pairwise_distances(embeddings, squared=False):
        dot_product = torch.matmul(embeddings, embeddings.t())
        square_norm = torch.diag(dot_product)
        distances = square_norm.unsqueeze(0) - 2.0 * dot_product + square_norm.unsqueeze(1)
        distances[distances < 0] = 0
        if not squared:
            mask = distances.eq(0).float()
            distances = distances + mask * 1e-16
            distances = (1.0 - mask) * torch.sqrt(distances)
        return distances

    def _get_anchor_positive_triplet_mask(labels):
        device = torch.device("cuda:0" if labels.is_cuda else "cpu")
        indices_equal = torch.eye(labels.size(0), device=device).bool()
        indices_not_equal = ~indices_equal
        labels_equal = labels.unsqueeze(0) == labels.unsqueeze(1)
        return labels_equal & indices_not_equal

    def _get_anchor_negative_triplet_mask(labels):
        return ~(labels.unsqueeze(0) == labels.unsqueeze(1))

    def batch_hard_triplet_loss(labels, embeddings, margin, squared=False):
        pairwise_dist = _pairwise_distances(embeddings, squared=squared)
        mask_anchor_positive = _get_anchor_positive_triplet_mask(labels).float()
        anchor_positive_dist = mask_anchor_positive * pairwise_dist
        hardest_positive_dist, _ = anchor_positive_dist.max(1, keepdim=True)
        mask_anchor_negative = _get_anchor_negative_triplet_mask(labels).float()
        max_anchor_negative_dist, _ = pairwise_dist.max(1, keepdim=True)
        anchor_negative_dist = pairwise_dist + max_anchor_negative_dist * (1.0 - mask_anchor_negative)
        hardest_negative_dist, _ = anchor_negative_dist.min(1, keepdim=True)
        tl = hardest_positive_dist - hardest_negative_dist + margin
        tl[tl < 0] = 0
        triplet_loss = tl.mean()
        return triplet_loss

    def batch_hard_cdist(labels, embeddings, margin):
        dist = torch.cdist(embeddings, embeddings, p=2)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        hardest_positive = dist.masked_fill(~same, 0).max(dim=1)[0]
        hardest_negative = dist.masked_fill(same, float("inf")).min(dim=1)[0]
        return F.relu(hardest_positive - hardest_negative + margin).mean()

    def mined_triplet_margin(labels, embeddings, margin):
        dist = torch.cdist(embeddings, embeddings)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        positive = dist.masked_fill(~same | torch.eye(len(labels), dtype=torch.bool), -1).argmax(dim=1)
        negative = dist.masked_fill(same, float("inf")).argmin(dim=1)
        criterion = torch.nn.TripletMarginLoss(margin=margin, p=2)
        return criterion(embeddings, embeddings[positive], embeddings[negative])

    F = torch.nn.functional
    losses = {"expanded": batch_hard_triplet_loss, "cdist": batch_hard_cdist, "TripletMarginLoss": mined_triplet_margin}
    return losses[variant]


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

DNC_CELLS, DNC_CELL, DNC_READS, DNC_INPUT, DNC_HIDDEN, DNC_BATCH, DNC_STEPS = 5, 3, 2, 4, 8, 2, 4


def dnc_memory(torch, nn, F, independent_linears=False):
    """ixaxaar/pytorch-dnc's ``Memory`` (dnc/memory.py) with its helpers (dnc/util.py: ``θ``, ``σ``, ``cuda``, ``δ``),
    as written there; a tiny controller around it (a Linear over the input and the previous reads, tanh) stands for
    dnc.py's RNN, and an output Linear over the controller output and the reads."""
    T = torch
    var = torch.autograd.Variable
    Tensor = torch.Tensor
    δ = 1e-6

    def cuda(x, grad=False, gpu_id=-1):
        return var(x, requires_grad=grad)

    def θ(a, b, dimA=2, dimB=2, normBy=2):
        """Batchwise Cosine distance"""
        a_norm = T.norm(a, normBy, dimA, keepdim=True).expand_as(a) + δ
        b_norm = T.norm(b, normBy, dimB, keepdim=True).expand_as(b) + δ
        x = T.bmm(a, b.transpose(1, 2)).transpose(1, 2) / (
            T.bmm(a_norm, b_norm.transpose(1, 2)).transpose(1, 2) + δ)
        return x

    def σ(input, axis=1):
        """Softmax on an axis"""
        input_size = input.size()
        trans_input = input.transpose(axis, len(input_size) - 1)
        trans_size = trans_input.size()
        input_2d = trans_input.contiguous().view(-1, trans_size[-1])
        soft_max_2d = F.softmax(input_2d, -1)
        soft_max_nd = soft_max_2d.view(*trans_size)
        return soft_max_nd.transpose(axis, len(input_size) - 1)

    class Memory(nn.Module):
        def __init__(self, input_size, nr_cells=512, cell_size=32, read_heads=4, gpu_id=-1, independent_linears=True):
            super(Memory, self).__init__()
            self.nr_cells = nr_cells
            self.cell_size = cell_size
            self.read_heads = read_heads
            self.gpu_id = gpu_id
            self.input_size = input_size
            self.independent_linears = independent_linears
            if self.independent_linears:
                self.read_keys_transform = nn.Linear(self.input_size, self.cell_size * self.read_heads)
                self.read_strengths_transform = nn.Linear(self.input_size, self.read_heads)
                self.write_key_transform = nn.Linear(self.input_size, self.cell_size)
                self.write_strength_transform = nn.Linear(self.input_size, 1)
                self.erase_vector_transform = nn.Linear(self.input_size, self.cell_size)
                self.write_vector_transform = nn.Linear(self.input_size, self.cell_size)
                self.free_gates_transform = nn.Linear(self.input_size, self.read_heads)
                self.allocation_gate_transform = nn.Linear(self.input_size, 1)
                self.write_gate_transform = nn.Linear(self.input_size, 1)
                self.read_modes_transform = nn.Linear(self.input_size, 3 * self.read_heads)
            else:
                self.interface_size = ((self.cell_size * self.read_heads) + (3 * self.cell_size)
                                       + (5 * self.read_heads) + 3)
                self.interface_weights = nn.Linear(self.input_size, self.interface_size)
            # n*n identity matrix - (1 * n * n)
            self.identity = cuda(1 - T.eye(self.nr_cells).unsqueeze(0), gpu_id=self.gpu_id)

        def new(self, batch_size=1):
            return {
                "memory": cuda(T.zeros(batch_size, self.nr_cells, self.cell_size), gpu_id=self.gpu_id),
                "link_matrix": cuda(T.zeros(batch_size, 1, self.nr_cells, self.nr_cells), gpu_id=self.gpu_id),
                "precedence": cuda(T.zeros(batch_size, 1, self.nr_cells), gpu_id=self.gpu_id),
                "read_weights": cuda(T.zeros(batch_size, self.read_heads, self.nr_cells), gpu_id=self.gpu_id),
                "write_weights": cuda(T.zeros(batch_size, 1, self.nr_cells), gpu_id=self.gpu_id),
                "usage_vector": cuda(T.zeros(batch_size, self.nr_cells), gpu_id=self.gpu_id),
            }

        def get_usage_vector(self, usage: Tensor, free_gates: Tensor, read_weights: Tensor, write_weights: Tensor):
            usage = usage + (1 - usage) * (1 - T.prod(1 - write_weights, 1))
            ψ = T.prod(1 - free_gates.unsqueeze(2) * read_weights, 1)
            return usage * ψ

        def allocate(self, usage: Tensor, write_gate: Tensor):
            # ensure values are not too small prior to cumprod.
            usage = δ + (1 - δ) * usage
            batch_size = usage.size(0)
            # free list
            sorted_usage, φ = T.topk(usage, self.nr_cells, dim=1, largest=False)
            # cumprod with exclusive=True
            v = var(sorted_usage.data.new(batch_size, 1).fill_(1))
            cat_sorted_usage = T.cat((v, sorted_usage), 1)
            prod_sorted_usage = T.cumprod(cat_sorted_usage, 1)[:, :-1]
            sorted_allocation_weights = (1 - sorted_usage) * prod_sorted_usage.squeeze()
            # construct the reverse sorting index
            _, φ_rev = T.topk(φ, k=self.nr_cells, dim=1, largest=False)
            allocation_weights = sorted_allocation_weights.gather(1, φ_rev.long())
            return allocation_weights.unsqueeze(1), usage

        def write_weighting(self, memory, write_content_weights, allocation_weights, write_gate, allocation_gate):
            ag = allocation_gate.unsqueeze(-1)
            wg = write_gate.unsqueeze(-1)
            return wg * (ag * allocation_weights + (1 - ag) * write_content_weights)

        def get_link_matrix(self, link_matrix, write_weights, precedence):
            precedence = precedence.unsqueeze(2)
            write_weights_i = write_weights.unsqueeze(3)
            write_weights_j = write_weights.unsqueeze(2)
            prev_scale = 1 - write_weights_i - write_weights_j
            new_link_matrix = write_weights_i * precedence
            link_matrix = prev_scale * link_matrix + new_link_matrix
            # trick to delete diag elems
            return self.identity.expand_as(link_matrix) * link_matrix

        def update_precedence(self, precedence, write_weights):
            return (1 - T.sum(write_weights, 2, keepdim=True)) * precedence + write_weights

        def write(self, write_key, write_vector, erase_vector, free_gates, read_strengths, write_strength, write_gate,
                  allocation_gate, hidden):
            hidden["usage_vector"] = self.get_usage_vector(
                hidden["usage_vector"], free_gates, hidden["read_weights"], hidden["write_weights"])
            write_content_weights = self.content_weightings(hidden["memory"], write_key, write_strength)
            alloc, _ = self.allocate(hidden["usage_vector"], allocation_gate * write_gate)
            hidden["write_weights"] = self.write_weighting(
                hidden["memory"], write_content_weights, alloc, write_gate, allocation_gate)
            weighted_resets = hidden["write_weights"].unsqueeze(3) * erase_vector.unsqueeze(2)
            reset_gate = T.prod(1 - weighted_resets, 1)
            hidden["memory"] = hidden["memory"] * reset_gate
            hidden["memory"] = hidden["memory"] + T.bmm(hidden["write_weights"].transpose(1, 2), write_vector)
            hidden["link_matrix"] = self.get_link_matrix(
                hidden["link_matrix"], hidden["write_weights"], hidden["precedence"])
            hidden["precedence"] = self.update_precedence(hidden["precedence"], hidden["write_weights"])
            return hidden

        def content_weightings(self, memory, keys, strengths):
            d = θ(memory, keys)
            return σ(d * strengths.unsqueeze(2), 2)

        def directional_weightings(self, link_matrix, read_weights):
            rw = read_weights.unsqueeze(1)
            f = T.matmul(link_matrix, rw.transpose(2, 3)).transpose(2, 3)
            b = T.matmul(rw, link_matrix)
            return f.transpose(1, 2), b.transpose(1, 2)

        def read_weightings(self, memory, content_weights, link_matrix, read_modes, read_weights):
            forward_weight, backward_weight = self.directional_weightings(link_matrix, read_weights)
            content_mode = read_modes[:, :, 2].contiguous().unsqueeze(2) * content_weights
            backward_mode = T.sum(read_modes[:, :, 0:1].contiguous().unsqueeze(3) * backward_weight, 2)
            forward_mode = T.sum(read_modes[:, :, 1:2].contiguous().unsqueeze(3) * forward_weight, 2)
            return backward_mode + content_mode + forward_mode

        def read_vectors(self, memory, read_weights):
            return T.bmm(read_weights, memory)

        def read(self, read_keys, read_strengths, read_modes, hidden):
            content_weights = self.content_weightings(hidden["memory"], read_keys, read_strengths)
            hidden["read_weights"] = self.read_weightings(
                hidden["memory"], content_weights, hidden["link_matrix"], read_modes, hidden["read_weights"])
            read_vectors = self.read_vectors(hidden["memory"], hidden["read_weights"])
            return read_vectors, hidden

        def forward(self, ξ, hidden):
            r = self.read_heads
            w = self.cell_size
            b = ξ.size()[0]
            if self.independent_linears:
                read_keys = T.tanh(self.read_keys_transform(ξ).view(b, r, w))
                read_strengths = F.softplus(self.read_strengths_transform(ξ).view(b, r))
                write_key = T.tanh(self.write_key_transform(ξ).view(b, 1, w))
                write_strength = F.softplus(self.write_strength_transform(ξ).view(b, 1))
                erase_vector = T.sigmoid(self.erase_vector_transform(ξ).view(b, 1, w))
                write_vector = T.tanh(self.write_vector_transform(ξ).view(b, 1, w))
                free_gates = T.sigmoid(self.free_gates_transform(ξ).view(b, r))
                allocation_gate = T.sigmoid(self.allocation_gate_transform(ξ).view(b, 1))
                write_gate = T.sigmoid(self.write_gate_transform(ξ).view(b, 1))
                read_modes = σ(self.read_modes_transform(ξ).view(b, r, 3), -1)
            else:
                ξ = self.interface_weights(ξ)
                read_keys = T.tanh(ξ[:, : r * w].contiguous().view(b, r, w))
                read_strengths = F.softplus(ξ[:, r * w: r * w + r].contiguous().view(b, r))
                write_key = T.tanh(ξ[:, r * w + r: r * w + r + w].contiguous().view(b, 1, w))
                write_strength = F.softplus(ξ[:, r * w + r + w].contiguous().view(b, 1))
                erase_vector = T.sigmoid(ξ[:, r * w + r + w + 1: r * w + r + 2 * w + 1].contiguous().view(b, 1, w))
                write_vector = T.tanh(ξ[:, r * w + r + 2 * w + 1: r * w + r + 3 * w + 1].contiguous().view(b, 1, w))
                free_gates = T.sigmoid(ξ[:, r * w + r + 3 * w + 1: r * w + 2 * r + 3 * w + 1].contiguous().view(b, r))
                allocation_gate = T.sigmoid(ξ[:, r * w + 2 * r + 3 * w + 1].contiguous().unsqueeze(1).view(b, 1))
                write_gate = T.sigmoid(ξ[:, r * w + 2 * r + 3 * w + 2].contiguous()).unsqueeze(1).view(b, 1)
                read_modes = σ(
                    ξ[:, r * w + 2 * r + 3 * w + 3: r * w + 5 * r + 3 * w + 3].contiguous().view(b, r, 3), -1)
            hidden = self.write(write_key, write_vector, erase_vector, free_gates, read_strengths, write_strength,
                                write_gate, allocation_gate, hidden)
            return self.read(read_keys, read_strengths, read_modes, hidden)

    class TinyDNC(nn.Module):
        def __init__(self):
            super().__init__()
            self.controller = nn.Linear(DNC_INPUT + DNC_READS * DNC_CELL, DNC_HIDDEN)
            self.memory = Memory(DNC_HIDDEN, nr_cells=DNC_CELLS, cell_size=DNC_CELL, read_heads=DNC_READS,
                                 independent_linears=independent_linears)
            self.output = nn.Linear(DNC_HIDDEN + DNC_READS * DNC_CELL, DNC_INPUT)

        def forward(self, input):
            batch_size, steps = input.size(0), input.size(1)
            hidden = self.memory.new(batch_size)
            reads = T.zeros(batch_size, DNC_READS * DNC_CELL)
            outputs = []
            for t in range(steps):
                controller_output = T.tanh(self.controller(T.cat([input[:, t], reads], 1)))
                read_vectors, hidden = self.memory(controller_output, hidden)
                reads = read_vectors.view(batch_size, -1)
                outputs.append(self.output(T.cat([controller_output, reads], 1)))
            return T.stack(outputs, 1)

    return TinyDNC()


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
