"""``Tensor.as_strided``/``kiln.as_strided`` (``frontend/tensor_strides.py``), arithmetic of a Python number with
keywords or with another number (``kiln.div(n, w, rounding_mode="trunc")``, ``frontend/torch_functions.py``), a
one-element integer tensor as a size (``frontend/tensor_methods.py``'s ``_flatten_args``) and ``new_ones(size=...)``
(``frontend/torch_keywords.py``) against PyTorch 2.13: HF Longformer's ``_sliding_chunks_query_key_matmul`` uses all
four, and each was refused by kiln."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

RNG = np.random.default_rng(5)
X = RNG.standard_normal((2, 8, 3))
WEIGHTS = RNG.standard_normal((2, 3, 4, 3))


def _chunk(torch, hidden_states, window_overlap):
    """Longformer's ``_chunk``: non-overlapping chunks of 2w by ``view``, then ``as_strided`` overlapping them by w."""
    hidden_states = hidden_states.view(hidden_states.size(0),
                                       torch.div(hidden_states.size(1), (window_overlap * 2), rounding_mode="trunc"),
                                       window_overlap * 2, hidden_states.size(2))
    chunk_size = list(hidden_states.size())
    chunk_size[1] = chunk_size[1] * 2 - 1
    chunk_stride = list(hidden_states.stride())
    chunk_stride[1] = chunk_stride[1] // 2
    return hidden_states.as_strided(size=chunk_size, stride=chunk_stride)


def _in_both(function):
    """``function(torch)`` run with kiln and with torch, as NumPy arrays (a tuple of them, or one)."""
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        out = function(torch)
        results.append([np.array(o.detach().numpy()) for o in out] if isinstance(out, tuple) else np.array(out.numpy()))
    return results


def test_overlapping_chunks_and_their_gradient_as_torch():
    """The windows overlap: each element read twice has the sum of both gradients, as torch's."""

    def chunked(torch):
        x = torch.tensor(X, requires_grad=True)
        chunks = _chunk(torch, x * 1.0, 2)
        (chunks * torch.tensor(WEIGHTS)).sum().backward()
        return chunks, x.grad

    (ours, our_grad), (theirs, their_grad) = _in_both(chunked)
    assert ours.shape == theirs.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(our_grad, their_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", [
    lambda torch, x: x.as_strided((3, 2), (2, 3)),
    lambda torch, x: x[:, 1:].as_strided((2, 2), (4, 1)),  # the slice's storage offset by default
    lambda torch, x: x[:, 1:].as_strided((2, 2), (4, 1), 0),  # an explicit one
    lambda torch, x: x.t().as_strided((2, 3), (1, 4)),  # the transposed view reads its base's storage
    lambda torch, x: x.t().reshape(-1).as_strided((4,), (3,)),  # a reshape that copies: its own storage
    lambda torch, x: torch.as_strided(x, (2, 2), (0, 5), 1),
    lambda torch, x: x.as_strided((2, 2), (1, 1)).as_strided((3,), (4,), 2),  # still the first storage
], ids=["plain", "slice offset", "explicit offset", "transposed", "reshape copy", "torch.as_strided", "twice"])
def test_values_strides_and_offset_as_torch(make):
    def made(torch):
        result = make(torch, torch.arange(12.0).reshape(3, 4))
        return result, torch.tensor(result.stride()), torch.tensor(result.storage_offset())

    ours, theirs = _in_both(made)
    for mine, expected in zip(ours, theirs):
        np.testing.assert_array_equal(mine, expected)


def test_compiled_as_strided_gives_the_eager_values():
    def chunk_sums(x):
        return _chunk(kiln, x.transpose(1, 2).reshape(2 * 3, 8, 1), 2).sum(-1)

    x = kiln.tensor(X)
    np.testing.assert_array_equal(np.array(kiln.compile(chunk_sums)(x).numpy()), np.array(chunk_sums(x).numpy()))


@pytest.mark.parametrize("size, stride, message", [
    ((2, 2), (-1, 1), "as_strided: Negative strides are not supported at the moment, got strides: [-1, 1]"),
    ((2,), (1, 1), "mismatch in length of strides and shape"),
    ((7,), (2,), "setStorage: sizes [7], strides [2], storage offset 0, and itemsize 8 requiring a storage size of 104 "
                 "are out of bounds for storage of size 96"),
])
def test_refusals_are_torchs_runtime_errors(size, stride, message):
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        with pytest.raises(RuntimeError) as raised:
            torch.arange(12, dtype=torch.float64).as_strided(size, stride)
        assert message in str(raised.value)
        assert name == "torch" or "test_torch_surface_as_strided.py" in str(raised.value)  # kiln names the line


def test_a_write_to_the_result_is_refused_saying_what_to_do():
    """torch's result is a view a write goes through (to overlapping elements at once); kiln's is a copy."""
    x = kiln.arange(12.0)
    with pytest.raises(kiln.KilnError, match=r"as_strided gives a new tensor in kiln.*clone\(\) it") as raised:
        x.as_strided((2, 2), (1, 1)).add_(1)
    assert "test_torch_surface_as_strided.py" in str(raised.value)
    x.as_strided((2, 2), (1, 1)).clone().add_(1)


@pytest.mark.parametrize("call", [
    lambda torch: torch.div(16, 2, rounding_mode="trunc"),
    lambda torch: torch.div(7.5, 2, rounding_mode="floor"),
    lambda torch: torch.divide(7, 2),
    lambda torch: torch.true_divide(7, 2),
    lambda torch: torch.floor_divide(7, 2),
    lambda torch: torch.add(7, 3, alpha=2),
    lambda torch: torch.sub(7.5, 2),
    lambda torch: torch.subtract(7, 3, alpha=2),
    lambda torch: torch.mul(True, False),
    lambda torch: torch.multiply(3, 2.5),
    lambda torch: torch.div(7, torch.tensor([2.0, 3.0]), rounding_mode="floor"),
    lambda torch: torch.add(1, torch.tensor([2.0, 3.0], dtype=torch.float64), alpha=2),
], ids=["div trunc", "div floor float", "divide", "true_divide", "floor_divide", "add alpha", "sub float",
        "subtract alpha", "mul bools", "multiply", "div number by tensor, floor", "add number and tensor, alpha"])
def test_arithmetic_of_a_number_input_as_torch(call):
    """A number as ``input`` with a number as ``other`` or with keywords: a 0-d tensor of torch's dtype for it."""
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        result = call(torch)
        results.append((np.array(result.numpy()), str(result.dtype).split(".")[-1]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


@pytest.mark.parametrize("call", [
    lambda torch, n: torch.arange(16.0).view(2, n, 4).shape,
    lambda torch, n: torch.arange(16.0).reshape(n, -1).shape,
    lambda torch, n: torch.zeros(3).new_zeros((n + 1, 2)).shape,
    lambda torch, n: torch.zeros(n, 2).shape,
    lambda torch, n: torch.zeros(1, 2).expand(n, 2).shape,
    lambda torch, n: torch.zeros(2, 3, 4).permute(n, 0, 1).shape,
], ids=["view", "reshape", "new_zeros", "zeros", "expand", "permute"])
def test_a_one_element_integer_tensor_is_a_size_as_torch(call):
    shapes = [tuple(call(torch, torch.div(16, 8, rounding_mode="trunc")))
              for torch, nn, F in (libraries("kiln"), libraries("torch"))]
    assert shapes[0] == shapes[1]


def test_compiled_size_from_a_tensor_argument():
    """Traced, the tensor's value is read (``kiln.compile`` specializes on it, as on ``int(t)``, and traces again for
    another value)."""
    step = kiln.compile(lambda x, rows: x.view(rows, -1).sum(0))
    np.testing.assert_array_equal(np.array(step(kiln.arange(8.0), kiln.tensor(2)).numpy()), [4.0, 6.0, 8.0, 10.0])
    np.testing.assert_array_equal(np.array(step(kiln.arange(8.0), kiln.tensor(4)).numpy()), [12.0, 16.0])


@pytest.mark.parametrize("method", ["new_ones", "new_zeros", "new_empty"])
def test_new_tensors_take_size_by_keyword_as_torch(method):
    """Longformer's ``float_mask.new_ones(size=float_mask.size())``."""
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        base = torch.zeros(2, 3, dtype=torch.float64)
        made = getattr(base, method)(size=base.size())
        results.append((tuple(made.shape), str(made.dtype).split(".")[-1],
                        None if method == "new_empty" else np.array(made.numpy())))
    assert results[0][:2] == results[1][:2] == ((2, 3), "float64")
    np.testing.assert_array_equal(results[0][2], results[1][2])


@pytest.mark.parametrize("bounds", [
    lambda torch: (torch.tensor(3),),
    lambda torch: (torch.tensor(1), torch.tensor(7.0), 2),
    lambda torch: (torch.tensor([2, 5, 1]).max(),),  # Longformer's torch.arange(num_global_attn_indices.max())
], ids=["int end", "float end", "max of a tensor"])
def test_arange_takes_zero_dim_tensor_bounds_as_torch(bounds):
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        made = torch.arange(*bounds(torch))
        results.append((np.array(made.numpy()), str(made.dtype).split(".")[-1]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_compiled_arange_of_a_tensor_argument_traces_again_for_another_value():
    step = kiln.compile(lambda n: kiln.arange(n.max()) * 2, fullgraph=True)
    np.testing.assert_array_equal(np.array(step(kiln.tensor([1, 3])).numpy()), [0, 2, 4])
    np.testing.assert_array_equal(np.array(step(kiln.tensor([2, 1])).numpy()), [0, 2])
