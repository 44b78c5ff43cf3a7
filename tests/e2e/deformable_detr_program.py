"""Deformable DETR's multi-scale deformable attention as fundamentalvision/Deformable-DETR writes it:
``models/ops/functions/ms_deform_attn_func.py``'s ``ms_deform_attn_core_pytorch``, ``models/ops/modules/
ms_deform_attn.py``'s ``MSDeformAttn``, and ``models/deformable_transformer.py``'s encoder layer, encoder
(``get_reference_points``) and the flattening of the levels (``get_valid_ratio``, ``level_start_index``), written once
for ``torch`` being torch or kiln: the program of ``test_porting_probes_deformable_detr.py``, whose docstring says
what it covers."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np

D_MODEL, D_FFN, N_LEVELS, N_HEADS, N_POINTS, N_LAYERS = 8, 16, 2, 2, 2, 1
LEVEL_SHAPES = [(4, 5), (2, 3)]
BATCH = 2


def ms_deform_attn_core_pytorch(torch, F):
    """ms_deform_attn_func.py's CPU path (the CUDA ``MSDeformAttnFunction`` computes the same)."""

    def ms_deform_attn_core_pytorch(value, value_spatial_shapes, sampling_locations, attention_weights):
        # for debug and test only,
        # need to use cuda version instead
        N_, S_, M_, D_ = value.shape
        _, Lq_, M_, L_, P_, _ = sampling_locations.shape
        value_list = value.split([H_ * W_ for H_, W_ in value_spatial_shapes], dim=1)
        sampling_grids = 2 * sampling_locations - 1
        sampling_value_list = []
        for lid_, (H_, W_) in enumerate(value_spatial_shapes):
            # N_, H_*W_, M_, D_ -> N_, H_*W_, M_*D_ -> N_, M_*D_, H_*W_ -> N_*M_, D_, H_, W_
            value_l_ = value_list[lid_].flatten(2).transpose(1, 2).reshape(N_*M_, D_, H_, W_)
            # N_, Lq_, M_, P_, 2 -> N_, M_, Lq_, P_, 2 -> N_*M_, Lq_, P_, 2
            sampling_grid_l_ = sampling_grids[:, :, :, lid_].transpose(1, 2).flatten(0, 1)
            # N_*M_, D_, Lq_, P_
            sampling_value_l_ = F.grid_sample(value_l_, sampling_grid_l_,
                                              mode='bilinear', padding_mode='zeros', align_corners=False)
            sampling_value_list.append(sampling_value_l_)
        # (N_, Lq_, M_, L_, P_) -> (N_, M_, Lq_, L_, P_) -> (N_, M_, 1, Lq_, L_*P_)
        attention_weights = attention_weights.transpose(1, 2).reshape(N_*M_, 1, Lq_, L_*P_)
        output = (torch.stack(sampling_value_list, dim=-2).flatten(-2) * attention_weights).sum(-1).view(N_, M_*D_, Lq_)
        return output.transpose(1, 2).contiguous()

    return ms_deform_attn_core_pytorch


def _is_power_of_2(n):
    if (not isinstance(n, int)) or (n < 0):
        raise ValueError("invalid input for _is_power_of_2: {} (type: {})".format(n, type(n)))
    return (n & (n-1) == 0) and n != 0


def ms_deform_attn(torch, nn, F):
    """ms_deform_attn.py's ``MSDeformAttn``; the CUDA ``MSDeformAttnFunction.apply`` replaced by
    ``ms_deform_attn_core_pytorch`` (the same numbers, as the repository's ``test.py`` checks)."""
    from_core = ms_deform_attn_core_pytorch(torch, F)
    constant_, xavier_uniform_ = nn.init.constant_, nn.init.xavier_uniform_

    class MSDeformAttn(nn.Module):
        def __init__(self, d_model=256, n_levels=4, n_heads=8, n_points=4):
            """
            Multi-Scale Deformable Attention Module
            :param d_model      hidden dimension
            :param n_levels     number of feature levels
            :param n_heads      number of attention heads
            :param n_points     number of sampling points per attention head per feature level
            """
            super().__init__()
            if d_model % n_heads != 0:
                raise ValueError('d_model must be divisible by n_heads, but got {} and {}'.format(d_model, n_heads))
            _d_per_head = d_model // n_heads
            # you'd better set _d_per_head to a power of 2 which is more efficient in our CUDA implementation
            if not _is_power_of_2(_d_per_head):
                warnings.warn("You'd better set d_model in MSDeformAttn to make the dimension of each attention head "
                              "a power of 2 which is more efficient in our CUDA implementation.")

            self.im2col_step = 64

            self.d_model = d_model
            self.n_levels = n_levels
            self.n_heads = n_heads
            self.n_points = n_points

            self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
            self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
            self.value_proj = nn.Linear(d_model, d_model)
            self.output_proj = nn.Linear(d_model, d_model)

            self._reset_parameters()

        def _reset_parameters(self):
            constant_(self.sampling_offsets.weight.data, 0.)
            thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
            grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)
            grid_init = (grid_init / grid_init.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
            for i in range(self.n_points):
                grid_init[:, :, i, :] *= i + 1
            with torch.no_grad():
                self.sampling_offsets.bias = nn.Parameter(grid_init.view(-1))
            constant_(self.attention_weights.weight.data, 0.)
            constant_(self.attention_weights.bias.data, 0.)
            xavier_uniform_(self.value_proj.weight.data)
            constant_(self.value_proj.bias.data, 0.)
            xavier_uniform_(self.output_proj.weight.data)
            constant_(self.output_proj.bias.data, 0.)

        def forward(self, query, reference_points, input_flatten, input_spatial_shapes, input_level_start_index, input_padding_mask=None):
            """
            :param query                       (N, Length_{query}, C)
            :param reference_points            (N, Length_{query}, n_levels, 2), range in [0, 1], top-left (0,0), bottom-right (1, 1), including padding area
                                            or (N, Length_{query}, n_levels, 4), add additional (w, h) to form reference boxes
            :param input_flatten               (N, \\sum_{l=0}^{L-1} H_l \\cdot W_l, C)
            :param input_spatial_shapes        (n_levels, 2), [(H_0, W_0), (H_1, W_1), ..., (H_{L-1}, W_{L-1})]
            :param input_level_start_index     (n_levels, ), [0, H_0*W_0, H_0*W_0+H_1*W_1, H_0*W_0+H_1*W_1+H_2*W_2, ..., H_0*W_0+H_1*W_1+...+H_{L-1}*W_{L-1}]
            :param input_padding_mask          (N, \\sum_{l=0}^{L-1} H_l \\cdot W_l), True for padding elements, False for non-padding elements

            :return output                     (N, Length_{query}, C)
            """
            N, Len_q, _ = query.shape
            N, Len_in, _ = input_flatten.shape
            assert (input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum() == Len_in

            value = self.value_proj(input_flatten)
            if input_padding_mask is not None:
                value = value.masked_fill(input_padding_mask[..., None], float(0))
            value = value.view(N, Len_in, self.n_heads, self.d_model // self.n_heads)
            sampling_offsets = self.sampling_offsets(query).view(N, Len_q, self.n_heads, self.n_levels, self.n_points, 2)
            attention_weights = self.attention_weights(query).view(N, Len_q, self.n_heads, self.n_levels * self.n_points)
            attention_weights = F.softmax(attention_weights, -1).view(N, Len_q, self.n_heads, self.n_levels, self.n_points)
            # N, Len_q, n_heads, n_levels, n_points, 2
            if reference_points.shape[-1] == 2:
                offset_normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
                sampling_locations = reference_points[:, :, None, :, None, :] \
                                     + sampling_offsets / offset_normalizer[None, None, None, :, None, :]
            elif reference_points.shape[-1] == 4:
                sampling_locations = reference_points[:, :, None, :, None, :2] \
                                     + sampling_offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            else:
                raise ValueError(
                    'Last dim of reference_points must be 2 or 4, but get {} instead.'.format(reference_points.shape[-1]))
            output = from_core(value, input_spatial_shapes, sampling_locations, attention_weights)
            output = self.output_proj(output)
            return output

    return MSDeformAttn


def deformable_encoder(torch, nn, F):
    """deformable_transformer.py's ``DeformableTransformerEncoderLayer`` and ``DeformableTransformerEncoder``, and the
    encoder half of ``DeformableTransformer`` (level embeddings, flattening, ``get_valid_ratio``,
    ``_reset_parameters``) with a linear read-out for a loss."""
    MSDeformAttn = ms_deform_attn(torch, nn, F)

    def _get_clones(module, N):
        return nn.ModuleList([copy.deepcopy(module) for i in range(N)])

    def _get_activation_fn(activation):
        """Return an activation function given a string"""
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        if activation == "glu":
            return F.glu
        raise RuntimeError(F"activation should be relu/gelu, not {activation}.")

    class DeformableTransformerEncoderLayer(nn.Module):
        def __init__(self,
                     d_model=256, d_ffn=1024,
                     dropout=0.1, activation="relu",
                     n_levels=4, n_heads=8, n_points=4):
            super().__init__()

            # self attention
            self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
            self.dropout1 = nn.Dropout(dropout)
            self.norm1 = nn.LayerNorm(d_model)

            # ffn
            self.linear1 = nn.Linear(d_model, d_ffn)
            self.activation = _get_activation_fn(activation)
            self.dropout2 = nn.Dropout(dropout)
            self.linear2 = nn.Linear(d_ffn, d_model)
            self.dropout3 = nn.Dropout(dropout)
            self.norm2 = nn.LayerNorm(d_model)

        @staticmethod
        def with_pos_embed(tensor, pos):
            return tensor if pos is None else tensor + pos

        def forward_ffn(self, src):
            src2 = self.linear2(self.dropout2(self.activation(self.linear1(src))))
            src = src + self.dropout3(src2)
            src = self.norm2(src)
            return src

        def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
            # self attention
            src2 = self.self_attn(self.with_pos_embed(src, pos), reference_points, src, spatial_shapes, level_start_index, padding_mask)
            src = src + self.dropout1(src2)
            src = self.norm1(src)

            # ffn
            src = self.forward_ffn(src)

            return src

    class DeformableTransformerEncoder(nn.Module):
        def __init__(self, encoder_layer, num_layers):
            super().__init__()
            self.layers = _get_clones(encoder_layer, num_layers)
            self.num_layers = num_layers

        @staticmethod
        def get_reference_points(spatial_shapes, valid_ratios, device):
            reference_points_list = []
            for lvl, (H_, W_) in enumerate(spatial_shapes):

                ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, H_ - 0.5, H_, dtype=torch.float32, device=device),
                                              torch.linspace(0.5, W_ - 0.5, W_, dtype=torch.float32, device=device),
                                              indexing='ij')
                ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * H_)
                ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * W_)
                ref = torch.stack((ref_x, ref_y), -1)
                reference_points_list.append(ref)
            reference_points = torch.cat(reference_points_list, 1)
            reference_points = reference_points[:, :, None] * valid_ratios[:, None]
            return reference_points

        def forward(self, src, spatial_shapes, level_start_index, valid_ratios, pos=None, padding_mask=None):
            output = src
            reference_points = self.get_reference_points(spatial_shapes, valid_ratios, device=src.device)
            for _, layer in enumerate(self.layers):
                output = layer(output, pos, reference_points, spatial_shapes, level_start_index, padding_mask)

            return output

    class DeformableEncoder(nn.Module):
        """``DeformableTransformer``'s encoder path (its decoder and two-stage parts left out) and a read-out."""

        def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, dim_feedforward=1024, dropout=0.1,
                     activation="relu", num_feature_levels=4, enc_n_points=4):
            super().__init__()
            self.d_model = d_model
            self.nhead = nhead
            encoder_layer = DeformableTransformerEncoderLayer(d_model, dim_feedforward,
                                                              dropout, activation,
                                                              num_feature_levels, nhead, enc_n_points)
            self.encoder = DeformableTransformerEncoder(encoder_layer, num_encoder_layers)
            self.level_embed = nn.Parameter(torch.Tensor(num_feature_levels, d_model))
            self.head = nn.Linear(d_model, 1)
            self._reset_parameters()

        def _reset_parameters(self):
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            for m in self.modules():
                if isinstance(m, MSDeformAttn):
                    m._reset_parameters()
            nn.init.normal_(self.level_embed)

        def get_valid_ratio(self, mask):
            _, H, W = mask.shape
            valid_H = torch.sum(~mask[:, :, 0], 1)
            valid_W = torch.sum(~mask[:, 0, :], 1)
            valid_ratio_h = valid_H.float() / H
            valid_ratio_w = valid_W.float() / W
            valid_ratio = torch.stack([valid_ratio_w, valid_ratio_h], -1)
            return valid_ratio

        def forward(self, srcs, masks, pos_embeds):
            # prepare input for encoder
            src_flatten = []
            mask_flatten = []
            lvl_pos_embed_flatten = []
            spatial_shapes = []
            for lvl, (src, mask, pos_embed) in enumerate(zip(srcs, masks, pos_embeds)):
                bs, c, h, w = src.shape
                spatial_shape = (h, w)
                spatial_shapes.append(spatial_shape)
                src = src.flatten(2).transpose(1, 2)
                mask = mask.flatten(1)
                pos_embed = pos_embed.flatten(2).transpose(1, 2)
                lvl_pos_embed = pos_embed + self.level_embed[lvl].view(1, 1, -1)
                lvl_pos_embed_flatten.append(lvl_pos_embed)
                src_flatten.append(src)
                mask_flatten.append(mask)
            src_flatten = torch.cat(src_flatten, 1)
            mask_flatten = torch.cat(mask_flatten, 1)
            lvl_pos_embed_flatten = torch.cat(lvl_pos_embed_flatten, 1)
            spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=src_flatten.device)
            level_start_index = torch.cat((spatial_shapes.new_zeros((1, )), spatial_shapes.prod(1).cumsum(0)[:-1]))
            valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)

            # encoder
            memory = self.encoder(src_flatten, spatial_shapes, level_start_index, valid_ratios, lvl_pos_embed_flatten, mask_flatten)
            return memory, self.head(memory).squeeze(-1), mask_flatten

    return DeformableEncoder


def deformable_batch(seed=0):
    """Two images' features at two levels (NumPy): each level ``(BATCH, D_MODEL, H, W)``, its padding mask (the
    second image padded on the right and at the bottom, as a smaller image in a padded batch) and position
    embeddings, and a regression target per position."""
    rng = np.random.default_rng(seed)
    srcs, masks, poss = [], [], []
    for h, w in LEVEL_SHAPES:
        srcs.append(rng.standard_normal((BATCH, D_MODEL, h, w)))
        poss.append(0.5 * rng.standard_normal((BATCH, D_MODEL, h, w)))
        mask = np.zeros((BATCH, h, w), bool)
        mask[1, h - h // 2:, :] = True
        mask[1, :, w - w // 3 - 1:] = True
        masks.append(mask)
    target = rng.standard_normal((BATCH, sum(h * w for h, w in LEVEL_SHAPES)))
    return srcs, masks, poss, target
