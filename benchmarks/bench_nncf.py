"""int8 quantisers compared: ONNX Runtime's static quantisation (what ``export --int8`` does)
against OpenVINO's NNCF, on the same float export, calibration images and runtimes.

For each zoo model: the float ONNX export, the ``--int8`` export (ONNX Runtime's
``quantize_static``), and the float export's graphs quantised by ``nncf.quantize`` (its
default preset) from the same recorded calibration inputs (16 training images; the R-CNNs'
final predictors stay float in both), each run on ONNX Runtime and on OpenVINO. Metric on
held-out images; milliseconds per image on 10 of them, all formats timed in alternating
rounds (best round each). NNCF is not a dependency of structvision: ``pip install nncf``.

    python benchmarks/bench_nncf.py --models fcn8s_shapes,faster_rcnn_shapes --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

DATA = {
    "fcn8s_shapes": "shapes",
    "faster_rcnn_shapes": "shapes",
    "mask_rcnn_shapes": "shapes",
}


def _nncf_copy(float_dir: Path, out: Path, feeds: dict, keep_float: list[str]) -> list[str]:
    import nncf
    import onnx

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(float_dir, out)
    done = []
    for file, recorded in feeds.items():
        if file in keep_float:
            continue
        quantized = nncf.quantize(
            onnx.load(str(float_dir / file)), nncf.Dataset(recorded), subset_size=len(recorded)
        )
        onnx.save(quantized, str(out / file))
        done.append(file)
    return done


def main() -> None:
    from structvision.data.spec import build_dataset
    from structvision.engine import evaluate
    from structvision.export import EXPORT_RECORD, export_model
    from structvision.export.benchmark import HEADLINE_METRICS, alternating_milliseconds
    from structvision.export.quantize import FLOAT_PARTS, calibration_feeds
    from structvision.inference import load
    from structvision.tasks.run import load_trained_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fcn8s_shapes,faster_rcnn_shapes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=200, help="held-out images scored")
    parser.add_argument("--calibration-images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_nncf"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.models.split(","):
        source, data = f"zoo:{name}", DATA[name]
        recipe, trained, config = load_trained_model(source)
        folders = {"float": args.out / f"{name}_float", "ort_int8": args.out / f"{name}_int8"}
        for kind, folder in folders.items():
            if not (folder / EXPORT_RECORD).is_file():
                export_model(
                    source,
                    out=folder,
                    threads=args.threads,
                    int8=kind == "ort_int8",
                    calibration_images=args.calibration_images,
                )
        calibration = build_dataset(
            f"{data}:num_images={args.calibration_images}",
            split="train",
            modality=recipe.data_modality,
        )
        samples = [calibration[i] for i in range(len(calibration))]
        feeds = calibration_feeds(load(folders["float"], threads=args.threads), samples)
        record = json.loads((folders["float"] / EXPORT_RECORD).read_text())
        parts = record.get("parts", {})
        keep = [parts[path]["file"] for path in FLOAT_PARTS if path in parts]
        folders["nncf_int8"] = args.out / f"{name}_nncf"
        quantized = _nncf_copy(folders["float"], folders["nncf_int8"], feeds, keep)

        models = {"torch": trained.cpu().eval()}
        for kind in ("ort_int8", "nncf_int8"):
            for backend in ("onnxruntime", "openvino"):
                models[f"{kind}/{backend}"] = load(
                    folders[kind], backend=backend, threads=args.threads
                )
        dataset = build_dataset(
            f"{data}:num_images={args.images}", split="val", modality=recipe.data_modality
        )
        headline = HEADLINE_METRICS[recipe.name]
        metrics = {}
        for kind, model in models.items():
            evaluator = recipe.evaluator_for(dataset, config)
            scores = evaluate(
                model=model, dataset=dataset, evaluator=evaluator, collate_fn=recipe.collate_fn
            )
            metrics[kind] = round(float(scores[headline]), 4)
        inputs = [dataset[i][0] for i in range(10)]
        rounds = alternating_milliseconds(models, inputs, args.rounds)
        best = {kind: min(values) for kind, values in rounds.items()}
        results[name] = {
            "metric": headline,
            "values": metrics,
            "ms_per_image": {k: round(v, 2) for k, v in best.items()},
            "vs_torch": {k: round(best["torch"] / v, 3) for k, v in best.items()},
            "ms_each_round": {k: [round(v, 2) for v in vs] for k, vs in rounds.items()},
            "nncf_quantized": quantized,
        }
        print(json.dumps({name: results[name]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
