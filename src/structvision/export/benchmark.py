"""``structvision benchmark``: one model in each format — its file size, its metric on a
data set and its speed — in one table.

    from structvision.export.benchmark import benchmark
    rows = benchmark("zoo:fcn8s_shapes", data="shapes:num_images=100", formats=("torch", "onnx"))

Per format: the recipe's metrics on ``data`` (every image), then the milliseconds per image
on the first ``speed_images`` of them, one image per call, at ``threads`` threads (PyTorch's
intra-op threads, ONNX Runtime's intra-op threads), and the ratio of images per second to
PyTorch eager. The formats are timed in alternating rounds, each format's pass over the images
in turn, the order rotated every round, and each keeps its fastest round: a change of load on
a shared machine then hits every format alike instead of whichever was being timed (timed one
after another, the same command moved the ratios by a third here). ``onnx`` exports the model
first (into ``export_dir``, or a temporary folder), or takes an export folder given as the
model itself; ``openvino`` runs
the same ONNX file on OpenVINO's CPU plugin. ``int8`` exports an int8 model (ONNX Runtime's
static quantisation calibrated on the model's training data, :mod:`structvision.export.quantize`)
and runs it on ONNX Runtime; ``openvino-int8`` runs that one on OpenVINO. ``torchscript``
exports a traced TorchScript archive and runs it with ``torch.jit.load``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BENCHMARK_FORMATS",
    "HEADLINE_METRICS",
    "BenchmarkRow",
    "alternating_milliseconds",
    "benchmark",
]

#: Formats `benchmark` compares.
BENCHMARK_FORMATS = ("torch", "onnx", "openvino", "int8", "openvino-int8", "torchscript")

#: The metric shown first for each recipe (the JSON holds every metric).
HEADLINE_METRICS = {
    "faster_rcnn": "bbox/AP",
    "fast_rcnn": "bbox/AP",
    "mask_rcnn": "segm/AP",
    "keypoint_rcnn": "keypoints/AP",
    "fcn32s": "miou",
    "fcn16s": "miou",
    "fcn8s": "miou",
    "monodepth": "abs_rel",
    "normals": "mean",
    "intrinsic": "lmse",
    "raft_small": "epe",
    "flownet_s": "epe",
}


@dataclass
class BenchmarkRow:
    """One format's measurements."""

    format: str
    file_mb: float
    metric: str
    value: float
    ms_per_image: float
    images_per_second: float
    #: images per second over PyTorch eager's (1.0 for torch itself; None without a torch row)
    speedup: float | None
    threads: int
    metrics: dict[str, float]
    #: milliseconds per image of every timing round (``ms_per_image`` is the fastest)
    ms_rounds: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weights_mb(source: str | Path) -> float:
    from structvision.engine import resolve_checkpoint
    from structvision.zoo import is_zoo_name, zoo_path

    folder = resolve_checkpoint(zoo_path(source) if is_zoo_name(source) else source)
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6


@torch.no_grad()
def alternating_milliseconds(
    models: dict[str, Any], inputs: list[Any], rounds: int, clock=time.perf_counter
) -> dict[str, list[float]]:
    """Milliseconds per image of each of ``models`` (``model([input])`` over ``inputs``) in
    every one of ``rounds`` rounds, after one warm-up call per model and input. In each round
    every model runs its pass in turn, starting one model later than the round before, so
    that a change of machine load falls on all of them alike."""
    if rounds < 1 or not inputs:
        raise ValueError(f"need at least one round and one input, got {rounds} and {len(inputs)}")
    names = list(models)
    for name in names:
        for given in inputs:
            models[name]([given])
    timings: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            started = clock()
            for given in inputs:
                models[name]([given])
            timings[name].append(1000 * (clock() - started) / len(inputs))
    return timings


def benchmark(
    source: str | Path,
    *,
    data: str,
    formats: tuple[str, ...] = BENCHMARK_FORMATS,
    threads: int = 2,
    speed_images: int = 10,
    rounds: int = 3,
    export_dir: str | Path | None = None,
    exported: str | Path | None = None,
) -> list[BenchmarkRow]:
    """Measure the model of ``source`` in each of ``formats`` (module docstring), timed in
    ``rounds`` alternating rounds; ``exported`` (an export folder of the same model) is used
    for ``onnx`` instead of exporting again."""
    from structvision.data.spec import build_dataset
    from structvision.engine import evaluate
    from structvision.export import EXPORT_RECORD, export_model
    from structvision.inference import is_export
    from structvision.inference import load as load_exported
    from structvision.tasks.run import load_trained_model

    unknown = [name for name in formats if name not in BENCHMARK_FORMATS]
    if unknown or not formats:
        raise ValueError(f"--formats: choose from {list(BENCHMARK_FORMATS)}, got {list(formats)}")
    if len(set(formats)) < len(formats):
        raise ValueError(f"--formats: each format once, got {list(formats)}")
    exported_source = not str(source).startswith("zoo:") and is_export(source)
    if exported_source and "torch" in formats:
        raise ValueError(
            f"{source} is an exported model; benchmark its run or checkpoint to compare with "
            "PyTorch, or pass --formats onnx"
        )
    if exported_source and {"int8", "openvino-int8", "torchscript"} & set(formats):
        raise ValueError(
            f"{source} is an exported model; int8 and TorchScript models are made from a run or "
            "checkpoint"
        )
    torch.set_num_threads(threads)
    recipe, trained, model_config = load_trained_model(source)
    dataset = build_dataset(data, split="val", modality=recipe.data_modality)
    samples = [dataset[i] for i in range(min(speed_images, len(dataset)))]
    inputs = [
        image if recipe.model_input is None else recipe.model_input(image, target)
        for image, target in samples
    ]
    headline = HEADLINE_METRICS.get(recipe.name)
    measured: dict[str, tuple[Any, float, dict]] = {}  # format -> (model, file MB, metrics)
    with tempfile.TemporaryDirectory(prefix="structvision-benchmark-") as scratch:
        for name in formats:
            if name == "torch":
                model = trained.cpu()
                size = _weights_mb(source)
            elif name == "torchscript":
                folder = Path(export_dir or scratch) / "torchscript"
                if not (folder / EXPORT_RECORD).is_file():
                    export_model(source, out=folder, threads=threads, format="torchscript")
                model = load_exported(folder, backend="torchscript", threads=threads)
                size = sum(f.stat().st_size for f in folder.glob("*.pt")) / 1e6
            else:
                int8 = name.endswith("int8")
                if not int8 and (exported_source or exported is not None):
                    folder = Path(source if exported_source else exported)
                else:  # exported once, for onnxruntime and openvino alike
                    folder = Path(export_dir or scratch) / ("int8" if int8 else "onnx")
                    if not (folder / EXPORT_RECORD).is_file():
                        export_model(source, out=folder, threads=threads, int8=int8)
                backend = "openvino" if name.startswith("openvino") else "onnxruntime"
                model = load_exported(folder, backend=backend, threads=threads)
                files = list(folder.glob("*.onnx")) if folder.is_dir() else [folder]
                size = sum(f.stat().st_size for f in files) / 1e6
            evaluator = recipe.evaluator_for(dataset, model_config)
            metrics = evaluate(
                model=model, dataset=dataset, evaluator=evaluator, collate_fn=recipe.collate_fn
            )
            measured[name] = (model, size, metrics)
        timings = alternating_milliseconds(
            {name: model for name, (model, _, _) in measured.items()}, inputs, rounds
        )
    rows: list[BenchmarkRow] = []
    for name, (_, size, metrics) in measured.items():
        milliseconds = min(timings[name])
        key = headline if headline in metrics else next(iter(metrics))
        rows.append(
            BenchmarkRow(
                format=name,
                file_mb=round(size, 2),
                metric=key,
                value=float(metrics[key]),
                ms_per_image=round(milliseconds, 2),
                images_per_second=round(1000 / milliseconds, 2),
                speedup=None,
                threads=threads,
                metrics={k: float(v) for k, v in metrics.items()},
                ms_rounds=[round(value, 2) for value in timings[name]],
            )
        )
    base = next((row for row in rows if row.format == "torch"), None)
    for row in rows:
        if base is not None:
            row.speedup = round(row.images_per_second / base.images_per_second, 3)
    return rows
