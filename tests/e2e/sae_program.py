"""A top-k sparse autoencoder as openai/sparse_autoencoder (``model.py``: ``Autoencoder``, ``TopK``; ``train.py``'s
``eps=6.25e-10`` Adam) and EleutherAI/sae (``sae.py``: ``Sae`` with ``W_dec``, the AuxK loss, the unit-norm decoder
and its gradient projection; ``utils.py``'s ``eager_decode``; ``trainer.py``'s ``num_tokens_since_fired``) write it,
once for ``torch`` being torch or kiln: a program of ``test_porting_probes_ijepa_sae.py``, whose docstring says what it
covers and what was adapted."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from types import SimpleNamespace
from typing import NamedTuple


# --- top-k SAE: openai/sparse_autoencoder model.py and EleutherAI/sae sae.py ------------------------------------------

def topk_sae(torch, nn, F):
    """openai's ``TopK`` activation and ``Autoencoder`` (``pre_bias``, ``latent_bias``, the ``stats_last_nonzero``
    buffer), with EleutherAI's ``W_dec`` parameter, unit-norm decoder, gradient projection and AuxK loss; the decoder
    three ways: openai's ``decoder`` ``nn.Linear`` on the dense latents, EleutherAI's ``eager_decode`` (``scatter_``
    into ``new_zeros`` and ``@ W_dec.mT``) and ``F.embedding_bag`` with ``per_sample_weights``."""

    class TopK(nn.Module):
        def __init__(self, k: int, postact_fn=nn.ReLU()) -> None:
            super().__init__()
            self.k = k
            self.postact_fn = postact_fn

        def forward(self, x):
            topk = torch.topk(x, k=self.k, dim=-1)
            values = self.postact_fn(topk.values)
            # make all other values 0
            result = torch.zeros_like(x)
            result.scatter_(-1, topk.indices, values)
            return result

    def eager_decode(top_indices, top_acts, W_dec):
        buf = top_acts.new_zeros(top_acts.shape[:-1] + (W_dec.shape[-1],))
        acts = buf.scatter_(dim=-1, index=top_indices, src=top_acts)
        return acts @ W_dec.mT

    def embedding_bag_decode(top_indices, top_acts, W_dec):
        return F.embedding_bag(top_indices, W_dec.mT, per_sample_weights=top_acts, mode="sum")

    class ForwardOutput(NamedTuple):
        sae_out: object
        latents_pre_act: object
        latents: object
        fvu: object
        auxk_loss: object

    class Autoencoder(nn.Module):
        """Sparse autoencoder

        Implements:
            latents = activation(encoder(x - pre_bias) + latent_bias)
            recons = decoder(latents) + pre_bias
        """

        def __init__(self, n_latents: int, n_inputs: int, k: int, decoder_impl: str = "linear") -> None:
            super().__init__()

            self.pre_bias = nn.Parameter(torch.zeros(n_inputs))
            self.encoder: nn.Module = nn.Linear(n_inputs, n_latents, bias=False)
            self.latent_bias = nn.Parameter(torch.zeros(n_latents))
            self.activation = TopK(k)
            self.k = k
            self.W_dec = nn.Parameter(self.encoder.weight.data.clone())
            self.set_decoder_norm_to_unit_norm()
            self.decoder_impl = decoder_impl

            self.stats_last_nonzero: torch.Tensor
            self.register_buffer("stats_last_nonzero", torch.zeros(n_latents, dtype=torch.long))

        def encode_pre_act(self, x, latent_slice: slice = slice(None)):
            x = x - self.pre_bias
            latents_pre_act = F.linear(
                x, self.encoder.weight[latent_slice], self.latent_bias[latent_slice]
            )
            return latents_pre_act

        def decode(self, latents):
            if self.decoder_impl == "linear":
                return F.linear(latents, self.W_dec.t()) + self.pre_bias
            topk = torch.topk(latents, k=self.k, dim=-1)
            decode = eager_decode if self.decoder_impl == "eager" else embedding_bag_decode
            return decode(topk.indices, topk.values, self.W_dec.mT) + self.pre_bias

        def decode_sparse(self, top_indices, top_acts):
            return eager_decode(top_indices, top_acts, self.W_dec.mT) + self.pre_bias

        def forward(self, x, dead_mask=None, auxk=None):
            latents_pre_act = self.encode_pre_act(x)
            latents = self.activation(latents_pre_act)
            recons = self.decode(latents)

            # set all indices of self.stats_last_nonzero where (latents != 0) to 0
            self.stats_last_nonzero *= (latents == 0).all(dim=0).long()
            self.stats_last_nonzero += 1

            e = recons - x
            fvu = ((recons - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean()
            if dead_mask is not None:
                # Don't include living latents in this loss
                auxk_latents = torch.where(dead_mask[None], latents_pre_act, -torch.inf)
                # Top-k dead latents
                auxk_acts, auxk_indices = auxk_latents.topk(auxk, sorted=False)
                auxk_acts = torch.relu(auxk_acts)
                e_hat = self.decode_sparse(auxk_indices, auxk_acts) - self.pre_bias
                auxk_loss = (e_hat - e.detach()).pow(2).sum(-1)
                auxk_loss = torch.mean(auxk_loss / (x - x.mean(0)).pow(2).sum(-1))
            else:
                auxk_loss = recons.new_tensor(0.0)
            return ForwardOutput(recons, latents_pre_act, latents, fvu, auxk_loss)

        @torch.no_grad()
        def set_decoder_norm_to_unit_norm(self):
            eps = torch.finfo(self.W_dec.dtype).eps
            self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True) + eps

        @torch.no_grad()
        def remove_gradient_parallel_to_decoder_directions(self):
            assert self.W_dec.grad is not None  # keep pyright happy

            parallel_component = torch.einsum("... d, ... d -> ...", self.W_dec.grad, self.W_dec.data)
            self.W_dec.grad -= torch.einsum("..., ... d -> ... d", parallel_component, self.W_dec.data)

    return SimpleNamespace(TopK=TopK, Autoencoder=Autoencoder, eager_decode=eager_decode,
                           embedding_bag_decode=embedding_bag_decode)


SAE_LATENTS, SAE_INPUTS, SAE_K, SAE_AUXK, SAE_BATCH = 24, 8, 3, 4, 6
DEAD_THRESHOLD, AUXK_ALPHA = 6, 1 / 32


class SaeRun:
    """The training loop: openai's Adam (``eps=6.25e-10``), EleutherAI's unit-norm decoder before each step,
    ``dead_mask = num_tokens_since_fired > dead_feature_threshold``, ``loss = fvu + auxk_alpha * auxk_loss``, the
    gradient projection before ``optimizer.step()``, ``did_fire[latent_indices.flatten()] = True`` and the
    ``num_tokens_since_fired`` bookkeeping under ``no_grad``."""

    def __init__(self, torch, nn, F, sae, lr=1e-2):
        self.torch, self.sae = torch, sae
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr, eps=6.25e-10)
        self.num_tokens_since_fired = torch.zeros(SAE_LATENTS, dtype=torch.long)
        self.did_fire = torch.zeros(SAE_LATENTS, dtype=torch.bool)

    def step(self, x, record=None):
        torch, sae = self.torch, self.sae
        # Make sure the W_dec is still unit-norm
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x, dead_mask=self.num_tokens_since_fired > DEAD_THRESHOLD, auxk=SAE_AUXK)
        loss = out.fvu + AUXK_ALPHA * out.auxk_loss
        loss.backward()
        # Update the did_fire mask
        topk = torch.topk(out.latents_pre_act, k=sae.k, dim=-1)
        self.did_fire[topk.indices.flatten()] = True
        if record is not None and "grads" not in record:
            record["grads"] = {name: p.grad.detach().clone() for name, p in sae.named_parameters()}
        sae.remove_gradient_parallel_to_decoder_directions()
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            self.num_tokens_since_fired += len(x)
            self.num_tokens_since_fired[self.did_fire] = 0
            self.did_fire.zero_()
        return loss, out.fvu, out.auxk_loss


# --- top-k SAE: openai/sparse_autoencoder train.py (FastAutoencoder) with kernels.py's references ---------------------

def openai_fast_sae(torch, nn, F, fp32=True):
    """train.py's ``FastAutoencoder`` (its ``EncWrapper`` autograd Function defined in ``forward``, the
    ``stats_last_nonzero`` update by ``scatter_add_`` inside it, ``auxk_mask_fn``'s ``x.data *= dead_mask``),
    ``unit_norm_decoder_``, ``unit_norm_decoder_grad_adjustment_``, ``sharded_grad_norm``, ``EmaModel`` and
    ``training_loop_``, with kernels.py's Triton kernels replaced by the dense computations their docstrings state (the
    ``K > 512`` path of ``triton_dense_dense_sparseout_matmul`` is the repository's own). ``fp32=False`` (the float64
    runs) makes the kernels' float32 casts (``.float()``, ``dtype=torch.float32``) keep the default dtype."""

    def fp32_(tensor):
        return tensor.float() if fp32 else tensor

    # ---------------------------------------------------------------- kernels.py (Triton kernels as their references)
    def triton_sparse_transpose_dense_matmul(sparse_indices, sparse_values, dense, N, BLOCK_SIZE_AK=128):
        """calculates sparse.T @ dense (i.e reducing along the collated dimension of sparse)"""
        K = sparse_indices.shape[1]
        A = dense.shape[0]
        # COO-format and sorted
        sorted_indices = sparse_indices.view(-1).sort()
        coo_indices = torch.stack(
            [
                torch.arange(A, device=sparse_indices.device).repeat_interleave(K)[
                    sorted_indices.indices
                ],
                sorted_indices.values,
            ]
        )  # shape (2, A * K)
        coo_values = sparse_values.view(-1)[sorted_indices.indices]  # shape (A * K,)
        out = torch.zeros(N, dense.shape[1], device=dense.device, dtype=coo_values.dtype)
        return out.index_add_(0, coo_indices[1], coo_values[:, None] * dense[coo_indices[0]])

    def triton_sparse_dense_matmul(sparse_indices, sparse_values, dense):
        """calculates sparse @ dense (i.e reducing along the uncollated dimension of sparse)"""
        N = dense.shape[0]
        A = sparse_indices.shape[0]
        sparse = torch.zeros(A, N, device=dense.device, dtype=sparse_values.dtype)
        return sparse.scatter_(1, sparse_indices, sparse_values) @ dense

    def triton_dense_dense_sparseout_matmul(dense1, dense2, at_indices):
        """equivalent to (dense1 @ dense2).gather(1, at_indices)"""
        return (dense1 @ dense2).gather(1, at_indices)

    class TritonDecoderAutograd(torch.autograd.Function):
        @staticmethod
        def forward(ctx, sparse_indices, sparse_values, decoder_weight):
            ctx.save_for_backward(sparse_indices, sparse_values, decoder_weight)
            return triton_sparse_dense_matmul(sparse_indices, sparse_values, decoder_weight.T)

        @staticmethod
        def backward(ctx, grad_output):
            sparse_indices, sparse_values, decoder_weight = ctx.saved_tensors

            assert grad_output.is_contiguous(), "grad_output must be contiguous"

            decoder_grad = triton_sparse_transpose_dense_matmul(
                sparse_indices, sparse_values, grad_output, N=decoder_weight.shape[1]
            ).T

            return (
                None,
                triton_dense_dense_sparseout_matmul(grad_output, decoder_weight, sparse_indices),
                # decoder is contiguous when transposed so this is a matching layout
                decoder_grad,
                None,
            )

    def triton_add_mul_(x, a, b, c):
        """does x += a * b * c"""
        if len(a.shape) == 1:
            a = a[None, :].broadcast_to(x.shape)

        if len(b.shape) == 1:
            b = b[None, :].broadcast_to(x.shape)

        assert x.shape == a.shape == b.shape
        x += a * b * c

    def mse(output, target):  # fusing fp32 cast and MSE to save memory
        assert output.shape == target.shape
        assert len(output.shape) == 2
        assert output.stride(1) == 1
        assert target.stride(1) == 1

        a, b = output.shape

        class _MSE(torch.autograd.Function):
            @staticmethod
            def forward(ctx, output, target):
                ctx.save_for_backward(output, target)
                return ((fp32_(output) - fp32_(target)) * (fp32_(output) - fp32_(target))).sum(-1) / b

            @staticmethod
            def backward(ctx, grad_output):
                output, target = ctx.saved_tensors
                res = fp32_(output - target)
                res *= grad_output[:, None] * 2 / b
                return res, None

        return _MSE.apply(output, target).mean()

    def normalized_mse(recon, xs):
        # only used for auxk
        xs_mu = xs.mean(dim=0)

        loss = mse(recon, xs) / mse(
            xs_mu[None, :].broadcast_to(xs.shape), xs
        )

        return loss

    # ---------------------------------------------------------------- train.py (one process: TRIVIAL_COMMS)
    def sharded_topk(x, k, sh_comm, capacity_factor=None):
        if capacity_factor is not None:
            k_in = min(int(k * capacity_factor // 1), k)
        else:
            k_in = k

        topk = torch.topk(x, k=k_in, dim=-1)
        inds = topk.indices
        vals = topk.values

        assert sh_comm is None
        return inds, vals

    class FastAutoencoder(nn.Module):
        """
        Top-K Autoencoder with sparse kernels. Implements:

            latents = relu(topk(encoder(x - pre_bias) + latent_bias))
            recons = decoder(latents) + pre_bias
        """

        def __init__(self, n_dirs_local: int, d_model: int, k: int, auxk, dead_steps_threshold: int):
            super().__init__()
            self.n_dirs_local = n_dirs_local
            self.d_model = d_model
            self.k = k
            self.auxk = auxk
            self.dead_steps_threshold = dead_steps_threshold

            self.encoder = nn.Linear(d_model, n_dirs_local, bias=False)
            self.decoder = nn.Linear(n_dirs_local, d_model, bias=False)

            self.pre_bias = nn.Parameter(torch.zeros(d_model))
            self.latent_bias = nn.Parameter(torch.zeros(n_dirs_local))

            self.stats_last_nonzero: torch.Tensor
            self.register_buffer("stats_last_nonzero", torch.zeros(n_dirs_local, dtype=torch.long))

            def auxk_mask_fn(x):
                dead_mask = self.stats_last_nonzero > dead_steps_threshold
                x.data *= dead_mask  # inplace to save memory
                return x

            self.auxk_mask_fn = auxk_mask_fn

            ## initialization

            # "tied" init
            self.decoder.weight.data = self.encoder.weight.data.T.clone()

            # store decoder in column major layout for kernel
            self.decoder.weight.data = self.decoder.weight.data.T.contiguous().T

            unit_norm_decoder_(self)

        def forward(self, x):
            class EncWrapper(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x, pre_bias, weight, latent_bias):
                    x = x - pre_bias
                    latents_pre_act = F.linear(x, weight, latent_bias)

                    inds, vals = sharded_topk(
                        latents_pre_act,
                        k=self.k,
                        sh_comm=None,
                        capacity_factor=4,
                    )

                    ## set num nonzero stat ##
                    tmp = torch.zeros_like(self.stats_last_nonzero)
                    tmp.scatter_add_(
                        0,
                        inds.reshape(-1),
                        (vals > 1e-3).to(tmp.dtype).reshape(-1),
                    )
                    self.stats_last_nonzero *= 1 - tmp.clamp(max=1)
                    self.stats_last_nonzero += 1
                    ## end stats ##

                    ## auxk
                    if self.auxk is not None:  # for auxk
                        # IMPORTANT: has to go after stats update!
                        # WARN: auxk_mask_fn can mutate latents_pre_act!
                        auxk_inds, auxk_vals = sharded_topk(
                            self.auxk_mask_fn(latents_pre_act),
                            k=self.auxk,
                            sh_comm=None,
                            capacity_factor=2,
                        )
                        ctx.save_for_backward(x, weight, inds, auxk_inds)
                    else:
                        ctx.save_for_backward(x, weight, inds)
                        auxk_inds = None
                        auxk_vals = None

                    ## end auxk

                    return (
                        inds,
                        vals,
                        auxk_inds,
                        auxk_vals,
                    )

                @staticmethod
                def backward(ctx, _, grad_vals, __, grad_auxk_vals):
                    # encoder backwards
                    if self.auxk is not None:
                        x, weight, inds, auxk_inds = ctx.saved_tensors

                        all_inds = torch.cat((inds, auxk_inds), dim=-1)
                        all_grad_vals = torch.cat((grad_vals, grad_auxk_vals), dim=-1)
                    else:
                        x, weight, inds = ctx.saved_tensors

                        all_inds = inds
                        all_grad_vals = grad_vals

                    grad_sum = torch.zeros(self.n_dirs_local, dtype=grad_vals.dtype, device=grad_vals.device)
                    grad_sum.scatter_add_(
                        -1, all_inds.flatten(), all_grad_vals.flatten().to(grad_vals.dtype)
                    )

                    return (
                        None,
                        # pre_bias grad optimization - can reduce before mat-vec multiply
                        -(grad_sum @ weight),
                        triton_sparse_transpose_dense_matmul(all_inds, all_grad_vals, x, N=self.n_dirs_local),
                        grad_sum,
                    )

            pre_bias = self.pre_bias

            # encoder
            inds, vals, auxk_inds, auxk_vals = EncWrapper.apply(
                x, pre_bias, self.encoder.weight, self.latent_bias
            )

            vals = torch.relu(vals)
            if auxk_vals is not None:
                auxk_vals = torch.relu(auxk_vals)

            recons = self.decode_sparse(inds, vals)

            return recons, {
                "auxk_inds": auxk_inds,
                "auxk_vals": auxk_vals,
            }

        def decode_sparse(self, inds, vals):
            recons = TritonDecoderAutograd.apply(inds, vals, self.decoder.weight)

            return recons + self.pre_bias

    def unit_norm_decoder_(autoencoder) -> None:
        """
        Unit normalize the decoder weights of an autoencoder.
        """
        autoencoder.decoder.weight.data /= autoencoder.decoder.weight.data.norm(dim=0)

    def unit_norm_decoder_grad_adjustment_(autoencoder) -> None:
        """project out gradient information parallel to the dictionary vectors - assumes that the decoder is already
        unit normed"""

        assert autoencoder.decoder.weight.grad is not None

        triton_add_mul_(
            autoencoder.decoder.weight.grad,
            torch.einsum("bn,bn->n", autoencoder.decoder.weight.data, autoencoder.decoder.weight.grad),
            autoencoder.decoder.weight.data,
            c=-1,
        )

    def sharded_grad_norm(autoencoder, exclude=None):
        if exclude is None:
            exclude = []
        total_sq_norm = torch.zeros((), device="cpu", dtype=torch.float32 if fp32 else None)
        exclude = set(exclude)

        for param in autoencoder.parameters():
            if param in exclude:
                continue
            if param.grad is not None:
                sq_norm = (fp32_(param.grad) ** 2).sum()
                total_sq_norm += sq_norm  # one shard: comms.sh_sum is the identity
        return total_sq_norm.sqrt()

    class EmaModel:
        def __init__(self, model, ema_multiplier):
            self.model = model
            self.ema_multiplier = ema_multiplier
            self.ema_weights = [torch.zeros_like(x, requires_grad=False) for x in model.parameters()]
            self.ema_steps = 0

        def step(self):
            torch._foreach_lerp_(
                self.ema_weights,
                list(self.model.parameters()),
                1 - self.ema_multiplier,
            )
            self.ema_steps += 1

        # context manager for setting the autoencoder weights to the EMA weights
        @contextmanager
        def use_ema_weights(self):
            assert self.ema_steps > 0

            # apply bias correction
            bias_correction = 1 - self.ema_multiplier**self.ema_steps
            ema_weights_bias_corrected = torch._foreach_div(self.ema_weights, bias_correction)

            with torch.no_grad():
                with temporary_weight_swap(self.model, ema_weights_bias_corrected):
                    yield

    @contextmanager
    def temporary_weight_swap(model, new_weights):
        for _p, new_p in zip(model.parameters(), new_weights, strict=True):
            assert _p.shape == new_p.shape
            _p.data, new_p.data = new_p.data, _p.data

        yield

        for _p, new_p in zip(model.parameters(), new_weights, strict=True):
            assert _p.shape == new_p.shape
            _p.data, new_p.data = new_p.data, _p.data

    def loss_fn(ae, flat_acts_train_batch, recons, info, mse_scale, auxk_coef):
        """main()'s loss lambda (the logger's ``logkv`` returns its value)."""
        return (
            # MSE
            mse_scale * mse(recons, flat_acts_train_batch)
            # AuxK
            + auxk_coef
            * normalized_mse(
                ae.decode_sparse(
                    info["auxk_inds"],
                    info["auxk_vals"],
                ),
                flat_acts_train_batch - recons.detach() + ae.pre_bias.detach(),
            ).nan_to_num(0)
        )

    def training_step(ae, opt, ema, flat_acts_train_batch, mse_scale, auxk_coef, clip_grad):
        """One iteration of ``training_loop_`` (no GradScaler, autocast nor data-parallel all-reduce: one CPU
        process)."""
        recons, info = ae(flat_acts_train_batch)
        loss = loss_fn(ae, flat_acts_train_batch, recons, info, mse_scale, auxk_coef)
        loss.backward()

        unit_norm_decoder_(ae)
        unit_norm_decoder_grad_adjustment_(ae)

        # gradient clipping
        if clip_grad is not None:
            grad_norm = sharded_grad_norm(ae)
            grads = [x.grad for x in ae.parameters() if x.grad is not None]
            torch._foreach_mul_(grads, clip_grad / torch.clamp(grad_norm, min=clip_grad))

        if ema is not None:
            ema.step()

        # take step with optimizer (training_loop_ never zeroes the gradients)
        opt.step()
        return loss

    return SimpleNamespace(FastAutoencoder=FastAutoencoder, EmaModel=EmaModel, training_step=training_step,
                           unit_norm_decoder_=unit_norm_decoder_, mse=mse, normalized_mse=normalized_mse)


# --- top-k SAE: EleutherAI/sae sae.py, utils.py and trainer.py as written ---------------------------------------------

def eleuther_sae(torch, nn, F):
    """``Sae`` (``forward`` with the walrus ``(num_dead := int(dead_mask.sum())) > 0`` branch, ``k_aux = x.shape[-1] //
    2``, ``fvu`` over ``sum(0)``, ``sae_out.new_tensor(0.0)``), utils.py's ``geometric_median`` and ``eager_decode``, and
    one iteration of ``SaeTrainer.fit`` (``b_dec.data = median`` first, ``hiddens.chunk(micro_acc_steps)``,
    ``loss.div(acc_steps).backward()``, ``clip_grad_norm_``, the ``did_fire``/``num_tokens_since_fired`` defaultdicts,
    ``dead_pct`` by ``mask.mean(dtype=torch.float32)``)."""

    class EncoderOutput(NamedTuple):
        top_acts: object
        top_indices: object

    class ForwardOutput(NamedTuple):
        sae_out: object
        latent_acts: object
        latent_indices: object
        fvu: object
        auxk_loss: object

    @torch.no_grad()
    def geometric_median(points, max_iter: int = 100, tol: float = 1e-5):
        """Compute the geometric median `points`. Used for initializing decoder bias."""
        # Initialize our guess as the mean of the points
        guess = points.mean(dim=0)
        prev = torch.zeros_like(guess)

        # Weights for iteratively reweighted least squares
        weights = torch.ones(len(points), device=points.device)

        for _ in range(max_iter):
            prev = guess

            # Compute the weights
            weights = 1 / torch.norm(points - guess, dim=1)

            # Normalize the weights
            weights /= weights.sum()

            # Compute the new geometric median
            guess = (weights.unsqueeze(1) * points).sum(dim=0)

            # Early stopping condition
            if torch.norm(guess - prev) < tol:
                break

        return guess

    def eager_decode(top_indices, top_acts, W_dec):
        buf = top_acts.new_zeros(top_acts.shape[:-1] + (W_dec.shape[-1],))
        acts = buf.scatter_(dim=-1, index=top_indices, src=top_acts)
        return acts @ W_dec.mT

    decoder_impl = eager_decode

    class Sae(nn.Module):
        def __init__(self, d_in: int, cfg, device="cpu", dtype=None, *, decoder: bool = True):
            super().__init__()
            self.cfg = cfg
            self.d_in = d_in
            d_sae = cfg.num_latents or d_in * cfg.expansion_factor

            self.encoder = nn.Linear(d_in, d_sae, device=device, dtype=dtype)
            self.encoder.bias.data.zero_()

            self.W_dec = nn.Parameter(self.encoder.weight.data.clone()) if decoder else None
            if decoder and self.cfg.normalize_decoder:
                self.set_decoder_norm_to_unit_norm()

            self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype, device=device))

        @property
        def device(self):
            return self.encoder.weight.device

        @property
        def dtype(self):
            return self.encoder.weight.dtype

        def pre_acts(self, x):
            # Remove decoder bias as per Anthropic
            sae_in = x.to(self.dtype) - self.b_dec
            out = self.encoder(sae_in)

            return nn.functional.relu(out) if not self.cfg.signed else out

        def select_topk(self, latents):
            """Select the top-k latents."""
            if self.cfg.signed:
                _, top_indices = latents.abs().topk(self.cfg.k, sorted=False)
                top_acts = latents.gather(dim=-1, index=top_indices)

                return EncoderOutput(top_acts, top_indices)

            return EncoderOutput(*latents.topk(self.cfg.k, sorted=False))

        def decode(self, top_acts, top_indices):
            assert self.W_dec is not None, "Decoder weight was not initialized."

            y = decoder_impl(top_indices, top_acts.to(self.dtype), self.W_dec.mT)
            return y + self.b_dec

        def forward(self, x, dead_mask=None):
            pre_acts = self.pre_acts(x)
            top_acts, top_indices = self.select_topk(pre_acts)

            # Decode and compute residual
            sae_out = self.decode(top_acts, top_indices)
            e = sae_out - x

            # Used as a denominator for putting everything on a reasonable scale
            total_variance = (x - x.mean(0)).pow(2).sum(0)

            # Second decoder pass for AuxK loss
            if dead_mask is not None and (num_dead := int(dead_mask.sum())) > 0:
                # Heuristic from Appendix B.1 in the paper
                k_aux = x.shape[-1] // 2

                # Reduce the scale of the loss if there are a small number of dead latents
                scale = min(num_dead / k_aux, 1.0)
                k_aux = min(k_aux, num_dead)

                # Don't include living latents in this loss
                auxk_latents = torch.where(dead_mask[None], pre_acts, -torch.inf)

                # Top-k dead latents
                auxk_acts, auxk_indices = auxk_latents.topk(k_aux, sorted=False)

                # Encourage the top ~50% of dead latents to predict the residual of the
                # top k living latents
                e_hat = self.decode(auxk_acts, auxk_indices)
                auxk_loss = (e_hat - e).pow(2).sum(0)
                auxk_loss = scale * torch.mean(auxk_loss / total_variance)
            else:
                auxk_loss = sae_out.new_tensor(0.0)

            l2_loss = e.pow(2).sum(0)
            fvu = torch.mean(l2_loss / total_variance)

            return ForwardOutput(
                sae_out,
                top_acts,
                top_indices,
                fvu,
                auxk_loss,
            )

        @torch.no_grad()
        def set_decoder_norm_to_unit_norm(self):
            assert self.W_dec is not None, "Decoder weight was not initialized."

            eps = torch.finfo(self.W_dec.dtype).eps
            norm = torch.norm(self.W_dec.data, dim=1, keepdim=True)
            self.W_dec.data /= norm + eps

        @torch.no_grad()
        def remove_gradient_parallel_to_decoder_directions(self):
            assert self.W_dec is not None, "Decoder weight was not initialized."
            assert self.W_dec.grad is not None  # keep pyright happy

            parallel_component = torch.einsum("... d, ... d -> ...", self.W_dec.grad, self.W_dec.data)
            self.W_dec.grad -= torch.einsum("..., ... d -> ... d", parallel_component, self.W_dec.data)

    class SaeTrainer:
        """``SaeTrainer`` for one hookpoint fed its activations directly (no model hooks, DDP or wandb)."""

        def __init__(self, cfg, sae, lr):
            self.cfg = cfg
            self.saes = {"layer": sae}
            self.optimizer = torch.optim.Adam((p for s in self.saes.values() for p in s.parameters()), lr=lr)
            self.num_latents = sae.W_dec.shape[0]
            self.did_fire = defaultdict(lambda: torch.zeros(self.num_latents, dtype=torch.bool))
            self.num_tokens_since_fired = defaultdict(lambda: torch.zeros(self.num_latents, dtype=torch.long))

        def fit_step(self, i, hiddens, record):
            num_tokens_in_step = hiddens.shape[0]
            name, raw = "layer", self.saes["layer"]
            # On the first iteration, initialize the decoder bias
            if i == 0:
                median = geometric_median(hiddens)
                raw.b_dec.data = median.to(raw.dtype)
            # Make sure the W_dec is still unit-norm
            if raw.cfg.normalize_decoder:
                raw.set_decoder_norm_to_unit_norm()

            acc_steps = self.cfg.grad_acc_steps * self.cfg.micro_acc_steps
            for chunk in hiddens.chunk(self.cfg.micro_acc_steps):
                out = raw(
                    chunk,
                    dead_mask=(
                        self.num_tokens_since_fired[name]
                        > self.cfg.dead_feature_threshold
                        if self.cfg.auxk_alpha > 0
                        else None
                    ),
                )
                record["fvu"].append(float(out.fvu.detach()))
                record["auxk"].append(float(out.auxk_loss.detach()))

                loss = out.fvu + self.cfg.auxk_alpha * out.auxk_loss
                loss.div(acc_steps).backward()

                # Update the did_fire mask
                self.did_fire[name][out.latent_indices.flatten()] = True

            # Clip gradient norm independently for each SAE
            torch.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)

            if self.cfg.sae.normalize_decoder:
                for sae in self.saes.values():
                    sae.remove_gradient_parallel_to_decoder_directions()

            self.optimizer.step()
            self.optimizer.zero_grad()

            with torch.no_grad():
                # Update the dead feature mask
                for name, counts in self.num_tokens_since_fired.items():
                    counts += num_tokens_in_step
                    counts[self.did_fire[name]] = 0
                self.did_fire.clear()

            mask = self.num_tokens_since_fired[name] > self.cfg.dead_feature_threshold
            record["dead_pct"].append(mask.mean(dtype=torch.float32).item())

    return SimpleNamespace(Sae=Sae, SaeTrainer=SaeTrainer, geometric_median=geometric_median)


def eleuther_config(**options):
    """``SaeConfig`` and ``TrainConfig`` as attribute bags (tiny: 24 latents of 8 inputs, k 3)."""
    sae = SimpleNamespace(expansion_factor=3, normalize_decoder=True, num_latents=0, k=SAE_K, signed=False)
    return SimpleNamespace(sae=sae, grad_acc_steps=1, micro_acc_steps=2, auxk_alpha=1 / 32, dead_feature_threshold=6,
                           **options)
