"""A ``kiln.autograd.Function`` applied to complex tensors (an LRU's parallel scan ``PScan.apply(A, X, Y_init)``).

A complex tensor is a pair of real ones (``frontend/complex_tensor.py``), and ``custom.vjp`` differentiates real
values, so the Function runs as one over the parts: each complex argument becomes its real and imaginary parts,
``forward`` gets the complex tensors rebuilt from them, and its complex outputs leave as their parts. ``backward``
gets torch's complex gradient of each complex output (``dL/dRe + i dL/dIm``, rebuilt from the parts' cotangents) and
its complex gradients go back as their parts, which is torch's convention for complex inputs. Complex tensors kept as
``ctx`` attributes (``ctx.A_star = ...``) or given to ``ctx.save_for_backward`` are kept as their parts and rebuilt
for ``backward``.
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.frontend.complex_tensor import ComplexTensor

_STASHED = "_complex_attributes"
"""The ctx attribute naming the complex attributes kept as their parts (``name.real``, ``name.imag``)."""


def is_complex_argument(value: Any) -> bool:
    """A complex tensor or a complex ``Parameter``/buffer (its ``complex_view``)."""
    return isinstance(value, ComplexTensor) or getattr(value, "complex_view", None) is not None


def apply_over_parts(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``cls.apply(*args, **kwargs)`` with complex arguments: the Function over the parts (see the module docstring)."""
    layout = tuple(is_complex_argument(a) for a in args)
    flat: list[Any] = []
    for arg, complex_ in zip(args, layout):
        z = arg.complex_view() if complex_ and not isinstance(arg, ComplexTensor) else arg
        flat.extend((z.real, z.imag) if complex_ else (arg,))
    over, outputs = _over_parts(cls, layout, kwargs)
    parts = over.apply(*flat)
    joined = _grouped(list(parts) if isinstance(parts, tuple) else [parts], outputs["layout"], _complex)
    return tuple(joined) if outputs["tuple"] else joined[0]


def _over_parts(cls: type, layout: tuple[bool, ...], kwargs: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    from kiln.frontend.custom_function import Function, _run_forward  # lazily: that module calls this one

    outputs: dict[str, Any] = {}

    class OverParts(Function):
        @staticmethod
        def forward(ctx: Any, *flat: Any) -> Any:
            ctx.needs_input_grad = tuple(_grouped(list(ctx.needs_input_grad), layout, any))
            ctx.save_for_backward = _saving_parts(ctx, outputs)
            try:
                output = _run_forward(cls, ctx, tuple(_grouped(list(flat), layout, _complex)), kwargs)
            finally:
                del ctx.save_for_backward  # the method again
            items = list(output) if isinstance(output, (tuple, list)) else [output]
            outputs.update(layout=tuple(isinstance(item, ComplexTensor) for item in items),
                           tuple=isinstance(output, (tuple, list)))
            _stash(ctx)
            return tuple(_split(items, outputs["layout"]))

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            names = _unstash(ctx)
            ctx.saved_in_backward = tuple(_grouped(list(ctx.saved_in_backward), outputs.get("saved", ()), _complex))
            try:
                returned = cls.backward(ctx, *_grouped(list(grads), outputs["layout"], _complex_gradient))
            finally:
                _restash(ctx, names)
            returned = list(returned) if isinstance(returned, (tuple, list)) else [returned]
            return tuple(_split_gradients(returned, layout))

    OverParts.__name__ = OverParts.__qualname__ = cls.__name__
    return OverParts, outputs


def _saving_parts(ctx: Any, outputs: dict[str, Any]) -> Any:
    """``ctx.save_for_backward`` taking complex tensors too: saved as their parts (``outputs["saved"]`` marks which)."""
    save = ctx.save_for_backward

    def save_for_backward(*tensors: Any) -> None:
        outputs["saved"] = tuple(isinstance(t, ComplexTensor) for t in tensors)
        save(*_split(list(tensors), outputs["saved"]))

    return save_for_backward


def _grouped(flat: list[Any], layout: Sequence[bool], join: Any) -> list[Any]:
    """``flat`` with each complex position's two entries joined by ``join((real, imag))``."""
    grouped, items = [], iter(flat)
    for complex_ in layout:
        grouped.append(join((next(items), next(items))) if complex_ else next(items))
    return grouped


def _complex(parts: tuple[Any, Any]) -> ComplexTensor:
    return ComplexTensor(*parts)


def _complex_gradient(parts: tuple[Any, Any]) -> Any:
    """torch's gradient of a complex output, ``dL/dRe + i dL/dIm``; None where neither part has one."""
    real, imag = parts
    if real is None and imag is None:
        return None
    return ComplexTensor(real if real is not None else imag * 0.0, imag if imag is not None else real * 0.0)


def _split(items: list[Any], layout: Sequence[bool]) -> list[Any]:
    return [part for item, complex_ in zip(items, layout) for part in ((item.real, item.imag) if complex_ else (item,))]


def _split_gradients(returned: list[Any], layout: Sequence[bool]) -> list[Any]:
    """One gradient per part: a complex gradient's parts, a real one's imaginary part None; the extra ``None``s kept."""
    grads: list[Any] = []
    for grad, complex_ in zip(returned, layout):
        if not complex_:
            grads.append(grad)
        elif grad is None:
            grads.extend((None, None))
        else:
            grads.extend((grad.real, grad.imag) if isinstance(grad, ComplexTensor) else (grad, None))
    return grads + returned[len(layout):]


def _stash(ctx: Any) -> None:
    """Keep ctx's complex attributes as their parts (``custom.vjp`` saves real tensors)."""
    names = [name for name, value in vars(ctx).items() if isinstance(value, ComplexTensor)]
    for name in names:
        value = vars(ctx).pop(name)
        setattr(ctx, f"{name}.real", value.real)
        setattr(ctx, f"{name}.imag", value.imag)
    setattr(ctx, _STASHED, tuple(names))


def _unstash(ctx: Any) -> tuple[str, ...]:
    """The complex attributes rebuilt from their parts (the backward graph's saved inputs by now)."""
    names = getattr(ctx, _STASHED, ())
    for name in names:
        setattr(ctx, name, ComplexTensor(getattr(ctx, f"{name}.real"), getattr(ctx, f"{name}.imag")))
    return names


def _restash(ctx: Any, names: tuple[str, ...]) -> None:
    for name in names:
        vars(ctx).pop(name, None)
