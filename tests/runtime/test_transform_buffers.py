"""Function transforms over module buffers (BatchNorm's running statistics), float64 against torch 2.13's torch.func.

1. ``jacrev``, ``jacfwd`` and ``hessian`` of ``functional_call(model, (params, buffers), x)`` with the buffers a
   positional argument raised a ``KeyError``: ``output_types`` (``runtime/jacobian.py``) traced the function into a
   scratch graph on the caller's nested tensors, so BatchNorm's in-place update rebound them to values of that dropped
   graph. Now the values and the buffers' single update are torch's.
2. ``vjp``'s pullback traces the forward again; its buffer updates landed a second time (``kiln.vjp`` on each call,
   ``kiln.func.vjp`` when the pullback is mapped by ``vmap``, torch's own ``jacrev`` recipe). Now they land once, as
   torch's, whose pullback runs no forward.
3. Eagerly, a tensor given for ``num_batches_tracked`` whose storage no ``Buffer`` can share (an ``expand``ed one)
   stays a plain tensor, and ``EagerContext.update_buffer`` failed in ``np.copyto`` ("argument 1 must be a
   numpy.ndarray, not Tensor"). Now it is updated as torch updates it.

(``runtime/jacobian.py``, ``runtime/forward_mode.py``, ``runtime/traced_transform.py``, ``runtime/eager.py``)
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries
from tree_close import assert_trees_close

RTOL = 1e-10
X = np.random.default_rng(0).standard_normal((5, 3))


def _close(ours, theirs):
    assert_trees_close(ours, theirs, RTOL)


def _model(name, train):
    """``Linear(3, 4) -> BatchNorm1d(4) -> Tanh`` in float64, kiln's initialisation in both, and its (params,
    buffers) as torch.func code takes them (cloned buffers: the module's own stay as they are)."""
    lib, nn, _ = libraries(name)
    kiln.manual_seed(0)
    reference = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.BatchNorm1d(4), kiln.nn.Tanh()).double()
    state = {key: np.array(value.detach().numpy()) for key, value in reference.state_dict().items()}
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh()).double()
    model.load_state_dict({key: lib.tensor(value) for key, value in state.items()})
    model.train(train)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    return lib, model, params, buffers


def _own_buffers(model):
    return {k: v for k, v in model.named_buffers()}


# --- 1. jacrev / jacfwd / hessian with the buffers as an argument -----------------------------------------------------


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
@pytest.mark.parametrize("argnums", [0, 2, (0, 2)], ids=["params", "x", "params-and-x"])
def test_jacobians_over_given_buffers_match_torch(transform, train, argnums):
    def program(name):
        lib, model, params, buffers = _model(name, train)
        f = lambda p, b, x: lib.func.functional_call(model, (p, b), (x,))  # noqa: E731
        jacobian = getattr(lib.func, transform)(f, argnums=argnums)(params, buffers, lib.tensor(X))
        return jacobian, buffers, _own_buffers(model)

    ours, theirs = program("kiln"), program("torch")
    _close(ours, theirs)
    assert int(ours[1]["1.num_batches_tracked"]) == (1 if train else 0)  # one update, as torch's


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_hessian_over_given_buffers_matches_torch(train):
    """With respect to the input (torch's Hessian blocks between BatchNorm's weight and the layers before it, in
    training mode, are not symmetric in torch 2.13 and disagree with finite differences; kiln's agree)."""
    def program(name):
        lib, model, params, buffers = _model(name, train)
        f = lambda p, b, x: lib.func.functional_call(model, (p, b), (x,)).pow(2).sum()  # noqa: E731
        hessian = lib.func.hessian(f, argnums=2)(params, buffers, lib.tensor(X))
        return hessian, buffers, _own_buffers(model)

    _close(program("kiln"), program("torch"))


def test_hessian_over_params_with_given_buffers_in_eval_mode_matches_torch():
    def program(name):
        lib, model, params, buffers = _model(name, False)
        f = lambda p, b, x: lib.func.functional_call(model, (p, b), (x,)).pow(2).sum()  # noqa: E731
        return lib.func.hessian(f)(params, buffers, lib.tensor(X)), buffers

    _close(program("kiln"), program("torch"))


def test_jacrev_over_given_buffers_inside_vmap_matches_torch():
    """``vmap(jacrev(...))`` over stacked buffers: each model's statistics updated once, as torch's."""
    def program(name):
        lib, nn, _ = libraries(name)
        kiln.manual_seed(1)
        models = [nn.BatchNorm1d(3).double() for _ in range(2)]
        params, buffers = lib.func.stack_module_state(models)
        params = {k: v.detach() for k, v in params.items()}
        f = lambda p, b, x: lib.func.functional_call(models[0], (p, b), (x,))  # noqa: E731
        xs = lib.tensor(np.stack([X, 2 * X]))
        return lib.func.vmap(lib.func.jacrev(f))(params, buffers, xs), buffers

    _close(program("kiln"), program("torch"))


def test_jacrev_misuse_is_refused_clearly_and_leaves_the_buffers_usable():
    """A function returning BatchNorm's integer counter has no Jacobian: refused naming what it needs; the buffers it
    touched while the output types were probed are the caller's still, so a correct call after it works."""
    lib, model, params, buffers = _model("kiln", True)
    f = lambda p, b, x: (lib.func.functional_call(model, (p, b), (x,)), b["1.num_batches_tracked"] + 1)  # noqa: E731
    with pytest.raises(KilnError, match="needs fn to return floating-point Tensors"):
        lib.func.jacrev(f)(params, buffers, lib.tensor(X))
    g = lambda p, b, x: lib.func.functional_call(model, (p, b), (x,))  # noqa: E731
    lib.func.jacrev(g)(params, buffers, lib.tensor(X))
    assert int(buffers["1.num_batches_tracked"]) == 1


# --- 2. vjp: the pullback does not update the buffers again -----------------------------------------------------------


def _torch_vjp_reference(mapped):
    """torch's vjp over a training-mode batch norm whose running statistics the function closes over (torch updates
    those in place; it refuses a module's own counter, 'mutate a captured Tensor'): the output, the pullback's result
    and the statistics after both."""
    torch, _, F = libraries("torch")
    x = torch.tensor(X)
    running_mean, running_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    f = lambda x: F.batch_norm(x, running_mean, running_var, None, None, True, 0.1, 1e-5).tanh()  # noqa: E731
    out, pull = torch.func.vjp(f, x)
    grads = torch.func.vmap(pull)(_basis(torch)) if mapped else pull(torch.ones_like(out) * torch.tensor(X).cos())
    return out, grads, [running_mean, running_var, torch.tensor(1)]


def _basis(lib):
    return lib.tensor(np.eye(X.size).reshape((X.size,) + X.shape))


def _kiln_vjp(vjp, mapped, compiled):
    """The same with kiln's ``vjp`` over a BatchNorm1d module closed over (kiln writes a module's buffers there)."""
    bn = kiln.nn.BatchNorm1d(3, affine=False).double()

    def run(x):
        out, pull = vjp(lambda x: bn(x).tanh(), x)
        grads = kiln.func.vmap(pull)(_basis(kiln)) if mapped else pull(kiln.ones_like(out) * kiln.tensor(X).cos())
        return out, grads

    out, grads = (kiln.compile(run) if compiled else run)(kiln.tensor(X))
    return out, grads, [bn.running_mean, bn.running_var, bn.num_batches_tracked]


@pytest.mark.parametrize("mapped", [False, True], ids=["pullback", "vmap-of-pullback"])
@pytest.mark.parametrize("which", ["kiln.vjp", "kiln.func.vjp"])
def test_vjp_pullback_updates_running_statistics_once_as_torch(which, mapped):
    vjp = kiln.vjp if which == "kiln.vjp" else kiln.func.vjp
    _close(_kiln_vjp(vjp, mapped, compiled=False), _torch_vjp_reference(mapped))


@pytest.mark.parametrize("which", ["kiln.vjp", "kiln.func.vjp"])
def test_vjp_pullback_inside_a_compiled_function_updates_once(which):
    vjp = kiln.vjp if which == "kiln.vjp" else kiln.func.vjp
    _close(_kiln_vjp(vjp, mapped=True, compiled=True), _torch_vjp_reference(mapped=True))


def test_vjp_pullback_called_twice_still_updates_once():
    bn = kiln.nn.BatchNorm1d(3).double()
    out, pull = kiln.vjp(lambda x: bn(x), kiln.tensor(X))
    first, second = pull(kiln.ones_like(out)), pull(2 * kiln.ones_like(out))
    _close(second, [2 * first[0]])
    assert int(bn.num_batches_tracked) == 1


def test_vjp_pullback_misuse_is_refused_clearly():
    bn = kiln.nn.BatchNorm1d(3).double()
    out, pull = kiln.vjp(lambda x: bn(x), kiln.tensor(X))
    with pytest.raises(KilnError, match=r"kiln.vjp: cotangent 0 is \(5, 2\) f64, but its output is \(5, 3\) f64"):
        pull(np.ones((5, 2)))
    assert int(bn.num_batches_tracked) == 1


# --- 3. eager update of a plain tensor standing in for a buffer -------------------------------------------------------


def _expanded_counter(lib):
    return lib.tensor(0).expand(())


@pytest.mark.parametrize("counter", [_expanded_counter, lambda lib: lib.broadcast_to(lib.tensor(0), ())],
                         ids=["expand", "broadcast_to"])
def test_eager_functional_call_updates_a_counter_no_buffer_can_share(counter):
    def program(name):
        lib, model, params, buffers = _model(name, True)
        buffers["1.num_batches_tracked"] = counter(lib)
        out = lib.func.functional_call(model, (params, buffers), (lib.tensor(X),))
        out = lib.func.functional_call(model, (params, buffers), (2 * lib.tensor(X),))  # momentum from the counter
        return out, buffers, _own_buffers(model)

    ours, theirs = program("kiln"), program("torch")
    _close(ours, theirs)
    assert int(ours[1]["1.num_batches_tracked"]) == 2


def test_cumulative_average_reads_the_updated_plain_counter():
    """``momentum=None``: the factor is ``1 / num_batches_tracked`` after the increment, so each step reads the counter
    the previous one wrote."""
    def program(name):
        lib, nn, _ = libraries(name)
        bn = nn.BatchNorm1d(3, momentum=None).double()
        buffers = {k: v.detach().clone() for k, v in bn.named_buffers()}
        buffers["num_batches_tracked"] = _expanded_counter(lib)
        for scale in (1.0, 2.0, 3.0):
            lib.func.functional_call(bn, buffers, (scale * lib.tensor(X),))
        return buffers

    _close(program("kiln"), program("torch"))


def test_grad_with_aux_runs_eagerly_and_updates_the_plain_counter():
    """``grad(has_aux=True)`` on eager tensors calls the function once, eagerly (``runtime/eager_jacobian.py``)."""
    def program(name):
        lib, model, params, buffers = _model(name, True)
        buffers["1.num_batches_tracked"] = _expanded_counter(lib)

        def loss(p, b, x):
            out = lib.func.functional_call(model, (p, b), (x,))
            return out.pow(2).sum(), out.detach()

        return lib.func.grad(loss, has_aux=True)(params, buffers, lib.tensor(X)), buffers

    _close(program("kiln"), program("torch"))
