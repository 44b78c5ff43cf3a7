"""The ways PINN code takes the residual's derivatives (for ``test_porting_probes_pinn_idioms.py``), each written once
as such code writes it: ``torch`` is torch or kiln."""

from __future__ import annotations

IDIOMS = ("inputs-list", "backward-create-graph", "allow-unused", "functional-hessian", "grads-batched", "forward-ad")


def burgers_derivatives(torch, dnn, t, x, idiom):
    """``(u, u_t, u_x, u_xx)`` at the points ``(t, x)`` (leaves that require grad), the derivatives taken as ``idiom``:

    - ``inputs-list``: one ``torch.autograd.grad(u, [t, x], grad_outputs=torch.ones_like(u), create_graph=True)``, then
      ``u_xx`` by ``autograd.grad(u_x.sum(), x, create_graph=True)``;
    - ``backward-create-graph``: older PINN code's ``u.backward(torch.ones_like(u), create_graph=True)``, reading
      ``t.grad``/``x.grad``, the parameters' ``.grad`` cleared by ``p.grad = None`` (torch's advice against the cycle);
    - ``allow-unused``: ``autograd.grad(..., [x, unused], allow_unused=True)`` (``unused`` gives None);
    - ``functional-hessian``: ``torch.autograd.functional.jacobian``/``hessian`` of the batch's sum with
      ``create_graph=True``, each point's entries by ``J[0, :, 0:1]`` and ``torch.einsum("iaia->ia", H)``;
    - ``grads-batched``: ``autograd.grad(u, X, torch.eye(n).unsqueeze(-1), is_grads_batched=True,
      create_graph=True)`` (one vector-Jacobian product per point), the diagonal by ``torch.diagonal``;
    - ``forward-ad``: ``u_t`` and ``u_x`` as tangents of dual tensors (``torch.autograd.forward_ad``: ``dual_level``,
      ``make_dual(t, torch.ones_like(t))``, ``unpack_dual(u).tangent``), ``u_xx`` by ``autograd.grad`` of ``u_x``
      (reverse over forward).
    """
    X = torch.cat([t, x], 1)
    u = dnn(X)
    if idiom == "inputs-list":
        u_t, u_x = torch.autograd.grad(u, [t, x], grad_outputs=torch.ones_like(u), create_graph=True)
        u_xx = torch.autograd.grad(u_x.sum(), x, create_graph=True)[0]
    elif idiom == "backward-create-graph":
        u.backward(torch.ones_like(u), create_graph=True)
        u_t, u_x = t.grad, x.grad
        u_xx = torch.autograd.grad(u_x, x, torch.ones_like(u_x), create_graph=True)[0]
        for p in dnn.parameters():
            p.grad = None
    elif idiom == "allow-unused":
        u_t, u_x = torch.autograd.grad(u.sum(), [t, x], create_graph=True)
        unused = torch.zeros(1, requires_grad=True)
        u_xx, none = torch.autograd.grad(u_x.sum(), [x, unused], create_graph=True, allow_unused=True)
        assert none is None
    elif idiom == "functional-hessian":
        points = X.detach()
        J = torch.autograd.functional.jacobian(lambda X: dnn(X).sum(0), points, create_graph=True)
        u_t, u_x = J[0, :, 0:1], J[0, :, 1:2]
        H = torch.autograd.functional.hessian(lambda X: dnn(X).sum(), points, create_graph=True)
        u_xx = torch.einsum("iaia->ia", H)[:, 1:2]
    elif idiom == "forward-ad":
        fwAD = torch.autograd.forward_ad
        with fwAD.dual_level():
            t_dual = fwAD.make_dual(t, torch.ones_like(t))
            u = dnn(torch.cat([t_dual, x], 1))
            u_t = fwAD.unpack_dual(u).tangent
        with fwAD.dual_level():
            x_dual = fwAD.make_dual(x, torch.ones_like(x))
            u_x = fwAD.unpack_dual(dnn(torch.cat([t, x_dual], 1))).tangent
        u_xx = torch.autograd.grad(u_x.sum(), x, create_graph=True)[0]
    else:
        n = X.shape[0]
        g = torch.autograd.grad(u, X, torch.eye(n).unsqueeze(-1), is_grads_batched=True, create_graph=True)[0]
        u_t = torch.diagonal(g[:, :, 0]).unsqueeze(1)
        u_x = torch.diagonal(g[:, :, 1]).unsqueeze(1)
        u_xx = torch.autograd.grad(u_x.sum(), X, create_graph=True)[0][:, 1:2]
    return u, u_t, u_x, u_xx


def residual_module(torch, nn, dnn, alpha=0.1):
    """The heat equation's residual as a module for deployment-style evaluation: ``forward(X)`` makes its own leaf
    (``X.clone().requires_grad_()``), takes ``u_t`` and ``u_xx`` by ``autograd.grad(..., create_graph=True)`` and
    returns ``(u, u_t - alpha * u_xx)``."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.dnn = dnn

        def forward(self, X):
            X = X.clone().requires_grad_()
            u = self.dnn(X)
            du = torch.autograd.grad(u, X, torch.ones_like(u), create_graph=True)[0]
            u_xx = torch.autograd.grad(du[:, 1:2], X, torch.ones_like(u), create_graph=True)[0][:, 1:2]
            return u, du[:, 0:1] - alpha * u_xx

    return Residual()


def sine_activation_dnn(torch, nn, F, width=8):
    """A PINN whose activation is a custom ``torch.autograd.Function`` (``Sine``: ``ctx.save_for_backward(x)``,
    ``backward`` by ``grad_output * torch.cos(x)``, itself differentiable, so the residual's second derivative and
    the loss's backward go through it), as sine-activated PINNs write it."""

    class Sine(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sin(x)

        @staticmethod
        def backward(ctx, grad_output):
            x, = ctx.saved_tensors
            return grad_output * torch.cos(x)

    class SineActivation(nn.Module):
        def forward(self, x):
            return Sine.apply(x)

    return nn.Sequential(nn.Linear(2, width), SineActivation(), nn.Linear(width, width), SineActivation(),
                         nn.Linear(width, 1))


def deepxde_grad(torch):
    """DeepXDE's ``deepxde.gradients`` (reverse mode), as its PyTorch backend runs it: ``Jacobian`` caching each row's
    ``torch.autograd.grad(y, xs, grad_outputs=torch.ones_like(y), create_graph=True)[0]`` by ``i`` and slicing
    ``[:, j : j + 1]``; ``Jacobians``/``Hessians`` caching those by ``(ys, xs)`` (tensors as dict keys); ``hessian`` as
    the Jacobian of a Jacobian row; ``clear()`` after each step. Returns ``(jacobian, hessian, clear)``."""

    class Jacobian:
        def __init__(self, ys, xs):
            self.ys = ys
            self.xs = xs
            self.dim_y = ys.shape[1]
            self.dim_x = xs.shape[1]
            self.J = {}

        def __call__(self, i=0, j=None):
            if not 0 <= i < self.dim_y:
                raise ValueError("i={} is not valid.".format(i))
            if j is not None and not 0 <= j < self.dim_x:
                raise ValueError("j={} is not valid.".format(j))
            if i not in self.J:
                y = self.ys[:, i : i + 1] if self.dim_y > 1 else self.ys
                self.J[i] = torch.autograd.grad(y, self.xs, grad_outputs=torch.ones_like(y), create_graph=True)[0]
            return self.J[i] if j is None or self.dim_x == 1 else self.J[i][:, j : j + 1]

    class Jacobians:
        def __init__(self):
            self.Js = {}

        def __call__(self, ys, xs, i=0, j=None):
            key = (ys, xs)
            if key not in self.Js:
                self.Js[key] = Jacobian(ys, xs)
            return self.Js[key](i, j)

        def clear(self):
            self.Js = {}

    jac = Jacobians()

    def jacobian(ys, xs, i=0, j=None):
        return jac(ys, xs, i=i, j=j)

    class Hessian:
        def __init__(self, y, xs, component=None, grad_y=None):
            dim_y = y.shape[1]
            if dim_y > 1:
                if component is None:
                    raise ValueError("The component of y is missing.")
            else:
                if component is not None:
                    raise ValueError("Do not use component for 1D y.")
                component = 0
            if grad_y is None:
                grad_y = jacobian(y, xs, i=component, j=None)
            self.H = Jacobian(grad_y, xs)

        def __call__(self, i=0, j=0):
            return self.H(i, j)

    class Hessians:
        def __init__(self):
            self.Hs = {}

        def __call__(self, y, xs, component=None, i=0, j=0, grad_y=None):
            key = (y, xs, component)
            if key not in self.Hs:
                self.Hs[key] = Hessian(y, xs, component=component, grad_y=grad_y)
            return self.Hs[key](i, j)

        def clear(self):
            self.Hs = {}

    hes = Hessians()

    def hessian(ys, xs, component=None, i=0, j=0, grad_y=None):
        return hes(ys, xs, component=component, i=i, j=j, grad_y=grad_y)

    def clear():
        jac.clear()
        hes.clear()

    return jacobian, hessian, clear
