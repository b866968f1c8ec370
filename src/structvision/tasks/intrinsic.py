"""Recipes ``normals`` and ``intrinsic``: surface normals (optionally with depth) and the
decomposition of an image into albedo and shading, trained on ``world``'s exact layers.

Both start their small trunk from ``zoo:classifier_shapes`` (``--set model.pretrained=none``
trains from scratch). ``normals`` is scored with Fouhey's protocol (mean, median, rmse, a11/a22/a30, every pixel
pooled); ``intrinsic`` with the scale-invariant MSE, Grosse's LMSE and Bell's WHDR (on pairs
drawn from the true albedo, or an IIW folder's judgements). Folders on disk: MIT intrinsic
images and IIW for ``intrinsic`` (``--data PATH``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from structvision.data.collate import collate_detection
from structvision.data.spec import build_dataset
from structvision.evaluation.intrinsic import IntrinsicEvaluator, NormalEvaluator
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task, from_scratch_training

__all__ = ["build_intrinsic", "build_normals", "draw_intrinsic", "draw_normals"]

NORMALS_OPTIONS = ("width", "with_depth", "depth_weight", "pretrained")
INTRINSIC_OPTIONS = (
    "width",
    "shading_channels",
    "reconstruction_weight",
    "ordinal_weight",
    "albedo_from_image",
    "with_normals",
    "normals_weight",
    "relight",
    "relight_lights",
    "pretrained",
    "init",
)


def _with_trunk(model: nn.Module, pretrained: str | None) -> nn.Module:
    from structvision.models.pretrained import start_from_classifier

    try:
        return start_from_classifier(model, pretrained, arch="small", small_archs=("small",))
    except (ValueError, FileNotFoundError) as error:
        raise RecipeError(str(error)) from None


def build_normals(*, pretrained: str | None = None, **options: Any) -> nn.Module:
    """:class:`NormalsNet`; ``pretrained``: the classifier whose trunk starts it."""
    from structvision.models.intrinsic import NormalsNet

    return _with_trunk(NormalsNet(**options), pretrained)


def build_intrinsic(
    *, pretrained: str | None = None, init: str | None = None, **options: Any
) -> nn.Module:
    """:class:`IntrinsicNet`; ``pretrained``: the classifier whose trunk starts it; ``init``: a
    trained intrinsic model to fine-tune (see :func:`init_from_intrinsic`)."""
    from structvision.models.intrinsic import IntrinsicNet

    return init_from_intrinsic(_with_trunk(IntrinsicNet(**options), pretrained), init)


def init_from_intrinsic(model: nn.Module, init: str | None) -> nn.Module:
    """``model`` started from the trained intrinsic model ``init`` (``zoo:NAME``, a run or
    checkpoint folder; nothing happens for ``None``): every weight is copied, and where
    ``model`` has heads the source lacks (``with_normals`` added), the prediction layers'
    channels of the shared heads are copied and the new head's keep their initialisation; the
    final scale's weights on the new head's coarse predictions start at zero, so the shared
    heads' outputs are the source's until training moves them."""
    if init is None:
        return model
    from structvision.engine import CheckpointError
    from structvision.tasks.run import load_trained_model

    try:
        recipe, source, _ = load_trained_model(init)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        raise RecipeError(f"model.init {init}: cannot read it ({error})") from None
    heads, source_heads = list(model.heads.items()), list(getattr(source, "heads", {}).items())
    if recipe.name != "intrinsic" or heads[: len(source_heads)] != source_heads:
        raise RecipeError(
            f"model.init {init}: cannot fine-tune from it, it must be an intrinsic model whose "
            f"heads {dict(source_heads)} begin this one's {dict(heads)} (recipe {recipe.name})"
        )
    own, theirs = model.state_dict(), source.cpu().state_dict()
    if set(own) != set(theirs):
        raise RecipeError(f"model.init {init}: its layers differ from this model's (model.width?)")
    for key, value in theirs.items():
        if own[key].shape == value.shape:
            own[key] = value
        elif key.startswith(("predict2.", "predict3.")) and own[key].shape[1:] == value.shape[1:]:
            own[key][: value.shape[0]] = value  # the shared heads' channels come first
        elif key == "scale3.0.weight" and own[key].shape[0] == value.shape[0]:
            # the final scale reads [image features, scale 2's predictions in head order]: the
            # new heads' predictions come last and start with zero weight, so that the shared
            # heads start exactly as the source's
            own[key].zero_()
            own[key][:, : value.shape[1]] = value
        else:
            raise RecipeError(
                f"model.init {init}: {key} has shape {tuple(value.shape)} there and "
                f"{tuple(own[key].shape)} here (model.width?)"
            )
    model.load_state_dict(own)
    return model


def normals_picture(normals: Tensor) -> Tensor:
    """Unit normals ``(3, H, W)`` as the usual colour picture ``(n + 1) / 2``, uint8."""
    return ((normals.detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)


def _picture(image: Tensor) -> Tensor:
    return (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def draw_normals(
    image: Tensor,
    prediction: dict,
    class_names: Sequence[str] = (),
    *,
    score_threshold: float = 0.5,
    target: dict | None = None,
) -> Tensor:
    """Image | predicted normals | true normals (given a target): ``(3, H, kW)``."""
    parts = [_picture(image), normals_picture(prediction["normals"])]
    if target is not None and target.get("normals") is not None:
        parts.append(normals_picture(target["normals"]))
    return torch.cat(parts, dim=2)


def draw_intrinsic(
    image: Tensor,
    prediction: dict,
    class_names: Sequence[str] = (),
    *,
    score_threshold: float = 0.5,
    target: dict | None = None,
) -> Tensor:
    """Image | albedo | shading, the true ones below (given a target), each scaled to its
    maximum (the decomposition is up to scale): ``(3, H or 2H, 3W)``."""

    def scaled(layer: Tensor) -> Tensor:
        layer = layer.detach().float().cpu()
        layer = layer.expand(3, -1, -1) if layer.shape[0] == 1 else layer
        return _picture(layer / layer.max().clamp(min=1e-6))

    rows = [
        torch.cat([_picture(image), scaled(prediction["albedo"]), scaled(prediction["shading"])], 2)
    ]
    if target is not None and "albedo" in target and "shading" in target:
        rows.append(
            torch.cat([_picture(image), scaled(target["albedo"]), scaled(target["shading"])], 2)
        )
    return torch.cat(rows, dim=1)


def normal_evaluator(dataset: Any = None) -> NormalEvaluator:
    return NormalEvaluator()


def intrinsic_evaluator(dataset: Any = None) -> IntrinsicEvaluator:
    return IntrinsicEvaluator()


DENSE_TRAINING = from_scratch_training()


def _setup(recipe: str, build, needs: tuple[str, ...], evaluator):
    def setup(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
        try:
            train = build_dataset(data, split="train")
            val = build_dataset(val_data or data, split="val")
        except ValueError as error:
            raise RecipeError(f"{recipe}: {error}") from None
        sample = train[0][1]
        missing = [key for key in needs if key not in sample]
        if missing:
            raise RecipeError(
                f"{recipe} trains on {', '.join(needs)}: the samples of {data} lack {missing} (use 'world')"
            )
        from structvision.models.pretrained import with_default_trunk

        kwargs = with_default_trunk(dict(model_overrides))
        return Task(
            model=build(**kwargs),
            model_config={"recipe": recipe, "kwargs": kwargs, "class_names": []},
            train_dataset=train,
            val_dataset=val,
            collate_fn=collate_detection,
            evaluator_factory=evaluator,
            train_config=DENSE_TRAINING,
        )

    return setup


RECIPES["normals"] = Recipe(
    name="normals",
    summary="Surface normals (optionally with depth) from one image, multi-scale network, on world",
    setup=_setup("normals", build_normals, ("normals",), normal_evaluator),
    build_model=build_normals,
    build_evaluator=normal_evaluator,
    collate_fn=collate_detection,
    draw=draw_normals,
    model_options=NORMALS_OPTIONS,
    train_defaults=DENSE_TRAINING,
)

RECIPES["intrinsic"] = Recipe(
    name="intrinsic",
    summary="Intrinsic images: albedo and shading from one image (I = A * S), on world",
    setup=_setup("intrinsic", build_intrinsic, ("albedo", "shading"), intrinsic_evaluator),
    build_model=build_intrinsic,
    build_evaluator=intrinsic_evaluator,
    collate_fn=collate_detection,
    draw=draw_intrinsic,
    model_options=INTRINSIC_OPTIONS,
    train_defaults=DENSE_TRAINING,
)
