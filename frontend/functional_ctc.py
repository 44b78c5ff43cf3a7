"""``F.ctc_loss``: the connectionist temporal classification loss with PyTorch's arguments, values and gradients.

The forward (alpha) recursion of Graves et al. runs in log space over the extended labels ``l'`` (the target with a
blank before, between and after its labels: ``2 S + 1`` states), unrolled over the static time dim ``T`` at trace
time; a row whose input is shorter keeps its alphas past its own length (``where(t < input_length, new, old)``, as
the recurrent layers mask finished rows). Autodiff of that unrolled graph is the beta recursion, so no backward is
written by hand, except for what PyTorch's hand-written backward adds (below).

Three things make the values and gradients PyTorch's:

- an unreachable state holds ``UNREACHABLE`` (-1e30) instead of -inf: each step's ``log(sum(exp(a - m))) + m`` over
  its (up to three) predecessors, with ``m`` their (constant) maximum, is then finite everywhere, an unreachable
  state's weight ``exp(UNREACHABLE - m)`` is exactly 0 beside a reachable one, and -1e30 plus any log-probability
  stays -1e30 (it absorbs them). A row whose final log-likelihood is of that order has no alignment (its input is
  too short for its target, counting a blank between repeated labels): its loss is inf, or 0 and gradient 0 with
  ``zero_infinity``. Log-probabilities of -inf are clamped to -1e30 for the same reason.
- PyTorch's gradient w.r.t. ``log_probs`` at a step ``t < input_length`` is ``exp(lp) - exp(log(alpha beta) + nll
  - lp)``: the derivative of the loss plus ``exp(lp)``, i.e. the gradient w.r.t. the logits when ``log_probs`` is
  their log-softmax (through ``log_softmax``'s backward both give the same logit gradient). The loss adds a term of
  value 0 and slope ``exp(lp)`` at those steps, so the gradient w.r.t. ``log_probs`` itself is PyTorch's too.
- PyTorch's gradient for a row without an alignment (and ``zero_infinity=False``) is NaN at its steps ``t <
  input_length`` (its backward meets ``-inf + inf``); the loss of such a row is ``-log(sum(z * z))`` with ``z`` of
  value 0 and slope 1 at those steps, inf whose gradient ``2 z * inf`` is NaN at exactly those places (the other
  rows' gradients stay finite, as PyTorch's). NumPy warns of the ``log(0)`` then; PyTorch is silent.

Differences: where PyTorch's gradient is NaN at a log-probability of exactly -inf, kiln's is 0 (the clamp); traced
lengths are not range-checked (PyTorch checks them), so an input length past ``T`` counts as ``T`` and a target
length past ``S`` gives a wrong loss (or an index error at run time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.functional_half import in_opmath
from kiln.frontend.functional_losses import _check_reduction, _where, _zero_with_unit_slope
from kiln.frontend.functional_nn import pad
from kiln.frontend.rnn_utils import valid_steps
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts
from kiln.frontend.eager_values import eager_array

__all__ = ["ctc_loss"]

UNREACHABLE = -1e30
"""The log-probability of an unreachable state: finite, so a log-sum-exp over unreachable states has finite
gradients, and far below any sum of ``T`` log-probabilities (float32 holds it; it absorbs any addend under 1e14
in float64, 1e22 in float32)."""


@autocasts("ctc_loss")
def ctc_loss(
    log_probs: Tensor, targets: Any, input_lengths: Any, target_lengths: Any, blank: int = 0, reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """``torch.nn.functional.ctc_loss``: the negative log-likelihood of ``targets`` under ``log_probs``, summed over
    every alignment of the target to the input.

    ``log_probs`` is ``(T, N, C)`` (or unbatched ``(T, C)``), log-softmaxed, with a static ``T`` (unrolled) and
    ``C``. ``targets`` is padded ``(N, S)`` (entries past a row's target length are ignored) or, for a batch, the
    targets concatenated ``(sum(target_lengths),)``, which needs known ``target_lengths`` (ints or an eager tensor).
    ``input_lengths`` and ``target_lengths`` are ``(N,)``: integer tensors (range-checked when eager, as PyTorch
    checks them; a traced graph input cannot be) or lists of ints. ``reduction``: ``'none'`` gives the ``(N,)`` losses, ``'sum'`` their sum, ``'mean'`` the batch mean
    of each loss divided by its target length (at least 1). ``zero_infinity`` makes the loss (and gradient) of a
    row without any alignment 0 instead of inf.
    """
    _check_reduction("ctc_loss", reduction)
    unbatched = _check_log_probs(log_probs, blank)
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
    steps, batch = log_probs.shape[0], log_probs.shape[1]
    input_lengths = _lengths_tensor("input_lengths", input_lengths, batch, steps, unbatched)
    labels, target_lengths = _padded_targets(targets, target_lengths, batch, unbatched)

    def reduced(log_probs: Tensor) -> Tensor:
        losses = _row_losses(log_probs, labels, input_lengths, target_lengths, blank, zero_infinity)
        if reduction == "mean":
            return (losses / apply("tensor.clip", target_lengths, min=1, max=None).to(log_probs.dtype)).mean()
        if reduction == "sum":
            return losses.sum()
        return losses.squeeze(0) if unbatched else losses

    # half log-probs run in float32, rounded once: UNREACHABLE (-1e30) is -inf in float16, and -inf - -inf is NaN
    return in_opmath(reduced, log_probs)


# The recursion ---------------------------------------------------------------------------------------------------------


def _row_losses(log_probs: Tensor, labels: Tensor, input_lengths: Tensor, target_lengths: Tensor, blank: int,
                zero_infinity: bool) -> Tensor:
    """The ``(N,)`` losses, with PyTorch's gradients (module docstring)."""
    log_probs = apply("tensor.maximum", log_probs, UNREACHABLE)  # -inf -> -1e30, so no inf - inf below
    extended = _extended_labels(labels, blank)
    emissions = _emissions(log_probs, extended)
    alpha = _final_alpha(emissions, _skips(extended), input_lengths)
    log_likelihood = _log_likelihood(alpha, target_lengths)
    no_alignment = log_likelihood < UNREACHABLE / 2
    running = valid_steps(input_lengths, log_probs.shape[0], 3)  # (T, N, 1): the steps PyTorch's gradient covers
    unit_slope = _zero_with_unit_slope(log_probs)
    loss = _where(running, log_probs.detach().exp() * unit_slope, 0.0).sum((0, 2)) - log_likelihood  # slope exp(lp) added
    if zero_infinity:
        return _where(no_alignment, 0.0, loss)
    return _where(no_alignment, _inf_with_nan_slope(unit_slope, running, no_alignment), loss)


def _inf_with_nan_slope(unit_slope: Tensor, running: Tensor, no_alignment: Tensor) -> Tensor:
    """``-log(0)`` per row whose 0 is ``sum(z * z)`` over its running steps (``z`` of value 0, slope 1): inf, with
    slope ``inf * 2 z = NaN`` at those steps, as PyTorch's; 0 elsewhere. The mask is ``where(stopped, 0, x)``, whose
    gradient ``where(stopped, 0, g)`` is 0 beside an inf (the NumPy backend computes ``where(c, g, 0)`` as ``g * c``,
    NaN there: ``backends/numpy/fusion.py``). Rows with an alignment take ``-log(1)``, slope 0."""
    nothing = _where(~running, 0.0, unit_slope * unit_slope).sum((0, 2))
    return -_where(no_alignment, nothing, 1.0).log()


def _extended_labels(labels: Tensor, blank: int) -> Tensor:
    """``l'`` ``(N, 2 S + 1)``: ``blank, y_1, blank, y_2, ..., y_S, blank``."""
    batch, width = labels.shape
    interleaved = pad(labels.unsqueeze(-1), [1, 0], value=blank)
    return pad(interleaved.reshape(batch, 2 * width), [0, 1], value=blank)


def _emissions(log_probs: Tensor, extended: Tensor) -> Tensor:
    """``log_probs[t, n, l'[n, s]]``, ``(T, N, 2 S + 1)``."""
    steps, batch, _ = log_probs.shape
    return log_probs.gather(2, extended.unsqueeze(0).broadcast_to((steps, batch, extended.shape[1])))


def _skips(extended: Tensor) -> Tensor | None:
    """Where state ``s`` may be entered from ``s - 2`` (skipping a blank): a label unlike the one before it, as
    PyTorch's ``s % 2 != 0 && s != 1 && l'[s] != l'[s - 2]``; ``(N, 2 S + 1)`` bool (``None`` for ``S = 0``)."""
    states = extended.shape[1]
    if states == 1:
        return None
    odd = np.arange(states) % 2 == 1
    differs = pad(extended[:, 2:].ne(extended[:, :-2]), [2, 0], value=False)
    return differs & apply("tensor.constant", value=odd)


def _final_alpha(emissions: Tensor, skips: Tensor | None, input_lengths: Tensor) -> Tensor:
    """The alphas ``(N, 2 S + 1)`` after each row's last step ``input_length - 1``. The recursion starts before step
    0 from log-probability 0 in state 0 (so step 0 gives PyTorch's initial alphas, and an empty input leaves 0 in
    state 0 and nothing elsewhere) and runs every step for every row, keeping a finished row's alphas."""
    steps, states = emissions.shape[0], emissions.shape[2]
    start = np.full((1, states), UNREACHABLE, dtype=emissions.dtype.numpy)
    start[0, 0] = 0.0
    alpha = apply("tensor.constant", value=start)
    lengths = input_lengths.unsqueeze(1)
    for time in range(steps):
        alpha = _where(lengths > time, _step(alpha, skips) + emissions[time], alpha)
    return alpha


def _step(alpha: Tensor, skips: Tensor | None) -> Tensor:
    """``log(exp(alpha[s]) + exp(alpha[s - 1]) + exp(alpha[s - 2]))`` (the last where ``skips``), finite for
    unreachable states: the maximum ``m`` is a constant of the gradient, and ``m + log(sum(exp(x - m)))`` in
    PyTorch's order. With no labels (``S = 0``) the one blank state only stays."""
    stay = alpha
    if skips is None:
        return stay
    advance = pad(alpha, [1, -1], value=UNREACHABLE)
    skip = _where(skips, pad(alpha, [2, -2], value=UNREACHABLE), UNREACHABLE)
    return _log_sum_exp(stay, advance, skip)


def _log_sum_exp(*terms: Tensor) -> Tensor:
    largest = terms[0]
    for term in terms[1:]:
        largest = apply("tensor.maximum", largest, term)
    largest = largest.detach()
    total = (terms[0] - largest).exp()
    for term in terms[1:]:
        total = total + (term - largest).exp()
    return total.log() + largest


def _log_likelihood(alpha: Tensor, target_lengths: Tensor) -> Tensor:
    """``log(alpha[L' - 1] + alpha[L' - 2])`` per row, ``L' = 2 target_length + 1``; only ``alpha[0]`` for an empty
    target."""
    last = target_lengths * 2
    before = apply("tensor.clip", last - 1, min=0, max=None)
    final = alpha.gather(1, last.unsqueeze(1)).squeeze(1)
    previous = _where(target_lengths > 0, alpha.gather(1, before.unsqueeze(1)).squeeze(1), UNREACHABLE)
    return _log_sum_exp(final, previous)


# Arguments ---------------------------------------------------------------------------------------------------------------


def _check_log_probs(log_probs: Any, blank: int) -> bool:
    """Whether ``log_probs`` is unbatched ``(T, C)``; a trace error unless it is a float ``(T, [N,] C)`` with a static
    ``T`` and ``C`` and ``blank`` a class."""
    if not isinstance(log_probs, Tensor) or log_probs.ndim not in (2, 3) or not log_probs.dtype.is_float:
        got = log_probs.type if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise located_error(f"ctc_loss: log_probs must be a float tensor (T, N, C) or (T, C), got {got}")
    steps, classes = log_probs.shape[0], log_probs.shape[-1]
    if not isinstance(steps, int) or not isinstance(classes, int):
        raise located_error(f"ctc_loss: kiln unrolls the recursion over time at trace time, so T and C must be static; "
                            f"log_probs is {log_probs.type} (pad every batch to one length)")
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < classes:
        raise located_error(f"ctc_loss: blank must be in label range [0, {classes}), got {blank!r}")
    return log_probs.ndim == 2


def _padded_targets(targets: Any, target_lengths: Any, batch: Any, unbatched: bool) -> tuple[Tensor, Tensor]:
    """``(labels, target_lengths)``: int64 ``(N, S)`` with ``0`` past each length (PyTorch never reads there, so it
    may hold anything, -1 included) and int64 ``(N,)``."""
    if not isinstance(targets, Tensor):
        targets = _constant_targets(targets)
    if targets.dtype.is_float or targets.dtype is DType.bool:
        raise located_error(f"ctc_loss: targets must be an integer tensor (int64), got {targets.type}")
    if unbatched:
        if targets.ndim != 1:
            raise located_error(f"ctc_loss: unbatched log_probs (T, C) take targets (S,), got {targets.type}")
        targets = targets.unsqueeze(0)
    elif targets.ndim == 1:
        targets = _split_concatenated(targets, target_lengths, batch)
    elif targets.ndim != 2 or targets.shape[0] != batch:
        raise located_error(f"ctc_loss: targets must be padded ({batch}, S) or concatenated (sum(target_lengths),), got {targets.type}")
    width = targets.shape[1]
    if not isinstance(width, int):
        raise located_error(f"ctc_loss: the padded target length S must be static, got targets {targets.type}")
    lengths = _lengths_tensor("target_lengths", target_lengths, batch, width, unbatched)
    within = apply("tensor.less", np.arange(width, dtype=np.int64), lengths.unsqueeze(1))
    return _where(within, targets.to(DType.i64), 0), lengths


def _split_concatenated(targets: Tensor, target_lengths: Any, batch: Any) -> Tensor:
    """Concatenated targets ``(sum(target_lengths),)`` as padded ``(N, max(target_lengths))``: one gather at constant
    positions, so the lengths must be known: ints, or an eager tensor (its values)."""
    if isinstance(target_lengths, Tensor):
        known = eager_array(target_lengths)
        if known is None or known.dtype.kind not in "iu":
            raise located_error(f"ctc_loss: concatenated targets (1-D) need target_lengths as a list of ints (or an eager "
                                f"integer tensor), since they say where each target starts; got the traced {target_lengths.type} "
                                "(in a compiled function, pass padded targets (N, S), or the lengths as a list)")
        target_lengths = known
    lengths = _checked_lengths("target_lengths", target_lengths, batch, None)
    if targets.shape[0] != int(lengths.sum()):
        raise located_error(f"ctc_loss: concatenated targets {targets.type} must hold sum(target_lengths) = {int(lengths.sum())} labels")
    width = int(lengths.max()) if lengths.size else 0
    if width == 0:
        return apply("tensor.constant", value=np.zeros((lengths.size, 0), np.int64))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    positions = np.minimum(starts[:, None] + np.arange(width), max(targets.shape[0] - 1, 0))  # past a length: masked later
    return apply("tensor.take", targets, apply("tensor.constant", value=positions.astype(np.int64)), axis=0)


def _constant_targets(targets: Any) -> Tensor:
    array = np.asarray(targets)
    if array.dtype.kind not in "iu" and array.size:
        raise located_error(f"ctc_loss: targets must be integer labels, got {targets!r}")
    return apply("tensor.constant", value=array.astype(np.int64))


def _lengths_tensor(name: str, lengths: Any, batch: Any, most: int, unbatched: bool) -> Tensor:
    """``lengths`` as int64 ``(N,)``: a traced integer tensor (``()`` or ``(1,)`` when unbatched), or ints checked to
    lie in ``[0, most]`` and made a constant."""
    if not isinstance(lengths, Tensor):
        return apply("tensor.constant", value=_checked_lengths(name, [lengths] if unbatched and np.ndim(lengths) == 0 else lengths,
                                                               batch, most))
    if lengths.dtype.is_float or lengths.dtype is DType.bool:
        raise located_error(f"ctc_loss: {name} must be an integer tensor (int64), got {lengths.type}")
    if unbatched and lengths.ndim == 0:
        lengths = lengths.unsqueeze(0)
    if lengths.ndim != 1 or lengths.shape[0] != batch:
        raise located_error(f"ctc_loss: {name} must have shape ({batch},), one length per sequence of the batch, got {lengths.type}")
    known = eager_array(lengths)  # an eager tensor's values are checked as PyTorch checks them (a traced one's cannot be)
    if known is not None:
        _checked_lengths(name, known, batch, most)
    return lengths if lengths.dtype is DType.i64 else lengths.to(DType.i64)


def _checked_lengths(name: str, lengths: Any, batch: Any, most: int | None) -> np.ndarray:
    """Constant lengths as an int64 array ``(N,)`` in ``[0, most]``, or a trace error naming what is wrong."""
    array = np.asarray(lengths)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise located_error(f"ctc_loss: {name} must be a 1-D list of ints or an int64 tensor (N,), got {lengths!r}")
    if not isinstance(batch, int):
        raise located_error(f"ctc_loss: constant {name} need a static batch, but log_probs' batch dim is the symbolic {batch!r}; "
                            f"pass {name} as an input of the model (an int64 tensor (N,)) instead")
    if array.shape[0] != batch:
        raise located_error(f"ctc_loss: {name} must have {batch} entries, one per sequence of the batch, got {array.tolist()}")
    if array.size and (array.min() < 0 or (most is not None and array.max() > most)):
        bound = "non-negative" if most is None else f"in [0, {most}]"
        raise located_error(f"ctc_loss: every entry of {name} must be {bound}, got {array.tolist()}")
    return array.astype(np.int64)
