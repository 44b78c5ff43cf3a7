"""Optimizers with ``torch.optim``'s names, arguments and semantics; each emits one ``optim.*`` op per parameter.

An optimizer keeps its hyper-parameters in ``param_groups`` (as PyTorch), its
per-parameter state as NumPy arrays in ``state`` and the number of updates
done in ``step_count``. When a training step is compiled, ``emit_update``
appends the update op of one parameter. The learning rate and the step
counter are graph inputs, so changing them never recompiles; the other
options are attributes of the op, and changing one recompiles the step,
except a momentum that a scheduler cycles (``OneCycleLR``, ``CyclicLR``),
which ``feed_as_input`` makes a graph input too.

```python
decay, no_decay = [], []
for name, p in model.named_parameters():
    (no_decay if name.endswith("bias") else decay).append(p)
optimizer = kiln.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
```
"""

from kiln.frontend.optim_algorithms import ASGD, GD, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW, NAdam, RAdam, RMSprop, Rprop
from kiln.frontend.optim_base import Optimizer
from kiln.frontend.optim_base import Update, _non_negative  # noqa: F401  (re-exported: optim_muon, optim_combined, optim_lbfgs import them from here)

__all__ = [
    "ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "GD", "NAdam", "Optimizer", "RAdam", "RMSprop", "Rprop", "SGD",
]
