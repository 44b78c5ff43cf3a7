"""``kiln.autograd.gradcheck`` and ``gradgradcheck``: PyTorch's finite-difference checks of a gradient.

```python
class MyExp(kiln.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y

x = kiln.randn(3, 4, dtype=kiln.float64, requires_grad=True)
assert kiln.autograd.gradcheck(MyExp.apply, (x,))       # backward against central differences
assert kiln.autograd.gradgradcheck(MyExp.apply, (x,))   # and backward's own backward
```

As torch 2.13's slow mode: for every input that requires grad, the numerical Jacobian by central differences (each
element of the input's storage set to ``x - eps`` then ``x + eps``, in its dtype, and restored) and the analytical
one from reverse mode (one ``kiln.autograd.grad`` per output element, with a unit ``grad_outputs``; None is zeros),
compared by ``allclose(analytical, numerical, rtol, atol)``. A mismatch raises ``GradcheckError`` with torch's
message (``Jacobian mismatch for output i with respect to input j``, both Jacobians shown, one row per input element),
or gives False with ``raise_exception=False``. torch's other checks follow: backward twice gives the same Jacobian
(``nondet_tol``), gradients of the inputs' shapes (and dtypes with ``check_grad_dtypes``), all-zero ``grad_outputs``
give zero gradients, and functions with no differentiable output have a zero numerical Jacobian.

What differs from torch, and why:

- ``fast_mode=True`` runs the slow check: torch's fast mode compares one random projection ``u^T J v`` of the same
  two Jacobians, so the full comparison is the same test, stricter.
- ``check_undefined_grad``: kiln has no undefined gradient; an output a backward gets no gradient for gets zeros
  (``frontend/custom_function.py``, as ``ctx.set_materialize_grads(True)``), so torch's check (backward with
  undefined output gradients must not fail and must give zero or undefined input gradients) is one backward with
  all-zero ``grad_outputs`` on a fresh call of ``func``, with torch's messages.
- ``check_forward_ad`` compares ``kiln.autograd.forward_ad``'s tangents (``J v`` for each basis ``v``) with the
  numerical Jacobian. kiln computes a tangent as the VJP of the VJP, so a ``Function``'s tangent follows its
  ``backward`` (torch would ask for a ``jvp`` staticmethod). ``check_batched_forward_grad`` maps that over two random
  tangents with ``kiln.func.vmap``; ``check_batched_grad`` compares ``autograd.grad(..., is_grads_batched=True)``
  (kiln's batched backward) with one backward per row, as torch compares ``vmap`` of the backward.
- Complex inputs or outputs and sparse inputs are refused (``NotImplementedError``, saying what to check instead).
- An output that is not a tensor raises torch's ``AttributeError`` (torch reads its ``requires_grad``), with advice.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from kiln.frontend.autograd import grad
from kiln.frontend.eager_values import eager_array, eager_leaf
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.tensor import Tensor


class GradcheckError(RuntimeError):
    """A gradient check failed: ``torch.autograd.gradcheck.GradcheckError`` (a ``RuntimeError``)."""


@dataclass(frozen=True)
class GradcheckOptions:
    """gradcheck's tolerances and switches, passed down together."""

    eps: float = 1e-6
    """The perturbation of each input element for the central differences."""
    atol: float = 1e-5
    rtol: float = 1e-3
    nondet_tol: float = 0.0
    """How far two backwards with the same ``grad_outputs`` may differ (0: they must agree exactly)."""
    check_undefined_grad: bool = True
    check_grad_dtypes: bool = False
    check_batched_grad: bool = False
    check_batched_forward_grad: bool = False
    check_forward_ad: bool = False
    check_backward_ad: bool = True
    masked: bool = False
    """Only how the zero-``grad_outputs`` check compares (``allclose`` rather than exact zeros): inputs are dense."""


def gradcheck(func: Callable[..., Any], inputs: Any, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True, nondet_tol: float = 0.0, check_undefined_grad: bool = True,
              check_grad_dtypes: bool = False, check_batched_grad: bool = False,
              check_batched_forward_grad: bool = False, check_forward_ad: bool = False, check_backward_ad: bool = True,
              fast_mode: bool = False, masked: bool | None = None) -> bool:
    """``torch.autograd.gradcheck``: True when ``func``'s gradients with respect to the ``inputs`` that require grad
    match central differences (see the module docstring); else ``GradcheckError``, or False when
    ``raise_exception=False``. ``inputs`` is a tensor or a tuple (non-tensors are passed through)."""
    _check_flags(check_forward_ad, check_backward_ad, check_batched_grad, check_batched_forward_grad)
    options = GradcheckOptions(eps, atol, rtol, nondet_tol, check_undefined_grad, check_grad_dtypes, check_batched_grad,
                               check_batched_forward_grad, check_forward_ad, check_backward_ad, bool(masked))
    try:
        return _gradcheck(func, _as_tuple(inputs), options)
    except GradcheckError:
        if raise_exception:
            raise
        return False


def gradgradcheck(func: Callable[..., Any], inputs: Any, grad_outputs: Any = None, *, eps: float = 1e-6,
                  atol: float = 1e-5, rtol: float = 1e-3, gen_non_contig_grad_outputs: bool = False,
                  raise_exception: bool = True, nondet_tol: float = 0.0, check_undefined_grad: bool = True,
                  check_grad_dtypes: bool = False, check_batched_grad: bool = False, check_fwd_over_rev: bool = False,
                  check_rev_over_rev: bool = True, fast_mode: bool = False, masked: bool = False) -> bool:
    """``torch.autograd.gradgradcheck``: ``gradcheck`` of ``(inputs, grad_outputs) -> autograd.grad(func(inputs),
    inputs, grad_outputs, create_graph=True)``, so backward's own backward is checked, with respect to the inputs
    and to ``grad_outputs`` (uniform in [-1, 1) from a seeded generator, in each output's dtype, when not given)."""
    if not (check_fwd_over_rev or check_rev_over_rev):
        raise AssertionError("Expected at least one of check_fwd_over_rev or check_rev_over_rev to be True")
    if (check_undefined_grad or check_batched_grad) and not check_rev_over_rev:
        flag = "check_undefined_grad" if check_undefined_grad else "check_batched_grad"
        raise AssertionError(f"Setting {flag}=True requires check_rev_over_rev to be True")
    inputs = _as_tuple(inputs)
    seeds = _random_grad_outputs(func, inputs, gen_non_contig_grad_outputs) if grad_outputs is None \
        else _as_tuple(grad_outputs)
    return gradcheck(_vjp_function(func, inputs, len(seeds)), inputs + seeds, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, nondet_tol=nondet_tol, check_undefined_grad=check_undefined_grad,
                     check_grad_dtypes=check_grad_dtypes, check_batched_grad=check_batched_grad, fast_mode=fast_mode,
                     check_forward_ad=check_fwd_over_rev, check_backward_ad=check_rev_over_rev, masked=masked)


def _check_flags(forward_ad: bool, backward_ad: bool, batched_grad: bool, batched_forward_grad: bool) -> None:
    """torch's refusals of contradictory switches, with its words."""
    if not (forward_ad or backward_ad):
        raise AssertionError("Expected at least one of check_forward_ad or check_backward_ad to be True")
    if batched_grad and not backward_ad:
        raise AssertionError("Setting check_batched_grad=True requires check_backward_ad to be True")
    if batched_forward_grad and not forward_ad:
        raise AssertionError("Setting check_batched_forward_grad=True requires check_forward_ad to be True")


def _gradcheck(func: Callable[..., Any], inputs: tuple[Any, ...], options: GradcheckOptions) -> bool:
    _check_inputs(inputs)
    results = _as_tuple(func(*inputs))
    outputs = _differentiable_outputs(results)
    if not outputs:
        return _check_no_differentiable_outputs(func, inputs, results, options.eps)
    numerical = _numerical_jacobians(func, inputs, results, options.eps)  # [input][output], floating outputs
    numerical = [[j for j, result in zip(row, _floating(results)) if result.requires_grad] for row in numerical]
    if options.check_backward_ad:
        _compare_backward(inputs, outputs, numerical, options)
    if options.check_forward_ad:
        _compare(_forward_jacobians(func, inputs, results), numerical, options, "computed with forward mode ")
    if options.check_batched_forward_grad:
        _check_batched_forward_grad(func, inputs)
    if not options.check_backward_ad:
        return True
    if options.check_batched_grad:
        for index, output in enumerate(outputs):
            _check_batched_grad(inputs, output, index)
    _check_zero_grad_outputs(inputs, outputs, options.masked)
    if options.check_undefined_grad:
        _check_undefined_grad(func, inputs)
    return True


def _check_inputs(inputs: tuple[Any, ...]) -> None:
    """At least one input requires grad; warn (as torch) for each one that is not float64 or complex128."""
    checked = [(index, x) for index, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck expects at least one input tensor to require gradient, but none of them have "
                         "requires_grad=True.")
    for index, x in checked:
        _check_input(index, x)


def _check_input(index: int, x: Tensor) -> None:
    if x.dtype.numpy not in (np.float64, np.complex128):
        warnings.warn(f"Input #{index} requires gradient and is not a double precision floating point or complex. "
                      "This check will likely fail if all the inputs are not of double precision floating point or "
                      "complex. ", UserWarning, stacklevel=5)
    if x.is_complex() or getattr(x, "is_sparse", False):
        raise NotImplementedError(f"kiln's gradcheck checks dense real inputs; input #{index} is "
                                  f"{'complex' if x.is_complex() else 'sparse'}: check a real function of its parts "
                                  "instead (its real and imaginary parts, or its values, as separate float64 inputs)")
    if any(stride == 0 and size > 1 for stride, size in zip(x.stride(), x.shape)):
        raise RuntimeError(f"The {index}th input has a dimension with stride 0. gradcheck only supports inputs that "
                           "are non-overlapping to be able to compute the numerical gradients correctly. You should "
                           "call .contiguous on the input before passing it to gradcheck.")


def _differentiable_outputs(results: tuple[Any, ...]) -> list[Tensor]:
    """The outputs that require grad; a non-tensor is torch's AttributeError (it reads ``requires_grad``)."""
    for index, result in enumerate(results):
        if not isinstance(result, Tensor):
            raise AttributeError(f"'{type(result).__name__}' object has no attribute 'requires_grad': output {index} "
                                 "of the function given to gradcheck is not a tensor; return a tensor or a tuple of "
                                 "tensors (drop the other values, or close over them)")
        if result.is_complex():
            raise NotImplementedError(f"kiln's gradcheck checks real outputs; output {index} is complex: check "
                                      "its real and imaginary parts as two real outputs (out.real, out.imag)")
    return [result for result in results if result.requires_grad]


def _floating(results: Sequence[Any]) -> list[Tensor]:
    return [r for r in results if isinstance(r, Tensor) and r.is_floating_point()]


def _differentiable_inputs(inputs: Sequence[Any]) -> list[Tensor]:
    return [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]


def _numerical_jacobians(func: Callable[..., Any], inputs: tuple[Any, ...], results: tuple[Any, ...],
                         eps: float) -> list[list[np.ndarray]]:
    """``[input][output]``: ``(input.numel(), output.numel())`` central differences, for each input that requires
    grad and each floating output of ``results`` (``func(*inputs)``). Each element of the input's own storage is
    perturbed and restored, as torch's ``x.data`` writes (so ``func`` may also read the input by closure)."""
    return [_numerical_jacobian(func, inputs, _floating(results), x, eps) for x in _differentiable_inputs(inputs)]


def _numerical_jacobian(func: Callable[..., Any], inputs: tuple[Any, ...], outputs: list[Tensor], x: Tensor,
                        eps: float) -> list[np.ndarray]:
    storage = _storage(x)
    jacobians = [np.zeros((x.numel(), o.numel()), o.dtype.numpy) for o in outputs]
    for row, index in enumerate(np.ndindex(*storage.shape)):
        for jacobian, column in zip(jacobians, _central_difference(func, inputs, storage, index, eps)):
            jacobian[row] = column
    return jacobians


def _storage(x: Tensor) -> np.ndarray:
    """The array whose elements ``func`` reads: a parameter's (or ``requires_grad=True`` leaf's) ``.data``, an eager
    result's own array; a write there is torch's write through ``x.data``, seen by no version counter."""
    array = x.data if isinstance(x, ArrayLeaf) else eager_array(x)
    if array is None:
        raise TypeError("kiln.autograd.gradcheck runs eagerly: its inputs are eager tensors (kiln.tensor(...), "
                        "results of eager ops), not tensors traced inside kiln.compile or vmap; call it outside them")
    return array


def _central_difference(func: Callable[..., Any], inputs: tuple[Any, ...], storage: np.ndarray,
                        index: tuple[int, ...], eps: float) -> list[np.ndarray]:
    """One row of each output's Jacobian: ``(f(x + eps e) - f(x - eps e)) / 2 eps``, flattened."""
    original = storage[index].copy()
    storage[index] = original - eps
    below = _floating_arrays(func(*inputs))
    storage[index] = original + eps
    above = _floating_arrays(func(*inputs))
    storage[index] = original
    for a, b in zip(below, above):
        _check_same_kind(a, b, index, eps)
    return [((b - a) / (2 * eps)).reshape(-1) for a, b in zip(below, above)]


def _floating_arrays(results: Any) -> list[np.ndarray]:
    return [np.array(r.detach().numpy()) for r in _floating(_as_tuple(results))]


def _check_same_kind(below: np.ndarray, above: np.ndarray, index: tuple[int, ...], eps: float) -> None:
    if below.shape != above.shape or below.dtype != above.dtype:
        kind = "shape" if below.shape != above.shape else "dtype"
        seen = (below.shape, above.shape) if kind == "shape" else (below.dtype, above.dtype)
        raise AssertionError(f"Expected `func` to return outputs with the same {kind} when inputs are perturbed on "
                             f"index {index} by {eps}, but got: {kind}s {seen[0]} and {seen[1]}.")


def _check_no_differentiable_outputs(func: Callable[..., Any], inputs: tuple[Any, ...], results: tuple[Any, ...],
                                     eps: float) -> bool:
    """No output requires grad: then no output may depend on the inputs."""
    for per_output in _numerical_jacobians(func, inputs, results, eps):
        if any(np.any(jacobian != 0) for jacobian in per_output):
            raise GradcheckError("Numerical gradient for function expected to be zero")
    return True


def _compare_backward(inputs: tuple[Any, ...], outputs: list[Tensor], numerical: list[list[np.ndarray]],
                      options: GradcheckOptions) -> None:
    analytical = [_analytical_jacobians(inputs, output, options) for output in outputs]  # [output][input]
    _compare([list(row) for row in zip(*analytical)], numerical, options, "")


def _compare(analytical: list[list[np.ndarray]], numerical: list[list[np.ndarray]], options: GradcheckOptions,
             mode: str) -> None:
    """Both ``[input][output]``; the first pair not ``allclose``, output by output as torch's, is torch's message."""
    for i, j in itertools.product(range(len(numerical[0])), range(len(numerical))):
        a, n = analytical[j][i], numerical[j][i]
        if not np.allclose(a, n, rtol=options.rtol, atol=options.atol):
            raise GradcheckError(f"Jacobian {mode}mismatch for output {i:d} with respect to input {j:d},\n"
                                 f"numerical:{eager_leaf(n)}\nanalytical:{eager_leaf(a)}\n")


def _analytical_jacobians(inputs: tuple[Any, ...], output: Tensor, options: GradcheckOptions) -> list[np.ndarray]:
    """Per input that requires grad, ``(input.numel(), output.numel())`` from one backward per output element;
    computed twice, as torch's, to catch a backward that is not reentrant."""
    differentiable = _differentiable_inputs(inputs)
    first = _vjp_rows(differentiable, output)
    second = _vjp_rows(differentiable, output)
    _check_gradients(differentiable, first, options.check_grad_dtypes)
    jacobians = [_stacked(x, rows, output) for x, rows in zip(differentiable, first)]
    again = [_stacked(x, rows, output) for x, rows in zip(differentiable, second)]
    if any(j.size and np.abs(j - k).max() > options.nondet_tol for j, k in zip(jacobians, again)):
        raise GradcheckError("Backward is not reentrant, i.e., running backward with same input and grad_output "
                             "multiple times gives different values, although analytical gradient matches numerical "
                             f"gradient.The tolerance for nondeterminism was {options.nondet_tol}.")
    return jacobians


def _vjp_rows(differentiable: list[Tensor], output: Tensor) -> list[list[Tensor | None]]:
    """``[input][k]``: the gradient of the inputs for the unit ``grad_outputs`` on element ``k`` of ``output``."""
    rows: list[list[Tensor | None]] = [[] for _ in differentiable]
    for k in range(output.numel()):
        seed = np.zeros(tuple(output.shape), output.dtype.numpy)
        seed.reshape(-1)[k] = 1
        for row, gradient in zip(rows, grad(output, differentiable, eager_leaf(seed), retain_graph=True,
                                            allow_unused=True)):
            row.append(gradient)
    return rows


def _check_gradients(differentiable: list[Tensor], rows: list[list[Tensor | None]], check_dtypes: bool) -> None:
    given = [(x, g) for x, row in zip(differentiable, rows) for g in row if g is not None]
    if check_dtypes and any(g.dtype != x.dtype for x, g in given):
        raise GradcheckError("Gradient has dtype mismatch")
    if any(tuple(g.shape) != tuple(x.shape) for x, g in given):
        raise GradcheckError("Analytical gradient has incorrect size")


def _stacked(x: Tensor, row: list[Tensor | None], output: Tensor) -> np.ndarray:
    """The gradients of one input as the columns of its Jacobian (None: zeros)."""
    jacobian = np.zeros((x.numel(), output.numel()), x.dtype.numpy)
    for k, gradient in enumerate(row):
        if gradient is not None:
            jacobian[:, k] = np.asarray(gradient.detach().numpy()).reshape(-1)
    return jacobian


def _forward_jacobians(func: Callable[..., Any], inputs: tuple[Any, ...], results: tuple[Any, ...]
                       ) -> list[list[np.ndarray]]:
    """``[input][output]`` from ``kiln.autograd.forward_ad``: row ``k`` is ``unpack_dual(output).tangent`` with the
    input's tangent the basis vector ``e_k`` (every other input's zero), for the outputs that require grad."""
    kept = [index for index, r in enumerate(_floating(results)) if r.requires_grad]
    jacobians = []
    for position, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            rows = [_tangents(func, inputs, position, index, kept) for index in range(x.numel())]
            jacobians.append([np.stack(column) for column in zip(*rows)])
    return jacobians


def _tangents(func: Callable[..., Any], inputs: tuple[Any, ...], position: int, index: int, kept: list[int]
              ) -> list[np.ndarray]:
    """The flattened tangents of the kept outputs when input ``position``'s element ``index`` has tangent 1."""
    from kiln.runtime.forward_ad import dual_level, make_dual, unpack_dual  # lazily: the runtime builds on the frontend

    with dual_level():
        duals = tuple(make_dual(x.detach(), _basis(x, index if at == position else None))
                      if isinstance(x, Tensor) and x.requires_grad else x for at, x in enumerate(inputs))
        outputs = _floating(_as_tuple(func(*duals)))
        tangents = [(outputs[k], unpack_dual(outputs[k]).tangent) for k in kept]
        return [np.zeros(o.numel(), o.dtype.numpy) if t is None else np.array(t.detach().numpy()).reshape(-1)
                for o, t in tangents]


def _basis(x: Tensor, index: int | None) -> Tensor:
    """Zeros of ``x``'s shape and dtype, with a 1 at flat ``index`` (none when None)."""
    array = np.zeros(tuple(x.shape), x.dtype.numpy)
    if index is not None:
        array.reshape(-1)[index] = 1
    return eager_leaf(array)


def _check_batched_grad(inputs: tuple[Any, ...], output: Tensor, output_index: int) -> None:
    """``grad(..., is_grads_batched=True)`` over two random ``grad_outputs`` equals one backward per row."""
    differentiable = _differentiable_inputs(inputs)
    seeds = _random(np.random.default_rng(0), (2, *output.shape), output.dtype.numpy, low=None)

    def vjp(seed: Any, batched: bool) -> list[np.ndarray]:
        grads = grad(output, differentiable, seed, retain_graph=True, allow_unused=True, is_grads_batched=batched)
        shapes = [(2, *x.shape) if batched else tuple(x.shape) for x in differentiable]
        return [np.zeros(s) if g is None else np.array(g.detach().numpy()) for g, s in zip(grads, shapes)]

    expected = [np.stack(rows) for rows in zip(*[vjp(eager_leaf(seed), False) for seed in seeds])]
    _check_batched(vjp(eager_leaf(seeds), True), expected, output_index, "kiln.autograd.grad(is_grads_batched=True)")


def _check_batched_forward_grad(func: Callable[..., Any], inputs: tuple[Any, ...]) -> None:
    """``kiln.func.vmap`` of the forward-mode tangents over two random tangents equals one per tangent."""
    from kiln.runtime.torch_func import vmap  # lazily: the runtime builds on the frontend

    for position, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            tangents = _random(np.random.default_rng(0), (2, *x.shape), x.dtype.numpy, low=None)
            jvp = _jvp_of_input(func, inputs, position)
            expected = [np.stack(rows) for rows in zip(*[_arrays(jvp(eager_leaf(t))) for t in tangents])]
            _check_batched(_arrays(vmap(jvp)(eager_leaf(tangents))), expected, position, "kiln.func.vmap of the "
                           "forward-mode tangents")


def _jvp_of_input(func: Callable[..., Any], inputs: tuple[Any, ...], position: int) -> Callable[[Any], tuple[Any, ...]]:
    """``tangent -> the outputs' tangents`` along input ``position`` (zeros for an output it does not reach)."""
    from kiln.runtime.forward_ad import dual_level, make_dual, unpack_dual  # lazily: the runtime builds on the frontend

    def jvp(tangent: Any) -> tuple[Any, ...]:
        with dual_level():
            dual = make_dual(inputs[position].detach(), tangent)
            results = func(*[dual if at == position else x for at, x in enumerate(inputs)])
            pairs = [unpack_dual(r) for r in _floating(_as_tuple(results))]
            return tuple(p.primal * 0 if p.tangent is None else p.tangent for p in pairs)

    return jvp


def _arrays(tensors: Sequence[Any]) -> list[np.ndarray]:
    return [np.array(t.detach().numpy()) for t in tensors]


def _check_batched(result: list[np.ndarray], expected: list[np.ndarray], output_index: int, how: str) -> None:
    for input_index, (got, want) in enumerate(zip(result, expected)):
        if not np.allclose(got, want):
            raise GradcheckError(f"For output {output_index} and input {input_index}:\n\ngradcheck failed while "
                                 f"testing batched gradient computation: {how} differs from one computation per "
                                 f"row.\n\n"
                                 f"Got:\n{eager_leaf(got)}\n\nExpected:\n{eager_leaf(want)}")


def _check_zero_grad_outputs(inputs: tuple[Any, ...], outputs: list[Tensor], masked: bool) -> None:
    """torch's ``backward not multiplied by grad_output``: all-zero ``grad_outputs`` give zero gradients."""
    differentiable = _differentiable_inputs(inputs)
    zeros = [eager_leaf(np.zeros(tuple(o.shape), o.dtype.numpy)) for o in outputs]
    for g, x in zip(grad(outputs, differentiable, zeros, allow_unused=True), differentiable):
        if g is None:
            continue
        values = np.asarray(g.detach().numpy())
        if not (np.allclose(values, 0) if masked else np.all(values == 0)):
            raise GradcheckError("backward not multiplied by grad_output")
        if g.dtype != x.dtype:
            raise GradcheckError("grad is incorrect type")
        if tuple(g.shape) != tuple(x.shape):
            raise GradcheckError("grad is incorrect size")


def _check_undefined_grad(func: Callable[..., Any], inputs: tuple[Any, ...]) -> None:
    """torch's undefined-``grad_outputs`` check; kiln's undefined gradient is zeros (see the module docstring)."""
    outputs = _differentiable_outputs(_as_tuple(func(*inputs)))
    zeros = [eager_leaf(np.zeros(tuple(o.shape), o.dtype.numpy)) for o in outputs]
    try:
        grads = grad(outputs, _differentiable_inputs(inputs), zeros, allow_unused=True)
    except RuntimeError as error:
        raise GradcheckError("Expected backward function to handle undefined output grads. Please look at \"Notes "
                             "about undefined output gradients\" in \"tools/autograd/derivatives.yaml\"") from error
    if any(g is not None and np.any(np.asarray(g.detach().numpy()) != 0) for g in grads):
        raise GradcheckError("Expected all input grads to be undefined or zero when all output grads are undefined "
                             "or zero. Please look at \"Notes about undefined output gradients\" in "
                             "\"tools/autograd/derivatives.yaml\"")


def _vjp_function(func: Callable[..., Any], inputs: tuple[Any, ...], count: int) -> Callable[..., tuple[Any, ...]]:
    """gradgradcheck's function of ``inputs + grad_outputs``: the gradients of the inputs that require grad."""
    differentiable = {index for index, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad}

    def vjp(*args: Any) -> tuple[Any, ...]:
        arguments, seeds = args[:-count], args[-count:]
        outputs = _differentiable_outputs(_as_tuple(func(*arguments)))
        wrt = [x for index, x in enumerate(arguments) if index in differentiable]
        return tuple(g for g in grad(outputs, wrt, list(seeds), create_graph=True, allow_unused=True) if g is not None)

    return vjp


def _random_grad_outputs(func: Callable[..., Any], inputs: tuple[Any, ...], noncontiguous: bool) -> tuple[Any, ...]:
    """One random ``grad_outputs`` per differentiable output: uniform in [-1, 1), the output's floating dtype (else
    float64), requiring grad; seeded, so a check gives the same verdict each run. ``noncontiguous``: every other
    element of a larger array (kiln computes the same on any layout; torch's flag is honoured all the same)."""
    generator = np.random.default_rng(0)
    seeds = []
    for output in _differentiable_outputs(_as_tuple(func(*inputs))):
        dtype = output.dtype.numpy if output.is_floating_point() else np.float64
        shape = (*output.shape[:-1], 2 * output.shape[-1]) if noncontiguous and output.ndim else tuple(output.shape)
        array = _random(generator, shape, dtype, low=-1.0)
        seeds.append(eager_leaf(array[..., ::2] if noncontiguous and output.ndim else array).requires_grad_())
    return tuple(seeds)


def _random(generator: np.random.Generator, shape: tuple[int, ...], dtype: Any, low: float | None) -> np.ndarray:
    """Uniform in [low, 1) or, with ``low=None``, standard normal (torch's ``randn_like``), in ``dtype``."""
    values = generator.standard_normal(shape) if low is None else generator.uniform(low, 1.0, shape)
    return np.asarray(values, dtype)


def _as_tuple(values: Any) -> tuple[Any, ...]:
    """torch's ``_as_tuple``: a tuple as is, a list as a tuple, anything else as a tuple of one."""
    if isinstance(values, tuple):
        return values
    return tuple(values) if isinstance(values, list) else (values,)


__all__ = ["GradcheckError", "GradcheckOptions", "gradcheck", "gradgradcheck"]
