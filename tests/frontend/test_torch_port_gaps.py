"""Gaps found porting PyTorch code to kiln, each checked against torch 2.13:

- ``@kiln.compile`` on a Module method binds ``self`` (the compiled function is a descriptor): forward and other
  methods, with or without arguments, eager backward through them, one compiled function per instance;
- ``kiln.einsum``'s sublist form (``einsum(q, [0, 1], k, [1, 2], [0, 2])``), Ellipsis included;
- ``nn.MultiheadAttention`` refuses a wrongly shaped ``attn_mask`` / ``key_padding_mask`` with torch's words, at the
  user's line (it failed as a broadcast deep inside attention);
- ``optimizer.state[p]["step"]`` is there as torch's (a 0-d float tensor) for the optimizers that keep one, after
  eager and compiled steps and after ``load_state_dict``; a write sets the parameter's count;
- ``kiln.tensor`` of ragged nested lists raises torch's error, not NumPy's;
- what user-written optimizers call on an eager ``p.grad`` (transformers' Adafactor, shampoo.pytorch's Shampoo):
  ``torch.zeros(shape).to(grad)``, ``torch.eye(dim, out=grad.new(dim, dim))``, ``grad.transpose_(0, 0)``.
"""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require

RTOL, ATOL = 1e-10, 1e-12


def _close(ours, theirs):
    np.testing.assert_allclose(np.array(ours), theirs.detach().numpy(), rtol=RTOL, atol=ATOL)


# --- 1. @kiln.compile on methods ------------------------------------------------------------------------------------

def _model_class(lib, compile_method):
    class Model(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = lib.nn.Linear(4, 3)

        @compile_method
        def forward(self, x):
            return self.l(x).tanh()

        @compile_method
        def score(self, x, scale):
            return (self(x) * scale).sum()

    return Model


def _twins(compile_method=kiln.compile, seed=0):
    """A kiln model whose methods are compiled with ``compile_method`` and a plain torch twin with its weights."""
    torch = require("torch")
    kiln.manual_seed(seed)
    ours = _model_class(kiln, compile_method)().double()
    theirs = _model_class(torch, lambda f: f)().double()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        q.data = torch.tensor(np.array(p.data))
    return torch, ours, theirs


@pytest.mark.parametrize("decorator", ["plain", "with arguments"])
def test_compiled_forward_method_matches_torch_with_gradients(decorator):
    compile_method = kiln.compile if decorator == "plain" else kiln.compile(fullgraph=True)
    torch, ours, theirs = _twins(compile_method)
    x = np.random.default_rng(0).standard_normal((5, 4))
    for _ in range(2):  # the second call reuses the compiled forward
        out, expected = ours(kiln.tensor(x)), theirs(torch.tensor(x))
        _close(out, expected)
        out.pow(2).sum().backward()
        expected.pow(2).sum().backward()
        for p, q in zip(ours.parameters(), theirs.parameters()):
            _close(p.grad, q.grad)


def test_a_compiled_method_with_more_arguments_and_its_input_gradient():
    torch, ours, theirs = _twins()
    x = np.random.default_rng(1).standard_normal((2, 4))
    xk, xt = kiln.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours_score, their_score = ours.score(xk, 0.5), theirs.score(xt, 0.5)
    _close(ours_score, their_score)
    ours_score.backward()
    their_score.backward()
    _close(xk.grad, xt.grad)
    _close(ours.l.weight.grad, theirs.l.weight.grad)


def test_each_instance_has_its_own_compiled_method_which_does_not_keep_it_alive():
    _, first, _ = _twins(seed=0)
    _, second, _ = _twins(seed=1)
    x = kiln.ones(2, 4, dtype=kiln.float64)
    assert first.forward is first.forward and first.forward is not second.forward
    assert not np.allclose(np.array(first(x)), np.array(second(x)))
    np.testing.assert_allclose(np.array(first(x)), np.tanh(np.ones((2, 4)) @ np.array(first.l.weight.data).T
                                                           + np.array(first.l.bias.data)), rtol=RTOL)
    alive = weakref.ref(first)
    del first
    gc.collect()
    gc.collect()  # a finalizer in the cycle may leave it for a second pass
    assert alive() is None


def test_explicit_base_class_call_binds_the_instance():
    _, model, _ = _twins()
    Model = type(model)

    class Scaled(Model):
        def forward(self, x):
            return Model.forward(self, x) * 2

    scaled = Scaled().double()
    scaled.load_state_dict(model.state_dict())
    x = kiln.ones(2, 4, dtype=kiln.float64)
    np.testing.assert_allclose(np.array(scaled(x)), 2 * np.array(model(x)), rtol=RTOL)


class Pickled(kiln.nn.Module):
    """A model with a compiled forward that pickle finds by name."""

    def __init__(self):
        super().__init__()
        self.l = kiln.nn.Linear(4, 3)

    @kiln.compile
    def forward(self, x):
        return self.l(x).tanh()


def test_copies_compile_afresh_for_themselves():
    model = Pickled().double()
    x = np.random.default_rng(2).standard_normal((3, 4))
    expected = np.array(model(kiln.tensor(x)))  # compiled once for the original
    for copied in (copy.copy(model), copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        copied.l = kiln.nn.Linear(4, 3).double()  # the copy's own layer (copy.copy shares the original's)
        copied.l.weight.data[...] = 0.0
        assert copied.forward is not model.forward
        np.testing.assert_allclose(np.array(copied(kiln.tensor(x))), np.tanh(np.broadcast_to(
            np.array(copied.l.bias.data), (3, 3))), rtol=RTOL)
    np.testing.assert_allclose(np.array(model(kiln.tensor(x))), expected, rtol=RTOL)


def test_whole_module_compiles_of_a_model_with_compiled_methods_keep_working():
    torch, ours, theirs = _twins()
    x = np.random.default_rng(2).standard_normal((3, 4))
    _close(ours(kiln.tensor(x)), theirs(torch.tensor(x)))
    _close(kiln.compile(ours)(kiln.tensor(x)), theirs(torch.tensor(x)))
    ours.compile()
    out, expected = ours(kiln.tensor(x)), theirs(torch.tensor(x))
    _close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    _close(ours.l.weight.grad, theirs.l.weight.grad)


# --- 2. einsum's sublist form ---------------------------------------------------------------------------------------

SUBLISTS = {
    "matmul": ([(3, 4), (4, 5)], lambda a, b: (a, [0, 1], b, [1, 2], [0, 2])),
    "implicit output": ([(3, 4), (4, 5)], lambda a, b: (a, [0, 1], b, [1, 2])),
    "batched, letters past Z": ([(2, 3, 4), (2, 4, 5)], lambda a, b: (a, [40, 0, 1], b, [40, 1, 51], [40, 0, 51])),
    "ellipsis": ([(2, 3, 4), (4, 5)], lambda a, b: (a, [Ellipsis, 1], b, [1, 2], [Ellipsis, 2])),
    "ellipsis, implicit": ([(2, 3, 4), (4,)], lambda a, b: (a, [..., 0], b, [0])),
    "trace": ([(4, 4)], lambda a: (a, [0, 0], [])),
}


@pytest.mark.parametrize("case", SUBLISTS)
def test_einsum_sublist_form_matches_torch_with_gradients(case):
    torch = require("torch")
    shapes, arguments = SUBLISTS[case]
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape) for shape in shapes]
    ours = [kiln.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, expected = kiln.einsum(*arguments(*ours)), torch.einsum(*arguments(*theirs))
    _close(out, expected)
    out.pow(2).sum().backward()
    expected.pow(2).sum().backward()
    for a, b in zip(ours, theirs):
        _close(a.grad, b.grad)


@pytest.mark.parametrize("arguments", [lambda lib: (lib.ones(2, 2), [0, 52]), lambda lib: (lib.ones(2, 2), [-1, 0]),
                                       lambda lib: (lib.ones(2),), lambda lib: ("ii",)])
def test_einsum_sublist_errors_are_torchs(arguments):
    torch = require("torch")
    with pytest.raises(ValueError) as theirs:
        torch.einsum(*arguments(torch))
    with pytest.raises(ValueError) as ours:
        kiln.einsum(*arguments(kiln))
    assert str(ours.value) == str(theirs.value)


# --- 3. MultiheadAttention's mask checks ----------------------------------------------------------------------------

MASKS = {  # (attn_mask shape, key_padding_mask shape) for a query of 3 positions, batch 2, 2 heads, 8 wide
    "2-D attn_mask": ((4, 4), None),
    "3-D attn_mask": ((5, 3, 3), None),
    "4-D attn_mask": ((2, 2, 3, 3), None),
    "1-D attn_mask": ((3,), None),
    "key_padding_mask batch": (None, (3, 3)),
    "key_padding_mask keys": (None, (2, 4)),
    "1-D key_padding_mask": (None, (3,)),
    "both wrong: attn_mask first": ((4, 4), (3, 3)),
}


def _attend(lib, batch_first, attn_mask, key_padding_mask, unbatched=False):
    lib.manual_seed(0)
    attention = lib.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    x = lib.zeros(3, 8) if unbatched else lib.zeros(2, 3, 8) if batch_first else lib.zeros(3, 2, 8)
    masks = {}
    if attn_mask is not None:
        masks["attn_mask"] = lib.zeros(*attn_mask)
    if key_padding_mask is not None:
        masks["key_padding_mask"] = lib.zeros(*key_padding_mask, dtype=lib.bool)
    return attention(x, x, x, **masks)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("case", MASKS)
def test_wrongly_shaped_attention_masks_are_refused_as_torch(case, batch_first):
    torch = require("torch")
    with pytest.raises(Exception) as theirs:
        _attend(torch, batch_first, *MASKS[case])
    with pytest.raises(TraceError) as ours:
        _attend(kiln, batch_first, *MASKS[case])
    assert isinstance(ours.value, type(theirs.value))  # RuntimeError, or AssertionError where torch asserts
    expected = str(theirs.value).replace("torch.Size", "kiln.Size")
    lines = str(ours.value).splitlines()
    assert lines[0].startswith(f"{__file__}:") and "return attention(x, x, x, **masks)" in lines[0]  # the call
    assert lines[1].strip().startswith(expected)


def test_the_unbatched_per_head_mask_is_checked_as_torch():
    torch = require("torch")
    with pytest.raises(AssertionError) as theirs:
        _attend(torch, True, (3, 3, 3), None, unbatched=True)
    with pytest.raises(AssertionError) as ours:
        _attend(kiln, True, (3, 3, 3), None, unbatched=True)
    assert str(ours.value).splitlines()[-1].strip() == str(theirs.value).replace("torch.Size", "kiln.Size")


@pytest.mark.parametrize("case", ["2-D attn_mask", "3-D attn_mask", "key_padding_mask keys"])
def test_the_functional_attention_checks_its_masks_as_torch(case):
    torch = require("torch")
    attn_mask, key_padding_mask = MASKS[case]
    errors = []
    for lib in (kiln, torch):
        x, w, b = lib.zeros(3, 2, 8), lib.zeros(24, 8), lib.zeros(24)
        masks = {"attn_mask": None if attn_mask is None else lib.zeros(*attn_mask),
                 "key_padding_mask": None if key_padding_mask is None else lib.zeros(*key_padding_mask, dtype=lib.bool)}
        with pytest.raises(Exception) as raised:
            lib.nn.functional.multi_head_attention_forward(x, x, x, 8, 2, w, b, None, None, False, 0.0, lib.zeros(8, 8),
                                                           lib.zeros(8), training=False, **masks)
        errors.append(raised.value)
    ours, theirs = errors
    assert isinstance(ours, type(theirs))
    assert str(ours).splitlines()[-1].strip().startswith(str(theirs).replace("torch.Size", "kiln.Size"))


def test_complex_einsum_takes_the_sublist_form_as_torch():
    torch = require("torch")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    b = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    ours = kiln.einsum(kiln.tensor(a), [0, 1], kiln.tensor(b), [1, 2], [0, 2])
    theirs = torch.einsum(torch.tensor(a), [0, 1], torch.tensor(b), [1, 2], [0, 2])
    np.testing.assert_allclose(np.array(ours.numpy()), theirs.numpy(), rtol=1e-12)


def test_right_shaped_masks_still_attend_as_torch():
    torch = require("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 8))
    mask = rng.standard_normal((4, 3, 3))  # (N * heads, L, S), added to the scores
    padding = np.array([[False, False, True], [False, False, False]])
    ours = kiln.nn.MultiheadAttention(8, 2, batch_first=True).double()
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        q.data = torch.tensor(np.array(p.data))
    outputs = [attention(lib.tensor(x), lib.tensor(x), lib.tensor(x), attn_mask=lib.tensor(mask),
                         key_padding_mask=lib.tensor(padding)) for lib, attention in ((kiln, ours), (torch, theirs))]
    for a, b in zip(*outputs):
        _close(a, b)


# --- 4. optimizer.state[p]["step"] ----------------------------------------------------------------------------------

STEP_COUNTING = ["Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "ASGD", "Rprop", "Adadelta",
                 "Adafactor"]


def _optimizer_twins(name):
    torch = require("torch")
    kiln.manual_seed(0)
    ours = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.Tanh(), kiln.nn.Linear(4, 2)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        q.data = torch.tensor(np.array(p.data))
    return (torch, ours, getattr(kiln.optim, name)(ours.parameters(), lr=0.01),
            theirs, getattr(torch.optim, name)(theirs.parameters(), lr=0.01))


def _train(lib, model, optimizer, steps, compiled=False, first=0):
    """``steps`` steps; on step 0 only the first layer gets a gradient (the last layer's own count starts later)."""
    x = lib.tensor(np.random.default_rng(5).standard_normal((6, 3)))

    def step(index):
        optimizer.zero_grad()
        loss = model[0](x).pow(2).sum() if index == 0 else model(x).pow(2).sum()
        loss.backward()
        optimizer.step()

    compiled_step = kiln.compile(lambda: step(1)) if compiled else None
    for index in range(first, first + steps):
        step(index) if compiled_step is None or index == 0 else compiled_step()


def _assert_states_match(torch, ours, optimizer, theirs, reference):
    for p, q in zip(ours.parameters(), theirs.parameters()):
        mine, torchs = optimizer.state[p], reference.state[q]
        assert list(mine.keys()) == list(torchs.keys()) and len(mine) == len(torchs) and "step" in mine
        step = mine["step"]
        assert step.shape == () and step.dtype == kiln.float32 and torchs["step"].dtype == torch.float32
        assert float(step) == float(torchs["step"])
        assert float(dict(mine.items())["step"]) == float(mine.get("step")) == float(list(mine.values())[0])
        _close(p.data, q)


@pytest.mark.parametrize("name", STEP_COUNTING)
def test_state_step_is_torchs_after_eager_steps(name):
    torch, ours, optimizer, theirs, reference = _optimizer_twins(name)
    assert "step" not in optimizer.state[ours[0].weight] and len(optimizer.state[ours[0].weight]) == 0 or name == "Adagrad"
    _train(kiln, ours, optimizer, 4)
    _train(torch, theirs, reference, 4)
    _assert_states_match(torch, ours, optimizer, theirs, reference)


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "NAdam"])
def test_state_step_is_torchs_after_compiled_steps_and_a_load(name):
    torch, ours, optimizer, theirs, reference = _optimizer_twins(name)
    _train(kiln, ours, optimizer, 4, compiled=True)
    _train(torch, theirs, reference, 4)
    _assert_states_match(torch, ours, optimizer, theirs, reference)
    saved = reference.state_dict()
    as_arrays = {"state": {k: {n: v.numpy() for n, v in e.items()} for k, e in saved["state"].items()},
                 "param_groups": saved["param_groups"]}
    _, resumed, resumed_optimizer, _, _ = _optimizer_twins(name)
    resumed.load_state_dict(ours.state_dict())
    resumed_optimizer.load_state_dict(as_arrays)
    _assert_states_match(torch, resumed, resumed_optimizer, theirs, reference)


@pytest.mark.parametrize("compiled", [False, True])
def test_writing_state_step_restarts_the_count_as_torch(compiled):
    """Warm-restart code resets Adam's bias correction by writing ``state["step"]``: the next updates follow it."""
    torch, ours, optimizer, theirs, reference = _optimizer_twins("Adam")
    _train(kiln, ours, optimizer, 3, compiled=compiled)
    _train(torch, theirs, reference, 3)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        optimizer.state[p]["step"] = kiln.tensor(0.0)
        reference.state[q]["step"] = torch.tensor(0.0)
    optimizer.state[ours[2].bias]["step"] = 10  # ahead of the others: theirs stay
    reference.state[theirs[2].bias]["step"] = torch.tensor(10.0)
    _train(kiln, ours, optimizer, 2, compiled=compiled, first=1)
    _train(torch, theirs, reference, 2, first=1)
    _assert_states_match(torch, ours, optimizer, theirs, reference)
    with pytest.raises(ValueError, match="whole number"):
        optimizer.state[ours[0].weight]["step"] = 1.5


def test_copied_and_pickled_optimizers_count_their_own_steps():
    torch, ours, optimizer, theirs, reference = _optimizer_twins("Adam")
    _train(kiln, ours, optimizer, 2)
    copies = [copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer))]
    _train(kiln, ours, optimizer, 1, first=1)
    for copied in copies:
        entry = copied.state[next(iter(copied.state))]
        assert float(entry["step"]) == 2.0 and list(entry) == ["step", "exp_avg", "exp_avg_sq"]
    assert float(optimizer.state[ours[0].weight]["step"]) == 3.0


def test_state_step_is_float64_under_a_float64_default(float64_default):
    torch, ours, optimizer, theirs, reference = _optimizer_twins("Adam")
    _train(kiln, ours, optimizer, 2)
    _train(torch, theirs, reference, 2)
    assert optimizer.state[ours[0].weight]["step"].dtype == kiln.float64
    assert reference.state[theirs[0].weight]["step"].dtype == torch.float64


def test_optimizers_without_step_and_a_users_optimizer_keep_their_own_state():
    torch, ours, _, theirs, _ = _optimizer_twins("Adam")
    sgd, torch_sgd = kiln.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    _train(kiln, ours, sgd, 2)
    _train(torch, theirs, torch_sgd, 2)
    assert list(sgd.state[ours[0].weight]) == list(torch_sgd.state[theirs[0].weight]) == ["momentum_buffer"]

    class Counting(kiln.optim.Optimizer):  # torch-style: initialises its state on an empty entry, counts itself
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

        def step(self, closure=None):
            for p in self.param_groups[0]["params"]:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                state["step"] += 1

    counting = Counting(ours.parameters())
    counting.step()
    counting.step()
    assert dict(counting.state[ours[0].weight]) == {"step": 2}


def test_reading_state_before_the_first_step_is_harmless():
    torch, ours, optimizer, theirs, reference = _optimizer_twins("Adam")
    assert dict(optimizer.state[ours[0].weight]) == dict(reference.state[theirs[0].weight]) == {}
    _train(kiln, ours, optimizer, 2)
    _train(torch, theirs, reference, 2)
    _assert_states_match(torch, ours, optimizer, theirs, reference)


# --- 5. kiln.tensor of ragged nested lists --------------------------------------------------------------------------

RAGGED = [[[1, 2], [3]], [[1], [2, 3]], [[[1, 2], [3, 4]], [[1, 2], [3]]], [[1, 2], []], ([1, 2], [3]),
          [[1.5, 2], [3]], [[1, 2], 3], [[[1]], [2]], [1, [2]], [1.5, [2]], [[1, 2], [3, (4,)]]]


@pytest.mark.parametrize("data", RAGGED, ids=repr)
def test_ragged_nested_lists_raise_torchs_error(data):
    torch = require("torch")
    with pytest.raises((ValueError, TypeError)) as theirs:
        torch.tensor(data)
    with pytest.raises(type(theirs.value)) as ours:
        kiln.tensor(data)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("data", [[[], [1]], [[1, 2], (3, 4)], [np.array([1, 2]), np.array([3, 4])]], ids=repr)
def test_nested_data_torch_accepts_gives_its_shape_and_dtype(data):
    torch = require("torch")
    ours, theirs = kiln.tensor(data), torch.tensor(np.array(data) if isinstance(data[0], np.ndarray) else data)
    assert tuple(ours.shape) == tuple(theirs.shape) and str(ours.dtype).split(".")[1] == str(theirs.dtype).split(".")[1]


# --- user-written optimizers' calls on an eager ``p.grad`` -----------------------------------------------------------

def _eager_grads(lib):
    """A float64 linear layer's weight and its eager ``.grad`` (kiln: a ``TorchArray``, the array behind it)."""
    layer = lib.nn.Linear(3, 2).double()
    layer(lib.ones(4, 3, dtype=lib.float64)).sum().backward()
    return layer.weight, layer.weight.grad


def test_to_another_tensor_takes_an_eager_grads_dtype():
    """Adafactor's ``torch.zeros(grad_shape[:-1]).to(grad)``: the ``.grad`` array was taken for a dtype (NumPy's
    ambiguous truth value)."""
    torch = require("torch")
    for lib in (kiln, torch):
        _, grad = _eager_grads(lib)
        assert str(lib.zeros(grad.shape[:-1]).to(grad).dtype).endswith("float64")


def test_eye_writes_its_out_argument_as_torch():
    """Shampoo's ``torch.eye(dim, out=grad.new(dim, dim))``: ``out=`` was missing."""
    torch = require("torch")
    for lib in (kiln, torch):
        _, grad = _eager_grads(lib)
        out = grad.new(3, 3)
        result = lib.eye(3, out=out)
        assert result is out and str(out.dtype).endswith("float64")
        np.testing.assert_array_equal(np.array(out.numpy()), np.eye(3))


def test_a_no_op_transpose_in_place_of_an_eager_grad_as_torch():
    """Shampoo's ``grad = p.grad.data; grad.transpose_(0, dim_id)`` at ``dim_id == 0`` changes nothing: it was
    refused as a shape change of a parameter's array; a real one still is (kiln's ``.grad`` keeps its shape)."""
    torch = require("torch")
    for lib in (kiln, torch):
        _, grad = _eager_grads(lib)
        before, data = np.array(grad.numpy()), grad.data
        assert data.transpose_(0, 0) is data and data.swapdims_(-2, 0).shape == (2, 3)
        np.testing.assert_array_equal(np.array(grad.numpy()), before)
    with pytest.raises(TraceError, match="would change its shape"):
        _eager_grads(kiln)[1].data.transpose_(0, 1)
