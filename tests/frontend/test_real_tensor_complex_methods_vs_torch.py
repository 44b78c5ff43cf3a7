"""A real tensor answers the complex-generic methods as torch's: ``conj()``/``resolve_conj()``/``conj_physical()`` and
``.real`` are the tensor itself, ``.imag`` is refused, ``cfloat()``/``cdouble()`` cast with a zero imaginary part. Code
written for either kind (``(a * b.conj()).real.sum()``) raised AttributeError on real tensors."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require_torch


def _generic(a, b):
    return (a * b.conj()).real.sum() + b.resolve_conj().conj_physical().sum()


@pytest.mark.parametrize("compiled", [False, True])
def test_complex_generic_code_on_real_tensors(compiled):
    import kiln

    torch = require_torch()
    a, b = np.array([1.0, -2.0, 0.5]), np.array([3.0, 0.25, -1.0])
    run = kiln.compile(_generic, fullgraph=True) if compiled else _generic
    got = run(kiln.tensor(a), kiln.tensor(b))
    want = _generic(torch.tensor(a), torch.tensor(b))
    assert got.item() == want.item()


def test_identity_imag_and_casts():
    import kiln

    torch = require_torch()
    for lib in (kiln, torch):
        x = lib.tensor([1.5, -2.0])
        assert x.conj() is x and x.real is x and x.resolve_conj() is x
        assert not x.is_meta
        with pytest.raises((RuntimeError, kiln.KilnError), match="imag is not implemented for tensors with non-complex"):
            x.imag
    k, t = kiln.tensor([1.5, -2.0]), torch.tensor([1.5, -2.0])
    assert str(k.cfloat().dtype).split(".")[1] == str(t.cfloat().dtype).split(".")[1] == "complex64"
    assert str(k.cdouble().dtype).split(".")[1] == str(t.cdouble().dtype).split(".")[1] == "complex128"
    np.testing.assert_array_equal(k.cdouble().numpy(), t.cdouble().numpy())
