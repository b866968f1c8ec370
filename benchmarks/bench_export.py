"""Exported models against PyTorch eager: file size, metric and speed per format.

Rows ``zoo``: every exportable zoo model on 200 held-out samples of its generator (100 for
depth and flow) through `structvision.export.benchmark.benchmark` (what ``structvision
benchmark`` prints). Rows ``resnet50``: torchvision's ``fasterrcnn_resnet50_fpn`` and
``maskrcnn_resnet50_fpn`` architectures (random weights: speed only) at 800 px, converted to
ours and saved as checkpoints, timed as torchvision eager, ours eager and ours on ONNX Runtime
(and, with ``--openvino``, the same ONNX graphs on OpenVINO; with ``--int8``, ours quantised to
int8 on ONNX Runtime, calibrated on ``shapes`` images, and on OpenVINO too with both; with ``--torchscript``, ours traced to
TorchScript). All of them are loaded first and then timed in alternating rounds
(`structvision.export.benchmark.alternating_milliseconds`), each keeping its best round, so
that a change of load on a shared machine falls on every format alike.

    python benchmarks/bench_export.py --rows zoo --threads 1 --out runs/bench_export
    python benchmarks/bench_export.py --rows resnet50 --threads 2 --out runs/bench_export
    python benchmarks/bench_export.py --rows zoo --formats torch,onnx,int8,openvino-int8 \
        --models fcn8s_shapes,faster_rcnn_shapes,mask_rcnn_shapes --out runs/bench_export_int8
    python benchmarks/bench_export.py --rows resnet50 --int8 --out runs/bench_export_int8
    python benchmarks/bench_export.py --rows resnet50 --openvino --int8 --rounds 3 --images 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ZOO = {
    "fcn8s_shapes": "shapes:num_images=200",
    "faster_rcnn_shapes": "shapes:num_images=200",
    "mask_rcnn_shapes": "shapes:num_images=200",
    "keypoint_rcnn_shapes_pose": "shapes-pose:num_images=200",
    "monodepth_world": "world-stereo:num_images=100",
    "flownet_s_world": "world-flow:num_images=100",
    "raft_small_world": "world-flow:num_images=100",
}

RESNET50 = {"faster_rcnn": "fasterrcnn_resnet50_fpn", "mask_rcnn": "maskrcnn_resnet50_fpn"}


def _zoo_rows(args: argparse.Namespace) -> dict:
    from structvision.export.benchmark import benchmark

    results = {}
    models = args.models.split(",") if args.models else list(ZOO)
    for name in models:
        data = ZOO[name]
        rows = benchmark(
            f"zoo:{name}",
            data=data,
            threads=args.threads,
            speed_images=10,
            formats=tuple(args.formats.split(",")),
        )
        results[name] = {"data": data, "rows": [row.as_dict() for row in rows]}
        print(json.dumps({name: results[name]["rows"]}), flush=True)
    return results


def _resnet50_rows(args: argparse.Namespace) -> dict:
    import torchvision

    from structvision.convert import from_torchvision
    from structvision.engine.checkpoint import save_state_dict
    from structvision.export import export_model
    from structvision.export.benchmark import alternating_milliseconds
    from structvision.inference import load
    from structvision.tasks import load_trained_model

    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 480, 640, generator=generator) for _ in range(args.images)]
    results = {}
    chosen = args.resnet50.split(",") if args.resnet50 else list(RESNET50)
    for recipe, name in RESNET50.items():
        if recipe not in chosen:
            continue
        torch.manual_seed(0)
        theirs = getattr(torchvision.models.detection, name)(
            weights=None, weights_backbone=None
        ).eval()
        checkpoint = args.out / f"{name}_checkpoint"
        checkpoint.mkdir(parents=True, exist_ok=True)
        state = {  # our ResNet trunk freezes its batch norms: no batch counters
            key: value
            for key, value in from_torchvision(theirs).state_dict().items()
            if not key.endswith("num_batches_tracked")
        }
        save_state_dict(state, checkpoint / "model.safetensors")
        kwargs = {"arch": "resnet50_fpn", "num_classes": 91}
        config = {
            "step": 0,
            "model": {"recipe": recipe, "kwargs": kwargs, "class_names": ["bg", *range(1, 91)]},
            "train": None,
        }
        (checkpoint / "config.json").write_text(json.dumps(config, default=str) + "\n")
        ours = load_trained_model(checkpoint)[1].cpu()
        exported = args.out / f"{name}_onnx"
        # no --check: with random weights every score is about 1/91, so float rounding
        # reorders detections; the trained models' rows check the outputs
        report = export_model(checkpoint, out=exported, threads=args.threads)
        models = {
            "torchvision": theirs,
            "ours": ours,
            "onnx": load(exported, threads=args.threads),
        }
        if args.openvino:
            models["openvino"] = load(exported, backend="openvino", threads=args.threads)
        if args.int8:
            quantised = args.out / f"{name}_int8"
            export_model(
                checkpoint,
                out=quantised,
                threads=args.threads,
                int8=True,
                calibration_images=args.calibration_images,
            )
            models["int8"] = load(quantised, threads=args.threads)
            if args.openvino:
                models["openvino-int8"] = load(quantised, backend="openvino", threads=args.threads)
        if args.torchscript:
            scripted = args.out / f"{name}_torchscript"
            export_model(checkpoint, out=scripted, threads=args.threads, format="torchscript")
            models["torchscript"] = load(scripted, threads=args.threads)
        rounds = alternating_milliseconds(models, images, args.rounds)
        times = {kind: min(values) for kind, values in rounds.items()}  # each one's best round
        results[name] = {
            "image": "640x480 (resized to 800x1066 by the model)",
            "ms_per_image": {k: round(v, 1) for k, v in times.items()},
            "ms_per_image_each_round": {k: [round(v, 1) for v in vs] for k, vs in rounds.items()},
            **{
                f"{kind}_over_torchvision": round(times["torchvision"] / times[kind], 3)
                for kind in times
                if kind != "torchvision"
            },
            "onnx_mb": round(report.file_bytes / 1e6, 1),
            "largest_differences (random weights)": report.differences,
        }
        print(json.dumps({name: results[name]}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", required=True, help="comma-separated: zoo, resnet50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=3, help="resnet50: images timed")
    parser.add_argument("--rounds", type=int, default=2, help="resnet50: timed rounds")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_export"))
    parser.add_argument("--models", default=None, help=f"zoo: some of {', '.join(ZOO)}")
    parser.add_argument(
        "--formats", default="torch,onnx,openvino", help="zoo: structvision benchmark's formats"
    )
    parser.add_argument("--int8", action="store_true", help="resnet50: also time int8")
    parser.add_argument(
        "--openvino", action="store_true", help="resnet50: also time the ONNX graphs on OpenVINO"
    )
    parser.add_argument(
        "--torchscript", action="store_true", help="resnet50: also time a TorchScript export"
    )
    parser.add_argument(
        "--calibration-images", type=int, default=16, help="resnet50 --int8: calibration images"
    )
    parser.add_argument(
        "--resnet50", default=None, help="resnet50: some of faster_rcnn, mask_rcnn (default both)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {"zoo": _zoo_rows, "resnet50": _resnet50_rows}
    for row in args.rows.split(","):
        if row not in rows:
            parser.error(f"--rows: unknown {row!r}; choose from {sorted(rows)}")
        path = args.out / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[row] = rows[row](args)
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
