"""Segment Anything's inference utilities as facebookresearch/segment-anything writes them (``torch`` is ``torch`` or
``kiln``), for ``test_porting_probes_sam_predictor_amg.py``: ``utils/transforms.py`` (``ResizeLongestSide``),
``predictor.py`` (``SamPredictor``), ``utils/amg.py`` (``MaskData``, ``calculate_stability_score``,
``batched_mask_to_box``, ``mask_to_rle_pytorch``, crops, point grids) and ``automatic_mask_generator.py``
(``SamAutomaticMaskGenerator``).

Changes from the reference, each the one a user without torchvision makes: ``ResizeLongestSide.apply_image`` resizes
through ``apply_image_torch`` (the reference goes through PIL by torchvision's ``to_pil_image``/``resize``), and
``batched_nms`` is torchvision's coordinate trick over a greedy NMS written in torch (``box_iou`` as torchvision
writes it). The model is ``sam_program.build_sam_tiny``.
"""

from __future__ import annotations

import math
from copy import deepcopy
from itertools import product

import numpy as np


def sam_inference(torch, F):
    """The predictor, the automatic mask generator and their helpers, as a namespace dict."""

    class ResizeLongestSide:
        def __init__(self, target_length):
            self.target_length = target_length

        def apply_image(self, image):
            # the reference: np.array(resize(to_pil_image(image), target_size)); here through apply_image_torch
            image_torch = torch.as_tensor(image).permute(2, 0, 1)[None].to(torch.get_default_dtype())
            return self.apply_image_torch(image_torch)[0].permute(1, 2, 0).numpy()

        def apply_coords(self, coords, original_size):
            old_h, old_w = original_size
            new_h, new_w = self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)
            coords = deepcopy(coords).astype(float)
            coords[..., 0] = coords[..., 0] * (new_w / old_w)
            coords[..., 1] = coords[..., 1] * (new_h / old_h)
            return coords

        def apply_boxes(self, boxes, original_size):
            boxes = self.apply_coords(boxes.reshape(-1, 2, 2), original_size)
            return boxes.reshape(-1, 4)

        def apply_image_torch(self, image):
            # Expects an image in BCHW format. May not exactly match apply_image.
            target_size = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
            return F.interpolate(image, target_size, mode="bilinear", align_corners=False, antialias=True)

        def apply_coords_torch(self, coords, original_size):
            old_h, old_w = original_size
            new_h, new_w = self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)
            coords = deepcopy(coords).to(torch.float)
            coords[..., 0] = coords[..., 0] * (new_w / old_w)
            coords[..., 1] = coords[..., 1] * (new_h / old_h)
            return coords

        def apply_boxes_torch(self, boxes, original_size):
            boxes = self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size)
            return boxes.reshape(-1, 4)

        @staticmethod
        def get_preprocess_shape(oldh, oldw, long_side_length):
            scale = long_side_length * 1.0 / max(oldh, oldw)
            newh, neww = oldh * scale, oldw * scale
            neww = int(neww + 0.5)
            newh = int(newh + 0.5)
            return (newh, neww)

    class SamPredictor:
        def __init__(self, sam_model):
            super().__init__()
            self.model = sam_model
            self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
            self.reset_image()

        def set_image(self, image, image_format="RGB"):
            assert image_format in ["RGB", "BGR"], f"image_format must be in ['RGB', 'BGR'], is {image_format}."
            if image_format != self.model.image_format:
                image = image[..., ::-1]
            # Transform the image to the form expected by the model
            input_image = self.transform.apply_image(image)
            input_image_torch = torch.as_tensor(input_image, device=self.device)
            input_image_torch = input_image_torch.permute(2, 0, 1).contiguous()[None, :, :, :]
            self.set_torch_image(input_image_torch, image.shape[:2])

        @torch.no_grad()
        def set_torch_image(self, transformed_image, original_image_size):
            assert (
                len(transformed_image.shape) == 4
                and transformed_image.shape[1] == 3
                and max(*transformed_image.shape[2:]) == self.model.image_encoder.img_size
            ), f"set_torch_image input must be BCHW with long side {self.model.image_encoder.img_size}."
            self.reset_image()
            self.original_size = original_image_size
            self.input_size = tuple(transformed_image.shape[-2:])
            input_image = self.model.preprocess(transformed_image)
            self.features = self.model.image_encoder(input_image)
            self.is_image_set = True

        def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True,
                    return_logits=False):
            if not self.is_image_set:
                raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
            # Transform input prompts
            coords_torch, labels_torch, box_torch, mask_input_torch = None, None, None, None
            if point_coords is not None:
                assert point_labels is not None, "point_labels must be supplied if point_coords is supplied."
                point_coords = self.transform.apply_coords(point_coords, self.original_size)
                coords_torch = torch.as_tensor(point_coords, dtype=torch.float, device=self.device)
                labels_torch = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)
                coords_torch, labels_torch = coords_torch[None, :, :], labels_torch[None, :]
            if box is not None:
                box = self.transform.apply_boxes(box, self.original_size)
                box_torch = torch.as_tensor(box, dtype=torch.float, device=self.device)
                box_torch = box_torch[None, :]
            if mask_input is not None:
                mask_input_torch = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)
                mask_input_torch = mask_input_torch[None, :, :, :]
            masks, iou_predictions, low_res_masks = self.predict_torch(
                coords_torch, labels_torch, box_torch, mask_input_torch, multimask_output,
                return_logits=return_logits)
            masks_np = masks[0].detach().cpu().numpy()
            iou_predictions_np = iou_predictions[0].detach().cpu().numpy()
            low_res_masks_np = low_res_masks[0].detach().cpu().numpy()
            return masks_np, iou_predictions_np, low_res_masks_np

        @torch.no_grad()
        def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                          return_logits=False):
            if not self.is_image_set:
                raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
            if point_coords is not None:
                points = (point_coords, point_labels)
            else:
                points = None
            # Embed prompts
            sparse_embeddings, dense_embeddings = self.model.prompt_encoder(points=points, boxes=boxes,
                                                                            masks=mask_input)
            # Predict masks
            low_res_masks, iou_predictions = self.model.mask_decoder(
                image_embeddings=self.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse_embeddings,
                dense_prompt_embeddings=dense_embeddings,
                multimask_output=multimask_output,
            )
            # Upscale the masks to the original image resolution
            masks = self.model.postprocess_masks(low_res_masks, self.input_size, self.original_size)
            if not return_logits:
                masks = masks > self.model.mask_threshold
            return masks, iou_predictions, low_res_masks

        def get_image_embedding(self):
            if not self.is_image_set:
                raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
            assert self.features is not None, "Features must exist if an image has been set."
            return self.features

        @property
        def device(self):
            return self.model.device

        def reset_image(self):
            self.is_image_set = False
            self.features = None
            self.orig_h = None
            self.orig_w = None
            self.input_h = None
            self.input_w = None

    # --- utils/amg.py ----------------------------------------------------------------------------------------------

    class MaskData:
        def __init__(self, **kwargs):
            for v in kwargs.values():
                assert isinstance(v, (list, np.ndarray, torch.Tensor)), \
                    "MaskData only supports list, numpy arrays, and torch tensors."
            self._stats = dict(**kwargs)

        def __setitem__(self, key, item):
            assert isinstance(item, (list, np.ndarray, torch.Tensor)), \
                "MaskData only supports list, numpy arrays, and torch tensors."
            self._stats[key] = item

        def __delitem__(self, key):
            del self._stats[key]

        def __getitem__(self, key):
            return self._stats[key]

        def items(self):
            return self._stats.items()

        def filter(self, keep):
            for k, v in self._stats.items():
                if v is None:
                    self._stats[k] = None
                elif isinstance(v, torch.Tensor):
                    self._stats[k] = v[torch.as_tensor(keep, device=v.device)]
                elif isinstance(v, np.ndarray):
                    self._stats[k] = v[keep.detach().cpu().numpy()]
                elif isinstance(v, list) and keep.dtype == torch.bool:
                    self._stats[k] = [a for i, a in enumerate(v) if keep[i]]
                elif isinstance(v, list):
                    self._stats[k] = [v[i] for i in keep]
                else:
                    raise TypeError(f"MaskData key {k} has an unsupported type {type(v)}.")

        def cat(self, new_stats):
            for k, v in new_stats.items():
                if k not in self._stats or self._stats[k] is None:
                    self._stats[k] = deepcopy(v)
                elif isinstance(v, torch.Tensor):
                    self._stats[k] = torch.cat([self._stats[k], v], dim=0)
                elif isinstance(v, np.ndarray):
                    self._stats[k] = np.concatenate([self._stats[k], v], axis=0)
                elif isinstance(v, list):
                    self._stats[k] = self._stats[k] + deepcopy(v)
                else:
                    raise TypeError(f"MaskData key {k} has an unsupported type {type(v)}.")

        def to_numpy(self):
            for k, v in self._stats.items():
                if isinstance(v, torch.Tensor):
                    self._stats[k] = v.detach().cpu().numpy()

    def is_box_near_crop_edge(boxes, crop_box, orig_box, atol=20.0):
        """Filter masks at the edge of a crop, but not at the edge of the original image."""
        crop_box_torch = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
        orig_box_torch = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
        boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
        near_crop_edge = torch.isclose(boxes, crop_box_torch[None, :], atol=atol, rtol=0)
        near_image_edge = torch.isclose(boxes, orig_box_torch[None, :], atol=atol, rtol=0)
        near_crop_edge = torch.logical_and(near_crop_edge, ~near_image_edge)
        return torch.any(near_crop_edge, dim=1)

    def box_xyxy_to_xywh(box_xyxy):
        box_xywh = deepcopy(box_xyxy)
        box_xywh[2] = box_xywh[2] - box_xywh[0]
        box_xywh[3] = box_xywh[3] - box_xywh[1]
        return box_xywh

    def batch_iterator(batch_size, *args):
        assert len(args) > 0 and all(len(a) == len(args[0]) for a in args), \
            "Batched iteration must have inputs of all the same size."
        n_batches = len(args[0]) // batch_size + int(len(args[0]) % batch_size != 0)
        for b in range(n_batches):
            yield [arg[b * batch_size: (b + 1) * batch_size] for arg in args]

    def mask_to_rle_pytorch(tensor):
        """Encodes masks to an uncompressed RLE, in the format expected by pycoco tools."""
        # Put in fortran order and flatten h,w
        b, h, w = tensor.shape
        tensor = tensor.permute(0, 2, 1).flatten(1)
        # Compute change indices
        diff = tensor[:, 1:] ^ tensor[:, :-1]
        change_indices = diff.nonzero()
        # Encode run length
        out = []
        for i in range(b):
            cur_idxs = change_indices[change_indices[:, 0] == i, 1]
            cur_idxs = torch.cat(
                [
                    torch.tensor([0], dtype=cur_idxs.dtype, device=cur_idxs.device),
                    cur_idxs + 1,
                    torch.tensor([h * w], dtype=cur_idxs.dtype, device=cur_idxs.device),
                ]
            )
            btw_idxs = cur_idxs[1:] - cur_idxs[:-1]
            counts = [] if tensor[i, 0] == 0 else [0]
            counts.extend(btw_idxs.detach().cpu().tolist())
            out.append({"size": [h, w], "counts": counts})
        return out

    def rle_to_mask(rle):
        """Compute a binary mask from an uncompressed RLE."""
        h, w = rle["size"]
        mask = np.empty(h * w, dtype=bool)
        idx = 0
        parity = False
        for count in rle["counts"]:
            mask[idx: idx + count] = parity
            idx += count
            parity ^= True
        mask = mask.reshape(w, h)
        return mask.transpose()  # Put in C order

    def area_from_rle(rle):
        return sum(rle["counts"][1::2])

    def calculate_stability_score(masks, mask_threshold, threshold_offset):
        # One mask is always contained inside the other.
        # Save memory by preventing unnecessary cast to torch.int64
        intersections = (
            (masks > (mask_threshold + threshold_offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
        )
        unions = (masks > (mask_threshold - threshold_offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
        return intersections / unions

    def build_point_grid(n_per_side):
        """Generates a 2D grid of points evenly spaced in [0,1]x[0,1]."""
        offset = 1 / (2 * n_per_side)
        points_one_side = np.linspace(offset, 1 - offset, n_per_side)
        points_x = np.tile(points_one_side[None, :], (n_per_side, 1))
        points_y = np.tile(points_one_side[:, None], (1, n_per_side))
        points = np.stack([points_x, points_y], axis=-1).reshape(-1, 2)
        return points

    def build_all_layer_point_grids(n_per_side, n_layers, scale_per_layer):
        """Generates point grids for all crop layers."""
        points_by_layer = []
        for i in range(n_layers + 1):
            n_points = int(n_per_side / (scale_per_layer**i))
            points_by_layer.append(build_point_grid(n_points))
        return points_by_layer

    def generate_crop_boxes(im_size, n_layers, overlap_ratio):
        crop_boxes, layer_idxs = [], []
        im_h, im_w = im_size
        short_side = min(im_h, im_w)
        # Original image
        crop_boxes.append([0, 0, im_w, im_h])
        layer_idxs.append(0)

        def crop_len(orig_len, n_crops, overlap):
            return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

        for i_layer in range(n_layers):
            n_crops_per_side = 2 ** (i_layer + 1)
            overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
            crop_w = crop_len(im_w, n_crops_per_side, overlap)
            crop_h = crop_len(im_h, n_crops_per_side, overlap)
            crop_box_x0 = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
            crop_box_y0 = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
            # Crops in XYWH format
            for x0, y0 in product(crop_box_x0, crop_box_y0):
                box = [x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)]
                crop_boxes.append(box)
                layer_idxs.append(i_layer + 1)
        return crop_boxes, layer_idxs

    def uncrop_boxes_xyxy(boxes, crop_box):
        x0, y0, _, _ = crop_box
        offset = torch.tensor([[x0, y0, x0, y0]], device=boxes.device)
        # Check if boxes has a channel dimension
        if len(boxes.shape) == 3:
            offset = offset.unsqueeze(1)
        return boxes + offset

    def uncrop_points(points, crop_box):
        x0, y0, _, _ = crop_box
        offset = torch.tensor([[x0, y0]], device=points.device)
        # Check if points has a channel dimension
        if len(points.shape) == 3:
            offset = offset.unsqueeze(1)
        return points + offset

    def uncrop_masks(masks, crop_box, orig_h, orig_w):
        x0, y0, x1, y1 = crop_box
        if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
            return masks
        # Coordinate transform masks
        pad_x, pad_y = orig_w - (x1 - x0), orig_h - (y1 - y0)
        pad = (x0, pad_x - x0, y0, pad_y - y0)
        return torch.nn.functional.pad(masks, pad, value=0)

    def batched_mask_to_box(masks):
        """Calculates boxes in XYXY format around masks. Return [0,0,0,0] for an empty mask."""
        # torch.max below raises an error on empty inputs, just skip in this case
        if torch.numel(masks) == 0:
            return torch.zeros(*masks.shape[:-2], 4, device=masks.device)
        # Normalize shape to CxHxW
        shape = masks.shape
        h, w = shape[-2:]
        if len(shape) > 2:
            masks = masks.flatten(0, -3)
        else:
            masks = masks.unsqueeze(0)
        # Get top and bottom edges
        in_height, _ = torch.max(masks, dim=-1)
        in_height_coords = in_height * torch.arange(h, device=in_height.device)[None, :]
        bottom_edges, _ = torch.max(in_height_coords, dim=-1)
        in_height_coords = in_height_coords + h * (~in_height)
        top_edges, _ = torch.min(in_height_coords, dim=-1)
        # Get left and right edges
        in_width, _ = torch.max(masks, dim=-2)
        in_width_coords = in_width * torch.arange(w, device=in_width.device)[None, :]
        right_edges, _ = torch.max(in_width_coords, dim=-1)
        in_width_coords = in_width_coords + w * (~in_width)
        left_edges, _ = torch.min(in_width_coords, dim=-1)
        # If the mask is empty the right edge will be to the left of the left edge.
        # Replace these boxes with [0, 0, 0, 0]
        empty_filter = (right_edges < left_edges) | (bottom_edges < top_edges)
        out = torch.stack([left_edges, top_edges, right_edges, bottom_edges], dim=-1)
        out = out * (~empty_filter).unsqueeze(-1)
        # Return to original shape
        if len(shape) > 2:
            out = out.reshape(*shape[:-2], 4)
        else:
            out = out[0]
        return out

    # --- torchvision.ops, written in torch -------------------------------------------------------------------------

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
        return inter / union

    def nms(boxes, scores, iou_threshold):
        order = scores.argsort(descending=True)
        keep = []
        while order.numel() > 0:
            i = order[0]
            keep.append(i)
            if order.numel() == 1:
                break
            iou = box_iou(boxes[i][None], boxes[order[1:]])[0]
            order = order[1:][iou <= iou_threshold]
        return torch.stack(keep) if keep else torch.empty(0, dtype=torch.long)

    def batched_nms(boxes, scores, idxs, iou_threshold):
        # torchvision's _batched_nms_coordinate_trick
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64, device=boxes.device)
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
        return nms(boxes_for_nms, scores, iou_threshold)

    return dict(locals())


def automatic_mask_generator(torch, F):
    """automatic_mask_generator.py's ``SamAutomaticMaskGenerator`` (binary masks or uncompressed RLE output; no
    small-region postprocessing, which needs OpenCV)."""
    m = sam_inference(torch, F)
    MaskData, batched_nms = m["MaskData"], m["batched_nms"]

    class SamAutomaticMaskGenerator:
        def __init__(self, model, points_per_side=32, points_per_batch=64, pred_iou_thresh=0.88,
                     stability_score_thresh=0.95, stability_score_offset=1.0, box_nms_thresh=0.7, crop_n_layers=0,
                     crop_nms_thresh=0.7, crop_overlap_ratio=512 / 1500, crop_n_points_downscale_factor=1,
                     output_mode="binary_mask"):
            self.point_grids = m["build_all_layer_point_grids"](points_per_side, crop_n_layers,
                                                                crop_n_points_downscale_factor)
            self.predictor = m["SamPredictor"](model)
            self.points_per_batch = points_per_batch
            self.pred_iou_thresh = pred_iou_thresh
            self.stability_score_thresh = stability_score_thresh
            self.stability_score_offset = stability_score_offset
            self.box_nms_thresh = box_nms_thresh
            self.crop_n_layers = crop_n_layers
            self.crop_nms_thresh = crop_nms_thresh
            self.crop_overlap_ratio = crop_overlap_ratio
            self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
            self.output_mode = output_mode

        @torch.no_grad()
        def generate(self, image):
            # Generate masks
            mask_data = self._generate_masks(image)
            # Encode masks
            if self.output_mode == "binary_mask":
                mask_data["segmentations"] = [m["rle_to_mask"](rle) for rle in mask_data["rles"]]
            else:
                mask_data["segmentations"] = mask_data["rles"]
            # Write mask records
            curr_anns = []
            for idx in range(len(mask_data["segmentations"])):
                ann = {
                    "segmentation": mask_data["segmentations"][idx],
                    "area": m["area_from_rle"](mask_data["rles"][idx]),
                    "bbox": m["box_xyxy_to_xywh"](mask_data["boxes"][idx]).tolist(),
                    "predicted_iou": mask_data["iou_preds"][idx].item(),
                    "point_coords": [mask_data["points"][idx].tolist()],
                    "stability_score": mask_data["stability_score"][idx].item(),
                    "crop_box": m["box_xyxy_to_xywh"](mask_data["crop_boxes"][idx]).tolist(),
                }
                curr_anns.append(ann)
            return curr_anns

        def _generate_masks(self, image):
            orig_size = image.shape[:2]
            crop_boxes, layer_idxs = m["generate_crop_boxes"](orig_size, self.crop_n_layers, self.crop_overlap_ratio)
            # Iterate over image crops
            data = MaskData()
            for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
                crop_data = self._process_crop(image, crop_box, layer_idx, orig_size)
                data.cat(crop_data)
            # Remove duplicate masks between crops
            if len(crop_boxes) > 1:
                # Prefer masks from smaller crops
                scores = 1 / m["box_area"](data["crop_boxes"])
                scores = scores.to(data["boxes"].device)
                keep_by_nms = batched_nms(data["boxes"].float(), scores, torch.zeros_like(data["boxes"][:, 0]),
                                          iou_threshold=self.crop_nms_thresh)
                data.filter(keep_by_nms)
            data.to_numpy()
            return data

        def _process_crop(self, image, crop_box, crop_layer_idx, orig_size):
            # Crop the image and calculate embeddings
            x0, y0, x1, y1 = crop_box
            cropped_im = image[y0:y1, x0:x1, :]
            cropped_im_size = cropped_im.shape[:2]
            self.predictor.set_image(cropped_im)
            # Get points for this crop
            points_scale = np.array(cropped_im_size)[None, ::-1]
            points_for_image = self.point_grids[crop_layer_idx] * points_scale
            # Generate masks for this crop in batches
            data = MaskData()
            for (points,) in m["batch_iterator"](self.points_per_batch, points_for_image):
                batch_data = self._process_batch(points, cropped_im_size, crop_box, orig_size)
                data.cat(batch_data)
                del batch_data
            self.predictor.reset_image()
            # Remove duplicates within this crop.
            keep_by_nms = batched_nms(data["boxes"].float(), data["iou_preds"], torch.zeros_like(data["boxes"][:, 0]),
                                      iou_threshold=self.box_nms_thresh)
            data.filter(keep_by_nms)
            # Return to the original image frame
            data["boxes"] = m["uncrop_boxes_xyxy"](data["boxes"], crop_box)
            data["points"] = m["uncrop_points"](data["points"], crop_box)
            data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))])
            return data

        def _process_batch(self, points, im_size, crop_box, orig_size):
            orig_h, orig_w = orig_size
            # Run model on this batch
            transformed_points = self.predictor.transform.apply_coords(points, im_size)
            in_points = torch.as_tensor(transformed_points, device=self.predictor.device)
            in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            masks, iou_preds, _ = self.predictor.predict_torch(in_points[:, None, :], in_labels[:, None],
                                                               multimask_output=True, return_logits=True)
            # Serialize predictions and store in MaskData
            data = MaskData(masks=masks.flatten(0, 1), iou_preds=iou_preds.flatten(0, 1),
                            points=torch.as_tensor(points.repeat(masks.shape[1], axis=0)))
            del masks
            # Filter by predicted IoU
            if self.pred_iou_thresh > 0.0:
                keep_mask = data["iou_preds"] > self.pred_iou_thresh
                data.filter(keep_mask)
            # Calculate stability score
            data["stability_score"] = m["calculate_stability_score"](
                data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset)
            if self.stability_score_thresh > 0.0:
                keep_mask = data["stability_score"] >= self.stability_score_thresh
                data.filter(keep_mask)
            # Threshold masks and calculate boxes
            data["masks"] = data["masks"] > self.predictor.model.mask_threshold
            data["boxes"] = m["batched_mask_to_box"](data["masks"])
            # Filter boxes that touch crop boundaries
            keep_mask = ~m["is_box_near_crop_edge"](data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep_mask):
                data.filter(keep_mask)
            # Compress to RLE
            data["masks"] = m["uncrop_masks"](data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = m["mask_to_rle_pytorch"](data["masks"])
            del data["masks"]
            return data

    return SamAutomaticMaskGenerator
