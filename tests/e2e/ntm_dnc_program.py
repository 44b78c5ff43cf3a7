"""The memory-augmented networks as their repositories write them: loudinthecloud/pytorch-ntm's ``EncapsulatedNTM``
and ixaxaar/pytorch-dnc's ``Memory`` in a tiny controller, written once for ``torch`` being torch or kiln: the programs
of ``test_porting_probes_ntm_settransformer_arcface.py``, whose docstring says what it covers."""

from __future__ import annotations

import numpy as np


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


# --- pytorch-dnc (dnc/memory.py, dnc/util.py) -------------------------------------------------------------------------

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
