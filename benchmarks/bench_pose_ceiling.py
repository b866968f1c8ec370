"""How well can a pose estimator do on ``shapes-pose``? Keypoint AP of oracles on held-out images.

Keypoint R-CNN's goal (keypoint AP >= 0.70) only means something if the data allows it. Each
row scores an oracle that detects every figure with its true box (score 1) and places its
keypoints with one kind of error, so the row's AP is a ceiling for any model whose error is of
that kind and size:

- ``exact``: the true keypoints (a check of the evaluation: AP 1).
- ``heatmap_SxS``: the true keypoints as Keypoint R-CNN can express them: each one encoded into
  its cell of the ``S x S`` heatmap over the box grown by ``--expansion`` (the model's training
  target), decoded back as the model decodes its heatmaps. The grid's quantisation error alone.
- ``noise_Dpx``: each coordinate moved by a Gaussian of standard deviation ``D`` image pixels.
- ``swap_left_right``: every left/right joint pair exchanged (a model that cannot tell the
  figure's chirality).
- ``box_jitter_F``: keypoints exact, box corners moved by ``F`` of the box size (OKS uses the
  ground truth's area, so only the box-level match is affected).

Also prints the pixel tolerance that the OKS sigmas give (the distance at which one keypoint's
similarity is 0.5) across figures, and the figures' heights, so the numbers can be read against
the image size. With ``--run``, also a trained keypoint model's own error on the same images:
its detections matched to the figures (box IoU >= 0.5, best score first), and for each visible
keypoint of a matched figure the distance in image pixels, the fraction within the OKS
half-distance, and how often the keypoint lies nearer the figure's mirror joint (a left/right
confusion); and the model's keypoint AP when its keypoint branch is given the true boxes
instead of its own detections (a perfect box stage), with every box scored 1 and with the
model's own pose confidence as the score, which separates the box stage's share of the missing
AP from the keypoint branch's. Keypoints hidden by another object or a stroke (COCO's ``v = 1``)
are scored too, though the image does not show them; to separate them, the model's errors are
also given by visibility, and the true-box AP once more with every visible (``v = 2``) keypoint
set to its true place and only the hidden ones left as the model guessed them (the ceiling of
this model's guesses for hidden joints).

    python benchmarks/bench_pose_ceiling.py                     # 500 images, default generator
    python benchmarks/bench_pose_ceiling.py --run zoo:keypoint_rcnn_shapes
    python benchmarks/bench_pose_ceiling.py --data shapes-pose:image_size=192
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math

import numpy as np
import torch

from structvision.data.spec import build_dataset
from structvision.data.synthetic.figures import FLIP_INDEX
from structvision.structures import heatmaps_to_keypoints, keypoints_to_heatmap_targets, scale_boxes
from structvision.tasks.instances import keypoint_evaluator


def _targets(dataset) -> list[dict[str, torch.Tensor]]:
    return [dataset[i][1] for i in range(len(dataset))]


def _through_heatmap(keypoints: torch.Tensor, boxes: torch.Tensor, size: int, expansion: float):
    """The keypoints as the model's ``size x size`` heatmaps over the grown boxes express them."""
    rois = scale_boxes(boxes, expansion) if expansion != 1.0 else boxes
    cells, valid = keypoints_to_heatmap_targets(keypoints, rois, size)
    heatmaps = torch.full((*cells.shape, size * size), -10.0)
    heatmaps.scatter_(2, cells[..., None], 10.0)
    decoded, _ = heatmaps_to_keypoints(heatmaps.view(*cells.shape, size, size), rois)
    # A keypoint outside the grown box has no target cell: the model cannot place it there.
    return torch.where(valid[..., None], decoded, keypoints.new_tensor([-1e4, -1e4, 1.0]))


def _oracle(dataset, targets, place, boxes_of=lambda t: t["boxes"]) -> float:
    """Keypoint AP of true boxes (``boxes_of``) with keypoints placed by ``place``."""
    evaluator = keypoint_evaluator(dataset)
    predictions = []
    for target in targets:
        keypoints = target["keypoints"].float()
        boxes = target["boxes"].float()
        predicted = place(keypoints, boxes).clone()
        predicted[..., 2] = 1.0
        predictions.append(
            {
                "boxes": boxes_of(target).float(),
                "labels": target["labels"],
                "scores": torch.ones(len(boxes)),
                "keypoints": predicted,
            }
        )
    evaluator.update(targets, predictions)
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.compute()["keypoints/AP"]


def _model_on_true_boxes(model, dataset, targets) -> dict[str, float]:
    """Keypoint AP of the model's keypoint branch on the true boxes (a perfect box stage)."""
    device = next(model.parameters()).device
    scored, unit, visible_exact = [], [], []
    with torch.no_grad():
        for index, target in enumerate(targets):
            image = dataset[index][0].to(device)
            truth = {"boxes": target["boxes"].float().to(device)}
            batch, (resized,) = model.transform([image], [truth])
            features = model.backbone(batch.tensors)
            boxes = resized["boxes"]
            detections = [
                {
                    "boxes": boxes,
                    "labels": target["labels"].to(device),
                    "scores": torch.ones(len(boxes), device=device),
                }
            ]
            detections = model._predict_keypoints(features, batch.image_sizes, detections)
            size = (int(image.shape[-2]), int(image.shape[-1]))
            (result,) = model.transform.postprocess(detections, batch.image_sizes, [size])
            result = {k: v.cpu() for k, v in result.items()}
            scored.append(result)
            unit.append({**result, "scores": torch.ones(len(result["scores"]))})
            shown = target["keypoints"][..., 2:] == 2  # (G, K, 1) visible in the image
            corrected = torch.where(shown, target["keypoints"].float(), result["keypoints"])
            visible_exact.append({**result, "keypoints": corrected})
    aps = {}
    variants = (
        ("pose_confidence", scored),
        ("score_1", unit),
        ("visible_keypoints_exact", visible_exact),
    )
    for name, predictions in variants:
        evaluator = keypoint_evaluator(dataset)
        evaluator.update(targets, predictions)
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = evaluator.compute()
        aps[name] = {
            k: round(metrics[k], 4) for k in ("keypoints/AP", "keypoints/AP50", "keypoints/AP75")
        }
    return aps


def _model_errors(run: str, dataset, targets, half_distances: list[np.ndarray]) -> dict:
    """Pixel errors of a trained model's keypoints on the figures it detects, and its keypoint
    AP on the true boxes."""
    from structvision.structures import box_iou
    from structvision.tasks.run import load_trained_model

    _, model, _ = load_trained_model(run)
    true_boxes = _model_on_true_boxes(model, dataset, targets)
    device = next(model.parameters()).device
    flip = list(FLIP_INDEX)
    distances, swapped, within, matched = [], [], [], 0
    hidden = []  # per visible-or-hidden labelled keypoint: hidden by another object (v = 1)
    tolerance_of = iter(half_distances)
    with torch.no_grad():
        for index, target in enumerate(targets):
            image = dataset[index][0].to(device)
            prediction = {k: v.cpu() for k, v in model([image])[0].items()}
            order = prediction["scores"].argsort(descending=True)
            boxes, keypoints = prediction["boxes"][order], prediction["keypoints"][order]
            iou = box_iou(target["boxes"].float(), boxes) if len(boxes) else None
            taken = set()
            for figure, truth in enumerate(target["keypoints"].float()):
                visible = truth[:, 2] > 0
                if not visible.any():
                    continue
                tolerance = next(tolerance_of)
                candidates = [] if iou is None else (iou[figure] >= 0.5).nonzero().flatten()
                chosen = next((int(c) for c in candidates if int(c) not in taken), None)
                if chosen is None:
                    continue
                taken.add(chosen)
                matched += 1
                guess = keypoints[chosen, :, :2]
                error = (guess - truth[:, :2]).norm(dim=1)
                mirrored = (guess - truth[flip, :2]).norm(dim=1)
                paired = torch.tensor([flip[k] != k for k in range(len(flip))])
                distances += error[visible].tolist()
                hidden += (truth[:, 2] == 1)[visible].tolist()
                within += (error[visible] <= torch.from_numpy(tolerance)[visible]).tolist()
                swapped += (mirrored < error)[visible & paired].tolist()
    figures = sum(int((t["keypoints"][..., 2] > 0).any(dim=1).sum()) for t in targets)
    errors = np.asarray(distances)
    if not matched:
        return {"figures_matched": f"0/{figures}"}
    hidden, within = np.asarray(hidden, dtype=bool), np.asarray(within, dtype=bool)
    by_visibility = {}
    for name, rows in (("shown_v2", ~hidden), ("hidden_v1", hidden)):
        if rows.any():
            by_visibility[name] = {
                "share_of_labelled": round(float(rows.mean()), 4),
                "error_px": {
                    f"p{q}": round(float(np.percentile(errors[rows], q)), 2) for q in (50, 75, 90)
                },
                "within_oks_half_distance": round(float(within[rows].mean()), 4),
            }
    return {
        "figures_matched": f"{matched}/{figures}",
        "error_px": {f"p{q}": round(float(np.percentile(errors, q)), 2) for q in (25, 50, 75, 90)},
        "by_visibility": by_visibility,
        "within_oks_half_distance": round(float(np.mean(within)), 4),
        "left_right_swapped": round(float(np.mean(swapped)), 4),
        "keypoints_on_true_boxes": true_boxes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="shapes-pose")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--expansion", type=float, default=1.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--run", default=None, help="a trained keypoint model: run, checkpoint, zoo:NAME"
    )
    args = parser.parse_args()
    spec = f"{args.data}{',' if ':' in args.data else ':'}num_images={args.num_images}"
    dataset = build_dataset(spec, split="val")
    targets = _targets(dataset)
    rng = torch.Generator().manual_seed(args.seed)

    def noisy(std: float):
        def place(keypoints, boxes):
            moved = keypoints.clone()
            moved[..., :2] += std * torch.randn(moved[..., :2].shape, generator=rng)
            return moved

        return place

    def jittered_boxes(fraction: float):
        def boxes_of(target):
            boxes = target["boxes"].float()
            size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
            return boxes + fraction * size * torch.randn(boxes.shape, generator=rng)

        return boxes_of

    rows = {
        "exact": _oracle(dataset, targets, lambda k, b: k),
        "heatmap_56x56": _oracle(
            dataset, targets, lambda k, b: _through_heatmap(k, b, 56, args.expansion)
        ),
        "heatmap_28x28": _oracle(
            dataset, targets, lambda k, b: _through_heatmap(k, b, 28, args.expansion)
        ),
        "swap_left_right": _oracle(dataset, targets, lambda k, b: k[:, list(FLIP_INDEX)]),
    }
    for std in (0.5, 1.0, 1.5, 2.0, 3.0):
        rows[f"noise_{std}px"] = _oracle(dataset, targets, noisy(std))
    for fraction in (0.05, 0.1):
        rows[f"box_jitter_{fraction}"] = _oracle(
            dataset, targets, lambda k, b: k, jittered_boxes(fraction)
        )

    sigmas = np.asarray(keypoint_evaluator(dataset).keypoint_sigmas)
    tolerances, heights = [], []
    for target in targets:
        for area, keypoints in zip(target["area"].tolist(), target["keypoints"], strict=True):
            if (keypoints[:, 2] > 0).any():
                # OKS_k = exp(-d^2 / (2 area (2 sigma_k)^2)) = 0.5 at d = 2 sigma_k sqrt(2 ln2 area)
                tolerances.append(2 * sigmas * math.sqrt(2 * math.log(2) * area))
        heights += (target["boxes"][:, 3] - target["boxes"][:, 1]).tolist()
    per_figure = list(tolerances)
    tolerances = np.stack(tolerances)
    result = {
        "data": spec,
        "figures": len(heights),
        "keypoints/AP": {name: round(ap, 4) for name, ap in rows.items()},
        "oks_half_distance_px": {
            f"p{q}": round(float(np.percentile(tolerances, q)), 2) for q in (10, 50, 90)
        },
        "box_height_px": {
            f"p{q}": round(float(np.percentile(heights, q)), 1) for q in (10, 50, 90)
        },
    }
    if args.run is not None:
        result["model"] = {"run": args.run, **_model_errors(args.run, dataset, targets, per_figure)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
