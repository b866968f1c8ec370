"""Instance quality on ``shapes``: Mask R-CNN with RoIAlign vs RoIPool; Keypoint R-CNN on poses.

``--task masks`` (default) trains the ``mask_rcnn`` recipe twice from scratch with the same
step budget, batch size and training images, once with RoIAlign (``roi_align``) and once with
RoIPool (``roi_pool``) in the box and mask branches (the paper's Table 2c ablation), and scores
both with COCO box and mask AP on the same validation images. ``--task keypoints`` trains the
``keypoint_rcnn`` recipe on ``shapes-pose`` and scores box and keypoint (OKS) AP.

Each row prints one JSON line; the rows are then merged into OUT/results.json, so rows run as
separate processes into the same ``--out`` (at the same time too: the merge holds a file lock)
end up in one file. Every row records its own budget and settings. A row's run folder
``OUT/ROW`` must not exist yet.

    python benchmarks/bench_mask_rcnn.py --steps 3000 --out runs/bench_mask_rcnn
    python benchmarks/bench_mask_rcnn.py --rows roi_pool --out runs/bench_mask_rcnn   # one row
    python benchmarks/bench_mask_rcnn.py --task keypoints --out runs/bench_keypoints
    python benchmarks/bench_mask_rcnn.py --steps 5 --train-images 16 --val-images 8   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from structvision.data.spec import parse_value
from structvision.tasks import run_train

#: row -> (recipe, generator, the row's own --set overrides, metrics reported)
ROWS: dict[str, tuple[str, str, dict[str, str], tuple[str, ...]]] = {
    "roi_align": (
        "mask_rcnn",
        "shapes",
        {"model.mask_pooler": "align"},
        ("segm/AP", "segm/AP50", "segm/AP75", "bbox/AP", "bbox/AP50"),
    ),
    "roi_pool": (
        "mask_rcnn",
        "shapes",
        {"model.mask_pooler": "pool"},
        ("segm/AP", "segm/AP50", "segm/AP75", "bbox/AP", "bbox/AP50"),
    ),
    "keypoint_rcnn": (
        "keypoint_rcnn",
        "shapes-pose",
        {},
        ("keypoints/AP", "keypoints/AP50", "keypoints/AP75", "bbox/AP", "bbox/AP50"),
    ),
}
TASK_ROWS = {"masks": ("roi_align", "roi_pool"), "keypoints": ("keypoint_rcnn",)}

#: The settings every row starts from: the recipes' defaults when the tables in BENCHMARKS.md
#: were measured (SGD at lr 0.02, from scratch, the two-layer box head, keypoint heatmaps over
#: the box), so that their commands keep giving those tables now that the recipes default to
#: AdamW, the conv box head and a pretrained trunk; ``--set`` changes any of them.
PINNED = {
    "optimizer": "sgd",
    "lr": "0.02",
    "model.box_head": "mlp",
    "model.pretrained": "none",
}
PINNED_KEYPOINTS = {"model.keypoint_roi_expansion": "1.0"}


def _parse_sets(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--set {item!r} is not of the form key=value")
        extra[key.strip()] = value.strip()
    return extra


def _check_applied(run: Path, settings: dict[str, str]) -> None:
    """Fail unless every ``--set`` setting is in the run's ``config.json`` as given."""
    config = json.loads((run / "config.json").read_text())
    for key, text in settings.items():
        expected = json.loads(json.dumps(parse_value(text)))  # tuples become lists, as stored
        if key.startswith("model."):
            name = key.removeprefix("model.")
            stored = config["model"]["kwargs"].get(name, config["model"].get(name))
        else:
            stored = config["train"].get(key)
        if stored != expected:
            raise SystemExit(f"--set {key}={text} was not applied: config.json has {stored!r}")


def _train_seconds(run: Path) -> tuple[float, int]:
    """Seconds spent in training steps (from ``metrics.jsonl``) and the number of steps."""
    seconds, previous = 0.0, 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "train":
            seconds += record["sec_per_step"] * (record["step"] - previous)
            previous = record["step"]
    return seconds, previous


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _merge_results(out: Path, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add ``rows`` to ``OUT/results.json`` (rows of earlier runs are kept) and return it."""
    path = out / "results.json"
    with _locked(out / "results.json.lock"):
        summary = json.loads(path.read_text()) if path.is_file() else {}
        summary["benchmark"] = "instance_quality_shapes"
        summary.setdefault("results", {}).update(rows)
        budgets = {  # steps, batch size and training images (shapes or shapes-pose alike)
            (row["steps"], row["batch_size"], row["train_data"].partition(":")[2])
            for row in summary["results"].values()
        }
        summary["same_budget"] = len(budgets) == 1
        tmp = path.with_name(f"results.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASK_ROWS), default="masks")
    parser.add_argument(
        "--rows", default=None, help="comma-separated (default: the task's): " + ", ".join(ROWS)
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="default: runs/bench_<task>")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        help="extra key=value for every row, e.g. model.width=16 or lr=0.01",
    )
    args = parser.parse_args()
    rows = args.rows.split(",") if args.rows else list(TASK_ROWS[args.task])
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    out = args.out or Path("runs") / f"bench_{'mask_rcnn' if args.task == 'masks' else 'keypoints'}"
    extra = _parse_sets(parser, args.sets)
    torch.set_num_threads(args.threads)
    results = {}
    for row in rows:
        recipe, generator, row_settings, metric_keys = ROWS[row]
        train = f"{generator}:image_size={args.image_size},num_images={args.train_images}"
        val = f"{generator}:image_size={args.image_size},num_images={args.val_images}"
        settings = {
            **PINNED,
            **(PINNED_KEYPOINTS if recipe == "keypoint_rcnn" else {}),
            **row_settings,
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
            out=out / row,
            max_steps=args.steps,
            overrides=settings,
        )
        seconds = time.perf_counter() - started
        _check_applied(out / row, settings)
        train_seconds, steps = _train_seconds(out / row)
        results[row] = {
            "recipe": recipe,
            **{key: round(metrics[key], 4) for key in metric_keys},
            "train_seconds": round(train_seconds, 1),
            "sec_per_step": round(train_seconds / max(steps, 1), 3),
            "train_and_eval_seconds": round(seconds, 1),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "train_data": train,
            "val_data": val + " (val split)",
            "threads": args.threads,
            "settings": settings,
        }
        print(json.dumps({row: results[row]}), flush=True)
    print(json.dumps(_merge_results(out, results), indent=2))


if __name__ == "__main__":
    main()
