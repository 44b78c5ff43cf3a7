"""Porting probe: DETR's set prediction (``e2e/detr_program.py``: the Hungarian matcher, SetCriterion with its
``empty_weight`` buffer, L1 + GIoU box losses over ``num_boxes``, the auxiliary losses of every decoder layer, a
two-layer post-norm decoder with learned queries over a small CNN map with the sine position encoding, a padded image
by its mask), written as facebookresearch/detr writes it and trained as its ``engine.py`` does: AdamW with a lower
backbone learning rate in a second param group, ``sum(loss_dict[k] * weight_dict[k] ...)``, ``clip_grad_norm_``.
From kiln's initial weights in float64, kiln and torch agree to 1e-10 on the first outputs, every loss term, the
matched indices, the first gradients and the state after the steps; float32 at float32's level.

The matching calls scipy's ``linear_sum_assignment`` on ``C.cpu()``; scipy is no test dependency (pyproject's test
extra names scikit-learn, which pulls it in, but not scipy itself), so the probe passes a brute-force solver of the
same signature (every injection of the targets into the queries; 60 for 5 queries and 3 targets).

Compiled: ``kiln.compile(model, fullgraph=True)`` in engine.py's loop (the criterion eager, as torch.compile users run
DETR) agrees to 1e-10. The whole step under ``kiln.compile`` runs eagerly, warned, with torch's numbers; with
``fullgraph=True`` it raises at ``generalized_box_iou``'s ``assert (boxes1[:, 2:] >= boxes1[:, :2]).all()``, naming
the line. What is missing for one graph: torch.compile turns an ``assert`` on a tensor into ``torch._assert_async``
(checked when the graph runs) where kiln's ``Tensor.__bool__`` refuses it at trace time; the matcher itself (values
through ``C.cpu()`` into a CPU solver) is a graph break in torch.compile too.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import kiln
from e2e.detr_program import detr_program
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

IMAGES, SIZE = 2, 16


def linear_sum_assignment(cost_matrix):
    """scipy.optimize.linear_sum_assignment for a tall matrix, by brute force: row indices ascending, their columns."""
    cost = np.asarray(cost_matrix)
    rows, cols = cost.shape
    best = min(itertools.permutations(range(rows), cols), key=lambda picked: cost[list(picked), range(cols)].sum())
    order = np.argsort(best)
    return np.asarray(best)[order], np.arange(cols)[order]


def detr_with(position_dtype):
    def detr(torch, nn, F):
        DETR, build_criterion, _, _ = detr_program(torch, nn, F, linear_sum_assignment, position_dtype)
        model = DETR()
        model.criterion = build_criterion()
        return model

    return detr


POSITION_DTYPES = {"float32 sine encoding (as DETR writes it)": lambda torch: torch.float32,
                   "float64 sine encoding": lambda torch: torch.float64}
FLOAT32_ENCODING = dict(rtol=1e-7, atol=1e-9)


def _data(steps):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((IMAGES, 3, SIZE, SIZE))
    mask = np.zeros((IMAGES, SIZE, SIZE), dtype=bool)
    mask[1, :, 12:] = True  # the second image padded on the right, as NestedTensor pads
    centres, sizes = rng.uniform(0.3, 0.7, (steps, 5, 2)), rng.uniform(0.1, 0.4, (steps, 5, 2))
    boxes = np.concatenate([centres, sizes], axis=-1)
    labels = rng.integers(0, 3, (steps, 5))
    counts = [(2, 3), (3, 1), (1, 2)][:steps]
    return images, mask, boxes, labels, counts


def _targets(torch, boxes, labels, counts):
    start, targets = 0, []
    for count in counts:
        targets.append({"labels": torch.tensor(labels[start:start + count]),
                        "boxes": torch.tensor(boxes[start:start + count], dtype=torch.get_default_dtype())})
        start += count
    return targets


def _optimizer(torch, model):
    param_dicts = [
        {"params": [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]},
        {"params": [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad], "lr": 1e-4},
    ]
    return torch.optim.AdamW(param_dicts, lr=1e-3, weight_decay=1e-4)


def _values(loss_dict):
    return {k: v.item() for k, v in loss_dict.items()}


def train_detr(steps=3, max_norm=0.1):
    images, mask, boxes, labels, counts = _data(steps)

    def train(torch, nn, F, model):
        criterion, optimizer = model.criterion, _optimizer(torch, model)
        samples, padding = torch.tensor(images, dtype=torch.get_default_dtype()), torch.tensor(mask)
        record = {"losses": [], "loss_dicts": {}, "indices": {}}
        for step in range(steps):
            targets = _targets(torch, boxes[step], labels[step], counts[step])
            outputs = model(samples, padding)
            loss_dict = criterion(outputs, targets)
            weight_dict = criterion.weight_dict
            losses = sum(loss_dict[k] * weight_dict[k] for k in loss_dict.keys() if k in weight_dict)
            optimizer.zero_grad()
            losses.backward()
            if step == 0:
                record["outputs"] = {k: array(v) for k, v in outputs.items() if k != "aux_outputs"}
                record["aux"] = {f"layer {i}": {k: array(v) for k, v in aux.items()}
                                 for i, aux in enumerate(outputs["aux_outputs"])}
                record["grads"] = gradients(model)
            if max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            record["losses"].append(losses.item())
            record["loss_dicts"][f"step {step}"] = _values(loss_dict)
            indices = criterion.matcher(outputs, targets)
            assert all(i.dtype == torch.int64 for pair in indices for i in pair)
            record["indices"][f"step {step}"] = {f"image {b}": np.concatenate([array(i), array(j)])
                                                 for b, (i, j) in enumerate(indices)}
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("position", POSITION_DTYPES)
def test_detr_trains_as_torch(position, float64_default):
    """DETR's sine encoding is float32 even in a float64 model: NumPy's float32 ``cos`` and torch's differ by one ulp
    on a few angles (each within an ulp of the true value, neither always the nearest), ~6e-8 that reaches the
    outputs as ~5e-9 relative; with a float64 encoding everything agrees to 1e-10."""
    ours, theirs = run_in_lockstep(detr_with(POSITION_DTYPES[position]), train_detr())
    assert_same_records(ours, theirs, **(FLOAT32_ENCODING if "float32" in position else {}))


def train_detr_compiled_step(steps=2, max_norm=0.1):
    """The whole engine step (forward, criterion with its matcher, backward, clipping, AdamW) under ``kiln.compile``:
    the matcher reads the cost matrix's values (``C.cpu()`` into the solver) and ``generalized_box_iou`` asserts on
    tensor values, so the step cannot be one graph; kiln runs it eagerly, warned, and must still give torch's numbers."""
    images, mask, boxes, labels, counts = _data(steps)

    def train(torch, nn, F, model):
        criterion, optimizer = model.criterion, _optimizer(torch, model)

        def train_step(samples, padding, targets):
            loss_dict = criterion(model(samples, padding), targets)
            losses = sum(loss_dict[k] * criterion.weight_dict[k] for k in loss_dict if k in criterion.weight_dict)
            optimizer.zero_grad()
            losses.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            return losses

        run = kiln.compile(train_step) if torch is kiln else train_step
        samples, padding = torch.tensor(images, dtype=torch.get_default_dtype()), torch.tensor(mask)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [run(samples, padding, _targets(torch, boxes[s], labels[s], counts[s])).item() for s in range(steps)]
        if torch is kiln:
            assert any("runs eagerly" in str(w.message) for w in caught)
        return {"losses": losses, "state": snapshot(model)}

    return train


def train_detr_compiled_model(steps=2, max_norm=0.1):
    """engine.py's loop with ``model = torch.compile(model, fullgraph=True)``: the forward (backbone, sine encoding of
    the interpolated mask, decoder, heads, the aux outputs as a list of dicts) is one graph; the criterion eager."""
    images, mask, boxes, labels, counts = _data(steps)

    def train(torch, nn, F, model):
        criterion, optimizer = model.criterion, _optimizer(torch, model)
        compiled = kiln.compile(model, fullgraph=True) if torch is kiln else model
        samples, padding = torch.tensor(images, dtype=torch.get_default_dtype()), torch.tensor(mask)
        record = {"losses": []}
        for step in range(steps):
            targets = _targets(torch, boxes[step], labels[step], counts[step])
            loss_dict = criterion(compiled(samples, padding), targets)
            losses = sum(loss_dict[k] * criterion.weight_dict[k] for k in loss_dict if k in criterion.weight_dict)
            optimizer.zero_grad()
            losses.backward()
            record.setdefault("grads", gradients(model))
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            record["losses"].append(losses.item())
        record["state"] = snapshot(model)
        return record

    return train


def test_detr_trains_as_torch_in_float32():
    """DETR trains in float32 (the default dtype here): the same matches, and values at float32's level."""
    ours, theirs = run_in_lockstep(detr_with(POSITION_DTYPES["float32 sine encoding (as DETR writes it)"]), train_detr())
    assert_same_records(ours, theirs, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("compiled", ["whole step", "model"])
def test_detr_compiled_as_torch(compiled, float64_default):
    train = train_detr_compiled_step() if compiled == "whole step" else train_detr_compiled_model()
    ours, theirs = run_in_lockstep(detr_with(POSITION_DTYPES["float64 sine encoding"]), train)
    assert_same_records(ours, theirs)


def test_detr_whole_step_fullgraph_names_the_assert(float64_default):
    """``fullgraph=True`` refuses the step at the first value-dependent line: generalized_box_iou's assert."""
    model = detr_with(POSITION_DTYPES["float64 sine encoding"])(kiln, kiln.nn, kiln.nn.functional)
    images, mask, boxes, labels, counts = _data(1)

    @kiln.compile(fullgraph=True)
    def train_step(samples, padding, targets):
        loss_dict = model.criterion(model(samples, padding), targets)
        return sum(loss_dict[k] * model.criterion.weight_dict[k] for k in model.criterion.weight_dict)

    with pytest.raises(kiln.TraceError, match=r"detr_program.py:\d+ in generalized_box_iou: assert"):
        train_step(kiln.tensor(images), kiln.tensor(mask), _targets(kiln, boxes[0], labels[0], counts[0]))
