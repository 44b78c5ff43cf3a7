"""PyTorch's ``Tensor`` methods whose answer depends on the values: a data-dependent shape (``nonzero``,
``masked_select``, ``unique``, ``bincount``, ``histc``) or a Python bool (``allclose``, ``equal``, ``is_nonzero``).

Eagerly they run (frontend/eager_data_dependent.py computes them from the arrays); inside a trace the values do not
exist yet, so each raises an error that says what to trace instead (unless the tensor is built from constants only:
then its values are known and the results are constants; ``nonzero`` and ``masked_select`` also take values
``kiln.compile`` specializes on, from the call's inputs, guarded). ``Tensor`` inherits them through ``ExtraMethods``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.trace import located_error


class ValueDependentMethods:
    """The methods that need the tensor's values."""

    def nonzero(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().nonzero(self, *args, **kwargs)
        known = known_mask(self)
        if known is not None:  # HF Longformer's is_index_global_attn.nonzero(as_tuple=True) of the attention mask
            return _eager_ops().nonzero_of(np.asarray(known), *args, **kwargs)
        raise located_error("nonzero() has a data-dependent shape, which kiln does not trace; use a bool mask with "
                            "where (or masked_fill) instead")

    def argwhere(self) -> Any:
        return self.nonzero()

    def masked_select(self, mask: Any) -> Any:
        if _eager_ops().eager_with_mask(self, mask):
            return _eager_ops().masked_select(self, mask)
        picks = known_mask(mask)
        if picks is not None:  # FastSpeech 2's loss: x.masked_select(~get_mask_from_lengths(src_lens)) in a step
            return _eager_ops().masked_select(self, picks)
        raise located_error("masked_select() has a data-dependent shape, which kiln does not trace; use "
                            "where(mask, x, 0) and reduce, or masked_fill")

    def unique(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().unique(self, *args, **kwargs)
        raise _data_dependent("unique()", "its length is the number of distinct values",
                              "compare against the known classes instead (x.unsqueeze(-1) == classes) or sort")

    def unique_consecutive(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().unique_consecutive(self, *args, **kwargs)
        return self.unique()

    def bincount(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().bincount(self, *args, **kwargs)
        raise _data_dependent("bincount()", "its length is the largest value plus one",
                              "with known classes, count with one-hot sums: (x.unsqueeze(-1) == kiln.arange(n)).sum(0)")

    def histc(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().histc(self, *args, **kwargs)
        raise _data_dependent("histc()", "its default range comes from the values",
                              "count against fixed bin edges: kiln.bucketize(x, edges) and one-hot sums")

    def histogram(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().histogram(self, *args, **kwargs)
        raise _data_dependent("histogram()", "its default range comes from the values",
                              "count against fixed bin edges: kiln.bucketize(x, edges) and one-hot sums")

    def allclose(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().allclose(self, *args, **kwargs)
        raise _python_bool("allclose()", "x.isclose(y).all()")

    def equal(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().equal(self, *args, **kwargs)
        raise _python_bool("equal()", "(x == y).all()")

    def is_nonzero(self) -> Any:
        if _eager_ops().is_eager(self):
            return _eager_ops().is_nonzero(self)
        raise _python_bool("is_nonzero()", "x != 0")


def _eager_ops() -> Any:
    """frontend/eager_data_dependent.py (lazily: it builds on the Tensor these methods make)."""
    from kiln.frontend import eager_data_dependent

    return eager_data_dependent


def known_mask(mask: Any) -> Any:
    """The values of ``mask`` where a trace knows them: a host array or list, an eager tensor, a traced one computed
    from constants, or (in a ``kiln.compile`` trace) from the call's inputs, specialized and guarded
    (``frontend/value_guards.py``: a mask made from lengths); else None. With them the selection has a known shape."""
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.tensor_methods import traced_values

    if not isinstance(mask, Tensor):
        return mask
    known = _eager_ops().concrete_array(mask)
    return known if known is not None else traced_values(mask)


def _data_dependent(method: str, why: str, instead: str) -> Exception:
    return located_error(f"{method} has a data-dependent shape ({why}), which kiln does not trace; {instead}")


def _python_bool(method: str, instead: str) -> Exception:
    return located_error(f"{method} returns a Python bool, which needs the tensor's values: they exist only when the "
                         f"compiled function runs; use {instead} as a bool tensor and return it")


__all__ = ["ValueDependentMethods"]
