"""PyTorch's shape methods over existing ops: ``unfold`` (sliding windows), ``fliplr``/``flipud``/``rot90``,
``tensor_split``/``hsplit``/``vsplit``/``dsplit``, ``split_with_sizes``, ``ravel``, ``select``, ``narrow_copy``,
``diag_embed``/``diagflat``/``trace``, and the metadata-only in-place ``transpose_``/``t_``/``swapdims_``/``squeeze_``/
``unsqueeze_`` (the tensor becomes another view of the same storage). ``Tensor`` inherits them through ``ExtraMethods``
(``tensor_extras.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.autocast import autocasts
from kiln.frontend.inplace_leaf_checks import check_leaf_write
from kiln.frontend.tensor_inplace import check_fresh
from kiln.frontend.version_counter import count_metadata_change
from kiln.frontend.view_writes import reshape_in_place
from kiln.frontend.tensor_mixin_ops import _apply, _constant, _where
from kiln.frontend.trace import located_error


class ShapeExtraMethods:
    """The shape methods; see the module docstring."""

    def unfold(self, dimension: int, size: int, step: int) -> Any:
        """Every window of ``size`` along ``dimension``, ``step`` apart, as a new last dim (one ``take``)."""
        from kiln.frontend.functional import movedim

        axis = dimension % max(self.ndim, 1)
        length = self.shape[axis]
        if not isinstance(length, int) or not 0 < size <= length or step <= 0:
            raise located_error(f"unfold: size={size} and step={step} must fit dim {dimension} of {self.type} "
                                "(a static dim, 0 < size <= its length, step > 0)")
        windows = np.arange((length - size) // step + 1)[:, None] * step + np.arange(size)
        taken = _apply("tensor.take", self, _constant(windows), axis=axis)
        return movedim(taken, axis + 1, -1)

    def fliplr(self) -> Any:
        _require_rank("fliplr", self, 2)
        return self.flip(1)

    def flipud(self) -> Any:
        _require_rank("flipud", self, 1)
        return self.flip(0)

    def rot90(self, k: int = 1, dims: Any = (0, 1)) -> Any:
        """Rotated by 90 degrees ``k`` times from the first of ``dims`` toward the second, as PyTorch's."""
        first, second = dims
        turns = k % 4
        if turns == 1:
            return self.flip(second).transpose(first, second)
        if turns == 2:
            return self.flip(first, second)
        if turns == 3:
            return self.flip(first).transpose(first, second)
        return self.clone()

    def tensor_split(self, indices_or_sections: Any, dim: int = 0) -> tuple[Any, ...]:
        """``n`` near-equal pieces (the first ``length % n`` one longer), or pieces cut at the listed indices."""
        length = self.shape[dim]
        if not isinstance(length, int):
            raise located_error(f"tensor_split along the symbolic dim {length} of {self.type} is not supported")
        cuts = _section_cuts(length, indices_or_sections)
        bounds = [min(max(c if c >= 0 else c + length, 0), length) for c in cuts]
        edges = list(zip([0] + bounds, bounds + [length]))
        return tuple(self.narrow(dim, start, max(end - start, 0)) for start, end in edges)

    def hsplit(self, sections: Any) -> tuple[Any, ...]:
        return _even_split("hsplit", self, sections, 1 if self.ndim > 1 else 0)

    def vsplit(self, sections: Any) -> tuple[Any, ...]:
        _require_rank("vsplit", self, 2)
        return _even_split("vsplit", self, sections, 0)

    def dsplit(self, sections: Any) -> tuple[Any, ...]:
        _require_rank("dsplit", self, 3)
        return _even_split("dsplit", self, sections, 2)

    def split_with_sizes(self, split_sizes: Any, dim: int = 0) -> tuple[Any, ...]:
        sizes = list(split_sizes)
        if sum(sizes) != self.shape[dim]:
            raise located_error(f"split_with_sizes: the sizes {sizes} must add up to dim {dim} of {self.type}")
        return self.split(sizes, dim)

    def ravel(self) -> Any:
        return self.reshape(-1)

    def narrow_copy(self, dim: int, start: int, length: int) -> Any:
        return self.narrow(dim, start, length)

    def select(self, dim: int, index: int) -> Any:
        """The slice at ``index`` along ``dim``, without that dim."""
        size = self.shape[dim]
        start = index + size if index < 0 and isinstance(size, int) else index
        return self.narrow(dim, start, 1).squeeze(dim)

    def diag_embed(self, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Any:
        """Each vector along the last dim as the ``offset`` diagonal of a matrix in the new dims ``(dim1, dim2)``."""
        from kiln.frontend.functional import movedim
        from kiln.frontend.functional_nn import pad

        length = self.shape[-1]
        if not isinstance(length, int):
            raise located_error(f"diag_embed of the symbolic-length {self.type} is not supported")
        size = length + abs(offset)
        vectors = pad(self, (0, abs(offset)))  # element i on row i (offset >= 0) or on column i (offset < 0)
        placed = vectors.unsqueeze(-1 if offset >= 0 else -2)
        matrices = _where(_constant(np.eye(size, k=offset, dtype=bool)), placed, 0)
        rank = self.ndim + 1
        return movedim(matrices, (-2, -1), (dim1 % rank, dim2 % rank))

    def diagflat(self, offset: int = 0) -> Any:
        return self.reshape(-1).diag(offset)

    @autocasts("trace")
    def trace(self) -> Any:
        """The sum of the main diagonal of a matrix (integers sum in int64, as PyTorch's)."""
        _require_rank("trace", self, 2, exactly=True)
        diagonal = self.diagonal()
        return (diagonal if diagonal.dtype.is_float else diagonal.long()).sum()

    def transpose_(self, dim0: int, dim1: int) -> Any:
        return _reshaped_in_place(self, _transposed(self, dim0, dim1), "transpose_")

    def t_(self) -> Any:
        return _reshaped_in_place(self, self.t(), "t_")

    def swapdims_(self, dim0: int, dim1: int) -> Any:
        return _reshaped_in_place(self, _transposed(self, dim0, dim1), "swapdims_")

    swapaxes_ = swapdims_

    def squeeze_(self, dim: Any = None) -> Any:
        return _reshaped_in_place(self, self.squeeze(dim), "squeeze_")

    def unsqueeze_(self, dim: int) -> Any:
        return _reshaped_in_place(self, self.unsqueeze(dim), "unsqueeze_")


# shape helpers ---------------------------------------------------------------------


def _require_rank(method: str, x: Any, rank: int, exactly: bool = False) -> None:
    if x.ndim < rank or (exactly and x.ndim != rank):
        wanted = f"{rank}-D" if exactly else f"at least {rank} dims"
        raise located_error(f"{method} needs a tensor of {wanted}, got {x.type}")


def _static_shape(method: str, x: Any) -> tuple[int, ...]:
    if x.ndim == 0 or not all(isinstance(d, int) for d in x.shape):
        raise located_error(f"{method} needs a static shape of at least one dim, got {x.type}")
    return tuple(x.shape)


def _section_cuts(length: int, indices_or_sections: Any) -> list[int]:
    """Where ``tensor_split`` cuts: after each near-equal section, or at the listed indices."""
    from kiln.frontend.eager_data_dependent import argument_values  # lazily: it builds on the tensor

    indices_or_sections = argument_values(indices_or_sections, "tensor_split: the indices are a tensor whose values "
                                          "exist only when the graph runs; give an int, a list or an eager tensor")
    if isinstance(indices_or_sections, np.ndarray) and indices_or_sections.ndim == 0:  # a 0-d tensor: sections
        indices_or_sections = int(indices_or_sections)
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise located_error(f"tensor_split: the number of sections must be positive, got {sections}")
        base, extra = divmod(length, sections)
        return list(np.cumsum([base + 1] * extra + [base] * (sections - extra))[:-1])
    return [int(i) for i in indices_or_sections]


def _even_split(method: str, x: Any, sections: Any, dim: int) -> tuple[Any, ...]:
    if isinstance(sections, int) and (sections <= 0 or x.shape[dim] % sections):
        raise located_error(f"{method}: dim {dim} of {x.type} does not split into {sections} equal parts")
    return x.tensor_split(sections, dim)


def _transposed(x: Any, dim0: int, dim1: int) -> Any:
    """``x.transpose(dim0, dim1)``, or ``x`` itself where both name one dim: PyTorch's ``transpose_(0, 0)`` changes
    nothing, so it is allowed where a view that changes cannot be made (Shampoo's first mode,
    ``p.grad.data.transpose_(0, dim_id)``, on the array behind ``.grad``)."""
    rank = max(x.ndim, 1)
    same = -rank <= dim0 < rank and -rank <= dim1 < rank and dim0 % rank == dim1 % rank
    return x if same else x.transpose(dim0, dim1)  # (a dim out of range: transpose's error)


def _reshaped_in_place(tensor: Any, result: Any, method: str) -> Any:
    """PyTorch's metadata-only in-place ops (``t_``, ``squeeze_``...): the tensor becomes another view of the same
    storage; no element is written, so the other views stay valid. A write through it later is an ordinary one. A
    parameter, buffer or ``.grad`` array keeps its shape: refused there, unless the op changes nothing (``result`` is
    ``tensor``: ``squeeze_`` of no size-1 dim, ``transpose_(0, 0)``)."""
    from kiln.frontend.module import ArrayLeaf

    check_leaf_write(tensor, method)  # PyTorch's refusal for a leaf that requires grad, with gradients on
    if isinstance(tensor, ArrayLeaf) and result is not tensor:
        raise located_error(f"{method} on a parameter or buffer would change its shape; take the view out of place")
    check_fresh(tensor)
    if result is not tensor:
        reshape_in_place(tensor, result)  # a view of its old self, which its earlier views now hang from
    if not isinstance(tensor, ArrayLeaf):
        count_metadata_change(tensor)
    return tensor
