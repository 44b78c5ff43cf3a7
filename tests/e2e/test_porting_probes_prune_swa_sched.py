"""Porting probe: PyTorch's training utilities as training scripts use them, each program written once (``torch`` is
``torch`` or ``kiln``) and run in lockstep from kiln's initial weights against torch 2.13: float64 to 1e-10, eagerly
and with the whole step (zero_grad, forward, loss, backward, optimizer step, and the EMA updates) one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

What is in it: ``torch.nn.utils.prune`` as the pruning tutorial and lottery-ticket scripts use it
(``tests/e2e/prune_program.py``: a LeNet with fc1 pruned by ``random_unstructured`` at build, its mask loaded into
torch's twin with the state_dict; rounds of ``global_unstructured(L1Unstructured)`` over four weights, in the first
also ``l1_unstructured`` of a bias (an integer amount), ``ln_structured(n=2, dim=0)`` (a ``PruningContainer`` with the
global mask, found through ``_forward_pre_hooks``), the tutorial's custom ``FooBarPruningMethod``; the tutorial's
sparsity printout; SGD-momentum fine-tuning between rounds on ``weight_orig``; ``prune.remove`` and ``is_pruned``; the
``state_dict`` keys each round), the same rounds through ``kiln.compile(model)`` trained eagerly, and the pruned model
exported by ``kiln.onnx.export`` and run in onnxruntime.
Parametrizations: ``register_parametrization`` of a symmetric and a positive (``right_inverse`` by ``torch.log``)
parametrization, ``parametrizations.orthogonal``, ``weight_norm`` and ``spectral_norm``, trained with Adam under
``parametrize.cached()``, their ``parametrizations.weight.original0/1`` keys, and an assignment through
``right_inverse`` (``tests/e2e/swa_sched_program.py`` holds the rest): SWA (``AveragedModel``, ``SWALR`` after a
cosine schedule, ``update_bn``) with an EMA ``AveragedModel(get_ema_multi_avg_fn)`` and two hand-kept EMAs
(``torch._foreach_mul_``/``_foreach_add_``, ``lerp_``), timm's ``ModelEmaV2`` (``copy_`` over ``state_dict().values()``)
and a ``torch._foreach_lerp_`` EMA; eight LR schedules stepped as scripts step them (per batch,
per epoch, ``step(epoch + i / iters)``, ``step(accuracy)`` in mode max with cooldown and min_lr; CyclicLR and
OneCycleLR cycling the momentum or Adam's beta1) and resumed mid-run from a ``save``/``load`` checkpoint of model,
optimizer and scheduler; ``clip_grad_norm_(foreach=True, error_if_nonfinite=True)``, ``clip_grad_value_``,
``parameters_to_vector`` (an L2 penalty through it; the flat gradient) and ``vector_to_parameters``; bfloat16
``autocast("cpu")`` with ``GradScaler`` (``unscale_``, clipping, ``step``, ``update``), compared at bfloat16's level.

Not compiled, as kiln refuses them inside a compiled step with a message saying what to do: ``GradScaler`` (its scale
changes between calls) and ``clip_grad_norm_(error_if_nonfinite=True)`` (its check raises on a value the trace does
not have); the compiled clipping run passes ``error_if_nonfinite=False``.

What broke: ``kiln.nn.utils.prune`` did not exist: built in ``frontend/prune.py`` to torch's API and behaviour
(unit tests ``tests/frontend/test_prune_vs_torch.py``); for it, a module's ``_forward_pre_hooks`` now maps handle
ids to the hooks themselves, as torch's (they were ``(hook, with_kwargs)`` pairs). ``parameters_to_vector`` returned a
NumPy copy of ``.data``: now torch's differentiable ``cat`` of views, traced in a compiled step; and an eager ``.grad``
of a Linear weight was not contiguous, so ``p.grad.view(-1)`` raised
(``tests/frontend/test_parameters_to_vector_vs_torch.py``). The schedulers' ``state_dict()`` lacked torch's
``_get_lr_called_within_step``, OneCycleLR's ``_schedule_phases`` were tuples (a torch checkpoint's scheduler crashed
kiln's on resume) and CosineAnnealingWarmRestarts counted ``_step_count``
(``tests/optim/test_scheduler_state_dict_vs_torch.py``). ``clip_grad_norm_``'s non-finite error had kiln's own words,
now torch's (``tests/frontend/test_clip_grad_nonfinite_vs_torch.py``). The scheduler loops compile their step once and
the resume rebinds ``optimizer``: kiln.compile kept stepping with the old optimizer (its lr no longer scheduled), so
the losses after the resume drifted from torch's; it now guards the names a compiled function reaches its modules and
optimizers by (``runtime/rebound_names.py``, ``tests/runtime/test_compiled_rebound_names_vs_torch.py``). Pruning
rounds through ``kiln.compile(model)``: each round registers a new mask buffer, and the compiled forward kept feeding
the first round's masks; it now also guards the parameters, buffers and children the modules register
(then ``runtime/module_structure.py``'s ``ModuleStructure``). Everything else agreed as first written.
"""

from __future__ import annotations

import importlib
import io

import numpy as np
import pytest

import kiln
from e2e import prune_program, swa_sched_program
from e2e.probe_lockstep import assert_same_records, compiled_module_training, run_in_lockstep, snapshot
from oracles import libraries, require_torch


@pytest.fixture(autouse=True)
def torch_prune():
    """``import torch.nn.utils.prune`` (torch does not import it with ``torch.nn.utils``)."""
    require_torch()
    importlib.import_module("torch.nn.utils.prune")


def _lockstep(build, train, **tolerance):
    ours, theirs = run_in_lockstep(build, train)
    assert ours.pop("structure", None) == theirs.pop("structure", None)
    assert ours.pop("dtypes", None) == theirs.pop("dtypes", None)
    assert_same_records(ours, theirs, **tolerance)
    return ours


# --- pruning ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_iterative_prune_and_finetune(float64_default, compiled):
    ours = _lockstep(prune_program.pruned_lenet, prune_program.prune_and_finetune(compiled=compiled))
    assert ours["rounds"][1]["sparsity"][2] > ours["rounds"][0]["sparsity"][2] > 30.0  # fc1: random 30% then global L1


def test_prune_rounds_through_a_compiled_model(float64_default):
    """``kiln.compile(model)`` (torch.compile's spelling of scripts) trained eagerly while each round registers new
    masks on the original module."""
    _lockstep(prune_program.pruned_lenet, compiled_module_training(prune_program.prune_rounds_through_compiled_model()))


def test_pruned_model_through_onnx_export():
    """The pruned LeNet (masks in place, before ``remove``) exported with ``kiln.onnx.export`` and run in onnxruntime
    against torch's forward of its twin. The batch is static: the tutorial's ``x.view(-1, int(x.nelement() /
    x.shape[0]))`` divides by the batch size, which a symbolic batch dim (``dynamic_axes``) refuses at trace time.
    In float32: onnxruntime's CPU Conv has no float64 kernel."""
    onnxruntime = pytest.importorskip("onnxruntime")
    torch = require_torch()

    def build(lib, nn, F):
        model = prune_program.pruned_lenet(lib, nn, F)
        prune_program.prune_round(lib, model, 0)
        return model.eval()

    kiln.manual_seed(0)
    model = build(*libraries("kiln"))
    twin = build(*libraries("torch"))
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    x = prune_program.batch(kiln)[0].float()
    buffer = io.BytesIO()
    kiln.onnx.export(model, (x,), buffer, input_names=["x"], output_names=["logits"])  # static batch: see the docstring
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    want = twin(torch.tensor(x.numpy())).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --- parametrizations -------------------------------------------------------------------------------------------------


def parametrized_net(torch, nn, F):
    parametrize = torch.nn.utils.parametrize

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

    class Positive(nn.Module):
        def forward(self, X):
            return torch.exp(X)

        def right_inverse(self, Y):
            return torch.log(Y)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.sym, self.pos, self.orth = nn.Linear(4, 4), nn.Linear(4, 3), nn.Linear(3, 3)
            self.wn, self.sn = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            for layer in (self.sym, self.pos, self.orth, self.wn):
                x = torch.tanh(layer(x))
            return self.sn(x)

    net = Net()
    parametrize.register_parametrization(net.sym, "weight", Symmetric())
    with torch.no_grad():
        net.pos.weight.abs_().add_(0.1)
    parametrize.register_parametrization(net.pos, "weight", Positive())
    torch.nn.utils.parametrizations.orthogonal(net.orth)
    torch.nn.utils.parametrizations.weight_norm(net.wn)
    torch.nn.utils.parametrizations.spectral_norm(net.sn)
    return net


def parametrized_training(compiled):
    def train(torch, nn, F, model):
        rng = np.random.default_rng(0)
        x, y = torch.tensor(rng.normal(size=(5, 4))), torch.tensor(rng.normal(size=(5, 2)))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

        def step(x, y):
            optimizer.zero_grad()
            with torch.nn.utils.parametrize.cached():
                loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"first": model(x).detach().numpy().copy(), "losses": [run(x, y).item() for _ in range(3)],
                  "state": snapshot(model), "symmetric": model.sym.weight.detach().numpy().copy(),
                  "structure": list(model.state_dict())}
        model.pos.weight = torch.ones(3, 4) * 2.0  # through right_inverse: original = log(2)
        record["assigned"] = model.pos.parametrizations.weight.original.detach().numpy().copy()
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_parametrizations(float64_default, compiled):
    ours = _lockstep(parametrized_net, parametrized_training(compiled))
    np.testing.assert_allclose(ours["symmetric"], ours["symmetric"].T)


# --- SWA and EMA ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_swa_and_ema(float64_default, compiled):
    _lockstep(swa_sched_program.mlp, swa_sched_program.swa_training(compiled=compiled))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_timm_and_foreach_lerp_emas(float64_default, compiled):
    _lockstep(swa_sched_program.mlp, swa_sched_program.timm_style_ema_training(compiled=compiled))


# --- LR schedulers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(swa_sched_program.SCHEDULES))
def test_scheduler_in_a_resumed_loop(float64_default, name):
    _lockstep(swa_sched_program.mlp_layer_norm, swa_sched_program.scheduled_training(name))


@pytest.mark.parametrize("name", ["OneCycleLR linear three_phase", "CosineAnnealingWarmRestarts", "ReduceLROnPlateau",
                                  "CyclicLR momentum"])
def test_scheduler_in_a_resumed_loop_compiled(float64_default, name):
    _lockstep(swa_sched_program.mlp_layer_norm, swa_sched_program.scheduled_training(name, compiled=True))


# --- clipping, vectors, autocast ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_clipping_and_parameter_vectors(float64_default, compiled):
    _lockstep(swa_sched_program.mlp_layer_norm, swa_sched_program.clipped_training(compiled=compiled))


def test_bfloat16_autocast_with_grad_scaler():
    """bfloat16's level: its 8-bit mantissa rounds each op's result (relative 4e-3); the scaler's scales exactly."""
    ours = _lockstep(swa_sched_program.mlp_layer_norm, swa_sched_program.autocast_scaler_training(), rtol=2e-2, atol=2e-3)
    assert ours["scales"] == [256.0, 512.0, 512.0, 1024.0]
