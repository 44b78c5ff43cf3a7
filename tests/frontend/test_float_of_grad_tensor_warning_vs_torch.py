"""``float(loss)`` of a tensor that requires grad (I-JEPA's ``train_step`` returns ``float(loss)``) warns torch 2.13's
UserWarning once per process (``TORCH_WARN_ONCE``: not again, even under ``simplefilter("always")``); ``item()``,
``int()`` and a detached tensor's ``float()`` do not. kiln was silent, so a ``pytest.warns`` or ``filterwarnings``
written against torch failed. Run in a fresh interpreter each, since the first call of the process is the one that
warns."""

from __future__ import annotations

import subprocess
import sys

from oracles import require_torch

PROGRAM = """
import warnings
import {lib} as torch
p = torch.nn.Parameter(torch.ones(2))
loss = (p * 2).sum()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    values = [loss.item(), int(loss), float(loss.detach()), float(torch.tensor(1.5))]
    with torch.no_grad():
        values.append(float(p.sum()))
    print(repr(len(caught)))
    values += [float(loss), float(loss), float(p[0])]
for w in caught:
    print(repr((w.category.__name__, str(w.message).split(" (Triggered internally")[0])))
print(repr(values))
"""


def _output(lib):
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(lib=lib)], capture_output=True, text=True, timeout=120,
                          env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_float_of_a_tensor_requiring_grad_warns_once_as_torch():
    require_torch()
    theirs = _output("torch")
    assert theirs[0] == "0" and len(theirs) == 3 and "requires_grad=True to a scalar" in theirs[1]
    assert _output("kiln") == theirs


def test_the_warning_names_the_users_line():
    """kiln's warning points at the caller's line, whichever call is first in the run."""
    import warnings

    import kiln
    from kiln.frontend import warn_once

    warn_once._GIVEN.discard(warn_once.FLOAT_OF_GRAD_TENSOR)
    loss = (kiln.nn.Parameter(kiln.ones(2)) * 2).sum()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert float(loss) == 4.0
    assert [w.filename for w in caught] == [__file__]
