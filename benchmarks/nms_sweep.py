"""COCO metrics of a trained R-CNN run at several box NMS thresholds (inference only).

The box head's per-class NMS (IoU 0.5 by default, as in torchvision) keeps one detection of
two objects whose boxes overlap more than the threshold. Crowded scenes (stick figures whose
boxes overlap while the figures do not) may want a higher one; this re-evaluates the same
weights at each threshold. Prints one JSON object.

    python benchmarks/nms_sweep.py runs/kp_adamw/keypoint_rcnn \\
        --data shapes-pose:image_size=128,num_images=500 --thresholds 0.5,0.6,0.7
"""

from __future__ import annotations

import argparse
import json

import torch

from structvision.data.spec import build_dataset
from structvision.engine import evaluate
from structvision.tasks.run import load_trained_model


def _threshold(text: str) -> float:
    """One ``--thresholds`` entry, an IoU in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IoU in (0, 1]")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run or checkpoint folder of an R-CNN recipe")
    parser.add_argument("--data", default="shapes:num_images=500")
    parser.add_argument(
        "--thresholds",
        default=[0.5, 0.6, 0.7],
        type=lambda text: [_threshold(item) for item in text.split(",")],
        help="comma-separated IoUs",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe, model, model_config = load_trained_model(args.run)
    if not hasattr(getattr(model, "roi_heads", None), "nms_thresh"):
        parser.error(f"{args.run}: recipe {recipe.name!r} has no box head NMS to sweep")
    dataset = build_dataset(args.data, split="val")
    results = {}
    for threshold in args.thresholds:
        model.roi_heads.nms_thresh = threshold
        evaluator = recipe.evaluator_for(dataset, model_config)
        metrics = evaluate(
            model=model, dataset=dataset, evaluator=evaluator, collate_fn=recipe.collate_fn
        )
        results[f"{threshold:g}"] = {
            key: round(value, 4)
            for key, value in metrics.items()
            if key.endswith(("/AP", "/AP50", "/AP75"))
        }
    print(json.dumps({"run": args.run, "data": f"{args.data} (val split)", "nms": results}))


if __name__ == "__main__":
    main()
