"""Run exported models: ``load(PATH)`` gives a callable with the eval-mode model's contract.

    from structvision.inference import load
    model = load("exported/fcn8s")                  # a folder from `structvision export`
    predictions = model([image])                   # [{"semantic": ..., "semantic_logits": ...}]

``PATH`` is an export folder (``export.json`` and its model files) or the ``.onnx`` (or
OpenVINO ``.xml``) file inside one. The model takes what the PyTorch model takes in eval mode (a list of ``(3, H, W)`` images
in ``[0, 1]``, sizes may differ; for flow models ``(6, H, W)`` frame pairs; depth models also
take the targets that hold the camera) and returns the same per-image dicts, on the CPU.
Backends: ``onnxruntime`` (the default for ONNX files) and ``openvino`` (OpenVINO's CPU
plugin, reading the same ONNX files, or the IR of ``structvision export --format openvino``);
``torchscript`` runs the archives of ``--format torchscript`` with ``torch.jit.load`` (the only
backend for them; TorchScript archives hold code, so load only archives you trust).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from structvision.export import EXPORT_RECORD, ExportError, require
from structvision.export.graphs import family_for

__all__ = ["BACKENDS", "ExportedModel", "is_export", "load"]

#: Runtimes that can run an exported model.
BACKENDS = ("onnxruntime", "openvino", "torchscript")


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export folder or the model file of one."""
    path = Path(path)
    if path.is_dir():
        return (path / EXPORT_RECORD).is_file()
    if path.suffix == ".pt":  # a TorchScript archive only beside an export record
        return (path.parent / EXPORT_RECORD).is_file()
    return path.suffix in (".onnx", ".xml")


def _read_record(path: Path) -> tuple[Path, dict[str, Any]]:
    folder = path if path.is_dir() else path.parent
    record_path = folder / EXPORT_RECORD
    if not path.exists():
        raise ExportError(f"{path}: no such exported model")
    if not record_path.is_file():
        raise ExportError(
            f"{path}: {record_path.name} is missing beside the model file; export folders are "
            "made by 'structvision export' and keep both files"
        )
    try:
        record = json.loads(record_path.read_text())
        if record.get("kind") == "parts":
            files = [folder / part["file"] for part in record["parts"].values()]
            needed = ("recipe", "model")
        else:
            files = [folder / record["file"]]
            needed = ("recipe", "model", "inputs", "outputs")
        missing = [key for key in needed if key not in record]
        if missing:
            raise KeyError(missing)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ExportError(f"{record_path}: not a valid export record ({error!r})") from None
    if not path.is_dir() and path.resolve() not in {f.resolve() for f in files}:
        raise ExportError(f"{path}: {record_path} describes other files")
    for file in files:
        if not file.is_file():
            raise ExportError(f"{file}: the exported model file is missing")
        if file.suffix == ".xml" and not file.with_suffix(".bin").is_file():
            raise ExportError(f"{file.with_suffix('.bin')}: the IR's weights file is missing")
    return folder, record


class _OnnxRuntime:
    """An ONNX Runtime session on the CPU (or CUDA when its provider is installed).

    Its worker threads sleep when a run ends instead of spinning: ONNX Runtime's default spin
    keeps every core busy for a while after each run, which starves the PyTorch code that runs
    between the calls (an R-CNN's host steps between its parts, the normalisation and decoding
    around a graph). Measured on this 2-core CPU with 2 threads: Faster R-CNN by parts 209 ->
    60 ms per image, FCN-8s 8.1 -> 5.1 ms (BENCHMARKS.md).
    """

    def __init__(self, path: Path, threads: int | None) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in ort.get_available_providers()
        ]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ExportError(f"{path}: not a readable ONNX model ({message})") from None
        self.outputs = [output.name for output in self.session.get_outputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, inputs), strict=True))


class _OpenVino:
    """An OpenVINO model compiled for the CPU from the ONNX file (dynamic shapes kept), in
    float32: on CPUs with bfloat16 instructions (AVX-512 BF16, AMX) OpenVINO's CPU plugin
    otherwise runs float graphs in bfloat16, which moves outputs by far more than the export's
    tolerances (an int8 graph's quantised operations stay int8)."""

    def __init__(self, path: Path, threads: int | None) -> None:
        ov = require("openvino")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as error:  # OpenVINO raises its own exception types
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(f"{path}: OpenVINO cannot read this model ({message})") from None
        self.outputs = [(port.get_any_name(), port) for port in self.compiled.outputs]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.compiled(inputs)
        return {name: results[port] for name, port in self.outputs}


class _TorchScript:
    """A TorchScript archive run by PyTorch on the CPU; ``threads`` sets PyTorch's intra-op
    threads (for the whole process)."""

    def __init__(self, path: Path, threads: int | None) -> None:
        from structvision.export import TORCHSCRIPT_IO

        names = {TORCHSCRIPT_IO: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=names)
            io_names = json.loads(names[TORCHSCRIPT_IO])
            self.inputs, self.outputs = list(io_names["inputs"]), list(io_names["outputs"])
        except Exception as error:  # torch.jit raises its own exception types
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(
                f"{path}: not a TorchScript archive of structvision export "
                f"({type(error).__name__}: {message})"
            ) from None
        if threads:
            torch.set_num_threads(int(threads))

    @torch.no_grad()
    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.module(*(torch.from_numpy(inputs[name]) for name in self.inputs))
        outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
        return {name: output.numpy() for name, output in zip(self.outputs, outputs, strict=True)}


_RUNTIMES = {"onnxruntime": _OnnxRuntime, "openvino": _OpenVino, "torchscript": _TorchScript}


class ExportedModel(nn.Module):
    """An exported model behind the eval-mode ``model(images[, targets])`` call (module
    docstring). It holds no parameters; ``recipe`` and ``model_config`` are the trained
    model's."""

    def __init__(self, path: Path, record: dict[str, Any], runtime: Any) -> None:
        super().__init__()
        self.path = path
        self.record = record
        self.recipe = record["recipe"]
        self.model_config = record["model"]
        self.family = family_for(self.recipe)
        self.runtime = runtime
        self.train(False)

    def train(self, mode: bool = True) -> ExportedModel:
        if mode:
            raise RuntimeError(f"{self.path}: an exported model cannot be trained")
        return super().train(False)

    def _run(self, batch: Tensor) -> dict[str, Tensor]:
        """One batch ``(B, 3 * inputs, H, W)`` through the runtime."""
        frames = batch.float().cpu().split(3, dim=1)
        feeds = {
            name: np.ascontiguousarray(frame.numpy())
            for name, frame in zip(self.family.inputs, frames, strict=True)
        }
        results = self.runtime(feeds)
        return {
            name: torch.from_numpy(np.asarray(results[name])) for name in self.record["outputs"]
        }

    @torch.no_grad()
    def forward(self, images: Tensor | Sequence[Tensor], targets: Any = None) -> list[dict]:
        image_list = (
            list(images) if not isinstance(images, Tensor) or images.ndim == 4 else [images]
        )
        if not image_list:
            return []
        channels = 3 * len(self.family.inputs)
        for index, image in enumerate(image_list):
            if image.ndim != 3 or image.shape[0] != channels:
                raise ValueError(
                    f"{self.path}: image {index} must be ({channels}, H, W), got "
                    f"{tuple(image.shape)}"
                )
        sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in image_list]
        target_list = list(targets) if isinstance(targets, Sequence) else None
        if self.record.get("pads_batches") or len(set(sizes)) == 1:
            return self._batch(image_list, sizes, targets)
        # families that cannot pad: one size at a time, results back in order
        results: list[dict | None] = [None] * len(image_list)
        for size in dict.fromkeys(sizes):
            indices = [i for i, s in enumerate(sizes) if s == size]
            group_targets = None if target_list is None else [target_list[i] for i in indices]
            predictions = self._batch(
                [image_list[i] for i in indices], [size] * len(indices), group_targets
            )
            for i, prediction in zip(indices, predictions, strict=True):
                results[i] = prediction
        return results  # type: ignore[return-value]

    def _batch(
        self, images: list[Tensor], sizes: list[tuple[int, int]], targets: Any
    ) -> list[dict]:
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        if all(size == (height, width) for size in sizes):
            batch = torch.stack([image.float().cpu() for image in images])
        else:  # pad with the colour the graph's normalisation maps to zero
            pad = torch.tensor(self.record["host"]["pad"], dtype=torch.float32).view(1, 3, 1, 1)
            batch = pad.expand(len(images), 3, height, width).clone()
            for index, image in enumerate(images):
                batch[index, :, : image.shape[-2], : image.shape[-1]] = image.float().cpu()
        outputs = self._run(batch)
        return self.family.predictions(outputs, sizes, targets, self.record.get("host", {}))


def load(path: str | Path, *, backend: str | None = None, threads: int | None = None) -> nn.Module:
    """The exported model at ``path`` (module docstring) on ``backend`` (default: ONNX
    Runtime for ONNX files, OpenVINO for its IR, PyTorch for TorchScript); ``threads`` caps
    the runtime's threads (default: the runtime's own choice). A graph export gives an `ExportedModel`; an R-CNN or
    a tracker exported by parts gives the model rebuilt around its parts
    (:mod:`structvision.export.parts`). Both have ``recipe`` and ``model_config``."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    path = Path(path)
    folder, record = _read_record(path)
    ir = record.get("format") == "openvino"
    scripted = record.get("format") == "torchscript"
    if backend is None:
        backend = "openvino" if ir else "torchscript" if scripted else "onnxruntime"
    if ir and backend != "openvino":
        raise ExportError(f"{path} is an OpenVINO IR export: run it with --backend openvino")
    if scripted != (backend == "torchscript"):
        raise ExportError(
            f"{path} is a {record.get('format', 'onnx')} export: --backend torchscript runs "
            "TorchScript exports only, and they run on no other backend"
        )
    if record.get("kind") == "parts":
        from structvision.export.parts import assemble
        from structvision.tasks import get_recipe

        runtimes = {
            name: _RUNTIMES[backend](folder / part["file"], threads)
            for name, part in record["parts"].items()
        }
        model = assemble(get_recipe(record["recipe"]), record, runtimes)
        model.recipe, model.model_config, model.path = record["recipe"], record["model"], path
        return model
    return ExportedModel(path, record, _RUNTIMES[backend](folder / record["file"], threads))
