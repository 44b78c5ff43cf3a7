"""An optimizer option given as an int (torch's defaults: ``weight_decay=0``, ``momentum=0``; a user's
``weight_decay=1``) is its update op's float attribute in the IR (``weight_decay = 0.0``), as the op registry
declares them, so the printed IR (the README's tour shows it) reads the same whichever the user wrote."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "ASGD", "Rprop",
         "Adafactor"]


@pytest.mark.parametrize("name", NAMES)
def test_no_update_op_attribute_is_an_int(name):
    model = kiln.nn.Linear(3, 2)
    options = {} if name in ("Rprop",) else {"weight_decay": 1}
    optimizer = getattr(kiln.optim, name)(model.parameters(), lr=0.1, **options)
    step = kiln.compile_train_step(model, lambda out, y: ((out - y) ** 2).mean(), optimizer)
    step(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
    updates = [op for op in step.graph.ops if op.name.startswith("optim.")]
    assert updates and all(type(value) is not int for op in updates for value in op.attrs.values())
    assert "weight_decay = 0}" not in str(step.graph) and "weight_decay = 1}" not in str(step.graph)
