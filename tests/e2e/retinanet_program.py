"""RetinaNet's training and inference pieces as torchvision writes them (``torch`` is ``torch`` or ``kiln``):
``detection/anchor_utils.py``'s ``AnchorGenerator``, ``detection/_utils.py``'s ``Matcher``, ``BoxCoder``,
``encode_boxes`` and ``_box_loss``, ``ops/boxes.py`` (``box_iou``, ``_upcast``, ``clip_boxes_to_image``,
``_batched_nms_coordinate_trick``), ``ops/focal_loss.py``, ``ops/giou_loss.py`` and ``detection/retinanet.py``'s heads,
``compute_loss`` and ``postprocess_detections``, on a tiny two-level backbone. torchvision's C++ ``nms`` is written in
torch (greedy, by score), as torchvision's Python fallback reads."""

from __future__ import annotations

import math
from types import SimpleNamespace


def retinanet_program(torch, nn, F, channels=8, num_classes=3, loss_type="smooth_l1"):
    """``SimpleNamespace(RetinaNet, box_iou, batched_nms, ...)``; ``loss_type`` is the regression head's
    ``_loss_type`` (``"l1"`` in RetinaNet v1, ``"giou"`` in v2; ``"smooth_l1"`` with Faster R-CNN's beta 1/9)."""

    def _upcast(t):
        # Protects from numerical overflows in multiplications by upcasting to the equivalent higher type
        if t.is_floating_point():
            return t if t.dtype in (torch.float32, torch.float64) else t.float()
        else:
            return t if t.dtype in (torch.int32, torch.int64) else t.int()

    def box_area(boxes):
        boxes = _upcast(boxes)
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def _box_inter_union(boxes1, boxes2):
        area1 = box_area(boxes1)
        area2 = box_area(boxes2)

        lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])  # [N,M,2]
        rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])  # [N,M,2]

        wh = _upcast(rb - lt).clamp(min=0)  # [N,M,2]
        inter = wh[:, :, 0] * wh[:, :, 1]  # [N,M]

        union = area1[:, None] + area2 - inter

        return inter, union

    def box_iou(boxes1, boxes2):
        inter, union = _box_inter_union(boxes1, boxes2)
        iou = inter / union
        return iou

    def clip_boxes_to_image(boxes, size):
        dim = boxes.dim()
        boxes_x = boxes[..., 0::2]
        boxes_y = boxes[..., 1::2]
        height, width = size
        boxes_x = boxes_x.clamp(min=0, max=width)
        boxes_y = boxes_y.clamp(min=0, max=height)
        clipped_boxes = torch.stack((boxes_x, boxes_y), dim=dim)
        return clipped_boxes.reshape(boxes.shape)

    def nms(boxes, scores, iou_threshold):
        """Greedy NMS: the highest score kept, the boxes overlapping it by more than the threshold dropped."""
        order = scores.argsort(descending=True)
        keep = []
        while order.numel() > 0:
            i = order[0]
            keep.append(i)
            iou = box_iou(boxes[i][None], boxes[order[1:]])[0]
            order = order[1:][iou <= iou_threshold]
        return torch.stack(keep)

    def _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold):
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64, device=boxes.device)
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
        keep = nms(boxes_for_nms, scores, iou_threshold)
        return keep

    def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
        p = torch.sigmoid(inputs)
        ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce_loss * ((1 - p_t) ** gamma)

        if alpha >= 0:
            alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
            loss = alpha_t * loss

        # Check reduction option and return loss accordingly
        if reduction == "none":
            pass
        elif reduction == "mean":
            loss = loss.mean()
        elif reduction == "sum":
            loss = loss.sum()
        else:
            raise ValueError(
                f"Invalid Value for arg 'reduction': '{reduction} \n Supported reduction modes: 'none', 'mean', 'sum'"
            )
        return loss

    def _upcast_non_float(t):
        # Protects from numerical overflows in multiplications by upcasting to the equivalent higher type
        if t.dtype not in (torch.float32, torch.float64):
            return t.float()
        return t

    def _loss_inter_union(boxes1, boxes2):
        x1, y1, x2, y2 = boxes1.unbind(dim=-1)
        x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)

        # Intersection keypoints
        xkis1 = torch.max(x1, x1g)
        ykis1 = torch.max(y1, y1g)
        xkis2 = torch.min(x2, x2g)
        ykis2 = torch.min(y2, y2g)

        intsctk = torch.zeros_like(x1)
        mask = (ykis2 > ykis1) & (xkis2 > xkis1)
        intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
        unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk

        return intsctk, unionk

    def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
        boxes1 = _upcast_non_float(boxes1)
        boxes2 = _upcast_non_float(boxes2)
        intsctk, unionk = _loss_inter_union(boxes1, boxes2)
        iouk = intsctk / (unionk + eps)

        x1, y1, x2, y2 = boxes1.unbind(dim=-1)
        x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)

        xc1 = torch.min(x1, x1g)
        yc1 = torch.min(y1, y1g)
        xc2 = torch.max(x2, x2g)
        yc2 = torch.max(y2, y2g)

        area_c = (xc2 - xc1) * (yc2 - yc1)
        miouk = iouk - ((area_c - unionk) / (area_c + eps))

        loss = 1 - miouk

        if reduction == "none":
            pass
        elif reduction == "mean":
            loss = loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
        elif reduction == "sum":
            loss = loss.sum()
        return loss

    def encode_boxes(reference_boxes, proposals, weights):
        wx = weights[0]
        wy = weights[1]
        ww = weights[2]
        wh = weights[3]

        proposals_x1 = proposals[:, 0].unsqueeze(1)
        proposals_y1 = proposals[:, 1].unsqueeze(1)
        proposals_x2 = proposals[:, 2].unsqueeze(1)
        proposals_y2 = proposals[:, 3].unsqueeze(1)

        reference_boxes_x1 = reference_boxes[:, 0].unsqueeze(1)
        reference_boxes_y1 = reference_boxes[:, 1].unsqueeze(1)
        reference_boxes_x2 = reference_boxes[:, 2].unsqueeze(1)
        reference_boxes_y2 = reference_boxes[:, 3].unsqueeze(1)

        # implementation starts here
        ex_widths = proposals_x2 - proposals_x1
        ex_heights = proposals_y2 - proposals_y1
        ex_ctr_x = proposals_x1 + 0.5 * ex_widths
        ex_ctr_y = proposals_y1 + 0.5 * ex_heights

        gt_widths = reference_boxes_x2 - reference_boxes_x1
        gt_heights = reference_boxes_y2 - reference_boxes_y1
        gt_ctr_x = reference_boxes_x1 + 0.5 * gt_widths
        gt_ctr_y = reference_boxes_y1 + 0.5 * gt_heights

        targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        targets_dw = ww * torch.log(gt_widths / ex_widths)
        targets_dh = wh * torch.log(gt_heights / ex_heights)

        targets = torch.cat((targets_dx, targets_dy, targets_dw, targets_dh), dim=1)
        return targets

    class BoxCoder:
        def __init__(self, weights, bbox_xform_clip=math.log(1000.0 / 16)):
            self.weights = weights
            self.bbox_xform_clip = bbox_xform_clip

        def encode_single(self, reference_boxes, proposals):
            dtype = reference_boxes.dtype
            device = reference_boxes.device
            weights = torch.as_tensor(self.weights, dtype=dtype, device=device)
            targets = encode_boxes(reference_boxes, proposals, weights)
            return targets

        def decode_single(self, rel_codes, boxes):
            boxes = boxes.to(rel_codes.dtype)

            wx, wy, ww, wh = self.weights
            dx = rel_codes[:, 0::4] / wx
            dy = rel_codes[:, 1::4] / wy
            dw = rel_codes[:, 2::4] / ww
            dh = rel_codes[:, 3::4] / wh

            # Prevent sending too large values into torch.exp()
            dw = torch.clamp(dw, max=self.bbox_xform_clip)
            dh = torch.clamp(dh, max=self.bbox_xform_clip)

            widths = boxes[:, 2] - boxes[:, 0]
            heights = boxes[:, 3] - boxes[:, 1]
            ctr_x = boxes[:, 0] + 0.5 * widths
            ctr_y = boxes[:, 1] + 0.5 * heights

            pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
            pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
            pred_w = torch.exp(dw) * widths[:, None]
            pred_h = torch.exp(dh) * heights[:, None]

            # Distance from center to box's corner.
            c_to_c_h = torch.tensor(0.5, dtype=pred_ctr_y.dtype, device=pred_h.device) * pred_h
            c_to_c_w = torch.tensor(0.5, dtype=pred_ctr_x.dtype, device=pred_w.device) * pred_w

            pred_boxes1 = pred_ctr_x - c_to_c_w
            pred_boxes2 = pred_ctr_y - c_to_c_h
            pred_boxes3 = pred_ctr_x + c_to_c_w
            pred_boxes4 = pred_ctr_y + c_to_c_h
            pred_boxes = torch.stack((pred_boxes1, pred_boxes2, pred_boxes3, pred_boxes4), dim=2).flatten(1)
            return pred_boxes

    class Matcher:
        BELOW_LOW_THRESHOLD = -1
        BETWEEN_THRESHOLDS = -2

        def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=False):
            self.BELOW_LOW_THRESHOLD = -1
            self.BETWEEN_THRESHOLDS = -2
            torch._assert(low_threshold <= high_threshold, "low_threshold should be <= high_threshold")
            self.high_threshold = high_threshold
            self.low_threshold = low_threshold
            self.allow_low_quality_matches = allow_low_quality_matches

        def __call__(self, match_quality_matrix):
            if match_quality_matrix.numel() == 0:
                # empty targets or proposals not supported during training
                if match_quality_matrix.shape[0] == 0:
                    raise ValueError("No ground-truth boxes available for one of the images during training")
                else:
                    raise ValueError("No proposal boxes available for one of the images during training")

            # match_quality_matrix is M (gt) x N (predicted)
            # Max over gt elements (dim 0) to find best gt candidate for each prediction
            matched_vals, matches = match_quality_matrix.max(dim=0)
            if self.allow_low_quality_matches:
                all_matches = matches.clone()
            else:
                all_matches = None

            # Assign candidate matches with low quality to negative (unassigned) values
            below_low_threshold = matched_vals < self.low_threshold
            between_thresholds = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
            matches[below_low_threshold] = self.BELOW_LOW_THRESHOLD
            matches[between_thresholds] = self.BETWEEN_THRESHOLDS

            if self.allow_low_quality_matches:
                if all_matches is None:
                    torch._assert(False, "all_matches should not be None")
                else:
                    self.set_low_quality_matches_(matches, all_matches, match_quality_matrix)

            return matches

        def set_low_quality_matches_(self, matches, all_matches, match_quality_matrix):
            # For each gt, find the prediction with which it has the highest quality
            highest_quality_foreach_gt, _ = match_quality_matrix.max(dim=1)
            # Find the highest quality match available, even if it is low, including ties
            gt_pred_pairs_of_highest_quality = torch.where(match_quality_matrix == highest_quality_foreach_gt[:, None])
            pred_inds_to_update = gt_pred_pairs_of_highest_quality[1]
            matches[pred_inds_to_update] = all_matches[pred_inds_to_update]

    def _box_loss(type, box_coder, anchors_per_image, matched_gt_boxes_per_image, bbox_regression_per_image,
                  cnf=None):
        torch._assert(type in ["l1", "smooth_l1", "giou"], f"Unsupported loss: {type}")

        if type == "l1":
            target_regression = box_coder.encode_single(matched_gt_boxes_per_image, anchors_per_image)
            return F.l1_loss(bbox_regression_per_image, target_regression, reduction="sum")
        elif type == "smooth_l1":
            target_regression = box_coder.encode_single(matched_gt_boxes_per_image, anchors_per_image)
            beta = cnf["beta"] if cnf is not None and "beta" in cnf else 1.0
            return F.smooth_l1_loss(bbox_regression_per_image, target_regression, reduction="sum", beta=beta)
        else:
            bbox_per_image = box_coder.decode_single(bbox_regression_per_image, anchors_per_image)
            eps = cnf["eps"] if cnf is not None and "eps" in cnf else 1e-7
            return generalized_box_iou_loss(bbox_per_image, matched_gt_boxes_per_image, reduction="sum", eps=eps)

    def _sum(x):
        res = x[0]
        for i in x[1:]:
            res = res + i
        return res

    class AnchorGenerator(nn.Module):
        def __init__(self, sizes=((16,), (32,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2):
            super().__init__()
            self.sizes = sizes
            self.aspect_ratios = aspect_ratios
            self.cell_anchors = [
                self.generate_anchors(size, aspect_ratio) for size, aspect_ratio in zip(sizes, aspect_ratios)
            ]

        def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32, device=torch.device("cpu")):
            scales = torch.as_tensor(scales, dtype=dtype, device=device)
            aspect_ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
            h_ratios = torch.sqrt(aspect_ratios)
            w_ratios = 1 / h_ratios

            ws = (w_ratios[:, None] * scales[None, :]).view(-1)
            hs = (h_ratios[:, None] * scales[None, :]).view(-1)

            base_anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
            return base_anchors.round()

        def set_cell_anchors(self, dtype, device):
            self.cell_anchors = [cell_anchor.to(dtype=dtype, device=device) for cell_anchor in self.cell_anchors]

        def num_anchors_per_location(self):
            return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

        def grid_anchors(self, grid_sizes, strides):
            anchors = []
            cell_anchors = self.cell_anchors
            torch._assert(cell_anchors is not None, "cell_anchors should not be None")
            for size, stride, base_anchors in zip(grid_sizes, strides, cell_anchors):
                grid_height, grid_width = size
                stride_height, stride_width = stride
                device = base_anchors.device

                # For output anchor, compute [x_center, y_center, x_center, y_center]
                shifts_x = torch.arange(0, grid_width, dtype=torch.int32, device=device) * stride_width
                shifts_y = torch.arange(0, grid_height, dtype=torch.int32, device=device) * stride_height
                shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
                shift_x = shift_x.reshape(-1)
                shift_y = shift_y.reshape(-1)
                shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)

                # For every (base anchor, output anchor) pair,
                # offset each zero-centered base anchor by the center of the output anchor.
                anchors.append((shifts.view(-1, 1, 4) + base_anchors.view(1, -1, 4)).reshape(-1, 4))

            return anchors

        def forward(self, images, feature_maps):
            grid_sizes = [feature_map.shape[-2:] for feature_map in feature_maps]
            image_size = images.shape[-2:]
            dtype, device = feature_maps[0].dtype, feature_maps[0].device
            strides = [
                [
                    torch.empty((), dtype=torch.int64, device=device).fill_(image_size[0] // g[0]),
                    torch.empty((), dtype=torch.int64, device=device).fill_(image_size[1] // g[1]),
                ]
                for g in grid_sizes
            ]
            self.set_cell_anchors(dtype, device)
            anchors_over_all_feature_maps = self.grid_anchors(grid_sizes, strides)
            anchors = []
            for _ in range(images.shape[0]):
                anchors_in_image = [anchors_per_feature_map
                                    for anchors_per_feature_map in anchors_over_all_feature_maps]
                anchors.append(anchors_in_image)
            anchors = [torch.cat(anchors_per_image) for anchors_per_image in anchors]
            return anchors

    def head_convs(in_channels, num_convs):
        """``Conv2dNormActivation`` stack (v1: no norm), normal(std=0.01) weights, zero biases."""
        conv = []
        for _ in range(num_convs):
            conv.append(nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True)))
        conv = nn.Sequential(*conv)
        for layer in conv.modules():
            if isinstance(layer, nn.Conv2d):
                torch.nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    torch.nn.init.constant_(layer.bias, 0)
        return conv

    class RetinaNetClassificationHead(nn.Module):
        def __init__(self, in_channels, num_anchors, num_classes, prior_probability=0.01, num_convs=1):
            super().__init__()
            self.conv = head_convs(in_channels, num_convs)
            self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
            torch.nn.init.normal_(self.cls_logits.weight, std=0.01)
            torch.nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))
            self.num_classes = num_classes
            self.num_anchors = num_anchors
            self.BETWEEN_THRESHOLDS = Matcher.BETWEEN_THRESHOLDS

        def compute_loss(self, targets, head_outputs, matched_idxs):
            losses = []

            cls_logits = head_outputs["cls_logits"]

            for targets_per_image, cls_logits_per_image, matched_idxs_per_image in zip(targets, cls_logits,
                                                                                       matched_idxs):
                # determine only the foreground
                foreground_idxs_per_image = matched_idxs_per_image >= 0
                num_foreground = foreground_idxs_per_image.sum()

                # create the target classification
                gt_classes_target = torch.zeros_like(cls_logits_per_image)
                gt_classes_target[
                    foreground_idxs_per_image,
                    targets_per_image["labels"][matched_idxs_per_image[foreground_idxs_per_image]],
                ] = 1.0

                # find indices for which anchors should be ignored
                valid_idxs_per_image = matched_idxs_per_image != self.BETWEEN_THRESHOLDS

                # compute the classification loss
                losses.append(
                    sigmoid_focal_loss(
                        cls_logits_per_image[valid_idxs_per_image],
                        gt_classes_target[valid_idxs_per_image],
                        reduction="sum",
                    )
                    / max(1, num_foreground)
                )

            return _sum(losses) / len(targets)

        def forward(self, x):
            all_cls_logits = []

            for features in x:
                cls_logits = self.conv(features)
                cls_logits = self.cls_logits(cls_logits)

                # Permute classification output from (N, A * K, H, W) to (N, HWA, K).
                N, _, H, W = cls_logits.shape
                cls_logits = cls_logits.view(N, -1, self.num_classes, H, W)
                cls_logits = cls_logits.permute(0, 3, 4, 1, 2)
                cls_logits = cls_logits.reshape(N, -1, self.num_classes)  # Size=(N, HWA, 4)

                all_cls_logits.append(cls_logits)

            return torch.cat(all_cls_logits, dim=1)

    class RetinaNetRegressionHead(nn.Module):
        def __init__(self, in_channels, num_anchors, num_convs=1):
            super().__init__()
            self.conv = head_convs(in_channels, num_convs)
            self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=3, stride=1, padding=1)
            torch.nn.init.normal_(self.bbox_reg.weight, std=0.01)
            torch.nn.init.zeros_(self.bbox_reg.bias)
            self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
            self._loss_type = loss_type

        def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
            losses = []

            bbox_regression = head_outputs["bbox_regression"]

            for targets_per_image, bbox_regression_per_image, anchors_per_image, matched_idxs_per_image in zip(
                targets, bbox_regression, anchors, matched_idxs
            ):
                # determine only the foreground indices, ignore the rest
                foreground_idxs_per_image = torch.where(matched_idxs_per_image >= 0)[0]
                num_foreground = foreground_idxs_per_image.numel()

                # select only the foreground boxes
                matched_gt_boxes_per_image = targets_per_image["boxes"][
                    matched_idxs_per_image[foreground_idxs_per_image]]
                bbox_regression_per_image = bbox_regression_per_image[foreground_idxs_per_image, :]
                anchors_per_image = anchors_per_image[foreground_idxs_per_image, :]

                # compute the loss
                losses.append(
                    _box_loss(
                        self._loss_type,
                        self.box_coder,
                        anchors_per_image,
                        matched_gt_boxes_per_image,
                        bbox_regression_per_image,
                        cnf={"beta": 1 / 9},
                    )
                    / max(1, num_foreground)
                )

            return _sum(losses) / max(1, len(targets))

        def forward(self, x):
            all_bbox_regression = []

            for features in x:
                bbox_regression = self.conv(features)
                bbox_regression = self.bbox_reg(bbox_regression)

                # Permute bbox regression output from (N, 4 * A, H, W) to (N, HWA, 4).
                N, _, H, W = bbox_regression.shape
                bbox_regression = bbox_regression.view(N, -1, 4, H, W)
                bbox_regression = bbox_regression.permute(0, 3, 4, 1, 2)
                bbox_regression = bbox_regression.reshape(N, -1, 4)  # Size=(N, HWA, 4)

                all_bbox_regression.append(bbox_regression)

            return torch.cat(all_bbox_regression, dim=1)

    class RetinaNetHead(nn.Module):
        def __init__(self, in_channels, num_anchors, num_classes):
            super().__init__()
            self.classification_head = RetinaNetClassificationHead(in_channels, num_anchors, num_classes)
            self.regression_head = RetinaNetRegressionHead(in_channels, num_anchors)

        def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
            return {
                "classification": self.classification_head.compute_loss(targets, head_outputs, matched_idxs),
                "bbox_regression": self.regression_head.compute_loss(targets, head_outputs, anchors, matched_idxs),
            }

        def forward(self, x):
            return {"cls_logits": self.classification_head(x), "bbox_regression": self.regression_head(x)}

    class TinyBackbone(nn.Module):
        """Two feature levels (strides 4 and 8) standing in for ResNet + FPN (``out_channels`` the heads read)."""

        def __init__(self):
            super().__init__()
            self.out_channels = channels
            self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels),
                                      nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, stride=2, padding=1))
            self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

        def forward(self, x):
            p3 = self.stem(x)
            return {"p3": p3, "p4": self.down(F.relu(p3))}

    class RetinaNet(nn.Module):
        def __init__(self, score_thresh=0.05, nms_thresh=0.5, detections_per_img=10, topk_candidates=20):
            super().__init__()
            self.backbone = TinyBackbone()
            self.anchor_generator = AnchorGenerator()
            self.head = RetinaNetHead(channels, self.anchor_generator.num_anchors_per_location()[0], num_classes)
            self.proposal_matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
            self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
            self.score_thresh = score_thresh
            self.nms_thresh = nms_thresh
            self.detections_per_img = detections_per_img
            self.topk_candidates = topk_candidates

        def match(self, targets, anchors):
            matched_idxs = []
            for anchors_per_image, targets_per_image in zip(anchors, targets):
                if targets_per_image["boxes"].numel() == 0:
                    matched_idxs.append(
                        torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64, device=anchors_per_image.device)
                    )
                    continue

                match_quality_matrix = box_iou(targets_per_image["boxes"], anchors_per_image)
                matched_idxs.append(self.proposal_matcher(match_quality_matrix))
            return matched_idxs

        def compute_loss(self, targets, head_outputs, anchors, matched_idxs=None):
            if matched_idxs is None:
                matched_idxs = self.match(targets, anchors)
            return self.head.compute_loss(targets, head_outputs, anchors, matched_idxs)

        def features_and_anchors(self, images):
            features = list(self.backbone(images).values())
            head_outputs = self.head(features)
            anchors = self.anchor_generator(images, features)
            return features, head_outputs, anchors

        def forward(self, images, targets=None, matched_idxs=None):
            features, head_outputs, anchors = self.features_and_anchors(images)
            if self.training:
                return self.compute_loss(targets, head_outputs, anchors, matched_idxs)
            num_anchors_per_level = [x.size(2) * x.size(3) for x in features]
            HW = 0
            for v in num_anchors_per_level:
                HW += v
            HWA = head_outputs["cls_logits"].size(1)
            A = HWA // HW
            num_anchors_per_level = [hw * A for hw in num_anchors_per_level]

            # split outputs per level
            split_head_outputs = {}
            for k in head_outputs:
                split_head_outputs[k] = list(head_outputs[k].split(num_anchors_per_level, dim=1))
            split_anchors = [list(a.split(num_anchors_per_level)) for a in anchors]
            image_shapes = [tuple(images.shape[-2:])] * images.shape[0]
            return self.postprocess_detections(split_head_outputs, split_anchors, image_shapes)

        def postprocess_detections(self, head_outputs, anchors, image_shapes):
            class_logits = head_outputs["cls_logits"]
            box_regression = head_outputs["bbox_regression"]

            num_images = len(image_shapes)

            detections = []

            for index in range(num_images):
                box_regression_per_image = [br[index] for br in box_regression]
                logits_per_image = [cl[index] for cl in class_logits]
                anchors_per_image, image_shape = anchors[index], image_shapes[index]

                image_boxes = []
                image_scores = []
                image_labels = []

                for box_regression_per_level, logits_per_level, anchors_per_level in zip(
                    box_regression_per_image, logits_per_image, anchors_per_image
                ):
                    num_classes = logits_per_level.shape[-1]

                    # remove low scoring boxes
                    scores_per_level = torch.sigmoid(logits_per_level).flatten()
                    keep_idxs = scores_per_level > self.score_thresh
                    scores_per_level = scores_per_level[keep_idxs]
                    topk_idxs = torch.where(keep_idxs)[0]

                    # keep only topk scoring predictions
                    num_topk = min(self.topk_candidates, topk_idxs.size(0))
                    scores_per_level, idxs = scores_per_level.topk(num_topk)
                    topk_idxs = topk_idxs[idxs]

                    anchor_idxs = torch.div(topk_idxs, num_classes, rounding_mode="floor")
                    labels_per_level = topk_idxs % num_classes

                    boxes_per_level = self.box_coder.decode_single(
                        box_regression_per_level[anchor_idxs], anchors_per_level[anchor_idxs]
                    )
                    boxes_per_level = clip_boxes_to_image(boxes_per_level, image_shape)

                    image_boxes.append(boxes_per_level)
                    image_scores.append(scores_per_level)
                    image_labels.append(labels_per_level)

                image_boxes = torch.cat(image_boxes, dim=0)
                image_scores = torch.cat(image_scores, dim=0)
                image_labels = torch.cat(image_labels, dim=0)

                # non-maximum suppression
                keep = _batched_nms_coordinate_trick(image_boxes, image_scores, image_labels, self.nms_thresh)
                keep = keep[: self.detections_per_img]

                detections.append(
                    {
                        "boxes": image_boxes[keep],
                        "scores": image_scores[keep],
                        "labels": image_labels[keep],
                    }
                )

            return detections

    return SimpleNamespace(RetinaNet=RetinaNet, box_iou=box_iou, Matcher=Matcher, BoxCoder=BoxCoder, nms=nms,
                           batched_nms=_batched_nms_coordinate_trick, sigmoid_focal_loss=sigmoid_focal_loss,
                           generalized_box_iou_loss=generalized_box_iou_loss, AnchorGenerator=AnchorGenerator)
