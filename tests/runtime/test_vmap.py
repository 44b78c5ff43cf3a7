"""``kiln.vmap``: batched graphs against torch.func.vmap (float64) and a Python loop over the examples.

Each function is written once against the torch-like API both libraries share (``make(lib, F)``), so torch.func runs
the same code; the loop calls the unbatched kiln function on each example. ``ops`` names the per-example ops a case is
there to exercise: the test checks the trace holds them, so a frontend change cannot quietly skip a batching rule.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as KF
from oracles import require_torch

torch = require_torch()
TF = torch.nn.functional
TIGHT = dict(rtol=1e-12, atol=1e-12)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def per_example(args, in_axes, index):
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    return [a if axis is None else np.take(a, index, axis=axis) for a, axis in zip(args, axes)]


def looped(fn, args, in_axes=0, out_axes=0):
    """The oracle without batching: the unbatched function compiled and called on each example, stacked."""
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    size = next(a.shape[axis] for a, axis in zip(args, axes) if axis is not None)
    compiled = kiln.compile(fn, batch_dim=None)
    results = [compiled(*per_example(args, in_axes, i)) for i in range(size)]
    if isinstance(results[0], tuple):
        return tuple(np.stack(parts, axis=out_axes) for parts in zip(*results))
    return np.stack(results, axis=out_axes)


def assert_close(got, expected):
    if isinstance(got, tuple):
        assert isinstance(expected, tuple) and len(got) == len(expected)
        return [assert_close(ours, theirs) for ours, theirs in zip(got, expected)]
    expected = expected.numpy() if isinstance(expected, torch.Tensor) else expected
    np.testing.assert_allclose(got, expected, **TIGHT)


def traced_ops(fn, args, in_axes=0) -> set[str]:
    example = per_example(args, in_axes, 0)
    graph = kiln.trace(fn, *[kiln.TensorSpec(np.shape(a), np.asarray(a).dtype) for a in example])
    return {op.name for op in graph.ops}


def check(make, args, in_axes=0, out_axes=0, ops=()):
    ours, theirs = make(kiln, KF), make(torch, TF)
    got = kiln.vmap(ours, in_axes, out_axes)(*args)
    expected = torch.func.vmap(theirs, in_dims=in_axes, out_dims=out_axes)(*[torch.from_numpy(np.asarray(a)) for a in args])
    assert_close(got, expected)
    assert_close(got, looped(ours, args, in_axes, out_axes))
    assert set(ops) <= traced_ops(ours, args, in_axes), traced_ops(ours, args, in_axes)
    return got


def test_elementwise_with_in_axes_none_0_and_1_and_out_axes_1():
    x, y, z = rng().normal(size=(4, 3)), rng(1).normal(size=(3,)), rng(2).normal(size=(3, 4))

    def make(lib, F):
        return lambda x, y, z: (x * y).tanh() + z.exp() / (1 + y * y) - lib.maximum(x, z).sigmoid() ** 2

    got = check(make, (x, y, z), in_axes=(0, None, 1), out_axes=1)
    assert got.shape == (3, 4)


def test_unbatched_result_is_repeated_along_the_batch_axis():
    x, w = rng().normal(size=(5, 2)), rng(1).normal(size=(3,))
    got = check(lambda lib, F: (lambda x, w: (w.exp(), x.sum())), (x, w), in_axes=(0, None))
    assert got[0].shape == (5, 3) and np.all(got[0] == np.exp(w))


@pytest.mark.parametrize("name", ["neg", "exp", "log", "tanh", "sigmoid", "relu", "sqrt", "abs", "erf", "rsqrt", "sin",
                                  "cos", "floor", "ceil", "round"])
def test_every_unary_elementwise_op(name):
    x = np.abs(rng().normal(size=(3, 4))) + 0.5
    check(lambda lib, F: (lambda x: getattr(x, name)() * 2), (x,), ops=[f"tensor.{name}"])


def test_comparisons_where_cast_clip_and_constants():
    x, y = rng().normal(size=(4, 3)), rng(1).normal(size=(3, 4))

    def make(lib, F):
        def fn(x, y):
            picked = lib.where((x > y) | (x <= 0.1) & (x != y), x, y * lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64))
            return picked.clamp(-0.5, 0.7) + (x >= y).double() - (x < y).to(lib.float64) + lib.minimum(x, y) / 3
        return fn

    check(make, (x, y), in_axes=(0, 1), ops=["tensor.where", "tensor.cast", "tensor.constant", "tensor.clip"])


def test_nested_vmap_pairwise_distances():
    a, b = rng().normal(size=(4, 3)), rng(1).normal(size=(5, 3))

    def distances(vmap):
        def distance(u, v):
            return ((u - v) ** 2).sum().sqrt()
        return vmap(vmap(distance, (None, 0)), (0, None))

    got = distances(kiln.vmap)(a, b)
    np.testing.assert_allclose(got, np.linalg.norm(a[:, None] - b[None], axis=-1), **TIGHT)
    np.testing.assert_allclose(got, distances(torch.func.vmap)(torch.tensor(a), torch.tensor(b)).numpy(), **TIGHT)
    def closed_over(a, b):  # the inner function reads the outer one's u and the outer graph's b
        return kiln.vmap(lambda u: kiln.vmap(lambda v: ((u - v) ** 2).sum().sqrt())(b))(a)

    closed_over = kiln.compile(closed_over, batch_dim=None)
    np.testing.assert_allclose(closed_over(a, b), got, **TIGHT)


MATMULS = {
    "vector @ shared matrix": ((6, 3), (3, 4), (0, None)),
    "matrix @ matrix, both batched": ((6, 2, 3), (6, 3, 4), (0, 0)),
    "shared matrix @ vector": ((2, 3), (3, 6), (None, 1)),
    "vector . vector": ((6, 3), (6, 3), (0, 0)),
    "shared vector @ batched matrix": ((3,), (6, 3, 2), (None, 0)),
    "batched 3-d @ shared matrix": ((6, 5, 2, 3), (3, 4), (0, None)),
    "matrix @ shared stack of matrices": ((6, 2, 3), (5, 3, 4), (0, None)),
    "shared stack of matrices @ matrix": ((5, 2, 3), (3, 4, 6), (None, 2)),
}


@pytest.mark.parametrize("case", MATMULS)
def test_matmul(case):
    a_shape, b_shape, in_axes = MATMULS[case]
    a, b = rng().normal(size=a_shape), rng(1).normal(size=b_shape)
    check(lambda lib, F: (lambda a, b: a @ b), (a, b), in_axes, ops=["tensor.matmul"])


def test_reductions_shift_their_axes():
    x = rng().normal(size=(4, 3, 5))

    def make(lib, F):
        return lambda x: (x.sum() + x.mean(-1, keepdim=True) * x.amax(0) - x.amin((0, 1)) + x.prod(1).sum(0)).sum(-1)

    check(make, (x,), in_axes=1, ops=["tensor.reduce_sum", "tensor.reduce_mean", "tensor.reduce_max", "tensor.reduce_min",
                                      "tensor.reduce_prod"])


def test_argmax_cumsum_cumprod_argsort_and_softmaxes():
    x = rng().normal(size=(4, 3, 5))

    def make(lib, F):
        def fn(x):
            order = x.argsort(0).double() + x.argmax(-1, keepdim=True).double()
            return x.cumsum(1) + x.cumprod(-1) + order + F.softmax(x, dim=0) - F.log_softmax(x, dim=-1)
        return fn

    ops = ["tensor.argsort", "tensor.argmax", "tensor.cumsum", "tensor.cumprod", "nn.softmax", "nn.log_softmax"]
    check(make, (x,), in_axes=2, ops=ops)


def test_movement_ops():
    x, y = rng().normal(size=(4, 2, 3)), rng(1).normal(size=(3, 2))

    def make(lib, F):
        def fn(x, y):
            joined = lib.cat([x, y.t(), x[:, 1:3:2]], dim=-1)  # (2, 7)
            moved = F.pad(joined.permute(1, 0), (1, 2)).reshape(-1, 5)  # (7, 5) -> (7, 5)
            spread = joined.unsqueeze(0).expand(3, 2, 7)
            return moved.sum(0) + spread.reshape(6, 7).triu().sum(1)[1:6] + joined.flatten()[:5]
        return fn

    check(make, (x, y), in_axes=(0, None), ops=["tensor.concat", "tensor.slice", "tensor.transpose", "tensor.pad",
                                                "tensor.reshape", "tensor.expand_dims", "tensor.broadcast_to", "tensor.triu"])


def test_squeeze():
    x = rng().normal(size=(1, 3, 4))
    check(lambda lib, F: (lambda x: x.squeeze(0) * 2), (x,), in_axes=1, ops=["tensor.squeeze"])


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0), (1, 0)])
def test_take_with_batched_and_shared_tables_and_indices(in_axes):
    table = rng().normal(size=(3, 5, 4))
    indices = np.array([[4, 0, 2], [1, 1, 3], [0, -1, 2]])
    table = table if in_axes[0] is not None else table[0]
    table = np.moveaxis(table, 0, 1) if in_axes[0] == 1 else table
    indices = indices if in_axes[1] is not None else indices[0]
    check(lambda lib, F: (lambda t, i: t.index_select(0, i % 5) * 2), (table, indices), in_axes, ops=["tensor.take"])


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0)])
def test_gathered_rows_gradient_is_a_batched_scatter_add(in_axes):
    table = rng().normal(size=(3, 5, 4))
    indices = np.array([[4, 0, 4], [1, 1, 3], [0, 2, 2]])
    table, indices = (table if in_axes[0] is not None else table[0]), (indices if in_axes[1] is not None else indices[0])

    def loss(t, i):
        return (t.index_select(0, i).tanh() * t.index_select(0, i)).sum()

    got = kiln.vmap(kiln.grad(loss), in_axes)(table, indices)
    expected = torch.func.vmap(torch.func.grad(loss), in_axes)(torch.tensor(table), torch.tensor(indices))
    np.testing.assert_allclose(got, expected.numpy(), **TIGHT)
    assert "tensor.scatter_add" in {op.name for op in kiln.trace(kiln.grad(loss), kiln.TensorSpec((5, 4), "f64"),
                                                                     kiln.TensorSpec((3,), "i64")).ops}


def test_one_hot_of_batched_labels():
    labels = np.array([[0, 3], [2, 2], [1, 0]])
    check(lambda lib, F: (lambda y: F.one_hot(y, 4).double() * 3), (labels,), ops=["tensor.one_hot"])


def test_layer_norm_cross_entropy_and_attention_forward():
    x, w, bias = rng().normal(size=(3, 4, 6)), rng(1).normal(size=(6,)), rng(2).normal(size=(6,))
    labels = np.array([[0, 5, 2, 1], [3, 3, 0, 4], [1, 2, 5, 5]])

    def make(lib, F):
        def fn(x, y, w, bias):
            h = F.layer_norm(x, (6,), w, bias)
            attended = F.scaled_dot_product_attention(h, x, x, is_causal=True)
            smoothed = F.cross_entropy(x, y, label_smoothing=0.1)
            return F.cross_entropy(attended, y) + F.cross_entropy(h, y, reduction="sum") + smoothed
        return fn

    check(make, (x, labels, w, bias), in_axes=(0, 0, None, None),
          ops=["nn.layer_norm", "nn.scaled_dot_product_attention", "nn.cross_entropy"])


def test_cross_entropy_ignore_index_probabilities_and_class_weights():
    x, probabilities = rng().normal(size=(3, 4, 5)), rng(1).dirichlet(np.ones(5), size=(3, 4))
    labels, weight = np.array([[0, -100, 2, 1], [-100, -100, 0, 4], [1, 2, 4, 3]]), rng(2).uniform(0.5, 1.5, size=5)

    def make(lib, F):
        w = weight if lib is kiln else torch.tensor(weight)  # kiln takes a class weight as a constant array

        def fn(x, y, p):
            per_sample = F.cross_entropy(x, y, reduction="none")
            return per_sample.sum() + F.cross_entropy(x, y) + F.cross_entropy(x, p) + F.cross_entropy(x, y, weight=w)
        return fn

    check(make, (x, labels, probabilities))


# --- models ----------------------------------------------------------------------------------------------------------


def mlp_params(seed=0):
    r = rng(seed)
    return [r.normal(size=(8, 5)) * 0.5, r.normal(size=(8,)) * 0.1, r.normal(size=(3, 8)) * 0.5, r.normal(size=(3,)) * 0.1]


def make_mlp_loss(F):
    def loss(w1, b1, w2, b2, x, y):
        hidden = F.gelu(F.linear(x, w1, b1)).tanh()
        logits = F.linear(hidden, w2, b2)
        return F.cross_entropy(logits.unsqueeze(0), y.unsqueeze(0))
    return loss


def test_mlp_per_example_gradients_match_torch_func():
    params, x, y = mlp_params(), rng(1).normal(size=(6, 5)), np.array([0, 2, 1, 1, 0, 2])
    in_axes = (None,) * 4 + (0, 0)
    got = kiln.vmap(kiln.grad(make_mlp_loss(KF), argnums=(0, 1, 2, 3)), in_axes=in_axes)(*params, x, y)
    expected = torch.func.vmap(torch.func.grad(make_mlp_loss(TF), argnums=(0, 1, 2, 3)), in_dims=in_axes)(
        *[torch.tensor(a) for a in (*params, x, y)])
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs.numpy(), **TIGHT)
    single = kiln.grad(make_mlp_loss(KF), argnums=(0, 1, 2, 3))(*params, x[2], y[2])
    for ours, one in zip(got, single):
        np.testing.assert_allclose(ours[2], one, **TIGHT)


def attention_block(F, x, wq, wk, wv, w, bias):
    q, k, v = x @ wq, x @ wk, x @ wv
    scores = (q @ k.transpose(-1, -2)) / np.sqrt(q.shape[-1])
    mixed = F.softmax(scores, dim=-1) @ v
    return F.layer_norm(mixed + x, (x.shape[-1],), w, bias)


def attention_params(seed=0):
    r = rng(seed)
    return [r.normal(size=(4, 4)) * 0.5 for _ in range(3)] + [r.normal(size=(4,)), r.normal(size=(4,))]


def test_tiny_attention_forward_and_per_example_gradients():
    params, xs = attention_params(), rng(1).normal(size=(3, 5, 4))
    in_axes = (0,) + (None,) * 5
    check(lambda lib, F: (lambda *a: attention_block(F, *a)), (xs, *params), in_axes, ops=["nn.softmax", "nn.layer_norm"])

    def loss(F):
        return lambda *a: (attention_block(F, *a) ** 2).mean()

    got = kiln.vmap(kiln.grad(loss(KF), argnums=(1, 2, 3, 4, 5)), in_axes)(xs, *params)
    per_example = torch.func.vmap(torch.func.grad(loss(TF), argnums=(1, 2, 3, 4, 5)), in_dims=in_axes)
    expected = per_example(*map(torch.tensor, (xs, *params)))
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs.numpy(), **TIGHT)


def test_grad_of_a_function_that_uses_vmap():
    params, x, y = mlp_params(), rng(1).normal(size=(6, 5)), np.array([0, 2, 1, 1, 0, 2])

    def mean_loss(F, vmap):
        per_example = make_mlp_loss(F)
        return lambda *p: vmap(per_example, (None,) * 4 + (0, 0))(*p, x_of(F), y_of(F)).mean()

    def x_of(F):
        return kiln.tensor(x) if F is KF else torch.tensor(x)

    def y_of(F):
        return kiln.tensor(y) if F is KF else torch.tensor(y)

    got = kiln.grad(mean_loss(KF, kiln.vmap), argnums=(0, 1, 2, 3))(*params)
    expected = torch.func.grad(mean_loss(TF, torch.func.vmap), argnums=(0, 1, 2, 3))(*map(torch.tensor, params))
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs.numpy(), **TIGHT)


def test_vmap_of_a_module_inside_kiln_compile_with_a_symbolic_batch():
    kiln.manual_seed(0)
    model = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.Tanh(), kiln.nn.Linear(4, 2)).double()
    compiled = kiln.compile(lambda xs: kiln.vmap(model)(xs))
    for batch in (5, 7):
        xs = rng(batch).normal(size=(batch, 3))
        one_by_one = kiln.compile(model, batch_dim=None)
        np.testing.assert_allclose(compiled(xs), np.stack([one_by_one(x) for x in xs]), **TIGHT)
    assert compiled.graph.inputs[0].type.shape == ("N", 3)


def test_batched_graphs_verify_and_keep_a_symbolic_batch():
    from kiln.compiler.ir.verifier import verify

    def loss(w, x, y):
        return KF.cross_entropy((x @ w).unsqueeze(0), y.unsqueeze(0))

    specs = kiln.TensorSpec((3, 4), "f64"), kiln.TensorSpec(("N", 3), "f64"), kiln.TensorSpec(("N",), "i64")
    graph = kiln.trace(kiln.vmap(kiln.grad(loss), (None, 0, 0)), *specs)
    verify(graph)  # use lists exact too: the per-example graphs' reads of outer values are dropped
    assert graph.outputs[0].type.shape == ("N", 3, 4)
    nested = kiln.trace(lambda a, b: kiln.vmap(lambda u: kiln.vmap(lambda v: u * v)(b))(a), *specs[1:2] * 2)
    verify(nested)


def test_identity_and_negative_out_axes():
    x = rng().normal(size=(2, 3, 4))
    np.testing.assert_array_equal(kiln.vmap(lambda a: a, in_axes=1, out_axes=-1)(x), np.moveaxis(x, 1, -1))


def test_nested_tuple_arguments_and_results():
    x, (w, b) = rng().normal(size=(4, 3)), (rng(1).normal(size=(3,)), rng(2).normal(size=(2, 4)))
    got = kiln.vmap(lambda x, wb: (x * wb[0], (wb[1].sum(),)), in_axes=(0, (None, 1)))(x, (w, b))
    np.testing.assert_allclose(got[0], x * w, **TIGHT)
    np.testing.assert_allclose(got[1][0], b.sum(0), **TIGHT)


def small_cnn(F, x, w1, w2):
    h = F.max_pool2d(F.conv2d(x, w1, padding=1).relu(), 2)
    return F.avg_pool2d(F.conv2d(h, w2, groups=2), 2).tanh()


def cnn_params(seed=0):
    return [rng(seed).normal(size=(4, 2, 3, 3)) * 0.3, rng(seed + 1).normal(size=(4, 2, 3, 3)) * 0.3]


def test_convolution_and_pooling_with_shared_and_per_example_weights():
    images, (w1, w2) = rng().normal(size=(3, 2, 2, 8, 8)), cnn_params()
    ops = ["tensor.conv2d", "tensor.max_pool2d", "tensor.avg_pool2d"]
    check(lambda lib, F: (lambda x, a, b: small_cnn(F, x, a, b)), (images, w1, w2), (0, None, None), ops=ops)
    per_example = np.stack([w1, w1 * 0.5, -w1])
    check(lambda lib, F: (lambda x, a, b: small_cnn(F, x, a, b)), (images, per_example, w2), (0, 0, None))


def test_cnn_per_example_gradients_match_torch_func():
    images, params = rng().normal(size=(3, 2, 2, 8, 8)), cnn_params()
    in_axes = (0, None, None)

    def loss(F):
        return lambda x, w1, w2: (small_cnn(F, x, w1, w2) ** 2).sum()

    got = kiln.vmap(kiln.grad(loss(KF), argnums=(0, 1, 2)), in_axes)(images, *params)
    expected = torch.func.vmap(torch.func.grad(loss(TF), argnums=(0, 1, 2)), in_axes)(*map(torch.tensor, (images, *params)))
    assert_close(got, expected)
    backward = {"tensor.conv2d_weight_grad", "tensor.conv2d_input_grad", "tensor.max_pool2d_grad", "tensor.avg_pool2d_grad"}
    assert backward <= traced_ops(kiln.grad(loss(KF), argnums=(0, 1, 2)), (images, *params), in_axes)


# --- errors ----------------------------------------------------------------------------------------------------------


def test_an_op_without_a_rule_names_the_op_and_the_users_line(monkeypatch):
    from kiln.compiler.batching import BATCHING_RULES

    monkeypatch.delitem(BATCHING_RULES, "tensor.cumsum")

    def running(x):
        return x.cumsum(0)  # the line the error names

    expected = r"(?s)no batching rule for 'tensor\.cumsum'.*test_vmap\.py:\d+ in running.*batching_rule"
    with pytest.raises(kiln.TraceError, match=expected):
        kiln.vmap(running)(np.ones((2, 3)))


def test_bad_in_axes_and_batch_sizes_are_refused_clearly():
    x, y = np.ones((3, 2)), np.ones((4, 2))
    with pytest.raises(kiln.TraceError, match="different batch sizes: input 0 has 3 along axis 0, input 1 has 4"):
        kiln.vmap(lambda a, b: a + b)(x, y)
    with pytest.raises(kiln.TraceError, match="batch axis 2, which it does not have"):
        kiln.vmap(lambda a: a, in_axes=2)(x)
    with pytest.raises(kiln.TraceError, match=r"in_axes=\(0,\) has 1 entries for 2 items"):
        kiln.vmap(lambda a, b: a + b, in_axes=(0,))(x, x)
    with pytest.raises(kiln.TraceError, match="at least one input with a batch axis"):
        kiln.vmap(lambda a: a, in_axes=None)(x)
    with pytest.raises(kiln.TraceError, match="out_axes must be an int"):
        kiln.vmap(lambda a: a, out_axes=(0,))


def test_random_ops_are_refused_as_jax_randomness_error():
    with pytest.raises(kiln.TraceError, match=r"(?s)does not batch random ops \(test_vmap\.py:\d+ in noisy.*randomness='error'"):
        kiln.vmap(noisy)(np.ones((3, 4)))


def noisy(x):
    return KF.dropout(x, 0.5, training=True)
