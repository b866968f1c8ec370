"""The world's ray caster against closed-form geometry, and the scene sampler's contracts."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from structvision.data.synthetic.world.raycast import (
    Hit,
    _albedo,
    camera_rays,
    primitive_distances,
    project,
    render,
)
from structvision.data.synthetic.world.scene import (
    GROUND_SURFACE,
    KIND_BOX,
    KIND_SPHERE,
    NUM_ENCLOSURE_SURFACES,
    Camera,
    WorldConfig,
    object_points_at,
    sample_motion,
    sample_world_scene,
    scene_at,
    world_rng,
)

CONFIG = WorldConfig(image_size=(32, 48))


def _empty_scene(config: WorldConfig = CONFIG):
    return sample_world_scene(
        world_rng(seed=0, split="train", index=0), replace(config, num_objects=(0, 0))
    )


def _with_object(scene, kind: int, center, size, *, yaw: float = 0.0):
    """``scene`` (no objects) with one primitive; appearance copied from the ground."""
    c, s = math.cos(yaw), math.sin(yaw)
    rotation = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    ground = GROUND_SURFACE
    return replace(
        scene,
        kinds=torch.tensor([kind]),
        centers=torch.tensor([center], dtype=torch.float32),
        rotations=rotation[None],
        sizes=torch.tensor([size], dtype=torch.float32),
        texture_params=torch.cat([scene.texture_params, scene.texture_params[ground : ground + 1]]),
        colors_a=torch.cat([scene.colors_a, scene.colors_a[ground : ground + 1]]),
        colors_b=torch.cat([scene.colors_b, scene.colors_b[ground : ground + 1]]),
    )


def _pixel_rays64(camera: Camera) -> torch.Tensor:
    """``(H, W, 3)`` float64 unit camera-frame rays through pixel centres."""
    height, width = camera.image_size
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    rays = torch.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, torch.ones_like(u)], -1
    )
    return rays / rays.norm(dim=-1, keepdim=True)


def test_ground_plane_depth_is_exact():
    scene = _empty_scene()
    camera = Camera.from_config(CONFIG)
    layers = render(scene, camera)
    height, _ = CONFIG.image_size
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    expected = CONFIG.camera_height * camera.fy / (rows - camera.cy)  # y = h on the ground
    on_ground = layers.surface == GROUND_SURFACE
    assert on_ground[-1].all() and not on_ground[0].any()
    depth = layers.depth.double()
    for row in range(height):
        if on_ground[row].any():
            assert torch.allclose(
                depth[row][on_ground[row]],
                expected[row].expand(int(on_ground[row].sum())),
                rtol=1e-5,
            )
    ground_normals = layers.normals[:, on_ground]
    assert torch.allclose(
        ground_normals, torch.tensor([[0.0], [-1.0], [0.0]]).expand_as(ground_normals)
    )


def test_sphere_depth_and_normals_match_closed_form():
    center = torch.tensor([0.4, -0.2, 6.0], dtype=torch.float64)
    radius = 1.3
    scene = _with_object(_empty_scene(), KIND_SPHERE, center.tolist(), [radius] * 3)
    camera = Camera.from_config(CONFIG)
    layers = render(scene, camera)
    rays = _pixel_rays64(camera)  # (H, W, 3)
    b = (rays * center).sum(-1)
    disc = b * b - (center @ center - radius**2)
    hits = disc > 1e-6
    on_sphere = layers.surface == NUM_ENCLOSURE_SURFACES
    assert hits.sum() > 50
    assert torch.equal(on_sphere, hits)
    t = b[hits] - disc[hits].sqrt()
    expected_depth = t * rays[hits][:, 2]
    assert torch.allclose(layers.depth[hits].double(), expected_depth, rtol=1e-5)
    points = t[:, None] * rays[hits]
    expected_normals = (points - center) / radius
    assert torch.allclose(layers.normals[:, hits].T.double(), expected_normals, atol=1e-4)


def test_rotated_box_front_face_depth():
    # a box turned by 90 degrees about y shows its z-extent face... as its x extent: half
    # extents (0.5, 0.7, 1.5) turned 90 degrees present a front face at z = 8 - 0.5.
    scene = _with_object(
        _empty_scene(), KIND_BOX, [0.0, 0.0, 8.0], [0.5, 0.7, 1.5], yaw=math.pi / 2
    )
    camera = Camera.from_config(CONFIG)
    layers = render(scene, camera)
    front = (layers.surface == NUM_ENCLOSURE_SURFACES) & (layers.normals[2] < -0.999)
    assert front.sum() > 20
    assert torch.allclose(layers.depth[front], torch.full_like(layers.depth[front], 7.5), atol=1e-4)
    # the face spans x in [-1.5, 1.5] at Z = 7.5: its pixel columns follow from the pinhole model
    columns = front.any(0).nonzero().flatten()
    u_min, u_max = camera.fx * -1.5 / 7.5 + camera.cx, camera.fx * 1.5 / 7.5 + camera.cx
    assert columns.min() + 0.5 >= u_min and columns.max() + 0.5 <= u_max
    assert columns.min() - 0.5 < u_min and columns.max() + 1.5 > u_max


def test_image_is_albedo_times_shading_and_layers_are_valid():
    config = WorldConfig(image_size=(24, 40))
    for index in range(3):
        scene = sample_world_scene(world_rng(seed=1, split="train", index=index), config)
        camera = Camera.from_config(config)
        layers = render(scene, camera)
        assert torch.equal(layers.image, layers.albedo * layers.shading)
        assert layers.image.min() >= 0 and layers.image.max() <= 1
        assert layers.shading.max() <= 1 + 1e-6
        assert torch.allclose(layers.normals.norm(dim=0), torch.ones(24, 40), atol=1e-5)
        _, directions, _ = camera_rays(camera)
        facing = (layers.normals.reshape(3, -1).T * directions).sum(1)
        assert (facing <= 1e-6).all()  # normals face the camera
        assert (layers.depth > 0).all()


def test_distances_to_chosen_primitives_are_those_rows_of_all():
    config = WorldConfig(image_size=(24, 40), num_objects=(4, 4))
    scene = sample_world_scene(world_rng(seed=2, split="train", index=0), config)
    origins, directions, _ = camera_rays(Camera.from_config(config))
    every = primitive_distances(scene, origins, directions)
    assert every.shape == (4, 24 * 40) and (every < 1e8).any(dim=1).sum() >= 1
    for objects in ([2], [3, 0], [1, 1, 2]):
        chosen = primitive_distances(scene, origins, directions, objects)
        assert torch.equal(chosen < 1e8, every[objects] < 1e8)  # the same silhouettes
        assert torch.allclose(chosen, every[objects], rtol=1e-6, atol=1e-5)


def test_sphere_casts_a_shadow_straight_down():
    center = [0.0, 0.0, 6.0]  # floating 1.65 m above the ground, radius 0.8
    scene = _with_object(_empty_scene(), KIND_SPHERE, center, [0.8] * 3)
    scene = replace(
        scene,
        ambient=torch.full((3,), 0.25),
        light_directions=torch.tensor([[0.0, -1.0, 0.0]]),  # y is down: the light is above
        light_colors=torch.full((1, 3), 0.75),
    )
    camera = Camera.from_config(CONFIG)
    layers = render(scene, camera)
    ground = (layers.surface == GROUND_SURFACE).reshape(-1)
    points = layers.points.reshape(-1, 3)
    below = ground & ((points[:, 0] ** 2 + (points[:, 2] - 6.0) ** 2) < 0.7**2)
    outside = ground & ((points[:, 0] ** 2 + (points[:, 2] - 6.0) ** 2) > 0.9**2)
    shading = layers.shading.reshape(3, -1)
    assert below.sum() > 0 and outside.sum() > 0
    assert torch.allclose(shading[:, below], torch.full_like(shading[:, below], 0.25))
    assert torch.allclose(shading[:, outside], torch.full_like(shading[:, outside], 1.0))


def test_stereo_views_differ_by_the_disparity():
    config = WorldConfig(image_size=(24, 40))
    scene = sample_world_scene(world_rng(seed=2, split="train", index=0), config)
    left = Camera.from_config(config)
    right = left.shifted(config.baseline)
    layers = render(scene, left)
    uv_left, z_left = project(left, layers.points.reshape(-1, 3))
    uv_right, z_right = project(right, layers.points.reshape(-1, 3))
    disparity = left.fx * config.baseline / layers.depth.reshape(-1)
    assert torch.allclose(uv_left[:, 0] - uv_right[:, 0], disparity, rtol=1e-4, atol=1e-4)
    assert torch.allclose(uv_left[:, 1], uv_right[:, 1], atol=1e-4)
    assert torch.allclose(z_left, z_right)


def test_texture_moves_with_its_object():
    config = WorldConfig(image_size=(32, 48), num_objects=(3, 3))
    rng = world_rng(seed=3, split="train", index=0)
    scene = sample_world_scene(rng, config)
    motion = sample_motion(
        world_rng(seed=3, split="train", index=0, stream="motion"), config, scene
    )
    layers = render(scene, Camera.from_config(config))
    surface = layers.surface.reshape(-1)
    on_object = surface >= NUM_ENCLOSURE_SURFACES
    assert on_object.any()
    points = layers.points.reshape(-1, 3)[on_object]
    objects = surface[on_object] - NUM_ENCLOSURE_SURFACES
    moved_points = object_points_at(scene, motion, points, objects, 1.0)
    assert not torch.allclose(moved_points, points)
    blank = torch.zeros(points.shape[0])
    moved = scene_at(scene, motion, 1.0)
    after = _albedo(
        moved, Hit(t=blank, surface=surface[on_object], point=moved_points, normal=points)
    )
    before = layers.albedo.reshape(3, -1).T[on_object]
    assert torch.allclose(after, before, atol=1e-4)
    assert torch.allclose(object_points_at(scene, motion, points, objects, 0.0), points, atol=1e-5)


def test_scenes_are_deterministic_and_splits_differ():
    def draw(split: str, index: int):
        return sample_world_scene(world_rng(seed=5, split=split, index=index), CONFIG)

    a, b = draw("train", 4), draw("train", 4)
    assert torch.equal(a.centers, b.centers) and torch.equal(a.colors_a, b.colors_a)
    assert not torch.equal(draw("val", 4).colors_a[:5], a.colors_a[:5])
    assert not torch.equal(draw("train", 5).colors_a[:5], a.colors_a[:5])


def test_primitives_rest_on_the_ground_without_overlap():
    config = WorldConfig(num_objects=(8, 8))
    scene = sample_world_scene(world_rng(seed=0, split="train", index=1), config)
    assert scene.num_objects >= 4
    bottoms = scene.centers[:, 1] + scene.sizes[:, 1]
    assert torch.allclose(bottoms, torch.full_like(bottoms, config.camera_height))
    assert (scene.centers[:, 2] >= config.depth_range[0]).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_size", 4), ("baseline", -1.0), ("num_objects", (3, 1)), ("kinds", ("cone",))],
)
def test_bad_config_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        WorldConfig(**{field: value})
