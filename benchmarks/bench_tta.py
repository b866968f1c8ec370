"""Flip test-time augmentation: COCO metrics and milliseconds per image against one view.

For a trained R-CNN run, three predictors are scored on the same validation data with the
run's own evaluator: the model (one view), ``FlipTTA(merge_proposals="concat")`` and
``FlipTTA(merge_proposals="nms")``. Their cost is then timed alternately over the first
``--images`` validation images, one image per call, for ``--rounds`` rounds (median round).

    python benchmarks/bench_tta.py runs/det_conv10k/faster_rcnn --data shapes:num_images=500
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from structvision.data.spec import build_dataset
from structvision.engine import evaluate
from structvision.models.detection.tta import MERGE_PROPOSALS, FlipTTA
from structvision.tasks.run import load_trained_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run or checkpoint folder of an R-CNN recipe")
    parser.add_argument("--data", default="shapes:num_images=500")
    parser.add_argument("--images", type=int, default=40, help="validation images timed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-metrics", action="store_true", help="time only")
    args = parser.parse_args()
    for name in ("images", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    recipe, model, model_config = load_trained_model(args.run)
    predictors = {"one_view": model}
    try:
        for merge in MERGE_PROPOSALS:
            predictors[f"flip_tta_{merge}"] = FlipTTA(
                model,
                keypoint_flip_pairs=model_config.get("keypoint_flip_pairs"),
                merge_proposals=merge,
            )
    except (TypeError, ValueError) as error:
        parser.error(f"{args.run}: {error}")
    device = next(model.parameters()).device
    dataset = build_dataset(args.data, split="val")

    rows: dict[str, dict] = {name: {} for name in predictors}
    if not args.no_metrics:
        for name, predictor in predictors.items():
            metrics = evaluate(
                model=predictor,
                dataset=dataset,
                evaluator=recipe.evaluator_for(dataset, model_config),
                collate_fn=recipe.collate_fn,
            )
            rows[name].update({key: round(value, 4) for key, value in metrics.items()})

    count = min(args.images, len(dataset))
    images = [dataset[index][0].to(device) for index in range(count)]
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    with torch.no_grad():
        for predictor in predictors.values():
            predictor([images[0]])  # warm-up
        for _ in range(args.rounds):
            for name, predictor in predictors.items():
                start = time.perf_counter()
                for image in images:
                    predictor([image])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["one_view"])
    for name, values in seconds.items():
        rows[name]["ms_per_image"] = round(1000 * statistics.median(values) / count, 1)
        rows[name]["cost_ratio"] = round(statistics.median(values) / base, 2)
    result = {
        "run": args.run,
        "data": f"{args.data} (val split; timed on its first {count} images)",
        "device": str(device),
        "threads": args.threads,
        "rounds": args.rounds,
        "rows": rows,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
