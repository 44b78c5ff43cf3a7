"""Lockstep runs for the porting probes: one program text (functions taking ``lib, nn, F``) run on kiln, then on
PyTorch from kiln's initial state, each returning a record to compare (first forward, first gradients, losses, the
state after the steps)."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

import kiln
from oracles import libraries


def array(tensor: Any) -> np.ndarray:
    """A copy of a kiln or torch tensor's values (a sparse one's dense form)."""
    return np.array((tensor.to_dense() if tensor.is_sparse else tensor).detach().numpy())


def kiln_form(tensor: Any) -> Any:
    """A torch complex parameter, state entry or gradient as kiln keeps them: its ``view_as_real`` pairs (see
    ``frontend/complex_parameter.py``); anything else as it is."""
    if type(tensor).__module__.split(".")[0] != "torch" or not tensor.is_complex():
        return tensor
    return sys.modules["torch"].view_as_real(tensor)


def snapshot(module: Any) -> dict[str, np.ndarray]:
    """The module's state_dict as arrays (a complex entry as its real pairs, kiln's form)."""
    return {name: array(kiln_form(value)) for name, value in module.state_dict().items()}


def gradients(module: Any) -> dict[str, np.ndarray]:
    """Each parameter's ``.grad`` by name (the ones that have one; a complex one as its real pairs, kiln's form)."""
    return {name: array(kiln_form(p.grad)) for name, p in module.named_parameters() if p.grad is not None}


def loaded_state(lib: Any, model: Any, initial: dict[str, np.ndarray]) -> dict[str, Any]:
    """``initial`` (kiln's snapshot) as ``lib``'s tensors for ``model.load_state_dict``: real pairs read as complex
    numbers where torch's entry is complex."""
    current = model.state_dict()
    return {key: lib.view_as_complex(lib.tensor(value)) if lib is not kiln and current[key].is_complex()
            else lib.tensor(value) for key, value in initial.items()}


def run_in_lockstep(build: Callable[..., Any], train: Callable[..., dict[str, Any]], seed: int = 0) -> tuple[dict, dict]:
    """``train(lib, nn, F, build(lib, nn, F))`` on kiln then on torch, torch's model loaded with kiln's initial
    state_dict (so both start from kiln's initialisation, drawn after ``kiln.manual_seed(seed)``)."""
    kiln.manual_seed(seed)
    records, initial = [], None
    for name in ("kiln", "torch"):
        lib, nn, F = libraries(name)
        model = build(lib, nn, F)
        if initial is None:
            initial = snapshot(model)
        else:
            assert set(snapshot(model)) == set(initial), "the two libraries name the model's state differently"
            model.load_state_dict(loaded_state(lib, model, initial))
        records.append(train(lib, nn, F, model))
    return records[0], records[1]


def assert_same_records(ours: Any, theirs: Any, rtol: float = 1e-10, atol: float = 1e-12, where: str = "",
                        looser: dict[str, dict[str, float]] | None = None) -> None:
    """Every array, number and nested entry of the two records close; ``looser`` gives other tolerances to the entries
    whose path contains a key (``{"in_proj_bias": dict(atol=1e-10)}``)."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), f"{where}: keys differ: {set(ours) ^ set(theirs)}"
        for key in theirs:
            assert_same_records(ours[key], theirs[key], rtol, atol, f"{where}/{key}", looser)
        return
    tolerance = dict(rtol=rtol, atol=atol)
    for key, other in (looser or {}).items():
        if key in where:
            tolerance = other
    np.testing.assert_allclose(np.asarray(ours, np.float64), np.asarray(theirs, np.float64), **tolerance, err_msg=where)


def assert_same_choices(ours: np.ndarray, theirs_scores: np.ndarray, axis: int, margin: float) -> None:
    """``ours`` (an argmax along ``axis``) equal to the argmax of torch's ``theirs_scores`` wherever torch's best score
    leads the runner-up by more than ``margin``: a near tie may go either way with rounding (float32 logits a few ulps
    apart), so it is compared through the scores (which ``assert_same_records`` checks) and not through the choice."""
    ordered = np.sort(theirs_scores, axis=axis)
    lead = np.take(ordered, -1, axis=axis) - np.take(ordered, -2, axis=axis)
    decided = lead > margin
    expected = np.argmax(theirs_scores, axis=axis)
    assert decided.mean() > 0.9, f"only {decided.mean():.1%} of the choices lead by more than {margin}"
    np.testing.assert_array_equal(np.asarray(ours)[decided], expected[decided])


def compiled_step_training(make_batch: Callable[[Any], tuple], make_optimizer: Callable[[Any, Any], Any],
                           loss_of: Callable[..., Any], steps: int = 3) -> Callable[..., dict[str, Any]]:
    """A ``train`` for ``run_in_lockstep`` whose whole step (zero_grad, loss, backward, optimizer step) is one
    ``kiln.compile(fullgraph=True)`` graph in kiln (no eager fallback) and PyTorch's eager loop in torch:
    ``loss_of(lib, nn, F, model, *batch)``."""

    def train(lib: Any, nn: Any, F: Any, model: Any) -> dict[str, Any]:
        optimizer, batch = make_optimizer(lib, model), make_batch(lib)

        def step(*batch: Any) -> Any:
            optimizer.zero_grad()
            loss = loss_of(lib, nn, F, model, *batch)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        return {"losses": [run(*batch).item() for _ in range(steps)], "state": snapshot(model)}

    return train


def compiled_module_training(train: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``train`` (a ``run_in_lockstep`` one) given kiln's model as ``kiln.compile(model, fullgraph=True)``, as torch 2.x
    code writes ``model = torch.compile(model)`` before its eager loop (a forward that cannot be traced raises rather
    than running eagerly), and torch's model as it is."""

    def train_compiled(lib: Any, nn: Any, F: Any, model: Any) -> dict[str, Any]:
        return train(lib, nn, F, kiln.compile(model, fullgraph=True) if lib is kiln else model)

    return train_compiled


def split_key_bias(record: dict[str, Any], suffix: str = "in_proj_bias") -> dict[str, Any]:
    """The record with each ``state`` entry named ``...<suffix>`` (``nn.MultiheadAttention``'s ``in_proj_bias``, GPT-2's
    ``attn.c_attn.bias``: query, key and value biases in thirds) split into its key third (``... key bias``) and the
    rest (``...<suffix> (query, value)``). The key bias adds ``q . b_k`` to every score of a query alike, so softmax
    cancels it: its gradient is rounding noise (1e-18 in float64), which Adam with a small eps turns into steps of
    ~1e-12 to 1e-10 in float64 and up to lr in float32, differently in each library. Compare the key bias looser
    (``looser={"key bias": ...}``) and keep the query and value thirds tight."""
    state = dict(record["state"])
    for name in [name for name in state if name.endswith(suffix)]:
        bias = state.pop(name)
        third = len(bias) // 3
        state[name + " (query, value)"] = np.concatenate([bias[:third], bias[2 * third:]])
        state[name[:-len(suffix)] + "key bias"] = bias[third:2 * third]
    return {**record, "state": state}
