"""The world generators' ground truth is exact: warps with the true disparity and flow reproduce
the other view, normals agree with the depth map, boxes and masks agree with the layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from structvision.data.spec import build_dataset
from structvision.data.synthetic.world import WorldDataset, WorldFlowDataset, WorldStereoDataset

SIZE = {"height": 48, "width": 96}


def _sample_at(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image (C, H, W)`` at continuous pixel coordinates ``x, y (H, W)``
    (pixel ``j`` covers ``[j, j + 1)``)."""
    height, width = image.shape[-2:]
    grid = torch.stack([2 * x / width - 1, 2 * y / height - 1], dim=-1)[None]
    return F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0]


def _pixel_centres(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return x, y


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of ``mask`` whose 3x3 neighbourhood is all in ``mask`` (away from edges)."""
    return -F.max_pool2d(-mask.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0.5


@pytest.mark.parametrize("index", [0, 1, 2])
def test_right_view_warped_with_true_disparity_gives_the_left(index):
    dataset = WorldStereoDataset(
        split="val", num_images=3, seed=0, texture_frequency=(0.5, 1.0), **SIZE
    )
    left, target = dataset[index]
    x, y = _pixel_centres(*left.shape[-2:])
    rebuilt = _sample_at(target["image_right"], x - target["disparity"], y)  # (3, H, W)
    error = (rebuilt - left).abs().amax(0)
    valid = _interior(target["valid"]) & (x - target["disparity"] > 1)
    assert valid.float().mean() > 0.5
    assert error[valid].median() < 0.01  # interpolation error only
    assert error[valid].mean() < 0.03
    shifted = _sample_at(target["image_right"], x - target["disparity"] - 0.5, y)
    assert error[valid].median() < 0.3 * (shifted - left).abs().amax(0)[valid].median()
    # the disparities of the two views agree where both see the point
    back = _sample_at(target["disparity_right"][None], x - target["disparity"], y)[0]
    assert (back - target["disparity"])[valid].abs().median() < 0.02
    # the mask means something: occluded pixels do not match
    invalid = ~target["valid"] & (x - target["disparity"] > 1)
    if invalid.sum() > 20:
        assert error[invalid].mean() > error[valid].mean()


def test_disparity_is_focal_times_baseline_over_depth():
    _, target = WorldStereoDataset(split="val", num_images=1, **SIZE)[0]
    expected = target["focal"] * target["baseline"] / target["depth"]
    assert torch.allclose(target["disparity"], expected)
    assert target["intrinsics"][0, 0] == target["focal"] == pytest.approx(0.58 * 96)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_frame_2_warped_with_true_flow_gives_frame_1(index):
    # Albedo is carried exactly by the motion (shading changes as an object turns to the light).
    dataset = WorldFlowDataset(
        split="val", num_images=3, seed=1, texture_frequency=(0.5, 1.0), **SIZE
    )
    first, second, target = dataset.render_pair(index)
    x, y = _pixel_centres(*first.image.shape[-2:])
    flow = target["flow"]
    assert flow.abs().amax() > 1.0  # the scene moves
    inside = (x + flow[0] > 1) & (x + flow[0] < x.shape[1] - 1)
    inside &= (y + flow[1] > 1) & (y + flow[1] < x.shape[0] - 1)
    valid = _interior(target["valid"]) & inside
    assert valid.float().mean() > 0.4

    def error(shift: float) -> torch.Tensor:
        rebuilt = _sample_at(second.albedo, x + flow[0] + shift, y + flow[1])
        return (rebuilt - first.albedo).abs().amax(0)[valid]

    assert error(0.0).median() < 0.01  # interpolation error only (largest on the far ground)
    assert error(0.0).median() < 0.4 * error(1.0).median()  # a pixel off is clearly worse
    assert torch.equal(dataset[index][0], first.image)


def test_normals_agree_with_the_depth_map_on_flat_interiors():
    image, target = WorldDataset(split="val", num_images=1, seed=2, **SIZE)[0]
    height, width = image.shape[-2:]
    x, y = _pixel_centres(height, width)
    k = target["intrinsics"]
    depth = target["depth"]
    points = torch.stack(
        [(x - k[0, 2]) / k[0, 0] * depth, (y - k[1, 2]) / k[1, 1] * depth, depth], dim=0
    ).double()  # (3, H, W) camera frame
    along_x = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    along_y = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    from_depth = torch.cross(along_x, along_y, dim=0)
    from_depth = from_depth / from_depth.norm(dim=0, keepdim=True)
    normals = target["normals"][:, 1:-1, 1:-1].double()
    # flat interiors: the 3x3 neighbourhood has one normal and one surface
    same = torch.ones(height - 2, width - 2, dtype=torch.bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = target["normals"][:, 1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
            same &= (shifted - target["normals"][:, 1:-1, 1:-1]).abs().amax(0) < 1e-6
            ids = target["instances"][1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
            same &= ids == target["instances"][1:-1, 1:-1]
    assert same.float().mean() > 0.5
    cosine = (from_depth * normals).sum(0).abs()[same]
    assert cosine.min() > 0.999


def test_world_layers_boxes_and_masks_agree():
    image, target = WorldDataset(split="train", num_images=2, seed=0, num_objects=(4, 6), **SIZE)[1]
    assert torch.equal(image, target["albedo"] * target["shading"])
    assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"]) >= 1
    for box, mask, label in zip(target["boxes"], target["masks"], target["labels"], strict=True):
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        assert (target["semantic"][mask.bool()] == label).all()
    assert (target["semantic"][target["instances"] == 0] == 0).all()


def test_world_specs_are_deterministic_and_splits_disjoint():
    a = build_dataset("world-stereo:num_images=2,height=32,width=64,seed=4", split="train")
    b = build_dataset("world-stereo:num_images=2,height=32,width=64,seed=4", split="train")
    v = build_dataset("world-stereo:num_images=2,height=32,width=64,seed=4", split="val")
    assert torch.equal(a[1][0], b[1][0]) and torch.equal(a[1][1]["disparity"], b[1][1]["disparity"])
    assert not torch.equal(a[1][0], v[1][0])
    with pytest.raises(ValueError, match="image_size"):
        build_dataset("world:height=4", split="train")


def test_render_cache_gives_the_same_samples_and_keys_on_every_setting(tmp_path):
    plain = WorldStereoDataset(split="val", num_images=2, **SIZE)
    cached = WorldStereoDataset(split="val", num_images=2, cache=str(tmp_path), **SIZE)
    for _ in range(2):  # a miss, then a hit
        image, target = cached[1]
        expected_image, expected = plain[1]
        assert torch.equal(image, expected_image)
        assert target.keys() == expected.keys()
        assert all(torch.equal(target[key], expected[key]) for key in expected)
    files = list(cached.cache_dir.glob("*.safetensors"))
    assert [p.name for p in files] == ["0000001.safetensors"]
    other = WorldStereoDataset(split="val", num_images=2, cache=str(tmp_path), baseline=0.3, **SIZE)
    assert other.cache_dir != cached.cache_dir
    assert (
        WorldStereoDataset(split="train", num_images=2, cache=str(tmp_path), **SIZE).cache_dir
        != cached.cache_dir
    )
    files[0].write_bytes(b"damaged")  # a damaged file is rendered again and replaced
    assert torch.equal(cached[1][0], expected_image)
    assert torch.equal(cached[1][1]["disparity"], expected["disparity"])


def test_world_video_sequences_are_smooth_and_consistent():
    from structvision.data.synthetic.world import WorldVideoDataset

    video = WorldVideoDataset(split="val", num_images=2, seed=3, num_frames=6, **SIZE)
    frames, target = video[1]
    assert frames.shape == (6, 3, 48, 96)
    single, _ = WorldDataset(split="val", num_images=2, seed=3, num_frames=6, **SIZE)[1]
    assert torch.equal(frames[0], single)  # frame 0 is the scene's first view
    steps = target["camera_centers"][1:] - target["camera_centers"][:-1]
    assert torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-5)  # constant velocity
    fractions, boxes = target["visible_fraction"], target["boxes"]
    assert ((fractions > 0) == (boxes[..., 2] > boxes[..., 0])).all()
    assert (fractions >= 0).all() and (fractions <= 1).all()
    assert (frames[-1] != frames[0]).any()


def test_world_video_visible_fraction_counts_what_hides_an_object():
    from structvision.data.synthetic.world import WorldVideoDataset

    alone = WorldVideoDataset(split="val", num_images=4, num_frames=2, num_objects=(1, 1), **SIZE)
    for index in range(4):
        _, target = alone[index]
        seen = target["visible_fraction"][target["visible_fraction"] > 0]
        assert torch.allclose(seen, torch.ones_like(seen))  # nothing can hide a lone object
    crowded = WorldVideoDataset(split="val", num_images=6, num_frames=2, num_objects=(8, 8), **SIZE)
    partial = torch.cat([crowded[i][1]["visible_fraction"].flatten() for i in range(6)])
    assert ((partial > 0) & (partial < 0.95)).any()  # some objects are partly hidden


def test_valid_marks_the_points_the_other_camera_sees():
    # On valid pixels the right camera's depth, found at x - d, is this pixel's depth (the same
    # surface point); without the occlusion test 1-5% of them would land on an occluder.
    dataset = WorldStereoDataset(split="val", num_images=6, seed=0, num_objects=(6, 8), **SIZE)
    x, y = _pixel_centres(48, 96)
    for index in range(6):
        _, target = dataset[index]
        back = _sample_at(target["depth_right"][None], x - target["disparity"], y)[0]
        mismatch = ((back - target["depth"]) / target["depth"]).abs() > 0.05
        valid = _interior(target["valid"]) & (x - target["disparity"] > 1)
        assert mismatch[valid].float().mean() < 0.01, index
        assert (~target["valid"]).any()


def test_motion_scale_sets_the_displacement_range():
    from structvision.data.spec import build_dataset

    def mean_flow(spec):
        dataset = build_dataset(spec, split="val")
        return [dataset[i][1]["flow"].norm(dim=0).mean().item() for i in range(3)]

    default = mean_flow("world-flow:num_images=3,height=48,width=96")
    assert default == mean_flow("world-flow:num_images=3,height=48,width=96,motion_scale=1.0")
    doubled = mean_flow("world-flow:num_images=3,height=48,width=96,motion_scale=2.0")
    assert 1.6 < sum(doubled) / sum(default) < 2.6
