"""``kiln.autograd.graph`` and the eager autograd graph vs torch 2.13: ``saved_tensors_hooks`` (pack at record, unpack
at backward: ``runtime/saved_tensor_hooks.py``), ``grad_fn`` nodes with torch's names, ``next_functions`` down to
``AccumulateGrad`` leaves and node hooks, gradient edges, multi-grad hooks, ``_version`` and ``increment_version``
(``frontend/autograd_graph.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch


def _both():
    torch = require_torch()
    import kiln

    return kiln, torch


def _array(tensor):
    if tensor is None:
        return np.zeros(0)
    return np.array(np.asarray(tensor.detach() if hasattr(tensor, "detach") else tensor))


def _leaves(lib):
    r = np.random.RandomState(0)
    x = lib.tensor(r.rand(4, 3))
    w = lib.tensor(r.rand(5, 3), requires_grad=True)
    b = lib.tensor(r.rand(5), requires_grad=True)
    return x, w, b


PROGRAMS = {
    "mul": lambda lib, F, x, w, b: (w * b[:3]).sum(),
    "linear_tanh": lambda lib, F, x, w, b: F.linear(x, w, b).tanh().sum(),
    "exp_div": lambda lib, F, x, w, b: (w.exp() / (b[:3].sum() + 1)).mean(),
    "matmul_pow": lambda lib, F, x, w, b: (x @ w.t()).pow(2).sum(),
    "log_softmax": lambda lib, F, x, w, b: F.log_softmax(F.linear(x, w, b), 1).sum(),
    "sigmoid": lambda lib, F, x, w, b: w.sigmoid().mean(),
}
"""Programs whose pack and unpack counts are torch's (where kiln's rules read what torch's nodes save)."""


def _with_hooks(library, program, pack, unpack, steps=3):
    """Gradients and hook calls of ``steps`` backward passes (the second and third run kiln's compiled backward)."""
    lib, _, F = libraries(library)
    x, w, b = _leaves(lib)
    results = []
    for _ in range(steps):
        calls = []
        w.grad = b.grad = None
        with lib.autograd.graph.saved_tensors_hooks(lambda t: calls.append("p") or pack(t),
                                                    lambda p: calls.append("u") or unpack(p)):
            loss = PROGRAMS[program](lib, F, x, w, b)
        loss.backward()
        results.append((calls.count("p"), calls.count("u"), _array(w.grad), _array(b.grad)))
    return results


def _compare(ours, theirs, counts=True):
    for (p, u, gw, gb), (tp, tu, tgw, tgb) in zip(ours, theirs):
        if counts:
            assert (p, u) == (tp, tu)
        np.testing.assert_allclose(gw, tgw, rtol=1e-10)
        np.testing.assert_allclose(gb, tgb, rtol=1e-10)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_identity_hooks_keep_gradients_and_count_as_torch(program):
    _both()
    ours = _with_hooks("kiln", program, lambda t: t.detach(), lambda t: t)
    theirs = _with_hooks("torch", program, lambda t: t.detach(), lambda t: t)
    _compare(ours, theirs)


@pytest.mark.parametrize("program", ["mul", "linear_tanh", "matmul_pow", "sigmoid"])
def test_transforming_hooks_change_what_the_backward_reads_as_torch(program):
    """Programs whose saved tensors are torch's (``exp_div`` is not: kiln's division rule reads the quotient where
    torch's saves the numerator, so a transform scales another term; documented in runtime/saved_tensor_hooks.py)."""
    _both()
    for pack, unpack in [(lambda t: t.detach() * 2, lambda t: t),
                         (lambda t: np.array(t.detach().numpy()), None)]:
        ours = _with_hooks("kiln", program, pack, unpack or (lambda a: __import__("kiln").tensor(a)))
        theirs = _with_hooks("torch", program, pack, unpack or (lambda a: __import__("torch").tensor(a)))
        _compare(ours, theirs)


def test_half_precision_packing_rounds_what_the_backward_reads_as_torch():
    kiln, torch = _both()
    ours = _with_hooks("kiln", "linear_tanh", lambda t: t.detach().to(kiln.float16), lambda t: t.to(kiln.float64))
    theirs = _with_hooks("torch", "linear_tanh", lambda t: t.detach().to(torch.float16), lambda t: t.to(torch.float64))
    _compare(ours, theirs)
    exact = _with_hooks("kiln", "linear_tanh", lambda t: t.detach(), lambda t: t, steps=1)
    assert not np.allclose(ours[0][2], exact[0][2], rtol=1e-10)  # the rounding reached the gradient


def test_save_on_cpu_is_the_identity():
    _both()
    for library in ("kiln", "torch"):
        lib, _, F = libraries(library)
        x, w, b = _leaves(lib)
        with lib.autograd.graph.save_on_cpu(pin_memory=False):
            F.linear(x, w, b).tanh().sum().backward()
        plain = _with_hooks(library, "linear_tanh", lambda t: t.detach(), lambda t: t, steps=1)
        np.testing.assert_allclose(_array(w.grad), plain[0][2], rtol=1e-10)


def _nested(lib):
    log = []
    a = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with lib.autograd.graph.saved_tensors_hooks(lambda t: log.append("o") or t.detach(), lambda t: log.append("uo") or t):
        with lib.autograd.graph.saved_tensors_hooks(lambda t: log.append("i") or t.detach() * 3,
                                                    lambda t: log.append("ui") or t):
            y = a * lib.tensor(np.array([1.0, 1.0]))
        z = y.exp()
    z.sum().backward()
    return log, _array(a.grad).tolist()


def test_nested_hooks_apply_the_innermost_as_torch():
    kiln, torch = _both()
    assert _nested(kiln) == _nested(torch)


def test_disabled_hooks_refuse_with_the_given_message_as_torch():
    for lib in _both():
        graph = lib.autograd.graph
        with pytest.raises(RuntimeError, match="no hooks here"):
            with graph.disable_saved_tensors_hooks("no hooks here"):
                with graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                    pass
        a = lib.tensor(np.ones(2), requires_grad=True)
        with graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t):
            with pytest.raises(RuntimeError, match="no hooks here"):
                with graph.disable_saved_tensors_hooks("no hooks here"):
                    pass
            a * a
        with graph.disable_saved_tensors_hooks("no hooks here"):
            a * a  # no hooks in force: nothing to refuse
        with graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t):
            a * a  # enabled again


def _unpack_error(lib, unpack):
    a = lib.tensor(np.ones(3), requires_grad=True)
    with lib.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), unpack):
        y = (a * a.exp()).sum()
    with pytest.raises((TypeError, RuntimeError)) as raised:
        y.backward()
    return type(raised.value).__name__, str(raised.value)


def test_unpack_errors_carry_torchs_messages():
    kiln, torch = _both()
    for make in (lambda lib: (lambda p: 3), lambda lib: (lambda p: lib.ones(4, dtype=lib.float64))):
        ours, theirs = _unpack_error(kiln, make(kiln)), _unpack_error(torch, make(torch))
        assert ours[0] == theirs[0]
        assert theirs[1] in ours[1]


def _second_order(lib):
    a = lib.tensor(np.array([0.5, 1.5]), requires_grad=True)
    b = lib.tensor(np.array([2.0, -1.0]), requires_grad=True)
    with lib.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t):
        y = (a.exp() * b).sum()
    (g,) = lib.autograd.grad(y, a, create_graph=True)
    (g * g).sum().backward()
    return _array(g), _array(a.grad), _array(b.grad)


def test_hooks_keep_second_derivatives_as_torch():
    kiln, torch = _both()
    for ours, theirs in zip(_second_order(kiln), _second_order(torch)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)


# --- grad_fn nodes -----------------------------------------------------------------------------------------------

NAMED = {
    "add": lambda lib, F, x, w: w + w, "add_number": lambda lib, F, x, w: w + 1.0, "sub": lambda lib, F, x, w: w - w,
    "rsub": lambda lib, F, x, w: 1 - w, "mul": lambda lib, F, x, w: w * x[:1], "div": lambda lib, F, x, w: w / 2.0,
    "mm": lambda lib, F, x, w: x @ w.t(), "bmm": lambda lib, F, x, w: lib.bmm(w[None], w.t()[None]),
    "linear": lambda lib, F, x, w: F.linear(x, w, w[0]), "sum": lambda lib, F, x, w: w.sum(),
    "sum_dim": lambda lib, F, x, w: w.sum(1), "mean": lambda lib, F, x, w: w.mean(),
    "mean_dim": lambda lib, F, x, w: w.mean(0), "exp": lambda lib, F, x, w: w.exp(), "log": lambda lib, F, x, w: w.log(),
    "relu": lambda lib, F, x, w: F.relu(w), "sigmoid": lambda lib, F, x, w: w.sigmoid(),
    "tanh": lambda lib, F, x, w: w.tanh(), "pow": lambda lib, F, x, w: w ** 2, "pow_tensor": lambda lib, F, x, w: w ** w,
    "view": lambda lib, F, x, w: w.view(-1), "reshape": lambda lib, F, x, w: w.reshape(3, 3),
    "t": lambda lib, F, x, w: w.t(), "select": lambda lib, F, x, w: w[1], "slice": lambda lib, F, x, w: w[1:2],
    "cat": lambda lib, F, x, w: lib.cat([w, w]), "stack": lambda lib, F, x, w: lib.stack([w, w]),
    "unsqueeze": lambda lib, F, x, w: w.unsqueeze(0), "softmax": lambda lib, F, x, w: F.softmax(w, 1),
    "log_softmax": lambda lib, F, x, w: F.log_softmax(w, 1),
    "nll": lambda lib, F, x, w: F.nll_loss(F.log_softmax(w, 1), lib.tensor(np.array([0, 2, 1]))),
    "cross_entropy": lambda lib, F, x, w: F.cross_entropy(w, lib.tensor(np.array([0, 2, 1]))),
    "mse": lambda lib, F, x, w: F.mse_loss(w, w.detach() * 0), "clone": lambda lib, F, x, w: w.clone(),
    "masked_fill": lambda lib, F, x, w: w.masked_fill(w > 0.5, 0.0), "where": lambda lib, F, x, w: lib.where(w > 0.5, w, x),
    "clamp": lambda lib, F, x, w: w.clamp(0.2, 0.7), "amax": lambda lib, F, x, w: w.amax(1),
    "max": lambda lib, F, x, w: w.max(), "gelu": lambda lib, F, x, w: F.gelu(w), "abs": lambda lib, F, x, w: w.abs(),
}


def _node_names(lib):
    _, _, F = libraries(lib.__name__)
    r = np.random.RandomState(1)
    x, w = lib.tensor(r.rand(3, 3)), lib.tensor(r.rand(3, 3), requires_grad=True)
    found = {}
    for name, make in NAMED.items():
        node = make(lib, F, x, w).grad_fn
        found[name] = (type(node).__name__, node.name(), [None if n is None else n.name() for n, _ in node.next_functions])
    return found


def test_grad_fn_types_names_and_edges_are_torchs():
    kiln, torch = _both()
    ours, theirs = _node_names(kiln), _node_names(torch)
    assert ours == theirs
    assert isinstance(kiln.tensor(np.ones(2), requires_grad=True).exp().grad_fn, kiln.autograd.graph.Node)


def _walk(root):
    """torchviz's recursion: every node once, by identity; the leaves' variables."""
    seen, order, variables = set(), [], []
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        order.append((node.name(), tuple(None if n is None else n.name() for n, _ in node.next_functions)))
        if hasattr(node, "variable"):
            variables.append(node.variable)
        stack.extend(n for n, _ in reversed(node.next_functions))
    return order, variables


def _model_graph(library):
    lib, nn, F = libraries(library)
    lib.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = lib.tensor(np.random.RandomState(0).rand(5, 3))
    loss = F.cross_entropy(net.double()(x), lib.tensor(np.array([0, 1, 1, 0, 1])))
    order, variables = _walk(loss.grad_fn)
    return order, {id(v) for v in variables} == {id(p) for p in net.parameters()}, loss


def test_next_functions_walk_to_every_parameter_as_torch():
    _both()
    ours, theirs = _model_graph("kiln"), _model_graph("torch")
    assert ours[:2] == theirs[:2] and ours[1]
    loss = ours[2]
    assert loss.grad_fn is loss.grad_fn and loss.grad_fn.next_functions is loss.grad_fn.next_functions


def _node_hooks(lib):
    r = np.random.RandomState(0)
    a, b = lib.tensor(r.rand(3), requires_grad=True), lib.tensor(r.rand(3), requires_grad=True)
    log = []
    h = a * b
    z = h.exp()
    y = z.sum()
    z.grad_fn.register_prehook(lambda gO: log.append(("pre", _array(gO[0]).round(12).tolist())))
    h.grad_fn.register_hook(lambda gI, gO: log.append(("post", [_array(g).round(12).tolist() for g in gI],
                                                       _array(gO[0]).round(12).tolist())))
    doubling = z.grad_fn.register_prehook(lambda gO: (gO[0] * 2,))
    y.backward(retain_graph=True)
    first = _array(a.grad)
    doubling.remove()
    a.grad = None
    y.backward(retain_graph=True)
    c = lib.tensor(r.rand(3), requires_grad=True)
    d = c.clone()
    d.grad_fn.register_hook(lambda gI, gO: (gO[0] * 3,))
    d.sum().backward()
    return log, first, _array(a.grad), _array(c.grad)


def test_node_pre_and_post_hooks_as_torch():
    kiln, torch = _both()
    ours, theirs = _node_hooks(kiln), _node_hooks(torch)
    assert ours[0] == theirs[0]
    for mine, its in zip(ours[1:], theirs[1:]):
        np.testing.assert_allclose(mine, its, rtol=1e-10)


def _accumulate_prehook(lib):
    w = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (w * 3).sum()
    accumulator = y.grad_fn.next_functions[0][0].next_functions[0][0]
    accumulator.register_prehook(lambda gO: (gO[0] + 1,))
    y.backward()
    return accumulator.name(), accumulator.variable is w, _array(w.grad).tolist()


def test_accumulate_grad_prehook_as_torch():
    kiln, torch = _both()
    assert _accumulate_prehook(kiln) == _accumulate_prehook(torch) == ("torch::autograd::AccumulateGrad", True,
                                                                         [4.0, 4.0])


def _edges(lib):
    graph = lib.autograd.graph
    w = lib.tensor(np.ones(2), requires_grad=True)
    h = (w * 2).exp()
    leaf, result = graph.get_gradient_edge(w), graph.get_gradient_edge(h)
    with pytest.raises(RuntimeError) as refused:
        graph.get_gradient_edge(lib.ones(2))
    return (leaf.node.name(), leaf.node.variable is w, leaf.output_nr, result.node is h.grad_fn, result.output_nr,
            str(refused.value))


def test_gradient_edges_as_torch():
    kiln, torch = _both()
    assert _edges(kiln) == _edges(torch)


def _multi(lib, mode):
    graph = lib.autograd.graph
    a, b = lib.tensor(np.ones((2, 3)), requires_grad=True), lib.tensor(np.full((2, 3), 2.0), requires_grad=True)
    c, d = a * b, a * b
    calls = []
    if mode == "all":
        graph.register_multi_grad_hook((a, b, c, d), lambda grads: calls.append([g is not None for g in grads]))
    else:
        graph.register_multi_grad_hook((a, b, c, d), lambda grad: calls.append(_array(grad).sum()), mode="any")
    c.sum().backward(retain_graph=True)
    c.sum().backward(inputs=(a,), retain_graph=True)
    (c + d).sum().backward(retain_graph=True)
    return calls


@pytest.mark.parametrize("mode", ["all", "any"])
def test_register_multi_grad_hook_as_torch(mode):
    kiln, torch = _both()
    assert _multi(kiln, mode) == _multi(torch, mode)


def _versions(lib):
    out = []
    x = lib.ones(3)
    out.append(x._version)
    x.add_(1)
    v = x[0:2]
    out.append((x._version, v._version))
    v.mul_(2)
    x[1] = 5.0
    out.append((x._version, v._version, (x * 2)._version))
    p = lib.nn.Parameter(lib.ones(2))
    optimizer = lib.optim.SGD([p], lr=0.1)
    p.sum().backward()
    optimizer.step()
    with lib.no_grad():
        p.mul_(2)
    p.data.add_(1)
    out.append(p._version)
    w, z = lib.ones(3, requires_grad=True), lib.ones(3)
    q = w * z
    lib.autograd.graph.increment_version(z)
    out.append(z._version)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        q.sum().backward()
    (w * z).sum().backward()
    out.append(_array(w.grad).tolist())
    return out


def test_version_counts_in_place_writes_as_torch():
    kiln, torch = _both()
    assert _versions(kiln) == _versions(torch)
