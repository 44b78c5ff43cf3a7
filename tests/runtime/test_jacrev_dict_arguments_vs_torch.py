"""``kiln.func.jacrev`` and ``jacfwd`` with respect to an argument that is a dict (or tuple) of tensors, as
torch.func's: the Jacobian has the argument's structure, one ``out.shape + leaf.shape`` tensor per leaf. torch's neural-tangent-kernel
tutorial differentiates ``functional_call(net, params, (x,))`` with respect to ``params = {name: tensor}`` under
``vmap(jacrev(fnet_single), (None, 0))``; kiln refused ("argument 0 must be a floating-point tensor"). float64
against torch 2.13."""

from __future__ import annotations

import numpy as np

from oracles import libraries

X1 = np.random.default_rng(0).standard_normal((4, 3))
X2 = np.random.default_rng(1).standard_normal((5, 3))


def _network(name, state=None):
    lib, nn, F = libraries(name)
    lib.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    if state is not None:
        net.load_state_dict({key: lib.tensor(value) for key, value in state.items()})
    return lib, net


def _both_networks():
    kiln_lib, kiln_net = _network("kiln")
    state = {key: np.array(value.detach().numpy()) for key, value in kiln_net.state_dict().items()}
    return (kiln_lib, kiln_net), _network("torch", state)


def empirical_ntk_jacobian_contraction(torch, net, x1, x2):
    """The tutorial's code."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fnet_single(params, x):
        return torch.func.functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    jac1 = torch.func.vmap(torch.func.jacrev(fnet_single), (None, 0))(params, x1)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = torch.func.vmap(torch.func.jacrev(fnet_single), (None, 0))(params, x2)
    jac2 = [j.flatten(2) for j in jac2.values()]
    result = torch.stack([torch.einsum('Naf,Mbf->NMab', j1, j2) for j1, j2 in zip(jac1, jac2)])
    return result.sum(0)


def test_neural_tangent_kernel_by_jacrev_over_a_parameter_dict_as_torch(float64_default):
    kernels = [empirical_ntk_jacobian_contraction(lib, net, lib.tensor(X1), lib.tensor(X2)).numpy()
               for lib, net in _both_networks()]
    assert kernels[0].shape == kernels[1].shape == (4, 5, 2, 2)
    np.testing.assert_allclose(kernels[0], kernels[1], rtol=1e-12, atol=1e-14)


def test_jacrev_of_dict_and_tuple_arguments_keeps_their_structure_as_torch(float64_default):
    results = []
    for lib, net in _both_networks():
        params = dict(net.named_parameters())

        def outputs(params, bias_pair, x):
            return lib.func.functional_call(net, params, (x,)) * bias_pair[0] + bias_pair[1]

        pair = (lib.tensor(1.5), lib.tensor([0.1, -0.2]))
        by_params, by_pair = lib.func.jacrev(outputs, argnums=(0, 1))(params, pair, lib.tensor(X1))
        assert set(by_params) == set(params) and isinstance(by_pair, tuple) and len(by_pair) == 2
        results.append({**{key: value.detach().numpy() for key, value in by_params.items()},
                        "pair 0": by_pair[0].detach().numpy(), "pair 1": by_pair[1].detach().numpy()})
    ours, theirs = results
    assert {key: value.shape for key, value in ours.items()} == {key: value.shape for key, value in theirs.items()}
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-12, atol=1e-14, err_msg=key)


def test_jacfwd_and_hessian_of_a_parameter_dict_as_torch(float64_default):
    """Forward mode over the same structure (one tangent batch per leaf), and ``hessian`` (jacrev of grad): nested
    dicts ``H[name][name]``."""
    results = []
    for lib, net in _both_networks():
        params = {k: v.detach() for k, v in net.named_parameters()}

        def outputs(params, x):
            return lib.func.functional_call(net, params, (x,))

        jacobians = lib.func.jacfwd(outputs)(params, lib.tensor(X1))
        hessians = lib.func.hessian(lambda p, x: outputs(p, x).pow(2).sum())(params, lib.tensor(X1))
        results.append({**{f"jacfwd {key}": value.numpy() for key, value in jacobians.items()},
                        **{f"hessian {a} {b}": value.numpy() for a, row in hessians.items() for b, value in row.items()}})
    ours, theirs = results
    assert set(ours) == set(theirs) and len(theirs) == 4 + 16
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-11, atol=1e-13, err_msg=key)
