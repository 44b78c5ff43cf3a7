"""AWD-LSTM and QRNN language models as salesforce/awd-lstm-lm writes them (``weight_drop.py``,
``embed_regularize.py``, ``locked_dropout.py``, ``model.py``, ``main.py``; the QRNN's fo-pooling as torchqrnn's
Python reference ``ForgetMult`` loop), written once as a function of ``(torch, nn, F)``: ``torch`` is ``torch`` or
``kiln``. Used by ``test_porting_probes_awd_lstm_qrnn.py``."""

from __future__ import annotations

import numpy as np


def awd_modules(torch, nn, F):
    """The repository's building blocks: WeightDrop, embedded_dropout, LockedDropout, QRNN layer, RNNModel."""
    Parameter = torch.nn.Parameter  # weight_drop.py: from torch.nn import Parameter

    class WeightDrop(torch.nn.Module):
        def __init__(self, module, weights, dropout=0, variational=False):
            super(WeightDrop, self).__init__()
            self.module = module
            self.weights = weights
            self.dropout = dropout
            self.variational = variational
            self._setup()

        def widget_demagnetizer_y2k_edition(*args, **kwargs):
            # We need to replace flatten_parameters with a nothing function
            # It must be a function rather than a lambda as otherwise pickling explodes
            return

        def _setup(self):
            # Terrible temporary solution to an issue regarding compacting weights re: CUDNN RNN
            if issubclass(type(self.module), torch.nn.RNNBase):
                self.module.flatten_parameters = self.widget_demagnetizer_y2k_edition

            for name_w in self.weights:
                w = getattr(self.module, name_w)
                del self.module._parameters[name_w]
                self.module.register_parameter(name_w + '_raw', Parameter(w.data))

        def _setweights(self):
            for name_w in self.weights:
                raw_w = getattr(self.module, name_w + '_raw')
                w = None
                if self.variational:
                    mask = torch.autograd.Variable(torch.ones(raw_w.size(0), 1))
                    if raw_w.is_cuda: mask = mask.cuda()
                    mask = torch.nn.functional.dropout(mask, p=self.dropout, training=True)
                    w = mask.expand_as(raw_w) * raw_w
                else:
                    w = torch.nn.functional.dropout(raw_w, p=self.dropout, training=self.training)
                setattr(self.module, name_w, w)

        def forward(self, *args):
            self._setweights()
            return self.module.forward(*args)

    def embedded_dropout(embed, words, dropout=0.1, scale=None):
        if dropout:
            mask = embed.weight.data.new().resize_((embed.weight.size(0), 1)).bernoulli_(1 - dropout).expand_as(
                embed.weight) / (1 - dropout)
            masked_embed_weight = mask * embed.weight
        else:
            masked_embed_weight = embed.weight
        if scale:
            masked_embed_weight = scale.expand_as(masked_embed_weight) * masked_embed_weight

        padding_idx = embed.padding_idx
        if padding_idx is None:
            padding_idx = -1

        X = torch.nn.functional.embedding(words, masked_embed_weight, padding_idx, embed.max_norm, embed.norm_type,
                                          embed.scale_grad_by_freq, embed.sparse)
        return X

    class LockedDropout(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x, dropout=0.5):
            if not self.training or not dropout:
                return x
            m = x.data.new(1, x.size(1), x.size(2)).bernoulli_(1 - dropout)
            mask = torch.autograd.Variable(m, requires_grad=False) / (1 - dropout)
            mask = mask.expand_as(x)
            return mask * x

    class QRNNLayer(nn.Module):
        """torchqrnn's QRNNLayer (window 1 or 2, fo-pooling, ``output_gate``), its ForgetMult as the Python loop."""

        def __init__(self, input_size, hidden_size=None, save_prev_x=False, zoneout=0, window=1, output_gate=True):
            super(QRNNLayer, self).__init__()
            self.window = window
            self.input_size = input_size
            self.hidden_size = hidden_size if hidden_size else input_size
            self.zoneout = zoneout
            self.save_prev_x = save_prev_x
            self.prevX = None
            self.output_gate = output_gate
            self.linear = nn.Linear(self.window * self.input_size,
                                    3 * self.hidden_size if self.output_gate else 2 * self.hidden_size)

        def reset(self):
            self.prevX = None

        def forget_mult(self, f, x, hidden_init=None):
            result = []
            forgets = f.split(1, dim=0)
            prev_h = hidden_init
            for i, h in enumerate((f * x).split(1, dim=0)):
                if prev_h is not None:
                    h = h + (1 - forgets[i]) * prev_h
                h = h.view(h.size()[1:])
                result.append(h)
                prev_h = h
            return torch.stack(result)

        def forward(self, X, hidden=None):
            seq_len, batch_size, _ = X.size()
            source = None
            if self.window == 1:
                source = X
            elif self.window == 2:
                Xm1 = []
                Xm1.append(self.prevX if self.prevX is not None else X[:1, :, :] * 0)
                if len(X) > 1:
                    Xm1.append(X[:-1, :, :])
                Xm1 = torch.cat(Xm1, 0)
                source = torch.cat([X, Xm1], 2)
            Y = self.linear(source)
            if self.output_gate:
                Y = Y.view(seq_len, batch_size, 3 * self.hidden_size)
                Z, F_, O = Y.chunk(3, dim=2)
            else:
                Y = Y.view(seq_len, batch_size, 2 * self.hidden_size)
                Z, F_ = Y.chunk(2, dim=2)
            Z = torch.tanh(Z)
            F_ = torch.sigmoid(F_)
            Z = Z.contiguous()
            F_ = F_.contiguous()
            C = self.forget_mult(F_, Z, hidden)
            if self.output_gate:
                H = torch.sigmoid(O) * C
            else:
                H = C
            if self.window > 1 and self.save_prev_x:
                self.prevX = torch.autograd.Variable(X[-1:, :, :].data, requires_grad=False)
            return H, C[-1:, :, :]

    class HighwayQRNNLayer(nn.Module):
        """A QRNN layer with fo-pooling written as the Python recurrence (``h = f * h + (1 - f) * z``, stacked) and a
        highway connection around it (``t * relu(h) + (1 - t) * x``): input and hidden sizes equal."""

        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.hidden_size = hidden_size
            self.linear = nn.Linear(input_size, 2 * hidden_size)
            self.gate = nn.Linear(input_size, hidden_size)

        def reset(self):
            pass

        def forward(self, x, hidden=None):
            Y = self.linear(x)
            Z, F_ = Y.chunk(2, dim=2)
            Z = torch.tanh(Z)
            F_ = torch.sigmoid(F_)
            h = hidden[0] if hidden is not None else torch.zeros_like(Z[0])
            result = []
            for z, f in zip(Z, F_):
                h = f * h + (1 - f) * z
                result.append(h)
            h_all = torch.stack(result)
            t = torch.sigmoid(self.gate(x))
            return t * torch.relu(h_all) + (1 - t) * x, h.unsqueeze(0)

    class RNNModel(nn.Module):
        """Container module with an encoder, a recurrent module, and a decoder."""

        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, dropouth=0.5, dropouti=0.5,
                     dropoute=0.1, wdrop=0, tie_weights=False):
            super(RNNModel, self).__init__()
            self.lockdrop = LockedDropout()
            self.idrop = nn.Dropout(dropouti)
            self.hdrop = nn.Dropout(dropouth)
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            assert rnn_type in ['LSTM', 'QRNN', 'QRNN-highway'], 'RNN type is not supported'
            if rnn_type == 'LSTM':
                self.rnns = [torch.nn.LSTM(ninp if l == 0 else nhid, nhid if l != nlayers - 1 else (
                    ninp if tie_weights else nhid), 1, dropout=0) for l in range(nlayers)]
                if wdrop is not None:
                    self.rnns = [WeightDrop(rnn, ['weight_hh_l0'], dropout=wdrop) for rnn in self.rnns]
            elif rnn_type == 'QRNN':
                self.rnns = [QRNNLayer(input_size=ninp if l == 0 else nhid, hidden_size=nhid if l != nlayers - 1 else (
                    ninp if tie_weights else nhid), save_prev_x=True, zoneout=0, window=2 if l == 0 else 1,
                    output_gate=True) for l in range(nlayers)]
            elif rnn_type == 'QRNN-highway':
                self.rnns = [HighwayQRNNLayer(ninp, nhid) for l in range(nlayers)]
            self.rnns = torch.nn.ModuleList(self.rnns)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type = rnn_type
            self.ninp = ninp
            self.nhid = nhid
            self.nlayers = nlayers
            self.dropout = dropout
            self.dropouti = dropouti
            self.dropouth = dropouth
            self.dropoute = dropoute
            self.tie_weights = tie_weights

        def reset(self):
            if self.rnn_type.startswith('QRNN'):
                [r.reset() for r in self.rnns]

        def init_weights(self):
            initrange = 0.1
            self.encoder.weight.data.uniform_(-initrange, initrange)
            self.decoder.bias.data.fill_(0)
            self.decoder.weight.data.uniform_(-initrange, initrange)

        def forward(self, input, hidden, return_h=False):
            emb = embedded_dropout(self.encoder, input, dropout=self.dropoute if self.training else 0)
            emb = self.lockdrop(emb, self.dropouti)

            raw_output = emb
            new_hidden = []
            raw_outputs = []
            outputs = []
            for l, rnn in enumerate(self.rnns):
                raw_output, new_h = rnn(raw_output, hidden[l])
                new_hidden.append(new_h)
                raw_outputs.append(raw_output)
                if l != self.nlayers - 1:
                    raw_output = self.lockdrop(raw_output, self.dropouth)
                    outputs.append(raw_output)
            hidden = new_hidden

            output = self.lockdrop(raw_output, self.dropout)
            outputs.append(output)

            result = output.view(output.size(0) * output.size(1), output.size(2))
            if return_h:
                return result, hidden, raw_outputs, outputs
            return result, hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters()).data
            sizes = [self.nhid if l != self.nlayers - 1 else (self.ninp if self.tie_weights else self.nhid)
                     for l in range(self.nlayers)]
            if self.rnn_type == 'LSTM':
                return [(weight.new(1, bsz, size).zero_(), weight.new(1, bsz, size).zero_()) for size in sizes]
            return [weight.new(1, bsz, size).zero_() for size in sizes]

    return WeightDrop, embedded_dropout, LockedDropout, QRNNLayer, HighwayQRNNLayer, RNNModel


def repackage_hidden(torch, h):
    """Wraps hidden states in new Tensors, to detach them from their history (awd-lstm-lm's utils.py)."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    else:
        return tuple(repackage_hidden(torch, v) for v in h)


def batchify(data, bsz):
    """utils.batchify: the token stream cut into ``bsz`` columns."""
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    data = data.view(bsz, -1).t().contiguous()
    return data


def get_batch(source, i, bptt, seq_len=None):
    """utils.get_batch: the inputs ``source[i:i+seq_len]`` and the next tokens, flattened."""
    seq_len = min(seq_len if seq_len else bptt, len(source) - 1 - i)
    data = source[i:i + seq_len]
    target = source[i + 1:i + 1 + seq_len].view(-1)
    return data, target


class Args:
    """main.py's arguments, tiny."""
    emsize, nhid, nlayers, lr, clip, bptt, batch_size = 6, 7, 2, 10.0, 0.25, 5, 2
    dropout, dropouth, dropouti, dropoute, wdrop = 0.0, 0.0, 0.0, 0.0, 0.0
    alpha, beta, wdecay, nonmono, ntokens = 2.0, 1.0, 1.2e-6, 1, 11


class HighwayArgs(Args):
    """The highway QRNN adds each layer's input to its output: hidden size = embedding size."""
    nhid = 6


def corpus(seed=0, length=64):
    """A token stream with structure (a noisy cycle), so the loss falls."""
    rng = np.random.default_rng(seed)
    tokens = np.arange(length) % Args.ntokens
    noise = rng.random(length) < 0.2
    tokens[noise] = rng.integers(0, Args.ntokens, noise.sum())
    return tokens


def build_model(rnn_type, args=Args, wdrop=None):
    """``RNNModel`` with main.py's arguments (``wdrop`` in place of ``args.wdrop`` where given)."""
    def build(torch, nn, F):
        RNNModel = awd_modules(torch, nn, F)[-1]
        return RNNModel(rnn_type, args.ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.dropouth,
                        args.dropouti, args.dropoute, args.wdrop if wdrop is None else wdrop)
    return build


def criterion(F, weight, bias, output, targets):
    """SplitCrossEntropyLoss with no splits (a vocabulary this small): softmax cross entropy over the decoder."""
    return F.cross_entropy(F.linear(output, weight, bias), targets)


def evaluate(torch, F, model, data_source, args, batch_size):
    """main.py's evaluate: eval mode, the hidden state carried across bptt windows."""
    model.eval()
    if args.model.startswith('QRNN'):
        model.reset()
    total_loss = 0
    hidden = model.init_hidden(batch_size)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, args.bptt):
            data, targets = get_batch(data_source, i, args.bptt)
            output, hidden = model(data, hidden)
            total_loss += len(data) * criterion(F, model.decoder.weight, model.decoder.bias, output, targets).data
            hidden = repackage_hidden(torch, hidden)
    return total_loss.item() / len(data_source)


def train_epoch(torch, F, model, optimizer, params, train_data, args, seq_lens):
    """main.py's train(): variable bptt (the lengths given, drawn once), lr scaled by the length, AR and TAR,
    clip_grad_norm_; returns the losses, the first step's outputs and gradients."""
    if args.model.startswith('QRNN'):
        model.reset()
    hidden = model.init_hidden(args.batch_size)
    i, record = 0, {"losses": []}
    for seq_len in seq_lens:
        if i >= train_data.size(0) - 1 - 1:
            break
        lr2 = optimizer.param_groups[0]['lr']
        optimizer.param_groups[0]['lr'] = lr2 * seq_len / args.bptt
        model.train()
        data, targets = get_batch(train_data, i, args.bptt, seq_len=seq_len)
        hidden = repackage_hidden(torch, hidden)
        optimizer.zero_grad()
        output, hidden, rnn_hs, dropped_rnn_hs = model(data, hidden, return_h=True)
        raw_loss = criterion(F, model.decoder.weight, model.decoder.bias, output, targets)
        loss = raw_loss
        # Activation Regularization
        if args.alpha:
            loss = loss + sum(args.alpha * dropped_rnn_h.pow(2).mean() for dropped_rnn_h in dropped_rnn_hs[-1:])
        # Temporal Activation Regularization (slowness)
        if args.beta:
            loss = loss + sum(args.beta * (rnn_h[1:] - rnn_h[:-1]).pow(2).mean() for rnn_h in rnn_hs[-1:])
        loss.backward()
        record.setdefault("output", output.detach().numpy().copy())
        record.setdefault("grads", {name: p.grad.numpy().copy() for name, p in model.named_parameters()})
        if args.clip:
            record.setdefault("grad_norm", float(torch.nn.utils.clip_grad_norm_(params, args.clip)))
        optimizer.step()
        optimizer.param_groups[0]['lr'] = lr2
        record["losses"].append(raw_loss.item())
        i += seq_len
    return record


def nt_asgd_training(rnn_type, epochs=2):
    """main.py's loop: an SGD epoch, evaluate, switch to ``ASGD(t0=0, lambd=0.)`` (as main.py does once the
    validation loss stops improving for ``nonmono`` epochs), an ASGD epoch, then evaluate on the averaged weights
    (``prm.data = optimizer.state[prm]['ax'].clone()``) and swap the trained weights back."""
    stream = corpus()

    def train(torch, nn, F, model):
        args = type("args", (Args,), {"model": rnn_type})
        data = torch.tensor(stream)
        train_data, val_data = batchify(data[:48], args.batch_size), batchify(data[48:], 2)
        params = list(model.parameters())
        optimizer = torch.optim.SGD(params, lr=args.lr, weight_decay=args.wdecay)
        record = {}
        seq_lens = [5, 6, 5, 7]  # main.py draws max(5, int(np.random.normal(bptt, 5))): drawn once, the same in both
        for epoch in range(1, epochs + 1):
            record[f"epoch {epoch}"] = train_epoch(torch, F, model, optimizer, params, train_data, args, seq_lens)
            if 't0' in optimizer.param_groups[0]:
                tmp = {}
                for prm in model.parameters():
                    tmp[prm] = prm.data.clone()
                    prm.data = optimizer.state[prm]['ax'].clone()
                record["averaged state"] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
                record[f"val {epoch} (averaged)"] = evaluate(torch, F, model, val_data, args, 2)
                for prm in model.parameters():
                    prm.data = tmp[prm].clone()
            else:
                record[f"val {epoch}"] = evaluate(torch, F, model, val_data, args, 2)
                optimizer = torch.optim.ASGD(model.parameters(), lr=args.lr, t0=0, lambd=0., weight_decay=args.wdecay)
        record["state"] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        return record

    return train


def step_training(rnn_type, compiled=True, steps=3):
    """One training step of main.py (zero_grad, forward with AR and TAR, backward, clip_grad_norm_, SGD step) as
    ``kiln.compile(step, fullgraph=True)`` in kiln (or eagerly, ``compiled=False``), torch's eager loop in torch; the
    hidden state goes in and comes out of the step, repackaged (detached) between steps."""
    stream = corpus()

    def train(torch, nn, F, model):
        import kiln

        args = type("args", (Args,), {"model": rnn_type})
        train_data = batchify(torch.tensor(stream[:48]), args.batch_size)
        params = list(model.parameters())
        optimizer = torch.optim.SGD(params, lr=1.0, weight_decay=args.wdecay)

        def step(data, targets, hidden):
            optimizer.zero_grad()
            output, hidden, rnn_hs, dropped_rnn_hs = model(data, hidden, return_h=True)
            raw_loss = criterion(F, model.decoder.weight, model.decoder.bias, output, targets)
            loss = raw_loss + sum(args.alpha * h.pow(2).mean() for h in dropped_rnn_hs[-1:])
            loss = loss + sum(args.beta * (h[1:] - h[:-1]).pow(2).mean() for h in rnn_hs[-1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            optimizer.step()
            return raw_loss.detach(), repackage_hidden(torch, hidden)

        run = kiln.compile(step, fullgraph=True) if torch is kiln and compiled else step
        model.train()
        model.reset()
        hidden, losses = model.init_hidden(args.batch_size), []
        for i in range(0, steps * args.bptt, args.bptt):
            data, targets = get_batch(train_data, i, args.bptt)
            loss, hidden = run(data, targets, hidden)
            losses.append(loss.item())
        return {"losses": losses, "state": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}}

    return train


def next_word_scorer(torch, nn, model):
    """The trained language model for inference: the tokens and the initial hidden states flattened as inputs (what
    an exporter takes), the next word's log-probabilities out."""
    lstm = model.rnn_type == 'LSTM'

    class NextWordLogProbs(nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, data, *hidden):
            hidden = [tuple(hidden[i:i + 2]) for i in range(0, len(hidden), 2)] if lstm else list(hidden)
            output, hidden = self.lm(data, hidden)
            return self.lm.decoder(output).log_softmax(-1)

    hidden = [h for state in model.init_hidden(2) for h in (state if lstm else (state,))]
    return NextWordLogProbs(model).eval(), hidden


def split_cross_entropy_loss(torch, nn):
    """awd-lstm-lm's ``splitcross.py`` (SplitCrossEntropyLoss: a head softmax over the frequent words and one entry per
    tail, each tail its own softmax), its ``forward`` and ``split_on_targets`` as written (stats and verbose left out)."""

    class SplitCrossEntropyLoss(nn.Module):
        def __init__(self, hidden_size, splits, verbose=False):
            super(SplitCrossEntropyLoss, self).__init__()
            self.hidden_size = hidden_size
            self.splits = [0] + splits + [100 * 1000000]
            self.nsplits = len(self.splits) - 1
            self.verbose = verbose
            if self.nsplits > 1:
                self.tail_vectors = nn.Parameter(torch.zeros(self.nsplits - 1, hidden_size))
                self.tail_bias = nn.Parameter(torch.zeros(self.nsplits - 1))

        def logprob(self, weight, bias, hiddens, splits=None, softmaxed_head_res=None, verbose=False):
            results = []
            for idx in splits:
                start, end = self.splits[idx], self.splits[idx + 1]
                tail_weight = weight[start:end]
                tail_bias = bias[start:end]
                tail_res = torch.nn.functional.linear(hiddens, tail_weight, bias=tail_bias)
                head_entropy = (softmaxed_head_res[:, -idx]).contiguous()
                tail_entropy = torch.nn.functional.log_softmax(tail_res, dim=-1)
                results.append(head_entropy.view(-1, 1) + tail_entropy)
            if len(results) > 1:
                return torch.cat(results, dim=1)
            return results[0]

        def split_on_targets(self, hiddens, targets):
            split_targets = []
            split_hiddens = []
            mask = None
            for idx in range(1, self.nsplits):
                partial_mask = targets >= self.splits[idx]
                mask = mask + partial_mask if mask is not None else partial_mask
            for idx in range(self.nsplits):
                if self.nsplits == 1:
                    split_targets, split_hiddens = [targets], [hiddens]
                    continue
                if sum(len(t) for t in split_targets) == len(targets):
                    split_targets.append([])
                    split_hiddens.append([])
                    continue
                tmp_mask = mask == idx
                split_targets.append(torch.masked_select(targets, tmp_mask))
                split_hiddens.append(hiddens.masked_select(tmp_mask.unsqueeze(1).expand_as(hiddens)).view(
                    -1, hiddens.size(1)))
            return split_targets, split_hiddens

        def forward(self, weight, bias, hiddens, targets, verbose=False):
            total_loss = None
            if len(hiddens.size()) > 2:
                hiddens = hiddens.view(-1, hiddens.size(2))
            split_targets, split_hiddens = self.split_on_targets(hiddens, targets)
            start, end = self.splits[0], self.splits[1]
            head_weight = None if end - start == 0 else weight[start:end]
            head_bias = None if end - start == 0 else bias[start:end]
            if self.nsplits > 1:
                head_weight = self.tail_vectors if head_weight is None else torch.cat([head_weight, self.tail_vectors])
                head_bias = self.tail_bias if head_bias is None else torch.cat([head_bias, self.tail_bias])
            combo = torch.cat([split_hiddens[i] for i in range(self.nsplits) if len(split_hiddens[i])])
            all_head_res = torch.nn.functional.linear(combo, head_weight, bias=head_bias)
            softmaxed_all_head_res = torch.nn.functional.log_softmax(all_head_res, dim=-1)
            running_offset = 0
            for idx in range(self.nsplits):
                if len(split_targets[idx]) == 0:
                    continue
                if idx == 0:
                    softmaxed_head_res = softmaxed_all_head_res[running_offset:running_offset + len(split_hiddens[idx])]
                    entropy = -torch.gather(softmaxed_head_res, dim=1, index=split_targets[idx].view(-1, 1))
                else:
                    softmaxed_head_res = softmaxed_all_head_res[running_offset:running_offset + len(split_hiddens[idx])]
                    tail_res = self.logprob(weight, bias, split_hiddens[idx], splits=[idx],
                                            softmaxed_head_res=softmaxed_head_res)
                    head_entropy = softmaxed_head_res[:, -idx]
                    indices = (split_targets[idx] - self.splits[idx]).view(-1, 1)
                    tail_entropy = torch.gather(torch.nn.functional.log_softmax(tail_res, dim=-1), dim=1,
                                                index=indices).squeeze()
                    entropy = -(head_entropy + tail_entropy)
                running_offset += len(split_hiddens[idx])
                total_loss = entropy.float().sum() if total_loss is None else total_loss + entropy.float().sum()
            return (total_loss / len(targets)).type_as(weight)

    return SplitCrossEntropyLoss


def split_criterion_training(rnn_type, splits, compiled=False, steps=4):
    """main.py with its criterion: ``SplitCrossEntropyLoss(args.emsize, splits)`` whose tail vectors train with the
    model (``params = list(model.parameters()) + list(criterion.parameters())``); SGD steps, eagerly or (kiln,
    ``compiled=True``) as one ``kiln.compile(step, fullgraph=True)`` graph."""
    stream = corpus()

    def train(torch, nn, F, model):
        import kiln

        args = type("args", (Args,), {"model": rnn_type})
        criterion = split_cross_entropy_loss(torch, nn)(args.nhid, splits)
        train_data = batchify(torch.tensor(stream[:48]), args.batch_size)
        params = list(model.parameters()) + list(criterion.parameters())
        optimizer = torch.optim.SGD(params, lr=1.0)

        def step(data, targets, hidden):
            optimizer.zero_grad()
            output, hidden = model(data, hidden)
            loss = criterion(model.decoder.weight, model.decoder.bias, output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            optimizer.step()
            return loss.detach(), repackage_hidden(torch, hidden)

        run = kiln.compile(step, fullgraph=True) if torch is kiln and compiled else step
        model.train()
        hidden, losses = model.init_hidden(args.batch_size), []
        for i in range(0, steps * args.bptt, args.bptt):
            data, targets = get_batch(train_data, i, args.bptt)
            loss, hidden = run(data, targets, hidden)
            losses.append(loss.item())
        return {"losses": losses, "tail vectors": criterion.tail_vectors.detach().numpy().copy(),
                "state": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}}

    return train


def compiled_asgd_with_averaged_evaluation(rnn_type):
    """finetune.py's ``ASGD(t0=0, lambd=0.)`` steps as one ``kiln.compile(step, fullgraph=True)`` graph in kiln (torch's
    eager loop in torch; the lr scaled by each batch's length around the call, a new length a new trace), then main.py's evaluation on the averages (``prm.data = optimizer.state[prm]['ax'].clone()``)
    and the trained weights swapped back, then more compiled steps."""
    stream = corpus()

    def train(torch, nn, F, model):
        import kiln

        args = type("args", (Args,), {"model": rnn_type})
        train_data, val_data = batchify(torch.tensor(stream[:48]), 2), batchify(torch.tensor(stream[48:]), 2)
        params = list(model.parameters())
        optimizer = torch.optim.ASGD(params, lr=1.0, t0=0, lambd=0., weight_decay=args.wdecay)

        def step(data, targets, hidden):
            optimizer.zero_grad()
            output, hidden = model(data, hidden)
            loss = criterion(F, model.decoder.weight, model.decoder.bias, output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            optimizer.step()
            return loss.detach(), repackage_hidden(torch, hidden)

        run = kiln.compile(step, fullgraph=True) if torch is kiln else step
        record = {"losses": []}

        def train_on(i, seq_lens=(5, 6)):
            model.train()
            hidden = model.init_hidden(args.batch_size)
            for seq_len in seq_lens:  # main.py's variable bptt, the step's lr scaled by it
                lr2 = optimizer.param_groups[0]['lr']
                optimizer.param_groups[0]['lr'] = lr2 * seq_len / args.bptt
                loss, hidden = run(*get_batch(train_data, i, args.bptt, seq_len=seq_len), hidden)
                optimizer.param_groups[0]['lr'] = lr2
                record["losses"].append(loss.item())
                i += seq_len
            return i

        position = train_on(0)
        tmp = {}
        for prm in model.parameters():
            tmp[prm] = prm.data.clone()
            prm.data = optimizer.state[prm]['ax'].clone()
        record["averaged state"] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        record["val (averaged)"] = evaluate(torch, F, model, val_data, args, 2)
        for prm in model.parameters():
            prm.data = tmp[prm].clone()
        train_on(position)
        record["state"] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        return record

    return train


def pointer_evaluation(window=6, theta=1.0, lambdasm=0.3):
    """pointer.py's continuous cache pointer over a trained model (batch 1): NumPy one-hot rows of the next words
    (``a[0][idx] = 1`` with a 0-d tensor index, ``torch.from_numpy``), the hidden-state history, ``torch.mv`` scores,
    softmax without ``dim`` (PyTorch's implicit-dim warning), ``p[targets[idx].data]`` and ``loss += (...).data``."""
    stream = corpus()

    def run(torch, nn, F, model):
        Variable = torch.autograd.Variable  # pointer.py: from torch.autograd import Variable

        args = type("args", (Args,), {"model": model.rnn_type})
        ntokens = args.ntokens

        def one_hot(idx, size, cuda=False):
            a = np.zeros((1, size), np.float32)
            a[0][idx] = 1
            v = Variable(torch.from_numpy(a))
            if cuda:
                v = v.cuda()
            return v

        data_source = batchify(torch.tensor(stream[40:]), 1)
        model.eval()
        total_loss = 0
        hidden = model.init_hidden(1)
        next_word_history = None
        pointer_history = None
        for i in range(0, data_source.size(0) - 1, args.bptt):
            data, targets = get_batch(data_source, i, args.bptt)
            output, hidden, rnn_outs, _ = model(data, hidden, return_h=True)
            rnn_out = rnn_outs[-1].squeeze()
            output_flat = model.decoder(output).view(-1, ntokens)
            start_idx = len(next_word_history) if next_word_history is not None else 0
            next_word_history = torch.cat([one_hot(t.data, ntokens) for t in targets]) if next_word_history is None \
                else torch.cat([next_word_history, torch.cat([one_hot(t.data, ntokens) for t in targets])])
            pointer_history = Variable(rnn_out.data) if pointer_history is None \
                else torch.cat([pointer_history, Variable(rnn_out.data)], dim=0)
            loss = 0
            softmax_output_flat = torch.nn.functional.softmax(output_flat)
            for idx, vocab_loss in enumerate(softmax_output_flat):
                p = vocab_loss
                if start_idx + idx > window:
                    valid_next_word = next_word_history[start_idx + idx - window:start_idx + idx]
                    valid_pointer_history = pointer_history[start_idx + idx - window:start_idx + idx]
                    logits = torch.mv(valid_pointer_history, rnn_out[idx])
                    ptr_attn = torch.nn.functional.softmax(theta * logits).view(-1, 1)
                    ptr_dist = (ptr_attn.expand_as(valid_next_word) * valid_next_word).sum(0).squeeze()
                    p = lambdasm * ptr_dist + (1 - lambdasm) * vocab_loss
                target_loss = p[targets[idx].data]
                loss += (-torch.log(target_loss)).data
            total_loss += loss / 1
            next_word_history = next_word_history[-window:]
            pointer_history = pointer_history[-window:]
        return {"pointer loss": float(total_loss) / len(data_source), "history": next_word_history.numpy().copy()}

    return run
