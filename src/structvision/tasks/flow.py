"""Recipes ``raft_small`` and ``flownet_s``: optical flow, trained from scratch on ``world-flow``.

A sample is frame 1 with ``image_2`` (frame 2) and the true ``flow`` in its target; the collate
function stacks the two frames into one ``(6, H, W)`` pair per sample, which the flow models
take (:mod:`structvision.models.flow.common`). Evaluated with :class:`FlowEvaluator`: end-point
error over every pixel with ground truth, and separately over the pixels that stay visible in
frame 2 (``epe_noc``) and those that do not (``epe_occ``); KITTI folders are scored per image
(KITTI's convention), everything else per pixel (Sintel's). Flow folders on disk (MPI-Sintel,
KITTI flow 2015, FlyingChairs, Middlebury) are read with ``--data PATH``.

``raft_small`` can start from a torchvision RAFT state dict (``--set model.init=FILE``, e.g.
what ``torchvision.models.optical_flow.raft_small(weights="DEFAULT")`` downloads), with
``model.arch=large`` for ``raft_large``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from structvision.data.spec import build_dataset
from structvision.evaluation.flow import FlowEvaluator
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task, from_scratch_training

__all__ = ["build_flownet_s", "build_raft", "collate_flow", "draw_flow", "flow_evaluator"]

RAFT_OPTIONS = ("arch", "num_updates", "train_updates", "init")
FLOWNET_OPTIONS = ("width", "batch_norm")


def build_raft(*, arch: str = "small", init: str | None = None, **options: Any) -> nn.Module:
    """RAFT by configuration name (``small``, ``large``); ``init``: a torchvision RAFT state
    dict file of that configuration to start from."""
    from structvision.models.flow import RAFT_CONFIGS, raft

    if arch not in RAFT_CONFIGS:
        raise RecipeError(
            f"model.arch {arch!r} is unknown; choose one of {', '.join(RAFT_CONFIGS)}"
        )
    model = raft(**RAFT_CONFIGS[arch], **options)
    if init is not None:
        from structvision.convert import read_state_dict_file

        state = read_state_dict_file(init, what="model.init")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RecipeError(
                f"model.init {init} is not a torchvision RAFT-{arch} state dict: missing "
                f"{missing[:3]}, unexpected {unexpected[:3]} (set model.arch to its size)"
            )
    return model


def build_flownet_s(**options: Any) -> nn.Module:
    """FlowNetS (``width``: channels of its first layer, 64 in the paper)."""
    from structvision.models.flow import flownet_s

    return flownet_s(**options)


def collate_flow(batch: Sequence[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """``[(frame 1, target with image_2), ...]`` -> ``([pair (6, H, W), ...], [target, ...])``."""
    pairs, targets = [], []
    for index, (image, target) in enumerate(batch):
        if "image_2" not in target:
            raise ValueError(
                f"sample {index} has no 'image_2': flow needs frame pairs (world-flow or a flow "
                "folder)"
            )
        pairs.append(pair_input(image, target))
        targets.append(target)
    return pairs, targets


def pair_input(image: Tensor, target: dict) -> Tensor:
    """The model input of one sample: its two frames stacked, ``(6, H, W)``."""
    return torch.cat([image, target["image_2"].to(image)])


def flow_evaluator(dataset: Dataset | None = None) -> FlowEvaluator:
    """Per-image pooling for KITTI folders (its devkit's), per-pixel for everything else."""
    from structvision.data.flow import KittiFlowDataset

    convention = "images" if isinstance(dataset, KittiFlowDataset) else "pixels"
    return FlowEvaluator(convention=convention)


def draw_flow(
    image: Tensor,
    prediction: dict,
    class_names: Sequence[str] = (),
    *,
    score_threshold: float = 0.5,
    target: dict | None = None,
) -> Tensor:
    """Frame 1, then the predicted flow in the Middlebury colours, then (given a target with
    ``flow``) the true flow, both coloured on the true flow's scale: ``(3, kH, W)`` uint8."""
    from structvision.viz import flow_to_image

    picture = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    predicted = prediction["flow"].detach().float().cpu()
    rows = [picture]
    if target is not None and target.get("flow") is not None:
        true = target["flow"].detach().float().cpu()
        scale = float(true.norm(dim=0).max()) + 1e-6
        rows += [flow_to_image(predicted, max_flow=scale), flow_to_image(true, max_flow=scale)]
    else:
        rows.append(flow_to_image(predicted))
    return torch.cat(rows, dim=1)


#: RAFT's own schedule (AdamW, one-cycle at 4e-4 for FlyingChairs) shortened for a CPU: AdamW at
#: 4e-4 with a cosine decay, batches of 4 frame pairs at 128 x 256.
RAFT_TRAINING = from_scratch_training(batch_size=4, lr=4e-4, weight_decay=1e-5, clip_grad_norm=1.0)

#: FlowNetS: AdamW at 4e-4 (the paper used Adam at 1e-4 for 500k+ iterations), cosine decay.
FLOWNET_TRAINING = from_scratch_training(lr=4e-4, weight_decay=4e-4)


def _flow_data(data: str, val_data: str | None, recipe: str) -> tuple[Dataset, Dataset]:
    try:
        train = build_dataset(data, split="train", modality="flow")
        val = build_dataset(val_data or data, split="val", modality="flow")
    except ValueError as error:
        raise RecipeError(f"{recipe}: {error}") from None
    for dataset, name in ((train, "training"), (val, "validation")):
        if len(dataset) == 0:
            raise RecipeError(f"{recipe}: the {name} data is empty")
    sample = train[0][1]
    if "image_2" not in sample or "flow" not in sample:
        raise RecipeError(
            f"{recipe} trains on frame pairs with true flow: the samples of {data} have "
            f"{sorted(sample)} (use 'world-flow' or a flow folder with ground truth)"
        )
    return train, val


def _setup(recipe: str, build, defaults: dict, training: Any):
    def setup(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
        train, val = _flow_data(data, val_data, recipe)
        kwargs = {**defaults, **model_overrides}
        return Task(
            model=build(**kwargs),
            model_config={"recipe": recipe, "kwargs": kwargs, "class_names": []},
            train_dataset=train,
            val_dataset=val,
            collate_fn=collate_flow,
            evaluator_factory=lambda: flow_evaluator(val),
            train_config=training,
        )

    return setup


RECIPES["raft_small"] = Recipe(
    name="raft_small",
    summary="RAFT-small optical flow (all-pairs correlation, recurrent updates), from scratch on "
    "world-flow",
    setup=_setup("raft_small", build_raft, {"arch": "small"}, RAFT_TRAINING),
    build_model=build_raft,
    build_evaluator=flow_evaluator,
    collate_fn=collate_flow,
    draw=draw_flow,
    model_options=RAFT_OPTIONS,
    train_defaults=RAFT_TRAINING,
    model_input=pair_input,
    data_modality="flow",
)

RECIPES["flownet_s"] = Recipe(
    name="flownet_s",
    summary="FlowNetS optical flow (encoder-decoder on the stacked frames), from scratch on "
    "world-flow",
    setup=_setup("flownet_s", build_flownet_s, {"width": 32}, FLOWNET_TRAINING),
    build_model=build_flownet_s,
    build_evaluator=flow_evaluator,
    collate_fn=collate_flow,
    draw=draw_flow,
    model_options=FLOWNET_OPTIONS,
    train_defaults=FLOWNET_TRAINING,
    model_input=pair_input,
    data_modality="flow",
)
