"""``ctx.mark_dirty`` in a ``kiln.autograd.Function`` (kiln refused it): ``forward`` writes an input in place and
returns it; as torch's, the caller's tensor is the output (the same object), holds the new values, takes the
Function as its ``grad_fn`` (the gradient goes through ``backward`` to the input as it was) and counts the write, so a
backward that saved it before refuses; eagerly and in a ``kiln.compile``d function (``frontend/custom_function_dirty.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch


def _functions(lib):
    class Scale(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(w)
            x.mul_(w)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            (w,) = ctx.saved_tensors
            return grad * w, None

    class AddInto(lib.autograd.Function):
        """Two inputs written in place, returned as a tuple."""

        @staticmethod
        def forward(ctx, p, q):
            p.add_(q)
            q.mul_(2.0)
            ctx.mark_dirty(p, q)
            return p, q

        @staticmethod
        def backward(ctx, grad_p, grad_q):
            return grad_p, grad_p + 2.0 * grad_q

    class Unreturned(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.add_(1.0)
            ctx.mark_dirty(x)
            return x * 2.0

        @staticmethod
        def backward(ctx, grad):
            return grad * 2.0

    return Scale, AddInto, Unreturned


def _values(tensor) -> list:
    return np.asarray(tensor.detach()).tolist()


def _scaled(library: str, compiled: bool):
    lib, _, _ = libraries(library)
    scale = _functions(lib)[0]

    def loss_of(x, w):
        y = x * 1.0
        z = scale.apply(y, w)
        assert z is y and z.requires_grad
        return (z * y).sum(), y

    if compiled:
        loss_of = lib.compile(loss_of, fullgraph=True)
    x = lib.tensor([1.0, -2.0, 3.0], dtype=lib.float64, requires_grad=True)
    loss, written = loss_of(x, lib.tensor([2.0, 3.0, 0.5], dtype=lib.float64))
    assert compiled or written.grad_fn is not None  # the Function's op (a traced tensor has none to show)
    loss.backward()
    return float(loss), _values(written), np.asarray(x.grad).tolist()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_the_caller_tensor_is_the_output_and_its_gradient_goes_through_backward_as_torchs(compiled):
    require_torch()
    assert _scaled("kiln", compiled) == _scaled("torch", False)


def test_two_dirty_outputs_of_a_tuple_as_torchs():
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        leaf = lib.tensor([1.0, 2.0], requires_grad=True)
        p, q = leaf * 1.0, leaf * 3.0
        rp, rq = _functions(lib)[1].apply(p, q)
        assert rp is p and rq is q
        (rp * rq).sum().backward()
        results.append((_values(p), _values(q), np.asarray(leaf.grad).tolist()))
    assert results[0] == results[1]


def test_a_tensor_needing_no_grad_is_written_and_returned_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        b = lib.tensor([1.0, 2.0])
        out = _functions(lib)[0].apply(b, lib.tensor([5.0, 5.0]))
        assert out is b and not out.requires_grad and b.tolist() == [5.0, 10.0], library


def test_a_compiled_function_writes_its_argument_and_a_shared_array():
    import kiln

    scale = _functions(kiln)[0]
    step = kiln.compile(lambda x, w: scale.apply(x, w).sum(), fullgraph=True)
    storage = np.ones(2, np.float32)
    x = kiln.from_numpy(storage)
    step(x, kiln.tensor([3.0, 3.0]))
    step(x, kiln.tensor([3.0, 3.0]))
    assert storage.tolist() == [9.0, 9.0] and x.tolist() == [9.0, 9.0]


def test_the_write_counts_a_version_so_a_backward_that_saved_the_tensor_refuses_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        leaf = lib.tensor([1.0, 2.0], requires_grad=True)
        a = leaf * 1.0
        saved = a * leaf  # mul saves a
        _functions(lib)[0].apply(a, lib.tensor([2.0, 2.0]))
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            saved.sum().backward()


def test_a_leaf_that_requires_grad_is_refused_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad (is being|has been) used in an in-place"):
            _functions(lib)[0].apply(lib.tensor([1.0], requires_grad=True), lib.tensor([2.0]))


def test_a_dirty_input_forward_does_not_return_is_torchs_error():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        with pytest.raises(RuntimeError, match="Some elements marked as dirty during the forward method were not returned"):
            _functions(lib)[2].apply(lib.tensor([1.0]) * 1.0)
