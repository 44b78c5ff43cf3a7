"""Porting probe: Segment Anything's inference path as facebookresearch/segment-anything writes it
(``sam_predictor_program.py``; the model is ``sam_program.build_sam_tiny``), run in kiln and torch 2.13 from kiln's
initial weights, in float32 as SAM runs: ``SamPredictor`` (``set_image`` of an HxWx3 uint8 array resized by
``ResizeLongestSide`` with an antialiased bilinear ``F.interpolate``, ``torch.as_tensor(..., dtype=torch.float)`` and
``dtype=torch.int`` prompts, ``apply_coords``/``apply_boxes`` in NumPy, ``predict`` returning NumPy masks, IoU
predictions and low-res logits fed back as ``mask_input``), and ``SamAutomaticMaskGenerator`` (point grids by
``np.tile``/``np.linspace``, ``batch_iterator``, ``MaskData`` filtering tensors, arrays and lists by bool masks and
index tensors, ``calculate_stability_score`` with ``sum(-1, dtype=torch.int16)``, ``batched_mask_to_box`` by
``torch.max``/``torch.min`` with indices and ``~`` of bool tensors, ``is_box_near_crop_edge`` by ``torch.isclose``,
``uncrop_masks`` by ``F.pad``, ``mask_to_rle_pytorch`` by ``^`` and ``nonzero()``, ``rle_to_mask``, and a torch-written
``batched_nms``), and its utilities on crafted masks and boxes; ``Sam.forward`` through ``kiln.compile``.

The tiny random model's masks cover the whole image or nothing (the mask logits' offset dominates), so the generator
keeps one mask after NMS; the utilities are checked on crafted masks for the rest. With crops (``crop_n_layers=1``) the
sub-crops lose their masks to the crop-edge filter, and SAM's ``torch.tensor([crop_box for _ in range(0)])`` is a 1-d
empty tensor, which ``torch.cat`` joins to the full crop's (n, 4) boxes as torch's legacy rule allows; where every crop
loses its masks (the model unscaled, its logits under the stability offset), ``box_area`` reads ``[:, 2]`` of that 1-d
tensor and raises torch's ``IndexError`` (segment-anything's own bug), in kiln as in torch.

What broke: that ``IndexError`` was a ``TraceError`` naming kiln's IR type in kiln (a ``RuntimeError``, not what
``except IndexError`` catches); it is torch's now (``frontend/index_bounds_checks.py``: ``too_many_indices``,
``tests/frontend/test_too_many_indices_vs_torch.py``). Everything else agreed as first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e import sam_program as sam_code
from e2e.sam_finetune_program import sam_batch
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep
from e2e.sam_predictor_program import automatic_mask_generator, sam_inference
from oracles import libraries

IMAGE_HW = (120, 150)


def _image():
    return (np.random.default_rng(0).random((*IMAGE_HW, 3)) * 255).astype(np.uint8)


def _sharp_sam(torch, nn, F):
    """The tiny SAM with its hypernetworks' last layers scaled up, so mask logits pass the stability offset of 1."""
    sam = sam_code.build_sam_tiny(torch, nn, F)
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(100.0)
    return sam


def _predictions(torch, nn, F, sam):
    predictor = sam_inference(torch, F)["SamPredictor"](sam)
    predictor.set_image(_image())
    record = {"features": array(predictor.get_image_embedding()), "input_size": np.array(predictor.input_size)}
    masks, iou, low_res = predictor.predict(point_coords=np.array([[30, 40], [100, 90]]), point_labels=np.array([1, 0]),
                                            multimask_output=True)
    assert masks.dtype == np.bool_ and masks.shape == (3, *IMAGE_HW)
    record["points"] = dict(masks=masks, iou=iou, low_res=low_res)
    masks, iou, low_res = predictor.predict(box=np.array([15, 20, 90, 100]), mask_input=low_res[np.argmax(iou)][None],
                                            multimask_output=False, return_logits=True)
    record["box and mask"] = dict(masks=masks, iou=iou, low_res=low_res)
    masks, _, _ = predictor.predict(point_coords=np.array([[60, 50]]), point_labels=np.array([1]),
                                    box=np.array([10, 10, 140, 110]))
    record["point and box"] = masks
    predictor.reset_image()
    with pytest.raises(RuntimeError, match="An image must be set"):
        predictor.predict(point_coords=np.array([[1, 2]]), point_labels=np.array([1]))
    return record


def test_sam_predictor_as_torch():
    ours, theirs = run_in_lockstep(_sharp_sam, _predictions)
    assert_same_records(ours, theirs, rtol=1e-4, atol=2e-5)
    assert tuple(theirs["input_size"]) == (26, 32) and 0 < theirs["points"]["masks"].mean() < 1


def _annotations(crop_n_layers=0):
    def generate(torch, nn, F, sam):
        generator = automatic_mask_generator(torch, F)(
            sam, points_per_side=4, points_per_batch=6, pred_iou_thresh=0.1, stability_score_thresh=0.3,
            box_nms_thresh=0.95, crop_n_layers=crop_n_layers, output_mode="binary_mask")
        annotations = generator.generate(_image())
        return {str(i): {key: np.asarray(value, float) for key, value in annotation.items()}
                for i, annotation in enumerate(annotations)}

    return generate


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_sam_automatic_mask_generator_as_torch(crop_n_layers):
    ours, theirs = run_in_lockstep(_sharp_sam, _annotations(crop_n_layers))
    assert_same_records(ours, theirs, rtol=1e-4, atol=2e-5)
    (annotation,) = theirs.values()
    assert annotation["segmentation"].shape == IMAGE_HW and annotation["area"] == annotation["segmentation"].sum()


def test_sam_automatic_mask_generator_with_emptied_crops_raises_torchs_index_error():
    def generate_with_crops(torch, nn, F, sam):
        with pytest.raises(IndexError) as raised:
            _annotations(crop_n_layers=1)(torch, nn, F, sam)
        return str(raised.value)

    ours, theirs = run_in_lockstep(sam_code.build_sam_tiny, generate_with_crops)
    assert ours.endswith(theirs) and "in box_area" in ours, (ours, theirs)


def _utilities(torch, nn, F, sam=None):
    """amg.py's helpers and the NMS on crafted masks: two overlapping rectangles, an empty mask, a disc at a crop
    edge; the RLE round trip."""
    m = sam_inference(torch, F)
    yy, xx = np.mgrid[0:12, 0:14]
    crafted = np.stack([(xx >= 2) & (xx < 9) & (yy >= 1) & (yy < 6), (xx >= 3) & (xx < 10) & (yy >= 1) & (yy < 7),
                        np.zeros((12, 14), bool), (xx - 13) ** 2 + (yy - 6) ** 2 < 9])
    masks = torch.as_tensor(crafted)
    logits = torch.as_tensor(np.where(crafted, 3.0, -3.0) + np.sin(xx + yy)[None], dtype=torch.float)
    boxes = m["batched_mask_to_box"](masks)
    rles = m["mask_to_rle_pytorch"](m["uncrop_masks"](masks, [2, 1, 16, 13], 15, 18))
    decoded = np.stack([m["rle_to_mask"](rle) for rle in rles])
    scores = torch.tensor([0.9, 0.8, 0.1, 0.7])
    data = m["MaskData"](boxes=boxes, scores=scores, names=["a", "b", "c", "d"], areas=crafted.sum((1, 2)))
    keep = m["batched_nms"](boxes.float(), scores, torch.tensor([0, 0, 0, 1]), iou_threshold=0.5)
    data.filter(keep)
    data.filter(data["scores"] > 0.5)
    data.cat(m["MaskData"](boxes=boxes[:1], scores=scores[:1], names=["e"], areas=crafted.sum((1, 2))[:1]))
    data.to_numpy()
    return {"stability": array(m["calculate_stability_score"](logits, 0.0, 1.0)), "boxes": array(boxes),
            "near_edge": array(m["is_box_near_crop_edge"](boxes, [0, 0, 14, 12], [0, 0, 28, 24], atol=2.0)),
            "decoded": decoded, "areas": np.array([m["area_from_rle"](rle) for rle in rles]),
            "keep": array(keep), "kept": {key: np.asarray(value, object if key == "names" else float)
                                          for key, value in data.items() if key != "names"},
            "names": "".join(data["names"]), "grid": m["build_all_layer_point_grids"](3, 1, 2)[1],
            "crops": np.array(m["generate_crop_boxes"]((24, 30), 1, 512 / 1500)[0]),
            "xywh": np.array(m["box_xyxy_to_xywh"](array(boxes[0])).tolist()),
            "uncropped": array(m["uncrop_points"](torch.tensor([[1.0, 2.0]]), [3, 4, 10, 10]))}


def test_amg_utilities_on_crafted_masks_as_torch():
    records = [_utilities(*libraries(name)) for name in ("kiln", "torch")]
    assert records[0].pop("names") == records[1].pop("names") == "ade"
    assert_same_records(*records)
    assert records[1]["decoded"][:, 1:13, 2:16].sum() == records[1]["areas"].sum()
    assert list(records[1]["near_edge"]) == [False, False, False, True]


def test_sam_forward_compiled_as_torch(float64_default):
    """``Sam.forward`` (``@torch.no_grad()``, a list of per-image dicts with points for one image and boxes with mask
    inputs for the other, ``postprocess_masks`` to each original size, bool masks) through
    ``kiln.compile(sam, fullgraph=True)``, single and multimask output, against torch's eager call."""

    def build(torch, nn, F):
        return sam_code.build_sam_tiny(torch, nn, F, pe_dtype=torch.float64)

    def predict(torch, nn, F, sam):
        images, coords, labels, boxes, mask_inputs, _ = [torch.tensor(a) for a in sam_batch()]
        batched_input = [
            {"image": images[0], "original_size": (21, 23), "point_coords": coords, "point_labels": labels},
            {"image": images[1], "original_size": (35, 37), "boxes": boxes, "mask_inputs": mask_inputs},
        ]
        model = kiln.compile(sam, fullgraph=True) if torch is kiln else sam
        return {f"{multimask} {i} {key}": array(value) for multimask in (True, False)
                for i, output in enumerate(model(batched_input, multimask)) for key, value in output.items()}

    ours, theirs = run_in_lockstep(build, predict)
    assert_same_records(ours, theirs)
    assert theirs["True 1 masks"].dtype == np.bool_ and theirs["True 1 masks"].shape == (2, 3, 35, 37)
