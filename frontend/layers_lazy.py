"""PyTorch's lazy modules: ``LazyLinear``, ``LazyConv1d/2d/3d``, ``LazyConvTranspose1d/2d/3d``, ``LazyBatchNorm1d/2d/3d``
and ``LazyInstanceNorm1d/2d/3d``, with PyTorch's arguments, defaults and reprs.

A lazy module holds no parameters until its first call. That call reads ``in_features`` (the input's last dim),
``in_channels`` or ``num_features`` (its channel dim) from the input, which must be static there, builds the
regular module with it (the same initialisation, drawn from kiln's generator as an eager module built at that
point would draw), takes over its parameters and buffers, and becomes that class (``type(m)`` is ``Linear``
afterwards, PyTorch's ``cls_to_become``). The first call may run inside a trace (``kiln.trace``, ``kiln.compile``,
``compile_train_step``): the new parameters become graph inputs on first use, as any parameter does.

Before that call the module has nothing to train or save, so ``parameters()``, ``state_dict()`` and
``load_state_dict()`` raise and say to run the model once first (PyTorch yields ``UninitializedParameter``s, which
kiln's optimizers could not train); ``.to(dtype)`` and ``.double()`` are remembered for the parameters to come.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator

from kiln.compiler.errors import KilnError
from kiln.frontend import init
from kiln.frontend.layers import Linear
from kiln.frontend.layers_conv import BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d
from kiln.frontend.layers_conv3d import BatchNorm3d, Conv3d, ConvTranspose3d
from kiln.frontend.layers_extra import ConvTranspose1d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from kiln.frontend.layers_norm import BatchNorm1d
from kiln.frontend.module import ArrayLeaf, Buffer, Module, Parameter, _float_dtype
from kiln.frontend.trace import TraceContext, located_error


class UninitializedParameter:
    """Stands for a lazy module's parameter (or buffer) until the first call gives it a shape (PyTorch's name)."""

    def __repr__(self) -> str:
        return "<UninitializedParameter>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # copy, pickle and hasattr probe these
        raise KilnError(f"this parameter is uninitialized (a lazy module's, before its first call), so it has no {name!r}; "
                        "call the model once first, e.g. kiln.compile(model)(x) or model(x) inside kiln.trace")


class LazyModuleMixin:
    """The first call infers the missing size from the input and turns the module into ``cls_to_become``."""

    cls_to_become: type[Module]
    inferred: str
    """The constructor argument the input supplies: ``in_features``, ``in_channels`` or ``num_features``."""
    spatial: int
    """Spatial dims of a batched input (its channel dim is 1, or 0 unbatched); ``None`` for the last dim (Linear)."""

    def _lazy_setup(self, arguments: dict[str, Any], dtype: Any) -> None:
        """Record the constructor's ``arguments``; copy a template's options (sizes as PyTorch stores them) for the repr."""
        Module.__init__(self)  # type: ignore[arg-type]
        target = self.cls_to_become
        arguments = _supported_arguments(target, arguments)
        saved = init.rng_state()
        try:  # the template's draws are given back, so the real parameters are those an eager module would get
            template = target(**{self.inferred: _smallest_valid(arguments)}, **arguments)
        finally:
            init.set_rng_state(saved)
        for name, value in template.__dict__.items():
            if name not in ("_parameters", "_buffers", "_modules", "training"):
                object.__setattr__(self, name, UninitializedParameter() if isinstance(value, ArrayLeaf) else value)
        object.__setattr__(self, self.inferred, 0)
        object.__setattr__(self, "_lazy_arguments", arguments)
        object.__setattr__(self, "_lazy_dtype", _float_dtype(dtype) if dtype is not None else None)

    def has_uninitialized_params(self) -> bool:
        return "_lazy_arguments" in self.__dict__

    def reset_parameters(self) -> None:
        """Nothing to draw before the first call creates the parameters (which draws them), as PyTorch's lazy modules."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.has_uninitialized_params():
            self.initialize_parameters(args[0] if args else next(iter(kwargs.values()), None))
        return Module.__call__(self, *args, **kwargs)  # type: ignore[arg-type]

    def initialize_parameters(self, input: Any) -> None:
        """Build ``cls_to_become`` with the size ``input`` shows; take over its state and become that class."""
        size = self._inferred_size(input)
        arguments = dict(self._lazy_arguments)
        if self._lazy_dtype is not None:
            arguments["dtype"] = self._lazy_dtype.name
        module = self.cls_to_become(**{self.inferred: size}, **arguments)
        kept = {name: value for name, value in self.__dict__.items() if name.startswith("_forward") or name == "training"}
        self.__dict__.clear()
        self.__dict__.update(module.__dict__)
        self.__dict__.update(kept)
        self.__class__ = self.cls_to_become

    def _inferred_size(self, input: Any) -> int:
        shape = tuple(getattr(input, "shape", None) or ())
        if self.spatial is None:
            if not shape:
                raise located_error(f"{type(self).__name__}: the first call needs a tensor with at least one dim to infer "
                                    f"{self.inferred}, got {input!r}")
            return _static(self, shape[-1], shape)
        if len(shape) not in self.ranks():
            raise located_error(f"Expected {self.spatial + 1}D (unbatched) or {self.spatial + 2}D (batched) input to "
                                f"{type(self).__name__}, but got input of size: {shape}")
        return _static(self, shape[self.channel_dim(len(shape))], shape)

    def ranks(self) -> tuple[int, ...]:
        return (self.spatial + 1, self.spatial + 2)

    def channel_dim(self, rank: int) -> int:
        """Dim 1 of a batched input, dim 0 of an unbatched one."""
        return 1 if rank == self.spatial + 2 else 0

    def _named_parameters_all(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        self._refuse_before_call("parameters")
        return iter(())

    def _named_buffers_all(self, prefix: str) -> Iterator[tuple[str, Buffer]]:
        self._refuse_before_call("buffers")
        return iter(())

    def _state_items(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        self._refuse_before_call("state_dict entries")
        return iter(())

    def _refuse_before_call(self, what: str) -> None:
        """Inside a trace there is nothing yet to name (the first call creates them); elsewhere, say what to do."""
        if not TraceContext.active():
            raise KilnError(
                f"{type(self).__name__} has no {what} yet: a lazy module creates them on its first call, which infers "
                f"{self.inferred} from the input. Run the model once first (a dry run, e.g. kiln.compile(model)(x), or "
                "model(x) inside kiln.trace), then build the optimizer from model.parameters() or save its state_dict")

    def load_state_dict(self, state: Any, strict: bool = True) -> None:
        self._refuse_before_call("parameters to load into")

    def _cast_floats(self, target: Any) -> None:
        """Remember a float dtype for the parameters the first call creates."""
        object.__setattr__(self, "_lazy_dtype", target)

    def extra_repr(self) -> str:
        return self.cls_to_become.extra_repr(self)  # type: ignore[arg-type]


def _supported_arguments(target: type[Module], arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` less those ``target`` does not take; one that does not take a non-default value raises."""
    accepted = inspect.signature(target.__init__).parameters
    kept = {}
    for name, (value, default) in arguments.items():
        if name in accepted:
            kept[name] = value
        elif value != default:
            raise ValueError(f"kiln's {target.__name__} has no {name}={value!r} (only the default {default!r})")
    return kept


def _smallest_valid(arguments: dict[str, Any]) -> int:
    return int(arguments.get("groups", 1))


def _defaulted(**arguments: Any) -> dict[str, tuple[Any, Any]]:
    """``name=(value, PyTorch's default)``: what ``_supported_arguments`` checks."""
    return arguments


class LazyLinear(LazyModuleMixin, Linear):
    """``torch.nn.LazyLinear(out_features, bias=True, device=None, dtype=None)``: ``in_features`` from the input's last dim."""

    cls_to_become, inferred, spatial = Linear, "in_features", None

    def __init__(self, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None):
        self._lazy_setup(_defaulted(out_features=(out_features, None), bias=(bias, True)), dtype)


class _LazyConv(LazyModuleMixin):
    """``torch.nn.LazyConv{1,2,3}d``: ``in_channels`` from the input's dim 1 (dim 0 unbatched)."""

    inferred = "in_channels"

    def __init__(self, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", device: Any = None, dtype: Any = None):
        self._lazy_setup(_defaulted(out_channels=(out_channels, None), kernel_size=(kernel_size, None), stride=(stride, 1),
                                    padding=(padding, 0), dilation=(dilation, 1), groups=(groups, 1), bias=(bias, True),
                                    padding_mode=(padding_mode, "zeros")), dtype)


class LazyConv1d(_LazyConv, Conv1d):
    cls_to_become, spatial = Conv1d, 1


class LazyConv2d(_LazyConv, Conv2d):
    cls_to_become, spatial = Conv2d, 2


class LazyConv3d(_LazyConv, Conv3d):
    cls_to_become, spatial = Conv3d, 3


class _LazyConvTranspose(LazyModuleMixin):
    """``torch.nn.LazyConvTranspose{1,2,3}d``: ``in_channels`` from the input's dim 1 (dim 0 unbatched)."""

    inferred = "in_channels"

    def __init__(self, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                 bias: bool = True, dilation: Any = 1, padding_mode: str = "zeros", device: Any = None, dtype: Any = None):
        self._lazy_setup(_defaulted(out_channels=(out_channels, None), kernel_size=(kernel_size, None), stride=(stride, 1),
                                    padding=(padding, 0), output_padding=(output_padding, 0), groups=(groups, 1), bias=(bias, True),
                                    dilation=(dilation, 1), padding_mode=(padding_mode, "zeros")), dtype)


class LazyConvTranspose1d(_LazyConvTranspose, ConvTranspose1d):
    cls_to_become, spatial = ConvTranspose1d, 1


class LazyConvTranspose2d(_LazyConvTranspose, ConvTranspose2d):
    cls_to_become, spatial = ConvTranspose2d, 2


class LazyConvTranspose3d(_LazyConvTranspose, ConvTranspose3d):
    cls_to_become, spatial = ConvTranspose3d, 3


class _LazyNorm(LazyModuleMixin):
    """``torch.nn.LazyBatchNorm{1,2,3}d`` and ``LazyInstanceNorm{1,2,3}d`` (whose defaults are, as PyTorch's,
    ``affine=True, track_running_stats=True``): ``num_features`` from the input's channel dim."""

    inferred = "num_features"

    def __init__(self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device: Any = None, dtype: Any = None, *, bias: bool = True):
        self._lazy_setup(_defaulted(eps=(eps, 1e-5), momentum=(momentum, 0.1), affine=(affine, True),
                                    track_running_stats=(track_running_stats, True), bias=(bias, True)), dtype)


class LazyBatchNorm1d(_LazyNorm, BatchNorm1d):
    cls_to_become, spatial = BatchNorm1d, 1

    def ranks(self) -> tuple[int, ...]:
        return (2, 3)  # (N, C) or (N, C, L)

    def channel_dim(self, rank: int) -> int:
        return 1


class LazyBatchNorm2d(_LazyNorm, BatchNorm2d):
    cls_to_become, spatial = BatchNorm2d, 2


class LazyBatchNorm3d(_LazyNorm, BatchNorm3d):
    cls_to_become, spatial = BatchNorm3d, 3


class LazyInstanceNorm1d(_LazyNorm, InstanceNorm1d):
    cls_to_become, spatial = InstanceNorm1d, 1


class LazyInstanceNorm2d(_LazyNorm, InstanceNorm2d):
    cls_to_become, spatial = InstanceNorm2d, 2


class LazyInstanceNorm3d(_LazyNorm, InstanceNorm3d):
    cls_to_become, spatial = InstanceNorm3d, 3


def _static(module: LazyModuleMixin, size: Any, shape: tuple) -> int:
    if not isinstance(size, int):
        raise located_error(f"{type(module).__name__} infers {module.inferred} from its first input, whose dim there must be static; "
                            f"got {size!r} in shape {shape}")
    return size


__all__ = [
    "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d",
    "LazyConvTranspose2d", "LazyConvTranspose3d", "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d", "LazyLinear",
    "UninitializedParameter",
]
