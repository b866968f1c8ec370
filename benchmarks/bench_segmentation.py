"""FCN-32s vs 16s vs 8s on ``shapes``, and dense-CRF post-processing of their outputs.

Every FCN trains from scratch on this machine's CPU with the same step budget, batch size and
training images (recipes ``fcn32s``/``fcn16s``/``fcn8s``, small backbone), then is scored on
the same 500 validation images: mean IoU and boundary F (2-px band). Each trained model is
then scored again with the dense CRF as a post-processor, once with `dense_crf`'s defaults
(DeepLab/pydensecrf values for ~500x375 images) and once with parameters chosen by a small
grid search on training images (never on the validation images). Prints one JSON object and
writes it to OUT/results.json.

    python benchmarks/bench_segmentation.py --steps 4000 --out runs/bench_segmentation
    python benchmarks/bench_segmentation.py --rows fcn8s --steps 200 --out runs/quick

The same numbers from the command line, for one run:

    structvision eval runs/bench_segmentation/fcn8s --data shapes:num_images=500
    structvision eval runs/bench_segmentation/fcn8s --data shapes:num_images=500 --crf
    structvision eval runs/bench_segmentation/fcn8s --data shapes:num_images=500 \\
        --crf-set bilateral_sxy=10 --crf-set bilateral_srgb=20 ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from structvision.data.spec import build_dataset
from structvision.engine import evaluate
from structvision.models.segmentation.postprocess import CRFRefiner
from structvision.tasks import run_eval, run_train
from structvision.tasks.run import load_trained_model

ROWS = ("fcn32s", "fcn16s", "fcn8s")
# Candidate CRF parameters for 128x128 images; the grid is small on purpose.
GRID = {
    "bilateral_sxy": (5.0, 10.0, 20.0, 40.0),
    "bilateral_srgb": (5.0, 13.0, 30.0),
    "bilateral_weight": (3.0, 10.0),
}
FIXED = {"gaussian_sxy": 1.0, "gaussian_weight": 3.0, "iterations": 5}
KEYS = ("miou", "boundary_f", "pixel_accuracy", "mean_class_accuracy")


#: The settings the FCN rows start from: the recipes' defaults when these tables were measured
#: (SGD at lr 0.01, batch norm, from scratch), so that the commands in BENCHMARKS.md keep giving
#: them now that the recipes default to AdamW and the pretrained group-norm trunk.
PINNED = {"optimizer": "sgd", "lr": "0.01", "model.norm": "batch", "model.pretrained": "none"}


def _score(model, recipe, dataset, crf: dict | None) -> dict[str, float]:
    refined = CRFRefiner(model, **crf).eval() if crf is not None else model
    metrics = evaluate(
        model=refined,
        dataset=dataset,
        evaluator=recipe.build_evaluator(dataset),
        collate_fn=recipe.collate_fn,
    )
    return {key: round(metrics[key], 4) for key in KEYS}


def _tune(run: Path, tune_data: str) -> tuple[dict, dict]:
    """The grid point with the best mIoU + boundary F on ``tune_data`` (training images)."""
    recipe, model, _ = load_trained_model(run)
    dataset = build_dataset(tune_data, split="train")
    best, best_score, table = None, -1.0, {}
    for values in itertools.product(*GRID.values()):
        params = {**dict(zip(GRID, values, strict=True)), **FIXED}
        metrics = _score(model, recipe, dataset, params)
        table[json.dumps(params)] = metrics
        score = metrics["miou"] + metrics["boundary_f"]
        if score > best_score:
            best, best_score = params, score
    plain = _score(model, recipe, dataset, None)
    return best, {"without_crf": plain, "grid": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--tune-images", type=int, default=100)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS)
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_segmentation"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--skip-training", action="store_true", help="score existing OUT/<row> runs"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = f"shapes:num_images={args.train_images}"
    val = f"shapes:num_images={args.val_images}"
    tune = f"shapes:num_images={args.tune_images}"
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text())["results"] if results_file.is_file() else {}
    for row in args.rows.split(","):
        run = args.out / row
        started = time.perf_counter()
        if not args.skip_training:
            settings = {
                **PINNED,
                "batch_size": str(args.batch_size),
                "eval_every": "0",
                "progress": "false",
            }
            run_train(
                row, data=train, val_data=val, out=run, max_steps=args.steps, overrides=settings
            )
        train_seconds = time.perf_counter() - started
        crf_params, tuning = _tune(run, tune)
        timings = {}
        scores = {}
        for name, crf in (("without_crf", None), ("crf_default", {}), ("crf_tuned", crf_params)):
            started = time.perf_counter()
            metrics = run_eval(run, data=val, crf=crf)
            timings[name] = round((time.perf_counter() - started) / args.val_images * 1000, 1)
            scores[name] = {key: round(metrics[key], 4) for key in KEYS}
        results[row] = {
            **scores,
            "crf_tuned_parameters": crf_params,
            "ms_per_image": timings,
            "train_seconds": round(train_seconds, 1),
            "tuning_on_train_images": tuning,
        }
        print(
            json.dumps(
                {row: {k: v for k, v in results[row].items() if k != "tuning_on_train_images"}}
            ),
            flush=True,
        )
    summary = {
        "benchmark": "fcn_and_crf_shapes",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_data": train,
        "val_data": val + " (val split)",
        "tune_data": tune + " (train split)",
        "threads": args.threads,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
