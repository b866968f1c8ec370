"""``world-track``: single-object tracking sequences of the 3D world, with exact boxes and
visibility and OTB attributes derived from the scene's parameters.

A sequence is ``world-video``'s smooth camera and object motion over ``num_frames`` frames
(100 by default) with one *target*: the object whose centre stays in view longest (its
projection along the motion), among those showing at least 64 pixels in the first frame.
Each sequence then draws, from its own random stream (so the scene, the motion and the target
stay what they are without them):

* how many of the other objects look like the target, from 0 to ``distractors``: the same
  primitive, size, colours and texture kind (their texture patterns differ, as any two
  surfaces' do);
* a camera roll about the optical axis, a constant rate of up to ``roll`` degrees per frame;
* for one sequence in three, a shaking camera: every frame turned by its own random yaw and
  pitch of up to ``shake`` degrees around the smooth path (abrupt image motion).

The target's box in every frame is the box of its whole silhouette (what it covers with nothing
in front), clipped to the image: trackers are asked for the object's extent, also while part of
it is hidden, as OTB's annotators drew it. ``visible`` is false where no pixel of the target
shows (full occlusion, or out of view).

OTB attributes, from the sequence itself (thresholds of the OTB-2015 paper where it has them;
its pixel thresholds scaled from OTB's 640-pixel-wide frames to the image width):

* ``IV`` the direct light dims by more than 15% over the sequence;
* ``SV`` the box area leaves ``[1/2, 2]`` times its first-frame area;
* ``OCC`` less than half the target shows in some visible frame, or it is fully hidden;
* ``MB`` motion blur is on (``motion_blur`` sub-frames averaged) and the target moves more
  than 2 pixels per frame on average;
* ``FM`` its centre moves more than 20 pixels (at 640 wide; 8 at the default 256) between two
  frames;
* ``IPR`` the camera rolls by more than 30 degrees over the sequence;
* ``OPR`` it turns by more than 45 degrees about its vertical axis over the sequence;
* ``OV`` part of it leaves the image (its box is clipped by the border) in some frame;
* ``BC`` a look-alike shows near it (inside its box grown to twice its width and height) in
  some frame;
* ``LR`` its first box covers fewer than 400 pixels;
* ``DEF`` never holds: the objects are rigid.

``dataset[i]`` is ``(frames (T, 3, H, W), target)`` with ``boxes (T, 4)`` xyxy float (NaN where
the target is out of view), ``visible (T,)``, ``visible_fraction (T,)``, ``attributes (11,)``
bool in :data:`~structvision.evaluation.tracking.OTB_ATTRIBUTES` order, ``label`` and the
camera values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from structvision.data.synthetic.world.dataset import _WorldBase
from structvision.data.synthetic.world.raycast import (
    camera_rays,
    cast_rays,
    primitive_distances,
    project,
    render,
)
from structvision.data.synthetic.world.scene import (
    NUM_ENCLOSURE_SURFACES,
    Camera,
    Motion,
    WorldScene,
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

#: The share of sequences filmed with a shaking camera.
SHAKY_SHARE = 1 / 3


@dataclass(frozen=True)
class _Sequence:
    """One sequence's scene, motion and target, with its look-alikes and camera variation."""

    scene: WorldScene
    motion: Motion
    target: int
    look_alikes: tuple[int, ...]
    roll_rate: float  # radians per frame
    shake: Tensor | None  # (T, 2) yaw and pitch offsets, radians


def _rotation(axis: int, angle: float) -> Tensor:
    """``(3, 3)`` rotation by ``angle`` radians about coordinate axis ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    rotation = torch.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


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
        distractors: at most this many objects are made to look like the target (each sequence
            draws how many, from 0; as many as the scene has).
        roll: largest camera roll rate, degrees per frame (0: the camera does not roll).
        shake: largest per-frame yaw and pitch of a shaking camera, degrees (0: none).
        motion_blur: sub-frames averaged per frame (0 or 1: none; 3: blur over a third of the
            frame interval each way), at that many times the rendering cost.
        Others as :class:`~structvision.data.synthetic.world.WorldDataset`; ``num_frames``
        (a `WorldConfig` field) is 100 and ``motion_scale`` :data:`TRACK_MOTION_SCALE` unless
        given.
    """

    kind = "world-track"

    def __init__(
        self,
        *,
        distractors: int = 2,
        roll: float = 0.6,
        shake: float = 3.0,
        motion_blur: int = 0,
        **kwargs: Any,
    ) -> None:
        for name, value in (("distractors", distractors), ("motion_blur", motion_blur)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name, value in (("roll", roll), ("shake", shake)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0 (degrees), got {value!r}")
        self.distractors = distractors
        self.roll = float(roll)
        self.shake = float(shake)
        self.motion_blur = motion_blur
        if "config" not in kwargs or kwargs["config"] is None:
            kwargs.setdefault("num_frames", 100)
            kwargs.setdefault("motion_scale", TRACK_MOTION_SCALE)
        super().__init__(**kwargs)

    def _cache_folder(self, cache: bool | str):
        folder = super()._cache_folder(cache)
        if folder is None:
            return None
        variation = f"d{self.distractors}-r{self.roll:g}-s{self.shake:g}-b{self.motion_blur}"
        return folder.with_name(f"{folder.name}-{variation}")

    def _pick_scene(self, index: int) -> _Sequence:
        """The sequence's scene, motion and target (the object whose centre stays in the image
        for most of the sequence, projected along the smooth motion without rendering, among
        those showing at least 64 pixels in frame 0, then the most shown), with its look-alikes
        and camera variation drawn from their own stream."""
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
            surface = cast_rays(scene, *camera_rays(self.camera)[:2]).surface
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
                return self._varied(index, scene, motion, target)
        raise RuntimeError(f"world-track sample {index}: no scene with an object in view")

    def _varied(self, index: int, scene, motion, target: int) -> _Sequence:
        rng = world_rng(seed=self.seed, split=self.split, index=index, stream="track-variation")
        others = [k for k in range(scene.num_objects) if k != target]
        count = int(rng.integers(0, self.distractors + 1))
        chosen = tuple(sorted(rng.permutation(others)[:count].tolist())) if others else ()
        roll_rate = math.radians(float(rng.uniform(-self.roll, self.roll)))
        shaky = bool(rng.uniform() < SHAKY_SHARE) and self.shake > 0
        offsets = rng.uniform(-self.shake, self.shake, size=(self.config.num_frames, 2))
        shake = torch.from_numpy(np.radians(offsets)).float() if shaky else None
        return _Sequence(
            scene=self._with_distractors(scene, target, chosen),
            motion=motion,
            target=target,
            look_alikes=chosen,
            roll_rate=roll_rate,
            shake=shake,
        )

    @staticmethod
    def _with_distractors(scene, target: int, chosen: tuple[int, ...]):
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

    def _camera(self, sequence: _Sequence, step: float, frame: int) -> Camera:
        """The camera at time ``step`` of frame ``frame``: the smooth ego-motion, then the
        frame's shake (yaw, pitch) and the roll, all about the camera's own axes."""
        camera = camera_at(self.camera, sequence.motion, step)
        turn = _rotation(2, sequence.roll_rate * step)
        if sequence.shake is not None:
            yaw, pitch = sequence.shake[frame].tolist()
            turn = _rotation(1, yaw) @ _rotation(0, pitch) @ turn
        return camera.moved(rotation=camera.rotation @ turn, center=camera.center)

    def _frame(self, sequence: _Sequence, step: float, frame: int):
        scene_t = scene_at(sequence.scene, sequence.motion, step)
        camera_t = self._camera(sequence, step, frame)
        return scene_t, camera_t, render(scene_t, camera_t)

    def _step(self, sequence: _Sequence, step: int) -> tuple[Tensor, Tensor, float, Any]:
        """One frame: ``(image, target box, visible fraction, layers)``."""
        height, width = self.camera.image_size
        scene_t, camera_t, layers = self._frame(sequence, float(step), step)
        image = layers.image
        if self.motion_blur > 1:
            offsets = torch.linspace(-1 / 3, 1 / 3, self.motion_blur).tolist()
            image = torch.stack(
                [self._frame(sequence, step + o, step)[2].image for o in offsets]
            ).mean(0)
        origins, directions, _ = camera_rays(camera_t)
        distances = primitive_distances(scene_t, origins, directions, [sequence.target])[0]
        silhouette = (distances < 1e8).reshape(height, width)
        shown = layers.surface == NUM_ENCLOSURE_SURFACES + sequence.target
        fraction = float(shown.sum()) / max(1, int(silhouette.sum()))
        return image, _box(silhouette), fraction, layers

    def render_frames(self, index: int, steps: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """Only frames ``steps`` of sequence ``index`` (for training pairs): ``(frames (n, 3, H,
        W), boxes (n, 4), visible (n,))``, equal to those rows of ``dataset[index]``."""
        sequence = self._pick_scene(index)
        rendered = [self._step(sequence, step) for step in steps]
        boxes = torch.stack([box for _, box, _, _ in rendered])
        fraction = torch.tensor([f for _, _, f, _ in rendered])
        visible = (fraction > 0) & torch.isfinite(boxes).all(dim=1)
        return torch.stack([image for image, _, _, _ in rendered]), boxes, visible

    def _render(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        sequence = self._pick_scene(index)
        height, width = self.camera.image_size
        frames, boxes, fractions, clipped = [], [], [], []
        cluttered = False
        for step in range(self.config.num_frames):
            image, box, fraction, layers = self._step(sequence, step)
            frames.append(image)
            fractions.append(fraction)
            boxes.append(box)
            finite = bool(torch.isfinite(box).all())
            clipped.append(
                finite
                and bool((box[0] <= 0) | (box[1] <= 0) | (box[2] >= width) | (box[3] >= height))
            )
            if finite and sequence.look_alikes and not cluttered:
                cluttered = _look_alike_near(layers.surface, box, sequence.look_alikes)
        boxes_t = torch.stack(boxes)
        fraction_t = torch.tensor(fractions)
        visible = (fraction_t > 0) & torch.isfinite(boxes_t).all(dim=1)
        attributes = self._attributes(boxes_t, visible, fraction_t, clipped, sequence, cluttered)
        result = {
            **self._camera_values(index),
            "boxes": boxes_t,
            "visible": visible,
            "visible_fraction": fraction_t,
            "attributes": attributes,
            "label": sequence.scene.labels[sequence.target],
        }
        return torch.stack(frames), result

    def _attributes(
        self,
        boxes: Tensor,
        visible: Tensor,
        fraction: Tensor,
        clipped: list[bool],
        sequence: _Sequence,
        cluttered: bool,
    ) -> Tensor:
        shown = boxes[visible]
        areas = (shown[:, 2] - shown[:, 0]) * (shown[:, 3] - shown[:, 1])
        first_area = float(areas[0]) if len(areas) else 0.0
        centres = (shown[:, :2] + shown[:, 2:]) / 2
        steps = (centres[1:] - centres[:-1]).norm(dim=1) if len(centres) > 1 else torch.zeros(1)
        ratio = areas / max(first_area, 1e-6)
        frames = len(boxes) - 1
        turn = abs(float(sequence.motion.object_yaw_rates[sequence.target])) * frames
        fast = 20 * self.camera.image_size[1] / 640
        flags = {
            "IV": sequence.motion.light_change > 0.15,
            "SV": bool(((ratio < 0.5) | (ratio > 2)).any()),
            "OCC": bool((fraction[visible] < 0.5).any()) or not bool(visible.all()),
            "DEF": False,
            "MB": self.motion_blur > 1 and float(steps.mean()) > 2,
            "FM": float(steps.max()) > fast,
            "IPR": abs(sequence.roll_rate) * frames > math.radians(30),
            "OPR": turn > math.radians(45),
            "OV": any(clipped),
            "BC": cluttered,
            "LR": first_area < 400,
        }
        return torch.tensor([flags[name] for name in OTB_ATTRIBUTES], dtype=torch.bool)


def _look_alike_near(surface: Tensor, box: Tensor, look_alikes: tuple[int, ...]) -> bool:
    """Whether a look-alike shows inside ``box`` grown to twice its width and height."""
    height, width = surface.shape
    centre, size = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
    x0, y0 = (centre - size).floor().clamp(min=0).int().tolist()
    x1 = int(min(width, math.ceil(float(centre[0] + size[0]))))
    y1 = int(min(height, math.ceil(float(centre[1] + size[1]))))
    window = surface[y0:y1, x0:x1]
    return any(bool((window == NUM_ENCLOSURE_SURFACES + k).any()) for k in look_alikes)
