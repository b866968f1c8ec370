"""The quality table of the recipes at their defaults: from the pretrained trunk against from
scratch, with the step budget and minutes of each row.

Each row is ``structvision train RECIPE --data GENERATOR`` with no other setting (the recipe's
defaults: its step budget, AdamW, the conv box head, the trunk of ``zoo:classifier_shapes``),
or with one change that the row's name says (``_scratch``: ``model.pretrained=none``; the
Fast R-CNN and Mask R-CNN poolers). Scored on 500 held-out images of the default generator
(the ``val`` split), one pass (no test-time augmentation); FCN rows also after the dense CRF.
Prints one JSON line per row and merges the rows into OUT/results.json.

    python benchmarks/bench_defaults.py --rows faster_rcnn,faster_rcnn_scratch
    python benchmarks/bench_defaults.py --rows fcn8s --steps 4000       # a shorter budget
    python benchmarks/bench_defaults.py --rows mask_rcnn_roi_pool --resume  # after a SIGTERM
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structvision.engine.signals import TrainingInterrupted
from structvision.tasks import run_eval, run_train

#: row -> (recipe, generator, the row's --set pairs, metrics reported)
BOX = ("bbox/AP", "bbox/AP50", "bbox/AP75")
ROWS: dict[str, tuple[str, str, dict[str, str], tuple[str, ...]]] = {
    "faster_rcnn": ("faster_rcnn", "shapes", {}, BOX),
    "faster_rcnn_scratch": ("faster_rcnn", "shapes", {"model.pretrained": "none"}, BOX),
    "fast_rcnn_roi_pool": ("fast_rcnn", "shapes", {"model.pooler": "roi_pool"}, BOX),
    "fast_rcnn_spp": ("fast_rcnn", "shapes", {"model.pooler": "spp"}, BOX),
    "fast_rcnn_roi_align": ("fast_rcnn", "shapes", {"model.pooler": "roi_align"}, BOX),
    "mask_rcnn": ("mask_rcnn", "shapes", {}, ("segm/AP", "segm/AP50", "segm/AP75", *BOX)),
    "mask_rcnn_roi_pool": (
        "mask_rcnn",
        "shapes",
        {"model.mask_pooler": "pool"},
        ("segm/AP", "segm/AP50", "segm/AP75", *BOX),
    ),
    "mask_rcnn_scratch": (
        "mask_rcnn",
        "shapes",
        {"model.pretrained": "none"},
        ("segm/AP", "segm/AP50", "segm/AP75", *BOX),
    ),
    "keypoint_rcnn": (
        "keypoint_rcnn",
        "shapes-pose",
        {},
        ("keypoints/AP", "keypoints/AP50", "bbox/AP", "bbox/AP50"),
    ),
    "fcn32s": ("fcn32s", "shapes", {}, ("miou", "boundary_f", "pixel_accuracy")),
    "fcn16s": ("fcn16s", "shapes", {}, ("miou", "boundary_f", "pixel_accuracy")),
    "fcn8s": ("fcn8s", "shapes", {}, ("miou", "boundary_f", "pixel_accuracy")),
    "fcn8s_scratch": (
        "fcn8s",
        "shapes",
        {"model.pretrained": "none"},
        ("miou", "boundary_f", "pixel_accuracy"),
    ),
}


def _row(name: str, args: argparse.Namespace) -> dict:
    recipe, generator, settings, keys = ROWS[name]
    out = args.out / name
    val = f"{generator}:num_images={args.val_images}"
    started = time.perf_counter()
    if args.resume and (out / "checkpoints").is_dir():  # the run keeps its own settings
        metrics = run_train(recipe, out=out, resume=True, overrides={"progress": "false"})
        minutes = None  # only this part's wall time would be known
    else:
        metrics = run_train(
            recipe,
            data=generator,
            val_data=val,
            out=out,
            max_steps=args.steps,
            overrides={**settings, "progress": "false"},
        )
        minutes = round((time.perf_counter() - started) / 60, 1)
    config = json.loads((out / "config.json").read_text())
    steps = [
        json.loads(line)["sec_per_step"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    result = {
        "recipe": recipe,
        "settings": settings,
        "steps": config["train"]["max_steps"],
        "minutes": minutes,
        "sec_per_step": round(sum(steps) / len(steps), 3),
        **{key: round(metrics[key], 4) for key in keys},
    }
    if recipe.startswith("fcn"):
        refined = run_eval(out, data=val, crf={})
        result |= {f"crf/{key}": round(refined[key], 4) for key in ("miou", "boundary_f")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", required=True, help="comma-separated: " + ", ".join(ROWS))
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_defaults"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue rows whose run was stopped (SIGTERM) from their last checkpoint",
    )
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    torch.set_num_threads(args.threads)
    for name in rows:
        try:
            result = _row(name, args)
        except TrainingInterrupted as stopped:
            raise SystemExit(f"row {name}: {stopped}; continue it with --resume") from None
        print(json.dumps({name: result}), flush=True)
        path = args.out / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[name] = result
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
