"""``differentiate_outputs``: several (output, seed) pairs differentiated in ONE reverse walk.

Structure: the backward of an op the outputs share is built once, as for one output, where one walk per output
(``differentiate`` k times, what ``kiln.vjp`` and ``kiln.jacrev`` did) builds it k times. Values: against
``torch.autograd.grad(outputs, inputs, grad_outputs)``, torch's own several-output VJP, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import AutodiffError, differentiate, differentiate_outputs
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.types import TensorType
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext
from oracles import require

X, W = np.random.default_rng(0).normal(size=(4, 5)), np.random.default_rng(1).normal(size=(5, 3))
SEEDS = [np.random.default_rng(2 + index).normal(size=shape) for index, shape in enumerate([(4, 3), (), (4, 3)])]


def three_outputs(x, w, F):
    """Three outputs of one matmul: elementwise, reduced, through a softmax."""
    h = x @ w
    return h.tanh(), (h * h).sum(), F.softmax(h, -1)


def backward_of(graph: Graph, op_name: str) -> int:
    """How many ops the VJP rule of ``op_name`` built (autodiff stamps them ``vjp of <op>``)."""
    return sum(1 for op in graph.ops if (op.location or "").startswith(f"vjp of {op_name}"))


def traced(pull):
    """``pull(graph, outputs, wrt, seeds)``'s gradients as the outputs of a graph of ``(x, w)``; returns the graph."""
    with TraceContext("several_outputs") as context:
        x, w = (context.graph.add_input(TensorType(a.shape, "float64"), name) for a, name in ((X, "x"), (W, "w")))
        outputs = [out.value for out in three_outputs(Tensor(x), Tensor(w), F)]
        seeds = [kiln.tensor(seed).value for seed in SEEDS]
        context.graph.outputs = pull(context.graph, outputs, [x, w], seeds)
    return context.graph


def one_walk(graph, outputs, wrt, seeds):
    return differentiate_outputs(graph, outputs, wrt, seeds)


def one_walk_per_output(graph, outputs, wrt, seeds):
    walks = [differentiate(graph, output, wrt, seed=seed) for output, seed in zip(outputs, seeds)]
    return [Tensor(a).value if b is None else (Tensor(a) + Tensor(b) + Tensor(c)).value for a, b, c in zip(*walks)]


def first_output_only(graph, outputs, wrt, seeds):
    return differentiate(graph, outputs[0], wrt, seed=seeds[0])


def test_one_walk_builds_the_shared_backward_once():
    shared = {pull.__name__: backward_of(traced(pull), "tensor.matmul") for pull in (one_walk, one_walk_per_output, first_output_only)}
    assert shared["first_output_only"] > 0
    assert shared == {"first_output_only": shared["first_output_only"], "one_walk": shared["first_output_only"],
                      "one_walk_per_output": 3 * shared["first_output_only"]}
    assert len(traced(one_walk).ops) < len(traced(one_walk_per_output).ops)


def test_one_walk_equals_torch_autograd_grad_with_grad_outputs():
    torch = require("torch")
    got = NumpyBackend().compile(traced(one_walk))(X, W)
    x, w = (torch.tensor(a, requires_grad=True) for a in (X, W))
    expected = torch.autograd.grad(three_outputs(x, w, torch.nn.functional), (x, w), tuple(map(torch.tensor, SEEDS)))
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(NumpyBackend().compile(traced(one_walk_per_output))(X, W)[1], expected[1].numpy(), rtol=1e-12, atol=1e-12)


def test_the_public_products_of_three_outputs_walk_once():
    """kiln.vjp, kiln.jvp and kiln.jacrev of three outputs build the shared matmul's backward as often as of one output
    (and jacrev traces the function once: one forward matmul), in the graphs the tracer records."""
    specs = [kiln.TensorSpec(a.shape, "float64") for a in (X, W, *SEEDS)]

    def vjp(count):
        return lambda x, w, *us: kiln.vjp(lambda x, w: three_outputs(x, w, F)[:count], x, w)[1](us[:count])

    def jvp(count):
        return lambda x, w, *_: kiln.jvp(lambda x, w: three_outputs(x, w, F)[:count], (x, w), (x.sin(), w.cos()))[1]

    def jacrev(count):
        return lambda x, w, *_: kiln.jacrev(lambda x, w: three_outputs(x, w, F)[:count], (0, 1))(x, w)

    for product in (vjp, jvp, jacrev):
        one, three = (kiln.trace(product(count), *specs) for count in (1, 3))
        assert backward_of(one, "tensor.matmul") == backward_of(three, "tensor.matmul") > 0, product.__name__
        forward = [op for op in three.ops if op.name == "tensor.matmul" and not (op.location or "").startswith("vjp of")]
        assert product is not jacrev or len(forward) == 1


def test_the_walk_follows_outputs_through_the_composite_it_expands():
    """Two outputs made by one ``nn.layer_norm_grad`` (a composite without a VJP rule): the walk expands it once and
    both seeds reach the expansion (neither output is aliased first, as the per-output walks needed)."""
    torch = require("torch")
    x, weight, u, v = (np.random.default_rng(seed).normal(size=shape) for seed, shape in enumerate([(3, 4), (4,), (3, 4), (4,)]))
    with TraceContext("layer_norm_hvp") as context:
        inputs = [context.graph.add_input(TensorType(a.shape, "float64"), name) for a, name in ((x, "x"), (weight, "weight"))]
        loss = (F.layer_norm(Tensor(inputs[0]), (4,), Tensor(inputs[1])) ** 3).sum()
        dx, dweight = differentiate(context.graph, loss.value, inputs)
        composite = dx.producer
        assert composite is dweight.producer and composite.name == "nn.layer_norm_grad"
        context.graph.outputs = differentiate_outputs(context.graph, [dx, dweight], inputs, [kiln.tensor(u).value, kiln.tensor(v).value])
    assert composite not in context.graph.ops  # expanded (the walk's own backward of layer_norm makes a new one)
    got = NumpyBackend().compile(context.graph)(x, weight)
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, weight))
    first = torch.autograd.grad((torch.nn.functional.layer_norm(tx, (4,), tw) ** 3).sum(), (tx, tw), create_graph=True)
    expected = torch.autograd.grad(first, (tx, tw), (torch.tensor(u), torch.tensor(v)))
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)
        assert np.abs(ours).max() > 0.1


def test_repeated_unreached_and_input_outputs():
    """An output seeded twice gets the sum; one no ``wrt`` reaches adds nothing; a ``wrt`` itself passes its seed."""
    with TraceContext("seeds") as context:
        x = context.graph.add_input(TensorType((3,), "float64"), "x")
        y = (Tensor(x) * Tensor(x)).value
        constant = kiln.tensor(np.ones(3)).value
        seeds = [kiln.tensor(np.full(3, value)).value for value in (1.0, 2.0, 5.0, 7.0)]
        context.graph.outputs = differentiate_outputs(context.graph, [y, y, constant, x], [x], seeds)
    (got,) = NumpyBackend().compile(context.graph)(np.array([1.0, -2.0, 0.5]))
    np.testing.assert_allclose(got, (1.0 + 2.0) * 2 * np.array([1.0, -2.0, 0.5]) + 7.0, rtol=1e-15)


def test_no_outputs_give_zeros_and_a_scalar_output_defaults_to_a_seed_of_one():
    with TraceContext("defaults") as context:
        x = context.graph.add_input(TensorType((3,), "float64"), "x")
        total = (Tensor(x) * 3.0).sum().value
        context.graph.outputs = [*differentiate_outputs(context.graph, [], [x], []),
                                 *differentiate_outputs(context.graph, [total], [x], [None])]
    none, scalar = NumpyBackend().compile(context.graph)(np.ones(3))
    np.testing.assert_array_equal(none, np.zeros(3))
    np.testing.assert_array_equal(scalar, np.full(3, 3.0))


@pytest.mark.parametrize("seeds, message", [
    ([None], r"floating-point scalar to differentiate, got tensor<3xf64>.*reduce it first \(e\.g\. \.sum\(\)\) or give it a seed"),
    ([np.ones(4)], r"seed of output 0 is tensor<4xf64>, but the output is tensor<3xf64>; a seed .* must have its output's shape and dtype"),
    ([np.ones(3, np.float32)], r"seed of output 0 is tensor<3xf32>, but the output is tensor<3xf64>"),
    ([np.ones(3), np.ones(3)], "needs one seed per output, got 2 for 1 outputs"),
])
def test_bad_seeds_are_refused(seeds, message):
    with TraceContext("bad") as context:
        x = context.graph.add_input(TensorType((3,), "float64"), "x")
        values = [None if seed is None else kiln.tensor(seed).value for seed in seeds]
        with pytest.raises(AutodiffError, match=message):
            differentiate_outputs(context.graph, [(Tensor(x) * 2.0).value], [x], values)
