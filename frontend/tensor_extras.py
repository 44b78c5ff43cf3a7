"""The rest of PyTorch's commonly used ``Tensor`` methods, each a few existing ops (no new IR op):

- the scatter family of GNN code: ``scatter`` (``src`` or ``value``, ``reduce="add"|"multiply"``), ``scatter_add``,
  ``index_add``/``index_fill``/``index_copy``, ``masked_scatter``, ``nonzero_static``, with their in-place ``_`` forms;
- shape: ``unfold`` (sliding windows), ``fliplr``/``flipud``/``rot90``, ``tensor_split``/``hsplit``/``vsplit``/
  ``dsplit``, ``split_with_sizes``, ``ravel``, ``select``, ``narrow_copy``, ``diag_embed``/``diagflat``/``trace``, and
  the metadata-only in-place ``transpose_``/``t_``/``swapdims_``/``squeeze_``/``unsqueeze_``;
- special functions: ``erfc``, ``erfinv``, ``lgamma``, ``digamma``, ``xlogy``, ``logit``, ``sinc``, ...;
- reductions and small linear algebra: ``nansum``/``nanmean``, ``count_nonzero``, ``aminmax``, ``quantile``, ``mv``,
  ``inner``, ``addmv``, ``addr``, ``cross``, ``cov``/``corrcoef``;
- PyTorch's aliases (``multiply``, ``divide``...) and the in-place ``xxx_`` of the out-of-place methods, generated
  from one list (``_IN_PLACE``) through ``in_place``.

Each group is a mixin in a file of its own, all inherited by ``ExtraMethods`` here: the scatter family
(``tensor_scatter.py``), shape (``tensor_shape_extras.py``), special functions, float tests and aliases
(``tensor_elementwise_extras.py``), reductions and small linear algebra (``tensor_reductions.py``); this file generates
the in-place forms and lists the methods ``kiln.xxx`` forwards to (``EXTRA_FORWARDED``).

The methods that need the values (``unique``, ``bincount``, ``allclose``, ``nonzero``...) are in
frontend/tensor_value_dependent.py, inherited from here.
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.frontend.tensor_elementwise_extras import ElementwiseExtraMethods, _float_pair
from kiln.frontend.tensor_inplace import in_place
from kiln.frontend.tensor_mixin_ops import _constant, _is_tensor, _where
from kiln.frontend.tensor_reductions import MinMax, ReductionMethods
from kiln.frontend.tensor_scatter import ScatterMethods, _cut, _mean_of_writes, _vector_index
from kiln.frontend.tensor_shape_extras import ShapeExtraMethods, _static_shape
from kiln.frontend.tensor_value_dependent import ValueDependentMethods


class ExtraMethods(ScatterMethods, ShapeExtraMethods, ElementwiseExtraMethods, ReductionMethods, ValueDependentMethods):
    """See the module docstring; ``Tensor`` inherits these last, so a method defined elsewhere wins."""


# in-place forms ------------------------------------------------------------------------

_IN_PLACE = (
    # unary math
    "absolute", "acos", "acosh", "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctanh", "asin", "asinh", "atan",
    "atanh", "ceil", "cos", "cosh", "deg2rad", "digamma", "erf", "erfc", "erfinv", "exp2", "expm1", "fix", "floor",
    "frac", "lgamma", "log10", "log1p", "log2", "logit", "nan_to_num", "negative", "rad2deg", "reciprocal", "round",
    "rsqrt", "sgn", "sign", "sin", "sinc", "sinh", "square", "tan", "trunc", "tril", "triu", "logical_not",
    # binary math, comparisons (written as 0/1 into a float tensor) and scans
    "addcdiv", "addcmul", "addmm", "addmv", "addr", "baddbmm", "arctan2", "atan2", "copysign", "cumprod", "cumsum",
    "divide", "eq", "float_power", "floor_divide", "fmod", "ge", "greater", "greater_equal", "gt", "heaviside", "hypot",
    "le", "less", "less_equal", "logical_and", "logical_or", "logical_xor", "lt", "multiply", "ne", "not_equal",
    "remainder", "subtract", "true_divide", "xlogy",
    # scatter family
    "scatter", "scatter_add", "index_add", "index_copy", "index_fill", "masked_scatter",
)
"""Methods whose in-place ``name_`` form is ``in_place`` of ``name``; one already defined elsewhere wins."""


def _in_place_form(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return in_place(self, f"{name}_", lambda x: getattr(x, name)(*args, **kwargs))

    method.__name__ = method.__qualname__ = f"{name}_"
    method.__doc__ = f"``{name}``, written into this tensor (it keeps its shape and dtype), as PyTorch's ``{name}_``."
    return method


for _name in _IN_PLACE:
    setattr(ExtraMethods, f"{_name}_", _in_place_form(_name))


EXTRA_FORWARDED = (
    "scatter", "scatter_add", "index_add", "index_fill", "index_copy", "masked_scatter", "nonzero_static",
    "fliplr", "flipud", "rot90", "tensor_split", "hsplit", "vsplit", "dsplit", "split_with_sizes", "ravel", "select",
    "narrow_copy", "diag_embed", "diagflat", "swapdims", "swapaxes",
    "erfc", "erfinv", "lgamma", "digamma", "xlogy", "logit", "sinc", "deg2rad", "rad2deg", "float_power", "copysign",
    "signbit", "sgn", "isclose", "isposinf", "isneginf", "isreal", "fmax", "fmin", "logaddexp2",
    "multiply", "subtract", "divide", "true_divide", "negative", "positive", "not_equal", "absolute", "greater",
    "greater_equal", "less", "less_equal", "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor", "fix", "trunc",
    "frac", "remainder", "fmod", "floor_divide",
    "nansum", "nanmean", "count_nonzero", "aminmax", "quantile", "mv", "inner", "vdot", "addmv", "addr", "ger", "dist",
    "cross", "cov", "corrcoef", "unique", "unique_consecutive", "bincount", "histc", "histogram", "allclose", "equal",
)
"""The ``torch.xxx(input, ...)`` functions that are ``input.xxx(...)`` here, exported as ``kiln.xxx``
(``torch_functions.FORWARDERS``); each is a ``torch`` function (tested) not in ``torch_functions.FORWARDED``.
``torch.trace`` is left out: ``kiln.trace`` is the tracer (``x.trace()`` is the method)."""


__all__ = [
    "EXTRA_FORWARDED", "ExtraMethods", "MinMax",
    # re-exported for tensor_more.py and torch_special_namespace.py, which import them from here
    "_constant", "_cut", "_float_pair", "_in_place_form", "_is_tensor", "_mean_of_writes", "_static_shape", "_vector_index",
    "_where",
]
