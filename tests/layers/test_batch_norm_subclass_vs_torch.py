"""User norms derived from ``nn.modules.batchnorm._BatchNorm`` work as PyTorch's (vnet.pytorch's ``ContBatchNorm3d``
always normalises with the batch's statistics by calling ``F.batch_norm(..., True, ...)`` in its own forward; other
code keeps the base's forward and gives only ``_check_input_dim``). kiln refused any subclass of ``_BatchNorm``
(an isinstance-only marker then). The parameters, buffers, state_dict, forward values, gradients, running statistics
and the base's ``NotImplementedError`` are compared with torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

from e2e.probe_lockstep import array, assert_same_records, snapshot
from oracles import libraries, require_torch


def cont_batch_norm_3d(nn, F, call_base_check=False):
    """vnet.pytorch's ``ContBatchNorm3d`` (``call_base_check``: with its ``super()._check_input_dim`` line)."""

    class ContBatchNorm3d(nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input):
            if input.dim() != 5:
                raise ValueError('expected 5D input (got {}D input)'.format(input.dim()))
            if call_base_check:
                super(ContBatchNorm3d, self)._check_input_dim(input)

        def forward(self, input):
            self._check_input_dim(input)
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                True, self.momentum, self.eps)

    return ContBatchNorm3d


def sequence_norm(nn):
    """A norm keeping the base's forward, checking for ``(N, C, L)`` inputs only."""

    class SequenceNorm(nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input):
            if input.dim() != 3:
                raise ValueError(f"expected 3D input (got {input.dim()}D input)")

    return SequenceNorm


def _run(name, make, inputs, train_calls=2):
    """Two training forwards (gradients of a weighted sum), then one in eval mode, from the same affine values."""
    lib, nn, F = libraries(name)
    norm = make(nn, F)(3, momentum=0.3)
    norm.weight.data = lib.tensor(np.array([1.5, 0.5, -1.0]))
    norm.bias.data = lib.tensor(np.array([0.1, -0.2, 0.3]))
    record = {"outputs": []}
    for values in inputs[:train_calls]:
        x = lib.tensor(values, requires_grad=True)
        y = norm(x)
        (y * lib.tensor(np.arange(y.numel(), dtype=np.float64).reshape(y.shape))).sum().backward()
        record["outputs"].append(array(y))
        record.setdefault("input grad", array(x.grad))
    record["weight grad"], record["bias grad"] = array(norm.weight.grad), array(norm.bias.grad)
    norm.eval()
    record["eval"] = array(norm(lib.tensor(inputs[-1])))
    record["state"] = snapshot(norm)
    record["keys"] = list(norm.state_dict())
    record["isinstance"] = isinstance(norm, nn.modules.batchnorm._BatchNorm)
    return record


def _assert_same(ours, theirs):
    for exact in ("keys", "isinstance"):
        assert ours.pop(exact) == theirs.pop(exact), exact
    assert_same_records(ours, theirs, rtol=1e-12, atol=1e-14)


def test_vnet_cont_batch_norm_3d_as_torch(float64_default):
    """Batch statistics in eval too, the running statistics updated by its ``F.batch_norm`` call (not counted:
    ``num_batches_tracked`` stays 0, as torch's, since the base's forward is not run)."""
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 3, 2, 3, 2)) for _ in range(3)]
    ours = _run("kiln", cont_batch_norm_3d, inputs)
    assert ours["keys"] == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    _assert_same(ours, _run("torch", cont_batch_norm_3d, inputs))


def test_subclass_keeping_the_base_forward_as_torch(float64_default):
    """The base's forward: the subclass's ``_check_input_dim``, the batch counted, the running statistics in eval."""
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(4, 3, 5)) for _ in range(3)]
    make = lambda nn, F: sequence_norm(nn)  # noqa: E731
    _assert_same(_run("kiln", make, inputs), _run("torch", make, inputs))


@pytest.mark.parametrize("library", ["kiln", "torch"])
def test_subclass_input_checks_raise_as_torch(library):
    """The subclass's own check refuses a 4-D input; vnet.pytorch's ``super()._check_input_dim`` reaches the base's,
    which raises ``NotImplementedError`` in torch 2.13 and in kiln."""
    require_torch()
    lib, nn, F = libraries(library)
    with pytest.raises(ValueError, match=r"expected 3D input \(got 4D input\)"):
        sequence_norm(nn)(3)(lib.zeros(2, 3, 4, 4))
    with pytest.raises(NotImplementedError):
        cont_batch_norm_3d(nn, F, call_base_check=True)(3)(lib.zeros(2, 3, 2, 2, 2))
