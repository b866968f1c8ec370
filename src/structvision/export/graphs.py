"""What an exported model computes, family by family: a tensor-in, tensors-out module
(the graph that is exported) and the host-side steps around it.

Each family turns a trained model into a graph that takes ``images (B, 3, H, W)`` float in
``[0, 1]`` (flow: two such tensors, the frames) with dynamic batch, height and width, and
returns plain tensors with the normalisation and padding inside. The host side
(`ExportFamily.predictions`) turns those tensors into the same per-image dicts as the model's
eval-mode ``model(images)``:

- ``segmentation`` (FCN-32s/16s/8s): ``semantic (B, H, W)`` int64 and ``semantic_logits
  (B, C, H, W)``. The FCN pads a batch of mixed sizes after normalising, with zeros; the host
  pads each image with the normalisation mean instead, which the graph maps to the same zeros,
  so one padded batch gives what the eager model gives. Each image is then cropped to its size.
- ``depth`` (Monodepth): ``disparity (B, 2, H, W)`` in pixels (left and right, with the
  model's flip post-processing inside). Depth is computed on the host with
  :func:`~structvision.models.depth.monodepth.depth_predictions` from the camera of the targets
  or the model's own.
- ``normals`` and ``intrinsic`` (the multi-scale networks): one tensor per head (``normals``,
  ``depth``, ``albedo``, ``shading``). These networks pad by replicating the border, which a
  padded batch cannot reproduce: images of different sizes run one size at a time. An
  intrinsic network with ``relight`` has its shading relit on the host (a per-image fit of
  the light to the graph's shading and normals, as its eval mode does).
- ``flow`` (RAFT, FlowNetS): ``flow (B, 2, H, W)`` from ``image1`` and ``image2``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FAMILIES", "ExportFamily", "family_for"]


class SegmentationGraph(nn.Module):
    """An FCN's logits and labels for a batch of one size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        height, width = images.shape[-2:]
        x = (images - self.model.image_mean) / self.model.image_std
        x = F.pad(x, (0, -width % 32, 0, -height % 32))
        logits = self.model.scores(x)[..., :height, :width]
        return logits.argmax(1), logits


class DepthGraph(nn.Module):
    """Monodepth's left and right disparities in pixels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        disparities = self.model.disparities(images, post_process=self.model.post_process)
        return disparities * images.shape[-1]


class DenseHeadsGraph(nn.Module):
    """The multi-scale network's heads (unit normals; positive depth, albedo, shading); the
    intrinsic network's albedo as its eval mode gives it (the image over the shading when
    ``albedo_from_image``). Its ``relight`` (a per-image fit of the light) is done on the host
    after the graph, as ``_head_predictions`` does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model.split(self.model.raw(images)[1])
        if getattr(self.model, "albedo_from_image", False):
            outputs["albedo"] = images / outputs["shading"]
        return tuple(outputs.values())


class FlowGraph(nn.Module):
    """A flow network's flow from ``image1`` to ``image2``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image1: Tensor, image2: Tensor) -> Tensor:
        from structvision.models.flow.common import crop_padding
        from structvision.models.flow.raft import RAFT

        if isinstance(self.model, RAFT):
            return self.model.flows(image1, image2)[-1]
        flows, padding = self.model.pyramid(image1, image2)  # FlowNetS
        full = F.interpolate(flows[0], scale_factor=4.0, mode="bilinear", align_corners=False)
        return crop_padding(full * self.model.flow_scale, padding)


def _mean_colour(model: nn.Module) -> list[float]:
    return [float(v) for v in model.image_mean.flatten()]


def _segmentation_predictions(
    outputs: dict[str, Tensor], sizes: Sequence[tuple[int, int]], targets: Any, host: dict
) -> list[dict[str, Tensor]]:
    return [
        {
            "semantic": outputs["semantic"][i, :height, :width],
            "semantic_logits": outputs["semantic_logits"][i, :, :height, :width],
        }
        for i, (height, width) in enumerate(sizes)
    ]


def _depth_predictions(
    outputs: dict[str, Tensor], sizes: Sequence[tuple[int, int]], targets: Any, host: dict
) -> list[dict[str, Tensor]]:
    from structvision.models.depth.monodepth import depth_predictions

    return depth_predictions(
        outputs["disparity"], targets, focal=host["focal"], baseline=host["baseline"]
    )


def _head_predictions(
    outputs: dict[str, Tensor], sizes: Sequence[tuple[int, int]], targets: Any, host: dict
) -> list[dict[str, Tensor]]:
    # NormalsNet gives its depth as (H, W); every other head keeps its channels
    predictions = [
        {k: v[i, 0] if k == "depth" else v[i] for k, v in outputs.items()}
        for i in range(len(sizes))
    ]
    if host.get("relight"):  # a per-image fit, on the host as in IntrinsicNet's eval mode
        from structvision.models.intrinsic.lighting import relight_shading

        for prediction in predictions:
            shading = prediction["shading"]
            relit = relight_shading(
                shading, prediction["normals"], num_lights=host["relight_lights"]
            )
            if host.get("albedo_from_image"):  # the graph's image / shading, now / relit
                prediction["albedo"] = prediction["albedo"] * shading / relit
            prediction["shading"] = relit
    return predictions


def _flow_predictions(
    outputs: dict[str, Tensor], sizes: Sequence[tuple[int, int]], targets: Any, host: dict
) -> list[dict[str, Tensor]]:
    return [{"flow": flow} for flow in outputs["flow"]]


@dataclass(frozen=True)
class ExportFamily:
    """How the models of some recipes are exported and run (module docstring)."""

    name: str
    recipes: tuple[str, ...]
    #: ``graph(model) -> nn.Module``: the exported computation
    graph: Callable[[nn.Module], nn.Module]
    #: ``outputs(model) -> names`` of the graph's outputs, in order
    outputs: Callable[[nn.Module], tuple[str, ...]]
    #: ``(outputs, sizes, targets, host) -> per-image dicts`` as the eager model returns them
    predictions: Callable[..., list[dict[str, Tensor]]]
    #: the graph's inputs: ``("images",)`` or the two frames of a flow model
    inputs: tuple[str, ...] = ("images",)
    #: ``host(model) -> dict``: JSON values the host-side steps need
    host: Callable[[nn.Module], dict] = lambda model: {}
    #: images of different sizes share one batch, padded on the host with ``host["pad"]``
    pads_batches: bool = False
    #: run onnxscript's graph optimiser after export (on RAFT's unrolled iterations it gives
    #: a graph that fails at other batch sizes; ONNX Runtime optimises a graph when it loads
    #: it anyway)
    optimize: bool = True


FAMILIES: tuple[ExportFamily, ...] = (
    ExportFamily(
        name="segmentation",
        recipes=("fcn32s", "fcn16s", "fcn8s"),
        graph=SegmentationGraph,
        outputs=lambda model: ("semantic", "semantic_logits"),
        predictions=_segmentation_predictions,
        host=lambda model: {"pad": _mean_colour(model)},
        pads_batches=True,
    ),
    ExportFamily(
        name="depth",
        recipes=("monodepth",),
        graph=DepthGraph,
        outputs=lambda model: ("disparity",),
        predictions=_depth_predictions,
        host=lambda model: {"focal": model.focal, "baseline": model.baseline},
    ),
    ExportFamily(
        name="dense_heads",
        recipes=("normals", "intrinsic"),
        graph=DenseHeadsGraph,
        outputs=lambda model: tuple(model.heads),
        predictions=_head_predictions,
        host=lambda model: {
            "relight": bool(getattr(model, "relight", False)),
            "relight_lights": int(getattr(model, "relight_lights", 1)),
            "albedo_from_image": bool(getattr(model, "albedo_from_image", False)),
        },
    ),
    ExportFamily(
        name="flow",
        recipes=("raft_small", "flownet_s"),
        graph=FlowGraph,
        outputs=lambda model: ("flow",),
        predictions=_flow_predictions,
        inputs=("image1", "image2"),
        optimize=False,
    ),
)


def family_for(recipe: str) -> ExportFamily:
    """The export family of ``recipe``; a clear error for recipes that cannot be exported yet."""
    for family in FAMILIES:
        if recipe in family.recipes:
            return family
    supported = sorted(name for family in FAMILIES for name in family.recipes)
    raise ValueError(
        f"recipe {recipe!r} cannot be exported yet; exportable recipes: {', '.join(supported)}"
    )


def sample_graph_inputs(family: ExportFamily, batch: int, height: int, width: int) -> tuple:
    """Random inputs of the graph's shape, to trace it."""
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.rand(batch, 3, height, width, generator=generator) for _ in family.inputs)
