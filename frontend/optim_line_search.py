"""The strong-Wolfe line search of ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``, on flat NumPy vectors.

A port of PyTorch's ``_strong_wolfe`` and ``_cubic_interpolate`` (themselves
ports of ``lswolfe.lua`` and ``polyinterp.lua`` from Lua Torch), decision for
decision, so that kiln's L-BFGS takes PyTorch's steps: a *bracketing* phase
grows the step until an interval holds a point satisfying the strong Wolfe
conditions (sufficient decrease ``f(t) <= f + c1 t g'd`` and curvature
``|g(t)'d| <= -c2 g'd``), then a *zoom* phase shrinks it by safeguarded cubic
interpolation. Where PyTorch has 0-d tensors (dot products and what is
computed from them) this has NumPy scalars, and Python numbers where it has
Python numbers, so each operation rounds as PyTorch's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

Objective = Callable[[Any, np.ndarray], tuple[float, np.ndarray]]
"""``objective(t, d) -> (loss, flat gradient)`` at the parameters moved by ``t * d`` (the parameters are then restored)."""


@dataclass
class Point:
    """One evaluated step length: ``t``, the loss there, its gradient and the directional derivative ``g'd``."""

    t: Any
    f: Any
    g: np.ndarray
    gtd: Any


def cubic_interpolate(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple[Any, Any] | None = None) -> Any:
    """The minimizer of the cubic through ``(x1, f1, g1)`` and ``(x2, f2, g2)``, clamped to ``bounds`` (default: the
    interval between the points); the bounds' midpoint when the cubic has no real minimizer."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    with np.errstate(divide="ignore", invalid="ignore"):  # PyTorch's tensors give inf and nan silently
        d1 = g1 + g2 - _divide(3 * (f1 - f2), x1 - x2)
        d2_square = d1**2 - g1 * g2
        if not d2_square >= 0:
            return (xmin_bound + xmax_bound) / 2.0
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(min_pos, xmin_bound), xmax_bound)


def _divide(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator`` as PyTorch rounds it: a Python number over a 0-d tensor (here a NumPy scalar) is
    ``reciprocal(tensor) * number`` there (``Tensor.__rtruediv__``), two roundings."""
    if isinstance(denominator, np.generic) and not isinstance(numerator, np.generic):
        return (1.0 / denominator) * numerator
    return numerator / denominator


@dataclass
class StrongWolfe:
    """One line search along ``d`` from the loss ``f``, gradient ``g`` and slope ``gtd`` at step 0."""

    objective: Objective
    d: np.ndarray
    f: float
    g: np.ndarray
    gtd: Any
    c1: float = 1e-4
    c2: float = 0.9
    tolerance_change: float = 1e-9
    max_ls: int = 25
    evaluations: int = 0
    iterations: int = 0

    def search(self, t: Any) -> tuple[float, np.ndarray, Any, int]:
        """``(loss, gradient, step length, evaluations)`` at the step the search settles on."""
        bracket, done = self._bracket(self._evaluate(t))
        low = self._zoom(bracket) if not done else bracket[0]
        return low.f, low.g, low.t, self.evaluations

    def _evaluate(self, t: Any) -> Point:
        f_new, g_new = self.objective(t, self.d)
        self.evaluations += 1
        return Point(t, f_new, g_new, g_new.dot(self.d))

    def _sufficient_decrease_fails(self, new: Point) -> bool:
        return bool(new.f > (self.f + self.c1 * new.t * self.gtd))

    def _curvature_holds(self, new: Point) -> bool:
        return bool(abs(new.gtd) <= -self.c2 * self.gtd)

    def _bracket(self, new: Point) -> tuple[list[Point], bool]:
        """Grow the step (cubic extrapolation within ``[t + 0.01 (t - t_prev), 10 t]``) until an interval brackets an
        acceptable point; ``done`` when ``new`` itself satisfies both conditions."""
        prev = Point(0, self.f, self.g, self.gtd)
        while self.iterations < self.max_ls:
            if self._sufficient_decrease_fails(new) or (self.iterations > 1 and new.f >= prev.f):
                return [prev, new], False
            if self._curvature_holds(new):
                return [new], True
            if new.gtd >= 0:
                return [prev, new], False
            bounds = (new.t + 0.01 * (new.t - prev.t), new.t * 10)
            prev, new = new, self._evaluate(cubic_interpolate(prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd, bounds=bounds))
            self.iterations += 1
        return [Point(0, self.f, self.g, None), new], False  # out of evaluations: PyTorch's [0, t] bracket, never zoomed

    def _zoom(self, bracket: list[Point]) -> Point:
        """Shrink the bracket by safeguarded cubic interpolation until a point satisfies the strong Wolfe conditions, the
        bracket is shorter than ``tolerance_change`` along ``d``, or the evaluations run out; returns its low end."""
        d_norm = np.abs(self.d).max()
        insufficient_progress = False
        low, high = _low_high(bracket)
        while self.iterations < self.max_ls:
            if abs(bracket[1].t - bracket[0].t) * d_norm < self.tolerance_change:
                break
            t, insufficient_progress = _safeguarded(bracket, insufficient_progress)
            new = self._evaluate(t)
            self.iterations += 1
            if self._sufficient_decrease_fails(new) or new.f >= bracket[low].f:
                bracket[high] = new
                low, high = _low_high(bracket)
                continue
            done = self._curvature_holds(new)
            if not done and new.gtd * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]  # the old high becomes the new low
            bracket[low] = new
            if done:
                break
        return bracket[low]


def _low_high(bracket: list[Point]) -> tuple[int, int]:
    """Indices of the bracket's end with the lower loss and the other (the first on a tie)."""
    return (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)


def _safeguarded(bracket: list[Point], insufficient_progress: bool) -> tuple[Any, bool]:
    """The cubic's minimizer in the bracket, moved to 0.1 of the bracket's length from its nearer end when it falls
    closer than that and the last step also did (or it lies on an end); and whether this step progressed too little."""
    first, second = bracket
    t = cubic_interpolate(first.t, first.f, first.gtd, second.t, second.f, second.gtd)
    top, bottom = max(first.t, second.t), min(first.t, second.t)
    eps = 0.1 * (top - bottom)
    if not min(top - t, t - bottom) < eps:
        return t, False
    if not (insufficient_progress or t >= top or t <= bottom):
        return t, True
    return (top - eps if abs(t - top) < abs(t - bottom) else bottom + eps), False


def strong_wolfe(objective: Objective, t: Any, d: np.ndarray, f: float, g: np.ndarray, gtd: Any, max_ls: int = 25) -> tuple[float, np.ndarray, Any, int]:
    """PyTorch's ``_strong_wolfe(obj_func, x, t, d, f, g, gtd, max_ls=...)`` with its defaults ``c1=1e-4``, ``c2=0.9``,
    ``tolerance_change=1e-9`` (L-BFGS never passes its own): ``(loss, gradient, step length, evaluations)``."""
    return StrongWolfe(objective, d, f, g, gtd, max_ls=max_ls).search(t)
