"""Segment Anything's fine-tuning as the SAM paper describes it (20 focal : 1 dice on the mask logits, the MSE of
the IoU head against the mask's actual IoU, the minimum over the multimask outputs backpropagated) over
``sam_program``'s model, and MedSAM's (bowang-lab/MedSAM ``train_one_gpu.py``) box-prompted fine-tuning with the prompt
encoder frozen, for ``test_porting_probes_sam_sd.py``."""

from __future__ import annotations

import numpy as np

from e2e.sam_program import GRID


# --- the fine-tuning losses (SAM paper: 20 focal : 1 dice, MSE of the IoU prediction) --------------------------


def sigmoid_focal_loss(torch, F, inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss as it writes it."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def dice_loss(inputs, targets):
    """DETR/Mask2Former's dice loss per mask (``flatten(1)``)."""
    inputs = inputs.sigmoid()
    inputs = inputs.flatten(1)
    numerator = 2 * (inputs * targets).sum(1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def mask_iou(torch, pred_logits, gt):
    """The IoU of the thresholded masks, the IoU head's target (no gradient)."""
    with torch.no_grad():
        pred = pred_logits > 0
        target = gt > 0.5
        intersection = (pred & target).flatten(1).sum(-1)
        union = (pred | target).flatten(1).sum(-1)
        return intersection.float() / union.float().clamp(min=1)


def sam_fine_tune_loss(torch, F, masks, iou_pred, gt_masks):
    """Per prompt: each of the multimask outputs' ``20 * focal + dice``, the minimum backpropagated (``argmin`` and a
    gather by ``masks[torch.arange(n), best]``), plus the MSE of its IoU prediction against its actual IoU."""
    n, k = masks.shape[:2]
    flat_masks = masks.flatten(2)
    targets = gt_masks.flatten(1)[:, None, :].expand(-1, k, -1)
    focal = sigmoid_focal_loss(torch, F, flat_masks, targets).mean(-1)
    dice = dice_loss(flat_masks.reshape(n * k, -1), targets.reshape(n * k, -1)).view(n, k)
    per_mask = 20 * focal + dice
    best = torch.argmin(per_mask.detach(), dim=1)
    rows = torch.arange(n)
    chosen_iou = mask_iou(torch, masks[rows, best], gt_masks)
    return per_mask[rows, best].mean() + F.mse_loss(iou_pred[rows, best], chosen_iou.to(iou_pred.dtype))


# --- data and the fine-tuning loop ---------------------------------------------------------------------------------


def sam_batch(dtype=np.float64):
    """Two images (0..255, SAM's pixel range) at 28 x 30 (padded to 32 by ``preprocess``), image 0 prompted by two
    clicks each (a positive and a negative point; the pad point added), image 1 by two boxes with previous low-res
    mask logits; ground-truth masks at the decoder's 32 x 32."""
    rng = np.random.default_rng(0)
    images = (rng.random((2, 3, 28, 30)) * 255).astype(dtype)
    point_coords = rng.uniform(0, 28, (2, 2, 2)).astype(dtype)
    point_labels = np.array([[1, 0], [1, 1]], dtype=np.int64)
    boxes = np.array([[2.0, 3.0, 20.0, 17.0], [10.0, 5.0, 27.0, 25.0]], dtype=dtype)
    mask_inputs = rng.standard_normal((2, 1, 4 * GRID, 4 * GRID)).astype(dtype)
    yy, xx = np.mgrid[0:4 * GRID, 0:4 * GRID]
    gt = np.stack([(xx - 10) ** 2 + (yy - 12) ** 2 < 40, (xx > 4) & (xx < 20) & (yy > 8),
                   (xx + yy) < 30, (np.abs(xx - 16) < 6) & (np.abs(yy - 16) < 9)]).astype(dtype)
    return images, point_coords, point_labels, boxes, mask_inputs, gt.reshape(2, 2, 4 * GRID, 4 * GRID)


def sam_fine_tune_step_loss(torch, F, sam, images, point_coords, point_labels, boxes, mask_inputs, gt):
    """The fine-tuning loss of one batch: ``preprocess`` and the image encoder over the batch, per image the prompt
    encoder (points for image 0; boxes and mask inputs for image 1) and the mask decoder with multimask output."""
    input_images = torch.stack([sam.preprocess(x) for x in images], dim=0)
    image_embeddings = sam.image_encoder(input_images)
    image_pe = sam.prompt_encoder.get_dense_pe()
    losses = []
    prompts = [dict(points=(point_coords, point_labels), boxes=None, masks=None),
               dict(points=None, boxes=boxes, masks=mask_inputs)]
    for i, prompt in enumerate(prompts):
        sparse, dense = sam.prompt_encoder(**prompt)
        masks, iou_pred = sam.mask_decoder(image_embeddings=image_embeddings[i:i + 1], image_pe=image_pe,
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=True)
        losses.append(sam_fine_tune_loss(torch, F, masks, iou_pred, gt[i]))
    return sum(losses) / len(losses)


# --- MedSAM (bowang-lab/MedSAM train_one_gpu.py) -----------------------------------------------------------------


def medsam(torch, nn, F, sam, box_dtype=None):
    """``MedSAM`` as train_one_gpu.py writes it: the image encoder and mask decoder trained, the prompt encoder frozen
    and run under ``torch.no_grad()`` on boxes given as NumPy arrays (``torch.as_tensor(box, dtype=torch.float32)``;
    ``box_dtype`` for the float64 runs)."""

    class MedSAM(nn.Module):
        def __init__(self, image_encoder, mask_decoder, prompt_encoder):
            super().__init__()
            self.image_encoder = image_encoder
            self.mask_decoder = mask_decoder
            self.prompt_encoder = prompt_encoder
            # freeze prompt encoder
            for param in self.prompt_encoder.parameters():
                param.requires_grad = False

        def forward(self, image, box):
            image_embedding = self.image_encoder(image)  # (B, 256, 64, 64)
            # do not compute gradients for prompt encoder
            with torch.no_grad():
                box_torch = torch.as_tensor(box, dtype=box_dtype or torch.float32, device=image.device)
                if len(box_torch.shape) == 2:
                    box_torch = box_torch[:, None, :]  # (B, 1, 4)
                sparse_embeddings, dense_embeddings = self.prompt_encoder(points=None, boxes=box_torch, masks=None)
            low_res_masks, _ = self.mask_decoder(
                image_embeddings=image_embedding,  # (B, 256, 64, 64)
                image_pe=self.prompt_encoder.get_dense_pe(),  # (1, 256, 64, 64)
                sparse_prompt_embeddings=sparse_embeddings,  # (B, 2, 256)
                dense_prompt_embeddings=dense_embeddings,  # (B, 256, 64, 64)
                multimask_output=False,
            )
            ori_res_masks = F.interpolate(low_res_masks, size=(image.shape[2], image.shape[3]), mode="bilinear",
                                          align_corners=False)
            return ori_res_masks

    return MedSAM(image_encoder=sam.image_encoder, mask_decoder=sam.mask_decoder, prompt_encoder=sam.prompt_encoder)


def monai_dice_loss(torch, input, target, smooth_nr=1e-5, smooth_dr=1e-5):
    """``monai.losses.DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")`` as it computes it for one channel:
    the sums over the spatial dims per image and channel."""
    input = torch.sigmoid(input)
    reduce_axis = list(range(2, len(input.shape)))
    intersection = torch.sum(target * input, dim=reduce_axis)
    ground_o = torch.sum(target ** 2, dim=reduce_axis)
    pred_o = torch.sum(input ** 2, dim=reduce_axis)
    denominator = ground_o + pred_o
    f = 1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)
    return torch.mean(f)
