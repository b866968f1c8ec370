"""An exact, vectorised ray caster for :class:`~structvision.data.synthetic.world.scene.WorldScene`.

Conventions (shared by every world generator):

* Frames are OpenCV's: ``x`` right, ``y`` down, ``z`` forward; units are metres. The world frame
  is the left camera's frame at time 0, with the ground plane at ``y = camera_height``.
* A camera is a pinhole ``(fx, fy, cx, cy)`` plus a pose ``world_from_camera`` (rotation
  ``(3, 3)`` and centre ``(3,)``). Pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)``
  in continuous image coordinates and its ray passes through its centre ``(j + 0.5, i + 0.5)``;
  a camera-frame point ``(X, Y, Z)`` projects to ``u = fx X / Z + cx``, ``v = fy Y / Z + cy``.
  Flow and disparity are differences of such coordinates.
* ``depth`` is the camera-frame ``Z`` of the surface point (KITTI's convention), not the ray
  length.

Every ray hits something: the scene is enclosed by a ground plane, a back wall, two side walls
and a "sky" ceiling, so depth is bounded. Shading is Lambertian with directional lights plus
ambient, and shadows are cast by the primitives (the enclosure casts none); the sky is
emissive (shading 1). Albedo is at most 1 and the lights' ambient plus direct intensities sum to
at most 1 per channel, so ``image = albedo * shading`` holds exactly, with no clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from structvision.data.synthetic.world.scene import (
    KIND_BOX,
    KIND_CYLINDER,
    KIND_SPHERE,
    NUM_ENCLOSURE_SURFACES,
    SKY_SURFACE,
    Camera,
    WorldScene,
)

__all__ = [
    "Hit",
    "RenderLayers",
    "camera_rays",
    "cast_rays",
    "occluded",
    "primitive_distances",
    "project",
    "render",
]

_EPS = 1e-4  # metres: the nearest accepted intersection along a ray
_FAR = 1e9


@dataclass
class Hit:
    """The nearest intersection of each of ``N`` rays.

    Attributes:
        t: ``(N,)`` distance along the (unit) ray, metres.
        surface: ``(N,)`` int64 surface index: ``0 .. 4`` the enclosure (ground, back wall,
            left wall, right wall, sky), ``5 + k`` primitive ``k`` of the scene.
        point: ``(N, 3)`` world-frame hit point.
        normal: ``(N, 3)`` world-frame unit normal, facing the ray's origin.
    """

    t: Tensor
    surface: Tensor
    point: Tensor
    normal: Tensor


@dataclass
class RenderLayers:
    """One camera's view, every layer exact per pixel (``H x W``).

    Attributes:
        image: ``(3, H, W)`` RGB in ``[0, 1]``, equal to ``albedo * shading``.
        albedo: ``(3, H, W)`` reflectance in ``[0, 1]``.
        shading: ``(3, H, W)`` incident light (ambient + unshadowed direct), in ``[0, 1]``.
        depth: ``(H, W)`` camera-frame ``Z``, metres.
        normals: ``(3, H, W)`` camera-frame unit normals facing the camera.
        surface: ``(H, W)`` int64 surface index (see :class:`Hit`).
        points: ``(H, W, 3)`` world-frame surface points.
    """

    image: Tensor
    albedo: Tensor
    shading: Tensor
    depth: Tensor
    normals: Tensor
    surface: Tensor
    points: Tensor


# --------------------------------------------------------------------------- rays


def camera_rays(camera: Camera) -> tuple[Tensor, Tensor, Tensor]:
    """World-frame rays through the pixel centres of ``camera``.

    Returns:
        ``origins (H*W, 3)``, unit ``directions (H*W, 3)`` and ``z_per_metre (H*W,)``, the
        camera-frame ``Z`` gained per metre along each ray (so ``depth = t * z_per_metre``);
        pixels in row-major order.
    """
    height, width = camera.image_size
    rows = torch.arange(height, dtype=torch.float32) + 0.5
    cols = torch.arange(width, dtype=torch.float32) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    x = (u.reshape(-1) - camera.cx) / camera.fx
    y = (v.reshape(-1) - camera.cy) / camera.fy
    directions_cam = torch.stack([x, y, torch.ones_like(x)], dim=1)  # (N, 3)
    directions_cam = directions_cam / directions_cam.norm(dim=1, keepdim=True)
    directions = directions_cam @ camera.rotation.T  # world_from_camera applied to rows
    origins = camera.center.expand_as(directions)
    return origins, directions, directions_cam[:, 2]


def project(camera: Camera, points: Tensor) -> tuple[Tensor, Tensor]:
    """World points ``(..., 3)`` -> image coordinates ``(..., 2)`` ``(u, v)`` and camera ``Z``."""
    local = (points - camera.center) @ camera.rotation  # camera_from_world applied to rows
    z = local[..., 2]
    safe_z = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    u = camera.fx * local[..., 0] / safe_z + camera.cx
    v = camera.fy * local[..., 1] / safe_z + camera.cy
    return torch.stack([u, v], dim=-1), z


# --------------------------------------------------------------------------- intersections


def _nearest_positive(candidates: Tensor) -> Tensor:
    """``(..., C, N)`` candidate distances (non-positive or NaN = miss) -> ``(..., N)`` nearest."""
    valid = candidates > _EPS
    return torch.where(valid, candidates, torch.full_like(candidates, _FAR)).amin(dim=-2)


def _planes_t(normals: Tensor, offsets: Tensor, origins: Tensor, directions: Tensor) -> Tensor:
    """Planes ``n . x = c`` (``normals (P, 3)``, ``offsets (P,)``) -> ``t (P, N)``."""
    denominator = normals @ directions.T  # (P, N)
    numerator = offsets[:, None] - normals @ origins.T
    safe = torch.where(denominator.abs() > 1e-12, denominator, torch.full_like(denominator, 1e-12))
    t = numerator / safe
    return torch.where(t > _EPS, t, torch.full_like(t, _FAR))


def _to_local(scene: WorldScene, index: Tensor, origins: Tensor, directions: Tensor):
    """Rays into the frames of primitives ``index (K,)``: ``(K, N, 3)`` origins and directions."""
    rotation = scene.rotations[index]  # (K, 3, 3) world_from_object
    center = scene.centers[index]  # (K, 3)
    local_origins = torch.einsum("kji,knj->kni", rotation, origins[None] - center[:, None])
    local_directions = torch.einsum("kji,nj->kni", rotation, directions)
    return local_origins, local_directions


def _spheres_t(scene: WorldScene, index: Tensor, origins: Tensor, directions: Tensor) -> Tensor:
    radius = scene.sizes[index, 0]  # (K,)
    oc = origins[None] - scene.centers[index][:, None]  # (K, N, 3)
    b = (oc * directions[None]).sum(-1)  # (K, N)
    c = (oc * oc).sum(-1) - radius[:, None] ** 2
    disc = b * b - c
    root = disc.clamp(min=0).sqrt()
    candidates = torch.stack([-b - root, -b + root], dim=1)  # (K, 2, N)
    t = _nearest_positive(candidates)
    return torch.where(disc >= 0, t, torch.full_like(t, _FAR))


def _safe_reciprocal(values: Tensor) -> Tensor:
    tiny = torch.where(values >= 0, torch.full_like(values, 1e-12), torch.full_like(values, -1e-12))
    return 1.0 / torch.where(values.abs() > 1e-12, values, tiny)


def _boxes_t(scene: WorldScene, index: Tensor, origins: Tensor, directions: Tensor) -> Tensor:
    local_o, local_d = _to_local(scene, index, origins, directions)
    half = scene.sizes[index][:, None, :]  # (K, 1, 3) half extents
    inverse = _safe_reciprocal(local_d)
    t1 = (-half - local_o) * inverse
    t2 = (half - local_o) * inverse
    t_near = torch.minimum(t1, t2).amax(-1)  # (K, N)
    t_far = torch.maximum(t1, t2).amin(-1)
    hit = t_far >= torch.clamp(t_near, min=_EPS)
    t = torch.where(t_near > _EPS, t_near, t_far)
    return torch.where(hit, t, torch.full_like(t, _FAR))


def _cylinders_t(scene: WorldScene, index: Tensor, origins: Tensor, directions: Tensor) -> Tensor:
    """Capped cylinders around the local ``y`` axis: radius ``sizes[:, 0]``, half-height
    ``sizes[:, 1]``."""
    local_o, local_d = _to_local(scene, index, origins, directions)
    radius = scene.sizes[index, 0][:, None]  # (K, 1)
    half_height = scene.sizes[index, 1][:, None]
    ox, oy, oz = local_o.unbind(-1)
    dx, dy, dz = local_d.unbind(-1)
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - radius**2
    disc = b * b - a * c
    root = disc.clamp(min=0).sqrt()
    safe_a = torch.where(a > 1e-12, a, torch.full_like(a, 1e-12))
    sides = []
    for t in ((-b - root) / safe_a, (-b + root) / safe_a):
        inside = (disc >= 0) & (a > 1e-12) & ((oy + t * dy).abs() <= half_height)
        sides.append(torch.where(inside, t, torch.full_like(t, -1.0)))
    inverse_dy = _safe_reciprocal(dy)
    for cap in (-half_height, half_height):
        t = (cap - oy) * inverse_dy
        x, z = ox + t * dx, oz + t * dz
        sides.append(torch.where(x * x + z * z <= radius**2, t, torch.full_like(t, -1.0)))
    return _nearest_positive(torch.stack(sides, dim=1))


_PRIMITIVE_T = {KIND_SPHERE: _spheres_t, KIND_BOX: _boxes_t, KIND_CYLINDER: _cylinders_t}


def primitive_distances(
    scene: WorldScene, origins: Tensor, directions: Tensor, objects: Tensor | None = None
) -> Tensor:
    """``(K, N)`` distance along each ray to each primitive of ``scene``, ignoring every other
    surface (``1e9`` where the ray misses it): the silhouette of every object on its own.
    ``objects``: only those primitives (int64 indices), in that order, ``(len(objects), N)``."""
    if objects is None:
        return _primitives_t(scene, origins, directions)
    objects = torch.as_tensor(objects, dtype=torch.int64).flatten()
    t = torch.full((len(objects), origins.shape[0]), _FAR, dtype=origins.dtype)
    for kind, intersect in _PRIMITIVE_T.items():
        rows = (scene.kinds[objects] == kind).nonzero().flatten()
        if rows.numel():
            t[rows] = intersect(scene, objects[rows], origins, directions)
    return t


def _primitives_t(scene: WorldScene, origins: Tensor, directions: Tensor) -> Tensor:
    """``t (K, N)`` of every primitive of the scene (``_FAR`` where missed)."""
    t = torch.full((scene.num_objects, origins.shape[0]), _FAR, dtype=origins.dtype)
    for kind, intersect in _PRIMITIVE_T.items():
        index = (scene.kinds == kind).nonzero().flatten()
        if index.numel():
            t[index] = intersect(scene, index, origins, directions)
    return t


def _primitive_normals(scene: WorldScene, objects: Tensor, points: Tensor) -> Tensor:
    """Outward world-frame normals at ``points (M, 3)`` on primitives ``objects (M,)``."""
    rotation = scene.rotations[objects]  # (M, 3, 3)
    local = torch.einsum("mji,mj->mi", rotation, points - scene.centers[objects])
    sizes = scene.sizes[objects]
    kinds = scene.kinds[objects]
    normal_local = torch.zeros_like(local)
    # sphere: radial
    normal_local = torch.where((kinds == KIND_SPHERE)[:, None], local, normal_local)
    # box: the face whose slab the point is nearest to leaving
    ratio = local.abs() / sizes.clamp(min=1e-9)
    face = ratio.argmax(dim=1, keepdim=True)
    box_normal = torch.zeros_like(local).scatter(1, face, torch.gather(local, 1, face).sign())
    normal_local = torch.where((kinds == KIND_BOX)[:, None], box_normal, normal_local)
    # cylinder: side (radial in x-z) unless on a cap
    radial = torch.stack([local[:, 0], torch.zeros_like(local[:, 1]), local[:, 2]], dim=1)
    on_cap = (local[:, 1].abs() - sizes[:, 1]).abs() * sizes[:, 0] < (
        radial.norm(dim=1) - sizes[:, 0]
    ).abs() * sizes[:, 1]
    cap = torch.zeros_like(local)
    cap[:, 1] = local[:, 1].sign()
    cylinder_normal = torch.where(on_cap[:, None], cap, radial)
    normal_local = torch.where((kinds == KIND_CYLINDER)[:, None], cylinder_normal, normal_local)
    normal_local = normal_local / normal_local.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return torch.einsum("mij,mj->mi", rotation, normal_local)


def cast_rays(scene: WorldScene, origins: Tensor, directions: Tensor) -> Hit:
    """Nearest hit of each ray ``origins (N, 3)``, unit ``directions (N, 3)``, world frame."""
    enclosure_t = _planes_t(scene.plane_normals, scene.plane_offsets, origins, directions)
    t_all = torch.cat([enclosure_t, _primitives_t(scene, origins, directions)])  # (S, N)
    t, surface = t_all.min(dim=0)
    if bool((t >= _FAR).any()):
        raise RuntimeError("a ray left the world's enclosure; the scene is malformed")
    points = origins + t[:, None] * directions
    normals = torch.zeros_like(points)
    is_plane = surface < NUM_ENCLOSURE_SURFACES
    normals[is_plane] = scene.plane_normals[surface[is_plane]]
    on_object = ~is_plane
    if bool(on_object.any()):
        objects = surface[on_object] - NUM_ENCLOSURE_SURFACES
        normals[on_object] = _primitive_normals(scene, objects, points[on_object])
    facing = (normals * directions).sum(1, keepdim=True) > 0
    normals = torch.where(facing, -normals, normals)
    return Hit(t=t, surface=surface, point=points, normal=normals)


def occluded(scene: WorldScene, points: Tensor, viewpoint: Tensor) -> Tensor:
    """``(N,)`` bool: is the segment from ``viewpoint (3,)`` to ``points (N, 3)`` blocked by a
    primitive before reaching the point (self-occlusion included)?

    ``points`` are expected on visible surfaces of the scene; the enclosure never blocks.
    """
    offsets = points - viewpoint
    distance = offsets.norm(dim=1)
    directions = offsets / distance[:, None].clamp(min=1e-12)
    origins = viewpoint.expand_as(points)
    t = _primitives_t(scene, origins, directions).amin(dim=0) if scene.num_objects else None
    if t is None:
        return torch.zeros_like(distance, dtype=torch.bool)
    return t < distance * (1.0 - 1e-4) - 1e-4


def _in_shadow(scene: WorldScene, points: Tensor, normals: Tensor, to_light: Tensor) -> Tensor:
    """``(N,)`` bool: does a primitive block the light from direction ``to_light (3,)``?"""
    if scene.num_objects == 0:
        return torch.zeros(points.shape[0], dtype=torch.bool)
    origins = points + normals * 1e-3
    directions = to_light.expand_as(points)
    return _primitives_t(scene, origins, directions).amin(dim=0) < _FAR


# --------------------------------------------------------------------------- appearance


def _lattice_hash(ix: Tensor, iy: Tensor, iz: Tensor, seed: Tensor) -> Tensor:
    """Integer lattice points -> pseudo-random values in ``[0, 1)`` (a fixed integer hash)."""
    h = ix * 73856093 ^ iy * 19349663 ^ iz * 83492791 ^ seed * 2654435761
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).to(torch.float32) / 65536.0


def value_noise(points: Tensor, seed: Tensor) -> Tensor:
    """Smooth 3D value noise in ``[0, 1]`` at ``points (N, 3)`` (lattice spacing 1), one hash
    ``seed (N,)`` int64 per point: trilinear interpolation of lattice values with a smoothstep."""
    cell = points.floor()
    frac = points - cell
    weight = frac * frac * (3.0 - 2.0 * frac)
    base = cell.to(torch.int64)
    total = torch.zeros(points.shape[0], dtype=points.dtype)
    for corner in range(8):
        offset = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        corner_weight = torch.where(offset.bool(), weight, 1.0 - weight).prod(dim=1)
        lattice = base + offset
        total += corner_weight * _lattice_hash(lattice[:, 0], lattice[:, 1], lattice[:, 2], seed)
    return total


def texture_pattern(local: Tensor, params: Tensor, seed: Tensor) -> Tensor:
    """Solid texture ``(N,)`` in ``[0, 1]`` at object-frame points ``local (N, 3)``.

    ``params (N, 3)`` holds per point ``(kind, frequency, strength)``: kind 0 is fractal value
    noise, 1 a 3D checker, 2 stripes across a tilted axis; frequency in cycles per metre. The
    returned value is already scaled by ``strength`` (0 gives a textureless surface).
    """
    kind, frequency, strength = params.unbind(1)
    scaled = local * frequency[:, None]
    noise = 0.6 * value_noise(scaled, seed) + 0.4 * value_noise(2.7 * scaled + 17.0, seed + 1)
    checker = (scaled.floor().sum(1).remainder(2.0)) * 0.8 + 0.2 * noise
    axis = torch.tensor([0.8, 0.36, 0.48])
    stripes = 0.5 + 0.5 * torch.sin(2.0 * torch.pi * (scaled @ axis)) * (0.7 + 0.3 * noise)
    pattern = torch.where(kind == 0, noise, torch.where(kind == 1, checker, stripes))
    return pattern * strength


def _albedo(scene: WorldScene, hit: Hit) -> Tensor:
    """``(N, 3)`` albedo at the hit points, textures evaluated in each surface's own frame."""
    surface = hit.surface
    local = hit.point.clone()
    on_object = surface >= NUM_ENCLOSURE_SURFACES
    if bool(on_object.any()):
        objects = surface[on_object] - NUM_ENCLOSURE_SURFACES
        offset = hit.point[on_object] - scene.centers[objects]
        local[on_object] = torch.einsum("mji,mj->mi", scene.rotations[objects], offset)
    pattern = texture_pattern(local, scene.texture_params[surface], surface + scene.texture_seed)
    color_a = scene.colors_a[surface]
    color_b = scene.colors_b[surface]
    return color_a + (color_b - color_a) * pattern[:, None]


def _shading(scene: WorldScene, hit: Hit) -> Tensor:
    """``(N, 3)`` Lambertian shading: ambient + sum of unshadowed ``max(0, n . l)`` terms."""
    shading = scene.ambient.expand(hit.point.shape[0], 3).clone()
    for to_light, color in zip(scene.light_directions, scene.light_colors, strict=True):
        cosine = (hit.normal @ to_light).clamp(min=0.0)
        lit = cosine > 0
        if bool(lit.any()):
            shadow = torch.zeros_like(lit)
            shadow[lit] = _in_shadow(scene, hit.point[lit], hit.normal[lit], to_light)
            cosine = torch.where(shadow, torch.zeros_like(cosine), cosine)
        shading += cosine[:, None] * color
    sky = hit.surface == SKY_SURFACE
    shading[sky] = 1.0
    return shading


def render(scene: WorldScene, camera: Camera) -> RenderLayers:
    """Ray-cast ``scene`` through every pixel of ``camera``; all layers exact per pixel."""
    height, width = camera.image_size
    origins, directions, z_per_metre = camera_rays(camera)
    hit = cast_rays(scene, origins, directions)
    albedo = _albedo(scene, hit)
    shading = _shading(scene, hit)
    image = albedo * shading
    normals_cam = hit.normal @ camera.rotation  # camera_from_world applied to rows

    def planes(values: Tensor) -> Tensor:  # (N, 3) -> (3, H, W)
        return values.T.reshape(3, height, width).contiguous()

    return RenderLayers(
        image=planes(image),
        albedo=planes(albedo),
        shading=planes(shading),
        depth=(hit.t * z_per_metre).reshape(height, width),
        normals=planes(normals_cam),
        surface=hit.surface.reshape(height, width),
        points=hit.point.reshape(height, width, 3),
    )
