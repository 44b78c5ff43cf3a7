"""``z.to(...)`` of a complex tensor takes PyTorch's argument forms (``frontend/complex_tensor.py``): a device
(``self.freqs_cis.to(h.device)`` in Meta's LLaMA), a device and a complex dtype, ``dtype=``, a complex tensor's dtype;
a real dtype is refused. Checked against torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _freqs_cis(lib):
    freqs = lib.outer(lib.arange(4, dtype=lib.float64), lib.tensor([1.0, 0.1], dtype=lib.float64))
    return lib.polar(lib.ones_like(freqs), freqs)


FORMS = {
    "device": lambda lib, z: z.to(lib.zeros(1).device),
    "device string": lambda lib, z: z.to("cpu"),
    "device=": lambda lib, z: z.to(device="cpu"),
    "device, dtype": lambda lib, z: z.to("cpu", lib.complex64),
    "dtype=": lambda lib, z: z.to(dtype=lib.complex64),
    "dtype": lambda lib, z: z.to(lib.complex64),
    "tensor": lambda lib, z: z.to(lib.zeros(1, dtype=lib.complex64)),
    "non_blocking": lambda lib, z: z.to(lib.zeros(1).device, non_blocking=True),
}


@pytest.mark.parametrize("form", FORMS)
def test_complex_to_takes_torchs_arguments(form):
    torch = require_torch()
    ours, theirs = (FORMS[form](lib, _freqs_cis(lib)) for lib in (kiln, torch))
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-7 if ours.dtype == kiln.complex64 else 1e-15)


def test_complex_to_a_real_dtype_is_refused_saying_what_to_do():
    with pytest.raises(Exception, match="drops its imaginary part"):
        _freqs_cis(kiln).to("cpu", kiln.float32)
