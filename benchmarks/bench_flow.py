"""Optical flow on held-out ``world-flow``: the learned models trained here from scratch against
OpenCV's classical methods.

Rows:

- ``raft_small``, ``flownet_s``: ``structvision train RECIPE --data world-flow:num_images=4000,
  cache=true`` at the recipe's defaults (``--steps`` to change the budget), then scored on
  ``--val-pairs`` held-out pairs;
- ``dis`` (DIS, medium preset), ``farneback``, ``tvl1``: no training, scored on the same pairs.

For each: ``epe`` (every pixel; the generator's flow is exact everywhere), ``epe_noc`` /
``epe_occ`` (pixels visible / hidden in frame 2), ``px1``/``px3``/``px5``, ``fl_all`` (percent),
milliseconds per pair at inference (one process, ``--threads`` threads, batch 1) and, for the
trained rows, the training minutes and steps. Prints one JSON line per row and merges the rows
into OUT/results.json.

    python benchmarks/bench_flow.py --rows dis,farneback,tvl1
    python benchmarks/bench_flow.py --rows raft_small,flownet_s --out runs/bench_flow
    python benchmarks/bench_flow.py --rows raft_small --resume   # after a SIGTERM
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structvision.data.spec import build_dataset
from structvision.engine.signals import TrainingInterrupted
from structvision.evaluation.flow import FlowEvaluator
from structvision.models.flow import ClassicalFlow
from structvision.tasks import load_trained_model, run_train

LEARNED = ("raft_small", "flownet_s")
CLASSICAL = ("dis", "farneback", "tvl1")


def _score(model, dataset, *, limit_s: float | None = None) -> dict[str, float]:
    """Metrics and milliseconds per pair of ``model`` (eval mode) over ``dataset``."""
    evaluator = FlowEvaluator()
    device = next(model.parameters(), torch.empty(0)).device
    seconds = 0.0
    with torch.inference_mode():
        for image, target in dataset:
            started = time.perf_counter()
            prediction = model(image[None].to(device), target["image_2"][None].to(device))
            seconds += time.perf_counter() - started
            flow = prediction[0]["flow"].float().cpu()
            evaluator.update([target], [{"flow": flow}])
    metrics = {key: round(value, 4) for key, value in evaluator.compute().items()}
    return {**metrics, "ms_per_pair": round(1000 * seconds / len(dataset), 1)}


def _row(name: str, args: argparse.Namespace, dataset) -> dict:
    if name in CLASSICAL:
        preset = {"preset": "medium"} if name == "dis" else {}
        return {"method": name, **preset, **_score(ClassicalFlow(name, **preset), dataset)}
    out = args.out / name
    started = time.perf_counter()
    if args.resume and (out / "checkpoints").is_dir():  # the run keeps its own settings
        run_train(name, out=out, resume=True, overrides={"progress": "false"})
        minutes = None  # only this part's wall time would be known
    else:
        run_train(
            name,
            data=args.train_data,
            val_data=f"world-flow:num_images={args.val_pairs}",
            out=out,
            max_steps=args.steps,
            overrides={"progress": "false"},
        )
        minutes = round((time.perf_counter() - started) / 60, 1)
    config = json.loads((out / "config.json").read_text())
    _, model, _ = load_trained_model(out)
    return {
        "recipe": name,
        "steps": config["train"]["max_steps"],
        "train_minutes": minutes,
        **_score(model, dataset),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", required=True, help="comma-separated: " + ", ".join(LEARNED + CLASSICAL)
    )
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--val-pairs", type=int, default=500)
    parser.add_argument(
        "--train-data",
        default="world-flow:num_images=4000,cache=true",
        help="training SPEC (default: 4000 pairs rendered once into the render cache, so that "
        "later epochs read instead of ray casting)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_flow"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue trained rows whose run was stopped (SIGTERM) from their last checkpoint",
    )
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in LEARNED + CLASSICAL]
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(LEARNED + CLASSICAL)}")
    torch.set_num_threads(args.threads)
    held_out = build_dataset(f"world-flow:num_images={args.val_pairs}", split="val")
    dataset = [held_out[index] for index in range(len(held_out))]  # rendered once for all rows
    args.out.mkdir(parents=True, exist_ok=True)
    for name in rows:
        try:
            result = _row(name, args, dataset)
        except TrainingInterrupted as stopped:
            raise SystemExit(f"row {name}: {stopped}; continue it with --resume") from None
        print(json.dumps({name: result}), flush=True)
        path = args.out / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[name] = result
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
