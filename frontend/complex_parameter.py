"""A complex ``Parameter``: ``nn.Parameter(scale * torch.rand(i, o, m, dtype=torch.cfloat))`` as in a Fourier
Neural Operator's spectral weights.

```python
self.weights = nn.Parameter(scale * kiln.rand(i, o, m, dtype=kiln.cfloat))   # a ComplexParameter
out = kiln.einsum("bix,iox->box", x_ft, self.weights)                         # used as a complex tensor
```

It stores ``torch.view_as_real`` of the values, a ``(..., 2)`` float array, and that is what the optimizer, the
``state_dict``, ``.data``, ``.grad``, ``.shape`` and ``.dtype`` see: torch's optimizers step a complex parameter as
exactly that real view (``torch.optim.Adam``'s ``_view_as_real``), so training matches torch's step for step. Used in
arithmetic, indexing, ``einsum``, ``.real``/``.imag``/``.conj()``/``.abs()`` it is the complex tensor
(``complex_view()``), and ``p.to(torch.complex64)`` is that tensor cast, as torch's (RetNet's
``x @ self.W_G.to(self.complex_type)``). Where torch's ``p.grad`` is complex, kiln's is its real view;
``kiln.view_as_complex(kiln.tensor(p.grad))`` gives torch's. ``load_state_dict`` takes torch's complex values too
(``kiln.load`` of a ``torch.save``d state_dict), storing their pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.complex_functions import view_as_complex
from kiln.frontend.complex_tensor import SHAPE_METHODS, ComplexTensor
from kiln.frontend.module import ArrayLeaf, Buffer, Parameter
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_printoptions import printed
from kiln.frontend.trace import located_error


class ComplexLeaf(ArrayLeaf):
    """A complex array kept as its ``(..., 2)`` real view (see the module docstring): a parameter's or a buffer's."""

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(real_pairs(data, "Parameter"), requires_grad)

    def complex_view(self) -> ComplexTensor:
        """The parameter as a complex tensor (its real view's pairs; a gradient through it reaches this parameter)."""
        return view_as_complex(self.real_view())

    def real_view(self) -> Tensor:
        """``torch.view_as_real(p)``: the ``(..., 2)`` real tensor this parameter is."""
        return Tensor(self.value)

    def is_complex(self) -> bool:
        return True

    def __repr__(self) -> str:
        """A plain complex tensor's: the complex values, not the pairs kept."""
        return printed(self.complex_view().numpy(), self.requires_grad)

    @property
    def real(self) -> Tensor:
        return self.complex_view().real

    @property
    def imag(self) -> Tensor:
        return self.complex_view().imag


class ComplexParameter(ComplexLeaf, Parameter):
    """A trainable complex array (``nn.Parameter`` of complex values)."""

    def __repr__(self) -> str:
        """torch's: ``Parameter containing:`` over the complex values."""
        return "Parameter containing:\n" + super().__repr__()


class ComplexBuffer(ComplexLeaf, Buffer):
    """A complex buffer (``register_buffer("freqs_cis", torch.polar(...))``, a rotary table kept with the module): its
    ``(..., 2)`` real view, as a complex Parameter's, never trained; complex where it is used, its pairs in
    ``state_dict`` (``load_state_dict`` takes torch's complex values)."""

    def __init__(self, data: Any, *, persistent: bool = True):
        Buffer.__init__(self, real_pairs(data, "buffer"), persistent=persistent)


def real_pairs(data: Any, holder: str) -> np.ndarray:
    """``torch.view_as_real`` of complex ``data`` (a complex tensor or array), the array a complex ``holder`` keeps."""
    array = np.asarray(data.numpy() if isinstance(data, Tensor) else data)
    if array.dtype not in (np.complex64, np.complex128):
        raise located_error(f"a complex {holder} holds complex64 or complex128 values, got {array.dtype}")
    return np.stack([array.real, array.imag], axis=-1)


def _as_complex(method: str) -> Any:
    def forwarded(self: ComplexLeaf, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.complex_view(), method)(*args, **kwargs)

    forwarded.__name__ = method
    forwarded.__doc__ = f"``ComplexTensor.{method}`` of ``complex_view()``."
    return forwarded


_COMPLEX_METHODS = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
                    "__matmul__", "__rmatmul__", "__neg__", "__pow__", "__getitem__", "__abs__", "conj", "abs",
                    "angle", "exp", "tanh", "sigmoid", "sum", "mean", "var", "std", "to")
_KEPT = frozenset({"detach", "clone", "cpu", "cuda", "contiguous"})
"""Methods the parameter keeps as a ``Parameter``'s (``detach`` shares its array; optimizers and checkpoints use them)."""

for _method in _COMPLEX_METHODS + tuple(name for name in SHAPE_METHODS if name not in _KEPT):
    setattr(ComplexLeaf, _method, _as_complex(_method))


def is_complex_data(data: Any) -> bool:
    """Whether ``nn.Parameter(data)`` holds complex values: a complex tensor or a complex NumPy array."""
    return isinstance(data, ComplexTensor) or (isinstance(data, np.ndarray) and np.iscomplexobj(data))
