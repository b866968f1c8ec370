"""Make a model-zoo entry from a trained run: ``structvision/zoo/weights/NAME/``.

Writes the run's weights (in half precision unless ``--full-precision``; the large weights in
int8 with a scale per output channel with ``--int8``), its model record,
and ``zoo.json``: task, description, the metrics of the run's final held-out evaluation, the
command that trained it, and a check (the shipped weights' metrics on a small validation SPEC,
re-measured by the test suite). Prints the check metrics of the full-precision and the shipped
weights side by side, so a loss from half precision shows.

    python benchmarks/make_zoo.py runs/bench_depth/monodepth --name monodepth_world \\
        --task "monocular depth" --check-data world-stereo:num_images=20 \\
        --command "python benchmarks/bench_depth.py --steps 1500" --description "..."

A tracker's recorded metrics come from its benchmark (``--metrics-from
runs/bench_tracking/results.json:sint --record-keys success_auc,precision,...``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from structvision.engine.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    default_file_mode,
    save_state_dict,
)
from structvision.tasks import load_trained_model, run_eval
from structvision.zoo import WEIGHTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--check-data", required=True, help="small validation SPEC")
    parser.add_argument("--check-keys", default="", help="comma-separated metric names")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--full-precision", action="store_true")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="store the weights of 2+ dimensions and at least --int8-min-size elements in int8 "
        "with a scale per output channel (a quarter of float32); the rest as otherwise",
    )
    parser.add_argument("--int8-min-size", type=int, default=4096)
    parser.add_argument(
        "--keep-metrics",
        action="store_true",
        help="keep the recorded metrics of the entry this replaces (e.g. re-measured on its "
        "benchmark after a decoding change) instead of the run's final evaluation",
    )
    parser.add_argument(
        "--metrics-from",
        default=None,
        help="FILE:ROW: record that row of a benchmark's results JSON (e.g. bench_tracking.py's "
        "60 held-out sequences) instead of the run's final evaluation",
    )
    parser.add_argument(
        "--record-keys",
        default="",
        help="comma-separated metric names to record from --metrics-from (default: the check keys)",
    )
    args = parser.parse_args()

    _, model, model_config = load_trained_model(args.run)
    record_path = WEIGHTS_DIR / args.name / "zoo.json"
    if args.keep_metrics and not record_path.is_file():
        parser.error(f"--keep-metrics: there is no entry {args.name!r} to keep them from")
    kept = json.loads(record_path.read_text())["metrics"] if args.keep_metrics else None
    if args.record_keys and args.metrics_from is None:
        parser.error("--record-keys chooses among the metrics of --metrics-from; give that too")
    if args.metrics_from is not None:
        if kept is not None:
            parser.error("--keep-metrics and --metrics-from both choose the recorded metrics")
        file_name, _, row = args.metrics_from.rpartition(":")
        if not Path(file_name).is_file():
            parser.error(f"--metrics-from: no benchmark results file {file_name!r}")
        rows = json.loads(Path(file_name).read_text())
        if row not in rows:
            parser.error(
                f"--metrics-from: {file_name} has no row {row!r} (rows: {', '.join(rows)})"
            )
        kept = rows[row]
    # a proposal cache folder is a path on the machine that trained the run: a zoo model
    # computes its proposals (Fast R-CNN's Selective Search) afresh
    model_config["kwargs"].pop("cache_dir", None)
    folder = WEIGHTS_DIR / args.name
    folder.mkdir(parents=True, exist_ok=True)
    state = model.cpu().state_dict()
    int8 = [
        key
        for key, value in state.items()
        if args.int8
        and value.is_floating_point()
        and value.dim() >= 2
        and value.numel() >= args.int8_min_size
    ]
    state = {
        key: value.half()
        if value.is_floating_point() and not args.full_precision and key not in int8
        else value
        for key, value in state.items()
    }
    save_state_dict(state, folder / "model.safetensors", int8=int8)
    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "step": json.loads((args.run / "config.json").read_text())["train"]["max_steps"],
        "model": model_config,
        "train": None,
    }
    (folder / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    os.chmod(folder / "model.safetensors", default_file_mode())  # safetensors writes 0600
    zoo_record = {
        "recipe": model_config["recipe"],
        "task": args.task,
        "description": args.description,
        "metrics": {},
        "command": args.command,
    }
    (folder / "zoo.json").write_text(json.dumps(zoo_record, indent=2) + "\n")  # loadable now
    with tempfile.TemporaryDirectory() as scratch:  # eval's reports and predictions
        full = run_eval(args.run, data=args.check_data, out=Path(scratch) / "full.json")
        shipped = run_eval(
            f"zoo:{args.name}", data=args.check_data, out=Path(scratch) / "shipped.json"
        )
    keys = [k for k in args.check_keys.split(",") if k] or [k for k in shipped if k != "num_images"]
    if args.metrics_from is not None:
        recorded = [k for k in args.record_keys.split(",") if k] or keys
        kept = {k: kept[k] for k in recorded if k in kept}
    if not kept:  # the run's final held-out evaluation
        held_out = json.loads((args.run / "metrics.json").read_text())
        kept = {k: held_out[k] for k in keys if k in held_out}
    zoo_record["metrics"] = kept
    zoo_record["check"] = {
        "data": args.check_data,
        "metrics": {k: shipped[k] for k in keys},
        "tolerance": args.tolerance,
    }
    (folder / "zoo.json").write_text(json.dumps(zoo_record, indent=2) + "\n")
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(
        json.dumps(
            {
                "full_precision": {k: full[k] for k in keys},
                "shipped": zoo_record["check"]["metrics"],
                "size_mb": size,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
