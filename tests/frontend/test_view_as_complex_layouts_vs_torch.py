"""``view_as_complex`` refuses what torch's refuses, with its RuntimeError and words
(``frontend/complex_view_checks.py``): a layout that cannot be read as pairs in place (``x.t()``, a column slice of a wider tensor, an odd offset), a dtype
other than half/float/double, no dims, a last dim other than 2. kiln read the pairs by indexing and accepted the
layouts torch refuses. Layouts torch accepts (permuted leading dims, an expanded row, LLaMA's reshape of a transposed
activation) still agree with torch's values. Checked against torch 2.13, eagerly and in ``kiln.compile``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

REFUSED = {
    "transposed": lambda lib: lib.arange(6.).reshape(2, 3).t(),
    "column slice": lambda lib: lib.arange(9.).reshape(3, 3)[:, :2],
    "odd offset": lambda lib: lib.arange(5.)[1:].view(2, 2),
    "integer": lambda lib: lib.arange(4).reshape(2, 2),
    "bool": lambda lib: lib.ones(3, 2, dtype=lib.bool),
    "last dim 3": lambda lib: lib.arange(6.).reshape(2, 3),
    "no dims": lambda lib: lib.tensor(1.),
}

ACCEPTED = {
    "permuted leading dims": lambda lib: lib.arange(12.).reshape(2, 3, 2).transpose(0, 1),
    "expanded row": lambda lib: lib.arange(2.).expand(3, 2),
    "reshaped transposed activation":
        lambda lib: lib.arange(48.).reshape(2, 3, 2, 4).transpose(1, 2).reshape(2, 2, 3, 2, 2),
    "even offset": lambda lib: lib.arange(6.)[2:].view(2, 2),
}


def _message(lib, make):
    with pytest.raises(RuntimeError) as raised:
        lib.view_as_complex(make(lib))
    return str(raised.value).splitlines()[-1].strip()


@pytest.mark.parametrize("case", REFUSED)
def test_view_as_complex_refuses_as_torch(case):
    torch = require_torch()
    assert _message(kiln, REFUSED[case]) == _message(torch, REFUSED[case])


@pytest.mark.parametrize("case", ACCEPTED)
def test_view_as_complex_of_accepted_layouts_is_torchs(case):
    torch = require_torch()
    ours, theirs = kiln.view_as_complex(ACCEPTED[case](kiln)), torch.view_as_complex(ACCEPTED[case](torch))
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_a_compiled_view_as_complex_of_a_transpose_is_refused_naming_the_users_line():
    with warnings.catch_warnings(), pytest.raises(RuntimeError) as raised:
        warnings.simplefilter("ignore")  # the eager retry's notice
        kiln.compile(lambda x: kiln.view_as_real(kiln.view_as_complex(x.t()) * 2))(kiln.ones(2, 3))
    assert "last dimension with stride 1" in str(raised.value)
    assert "test_view_as_complex_layouts_vs_torch.py" in str(raised.value)


def test_a_compiled_view_as_complex_with_a_symbolic_batch_is_torchs():
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((5, 3, 4))

    def rotate(lib, x):
        return lib.view_as_real(lib.view_as_complex(x.reshape(*x.shape[:-1], -1, 2)) * 1j).flatten(2)

    ours = kiln.compile(lambda t: rotate(kiln, t))(kiln.tensor(x))
    np.testing.assert_allclose(np.asarray(ours), rotate(torch, torch.tensor(x)).numpy(), rtol=1e-15)
