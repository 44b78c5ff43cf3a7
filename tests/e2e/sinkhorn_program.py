"""Optimal transport by Sinkhorn iterations, as jeanfeydy/geomloss (``SamplesLoss("sinkhorn")`` with its tensorized
backend: ``sinkhorn_samples.py``, ``sinkhorn_divergence.py``, ``utils.py``) and PythonOT/POT (``ot.sinkhorn_log``,
``ot.sinkhorn2``, ``ot.dist``, written with the torch calls its backend makes) write them, for ``torch`` being torch or
kiln: the program of ``test_porting_probes_sinkhorn.py``, whose docstring says what it covers."""

from __future__ import annotations

import numpy as np


def geomloss(torch, nn):
    """geomloss' ``SamplesLoss`` (the "sinkhorn" loss, tensorized backend, balanced: ``reach=None``) with the routines
    it calls, as written (KeOps, multiscale, unbalanced and potentials branches left out). ``cost`` may be a callable
    as in geomloss, or one of the names of ``COSTS``."""

    def squared_distances(x, y, use_keops=False):
        if x.dim() == 2:
            D_xx = (x * x).sum(-1).unsqueeze(1)  # (N,1)
            D_xy = torch.matmul(x, y.permute(1, 0))  # (N,D) @ (D,M) = (N,M)
            D_yy = (y * y).sum(-1).unsqueeze(0)  # (1,M)
        elif x.dim() == 3:  # Batch computation
            D_xx = (x * x).sum(-1).unsqueeze(2)  # (B,N,1)
            D_xy = torch.matmul(x, y.permute(0, 2, 1))  # (B,N,D) @ (B,D,M) = (B,N,M)
            D_yy = (y * y).sum(-1).unsqueeze(1)  # (B,1,M)
        else:
            print("x.shape : ", x.shape)
            raise ValueError("Incorrect number of dimensions")

        return D_xx - 2 * D_xy + D_yy

    def distances(x, y, use_keops=False):
        return torch.sqrt(torch.clamp_min(squared_distances(x, y), 1e-8))

    cost_routines = {
        1: (lambda x, y: distances(x, y)),
        2: (lambda x, y: squared_distances(x, y) / 2),
    }

    def dampening(eps, rho):
        return 1 if rho is None else 1 / (1 + eps / rho)

    def log_weights(a):
        a_log = a.log()
        a_log[a <= 0] = -100000
        return a_log

    def max_diameter(x, y):
        mins = torch.stack((x.min(dim=0)[0], y.min(dim=0)[0])).min(dim=0)[0]
        maxs = torch.stack((x.max(dim=0)[0], y.max(dim=0)[0])).max(dim=0)[0]
        diameter = (maxs - mins).norm().item()
        return diameter

    def epsilon_schedule(p, diameter, blur, scaling):
        eps_list = (
            [diameter**p]
            + [
                np.exp(e)
                for e in np.arange(
                    p * np.log(diameter), p * np.log(blur), p * np.log(scaling)
                )
            ]
            + [blur**p]
        )
        return eps_list

    def scaling_parameters(x, y, p, blur, reach, diameter, scaling):
        if diameter is None:
            D = x.shape[-1]
            diameter = max_diameter(x.view(-1, D), y.view(-1, D))

        eps = blur**p
        rho = None if reach is None else reach**p
        eps_list = epsilon_schedule(p, diameter, blur, scaling)
        return diameter, eps, eps_list, rho

    def scal(a, f, batch=False):
        if batch:
            B = a.shape[0]
            return (a.reshape(B, -1) * f.reshape(B, -1)).sum(1)
        else:
            return torch.dot(a.reshape(-1), f.reshape(-1))

    def sinkhorn_cost(eps, rho, a, b, f_aa, g_bb, g_ab, f_ba, batch=False, debias=True, potentials=False):
        if potentials:  # Just return the dual potentials
            if debias:  # See Eq. (3.209) in Jean Feydy's PhD thesis.
                return f_ba - f_aa, g_ab - g_bb
            else:
                return f_ba, g_ab
        else:  # Actually compute the Sinkhorn divergence
            if debias:  # UNBIASED Sinkhorn divergence, S_eps(a,b) = OT_eps(a,b) - .5*OT_eps(a,a) - .5*OT_eps(b,b)
                return scal(a, f_ba - f_aa, batch=batch) + scal(b, g_ab - g_bb, batch=batch)
            else:  # Classic, BIASED entropized Optimal Transport OT_eps(a,b)
                return scal(a, f_ba, batch=batch) + scal(b, g_ab, batch=batch)

    def sinkhorn_loop(softmin, a_logs, b_logs, C_xxs, C_yys, C_xys, C_yxs, eps_list, rho, jumps=[],
                      kernel_truncation=None, truncate=5, cost=None, extrapolate=None, debias=True,
                      last_extrapolation=True):
        Nits = len(eps_list)
        if type(a_logs) is not list:
            a_logs, b_logs = [a_logs], [b_logs]
            if debias:
                C_xxs, C_yys = [C_xxs], [C_yys]
            C_xys, C_yxs = [C_xys], [C_yxs]

        prev_autograd = torch.is_grad_enabled()
        torch.set_grad_enabled(False)

        k = 0  # Scale index; we start at the coarsest resolution.
        a_log, b_log = a_logs[k], b_logs[k]
        C_xy, C_yx = C_xys[k], C_yxs[k]
        if debias:
            C_xx, C_yy = C_xxs[k], C_yys[k]

        # Start with a decent initialization for the dual vectors:
        eps = eps_list[0]  # First value of the temperature (typically, = diameter**p)
        damping = dampening(eps, rho)

        # Load the measures and cost matrices at the current scale:
        g_ab = damping * softmin(eps, C_yx, a_log)  # a -> b
        f_ba = damping * softmin(eps, C_xy, b_log)  # b -> a
        if debias:
            f_aa = damping * softmin(eps, C_xx, a_log)  # a <-> a
            g_bb = damping * softmin(eps, C_yy, b_log)  # a <-> a

        for i, eps in enumerate(eps_list):  # See Fig. 3.25-26 in Jean Feydy's PhD thesis.
            damping = dampening(eps, rho)

            # "Coordinate ascent" on the dual problems, symmetrized ("averaged") updates:
            ft_ba = damping * softmin(eps, C_xy, b_log + g_ab / eps)  # b -> a
            gt_ab = damping * softmin(eps, C_yx, a_log + f_ba / eps)  # a -> b

            if debias:
                ft_aa = damping * softmin(eps, C_xx, a_log + f_aa / eps)  # a <-> a
                gt_bb = damping * softmin(eps, C_yy, b_log + g_bb / eps)  # b <-> b

            # Symmetrized updates - see Fig. 3.24.b in Jean Feydy's PhD thesis:
            f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)  # OT(a,b) wrt. a, b
            if debias:
                f_aa, g_bb = 0.5 * (f_aa + ft_aa), 0.5 * (g_bb + gt_bb)  # OT(a,a), OT(b,b)

        torch.set_grad_enabled(prev_autograd)

        if last_extrapolation:
            # Last extrapolation, to get the correct gradients:
            f_ba, g_ab = (
                damping * softmin(eps, C_xy, (b_log + g_ab / eps).detach()),
                damping * softmin(eps, C_yx, (a_log + f_ba / eps).detach()),
            )

            if debias:
                f_aa = damping * softmin(eps, C_xx, (a_log + f_aa / eps).detach())
                g_bb = damping * softmin(eps, C_yy, (b_log + g_bb / eps).detach())

        if debias:
            return f_aa, g_bb, g_ab, f_ba
        else:
            return None, None, g_ab, f_ba

    def softmin_tensorized(eps, C_xy, h_y):
        B = C_xy.shape[0]
        return -eps * (h_y.view(B, 1, -1) - C_xy / eps).logsumexp(2).view(B, -1)

    def sinkhorn_tensorized(a, x, b, y, p=2, blur=0.05, reach=None, diameter=None, scaling=0.5, cost=None,
                            debias=True, potentials=False, **kwargs):
        # Retrieve the batch size B, the numbers of samples N, M
        # and the size of the ambient space D:
        B, N, D = x.shape
        _, M, _ = y.shape

        # By default, our cost function :math:`C(x_i,y_j)` is a halved,
        # squared Euclidean distance (p=2) or a simple Euclidean distance (p=1):
        if cost is None:
            cost = cost_routines[p]

        # Compute the relevant cost matrices C(x_i, y_j), C(y_j, x_i), etc.
        # Note that we "detach" the gradients of the "right-hand sides":
        # this is coherent with the way we compute our gradients
        # in the `sinkhorn_loop(...)` routine, in the `sinkhorn_divergence.py` file.
        # Please refer to the comments in this file for more details.
        C_xy = cost(x, y.detach())  # (B,N,M) torch Tensor
        C_yx = cost(y, x.detach())  # (B,M,N) torch Tensor

        # N.B.: The "auto-correlation" matrices C(x_i, x_j) and C(y_i, y_j)
        #       are only used by the "debiased" Sinkhorn algorithm.
        C_xx = cost(x, x.detach()) if debias else None  # (B,N,N) torch Tensor
        C_yy = cost(y, y.detach()) if debias else None  # (B,M,M) torch Tensor

        # Compute the relevant values of the diameter of the configuration,
        # target temperature epsilon, temperature schedule across itereations
        # and strength of the marginal constraints:
        diameter, eps, eps_list, rho = scaling_parameters(x, y, p, blur, reach, diameter, scaling)

        # Use an optimal transport solver to retrieve the dual potentials:
        f_aa, g_bb, g_ab, f_ba = sinkhorn_loop(
            softmin_tensorized,
            log_weights(a),
            log_weights(b),
            C_xx,
            C_yy,
            C_xy,
            C_yx,
            eps_list,
            rho,
            debias=debias,
        )

        # Optimal transport cost:
        return sinkhorn_cost(eps, rho, a, b, f_aa, g_bb, g_ab, f_ba, batch=True, debias=debias,
                             potentials=potentials)

    class SamplesLoss(nn.Module):
        """geomloss' ``SamplesLoss(loss="sinkhorn", backend="tensorized")``: called as ``loss(x, y)`` or
        ``loss(α, x, β, y)``, on ``(N, D)`` or batched ``(B, N, D)`` point clouds."""

        def __init__(self, loss="sinkhorn", p=2, blur=0.05, reach=None, diameter=None, scaling=0.5, truncate=5,
                     cost=None, kernel=None, cluster_scale=None, debias=True, potentials=False, verbose=False,
                     backend="auto"):
            super(SamplesLoss, self).__init__()
            self.loss = loss
            self.backend = backend
            self.verbose = verbose
            self.p = p
            self.blur = blur
            self.reach = reach
            self.truncate = truncate
            self.diameter = diameter
            self.scaling = scaling
            self.cost = COSTS[cost](torch) if isinstance(cost, str) else cost
            self.kernel = kernel
            self.cluster_scale = cluster_scale
            self.debias = debias
            self.potentials = potentials

        def forward(self, *args):
            l_x, α, x, l_y, β, y = self.process_args(*args)
            B, N, M, D, l_x, α, l_y, β = self.check_shapes(l_x, α, x, l_y, β, y)

            if B == 0:  # Tensorized backends require batched inputs
                α, x, β, y = α.unsqueeze(0), x.unsqueeze(0), β.unsqueeze(0), y.unsqueeze(0)

            values = sinkhorn_tensorized(
                α,
                x,
                β,
                y,
                p=self.p,
                blur=self.blur,
                reach=self.reach,
                diameter=self.diameter,
                scaling=self.scaling,
                truncate=self.truncate,
                cost=self.cost,
                cluster_scale=self.cluster_scale,
                debias=self.debias,
                potentials=self.potentials,
                labels_x=l_x,
                labels_y=l_y,
                verbose=self.verbose,
            )

            if self.potentials:  # Return some dual potentials (= test functions) sampled on the input measures
                F, G = values
                return F.view_as(α), G.view_as(β)
            else:  # Return a scalar cost value
                if B == 0:
                    return values[0]  # The user expects a "pure" scalar
                return values  # The user expects a "batch vector" of distances

        def process_args(self, *args):
            if len(args) == 6:
                return args
            if len(args) == 4:
                α, x, β, y = args
                return None, α, x, None, β, y
            elif len(args) == 2:
                x, y = args
                α = self.generate_weights(x)
                β = self.generate_weights(y)
                return None, α, x, None, β, y
            else:
                raise ValueError("A SamplesLoss accepts two (x, y), four (α, x, β, y) or six (l_x, α, x, l_y, β, y) "
                                 " arguments.")

        def generate_weights(self, x):
            if x.dim() == 2:  #
                N = x.shape[0]
                return torch.ones(N).type_as(x) / N
            elif x.dim() == 3:
                B, N, _ = x.shape
                return torch.ones(B, N).type_as(x) / N
            else:
                raise ValueError("Input samples 'x' and 'y' should be encoded as (N,D) or (B,N,D) (batch) tensors.")

        def check_shapes(self, l_x, α, x, l_y, β, y):
            if α.dim() != β.dim():
                raise ValueError("Input weights 'α' and 'β' should have the same number of dimensions.")
            if x.dim() != y.dim():
                raise ValueError("Input samples 'x' and 'y' should have the same number of dimensions.")
            if x.shape[-1] != y.shape[-1]:
                raise ValueError("Input samples 'x' and 'y' should have the same last dimension.")

            if x.dim() == 2:  # No batch --------------------------------------------------------------------
                B = 0  # Batchsize
                N, D = x.shape  # Number of "i" samples, dimension of the feature space
                M, _ = y.shape  # Number of "j" samples, dimension of the feature space

                if α.dim() not in [1, 2]:
                    raise ValueError("Without batches, input weights 'α' and 'β' should be encoded as (N,) or (N,1) "
                                     "tensors.")
                elif α.dim() == 2:
                    if α.shape[1] > 1:
                        raise ValueError("Without batches, input weights 'α' should be encoded as (N,) or (N,1) "
                                         "tensors.")
                    if β.shape[1] > 1:
                        raise ValueError("Without batches, input weights 'β' should be encoded as (M,) or (M,1) "
                                         "tensors.")
                    α, β = α.view(-1), β.view(-1)

                if α.shape[0] != N:
                    raise ValueError("Weights 'α' and samples 'x' should have compatible shapes.")
                if β.shape[0] != M:
                    raise ValueError("Weights 'β' and samples 'y' should have compatible shapes.")

            elif x.dim() == 3:  # batch computation ---------------------------------------------------------
                B, N, D = x.shape  # Batchsize, number of "i" samples, dimension of the feature space
                B2, M, _ = y.shape  # Batchsize, number of "j" samples, dimension of the feature space
                if B != B2:
                    raise ValueError("Samples 'x' and 'y' should have the same batchsize.")

                if α.dim() not in [2, 3]:
                    raise ValueError("With batches, input weights 'α' and 'β' should be encoded as (B,N) or (B,N,1) "
                                     "tensors.")
                elif α.dim() == 3:
                    α, β = α.squeeze(-1), β.squeeze(-1)

                if α.shape != (B, N):
                    raise ValueError("Weights 'α' and samples 'x' should have compatible shapes.")
                if β.shape != (B, M):
                    raise ValueError("Weights 'β' and samples 'y' should have compatible shapes.")
            else:
                raise ValueError("Input samples 'x' and 'y' should be encoded as (N,D) or (B,N,D) (batch) tensors.")

            return B, N, M, D, l_x, α, l_y, β

    return SamplesLoss


COSTS = {
    # POT's ``ot.dist(x, y)`` (its torch backend: ``torch.cdist(a, b) ** 2``), halved as geomloss' p=2 default.
    "cdist": lambda torch: (lambda x, y: torch.cdist(x, y) ** 2 / 2),
    # The broadcast difference of the tutorials (``((x[:, None] - y[None]) ** 2).sum(-1)``), batched.
    "broadcast": lambda torch: (lambda x, y: ((x[:, :, None] - y[:, None]) ** 2).sum(-1) / 2),
}


def pot(torch):
    """``(dist, sinkhorn_log, sinkhorn2)`` of POT (``ot/utils.py``, ``ot/bregman/_sinkhorn.py``) with the torch calls
    its ``TorchBackend`` makes (``nx.logsumexp`` is ``torch.logsumexp``, ``nx.norm`` ``torch.sqrt(torch.sum(a**2))``)."""

    def dist(x1, x2=None, metric="sqeuclidean"):
        if x2 is None:
            x2 = x1
        if metric == "sqeuclidean":
            return torch.cdist(x1, x2) ** 2
        return torch.cdist(x1, x2)

    def sinkhorn_log(a, b, M, reg, numItermax=1000, stopThr=1e-9, log=False):
        dim_a, dim_b = M.shape

        Mr = -M / reg

        # we assume that no distances are null except those of the diagonal of
        # distances
        u = torch.zeros(dim_a, dtype=M.dtype)
        v = torch.zeros(dim_b, dtype=M.dtype)

        def get_logT(u, v):
            return Mr + u[:, None] + v[None, :]

        loga = torch.log(a)
        logb = torch.log(b)

        err = 1
        errs = []
        for ii in range(numItermax):
            v = logb - torch.logsumexp(Mr + u[:, None], 0)
            u = loga - torch.logsumexp(Mr + v[None, :], 1)

            if ii % 10 == 0:
                # we can speed up the process by checking for the error only all
                # the 10th iterations

                # compute right marginal tmp2= (diag(u)Kdiag(v))^T1
                tmp2 = torch.sum(torch.exp(get_logT(u, v)), 0)
                err = torch.sqrt(torch.sum((tmp2 - b) ** 2))  # violation of marginal
                errs.append(err.item())

                if err < stopThr:
                    break

        if log:
            return torch.exp(get_logT(u, v)), {"niter": ii, "log_u": u, "log_v": v, "u": torch.exp(u),
                                               "v": torch.exp(v), "err": errs}
        return torch.exp(get_logT(u, v))

    def sinkhorn2(a, b, M, reg, **kwargs):
        """``ot.sinkhorn2(..., method="sinkhorn_log")``: the transport cost ``<G, M>``, differentiated through the
        iterations as POT's torch backend does."""
        G = sinkhorn_log(a, b, M, reg, **kwargs)
        return torch.sum(M * G)

    return dist, sinkhorn_log, sinkhorn2


def two_clouds(n=40, m=48, seed=0):
    """geomloss' 2-D gradient-flow tutorial in miniature: a ring of sources and a blob of two clusters as targets."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.stack([0.3 * np.cos(angle), 0.3 * np.sin(angle)], 1) + 0.02 * rng.standard_normal((n, 2)) + 0.5
    centres = np.where(rng.uniform(size=(m, 1)) < 0.5, [[0.2, 0.8]], [[0.8, 0.3]])
    y = centres + 0.07 * rng.standard_normal((m, 2))
    return x, y
