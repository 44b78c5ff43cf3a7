"""OneCycleLR and CyclicLR with ``cycle_momentum=True`` (PyTorch's default) against PyTorch 2.13, step by step.

The schedulers cycle SGD's ``momentum`` or ``betas[0]`` of the Adam family inversely to the lr; the optimizer then feeds
it to the step as a graph input (``feed_as_input``). A small float64 MLP trains 30 steps in kiln (compiled on NumPy,
compiled on onnxruntime, or eager ``backward(); step()``) and in PyTorch from the same weights: every step the groups'
momentum/betas are PyTorch's floats and the parameters PyTorch's to 1e-12, and the compiled step compiles once.
Half parameters with a cycled momentum match PyTorch's half updates bit for bit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.printer import print_graph
from kiln.optim import lr_scheduler as schedules
from kiln.runtime.step_graph import build_step_graph
from kiln.frontend.trace import TensorSpec
from oracles import require

STEPS = 30
TOLERANCE = 1e-12

OPTIMIZERS = {
    "SGD": ("SGD", dict(lr=0.1, momentum=0.9)),
    "SGD_nesterov_wd": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "SGD_dampening": ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.3)),
    "SGD_no_momentum": ("SGD", dict(lr=0.1)),  # torch cycles it too: the scheduler sets momentum to max_momentum
    "Adam": ("Adam", dict(lr=1e-2)),
    "Adam_amsgrad": ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
    "AdamW": ("AdamW", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)),
    "Adamax": ("Adamax", dict(lr=1e-2)),
    "NAdam": ("NAdam", dict(lr=1e-2)),
    "RAdam": ("RAdam", dict(lr=1e-2)),
}

SCHEDULES = {
    "one_cycle_cos": lambda s, o: s.OneCycleLR(o, max_lr=0.2, total_steps=STEPS),
    "one_cycle_linear": lambda s, o: s.OneCycleLR(o, max_lr=0.2, total_steps=STEPS, anneal_strategy="linear", pct_start=0.4),
    "one_cycle_three_phase": lambda s, o: s.OneCycleLR(o, max_lr=0.2, total_steps=STEPS, three_phase=True, base_momentum=0.7, max_momentum=0.92),
    "cyclic_triangular": lambda s, o: s.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4),
    "cyclic_exp_range": lambda s, o: s.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="exp_range", gamma=0.97,
                                                base_momentum=0.75, max_momentum=0.95),
}


@pytest.fixture(autouse=True)
def torch_scalar_states_in_float64(torch):
    """PyTorch and kiln keep NAdam's ``mu_product`` (and the step counters) in the default dtype's float32 or float64,
    float32 even for float64 parameters. Default float64 here on both sides, as these runs are."""
    before, kiln_before = torch.get_default_dtype(), kiln.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    kiln.set_default_dtype(kiln.float64)
    yield
    torch.set_default_dtype(before)
    kiln.set_default_dtype(kiln_before)


def mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(5, 8), lib.nn.Tanh(), lib.nn.Linear(8, 3))


def model_pair(torch):
    """The MLP in kiln and its PyTorch twin, in float64, from kiln's initial weights."""
    kiln.manual_seed(0)
    model = mlp(kiln)
    for parameter in model.parameters():
        parameter.data = parameter.data.astype(np.float64)
    twin = mlp(torch).double()
    for p, q in zip(model.parameters(), twin.parameters()):
        q.data = torch.tensor(np.array(p.data))
    return model, twin


def optimizer_pair(torch, model, twin, name):
    kind, arguments = OPTIMIZERS[name]
    return getattr(kiln.optim, kind)(model.parameters(), **arguments), getattr(torch.optim, kind)(twin.parameters(), foreach=False, **arguments)


def batches(count=STEPS):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((6, 5)), rng.integers(0, 3, 6)) for _ in range(count)]


def kiln_trainer(model, optimizer, how):
    """One training step of ``model`` on ``(x, y)``: compiled (NumPy or onnxruntime), or eager."""
    if how.startswith("compiled"):
        step = kiln.compile_train_step(model, F.cross_entropy, optimizer, backend="onnxruntime" if how.endswith("onnxruntime") else "numpy")
        return step
    def eager_step(x, y):
        optimizer.zero_grad()
        F.cross_entropy(model(kiln.tensor(x)), kiln.tensor(y)).backward()
        optimizer.step()
    return eager_step


def torch_step(torch, twin, optimizer, x, y):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y)).backward()
    optimizer.step()


def momenta(optimizer):
    return [(group.get("momentum"), tuple(group["betas"]) if "betas" in group else None) for group in optimizer.param_groups]


def assert_parameters_match(model, twin, where):
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=TOLERANCE, atol=TOLERANCE, err_msg=f"{where}: {name}")


def train_in_lockstep(torch, optimizer_name, schedule, how):
    model, twin = model_pair(torch)
    optimizer, torch_optimizer = optimizer_pair(torch, model, twin, optimizer_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when its scheduler steps before its optimizer did
        ours, theirs = SCHEDULES[schedule](schedules, optimizer), SCHEDULES[schedule](torch.optim.lr_scheduler, torch_optimizer)
        step = kiln_trainer(model, optimizer, how)
        seen = set()
        for index, (x, y) in enumerate(batches()):
            assert momenta(optimizer) == momenta(torch_optimizer), f"step {index}"
            seen.add(tuple(momenta(optimizer)))
            step(x, y)
            torch_step(torch, twin, torch_optimizer, x, y)
            assert_parameters_match(model, twin, f"step {index}")
            if index < STEPS - 1:
                ours.step()
                theirs.step()
    assert len(seen) >= 5  # the momentum did cycle
    return step


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_compiled_step_cycles_momentum_as_torch_and_compiles_once(torch, optimizer_name, schedule):
    step = train_in_lockstep(torch, optimizer_name, schedule, "compiled")
    assert step.compile_count == 1


@pytest.mark.parametrize("schedule", ["one_cycle_cos", "cyclic_exp_range"])
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_eager_step_cycles_momentum_as_torch(torch, optimizer_name, schedule):
    train_in_lockstep(torch, optimizer_name, schedule, "eager")


@pytest.mark.parametrize("optimizer_name", ["SGD_nesterov_wd", "Adam", "AdamW"])
def test_onnxruntime_step_cycles_momentum_as_torch(torch, optimizer_name):
    require("onnxruntime")
    step = train_in_lockstep(torch, optimizer_name, "one_cycle_three_phase", "compiled-onnxruntime")
    assert step.compile_count == 1


def test_the_momentum_is_a_graph_input_only_once_a_scheduler_cycles_it(torch):
    model, _ = model_pair(torch)
    optimizer = kiln.optim.AdamW(model.parameters(), lr=1e-2)
    specs = [TensorSpec(("N", 5), "float64"), TensorSpec(("N",), "int64")]
    before = print_graph(build_step_graph(model, F.cross_entropy, optimizer, specs).graph)
    assert "optim.adam_update" in before and "%beta1" not in before
    schedules.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    after = build_step_graph(model, F.cross_entropy, optimizer, specs)
    assert [name for _, name in after.hyper_inputs] == ["lr", "beta1"]
    assert "optim.adam_update" not in print_graph(after.graph)  # written out: beta1 is a value, not an attribute
    assert optimizer.graph_hyperparameters == ("lr", "beta1") and kiln.optim.AdamW.graph_hyperparameters == ("lr",)


def test_a_step_compiled_before_the_scheduler_recompiles_once(torch):
    model, twin = model_pair(torch)
    optimizer, torch_optimizer = optimizer_pair(torch, model, twin, "SGD")
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
    data = batches(12)
    for x, y in data[:2]:
        step(x, y)
        torch_step(torch, twin, torch_optimizer, x, y)
    ours = schedules.CyclicLR(optimizer, base_lr=0.01, max_lr=0.1, step_size_up=3)
    theirs = torch.optim.lr_scheduler.CyclicLR(torch_optimizer, base_lr=0.01, max_lr=0.1, step_size_up=3)
    for index, (x, y) in enumerate(data[2:]):
        step(x, y)
        torch_step(torch, twin, torch_optimizer, x, y)
        assert_parameters_match(model, twin, f"step {index + 2}")
        ours.step()
        theirs.step()
    assert step.compile_count == 2


def test_state_dicts_resume_the_cycle_as_torch(torch):
    """Halfway, the optimizer's and scheduler's state_dicts load into fresh ones (PyTorch's resume recipe, last_epoch
    from the saved scheduler); the rest of the run matches PyTorch's uninterrupted one."""
    model, twin = model_pair(torch)
    optimizer, torch_optimizer = optimizer_pair(torch, model, twin, "Adam")
    make = SCHEDULES["one_cycle_cos"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = make(schedules, optimizer), make(torch.optim.lr_scheduler, torch_optimizer)
        data = batches()
        step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
        for x, y in data[:12]:
            step(x, y)
            torch_step(torch, twin, torch_optimizer, x, y)
            ours.step()
            theirs.step()
        saved_optimizer, saved_schedule = optimizer.state_dict(), ours.state_dict()
        resumed = kiln.optim.Adam(model.parameters(), lr=1e-2)
        resumed.load_state_dict(saved_optimizer)
        schedule = schedules.OneCycleLR(resumed, max_lr=0.2, total_steps=STEPS, last_epoch=saved_schedule["last_epoch"] - 1)
        schedule.load_state_dict(saved_schedule)
        assert momenta(resumed) == momenta(torch_optimizer) and resumed.graph_hyperparameters == ("lr", "beta1")
        step = kiln.compile_train_step(model, F.cross_entropy, resumed)
        for index, (x, y) in enumerate(data[12:]):
            assert momenta(resumed) == momenta(torch_optimizer), f"step {index + 12}"
            step(x, y)
            torch_step(torch, twin, torch_optimizer, x, y)
            assert_parameters_match(model, twin, f"step {index + 12}")
            if index + 12 < STEPS - 1:
                schedule.step()
                theirs.step()


@pytest.mark.parametrize("which", ["OneCycleLR", "CyclicLR"])
def test_optimizers_without_momentum_are_refused_as_torch_refuses_them(torch, which):
    model, twin = model_pair(torch)
    make = {
        "OneCycleLR": lambda s, o: getattr(s, which)(o, max_lr=0.1, total_steps=10),
        "CyclicLR": lambda s, o: getattr(s, which)(o, base_lr=0.01, max_lr=0.1),
    }[which]
    with pytest.raises(ValueError, match="must support momentum or beta1") as theirs:
        make(torch.optim.lr_scheduler, torch.optim.Adagrad(twin.parameters()))
    with pytest.raises(KilnError, match="must support momentum or beta1") as ours:
        make(schedules, kiln.optim.Adagrad(model.parameters()))
    assert str(theirs.value) in str(ours.value) and "cycle_momentum=False" in str(ours.value)


HALF_CASES = {
    "SGD_nesterov": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "Adam": ("Adam", dict(lr=1e-2, eps=1e-4)),
    "AdamW": ("AdamW", dict(lr=1e-2, eps=1e-4, weight_decay=0.1)),
    "NAdam": ("NAdam", dict(lr=1e-2, eps=1e-4)),
    "RAdam": ("RAdam", dict(lr=1e-2, eps=1e-4)),
    "Adamax": ("Adamax", dict(lr=1e-2, eps=1e-4)),
}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", HALF_CASES)
def test_half_parameters_with_a_cycled_momentum_match_torch_bit_for_bit(torch, case, dtype):
    """The written-out update keeps PyTorch's half arithmetic (``in_opmath``): the fed f64 momentum is read in float32
    as PyTorch reads its Python float, and the parameters and states agree bit for bit (``test_half_optim``'s check)."""
    from test_half_optim import half_pair, step_both_and_compare

    torch.set_default_dtype(torch.float32)  # the half scalar states (mu_product) in float32 on both sides
    kiln.set_default_dtype(kiln.float32)
    name, options = HALF_CASES[case]
    rng = np.random.default_rng(0)
    ours, theirs = half_pair(torch, dtype, rng)
    optimizer, reference = getattr(kiln.optim, name)(ours, **options), getattr(torch.optim, name)(theirs, foreach=False, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schedule = schedules.OneCycleLR(optimizer, max_lr=0.05, total_steps=10)
        torch_schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.05, total_steps=10)
        for index in range(8):
            step_both_and_compare(torch, optimizer, reference, ours, theirs, dtype, rng, index, name)
            assert momenta(optimizer) == momenta(reference)
            schedule.step()
            torch_schedule.step()
