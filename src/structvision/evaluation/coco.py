"""COCO-style evaluation (box, mask and keypoint AP/AR) with pycocotools.

:class:`COCOEvaluator` collects per-image predictions with ``update`` and runs pycocotools'
``COCOeval`` in ``compute``. Ground truth is either a COCO annotation file/dict (``coco_gt``)
or, when ``coco_gt`` is ``None``, built from the targets passed to ``update`` (so any dataset
that follows the structvision target contract can be evaluated).

Distributed use: ``update`` stores compact, picklable per-image records in ``records`` (masks
are run-length encoded right away). Gather them from every rank (e.g.
``torch.distributed.all_gather_object``), concatenate on rank 0 into one evaluator's
``records`` and call ``compute`` there. Records with an image id seen before are ignored, so
the duplicates that ``DistributedSampler`` pads with do not count twice.

Metric keys (``compute``): ``{t}/AP, {t}/AP50, {t}/AP75, {t}/APs, {t}/APm, {t}/APl, {t}/AR1,
{t}/AR10, {t}/AR100, {t}/ARs, {t}/ARm, {t}/ARl`` for ``t`` in ``bbox``/``segm`` (the AR keys
follow ``max_dets``), and ``keypoints/AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl``.
Values are fractions in ``[0, 1]``; pycocotools' ``-1`` ("no ground truth in this area range")
is kept as ``-1.0``. When there are no predictions at all for an IoU type, every value is 0.0.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from structvision.evaluation.records import unique_by_image_id

__all__ = ["IOU_TYPES", "COCOEvaluator", "metric_names"]

IOU_TYPES = ("bbox", "segm", "keypoints")
KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
COCO_PERSON_KEYPOINTS = 17


def metric_names(iou_type: str, *, max_dets: Sequence[int] = (1, 10, 100)) -> list[str]:
    """Names of pycocotools' ``stats`` entries for ``iou_type``, in ``stats`` order."""
    if iou_type == "keypoints":
        return list(KEYPOINT_METRICS)
    ar = [f"AR{m}" for m in max_dets]
    return ["AP", "AP50", "AP75", "APs", "APm", "APl", *ar, "ARs", "ARm", "ARl"]


# --------------------------------------------------------------------------------------------
# Tensor -> record conversion
# --------------------------------------------------------------------------------------------


def _numpy(value: Tensor) -> np.ndarray:
    """CPU numpy copy; half/bfloat16 (mixed precision outputs) go through float32."""
    value = value.detach().cpu()
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    return value.numpy()


def _xyxy_to_xywh(boxes: Tensor) -> np.ndarray:
    """``(N, 4)`` xyxy tensor -> ``(N, 4)`` float64 COCO ``[x, y, w, h]``."""
    boxes = _numpy(boxes).astype(np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _encode_masks(masks: Tensor, name: str) -> list[dict[str, Any]]:
    """``(N, H, W)`` or ``(N, 1, H, W)`` probabilities / binary masks -> compressed RLEs.

    Values above 0.5 are foreground (float probabilities and 0/1 uint8 or bool alike).
    """
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, 1, H, W), got {tuple(masks.shape)}"
        )
    if masks.shape[0] == 0:
        return []
    binary = _numpy(masks > 0.5).astype(np.uint8)  # (N, H, W)
    return mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))


def _category_ids(labels: Tensor, mapping: dict[int, int] | None, name: str) -> np.ndarray:
    labels = _numpy(labels).astype(np.int64).reshape(-1)
    if mapping is None:
        return labels
    unknown = sorted({int(label) for label in labels} - set(mapping))
    if unknown:
        raise ValueError(
            f"{name} contains labels {unknown} that label_to_category_id does not map "
            f"(it maps {sorted(mapping)})"
        )
    return np.array([mapping[int(label)] for label in labels], dtype=np.int64)


def _check_instances(entry: dict[str, Tensor], name: str, required: Sequence[str]) -> int:
    for key in required:
        if key not in entry:
            raise ValueError(f"{name} is missing {key!r} (has {sorted(entry)})")
    boxes = entry["boxes"]
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}['boxes'] must have shape (N, 4), got {tuple(boxes.shape)}")
    num = boxes.shape[0]
    for key in (*required, "masks", "keypoints", "area", "iscrowd"):
        if key in entry and entry[key].shape[0] != num:
            raise ValueError(f"{name}[{key!r}] has {entry[key].shape[0]} entries, boxes has {num}")
    return num


def _image_size(target: dict[str, Tensor], prediction: dict[str, Tensor]) -> tuple[int, int]:
    """(height, width) from masks or an ``orig_size``/``size`` entry; (0, 0) when unknown."""
    for entry in (target, prediction):
        if "masks" in entry:
            return int(entry["masks"].shape[-2]), int(entry["masks"].shape[-1])
    for key in ("orig_size", "size"):
        if key in target:
            height, width = (int(v) for v in target[key].reshape(-1)[:2])
            return height, width
    return 0, 0


def _gt_record(target: dict[str, Tensor], mapping: dict[int, int] | None) -> dict[str, Any]:
    num = _check_instances(target, "target", ("boxes", "labels"))
    boxes = _xyxy_to_xywh(target["boxes"])  # (N, 4)
    record: dict[str, Any] = {
        "boxes": boxes,
        "category_ids": _category_ids(target["labels"], mapping, "target['labels']"),
        "iscrowd": _numpy(target["iscrowd"]).astype(np.int64)
        if "iscrowd" in target
        else np.zeros(num, dtype=np.int64),
        "masks": _encode_masks(target["masks"], "target['masks']") if "masks" in target else None,
        "keypoints": _numpy(target["keypoints"]).astype(np.float64)
        if "keypoints" in target
        else None,
    }
    if "area" in target:
        record["area"] = _numpy(target["area"]).astype(np.float64)
    elif record["masks"] is not None:
        record["area"] = np.asarray(mask_utils.area(record["masks"]), dtype=np.float64)
    else:
        record["area"] = boxes[:, 2] * boxes[:, 3]
    return record


def _pred_record(prediction: dict[str, Tensor], mapping: dict[int, int] | None) -> dict[str, Any]:
    _check_instances(prediction, "prediction", ("boxes", "labels", "scores"))
    return {
        "boxes": _xyxy_to_xywh(prediction["boxes"]),  # (N, 4)
        "scores": _numpy(prediction["scores"]).astype(np.float64).reshape(-1),
        "category_ids": _category_ids(prediction["labels"], mapping, "prediction['labels']"),
        "masks": _encode_masks(prediction["masks"], "prediction['masks']")
        if "masks" in prediction
        else None,
        "keypoints": _numpy(prediction["keypoints"]).astype(np.float64)
        if "keypoints" in prediction
        else None,
    }


# --------------------------------------------------------------------------------------------
# Record -> COCO json conversion
# --------------------------------------------------------------------------------------------


def _json_rle(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _gt_annotations(record: dict[str, Any], first_id: int) -> list[dict[str, Any]]:
    gt = record["gt"]
    annotations = []
    for i in range(len(gt["boxes"])):
        ann: dict[str, Any] = {
            "id": first_id + i,
            "image_id": record["image_id"],
            "category_id": int(gt["category_ids"][i]),
            "bbox": [float(v) for v in gt["boxes"][i]],
            "area": float(gt["area"][i]),
            "iscrowd": int(gt["iscrowd"][i]),
        }
        if gt["masks"] is not None:
            ann["segmentation"] = _json_rle(gt["masks"][i])
        if gt["keypoints"] is not None:
            keypoints = gt["keypoints"][i]  # (K, 3)
            ann["keypoints"] = [float(v) for v in keypoints.reshape(-1)]
            ann["num_keypoints"] = int((keypoints[:, 2] > 0).sum())
        annotations.append(ann)
    return annotations


def _detections(record: dict[str, Any], iou_type: str | None) -> list[dict[str, Any]]:
    """COCO results entries of one image; ``iou_type=None`` puts every field in each entry."""
    pred = record["pred"]
    results = []
    for i in range(len(pred["boxes"])):
        det: dict[str, Any] = {
            "image_id": record["image_id"],
            "category_id": int(pred["category_ids"][i]),
            "score": float(pred["scores"][i]),
        }
        if iou_type in (None, "bbox"):
            det["bbox"] = [float(v) for v in pred["boxes"][i]]
        if iou_type in (None, "segm") and pred["masks"] is not None:
            det["segmentation"] = _json_rle(pred["masks"][i])
        if iou_type in (None, "keypoints") and pred["keypoints"] is not None:
            det["keypoints"] = [float(v) for v in pred["keypoints"][i].reshape(-1)]
        results.append(det)
    return results


def _normalised_gt(dataset: dict[str, Any]) -> dict[str, Any]:
    """Shallow copy of a COCO dict with the fields COCOeval needs filled in
    (``iscrowd`` 0, ``area`` = box area, ``num_keypoints`` = count of visible points)."""
    annotations = []
    for ann in dataset.get("annotations", []):
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        if "keypoints" in ann and "num_keypoints" not in ann:
            ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
        annotations.append(ann)
    return {**dataset, "annotations": annotations}


def _coco_from_dict(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _sorted_category_mapping(dataset: dict[str, Any]) -> dict[int, int]:
    category_ids = sorted(c["id"] for c in dataset.get("categories", []))
    return {i + 1: cat_id for i, cat_id in enumerate(category_ids)}


class COCOEvaluator:
    """Accumulate predictions and compute COCO AP/AR with pycocotools.

    Args:
        iou_types: any of ``"bbox"``, ``"segm"``, ``"keypoints"``.
        coco_gt: ground truth as a COCO JSON path or dict. ``None``: build it from the
            targets given to ``update`` (boxes, labels, masks, keypoints, area, iscrowd,
            image_id), like torchvision's references do.
        label_to_category_id: maps model labels to COCO category ids. Default: with a
            ``coco_gt``, the :class:`~structvision.data.coco.CocoDataset` convention (label ``i``
            is the ``i``-th smallest category id); without, labels are used as category ids.
        keypoint_sigmas: per-keypoint OKS sigmas; required unless there are 17 keypoints
            (then the COCO person sigmas are used).
        max_dets: the three detection limits of the bbox/segm AR metrics.

    Attributes:
        records: per-image picklable records (see the module docstring).
        summaries: pycocotools' printed summary per IoU type after ``compute``.
        stats: pycocotools' ``stats`` array per IoU type after ``compute``.
    """

    def __init__(
        self,
        *,
        iou_types: Sequence[str] = ("bbox",),
        coco_gt: str | Path | dict[str, Any] | None = None,
        label_to_category_id: dict[int, int] | None = None,
        keypoint_sigmas: Sequence[float] | None = None,
        max_dets: Sequence[int] = (1, 10, 100),
    ) -> None:
        unknown = [t for t in iou_types if t not in IOU_TYPES]
        if unknown or not iou_types:
            raise ValueError(
                f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}"
            )
        if len(max_dets) != 3 or list(max_dets) != sorted(max_dets):
            raise ValueError(f"max_dets must be 3 increasing integers, got {max_dets}")
        self.iou_types = tuple(iou_types)
        self.max_dets = [int(m) for m in max_dets]
        self.keypoint_sigmas = (
            None if keypoint_sigmas is None else np.asarray(keypoint_sigmas, dtype=np.float64)
        )
        self.gt_dataset = self._load_gt(coco_gt)
        if label_to_category_id is None and self.gt_dataset is not None:
            label_to_category_id = _sorted_category_mapping(self.gt_dataset)
        self.label_to_category_id = label_to_category_id
        self.records: list[dict[str, Any]] = []
        self.summaries: dict[str, str] = {}
        self.stats: dict[str, np.ndarray] = {}

    @staticmethod
    def _load_gt(coco_gt: str | Path | dict[str, Any] | None) -> dict[str, Any] | None:
        if coco_gt is None:
            return None
        if isinstance(coco_gt, dict):
            return _normalised_gt(coco_gt)
        path = Path(coco_gt)
        try:
            with open(path, encoding="utf-8") as f:
                return _normalised_gt(json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"coco_gt: cannot read COCO annotation file {path}: {err}") from err

    def reset(self) -> None:
        """Forget all records (ground truth given as ``coco_gt`` is kept)."""
        self.records = []
        self.summaries = {}
        self.stats = {}

    def update(
        self, targets: Sequence[dict[str, Tensor]], predictions: Sequence[dict[str, Tensor]]
    ) -> None:
        """Add one batch. ``targets[i]`` must hold ``image_id`` (and, without ``coco_gt``,
        ``boxes``/``labels`` plus ``masks``/``keypoints`` for those IoU types);
        ``predictions[i]`` holds ``boxes (N, 4)`` xyxy in image pixels, ``labels (N,)``,
        ``scores (N,)``, optionally ``masks`` (``(N, H, W)`` or ``(N, 1, H, W)``,
        probabilities or binary; > 0.5 is foreground) and ``keypoints (N, K, 3)``."""
        if len(targets) != len(predictions):
            raise ValueError(
                f"update: got {len(targets)} targets and {len(predictions)} predictions"
            )
        for target, prediction in zip(targets, predictions, strict=True):
            if "image_id" not in target:
                raise ValueError(f"target is missing 'image_id' (has {sorted(target)})")
            height, width = _image_size(target, prediction)
            self.records.append(
                {
                    "image_id": int(target["image_id"]),
                    "height": height,
                    "width": width,
                    "pred": _pred_record(prediction, self.label_to_category_id),
                    "gt": None
                    if self.gt_dataset is not None
                    else _gt_record(target, self.label_to_category_id),
                }
            )

    def _build_gt(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        if self.gt_dataset is not None:
            known = {image["id"] for image in self.gt_dataset["images"]}
            missing = sorted({r["image_id"] for r in records} - known)
            if missing:
                raise ValueError(
                    f"coco_gt has no images with ids {missing[:10]}"
                    + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
                )
            return self.gt_dataset
        images, annotations, category_ids = [], [], set()
        for record in records:
            images.append(
                {"id": record["image_id"], "height": record["height"], "width": record["width"]}
            )
            annotations += _gt_annotations(record, first_id=len(annotations) + 1)
            category_ids.update(int(c) for c in record["gt"]["category_ids"])
            category_ids.update(int(c) for c in record["pred"]["category_ids"])
        if self.label_to_category_id is not None:
            category_ids.update(self.label_to_category_id.values())
        categories = [{"id": c, "name": str(c)} for c in sorted(category_ids)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def coco_results(self, iou_type: str | None = None) -> list[dict[str, Any]]:
        """Predictions in the COCO results format (``image_id``, ``category_id``, ``score``,
        ``bbox`` ``[x, y, w, h]``, ``segmentation`` compressed RLE with ``counts`` as str,
        ``keypoints`` flat ``[x1, y1, v1, ...]``). ``iou_type`` selects the fields of one
        task (what ``compute`` evaluates); ``None`` puts every available field in each entry
        (``COCO.loadRes`` then reads it as box results)."""
        if iou_type is not None and iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be None or one of {IOU_TYPES}, got {iou_type!r}")
        results = []
        for record in unique_by_image_id(self.records):
            results += _detections(record, iou_type)
        if iou_type == "segm":
            results = [r for r in results if "segmentation" in r]
        if iou_type == "keypoints":
            results = [r for r in results if "keypoints" in r]
        return results

    def results_json(self, path: str | Path, iou_type: str | None = None) -> Path:
        """Write :meth:`coco_results` to ``path`` as JSON (temporary file, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.coco_results(iou_type), f)
        os.replace(tmp, path)
        return path

    def _num_keypoints(self, gt: dict[str, Any]) -> int:
        for ann in gt["annotations"]:
            if ann.get("keypoints"):
                return len(ann["keypoints"]) // 3
        return 0

    def _configure(
        self, evaluator: COCOeval, iou_type: str, gt: dict[str, Any], image_ids: list[int]
    ) -> None:
        evaluator.params.imgIds = image_ids
        if iou_type != "keypoints":
            evaluator.params.maxDets = list(self.max_dets)
            return
        num_keypoints = self._num_keypoints(gt)
        if num_keypoints == 0:
            return  # no keypoint ground truth: nothing is matched, sigmas are unused
        if self.keypoint_sigmas is not None:
            if len(self.keypoint_sigmas) != num_keypoints:
                raise ValueError(
                    f"keypoint_sigmas has {len(self.keypoint_sigmas)} entries, the ground truth "
                    f"has {num_keypoints} keypoints"
                )
            evaluator.params.kpt_oks_sigmas = self.keypoint_sigmas
        elif num_keypoints != COCO_PERSON_KEYPOINTS:
            raise ValueError(
                f"keypoint_sigmas is required for {num_keypoints} keypoints (the default COCO "
                f"sigmas are for {COCO_PERSON_KEYPOINTS})"
            )

    def _evaluate(
        self, gt_coco: COCO, gt: dict[str, Any], iou_type: str, image_ids: list[int]
    ) -> np.ndarray:
        detections = self.coco_results(iou_type)
        names = metric_names(iou_type, max_dets=self.max_dets)
        if not detections:
            self.summaries[iou_type] = f"no {iou_type} predictions: all metrics set to 0"
            return np.zeros(len(names))
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            dt_coco = gt_coco.loadRes(copy.deepcopy(detections))
            evaluator = COCOeval(gt_coco, dt_coco, iou_type)
            self._configure(evaluator, iou_type, gt, image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        self.summaries[iou_type] = buffer.getvalue()
        return np.asarray(evaluator.stats, dtype=np.float64)

    def _check_gt_fields(self, records: list[dict[str, Any]]) -> None:
        """Without ``coco_gt``, segm/keypoints evaluation needs masks/keypoints in targets."""
        if self.gt_dataset is not None:
            return
        for iou_type, key in (("segm", "masks"), ("keypoints", "keypoints")):
            if iou_type in self.iou_types and any(
                r["gt"][key] is None and len(r["gt"]["boxes"]) for r in records
            ):
                raise ValueError(
                    f"iou_types includes {iou_type!r} but some targets have no {key!r}"
                )

    def compute(self) -> dict[str, float]:
        """Evaluate everything seen so far; returns flat ``{"bbox/AP": ..., ...}`` metrics."""
        records = unique_by_image_id(self.records)
        gt = self._build_gt(records)
        self._check_gt_fields(records)
        gt_coco = _coco_from_dict(gt)
        image_ids = sorted(r["image_id"] for r in records)
        metrics: dict[str, float] = {}
        for iou_type in self.iou_types:
            stats = self._evaluate(gt_coco, gt, iou_type, image_ids)
            self.stats[iou_type] = stats
            names = metric_names(iou_type, max_dets=self.max_dets)
            metrics.update(
                {f"{iou_type}/{name}": float(v) for name, v in zip(names, stats, strict=True)}
            )
        return metrics

    def summary(self) -> str:
        """pycocotools' printed summaries of the last ``compute``, one block per IoU type."""
        return "\n".join(f"[{t}]\n{text}" for t, text in self.summaries.items())
