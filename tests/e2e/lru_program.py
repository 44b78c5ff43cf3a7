"""A Linear Recurrent Unit stack (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences")
as a widely copied PyTorch port writes it (``LRU`` with a parallel-scan ``torch.autograd.Function`` ``PScan`` or a
step-by-step loop over a complex ``state`` buffer, ``SSM`` with an MLP scaffold, ``DeepLRU``), written once (``torch``
is ``torch`` or ``kiln``) for ``tests/e2e/test_porting_probes_s4_hyena_retnet.py``. The reference imports ``false``
from sympy; it is Python's ``False`` here."""

from __future__ import annotations

import math


def deep_lru(torch, nn, F, scan=True, N=1, in_features=2, out_features=2, mid_features=3, state_features=4):
    """``DeepLRU(N, in_features, out_features, mid_features, state_features, scan)``."""
    false = False

    class MLP(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super(MLP, self).__init__()
            self.model = nn.Sequential(
                nn.Linear(input_size, hidden_size, bias=false),
                nn.SiLU(),
                nn.Linear(hidden_size, hidden_size, bias=false),
                nn.ReLU(),
                nn.Linear(hidden_size, output_size, bias=false)
            )

        def forward(self, x):
            if x.dim() == 3:
                batch_size, seq_length, input_size = x.size()
                x = x.reshape(-1, input_size)
                x = self.model(x)
                output_size = x.size(-1)
                x = x.reshape(batch_size, seq_length, output_size)
            else:
                x = self.model(x)
            return x

    class PScan(torch.autograd.Function):
        @staticmethod
        def expand_(A, X):
            if A.size(1) == 1:
                return
            T = 2 * (A.size(1) // 2)
            Aa = A[:, :T].view(A.size(0), T // 2, 2, -1)
            Xa = X[:, :T].view(X.size(0), T // 2, 2, -1)
            Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))
            Aa[:, :, 1].mul_(Aa[:, :, 0])
            PScan.expand_(Aa[:, :, 1], Xa[:, :, 1])
            Xa[:, 1:, 0].add_(Aa[:, 1:, 0].mul(Xa[:, :-1, 1]))
            Aa[:, 1:, 0].mul_(Aa[:, :-1, 1])
            if T < A.size(1):
                X[:, -1].add_(A[:, -1].mul(X[:, -2]))
                A[:, -1].mul_(A[:, -2])

        @staticmethod
        def acc_rev_(A, X):
            if X.size(1) == 1:
                return
            T = 2 * (X.size(1) // 2)
            Aa = A[:, -T:].view(A.size(0), T // 2, 2, -1)
            Xa = X[:, -T:].view(X.size(0), T // 2, 2, -1)
            Xa[:, :, 0].add_(Aa[:, :, 1].mul(Xa[:, :, 1]))
            B = Aa[:, :, 0].clone()
            B[:, 1:].mul_(Aa[:, :-1, 1])
            PScan.acc_rev_(B, Xa[:, :, 0])
            Xa[:, :-1, 1].add_(Aa[:, 1:, 0].mul(Xa[:, 1:, 0]))
            if T < A.size(1):
                X[:, 0].add_(A[:, 1].mul(X[:, 1]))

        @staticmethod
        def forward(ctx, A, X, Y_init):
            ctx.A = A[:, :, None].clone()
            ctx.Y_init = Y_init[:, None, :].clone()
            ctx.A_star = ctx.A.clone()
            ctx.X_star = X.clone()
            PScan.expand_(ctx.A_star, ctx.X_star)
            return ctx.A_star * ctx.Y_init + ctx.X_star

        @staticmethod
        def backward(ctx, grad_output):
            U = grad_output * ctx.A_star
            A = ctx.A.clone()
            R = grad_output.clone()
            PScan.acc_rev_(A, R)
            Q = ctx.Y_init.expand_as(ctx.X_star).clone()
            Q[:, 1:].mul_(ctx.A_star[:, :-1]).add_(ctx.X_star[:, :-1])
            return (Q * R).sum(-1), R, U.sum(dim=1)

    pscan = PScan.apply

    class LRU(nn.Module):
        def __init__(self, in_features, out_features, state_features, scan=True, rmin=0.9, rmax=1, max_phase=6.283):
            super().__init__()
            self.state_features = state_features
            self.in_features = in_features
            self.scan = scan
            self.out_features = out_features
            self.D = nn.Parameter(torch.randn([out_features, in_features]) / math.sqrt(in_features))
            u1 = torch.rand(state_features)
            u2 = torch.rand(state_features)
            self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (rmax + rmin) * (rmax - rmin) + rmin ** 2)))
            self.theta_log = nn.Parameter(torch.log(max_phase * u2))
            Lambda_mod = torch.exp(-torch.exp(self.nu_log))
            self.gamma_log = nn.Parameter(torch.log(torch.sqrt(torch.ones_like(Lambda_mod) - torch.square(Lambda_mod))))
            B_re = torch.randn([state_features, in_features]) / math.sqrt(2 * in_features)
            B_im = torch.randn([state_features, in_features]) / math.sqrt(2 * in_features)
            self.B = nn.Parameter(torch.complex(B_re, B_im))
            C_re = torch.randn([out_features, state_features]) / math.sqrt(state_features)
            C_im = torch.randn([out_features, state_features]) / math.sqrt(state_features)
            self.C = nn.Parameter(torch.complex(C_re, C_im))
            self.register_buffer('state', torch.complex(torch.zeros(state_features), torch.zeros(state_features)))

        def forward(self, input):
            self.state = self.state
            Lambda_mod = torch.exp(-torch.exp(self.nu_log))
            Lambda_re = Lambda_mod * torch.cos(torch.exp(self.theta_log))
            Lambda_im = Lambda_mod * torch.sin(torch.exp(self.theta_log))
            Lambda = torch.complex(Lambda_re, Lambda_im)
            gammas = torch.exp(self.gamma_log).unsqueeze(-1)
            output = torch.empty([i for i in input.shape[:-1]] + [self.out_features], device=self.B.device)
            if input.dim() == 2:
                input = input.unsqueeze(0)
            if self.scan:
                input = input.permute(2, 1, 0)
                B_unsqueezed = self.B.unsqueeze(-1).unsqueeze(-1)
                B_broadcasted = B_unsqueezed.expand(self.state_features, self.in_features, input.shape[1],
                                                    input.shape[2])
                input_broadcasted = input.unsqueeze(0).expand(self.state_features, self.in_features, input.shape[1],
                                                              input.shape[2])
                inputBU = torch.sum(B_broadcasted * input_broadcasted, dim=1)
                Lambda = Lambda.unsqueeze(1)
                A = torch.tile(Lambda, (1, inputBU.shape[1]))
                init = torch.complex(torch.zeros((self.state_features, inputBU.shape[2]), device=self.B.device),
                                     torch.zeros((self.state_features, inputBU.shape[2]), device=self.B.device))
                gammas_reshaped = gammas.unsqueeze(2)
                GBU = gammas_reshaped * inputBU
                states = pscan(A, GBU, init)
                C_unsqueezed = self.C.unsqueeze(-1).unsqueeze(-1)
                C_broadcasted = C_unsqueezed.expand(self.out_features, self.state_features, inputBU.shape[1],
                                                    inputBU.shape[2])
                CX = torch.sum(C_broadcasted * states, dim=1)
                D_unsqueezed = self.D.unsqueeze(-1).unsqueeze(-1)
                D_broadcasted = D_unsqueezed.expand(self.out_features, self.in_features, input.shape[1], input.shape[2])
                DU = torch.sum(D_broadcasted * input, dim=1)
                output = 2 * CX.real + DU
                output = output.permute(2, 1, 0)
            else:
                for i, batch in enumerate(input):
                    out_seq = torch.empty(input.shape[1], self.out_features)
                    for j, step in enumerate(batch):
                        self.state = (Lambda * self.state + gammas * self.B @ step.to(dtype=self.B.dtype))
                        out_step = 2 * (self.C @ self.state).real + self.D @ step
                        out_seq[j] = out_step
                    self.state = torch.complex(torch.zeros_like(self.state.real), torch.zeros_like(self.state.real))
                    output[i] = out_seq
            return output

    class SSM(nn.Module):
        def __init__(self, in_features, out_features, state_features, scan, mlp_hidden_size=30, rmin=0.9, rmax=1,
                     max_phase=6.283):
            super().__init__()
            self.mlp = MLP(out_features, mlp_hidden_size, out_features)
            self.LRU = LRU(in_features, out_features, state_features, scan, rmin, rmax, max_phase)
            self.model = nn.Sequential(self.LRU, self.mlp)
            self.lin = nn.Linear(in_features, out_features, bias=false)

        def forward(self, input):
            result = self.model(input) + self.lin(input)
            return result

    class DeepLRU(nn.Module):
        def __init__(self, N, in_features, out_features, mid_features, state_features, scan=True):
            super().__init__()
            self.linin = nn.Linear(in_features, mid_features, bias=false)
            self.linout = nn.Linear(mid_features, out_features, bias=false)
            self.modelt = nn.ModuleList(
                [SSM(mid_features, mid_features, state_features, scan) for j in range(N)])
            self.modelt.insert(0, self.linin)
            self.modelt.append(self.linout)
            self.model = nn.Sequential(*self.modelt)

        def forward(self, input):
            result = self.model(input)
            return result

    return DeepLRU(N, in_features, out_features, mid_features, state_features, scan)
