"""DETR's set-prediction model and loss as facebookresearch/detr writes them (``util/box_ops.py``,
``models/matcher.py``, ``models/detr.py``, ``models/position_encoding.py``, ``models/backbone.py``'s
FrozenBatchNorm2d, ``models/transformer.py``'s post-norm decoder, ``util/misc.accuracy``), shrunk to a few channels,
written once for ``torch`` (``torch`` or ``kiln``). ``linear_sum_assignment`` is scipy's signature (a cost matrix in,
sorted row indices and their columns out); the probe passes a brute-force one, scipy being no test dependency.
``position_dtype`` is the sine encoding's dtype, ``torch.float32`` as DETR writes it."""

from __future__ import annotations

import copy


def detr_program(torch, nn, F, linear_sum_assignment, position_dtype=lambda torch: torch.float32):
    def box_cxcywh_to_xyxy(x):
        x_c, y_c, w, h = x.unbind(-1)
        b = [(x_c - 0.5 * w), (y_c - 0.5 * h), (x_c + 0.5 * w), (y_c + 0.5 * h)]
        return torch.stack(b, dim=-1)

    def box_area(boxes):
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def box_iou(boxes1, boxes2):
        area1 = box_area(boxes1)
        area2 = box_area(boxes2)
        lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])  # [N,M,2]
        rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])  # [N,M,2]
        wh = (rb - lt).clamp(min=0)  # [N,M,2]
        inter = wh[:, :, 0] * wh[:, :, 1]  # [N,M]
        union = area1[:, None] + area2 - inter
        iou = inter / union
        return iou, union

    def generalized_box_iou(boxes1, boxes2):
        assert (boxes1[:, 2:] >= boxes1[:, :2]).all()
        assert (boxes2[:, 2:] >= boxes2[:, :2]).all()
        iou, union = box_iou(boxes1, boxes2)
        lt = torch.min(boxes1[:, None, :2], boxes2[:, :2])
        rb = torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
        wh = (rb - lt).clamp(min=0)  # [N,M,2]
        area = wh[:, :, 0] * wh[:, :, 1]
        return iou - (area - union) / area

    @torch.no_grad()
    def accuracy(output, target, topk=(1,)):
        if target.numel() == 0:
            return [torch.zeros([], device=output.device)]
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:k].view(-1).float().sum(0)
            res.append(correct_k.mul_(100.0 / batch_size))
        return res

    class HungarianMatcher(nn.Module):
        def __init__(self, cost_class: float = 1, cost_bbox: float = 5, cost_giou: float = 2):
            super().__init__()
            self.cost_class = cost_class
            self.cost_bbox = cost_bbox
            self.cost_giou = cost_giou
            assert cost_class != 0 or cost_bbox != 0 or cost_giou != 0, "all costs cant be 0"

        @torch.no_grad()
        def forward(self, outputs, targets):
            bs, num_queries = outputs["pred_logits"].shape[:2]
            out_prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)  # [batch_size * num_queries, num_classes]
            out_bbox = outputs["pred_boxes"].flatten(0, 1)  # [batch_size * num_queries, 4]
            tgt_ids = torch.cat([v["labels"] for v in targets])
            tgt_bbox = torch.cat([v["boxes"] for v in targets])
            cost_class = -out_prob[:, tgt_ids]
            cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
            cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
            C = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
            C = C.view(bs, num_queries, -1).cpu()
            sizes = [len(v["boxes"]) for v in targets]
            indices = [linear_sum_assignment(c[i]) for i, c in enumerate(C.split(sizes, -1))]
            return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]

    class SetCriterion(nn.Module):
        def __init__(self, num_classes, matcher, weight_dict, eos_coef, losses):
            super().__init__()
            self.num_classes = num_classes
            self.matcher = matcher
            self.weight_dict = weight_dict
            self.eos_coef = eos_coef
            self.losses = losses
            empty_weight = torch.ones(self.num_classes + 1)
            empty_weight[-1] = self.eos_coef
            self.register_buffer('empty_weight', empty_weight)

        def loss_labels(self, outputs, targets, indices, num_boxes, log=True):
            assert 'pred_logits' in outputs
            src_logits = outputs['pred_logits']
            idx = self._get_src_permutation_idx(indices)
            target_classes_o = torch.cat([t["labels"][J] for t, (_, J) in zip(targets, indices)])
            target_classes = torch.full(src_logits.shape[:2], self.num_classes,
                                        dtype=torch.int64, device=src_logits.device)
            target_classes[idx] = target_classes_o
            loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight)
            losses = {'loss_ce': loss_ce}
            if log:
                losses['class_error'] = 100 - accuracy(src_logits[idx], target_classes_o)[0]
            return losses

        @torch.no_grad()
        def loss_cardinality(self, outputs, targets, indices, num_boxes):
            pred_logits = outputs['pred_logits']
            device = pred_logits.device
            tgt_lengths = torch.as_tensor([len(v["labels"]) for v in targets], device=device)
            card_pred = (pred_logits.argmax(-1) != pred_logits.shape[-1] - 1).sum(1)
            card_err = F.l1_loss(card_pred.float(), tgt_lengths.float())
            return {'cardinality_error': card_err}

        def loss_boxes(self, outputs, targets, indices, num_boxes):
            assert 'pred_boxes' in outputs
            idx = self._get_src_permutation_idx(indices)
            src_boxes = outputs['pred_boxes'][idx]
            target_boxes = torch.cat([t['boxes'][i] for t, (_, i) in zip(targets, indices)], dim=0)
            loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction='none')
            losses = {}
            losses['loss_bbox'] = loss_bbox.sum() / num_boxes
            loss_giou = 1 - torch.diag(generalized_box_iou(
                box_cxcywh_to_xyxy(src_boxes),
                box_cxcywh_to_xyxy(target_boxes)))
            losses['loss_giou'] = loss_giou.sum() / num_boxes
            return losses

        def _get_src_permutation_idx(self, indices):
            batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
            src_idx = torch.cat([src for (src, _) in indices])
            return batch_idx, src_idx

        def get_loss(self, loss, outputs, targets, indices, num_boxes, **kwargs):
            loss_map = {'labels': self.loss_labels, 'cardinality': self.loss_cardinality, 'boxes': self.loss_boxes}
            assert loss in loss_map, f'do you really want to compute {loss} loss?'
            return loss_map[loss](outputs, targets, indices, num_boxes, **kwargs)

        def forward(self, outputs, targets):
            outputs_without_aux = {k: v for k, v in outputs.items() if k != 'aux_outputs'}
            indices = self.matcher(outputs_without_aux, targets)
            num_boxes = sum(len(t["labels"]) for t in targets)
            num_boxes = torch.as_tensor([num_boxes], dtype=torch.float, device=next(iter(outputs.values())).device)
            num_boxes = torch.clamp(num_boxes / 1, min=1).item()  # / get_world_size()
            losses = {}
            for loss in self.losses:
                losses.update(self.get_loss(loss, outputs, targets, indices, num_boxes))
            if 'aux_outputs' in outputs:
                for i, aux_outputs in enumerate(outputs['aux_outputs']):
                    indices = self.matcher(aux_outputs, targets)
                    for loss in self.losses:
                        kwargs = {}
                        if loss == 'labels':
                            kwargs = {'log': False}
                        l_dict = self.get_loss(loss, aux_outputs, targets, indices, num_boxes, **kwargs)
                        l_dict = {k + f'_{i}': v for k, v in l_dict.items()}
                        losses.update(l_dict)
            return losses

    class FrozenBatchNorm2d(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("weight", torch.ones(n))
            self.register_buffer("bias", torch.zeros(n))
            self.register_buffer("running_mean", torch.zeros(n))
            self.register_buffer("running_var", torch.ones(n))

        def forward(self, x):
            w = self.weight.reshape(1, -1, 1, 1)
            b = self.bias.reshape(1, -1, 1, 1)
            rv = self.running_var.reshape(1, -1, 1, 1)
            rm = self.running_mean.reshape(1, -1, 1, 1)
            eps = 1e-5
            scale = w * (rv + eps).rsqrt()
            bias = b - rm * scale
            return x * scale + bias

    class Backbone(nn.Module):
        def __init__(self, num_channels=8):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False), FrozenBatchNorm2d(6),
                                      nn.ReLU(inplace=True), nn.Conv2d(6, num_channels, 3, stride=2, padding=1),
                                      nn.ReLU(inplace=True))
            self.num_channels = num_channels

        def forward(self, x):
            return self.body(x)

    class PositionEmbeddingSine(nn.Module):
        def __init__(self, num_pos_feats=64, temperature=10000, normalize=False, scale=None):
            super().__init__()
            self.num_pos_feats = num_pos_feats
            self.temperature = temperature
            self.normalize = normalize
            if scale is not None and normalize is False:
                raise ValueError("normalize should be True if scale is passed")
            if scale is None:
                scale = 2 * 3.141592653589793
            self.scale = scale

        def forward(self, x, mask):
            not_mask = ~mask
            y_embed = not_mask.cumsum(1, dtype=position_dtype(torch))
            x_embed = not_mask.cumsum(2, dtype=position_dtype(torch))
            if self.normalize:
                eps = 1e-6
                y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
                x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
            dim_t = torch.arange(self.num_pos_feats, dtype=position_dtype(torch), device=x.device)
            dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
            pos_x = x_embed[:, :, :, None] / dim_t
            pos_y = y_embed[:, :, :, None] / dim_t
            pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
            pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
            pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
            return pos

    class TransformerDecoderLayer(nn.Module):
        def __init__(self, d_model, nhead, dim_feedforward=32, dropout=0.0):
            super().__init__()
            self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
            self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
            self.linear1 = nn.Linear(d_model, dim_feedforward)
            self.dropout = nn.Dropout(dropout)
            self.linear2 = nn.Linear(dim_feedforward, d_model)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.norm3 = nn.LayerNorm(d_model)
            self.dropout1 = nn.Dropout(dropout)
            self.dropout2 = nn.Dropout(dropout)
            self.dropout3 = nn.Dropout(dropout)
            self.activation = F.relu

        def with_pos_embed(self, tensor, pos):
            return tensor if pos is None else tensor + pos

        def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
            q = k = self.with_pos_embed(tgt, query_pos)
            tgt2 = self.self_attn(q, k, value=tgt)[0]
            tgt = tgt + self.dropout1(tgt2)
            tgt = self.norm1(tgt)
            tgt2 = self.multihead_attn(query=self.with_pos_embed(tgt, query_pos),
                                       key=self.with_pos_embed(memory, pos),
                                       value=memory, key_padding_mask=memory_key_padding_mask)[0]
            tgt = tgt + self.dropout2(tgt2)
            tgt = self.norm2(tgt)
            tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
            tgt = tgt + self.dropout3(tgt2)
            tgt = self.norm3(tgt)
            return tgt

    class TransformerDecoder(nn.Module):
        def __init__(self, decoder_layer, num_layers, norm):
            super().__init__()
            self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for i in range(num_layers)])
            self.num_layers = num_layers
            self.norm = norm

        def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
            output = tgt
            intermediate = []
            for layer in self.layers:
                output = layer(output, memory, memory_key_padding_mask=memory_key_padding_mask,
                               pos=pos, query_pos=query_pos)
                intermediate.append(self.norm(output))
            return torch.stack(intermediate)

    class Transformer(nn.Module):
        """DETR's, without the encoder (the backbone's map is the memory)."""

        def __init__(self, d_model=16, nhead=2, num_decoder_layers=2):
            super().__init__()
            layer = TransformerDecoderLayer(d_model, nhead)
            self.decoder = TransformerDecoder(layer, num_decoder_layers, nn.LayerNorm(d_model))
            self.d_model = d_model

        def forward(self, src, mask, query_embed, pos_embed):
            bs, c, h, w = src.shape
            src = src.flatten(2).permute(2, 0, 1)
            pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
            query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
            mask = mask.flatten(1)
            tgt = torch.zeros_like(query_embed)
            hs = self.decoder(tgt, src, memory_key_padding_mask=mask, pos=pos_embed, query_pos=query_embed)
            return hs.transpose(1, 2), src.permute(1, 2, 0).view(bs, c, h, w)

    class MLP(nn.Module):
        def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
            super().__init__()
            self.num_layers = num_layers
            h = [hidden_dim] * (num_layers - 1)
            self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
            return x

    class DETR(nn.Module):
        def __init__(self, num_classes=3, num_queries=5, aux_loss=True):
            super().__init__()
            self.num_queries = num_queries
            self.transformer = Transformer()
            hidden_dim = self.transformer.d_model
            self.backbone = Backbone()
            self.position_embedding = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
            self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
            self.input_proj = nn.Conv2d(self.backbone.num_channels, hidden_dim, kernel_size=1)
            self.aux_loss = aux_loss

        def forward(self, samples, mask):
            features = self.backbone(samples)
            mask = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
            pos = self.position_embedding(features, mask).to(features.dtype)
            hs = self.transformer(self.input_proj(features), mask, self.query_embed.weight, pos)[0]
            outputs_class = self.class_embed(hs)
            outputs_coord = self.bbox_embed(hs).sigmoid()
            out = {'pred_logits': outputs_class[-1], 'pred_boxes': outputs_coord[-1]}
            if self.aux_loss:
                out['aux_outputs'] = self._set_aux_loss(outputs_class, outputs_coord)
            return out

        @torch.jit.unused
        def _set_aux_loss(self, outputs_class, outputs_coord):
            return [{'pred_logits': a, 'pred_boxes': b} for a, b in zip(outputs_class[:-1], outputs_coord[:-1])]

    def build_criterion(num_classes=3, eos_coef=0.1):
        matcher = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2)
        weight_dict = {'loss_ce': 1, 'loss_bbox': 5, 'loss_giou': 2}
        aux_weight_dict = {}
        for i in range(1):  # dec_layers - 1
            aux_weight_dict.update({k + f'_{i}': v for k, v in weight_dict.items()})
        weight_dict.update(aux_weight_dict)
        return SetCriterion(num_classes, matcher, weight_dict, eos_coef, ['labels', 'boxes', 'cardinality'])

    return DETR, build_criterion, generalized_box_iou, box_cxcywh_to_xyxy
