"""Slices, squeezes and expand_dims run as inline indexing in the planned code (``out_kernels.VIEWS``), with the
kernels' results: every axis form (first, middle, last, negative, several), strided slices, a symbolic batch dim."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir.parser import parse

VIEWS_IR = """func @views(%x: tensor<Nx3x4x5xf32>) {
  %s0 = "tensor.slice"(%x) {axis = 2, start = 1, stop = 4, step = 2} : (tensor<Nx3x4x5xf32>) -> tensor<Nx3x2x5xf32>
  %s1 = "tensor.slice"(%x) {axis = -1, start = 0, stop = 3, step = 1} : (tensor<Nx3x4x5xf32>) -> tensor<Nx3x4x3xf32>
  %s2 = "tensor.slice"(%x) {axis = 1, start = 2, stop = 3, step = 1} : (tensor<Nx3x4x5xf32>) -> tensor<Nx1x4x5xf32>
  %q0 = "tensor.squeeze"(%s2) {axes = [1]} : (tensor<Nx1x4x5xf32>) -> tensor<Nx4x5xf32>
  %s3 = "tensor.slice"(%s2) {axis = -2, start = 3, stop = 4, step = 1} : (tensor<Nx1x4x5xf32>) -> tensor<Nx1x1x5xf32>
  %q1 = "tensor.squeeze"(%s3) {axes = [-2, 1]} : (tensor<Nx1x1x5xf32>) -> tensor<Nx5xf32>
  %e0 = "tensor.expand_dims"(%q1) {axes = [0]} : (tensor<Nx5xf32>) -> tensor<1xNx5xf32>
  %e1 = "tensor.expand_dims"(%q1) {axes = [-1, 1]} : (tensor<Nx5xf32>) -> tensor<Nx1x5x1xf32>
  %e2 = "tensor.expand_dims"(%q0) {axes = [-2]} : (tensor<Nx4x5xf32>) -> tensor<Nx4x1x5xf32>
  %a0 = "tensor.exp"(%s0) : (tensor<Nx3x2x5xf32>) -> tensor<Nx3x2x5xf32>
  %a1 = "tensor.neg"(%s1) : (tensor<Nx3x4x3xf32>) -> tensor<Nx3x4x3xf32>
  %a2 = "tensor.exp"(%e0) : (tensor<1xNx5xf32>) -> tensor<1xNx5xf32>
  %a3 = "tensor.neg"(%e1) : (tensor<Nx1x5x1xf32>) -> tensor<Nx1x5x1xf32>
  %a4 = "tensor.exp"(%e2) : (tensor<Nx4x1x5xf32>) -> tensor<Nx4x1x5xf32>
  return %a0, %a1, %a2, %a3, %a4 : tensor<Nx3x2x5xf32>, tensor<Nx3x4x3xf32>, tensor<1xNx5xf32>, tensor<Nx1x5x1xf32>, tensor<Nx4x1x5xf32>
}
"""


def _expected(x: np.ndarray) -> list[np.ndarray]:
    q1 = x[:, 2, 3, :]
    return [np.exp(x[:, :, 1:4:2]), -x[..., :3], np.exp(q1[None]), -q1[:, None, :, None], np.exp(x[:, 2][:, :, None, :])]


def _compiled(planned: bool, monkeypatch):
    monkeypatch.setattr(NumpyBackend, "plan_memory", planned)
    return NumpyBackend().compile(parse(VIEWS_IR))


@pytest.mark.parametrize("batch", [1, 2])
def test_inline_views_give_the_kernels_results(batch, monkeypatch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 4, 5)).astype(np.float32)
    planned, kernels = _compiled(True, monkeypatch), _compiled(False, monkeypatch)
    for got, reference, expected in zip(planned(x), kernels(x), _expected(x)):
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, reference)
        np.testing.assert_array_equal(got, expected)


def test_planned_code_indexes_instead_of_calling_the_movement_kernels(monkeypatch):
    source = _compiled(True, monkeypatch).source
    for kernel in ("k_tensor_slice", "k_tensor_squeeze", "k_tensor_expand_dims"):
        assert kernel not in source
    assert "[:, :, 1:4:2]" in source and "[:, None, :, None]" in source
