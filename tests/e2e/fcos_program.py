"""FCOS's training pieces as torchvision writes them (``detection/fcos.py``, ``detection/_utils.py``'s
``BoxLinearCoder``), on RetinaNet's ``AnchorGenerator``, ``sigmoid_focal_loss`` and ``generalized_box_iou_loss``
(``e2e/retinanet_program.py``): center sampling by ``.abs_().max(dim=2).values``, ``&=`` on the match, scale ranges
written into slices (``lower_bound[: n] = 0``, ``upper_bound[-n:] = float("inf")``), the smallest-area match by
``pairwise_match.to(torch.float32) * (1e8 - gt_areas[None, :])``, and ``compute_loss`` (focal, GIoU and the
centerness ``binary_cross_entropy_with_logits`` on ``torch.sqrt`` of min/max ratios over ``[:, :, [0, 2]]``)."""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

from e2e.retinanet_program import retinanet_program


def fcos_program(torch, nn, F, channels=8, num_classes=3):
    """``SimpleNamespace(FCOS)``: a tiny FCOS (one anchor per location, GroupNorm(4) heads of one conv)."""
    retina = retinanet_program(torch, nn, F, channels=channels, num_classes=num_classes)
    sigmoid_focal_loss, generalized_box_iou_loss = retina.sigmoid_focal_loss, retina.generalized_box_iou_loss

    class BoxLinearCoder:
        def __init__(self, normalize_by_size=True):
            self.normalize_by_size = normalize_by_size

        def encode(self, reference_boxes, proposals):
            # get the center of reference_boxes
            reference_boxes_ctr_x = 0.5 * (reference_boxes[..., 0] + reference_boxes[..., 2])
            reference_boxes_ctr_y = 0.5 * (reference_boxes[..., 1] + reference_boxes[..., 3])

            # get box regression transformation deltas
            target_l = reference_boxes_ctr_x - proposals[..., 0]
            target_t = reference_boxes_ctr_y - proposals[..., 1]
            target_r = proposals[..., 2] - reference_boxes_ctr_x
            target_b = proposals[..., 3] - reference_boxes_ctr_y

            targets = torch.stack((target_l, target_t, target_r, target_b), dim=-1)

            if self.normalize_by_size:
                reference_boxes_w = reference_boxes[..., 2] - reference_boxes[..., 0]
                reference_boxes_h = reference_boxes[..., 3] - reference_boxes[..., 1]
                reference_boxes_size = torch.stack(
                    (reference_boxes_w, reference_boxes_h, reference_boxes_w, reference_boxes_h), dim=-1
                )
                targets = targets / reference_boxes_size
            return targets

        def decode(self, rel_codes, boxes):
            boxes = boxes.to(dtype=rel_codes.dtype)

            ctr_x = 0.5 * (boxes[..., 0] + boxes[..., 2])
            ctr_y = 0.5 * (boxes[..., 1] + boxes[..., 3])

            if self.normalize_by_size:
                boxes_w = boxes[..., 2] - boxes[..., 0]
                boxes_h = boxes[..., 3] - boxes[..., 1]

                list_box_size = torch.stack((boxes_w, boxes_h, boxes_w, boxes_h), dim=-1)
                rel_codes = rel_codes * list_box_size

            pred_boxes1 = ctr_x - rel_codes[..., 0]
            pred_boxes2 = ctr_y - rel_codes[..., 1]
            pred_boxes3 = ctr_x + rel_codes[..., 2]
            pred_boxes4 = ctr_y + rel_codes[..., 3]

            pred_boxes = torch.stack((pred_boxes1, pred_boxes2, pred_boxes3, pred_boxes4), dim=-1)
            return pred_boxes

    norm_layer = partial(nn.GroupNorm, 4)

    def conv_tower(in_channels, num_convs):
        conv = []
        for _ in range(num_convs):
            conv.append(nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1))
            conv.append(norm_layer(in_channels))
            conv.append(nn.ReLU())
        return nn.Sequential(*conv)

    class FCOSClassificationHead(nn.Module):
        def __init__(self, in_channels, num_anchors, num_classes, num_convs=1, prior_probability=0.01):
            super().__init__()
            self.num_classes = num_classes
            self.num_anchors = num_anchors
            self.conv = conv_tower(in_channels, num_convs)
            for layer in self.conv.children():
                if isinstance(layer, nn.Conv2d):
                    torch.nn.init.normal_(layer.weight, std=0.01)
                    torch.nn.init.constant_(layer.bias, 0)
            self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
            torch.nn.init.normal_(self.cls_logits.weight, std=0.01)
            torch.nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))

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

    class FCOSRegressionHead(nn.Module):
        def __init__(self, in_channels, num_anchors, num_convs=1):
            super().__init__()
            self.conv = conv_tower(in_channels, num_convs)
            self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=3, stride=1, padding=1)
            self.bbox_ctrness = nn.Conv2d(in_channels, num_anchors * 1, kernel_size=3, stride=1, padding=1)
            for layer in [self.bbox_reg, self.bbox_ctrness]:
                torch.nn.init.normal_(layer.weight, std=0.01)
                torch.nn.init.zeros_(layer.bias)

            for layer in self.conv.children():
                if isinstance(layer, nn.Conv2d):
                    torch.nn.init.normal_(layer.weight, std=0.01)
                    torch.nn.init.zeros_(layer.bias)

        def forward(self, x):
            all_bbox_regression = []
            all_bbox_ctrness = []

            for features in x:
                bbox_feature = self.conv(features)
                bbox_regression = nn.functional.relu(self.bbox_reg(bbox_feature))
                bbox_ctrness = self.bbox_ctrness(bbox_feature)

                # permute bbox regression output from (N, 4 * A, H, W) to (N, HWA, 4).
                N, _, H, W = bbox_regression.shape
                bbox_regression = bbox_regression.view(N, -1, 4, H, W)
                bbox_regression = bbox_regression.permute(0, 3, 4, 1, 2)
                bbox_regression = bbox_regression.reshape(N, -1, 4)  # Size=(N, HWA, 4)
                all_bbox_regression.append(bbox_regression)

                # permute bbox ctrness output from (N, 1 * A, H, W) to (N, HWA, 1).
                bbox_ctrness = bbox_ctrness.view(N, -1, 1, H, W)
                bbox_ctrness = bbox_ctrness.permute(0, 3, 4, 1, 2)
                bbox_ctrness = bbox_ctrness.reshape(N, -1, 1)
                all_bbox_ctrness.append(bbox_ctrness)

            return torch.cat(all_bbox_regression, dim=1), torch.cat(all_bbox_ctrness, dim=1)

    class FCOSHead(nn.Module):
        def __init__(self, in_channels, num_anchors, num_classes):
            super().__init__()
            self.box_coder = BoxLinearCoder(normalize_by_size=True)
            self.classification_head = FCOSClassificationHead(in_channels, num_anchors, num_classes)
            self.regression_head = FCOSRegressionHead(in_channels, num_anchors)

        def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
            cls_logits = head_outputs["cls_logits"]  # [N, HWA, C]
            bbox_regression = head_outputs["bbox_regression"]  # [N, HWA, 4]
            bbox_ctrness = head_outputs["bbox_ctrness"]  # [N, HWA, 1]

            all_gt_classes_targets = []
            all_gt_boxes_targets = []
            for targets_per_image, matched_idxs_per_image in zip(targets, matched_idxs):
                if len(targets_per_image["labels"]) == 0:
                    gt_classes_targets = targets_per_image["labels"].new_zeros((len(matched_idxs_per_image),))
                    gt_boxes_targets = targets_per_image["boxes"].new_zeros((len(matched_idxs_per_image), 4))
                else:
                    gt_classes_targets = targets_per_image["labels"][matched_idxs_per_image.clip(min=0)]
                    gt_boxes_targets = targets_per_image["boxes"][matched_idxs_per_image.clip(min=0)]
                gt_classes_targets[matched_idxs_per_image < 0] = -1  # background
                all_gt_classes_targets.append(gt_classes_targets)
                all_gt_boxes_targets.append(gt_boxes_targets)

            # List[Tensor] to Tensor conversion of  `all_gt_boxes_target`, `all_gt_classes_targets` and `anchors`
            all_gt_boxes_targets, all_gt_classes_targets, anchors = (
                torch.stack(all_gt_boxes_targets),
                torch.stack(all_gt_classes_targets),
                torch.stack(anchors),
            )

            # compute foregroud
            foregroud_mask = all_gt_classes_targets >= 0
            num_foreground = foregroud_mask.sum().item()

            # classification loss
            gt_classes_targets = torch.zeros_like(cls_logits)
            gt_classes_targets[foregroud_mask, all_gt_classes_targets[foregroud_mask]] = 1.0
            loss_cls = sigmoid_focal_loss(cls_logits, gt_classes_targets, reduction="sum")

            # amp issue: pred_boxes need to convert float
            pred_boxes = self.box_coder.decode(bbox_regression, anchors)

            # regression loss: GIoU loss
            loss_bbox_reg = generalized_box_iou_loss(
                pred_boxes[foregroud_mask],
                all_gt_boxes_targets[foregroud_mask],
                reduction="sum",
            )

            # ctrness loss

            bbox_reg_targets = self.box_coder.encode(anchors, all_gt_boxes_targets)

            if len(bbox_reg_targets) == 0:
                gt_ctrness_targets = bbox_reg_targets.new_zeros(bbox_reg_targets.size()[:-1])
            else:
                left_right = bbox_reg_targets[:, :, [0, 2]]
                top_bottom = bbox_reg_targets[:, :, [1, 3]]
                gt_ctrness_targets = torch.sqrt(
                    (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
                    * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
                )
            pred_centerness = bbox_ctrness.squeeze(dim=2)
            loss_bbox_ctrness = nn.functional.binary_cross_entropy_with_logits(
                pred_centerness[foregroud_mask], gt_ctrness_targets[foregroud_mask], reduction="sum"
            )

            return {
                "classification": loss_cls / max(1, num_foreground),
                "bbox_regression": loss_bbox_reg / max(1, num_foreground),
                "bbox_ctrness": loss_bbox_ctrness / max(1, num_foreground),
            }

        def forward(self, x):
            cls_logits = self.classification_head(x)
            bbox_regression, bbox_ctrness = self.regression_head(x)
            return {
                "cls_logits": cls_logits,
                "bbox_regression": bbox_regression,
                "bbox_ctrness": bbox_ctrness,
            }

    class FCOS(nn.Module):
        def __init__(self, center_sampling_radius=1.5):
            super().__init__()
            self.backbone = retina.RetinaNet().backbone
            self.anchor_generator = retina.AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((1.0,),) * 2)
            self.head = FCOSHead(channels, self.anchor_generator.num_anchors_per_location()[0], num_classes)
            self.center_sampling_radius = center_sampling_radius

        def match(self, targets, anchors, num_anchors_per_level):
            matched_idxs = []
            for anchors_per_image, targets_per_image in zip(anchors, targets):
                if targets_per_image["boxes"].numel() == 0:
                    matched_idxs.append(
                        torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64, device=anchors_per_image.device)
                    )
                    continue

                gt_boxes = targets_per_image["boxes"]
                gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # Nx2
                anchor_centers = (anchors_per_image[:, :2] + anchors_per_image[:, 2:]) / 2  # N
                anchor_sizes = anchors_per_image[:, 2] - anchors_per_image[:, 0]
                # center sampling: anchor point must be close enough to gt center.
                pairwise_match = (anchor_centers[:, None, :] - gt_centers[None, :, :]).abs_().max(
                    dim=2
                ).values < self.center_sampling_radius * anchor_sizes[:, None]
                # compute pairwise distance between N points and M boxes
                x, y = anchor_centers.unsqueeze(dim=2).unbind(dim=1)  # (N, 1)
                x0, y0, x1, y1 = gt_boxes.unsqueeze(dim=0).unbind(dim=2)  # (1, M)
                pairwise_dist = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # (N, M)
                # anchor point must be inside gt
                pairwise_match &= pairwise_dist.min(dim=2).values > 0

                # each anchor is only responsible for certain scale range.
                lower_bound = anchor_sizes * 4
                lower_bound[: num_anchors_per_level[0]] = 0
                upper_bound = anchor_sizes * 8
                upper_bound[-num_anchors_per_level[-1]:] = float("inf")
                pairwise_dist = pairwise_dist.max(dim=2).values
                pairwise_match &= (pairwise_dist > lower_bound[:, None]) & (pairwise_dist < upper_bound[:, None])

                # match the GT box with minimum area, if there are multiple GT matches
                gt_areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])  # N
                pairwise_match = pairwise_match.to(torch.float32) * (1e8 - gt_areas[None, :])
                min_values, matched_idx = pairwise_match.max(dim=1)  # R, per-anchor match
                matched_idx[min_values < 1e-5] = -1  # unmatched anchors are assigned -1

                matched_idxs.append(matched_idx)
            return matched_idxs

        def features_and_anchors(self, images):
            features = list(self.backbone(images).values())
            anchors = self.anchor_generator(images, features)
            num_anchors_per_level = [x.size(2) * x.size(3) for x in features]
            return features, anchors, num_anchors_per_level

        def forward(self, images, targets):
            features, anchors, num_anchors_per_level = self.features_and_anchors(images)
            head_outputs = self.head(features)
            matched_idxs = self.match(targets, anchors, num_anchors_per_level)
            return self.head.compute_loss(targets, head_outputs, anchors, matched_idxs)

    return SimpleNamespace(FCOS=FCOS, BoxLinearCoder=BoxLinearCoder)
