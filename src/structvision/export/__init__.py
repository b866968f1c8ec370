"""Export trained models to ONNX and check the exported file against the model.

    from structvision.export import export_model
    report = export_model("zoo:fcn8s_shapes", out="exported/fcn8s", check=True)
    print(report.differences)           # the largest difference of every output

    structvision export zoo:fcn8s_shapes --format onnx --out exported/fcn8s --check
    structvision export zoo:fcn8s_shapes --out exported/fcn8s-int8 --int8   # and quantised

An export folder holds ``model.onnx`` (``--format openvino``: OpenVINO's IR, ``model.xml`` and
``model.bin``, converted from it; ``--format torchscript``: a TorchScript archive ``model.pt``,
traced from the same graph) and ``export.json`` (the recipe, the trained model's
``model_config``, the graph's inputs and outputs and the host-side settings, see
:mod:`structvision.export.graphs`). It is accepted wherever a run or checkpoint is
(``structvision eval``/``predict``, :func:`structvision.tasks.load_trained_model`), and
:func:`structvision.inference.load` gives a callable with the eval-mode model's contract.

The graph is exported with ``torch.onnx.export(dynamo=True)`` with dynamic batch, height and
width. Export then verifies itself on samples of the model's own built-in data: the eager
model and the exported file on the same images (one of them resized to another size, and,
where the family batches images of mixed sizes, a padded batch of two sizes), and reports the
largest difference of every output. With ``check=True`` a difference beyond the tolerances
(`ExportTolerance`) raises `ExportCheckError`.

TorchScript (``torch.jit``) is deprecated in recent PyTorch releases in favour of
``torch.export``, but it is still what libtorch's C++ ``torch::jit::load`` reads, which is what
a C++ service without Python needs; the archive holds the graph and its weights, frozen, and
the names of its inputs and outputs (``io.json``).

ONNX export needs the ``deploy`` extra (``pip install "structvision[deploy]"``: ``onnx``,
``onnxscript``, ``onnxruntime``); a missing package is named in the error.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from structvision.export.graphs import ExportFamily, family_for, sample_graph_inputs
from structvision.export.parts import PART_RECIPES, export_parts, paths_for

__all__ = [
    "DEFAULT_CHECK_DATA",
    "EXPORT_FORMATS",
    "EXPORT_RECORD",
    "ExportCheckError",
    "ExportError",
    "ExportReport",
    "ExportTolerance",
    "compare_predictions",
    "export_model",
    "require",
]

#: Formats `export_model` writes: ONNX files (run by ONNX Runtime or OpenVINO), OpenVINO's IR
#: (``.xml`` and ``.bin``, converted from the ONNX files; run by OpenVINO), or TorchScript
#: archives (``.pt``; run by PyTorch, or libtorch in C++).
EXPORT_FORMATS = ("onnx", "openvino", "torchscript")
#: The file that describes an export folder.
EXPORT_RECORD = "export.json"
#: The ONNX file of an export folder.
ONNX_FILE = "model.onnx"
#: The TorchScript archive of a ``--format torchscript`` export folder.
TORCHSCRIPT_FILE = "model.pt"
#: The file inside a TorchScript archive that names its inputs and outputs.
TORCHSCRIPT_IO = "io.json"
#: Version of ``export.json``'s layout.
EXPORT_RECORD_VERSION = 1

#: Built-in data each family's export is checked on (``num_images`` is set by the check;
#: Keypoint R-CNN: ``shapes-pose``).
DEFAULT_CHECK_DATA = {
    "detection": "shapes",
    "segmentation": "shapes",
    "depth": "world-stereo",
    "dense_heads": "world",
    "flow": "world-flow",
    "tracking": "world-track:num_frames=10",
}

#: Outputs that measure rather than predict (a tracker's seconds per frame): not compared.
UNCOMPARED_OUTPUTS = ("seconds_per_frame",)

#: A detector's per-detection outputs (one row per detection): two models may keep different
#: numbers of detections where scores tie at a threshold, so these are compared over the rows
#: both have, and the share of rows only one has is reported as ``detections``.
DETECTION_OUTPUTS = (
    "boxes",
    "labels",
    "scores",
    "box_scores",
    "masks",
    "keypoints",
    "keypoints_scores",
)

_EXTRA_HINT = 'pip install "structvision[deploy]"'


class ExportError(RuntimeError):
    """An export that cannot be made or read: a missing package, a bad file or folder."""


class ExportCheckError(ExportError):
    """The exported model disagrees with the PyTorch model beyond the tolerances."""


def require(module: str) -> Any:
    """Import ``module`` of the deploy extra, or fail naming the package and the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ExportError(
            f"exported models need the package {module!r}, which is not installed ({error}); "
            f"install the deploy extra: {_EXTRA_HINT}"
        ) from None


@dataclass(frozen=True)
class ExportTolerance:
    """How far an exported model may be from the PyTorch model.

    A float output passes when ``max |exported - eager| <= atol + rtol * max |eager|``; an
    integer output (labels) when at most ``label_fraction`` of its values differ (an argmax
    may flip where two scores are equal to float rounding). For detectors, ``detections`` is
    the fraction of detections present in one model's output only (compared up to the shorter
    list).
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    label_fraction: float = 1e-3
    #: detectors: the fraction of detections that may appear or vanish (a score at a
    #: threshold moved by float rounding)
    count_fraction: float = 0.02

    def passes(self, key: str, difference: float, scale: float, integer: bool) -> bool:
        if key == "detections":
            return difference <= self.count_fraction
        if integer:
            return difference <= self.label_fraction
        return difference <= self.atol + self.rtol * scale


@dataclass
class ExportReport:
    """What `export_model` wrote and how the exported model compares with the eager one."""

    path: Path  #: the export folder
    recipe: str
    format: str
    seconds: float  #: export time
    file_bytes: int
    #: per output: the largest absolute difference (float) or the fraction of differing
    #: values (integer outputs), over every compared image
    differences: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)  #: per output: max |eager|
    integer_outputs: tuple[str, ...] = ()
    checked_inputs: list[str] = field(default_factory=list)  #: what was compared
    tolerance: ExportTolerance = field(default_factory=ExportTolerance)
    #: an int8 export: the int8 model's differences from the eager one (not checked; the
    #: float graph's are ``differences``)
    int8_differences: dict[str, float] | None = None

    def failures(self) -> list[str]:
        """The outputs beyond the tolerances, each with its difference."""
        return [
            f"{key}: {value:.3g} (scale {self.scales.get(key, 0.0):.3g})"
            for key, value in self.differences.items()
            if not self.tolerance.passes(
                key, value, self.scales.get(key, 0.0), key in self.integer_outputs
            )
        ]


def compare_predictions(
    eager: list[dict[str, Tensor]],
    exported: list[dict[str, Tensor]],
    report: ExportReport,
    what: str,
) -> None:
    """Fold the differences of one set of predictions into ``report`` (per output, the largest
    over everything compared so far)."""
    if len(eager) != len(exported):
        raise ExportCheckError(
            f"{what}: the exported model gave {len(exported)} predictions for {len(eager)} inputs"
        )
    for index, (expected, got) in enumerate(zip(eager, exported, strict=True)):
        missing = sorted(set(expected) - set(got))
        if missing:
            raise ExportCheckError(f"{what}, image {index}: exported outputs lack {missing}")
        for key, value in expected.items():
            if not torch.is_tensor(value) or key in UNCOMPARED_OUTPUTS:
                continue
            other = got[key].to(value.device)
            per_detection = key in DETECTION_OUTPUTS and "scores" in expected  # not a tracker's
            if (
                per_detection
                and value.ndim
                and other.ndim == value.ndim
                and other.shape[1:] == value.shape[1:]
            ):
                count, other_count = int(value.shape[0]), int(other.shape[0])
                if count != other_count:  # per-detection outputs: compare the common prefix
                    lost = abs(count - other_count) / max(count, other_count)
                    report.differences["detections"] = max(
                        report.differences.get("detections", 0.0), lost
                    )
                    common = min(count, other_count)
                    value, other = value[:common], other[:common]
            if other.shape != value.shape:
                raise ExportCheckError(
                    f"{what}, image {index}: output {key!r} has shape {tuple(other.shape)}, "
                    f"the PyTorch model's {tuple(value.shape)}"
                )
            if value.is_floating_point():
                difference = (
                    float((other.float() - value.float()).abs().max()) if value.numel() else 0.0
                )
                scale = float(value.float().abs().max()) if value.numel() else 0.0
                report.scales[key] = max(report.scales.get(key, 0.0), scale)
            else:
                difference = float((other != value).float().mean()) if value.numel() else 0.0
                report.integer_outputs = tuple(sorted({*report.integer_outputs, key}))
            report.differences[key] = max(report.differences.get(key, 0.0), difference)
    report.checked_inputs.append(what)


def _samples(
    recipe: Any, data: str, num_images: int, *, split: str = "val", option: str = "--data"
) -> list[tuple[Any, dict]]:
    """The first ``num_images`` samples of ``data``'s ``split`` as the model takes them."""
    from dataclasses import replace

    from structvision.data.spec import build_dataset, parse_spec

    parsed = parse_spec(data)
    if parsed.kind == "generator":
        parsed = replace(parsed, options={**parsed.options, "num_images": num_images})
    dataset = build_dataset(parsed, split=split, modality=recipe.data_modality)
    samples = []
    for index in range(min(num_images, len(dataset))):
        image, target = dataset[index]
        given = image if recipe.model_input is None else recipe.model_input(image, target)
        samples.append((given, target))
    if not samples:
        raise ExportError(f"{option} {data}: no samples to check the export on")
    return samples


def _check_samples(recipe: Any, data: str, num_images: int) -> list[tuple[Any, dict]]:
    """``num_images`` validation samples of ``data`` as the model takes them, plus the first
    one resized to another size (so the exported graph must handle a size it was not traced
    at)."""
    samples = _samples(recipe, data, num_images)
    image, target = samples[0]
    if isinstance(image, dict):  # a tracker's sequence: its frames resized, the box scaled
        frames = image["frames"]
        height, width = frames.shape[-2:]
        resized = F.interpolate(
            frames, size=(height + 13, width + 29), mode="bilinear", align_corners=False
        ).clamp(0, 1)
        scale = torch.tensor([(width + 29) / width, (height + 13) / height] * 2)
        box = image["init_box"].double() * scale.double()
        samples.append(({"frames": resized, "init_box": box}, target))
        return samples
    height, width = image.shape[-2:]
    resized = F.interpolate(
        image[None], size=(height + 13, width + 29), mode="bilinear", align_corners=False
    )[0].clamp(0, 1)
    camera = {k: v for k, v in target.items() if k in ("focal", "baseline")}
    samples.append((resized, camera))
    return samples


def require_exporter() -> None:
    """Fail clearly where ``torch.onnx.export(dynamo=True)`` with automatic dynamic shapes is
    missing (torch before 2.6) or the exporter's packages are."""
    if not hasattr(getattr(torch, "export", None), "Dim") or not hasattr(torch.export.Dim, "AUTO"):
        raise ExportError(f"export needs torch 2.6 or newer; this is torch {torch.__version__}")
    require("onnx")
    require("onnxscript")


def _export_onnx(
    graph: torch.nn.Module, family: ExportFamily, outputs: tuple[str, ...], path: Path
) -> None:
    require_exporter()
    # batch, height and width stay symbolic (AUTO: the exporter works out how the padding to
    # multiples of 32 depends on them instead of failing on named ranges)
    auto = torch.export.Dim.AUTO
    shapes = tuple({0: auto, 2: auto, 3: auto} for _ in family.inputs)
    inputs = sample_graph_inputs(family, 2, 140, 204)  # not multiples of 32: pads traced
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph,
                inputs,
                str(path),
                dynamo=True,
                optimize=family.optimize,
                input_names=list(family.inputs),
                output_names=list(outputs),
                dynamic_shapes=shapes,
                external_data=False,
                verbose=False,
            )
        except Exception as error:  # the exporter raises many kinds; say what failed
            raise ExportError(
                f"torch.onnx.export of the {family.name} graph failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}"
            ) from error


def export_torchscript(
    module: torch.nn.Module,
    inputs: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    what: str,
) -> None:
    """Trace ``module`` on ``inputs``, freeze it and save it to ``path`` with the names of its
    inputs and outputs (the archive's ``io.json``). Sizes stay dynamic: tracing records how
    shapes are computed from the inputs' sizes (the export check runs another size)."""
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer warnings
        try:
            traced = torch.jit.freeze(torch.jit.trace(module.eval(), inputs, check_trace=False))
            names = json.dumps({"inputs": input_names, "outputs": output_names})
            torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_IO: names})
        except Exception as error:  # the tracer raises many kinds; say what failed
            first_line = str(error).splitlines()[0] if str(error) else ""
            raise ExportError(
                f"TorchScript tracing of {what} failed: {type(error).__name__}: {first_line}"
            ) from error


def export_model(
    source: str | Path,
    *,
    out: str | Path,
    format: str = "onnx",
    data: str | None = None,
    num_images: int = 3,
    check: bool = False,
    tolerance: ExportTolerance | None = None,
    threads: int | None = None,
    int8: bool = False,
    calibration_data: str | None = None,
    calibration_images: int = 16,
    calibration_method: str = "minmax",
) -> ExportReport:
    """Export the trained model of ``source`` (a run or checkpoint folder, or ``zoo:NAME``)
    into the folder ``out`` and compare the exported model with it (module docstring).

    ``data`` (a SPEC; default: the family's built-in generator, `DEFAULT_CHECK_DATA`) gives
    the ``num_images`` validation samples the comparison runs on. ``check=True`` raises
    `ExportCheckError` when an output differs beyond ``tolerance``. An existing export in
    ``out`` is replaced only once the new one is complete, by swapping folders: the new export
    is written into a hidden sibling folder, the old one is renamed aside, the new one renamed
    into place, then the old one deleted (a process killed between the two renames leaves the
    old export in ``.NAME.old-*`` beside ``out``, never a mix of both); a folder that holds
    anything else is refused.

    ``int8=True`` then quantises the checked float graphs (:mod:`structvision.export.quantize`),
    calibrated on ``calibration_images`` training samples of ``calibration_data`` (default:
    ``data``'s generator) with ``calibration_method``; the int8 model's differences from the
    eager one are reported in ``report.int8_differences`` and not checked.
    """
    from structvision import __version__
    from structvision.export.quantize import CALIBRATION_METHODS
    from structvision.inference import load as load_exported
    from structvision.tasks.run import load_trained_model

    if format not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    if int8 and format == "torchscript":
        raise ValueError(
            "--int8 quantises ONNX graphs (for ONNX Runtime or OpenVINO); choose --format onnx "
            "or openvino"
        )
    if int8 and calibration_method not in CALIBRATION_METHODS:
        raise ValueError(
            f"--calibration-method must be one of {list(CALIBRATION_METHODS)}, "
            f"got {calibration_method!r}"
        )
    if int8 and calibration_images < 1:
        raise ValueError(f"--calibration-images must be at least 1, got {calibration_images}")
    out = Path(out)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_RECORD).is_file())
    ):
        raise ExportError(
            f"{out} exists and is not an export folder; choose a new folder (an export folder, "
            f"with its {EXPORT_RECORD}, is replaced)"
        )
    tolerance = tolerance or ExportTolerance()
    recipe, model, model_config = load_trained_model(source)
    model = model.cpu().eval()
    by_parts = recipe.name in PART_RECIPES
    tracker = recipe.data_modality == "tracking"
    family = None if by_parts else family_for(recipe.name)
    if data is None:
        if recipe.name == "keypoint_rcnn":
            data = "shapes-pose"
        elif tracker:
            data = DEFAULT_CHECK_DATA["tracking"]
        else:
            data = DEFAULT_CHECK_DATA["detection" if by_parts else family.name]
    samples = _check_samples(recipe, data, num_images)
    calibration = []
    if int8:  # read before anything is exported: a bad SPEC fails early
        calibration_data = calibration_data or data
        calibration = _samples(
            recipe,
            calibration_data,
            calibration_images,
            split="train",
            option="--calibration-data",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # the scratch folder becomes the export (renamed into place), so it may be gone at the end
    with tempfile.TemporaryDirectory(
        dir=out.parent, prefix=f".{out.name}.export-", ignore_cleanup_errors=True
    ) as scratch:
        record = {
            "version": EXPORT_RECORD_VERSION,
            "format": format,
            "recipe": recipe.name,
            "source": str(source),
            "structvision": __version__,
            "torch": torch.__version__,
            "model": model_config,
        }
        if by_parts:  # two samples of different sizes: a padded batch of 2
            parts = export_parts(
                model,
                [samples[0][0], samples[-1][0]],
                Path(scratch),
                paths_for(recipe.name),
                torchscript=format == "torchscript",
            )
            record |= {"kind": "parts", "parts": parts}
            files = [part["file"] for part in parts.values()]
        else:
            outputs = family.outputs(model)
            file = TORCHSCRIPT_FILE if format == "torchscript" else ONNX_FILE
            if format == "torchscript":
                export_torchscript(
                    family.graph(model),
                    sample_graph_inputs(family, 2, 140, 204),
                    Path(scratch) / file,
                    list(family.inputs),
                    list(outputs),
                    f"the {family.name} graph",
                )
            else:
                _export_onnx(family.graph(model).eval(), family, outputs, Path(scratch) / file)
            record |= {
                "kind": "graph",
                "file": file,
                "family": family.name,
                "inputs": list(family.inputs),
                "outputs": list(outputs),
                "host": family.host(model),
                "pads_batches": family.pads_batches,
            }
            files = [file]
        if format == "openvino" and not int8:  # checked as OpenVINO runs it
            files = _to_openvino(Path(scratch), record)
        seconds = time.perf_counter() - started
        (Path(scratch) / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        report = ExportReport(
            path=out,
            recipe=recipe.name,
            format=format,
            seconds=seconds,
            file_bytes=sum((Path(scratch) / name).stat().st_size for name in files),
            tolerance=tolerance,
        )
        exported = load_exported(Path(scratch), threads=threads)
        camera = not by_parts and family.name == "depth"
        mixed_batch = (by_parts and not tracker) or (family is not None and family.pads_batches)
        _verify(model, exported, samples, data, report, mixed_batch=mixed_batch, camera=camera)
        failures = report.failures()
        if check and failures:
            raise ExportCheckError(
                f"the exported {recipe.name} model disagrees with the PyTorch model beyond the "
                f"tolerances (atol {tolerance.atol}, rtol {tolerance.rtol}, labels "
                f"{tolerance.label_fraction}): {'; '.join(failures)}; nothing was written to {out}"
            )
        if int8:
            record["int8"] = _quantize(
                Path(scratch),
                record,
                exported,
                calibration,
                camera=camera,
                source=calibration_data,
                method=calibration_method,
            )
            if format == "openvino":  # OpenVINO reads the quantised graphs as int8
                files = _to_openvino(Path(scratch), record)
            (Path(scratch) / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
            report.file_bytes = sum((Path(scratch) / name).stat().st_size for name in files)
            quantized = ExportReport(
                path=out, recipe=recipe.name, format=format, seconds=0.0, file_bytes=0
            )
            _verify(
                model,
                load_exported(Path(scratch), threads=threads),
                samples,
                data,
                quantized,
                mixed_batch=mixed_batch,
                camera=camera,
            )
            report.int8_differences = quantized.differences
            report.seconds = time.perf_counter() - started
        kept = {*files, EXPORT_RECORD}
        for leftover in Path(scratch).iterdir():  # the quantiser's or converter's own files
            if leftover.name not in kept:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        _swap_into_place(Path(scratch), out)
    return report


def _swap_into_place(new: Path, out: Path) -> None:
    """Put the complete export folder ``new`` at ``out`` (``export_model``'s docstring)."""
    aside = None
    if out.exists():
        aside = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(out, aside)
    os.replace(new, out)
    if aside is not None:
        shutil.rmtree(aside)


def _to_openvino(folder: Path, record: dict) -> list[str]:
    """Convert every ONNX file the record names into OpenVINO's IR (``.xml`` and ``.bin``,
    float32 weights kept), point the record at the IR files and return the folder's files."""
    ov = require("openvino")
    entries = list(record["parts"].values()) if record.get("kind") == "parts" else [record]
    files = []
    for entry in entries:
        source = folder / entry["file"]
        target = source.with_suffix(".xml")
        try:
            ov.save_model(ov.convert_model(str(source)), str(target), compress_to_fp16=False)
        except Exception as error:  # OpenVINO raises its own exception types
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(f"OpenVINO cannot convert {source.name}: {message}") from None
        source.unlink()
        entry["file"] = target.name
        files += [target.name, target.with_suffix(".bin").name]
    return files


def _quantize(
    folder: Path,
    record: dict,
    exported: Any,
    calibration: list[tuple[Any, dict]],
    *,
    camera: bool,
    source: str,
    method: str,
) -> dict[str, Any]:
    """Quantise the float graphs in ``folder`` in place (:mod:`structvision.export.quantize`)
    and return what the record says about it."""
    from structvision.export.quantize import FLOAT_PARTS, calibration_feeds, quantize_folder

    parts = record.get("parts", {})
    kept = [parts[path]["file"] for path in FLOAT_PARTS if path in parts]
    feeds = calibration_feeds(exported, calibration, camera=camera)
    quantized = quantize_folder(folder, feeds, skip=tuple(kept), method=method)
    return {
        "method": f"onnxruntime quantize_static, QDQ, per-channel int8 weights, {method}",
        "calibration_data": source,
        "calibration_images": len(calibration),
        "quantized": quantized,
        "float": kept,
    }


@torch.no_grad()
def _verify(
    model: torch.nn.Module,
    exported: Any,
    samples: list[tuple[Any, dict]],
    data: str,
    report: ExportReport,
    *,
    mixed_batch: bool,
    camera: bool,
) -> None:
    with _network_only(model, exported):
        for index, (image, target) in enumerate(samples):
            shape = image["frames"].shape if isinstance(image, dict) else image.shape
            what = f"{data} sample {index} ({shape[-2]}x{shape[-1]})"
            if index == len(samples) - 1:
                what = f"a resized sample ({shape[-2]}x{shape[-1]})"
            targets = [target] if camera else None
            compare_predictions(
                _eager(model, [image], targets), exported([image], targets), report, what
            )
        if mixed_batch:  # one batch of two sizes, padded
            images = [samples[0][0], samples[-1][0]]
            compare_predictions(
                _eager(model, images, None), exported(images), report, "a batch of two sizes"
            )


@contextlib.contextmanager
def _network_only(model: torch.nn.Module, exported: Any):
    """An intrinsic network's ``relight`` off on both sides while they are compared: the relit
    shading is the same host function of the network's outputs on both, but it chooses each
    pixel's level by an argmin and fits the light from random starts, so float rounding in the
    graph can move pixels between levels. The network's own outputs are what is checked."""
    host = getattr(exported, "record", {}).get("host", {})
    if not (getattr(model, "relight", False) and host.get("relight")):
        yield
        return
    model.relight, host["relight"] = False, False
    try:
        yield
    finally:
        model.relight, host["relight"] = True, True


def _eager(model: torch.nn.Module, images: list[Tensor], targets: Any) -> list[dict[str, Tensor]]:
    return model(images, targets) if targets is not None else model(images)
