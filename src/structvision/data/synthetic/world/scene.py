"""Procedural 3D scenes for the world generators: configuration, sampling and rigid motion.

A :class:`WorldScene` is a closed box of five planes (ground, back wall, two side walls, "sky"
ceiling) holding ``K`` primitives (spheres, boxes, upright cylinders) that rest on the ground
with a random yaw. Every surface has a solid procedural texture evaluated in its own frame (the
world frame for the enclosure, the object frame for primitives, so a texture moves with its
object) mixing two albedo colours. Light is one or more directional sources plus ambient.
:func:`sample_world_scene` draws a scene from a numpy ``Generator``; :func:`sample_motion` draws
camera ego-motion and independent rigid object motion, and :func:`scene_at` /
:func:`camera_at` give the scene and the camera at a time step. Frames and units are described
in :mod:`~structvision.data.synthetic.world.raycast`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CLASS_NAMES",
    "Camera",
    "Motion",
    "WorldConfig",
    "WorldScene",
    "camera_at",
    "sample_motion",
    "sample_world_scene",
    "scene_at",
    "world_rng",
]

KIND_SPHERE, KIND_BOX, KIND_CYLINDER = 0, 1, 2
CLASS_NAMES: tuple[str, ...] = ("sphere", "box", "cylinder")
"""Primitive kinds in label order: ``CLASS_NAMES[k]`` has label ``k + 1`` (0 = background)."""

GROUND_SURFACE, BACK_SURFACE, LEFT_SURFACE, RIGHT_SURFACE, SKY_SURFACE = range(5)
NUM_ENCLOSURE_SURFACES = 5
_STREAM_TAG = zlib.crc32(b"structvision.world")
_PLACEMENT_ATTEMPTS = 30


def world_rng(*, seed: int, split: str, index: int, stream: str = "scene") -> np.random.Generator:
    """The generator of world sample ``index`` of ``split``, independent across seeds, splits,
    indices and named streams (``"scene"``, ``"motion"``)."""
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    codes = [zlib.crc32(split.encode("utf-8")), zlib.crc32(stream.encode("utf-8"))]
    return np.random.default_rng(np.random.SeedSequence([_STREAM_TAG, seed, *codes, index]))


def _check_range(name: str, value: Any, *, low: float, high: float) -> tuple[float, float]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}")
    a, b = float(value[0]), float(value[1])
    if not (low <= a <= b <= high) or math.isnan(a) or math.isnan(b):
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return a, b


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the world generators. Ranges are ``(low, high)`` pairs drawn uniformly.

    Attributes:
        image_size: ``(height, width)`` in pixels, or an ``int`` for a square image.
        focal: focal length in pixels (``fx = fy``); ``None`` gives ``0.58 * width``, KITTI's
            normalised ``fx`` (about 82 degrees horizontal field of view).
        baseline: stereo baseline in metres (KITTI's 0.54); the right camera sits at
            ``+baseline`` along the left camera's ``x`` axis.
        camera_height: height of the camera above the ground, metres.
        num_objects: fewest and most primitives per scene.
        kinds: primitive kinds to draw from (names in :data:`CLASS_NAMES`).
        object_size: radius / half-extent range of primitives, metres.
        depth_range: distance range (camera ``Z``) of primitive centres, metres.
        far_distance: distance of the back wall, metres (bounds the depth).
        side_distance: distance of each side wall from the camera's axis, metres.
        sky_height: height of the sky ceiling above the camera, metres.
        texture_strength: contrast of the procedural textures in ``[0, 1]``; ``(0, 0)`` makes
            every surface textureless.
        texture_frequency: texture frequency range, cycles per metre.
        num_lights: fewest and most directional lights.
        ambient: ambient intensity range; direct lights share the rest of a unit budget.
        light_elevation: elevation range of the lights above the horizon, degrees.
        camera_speed: largest camera translation per time step, metres (flow and video).
        camera_turn: largest camera yaw per time step, degrees.
        object_speed: largest object translation per time step, metres.
        object_turn: largest object yaw per time step, degrees.
        num_frames: frames per ``world-video`` sequence.
        light_change: largest relative dimming of the direct light over a video sequence.
        motion_scale: multiplies every speed and turn rate above: the knob for the range of
            displacements between two frames (``world-flow``: up to about 40 pixels at 1.0
            and 128x256, about twice that at 2.0).
    """

    image_size: int | tuple[int, int] = (128, 256)
    focal: float | None = None
    baseline: float = 0.54
    camera_height: float = 1.65
    num_objects: tuple[int, int] = (3, 8)
    kinds: tuple[str, ...] = CLASS_NAMES
    object_size: tuple[float, float] = (0.35, 1.3)
    depth_range: tuple[float, float] = (4.0, 30.0)
    far_distance: tuple[float, float] = (40.0, 70.0)
    side_distance: tuple[float, float] = (7.0, 14.0)
    sky_height: tuple[float, float] = (6.0, 12.0)
    texture_strength: tuple[float, float] = (0.5, 1.0)
    texture_frequency: tuple[float, float] = (1.0, 5.0)
    num_lights: tuple[int, int] = (1, 2)
    ambient: tuple[float, float] = (0.2, 0.45)
    light_elevation: tuple[float, float] = (25.0, 70.0)
    camera_speed: float = 0.8
    camera_turn: float = 2.0
    object_speed: float = 0.5
    object_turn: float = 10.0
    motion_scale: float = 1.0
    num_frames: int = 32
    light_change: float = 0.3

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in size)
        ):
            raise ValueError(f"image_size must be an int or (height, width) ints >= 8, got {size}")
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if self.focal is not None and not (isinstance(self.focal, (int, float)) and self.focal > 0):
            raise ValueError(f"focal must be a positive number or None, got {self.focal!r}")
        for name in ("baseline", "camera_height"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        low, high = _check_range("num_objects", self.num_objects, low=0, high=64)
        if low != int(low) or high != int(high):
            raise ValueError(f"num_objects must be a pair of ints, got {self.num_objects!r}")
        if not self.kinds or any(kind not in CLASS_NAMES for kind in self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of {CLASS_NAMES}, got {self.kinds}")
        _check_range("object_size", self.object_size, low=0.01, high=10.0)
        depth = _check_range("depth_range", self.depth_range, low=0.5, high=500.0)
        far = _check_range("far_distance", self.far_distance, low=1.0, high=1000.0)
        if far[0] <= depth[1] + 2 * self.object_size[1]:
            raise ValueError(
                f"far_distance {self.far_distance} must start beyond depth_range {self.depth_range}"
                " plus the largest object"
            )
        _check_range("side_distance", self.side_distance, low=0.5, high=1000.0)
        _check_range("sky_height", self.sky_height, low=0.5, high=1000.0)
        _check_range("texture_strength", self.texture_strength, low=0.0, high=1.0)
        _check_range("texture_frequency", self.texture_frequency, low=0.01, high=100.0)
        lights = _check_range("num_lights", self.num_lights, low=0, high=8)
        if lights[0] != int(lights[0]) or lights[1] != int(lights[1]):
            raise ValueError(f"num_lights must be a pair of ints, got {self.num_lights!r}")
        _check_range("ambient", self.ambient, low=0.0, high=1.0)
        _check_range("light_elevation", self.light_elevation, low=1.0, high=90.0)
        for name in ("camera_speed", "camera_turn", "object_speed", "object_turn", "motion_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int):
            raise ValueError(f"num_frames must be an int, got {self.num_frames!r}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if not (isinstance(self.light_change, (int, float)) and 0.0 <= self.light_change <= 1.0):
            raise ValueError(f"light_change must be in [0, 1], got {self.light_change!r}")

    @property
    def focal_length(self) -> float:
        """``fx = fy`` in pixels."""
        return float(self.focal) if self.focal is not None else 0.58 * self.image_size[1]


def config_with_overrides(config: WorldConfig | None, overrides: dict[str, Any]) -> WorldConfig:
    """``config`` (default :class:`WorldConfig()`) with fields replaced; unknown names refused."""
    known = {f.name for f in fields(WorldConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown WorldConfig fields {unknown}; known: {sorted(known)}")
    if config is not None and not isinstance(config, WorldConfig):
        raise ValueError(f"config must be a WorldConfig or None, got {type(config).__name__}")
    return replace(config if config is not None else WorldConfig(), **overrides)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: intrinsics in pixels and pose ``world_from_camera``.

    Attributes:
        fx, fy, cx, cy: intrinsics (pixel centres at ``j + 0.5``; see the raycast module).
        image_size: ``(height, width)``.
        rotation: ``(3, 3)`` camera-to-world rotation.
        center: ``(3,)`` camera centre in the world frame, metres.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    image_size: tuple[int, int]
    rotation: Tensor
    center: Tensor

    @classmethod
    def from_config(cls, config: WorldConfig) -> Camera:
        """The left camera at time 0: the world frame itself."""
        height, width = config.image_size
        focal = config.focal_length
        return cls(
            fx=focal,
            fy=focal,
            cx=width / 2.0,
            cy=height / 2.0,
            image_size=(height, width),
            rotation=torch.eye(3),
            center=torch.zeros(3),
        )

    def intrinsics(self) -> Tensor:
        """``(3, 3)`` float32 matrix ``K``."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
            dtype=torch.float32,
        )

    def moved(self, *, rotation: Tensor, center: Tensor) -> Camera:
        """The same intrinsics at another pose."""
        return replace(self, rotation=rotation, center=center)

    def shifted(self, offset: float) -> Camera:
        """This camera translated by ``offset`` metres along its own ``x`` axis (stereo rig)."""
        return replace(self, center=self.center + self.rotation[:, 0] * offset)


@dataclass(frozen=True)
class WorldScene:
    """Geometry and appearance of one scene; ``S = 5 + K`` surfaces (enclosure then primitives).

    Attributes:
        plane_normals: ``(5, 3)`` enclosure plane normals ``n`` (planes ``n . x = c``).
        plane_offsets: ``(5,)`` the offsets ``c``.
        kinds: ``(K,)`` int64 primitive kinds (index into :data:`CLASS_NAMES`).
        centers: ``(K, 3)`` world-frame centres.
        rotations: ``(K, 3, 3)`` world-from-object rotations.
        sizes: ``(K, 3)`` sphere ``(r, r, r)``; box half extents; cylinder ``(r, h, r)`` with
            ``h`` the half-height.
        texture_params: ``(S, 3)`` per surface ``(kind, frequency, strength)``.
        colors_a: ``(S, 3)`` first albedo colour; ``colors_b`` the second.
        texture_seed: int64 scalar hash seed of the scene's textures.
        ambient: ``(3,)`` ambient light.
        light_directions: ``(L, 3)`` unit vectors towards each light.
        light_colors: ``(L, 3)`` each light's intensity per channel.
    """

    plane_normals: Tensor
    plane_offsets: Tensor
    kinds: Tensor
    centers: Tensor
    rotations: Tensor
    sizes: Tensor
    texture_params: Tensor
    colors_a: Tensor
    colors_b: Tensor
    texture_seed: Tensor
    ambient: Tensor
    light_directions: Tensor
    light_colors: Tensor

    @property
    def num_objects(self) -> int:
        return int(self.kinds.shape[0])

    @property
    def labels(self) -> Tensor:
        """``(K,)`` int64 class labels ``kind + 1``."""
        return self.kinds + 1


def _yaw(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size=None):
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), size=size))


def _sample_objects(rng: np.random.Generator, config: WorldConfig, side: tuple[float, float]):
    width = config.image_size[1]
    half_fov = math.atan(width / 2.0 / config.focal_length)
    count = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
    kinds_allowed = [CLASS_NAMES.index(kind) for kind in config.kinds]
    kinds, centers, rotations, sizes, footprints = [], [], [], [], []
    for _ in range(count):
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            kind = int(rng.choice(kinds_allowed))
            radius = float(_log_uniform(rng, config.object_size))
            if kind == KIND_SPHERE:
                size = np.array([radius, radius, radius])
            elif kind == KIND_BOX:
                size = _log_uniform(rng, config.object_size, size=3)
            else:
                size = np.array([radius, float(_log_uniform(rng, config.object_size)), radius])
            footprint = float(np.hypot(size[0], size[2])) if kind == KIND_BOX else radius
            z = _uniform(rng, config.depth_range)
            x = z * math.tan(rng.uniform(-1.0, 1.0) * half_fov * 0.9)
            if abs(x) + footprint > (side[1] if x > 0 else side[0]) - 0.05:
                continue
            clear = all(
                math.hypot(x - cx, z - cz) > footprint + other + 0.05
                for (cx, cz), other in zip(centers, footprints, strict=True)
            )
            if clear:
                break
        else:
            continue
        kinds.append(kind)
        centers.append((x, z))
        footprints.append(footprint)
        sizes.append(size)
        rotations.append(_yaw(rng.uniform(0, 2 * math.pi)) if kind != KIND_SPHERE else _yaw(0.0))
    positions = [
        [x, config.camera_height - size[1], z] for (x, z), size in zip(centers, sizes, strict=True)
    ]
    return (
        torch.tensor(kinds, dtype=torch.int64),
        torch.tensor(np.array(positions).reshape(-1, 3), dtype=torch.float32),
        torch.tensor(np.array(rotations).reshape(-1, 3, 3), dtype=torch.float32),
        torch.tensor(np.array(sizes).reshape(-1, 3), dtype=torch.float32),
    )


def _sample_lights(rng: np.random.Generator, config: WorldConfig):
    ambient_level = _uniform(rng, config.ambient)
    ambient = ambient_level * rng.uniform(0.85, 1.0, size=3)
    count = int(rng.integers(config.num_lights[0], config.num_lights[1] + 1))
    shares = rng.dirichlet(np.ones(count)) if count else np.zeros(0)
    directions, colors = [], []
    for share in shares:
        elevation = math.radians(_uniform(rng, config.light_elevation))
        azimuth = rng.uniform(0, 2 * math.pi)
        directions.append(
            [
                math.cos(elevation) * math.sin(azimuth),
                -math.sin(elevation),  # y points down: lights are above
                math.cos(elevation) * math.cos(azimuth),
            ]
        )
        tint = rng.uniform(0.8, 1.0, size=3)
        colors.append((1.0 - ambient_level) * share * tint / tint.max())
    return (
        torch.tensor(ambient, dtype=torch.float32),
        torch.tensor(np.array(directions).reshape(-1, 3), dtype=torch.float32),
        torch.tensor(np.array(colors).reshape(-1, 3), dtype=torch.float32),
    )


def _sample_appearance(rng: np.random.Generator, config: WorldConfig, num_surfaces: int):
    params = np.empty((num_surfaces, 3))
    params[:, 0] = rng.integers(0, 3, size=num_surfaces)
    params[:, 1] = _log_uniform(rng, config.texture_frequency, size=num_surfaces)
    params[:, 2] = rng.uniform(*config.texture_strength, size=num_surfaces)
    params[SKY_SURFACE] = (0, 0.05, params[SKY_SURFACE, 2] * 0.5)  # soft large clouds
    colors_a = rng.uniform(0.1, 0.95, size=(num_surfaces, 3))
    colors_b = rng.uniform(0.1, 0.95, size=(num_surfaces, 3))
    colors_a[SKY_SURFACE] = rng.uniform([0.35, 0.5, 0.75], [0.55, 0.7, 0.95])
    colors_b[SKY_SURFACE] = rng.uniform(0.85, 0.98, size=3)
    return (
        torch.tensor(params, dtype=torch.float32),
        torch.tensor(colors_a, dtype=torch.float32),
        torch.tensor(colors_b, dtype=torch.float32),
        torch.tensor(int(rng.integers(0, 2**20)), dtype=torch.int64),
    )


def sample_world_scene(rng: np.random.Generator, config: WorldConfig) -> WorldScene:
    """Draw a scene: enclosure, non-overlapping primitives on the ground, textures, lights."""
    side = (_uniform(rng, config.side_distance), _uniform(rng, config.side_distance))
    far = _uniform(rng, config.far_distance)
    sky = _uniform(rng, config.sky_height)
    plane_normals = torch.tensor(
        [[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float32
    )
    plane_offsets = torch.tensor(
        [config.camera_height, far, -side[0], side[1], -sky], dtype=torch.float32
    )
    kinds, centers, rotations, sizes = _sample_objects(rng, config, side)
    params, colors_a, colors_b, texture_seed = _sample_appearance(
        rng, config, NUM_ENCLOSURE_SURFACES + kinds.shape[0]
    )
    ambient, light_directions, light_colors = _sample_lights(rng, config)
    return WorldScene(
        plane_normals=plane_normals,
        plane_offsets=plane_offsets,
        kinds=kinds,
        centers=centers,
        rotations=rotations,
        sizes=sizes,
        texture_params=params,
        colors_a=colors_a,
        colors_b=colors_b,
        texture_seed=texture_seed,
        ambient=ambient,
        light_directions=light_directions,
        light_colors=light_colors,
    )


# --------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class Motion:
    """Constant-velocity rigid motion per time step (smooth trajectories).

    Attributes:
        camera_velocity: ``(3,)`` world-frame camera translation per step, metres.
        camera_yaw_rate: camera yaw per step, radians.
        object_velocities: ``(K, 3)`` world-frame translation per step (on the ground).
        object_yaw_rates: ``(K,)`` yaw per step about each object's vertical axis, radians.
        light_period: frames per cycle of the light's dimming (video).
        light_change: relative dimming amplitude of the direct light.
    """

    camera_velocity: Tensor
    camera_yaw_rate: float
    object_velocities: Tensor
    object_yaw_rates: Tensor
    light_period: float = 0.0
    light_change: float = 0.0


def sample_motion(
    rng: np.random.Generator, config: WorldConfig, scene: WorldScene, *, num_steps: int = 1
) -> Motion:
    """Camera ego-motion (mostly forward) and independent object motion on the ground.

    Speeds are bounded by ``config`` per step; objects move towards or away from the camera as
    well as sideways. ``num_steps`` scales nothing but the light's dimming period.
    """
    scale = config.motion_scale
    speed = rng.uniform(0.0, config.camera_speed * scale)
    heading = rng.uniform(-0.15, 0.15)
    camera_velocity = torch.tensor(
        [speed * math.sin(heading), 0.0, speed * math.cos(heading)], dtype=torch.float32
    )
    turn = math.radians(config.camera_turn * scale)
    count = scene.num_objects
    object_speed = rng.uniform(0.0, config.object_speed * scale, size=count)
    direction = rng.uniform(0, 2 * math.pi, size=count)
    velocities = np.stack(
        [object_speed * np.cos(direction), np.zeros(count), object_speed * np.sin(direction)], 1
    )
    object_turn = math.radians(config.object_turn * scale)
    yaw_rates = rng.uniform(-object_turn, object_turn, size=count)
    return Motion(
        camera_velocity=camera_velocity,
        camera_yaw_rate=float(rng.uniform(-turn, turn)),
        object_velocities=torch.tensor(velocities.reshape(-1, 3), dtype=torch.float32),
        object_yaw_rates=torch.tensor(yaw_rates, dtype=torch.float32),
        light_period=float(max(num_steps, 2)) * rng.uniform(0.8, 1.5),
        light_change=float(rng.uniform(0.0, config.light_change)),
    )


def _yaw_tensor(angles: Tensor) -> Tensor:
    """``(K,)`` angles -> ``(K, 3, 3)`` rotations about ``y``."""
    c, s = torch.cos(angles), torch.sin(angles)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack(
        [
            torch.stack([c, zero, s], -1),
            torch.stack([zero, one, zero], -1),
            torch.stack([-s, zero, c], -1),
        ],
        dim=-2,
    )


def scene_at(scene: WorldScene, motion: Motion, step: float) -> WorldScene:
    """The scene after ``step`` time steps: objects translated and turned; lights dimmed."""
    turn = _yaw_tensor(motion.object_yaw_rates * step)  # (K, 3, 3)
    dim = 1.0
    if motion.light_period > 0:
        dim = 1.0 - motion.light_change * 0.5 * (
            1 - math.cos(2 * math.pi * step / motion.light_period)
        )
    return replace(
        scene,
        centers=scene.centers + motion.object_velocities * step,
        rotations=turn @ scene.rotations,
        light_colors=scene.light_colors * dim,
    )


def camera_at(camera: Camera, motion: Motion, step: float) -> Camera:
    """``camera`` (at time 0) after ``step`` time steps of ego-motion."""
    rotation = _yaw_tensor(torch.tensor([motion.camera_yaw_rate * step]))[0] @ camera.rotation
    return camera.moved(rotation=rotation, center=camera.center + motion.camera_velocity * step)


def object_points_at(
    scene: WorldScene, motion: Motion, points: Tensor, objects: Tensor, step: float
) -> Tensor:
    """World points ``(N, 3)`` on primitives ``objects (N,)`` (``-1`` = static enclosure) at time
    0, carried rigidly with their object to time ``step``."""
    moved = scene_at(scene, motion, step)
    out = points.clone()
    on_object = objects >= 0
    if bool(on_object.any()):
        index = objects[on_object]
        local = torch.einsum(
            "mji,mj->mi", scene.rotations[index], points[on_object] - scene.centers[index]
        )
        out[on_object] = (
            torch.einsum("mij,mj->mi", moved.rotations[index], local) + moved.centers[index]
        )
    return out
