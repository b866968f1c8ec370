"""What flip test-time augmentation costs: milliseconds per image, one view against ``FlipTTA``.

A trained R-CNN run and its ``FlipTTA`` wrapper alternate over the same validation images,
one image per call, for ``--rounds`` rounds; the median round of each is reported as
milliseconds per image, with their ratio.

    python benchmarks/tta_cost.py runs/det_conv10k/faster_rcnn --data shapes:num_images=500
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from structvision.data.spec import build_dataset
from structvision.models.detection.tta import FlipTTA
from structvision.tasks.run import load_trained_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run or checkpoint folder of an R-CNN recipe")
    parser.add_argument("--data", default="shapes:num_images=500")
    parser.add_argument("--images", type=int, default=40, help="validation images per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for name in ("images", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    _, model, model_config = load_trained_model(args.run)
    try:
        tta = FlipTTA(model, keypoint_flip_pairs=model_config.get("keypoint_flip_pairs"))
    except (TypeError, ValueError) as error:
        parser.error(f"{args.run}: {error}")
    device = next(model.parameters()).device
    dataset = build_dataset(args.data, split="val")
    count = min(args.images, len(dataset))
    images = [dataset[index][0].to(device) for index in range(count)]
    seconds: dict[str, list[float]] = {"one_view": [], "flip_tta": []}
    with torch.no_grad():
        model([images[0]]), tta([images[0]])  # warm-up
        for _ in range(args.rounds):
            for name, predictor in (("one_view", model), ("flip_tta", tta)):
                start = time.perf_counter()
                for image in images:
                    predictor([image])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(values) / count for name, values in seconds.items()}
    result = {
        "run": args.run,
        "data": f"{args.data} (val split, first {count} images)",
        "device": str(device),
        "threads": args.threads,
        "rounds": args.rounds,
        "ms_per_image_one_view": round(ms["one_view"], 1),
        "ms_per_image_flip_tta": round(ms["flip_tta"], 1),
        "cost_ratio": round(ms["flip_tta"] / ms["one_view"], 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
