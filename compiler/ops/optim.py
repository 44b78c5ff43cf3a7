"""The ``optim`` dialect: optimizer updates and gradient transforms as composite ops.

Each update takes the parameter, its gradient, its state and the scalars that
may change between steps (``lr``, the 1-based ``step`` counter) as operands,
the fixed options as attributes, and returns the new parameter and new state:

```
%w.new, %w.exp_avg.new, %w.exp_avg_sq.new = "optim.adam_update"(%w, %dw, %w.exp_avg, %w.exp_avg_sq, %lr, %step)
    {beta1 = 0.9, beta2 = 0.999, eps = 1e-08, weight_decay = 0.0, amsgrad = false, decoupled = false}
```

The decompositions follow ``torch.optim``'s single-tensor code operation by
operation (``buf.mul_(m).add_(g, alpha=1 - d)`` is ``buf * m + (1 - d) * g``),
so float32 results agree with PyTorch's to rounding. Scalar factors that
PyTorch computes on the host in double precision (bias corrections, Adagrad's
decayed lr, RAdam's rectification, NAdam's momentum schedule) are computed here
in f64 from the ``step`` operand and cast to the parameter's dtype (``lr``
itself is then a 0-d f64 operand whatever the parameter's dtype: ``check_lr``,
``Optimizer.lr_on_host``); a choice
PyTorch makes with a Python ``if`` on such a scalar is a ``tensor.where``, so one
compiled step serves every step number.

A half (float16, bfloat16) parameter's update follows PyTorch 2.13's CPU
kernels bit for bit: its state is half (``zeros_like(p)``; per-parameter
scalars float32, ``scalar_state_dtype``), each of PyTorch's ops computes in
float32 from half operands and rounds its result to half once (``in_opmath``;
``addcmul``, ``addcdiv`` and ``lerp`` are one op each, the first and last with
a fused multiply-add: ``multiply_add``), ``lr`` is a float64 operand like
PyTorch's Python float (``hyper_dtype``), and Python scalars are read in
float32 except where PyTorch rounds them to half (``add``'s alpha and added
scalar: ``rounded_constant``). A backend's ``widen-half`` writes these ops out
before it widens half ops one by one (``compiler/passes/widen_half.py``), so the
step's IR keeps one ``optim.*`` op per update (``pipeline-split`` looks for them).

An attribute that changes every step (a momentum a scheduler cycles, fed as a
0-d f64 graph input) cannot be an attribute: such an update is written out as
its decomposition with that value in place of the attribute (``emit_decomposed``).

The ops live by family, each file registering its own: the operand checks
(``optim_types.py``), the pieces the decompositions share and the
half-precision arithmetic (``optim_opmath.py``), then SGD, momentum and ASGD
(``optim_sgd.py``), Adam, AdamW, Adamax, NAdam and RAdam (``optim_adam.py``),
RMSprop, Adagrad, Adadelta and Rprop (``optim_adaptive.py``), Adafactor
(``optim_adafactor.py``) and the gradient transforms
(``optim_grad_transforms.py``). This module imports them all and re-exports
their names.
"""

from __future__ import annotations

from kiln.compiler.ops.optim_types import (
    UPDATE, check_like, check_scalar, check_scalar_state, check_step, hyper_dtype, scalar_state_dtype, split_operands,
    update_types,
)
from kiln.compiler.ops.optim_opmath import (
    UPDATE_RULES, Store, add_scaled_ratio, as_dtype_of, as_dtype_of_type, bias_correction, complement, constant,
    decay_weights, decayed_average_of_squares, emit_decomposed, f64, host, host_scalar, in_opmath, keep, lerp, lerp_by,
    multiply_add, register_update, rounded_constant, scaled, with_l2,
)
from kiln.compiler.ops.optim_sgd import (
    asgd_update_decomposition, asgd_update_shape, filled_like, sgd_momentum_update_decomposition,
    sgd_momentum_update_shape, sgd_update_decomposition, sgd_update_shape,
)
from kiln.compiler.ops.optim_adam import (
    adam_update_decomposition, adam_update_shape, adamax_update_decomposition, adamax_update_shape, momentum_schedule,
    nadam_update_decomposition, nadam_update_shape, radam_update_decomposition, radam_update_shape, rectification,
)
from kiln.compiler.ops.optim_adaptive import (
    adadelta_update_decomposition, adadelta_update_shape, adagrad_update_decomposition, adagrad_update_shape,
    rmsprop_state_count, rmsprop_update_decomposition, rmsprop_update_shape, rprop_update_decomposition,
    rprop_update_shape, sign,
)
from kiln.compiler.ops.optim_adafactor import (
    adafactor_update_decomposition, adafactor_update_shape, factored_estimate, factored_shapes, mean_square_along,
    norm_over,
)
from kiln.compiler.ops.optim_grad_transforms import (
    clip_grad_norm_decomposition, clip_grad_norm_shape, clip_grad_value_decomposition, clip_grad_value_shape,
    unscale_grad_decomposition, unscale_grad_shape,
)

__all__ = [
    "UPDATE", "check_like", "check_scalar", "check_scalar_state", "check_step", "hyper_dtype", "scalar_state_dtype",
    "split_operands", "update_types", "UPDATE_RULES", "Store", "add_scaled_ratio", "as_dtype_of", "as_dtype_of_type",
    "bias_correction", "complement", "constant", "decay_weights", "decayed_average_of_squares", "emit_decomposed",
    "f64", "host", "host_scalar", "in_opmath", "keep", "lerp", "lerp_by", "multiply_add", "register_update",
    "rounded_constant", "scaled", "with_l2", "asgd_update_decomposition", "asgd_update_shape", "filled_like",
    "sgd_momentum_update_decomposition", "sgd_momentum_update_shape", "sgd_update_decomposition", "sgd_update_shape",
    "adam_update_decomposition", "adam_update_shape", "adamax_update_decomposition", "adamax_update_shape",
    "momentum_schedule", "nadam_update_decomposition", "nadam_update_shape", "radam_update_decomposition",
    "radam_update_shape", "rectification", "adadelta_update_decomposition", "adadelta_update_shape",
    "adagrad_update_decomposition", "adagrad_update_shape", "rmsprop_state_count", "rmsprop_update_decomposition",
    "rmsprop_update_shape", "rprop_update_decomposition", "rprop_update_shape", "sign",
    "adafactor_update_decomposition", "adafactor_update_shape", "factored_estimate", "factored_shapes",
    "mean_square_along", "norm_over", "clip_grad_norm_decomposition", "clip_grad_norm_shape",
    "clip_grad_value_decomposition", "clip_grad_value_shape", "unscale_grad_decomposition", "unscale_grad_shape",
]
