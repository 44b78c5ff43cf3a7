"""An Evoformer block as OpenFold's ``model/evoformer.py``, ``msa.py``, ``outer_product_mean.py``,
``triangular_multiplicative_update.py``, ``triangular_attention.py`` and ``pair_transition.py`` write it (tiny sizes,
chunking and inplace paths left out), as a function of ``(torch, nn, F)`` so the same text builds kiln's model and
torch's twin for ``test_porting_probes_evoformer_ipa.py``."""

from __future__ import annotations

import math

import numpy as np


def evoformer(torch, nn, F, c_m=8, c_z=6, c_hidden=4, heads=2, c_opm=3, n_mul=2):
    """One Evoformer block: (msa [*, S, R, c_m], pair [*, R, R, c_z], masks) -> (msa, pair)."""

    def permute_final_dims(tensor, inds):
        zero_index = -1 * len(inds)
        first_inds = list(range(len(tensor.shape[:zero_index])))
        return tensor.permute(first_inds + [zero_index + i for i in inds])

    class Attention(nn.Module):
        """OpenFold's primitives.Attention: gated multi-head attention with a list of additive biases."""

        def __init__(self, c_q, c_k, c_v, c_hidden, no_heads, gating=True):
            super().__init__()
            self.c_hidden, self.no_heads, self.gating = c_hidden, no_heads, gating
            self.linear_q = nn.Linear(c_q, c_hidden * no_heads, bias=False)
            self.linear_k = nn.Linear(c_k, c_hidden * no_heads, bias=False)
            self.linear_v = nn.Linear(c_v, c_hidden * no_heads, bias=False)
            self.linear_o = nn.Linear(c_hidden * no_heads, c_q)
            self.linear_g = nn.Linear(c_q, c_hidden * no_heads) if gating else None

        def forward(self, q_x, kv_x, biases):
            q = self.linear_q(q_x).view(q_x.shape[:-1] + (self.no_heads, -1))
            k = self.linear_k(kv_x).view(kv_x.shape[:-1] + (self.no_heads, -1))
            v = self.linear_v(kv_x).view(kv_x.shape[:-1] + (self.no_heads, -1))
            q, k, v = q.transpose(-2, -3), k.transpose(-2, -3), v.transpose(-2, -3)
            q = q / math.sqrt(self.c_hidden)
            a = torch.matmul(q, permute_final_dims(k, (1, 0)))
            for b in biases:
                a = a + b
            a = torch.softmax(a, dim=-1)
            o = torch.matmul(a, v).transpose(-2, -3)
            if self.linear_g is not None:
                g = torch.sigmoid(self.linear_g(q_x))
                g = g.view(g.shape[:-1] + (self.no_heads, -1))
                o = o * g
            o = o.reshape(o.shape[:-2] + (-1,))
            return self.linear_o(o)

    class MSARowAttentionWithPairBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm_m = nn.LayerNorm(c_m)
            self.layer_norm_z = nn.LayerNorm(c_z)
            self.linear_z = nn.Linear(c_z, heads, bias=False)
            self.mha = Attention(c_m, c_m, c_m, c_hidden, heads)

        def forward(self, m, z, mask):
            mask_bias = (1e9 * (mask - 1))[..., :, None, None, :]
            z = self.linear_z(self.layer_norm_z(z))
            z = permute_final_dims(z, (2, 0, 1)).unsqueeze(-4)
            m = self.layer_norm_m(m)
            return self.mha(m, m, [mask_bias, z])

    class MSAColumnAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm_m = nn.LayerNorm(c_m)
            self.mha = Attention(c_m, c_m, c_m, c_hidden, heads)

        def forward(self, m, mask):
            m, mask = m.transpose(-2, -3), mask.transpose(-1, -2)
            mask_bias = (1e9 * (mask - 1))[..., :, None, None, :]
            m = self.layer_norm_m(m)
            return self.mha(m, m, [mask_bias]).transpose(-2, -3)

    class Transition(nn.Module):
        def __init__(self, c, n=2):
            super().__init__()
            self.layer_norm = nn.LayerNorm(c)
            self.linear_1 = nn.Linear(c, n * c)
            self.relu = nn.ReLU()
            self.linear_2 = nn.Linear(n * c, c)

        def forward(self, x, mask):
            x = self.layer_norm(x)
            return self.linear_2(self.relu(self.linear_1(x))) * mask.unsqueeze(-1)

    class OuterProductMean(nn.Module):
        def __init__(self, eps=1e-3):
            super().__init__()
            self.eps = eps
            self.layer_norm = nn.LayerNorm(c_m)
            self.linear_1 = nn.Linear(c_m, c_opm)
            self.linear_2 = nn.Linear(c_m, c_opm)
            self.linear_out = nn.Linear(c_opm ** 2, c_z)

        def forward(self, m, mask):
            mask = mask.unsqueeze(-1)
            ln = self.layer_norm(m)
            a = self.linear_1(ln) * mask
            b = self.linear_2(ln) * mask
            outer = torch.einsum("...sid,...sje->...ijde", a, b)
            outer = outer.reshape(outer.shape[:-2] + (-1,))
            outer = self.linear_out(outer)
            norm = torch.einsum("...abc,...adc->...bdc", mask, mask)
            return outer / (norm + self.eps)

    class TriangleMultiplicativeUpdate(nn.Module):
        def __init__(self, outgoing):
            super().__init__()
            self.outgoing = outgoing
            self.linear_a_p, self.linear_a_g = nn.Linear(c_z, n_mul), nn.Linear(c_z, n_mul)
            self.linear_b_p, self.linear_b_g = nn.Linear(c_z, n_mul), nn.Linear(c_z, n_mul)
            self.linear_g, self.linear_z = nn.Linear(c_z, c_z), nn.Linear(n_mul, c_z)
            self.layer_norm_in, self.layer_norm_out = nn.LayerNorm(c_z), nn.LayerNorm(n_mul)
            self.sigmoid = nn.Sigmoid()

        def _combine_projections(self, a, b):
            if self.outgoing:
                a, b = permute_final_dims(a, (2, 0, 1)), permute_final_dims(b, (2, 1, 0))
            else:
                a, b = permute_final_dims(a, (2, 1, 0)), permute_final_dims(b, (2, 0, 1))
            return permute_final_dims(torch.matmul(a, b), (1, 2, 0))

        def forward(self, z, mask):
            mask = mask.unsqueeze(-1)
            z = self.layer_norm_in(z)
            a = mask * self.sigmoid(self.linear_a_g(z)) * self.linear_a_p(z)
            b = mask * self.sigmoid(self.linear_b_g(z)) * self.linear_b_p(z)
            x = self.layer_norm_out(self._combine_projections(a, b))
            x = self.linear_z(x)
            return x * self.sigmoid(self.linear_g(z))

    class TriangleAttention(nn.Module):
        def __init__(self, starting):
            super().__init__()
            self.starting = starting
            self.layer_norm = nn.LayerNorm(c_z)
            self.linear = nn.Linear(c_z, heads, bias=False)
            self.mha = Attention(c_z, c_z, c_z, c_hidden, heads)

        def forward(self, x, mask):
            if not self.starting:
                x, mask = x.transpose(-2, -3), mask.transpose(-1, -2)
            x = self.layer_norm(x)
            mask_bias = (1e9 * (mask - 1))[..., :, None, None, :]
            triangle_bias = permute_final_dims(self.linear(x), (2, 0, 1)).unsqueeze(-4)
            x = self.mha(x, x, [mask_bias, triangle_bias])
            if not self.starting:
                x = x.transpose(-2, -3)
            return x

    class EvoformerBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.msa_att_row = MSARowAttentionWithPairBias()
            self.msa_att_col = MSAColumnAttention()
            self.msa_transition = Transition(c_m)
            self.outer_product_mean = OuterProductMean()
            self.tri_mul_out = TriangleMultiplicativeUpdate(outgoing=True)
            self.tri_mul_in = TriangleMultiplicativeUpdate(outgoing=False)
            self.tri_att_start = TriangleAttention(starting=True)
            self.tri_att_end = TriangleAttention(starting=False)
            self.pair_transition = Transition(c_z)

        def forward(self, m, z, msa_mask, pair_mask):
            m = m + self.msa_att_row(m, z, msa_mask)
            m = m + self.msa_att_col(m, msa_mask)
            m = m + self.msa_transition(m, msa_mask)
            z = z + self.outer_product_mean(m, msa_mask)
            z = z + self.tri_mul_out(z, pair_mask)
            z = z + self.tri_mul_in(z, pair_mask)
            z = z + self.tri_att_start(z, pair_mask)
            z = z + self.tri_att_end(z, pair_mask)
            z = z + self.pair_transition(z, pair_mask)
            return m, z

    return EvoformerBlock()


def _to_mat(pairs):
    """OpenFold's ``rigid_utils._to_mat``: a 4x4 table of quaternion products from (``"ab"``, value) pairs."""
    keys = [l1 + l2 for l1 in "abcd" for l2 in "abcd"]
    mat = np.zeros((4, 4))
    for key, value in pairs:
        ind = keys.index(key)
        mat[ind // 4][ind % 4] = value
    return mat


_QTR_MAT = np.zeros((4, 4, 3, 3))
_QTR_MAT[..., 0, 0] = _to_mat([("aa", 1), ("bb", 1), ("cc", -1), ("dd", -1)])
_QTR_MAT[..., 0, 1] = _to_mat([("bc", 2), ("ad", -2)])
_QTR_MAT[..., 0, 2] = _to_mat([("bd", 2), ("ac", 2)])
_QTR_MAT[..., 1, 0] = _to_mat([("bc", 2), ("ad", 2)])
_QTR_MAT[..., 1, 1] = _to_mat([("aa", 1), ("bb", -1), ("cc", 1), ("dd", -1)])
_QTR_MAT[..., 1, 2] = _to_mat([("cd", 2), ("ab", -2)])
_QTR_MAT[..., 2, 0] = _to_mat([("bd", 2), ("ac", -2)])
_QTR_MAT[..., 2, 1] = _to_mat([("cd", 2), ("ab", 2)])
_QTR_MAT[..., 2, 2] = _to_mat([("aa", 1), ("bb", -1), ("cc", -1), ("dd", 1)])


def structure_module(torch, nn, F, c_s=8, c_z=6, c_hidden=4, heads=2, qk_points=2, v_points=2, blocks=2,
                     clamp=1.0, length_scale=1.0):
    """OpenFold's structure module core (``rigid_utils.py``, ``structure_module.py``, ``loss.compute_fape``): rigids as
    (rotation, translation) from quaternions by the constant ``_QTR_MAT`` table, invariant point attention, the
    backbone update, iterations with the rotation gradient stopped, and the clamped FAPE of the final frames."""

    def permute_final_dims(tensor, inds):
        zero_index = -1 * len(inds)
        first_inds = list(range(len(tensor.shape[:zero_index])))
        return tensor.permute(first_inds + [zero_index + i for i in inds])

    def flatten_final_dims(t, no_dims):
        return t.reshape(t.shape[:-no_dims] + (-1,))

    def quat_to_rot(quat):
        quat = quat[..., None] * quat[..., None, :]
        mat = torch.tensor(_QTR_MAT, dtype=quat.dtype, device=quat.device)
        return torch.einsum("...ij,ijkl->...kl", quat, mat)

    class Rigid:
        def __init__(self, rots, trans):
            self.rots, self.trans = rots, trans

        def __getitem__(self, index):  # only [..., None] as the reference uses it
            return Rigid(self.rots[index + (slice(None), slice(None))], self.trans[index + (slice(None),)])

        def compose(self, r):
            rots = torch.matmul(self.rots, r.rots)
            return Rigid(rots, self.apply(r.trans))

        def apply(self, pts):
            return torch.einsum("...ij,...j->...i", self.rots, pts) + self.trans

        def invert_apply(self, pts):
            return torch.einsum("...ji,...j->...i", self.rots, pts - self.trans)

        def invert(self):
            rots = self.rots.transpose(-1, -2)
            return Rigid(rots, -torch.einsum("...ij,...j->...i", rots, self.trans))

        def compose_q_update_vec(self, q_update_vec):
            q_vec, t_vec = q_update_vec[..., :3], q_update_vec[..., 3:]
            quats = torch.cat([torch.ones_like(q_vec[..., :1]), q_vec], dim=-1)
            quats = quats / torch.linalg.norm(quats, dim=-1, keepdim=True)
            return self.compose(Rigid(quat_to_rot(quats), t_vec))

        def stop_rot_gradient(self):
            return Rigid(self.rots.detach(), self.trans)

    class InvariantPointAttention(nn.Module):
        def __init__(self, inf=1e5, eps=1e-8):
            super().__init__()
            self.inf, self.eps = inf, eps
            self.linear_q = nn.Linear(c_s, c_hidden * heads)
            self.linear_kv = nn.Linear(c_s, 2 * c_hidden * heads)
            self.linear_q_points = nn.Linear(c_s, heads * qk_points * 3)
            self.linear_kv_points = nn.Linear(c_s, heads * (qk_points + v_points) * 3)
            self.linear_b = nn.Linear(c_z, heads)
            self.head_weights = nn.Parameter(torch.zeros((heads,)))
            with torch.no_grad():
                self.head_weights.fill_(0.541324854612918)  # softplus^-1(1)
            concat_out_dim = heads * (c_z + c_hidden + v_points * 4)
            self.linear_out = nn.Linear(concat_out_dim, c_s)
            self.softplus = nn.Softplus()

        def forward(self, s, z, r, mask):
            q = self.linear_q(s).view(s.shape[:-1] + (heads, -1))
            kv = self.linear_kv(s).view(s.shape[:-1] + (heads, -1))
            k, v = torch.split(kv, c_hidden, dim=-1)
            q_pts = self.linear_q_points(s)
            q_pts = torch.stack(torch.split(q_pts, q_pts.shape[-1] // 3, dim=-1), dim=-1)
            q_pts = r[..., None].apply(q_pts)
            q_pts = q_pts.view(q_pts.shape[:-2] + (heads, qk_points, 3))
            kv_pts = self.linear_kv_points(s)
            kv_pts = torch.stack(torch.split(kv_pts, kv_pts.shape[-1] // 3, dim=-1), dim=-1)
            kv_pts = r[..., None].apply(kv_pts)
            kv_pts = kv_pts.view(kv_pts.shape[:-2] + (heads, -1, 3))
            k_pts, v_pts = torch.split(kv_pts, [qk_points, v_points], dim=-2)
            b = self.linear_b(z)
            a = torch.matmul(permute_final_dims(q, (1, 0, 2)), permute_final_dims(k, (1, 2, 0)))
            a *= math.sqrt(1.0 / (3 * c_hidden))
            a += math.sqrt(1.0 / 3) * permute_final_dims(b, (2, 0, 1))
            pt_att = q_pts.unsqueeze(-4) - k_pts.unsqueeze(-5)
            pt_att = pt_att ** 2
            pt_att = sum(torch.unbind(pt_att, dim=-1))
            head_weights = self.softplus(self.head_weights).view(*((1,) * len(pt_att.shape[:-2]) + (-1, 1)))
            head_weights = head_weights * math.sqrt(1.0 / (3 * (qk_points * 9.0 / 2)))
            pt_att = pt_att * head_weights
            pt_att = torch.sum(pt_att, dim=-1) * (-0.5)
            square_mask = mask.unsqueeze(-1) * mask.unsqueeze(-2)
            square_mask = self.inf * (square_mask - 1)
            a = a + permute_final_dims(pt_att, (2, 0, 1)) + square_mask.unsqueeze(-3)
            a = torch.softmax(a, dim=-1)
            o = torch.matmul(a, v.transpose(-2, -3).to(dtype=a.dtype)).transpose(-2, -3)
            o = flatten_final_dims(o, 2)
            o_pt = torch.sum(a[..., None, :, :, None] * permute_final_dims(v_pts, (1, 3, 0, 2))[..., None, :, :], dim=-2)
            o_pt = permute_final_dims(o_pt, (2, 0, 3, 1))
            o_pt = r[..., None, None].invert_apply(o_pt)
            o_pt_norm = flatten_final_dims(torch.sqrt(torch.sum(o_pt ** 2, dim=-1) + self.eps), 2)
            o_pt = o_pt.reshape(*o_pt.shape[:-3], -1, 3)
            o_pair = flatten_final_dims(torch.matmul(a.transpose(-2, -3), z.to(dtype=a.dtype)), 2)
            return self.linear_out(torch.cat((o, *torch.unbind(o_pt, dim=-1), o_pt_norm, o_pair), dim=-1))

    class StructureModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm_s, self.layer_norm_z = nn.LayerNorm(c_s), nn.LayerNorm(c_z)
            self.linear_in = nn.Linear(c_s, c_s)
            self.ipa = InvariantPointAttention()
            self.layer_norm_ipa = nn.LayerNorm(c_s)
            self.transition = nn.Sequential(nn.Linear(c_s, c_s), nn.ReLU(), nn.Linear(c_s, c_s))
            self.bb_update = nn.Linear(c_s, 6)

        def forward(self, s, z, mask):
            s = self.linear_in(self.layer_norm_s(s))
            z = self.layer_norm_z(z)
            eye = torch.eye(3, dtype=s.dtype).expand(s.shape[:-1] + (3, 3))
            rigids = Rigid(eye, torch.zeros(s.shape[:-1] + (3,), dtype=s.dtype))
            for i in range(blocks):
                s = s + self.ipa(s, z, rigids, mask)
                s = self.layer_norm_ipa(s)
                s = s + self.transition(s)
                rigids = rigids.compose_q_update_vec(self.bb_update(s))
                if i < blocks - 1:
                    rigids = rigids.stop_rot_gradient()
            return rigids

    def compute_fape(pred_frames, target_frames, frames_mask, pred_positions, target_positions, positions_mask,
                     eps=1e-8):
        local_pred_pos = pred_frames.invert()[..., None].apply(pred_positions[..., None, :, :])
        local_target_pos = target_frames.invert()[..., None].apply(target_positions[..., None, :, :])
        error_dist = torch.sqrt(torch.sum((local_pred_pos - local_target_pos) ** 2, dim=-1) + eps)
        error_dist = torch.clamp(error_dist, min=0, max=clamp)
        normed_error = error_dist / length_scale
        normed_error = normed_error * frames_mask[..., None]
        normed_error = normed_error * positions_mask[..., None, :]
        normed_error = torch.sum(normed_error, dim=-1)
        normed_error = normed_error / (eps + torch.sum(frames_mask, dim=-1))[..., None]
        normed_error = torch.sum(normed_error, dim=-1)
        return normed_error / (eps + torch.sum(positions_mask, dim=-1))

    model = StructureModule()
    model.Rigid, model.quat_to_rot, model.compute_fape = Rigid, quat_to_rot, compute_fape
    return model
