"""A batch norm over one value per channel while training (a batch of one sample into ``BatchNorm1d``) and an instance
norm over one spatial element (a 1x1 map into ``InstanceNorm2d``, as a PatchGAN on too small an image) are refused
with PyTorch's ``ValueError`` and words; kiln returned zeros (the bias), silently. Where PyTorch normalizes anyway
(eval mode with running statistics, ``use_input_stats=False``) kiln gives its values."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

REFUSED = {
    "BatchNorm1d-one-sample": lambda nn, x: nn.BatchNorm1d(3)(x((1, 3))),
    "BatchNorm2d-one-sample-1x1": lambda nn, x: nn.BatchNorm2d(3)(x((1, 3, 1, 1))),
    "BatchNorm1d-untracked-in-eval": lambda nn, x: nn.BatchNorm1d(3, track_running_stats=False).eval()(x((1, 3))),
    "F.batch_norm-training": lambda nn, x: nn.functional.batch_norm(x((1, 3)), None, None, training=True),
    "InstanceNorm2d-1x1": lambda nn, x: nn.InstanceNorm2d(3)(x((2, 3, 1, 1))),
    "InstanceNorm2d-affine-unbatched-1x1": lambda nn, x: nn.InstanceNorm2d(3, affine=True)(x((3, 1, 1))),
    "InstanceNorm1d-length-1": lambda nn, x: nn.InstanceNorm1d(3)(x((2, 3, 1))),
    "InstanceNorm2d-untracked-in-eval": lambda nn, x: nn.InstanceNorm2d(3).eval()(x((2, 3, 1, 1))),
    "F.instance_norm": lambda nn, x: nn.functional.instance_norm(x((2, 3, 1, 1))),
}

NORMALIZED = {
    "BatchNorm1d-eval": lambda nn, x: nn.BatchNorm1d(3).eval()(x((1, 3))),
    "BatchNorm2d-one-sample-2x1": lambda nn, x: nn.BatchNorm2d(3)(x((1, 3, 2, 1))),
    "InstanceNorm2d-tracked-in-eval": lambda nn, x: nn.InstanceNorm2d(3, track_running_stats=True).eval()(
        x((2, 3, 1, 1))),
    "F.instance_norm-running-stats": lambda nn, x: nn.functional.instance_norm(
        x((2, 3, 1, 1)), x((3,)), x((3,)).abs(), use_input_stats=False),
    "InstanceNorm2d-1x2": lambda nn, x: nn.InstanceNorm2d(3)(x((2, 3, 1, 2))),
}


def _inputs(lib):
    rng = np.random.default_rng(0)
    return lambda shape: lib.tensor(rng.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_norm_of_one_value_while_training_is_refused_as_torch(case):
    torch = require_torch()
    with pytest.raises(ValueError) as theirs:
        REFUSED[case](torch.nn, _inputs(torch))
    with pytest.raises(ValueError) as ours:
        REFUSED[case](kiln.nn, _inputs(kiln))
    words = str(theirs.value).split(", got input size")[0]
    assert words in str(ours.value) and "test_norm_single_value_vs_torch.py" in str(ours.value)


def test_the_refusal_names_the_input_size():
    with pytest.raises(ValueError, match=r"got input size kiln.Size\(\[2, 3, 1, 1\]\)"):
        kiln.nn.functional.instance_norm(kiln.zeros(2, 3, 1, 1))


@pytest.mark.parametrize("case", list(NORMALIZED))
def test_where_torch_normalizes_one_value_kiln_gives_its_values(case):
    (_, torch_nn, _), (_, nn, _) = libraries("torch"), libraries("kiln")
    theirs = NORMALIZED[case](torch_nn, _inputs(require_torch()))
    ours = NORMALIZED[case](nn, _inputs(kiln))
    np.testing.assert_allclose(np.asarray(ours.detach()), theirs.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_a_compiled_batch_norm_of_one_sample_is_refused():
    layer = kiln.nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        kiln.compile(layer, fullgraph=True)(kiln.ones(1, 3))
