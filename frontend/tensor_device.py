"""Devices the PyTorch way, in a compiler that places data by backend: ``x.device``, ``x.to(device)``, ``kiln.device``.

A kiln program runs where its compiled step runs (``compile_train_step(..., backend="cupy")`` puts parameters,
state and every intermediate on the GPU), so a traced tensor has no device of its own to move between. PyTorch code
still asks for one: ``torch.arange(T, device=idx.device)``, ``x.to(device)``, ``model.to(device)``,
``device = "cuda" if torch.cuda.is_available() else "cpu"``. Those calls run unchanged: ``Tensor.device`` is
``kiln.device("cpu")`` (what the traced program sees; the backend decides where it runs), and ``to`` takes
PyTorch's every form, casting when it names a dtype and ignoring the device.

```python
x.to(device)                 # x
x.to(device, torch.float64)  # x.double()
x.to(other)                  # other's dtype
x.to(dtype=kiln.bfloat16)    # x.bfloat16(): stored in 16 bits, computed in float32 and rounded per op
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.sparse_legacy import coalesced, coo_indices, coo_nnz, coo_values, marked_sparse, sparse_marked

DEVICE_TYPES = ("cpu", "cuda", "meta", "mps", "xpu")


class device:  # noqa: N801  (torch.device's name)
    """``torch.device``: a type (``"cpu"``, ``"cuda"``...) and an optional index; compares equal to its string."""

    def __init__(self, type: Any, index: int | None = None):  # noqa: A002  (torch's argument name)
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        if isinstance(type, int):
            type, index = "cuda", type
        name, _, number = str(type).partition(":")
        if name not in DEVICE_TYPES:
            raise ValueError(f"kiln.device: unknown device type {name!r}; expected one of {DEVICE_TYPES}, optionally with ':index'")
        self.type = name
        self.index = int(number) if number else index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device(type={self.type!r}" + ("" if self.index is None else f", index={self.index}") + ")"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device("cpu")


def is_device(value: Any) -> bool:
    """Whether ``value`` names a device: a ``kiln.device``, a torch device, or a string like ``"cuda:0"``."""
    if isinstance(value, device) or type(value).__name__ == "device":
        return True
    return isinstance(value, str) and value.partition(":")[0] in DEVICE_TYPES


def dtype_of_to(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The dtype named by PyTorch's ``to(...)`` arguments, or None: ``to(device)``, ``to(dtype)``,
    ``to(device, dtype)``, ``to(tensor)``, with ``dtype=``, ``device=``, ``non_blocking=``, ``copy=`` and
    ``memory_format=`` (the device and the flags do not change a traced value)."""
    unknown = set(kwargs) - {"dtype", "device", "non_blocking", "copy", "memory_format"}
    if unknown:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(unknown)}")
    dtype = kwargs.get("dtype")
    positional = [a for a in args if not is_device(a) and not isinstance(a, bool)]
    if len(positional) > 1:
        raise TypeError(f"to() takes a device, a dtype or a tensor (and flags), got {args!r}")
    if positional:
        if dtype is not None:
            raise TypeError("to() got the dtype twice: positionally and as dtype=")
        dtype = positional[0]
    from kiln.frontend.tensor import Tensor

    # a tensor's dtype; an array's too: an eager ``p.grad`` is a ``TorchArray`` (transformers' Adafactor makes its
    # state by ``torch.zeros(grad_shape[:-1]).to(grad)``)
    return dtype.dtype if isinstance(dtype, (Tensor, np.ndarray)) else dtype


def copy_of_to(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """PyTorch's ``copy`` flag of ``to(...)``: ``copy=True``, or the second of its positional flags
    (``to(dtype, non_blocking, copy)``)."""
    flags = [a for a in args if isinstance(a, bool)]
    return bool(kwargs.get("copy", False) or (len(flags) > 1 and flags[1]))


class DeviceMethods:
    """``Tensor``'s device API: one device, the backend's; see the module docstring."""

    @property
    def device(self) -> device:
        return CPU

    @property
    def is_cuda(self) -> bool:
        return False

    @property
    def is_cpu(self) -> bool:
        return True

    def get_device(self) -> int:
        """-1, torch's answer for a CPU tensor: a kiln tensor's device is ``cpu`` (the backend decides where it runs)."""
        return -1

    def is_pinned(self, device: Any = None) -> bool:
        return False

    def pin_memory(self, device: Any = None) -> Any:
        """``self``: page-locked host memory is the backend's business in kiln (torch raises without an accelerator;
        a loader's ``pin_memory=True`` then works on every machine)."""
        return self

    def cpu(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def cuda(self, *args: Any, **kwargs: Any) -> Any:
        """``self``: kiln places data by backend (``compile_train_step(..., backend="cupy")``), not per tensor."""
        return self

    @property
    def is_sparse(self) -> bool:
        """True for a tensor ``to_sparse()`` or a sparse constructor built (held dense: ``to_sparse``), as torch's."""
        return sparse_marked(self)

    @property
    def layout(self) -> Any:
        """``kiln.sparse_coo`` for a tensor built sparse (``is_sparse``), else ``kiln.strided`` (a sparse ``.grad`` is
        ``frontend/sparse_grad.py``'s)."""
        from kiln.frontend.sparse_grad import sparse_coo, strided

        return sparse_coo if sparse_marked(self) else strided

    def to_sparse(self, *args: Any, **kwargs: Any) -> Any:
        """A copy (``clone()``: gradients flow through it, as through torch's): kiln has one layout, dense, so a sparse
        PyTorch program (gcn's ``adj.to_sparse()``, then ``spmm`` or ``@``) computes the same values, densely."""
        return marked_sparse(self.clone())  # type: ignore[attr-defined]

    def to_dense(self, *args: Any, **kwargs: Any) -> Any:
        """``self`` for a dense tensor, as torch's; for one built sparse, a dense copy (gradients flow through it)."""
        return self.clone() if sparse_marked(self) else self  # type: ignore[attr-defined]

    def coalesce(self) -> Any:
        """``self`` for a tensor a sparse constructor built (stored dense, its repeated entries summed); torch's
        RuntimeError for any other (``frontend/sparse_legacy.py``)."""
        return coalesced(self)

    def indices(self) -> Any:
        """A sparse tensor's ``(sparse dims, nnz)`` entry positions, row-major (``frontend/sparse_legacy.py``)."""
        return coo_indices(self, "indices")

    def _indices(self) -> Any:
        return coo_indices(self, "_indices")

    def values(self) -> Any:
        """A sparse tensor's entries at ``indices()``, differentiable (``frontend/sparse_legacy.py``)."""
        return coo_values(self, "values")

    def _values(self) -> Any:
        return coo_values(self, "_values")

    def _nnz(self) -> int:
        return coo_nnz(self)

    def is_shared(self) -> bool:
        """False: a kiln tensor lives in its own process's memory (see ``share_memory_``)."""
        return False

    def share_memory_(self) -> Any:
        """Refused: see ``refuse_share_memory``."""
        raise refuse_share_memory("Tensor.share_memory_()")

    def is_floating_point(self) -> bool:
        return self.dtype.is_float  # type: ignore[attr-defined]

    def is_complex(self) -> bool:
        return False

    def is_conj(self) -> bool:
        """False: kiln materializes a conjugate (no lazy conjugate bit), as ``torch.is_conj`` of a resolved tensor."""
        return False

    def is_neg(self) -> bool:
        return False

    def conj(self) -> Any:
        """A real tensor's conjugate: the tensor itself, as torch's (``ComplexTensor.conj`` conjugates)."""
        return self

    conj_physical = resolve_conj = conj

    @property
    def real(self) -> Any:
        """A real tensor's real part: the tensor itself, as torch's."""
        return self

    @property
    def imag(self) -> Any:
        """Refused for a real tensor, as torch's."""
        from kiln.frontend.trace import located_error  # lazily: the trace builds on the tensor

        raise located_error("imag is not implemented for tensors with non-complex dtypes (as in torch); "
                            "kiln.complex(x, y).imag is y")

    def cfloat(self) -> Any:
        """``self.to(torch.cfloat)``: complex64 with a zero imaginary part."""
        from kiln.frontend.complex_functions import EXPORTS  # lazily: complex tensors build on this

        return self.to(EXPORTS["cfloat"])  # type: ignore[attr-defined]

    def cdouble(self) -> Any:
        """``self.to(torch.cdouble)``: complex128 with a zero imaginary part."""
        from kiln.frontend.complex_functions import EXPORTS  # lazily: complex tensors build on this

        return self.to(EXPORTS["cdouble"])  # type: ignore[attr-defined]

    is_meta = is_mps = is_xpu = False
    """kiln's tensors live in host memory (a CuPy step's are the step's, not the tensor's)."""

    def resolve_neg(self) -> Any:
        return self

    def is_inference(self) -> bool:
        """False: ``inference_mode`` is ``no_grad`` in kiln, whose results are ordinary tensors."""
        return False

    def element_size(self) -> int:
        return self.dtype.numpy.itemsize  # type: ignore[attr-defined]

    def nelement(self) -> Any:
        return self.numel()  # type: ignore[attr-defined]

    def ndimension(self) -> int:
        return self.ndim  # type: ignore[attr-defined]


def refuse_share_memory(call: str) -> Exception:
    """The error for ``share_memory_()`` / ``Module.share_memory()``. A no-op would be silently wrong: Hogwild
    workers (``torch.multiprocessing`` processes, mnist_hogwild) would each train a private copy and the parent's
    model would stay untrained."""
    from kiln.frontend.trace import located_error

    return located_error(f"{call}: kiln keeps a tensor in one process's memory and cannot share it with other processes, so "
                         "Hogwild training (several processes updating one model) is not supported; train in one process "
                         "(the workers' loop run in turn), or train data-parallel over MPI ranks (kiln.distributed: "
                         "dist.DistributedDataParallel(model))")


_DEFAULT_DEVICE: list[device] = [device("cpu")]
"""What ``set_default_device`` last named (one slot, so the module-level value can change)."""


def set_default_device(target: Any) -> None:
    """``torch.set_default_device(device)`` (``None``: back to ``"cpu"``): checked and remembered for
    ``get_default_device``; tensors are made as before, since the backend decides where a program runs (see above)."""
    _DEFAULT_DEVICE[0] = device("cpu" if target is None else target)


def get_default_device() -> device:
    """``torch.get_default_device()``: what ``set_default_device`` last named, ``cpu`` until then."""
    return _DEFAULT_DEVICE[0]

