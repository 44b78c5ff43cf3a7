"""The Reformer as lucidrains/reformer-pytorch writes it (LSH attention, its reversible LM), tiny, written once for
``torch`` being torch or kiln, with the sizes (``VOCAB``, ``SEQ``, ``BATCH``) that the four efficient-attention
programs share: the program of ``test_porting_probes_reformer_performer_longformer.py``, whose docstring says what it
covers."""

from __future__ import annotations

from functools import partial


VOCAB, SEQ, BATCH = 11, 16, 2


# ------------------------------------------------------------------------------------------------------------- reformer


def reformer(torch, nn, F, emb=8, depth=2, heads=2, bucket_size=4, n_hashes=2, causal=True,
             allow_duplicate_attention=True, attend_across_buckets=True, reversible=False):
    """A small causal Reformer LM around reformer_pytorch's ``LSHSelfAttention``: residual pre-norm blocks, or with
    ``reversible`` the reference's ``ReversibleSequence`` (``reversible.py``); ``forward(x, rotations)`` feeds each
    layer's random rotations
    (``rotations[layer]`` of shape ``(heads, dim_head, n_hashes, n_buckets // 2)``, one per attention chunk)."""
    Function = torch.autograd.Function

    def sort_key_val(t1, t2, dim=-1):
        values, indices = t1.sort(dim=dim)
        t2 = t2.expand_as(t1)
        return values, t2.gather(dim, indices)

    def batched_index_select(values, indices):
        last_dim = values.shape[-1]
        return values.gather(1, indices[:, :, None].expand(-1, -1, last_dim))

    def process_inputs_chunk(fn, *args, chunks=1):
        chunked_inputs = list(map(lambda x: x.chunk(chunks, dim=0), args))
        outputs = [fn(*input_pair) for input_pair in zip(*chunked_inputs)]
        return outputs

    def chunked_sum(tensor, chunks=1):
        *orig_size, last_dim = tensor.shape
        tensor = tensor.reshape(-1, last_dim)
        summed_tensors = [c.sum(dim=-1) for c in tensor.chunk(chunks, dim=0)]
        return torch.cat(summed_tensors, dim=0).reshape(orig_size)

    class LSHAttention(nn.Module):
        def __init__(self, dropout=0., bucket_size=64, n_hashes=8, causal=False, allow_duplicate_attention=True,
                     attend_across_buckets=True, rehash_each_round=True, drop_for_hash_rate=0.0,
                     random_rotations_per_head=False):
            super().__init__()
            if dropout >= 1.0:
                raise ValueError('Dropout rates must be lower than 1.')
            self.dropout = nn.Dropout(dropout)
            self.dropout_for_hash = nn.Dropout(drop_for_hash_rate)
            self.causal = causal
            self.n_hashes = n_hashes
            self.bucket_size = bucket_size
            self._allow_duplicate_attention = allow_duplicate_attention
            self._attend_across_buckets = attend_across_buckets
            self._rehash_each_round = rehash_each_round
            self._random_rotations_per_head = random_rotations_per_head

        def hash_vectors(self, n_buckets, vecs, fed_rotations=None):
            batch_size = vecs.shape[0]
            device = vecs.device
            assert n_buckets % 2 == 0
            rot_size = n_buckets
            rotations_shape = (
                batch_size if self._random_rotations_per_head else 1,
                vecs.shape[-1],
                self.n_hashes if self._rehash_each_round else 1,
                rot_size // 2)
            if fed_rotations is None:  # the reference's draw; the probe feeds it
                fed_rotations = torch.randn(rotations_shape, device=device)
            assert tuple(fed_rotations.shape) == rotations_shape
            random_rotations = fed_rotations.expand(batch_size, -1, -1, -1)
            dropped_vecs = self.dropout_for_hash(vecs)
            rotated_vecs = torch.einsum('btf,bfhi->bhti', dropped_vecs, random_rotations)
            rotated_vecs = torch.cat([rotated_vecs, -rotated_vecs], dim=-1)
            buckets = torch.argmax(rotated_vecs, axis=-1)
            # buckets is now (self.n_hashes, seqlen). Next we add offsets so that
            # bucket numbers from different hashing rounds don't overlap.
            offsets = torch.arange(self.n_hashes, device=device)
            offsets = torch.reshape(offsets * n_buckets, (1, -1, 1))
            buckets = torch.reshape(buckets + offsets, (batch_size, -1,))
            return buckets

        def forward(self, qk, v, query_len=None, fed_rotations=None):
            batch_size, seqlen, dim = qk.shape
            query_len = seqlen if query_len is None else query_len
            device = qk.device
            n_buckets = seqlen // self.bucket_size
            buckets = self.hash_vectors(n_buckets, qk, fed_rotations)
            assert int(buckets.shape[1]) == self.n_hashes * seqlen

            ticker = torch.arange(self.n_hashes * seqlen, device=device).unsqueeze(0).expand_as(buckets)
            buckets_and_t = seqlen * buckets + (ticker % seqlen)
            buckets_and_t = buckets_and_t.detach()

            # Hash-based sort ("s" at the start of variable names means "sorted")
            sbuckets_and_t, sticker = sort_key_val(buckets_and_t, ticker, dim=-1)
            _, undo_sort = sort_key_val(sticker, ticker, dim=-1)
            del ticker

            sbuckets_and_t = sbuckets_and_t.detach()
            sticker = sticker.detach()
            undo_sort = undo_sort.detach()

            st = (sticker % seqlen)
            sqk = batched_index_select(qk, st)
            sv = batched_index_select(v, st)

            # Split off a "bin" axis so that attention only occurs within chunks.
            chunk_size = self.n_hashes * n_buckets
            bq_t = bkv_t = torch.reshape(st, (batch_size, chunk_size, -1))
            bqk = torch.reshape(sqk, (batch_size, chunk_size, -1, dim))
            bv = torch.reshape(sv, (batch_size, chunk_size, -1, dim))
            bq_buckets = bkv_buckets = torch.reshape(sbuckets_and_t // seqlen, (batch_size, chunk_size, -1))

            bq = bqk
            bk = F.normalize(bqk, p=2, dim=-1)

            def look_one_back(x):
                x_extra = torch.cat([x[:, -1:, ...], x[:, :-1, ...]], dim=1)
                return torch.cat([x, x_extra], dim=2)

            bk = look_one_back(bk)
            bv = look_one_back(bv)
            bkv_t = look_one_back(bkv_t)
            bkv_buckets = look_one_back(bkv_buckets)

            # Dot-product attention.
            dots = torch.einsum('bhie,bhje->bhij', bq, bk) * (dim ** -0.5)

            # Causal masking
            if self.causal:
                mask = bq_t[:, :, :, None] < bkv_t[:, :, None, :].clamp(max=query_len - 1)
                dots.masked_fill_(mask, float('-inf'))
                del mask

            # Mask out attention to self except when no other targets are available.
            self_mask = bq_t[:, :, :, None] == bkv_t[:, :, None, :]
            dots.masked_fill_(self_mask, - 1e5)
            del self_mask

            # Mask out attention to other hash buckets.
            if not self._attend_across_buckets:
                bucket_mask = bq_buckets[:, :, :, None] != bkv_buckets[:, :, None, :]
                dots.masked_fill_(bucket_mask, float('-inf'))
                del bucket_mask

            # Don't double-count query-key pairs across multiple rounds of hashing.
            if not self._allow_duplicate_attention:
                locs1 = undo_sort // bq_t.shape[-1]
                locs2 = (locs1 + 1) % chunk_size
                if not self._attend_across_buckets:
                    locs1 = buckets * chunk_size + locs1
                    locs2 = buckets * chunk_size + locs2
                locs = torch.cat([
                    torch.reshape(locs1, (batch_size, self.n_hashes, seqlen)),
                    torch.reshape(locs2, (batch_size, self.n_hashes, seqlen)),
                ], 1).permute((0, 2, 1))

                slocs = batched_index_select(locs, st)
                b_locs = torch.reshape(slocs, (batch_size, chunk_size, -1, 2 * self.n_hashes))

                b_locs1 = b_locs[:, :, :, None, :self.n_hashes]

                bq_locs = b_locs1.expand(b_locs.shape[:3] + (2, self.n_hashes))
                bq_locs = torch.reshape(bq_locs, b_locs.shape)
                bkv_locs = look_one_back(b_locs)

                dup_counts = (bq_locs[:, :, :, None, :] == bkv_locs[:, :, None, :, :])
                # for memory considerations, chunk summation of last dimension for counting duplicates
                dup_counts = chunked_sum(dup_counts, chunks=(self.n_hashes * batch_size))
                dup_counts = dup_counts.detach()
                assert dup_counts.shape == dots.shape
                dots = dots - torch.log(dup_counts + 1e-9)
                del dup_counts

            # Softmax.
            dots_logsumexp = torch.logsumexp(dots, dim=-1, keepdim=True)
            dots = torch.exp(dots - dots_logsumexp)
            dots = self.dropout(dots)

            bo = torch.einsum('buij,buje->buie', dots, bv)
            so = torch.reshape(bo, (batch_size, -1, dim))
            slogits = torch.reshape(dots_logsumexp, (batch_size, -1,))

            class UnsortLogits(Function):
                @staticmethod
                def forward(ctx, so, slogits):
                    so = so.detach()
                    slogits = slogits.detach()
                    o = batched_index_select(so, undo_sort)
                    _, logits = sort_key_val(sticker, slogits, dim=-1)
                    return o, logits

                @staticmethod
                def backward(ctx, grad_x, grad_y):
                    so_grad = batched_index_select(grad_x, sticker)
                    _, slogits_grad = sort_key_val(buckets_and_t, grad_y, dim=-1)
                    return so_grad, slogits_grad

            o, logits = UnsortLogits.apply(so, slogits)
            o = torch.reshape(o, (batch_size, self.n_hashes, seqlen, dim))
            logits = torch.reshape(logits, (batch_size, self.n_hashes, seqlen, 1))

            if query_len != seqlen:
                o = o[:, :, 0:query_len]
                logits = logits[:, :, 0:query_len]

            if self.n_hashes == 1:
                out = o.squeeze(1)
            else:
                probs = torch.exp(logits - torch.logsumexp(logits, dim=1, keepdims=True))
                out = torch.sum(o * probs, dim=1)

            return out, buckets

    class LSHSelfAttention(nn.Module):
        def __init__(self, emb, heads=8, bucket_size=64, n_hashes=8, causal=False, attn_chunks=None,
                     random_rotations_per_head=False, attend_across_buckets=True, allow_duplicate_attention=True,
                     num_mem_kv=0, **kwargs):
            super().__init__()
            assert emb % heads == 0, 'dimensions must be divisible by number of heads'
            self.emb = emb
            self.heads = heads
            self.attn_chunks = heads if attn_chunks is None else attn_chunks
            self.toqk = nn.Linear(emb, emb, bias=False)
            self.tov = nn.Linear(emb, emb, bias=False)
            self.to_out = nn.Linear(emb, emb)
            self.bucket_size = bucket_size
            self.lsh_attn = LSHAttention(bucket_size=bucket_size, n_hashes=n_hashes, causal=causal,
                                         random_rotations_per_head=random_rotations_per_head,
                                         attend_across_buckets=attend_across_buckets,
                                         allow_duplicate_attention=allow_duplicate_attention, **kwargs)
            self.num_mem_kv = num_mem_kv
            self.mem_kv = nn.Parameter(torch.randn(1, num_mem_kv, emb, requires_grad=True))

        def forward(self, x, fed_rotations):
            b, t, e, h, m = *x.shape, self.heads, self.num_mem_kv
            assert t % self.bucket_size == 0, f'Sequence length needs to be divisible by target bucket size - {self.bucket_size}'

            x = torch.cat((x, self.mem_kv.expand(b, m, e)), dim=1)
            qk = self.toqk(x)
            v = self.tov(x)

            def merge_heads(v):
                return v.view(b, t + m, h, -1).transpose(1, 2).reshape(b * h, t + m, -1)

            def split_heads(v):
                return v.view(b, h, t, -1).transpose(1, 2).contiguous()

            qk = merge_heads(qk)
            v = merge_heads(v)

            def lsh_attn_fn(qk, v, fed_rotations):  # partial(self.lsh_attn, query_len=t), the rotations fed
                return self.lsh_attn(qk, v, query_len=t, fed_rotations=fed_rotations)

            # the fed rotations chunked with the inputs: chunk i hashes with rotations[i:i + 1]
            outputs = process_inputs_chunk(lsh_attn_fn, qk, v, fed_rotations, chunks=self.attn_chunks)
            attn_out = torch.cat([output for (output, _) in outputs], dim=0)

            out = split_heads(attn_out).view(b, t, e)

            return self.to_out(out)

    class FeedForward(nn.Module):
        def __init__(self, emb, mult=4):
            super().__init__()
            self.emb = emb
            self.proj_in = nn.Linear(emb, emb * mult)
            self.proj_out = nn.Linear(emb * mult, emb)

        def forward(self, x):
            x = self.proj_in(x)
            x = F.gelu(x)
            x = self.proj_out(x)
            return x

    class ReformerLM(nn.Module):
        def __init__(self, num_tokens, emb, depth, max_seq_len):
            super().__init__()
            self.token_emb = nn.Embedding(num_tokens, emb)
            self.pos_emb = nn.Embedding(max_seq_len, emb)
            self.layers = nn.ModuleList([nn.ModuleList([
                LSHSelfAttention(emb, heads, bucket_size, n_hashes, causal=causal,
                                 attend_across_buckets=attend_across_buckets,
                                 allow_duplicate_attention=allow_duplicate_attention),
                FeedForward(emb)]) for _ in range(depth)])
            self.norms = nn.ModuleList([nn.LayerNorm(emb) for _ in range(2 * depth)])
            self.to_logits = nn.Linear(emb, num_tokens)

        def forward(self, x, rotations):
            t = x.shape[1]
            x = self.token_emb(x) + self.pos_emb(torch.arange(t, device=x.device))
            for i, (attn, ff) in enumerate(self.layers):
                x = x + attn(self.norms[2 * i](x), rotations[i])
                x = x + ff(self.norms[2 * i + 1](x))
            return self.to_logits(x)

    if reversible:
        return reversible_reformer_lm(torch, nn, F, LSHSelfAttention, FeedForward, emb, depth, heads, bucket_size,
                                      n_hashes, causal)
    return ReformerLM(VOCAB, emb, depth, SEQ)


def reversible_reformer_lm(torch, nn, F, LSHSelfAttention, FeedForward, emb, depth, heads, bucket_size, n_hashes,
                           causal):
    """reformer_pytorch's ``Reformer`` on ``reversible.py`` as written: ``Deterministic`` (``torch.get_rng_state``,
    ``torch.random.fork_rng``, ``torch.cuda._initialized``, ``get_device_states``), ``ReversibleBlock`` (its forward
    under ``no_grad``, ``backward_pass`` recomputing ``f`` and ``g`` under ``enable_grad`` with ``y1.requires_grad =
    True`` and ``torch.autograd.backward``), ``_ReversibleFunction`` (an ``autograd.Function`` holding the blocks in
    ``ctx``), ``ReversibleSequence`` with ``send_signal`` (each ``f`` told its ``_depth``: it picks its fed rotations)."""
    # from torch.autograd.function import Function; from torch.utils.checkpoint import get_device_states, ...
    Function = torch.autograd.function.Function
    get_device_states, set_device_states = torch.utils.checkpoint.get_device_states, torch.utils.checkpoint.set_device_states

    class Deterministic(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.cpu_state = None
            self.cuda_in_fwd = None
            self.gpu_devices = None
            self.gpu_states = None

        def record_rng(self, *args):
            self.cpu_state = torch.get_rng_state()
            if torch.cuda._initialized:
                self.cuda_in_fwd = True
                self.gpu_devices, self.gpu_states = get_device_states(*args)

        def forward(self, *args, record_rng=False, set_rng=False, **kwargs):
            if record_rng:
                self.record_rng(*args)

            if not set_rng:
                return self.net(*args, **kwargs)

            rng_devices = []
            if self.cuda_in_fwd:
                rng_devices = self.gpu_devices

            with torch.random.fork_rng(devices=rng_devices, enabled=True):
                torch.set_rng_state(self.cpu_state)
                if self.cuda_in_fwd:
                    set_device_states(self.gpu_devices, self.gpu_states)
                return self.net(*args, **kwargs)

    class ReversibleBlock(nn.Module):
        def __init__(self, f, g, depth=None, send_signal=False):
            super().__init__()
            self.f = Deterministic(f)
            self.g = Deterministic(g)
            self.depth = depth
            self.send_signal = send_signal

        def forward(self, x, f_args={}, g_args={}):
            x1, x2 = torch.chunk(x, 2, dim=2)
            y1, y2 = None, None

            if self.send_signal:
                f_args['_reverse'] = g_args['_reverse'] = False
                f_args['_depth'] = g_args['_depth'] = self.depth

            with torch.no_grad():
                y1 = x1 + self.f(x2, record_rng=self.training, **f_args)
                y2 = x2 + self.g(y1, record_rng=self.training, **g_args)

            return torch.cat([y1, y2], dim=2)

        def backward_pass(self, y, dy, f_args={}, g_args={}):
            y1, y2 = torch.chunk(y, 2, dim=2)
            del y

            dy1, dy2 = torch.chunk(dy, 2, dim=2)
            del dy

            if self.send_signal:
                f_args['_reverse'] = g_args['_reverse'] = True
                f_args['_depth'] = g_args['_depth'] = self.depth

            with torch.enable_grad():
                y1.requires_grad = True
                gy1 = self.g(y1, set_rng=True, **g_args)
                torch.autograd.backward(gy1, dy2)

            with torch.no_grad():
                x2 = y2 - gy1
                del y2, gy1

                dx1 = dy1 + y1.grad
                del dy1
                y1.grad = None

            with torch.enable_grad():
                x2.requires_grad = True
                fx2 = self.f(x2, set_rng=True, **f_args)
                torch.autograd.backward(fx2, dx1, retain_graph=True)

            with torch.no_grad():
                x1 = y1 - fx2
                del y1, fx2

                dx2 = dy2 + x2.grad
                del dy2
                x2.grad = None

                x = torch.cat([x1, x2.detach()], dim=2)
                dx = torch.cat([dx1, dx2], dim=2)

            return x, dx

    class IrreversibleBlock(nn.Module):
        def __init__(self, f, g):
            super().__init__()
            self.f = f
            self.g = g

        def forward(self, x, f_args, g_args):
            x1, x2 = torch.chunk(x, 2, dim=2)
            y1 = x1 + self.f(x2, **f_args)
            y2 = x2 + self.g(y1, **g_args)
            return torch.cat([y1, y2], dim=2)

    class _ReversibleFunction(Function):
        @staticmethod
        def forward(ctx, x, blocks, kwargs):
            ctx.kwargs = kwargs
            for block in blocks:
                x = block(x, **kwargs)
            ctx.y = x.detach()
            ctx.blocks = blocks
            return x

        @staticmethod
        def backward(ctx, dy):
            y = ctx.y
            kwargs = ctx.kwargs
            for block in ctx.blocks[::-1]:
                y, dy = block.backward_pass(y, dy, **kwargs)
            return dy, None, None

    class ReversibleSequence(nn.Module):
        def __init__(self, blocks, layer_dropout=0., reverse_thres=0, send_signal=False):
            super().__init__()
            self.layer_dropout = layer_dropout
            self.reverse_thres = reverse_thres

            self.blocks = nn.ModuleList([ReversibleBlock(f, g, depth, send_signal) for depth, (f, g) in enumerate(blocks)])
            self.irrev_blocks = nn.ModuleList([IrreversibleBlock(f=f, g=g) for f, g in blocks])

        def forward(self, x, arg_route=(True, False), **kwargs):
            reverse = x.shape[1] > self.reverse_thres
            blocks = self.blocks if reverse else self.irrev_blocks

            f_args, g_args = map(lambda route: kwargs if route else {}, arg_route)
            block_kwargs = {'f_args': f_args, 'g_args': g_args}

            if not reverse:
                for block in blocks:
                    x = block(x, **block_kwargs)
                return x

            return _ReversibleFunction.apply(x, blocks, block_kwargs)

    class PreNorm(nn.Module):
        def __init__(self, norm_class, dim, fn):
            super().__init__()
            self.norm = norm_class(dim)
            self.fn = fn

        def forward(self, x, **kwargs):
            x = self.norm(x)
            return self.fn(x, **kwargs)

    class Chunk(nn.Module):
        def __init__(self, chunks, fn, along_dim=-1):
            super().__init__()
            self.dim = along_dim
            self.chunks = chunks
            self.fn = fn

        def forward(self, x, **kwargs):
            if self.chunks == 1:
                return self.fn(x, **kwargs)
            chunks = x.chunk(self.chunks, dim=self.dim)
            return torch.cat([self.fn(c, **kwargs) for c in chunks], dim=self.dim)

    class FedRotations(nn.Module):
        """The probe's feed: the layer's own rotations of the ``rotations`` routed to every ``f``, by its ``_depth``
        (the reference draws them inside ``hash_vectors``, and ``Deterministic`` replays the draw in backward)."""

        def __init__(self, attn):
            super().__init__()
            self.attn = attn

        def forward(self, x, rotations, _reverse=False, _depth=0):
            return self.attn(x, rotations[_depth])

    class FeedForwardTakingSignals(FeedForward):
        def forward(self, x, **kwargs):  # the reference's FeedForward.forward(self, x, **kwargs)
            return super().forward(x)

    class Reformer(nn.Module):
        def __init__(self, dim, depth, heads=8, bucket_size=64, n_hashes=8, ff_chunks=100, causal=False,
                     reverse_thres=0):
            super().__init__()
            self.dim = dim
            self.depth = depth
            blocks = []
            norm_type = nn.LayerNorm
            residual_fn_wrapper = partial(PreNorm, norm_type, dim)
            for ind in range(depth):
                attn = FedRotations(LSHSelfAttention(dim, heads, bucket_size, n_hashes, causal=causal))
                parallel_net = Chunk(ff_chunks, FeedForwardTakingSignals(dim), along_dim=-2)
                f = residual_fn_wrapper(attn)
                g = residual_fn_wrapper(parallel_net)
                blocks.append(nn.ModuleList([f, g]))
            self.layers = ReversibleSequence(nn.ModuleList(blocks), reverse_thres=reverse_thres, send_signal=True)

        def forward(self, x, **kwargs):
            x = torch.cat([x, x], dim=-1)
            x = self.layers(x, **kwargs)
            return torch.stack(x.chunk(2, dim=-1)).mean(dim=0)

    class ReformerLM(nn.Module):
        def __init__(self, num_tokens, dim, depth, max_seq_len):
            super().__init__()
            self.token_emb = nn.Embedding(num_tokens, dim)
            self.pos_emb = nn.Embedding(max_seq_len, dim)
            self.reformer = Reformer(dim, depth, heads=heads, bucket_size=bucket_size, n_hashes=n_hashes,
                                     ff_chunks=2, causal=causal)
            self.norm = nn.LayerNorm(dim)
            self.out = nn.Linear(dim, num_tokens)

        def forward(self, x, rotations):
            x = self.token_emb(x) + self.pos_emb(torch.arange(x.shape[1], device=x.device))
            x = self.reformer(x, rotations=rotations)
            return self.out(self.norm(x))

    return ReformerLM(VOCAB, emb, depth, SEQ)


def reformer_duplicates_masked(torch, nn, F):
    """The Reformer with ``allow_duplicate_attention=False`` and ``attend_across_buckets=False``."""
    return reformer(torch, nn, F, allow_duplicate_attention=False, attend_across_buckets=False)


def reversible_reformer(torch, nn, F):
    return reformer(torch, nn, F, reversible=True)
