"""Porting probe: RWKV-4's RNN mode (BlinkDL's ``RWKV_in_150_lines.py``) on weights trained in GPT mode
(``test_porting_probes_rwkv.py``'s model) and saved by ``torch.save``: ``class RWKV_RNN(torch.jit.ScriptModule)`` with
``@torch.jit.script_method`` time/channel mixing (TorchScript in torch, Python in kiln), the weights loaded by
``torch.load`` into a ``types.SimpleNamespace`` tree, ``.float()``, the recurrent state as one ``(5 * n_layer, n_embd)``
tensor whose rows are read as views (``aa = state[5*i+2]``) and written by item assignment (``state[5*i+2] = ...``).

What broke: ``torch.jit.ScriptModule``/``script_method`` were missing (now in ``kiln.jit``); after
``state[5*i+2] = ...``, reading ``bb = state[5*i+3]`` (a view of another row, which the write left alone) was refused
("shares its storage ... kiln does not write through views") until views were made again from their base when read
(``frontend/view_writes.py``).
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from e2e.probe_lockstep import array, run_in_lockstep
from e2e.test_porting_probes_rwkv import CTX, EMBED, LAYERS, VOCAB, _data, rwkv, train_rwkv
from oracles import require_torch


def rwkv_rnn(torch, F, path, n_layer=LAYERS, n_embd=EMBED):
    class RWKV_RNN(torch.jit.ScriptModule):
        def __init__(self):
            super().__init__()
            self.eval()  # set torch to inference mode
            w = torch.load(path, map_location="cpu")
            for k in w.keys():
                if ".time_" in k:
                    w[k] = w[k].squeeze()
                if ".time_decay" in k:
                    w[k] = -torch.exp(w[k].float())  # the real time decay is like e^{-e^x}
                else:
                    w[k] = w[k].float()  # convert to f32 type
            self.w = types.SimpleNamespace()  # set self.w from w
            self.w.blocks = {}
            for k in w.keys():  # example: "blocks.0.att.time_first" => self.w.blocks[0].att.time_first
                parts = k.split(".")
                last = parts.pop()
                here = self.w
                for p in parts:
                    if p.isdigit():
                        p = int(p)
                        if p not in here:
                            here[p] = types.SimpleNamespace()
                        here = here[p]
                    else:
                        if not hasattr(here, p):
                            setattr(here, p, types.SimpleNamespace())
                        here = getattr(here, p)
                setattr(here, last, w[k])

        def layer_norm(self, x, w):
            return F.layer_norm(x, (n_embd,), weight=w.weight, bias=w.bias)

        @torch.jit.script_method
        def channel_mixing(self, x, state, i: int, time_mix_k, time_mix_r, kw, vw, rw):
            xk = x * time_mix_k + state[5 * i + 0] * (1 - time_mix_k)
            xr = x * time_mix_r + state[5 * i + 0] * (1 - time_mix_r)
            state[5 * i + 0] = x
            r = torch.sigmoid(rw @ xr)
            k = torch.square(torch.relu(kw @ xk))  # square relu, primer paper
            return r * (vw @ k)

        @torch.jit.script_method
        def time_mixing(self, x, state, i: int, time_mix_k, time_mix_v, time_mix_r, time_first, time_decay,
                        kw, vw, rw, ow):
            xk = x * time_mix_k + state[5 * i + 1] * (1 - time_mix_k)
            xv = x * time_mix_v + state[5 * i + 1] * (1 - time_mix_v)
            xr = x * time_mix_r + state[5 * i + 1] * (1 - time_mix_r)
            state[5 * i + 1] = x
            r = torch.sigmoid(rw @ xr)
            k = kw @ xk
            v = vw @ xv
            aa = state[5 * i + 2]
            bb = state[5 * i + 3]
            pp = state[5 * i + 4]
            ww = time_first + k
            qq = torch.maximum(pp, ww)
            e1 = torch.exp(pp - qq)
            e2 = torch.exp(ww - qq)
            a = e1 * aa + e2 * v
            b = e1 * bb + e2
            wkv = a / b
            ww = pp + time_decay
            qq = torch.maximum(ww, k)
            e1 = torch.exp(ww - qq)
            e2 = torch.exp(k - qq)
            state[5 * i + 2] = e1 * aa + e2 * v
            state[5 * i + 3] = e1 * bb + e2
            state[5 * i + 4] = qq
            return ow @ (r * wkv)

        def forward(self, token, state):
            with torch.no_grad():
                if state == None:  # noqa: E711  (as the original writes it)
                    state = torch.zeros(n_layer * 5, n_embd)
                    for i in range(n_layer):
                        state[5 * i + 4] = -1e30  # -infinity
                x = self.w.emb.weight[token]
                x = self.layer_norm(x, self.w.blocks[0].ln0)
                for i in range(n_layer):
                    att = self.w.blocks[i].att
                    x = x + self.time_mixing(self.layer_norm(x, self.w.blocks[i].ln1), state, i,
                                             att.time_mix_k, att.time_mix_v, att.time_mix_r, att.time_first,
                                             att.time_decay, att.key.weight, att.value.weight,
                                             att.receptance.weight, att.output.weight)
                    ffn = self.w.blocks[i].ffn
                    x = x + self.channel_mixing(self.layer_norm(x, self.w.blocks[i].ln2), state, i,
                                                ffn.time_mix_k, ffn.time_mix_r,
                                                ffn.key.weight, ffn.value.weight, ffn.receptance.weight)
                x = self.w.head.weight @ self.layer_norm(x, self.w.ln_out)
                return x.float(), state

    return RWKV_RNN()


def test_rwkv_rnn_mode_from_saved_weights_as_torch(tmp_path):
    """Train a few float32 steps (GPT mode), ``torch.save`` the state_dict, load it into RWKV_in_150_lines' RNN (a
    ``torch.jit.ScriptModule`` with ``@torch.jit.script_method``s: TorchScript in torch, Python in kiln) and feed the
    tokens one at a time: each token's logits equal GPT mode's at that position, and torch's RNN's."""
    require_torch()
    inputs = _data(1)[0][0]
    logits = {}

    def train_then_save(torch, nn, F, model):
        train_rwkv(steps=2)(torch, nn, F, model)
        path = str(tmp_path / f"{torch.__name__}.pth")
        torch.save(model.state_dict(), path)
        with torch.no_grad():
            gpt = array(model(torch.tensor(inputs)))
        rnn, state, steps = rwkv_rnn(torch, F, path), None, []
        for token in inputs[0].tolist():
            out, state = rnn(token, state)
            steps.append(array(out))
        logits[torch.__name__] = gpt, np.stack(steps)
        return {}

    run_in_lockstep(rwkv, train_then_save)
    (gpt, rnn), (their_gpt, their_rnn) = logits["kiln"], logits["torch"]
    assert rnn.dtype == np.float32 and rnn.shape == (CTX, VOCAB)
    np.testing.assert_allclose(rnn, gpt[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rnn, their_rnn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(their_rnn, their_gpt[0], rtol=1e-5, atol=1e-5)
