"""Single-object tracking on held-out ``world-track`` sequences: SINT (with and without box
regression, and the query-updating counter-example), SiamFC and OpenCV's CSRT, KCF and MIL.

Rows of SINT: ``sint`` (the tracker's defaults: the learned regression head refines each box
when the network has one), ``sint_plain`` (no refinement), ``sint_regression`` (the paper's
first-frame ridge regression instead of the head), ``sint_update`` (the query replaced by
every output).

One-pass evaluation (got10k's conventions, ``TrackingEvaluator``): success AUC, precision at
20 px, normalised precision, GOT-10k's AO, frames per second (one process, ``--threads``),
overall and per OTB attribute. The sequences are rendered once and shared by every tracker.

    python benchmarks/bench_tracking.py --rows csrt,kcf,mil --sequences 60
    python benchmarks/bench_tracking.py --rows sint,sint_regression,sint_update,siamfc \
        --sint runs/sint --siamfc runs/siamfc --sequences 60

Tracker settings are chosen on other sequences than the held-out ones (``--seed 1``): each
``--sint-variants`` entry adds a row ``sint:NAME`` of the SINT tracker with those settings:

    python benchmarks/bench_tracking.py --rows sint --sint zoo:sint_world --seed 1 \
        --sequences 20 --sint-variants '{"two_passes": {"refine_steps": 2}}'

and each ``--siamfc-variants`` entry a row ``siamfc:NAME`` of the SiamFC tracker.

Every row's per-sequence success AUC is kept in ``results.json``; each row after the first is
compared with the first on the same sequences: the mean of the per-sequence differences with
its standard error, and on how many sequences the row is ahead. Sequences differ far more than
trackers do, so a difference smaller than about two standard errors is not one to choose by.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structvision.data.spec import build_dataset
from structvision.evaluation.tracking import TrackingEvaluator
from structvision.tasks.tracking import tracker_for
from structvision.viz import plot_tracking_curves

ROWS = ("sint", "sint_plain", "sint_regression", "sint_update", "siamfc", "csrt", "kcf", "mil")


def _tracker(name: str, args: argparse.Namespace):
    if name.startswith("sint:"):
        return tracker_for(args.sint, **args.sint_variants[name.removeprefix("sint:")])
    if name.startswith("siamfc:"):
        return tracker_for(args.siamfc, **args.siamfc_variants[name.removeprefix("siamfc:")])
    if name in ("csrt", "kcf", "mil"):
        return tracker_for(f"opencv:{name}")
    if name.startswith("sint"):
        if args.sint is None:
            raise SystemExit(f"--rows {name} needs --sint RUN")
        settings = {
            "box_regression": name == "sint_regression",
            "learned_regression": name not in ("sint_plain", "sint_regression"),
            "update_query": name == "sint_update",
        }
        return tracker_for(args.sint, **settings)
    if args.siamfc is None:
        raise SystemExit("--rows siamfc needs --siamfc RUN")
    return tracker_for(args.siamfc)


def paired_difference(values: list[float], reference: list[float]) -> dict[str, float]:
    """Mean of ``values - reference`` (per sequence), its standard error and the share of
    sequences where ``values`` is ahead."""
    differences = torch.tensor(values, dtype=torch.float64) - torch.tensor(
        reference, dtype=torch.float64
    )
    error = differences.std() / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
    return {
        "mean": round(float(differences.mean()), 4),
        "standard_error": round(float(error), 4),
        "ahead": round(float((differences > 0).double().mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", required=True, help="comma-separated: " + ", ".join(ROWS))
    parser.add_argument("--sequences", type=int, default=60)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--sint", default=None, help="a sint run, checkpoint or zoo:NAME")
    parser.add_argument("--siamfc", default=None, help="a siamfc run, checkpoint or zoo:NAME")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tracking"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=0, help="the sequences' seed (0: the held-out set reported)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="a file keeping the rendered sequences (float32, about 40 MB each) for later runs",
    )
    parser.add_argument(
        "--sint-variants",
        type=json.loads,
        default={},
        help='JSON {"NAME": {SETTING: VALUE}}: adds a row sint:NAME per entry (SINTTracker settings)',
    )
    parser.add_argument(
        "--siamfc-variants",
        type=json.loads,
        default={},
        help='JSON {"NAME": {SETTING: VALUE}}: adds a row siamfc:NAME per entry (SiamFCTracker settings)',
    )
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    if args.sint_variants and args.sint is None:
        parser.error("--sint-variants needs --sint RUN")
    if args.siamfc_variants and args.siamfc is None:
        parser.error("--siamfc-variants needs --siamfc RUN")
    rows += [f"sint:{name}" for name in args.sint_variants]
    rows += [f"siamfc:{name}" for name in args.siamfc_variants]
    torch.set_num_threads(args.threads)
    spec = f"world-track:num_images={args.sequences},num_frames={args.frames}"
    spec += f",seed={args.seed}" if args.seed else ""
    started = time.perf_counter()
    if args.cache is not None and args.cache.is_file():
        cached = torch.load(args.cache, weights_only=True)
        if cached["spec"] != spec:
            parser.error(f"--cache {args.cache} holds {cached['spec']}, not {spec}")
        sequences = cached["sequences"]
        print(f"read {len(sequences)} sequences from {args.cache}", flush=True)
    else:
        dataset = build_dataset(spec, split="val")
        sequences = [dataset[index] for index in range(len(dataset))]
        print(
            f"rendered {len(sequences)} sequences in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"spec": spec, "sequences": sequences}, args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    curves, per_sequence = {}, {}
    for name in rows:
        evaluator = TrackingEvaluator()
        tracker = _tracker(name, args)  # init() starts each sequence afresh
        for frames, target in sequences:
            boxes, seconds = tracker.track(frames, target["boxes"][0])
            evaluator.update([target], [{"boxes": boxes, "seconds_per_frame": seconds}])
        metrics = {key: round(value, 4) for key, value in evaluator.compute().items()}
        curves[name] = evaluator.curves()
        per_sequence[name] = [sum(r["success"]) / len(r["success"]) for r in evaluator.records]
        result = {"data": spec, **metrics}
        if len(per_sequence) > 1:
            result[f"against {rows[0]}"] = paired_difference(
                per_sequence[name], per_sequence[rows[0]]
            )
        result["per_sequence_auc"] = [round(value, 4) for value in per_sequence[name]]
        print(
            json.dumps({name: {k: v for k, v in result.items() if k != "per_sequence_auc"}}),
            flush=True,
        )
        path = args.out / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[name] = result
        path.write_text(json.dumps(results, indent=2) + "\n")
    plot = plot_tracking_curves(curves, args.out / "ope.png", title="(world-track, OPE)")
    print(f"success and precision plots: {plot}")


if __name__ == "__main__":
    main()
