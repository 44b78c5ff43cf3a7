"""Memory shared with NumPy, as PyTorch's CPU tensors share it: ``from_numpy(a)``, ``as_tensor(a)`` (same dtype) and
``a = t.numpy()`` see each other's in-place writes (``frontend/shared_storage.py``). RL replay buffers and data loaders
rely on it; kiln's in-place ops used to rebind the tensor to a new array, leaving ``a`` stale. Where torch copies
(``tensor(a)``, a dtype conversion) kiln must not share either. Each program runs on kiln and on torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

WRITES = {
    "add_": lambda lib, t: t.add_(1.5),
    "iadd": lambda lib, t: t.__iadd__(2.0),
    "imul": lambda lib, t: t.__imul__(3.0),
    "setitem": lambda lib, t: t.__setitem__(0, 5.0),
    "setitem_slice": lambda lib, t: t.__setitem__(slice(1, None), lib.tensor([7.0, 8.0])),
    "copy_": lambda lib, t: t.copy_(lib.tensor([4.0, 5.0, 6.0])),
    "zero_": lambda lib, t: t.zero_(),
    "fill_": lambda lib, t: t.fill_(9.0),
    "clamp_": lambda lib, t: t.clamp_(0.0, 1.0),
    "data_setitem": lambda lib, t: t.data.__setitem__(slice(None, 2), 3.0),
    "data_copy_": lambda lib, t: t.data.copy_(lib.tensor([1.0, 1.0, 1.0])),
    "relu_inplace": lambda lib, t: lib.nn.functional.relu(t, inplace=True),
    "view_mul_": lambda lib, t: t[1:].mul_(2.0),
    "detach_fill_": lambda lib, t: t.detach().fill_(2.0),
    "unsqueeze_add_": lambda lib, t: t.unsqueeze(0).add_(1.0),
}


def _written(name: str, write, make) -> np.ndarray:
    """The NumPy array after ``write`` of the tensor ``make(lib, a)`` made from it, per library (kiln's checked
    equal to torch's)."""
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        a = np.array([-1.0, 0.5, 2.0], np.float32)
        write(lib, make(lib, a))
        results.append(a)
    np.testing.assert_array_equal(results[0], results[1], err_msg=name)
    return results[0]


@pytest.mark.parametrize("name", sorted(WRITES))
def test_an_in_place_write_of_a_tensor_from_numpy_is_seen_in_the_array_as_torchs(name):
    a = _written(name, WRITES[name], lambda lib, a: lib.from_numpy(a))
    assert not np.array_equal(a, [-1.0, 0.5, 2.0])


@pytest.mark.parametrize("name", ["add_", "setitem", "copy_", "clamp_"])
def test_as_tensor_of_an_array_of_its_dtype_shares_it_as_torchs(name):
    _written(name, WRITES[name], lambda lib, a: lib.as_tensor(a))
    _written(name, WRITES[name], lambda lib, a: lib.as_tensor(a, dtype=lib.float32))


@pytest.mark.parametrize("make", [lambda lib, a: lib.tensor(a), lambda lib, a: lib.as_tensor(a, dtype=lib.float64),
                                  lambda lib, a: lib.from_numpy(a).double(), lambda lib, a: lib.from_numpy(a).clone()],
                         ids=["tensor", "as_tensor_float64", "double", "clone"])
def test_a_copy_torch_makes_is_not_shared(make):
    a = _written("copy", WRITES["add_"], make)
    np.testing.assert_array_equal(a, [-1.0, 0.5, 2.0])


def test_a_write_to_the_array_is_seen_in_the_tensor_also_after_an_in_place_write():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        a = np.zeros(3, np.float32)
        t = lib.from_numpy(a)
        t.add_(1.0)
        a[0] = 9.0
        assert (t * 1).tolist() == [9.0, 1.0, 1.0], library


def test_numpy_of_a_tensor_shares_it_both_ways_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        t = lib.zeros(4)
        whole, tail = t.numpy(), t[1:].numpy()
        t.add_(1.0)
        t[2] = 5.0
        assert whole.tolist() == [1.0, 1.0, 5.0, 1.0] and tail.tolist() == [1.0, 5.0, 1.0], library
        whole[0] = -3.0
        assert t.tolist() == [-3.0, 1.0, 5.0, 1.0], library


def _optimized(library: str, make_leaf, optimizer: str) -> np.ndarray:
    lib, _, _ = libraries(library)
    a = np.array([1.0, -2.0, 3.0], np.float32)
    leaf = make_leaf(lib, lib.from_numpy(a))
    opt = getattr(lib.optim, optimizer)([leaf], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (leaf * leaf * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
        opt.step()
    return a


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
@pytest.mark.parametrize("make_leaf", [lambda lib, t: t.requires_grad_(), lambda lib, t: lib.nn.Parameter(t)],
                         ids=["requires_grad_", "Parameter"])
def test_an_optimizer_step_on_a_leaf_from_numpy_updates_the_array_as_torchs(make_leaf, optimizer):
    require_torch()
    kiln_array, torch_array = (_optimized(library, make_leaf, optimizer) for library in ("kiln", "torch"))
    np.testing.assert_allclose(kiln_array, torch_array, rtol=1e-6)
    assert not np.array_equal(kiln_array, [1.0, -2.0, 3.0])


def test_the_backward_of_an_in_place_op_on_a_shared_tensor_reads_its_old_values_as_torchs():
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        a = np.array([1.0, 2.0, 3.0], np.float32)
        x = lib.from_numpy(a)
        w = lib.tensor([2.0, 3.0, 4.0], requires_grad=True)
        x.mul_(w)
        x.pow_(2)
        x.sum().backward()
        results.append((a.copy(), np.asarray(w.grad)))
    for kiln_values, torch_values in zip(*results):
        np.testing.assert_allclose(kiln_values, torch_values, rtol=1e-6)


def test_a_backward_that_saved_a_shared_tensor_overwritten_since_is_refused_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        a = np.array([1.0, 2.0, 3.0], np.float32)
        x = lib.from_numpy(a)
        w = lib.tensor([2.0, 2.0, 2.0], requires_grad=True)
        y = x * w
        x.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
        assert a.tolist() == [2.0, 3.0, 4.0], library


def test_a_replay_buffer_written_row_by_row_is_read_through_its_array():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        storage = np.zeros((4, 2), np.float32)
        buffer = lib.from_numpy(storage)
        for step in range(6):
            buffer[step % 4] = lib.tensor([step, -step], dtype=lib.float32)
        np.testing.assert_array_equal(storage, [[4, -4], [5, -5], [2, -2], [3, -3]], err_msg=library)


def test_a_compiled_function_writing_its_argument_in_place_writes_the_shared_array():
    import kiln

    a = np.zeros(3, np.float32)
    x = kiln.from_numpy(a)
    step = kiln.compile(lambda t: t.add_(1.0).sum())
    for _ in range(3):
        step(x)
    np.testing.assert_array_equal(a, [3.0, 3.0, 3.0])


def test_a_compiled_function_writing_a_closed_over_tensor_writes_the_shared_array():
    import kiln

    a = np.zeros(2, np.float32)
    counts = kiln.from_numpy(a)

    @kiln.compile
    def count(x):
        counts.add_(x)
        return counts.sum()

    count(kiln.tensor([1.0, 2.0]))
    count(kiln.tensor([1.0, 2.0]))
    np.testing.assert_array_equal(a, [2.0, 4.0])


def test_numpy_of_a_view_written_in_place_shares_the_base_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        a = np.zeros((3, 2), np.float32)
        x = lib.from_numpy(a)
        row = x[1]
        row.add_(1.0)
        seen = row.numpy()
        x.mul_(3.0)
        x[1, 0] = 7.0
        assert seen.tolist() == [7.0, 3.0] and a[1].tolist() == [7.0, 3.0], library
        seen[1] = -1.0
        assert x.tolist() == [[0.0, 0.0], [7.0, -1.0], [0.0, 0.0]], library


@pytest.mark.parametrize("make", [lambda lib, a: lib.Tensor(a), lambda lib, a: lib.FloatTensor(a),
                                  lambda lib, a: lib.Tensor(lib.from_numpy(a)),
                                  lambda lib, a: lib.Tensor(a.astype(np.float64)), lambda lib, a: lib.DoubleTensor(a),
                                  lambda lib, a: lib.zeros(1).new_tensor(lib.from_numpy(a).numpy())],
                         ids=["Tensor", "FloatTensor", "Tensor_of_tensor", "Tensor_float64", "DoubleTensor", "new_tensor"])
def test_legacy_constructors_share_an_array_of_their_dtype_and_new_tensor_copies_as_torchs(make):
    _written("legacy", WRITES["add_"], make)


def test_a_read_only_array_warns_as_torchs_and_stays_as_it_was():
    """torch warns once a process with this text (and writes the array anyway: undefined behaviour); kiln's in-place
    write gives the tensor an array of its own."""
    import kiln
    from kiln.frontend import warn_once
    from kiln.frontend.shared_storage import READ_ONLY_WARNING

    a = np.ones(2, np.float32)
    a.flags.writeable = False
    warn_once._GIVEN.discard(READ_ONLY_WARNING)  # the once-a-process record, for this test's place in the run
    with pytest.warns(UserWarning, match="The given NumPy array is not writable, and PyTorch does not support") as caught:
        t = kiln.from_numpy(a)
    assert "test_numpy_shared_memory_vs_torch.py" in caught[0].filename
    t.add_(1.0)
    assert a.tolist() == [1.0, 1.0] and t.tolist() == [2.0, 2.0]
