"""Where a trained detector's AP goes: its detections sorted into error types.

Each detection of each validation image, highest score first, is one of (IoU against the
ground-truth boxes, as in Hoiem et al.'s "Diagnosing error in object detectors"):

- ``correct``: IoU >= 0.5 with a not yet matched object of its class;
- ``duplicate``: IoU >= 0.5 with an object of its class that a higher-scored detection matched;
- ``wrong_class``: IoU >= 0.5 with an object of another class only;
- ``localisation``: best IoU with any object in [0.1, 0.5);
- ``background``: best IoU below 0.1.

Prints one JSON object: the counts at several score thresholds and the recall at IoU 0.5 over
all detections, of the right class and of any class (the gap is what class confusion costs).

    python benchmarks/detection_errors.py runs/det_adamw8k/faster_rcnn --data shapes:num_images=500

``--tta`` scores the model under flip test-time augmentation (``FlipTTA``).
"""

from __future__ import annotations

import argparse
import json

import torch

from structvision.data.spec import build_dataset
from structvision.models.detection.tta import FlipTTA
from structvision.structures import box_iou
from structvision.tasks.run import load_trained_model

KINDS = ("correct", "duplicate", "wrong_class", "localisation", "background")
THRESHOLDS = (0.9, 0.7, 0.5, 0.3, 0.1, 0.05)


def classify_detections(
    boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, target: dict
) -> tuple[list[tuple[float, str]], torch.Tensor, torch.Tensor]:
    """``[(score, kind)]`` per detection, and per object whether some detection of its class /
    of any class overlaps it with IoU >= 0.5."""
    gt_boxes, gt_labels = target["boxes"], target["labels"]
    ious = box_iou(boxes, gt_boxes)  # (D, G)
    same_class = labels[:, None] == gt_labels[None, :]  # (D, G)
    matched = torch.zeros(len(gt_boxes), dtype=torch.bool)
    kinds = []
    for d in scores.argsort(descending=True).tolist():
        same = torch.where(same_class[d], ious[d], torch.zeros_like(ious[d]))
        best_any = float(ious[d].max()) if len(gt_boxes) else 0.0
        if len(gt_boxes) and float(same.max()) >= 0.5:
            g = int(same.argmax())
            kind = "duplicate" if matched[g] else "correct"
            matched[g] = True
        elif best_any >= 0.5:
            kind = "wrong_class"
        elif best_any >= 0.1:
            kind = "localisation"
        else:
            kind = "background"
        kinds.append((float(scores[d]), kind))
    found_same = ((ious >= 0.5) & same_class).any(dim=0)  # (G,)
    found_any = (ious >= 0.5).any(dim=0)
    return kinds, found_same, found_any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run or checkpoint folder")
    parser.add_argument("--data", default="shapes:num_images=500")
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    recipe, model, model_config = load_trained_model(args.run)
    if args.tta:
        try:
            model = FlipTTA(model, keypoint_flip_pairs=model_config.get("keypoint_flip_pairs"))
        except (TypeError, ValueError) as error:
            parser.error(f"--tta: {error}")
    device = next(model.parameters()).device
    dataset = build_dataset(args.data, split=args.split)
    kinds: list[tuple[float, str]] = []
    found_same, found_any = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        with torch.no_grad():
            output = model([image.to(device)])[0]
        output = {key: value.cpu() for key, value in output.items()}
        if "boxes" not in output:
            parser.error(f"{args.run}: recipe {recipe.name!r} predicts no boxes")
        image_kinds, same, any_class = classify_detections(
            output["boxes"], output["labels"], output["scores"], target
        )
        kinds += image_kinds
        found_same.append(same)
        found_any.append(any_class)
    scores = torch.tensor([score for score, _ in kinds])
    names = [kind for _, kind in kinds]
    counts = {}
    for threshold in THRESHOLDS:
        keep = (scores >= threshold).tolist()
        counts[f"score>={threshold}"] = {
            kind: sum(1 for k, kept in zip(names, keep, strict=True) if kept and k == kind)
            for kind in KINDS
        }
    result = {
        "run": args.run,
        "tta": "flip" if args.tta else None,
        "data": f"{args.data} ({args.split} split)",
        "objects": int(sum(len(s) for s in found_same)),
        "recall50_right_class": round(float(torch.cat(found_same).float().mean()), 4),
        "recall50_any_class": round(float(torch.cat(found_any).float().mean()), 4),
        "detections": counts,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
