"""`structvision.load`: a trained model as a callable predictor.

    predictor = structvision.load("runs/faster_rcnn")        # a run or checkpoint folder
    predictions = predictor(["a.jpg", "b.png"])             # one dict per image
    overlay = predictor.draw("a.jpg")                        # (3, H', W') uint8

What detectron2's ``DefaultPredictor`` and Ultralytics' ``YOLO(...)`` give their users: the
model rebuilt from its checkpoint, in eval mode, on the GPU when there is one, taking file paths,
tensors, PIL images or numpy arrays, and returning predictions in each image's own pixel
coordinates.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from structvision.tasks.registry import Recipe

__all__ = ["ImageLike", "Predictor", "as_image", "load"]

#: One image: a file path, a ``(3, H, W)`` tensor (float in [0, 1] or uint8), a PIL image or an
#: ``(H, W, 3)`` / ``(H, W)`` uint8 numpy array.
ImageLike = str | Path | Tensor | np.ndarray | Any


def as_image(image: ImageLike) -> Tensor:
    """``image`` as a ``(3, H, W)`` float32 RGB tensor in ``[0, 1]`` (see `ImageLike`)."""
    from structvision.data.coco import read_rgb_image

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        return read_rgb_image(path)
    if isinstance(image, np.ndarray):
        array = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"a numpy image must be (H, W, 3) or (H, W), got {image.shape}")
        tensor = torch.from_numpy(np.array(array[..., :3], copy=True)).permute(2, 0, 1)
        return _tensor_image(tensor)
    if isinstance(image, Tensor):
        return _tensor_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return as_image(np.asarray(image.convert("RGB")))
    raise TypeError(
        f"cannot read an image from {type(image).__name__}: give a path, a (3, H, W) tensor, "
        "a PIL image or an (H, W, 3) uint8 array"
    )


def _tensor_image(tensor: Tensor) -> Tensor:
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"an image tensor must be (3, H, W), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if not tensor.is_floating_point():
        raise ValueError(f"an image tensor must be float in [0, 1] or uint8, got {tensor.dtype}")
    return tensor.float()


def _to_cpu(prediction: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in prediction.items()}


def filter_by_score(prediction: dict[str, Any], score_threshold: float) -> dict[str, Any]:
    """Keep the instances scoring ``score_threshold`` or more (every per-instance tensor)."""
    if "scores" not in prediction:
        return prediction
    keep = prediction["scores"] >= score_threshold
    return {
        key: value[keep]
        if torch.is_tensor(value) and value.ndim and len(value) == len(keep)
        else value
        for key, value in prediction.items()
    }


class Predictor:
    """A trained model as a function of images.

    Args:
        recipe: the model's recipe (how it draws its predictions).
        model: the model in eval mode (with TTA or the CRF already wrapped around it).
        model_config: the checkpoint's model record (class names, category ids, skeleton...).
        score_threshold: instances scoring less are dropped from the predictions and overlays.

    Attributes:
        class_names: names by label; index 0 is the background.
        device: where the model runs.
    """

    def __init__(
        self,
        *,
        recipe: Recipe,
        model: nn.Module,
        model_config: dict[str, Any],
        score_threshold: float = 0.5,
    ) -> None:
        self.recipe = recipe
        self.model = model.eval()
        self.model_config = model_config
        self.score_threshold = float(score_threshold)
        self.class_names = list(model_config.get("class_names", ()))
        parameter = next(model.parameters(), None)  # an exported model has none: the CPU
        self.device = parameter.device if parameter is not None else torch.device("cpu")

    @torch.no_grad()
    def __call__(
        self, images: ImageLike | Sequence[ImageLike], *, batch_size: int = 1
    ) -> list[dict[str, Tensor]]:
        """Predictions for one image or a list of images: a list with one dict per image, on
        the CPU, in the image's own pixel coordinates (``boxes`` xyxy, ``labels``, ``scores``,
        plus ``masks``, ``keypoints`` or ``semantic`` as the model predicts them). The model
        is called on ``batch_size`` images at a time (mixed sizes padded, as in training)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        batch = list(images) if isinstance(images, (list, tuple)) else [images]
        if self.recipe.data_modality == "flow":
            return self.flow(batch)
        predictions = []
        for start in range(0, len(batch), batch_size):
            pictures = [
                as_image(image).to(self.device) for image in batch[start : start + batch_size]
            ]
            predictions += [
                filter_by_score(_to_cpu(prediction), self.score_threshold)
                for prediction in self.model(pictures)
            ]
        return predictions

    @torch.no_grad()
    def flow(self, frames: Sequence[ImageLike]) -> list[dict[str, Tensor]]:
        """A flow model's ``{"flow": (2, H, W)}`` from each frame to the next: ``N - 1``
        predictions for ``N`` frames of one size (what calling a flow predictor does)."""
        pictures = [as_image(frame) for frame in frames]
        if len(pictures) < 2:
            raise ValueError(f"optical flow needs at least two frames, got {len(pictures)}")
        sizes = {tuple(picture.shape) for picture in pictures}
        if len(sizes) != 1:
            raise ValueError(f"the frames must all have one size, got {sorted(sizes)}")
        return [
            _to_cpu(self.model([torch.cat([first, second]).to(self.device)])[0])
            for first, second in itertools.pairwise(pictures)
        ]

    def draw(self, image: ImageLike, prediction: dict[str, Tensor] | None = None) -> Tensor:
        """The overlay of ``prediction`` (computed when not given) on ``image``:
        ``(3, H', W')`` uint8 (small images are drawn enlarged)."""
        picture = as_image(image)
        if prediction is None:
            prediction = self(picture)[0]
        return draw_prediction(
            self.recipe, picture, prediction, self.model_config, self.score_threshold
        )


def draw_prediction(
    recipe: Recipe,
    image: Tensor,
    prediction: dict[str, Any],
    model_config: dict[str, Any],
    score_threshold: float = 0.5,
    target: dict[str, Any] | None = None,
) -> Tensor:
    """The recipe's overlay of ``prediction`` on ``image``, ``(3, H', W')`` uint8; a recipe
    whose ``draw`` takes ``target`` also shows the ground truth when it is given."""
    class_names = model_config.get("class_names", ())
    if recipe.draw is not None:
        extra: dict[str, Any] = {"model_config": model_config} if recipe.takes_model_config else {}
        if target is not None and "target" in inspect.signature(recipe.draw).parameters:
            extra["target"] = target
        return recipe.draw(image, prediction, class_names, score_threshold=score_threshold, **extra)
    from structvision.viz import draw_instances

    scale = max(1, 256 // max(image.shape[-2:]))
    return draw_instances(
        image, prediction, class_names=class_names, scale=scale, score_threshold=score_threshold
    )


def load(
    path: str | Path,
    *,
    score_threshold: float = 0.5,
    tta: bool = False,
    crf: dict[str, float] | None = None,
    backend: str | None = None,
    relight_normals: str | None = None,
) -> Predictor:
    """A `Predictor` for the model of a run folder or a checkpoint folder.

    ``tta`` averages an R-CNN over each image and its mirror image; ``crf`` (dense-CRF
    parameters, ``{}`` for the defaults) refines a semantic segmentation; ``relight_normals``
    (a normals run or zoo entry) relights an intrinsic model's shading with its normals. The
    checkpoint alone is read: no file used only at training time (such as initial weights) is
    needed.
    """
    from structvision.tasks.run import _with_crf, _with_relight, _with_tta, load_trained_model

    recipe, model, model_config = load_trained_model(path, backend=backend)
    model = _with_crf(_with_tta(model, recipe, model_config, tta), recipe, crf)
    model = _with_relight(model, recipe, relight_normals)
    return Predictor(
        recipe=recipe, model=model, model_config=model_config, score_threshold=score_threshold
    )
