"""Porting probe: the torch.func tutorial's empirical neural tangent kernel (``torch`` is torch or kiln), in lockstep
with torch 2.13 from kiln's initial weights, float64 to 1e-10.

``fnet_single`` by ``functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)``;
``empirical_ntk_jacobian_contraction``: ``vmap(jacrev(fnet_single), (None, 0))`` of a params dict, ``.values()``,
``j.flatten(2)``, ``torch.einsum('Naf,Mbf->NMab')`` (or the trace, ``'Naf,Maf->NM'``, or the diagonal) summed over the
parameters; ``empirical_ntk_ntk_vps``: ``vjp`` then ``jvp`` of each basis vector, ``vmap(get_ntk_slice)(basis)``,
``vmap(vmap(get_ntk, (None, 0)), (0, None))``. Eagerly and as one ``kiln.compile(fullgraph=True)`` function.

What broke: ``vjp(func_x1, params)`` with the eager params dict inside ``vmap`` failed with ``KeyError: Value(...)``,
and then the NTK by products came back zero (silently): its ``vjp_fn`` is made in the outer ``vmap``'s trace and
called inside the inner one, where it pulled back through a graph holding none of its ops; it now traces ``fn`` again
there (both in ``runtime/forward_mode.py``, ``tests/runtime/test_vjp_jvp_of_eager_primals_under_vmap_vs_torch.py``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep

RNG = np.random.default_rng(0)
X1, X2 = RNG.standard_normal((4, 3)), RNG.standard_normal((5, 3))


def ntk_program(torch, net):
    func = torch.func
    functional_call, vmap, jacrev, vjp, jvp = func.functional_call, func.vmap, func.jacrev, func.vjp, func.jvp

    def fnet_single(params, x):
        return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, compute='full'):
        # Compute J(x1)
        jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = jac1.values()
        jac1 = [j.flatten(2) for j in jac1]

        # Compute J(x2)
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = jac2.values()
        jac2 = [j.flatten(2) for j in jac2]

        # Compute J(x1) @ J(x2).T
        einsum_expr = None
        if compute == 'full':
            einsum_expr = 'Naf,Mbf->NMab'
        elif compute == 'trace':
            einsum_expr = 'Naf,Maf->NM'
        elif compute == 'diagonal':
            einsum_expr = 'Naf,Maf->NMa'
        else:
            assert False

        result = torch.stack([torch.einsum(einsum_expr, j1, j2) for j1, j2 in zip(jac1, jac2)])
        result = result.sum(0)
        return result

    def empirical_ntk_ntk_vps(func, params, x1, x2, compute='full'):
        def get_ntk(x1, x2):
            def func_x1(params):
                return func(params, x1)

            def func_x2(params):
                return func(params, x2)

            output, vjp_fn = vjp(func_x1, params)

            def get_ntk_slice(vec):
                # This computes ``vec @ J(x2).T``
                # `vec` is some unit vector (a single slice of the Identity matrix)
                vjps = vjp_fn(vec)
                # This computes ``J(X1) @ vjps``
                _, jvps = jvp(func_x2, (params,), vjps)
                return jvps

            # Here's our identity matrix
            basis = torch.eye(output.numel(), dtype=output.dtype, device=output.device).view(output.numel(), -1)
            return vmap(get_ntk_slice)(basis)

        # ``get_ntk(x1, x2)`` computes the NTK for a single data point x1, x2
        # Since the x1, x2 inputs to ``empirical_ntk_ntk_vps`` are batched,
        # we actually wish to compute the NTK between every pair of data points
        # between {x1} and {x2}. That's what the ``vmaps`` here do.
        result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)

        if compute == 'full':
            return result
        if compute == 'trace':
            return torch.einsum('NMKK->NM', result)
        if compute == 'diagonal':
            return torch.einsum('NMKK->NMK', result)

    return fnet_single, empirical_ntk_jacobian_contraction, empirical_ntk_ntk_vps


def ntk(method, compiled):
    def train(torch, nn, F, net):
        fnet_single, by_jacobians, by_products = ntk_program(torch, net)
        params = {k: v.detach() for k, v in net.named_parameters()}
        record = {}
        for compute in ('full', 'trace', 'diagonal'):
            kernel = partial(by_jacobians if method == "jacobian-contraction" else by_products, fnet_single,
                             compute=compute)
            if compiled and torch is kiln:
                kernel = kiln.compile(kernel, fullgraph=True)
            record[compute] = array(kernel(params, torch.tensor(X1), torch.tensor(X2)))
        return record

    return train


def build(torch, nn, F):
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_ntk_by_jacobian_contraction_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(build, ntk("jacobian-contraction", compiled))
    assert theirs["full"].shape == (4, 5, 2, 2)
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_ntk_by_vector_products_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(build, ntk("vector-products", compiled))
    assert_same_records(ours, theirs)
