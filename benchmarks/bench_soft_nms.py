"""Soft-NMS against NMS for a trained R-CNN: the same weights scored with each setting.

Loads a Faster / Mask / Keypoint R-CNN run (or ``zoo:NAME``), sets its box stage's
``soft_nms_sigma`` to each value of ``--sigmas`` (0: torchvision's NMS at the model's IoU
threshold) and scores it on ``--data`` with the recipe's evaluator. Prints one JSON line per
sigma with the ``--keys`` metrics.

    python benchmarks/bench_soft_nms.py runs/frcnn_pre8k --data shapes:num_images=500
    python benchmarks/bench_soft_nms.py zoo:keypoint_rcnn_shapes_pose \\
        --data shapes-pose:num_images=200 --sigmas 0,0.3,0.5,1 --keys keypoints/AP,bbox/AP
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import torch

from structvision.data.spec import build_dataset
from structvision.engine import evaluate
from structvision.tasks import load_trained_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="an R-CNN run, checkpoint or zoo:NAME")
    parser.add_argument("--data", required=True, help="evaluation SPEC")
    parser.add_argument("--sigmas", default="0,0.3,0.5", help="comma-separated; 0 is NMS")
    parser.add_argument("--keys", default="bbox/AP,bbox/AP50,bbox/AP75")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe, model, model_config = load_trained_model(args.run)
    if not hasattr(getattr(model, "roi_heads", None), "soft_nms_sigma"):
        parser.error(f"{args.run} is a {recipe.name!r} model, not an R-CNN")
    dataset = build_dataset(args.data, split="val", modality=recipe.data_modality)
    for sigma in (float(value) for value in args.sigmas.split(",")):
        model.roi_heads.soft_nms_sigma = sigma
        evaluator = recipe.evaluator_for(dataset, model_config)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' tables
            metrics = evaluate(
                model=model, dataset=dataset, evaluator=evaluator, collate_fn=recipe.collate_fn
            )
        shown = {key: round(metrics[key], 4) for key in args.keys.split(",")}
        print(json.dumps({"soft_nms_sigma": sigma, **shown}), flush=True)


if __name__ == "__main__":
    main()
