"""The world generators as datasets: ``world``, ``world-stereo`` and ``world-flow``.

Every sample is a pure function of ``(seed, split, index)`` (independent numpy streams per
sample, see :func:`~structvision.data.synthetic.world.scene.world_rng`), rendered exactly by the
torch ray caster. Targets follow the library's contracts (DESIGN.md): ``(H, W)`` maps, boxes
``xyxy`` in absolute pixels with ``x2 = last column + 1``, labels ``1..K`` (0 = background).

* ``world``: one view with every layer — ``depth`` (metres, camera ``Z``), ``normals``
  (camera-frame unit vectors), ``albedo``, ``shading`` (``image = albedo * shading`` exactly),
  ``semantic`` (the primitive's class per pixel, 0 for the enclosure), ``instances`` (0 for the
  enclosure, ``k + 1`` for primitive ``k``), ``boxes``/``labels``/``masks`` of every visible
  primitive, ``focal``/``baseline``/``intrinsics``.
* ``world-stereo``: the left view (``image``) plus ``image_right`` from a rectified rig
  ``baseline`` metres to the right; ``disparity`` / ``disparity_right`` (pixels,
  ``focal * baseline / depth``), ``depth`` / ``depth_right``, and ``valid`` / ``valid_right``:
  the pixels whose surface point is seen by the other camera too (not occluded, inside its
  image) — where warping the other view with the true disparity reproduces this one.
* ``world-flow``: frame 1 (``image``) and frame 2 (``image_2``) one time step later, with
  camera ego-motion and independent rigid object motion; ``flow (2, H, W)`` (pixels, ``u`` then
  ``v``) of every surface point of frame 1 and ``valid`` (the point is visible in frame 2:
  inside its image and not occluded), plus ``depth`` and ``depth_2``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from structvision.data.synthetic.world.raycast import (
    RenderLayers,
    camera_rays,
    occluded,
    primitive_distances,
    project,
    render,
)
from structvision.data.synthetic.world.scene import (
    CLASS_NAMES,
    NUM_ENCLOSURE_SURFACES,
    Camera,
    WorldConfig,
    camera_at,
    config_with_overrides,
    object_points_at,
    sample_motion,
    sample_world_scene,
    scene_at,
    world_rng,
)

__all__ = [
    "RENDER_VERSION",
    "WorldDataset",
    "WorldFlowDataset",
    "WorldStereoDataset",
    "WorldVideoDataset",
]

#: Bumped whenever a change to the renderer or the samplers changes what a sample holds; part
#: of the render cache's key, so an old cache is never read by new code.
RENDER_VERSION = 1

Transform = Callable[[Tensor, dict], tuple[Tensor, dict]]


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def instance_targets(layers: RenderLayers) -> dict[str, Tensor]:
    """``boxes``, ``labels``, ``masks``, ``area``, ``iscrowd``, ``semantic`` and ``instances``
    of the primitives visible in ``layers``, in primitive order."""
    surface = layers.surface  # (H, W)
    instances = (surface - NUM_ENCLOSURE_SURFACES + 1).clamp(min=0)  # 0 enclosure, k + 1
    ids = [int(i) for i in instances.unique().tolist() if i > 0]
    height, width = surface.shape
    masks = torch.stack([instances == i for i in ids]) if ids else torch.zeros(0, height, width)
    masks = masks.to(torch.uint8)
    boxes = []
    for mask in masks.bool():
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return {
        "ids": torch.tensor(ids, dtype=torch.int64),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "masks": masks,
        "area": masks.flatten(1).sum(1).to(torch.float32),
        "iscrowd": torch.zeros(len(ids), dtype=torch.int64),
        "instances": instances,
    }


class _WorldBase(Dataset):
    """What the world datasets share: config, sampling, camera values, class names."""

    kind = "world"

    def __init__(
        self,
        *,
        split: str = "train",
        num_images: int = 1000,
        seed: int = 0,
        config: WorldConfig | None = None,
        transforms: Transform | None = None,
        height: int | None = None,
        width: int | None = None,
        cache: bool | str = False,
        **config_overrides: Any,
    ) -> None:
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        _check_int("num_images", num_images, low=0)
        _check_int("seed", seed, low=0)
        if height is not None or width is not None:
            base = config_with_overrides(config, {}).image_size
            config_overrides["image_size"] = (height or base[0], width or base[1])
        self.split = split
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.config = config_with_overrides(config, config_overrides)
        self.transforms = transforms
        self.class_names: tuple[str, ...] = ("__background__", *CLASS_NAMES)
        self.categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASS_NAMES)]
        self.camera = Camera.from_config(self.config)
        self.cache_dir = self._cache_folder(cache)

    def _cache_folder(self, cache: bool | str) -> Path | None:
        """``None`` (no cache), or the folder of this generator, config, seed and split."""
        if cache is False or cache is None:
            return None
        if cache is True:
            root = os.environ.get("STRUCTVISION_CACHE") or Path.home() / ".cache" / "structvision"
            root = Path(root) / "world"
        else:
            root = Path(cache)
        record = {
            "kind": self.kind,
            "version": RENDER_VERSION,
            "config": dataclasses.asdict(self.config),
            "seed": self.seed,
            "split": self.split,
        }
        key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
        return root / f"{self.kind}-{key}"

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} samples")
        if self.cache_dir is None:
            image, target = self._render(index)
        else:
            image, target = self._cached(index)
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target

    def _cached(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The sample from the render cache, rendered and stored (atomically) on a miss."""
        from safetensors.torch import load_file, save_file

        path = self.cache_dir / f"{index:07d}.safetensors"
        if path.is_file():
            try:
                tensors = load_file(str(path))
                return tensors.pop("image"), tensors
            except Exception:  # a damaged file: render again and replace it
                pass
        image, target = self._render(index)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(
            {"image": image.contiguous(), **{k: v.contiguous() for k, v in target.items()}},
            str(tmp),
        )
        os.replace(tmp, path)
        return image, target

    def _render(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_images

    def _scene(self, index: int):
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} samples")
        rng = world_rng(seed=self.seed, split=self.split, index=index)
        return sample_world_scene(rng, self.config)

    def _camera_values(self, index: int) -> dict[str, Tensor]:
        return {
            "image_id": torch.tensor(index, dtype=torch.int64),
            "focal": torch.tensor(self.camera.fx, dtype=torch.float32),
            "baseline": torch.tensor(self.config.baseline, dtype=torch.float32),
            "intrinsics": self.camera.intrinsics(),
        }


class WorldDataset(_WorldBase):
    """``world``: one view of a procedural 3D scene with every exact layer (module docstring).

    Args:
        split, num_images, seed: ``(seed, split, index)`` fixes a sample; splits never share.
        config: base :class:`WorldConfig`; ``height``/``width`` and any ``WorldConfig`` field
            given as keyword replace its values (``world:height=64,width=128,num_objects=(2,4)``).
        transforms: optional ``transforms(image, target) -> (image, target)``.
        cache: keep rendered samples on disk and read them back: ``True`` for
            ``$STRUCTVISION_CACHE/world`` (default ``~/.cache/structvision/world``) or a folder.
            Each generator, config, seed and split gets its own sub-folder (a hash of them and
            of `RENDER_VERSION`), so a changed setting never reads another's renders.
    """

    def _render(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        scene = self._scene(index)
        layers = render(scene, self.camera)
        objects = instance_targets(layers)
        ids = objects.pop("ids")
        semantic = torch.zeros_like(objects["instances"])
        on_object = objects["instances"] > 0
        semantic[on_object] = scene.labels[objects["instances"][on_object] - 1]
        target = {
            **self._camera_values(index),
            "boxes": objects["boxes"],
            "labels": scene.labels[ids - 1] if len(ids) else torch.zeros(0, dtype=torch.int64),
            "masks": objects["masks"],
            "area": objects["area"],
            "iscrowd": objects["iscrowd"],
            "semantic": semantic,
            "instances": objects["instances"],
            "depth": layers.depth,
            "normals": layers.normals,
            "albedo": layers.albedo,
            "shading": layers.shading,
        }
        return layers.image, target


def _other_view_valid(scene, points: Tensor, camera: Camera) -> Tensor:
    """``(N,)`` bool: is each world point seen by ``camera`` (in front, inside the image, not
    occluded by a primitive)?"""
    height, width = camera.image_size
    uv, z = project(camera, points)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return inside & ~occluded(scene, points, camera.center)


class WorldStereoDataset(_WorldBase):
    """``world-stereo``: a rectified stereo pair with exact disparities and occlusion masks
    (module docstring); arguments as :class:`WorldDataset`."""

    kind = "world-stereo"

    def _render(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        scene = self._scene(index)
        right_camera = self.camera.shifted(self.config.baseline)
        left, right = render(scene, self.camera), render(scene, right_camera)
        height, width = self.camera.image_size
        scale = self.camera.fx * self.config.baseline
        valid_left = _other_view_valid(scene, left.points.reshape(-1, 3), right_camera)
        valid_right = _other_view_valid(scene, right.points.reshape(-1, 3), self.camera)
        target = {
            **self._camera_values(index),
            "image_right": right.image,
            "disparity": scale / left.depth,
            "disparity_right": scale / right.depth,
            "depth": left.depth,
            "depth_right": right.depth,
            "valid": valid_left.reshape(height, width),
            "valid_right": valid_right.reshape(height, width),
        }
        return left.image, target


class WorldFlowDataset(_WorldBase):
    """``world-flow``: two frames one time step apart, camera and objects moving, with the
    exact forward optical flow and its validity (module docstring); arguments as
    :class:`WorldDataset`."""

    kind = "world-flow"

    def _render(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        first, _, target = self.render_pair(index)
        return first.image, target

    def render_pair(self, index: int) -> tuple[RenderLayers, RenderLayers, dict[str, Tensor]]:
        """Every layer of both frames of sample ``index``, and its target (no transforms)."""
        scene = self._scene(index)
        motion_rng = world_rng(seed=self.seed, split=self.split, index=index, stream="motion")
        # brightness constancy between the two frames: no dimming of the lights
        motion = replace(sample_motion(motion_rng, self.config, scene), light_change=0.0)
        camera_2 = camera_at(self.camera, motion, 1.0)
        scene_2 = scene_at(scene, motion, 1.0)
        first, second = render(scene, self.camera), render(scene_2, camera_2)
        height, width = self.camera.image_size
        points = first.points.reshape(-1, 3)
        objects = first.surface.reshape(-1) - NUM_ENCLOSURE_SURFACES  # -1.. for the enclosure
        moved = object_points_at(scene, motion, points, objects.clamp(min=-1), 1.0)
        uv_1, _ = project(self.camera, points)
        uv_2, _ = project(camera_2, moved)
        flow = (uv_2 - uv_1).T.reshape(2, height, width)
        valid = _other_view_valid(scene_2, moved, camera_2).reshape(height, width)
        target = {
            **self._camera_values(index),
            "image_2": second.image,
            "flow": flow.contiguous(),
            "valid": valid,
            "depth": first.depth,
            "depth_2": second.depth,
        }
        return first, second, target


class WorldVideoDataset(_WorldBase):
    """``world-video``: sequences of ``num_frames`` frames of one scene with smooth motion.

    The camera moves forward and turns slowly; each object translates on the ground (towards,
    away from or across the view) and turns about its vertical axis (rotation out of the image
    plane) at a constant rate, so objects approach, recede and pass behind one another; the
    direct light dims and recovers over the sequence.

    ``dataset[i]`` is ``(frames (T, 3, H, W), target)`` with ``labels (K,)`` (one per object,
    every object of the scene), ``boxes (T, K, 4)`` (xyxy pixels of the visible part; zeros
    where an object is not seen), ``visible_fraction (T, K)`` (visible pixels over the pixels
    its silhouette would cover with nothing in front, 0 when outside the view), ``depth
    (T, H, W)``, ``camera_centers (T, 3)`` and the camera values. Arguments as
    :class:`WorldDataset`; ``num_frames`` is a `WorldConfig` field.
    """

    kind = "world-video"

    def _render(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        scene = self._scene(index)
        motion_rng = world_rng(seed=self.seed, split=self.split, index=index, stream="motion")
        frames_count = self.config.num_frames
        motion = sample_motion(motion_rng, self.config, scene, num_steps=frames_count)
        height, width = self.camera.image_size
        count = scene.num_objects
        frames, depths, centers = [], [], []
        boxes = torch.zeros(frames_count, count, 4)
        fractions = torch.zeros(frames_count, count)
        for step in range(frames_count):
            scene_t, camera_t = scene_at(scene, motion, step), camera_at(self.camera, motion, step)
            layers = render(scene_t, camera_t)
            frames.append(layers.image)
            depths.append(layers.depth)
            centers.append(camera_t.center)
            if count == 0:
                continue
            origins, directions, _ = camera_rays(camera_t)
            silhouettes = primitive_distances(scene_t, origins, directions) < 1e8  # (K, H*W)
            visible = layers.surface.reshape(-1)[None] == (
                torch.arange(count)[:, None] + NUM_ENCLOSURE_SURFACES
            )
            full = silhouettes.sum(1)
            fractions[step] = torch.where(full > 0, visible.sum(1) / full.clamp(min=1), 0.0)
            for k in visible.any(1).nonzero().flatten().tolist():
                mask = visible[k].reshape(height, width)
                rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
                boxes[step, k] = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        target = {
            **self._camera_values(index),
            "labels": scene.labels,
            "boxes": boxes,
            "visible_fraction": fractions,
            "depth": torch.stack(depths),
            "camera_centers": torch.stack(centers),
        }
        return torch.stack(frames), target
