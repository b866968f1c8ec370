"""Weakly supervised segmentation on ``shapes``: full labels vs scribbles vs scribbles + CRF loss.

Tang et al. (2018), "On Regularized Losses for Weakly-supervised CNN Segmentation", on our own
data. The same FCN-8s (small backbone, recipe ``fcn8s``) is trained from scratch three ways
with the same step budget, optimizer (AdamW, lr 1e-3 by default: on this data it reaches in
4000 steps what the recipe's SGD reaches in 15000), batch size, training images and seed:

* ``full``: every pixel labelled (cross-entropy);
* ``partial``: scribbles only (``shapes:scribbles=true``, about 3% of the pixels labelled):
  partial cross-entropy on the stroke pixels;
* ``crf``: scribbles, partial cross-entropy + ``lambda`` x dense-CRF loss
  (``model.crf_loss_weight``, bilateral kernel ``crf_sxy``/``crf_srgb`` on the images resized
  by ``crf_scale``).

Each row is evaluated on the same validation images with full labels (mIoU, boundary F).
Prints one JSON line per row and a JSON summary, also written to OUT/results.json; the summary
holds every row found in OUT, so rows may run as separate processes into the same OUT:

    python benchmarks/bench_weak_supervision.py --out runs/bench_weak
    python benchmarks/bench_weak_supervision.py --rows crf --crf-weight 0.002 --out runs/w2
    python benchmarks/bench_weak_supervision.py --steps 20 --val-images 20 --out /tmp/w  # smoke
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from structvision.data.spec import build_dataset
from structvision.data.synthetic.scribbles import labelled_fraction
from structvision.tasks import run_train

ROWS = ("full", "partial", "crf")
ROW_FILE = "bench_row.json"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS)
    )
    parser.add_argument("--crf-weight", type=float, default=5e-4, help="model.crf_loss_weight")
    parser.add_argument("--crf-sxy", type=float, default=50.0, help="pixels of the input")
    parser.add_argument("--crf-srgb", type=float, default=15.0, help="0-255 colour units")
    parser.add_argument("--crf-scale", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="training seed (TrainConfig.seed)")
    parser.add_argument("--optimizer", default="adamw", help="TrainConfig.optimizer")
    parser.add_argument("--lr", type=float, default=1e-3, help="TrainConfig.lr")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_weak_supervision"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        help="extra key=value for every row, e.g. lr=0.02 or model.width=16",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.rows.split(",")) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    return args


def _row_settings(row: str, args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The training data SPEC and the ``--set`` pairs of one row."""
    data = f"shapes:num_images={args.train_images}"
    settings = {
        "batch_size": str(args.batch_size),
        "seed": str(args.seed),
        "model.norm": "batch",  # the FCN's default when these rows were measured
        "model.pretrained": "none",
        "optimizer": args.optimizer,
        "lr": str(args.lr),
        "eval_every": "0",
        "checkpoint_every": "0",
        "progress": "false",
    }
    if row != "full":
        data += ",scribbles=true"
    if row == "crf":
        settings["model.crf_loss_weight"] = str(args.crf_weight)
        settings["model.crf_sxy"] = str(args.crf_sxy)
        settings["model.crf_srgb"] = str(args.crf_srgb)
        settings["model.crf_scale"] = str(args.crf_scale)
    for item in args.sets:
        key, _, value = item.partition("=")
        settings[key] = value
    return data, settings


def _train_step_seconds(run: Path) -> float | None:
    """Mean ``sec_per_step`` of the logged training windows, the first one (warm-up) left out
    when there are others."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["sec_per_step"] for r in records if r.get("kind") == "train"]
    if len(seconds) > 1:
        seconds = seconds[1:]
    return round(float(np.mean(seconds)), 4) if seconds else None


def _labelled_fraction(data: str, *, num_images: int = 200) -> float:
    """Mean fraction of labelled (non-255) training pixels over the first images."""
    dataset = build_dataset(data, split="train")
    count = min(num_images, len(dataset))
    return float(
        np.mean([labelled_fraction(dataset[i][1]["semantic"].numpy()) for i in range(count)])
    )


def _run_row(row: str, args: argparse.Namespace, val: str) -> dict:
    data, settings = _row_settings(row, args)
    started = time.perf_counter()
    metrics = run_train(
        "fcn8s",
        data=data,
        val_data=val,
        out=args.out / row,
        max_steps=args.steps,
        overrides=settings,
    )
    seconds = time.perf_counter() - started
    result = {
        "miou": round(metrics["miou"], 4),
        "boundary_f": round(metrics["boundary_f"], 4),
        "pixel_accuracy": round(metrics["pixel_accuracy"], 4),
        "labelled_fraction": round(_labelled_fraction(data), 4),
        "sec_per_step": _train_step_seconds(args.out / row),
        "train_and_eval_seconds": round(seconds, 1),
        "steps": args.steps,
        "data": data,
        "settings": settings,
    }
    (args.out / row / ROW_FILE).write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    args = _parse_args()
    torch.set_num_threads(args.threads)
    val = f"shapes:num_images={args.val_images}"
    for row in args.rows.split(","):
        print(json.dumps({row: _run_row(row, args, val)}), flush=True)
    results = {
        row: json.loads((args.out / row / ROW_FILE).read_text())
        for row in ROWS
        if (args.out / row / ROW_FILE).is_file()
    }
    summary = {
        "benchmark": "weak_supervision_shapes",
        "recipe": "fcn8s (arch small)",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "val_data": val + " (val split, full labels)",
        "threads": args.threads,
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
