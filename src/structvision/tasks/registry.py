"""The recipe registry: `Recipe`, `Task` and the plain dict `RECIPES`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset


class RecipeError(ValueError):
    """A recipe that does not exist, or a run that cannot be rebuilt from its files."""


def no_recipes_message() -> str:
    """What to say while no recipe is registered."""
    return (
        "No trainable recipes exist yet: this release ships the data, evaluation and training "
        "engine; the first recipes (fast_rcnn, faster_rcnn) arrive with the detection models."
    )


@dataclass
class Task:
    """Everything ``structvision train`` needs, as built by a recipe's ``setup``.

    ``model_config`` must let the recipe rebuild the model: it holds ``recipe`` (the name),
    ``kwargs`` (for ``build_model``), ``class_names`` (index 0 is background) and, for datasets
    with COCO category ids, ``label_to_category_id``.
    """

    model: nn.Module
    model_config: dict[str, Any]
    train_dataset: Dataset
    val_dataset: Dataset | None
    collate_fn: Callable
    evaluator_factory: Callable[[], Any] | None
    train_config: Any  # structvision.engine.TrainConfig: the recipe's defaults


@dataclass(frozen=True)
class Recipe:
    """A trainable task: how to set it up, rebuild its model and evaluate it."""

    name: str
    summary: str
    setup: Callable[..., Task]
    build_model: Callable[..., nn.Module]
    build_evaluator: Callable[[Dataset], Any]
    collate_fn: Callable
    #: Draws one prediction on its image: ``(image (3, H, W), prediction, class_names, *,
    #: score_threshold)`` -> uint8 (plus ``model_config=`` when ``takes_model_config``).
    draw: Callable[[torch.Tensor, dict, Sequence[str]], torch.Tensor] | None = None
    #: Keys of ``Task.model_config["kwargs"]`` a user may change with ``--set model.KEY=...``.
    model_options: tuple[str, ...] = field(default_factory=tuple)
    #: Whether predictions hold ``semantic_logits`` (so the dense CRF can refine them).
    predicts_semantic: bool = False
    #: Whether ``build_evaluator`` and ``draw`` also take the trained model's ``model_config``
    #: (keyword ``model_config``): for what a dataset alone may not say, such as the keypoint
    #: OKS sigmas and skeleton of a keypoint model evaluated on a COCO file.
    takes_model_config: bool = False
    #: The training settings ``setup`` gives (a `TrainConfig`), for ``structvision recipes NAME``.
    train_defaults: Any = None
    #: Extra sections of a run's ``report.html``:
    #: ``report_sections(model, dataset, model_config) -> list[ReportSection]``.
    report_sections: Callable[..., list] | None = None
    #: The model's input for one ``(image, target)`` sample when it is more than the image
    #: (two-view models: both frames), for the run's overlays; ``None``: the image.
    model_input: Callable[[Any, dict], Any] | None = None
    #: ``build_dataset``'s ``modality`` for this recipe's data on disk (``"flow"`` reads the
    #: flow of a KITTI folder that also has stereo); ``None``: by the folder's layout.
    data_modality: str | None = None

    def evaluator_for(self, dataset: Dataset, model_config: dict[str, Any]) -> Any:
        """``build_evaluator`` for a trained model of this recipe (its ``model_config``)."""
        if self.takes_model_config:
            return self.build_evaluator(dataset, model_config=model_config)
        return self.build_evaluator(dataset)


def from_scratch_training(**changes: Any) -> Any:
    """The training settings the newer single-network recipes start from (flow, tracking,
    normals and intrinsics): 3000 AdamW steps of 8 samples at lr 1e-3 with a cosine decay,
    100 warm-up steps, gradients clipped at norm 10, evaluation every 1000 steps and a
    checkpoint every 500; ``changes`` replace any of them."""
    from structvision.engine import TrainConfig

    base = TrainConfig(
        max_steps=3000,
        batch_size=8,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=100,
        clip_grad_norm=10.0,
        eval_every=1000,
        checkpoint_every=500,
        log_every=20,
    )
    return base.replace(**changes)


#: Model options that only choose a model's initial weights (e.g. a local ImageNet or COCO state
#: dict). A trained model is rebuilt without them: its checkpoint holds every weight, so
#: evaluation, prediction and resumption never read those files again.
INIT_ONLY_OPTIONS = ("weights_path", "init", "pretrained")

#: What each ``--set model.NAME=VALUE`` option means (``structvision recipes NAME`` lists a
#: recipe's options with these texts; defaults are the recipe's model builder's).
MODEL_OPTION_HELP = {
    "arch": "architecture: the recipe's small model (default) or a larger one (RAFT: large)",
    "width": "channels of the small backbone's first stage (later stages double it)",
    "norm": "normalisation of the small backbone: batch, group or frozen",
    "depth": "ResNet depth of the FCN/DeepLab trunk (50, 101)",
    "fpn_channels": "channels of the feature pyramid",
    "min_size": "images are resized so their shorter side is this many pixels",
    "max_size": "... and their longer side at most this many pixels",
    "pooler": "region pooling: Fast R-CNN roi_pool, spp or roi_align; SINT align or pool",
    "mask_pooler": "Mask R-CNN mask features: align (RoIAlign) or pool (RoIPool)",
    "roi_canonical_scale": "box size that maps to the middle FPN level when pooling regions",
    "box_head": "box head: two fully connected layers (default) or conv (4 GroupNorm convs + fc)",
    "box_soft_nms_sigma": "R-CNNs: Gaussian soft-NMS width of the detections (0: NMS)",
    "trainable_layers": "ResNet stages trained (0-5); the rest are frozen",
    "weights_path": "a local ImageNet state dict to start the backbone from",
    "init": "a local torchvision state dict to start from (a COCO detector; RAFT for flow), "
    "or a trained model to fine-tune (zoo:NAME or a run: R-CNNs, intrinsic)",
    "pretrained": "the classifier whose trunk starts the small backbone: zoo:NAME, a run of "
    "the classifier recipe or a state-dict file; none trains from scratch",
    "proposal_mode": "Fast R-CNN proposals: selective search mode (fast or quality)",
    "max_proposals": "Fast R-CNN: proposals kept per image",
    "cache_dir": "Fast R-CNN: where Selective Search proposals are cached",
    "keypoint_roi_expansion": "keypoint heatmaps cover each box grown by this factor",
    "mask_rescoring": "rank detections by box score times mask confidence (true/false)",
    "mask_paste": "place masks where their training targets were sampled (where_sampled) or "
    "as torchvision does (torchvision)",
    "keypoint_rescoring": "rank detections by box score times pose confidence (true/false)",
    "keypoint_subpixel": "refine each keypoint between pixels at its heatmap peak (true/false)",
    "keypoint_target_sigma": "train on Gaussian heatmap targets of this width in cells, centred "
    "exactly on each keypoint (0: one-hot cells, torchvision's)",
    "keypoint_layers": "widths of the keypoint head's 3x3 convolutions, e.g. (128,128,128,128)",
    "keypoint_sigmas": "OKS sigmas stored with the model (for a new keypoint layout)",
    "trainable_upsampling": "FCN: learn the upsampling deconvolutions (else fixed bilinear)",
    "crf_loss_weight": "FCN: weight of the dense-CRF regularised loss (scribble training)",
    "crf_sxy": "FCN CRF loss: spatial bandwidth, pixels",
    "crf_srgb": "FCN CRF loss: colour bandwidth",
    "crf_scale": "FCN CRF loss: image scale it is computed at",
    "with_depth": "normals: also predict depth from the same trunk (Eigen & Fergus's joint model)",
    "depth_weight": "normals: weight of the depth loss when predicting depth too",
    "shading_channels": "intrinsic: shading channels, 3 (coloured light) or 1 (grey)",
    "reconstruction_weight": "intrinsic: weight of the log-domain reconstruction term",
    "ordinal_weight": "intrinsic: weight of the ordinal reflectance loss (IIW judgements)",
    "albedo_from_image": "intrinsic: return the image divided by the predicted shading as the "
    "albedo, so that their product is the image (true/false; false: the albedo head's output)",
    "with_normals": "intrinsic: also predict unit normals from the same network",
    "normals_weight": "intrinsic: weight of the normals loss when predicting normals too",
    "relight": "intrinsic: replace the shading by its levels under a global Lambertian "
    "lighting (ambient + directional lights) fitted to it with the predicted normals "
    "(needs with_normals)",
    "relight_lights": "intrinsic: how many directional lights the relighting fits",
    "pool_size": "SINT: RoI pooling output size per layer",
    "embedding": "SINT: width of the fully connected layer on the coarsest map (0: none)",
    "margin": "SINT: margin of the contrastive loss",
    "caffe_loss": "SINT: Caffe's form of the contrastive loss (max(0, m - d^2) for negatives)",
    "regression_head": "SINT: also learn a box regression head (candidate-to-target offsets)",
    "regression_trains_trunk": "SINT: the box regression loss also trains the descriptors "
    "and the trunk (true/false)",
    "exemplar_size": "SiamFC: exemplar crop size, pixels",
    "search_size": "SiamFC: search crop size, pixels",
    "num_updates": "RAFT: recurrent refinement steps at inference",
    "train_updates": "RAFT: recurrent refinement steps in training",
    "batch_norm": "FlowNetS: batch norm after each encoder convolution (FlowNetS-BN)",
    "max_disp": "Monodepth: largest disparity, a fraction of the image width",
    "lr_consistency": "Monodepth: use the left-right consistency loss (false: the ablation)",
    "supervised": "Monodepth: train on the true disparities instead (an upper bound)",
    "smoothness_weight": "Monodepth: weight of the edge-aware smoothness loss",
    "lr_weight": "Monodepth: weight of the left-right consistency loss",
    "post_process": "Monodepth: average with the flipped image's prediction at inference",
}

#: The registry of recipes, by name. Later modules add their recipes here.
RECIPES: dict[str, Recipe] = {}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name raises `RecipeError` listing the known ones."""
    if name not in RECIPES:
        if not RECIPES:
            raise RecipeError(f"unknown recipe {name!r}. {no_recipes_message()}")
        raise RecipeError(
            f"unknown recipe {name!r}; available recipes: {', '.join(sorted(RECIPES))}"
        )
    return RECIPES[name]
