"""int8 exports: ONNX Runtime's post-training static quantisation of an exported folder.

    structvision export zoo:faster_rcnn_shapes --out exported/faster-int8 --int8

The float export is made and checked first (:func:`structvision.export.export_model`); then
every graph of the folder is run on calibration images of the model's own training data (the
inputs each graph receives are recorded as the exported model runs, so an R-CNN's parts are
calibrated on real proposals and regions), and ONNX Runtime's ``quantize_static`` rewrites it
in the QDQ form: int8 weights with a scale per output channel, uint8 activations with ranges
from the calibration (min/max). ONNX Runtime and OpenVINO both run QDQ graphs with int8
kernels. The R-CNNs' final predictors (box, mask and keypoint) stay float: they are small, and
their outputs are the boxes and scores themselves.

The int8 model is not held to the float tolerances: its cost is an accuracy cost, measured by
``structvision benchmark --formats torch,onnx,int8`` on held-out data.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CALIBRATION_METHODS",
    "FLOAT_PARTS",
    "QUANTIZED_OPS",
    "calibration_feeds",
    "quantize_folder",
]

#: Parts of an R-CNN export left in float (their outputs are the detections themselves).
FLOAT_PARTS = ("roi_heads.box_predictor", "mask_branch.predictor", "keypoint_branch.predictor")

#: The operators quantised: the convolutions and matrix products that hold the time (others,
#: e.g. the shape arithmetic of padding, stay float).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")

#: ONNX Runtime's calibration methods by the names ``--calibration-method`` takes.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class _Recorder:
    """Stands in for a runtime: runs it and keeps a copy of every input it was given."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.feeds: list[dict[str, np.ndarray]] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append({name: np.array(value, copy=True) for name, value in inputs.items()})
        return self.runtime(inputs)


@torch.no_grad()
def calibration_feeds(
    model: Any, samples: list[tuple[Tensor, dict]], *, camera: bool = False
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Run the exported ``model`` (:func:`structvision.inference.load`) on ``samples``, one
    image per call, and return what each of its graph files was fed: ``{file: [feeds]}``."""
    from structvision.export.parts import OnnxPart
    from structvision.inference import ExportedModel

    recorders: dict[str, _Recorder] = {}
    for module in model.modules():
        if not isinstance(module, (OnnxPart, ExportedModel)):
            continue
        file = module.record["file"]
        recorders[file] = module.runtime = _Recorder(module.runtime)
    if not recorders:
        raise ValueError("calibration needs an exported model (structvision.inference.load)")
    for image, target in samples:
        if camera:
            model([image], [target])
        else:
            model([image])
    return {file: recorder.feeds for file, recorder in recorders.items()}


class _Feeds:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over recorded feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # ONNX Runtime may call it between passes
        pass


def quantize_folder(
    folder: Path,
    feeds: dict[str, list[dict[str, np.ndarray]]],
    *,
    skip: tuple[str, ...] = (),
    method: str = "minmax",
) -> list[str]:
    """Quantise, in place, each graph file of ``folder`` named in ``feeds`` (but not those in
    ``skip``) from its recorded inputs; returns the files quantised."""
    from structvision.export import require

    require("onnx")
    quantization = require("onnxruntime.quantization")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    calibrate = {
        "minmax": quantization.CalibrationMethod.MinMax,
        "percentile": quantization.CalibrationMethod.Percentile,
        "entropy": quantization.CalibrationMethod.Entropy,
    }[method]
    done = []
    for file, recorded in feeds.items():
        if file in skip:
            continue
        if not recorded:
            raise ValueError(f"{folder / file}: no calibration inputs reached this graph")
        source = folder / file
        target = source.with_name(f".{source.name}.int8")
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the quantiser logs a warning per 1-d weight
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quantization.quantize_static(
                    str(source),
                    str(target),
                    _Feeds(recorded),
                    quant_format=quantization.QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=quantization.QuantType.QUInt8,
                    weight_type=quantization.QuantType.QInt8,
                    calibrate_method=calibrate,
                    op_types_to_quantize=list(QUANTIZED_OPS),
                )
        finally:
            quiet.setLevel(level)
        os.replace(target, source)
        done.append(file)
    return done
