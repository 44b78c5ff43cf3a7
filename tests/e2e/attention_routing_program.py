"""Attention, Learn to Solve Routing Problems! (Kool et al.): wouterkool/attention-learn-to-route's
``nets/graph_encoder.py``, ``nets/attention_model.py`` (its TSP paths), ``nets/critic_network.py``,
``problems/tsp/problem_tsp.py`` and ``state_tsp.py``, ``utils/boolmask.py``, ``utils/functions.py``'s ``move_to``,
``do_batch_rep`` and ``sample_many``, ``utils/log_utils.py``'s ``log_values``, ``baselines.py``, ``train.py`` and
``run.py``'s main as written (comments and prints shortened, beam search, ``CachedLookup`` and the VRP/OP/PCTSP
branches left out), for ``torch`` being torch or kiln: the program of ``test_porting_probes_attention_routing.py``,
whose docstring says what it covers."""

from __future__ import annotations

import copy
import functools
import math
import os
import pickle
import time
from typing import NamedTuple

import numpy as np
from scipy.stats import ttest_rel


def per_library(make):
    """``make(torch, ...)`` run once per library, the classes it makes named at this module's top level
    (``AttentionModel_kiln``) so that pickle finds them: ``RolloutBaseline.state_dict`` puts the whole baseline model,
    and so its classes, into the checkpoint ``torch.save`` writes (the repository's classes live at module level)."""
    made = {}

    @functools.wraps(make)
    def once(torch, *args):
        if torch.__name__ not in made:
            made[torch.__name__] = namespace = make(torch, *args)
            for value in namespace.values():
                if isinstance(value, type):
                    value.__qualname__ = f"{value.__name__}_{torch.__name__}"
                    globals()[value.__qualname__] = value
        return made[torch.__name__]

    return once


def boolmask(torch, F):
    """utils/boolmask.py: a visited mask packed into int64 words (``visited_dtype=torch.int64``) and unpacked."""

    def _pad_mask(mask):
        # By taking -size % 8, we get 0 if exactly divisible by 8
        # and required padding otherwise (i.e. -1 % 8 = 7 pad)
        pad = -mask.size(-1) % 8
        if pad != 0:
            mask = F.pad(mask, [0, pad])
        return mask, mask.size(-1) // 8

    def _mask_bool2byte(mask):
        assert mask.dtype == torch.uint8
        # assert (mask <= 1).all()  # Precondition, disabled for efficiency
        mask, d = _pad_mask(mask)
        return (mask.view(*mask.size()[:-1], d, 8) << torch.arange(8, out=mask.new())).sum(-1, dtype=torch.uint8)

    def _mask_byte2long(mask):
        assert mask.dtype == torch.uint8
        mask, d = _pad_mask(mask)
        # Note this corresponds to a temporary factor 8
        # memory overhead by converting to long before summing
        # Alternatively, aggregate using for loop
        return (mask.view(*mask.size()[:-1], d, 8).long() << (torch.arange(8, dtype=torch.int64, device=mask.device) * 8)).sum(-1)

    def mask_bool2long(mask):
        assert mask.dtype == torch.uint8
        return _mask_byte2long(_mask_bool2byte(mask))

    def _mask_long2byte(mask, n=None):
        if n is None:
            n = 8 * mask.size(-1)
        return (mask[..., None] >> (torch.arange(8, out=mask.new()) * 8))[..., :n].to(torch.uint8).view(*mask.size()[:-1], -1)[..., :n]

    def _mask_byte2bool(mask, n=None):
        if n is None:
            n = 8 * mask.size(-1)
        return (mask[..., None] & (mask.new_ones(8) << torch.arange(8, out=mask.new()) * 1)).view(*mask.size()[:-1], -1)[..., :n] > 0

    def mask_long2bool(mask, n=None):
        assert mask.dtype == torch.int64
        return _mask_byte2bool(_mask_long2byte(mask), n=n)

    def mask_long_scatter(mask, values, check_unset=True):
        """Sets values in mask in dimension -1 with arbitrary batch dimensions. If values contains -1, nothing is set."""
        assert mask.size()[:-1] == values.size()
        rng = torch.arange(mask.size(-1), out=mask.new())
        values_ = values[..., None]  # Need to broadcast up do mask dim
        # This indicates in which value of the mask a bit should be set
        where = (values_ >= (rng * 64)) & (values_ < ((rng + 1) * 64))
        # Optional: check that bit is not already set
        assert not (check_unset and ((mask & (where.long() << (values_ % 64))) > 0).any())
        # Set bit by shifting a 1 to the correct position
        # (% not strictly necessary as bitshift is cyclic)
        # since where is 0 if no value needs to be set, the bitshift has no effect
        return mask | (where.long() << (values_ % 64))

    return dict(mask_bool2long=mask_bool2long, mask_long2bool=mask_long2bool, mask_long_scatter=mask_long_scatter)


@per_library
def graph_encoder(torch, nn):
    """nets/graph_encoder.py: ``SkipConnection``, ``MultiHeadAttention``, ``Normalization``,
    ``MultiHeadAttentionLayer``, ``GraphAttentionEncoder``."""

    class SkipConnection(nn.Module):

        def __init__(self, module):
            super(SkipConnection, self).__init__()
            self.module = module

        def forward(self, input):
            return input + self.module(input)

    class MultiHeadAttention(nn.Module):
        def __init__(
                self,
                n_heads,
                input_dim,
                embed_dim,
                val_dim=None,
                key_dim=None
        ):
            super(MultiHeadAttention, self).__init__()

            if val_dim is None:
                val_dim = embed_dim // n_heads
            if key_dim is None:
                key_dim = val_dim

            self.n_heads = n_heads
            self.input_dim = input_dim
            self.embed_dim = embed_dim
            self.val_dim = val_dim
            self.key_dim = key_dim

            self.norm_factor = 1 / math.sqrt(key_dim)  # See Attention is all you need

            self.W_query = nn.Parameter(torch.Tensor(n_heads, input_dim, key_dim))
            self.W_key = nn.Parameter(torch.Tensor(n_heads, input_dim, key_dim))
            self.W_val = nn.Parameter(torch.Tensor(n_heads, input_dim, val_dim))

            self.W_out = nn.Parameter(torch.Tensor(n_heads, val_dim, embed_dim))

            self.init_parameters()

        def init_parameters(self):

            for param in self.parameters():
                stdv = 1. / math.sqrt(param.size(-1))
                param.data.uniform_(-stdv, stdv)

        def forward(self, q, h=None, mask=None):
            """q: queries (batch_size, n_query, input_dim); h: data (batch_size, graph_size, input_dim); mask:
            (batch_size, n_query, graph_size), 1 where attention is not possible."""
            if h is None:
                h = q  # compute self-attention

            # h should be (batch_size, graph_size, input_dim)
            batch_size, graph_size, input_dim = h.size()
            n_query = q.size(1)
            assert q.size(0) == batch_size
            assert q.size(2) == input_dim
            assert input_dim == self.input_dim, "Wrong embedding dimension of input"

            hflat = h.contiguous().view(-1, input_dim)
            qflat = q.contiguous().view(-1, input_dim)

            # last dimension can be different for keys and values
            shp = (self.n_heads, batch_size, graph_size, -1)
            shp_q = (self.n_heads, batch_size, n_query, -1)

            # Calculate queries, (n_heads, n_query, graph_size, key/val_size)
            Q = torch.matmul(qflat, self.W_query).view(shp_q)
            # Calculate keys and values (n_heads, batch_size, graph_size, key/val_size)
            K = torch.matmul(hflat, self.W_key).view(shp)
            V = torch.matmul(hflat, self.W_val).view(shp)

            # Calculate compatibility (n_heads, batch_size, n_query, graph_size)
            compatibility = self.norm_factor * torch.matmul(Q, K.transpose(2, 3))

            # Optionally apply mask to prevent attention
            if mask is not None:
                mask = mask.view(1, batch_size, n_query, graph_size).expand_as(compatibility)
                compatibility[mask] = -np.inf

            attn = torch.softmax(compatibility, dim=-1)

            # If there are nodes with no neighbours then softmax returns nan so we fix them to 0
            if mask is not None:
                attnc = attn.clone()
                attnc[mask] = 0
                attn = attnc

            heads = torch.matmul(attn, V)

            out = torch.mm(
                heads.permute(1, 2, 0, 3).contiguous().view(-1, self.n_heads * self.val_dim),
                self.W_out.view(-1, self.embed_dim)
            ).view(batch_size, n_query, self.embed_dim)

            return out

    class Normalization(nn.Module):

        def __init__(self, embed_dim, normalization='batch'):
            super(Normalization, self).__init__()

            normalizer_class = {
                'batch': nn.BatchNorm1d,
                'instance': nn.InstanceNorm1d
            }.get(normalization, None)

            self.normalizer = normalizer_class(embed_dim, affine=True)

            # Normalization by default initializes affine parameters with bias 0 and weight unif(0,1) which is too large!
            # self.init_parameters()

        def init_parameters(self):

            for name, param in self.named_parameters():
                stdv = 1. / math.sqrt(param.size(-1))
                param.data.uniform_(-stdv, stdv)

        def forward(self, input):

            if isinstance(self.normalizer, nn.BatchNorm1d):
                return self.normalizer(input.view(-1, input.size(-1))).view(*input.size())
            elif isinstance(self.normalizer, nn.InstanceNorm1d):
                return self.normalizer(input.permute(0, 2, 1)).permute(0, 2, 1)
            else:
                assert self.normalizer is None, "Unknown normalizer type"
                return input

    class MultiHeadAttentionLayer(nn.Sequential):

        def __init__(
                self,
                n_heads,
                embed_dim,
                feed_forward_hidden=512,
                normalization='batch',
        ):
            super(MultiHeadAttentionLayer, self).__init__(
                SkipConnection(
                    MultiHeadAttention(
                        n_heads,
                        input_dim=embed_dim,
                        embed_dim=embed_dim
                    )
                ),
                Normalization(embed_dim, normalization),
                SkipConnection(
                    nn.Sequential(
                        nn.Linear(embed_dim, feed_forward_hidden),
                        nn.ReLU(),
                        nn.Linear(feed_forward_hidden, embed_dim)
                    ) if feed_forward_hidden > 0 else nn.Linear(embed_dim, embed_dim)
                ),
                Normalization(embed_dim, normalization)
            )

    class GraphAttentionEncoder(nn.Module):
        def __init__(
                self,
                n_heads,
                embed_dim,
                n_layers,
                node_dim=None,
                normalization='batch',
                feed_forward_hidden=512
        ):
            super(GraphAttentionEncoder, self).__init__()

            # To map input to embedding space
            self.init_embed = nn.Linear(node_dim, embed_dim) if node_dim is not None else None

            self.layers = nn.Sequential(*(
                MultiHeadAttentionLayer(n_heads, embed_dim, feed_forward_hidden, normalization)
                for _ in range(n_layers)
            ))

        def forward(self, x, mask=None):

            assert mask is None, "TODO mask not yet supported!"

            # Batch multiply to get initial embeddings of nodes
            h = self.init_embed(x.view(-1, x.size(-1))).view(*x.size()[:2], -1) if self.init_embed is not None else x

            h = self.layers(h)

            return (
                h,  # (batch_size, graph_size, embed_dim)
                h.mean(dim=1),  # average to get embedding of graph, (batch_size, embed_dim)
            )

    return dict(SkipConnection=SkipConnection, MultiHeadAttention=MultiHeadAttention, Normalization=Normalization,
                MultiHeadAttentionLayer=MultiHeadAttentionLayer, GraphAttentionEncoder=GraphAttentionEncoder)


def functions(torch, F):
    """utils/functions.py's ``move_to``, ``do_batch_rep`` and ``sample_many``."""

    def move_to(var, device):
        if isinstance(var, dict):
            return {k: move_to(v, device) for k, v in var.items()}
        return var.to(device)

    def do_batch_rep(v, n):
        if isinstance(v, dict):
            return {k: do_batch_rep(v_, n) for k, v_ in v.items()}
        elif isinstance(v, list):
            return [do_batch_rep(v_, n) for v_ in v]
        elif isinstance(v, tuple):
            return tuple(do_batch_rep(v_, n) for v_ in v)

        return v[None, ...].expand(n, *v.size()).contiguous().view(-1, *v.size()[1:])

    def sample_many(inner_func, get_cost_func, input, batch_rep=1, iter_rep=1):
        """input: (batch_size, graph_size, node_dim) input node features"""
        input = do_batch_rep(input, batch_rep)

        costs = []
        pis = []
        for i in range(iter_rep):
            _log_p, pi = inner_func(input)
            # pi.view(-1, batch_rep, pi.size(-1))
            cost, mask = get_cost_func(input, pi)

            costs.append(cost.view(batch_rep, -1).t())
            pis.append(pi.view(batch_rep, -1, pi.size(-1)).transpose(0, 1))

        max_length = max(pi.size(-1) for pi in pis)
        # (batch_size * batch_rep, iter_rep, max_length) => (batch_size, batch_rep * iter_rep, max_length)
        pis = torch.cat(
            [F.pad(pi, (0, max_length - pi.size(-1))) for pi in pis],
            1
        )  # .view(embeddings.size(0), batch_rep * iter_rep, max_length)
        costs = torch.cat(costs, 1)

        # (batch_size)
        mincosts, argmincosts = costs.min(-1)
        # (batch_size, minlength)
        minpis = pis[torch.arange(pis.size(0), out=argmincosts.new()), argmincosts]

        return minpis, mincosts

    return dict(move_to=move_to, do_batch_rep=do_batch_rep, sample_many=sample_many)


@per_library
def problem_tsp(torch, F):
    """problems/tsp: ``StateTSP``, ``TSP`` and ``TSPDataset`` (its pickle branch; ``make_dataset`` is given by the
    test, the random branch drawing from each library's generator)."""
    masks = boolmask(torch, F)
    mask_long2bool, mask_long_scatter = masks["mask_long2bool"], masks["mask_long_scatter"]

    class StateTSP(NamedTuple):
        # Fixed input
        loc: torch.Tensor
        dist: torch.Tensor

        # If this state contains multiple copies (i.e. beam search) for the same instance, then for memory efficiency
        # the loc and dist tensors are not kept multiple times, so we need to use the ids to index the correct rows.
        ids: torch.Tensor  # Keeps track of original fixed data index of rows

        # State
        first_a: torch.Tensor
        prev_a: torch.Tensor
        visited_: torch.Tensor  # Keeps track of nodes that have been visited
        lengths: torch.Tensor
        cur_coord: torch.Tensor
        i: torch.Tensor  # Keeps track of step

        @property
        def visited(self):
            if self.visited_.dtype == torch.uint8:
                return self.visited_
            else:
                return mask_long2bool(self.visited_, n=self.loc.size(-2))

        def __getitem__(self, key):
            assert torch.is_tensor(key) or isinstance(key, slice)  # If tensor, idx all tensors by this tensor:
            return self._replace(
                ids=self.ids[key],
                first_a=self.first_a[key],
                prev_a=self.prev_a[key],
                visited_=self.visited_[key],
                lengths=self.lengths[key],
                cur_coord=self.cur_coord[key] if self.cur_coord is not None else None,
            )

        @staticmethod
        def initialize(loc, visited_dtype=torch.uint8):

            batch_size, n_loc, _ = loc.size()
            prev_a = torch.zeros(batch_size, 1, dtype=torch.long, device=loc.device)
            return StateTSP(
                loc=loc,
                dist=(loc[:, :, None, :] - loc[:, None, :, :]).norm(p=2, dim=-1),
                ids=torch.arange(batch_size, dtype=torch.int64, device=loc.device)[:, None],  # Add steps dimension
                first_a=prev_a,
                prev_a=prev_a,
                # Keep visited with depot so we can scatter efficiently (if there is an action for depot)
                visited_=(  # Visited as mask is easier to understand, as long more memory efficient
                    torch.zeros(
                        batch_size, 1, n_loc,
                        dtype=torch.uint8, device=loc.device
                    )
                    if visited_dtype == torch.uint8
                    else torch.zeros(batch_size, 1, (n_loc + 63) // 64, dtype=torch.int64, device=loc.device)  # Ceil
                ),
                lengths=torch.zeros(batch_size, 1, device=loc.device),
                cur_coord=None,
                i=torch.zeros(1, dtype=torch.int64, device=loc.device)  # Vector with length num_steps
            )

        def get_final_cost(self):

            assert self.all_finished()
            # assert self.visited_.

            return self.lengths + (self.loc[self.ids, self.first_a, :] - self.cur_coord).norm(p=2, dim=-1)

        def update(self, selected):

            # Update the state
            prev_a = selected[:, None]  # Add dimension for step

            # Add the length
            cur_coord = self.loc[self.ids, prev_a]
            lengths = self.lengths
            if self.cur_coord is not None:  # Don't add length for first action (selection of start node)
                lengths = self.lengths + (cur_coord - self.cur_coord).norm(p=2, dim=-1)  # (batch_dim, 1)

            # Update should only be called with just 1 parallel step, in which case we can check this way if we should update
            first_a = prev_a if self.i.item() == 0 else self.first_a

            if self.visited_.dtype == torch.uint8:
                # Add one dimension since we write a single value
                visited_ = self.visited_.scatter(-1, prev_a[:, :, None], 1)
            else:
                visited_ = mask_long_scatter(self.visited_, prev_a)

            return self._replace(first_a=first_a, prev_a=prev_a, visited_=visited_,
                                 lengths=lengths, cur_coord=cur_coord, i=self.i + 1)

        def all_finished(self):
            # Exactly n steps
            return self.i.item() >= self.loc.size(-2)

        def get_current_node(self):
            return self.prev_a

        def get_mask(self):
            return self.visited > 0  # Hacky way to return bool or uint8 depending on pytorch version

        def get_nn(self, k=None):
            # Insert step dimension
            # Nodes already visited get inf so they do not make it
            if k is None:
                k = self.loc.size(-2) - self.i.item()  # Number of remaining
            return (self.dist[self.ids, :, :] + self.visited.float()[:, :, None, :] * 1e6).topk(k, dim=-1, largest=False)[1]

        def construct_solutions(self, actions):
            return actions

    class TSP(object):

        NAME = 'tsp'

        @staticmethod
        def get_costs(dataset, pi):
            # Check that tours are valid, i.e. contain 0 to n -1
            assert (
                torch.arange(pi.size(1), out=pi.data.new()).view(1, -1).expand_as(pi) ==
                pi.data.sort(1)[0]
            ).all(), "Invalid tour"

            # Gather dataset in order of tour
            d = dataset.gather(1, pi.unsqueeze(-1).expand_as(dataset))

            # Length is distance (L2-norm of difference) from each next location from its prev and of last from first
            return (d[:, 1:] - d[:, :-1]).norm(p=2, dim=2).sum(1) + (d[:, 0] - d[:, -1]).norm(p=2, dim=1), None

        @staticmethod
        def make_state(*args, **kwargs):
            return StateTSP.initialize(*args, **kwargs)

    class TSPDataset(torch.utils.data.Dataset):

        def __init__(self, filename=None, size=50, num_samples=1000000, offset=0, distribution=None):
            super(TSPDataset, self).__init__()

            self.data_set = []
            if filename is not None:
                assert os.path.splitext(filename)[1] == '.pkl'

                with open(filename, 'rb') as f:
                    data = pickle.load(f)
                    self.data = [torch.FloatTensor(row) for row in (data[offset:offset+num_samples])]
            else:
                # Sample points randomly in [0, 1] square
                self.data = [torch.FloatTensor(size, 2).uniform_(0, 1) for i in range(num_samples)]

            self.size = len(self.data)

        def __len__(self):
            return self.size

        def __getitem__(self, idx):
            return self.data[idx]

    return dict(StateTSP=StateTSP, TSP=TSP, TSPDataset=TSPDataset)


@per_library
def attention_model(torch, nn, F):
    """nets/attention_model.py: ``set_decode_type``, ``AttentionModelFixed`` and ``AttentionModel`` (the TSP paths)."""
    GraphAttentionEncoder = graph_encoder(torch, nn)["GraphAttentionEncoder"]
    sample_many = functions(torch, F)["sample_many"]
    checkpoint = torch.utils.checkpoint.checkpoint
    DataParallel = torch.nn.DataParallel

    def set_decode_type(model, decode_type):
        if isinstance(model, DataParallel):
            model = model.module
        model.set_decode_type(decode_type)

    class AttentionModelFixed(NamedTuple):
        """Context for AttentionModel decoder that is fixed during decoding so can be precomputed/cached. This class
        allows for efficient indexing of multiple Tensors at once."""
        node_embeddings: torch.Tensor
        context_node_projected: torch.Tensor
        glimpse_key: torch.Tensor
        glimpse_val: torch.Tensor
        logit_key: torch.Tensor

        def __getitem__(self, key):
            assert torch.is_tensor(key) or isinstance(key, slice)
            return AttentionModelFixed(
                node_embeddings=self.node_embeddings[key],
                context_node_projected=self.context_node_projected[key],
                glimpse_key=self.glimpse_key[:, key],  # dim 0 are the heads
                glimpse_val=self.glimpse_val[:, key],  # dim 0 are the heads
                logit_key=self.logit_key[key]
            )

    class AttentionModel(nn.Module):

        def __init__(self,
                     embedding_dim,
                     hidden_dim,
                     problem,
                     n_encode_layers=2,
                     tanh_clipping=10.,
                     mask_inner=True,
                     mask_logits=True,
                     normalization='batch',
                     n_heads=8,
                     checkpoint_encoder=False,
                     shrink_size=None):
            super(AttentionModel, self).__init__()

            self.embedding_dim = embedding_dim
            self.hidden_dim = hidden_dim
            self.n_encode_layers = n_encode_layers
            self.decode_type = None
            self.temp = 1.0
            self.allow_partial = problem.NAME == 'sdvrp'
            self.is_vrp = problem.NAME == 'cvrp' or problem.NAME == 'sdvrp'
            self.is_orienteering = problem.NAME == 'op'
            self.is_pctsp = problem.NAME == 'pctsp'

            self.tanh_clipping = tanh_clipping

            self.mask_inner = mask_inner
            self.mask_logits = mask_logits

            self.problem = problem
            self.n_heads = n_heads
            self.checkpoint_encoder = checkpoint_encoder
            self.shrink_size = shrink_size

            # TSP (the other problems' context and depot embeddings left out)
            assert problem.NAME == "tsp", "Unsupported problem: {}".format(problem.NAME)
            step_context_dim = 2 * embedding_dim  # Embedding of first and last node
            node_dim = 2  # x, y

            # Learned input symbols for first action
            self.W_placeholder = nn.Parameter(torch.Tensor(2 * embedding_dim))
            self.W_placeholder.data.uniform_(-1, 1)  # Placeholder should be in range of activations

            self.init_embed = nn.Linear(node_dim, embedding_dim)

            self.embedder = GraphAttentionEncoder(
                n_heads=n_heads,
                embed_dim=embedding_dim,
                n_layers=self.n_encode_layers,
                normalization=normalization
            )

            # For each node we compute (glimpse key, glimpse value, logit key) so 3 * embedding_dim
            self.project_node_embeddings = nn.Linear(embedding_dim, 3 * embedding_dim, bias=False)
            self.project_fixed_context = nn.Linear(embedding_dim, embedding_dim, bias=False)
            self.project_step_context = nn.Linear(step_context_dim, embedding_dim, bias=False)
            assert embedding_dim % n_heads == 0
            # Note n_heads * val_dim == embedding_dim so input to project_out is embedding_dim
            self.project_out = nn.Linear(embedding_dim, embedding_dim, bias=False)

        def set_decode_type(self, decode_type, temp=None):
            self.decode_type = decode_type
            if temp is not None:  # Do not change temperature if not provided
                self.temp = temp

        def forward(self, input, return_pi=False):
            """input: (batch_size, graph_size, node_dim) input node features."""

            if self.checkpoint_encoder and self.training:  # Only checkpoint if we need gradients
                embeddings, _ = checkpoint(self.embedder, self._init_embed(input))
            else:
                embeddings, _ = self.embedder(self._init_embed(input))

            _log_p, pi = self._inner(input, embeddings)

            cost, mask = self.problem.get_costs(input, pi)
            # Log likelyhood is calculated within the model since returning it per action does not work well with
            # DataParallel since sequences can be of different lengths
            ll = self._calc_log_likelihood(_log_p, pi, mask)
            if return_pi:
                return cost, ll, pi

            return cost, ll

        def _calc_log_likelihood(self, _log_p, a, mask):

            # Get log_p corresponding to selected actions
            log_p = _log_p.gather(2, a.unsqueeze(-1)).squeeze(-1)

            # Optional: mask out actions irrelevant to objective so they do not get reinforced
            if mask is not None:
                log_p[mask] = 0

            assert (log_p > -1000).data.all(), "Logprobs should not be -inf, check sampling procedure!"

            # Calculate log_likelihood
            return log_p.sum(1)

        def _init_embed(self, input):
            # TSP
            return self.init_embed(input)

        def _inner(self, input, embeddings):

            outputs = []
            sequences = []

            state = self.problem.make_state(input)

            # Compute keys, values for the glimpse and keys for the logits once as they can be reused in every step
            fixed = self._precompute(embeddings)

            batch_size = state.ids.size(0)

            # Perform decoding steps
            i = 0
            while not (self.shrink_size is None and state.all_finished()):

                if self.shrink_size is not None:
                    unfinished = torch.nonzero(state.get_finished() == 0)
                    if len(unfinished) == 0:
                        break
                    unfinished = unfinished[:, 0]
                    # Check if we can shrink by at least shrink_size and if this leaves at least 16
                    # (otherwise batch norm will not work well and it is inefficient anyway)
                    if 16 <= len(unfinished) <= state.ids.size(0) - self.shrink_size:
                        # Filter states
                        state = state[unfinished]
                        fixed = fixed[unfinished]

                log_p, mask = self._get_log_p(fixed, state)

                # Select the indices of the next nodes in the sequences, result (batch_size) long
                selected = self._select_node(log_p.exp()[:, 0, :], mask[:, 0, :])  # Squeeze out steps dimension

                state = state.update(selected)

                # Now make log_p, selected desired output size by 'unshrinking'
                if self.shrink_size is not None and state.ids.size(0) < batch_size:
                    log_p_, selected_ = log_p, selected
                    log_p = log_p_.new_zeros(batch_size, *log_p_.size()[1:])
                    selected = selected_.new_zeros(batch_size)

                    log_p[state.ids[:, 0]] = log_p_
                    selected[state.ids[:, 0]] = selected_

                # Collect output of step
                outputs.append(log_p[:, 0, :])
                sequences.append(selected)

                i += 1

            # Collected lists, return Tensor
            return torch.stack(outputs, 1), torch.stack(sequences, 1)

        def sample_many(self, input, batch_rep=1, iter_rep=1):
            """input: (batch_size, graph_size, node_dim) input node features"""
            # Bit ugly but we need to pass the embeddings as well.
            # Making a tuple will not work with the problem.get_cost function
            return sample_many(
                lambda input: self._inner(*input),  # Need to unpack tuple into arguments
                lambda input, pi: self.problem.get_costs(input[0], pi),  # Don't need embeddings as input to get_costs
                (input, self.embedder(self._init_embed(input))[0]),  # Pack input with embeddings (additional input)
                batch_rep, iter_rep
            )

        def _select_node(self, probs, mask):

            assert (probs == probs).all(), "Probs should not contain any nans"

            if self.decode_type == "greedy":
                _, selected = probs.max(1)
                assert not mask.gather(1, selected.unsqueeze(
                    -1)).data.any(), "Decode greedy: infeasible action has maximum probability"

            elif self.decode_type == "sampling":
                selected = probs.multinomial(1).squeeze(1)

                # Check if sampling went OK, can go wrong due to bug on GPU
                # See https://discuss.pytorch.org/t/bad-behavior-of-multinomial-function/10232
                while mask.gather(1, selected.unsqueeze(-1)).data.any():
                    print('Sampled bad values, resampling!')
                    selected = probs.multinomial(1).squeeze(1)

            else:
                assert False, "Unknown decode type"
            return selected

        def _precompute(self, embeddings, num_steps=1):

            # The fixed context projection of the graph embedding is calculated only once for efficiency
            graph_embed = embeddings.mean(1)
            # fixed context = (batch_size, 1, embed_dim) to make broadcastable with parallel timesteps
            fixed_context = self.project_fixed_context(graph_embed)[:, None, :]

            # The projection of the node embeddings for the attention is calculated once up front
            glimpse_key_fixed, glimpse_val_fixed, logit_key_fixed = \
                self.project_node_embeddings(embeddings[:, None, :, :]).chunk(3, dim=-1)

            # No need to rearrange key for logit as there is a single head
            fixed_attention_node_data = (
                self._make_heads(glimpse_key_fixed, num_steps),
                self._make_heads(glimpse_val_fixed, num_steps),
                logit_key_fixed.contiguous()
            )
            return AttentionModelFixed(embeddings, fixed_context, *fixed_attention_node_data)

        def _get_log_p(self, fixed, state, normalize=True):

            # Compute query = context node embedding
            query = fixed.context_node_projected + \
                    self.project_step_context(self._get_parallel_step_context(fixed.node_embeddings, state))

            # Compute keys and values for the nodes
            glimpse_K, glimpse_V, logit_K = self._get_attention_node_data(fixed, state)

            # Compute the mask
            mask = state.get_mask()

            # Compute logits (unnormalized log_p)
            log_p, glimpse = self._one_to_many_logits(query, glimpse_K, glimpse_V, logit_K, mask)

            if normalize:
                log_p = torch.log_softmax(log_p / self.temp, dim=-1)

            assert not torch.isnan(log_p).any()

            return log_p, mask

        def _get_parallel_step_context(self, embeddings, state, from_depot=False):
            """The context per step, optionally for multiple steps at once: (batch_size, num_steps, context_dim)."""

            current_node = state.get_current_node()
            batch_size, num_steps = current_node.size()

            # TSP
            if num_steps == 1:  # We need to special case if we have only 1 step, may be the first or not
                if state.i.item() == 0:
                    # First and only step, ignore prev_a (this is a placeholder)
                    return self.W_placeholder[None, None, :].expand(batch_size, 1, self.W_placeholder.size(-1))
                else:
                    return embeddings.gather(
                        1,
                        torch.cat((state.first_a, current_node), 1)[:, :, None].expand(batch_size, 2, embeddings.size(-1))
                    ).view(batch_size, 1, -1)
            # More than one step, assume always starting with first
            embeddings_per_step = embeddings.gather(
                1,
                current_node[:, 1:, None].expand(batch_size, num_steps - 1, embeddings.size(-1))
            )
            return torch.cat((
                # First step placeholder, cat in dim 1 (time steps)
                self.W_placeholder[None, None, :].expand(batch_size, 1, self.W_placeholder.size(-1)),
                # Second step, concatenate embedding of first with embedding of current/previous (in dim 2, context dim)
                torch.cat((
                    embeddings_per_step[:, 0:1, :].expand(batch_size, num_steps - 1, embeddings.size(-1)),
                    embeddings_per_step
                ), 2)
            ), 1)

        def _one_to_many_logits(self, query, glimpse_K, glimpse_V, logit_K, mask):

            batch_size, num_steps, embed_dim = query.size()
            key_size = val_size = embed_dim // self.n_heads

            # Compute the glimpse, rearrange dimensions so the dimensions are (n_heads, batch_size, num_steps, 1, key_size)
            glimpse_Q = query.view(batch_size, num_steps, self.n_heads, 1, key_size).permute(2, 0, 1, 3, 4)

            # Batch matrix multiplication to compute compatibilities (n_heads, batch_size, num_steps, graph_size)
            compatibility = torch.matmul(glimpse_Q, glimpse_K.transpose(-2, -1)) / math.sqrt(glimpse_Q.size(-1))
            if self.mask_inner:
                assert self.mask_logits, "Cannot mask inner without masking logits"
                compatibility[mask[None, :, :, None, :].expand_as(compatibility)] = -math.inf

            # Batch matrix multiplication to compute heads (n_heads, batch_size, num_steps, val_size)
            heads = torch.matmul(torch.softmax(compatibility, dim=-1), glimpse_V)

            # Project to get glimpse/updated context node embedding (batch_size, num_steps, embedding_dim)
            glimpse = self.project_out(
                heads.permute(1, 2, 3, 0, 4).contiguous().view(-1, num_steps, 1, self.n_heads * val_size))

            # Now projecting the glimpse is not needed since this can be absorbed into project_out
            # final_Q = self.project_glimpse(glimpse)
            final_Q = glimpse
            # Batch matrix multiplication to compute logits (batch_size, num_steps, graph_size)
            # logits = 'compatibility'
            logits = torch.matmul(final_Q, logit_K.transpose(-2, -1)).squeeze(-2) / math.sqrt(final_Q.size(-1))

            # From the logits compute the probabilities by clipping, masking and softmax
            if self.tanh_clipping > 0:
                logits = torch.tanh(logits) * self.tanh_clipping
            if self.mask_logits:
                logits[mask] = -math.inf

            return logits, glimpse.squeeze(-2)

        def _get_attention_node_data(self, fixed, state):
            # TSP or VRP without split delivery
            return fixed.glimpse_key, fixed.glimpse_val, fixed.logit_key

        def _make_heads(self, v, num_steps=None):
            assert num_steps is None or v.size(1) == 1 or v.size(1) == num_steps

            return (
                v.contiguous().view(v.size(0), v.size(1), v.size(2), self.n_heads, -1)
                .expand(v.size(0), v.size(1) if num_steps is None else num_steps, v.size(2), self.n_heads, -1)
                .permute(3, 0, 1, 2, 4)  # (n_heads, batch_size, num_steps, graph_size, head_dim)
            )

    return dict(AttentionModel=AttentionModel, AttentionModelFixed=AttentionModelFixed,
                set_decode_type=set_decode_type)


@per_library
def critic_network(torch, nn):
    """nets/critic_network.py's ``CriticNetwork``."""
    GraphAttentionEncoder = graph_encoder(torch, nn)["GraphAttentionEncoder"]

    class CriticNetwork(nn.Module):

        def __init__(
            self,
            input_dim,
            embedding_dim,
            hidden_dim,
            n_layers,
            encoder_normalization
        ):
            super(CriticNetwork, self).__init__()

            self.hidden_dim = hidden_dim

            self.encoder = GraphAttentionEncoder(
                node_dim=input_dim,
                n_heads=8,
                embed_dim=embedding_dim,
                n_layers=n_layers,
                normalization=encoder_normalization
            )

            self.value_head = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, 1)
            )

        def forward(self, inputs):
            """inputs: (batch_size, graph_size, input_dim)"""
            _, graph_embeddings = self.encoder(inputs)
            return self.value_head(graph_embeddings)

    return dict(CriticNetwork=CriticNetwork)


def training(torch, nn, F):
    """train.py (``rollout``, ``validate``, ``clip_grad_norms``, ``train_epoch``, ``train_batch``), baselines.py
    (``ExponentialBaseline``, ``CriticBaseline``, ``RolloutBaseline``, ``WarmupBaseline``, ``BaselineDataset``) and
    log_utils.py's ``log_values``, as a namespace dict."""
    DataLoader, Dataset = torch.utils.data.DataLoader, torch.utils.data.Dataset
    DataParallel = torch.nn.DataParallel
    move_to = functions(torch, F)["move_to"]
    set_decode_type = attention_model(torch, nn, F)["set_decode_type"]

    def tqdm(iterable, disable=False, **kwargs):
        return iterable

    def get_inner_model(model):
        return model.module if isinstance(model, DataParallel) else model

    def validate(model, dataset, opts):
        # Validate
        print('Validating...')
        cost = rollout(model, dataset, opts)
        avg_cost = cost.mean()
        print('Validation overall avg_cost: {} +- {}'.format(
            avg_cost, torch.std(cost) / math.sqrt(len(cost))))

        return avg_cost

    def rollout(model, dataset, opts):
        # Put in greedy evaluation mode!
        set_decode_type(model, "greedy")
        model.eval()

        def eval_model_bat(bat):
            with torch.no_grad():
                cost, _ = model(move_to(bat, opts.device))
            return cost.data.cpu()

        return torch.cat([
            eval_model_bat(bat)
            for bat
            in tqdm(DataLoader(dataset, batch_size=opts.eval_batch_size), disable=opts.no_progress_bar)
        ], 0)

    def clip_grad_norms(param_groups, max_norm=math.inf):
        """Clips the norms for all param groups to max_norm and returns gradient norms before clipping:
        grad_norms, clipped_grad_norms: list with (clipped) gradient norms per group."""
        grad_norms = [
            torch.nn.utils.clip_grad_norm_(
                group['params'],
                max_norm if max_norm > 0 else math.inf,  # Inf so no clipping but still call to calc
                norm_type=2
            )
            for group in param_groups
        ]
        grad_norms_clipped = [min(g_norm, max_norm) for g_norm in grad_norms] if max_norm > 0 else grad_norms
        return grad_norms, grad_norms_clipped

    def log_values(cost, grad_norms, epoch, batch_id, step,
                   log_likelihood, reinforce_loss, bl_loss, tb_logger, opts):
        avg_cost = cost.mean().item()
        grad_norms, grad_norms_clipped = grad_norms

        # Log values to screen
        print('epoch: {}, train_batch_id: {}, avg_cost: {}'.format(epoch, batch_id, avg_cost))

        print('grad_norm: {}, clipped: {}'.format(grad_norms[0], grad_norms_clipped[0]))

        # Log values to tensorboard
        if not opts.no_tensorboard:
            tb_logger.log_value('avg_cost', avg_cost, step)

            tb_logger.log_value('actor_loss', reinforce_loss.item(), step)
            tb_logger.log_value('nll', -log_likelihood.mean().item(), step)

            tb_logger.log_value('grad_norm', grad_norms[0], step)
            tb_logger.log_value('grad_norm_clipped', grad_norms_clipped[0], step)

            if opts.baseline == 'critic':
                tb_logger.log_value('critic_loss', bl_loss.item(), step)
                tb_logger.log_value('critic_grad_norm', grad_norms[1], step)
                tb_logger.log_value('critic_grad_norm_clipped', grad_norms_clipped[1], step)

    def train_epoch(model, optimizer, baseline, lr_scheduler, epoch, val_dataset, problem, tb_logger, opts):
        print("Start train epoch {}, lr={} for run {}".format(epoch, optimizer.param_groups[0]['lr'], opts.run_name))
        step = epoch * (opts.epoch_size // opts.batch_size)
        start_time = time.time()

        if not opts.no_tensorboard:
            tb_logger.log_value('learnrate_pg0', optimizer.param_groups[0]['lr'], step)

        # Generate new training data for each epoch
        training_dataset = baseline.wrap_dataset(problem.make_dataset(
            size=opts.graph_size, num_samples=opts.epoch_size, distribution=opts.data_distribution))
        training_dataloader = DataLoader(training_dataset, batch_size=opts.batch_size, num_workers=1)

        # Put model in train mode!
        model.train()
        set_decode_type(model, "sampling")

        for batch_id, batch in enumerate(tqdm(training_dataloader, disable=opts.no_progress_bar)):

            train_batch(
                model,
                optimizer,
                baseline,
                epoch,
                batch_id,
                step,
                batch,
                tb_logger,
                opts
            )

            step += 1

        epoch_duration = time.time() - start_time
        print("Finished epoch {}, took {} s".format(epoch, time.strftime('%H:%M:%S', time.gmtime(epoch_duration))))

        if (opts.checkpoint_epochs != 0 and epoch % opts.checkpoint_epochs == 0) or epoch == opts.n_epochs - 1:
            print('Saving model and state...')
            torch.save(
                {
                    'model': get_inner_model(model).state_dict(),
                    'optimizer': optimizer.state_dict(),
                    'rng_state': torch.get_rng_state(),
                    'cuda_rng_state': torch.cuda.get_rng_state_all(),
                    'baseline': baseline.state_dict()
                },
                os.path.join(opts.save_dir, 'epoch-{}.pt'.format(epoch))
            )

        avg_reward = validate(model, val_dataset, opts)

        if not opts.no_tensorboard:
            tb_logger.log_value('val_avg_reward', avg_reward, step)

        baseline.epoch_callback(model, epoch)

        # lr_scheduler should be called at end of epoch
        lr_scheduler.step()

    def train_batch(
            model,
            optimizer,
            baseline,
            epoch,
            batch_id,
            step,
            batch,
            tb_logger,
            opts
    ):
        x, bl_val = baseline.unwrap_batch(batch)
        x = move_to(x, opts.device)
        bl_val = move_to(bl_val, opts.device) if bl_val is not None else None

        # Evaluate model, get costs and log probabilities
        cost, log_likelihood = model(x)

        # Evaluate baseline, get baseline loss if any (only for critic)
        bl_val, bl_loss = baseline.eval(x, cost) if bl_val is None else (bl_val, 0)

        # Calculate loss
        reinforce_loss = ((cost - bl_val) * log_likelihood).mean()
        loss = reinforce_loss + bl_loss

        # Perform backward pass and optimization step
        optimizer.zero_grad()
        loss.backward()
        # Clip gradient norms and get (clipped) gradient norms for logging
        grad_norms = clip_grad_norms(optimizer.param_groups, opts.max_grad_norm)
        optimizer.step()

        # Logging
        if step % int(opts.log_step) == 0:
            log_values(cost, grad_norms, epoch, batch_id, step,
                       log_likelihood, reinforce_loss, bl_loss, tb_logger, opts)

    class Baseline(object):

        def wrap_dataset(self, dataset):
            return dataset

        def unwrap_batch(self, batch):
            return batch, None

        def eval(self, x, c):
            raise NotImplementedError("Override this method")

        def get_learnable_parameters(self):
            return []

        def epoch_callback(self, model, epoch):
            pass

        def state_dict(self):
            return {}

        def load_state_dict(self, state_dict):
            pass

    class NoBaseline(Baseline):

        def eval(self, x, c):
            return 0, 0  # No baseline, no loss

    class WarmupBaseline(Baseline):

        def __init__(self, baseline, n_epochs=1, warmup_exp_beta=0.8, ):
            super(Baseline, self).__init__()

            self.baseline = baseline
            assert n_epochs > 0, "n_epochs to warmup must be positive"
            self.warmup_baseline = ExponentialBaseline(warmup_exp_beta)
            self.alpha = 0
            self.n_epochs = n_epochs

        def wrap_dataset(self, dataset):
            if self.alpha > 0:
                return self.baseline.wrap_dataset(dataset)
            return self.warmup_baseline.wrap_dataset(dataset)

        def unwrap_batch(self, batch):
            if self.alpha > 0:
                return self.baseline.unwrap_batch(batch)
            return self.warmup_baseline.unwrap_batch(batch)

        def eval(self, x, c):

            if self.alpha == 1:
                return self.baseline.eval(x, c)
            if self.alpha == 0:
                return self.warmup_baseline.eval(x, c)
            v, l = self.baseline.eval(x, c)
            vw, lw = self.warmup_baseline.eval(x, c)
            # Return convex combination of baseline and of loss
            return self.alpha * v * (1 - self.alpha) * vw, self.alpha * l + (1 - self.alpha * lw)

        def epoch_callback(self, model, epoch):
            # Need to call epoch callback of inner model (also after first epoch if we have not used it)
            self.baseline.epoch_callback(model, epoch)
            self.alpha = (epoch + 1) / float(self.n_epochs)
            if epoch < self.n_epochs:
                print("Set warmup alpha = {}".format(self.alpha))

        def state_dict(self):
            # Checkpointing within warmup stage makes no sense, only save inner baseline
            return self.baseline.state_dict()

        def load_state_dict(self, state_dict):
            # Checkpointing within warmup stage makes no sense, only load inner baseline
            self.baseline.load_state_dict(state_dict)

    class ExponentialBaseline(Baseline):

        def __init__(self, beta):
            super(Baseline, self).__init__()

            self.beta = beta
            self.v = None

        def eval(self, x, c):

            if self.v is None:
                v = c.mean()
            else:
                v = self.beta * self.v + (1. - self.beta) * c.mean()

            self.v = v.detach()  # Detach since we never want to backprop
            return self.v, 0  # No loss

        def state_dict(self):
            return {
                'v': self.v
            }

        def load_state_dict(self, state_dict):
            self.v = state_dict['v']

    class CriticBaseline(Baseline):

        def __init__(self, critic):
            super(Baseline, self).__init__()

            self.critic = critic

        def eval(self, x, c):
            v = self.critic(x)
            # Detach v since actor should not backprop through baseline, only for loss
            return v.detach(), F.mse_loss(v, c.detach())

        def get_learnable_parameters(self):
            return list(self.critic.parameters())

        def epoch_callback(self, model, epoch):
            pass

        def state_dict(self):
            return {
                'critic': self.critic.state_dict()
            }

        def load_state_dict(self, state_dict):
            critic_state_dict = state_dict.get('critic', {})
            if not isinstance(critic_state_dict, dict):  # backwards compatibility
                critic_state_dict = critic_state_dict.state_dict()
            self.critic.load_state_dict({**self.critic.state_dict(), **critic_state_dict})

    class RolloutBaseline(Baseline):

        def __init__(self, model, problem, opts, epoch=0):
            super(Baseline, self).__init__()

            self.problem = problem
            self.opts = opts

            self._update_model(model, epoch)

        def _update_model(self, model, epoch, dataset=None):
            self.model = copy.deepcopy(model)
            # Always generate baseline dataset when updating model to prevent overfitting to the baseline dataset

            if dataset is not None:
                if len(dataset) != self.opts.val_size:
                    print("Warning: not using saved baseline dataset since val_size does not match")
                    dataset = None
                elif (dataset[0] if self.problem.NAME == 'tsp' else dataset[0]['loc']).size(0) != self.opts.graph_size:
                    print("Warning: not using saved baseline dataset since graph_size does not match")
                    dataset = None

            if dataset is None:
                self.dataset = self.problem.make_dataset(
                    size=self.opts.graph_size, num_samples=self.opts.val_size, distribution=self.opts.data_distribution)
            else:
                self.dataset = dataset
            print("Evaluating baseline model on evaluation dataset")
            self.bl_vals = rollout(self.model, self.dataset, self.opts).cpu().numpy()
            self.mean = self.bl_vals.mean()
            self.epoch = epoch

        def wrap_dataset(self, dataset):
            print("Evaluating baseline on dataset...")
            # Need to convert baseline to 2D to prevent converting to double, see
            # https://discuss.pytorch.org/t/dataloader-gives-double-instead-of-float/717/3
            return BaselineDataset(dataset, rollout(self.model, dataset, self.opts).view(-1, 1))

        def unwrap_batch(self, batch):
            return batch['data'], batch['baseline'].view(-1)  # Flatten result to undo wrapping as 2D

        def eval(self, x, c):
            # Use volatile mode for efficient inference (single batch so we do not use rollout function)
            with torch.no_grad():
                v, _ = self.model(x)

            # There is no loss
            return v, 0

        def epoch_callback(self, model, epoch):
            """Challenges the current baseline with the model and replaces the baseline model if it is improved."""
            print("Evaluating candidate model on evaluation dataset")
            candidate_vals = rollout(model, self.dataset, self.opts).cpu().numpy()

            candidate_mean = candidate_vals.mean()

            print("Epoch {} candidate mean {}, baseline epoch {} mean {}, difference {}".format(
                epoch, candidate_mean, self.epoch, self.mean, candidate_mean - self.mean))
            if candidate_mean - self.mean < 0:
                # Calc p value
                t, p = ttest_rel(candidate_vals, self.bl_vals)

                p_val = p / 2  # one-sided
                assert t < 0, "T-statistic should be negative"
                print("p-value: {}".format(p_val))
                if p_val < self.opts.bl_alpha:
                    print('Update baseline')
                    self._update_model(model, epoch)

        def state_dict(self):
            return {
                'model': self.model,
                'dataset': self.dataset,
                'epoch': self.epoch
            }

        def load_state_dict(self, state_dict):
            # We make it such that it works whether model was saved as data parallel or not
            load_model = copy.deepcopy(self.model)
            get_inner_model(load_model).load_state_dict(get_inner_model(state_dict['model']).state_dict())
            self._update_model(load_model, state_dict['epoch'], state_dict['dataset'])

    class BaselineDataset(Dataset):

        def __init__(self, dataset=None, baseline=None):
            super(BaselineDataset, self).__init__()

            self.dataset = dataset
            self.baseline = baseline
            assert (len(self.dataset) == len(self.baseline))

        def __getitem__(self, item):
            return {
                'data': self.dataset[item],
                'baseline': self.baseline[item]
            }

        def __len__(self):
            return len(self.dataset)

    return dict(rollout=rollout, validate=validate, clip_grad_norms=clip_grad_norms, train_epoch=train_epoch,
                train_batch=train_batch, ExponentialBaseline=ExponentialBaseline, CriticBaseline=CriticBaseline,
                RolloutBaseline=RolloutBaseline, WarmupBaseline=WarmupBaseline, NoBaseline=NoBaseline)


def run(torch, nn, F, opts, model, problem, critic=None, tb_logger=None):
    """run.py's main from the baseline on (the model, and the critic for ``opts.baseline == 'critic'``, built by the
    caller so both libraries start from kiln's initial weights; the tensorboard logger given)."""
    optim = torch.optim
    T = training(torch, nn, F)

    # Initialize baseline
    if opts.baseline == 'exponential':
        baseline = T["ExponentialBaseline"](opts.exp_beta)
    elif opts.baseline == 'critic':
        baseline = T["CriticBaseline"](critic)
    elif opts.baseline == 'rollout':
        baseline = T["RolloutBaseline"](model, problem, opts)
    else:
        assert opts.baseline is None, "Unknown baseline: {}".format(opts.baseline)
        baseline = T["NoBaseline"]()

    if opts.bl_warmup_epochs > 0:
        baseline = T["WarmupBaseline"](baseline, opts.bl_warmup_epochs, warmup_exp_beta=opts.exp_beta)

    # Initialize optimizer
    optimizer = optim.Adam(
        [{'params': model.parameters(), 'lr': opts.lr_model}]
        + (
            [{'params': baseline.get_learnable_parameters(), 'lr': opts.lr_critic}]
            if len(baseline.get_learnable_parameters()) > 0
            else []
        )
    )

    # Initialize learning rate scheduler, decay by lr_decay once per epoch!
    lr_scheduler = optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: opts.lr_decay ** epoch)

    # Start the actual training loop
    val_dataset = problem.make_dataset(
        size=opts.graph_size, num_samples=opts.val_size, filename=opts.val_dataset, distribution=opts.data_distribution)

    for epoch in range(opts.epoch_start, opts.epoch_start + opts.n_epochs):
        T["train_epoch"](
            model,
            optimizer,
            baseline,
            lr_scheduler,
            epoch,
            val_dataset,
            problem,
            tb_logger,
            opts
        )
    return baseline, optimizer
