"""Recipes ``sint`` and ``siamfc``: single-object trackers learned offline on ``world-track``.

Training samples are frame pairs of one sequence (:class:`TrackingPairs`): for SINT the two
frames stacked, the target box of the first and boxes sampled in the second labelled by the
paper's IoU rule; for SiamFC the exemplar crop of the first frame and a search crop of the
second around the target (jittered by up to a quarter of the context square). Validation and
``eval`` run whole sequences through the tracker (one-pass evaluation,
:class:`~structvision.evaluation.tracking.TrackingEvaluator`): ``world-track`` or an OTB /
GOT-10k / LaSOT folder (``--data PATH``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from structvision.data.spec import build_dataset
from structvision.evaluation.tracking import TrackingEvaluator
from structvision.tasks.registry import RECIPES, Recipe, RecipeError, Task, from_scratch_training

__all__ = ["TrackingPairs", "build_siamfc", "build_sint", "collate_tracking", "draw_track"]

SINT_OPTIONS = (
    "width",
    "norm",
    "pool_size",
    "embedding",
    "pooler",
    "margin",
    "caffe_loss",
    "regression_head",
    "regression_trains_trunk",
    "pretrained",
)
SIAMFC_OPTIONS = ("width", "exemplar_size", "search_size")


def build_sint(*, pretrained: str | None = None, **options: Any) -> nn.Module:
    """SINT on the small trunk; ``pretrained``: a classifier whose trunk starts it (the paper
    starts from an ImageNet network; the recipe from ``zoo:classifier_shapes``)."""
    from structvision.models.tracking import sint_small
    from structvision.tasks.intrinsic import _with_trunk

    return _with_trunk(sint_small(**options), pretrained)


def build_siamfc(**options: Any) -> nn.Module:
    """SiamFC (``width`` scales the embedding's channels; 1.0 is the paper's)."""
    from structvision.models.tracking import siamfc

    return siamfc(**options)


class TrackingPairs(Dataset):
    """Training pairs from a sequence generator with ``render_frames`` (``world-track``).

    Sample ``i`` takes sequence ``i``, two frames at most ``max_gap`` apart where the target is
    visible (drawn from a generator seeded by ``seed`` and ``i``), and builds the ``kind``'s
    sample (module docstring).
    """

    def __init__(
        self,
        sequences: Any,
        *,
        kind: str,
        max_gap: int = 30,
        seed: int = 0,
        crop_sizes: tuple[int, int] = (127, 255),
    ) -> None:
        if kind not in ("sint", "siamfc"):
            raise ValueError(f"kind must be 'sint' or 'siamfc', got {kind!r}")
        if not hasattr(sequences, "render_frames"):
            raise RecipeError(
                "tracking recipes train on frame pairs of a generator (world-track); sequence "
                "folders (OTB, GOT-10k, LaSOT) are for evaluation"
            )
        self.sequences = sequences
        self.kind = kind
        self.max_gap = max_gap
        self.seed = seed
        self.crop_sizes = crop_sizes  # SiamFC's exemplar and search crops
        self.frames = sequences.config.num_frames

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        first = int(torch.randint(0, self.frames, (1,), generator=generator))
        gap = int(torch.randint(1, self.max_gap + 1, (1,), generator=generator))
        second = (
            min(self.frames - 1, first + gap) if first + gap < self.frames else max(0, first - gap)
        )
        frames, boxes, visible = self.sequences.render_frames(index, [first, second])
        if not visible.all():  # fall back to the first frame against itself
            frames, boxes = frames[[0, 0]], boxes[[0, 0]]
            if not visible[0]:
                frames, boxes, _ = self.sequences.render_frames(index, [0, 0])
        if self.kind == "sint":
            return self._sint(frames, boxes, generator)
        return self._siamfc(frames, boxes, generator)

    def _sint(self, frames: Tensor, boxes: Tensor, generator: torch.Generator):
        from structvision.models.tracking import sample_training_boxes

        size = tuple(frames.shape[-2:])
        candidates, labels = sample_training_boxes(boxes[1], generator, count=32, image_size=size)
        near, overlapping = sample_training_boxes(
            boxes[1], generator, count=32, positive_iou=0.4, image_size=size
        )
        target = {
            "query_box": boxes[0].float(),
            "boxes": candidates,
            "labels": labels,
            "box": boxes[1].float(),  # for the regression head: the target, and boxes to refine
            "reg_boxes": near[overlapping > 0],
        }
        return torch.cat([frames[0], frames[1]]), target

    def _siamfc(self, frames: Tensor, boxes: Tensor, generator: torch.Generator):
        from structvision.models.tracking.siamfc import _context_side, crop_square

        def centre(box: Tensor) -> list[float]:
            return ((box[:2] + box[2:]) / 2).tolist()

        exemplar, search = self.crop_sizes
        exemplar_side = _context_side(*(boxes[0, 2:] - boxes[0, :2]).tolist())
        search_side = _context_side(*(boxes[1, 2:] - boxes[1, :2]).tolist()) * search / exemplar
        # centred on the target, as the paper trains: its positives are the centre cells
        return {
            "exemplar": crop_square(frames[0], centre(boxes[0]), exemplar_side, exemplar),
            "search": crop_square(frames[1], centre(boxes[1]), search_side, search),
        }, {}


def collate_tracking(batch: Sequence[tuple[Any, dict]]) -> tuple[list[Any], list[dict]]:
    """Training pairs as they are; a sequence ``(frames, target)`` becomes the model's
    ``{"frames", "init_box"}`` input (the tracker starts from the first true box)."""
    inputs, targets = [], []
    for sample, target in batch:
        is_pair = isinstance(sample, dict) or "query_box" in target
        inputs.append(sample if is_pair else _sequence_input(sample, target))
        targets.append(target)
    return inputs, targets


def tracking_evaluator(dataset: Dataset | None = None) -> TrackingEvaluator:
    return TrackingEvaluator()


def draw_track(
    image: Tensor,
    prediction: dict,
    class_names: Sequence[str] = (),
    *,
    score_threshold: float = 0.5,
    target: dict | None = None,
) -> Tensor:
    """Six frames of the sequence, predicted box red and true box green: ``(3, 2H, 3W)``."""
    from structvision.viz import draw_instances, tile_images

    frames = (
        image if isinstance(image, Tensor) else torch.stack([image[i] for i in range(len(image))])
    )
    count = len(frames)
    picks = sorted({round(i * (count - 1) / 5) for i in range(6)})
    pictures = []
    for index in picks:
        boxes = [prediction["boxes"][index].float()]
        labels = [1]
        if target is not None and torch.isfinite(target["boxes"][index]).all():
            boxes.append(target["boxes"][index].float())
            labels.append(2)
        drawn = draw_instances(
            frames[index],
            {
                "boxes": torch.stack(boxes),
                "labels": torch.tensor(labels),
                "scores": torch.ones(len(boxes)),
            },
            class_names=["", "tracked", "truth"],
            score_threshold=0.0,
            scale=max(1, 256 // max(frames.shape[-2:])),
        )
        pictures.append(drawn)
    return tile_images(pictures, columns=3)


def _tracking_data(data: str, val_data: str | None, recipe: str, kwargs: dict):
    try:
        train_sequences = build_dataset(data, split="train")
        val = build_dataset(
            val_data or f"{data.split(':')[0]}:num_images=20", split="val", modality="tracking"
        )
    except ValueError as error:
        raise RecipeError(f"{recipe}: {error}") from None
    sizes = (kwargs.get("exemplar_size", 127), kwargs.get("search_size", 255))
    return TrackingPairs(train_sequences, kind=recipe, crop_sizes=sizes), val


SINT_TRAINING = from_scratch_training(lr=5e-4)

SIAMFC_TRAINING = from_scratch_training()


def _setup(recipe: str, build, defaults: dict, training: Any):
    def setup(*, data: str, val_data: str | None, model_overrides: dict) -> Task:
        kwargs = {**defaults, **model_overrides}
        if recipe == "sint":
            from structvision.models.pretrained import with_default_trunk

            kwargs = with_default_trunk(kwargs)
        pairs, val = _tracking_data(data, val_data, recipe, kwargs)
        return Task(
            model=build(**kwargs),
            model_config={"recipe": recipe, "kwargs": kwargs, "class_names": []},
            train_dataset=pairs,
            val_dataset=val,
            collate_fn=collate_tracking,
            evaluator_factory=tracking_evaluator,
            train_config=training,
        )

    return setup


def _sequence_input(frames: Any, target: dict) -> dict:
    return {"frames": frames, "init_box": target["boxes"][0]}


RECIPES["sint"] = Recipe(
    name="sint",
    summary="SINT: Siamese instance search tracker (no model update), trained on world-track",
    setup=_setup(
        "sint",
        build_sint,
        {"regression_head": True, "regression_trains_trunk": True},  # BENCHMARKS.md
        SINT_TRAINING,
    ),
    build_model=build_sint,
    build_evaluator=tracking_evaluator,
    collate_fn=collate_tracking,
    draw=draw_track,
    model_options=SINT_OPTIONS,
    train_defaults=SINT_TRAINING,
    model_input=_sequence_input,
    data_modality="tracking",
)

RECIPES["siamfc"] = Recipe(
    name="siamfc",
    summary="SiamFC: fully convolutional Siamese tracker, trained on world-track",
    setup=_setup("siamfc", build_siamfc, {"width": 0.5}, SIAMFC_TRAINING),
    build_model=build_siamfc,
    build_evaluator=tracking_evaluator,
    collate_fn=collate_tracking,
    draw=draw_track,
    model_options=SIAMFC_OPTIONS,
    train_defaults=SIAMFC_TRAINING,
    model_input=_sequence_input,
    data_modality="tracking",
)


def tracker_for(run: str | Path, **settings: Any):
    """A tracker by name: ``opencv:csrt`` (``kcf``, ``mil``), or a run / checkpoint / ``zoo:NAME``
    of the ``sint`` or ``siamfc`` recipe (``settings`` go to its tracker)."""
    from structvision.models.tracking import OpenCVTracker

    text = str(run)
    if text.startswith("opencv:"):
        if settings:
            raise RecipeError(
                f"{text} takes no tracker settings, got {', '.join(sorted(settings))}"
            )
        try:
            return OpenCVTracker(text.removeprefix("opencv:"))
        except ValueError as error:
            raise RecipeError(str(error)) from None
    from structvision.tasks.run import load_trained_model

    recipe, model, _ = load_trained_model(run)
    return _tracker(recipe.name, str(run), model, settings)


def _tracker(recipe: str, run: str, model: nn.Module, settings: dict[str, Any]):
    """``model``'s tracker with ``settings``; unknown names and bad values raise `RecipeError`."""
    from structvision.models.tracking import SiamFCTracker, SINTTracker

    trackers = {"sint": SINTTracker, "siamfc": SiamFCTracker}
    if recipe not in trackers:
        raise RecipeError(f"{run} is a {recipe!r} model, not a tracker (sint, siamfc)")
    tracker = trackers[recipe]
    known = [name for name in inspect.signature(tracker).parameters if name != "network"]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise RecipeError(
            f"{', '.join(unknown)}: not a setting of the {recipe} tracker; "
            f"its settings are {', '.join(known)}"
        )
    try:
        return tracker(model, **settings)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{recipe} tracker settings {settings}: {error}") from None


def with_tracker_settings(recipe: str, run: str, model: nn.Module, settings: dict[str, Any]):
    """``model`` (a sint or siamfc network) set to track with ``settings`` when it evaluates
    sequences (``structvision eval --set``), checked as :func:`tracker_for` checks them."""
    _tracker(recipe, run, model, settings)
    model.tracker_settings = dict(settings)
    return model


def read_otb_box(text: str) -> Tensor:
    """``"x,y,w,h"`` in OTB's convention (1-based pixels) -> ``(4,)`` xyxy 0-based."""
    try:
        x, y, w, h = (float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise RecipeError(
            f"--init {text!r}: give x,y,w,h (four numbers, OTB's 1-based pixels)"
        ) from None
    if w <= 0 or h <= 0:
        raise RecipeError(f"--init {text!r}: the width and height must be positive")
    return torch.tensor([x - 1, y - 1, x - 1 + w, y - 1 + h], dtype=torch.float64)


def run_track(
    run: str | Path,
    source: str | Path,
    *,
    init: str,
    out: str | Path,
    video: bool = True,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Track from ``init`` (OTB ``x,y,w,h``) through a video file or a folder of frames, with
    the tracker's ``settings`` (:func:`tracker_for`).

    Writes ``OUT/boxes.txt`` (one OTB ``x,y,w,h`` line per frame, 1-based pixels, as
    ``groundtruth_rect.txt``), ``OUT/frames/0001.jpg ...`` (each frame with its box) and, with
    ``video``, ``OUT/track.avi``; returns ``{"frames", "fps", "boxes"}``.
    """
    import cv2
    import numpy as np

    from structvision.data.tracking import FrameList, TrackingDataError, _frames
    from structvision.data.video import VIDEO_SUFFIXES, read_video_frames
    from structvision.viz import draw_instances, save_png

    source = Path(source)
    if source.is_dir():
        try:
            frames: Sequence[Tensor] = FrameList(_frames(source))
        except TrackingDataError as error:
            raise RecipeError(str(error)) from None
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        frames = [frame for _, frame in read_video_frames(source)]
    else:
        raise RecipeError(
            f"{source}: give a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder of frames"
        )
    tracker = tracker_for(run, **(settings or {}))
    boxes, seconds = tracker.track(frames, read_otb_box(init))
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    lines = [
        f"{x1 + 1:.2f},{y1 + 1:.2f},{x2 - x1:.2f},{y2 - y1:.2f}"
        for x1, y1, x2, y2 in boxes.tolist()
    ]
    (out / "boxes.txt").write_text("\n".join(lines) + "\n")
    writer = None
    for index, box in enumerate(boxes, start=1):
        frame = frames[index - 1]
        drawn = draw_instances(
            frame,
            {"boxes": box[None].float(), "labels": torch.tensor([1]), "scores": torch.ones(1)},
            class_names=["", "target"],
            score_threshold=0.0,
        )
        save_png(drawn, out / "frames" / f"{index:04d}.png")
        if video:
            bgr = np.ascontiguousarray(drawn.permute(1, 2, 0).numpy()[..., ::-1])
            if writer is None:
                size = (bgr.shape[1], bgr.shape[0])
                writer = cv2.VideoWriter(
                    str(out / "track.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 15, size
                )
            writer.write(bgr)
    if writer is not None:
        writer.release()
    return {
        "frames": len(boxes),
        "fps": 1.0 / seconds if seconds > 0 else float("inf"),
        "boxes": boxes,
    }
