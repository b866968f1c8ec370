"""Monocular depth on held-out ``world-stereo``: Monodepth, its ablation, the supervised bound and
two baselines; inference speed, renderer speed and the data-time share of a training step.

Rows (all evaluated with monodepth2's seven metrics on the same validation pairs):

* ``monodepth``: trained on stereo pairs, left-right consistency on (the paper's model);
* ``monodepth_no_lr``: the same without the left-right consistency loss (the paper's ablation);
* ``supervised``: the same network trained on the true disparities (an upper bound);
* ``sgbm``: OpenCV semi-global matching on the two views (a two-view method; scored on the
  pixels it fills, ``density`` says how many);
* ``mean``: the per-pixel mean depth of training images, whatever the input.

Every trained row uses the same steps, batch, images and seed. Prints one JSON object (and
writes it to OUT/results.json).

    python benchmarks/bench_depth.py --steps 1500 --out runs/bench_depth
    python benchmarks/bench_depth.py --rows sgbm,mean --val-images 100     # baselines only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structvision.data.spec import build_dataset
from structvision.evaluation import DepthEvaluator
from structvision.tasks import load_trained_model, run_train

TRAINED_ROWS = {
    "monodepth": {},
    "monodepth_no_lr": {"model.lr_consistency": "false"},
    "supervised": {"model.supervised": "true"},
}
ROWS = (*TRAINED_ROWS, "sgbm", "mean")


def _train_row(name: str, args: argparse.Namespace, train: str, val: str) -> dict:
    out = args.out / name
    started = time.perf_counter()
    overrides = {
        **TRAINED_ROWS[name],
        "batch_size": str(args.batch_size),
        "eval_every": "0",
        "checkpoint_every": str(max(args.steps // 4, 1)),
        "log_every": "20",
        "progress": "false",
    }
    if (out / "checkpoints").is_dir():
        metrics = run_train("monodepth", out=out, max_steps=args.steps, resume=True)
    else:
        metrics = run_train(
            "monodepth",
            data=train,
            val_data=val,
            out=out,
            max_steps=args.steps,
            seed=args.seed,
            overrides=overrides,
        )
    minutes = (time.perf_counter() - started) / 60
    lines = [
        json.loads(line)
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    step_seconds = sum(r["sec_per_step"] for r in lines) / len(lines)
    data_seconds = sum(r.get("data_sec_per_step", 0.0) for r in lines) / len(lines)
    # the first epoch renders the cache; the steady state reads it
    later = lines[len(lines) // 2 :]
    later_share = sum(r.get("data_sec_per_step", 0.0) for r in later) / sum(
        r["sec_per_step"] for r in later
    )
    return {
        **metrics,
        "train_minutes": minutes,
        "sec_per_step": step_seconds,
        "data_share": data_seconds / step_seconds,
        "data_share_second_half": later_share,
    }


def _inference_speed(run: Path, height: int, width: int, rounds: int = 30) -> float:
    _, model, _ = load_trained_model(run)
    model = model.cpu().eval()
    image = torch.rand(1, 3, height, width)
    with torch.no_grad():
        for _ in range(5):
            model(image)
        started = time.perf_counter()
        for _ in range(rounds):
            model(image)
    return rounds / (time.perf_counter() - started)


def _baseline_row(name: str, val: str, train: str, train_images: int) -> dict:
    from structvision.models.depth import MeanDepthBaseline, SGBMStereo

    dataset = build_dataset(val, split="val")
    if name == "sgbm":
        method = SGBMStereo(num_disparities=64)
        evaluator = DepthEvaluator(valid_key="depth_valid", pred_valid_key="valid")
    else:
        train_data = build_dataset(train, split="train")
        count = min(train_images, 500)
        method = MeanDepthBaseline().fit(train_data[i] for i in range(count))
        evaluator = DepthEvaluator(valid_key="depth_valid")
    started = time.perf_counter()
    for index in range(len(dataset)):
        image, target = dataset[index]
        if name == "sgbm":
            prediction = method.predict(image[None], [target])  # the right image is in target
        else:
            prediction = method.predict(image[None])
        evaluator.update([target], prediction)
    seconds = time.perf_counter() - started
    return {**evaluator.compute(), "images_per_sec": len(dataset) / seconds}


def _renderer_speed(height: int, width: int, count: int = 20) -> dict:
    dataset = build_dataset(f"world-stereo:num_images={count},height={height},width={width}")
    started = time.perf_counter()
    for index in range(count):
        dataset[index]
    seconds = time.perf_counter() - started
    return {"stereo_pairs_per_sec": count / seconds, "frames_per_sec": 2 * count / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS)
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_depth"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of every trained row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    train = f"world-stereo:num_images={args.train_images},cache=true"
    val = f"world-stereo:num_images={args.val_images},cache=true"
    previous = args.out / "results.json"  # rows run earlier into the same folder are kept
    results: dict = json.loads(previous.read_text()) if previous.is_file() else {}
    results |= {
        "setup": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "train_images": args.train_images,
            "val_images": args.val_images,
            "threads": args.threads,
            "seed": args.seed,
            "image_size": [128, 256],
        },
        "renderer": _renderer_speed(128, 256),
    }
    for row in rows:
        if row in TRAINED_ROWS:
            results[row] = _train_row(row, args, train, val)
            results[row]["inference_images_per_sec"] = _inference_speed(args.out / row, 128, 256)
        else:
            results[row] = _baseline_row(row, val, train, args.train_images)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({row: results[row]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
