"""``print(optimizer)`` as torch 2.13's, character for character: the class name, then each param group's options
sorted by name, groups a blank line apart, the default options in torch's types (``momentum: 0``, not ``0.0``).
Before, kiln printed ``SGD(lr=0.1, momentum=0.0, ...)`` of the defaults only."""

from __future__ import annotations

import pytest

from oracles import libraries

NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "ASGD", "Rprop",
         "Adafactor"]


@pytest.mark.parametrize("name", NAMES)
def test_an_optimizer_prints_as_torchs(name):
    printed = []
    for library in ("kiln", "torch"):
        lib, nn, _ = libraries(library)
        layer = nn.Linear(2, 2)
        optimizer = getattr(lib.optim, name)([{"params": [layer.weight]}, {"params": [layer.bias], "lr": 0.01}], lr=0.1)
        printed.append(repr(optimizer))
    assert printed[0] == printed[1]
