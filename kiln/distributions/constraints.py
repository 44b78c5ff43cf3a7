"""``kiln.distributions.constraints``: ``torch.distributions.constraints``' names, for transforms and distributions
written against them (``domain = constraints.real``, ``codomain = constraints.interval(-1.0, 1.0)`` in Denis Yarats'
SAC ``TanhTransform``; ``arg_constraints = {"loc": constraints.real}``). Each is a ``Constraint`` whose ``check``
takes an array (a tensor's values) and answers elementwise (per event for the vector and matrix ones), as torch's
``check``; kiln's ``validate_args`` checks parameters and values against them (``frontend/distributions.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.distributions import (Constraint, boolean, nonnegative, nonnegative_integer, positive, real,
                                         real_vector, unit_interval, unnormalized_simplex, whole)
from kiln.frontend.distributions_multinomial import multinomial
from kiln.frontend.distributions_multivariate import lower_cholesky, positive_definite
from kiln.frontend.distributions_transform_functors import cat_constraint, stack_constraint
from kiln.frontend.distributions_transforms_cholesky import corr_cholesky
from kiln.frontend.distributions_one_hot import one_hot


def interval(lower_bound: float, upper_bound: float) -> Constraint:
    """``[lower_bound, upper_bound]``."""
    return Constraint(f"in [{lower_bound}, {upper_bound}]", lambda x: (lower_bound <= x) & (x <= upper_bound),
                      kind="interval", params={"lower_bound": lower_bound, "upper_bound": upper_bound})


def half_open_interval(lower_bound: float, upper_bound: float) -> Constraint:
    """``[lower_bound, upper_bound)``."""
    return Constraint(f"in [{lower_bound}, {upper_bound})", lambda x: (lower_bound <= x) & (x < upper_bound),
                      kind="half_open_interval", params={"lower_bound": lower_bound, "upper_bound": upper_bound})


def greater_than(lower_bound: float) -> Constraint:
    return Constraint(f"greater than {lower_bound}", lambda x: x > lower_bound, kind="greater_than",
                      params={"lower_bound": lower_bound})


def greater_than_eq(lower_bound: float) -> Constraint:
    return Constraint(f"greater than or equal to {lower_bound}", lambda x: x >= lower_bound, kind="greater_than_eq",
                      params={"lower_bound": lower_bound})


def less_than(upper_bound: float) -> Constraint:
    return Constraint(f"less than {upper_bound}", lambda x: x < upper_bound, kind="less_than",
                      params={"upper_bound": upper_bound})


def integer_interval(lower_bound: int, upper_bound: int) -> Constraint:
    return Constraint(f"an integer in [{lower_bound}, {upper_bound}]",
                      lambda x: whole(x) & (lower_bound <= x) & (x <= upper_bound), kind="integer_interval",
                      params={"lower_bound": lower_bound, "upper_bound": upper_bound})


def independent(base_constraint: Constraint, reinterpreted_batch_ndims: int) -> Constraint:
    """``base_constraint`` over events of ``reinterpreted_batch_ndims`` more rightmost dims (all of an event's
    elements must hold)."""
    dims = reinterpreted_batch_ndims

    def check(x: Any) -> np.ndarray:
        ok = np.asarray(base_constraint.check(x))
        return ok.all(axis=tuple(range(ok.ndim - dims, ok.ndim))) if dims else ok

    return Constraint(f"{base_constraint.describe} (each of {dims} rightmost dims)", check,
                      base_constraint.event_dim + dims, kind="independent",
                      params={"base_constraint": base_constraint, "reinterpreted_batch_ndims": dims})


simplex = Constraint("a vector of non-negative numbers summing to 1",
                     lambda x: np.all(x >= 0, axis=-1) & (np.abs(np.sum(x, axis=-1) - 1) < 1e-6), event_dim=1,
                     kind="simplex")
positive_integer = Constraint("a positive integer", lambda x: whole(x) & (x >= 1), kind="integer_greater_than",
                              params={"lower_bound": 1})


def cat(cseq: Any, dim: int = 0, lengths: Any = None) -> Constraint:
    """``cseq[i]`` on the ``i``-th piece along ``dim`` (``lengths[i]`` long; 1 each by default)."""
    cseq = list(cseq)
    lengths = [1] * len(cseq) if lengths is None else list(lengths)
    return _named(cat_constraint(cseq, dim, lengths), "cat", cseq=cseq, dim=dim, lengths=lengths)


def stack(cseq: Any, dim: int = 0) -> Constraint:
    """``cseq[i]`` on ``value.select(dim, i)``."""
    return _named(stack_constraint(list(cseq), dim), "stack", cseq=list(cseq), dim=dim)


def _square(x: np.ndarray) -> np.ndarray:
    return np.full(np.shape(x)[:-2], np.shape(x)[-1] == np.shape(x)[-2], bool)


def _symmetric(x: np.ndarray) -> np.ndarray:
    return _square(x) & np.isclose(x, np.swapaxes(x, -1, -2), atol=1e-6).all((-2, -1)) if _square(x).all() else _square(x)


def _positive_semidefinite(x: np.ndarray) -> np.ndarray:
    """Symmetric with no negative eigenvalue, per matrix (torch checks eigenvalues only when the whole batch is
    symmetric, so a symmetric indefinite matrix passes beside an asymmetric one there; kiln's answer is per matrix, as
    ``positive_definite``'s)."""
    symmetric = _symmetric(x)
    return symmetric & (np.linalg.eigvalsh(np.where(symmetric[..., None, None], x, np.eye(x.shape[-1]))).min(-1) >= 0)


lower_triangular = Constraint("a lower-triangular matrix", lambda x: (np.triu(x, 1) == 0).all((-2, -1)), event_dim=2,
                              kind="lower_triangular")
square = Constraint("a square matrix", _square, event_dim=2, kind="square")
symmetric = Constraint("a symmetric matrix", _symmetric, event_dim=2, kind="symmetric")
positive_semidefinite = Constraint("a positive-semidefinite matrix", _positive_semidefinite, event_dim=2,
                                   kind="positive_semidefinite")
dependent = Constraint("anything (dependent on other parameters)", lambda x: np.ones(np.shape(x), bool),
                       kind="dependent")


def _named(constraint: Constraint, kind: str, **params: Any) -> Constraint:
    """``constraint`` marked as torch's ``kind`` with its attributes ``params`` (what ``biject_to`` dispatches on)."""
    constraint.kind, constraint.params = kind, params
    return constraint


__all__ = ["Constraint", "boolean", "cat", "corr_cholesky", "dependent", "greater_than", "greater_than_eq", "half_open_interval", "independent",
           "integer_interval", "interval", "less_than", "lower_cholesky", "lower_triangular", "multinomial", "nonnegative",
           "nonnegative_integer", "one_hot", "positive", "positive_definite", "positive_integer", "positive_semidefinite",
           "real", "real_vector", "simplex", "square", "stack", "symmetric", "unit_interval"]
"""torch's names that kiln has (not yet: dependent_property, is_dependent)."""
