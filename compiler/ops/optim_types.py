"""The optim ops' operand checks: a gradient and state typed like the parameter, 0-d hyper-parameter scalars in
``hyper_dtype``, per-parameter scalar states in ``scalar_state_dtype``, a 0-d integer step counter; and the traits
every update op carries (``UPDATE``). Each op's shape rule (``optim_sgd.py``, ``optim_adam.py``, ...) is these checks
plus its state count."""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType


UPDATE = {"composite", "non_differentiable"}


def check_like(op: str, param: TensorType, *others: TensorType) -> None:
    """Every per-parameter operand (grad, state) has the parameter's type."""
    for other in others:
        if other != param:
            raise ShapeError(f"{op}: expected {param} like the parameter, got {other}")


def hyper_dtype(dtype: DType) -> DType:
    """The dtype of an update's scalar operands (``lr``, the loss scale) for a parameter of ``dtype``: float64 for a
    half parameter, else its own. PyTorch's hyper-parameters are Python floats (doubles): its scalar arithmetic
    (``lr / (1 - beta1^t)``) is in float64 and its half kernels read the result in float32 (their "opmath" type),
    never rounded to half first (an lr of 1e-4 in float16 would be 1.0002e-4). A float32 lr would be close, not
    PyTorch's: NAdam's ``-lr (1 - mu) / (1 - mu_product)`` from ``float32(0.01)`` is one float32 ulp off at step 2."""
    return DType.f64 if dtype.is_half else dtype


def scalar_state_dtype(dtype: DType) -> DType:
    """The dtype of a state that is one number per parameter in PyTorch (NAdam's ``mu_product``, ASGD's ``eta`` and
    ``mu``): float32 for a half parameter (PyTorch's 0-d float32 tensor), else the parameter's."""
    return DType.f32 if dtype.is_half else dtype


def check_scalar(op: str, param: TensorType, *scalars: TensorType) -> None:
    for scalar in scalars:
        if scalar.shape != () or scalar.dtype != hyper_dtype(param.dtype):
            raise ShapeError(f"{op}: hyper-parameter operands are 0-d {hyper_dtype(param.dtype).value} scalars, got {scalar}")


def check_lr(op: str, param: TensorType, lr: TensorType) -> None:
    """``lr`` is 0-d float64, PyTorch's Python float (where PyTorch computes with it on the host, ``lr / (1 -
    beta1^t)``, it is not rounded first; where a kernel reads it, the rule rounds it to the parameter's dtype), or a 0-d
    scalar in ``hyper_dtype`` (an lr already rounded, as a graph written by hand may hold it)."""
    rounded = hyper_dtype(param.dtype)
    if lr.shape != () or lr.dtype not in (DType.f64, rounded):
        kinds = "" if rounded is DType.f64 else f" or 0-d {rounded.value}"
        raise ShapeError(f"{op}: hyper-parameter operands are 0-d f64 (PyTorch's Python float){kinds} scalars, got {lr}")


def check_scalar_state(op: str, param: TensorType, *states: TensorType) -> None:
    """A state that is one number per parameter in PyTorch (a 0-d tensor in its scalar dtype, float32 or float64 by the
    default dtype, or the parameter's once loaded): shaped like the parameter here, every element that number, in
    float32 or float64, or in ``scalar_state_dtype`` of the parameter's dtype."""
    allowed = {DType.f32, DType.f64, scalar_state_dtype(param.dtype)}
    for state in states:
        if state.shape != param.shape or state.dtype not in allowed:
            raise ShapeError(f"{op}: expected a per-parameter scalar state shaped {param.shape} in "
                             f"{sorted(d.value for d in allowed)} for a parameter {param}, got {state}")


def check_step(op: str, step: TensorType) -> None:
    if step.shape != () or not step.dtype.is_int:
        raise ShapeError(f"{op}: the step counter is a 0-d integer (the 1-based number of this update), got {step}")


def update_types(op: str, param: TensorType, grad: TensorType, states: "list[TensorType] | tuple[TensorType, ...]",
                 lr: TensorType, step: TensorType | None = None) -> tuple[TensorType, ...]:
    """Check an update's operands (gradient and state like the parameter, ``lr`` a scalar, ``step`` a counter);
    returns the result types: the new parameter, then one per state."""
    check_like(op, param, grad, *states)
    check_lr(op, param, lr)
    if step is not None:
        check_step(op, step)
    return (param,) * (1 + len(states))


def split_operands(op: str, operands: tuple, states: int, scalars: int) -> tuple[list, list]:
    """``(state operands, scalar operands)`` after ``param, grad``, checking the count the attributes imply."""
    if len(operands) != states + scalars:
        raise ShapeError(
            f"{op}: with these attributes it takes param, grad, {states} state and {scalars} scalar operands, got {2 + len(operands)} operands"
        )
    return list(operands[:states]), list(operands[states:])
