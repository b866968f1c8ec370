"""Detection quality on ``shapes``: Faster R-CNN vs Fast R-CNN (RoI pooling, SPP, RoIAlign).

Every row trains from scratch on this machine's CPU with the same step budget, batch size and
training images, then is evaluated with COCO AP on the same 500 validation images. Prints one
JSON object (and writes it to OUT/results.json).

    python benchmarks/bench_detection.py --steps 3000 --out runs/bench_detection
    python benchmarks/bench_detection.py --rows faster_rcnn --steps 300      # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structvision.tasks import run_train

#: The settings every row starts from: the recipes' defaults when the tables in BENCHMARKS.md
#: were measured (SGD at lr 0.02, from scratch, the two-layer box head), so that their commands
#: keep giving those tables now that the recipes default to AdamW and a pretrained trunk;
#: ``--set`` changes them (``--set model.pretrained=zoo:classifier_shapes``, ...).
PINNED = {
    "faster_rcnn": {
        "optimizer": "sgd",
        "lr": "0.02",
        "model.box_head": "mlp",
        "model.pretrained": "none",
    },
    "fast_rcnn": {"model.pretrained": "none"},
}

ROWS = {
    "faster_rcnn": ("faster_rcnn", {}),
    "fast_rcnn_roi_pool": ("fast_rcnn", {"model.pooler": "roi_pool"}),
    "fast_rcnn_spp": ("fast_rcnn", {"model.pooler": "spp"}),
    "fast_rcnn_roi_align": ("fast_rcnn", {"model.pooler": "roi_align"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS)
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_detection"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        help="extra key=value, e.g. model.norm=batch",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = f"shapes:num_images={args.train_images}"
    val = f"shapes:num_images={args.val_images}"
    extra = {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r} is not of the form key=value")
        extra[key.strip()] = value.strip()
    results = {}
    for row in args.rows.split(","):
        recipe, overrides = ROWS[row]
        settings = {
            **PINNED[recipe],
            **overrides,
            "batch_size": str(args.batch_size),
            "eval_every": "0",
            "progress": "false",
            **extra,
        }
        started = time.perf_counter()
        metrics = run_train(
            recipe,
            data=train,
            val_data=val,
            out=args.out / row,
            max_steps=args.steps,
            overrides=settings,
        )
        seconds = time.perf_counter() - started
        results[row] = {
            "bbox/AP": round(metrics["bbox/AP"], 4),
            "bbox/AP50": round(metrics["bbox/AP50"], 4),
            "bbox/AP75": round(metrics["bbox/AP75"], 4),
            "train_and_eval_seconds": round(seconds, 1),
        }
        print(json.dumps({row: results[row]}), flush=True)
    summary = {
        "benchmark": "detection_quality_shapes",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_data": train,
        "val_data": val + " (val split)",
        "threads": args.threads,
        "settings": args.sets,
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
