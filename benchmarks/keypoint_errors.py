"""Where a trained Keypoint R-CNN loses OKS: per-keypoint errors of the detected figures.

Every labelled figure of the first ``--images`` validation images is paired with the detection
that overlaps it most (box IoU >= 0.5). For each keypoint type this prints the median and 90th
percentile distance (pixels) between prediction and truth over the labelled points, beside the
distance at which OKS drops to 0.5 for a figure of median area. Points more than ``--far``
pixels off are split by cause: a left/right swap (the prediction is within ``--far`` of the
mirrored keypoint) or a true point outside the detected box, which the heatmap cannot reach
unless the keypoint RoI is grown (``model.keypoint_roi_expansion``). The share of far points is
also given apart for crowded figures (another figure's box overlaps theirs at IoU >
``--crowd-iou``) and the others.

    python benchmarks/keypoint_errors.py runs/kp_adamw/keypoint_rcnn --images 150
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from structvision.data.spec import build_dataset
from structvision.structures import box_iou
from structvision.tasks.run import load_trained_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run or checkpoint folder of a keypoint_rcnn model")
    parser.add_argument("--data", default="shapes-pose:image_size=128,num_images=500")
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--far", type=float, default=5.0, help="pixels")
    parser.add_argument("--crowd-iou", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, model, _ = load_trained_model(args.run)
    device = next(model.parameters()).device
    dataset = build_dataset(args.data, split="val")
    if not getattr(dataset, "keypoint_names", None):
        parser.error(f"--data {args.data}: the dataset has no keypoints")
    names = list(dataset.keypoint_names)
    sigmas = torch.tensor(dataset.keypoint_sigmas)
    flip = torch.arange(len(names))
    for left, right in dataset.keypoint_flip_pairs:
        flip[left], flip[right] = right, left
    errors, areas = [], []  # per figure: (K,) distance, nan where unlabelled
    far = {"far": 0, "left_right_swap": 0, "outside_box": 0}
    by_crowding = {"crowded": [0, 0], "alone": [0, 0]}  # [labelled points, far points]
    figure_overlaps = {"figures": 0, "iou>0.5": 0, f"iou>{args.crowd_iou:g}": 0}
    for index in range(min(args.images, len(dataset))):
        image, target = dataset[index]
        with torch.no_grad():
            output = model([image.to(device)])[0]
        output = {key: value.cpu() for key, value in output.items()}
        if len(target["boxes"]) == 0:
            continue
        between = box_iou(target["boxes"], target["boxes"]).fill_diagonal_(0.0)  # (G, G)
        closest = between.max(dim=1).values  # (G,) box IoU with the nearest other figure
        crowded = closest > args.crowd_iou
        figure_overlaps["figures"] += len(closest)
        figure_overlaps["iou>0.5"] += int((closest > 0.5).sum())
        figure_overlaps[f"iou>{args.crowd_iou:g}"] += int(crowded.sum())
        if len(output["boxes"]) == 0:
            continue
        ious = box_iou(target["boxes"], output["boxes"])  # (G, D)
        for g in range(len(target["boxes"])):
            d = int(ious[g].argmax())
            truth = target["keypoints"][g]  # (K, 3)
            if ious[g, d] < 0.5 or not (truth[:, 2] > 0).any():
                continue
            predicted, box = output["keypoints"][d, :, :2], output["boxes"][d]
            distance = (truth[:, :2] - predicted).norm(dim=1)  # (K,)
            labelled = truth[:, 2] > 0
            errors.append(torch.where(labelled, distance, torch.nan))
            areas.append(float(target["masks"][g].sum()))
            counts = by_crowding["crowded" if crowded[g] else "alone"]
            counts[0] += int(labelled.sum())
            counts[1] += int((labelled & (distance > args.far)).sum())
            for k in torch.where(labelled & (distance > args.far))[0].tolist():
                far["far"] += 1
                swapped = (truth[flip[k], :2] - predicted[k]).norm()
                if truth[flip[k], 2] > 0 and swapped <= args.far:
                    far["left_right_swap"] += 1
                x, y = truth[k, :2].tolist()
                if not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
                    far["outside_box"] += 1
    table = torch.stack(errors)  # (F, K)
    median_area = float(torch.tensor(areas).median())
    per_keypoint = {}
    for k, name in enumerate(names):
        column = table[:, k][~table[:, k].isnan()]
        tolerance = math.sqrt(2 * math.log(2)) * 2 * float(sigmas[k]) * math.sqrt(median_area)
        per_keypoint[name] = {
            "median_px": round(float(column.median()), 2),
            "p90_px": round(float(column.quantile(0.9)), 2),
            "oks_half_px": round(tolerance, 2),
        }
    result = {
        "run": args.run,
        "figures": len(errors),
        "median_area": median_area,
        "labelled_points": int((~table.isnan()).sum()),
        f"points_off_by_more_than_{args.far:g}px": far,
        "figures_overlapping_another": figure_overlaps,
        "far_share": {
            name: round(far_points / max(points, 1), 3)
            for name, (points, far_points) in by_crowding.items()
        },
        "per_keypoint": per_keypoint,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
