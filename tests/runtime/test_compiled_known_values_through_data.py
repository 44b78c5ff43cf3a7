"""Values a ``kiln.compile`` trace knows (from constants alone, or specialized from its arguments), read through
``.data``/``.detach()`` and by ``.numpy()``, as torch eager gives them: a fixed batch's ``input_lengths =
torch.tensor([5, 4, 2])`` made in the step, or the step's argument, then NVIDIA Tacotron 2's ``torch.max(lengths.data).item()`` (``get_mask_from_lengths``) and
``input_lengths.cpu().numpy()`` before ``pack_padded_sequence``. kiln refused both in a trace: ``stop_gradient`` (what
``.data`` traces) has no NumPy kernel, so the known-value walk stopped there (``frontend/trace_known_values.py``), and
``numpy()`` of a traced tensor always raised (``frontend/tensor_methods.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.random.default_rng(3).standard_normal((3, 5, 2))


def encode(torch, nn, F, lstm, x, lengths=None):
    lengths = torch.tensor([5, 4, 2]) if lengths is None else lengths
    max_len = torch.max(lengths.data).item()
    mask = torch.arange(0, max_len) < lengths.detach().unsqueeze(1)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu().numpy(), batch_first=True)
    outputs, _ = nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True)
    return outputs * mask.unsqueeze(2)


def test_lengths_read_through_data_and_numpy_in_a_compiled_function_as_torch(float64_default):
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        kiln.manual_seed(0)
        lstm = nn.LSTM(2, 3, batch_first=True, bidirectional=True)
        if results:
            lstm.load_state_dict({key: torch.tensor(value) for key, value in results[0][1].items()})
        function = lambda x: encode(torch, nn, F, lstm, x)  # noqa: E731
        run = kiln.compile(function, fullgraph=True) if torch is kiln else function
        results.append((np.array(run(torch.tensor(X)).detach().numpy()),
                        {key: np.array(value.detach().numpy()) for key, value in lstm.state_dict().items()}))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-14)


def test_lengths_given_to_a_compiled_function_are_specialized_for_numpy_as_for_item(float64_default):
    """``input_lengths.cpu().numpy()`` of the step's argument: specialized and guarded, as ``.item()``
    (``frontend/value_guards.py``); other lengths trace again."""
    torch = float64_default
    kiln.manual_seed(0)
    lstm = kiln.nn.LSTM(2, 3, batch_first=True, bidirectional=True)
    twin = torch.nn.LSTM(2, 3, batch_first=True, bidirectional=True)
    twin.load_state_dict({key: torch.tensor(np.array(value.detach().numpy())) for key, value in lstm.state_dict().items()})
    run = kiln.compile(lambda x, lengths: encode(kiln, kiln.nn, None, lstm, x, lengths), fullgraph=True)
    for lengths in ([5, 4, 2], [5, 3, 3]):
        ours = np.array(run(kiln.tensor(X), kiln.tensor(lengths)).numpy())
        theirs = encode(torch, torch.nn, None, twin, torch.tensor(X), torch.tensor(lengths)).detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_numpy_of_a_value_from_a_trained_parameter_still_raises():
    weight = kiln.nn.Parameter(kiln.ones(3))
    with pytest.raises(kiln.TraceError, match=r"numpy\(\) of a traced tensor<3xf32>: its values exist only when"):
        kiln.compile(lambda x: x * float((weight * 2).numpy().sum()), fullgraph=True)(kiln.ones(3))
