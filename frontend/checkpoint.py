"""Activation checkpointing, as ``torch.utils.checkpoint``: trade recomputation for memory.

```python
from kiln.utils.checkpoint import checkpoint, checkpoint_sequential

def forward(self, x):
    for block in self.blocks:
        x = checkpoint(block, x, use_reentrant=False)   # the block's activations are recomputed in the backward
    return self.head(x)

y = checkpoint_sequential(model.layers, 4, x)           # 3 checkpointed segments, the last one plain
```

Outside a trace ``checkpoint(f, *args)`` is ``f(*args)``. Inside one, every op
``f`` traces is stamped with a fresh checkpoint region (``checkpoint(3)`` in
the IR text; the ops producing what ``f`` returns ``checkpoint(3, output)``).
The ``rematerialize`` pass then recomputes the region's values in the
backward, just before their first use there, instead of keeping them alive
from the forward: only the region's inputs and outputs stay saved. Random ops
draw from the step's seed and their stream, so a recomputed dropout draws the
same mask and the gradients equal the plain model's exactly; that is why
``preserve_rng_state=False`` changes nothing here. ``use_reentrant`` is
accepted for PyTorch's code (both variants trace the same), and as PyTorch
the reentrant one takes no keyword arguments for ``function``. Left out, it is
PyTorch 2.13's default: a warning that it should be passed, then the reentrant
variant (``checkpoint(block, x)`` in open_clip, timm or an older script behaves
as there). A checkpoint inside another one joins the outer region.

The reentrant variant is, in PyTorch, an ``autograd.Function`` of the tensor
arguments alone: when none of them requires grad its outputs do not either, so
the parameters ``function`` uses get no gradient, with the warning "None of the
inputs have requires_grad=True. Gradients will be None" (Hugging Face's
``enable_input_require_grads`` exists for this: a frozen embedding feeding
checkpointed layers). kiln does the same: ``function`` then runs under
``no_grad``, with PyTorch's warning.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Region
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.trace import TraceContext, flatten_outputs, located_error


class ReentrantKeywordError(TraceError, ValueError):
    """Keyword arguments for ``function`` with the reentrant checkpoint: a ``ValueError``, as PyTorch's."""


def checkpoint(function: Callable[..., Any], *args: Any, use_reentrant: bool | None = None, preserve_rng_state: bool = True, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, its activations recomputed in the backward instead of saved (see the module)."""
    _check_callable(function, "checkpoint's function")
    use_reentrant = _reentrant_by_default(use_reentrant, "checkpoint")
    if use_reentrant and kwargs:
        raise located_error(f"checkpoint: unexpected keyword arguments {', '.join(kwargs)}; with use_reentrant=True the function "
                            "takes positional arguments only (use use_reentrant=False to pass keywords, as in PyTorch)",
                            kind=ReentrantKeywordError)
    if use_reentrant and not _any_requires_grad(args):
        warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", stacklevel=2)
        with no_grad():
            return _checkpointed(function, args, kwargs)
    return _checkpointed(function, args, kwargs)


_RECOMMENDATION = ("use_reentrant=False is recommended, but if you need to preserve the current default behavior, you "
                   "can pass use_reentrant=True. Refer to docs for more details on the differences between the two "
                   "variants.")
_UNSET_REENTRANT_WARNINGS = {
    "checkpoint": "torch.utils.checkpoint: the use_reentrant parameter should be passed explicitly. Starting in "
                  "PyTorch 2.9, calling checkpoint without use_reentrant will raise an exception. " + _RECOMMENDATION,
    "checkpoint_sequential": "torch.utils.checkpoint.checkpoint_sequential: the use_reentrant parameter should be "
                             "passed explicitly. In version 2.9 we will raise an exception if use_reentrant is not "
                             "passed. " + _RECOMMENDATION,
}
"""PyTorch 2.13's words when ``use_reentrant`` is left out."""


def _reentrant_by_default(use_reentrant: bool | None, name: str) -> bool:
    """``use_reentrant`` as given, or PyTorch 2.13's default when left out: its warning, then ``True``."""
    if use_reentrant is None:
        warnings.warn(_UNSET_REENTRANT_WARNINGS[name], stacklevel=3)
        return True
    return use_reentrant


def _any_requires_grad(args: tuple[Any, ...]) -> bool:
    """Whether a tensor argument requires grad: what PyTorch's reentrant checkpoint differentiates with respect to."""
    from kiln.frontend.tensor import Tensor

    return any(arg.requires_grad for arg in args if isinstance(arg, Tensor))


def _checkpointed(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not TraceContext.active() or TraceContext.current().builder.region is not None:
        return function(*args, **kwargs)  # eager, or nested: the outer region recomputes this one too
    return _traced_region(TraceContext.current(), function, args, kwargs)


def _traced_region(context: TraceContext, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    region = Region(context.checkpoint_regions)
    context.checkpoint_regions += 1
    context.builder.region = region
    try:
        result = function(*args, **kwargs)
    finally:
        context.builder.region = None
    _mark_outputs(result, region)
    return result


def _mark_outputs(result: Any, region: Region) -> None:
    """The ops producing what the region returns keep their results: ``checkpoint(k, output)``."""
    from kiln.frontend.tensor import Tensor

    for item in flatten_outputs(result):
        producer = item.value.producer if isinstance(item, Tensor) else None
        if producer is not None and producer.region == region:
            producer.region = Region(region.id, "output")


def checkpoint_sequential(functions: Any, segments: int, input: Any, use_reentrant: bool | None = None, preserve_rng_state: bool = True) -> Any:
    """Run ``functions`` (a ``Sequential`` or a list of callables) in order on ``input``, split into ``segments``
    chunks of ``len(functions) // segments``; every chunk but the last is checkpointed, as PyTorch's."""
    use_reentrant = _reentrant_by_default(use_reentrant, "checkpoint_sequential")
    layers = _layers(functions)
    _check_segments(segments, len(layers))
    size = len(layers) // segments
    for start in range(0, size * (segments - 1), size):
        input = checkpoint(_run(layers[start : start + size]), input, use_reentrant=use_reentrant, preserve_rng_state=preserve_rng_state)
    return _run(layers[size * (segments - 1) :])(input)


def _run(layers: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def forward(input: Any) -> Any:
        for layer in layers:
            input = layer(input)
        return input

    return forward


def _layers(functions: Any) -> list[Callable[[Any], Any]]:
    from kiln.frontend.containers import ModuleList
    from kiln.frontend.layers import Sequential

    if isinstance(functions, Sequential):
        return list(functions.children())
    if not isinstance(functions, (list, tuple, ModuleList)):
        raise located_error(f"checkpoint_sequential takes a Sequential or a list of modules or functions, got {type(functions).__name__}")
    for index, function in enumerate(functions):
        _check_callable(function, f"checkpoint_sequential's functions[{index}]")
    return list(functions)


def _check_segments(segments: Any, count: int) -> None:
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise located_error(f"checkpoint_sequential: segments must be a whole number >= 1, got {segments!r}")
    if segments > count:
        raise located_error(f"checkpoint_sequential: {segments} segments for {count} functions; use at most {count} "
                            "(each segment runs at least one function)")


def _check_callable(function: Any, what: str) -> None:
    if not callable(function):
        raise located_error(f"{what} must be callable (a Module or a function), got {type(function).__name__}: {function!r:.60}")


__all__ = ["checkpoint", "checkpoint_sequential"]


def get_device_states(*args: Any) -> tuple[list[int], list[Any]]:
    """``torch.utils.checkpoint.get_device_states``: the ids and random states of the accelerators ``args`` live on.
    None in kiln: one generator draws every random number whatever the backend (``kiln.get_rng_state()`` holds it),
    as torch's answer for CPU tensors."""
    return [], []


def set_device_states(devices: Sequence[int], states: Sequence[Any], *, device_type: str | None = None) -> None:
    """``torch.utils.checkpoint.set_device_states``: sets what ``get_device_states`` gave, which in kiln is nothing
    (``kiln.set_rng_state`` restores every random state)."""
    if list(devices) or list(states):
        raise located_error("set_device_states: kiln keeps no per-device random states (get_device_states gives none); "
                            "restore kiln.get_rng_state() with kiln.set_rng_state")
