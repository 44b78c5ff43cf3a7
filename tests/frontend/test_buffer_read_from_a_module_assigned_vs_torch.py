"""A buffer read from a module and set as an attribute of another (schnetpack's ``self.cutoff = cutoff_fn.cutoff``,
PaiNN and SchNet): in PyTorch a registered buffer reads back as a plain tensor, so the assignment keeps a plain
attribute and ``state_dict`` does not gain the name; kiln registered it again (its buffers read back as ``Buffer``),
so kiln's state_dict had a key torch's lacks and loading one library's state into the other failed. A new
``nn.Buffer``, ``register_buffer`` and an assignment to a buffer's own name still register, as in torch; and
``register_buffer(name, other.buffer)`` registers that same tensor, as torch's (kiln registered a copy)."""

from __future__ import annotations

import copy

import numpy as np

from oracles import libraries


def model_with_shared_cutoff(name):
    lib, nn, _ = libraries(name)

    class CosineCutoff(nn.Module):
        def __init__(self, cutoff):
            super().__init__()
            self.register_buffer("cutoff", lib.tensor([cutoff]))

    class Representation(nn.Module):
        def __init__(self):
            super().__init__()
            self.cutoff_fn = CosineCutoff(5.0)
            self.cutoff = self.cutoff_fn.cutoff
            self.copied = copy.deepcopy(self.cutoff_fn.cutoff)
            self.register_buffer("registered", self.cutoff_fn.cutoff)
            self.fresh = nn.Buffer(lib.tensor([1.0, 2.0]))
            self.fresh = self.fresh  # its own name again: still a buffer

    return Representation()


def test_state_dict_names_as_torch():
    ours, theirs = model_with_shared_cutoff("kiln"), model_with_shared_cutoff("torch")
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["registered", "fresh", "cutoff_fn.cutoff"]


def test_the_plain_attribute_is_the_module_buffer():
    for name in ("kiln", "torch"):
        model = model_with_shared_cutoff(name)
        assert model.cutoff is model.cutoff_fn.cutoff
        assert np.array_equal(np.array(model.copied.numpy()), [5.0])


def test_one_librarys_state_loads_into_the_other():
    lib, _, _ = libraries("torch")
    ours, theirs = model_with_shared_cutoff("kiln"), model_with_shared_cutoff("torch")
    ours.load_state_dict({key: np.array(value.numpy()) * 2 for key, value in theirs.state_dict().items()})
    theirs.load_state_dict({key: lib.tensor(np.array(value.numpy())) for key, value in ours.state_dict().items()})
    assert float(ours.cutoff.numpy()[0]) == float(theirs.cutoff[0]) == 10.0


def test_register_buffer_of_another_modules_buffer_shares_it_as_torch():
    """``register_buffer(name, other.buffer)`` keeps that tensor (torch's register_buffer stores it as given): an
    in-place update through either module shows in both, and ``named_buffers`` names it once; kiln copied it."""
    seen = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        inner, outer = nn.Module(), nn.Module()
        inner.register_buffer("scale", lib.tensor([5.0]))
        outer.inner = inner
        outer.register_buffer("shared", inner.scale)
        with lib.no_grad():
            inner.scale.add_(1.0)
        assert outer.shared is inner.scale
        seen.append((outer.shared.tolist(), [key for key, _ in outer.named_buffers()], list(outer.state_dict())))
    assert seen[0] == seen[1] == ([6.0], ["shared"], ["shared", "inner.scale"])
