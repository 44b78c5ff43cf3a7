"""The ``torch.optim`` algorithms (SGD, the Adam family, RMSprop, Adagrad, Adadelta, Rprop, ASGD, Adafactor).

Each subclasses ``Optimizer`` (``optim_base.py``): it checks its options, names its state arrays and emits one
``optim.*`` op per parameter, or that op's decomposition where a scheduler feeds its momentum as a graph input.
Constructors take PyTorch's arguments in PyTorch's order, its implementation flags (``foreach``, ``fused``...)
included, which change nothing here (``optim_flags.py``).
"""

from __future__ import annotations

from typing import Any, Iterable

import ml_dtypes
import numpy as np

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.compiler.ops.optim import emit_decomposed
from kiln.frontend.module import Parameter
from kiln.frontend.optim_base import InvalidOptionError, Optimizer, _non_negative


def _check_adam_like(owner: str, group: dict[str, Any]) -> None:
    """lr, eps and weight_decay >= 0; two betas in [0, 1)."""
    _non_negative(owner, group, "lr", "eps", "weight_decay")
    if len(group["betas"]) != 2 or not all(0.0 <= beta < 1.0 for beta in group["betas"]):
        raise InvalidOptionError(f"{owner}: invalid betas {group['betas']}; both must be in [0, 1)")


def _update_op(b: Builder, name: str, *operands: Value, **attrs: Any) -> Any:
    """Op ``name``, or its decomposition where an attribute is a graph input (a fed momentum: ``emit_decomposed``). An
    option given as an int (torch's defaults: ``weight_decay=0``) is the op's float attribute (``weight_decay = 0.0``)."""
    attrs = {key: float(value) if type(value) is int else value for key, value in attrs.items()}
    if any(isinstance(value, Value) for value in attrs.values()):
        return emit_decomposed(b, name, *operands, **attrs)
    return b.op(name, *operands, **attrs)


def _beta1(hyper: dict[str, Value], group: dict[str, Any]) -> float | Value:
    """``betas[0]``: the graph input once fed (``feed_as_input("beta1")``), else the fixed option."""
    return hyper.get("beta1", group["betas"][0])


def _direction(b: Builder, grad: Value, group: dict[str, Any]) -> Value:
    """The gradient to descend: negated when the group maximizes."""
    return b.neg(grad) if group.get("maximize") else grad


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay (``torch.optim.SGD``).

    Without momentum each update is ``optim.sgd_update``; with it, ``optim.sgd_momentum_update``. A cycled momentum
    (``feed_as_input("momentum")``) is a graph input: the momentum update, written out (``emit_decomposed``), always.
    """

    feedable_hyperparameters = frozenset({"momentum"})
    torch_counts_steps = False

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
        weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False, foreach: bool | None = None,
        differentiable: bool = False, fused: bool | None = None,
    ):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("SGD", group, "lr", "momentum", "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise InvalidOptionError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 or "momentum" in self.graph_hyperparameters else ()

    def emit_update(self, b, param, grad, state, hyper, group):
        grad = _direction(b, grad, group)
        if not self.state_names(group):
            return _update_op(b, "optim.sgd_update", param, grad, hyper["lr"], weight_decay=group["weight_decay"]), {}
        options = {name: group[name] for name in ("dampening", "nesterov", "weight_decay")} | {"momentum": hyper.get("momentum", group["momentum"])}
        new_param, new_buf = _update_op(b, "optim.sgd_momentum_update", param, grad, state["momentum_buffer"], hyper["lr"], hyper["step"], **options)
        return new_param, {"momentum_buffer": new_buf}


class GD(SGD):
    """Full-batch gradient descent: ``SGD`` whose every step sees the whole data set as one batch.

    The update is SGD's (same options); what makes it gradient descent is the
    call, ``step(x_all, y_all)``, so each update follows the exact gradient of
    the training loss. The symbolic batch dim means any data set size works.
    """


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``): L2 ``weight_decay`` added to the gradient (decoupled, AdamW's, with
    ``decoupled_weight_decay=True``), optional AMSGrad; one ``optim.adam_update`` per parameter."""

    lr_on_host = True
    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0, amsgrad: bool = False, *, foreach: bool | None = None, maximize: bool = False,
        capturable: bool = False, differentiable: bool = False, fused: bool | None = None, decoupled_weight_decay: bool = False,
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like(type(self).__name__, group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def emit_update(self, b, param, grad, state, hyper, group):
        names = self.state_names(group)
        results = _update_op(
            b, "optim.adam_update", param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
            decoupled=group["decoupled_weight_decay"],
        )
        return results[0], dict(zip(names, results[1:]))


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): Adam with decoupled weight decay ``p <- p (1 - lr wd)``; ``weight_decay`` defaults to 0.01."""

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False, foreach: bool | None = None,
        capturable: bool = False, differentiable: bool = False, fused: bool | None = None,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused, decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``): optional momentum and centering; one ``optim.rmsprop_update`` per parameter.
    A cycled momentum (``feed_as_input("momentum")``) is a graph input: the update written out, with the momentum buffer."""

    feedable_hyperparameters = frozenset({"momentum"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
        momentum: float = 0, centered: bool = False, capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
        differentiable: bool = False,
    ):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered, weight_decay=weight_decay, capturable=capturable,
                        foreach=foreach, maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("RMSprop", group, "lr", "alpha", "eps", "weight_decay", "momentum")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        with_momentum = group["momentum"] > 0 or "momentum" in self.graph_hyperparameters
        return ("square_avg",) + (("grad_avg",) if group["centered"] else ()) + (("momentum_buffer",) if with_momentum else ())

    def emit_update(self, b, param, grad, state, hyper, group):
        names = self.state_names(group)
        options = {name: group[name] for name in ("alpha", "eps", "weight_decay", "centered")} | {"momentum": hyper.get("momentum", group["momentum"])}
        results = _update_op(b, "optim.rmsprop_update", param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], **options)
        return results[0], dict(zip(names, results[1:]))


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``): ``lr_decay``, ``initial_accumulator_value``; one ``optim.adagrad_update`` per parameter."""

    lr_on_host = True

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
        initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
        differentiable: bool = False, fused: bool | None = None,
    ):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value,
                        foreach=foreach, maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Adagrad", group, "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("sum",)

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"sum": np.full_like(param.data, group["initial_accumulator_value"])}

    def emit_update(self, b, param, grad, state, hyper, group):
        options = {name: group[name] for name in ("lr_decay", "eps", "weight_decay")}
        new_param, new_sum = _update_op(b, "optim.adagrad_update", param, _direction(b, grad, group), state["sum"], hyper["lr"], hyper["step"], **options)
        return new_param, {"sum": new_sum}


class Adamax(Optimizer):
    """Adamax (``torch.optim.Adamax``): Adam with the infinity norm ``exp_inf`` for the second moment; one ``optim.adamax_update`` per parameter."""

    lr_on_host = True
    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0, foreach: bool | None = None, *, maximize: bool = False, differentiable: bool = False,
        capturable: bool = False,
    ):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable))

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like("Adamax", group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def emit_update(self, b, param, grad, state, hyper, group):
        new_param, new_avg, new_inf = _update_op(
            b, "optim.adamax_update", param, _direction(b, grad, group), state["exp_avg"], state["exp_inf"], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"],
        )
        return new_param, {"exp_avg": new_avg, "exp_inf": new_inf}


class NAdam(Optimizer):
    """NAdam (``torch.optim.NAdam``): Adam with Nesterov momentum on a warming schedule ``mu_t``; one ``optim.nadam_update`` per parameter.

    ``mu_product`` (the product ``mu_1 ... mu_t``) is a scalar per parameter in PyTorch; here it is an array
    shaped like the parameter, every element that scalar, in the parameter's dtype (float32 for a half parameter, as
    PyTorch's 0-d float32 tensor: ``state_dtype``). It starts at ones. A PyTorch ``state_dict``'s 0-d ``mu_product`` loads broadcast.
    """

    lr_on_host = True
    scalar_states = frozenset({"mu_product"})
    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
        maximize: bool = False, capturable: bool = False, differentiable: bool = False,
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like("NAdam", group)
        _non_negative("NAdam", group, "momentum_decay")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("mu_product", "exp_avg", "exp_avg_sq")

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {**super().initial_state(param, group), "mu_product": np.ones(param.data.shape, self.state_dtype(param, "mu_product"))}

    def emit_update(self, b, param, grad, state, hyper, group):
        names = self.state_names(group)
        results = _update_op(
            b, "optim.nadam_update", param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"], decoupled=group["decoupled_weight_decay"],
        )
        return results[0], dict(zip(names, results[1:]))


class RAdam(Optimizer):
    """RAdam (``torch.optim.RAdam``): Adam whose adaptive step is switched on, rectified, once the variance of its
    second moment is tractable (``rho_t > 5``, a ``where`` on the step input); one ``optim.radam_update`` per parameter."""

    lr_on_host = True
    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0, decoupled_weight_decay: bool = False, *, foreach: bool | None = None, maximize: bool = False,
        capturable: bool = False, differentiable: bool = False,
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like("RAdam", group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def emit_update(self, b, param, grad, state, hyper, group):
        new_param, new_avg, new_avg_sq = _update_op(
            b, "optim.radam_update", param, _direction(b, grad, group), state["exp_avg"], state["exp_avg_sq"], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"],
        )
        return new_param, {"exp_avg": new_avg, "exp_avg_sq": new_avg_sq}


class Adadelta(Optimizer):
    """Adadelta (``torch.optim.Adadelta``): steps scaled by the ratio of running RMS of updates and of gradients;
    one ``optim.adadelta_update`` per parameter."""

    def __init__(
        self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
        foreach: bool | None = None, *, capturable: bool = False, maximize: bool = False, differentiable: bool = False,
    ):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, capturable=capturable,
                                      foreach=foreach, differentiable=differentiable))

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Adadelta", group, "lr", "eps", "weight_decay")
        if not 0.0 <= group["rho"] <= 1.0:
            raise InvalidOptionError(f"Adadelta: invalid rho {group['rho']}; it must be in [0, 1]")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("square_avg", "acc_delta")

    def emit_update(self, b, param, grad, state, hyper, group):
        options = {name: group[name] for name in ("rho", "eps", "weight_decay")}
        new_param, new_square_avg, new_acc_delta = _update_op(b, "optim.adadelta_update",
            param, _direction(b, grad, group), state["square_avg"], state["acc_delta"], hyper["lr"], **options
        )
        return new_param, {"square_avg": new_square_avg, "acc_delta": new_acc_delta}


class Rprop(Optimizer):
    """Rprop (``torch.optim.Rprop``): each weight moves by its own step size against the sign of its gradient; the step
    size grows by ``etas[1]`` while the gradient keeps its sign, shrinks by ``etas[0]`` when it flips (and that step is
    skipped), within ``step_sizes``. One ``optim.rprop_update`` per parameter.

    As in PyTorch, ``lr`` is only the step sizes' initial value, read when a parameter's state is created (its first
    update): a schedule changes ``lr`` without changing the steps after that.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2), step_sizes: tuple[float, float] = (1e-6, 50),
        *, capturable: bool = False, foreach: bool | None = None, maximize: bool = False, differentiable: bool = False,
    ):
        super().__init__(params, dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes), foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable))

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Rprop", group, "lr")
        etaminus, etaplus = group["etas"]
        if not 0.0 < etaminus < 1.0 < etaplus:
            raise InvalidOptionError(f"Rprop: invalid etas {group['etas']}; they must satisfy 0 < etas[0] < 1 < etas[1]")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("prev", "step_size")

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"prev": np.zeros_like(param.data), "step_size": np.full_like(param.data, group["lr"])}

    def emit_update(self, b, param, grad, state, hyper, group):
        (etaminus, etaplus), (step_size_min, step_size_max) = group["etas"], group["step_sizes"]
        new_param, new_prev, new_step_size = _update_op(b, "optim.rprop_update",
            param, _direction(b, grad, group), state["prev"], state["step_size"],
            etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min, step_size_max=step_size_max,
        )
        return new_param, {"prev": new_prev, "step_size": new_step_size}


class ASGD(Optimizer):
    """Averaged SGD (``torch.optim.ASGD``): SGD with a decaying step ``eta`` and a decay term ``lambd``, and ``ax``, the
    running average of the parameter from step ``t0`` on (before it, the parameter itself). One ``optim.asgd_update``
    per parameter.

    ``eta`` (the step this update takes; ``lr`` when the state is created) and ``mu`` (the averaging weight) are
    scalars per parameter in PyTorch; here arrays shaped like the parameter, every element that scalar (as NAdam's
    ``mu_product``; float32 for a half parameter). A PyTorch ``state_dict``'s 0-d ``eta`` and ``mu`` load broadcast.
    """

    lr_on_host = True
    scalar_states = frozenset({"eta", "mu"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
        weight_decay: float = 0, foreach: bool | None = None, maximize: bool = False, differentiable: bool = False,
        capturable: bool = False,
    ):
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable))

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("eta", "mu", "ax")

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        shape, scalar = param.data.shape, self.state_dtype(param, "eta")
        return {"eta": np.full(shape, group["lr"], scalar), "mu": np.ones(shape, scalar), "ax": np.zeros_like(param.data)}

    def emit_update(self, b, param, grad, state, hyper, group):
        options = {name: group[name] for name in ("lambd", "alpha", "t0", "weight_decay")}
        new_param, new_eta, new_mu, new_ax = _update_op(b, "optim.asgd_update",
            param, _direction(b, grad, group), state["eta"], state["mu"], state["ax"], hyper["lr"], hyper["step"], **options
        )
        return new_param, {"eta": new_eta, "mu": new_mu, "ax": new_ax}


class Adafactor(Optimizer):
    """Adafactor (``torch.optim.Adafactor``): Adam-like steps without a first moment, whose second moment is factored
    for a parameter of two or more dims: ``row_var`` (the mean square over the last dim, shaped like the parameter with
    that dim 1) and ``col_var`` (over the next-to-last dim); a vector (or scalar) keeps an unfactored ``variance``.
    The step is ``min(lr, 1/sqrt(t))`` relative to the parameter's RMS (at least ``eps[1]``), the update clipped to RMS
    ``d``; weight decay is decoupled. ``eps[0]`` (None: the dtype's machine epsilon) floors the second moment. One
    ``optim.adafactor_update`` per parameter.
    """

    lr_on_host = True

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, beta2_decay: float = -0.8, eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0, weight_decay: float = 0.0, *, foreach: bool | None = None, maximize: bool = False,
    ):
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize))

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Adafactor", group, "lr", "weight_decay")
        eps1, eps2 = group["eps"]
        if group["beta2_decay"] > 0:
            raise InvalidOptionError(f"Adafactor: invalid beta2_decay {group['beta2_decay']}; it must be <= 0")
        if (eps1 is not None and eps1 < 0) or eps2 < 0:
            raise InvalidOptionError(f"Adafactor: invalid eps {group['eps']}; both must be >= 0 (the first may be None)")
        if group["d"] < 1:
            raise InvalidOptionError(f"Adafactor: invalid d {group['d']}; the clipping threshold must be >= 1")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """Every name a parameter of this group may keep; each keeps ``param_state_names``."""
        return ("row_var", "col_var", "variance")

    def param_state_names(self, param: Parameter, group: dict[str, Any]) -> tuple[str, ...]:
        return _second_moment_names(param.data.ndim)

    def state_shape(self, param: Parameter, name: str) -> tuple[int, ...]:
        shape = list(param.data.shape)
        if name in ("row_var", "col_var"):
            shape[-1 if name == "row_var" else -2] = 1
        return tuple(shape)

    def emit_update(self, b, param, grad, state, hyper, group):
        names = _second_moment_names(param.type.rank)
        eps1, eps2 = group["eps"]
        results = _update_op(b, "optim.adafactor_update",
            param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], hyper["step"],
            beta2_decay=group["beta2_decay"], eps1=float(ml_dtypes.finfo(param.type.dtype.numpy).eps) if eps1 is None else eps1, eps2=eps2,
            d=group["d"], weight_decay=group["weight_decay"],
        )
        return results[0], dict(zip(names, results[1:]))


def _second_moment_names(rank: int) -> tuple[str, ...]:
    """Adafactor's state: factored row and column moments for two or more dims (as PyTorch: ``grad.dim() > 1``), else one."""
    return ("row_var", "col_var") if rank > 1 else ("variance",)
