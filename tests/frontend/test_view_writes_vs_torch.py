"""Writes through views that are not indexing (``frontend/view_writes.py``), as PyTorch's: ``x.t().fill_(0)``,
``x.view(-1)[i] = v``, ``x.permute(1, 0, 2).mul_(2)``, ``x.unsqueeze(0).add_(1)``, ``cov.diagonal().add_(eps)``,
``x.squeeze_()``. The base and every other view of it see the write, eagerly and in a ``kiln.compile``d function, with
PyTorch's gradients; a reshape that PyTorch copies (``x.t().reshape(-1)``) stays a copy; an expanded view refuses
writes with torch's RuntimeError except ``fill_``/``zero_``. These used to be refused ("kiln does not write through
views") when the base was read. Values and gradients vs torch 2.13 float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

X0 = np.random.default_rng(7).standard_normal((3, 4, 5))


def transposed_row_zeroed(lib, y):
    others = (y[1], y.view(-1), y.permute(2, 0, 1))  # views taken before the write see it too
    y.transpose(0, 1)[0].zero_()
    return (y,) + others


def flat_view_assigned(lib, y):
    flat = y.view(-1)
    flat[3] = 7.0
    y.reshape(12, 5)[2:4] *= 3.0
    y.flatten()[10:20] = -1.0
    return y, flat


def permuted_scaled(lib, y):
    permuted = y.permute(1, 0, 2)
    permuted.mul_(2.0)
    permuted[0, 1].add_(5.0)
    return y, permuted, y.sum(1)


def unsqueezed_and_squeezed(lib, y):
    row = y[:1]
    y.unsqueeze(0).add_(1.0)
    row.squeeze(0).sub_(0.5)
    y.unsqueeze(-1)[..., 2, 0].mul_(-1.0)
    return y, row


def unflattened_and_moved(lib, y):
    y.unflatten(0, (1, 3)).add_(2.0)
    y.movedim(0, -1).mul_(0.5)
    y.swapaxes(1, 2)[..., 0] = 9.0
    y.mT[:, 0].div_(4.0)
    return y, y[0]


def diagonals_written(lib, y):
    square = y[:, :4, :4].clone()
    main = square.diagonal(0, 1, 2)
    main.add_(0.25)  # cov.diagonal().add_(eps)
    square.diagonal(1, -2, -1).fill_(3.0)
    square.diagonal(-2, 1, 2).mul_(-2.0)
    return square, main, y[0].diagonal()


def base_written_views_read(lib, y):
    views = (y[1], y.diagonal(0, 0, 2), y.transpose(0, 2), y.view(3, 20), y.unsqueeze(1), y.t().t() if y.ndim == 2 else y.mT.mT)
    y.mul_(3.0)
    y[0, 0, 0] = -4.0
    return (y,) + views


def views_of_views_written(lib, y):
    nested = y.transpose(0, 1).reshape(4, 15)  # a copy in torch: the transpose's strides forbid the view
    nested.fill_(0.0)
    chained = y.view(12, 5).t()[1:3]
    chained.add_(10.0)
    return y, nested, chained


PROGRAMS = [transposed_row_zeroed, flat_view_assigned, permuted_scaled, unsqueezed_and_squeezed, unflattened_and_moved,
            diagonals_written, base_written_views_read, views_of_views_written]


def _run(lib, program):
    x = lib.tensor(X0, requires_grad=True)
    outputs = program(lib, x * 1.0)
    weights = [np.random.default_rng(i).standard_normal(tuple(o.shape)) for i, o in enumerate(outputs)]
    sum(((o * lib.tensor(w)).sum() for o, w in zip(outputs, weights)), x.sum() * 0).backward()
    return [o.detach().numpy().copy() for o in outputs] + [x.grad.numpy()]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.__name__)
def test_eager_writes_through_views_and_their_gradients_as_torch(program):
    torch = require_torch()
    for ours, theirs in zip(_run(kiln, program), _run(torch, program), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.__name__)
def test_compiled_writes_through_views_as_torch(program):
    torch = require_torch()
    compiled = kiln.compile(lambda x: program(kiln, x * 1.0), fullgraph=True)
    ours = compiled(kiln.tensor(X0))
    theirs = program(torch, torch.tensor(X0) * 1.0)
    for got, want in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-14, atol=1e-14)


def test_a_parameter_written_through_its_diagonal_and_transpose_under_no_grad_as_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        layer = lib.nn.Linear(4, 4)
        with lib.no_grad():
            layer.weight.zero_()
            layer.weight.diagonal().fill_(1.0)  # an identity init
            layer.weight.t()[0].add_(2.0)
        results.append(layer.weight.detach().numpy().copy())
    np.testing.assert_array_equal(*results)
    assert results[0][1, 0] == 2.0 and results[0][1, 1] == 1.0


def test_a_write_through_a_view_of_a_leaf_that_requires_grad_is_refused_as_torch():
    torch = require_torch()
    for lib, error in ((torch, RuntimeError), (kiln, RuntimeError)):
        x = lib.zeros(3, 3, requires_grad=True)
        with pytest.raises(error, match="a view of a leaf Variable that requires grad"):
            x.t().add_(1.0)


@pytest.mark.parametrize("write", ["add_", "copy_", "mul_", "whole index"])
def test_writing_an_expanded_tensor_is_torchs_runtime_error(write):
    torch = require_torch()
    writes = {"add_": lambda e: e.add_(1.0), "copy_": lambda e, lib=None: e.copy_(e * 2), "mul_": lambda e: e.mul_(2.0),
              "whole index": lambda e: e.__setitem__(slice(None), 5.0)}
    for lib in (torch, kiln):
        base = lib.zeros(1, 4)
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor refers to a single memory location"):
            writes[write](base.expand(3, 4))
        np.testing.assert_array_equal(base.numpy(), np.zeros((1, 4)))


@pytest.mark.parametrize("method", ["fill_", "zero_"])
def test_fill_and_zero_of_an_expanded_tensor_write_the_base_as_torch(method):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        base = lib.ones(2, 1, 3) * 2.0
        expanded = base.expand(4, 2, 5, 3)
        getattr(expanded, method)(*([7.0] if method == "fill_" else []))
        results.append((base.numpy().copy(), expanded.numpy().copy()))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


def test_a_write_through_part_of_an_expanded_tensor_is_refused_clearly():
    """torch writes base's row through ``x.expand(3, 4)[1]``; kiln cannot map that part back, so it refuses."""
    torch = require_torch()
    theirs = torch.zeros(1, 4)
    theirs.expand(3, 4)[1].fill_(2.0)
    assert theirs.sum().item() == 8.0
    base = kiln.zeros(1, 4) * 1.0
    with pytest.raises(TraceError, match=r"fill_ writes through part of an expanded tensor .* clone\(\) the expanded tensor"):
        base.expand(3, 4)[1].fill_(2.0)


def squeezed_in_place(lib, y):
    row = y[0]
    y.squeeze_()
    y.add_(1.0)
    y.unsqueeze_(0)
    y.t_() if y.ndim == 2 else y.transpose_(0, 2)
    y[1].mul_(3.0)
    return y, row


def test_metadata_in_place_ops_keep_the_storage_as_torch():
    torch = require_torch()
    x0 = np.random.default_rng(3).standard_normal((1, 4, 1))
    results = []
    for lib in (kiln, torch):
        y = lib.tensor(x0) * 1.0
        outputs = squeezed_in_place(lib, y)
        results.append([o.numpy().copy() for o in outputs] + [outputs[0].stride(), [o._version for o in outputs]])
    assert results[1][-1] == [5, 5]  # each in-place op counts on the storage, the metadata-only ones too
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


COPIES = {"pad crop": lambda lib, x: lib.nn.functional.pad(x, (-1, -1)), "pad nothing": lambda lib, x: lib.nn.functional.pad(x, (0, 0)),
          "repeat": lambda lib, x: x.repeat(1, 2), "tile": lambda lib, x: lib.tile(x, (1, 1)),
          "interpolate same size": lambda lib, x: lib.nn.functional.interpolate(x[None], scale_factor=1.0)[0],
          "reshape of a transpose": lambda lib, x: x.t().reshape(-1), "contiguous of a transpose": lambda lib, x: x.t().contiguous(),
          "diag": lambda lib, x: lib.diag(x)}


@pytest.mark.parametrize("name", sorted(COPIES))
def test_ops_that_copy_in_torch_are_no_views(name):
    """kiln builds these from view ops of the input (or returns the input itself), torch computes a new tensor: a write
    to the result leaves the input alone, and a write to the input leaves the result alone."""
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(np.arange(20.0).reshape(4, 5)) * 1.0
        result = COPIES[name](lib, x)
        result.add_(1000.0)
        x.mul_(-1.0)
        results.append((x.numpy().copy(), result.numpy().copy()))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)
