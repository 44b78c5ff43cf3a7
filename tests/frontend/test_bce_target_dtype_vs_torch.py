"""``F.binary_cross_entropy`` / ``nn.BCELoss`` with a target of another float dtype than the probabilities: PyTorch's
kernel refuses it (``Found dtype Float but expected Double``) where kiln promoted, so code that ran in kiln failed in
torch (pytorch-fm's ``criterion(y, target.float())`` with float64 weights; the SchNet/EGNN/DeepFM porting probe). kiln
now raises torch's RuntimeError, naming the user's line and the cast to write; matching dtypes still agree."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

PROBABILITIES, TARGETS = np.array([0.2, 0.7, 0.95]), np.array([0.0, 1.0, 1.0])


def bce_error(name: str, input_dtype: str, target_dtype: str, through_module: bool) -> str:
    lib, nn, F = libraries(name)
    x = lib.tensor(PROBABILITIES, dtype=getattr(lib, input_dtype))
    y = lib.tensor(TARGETS, dtype=getattr(lib, target_dtype))
    with pytest.raises(RuntimeError) as caught:
        nn.BCELoss()(x, y) if through_module else F.binary_cross_entropy(x, y)
    return str(caught.value)


@pytest.mark.parametrize("through_module", [False, True], ids=["F.binary_cross_entropy", "nn.BCELoss"])
@pytest.mark.parametrize("input_dtype, target_dtype", [("float64", "float32"), ("float32", "float64")])
def test_a_target_of_another_dtype_is_refused_as_torch(input_dtype, target_dtype, through_module):
    theirs = bce_error("torch", input_dtype, target_dtype, through_module)
    ours = bce_error("kiln", input_dtype, target_dtype, through_module)
    assert theirs in ours and "target.to(input.dtype)" in ours
    assert __file__.rsplit("/", 1)[-1] in ours.splitlines()[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matching_dtypes_agree_with_torch(dtype):
    values = []
    for name in ("kiln", "torch"):
        lib, nn, F = libraries(name)
        x, y = (lib.tensor(values_, dtype=getattr(lib, dtype)) for values_ in (PROBABILITIES, TARGETS))
        values.append(float(nn.BCELoss()(x, y)))
    assert values[0] == pytest.approx(values[1], rel=1e-6 if dtype == "float32" else 1e-12)
