"""``maximum``, ``minimum``, ``fmax`` and ``fmin`` take only tensors, as torch's (no Scalar overload): a Python
number, a NumPy scalar or array, a list or a bool is torch's ``TypeError`` with its message, naming the argument and
its position (``frontend/tensor_operand_checks.py``). kiln accepted numbers, so code written against it failed under
torch. ``torch._foreach_maximum(tensors, number)`` and NumPy's ufuncs keep taking numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from oracles import libraries, require_torch

FUNCTIONS = ["maximum", "minimum", "fmax", "fmin"]
BAD = {"float": 2.0, "int": 2, "numpy.float32": np.float32(2.0), "numpy.ndarray": np.array([2.0, 2.0]),
       "list": [2.0, 2.0], "bool": True, "NoneType": None}
FORMS = {
    "function": lambda lib, name, t, bad: getattr(lib, name)(t, bad),
    "method": lambda lib, name, t, bad: getattr(t, name)(bad),
    "number_input": lambda lib, name, t, bad: getattr(lib, name)(bad, t),
    "keyword": lambda lib, name, t, bad: getattr(lib, name)(t, other=bad),
}


def _message(library: str, name: str, form: str, bad) -> str:
    lib, _, _ = libraries(library)
    with pytest.raises(TypeError) as caught:
        FORMS[form](lib, name, lib.tensor([1.0, 5.0]), bad)
    return str(caught.value)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_non_tensor_operand_is_torchs_type_error(name, kind, form):
    require_torch()
    expected = _message("torch", name, form, BAD[kind])
    assert re.match(rf"{name}\(\): argument '(other|input)'", expected)  # torch's own wording, then kiln's the same
    message = _message("kiln", name, form, BAD[kind])
    assert expected in message and "test_tensor_only_operands_vs_torch.py" in message  # the user's line
    assert "clamp" in message or "full_like" in message  # what to do


@pytest.mark.parametrize("name", FUNCTIONS)
def test_tensor_operands_still_work_as_torchs(name):
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, nn, _ = libraries(library)
        t = lib.tensor([1.0, float("nan"), -3.0, 4.0])
        weight = nn.Parameter(lib.tensor([0.5, 0.5, 0.5, 0.5]))
        results.append([np.asarray(r) for r in (getattr(lib, name)(t, lib.tensor(2.0)), getattr(t, name)(weight.data),
                                                getattr(lib, name)(t, lib.tensor([0.0, 1.0, float("nan"), 5.0])))])
    for kiln_result, torch_result in zip(*results):
        np.testing.assert_array_equal(kiln_result, torch_result)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_foreach_and_numpy_forms_take_a_number_as_torchs(name):
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        tensors = [lib.tensor([1.0, 5.0]), lib.tensor([-2.0, 3.0])]
        out_of_place = getattr(lib, f"_foreach_{name}")(tensors, 2.0)
        getattr(lib, f"_foreach_{name}_")(tensors, 2.5)
        results.append([np.asarray(t) for t in (*out_of_place, *tensors)] + [getattr(np, name)(tensors[0], 0.0)])
    for kiln_result, torch_result in zip(*results):
        np.testing.assert_array_equal(kiln_result, torch_result)


def test_hypot_and_logaddexp_of_a_number_still_run_on_kiln():
    """kiln's own number forms that computed through maximum/minimum (torch refuses them too; kiln keeps them)."""
    import kiln

    np.testing.assert_allclose(np.asarray(kiln.tensor([3.0]).hypot(4.0)), [5.0])
    np.testing.assert_allclose(np.asarray(kiln.tensor([0.0]).logaddexp(0.0)), [np.log(2.0)], rtol=1e-6)
