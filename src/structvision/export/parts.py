"""Export by parts: the R-CNNs' and the trackers' networks on ONNX Runtime, their data-dependent
steps on the host.

An R-CNN's eval-mode forward is mostly code whose output sizes depend on the data: the resize
to the model's input size, anchors, top-k and NMS of the proposals, RoIAlign over the pyramid
levels that each box chooses, per-class score thresholds and (soft-)NMS of the detections, mask
pasting and keypoint decoding. The networks in between are fixed-shape tensor code. So the
networks are exported, each as its own ONNX graph with dynamic batch (images, or regions) and
spatial sizes — ``backbone`` (with the FPN), ``rpn.head``, ``roi_heads.box_head``,
``roi_heads.box_predictor`` and, where the model has them, the mask and keypoint heads and
predictors — and the model's own PyTorch code runs everything else on the host, with each
network replaced by an `OnnxPart` that calls ONNX Runtime. Every parameter of the model lies in
an exported part (checked at export), so the exported folder holds all the weights; the host
code is rebuilt from the model's ``model_config``.

Each part is exported from the inputs it receives when the model runs on sample images (with
the detection score threshold lowered so that the mask and keypoint heads run too), nested
lists, tuples and dicts of tensors flattened to named graph inputs and outputs.

The trackers are exported the same way (`TRACKER_PART_PATHS`): SINT's trunk, fully connected
layer and box regression head, SiamFC's embedding; candidate sampling, RoIAlign, the matching
and SiamFC's cross-correlation with the first frame's kernel run on the host. An exported
tracker is checked on short sequences (the boxes it tracks; seconds per frame are not
compared) and runs wherever a tracker run does (``structvision track``, ``eval``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "PART_PATHS",
    "TRACKER_PART_PATHS",
    "OnnxPart",
    "assemble",
    "capture_part_inputs",
    "export_parts",
    "flatten",
    "part_paths",
    "paths_for",
    "unflatten",
]

#: The networks of an R-CNN, exported one by one where the model has them.
PART_PATHS = (
    "backbone",
    "rpn.head",
    "roi_heads.box_head",
    "roi_heads.box_predictor",
    "mask_branch.head",
    "mask_branch.predictor",
    "keypoint_branch.head",
    "keypoint_branch.predictor",
)

#: The networks of the trackers: SINT's trunk, its fully connected layer on the last map and
#: its box regression head (RoIAlign, normalisation and the matching run on the host); SiamFC's
#: embedding (the cross-correlation with the exemplar's kernel runs on the host).
TRACKER_PART_PATHS = {"sint": ("trunk", "fc", "regression_head"), "siamfc": ("embedding",)}

#: Recipes exported by parts.
PART_RECIPES = ("faster_rcnn", "fast_rcnn", "mask_rcnn", "keypoint_rcnn", *TRACKER_PART_PATHS)


def paths_for(recipe: str) -> tuple[str, ...]:
    """The part paths of ``recipe``'s models (those a model has are exported)."""
    return TRACKER_PART_PATHS.get(recipe, PART_PATHS)


def flatten(value: Any) -> tuple[list[Tensor], dict]:
    """Tensors of a nested tuple/list/dict in order, and the JSON spec to rebuild it."""
    if isinstance(value, Tensor):
        return [value], {"kind": "tensor"}
    if isinstance(value, (list, tuple)):
        tensors, items = [], []
        for item in value:
            inner, spec = flatten(item)
            tensors += inner
            items.append(spec)
        return tensors, {"kind": type(value).__name__, "items": items}
    if isinstance(value, dict):
        tensors, items = [], []
        for item in value.values():
            inner, spec = flatten(item)
            tensors += inner
            items.append(spec)
        return tensors, {"kind": "dict", "keys": [str(k) for k in value], "items": items}
    raise TypeError(
        f"only tensors, lists, tuples and dicts of them can be exported, got {type(value).__name__}"
    )


def unflatten(spec: dict, tensors: list[Tensor]) -> Any:
    """The structure ``spec`` describes, filled with ``tensors`` in order."""
    stream = iter(tensors)

    def build(node: dict) -> Any:
        if node["kind"] == "tensor":
            return next(stream)
        items = [build(item) for item in node["items"]]
        if node["kind"] == "dict":
            return OrderedDict(zip(node["keys"], items, strict=True))
        return tuple(items) if node["kind"] == "tuple" else items

    return build(spec)


def part_paths(model: nn.Module, paths: tuple[str, ...] = PART_PATHS) -> list[str]:
    """The ``paths`` ``model`` has; every parameter must lie in one of them."""
    present = []
    for path in paths:
        try:
            model.get_submodule(path)
        except AttributeError:
            continue
        present.append(path)
    covered = {id(p) for path in present for p in model.get_submodule(path).parameters()}
    loose = [name for name, p in model.named_parameters() if id(p) not in covered]
    if loose:
        raise ValueError(
            f"parameters outside the exported parts {present}: {loose[:5]}; this model cannot "
            "be exported by parts"
        )
    return present


@torch.no_grad()
def capture_part_inputs(model: nn.Module, paths: list[str], images: list[Any]) -> dict:
    """The positional inputs of each part in ``paths`` when ``model`` runs on ``images``
    (the first call of each; trackers take sequences ``{"frames", "init_box"}``), with the
    detection score threshold lowered to 0 so that every branch runs."""
    captured: dict[str, tuple] = {}
    handles = []
    for path in paths:

        def hook(module, args, kwargs, path=path):
            if kwargs:
                raise ValueError(f"part {path} is called with keyword arguments {sorted(kwargs)}")
            captured.setdefault(path, args)

        handles.append(model.get_submodule(path).register_forward_pre_hook(hook, with_kwargs=True))
    roi_heads = getattr(model, "roi_heads", None)
    threshold = getattr(roi_heads, "score_thresh", None)
    try:
        if threshold is not None:
            roi_heads.score_thresh = -1.0
        model(images)
    finally:
        if threshold is not None:
            roi_heads.score_thresh = threshold
        for handle in handles:
            handle.remove()
    missing = [path for path in paths if path not in captured]
    if missing:
        raise ValueError(f"parts {missing} did not run on the sample images")
    return captured


def _widened(tensor: Tensor) -> tuple[Tensor, dict[int, Any]]:
    """The tensor with its batch and spatial sizes of 1 repeated to 2 (an exporter fixes a size
    of 1 for good), and which of its dimensions stay dynamic."""
    dynamic = [0] + ([2, 3] if tensor.ndim == 4 else [])
    repeats = [2 if d in dynamic and tensor.shape[d] == 1 else 1 for d in range(tensor.ndim)]
    return tensor.repeat(*repeats), {d: torch.export.Dim.AUTO for d in dynamic}


class _FlatPart(nn.Module):
    """A part called with flat tensors, returning a flat tuple (what the exporter sees)."""

    def __init__(self, module: nn.Module, in_spec: dict) -> None:
        super().__init__()
        self.module = module
        self.in_spec = in_spec

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        return tuple(flatten(self.module(*unflatten(self.in_spec, list(tensors))))[0])


def export_parts(
    model: nn.Module,
    images: list[Any],
    folder: Path,
    paths: tuple[str, ...] = PART_PATHS,
    *,
    torchscript: bool = False,
) -> dict[str, dict]:
    """Export each of the ``paths`` ``model`` has into ``folder`` (``PATH.onnx``, or with
    ``torchscript`` a traced TorchScript archive ``PATH.pt``); the record of each."""
    from structvision.export import ExportError, export_torchscript, require_exporter

    if not torchscript:
        require_exporter()
    paths = part_paths(model, paths)
    captured = capture_part_inputs(model, paths, images)
    records = {}
    for path in paths:
        module = model.get_submodule(path)
        tensors, in_spec = flatten(captured[path])
        widened = [_widened(t) for t in tensors]
        inputs = tuple(t for t, _ in widened)
        with torch.no_grad():
            _, out_spec = flatten(module(*unflatten(in_spec, list(inputs))))
        input_names = [f"input_{i}" for i in range(len(inputs))]
        output_names = [f"output_{i}" for i in range(len(flatten_leaves(out_spec)))]
        records[path] = {
            "file": f"{path}.{'pt' if torchscript else 'onnx'}",
            "inputs": input_names,
            "outputs": output_names,
            "in_spec": in_spec,
            "out_spec": out_spec,
        }
        file = folder / records[path]["file"]
        if torchscript:
            flat = _FlatPart(module, in_spec)
            export_torchscript(flat, inputs, file, input_names, output_names, f"part {path}")
            continue
        chatter = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    _FlatPart(module, in_spec).eval(),
                    inputs,
                    str(file),
                    dynamo=True,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_shapes=(tuple(shape for _, shape in widened),),  # for *tensors
                    external_data=False,
                    verbose=False,
                )
            except Exception as error:  # the exporter raises many kinds; say which part failed
                first_line = str(error).splitlines()[0] if str(error) else ""
                raise ExportError(
                    f"torch.onnx.export of part {path} failed: {type(error).__name__}: {first_line}"
                ) from error
    return records


def flatten_leaves(spec: dict) -> list[dict]:
    """The tensor leaves of a spec, in order."""
    if spec["kind"] == "tensor":
        return [spec]
    return [leaf for item in spec["items"] for leaf in flatten_leaves(item)]


class OnnxPart(nn.Module):
    """Stands in for an exported part: flattens its inputs, runs the runtime, rebuilds the
    outputs."""

    def __init__(self, runtime: Any, record: dict) -> None:
        super().__init__()
        self.runtime = runtime
        self.record = record

    def forward(self, *args: Any) -> Any:
        tensors, _ = flatten(args)
        feeds = {
            name: np.ascontiguousarray(t.detach().float().cpu().numpy())
            for name, t in zip(self.record["inputs"], tensors, strict=True)
        }
        results = self.runtime(feeds)
        outputs = [torch.from_numpy(np.asarray(results[name])) for name in self.record["outputs"]]
        return unflatten(self.record["out_spec"], outputs)


def assemble(recipe: Any, record: dict, runtimes: dict[str, Any]) -> nn.Module:
    """The model of ``record`` rebuilt from its ``model_config`` with every part replaced by
    an `OnnxPart` on its runtime (eval mode, no parameters left)."""
    from structvision.tasks.run import _without_init_options

    model = recipe.build_model(**_without_init_options(record["model"].get("kwargs", {})))
    for path, part in record["parts"].items():
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, OnnxPart(runtimes[path], part))
    leftover = [name for name, _ in model.named_parameters()]
    if leftover:
        raise ValueError(f"the exported parts do not cover parameters {leftover[:5]}")
    return model.eval()
