"""``world-track``: single-object tracking sequences of the 3D world, with exact boxes and
visibility and OTB attributes derived from the scene's parameters.

A sequence is ``world-video``'s smooth camera and object motion over ``num_frames`` frames
(100 by default) with one *target*: the object whose centre stays in view longest (its
projection along the motion), among those showing at least 64 pixels in the first frame. ``distractors`` other objects are made to look like it: the same primitive,
size, colours and texture kind (their texture patterns differ, as any two surfaces' do). The
target's box in every frame is the box of its whole silhouette (what it covers with nothing in
front), clipped to the image: trackers are asked for the object's extent, also while part of it
is hidden, as OTB's annotators drew it. ``visible`` is false where no pixel of the target shows
(full occlusion, or out of view).

OTB attributes, from the sequence itself (thresholds of the OTB-2015 paper where it has them):

* ``IV`` the direct light dims by more than 15% over the sequence;
* ``SV`` the box area leaves ``[1/2, 2]`` times its first-frame area;
* ``OCC`` less than half the target shows in some visible frame, or it is fully hidden;
* ``MB`` motion blur is on (``motion_blur`` sub-frames averaged) and the target moves more
  than 2 pixels per frame;
* ``FM`` its centre moves more than 20 pixels between two frames;
* ``OPR`` it turns by more than 45 degrees about its vertical axis over the sequence;
* ``OV`` part of it leaves the image (its box is clipped by the border) in some frame;
* ``BC`` it has look-alike distractors in view;
* ``LR`` its first box covers fewer than 400 pixels;
* ``DEF`` and ``IPR`` never hold: the objects are rigid and the camera does not roll.

``dataset[i]`` is ``(frames (T, 3, H, W), target)`` with ``boxes (T, 4)`` xyxy float (NaN where
the target is out of view), ``visible (T,)``, ``visible_fraction (T,)``, ``attributes (11,)``
bool in :data:`~structvision.evaluation.tracking.OTB_ATTRIBUTES` order, ``label`` and the
camera values.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from structvision.data.synthetic.world.dataset import _WorldBase
from structvision.data.synthetic.world.raycast import (
    camera_rays,
    primitive_distances,
    project,
    render,
)
from structvision.data.synthetic.world.scene import (
    NUM_ENCLOSURE_SURFACES,
    camera_at,
    sample_motion,
    sample_world_scene,
    scene_at,
    world_rng,
)

__all__ = ["OTB_ATTRIBUTES", "WorldTrackDataset", "attribute_names"]

#: OTB-2015's attributes, in the order of the ``attributes`` flags (the tracking evaluator's).
OTB_ATTRIBUTES = ("IV", "SV", "OCC", "DEF", "MB", "FM", "IPR", "OPR", "OV", "BC", "LR")

#: ``world-track``'s default ``motion_scale``: the world's speeds are per step of a frame pair;
#: a 100-frame sequence moves a fifth as much per frame (the camera up to 16 m in all, each
#: object up to 10 m and 200 degrees).
TRACK_MOTION_SCALE = 0.2


def attribute_names(flags: Tensor) -> tuple[str, ...]:
    """``(11,)`` bool flags in OTB order -> the names of those set."""
    return tuple(name for name, flag in zip(OTB_ATTRIBUTES, flags.tolist(), strict=True) if flag)


def _box(mask: Tensor) -> Tensor:
    """xyxy of a ``(H, W)`` bool mask (NaN when empty)."""
    if not mask.any():
        return torch.full((4,), float("nan"))
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


class WorldTrackDataset(_WorldBase):
    """``world-track`` (module docstring).

    Args:
        distractors: objects made to look like the target (as many as the scene has).
        motion_blur: sub-frames averaged per frame (0 or 1: none; 3: blur over a third of the
            frame interval each way), at that many times the rendering cost.
        Others as :class:`~structvision.data.synthetic.world.WorldDataset`; ``num_frames``
        (a `WorldConfig` field) is 100 and ``motion_scale`` :data:`TRACK_MOTION_SCALE` unless
        given.
    """

    kind = "world-track"

    def __init__(self, *, distractors: int = 2, motion_blur: int = 0, **kwargs: Any) -> None:
        for name, value in (("distractors", distractors), ("motion_blur", motion_blur)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.distractors = distractors
        self.motion_blur = motion_blur
        if "config" not in kwargs or kwargs["config"] is None:
            kwargs.setdefault("num_frames", 100)
            kwargs.setdefault("motion_scale", TRACK_MOTION_SCALE)
        super().__init__(**kwargs)

    def _cache_folder(self, cache: bool | str):
        folder = super()._cache_folder(cache)
        if folder is None:
            return None
        return folder.with_name(f"{folder.name}-d{self.distractors}-b{self.motion_blur}")

    def _pick_scene(self, index: int):
        """``(scene, motion, target)``: the target is the object whose centre stays in the
        image for most of the sequence (projected along the motion, no rendering), among those
        showing at least 64 pixels in frame 0, then the most shown; its look-alikes are set."""
        height, width = self.camera.image_size
        count = self.config.num_frames
        for attempt in range(8):
            stream = "scene" if attempt == 0 else f"scene-retry-{attempt}"
            rng = world_rng(seed=self.seed, split=self.split, index=index, stream=stream)
            scene = sample_world_scene(rng, self.config)
            if scene.num_objects == 0:
                continue
            motion_rng = world_rng(
                seed=self.seed, split=self.split, index=index, stream=f"motion-{attempt}"
            )
            motion = sample_motion(motion_rng, self.config, scene, num_steps=count)
            surface = render(scene, self.camera).surface.flatten()
            shown = torch.stack(
                [(surface == k + NUM_ENCLOSURE_SURFACES).sum() for k in range(scene.num_objects)]
            )
            in_view = torch.zeros(scene.num_objects)
            for step in range(0, count, max(1, count // 20)):
                scene_t = scene_at(scene, motion, float(step))
                uv, z = project(camera_at(self.camera, motion, float(step)), scene_t.centers)
                inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width)
                in_view += (inside & (uv[:, 1] >= 0) & (uv[:, 1] < height)).float()
            candidates = (shown >= 64).nonzero().flatten().tolist()
            if candidates:
                target = max(candidates, key=lambda k: (float(in_view[k]), int(shown[k])))
                return self._with_distractors(scene, target, rng), motion, target
        raise RuntimeError(f"world-track sample {index}: no scene with an object in view")

    def _with_distractors(self, scene, target: int, rng):
        others = [k for k in range(scene.num_objects) if k != target]
        chosen = rng.permutation(others)[: self.distractors].tolist() if others else []
        if not chosen:
            return scene
        kinds, sizes = scene.kinds.clone(), scene.sizes.clone()
        params, colors_a, colors_b = (
            scene.texture_params.clone(),
            scene.colors_a.clone(),
            scene.colors_b.clone(),
        )
        source = NUM_ENCLOSURE_SURFACES + target
        for k in chosen:
            kinds[k], sizes[k] = kinds[target], sizes[target]
            surface = NUM_ENCLOSURE_SURFACES + k
            params[surface], colors_a[surface], colors_b[surface] = (
                params[source],
                colors_a[source],
                colors_b[source],
            )
        return replace(
            scene,
            kinds=kinds,
            sizes=sizes,
            texture_params=params,
            colors_a=colors_a,
            colors_b=colors_b,
        )

    def _frame(self, scene, motion, step: float):
        scene_t, camera_t = scene_at(scene, motion, step), camera_at(self.camera, motion, step)
        return scene_t, camera_t, render(scene_t, camera_t)

    def _step(self, scene, motion, target: int, step: int) -> tuple[Tensor, Tensor, float, Any]:
        """One frame: ``(image, target box, visible fraction, layers)``."""
        height, width = self.camera.image_size
        scene_t, camera_t, layers = self._frame(scene, motion, float(step))
        image = layers.image
        if self.motion_blur > 1:
            offsets = torch.linspace(-1 / 3, 1 / 3, self.motion_blur).tolist()
            image = torch.stack(
                [self._frame(scene, motion, step + o)[2].image for o in offsets]
            ).mean(0)
        origins, directions, _ = camera_rays(camera_t)
        distances = primitive_distances(scene_t, origins, directions)[target]
        silhouette = (distances < 1e8).reshape(height, width)
        shown = layers.surface == NUM_ENCLOSURE_SURFACES + target
        fraction = float(shown.sum()) / max(1, int(silhouette.sum()))
        return image, _box(silhouette), fraction, layers

    def render_frames(self, index: int, steps: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """Only frames ``steps`` of sequence ``index`` (for training pairs): ``(frames (n, 3, H,
        W), boxes (n, 4), visible (n,))``, equal to those rows of ``dataset[index]``."""
        scene, motion, target = self._pick_scene(index)
        rendered = [self._step(scene, motion, target, step) for step in steps]
        boxes = torch.stack([box for _, box, _, _ in rendered])
        fraction = torch.tensor([f for _, _, f, _ in rendered])
        visible = (fraction > 0) & torch.isfinite(boxes).all(dim=1)
        return torch.stack([image for image, _, _, _ in rendered]), boxes, visible

    def _render(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        scene, motion, target = self._pick_scene(index)
        count = self.config.num_frames
        height, width = self.camera.image_size
        frames, boxes, fractions, clipped = [], [], [], []
        distractor_shown = False
        for step in range(count):
            image, box, fraction, layers = self._step(scene, motion, target, step)
            frames.append(image)
            fractions.append(fraction)
            boxes.append(box)
            clipped.append(
                bool(torch.isfinite(box).all())
                and bool((box[0] <= 0) | (box[1] <= 0) | (box[2] >= width) | (box[3] >= height))
            )
            if self.distractors and step == 0:
                kinds = scene.kinds
                look_alikes = [
                    k for k in range(scene.num_objects) if k != target and kinds[k] == kinds[target]
                ]
                distractor_shown = any(
                    (layers.surface == NUM_ENCLOSURE_SURFACES + k).any() for k in look_alikes
                )
        boxes_t = torch.stack(boxes)
        fraction_t = torch.tensor(fractions)
        visible = (fraction_t > 0) & torch.isfinite(boxes_t).all(dim=1)
        attributes = self._attributes(
            boxes_t, visible, fraction_t, clipped, motion, target, distractor_shown
        )
        result = {
            **self._camera_values(index),
            "boxes": boxes_t,
            "visible": visible,
            "visible_fraction": fraction_t,
            "attributes": attributes,
            "label": scene.labels[target],
        }
        return torch.stack(frames), result

    def _attributes(
        self,
        boxes: Tensor,
        visible: Tensor,
        fraction: Tensor,
        clipped: list[bool],
        motion,
        target: int,
        distractor_shown: bool,
    ) -> Tensor:
        shown = boxes[visible]
        areas = (shown[:, 2] - shown[:, 0]) * (shown[:, 3] - shown[:, 1])
        first_area = float(areas[0]) if len(areas) else 0.0
        centres = (shown[:, :2] + shown[:, 2:]) / 2
        steps = (centres[1:] - centres[:-1]).norm(dim=1) if len(centres) > 1 else torch.zeros(1)
        ratio = areas / max(first_area, 1e-6)
        turn = abs(float(motion.object_yaw_rates[target])) * (len(boxes) - 1)
        flags = {
            "IV": motion.light_change > 0.15,
            "SV": bool(((ratio < 0.5) | (ratio > 2)).any()),
            "OCC": bool((fraction[visible] < 0.5).any()) or not bool(visible.all()),
            "DEF": False,
            "MB": self.motion_blur > 1 and float(steps.mean()) > 2,
            "FM": float(steps.max()) > 20,
            "IPR": False,
            "OPR": turn > math.radians(45),
            "OV": any(clipped),
            "BC": distractor_shown,
            "LR": first_area < 400,
        }
        return torch.tensor([flags[name] for name in OTB_ATTRIBUTES], dtype=torch.bool)
