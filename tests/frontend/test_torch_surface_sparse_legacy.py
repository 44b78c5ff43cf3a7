"""``torch.sparse.FloatTensor(indices, values, size)`` and its kin (``kiln.sparse.DoubleTensor``, ``LongTensor``,
``IntTensor``, ``HalfTensor``), ``Tensor.coalesce()`` and the COO accessors (``indices``, ``_indices``, ``values``,
``_values``, ``_nnz``), against torch 2.13: LightGCN builds its graph by ``torch.sparse.FloatTensor(index, data,
torch.Size(coo.shape))`` then ``.coalesce()``, pygcn by the same constructor, NGCF's node dropout reads ``_indices()``,
``_values()`` and ``_nnz()``. kiln had none of them (``AttributeError``); they now work on kiln's dense-held sparse
tensor (``frontend/sparse_legacy.py``) with torch's values, dtypes (the values', whatever the name), deprecation
warning and gradients, and answer for sparse tensors only, with torch's errors for dense ones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.frontend import sparse_legacy
from kiln.frontend import warn_once as warned_once
from oracles import require_torch

INDICES = np.array([[0, 1, 2, 2], [1, 2, 0, 0]])  # (2, 0) twice: coalesce sums it
VALUES = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def built(lib, name, values, with_size=True):
    constructor = getattr(lib.sparse, name)
    args = (lib.tensor(INDICES), lib.tensor(values)) + ((lib.Size([3, 4]),) if with_size else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return constructor(*args)


@pytest.mark.parametrize("with_size", [True, False], ids=["with size", "size from the indices"])
@pytest.mark.parametrize("values", [VALUES, VALUES.astype(np.float64), np.array([1, 2, 3, 4])], ids=["float32", "float64", "int64"])
@pytest.mark.parametrize("name", ["FloatTensor", "DoubleTensor", "LongTensor", "IntTensor", "HalfTensor"])
def test_legacy_sparse_constructors_build_torchs_tensor(name, values, with_size):
    torch = require_torch()
    ours, theirs = built(kiln, name, values, with_size), built(torch, name, values, with_size)
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]  # the values' dtype, as torch's
    np.testing.assert_array_equal(ours.coalesce().to_dense().numpy(), theirs.coalesce().to_dense().numpy())


@pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor")
@pytest.mark.parametrize("name, dtype", [("FloatTensor", "float32"), ("DoubleTensor", "float64"), ("LongTensor", "int64")])
def test_sizes_only_give_an_empty_tensor_of_the_constructors_dtype(name, dtype):
    torch = require_torch()
    ours, theirs = getattr(kiln.sparse, name)(2, 3), getattr(torch.sparse, name)(2, 3)
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1] == dtype
    np.testing.assert_array_equal(ours.coalesce().numpy(), theirs.to_dense().numpy())


@pytest.mark.parametrize("args", [lambda lib: (lib.tensor(INDICES), lib.tensor(VALUES), lib.Size([3, 4])),
                                  lambda lib: (lib.tensor(INDICES), lib.tensor(VALUES)), lambda lib: (2, 3)],
                         ids=["indices, values, size", "indices, values", "sizes"])
def test_the_deprecation_warning_is_torchs_once_a_process(args):
    torch = require_torch()
    messages = []
    deprecations = {sparse_legacy.DEPRECATED_WITH_SHAPE, sparse_legacy.DEPRECATED, sparse_legacy.DEPRECATED_SIZES}
    warned_once._GIVEN.difference_update(deprecations)  # kiln's once a process starts again here
    for lib in (torch, kiln):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lib.sparse.FloatTensor(*args(lib))
            lib.sparse.FloatTensor(*args(lib))
        messages.append([str(w.message) for w in caught if "deprecated" in str(w.message)])
    theirs, ours = messages
    assert len(ours) == 1 and len(theirs) <= 1  # once a process: torch's is gone where an earlier test took it
    assert ours[0] in deprecations
    if theirs:
        assert theirs[0].startswith(ours[0])  # torch adds where in its C++ it was triggered


def test_coalesce_of_a_dense_tensor_is_refused_as_torch():
    torch = require_torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.ones(2).coalesce()
    with pytest.raises(RuntimeError) as ours:
        kiln.ones(2).coalesce()
    assert str(theirs.value) in str(ours.value) and "test_torch_surface_sparse_legacy.py" in str(ours.value)


def test_coalesce_of_every_sparse_form_and_the_graph_product_as_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        forms = [lib.sparse_coo_tensor(lib.tensor(INDICES), lib.tensor(VALUES), (3, 4)),
                 built(lib, "FloatTensor", VALUES), lib.tensor(np.eye(3, 4, dtype=np.float32)).to_sparse()]
        x = lib.tensor(np.arange(8.0, dtype=np.float32).reshape(4, 2), requires_grad=True)
        product = lib.sparse.mm(forms[1].coalesce(), x)
        product.pow(2).sum().backward()
        results.append([f.coalesce().to_dense().numpy() for f in forms] + [product.detach().numpy(), x.grad.numpy()])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_a_legacy_sparse_constructor_given_other_arguments_says_what_to_write():
    with pytest.raises(TypeError, match=r"torch.sparse.FloatTensor takes \(indices, values\).*sparse_coo_tensor"):
        kiln.sparse.FloatTensor(kiln.tensor(INDICES))


def test_coo_accessors_of_a_sparse_tensor_as_torch():
    """NGCF's ``sparse_dropout``: ``x._indices()``, ``x._values()``, ``x._nnz()``, a mask over the entries, the tensor
    built again by ``torch.sparse.FloatTensor(i, v, x.shape)``; ``values()`` carries the gradient, ``_values()`` not."""
    torch = require_torch()
    records = []
    for lib in (kiln, torch):
        values = lib.tensor(VALUES, requires_grad=True)
        x = lib.sparse_coo_tensor(lib.tensor(INDICES), values, (3, 4)).coalesce()
        keep = lib.tensor([True, False, True])
        i, v = x._indices(), x._values()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dropped = lib.sparse.FloatTensor(i[:, keep], v[keep], x.shape)
        (x.values() * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
        records.append([x.indices().numpy(), i.numpy(), v.detach().numpy(), x._nnz(), x.values().requires_grad,
                        v.requires_grad, i.dtype == lib.int64, dropped.coalesce().to_dense().numpy(), values.grad.numpy()])
    for ours, theirs in zip(*records):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("method, kind", [("indices", RuntimeError), ("values", RuntimeError), ("_indices", NotImplementedError),
                                          ("_values", NotImplementedError), ("_nnz", NotImplementedError)])
def test_coo_accessors_of_a_dense_tensor_are_refused_as_torch(method, kind):
    torch = require_torch()
    with pytest.raises(kind) as theirs:
        getattr(torch.ones(2), method)()
    with pytest.raises(kind) as ours:
        getattr(kiln.ones(2), method)()
    assert str(theirs.value).split("\n")[0].split(". ")[0][:60] in str(ours.value)
