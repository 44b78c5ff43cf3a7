"""Porting probes: two speech-synthesis families, each written once as its reference writes it (``torch`` is ``torch``
or ``kiln``) and run in both libraries from kiln's initial weights; float64 to 1e-10.

**Tacotron 2** (NVIDIA/tacotron2's ``layers.py``, ``model.py``, ``utils.py``, ``loss_function.py``, ``train.py``):
``LinearNorm``/``ConvNorm`` with ``xavier_uniform_(..., gain=calculate_gain(w_init_gain))``, the embedding's
``weight.data.uniform_(-val, val)``, the encoder (Conv1d + BatchNorm1d banks, ``input_lengths.cpu().numpy()``,
``pack_padded_sequence``/``pad_packed_sequence`` around a bidirectional LSTM), the Prenet (``F.dropout(...,
training=True)``, always on), location-sensitive attention (``LocationLayer`` over ``torch.cat((attention_weights
.unsqueeze(1), attention_weights_cum.unsqueeze(1)), dim=1)``, ``energies.squeeze(-1)``,
``alignment.data.masked_fill_(mask, -inf)``, ``F.softmax``, ``torch.bmm``), the decoder loop (two ``nn.LSTMCell``,
states cached on the module by ``Variable(memory.data.new(B, n).zero_())`` and ``+=``), ``get_mask_from_lengths``
(``torch.max(lengths).item()``, ``torch.arange(0, max_len, out=torch.LongTensor(max_len))`` on CPU), the postnet,
``parse_output``'s masking through ``.data.masked_fill_``, ``Tacotron2Loss`` (``nn.MSELoss()`` twice +
``nn.BCEWithLogitsLoss()``), ``model.zero_grad()``, ``clip_grad_norm_``, Adam with weight decay; and ``inference``
(eager: the gate threshold ends a data-dependent loop).
Eager training, and the teacher-forced step (zero_grad, forward, loss, backward, clip, Adam) as one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop. The dropouts are hparams here (``prenet_dropout``
and the others, 0.5 in the reference, 0 in the lockstep: the two libraries draw different masks); the Prenet's
always-on dropout is checked for what it draws (``test_prenet_dropout_stays_on_in_eval_as_the_reference``).

**HiFi-GAN** (jik876/hifi-gan's ``models.py``, ``utils.py``, ``meldataset.py``, ``train.py``): the generator
(``weight_norm(ConvTranspose1d(...))`` upsampling, ``ResBlock1`` with dilations and ``F.leaky_relu(x, LRELU_SLOPE)``,
``xs +=`` over the kernels), ``init_weights``'s ``m.weight.data.normal_(mean, std)`` (which weight norm's pre-hook
overwrites at the next forward, in both), ``remove_weight_norm``, the multi-period discriminator (``F.pad(x, (0,
n_pad), "reflect")``, ``x.view(b, c, t // period, period)``, ``Conv2d`` with ``(kernel_size, 1)``), the multi-scale
one (``spectral_norm`` on its first scale, grouped Conv1d, ``AvgPool1d(4, 2, padding=2)``), ``feature_loss``,
``discriminator_loss`` (its ``.item()`` lists), ``generator_loss``, the mel loss (``mel_spectrogram`` with
``torch.stft(..., return_complex=True)``, ``torch.view_as_real``, a librosa-free Slaney mel basis built in NumPy and
``torch.from_numpy``), both steps with two AdamW and ExponentialLR. Eager, and the generator step as one
``kiln.compile(fullgraph=True)`` graph (its spectral-norm power iterations and the discriminators' accumulated
gradients included) between eager discriminator steps; the generator after ``remove_weight_norm`` through
``kiln.onnx.export`` and onnxruntime, and ``kiln.compile`` (float32). Both families also train eagerly in float32, at
float32's level.

Changes to the reference text, each a line: widths are tiny (the discriminators' 1024 channels are a few, ``Conv1d(80,
...)`` takes ``h.num_mels``); the mel basis is cast to the signal's dtype (``.to(y.dtype)``, the reference's
``.float()`` is float32's); ``mel_spectrogram``'s range check (``if torch.min(y) < -1.: print(...)``, a data-dependent
``if``) is off inside the compiled generator step (``torch.compile(fullgraph=True)`` refuses it too). In the
compiled Tacotron step, ``input_lengths.cpu().numpy()`` and ``torch.max(lengths).item()`` of the step's arguments are
specialized and guarded (``frontend/value_guards.py``; ``torch.compile(fullgraph=True)`` refuses the step: Dynamo skips
``pack_padded_sequence``).

What broke (each fixed in kiln, with a test next to its code):

- ``torch.autograd.Variable`` and ``Tensor.new`` were missing (``frontend/legacy_variable.py``,
  ``frontend/tensor_more.py``; tests/frontend/test_torch_surface_legacy_variable.py).
- ``torch.arange(..., out=...)`` was refused (no ``out``) (``frontend/out_argument.py``;
  tests/frontend/test_torch_surface_arange_out.py).
- ``outputs[0].data.masked_fill_(mask, 0.0)`` after the postnet read the outputs: ``backward()`` raised "modified by
  an inplace operation"; ``x.data`` now has a version counter of its own, as torch's, and the backward of an op that
  saved ``x`` (or kiln's own view of it, conv1d's ``x.unsqueeze(2)``) reads the new values, torch's shared storage
  (``frontend/version_counter.py``; tests/runtime/test_data_alias_writes_vs_torch.py).
- Compiled: the decoder's ``self.attention_weights_cum = Variable(...zero_())`` (a constant) became an eager tensor
  lifted to an input, so each call started from the last call's sum (losses drifted from step 2; a compiled module
  refused the ``+=``); and deciding it was constant walked the decoder loop's graph once per path (exponential: the
  step never finished compiling) (``frontend/module.py``, ``runtime/eager.py``;
  tests/runtime/test_compiled_module_cached_constants.py).
- Compiled: ``torch.max(lengths.data).item()`` and ``lengths.cpu().numpy()`` raised (the known-value walk stopped at
  ``.data``'s ``stop_gradient``; ``numpy()`` of a traced tensor always raised; it now gives the values the trace knows
  or specializes on, as ``item()``) (``frontend/trace_known_values.py``, ``frontend/tensor_methods.py``;
  tests/runtime/test_compiled_known_values_through_data.py).
- Compiled, the same ``parse_output`` masking left the postnet's first conv weight gradient reading the outputs from
  before the write (the trace rebinds the tensor; torch's backward reads the shared storage): the backward's ops now
  read the values written through ``.data`` (``frontend/traced_data_writes.py``;
  tests/runtime/test_data_alias_writes_vs_torch.py).

HiFi-GAN agreed to 1e-10 as first written.
"""

from __future__ import annotations

import io
import itertools
from math import sqrt
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require

# torch 2.13 (and kiln) deprecate nn.utils.weight_norm, which HiFi-GAN writes, for the parametrization.
pytestmark = pytest.mark.filterwarnings("ignore:.*nn.utils.weight_norm. is deprecated:FutureWarning")

# --- Tacotron 2 ---------------------------------------------------------------------------------------------------

def tacotron2(torch, nn, F, **overrides):
    """NVIDIA/tacotron2's layers.py, model.py, utils.py and loss_function.py (``hparams`` from ``HPARAMS``); the model
    carries its ``criterion`` (``Tacotron2Loss``) and ``get_mask_from_lengths``."""
    def get_mask_from_lengths(lengths):
        max_len = torch.max(lengths).item()
        ids = torch.arange(0, max_len, out=torch.LongTensor(max_len))  # torch.cuda.LongTensor in the reference
        mask = (ids < lengths.unsqueeze(1)).bool()
        return mask

    class LinearNorm(torch.nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, w_init_gain='linear'):
            super(LinearNorm, self).__init__()
            self.linear_layer = torch.nn.Linear(in_dim, out_dim, bias=bias)

            torch.nn.init.xavier_uniform_(
                self.linear_layer.weight,
                gain=torch.nn.init.calculate_gain(w_init_gain))

        def forward(self, x):
            return self.linear_layer(x)

    class ConvNorm(torch.nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size=1, stride=1,
                     padding=None, dilation=1, bias=True, w_init_gain='linear'):
            super(ConvNorm, self).__init__()
            if padding is None:
                assert (kernel_size % 2 == 1)
                padding = int(dilation * (kernel_size - 1) / 2)

            self.conv = torch.nn.Conv1d(in_channels, out_channels,
                                        kernel_size=kernel_size, stride=stride,
                                        padding=padding, dilation=dilation,
                                        bias=bias)

            torch.nn.init.xavier_uniform_(
                self.conv.weight, gain=torch.nn.init.calculate_gain(w_init_gain))

        def forward(self, signal):
            conv_signal = self.conv(signal)
            return conv_signal

    class LocationLayer(nn.Module):
        def __init__(self, attention_n_filters, attention_kernel_size,
                     attention_dim):
            super(LocationLayer, self).__init__()
            padding = int((attention_kernel_size - 1) / 2)
            self.location_conv = ConvNorm(2, attention_n_filters,
                                          kernel_size=attention_kernel_size,
                                          padding=padding, bias=False, stride=1,
                                          dilation=1)
            self.location_dense = LinearNorm(attention_n_filters, attention_dim,
                                             bias=False, w_init_gain='tanh')

        def forward(self, attention_weights_cat):
            processed_attention = self.location_conv(attention_weights_cat)
            processed_attention = processed_attention.transpose(1, 2)
            processed_attention = self.location_dense(processed_attention)
            return processed_attention

    class Attention(nn.Module):
        def __init__(self, attention_rnn_dim, embedding_dim, attention_dim,
                     attention_location_n_filters, attention_location_kernel_size):
            super(Attention, self).__init__()
            self.query_layer = LinearNorm(attention_rnn_dim, attention_dim,
                                          bias=False, w_init_gain='tanh')
            self.memory_layer = LinearNorm(embedding_dim, attention_dim, bias=False,
                                           w_init_gain='tanh')
            self.v = LinearNorm(attention_dim, 1, bias=False)
            self.location_layer = LocationLayer(attention_location_n_filters,
                                                attention_location_kernel_size,
                                                attention_dim)
            self.score_mask_value = -float("inf")

        def get_alignment_energies(self, query, processed_memory,
                                   attention_weights_cat):
            processed_query = self.query_layer(query.unsqueeze(1))
            processed_attention_weights = self.location_layer(attention_weights_cat)
            energies = self.v(torch.tanh(
                processed_query + processed_attention_weights + processed_memory))

            energies = energies.squeeze(-1)
            return energies

        def forward(self, attention_hidden_state, memory, processed_memory,
                    attention_weights_cat, mask):
            alignment = self.get_alignment_energies(
                attention_hidden_state, processed_memory, attention_weights_cat)

            if mask is not None:
                alignment.data.masked_fill_(mask, self.score_mask_value)

            attention_weights = F.softmax(alignment, dim=1)
            attention_context = torch.bmm(attention_weights.unsqueeze(1), memory)
            attention_context = attention_context.squeeze(1)

            return attention_context, attention_weights

    class Prenet(nn.Module):
        def __init__(self, in_dim, sizes, p=0.5):
            super(Prenet, self).__init__()
            in_sizes = [in_dim] + sizes[:-1]
            self.layers = nn.ModuleList(
                [LinearNorm(in_size, out_size, bias=False)
                 for (in_size, out_size) in zip(in_sizes, sizes)])
            self.p = p

        def forward(self, x):
            for linear in self.layers:
                x = F.dropout(F.relu(linear(x)), p=self.p, training=True)
            return x

    class Postnet(nn.Module):
        def __init__(self, hparams):
            super(Postnet, self).__init__()
            self.convolutions = nn.ModuleList()
            self.p = hparams.postnet_dropout

            self.convolutions.append(
                nn.Sequential(
                    ConvNorm(hparams.n_mel_channels, hparams.postnet_embedding_dim,
                             kernel_size=hparams.postnet_kernel_size, stride=1,
                             padding=int((hparams.postnet_kernel_size - 1) / 2),
                             dilation=1, w_init_gain='tanh'),
                    nn.BatchNorm1d(hparams.postnet_embedding_dim))
            )

            for i in range(1, hparams.postnet_n_convolutions - 1):
                self.convolutions.append(
                    nn.Sequential(
                        ConvNorm(hparams.postnet_embedding_dim,
                                 hparams.postnet_embedding_dim,
                                 kernel_size=hparams.postnet_kernel_size, stride=1,
                                 padding=int((hparams.postnet_kernel_size - 1) / 2),
                                 dilation=1, w_init_gain='tanh'),
                        nn.BatchNorm1d(hparams.postnet_embedding_dim))
                )

            self.convolutions.append(
                nn.Sequential(
                    ConvNorm(hparams.postnet_embedding_dim, hparams.n_mel_channels,
                             kernel_size=hparams.postnet_kernel_size, stride=1,
                             padding=int((hparams.postnet_kernel_size - 1) / 2),
                             dilation=1, w_init_gain='linear'),
                    nn.BatchNorm1d(hparams.n_mel_channels))
            )

        def forward(self, x):
            for i in range(len(self.convolutions) - 1):
                x = F.dropout(torch.tanh(self.convolutions[i](x)), self.p, self.training)
            x = F.dropout(self.convolutions[-1](x), self.p, self.training)

            return x

    class Encoder(nn.Module):
        def __init__(self, hparams):
            super(Encoder, self).__init__()
            self.p = hparams.encoder_dropout

            convolutions = []
            for _ in range(hparams.encoder_n_convolutions):
                conv_layer = nn.Sequential(
                    ConvNorm(hparams.encoder_embedding_dim,
                             hparams.encoder_embedding_dim,
                             kernel_size=hparams.encoder_kernel_size, stride=1,
                             padding=int((hparams.encoder_kernel_size - 1) / 2),
                             dilation=1, w_init_gain='relu'),
                    nn.BatchNorm1d(hparams.encoder_embedding_dim))
                convolutions.append(conv_layer)
            self.convolutions = nn.ModuleList(convolutions)

            self.lstm = nn.LSTM(hparams.encoder_embedding_dim,
                                int(hparams.encoder_embedding_dim / 2), 1,
                                batch_first=True, bidirectional=True)

        def forward(self, x, input_lengths):
            for conv in self.convolutions:
                x = F.dropout(F.relu(conv(x)), self.p, self.training)

            x = x.transpose(1, 2)

            # pytorch tensor are not reversible, hence the conversion
            input_lengths = input_lengths.cpu().numpy()
            x = nn.utils.rnn.pack_padded_sequence(
                x, input_lengths, batch_first=True)

            self.lstm.flatten_parameters()
            outputs, _ = self.lstm(x)

            outputs, _ = nn.utils.rnn.pad_packed_sequence(
                outputs, batch_first=True)

            return outputs

        def inference(self, x):
            for conv in self.convolutions:
                x = F.dropout(F.relu(conv(x)), self.p, self.training)

            x = x.transpose(1, 2)

            self.lstm.flatten_parameters()
            outputs, _ = self.lstm(x)

            return outputs

    class Decoder(nn.Module):
        def __init__(self, hparams):
            super(Decoder, self).__init__()
            self.n_mel_channels = hparams.n_mel_channels
            self.n_frames_per_step = hparams.n_frames_per_step
            self.encoder_embedding_dim = hparams.encoder_embedding_dim
            self.attention_rnn_dim = hparams.attention_rnn_dim
            self.decoder_rnn_dim = hparams.decoder_rnn_dim
            self.prenet_dim = hparams.prenet_dim
            self.max_decoder_steps = hparams.max_decoder_steps
            self.gate_threshold = hparams.gate_threshold
            self.p_attention_dropout = hparams.p_attention_dropout
            self.p_decoder_dropout = hparams.p_decoder_dropout

            self.prenet = Prenet(
                hparams.n_mel_channels * hparams.n_frames_per_step,
                [hparams.prenet_dim, hparams.prenet_dim], p=hparams.prenet_dropout)

            self.attention_rnn = nn.LSTMCell(
                hparams.prenet_dim + hparams.encoder_embedding_dim,
                hparams.attention_rnn_dim)

            self.attention_layer = Attention(
                hparams.attention_rnn_dim, hparams.encoder_embedding_dim,
                hparams.attention_dim, hparams.attention_location_n_filters,
                hparams.attention_location_kernel_size)

            self.decoder_rnn = nn.LSTMCell(
                hparams.attention_rnn_dim + hparams.encoder_embedding_dim,
                hparams.decoder_rnn_dim, 1)

            self.linear_projection = LinearNorm(
                hparams.decoder_rnn_dim + hparams.encoder_embedding_dim,
                hparams.n_mel_channels * hparams.n_frames_per_step)

            self.gate_layer = LinearNorm(
                hparams.decoder_rnn_dim + hparams.encoder_embedding_dim, 1,
                bias=True, w_init_gain='sigmoid')

        def get_go_frame(self, memory):
            B = memory.size(0)
            decoder_input = Variable(memory.data.new(
                B, self.n_mel_channels * self.n_frames_per_step).zero_())
            return decoder_input

        def initialize_decoder_states(self, memory, mask):
            B = memory.size(0)
            MAX_TIME = memory.size(1)

            self.attention_hidden = Variable(memory.data.new(
                B, self.attention_rnn_dim).zero_())
            self.attention_cell = Variable(memory.data.new(
                B, self.attention_rnn_dim).zero_())

            self.decoder_hidden = Variable(memory.data.new(
                B, self.decoder_rnn_dim).zero_())
            self.decoder_cell = Variable(memory.data.new(
                B, self.decoder_rnn_dim).zero_())

            self.attention_weights = Variable(memory.data.new(
                B, MAX_TIME).zero_())
            self.attention_weights_cum = Variable(memory.data.new(
                B, MAX_TIME).zero_())
            self.attention_context = Variable(memory.data.new(
                B, self.encoder_embedding_dim).zero_())

            self.memory = memory
            self.processed_memory = self.attention_layer.memory_layer(memory)
            self.mask = mask

        def parse_decoder_inputs(self, decoder_inputs):
            # (B, n_mel_channels, T_out) -> (B, T_out, n_mel_channels)
            decoder_inputs = decoder_inputs.transpose(1, 2)
            decoder_inputs = decoder_inputs.view(
                decoder_inputs.size(0),
                int(decoder_inputs.size(1) / self.n_frames_per_step), -1)
            # (B, T_out, n_mel_channels) -> (T_out, B, n_mel_channels)
            decoder_inputs = decoder_inputs.transpose(0, 1)
            return decoder_inputs

        def parse_decoder_outputs(self, mel_outputs, gate_outputs, alignments):
            # (T_out, B) -> (B, T_out)
            alignments = torch.stack(alignments).transpose(0, 1)
            # (T_out, B) -> (B, T_out)
            gate_outputs = torch.stack(gate_outputs).transpose(0, 1)
            gate_outputs = gate_outputs.contiguous()
            # (T_out, B, n_mel_channels) -> (B, T_out, n_mel_channels)
            mel_outputs = torch.stack(mel_outputs).transpose(0, 1).contiguous()
            # decouple frames per step
            mel_outputs = mel_outputs.view(
                mel_outputs.size(0), -1, self.n_mel_channels)
            # (B, T_out, n_mel_channels) -> (B, n_mel_channels, T_out)
            mel_outputs = mel_outputs.transpose(1, 2)

            return mel_outputs, gate_outputs, alignments

        def decode(self, decoder_input):
            cell_input = torch.cat((decoder_input, self.attention_context), -1)
            self.attention_hidden, self.attention_cell = self.attention_rnn(
                cell_input, (self.attention_hidden, self.attention_cell))
            self.attention_hidden = F.dropout(
                self.attention_hidden, self.p_attention_dropout, self.training)

            attention_weights_cat = torch.cat(
                (self.attention_weights.unsqueeze(1),
                 self.attention_weights_cum.unsqueeze(1)), dim=1)
            self.attention_context, self.attention_weights = self.attention_layer(
                self.attention_hidden, self.memory, self.processed_memory,
                attention_weights_cat, self.mask)

            self.attention_weights_cum += self.attention_weights
            decoder_input = torch.cat(
                (self.attention_hidden, self.attention_context), -1)
            self.decoder_hidden, self.decoder_cell = self.decoder_rnn(
                decoder_input, (self.decoder_hidden, self.decoder_cell))
            self.decoder_hidden = F.dropout(
                self.decoder_hidden, self.p_decoder_dropout, self.training)

            decoder_hidden_attention_context = torch.cat(
                (self.decoder_hidden, self.attention_context), dim=1)
            decoder_output = self.linear_projection(
                decoder_hidden_attention_context)

            gate_prediction = self.gate_layer(decoder_hidden_attention_context)
            return decoder_output, gate_prediction, self.attention_weights

        def forward(self, memory, decoder_inputs, memory_lengths):
            decoder_input = self.get_go_frame(memory).unsqueeze(0)
            decoder_inputs = self.parse_decoder_inputs(decoder_inputs)
            decoder_inputs = torch.cat((decoder_input, decoder_inputs), dim=0)
            decoder_inputs = self.prenet(decoder_inputs)

            self.initialize_decoder_states(
                memory, mask=~get_mask_from_lengths(memory_lengths))

            mel_outputs, gate_outputs, alignments = [], [], []
            while len(mel_outputs) < decoder_inputs.size(0) - 1:
                decoder_input = decoder_inputs[len(mel_outputs)]
                mel_output, gate_output, attention_weights = self.decode(
                    decoder_input)
                mel_outputs += [mel_output.squeeze(1)]
                gate_outputs += [gate_output.squeeze(1)]
                alignments += [attention_weights]

            mel_outputs, gate_outputs, alignments = self.parse_decoder_outputs(
                mel_outputs, gate_outputs, alignments)

            return mel_outputs, gate_outputs, alignments

        def inference(self, memory):
            decoder_input = self.get_go_frame(memory)

            self.initialize_decoder_states(memory, mask=None)

            mel_outputs, gate_outputs, alignments = [], [], []
            while True:
                decoder_input = self.prenet(decoder_input)
                mel_output, gate_output, alignment = self.decode(decoder_input)

                mel_outputs += [mel_output.squeeze(1)]
                gate_outputs += [gate_output]
                alignments += [alignment]

                if torch.sigmoid(gate_output.data) > self.gate_threshold:
                    break
                elif len(mel_outputs) == self.max_decoder_steps:
                    print("Warning! Reached max decoder steps")
                    break

                decoder_input = mel_output

            mel_outputs, gate_outputs, alignments = self.parse_decoder_outputs(
                mel_outputs, gate_outputs, alignments)

            return mel_outputs, gate_outputs, alignments

    class Tacotron2(nn.Module):
        def __init__(self, hparams):
            super(Tacotron2, self).__init__()
            self.mask_padding = hparams.mask_padding
            self.fp16_run = hparams.fp16_run
            self.n_mel_channels = hparams.n_mel_channels
            self.n_frames_per_step = hparams.n_frames_per_step
            self.embedding = nn.Embedding(
                hparams.n_symbols, hparams.symbols_embedding_dim)
            std = sqrt(2.0 / (hparams.n_symbols + hparams.symbols_embedding_dim))
            val = sqrt(3.0) * std  # uniform bounds for std
            self.embedding.weight.data.uniform_(-val, val)
            self.encoder = Encoder(hparams)
            self.decoder = Decoder(hparams)
            self.postnet = Postnet(hparams)

        def parse_output(self, outputs, output_lengths=None):
            if self.mask_padding and output_lengths is not None:
                mask = ~get_mask_from_lengths(output_lengths)
                mask = mask.expand(self.n_mel_channels, mask.size(0), mask.size(1))
                mask = mask.permute(1, 0, 2)

                outputs[0].data.masked_fill_(mask, 0.0)
                outputs[1].data.masked_fill_(mask, 0.0)
                outputs[2].data.masked_fill_(mask[:, 0, :], 1e3)  # gate energies

            return outputs

        def forward(self, inputs):
            text_inputs, text_lengths, mels, max_len, output_lengths = inputs
            text_lengths, output_lengths = text_lengths.data, output_lengths.data

            embedded_inputs = self.embedding(text_inputs).transpose(1, 2)

            encoder_outputs = self.encoder(embedded_inputs, text_lengths)

            mel_outputs, gate_outputs, alignments = self.decoder(
                encoder_outputs, mels, memory_lengths=text_lengths)

            mel_outputs_postnet = self.postnet(mel_outputs)
            mel_outputs_postnet = mel_outputs + mel_outputs_postnet

            return self.parse_output(
                [mel_outputs, mel_outputs_postnet, gate_outputs, alignments],
                output_lengths)

        def inference(self, inputs):
            embedded_inputs = self.embedding(inputs).transpose(1, 2)
            encoder_outputs = self.encoder.inference(embedded_inputs)
            mel_outputs, gate_outputs, alignments = self.decoder.inference(
                encoder_outputs)

            mel_outputs_postnet = self.postnet(mel_outputs)
            mel_outputs_postnet = mel_outputs + mel_outputs_postnet

            outputs = self.parse_output(
                [mel_outputs, mel_outputs_postnet, gate_outputs, alignments])

            return outputs

    class Tacotron2Loss(nn.Module):
        def __init__(self):
            super(Tacotron2Loss, self).__init__()

        def forward(self, model_output, targets):
            mel_target, gate_target = targets[0], targets[1]
            mel_target.requires_grad = False
            gate_target.requires_grad = False
            gate_target = gate_target.view(-1, 1)

            mel_out, mel_out_postnet, gate_out, _ = model_output
            gate_out = gate_out.view(-1, 1)
            mel_loss = nn.MSELoss()(mel_out, mel_target) + \
                nn.MSELoss()(mel_out_postnet, mel_target)
            gate_loss = nn.BCEWithLogitsLoss()(gate_out, gate_target)
            return mel_loss + gate_loss

    Variable = torch.autograd.Variable  # from torch.autograd import Variable
    hparams = SimpleNamespace(**{**HPARAMS, **overrides})
    model = Tacotron2(hparams)
    model.criterion = Tacotron2Loss()
    model.get_mask_from_lengths = get_mask_from_lengths
    return model


HPARAMS = dict(
    mask_padding=True, fp16_run=False, n_mel_channels=4, n_frames_per_step=1, n_symbols=10, symbols_embedding_dim=8,
    encoder_kernel_size=3, encoder_n_convolutions=3, encoder_embedding_dim=8, attention_rnn_dim=8, decoder_rnn_dim=8,
    prenet_dim=6, max_decoder_steps=6, gate_threshold=0.5, p_attention_dropout=0.0, p_decoder_dropout=0.0,
    attention_dim=6, attention_location_n_filters=4, attention_location_kernel_size=3, postnet_embedding_dim=6,
    postnet_kernel_size=3, postnet_n_convolutions=3, prenet_dropout=0.0, encoder_dropout=0.0, postnet_dropout=0.0)
TEXT_LENGTHS, MEL_LENGTHS = [5, 4, 2], [6, 4, 5]  # TextMelCollate sorts by text length, descending


def tacotron_batch(seed=0):
    """TextMelCollate's padded batch: text ids, mels, gates (1 from each mel's last frame on)."""
    rng = np.random.default_rng(seed)
    text = np.zeros((len(TEXT_LENGTHS), max(TEXT_LENGTHS)), np.int64)
    mel = np.zeros((len(TEXT_LENGTHS), HPARAMS["n_mel_channels"], max(MEL_LENGTHS)))
    gate = np.zeros((len(TEXT_LENGTHS), max(MEL_LENGTHS)))
    for i, (text_length, mel_length) in enumerate(zip(TEXT_LENGTHS, MEL_LENGTHS)):
        text[i, :text_length] = rng.integers(1, HPARAMS["n_symbols"], text_length)
        mel[i, :, :mel_length] = rng.standard_normal((HPARAMS["n_mel_channels"], mel_length))
        gate[i, mel_length - 1:] = 1
    return text, mel, gate


def gated_inference(torch, model, text):
    """``model.inference`` run to ``max_decoder_steps``, then again with ``gate_threshold`` set so that the gate ends
    the loop early: between the first gate probability above all before it and the highest before it (just under
    the first one where none is)."""
    decoder = model.decoder
    with torch.no_grad():
        decoder.gate_threshold = 1.0
        full = model.inference(text)
        gates = torch.sigmoid(full[2]).flatten().tolist()
        rising = [t for t in range(1, len(gates) - 1) if gates[t] > max(gates[:t])]
        steps = rising[0] + 1 if rising else 1
        decoder.gate_threshold = (max(gates[:steps - 1]) + gates[steps - 1]) / 2 if rising else gates[0] - 1e-9
        gated = model.inference(text)
    names = ["mel", "mel_postnet", "gate", "alignments"]
    return {"full": dict(zip(names, map(array, full))), "gated": dict(zip(names, map(array, gated))),
            "gated steps": (steps, gated[0].shape[2])}


def train_tacotron(steps=3):
    text_values, mel_values, gate_values = tacotron_batch()

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
        criterion = model.criterion
        record = {"losses": []}
        model.train()
        for _ in range(steps):
            text_padded, input_lengths = torch.tensor(text_values), torch.tensor(TEXT_LENGTHS)
            floating = torch.get_default_dtype()  # parse_batch's .float(), in the run's dtype
            mel_padded = torch.tensor(mel_values, dtype=floating)
            gate_padded = torch.tensor(gate_values, dtype=floating)
            output_lengths = torch.tensor(MEL_LENGTHS)
            max_len = torch.max(input_lengths.data).item()  # parse_batch
            x, y = (text_padded, input_lengths, mel_padded, max_len, output_lengths), (mel_padded, gate_padded)
            model.zero_grad()
            y_pred = model(x)
            loss = criterion(y_pred, y)
            reduced_loss = loss.item()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            record.setdefault("outputs", dict(zip(["mel", "mel_postnet", "gate", "alignments"], map(array, y_pred))))
            record.setdefault("grads", gradients(model))
            record.setdefault("grad_norm", float(grad_norm))
            optimizer.step()
            record["losses"].append(reduced_loss)
        record["state"] = snapshot(model)
        model.eval()
        record["inference"] = gated_inference(torch, model, torch.tensor(text_values[:1]))
        return record

    return train


def compiled_tacotron(steps=3):
    """train.py's step (parse_batch outside, then zero_grad, forward, loss, backward, clip, Adam) as one compiled
    graph in kiln, torch's eager loop in torch."""
    text_values, mel_values, gate_values = tacotron_batch()

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
        criterion = model.criterion
        model.train()

        def train_step(x, y):
            model.zero_grad()
            y_pred = model(x)
            loss = criterion(y_pred, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        input_lengths = torch.tensor(TEXT_LENGTHS)
        max_len = torch.max(input_lengths.data).item()
        mel_padded, gate_padded = torch.tensor(mel_values), torch.tensor(gate_values)
        x = (torch.tensor(text_values), input_lengths, mel_padded, max_len, torch.tensor(MEL_LENGTHS))
        return {"losses": [run(x, (mel_padded, gate_padded)).item() for _ in range(steps)], "state": snapshot(model)}

    return train


# The encoder's and postnet's conv biases sit right before a training-mode BatchNorm1d, which subtracts each channel's
# mean: their gradient is rounding noise, which Adam (eps 1e-8) turns into steps of up to ~1e-11 that differ by library.
LOOSER = {"0.conv.bias": dict(rtol=0, atol=1e-10)}


def test_tacotron2_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(tacotron2, train_tacotron())
    assert_same_records(ours, theirs, looser=LOOSER)
    assert theirs["losses"][-1] < theirs["losses"][0]
    assert ours["inference"]["full"]["mel"].shape[2] == HPARAMS["max_decoder_steps"]
    expected, ran = ours["inference"]["gated steps"]
    assert ran == expected < HPARAMS["max_decoder_steps"]


def test_tacotron2_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(tacotron2, compiled_tacotron())
    assert_same_records(ours, theirs, looser=LOOSER)


def test_tacotron2_float32_as_torch():
    """How Tacotron 2 trains (fp16_run off): float32 at float32's level; the conv biases before a BatchNorm take
    Adam's noise steps (up to lr each), which the BatchNorm's running mean takes in (times its momentum), and so
    the eval-mode inference."""
    ours, theirs = run_in_lockstep(tacotron2, train_tacotron())
    assert ours["outputs"]["mel"].dtype == np.float32
    noise = dict(rtol=0, atol=3 * 2e-3)
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5,
                        looser={"0.conv.bias": noise, "running_mean": noise, "inference": noise})


def test_prenet_dropout_stays_on_in_eval_as_the_reference():
    """``F.dropout(F.relu(linear(x)), p=0.5, training=True)``: in eval too, eagerly and compiled, each value kept with
    probability 1/2 and scaled by 2, the gradient through the kept ones only; a new mask at each call."""
    kiln.manual_seed(0)
    prenet = tacotron2(*libraries("kiln"), prenet_dropout=0.5).decoder.prenet.eval()
    x = kiln.tensor(np.random.default_rng(1).standard_normal((2000, HPARAMS["n_mel_channels"]), dtype=np.float32))
    layer = prenet.layers[0].linear_layer
    undropped = kiln.nn.functional.relu(layer(x))
    first = prenet.layers[0]
    F = kiln.nn.functional
    one_layer = lambda x: F.dropout(F.relu(first(x)), p=prenet.p, training=True)  # noqa: E731
    for run in (one_layer, kiln.compile(one_layer, fullgraph=True)):
        dropped, again = array(run(x)), array(run(x))
        positive = array(undropped) > 0
        kept = dropped[positive] != 0
        assert abs(kept.mean() - 0.5) < 0.02 and not np.array_equal(dropped, again)
        np.testing.assert_allclose(dropped[positive][kept], 2 * array(undropped)[positive][kept], rtol=1e-6)
    x.requires_grad_(True)
    out = one_layer(x)
    out.sum().backward()
    mask = array(out) != 0
    expected = 2 * mask.astype(np.float64) @ array(layer.weight)
    np.testing.assert_allclose(array(x.grad), expected, rtol=1e-5, atol=1e-6)


# --- HiFi-GAN ------------------------------------------------------------------------------------------------------

LRELU_SLOPE = 0.1
H = SimpleNamespace(
    resblock="1", num_mels=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=8,
    resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], period_channels=(4, 8, 8, 8),
    scale_channels=(8, 8, 8), n_fft=16, hop_size=4, win_size=16, sampling_rate=800, fmin=0, fmax=400,
    fmax_for_loss=None, learning_rate=2e-4, adam_b1=0.8, adam_b2=0.99, lr_decay=0.999)
FRAMES, BATCH = 6, 2


def hifigan(torch, nn, F, h=None):
    """jik876/hifi-gan's models.py and utils.py: a module holding ``generator``, ``mpd`` and ``msd``, the
    discriminators' widths (1024 in the paper) from ``h.period_channels`` and ``h.scale_channels``."""
    # from torch.nn import Conv1d, ConvTranspose1d, AvgPool1d, Conv2d
    # from torch.nn.utils import weight_norm, remove_weight_norm, spectral_norm
    Conv1d, ConvTranspose1d, AvgPool1d, Conv2d = nn.Conv1d, nn.ConvTranspose1d, nn.AvgPool1d, nn.Conv2d
    weight_norm, remove_weight_norm = nn.utils.weight_norm, nn.utils.remove_weight_norm
    spectral_norm = nn.utils.spectral_norm

    h = h or H
    P = h.period_channels
    S = h.scale_channels

    def init_weights(m, mean=0.0, std=0.01):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            m.weight.data.normal_(mean, std)

    def get_padding(kernel_size, dilation=1):
        return int((kernel_size * dilation - dilation) / 2)

    class ResBlock1(torch.nn.Module):
        def __init__(self, h, channels, kernel_size=3, dilation=(1, 3, 5)):
            super(ResBlock1, self).__init__()
            self.h = h
            self.convs1 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=dilation[0],
                                   padding=get_padding(kernel_size, dilation[0]))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=dilation[1],
                                   padding=get_padding(kernel_size, dilation[1]))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=dilation[2],
                                   padding=get_padding(kernel_size, dilation[2])))
            ])
            self.convs1.apply(init_weights)

            self.convs2 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                   padding=get_padding(kernel_size, 1))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                   padding=get_padding(kernel_size, 1))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                   padding=get_padding(kernel_size, 1)))
            ])
            self.convs2.apply(init_weights)

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                xt = F.leaky_relu(x, LRELU_SLOPE)
                xt = c1(xt)
                xt = F.leaky_relu(xt, LRELU_SLOPE)
                xt = c2(xt)
                x = xt + x
            return x

        def remove_weight_norm(self):
            for l in self.convs1:
                remove_weight_norm(l)
            for l in self.convs2:
                remove_weight_norm(l)

    class Generator(torch.nn.Module):
        def __init__(self, h):
            super(Generator, self).__init__()
            self.h = h
            self.num_kernels = len(h.resblock_kernel_sizes)
            self.num_upsamples = len(h.upsample_rates)
            self.conv_pre = weight_norm(Conv1d(h.num_mels, h.upsample_initial_channel, 7, 1, padding=3))
            resblock = ResBlock1

            self.ups = nn.ModuleList()
            for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernel_sizes)):
                self.ups.append(weight_norm(
                    ConvTranspose1d(h.upsample_initial_channel // (2 ** i), h.upsample_initial_channel // (2 ** (i + 1)),
                                    k, u, padding=(k - u) // 2)))

            self.resblocks = nn.ModuleList()
            for i in range(len(self.ups)):
                ch = h.upsample_initial_channel // (2 ** (i + 1))
                for j, (k, d) in enumerate(zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes)):
                    self.resblocks.append(resblock(h, ch, k, d))

            self.conv_post = weight_norm(Conv1d(ch, 1, 7, 1, padding=3))
            self.ups.apply(init_weights)
            self.conv_post.apply(init_weights)

        def forward(self, x):
            x = self.conv_pre(x)
            for i in range(self.num_upsamples):
                x = F.leaky_relu(x, LRELU_SLOPE)
                x = self.ups[i](x)
                xs = None
                for j in range(self.num_kernels):
                    if xs is None:
                        xs = self.resblocks[i * self.num_kernels + j](x)
                    else:
                        xs += self.resblocks[i * self.num_kernels + j](x)
                x = xs / self.num_kernels
            x = F.leaky_relu(x)
            x = self.conv_post(x)
            x = torch.tanh(x)

            return x

        def remove_weight_norm(self):
            print('Removing weight norm...')
            for l in self.ups:
                remove_weight_norm(l)
            for l in self.resblocks:
                l.remove_weight_norm()
            remove_weight_norm(self.conv_pre)
            remove_weight_norm(self.conv_post)

    class DiscriminatorP(torch.nn.Module):
        def __init__(self, period, kernel_size=5, stride=3, use_spectral_norm=False):
            super(DiscriminatorP, self).__init__()
            self.period = period
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm  # noqa: E712
            self.convs = nn.ModuleList([
                norm_f(Conv2d(1, P[0], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[0], P[1], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[1], P[2], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[2], P[3], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[3], P[3], (kernel_size, 1), 1, padding=(2, 0))),
            ])
            self.conv_post = norm_f(Conv2d(P[3], 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x):
            fmap = []

            # 1d to 2d
            b, c, t = x.shape
            if t % self.period != 0:  # pad first
                n_pad = self.period - (t % self.period)
                x = F.pad(x, (0, n_pad), "reflect")
                t = t + n_pad
            x = x.view(b, c, t // self.period, self.period)

            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = torch.flatten(x, 1, -1)

            return x, fmap

    class MultiPeriodDiscriminator(torch.nn.Module):
        def __init__(self):
            super(MultiPeriodDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([
                DiscriminatorP(2),
                DiscriminatorP(3),
                DiscriminatorP(5),
                DiscriminatorP(7),
                DiscriminatorP(11),
            ])

        def forward(self, y, y_hat):
            y_d_rs = []
            y_d_gs = []
            fmap_rs = []
            fmap_gs = []
            for i, d in enumerate(self.discriminators):
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)

            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    class DiscriminatorS(torch.nn.Module):
        def __init__(self, use_spectral_norm=False):
            super(DiscriminatorS, self).__init__()
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm  # noqa: E712
            self.convs = nn.ModuleList([
                norm_f(Conv1d(1, S[0], 15, 1, padding=7)),
                norm_f(Conv1d(S[0], S[0], 41, 2, groups=4, padding=20)),
                norm_f(Conv1d(S[0], S[1], 41, 2, groups=4, padding=20)),
                norm_f(Conv1d(S[1], S[2], 41, 4, groups=4, padding=20)),
                norm_f(Conv1d(S[2], S[2], 41, 1, groups=4, padding=20)),
                norm_f(Conv1d(S[2], S[2], 5, 1, padding=2)),
            ])
            self.conv_post = norm_f(Conv1d(S[2], 1, 3, 1, padding=1))

        def forward(self, x):
            fmap = []
            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = torch.flatten(x, 1, -1)

            return x, fmap

    class MultiScaleDiscriminator(torch.nn.Module):
        def __init__(self):
            super(MultiScaleDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([
                DiscriminatorS(use_spectral_norm=True),
                DiscriminatorS(),
                DiscriminatorS(),
            ])
            self.meanpools = nn.ModuleList([
                AvgPool1d(4, 2, padding=2),
                AvgPool1d(4, 2, padding=2)
            ])

        def forward(self, y, y_hat):
            y_d_rs = []
            y_d_gs = []
            fmap_rs = []
            fmap_gs = []
            for i, d in enumerate(self.discriminators):
                if i != 0:
                    y = self.meanpools[i - 1](y)
                    y_hat = self.meanpools[i - 1](y_hat)
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)

            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    class GAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = Generator(h)
            self.mpd = MultiPeriodDiscriminator()
            self.msd = MultiScaleDiscriminator()

    return GAN()


def losses(torch):
    def feature_loss(fmap_r, fmap_g):
        loss = 0
        for dr, dg in zip(fmap_r, fmap_g):
            for rl, gl in zip(dr, dg):
                loss += torch.mean(torch.abs(rl - gl))

        return loss * 2

    def discriminator_loss(disc_real_outputs, disc_generated_outputs):
        loss = 0
        r_losses = []
        g_losses = []
        for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
            r_loss = torch.mean((1 - dr) ** 2)
            g_loss = torch.mean(dg ** 2)
            loss += (r_loss + g_loss)
            r_losses.append(r_loss.item())
            g_losses.append(g_loss.item())

        return loss, r_losses, g_losses

    def generator_loss(disc_outputs):
        loss = 0
        gen_losses = []
        for dg in disc_outputs:
            l = torch.mean((1 - dg) ** 2)
            gen_losses.append(l)
            loss += l

        return loss, gen_losses

    return feature_loss, discriminator_loss, generator_loss


def mel_filters(sr, n_fft, n_mels, fmin, fmax):
    """librosa.filters.mel (htk=False, norm='slaney') in NumPy."""
    fmax = sr / 2 if fmax is None else fmax
    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        f_sp = 200.0 / 3
        mels = f / f_sp
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)

    def mel_to_hz(m):
        f_sp = 200.0 / 3
        freqs = f_sp * m
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)

    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    return weights * enorm[:, np.newaxis]


def mel_spectrogram_fn(torch, check_range=True):
    mel_basis = {}
    hann_window = {}

    def dynamic_range_compression_torch(x, C=1, clip_val=1e-5):
        return torch.log(torch.clamp(x, min=clip_val) * C)

    def spectral_normalize_torch(magnitudes):
        output = dynamic_range_compression_torch(magnitudes)
        return output

    def mel_spectrogram(y, n_fft, num_mels, sampling_rate, hop_size, win_size, fmin, fmax, center=False):
        if check_range and torch.min(y) < -1.:
            print('min value is ', torch.min(y))
        if check_range and torch.max(y) > 1.:
            print('max value is ', torch.max(y))

        if fmax not in mel_basis:
            mel = mel_filters(sampling_rate, n_fft, num_mels, fmin, fmax)
            mel_basis[str(fmax) + '_' + str(y.device)] = torch.from_numpy(mel).to(y.dtype).to(y.device)
            hann_window[str(y.device)] = torch.hann_window(win_size).to(y.device)

        y = torch.nn.functional.pad(y.unsqueeze(1), (int((n_fft - hop_size) / 2), int((n_fft - hop_size) / 2)), mode='reflect')
        y = y.squeeze(1)

        spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=hann_window[str(y.device)],
                          center=center, pad_mode='reflect', normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        spec = torch.sqrt(spec.pow(2).sum(-1) + (1e-9))

        spec = torch.matmul(mel_basis[str(fmax) + '_' + str(y.device)], spec)
        spec = spectral_normalize_torch(spec)

        return spec

    return mel_spectrogram


def hifigan_batch(seed=0, dtype=np.float64):
    """A mel (the generator's input) and a segment of audio in [-1, 1], FRAMES * hop_size samples."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, H.num_mels, FRAMES))
    y = np.clip(rng.standard_normal((BATCH, FRAMES * H.hop_size)) * 0.3, -1, 1)
    return x.astype(dtype), y.astype(dtype)


def optimizers(torch, generator, mpd, msd):
    h = H
    optim_g = torch.optim.AdamW(generator.parameters(), h.learning_rate, betas=[h.adam_b1, h.adam_b2])
    optim_d = torch.optim.AdamW(itertools.chain(msd.parameters(), mpd.parameters()),
                                h.learning_rate, betas=[h.adam_b1, h.adam_b2])
    scheduler_g = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=h.lr_decay, last_epoch=-1)
    scheduler_d = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=h.lr_decay, last_epoch=-1)
    return optim_g, optim_d, scheduler_g, scheduler_d


def train_hifigan(steps=2):
    """train.py's loop: the discriminators' step on ``y_g_hat.detach()``, then the generator's on the same
    ``y_g_hat``."""
    x_values, y_values = hifigan_batch()

    def train(torch, nn, F, model):
        h = H
        generator, mpd, msd = model.generator, model.mpd, model.msd
        feature_loss, discriminator_loss, generator_loss = losses(torch)
        mel_spectrogram = mel_spectrogram_fn(torch)
        optim_g, optim_d, scheduler_g, scheduler_d = optimizers(torch, generator, mpd, msd)
        generator.train()
        mpd.train()
        msd.train()
        record = {"d": [], "g": [], "mel": []}
        for epoch in range(steps):
            x = torch.autograd.Variable(torch.tensor(x_values, dtype=torch.get_default_dtype()))
            y = torch.autograd.Variable(torch.tensor(y_values, dtype=torch.get_default_dtype()))
            y_mel = mel_spectrogram(y, h.n_fft, h.num_mels, h.sampling_rate, h.hop_size, h.win_size, h.fmin,
                                    h.fmax_for_loss)
            y = y.unsqueeze(1)

            y_g_hat = generator(x)
            y_g_hat_mel = mel_spectrogram(y_g_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate, h.hop_size,
                                          h.win_size, h.fmin, h.fmax_for_loss)

            optim_d.zero_grad()

            # MPD
            y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
            loss_disc_f, losses_disc_f_r, losses_disc_f_g = discriminator_loss(y_df_hat_r, y_df_hat_g)

            # MSD
            y_ds_hat_r, y_ds_hat_g, _, _ = msd(y, y_g_hat.detach())
            loss_disc_s, losses_disc_s_r, losses_disc_s_g = discriminator_loss(y_ds_hat_r, y_ds_hat_g)

            loss_disc_all = loss_disc_s + loss_disc_f

            loss_disc_all.backward()
            record.setdefault("d_grads", gradients(model))
            optim_d.step()

            # Generator
            optim_g.zero_grad()

            # L1 Mel-Spectrogram Loss
            loss_mel = F.l1_loss(y_mel, y_g_hat_mel) * 45

            y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
            y_ds_hat_r, y_ds_hat_g, fmap_s_r, fmap_s_g = msd(y, y_g_hat)
            loss_fm_f = feature_loss(fmap_f_r, fmap_f_g)
            loss_fm_s = feature_loss(fmap_s_r, fmap_s_g)
            loss_gen_f, losses_gen_f = generator_loss(y_df_hat_g)
            loss_gen_s, losses_gen_s = generator_loss(y_ds_hat_g)
            loss_gen_all = loss_gen_s + loss_gen_f + loss_fm_s + loss_fm_f + loss_mel

            loss_gen_all.backward()
            record.setdefault("g_grads", gradients(generator))
            optim_g.step()
            scheduler_g.step()
            scheduler_d.step()
            record["d"].append(loss_disc_all.item())
            record["g"].append(loss_gen_all.item())
            record["mel"].append(loss_mel.item())
            record.setdefault("d_parts", losses_disc_f_r + losses_disc_f_g + losses_disc_s_r + losses_disc_s_g)
            record.setdefault("y_g_hat", array(y_g_hat))
        record["state"] = snapshot(model)
        generator.eval()
        generator.remove_weight_norm()
        with torch.no_grad():
            record["audio"] = array(generator(torch.tensor(x_values, dtype=torch.get_default_dtype())))
        record["after_removal"] = snapshot(generator)
        return record

    return train


def compiled_hifigan(steps=2):
    """The generator's step as one compiled graph in kiln (it recomputes ``y_g_hat = generator(x)``: the
    discriminators' step between changed no generator weight), the discriminators' eager, torch's all eager."""
    x_values, y_values = hifigan_batch()

    def train(torch, nn, F, model):
        h = H
        generator, mpd, msd = model.generator, model.mpd, model.msd
        feature_loss, discriminator_loss, generator_loss = losses(torch)
        mel_spectrogram = mel_spectrogram_fn(torch)
        mel_in_step = mel_spectrogram_fn(torch, check_range=False)
        optim_g, optim_d, scheduler_g, scheduler_d = optimizers(torch, generator, mpd, msd)
        generator.train()
        mpd.train()
        msd.train()

        def generator_step(x, y, y_mel):
            optim_g.zero_grad()
            y_g_hat = generator(x)
            y_g_hat_mel = mel_in_step(y_g_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate, h.hop_size,
                                      h.win_size, h.fmin, h.fmax_for_loss)
            loss_mel = F.l1_loss(y_mel, y_g_hat_mel) * 45
            y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
            y_ds_hat_r, y_ds_hat_g, fmap_s_r, fmap_s_g = msd(y, y_g_hat)
            loss_fm_f = feature_loss(fmap_f_r, fmap_f_g)
            loss_fm_s = feature_loss(fmap_s_r, fmap_s_g)
            loss_gen_f, losses_gen_f = generator_loss(y_df_hat_g)
            loss_gen_s, losses_gen_s = generator_loss(y_ds_hat_g)
            loss_gen_all = loss_gen_s + loss_gen_f + loss_fm_s + loss_fm_f + loss_mel
            loss_gen_all.backward()
            optim_g.step()
            return loss_gen_all.detach()

        run = kiln.compile(generator_step, fullgraph=True) if torch is kiln else generator_step
        record = {"d": [], "g": []}
        for epoch in range(steps):
            floating = torch.get_default_dtype()
            x, y = torch.tensor(x_values, dtype=floating), torch.tensor(y_values, dtype=floating)
            y_mel = mel_spectrogram(y, h.n_fft, h.num_mels, h.sampling_rate, h.hop_size, h.win_size, h.fmin,
                                    h.fmax_for_loss)
            y = y.unsqueeze(1)
            with torch.no_grad():
                y_g_hat = generator(x)
            optim_d.zero_grad()
            y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
            loss_disc_f, _, _ = discriminator_loss(y_df_hat_r, y_df_hat_g)
            y_ds_hat_r, y_ds_hat_g, _, _ = msd(y, y_g_hat.detach())
            loss_disc_s, _, _ = discriminator_loss(y_ds_hat_r, y_ds_hat_g)
            loss_disc_all = loss_disc_s + loss_disc_f
            loss_disc_all.backward()
            optim_d.step()
            record["g"].append(run(x, y, y_mel).item())
            scheduler_g.step()
            scheduler_d.step()
            record["d"].append(loss_disc_all.item())
        record["state"] = snapshot(model)
        record["discriminator_grads"] = gradients(model.mpd)  # accumulated by the generator's step's backward
        return record

    return train


def test_hifigan_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(hifigan, train_hifigan())
    assert_same_records(ours, theirs)
    assert any(name.endswith("weight_u") for name in theirs["state"])  # the spectral norm's power iteration
    assert not any(name.endswith("weight_g") for name in theirs["after_removal"])


def test_hifigan_float32_as_torch():
    """How HiFi-GAN trains: float32, at float32's level (one iteration: the float64 run covers the rest)."""
    ours, theirs = run_in_lockstep(hifigan, train_hifigan(steps=1))
    assert ours["y_g_hat"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


def test_hifigan_compiled_generator_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(hifigan, compiled_hifigan())
    assert_same_records(ours, theirs)


def test_hifigan_generator_exports_to_onnx_as_torch():
    """The vocoder as deployed: ``remove_weight_norm`` then ``kiln.onnx.export``, run by onnxruntime (float32: its CPU
    Conv has no float64 kernel), and ``kiln.compile``d, against torch's generator."""
    onnxruntime = require("onnxruntime")
    mel = hifigan_batch(dtype=np.float32)[0]
    kiln.manual_seed(0)
    generator = hifigan(*libraries("kiln")).generator
    torch, nn, F = libraries("torch")
    twin = hifigan(torch, nn, F).generator
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(generator).items()})
    for module in (generator, twin):
        module.eval()
        module.remove_weight_norm()
    buffer = io.BytesIO()
    kiln.onnx.export(generator, (kiln.tensor(mel),), buffer, input_names=["mel"], output_names=["audio"])
    ours = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"mel": mel})[0]
    compiled = array(kiln.compile(generator, fullgraph=True)(kiln.tensor(mel)))
    with torch.no_grad():
        theirs = array(twin(torch.tensor(mel)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled, theirs, rtol=1e-5, atol=1e-6)
