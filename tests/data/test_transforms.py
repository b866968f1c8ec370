"""Joint image/target transforms and collation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from structvision.data.collate import collate_dense, collate_detection
from structvision.data.transforms import (
    DetectionTransforms,
    RandomHorizontalFlip,
    RandomScale,
    detection_eval_transforms,
    detection_train_transforms,
    from_tv,
    hflip_keypoints,
    sanitize_instances,
    to_tv,
)

H, W = 24, 32


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Slow reference: tight xyxy box (continuous coordinates) of each (H, W) mask."""
    boxes = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def make_sample() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, H, W, generator=generator)
    masks = torch.zeros(3, H, W, dtype=torch.uint8)
    masks[0, 2:10, 3:9] = 1
    masks[1, 12:20, 20:31] = 1
    masks[2, 5:7, 14:26] = 1
    keypoints = torch.tensor(
        [
            [[5, 4, 2], [4, 6, 2], [8, 6, 1]],  # nose, left_eye, right_eye
            [[25, 15, 2], [0, 0, 0], [29, 18, 2]],
            [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
        ],
        dtype=torch.float32,
    )
    target = {
        "boxes": mask_boxes(masks),
        "labels": torch.tensor([1, 2, 3]),
        "masks": masks,
        "keypoints": keypoints,
        "area": masks.flatten(1).sum(1).float(),
        "iscrowd": torch.tensor([0, 1, 0]),
        "image_id": torch.tensor(7),
    }
    return image, target


def test_to_tv_from_tv_round_trip() -> None:
    image, target = make_sample()
    tv_image, tv_target = to_tv((image * 255).to(torch.uint8), target)
    assert tv_target["boxes"].canvas_size == (H, W)
    assert tv_image.dtype == torch.float32
    plain_image, plain_target = from_tv(tv_image, tv_target)
    assert type(plain_image) is torch.Tensor and type(plain_target["boxes"]) is torch.Tensor
    assert type(plain_target["masks"]) is torch.Tensor
    assert torch.allclose(plain_image, (image * 255).to(torch.uint8) / 255)
    for key in target:
        assert torch.equal(plain_target[key], target[key])


def test_flip_moves_boxes_masks_keypoints_consistently() -> None:
    image, target = make_sample()
    flip = DetectionTransforms([RandomHorizontalFlip(p=1.0, keypoint_flip_pairs=[(1, 2)])])
    out_image, out = flip(image, target)
    assert torch.equal(out_image, image.flip(-1))
    assert torch.equal(out["masks"], target["masks"].flip(-1))
    assert torch.equal(out["boxes"], mask_boxes(out["masks"]))
    expected_boxes = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
        [W, 0, W, 0]
    )
    assert torch.equal(out["boxes"], expected_boxes)
    expected_keypoints = torch.tensor(
        [
            [[27, 4, 2], [24, 6, 1], [28, 6, 2]],  # left/right eyes swapped and mirrored
            [[7, 15, 2], [3, 18, 2], [0, 0, 0]],  # invisible point stays (0, 0, 0)
            [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(out["keypoints"], expected_keypoints)
    for key in ("labels", "area", "iscrowd", "image_id"):
        assert torch.equal(out[key], target[key])


def test_hflip_keypoints_twice_is_identity() -> None:
    _, target = make_sample()
    once = hflip_keypoints(target["keypoints"], image_width=W, flip_pairs=[(1, 2)])
    twice = hflip_keypoints(once, image_width=W, flip_pairs=[(1, 2)])
    assert torch.equal(twice, target["keypoints"])
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        hflip_keypoints(torch.zeros(2, 3), image_width=W)


def test_flip_probability_zero_is_identity() -> None:
    image, target = make_sample()
    out_image, out = DetectionTransforms([RandomHorizontalFlip(p=0.0)])(image, target)
    assert torch.equal(out_image, image) and torch.equal(out["boxes"], target["boxes"])


def test_scale_moves_everything_together() -> None:
    image, target = make_sample()
    out_image, out = DetectionTransforms([RandomScale(scale_range=(2.0, 2.0))])(image, target)
    assert out_image.shape == (3, 2 * H, 2 * W)
    assert out["masks"].shape == (3, 2 * H, 2 * W) and out["masks"].dtype == torch.uint8
    assert torch.equal(out["boxes"], target["boxes"] * 2)
    assert torch.equal(out["boxes"], mask_boxes(out["masks"]))
    assert torch.equal(out["area"], target["area"] * 4)
    assert torch.equal(out["keypoints"][..., :2], target["keypoints"][..., :2] * 2)
    assert torch.equal(out["keypoints"][..., 2], target["keypoints"][..., 2])


def test_sanitize_removes_degenerate_boxes_with_their_instances() -> None:
    image, target = make_sample()
    target["boxes"] = torch.tensor(
        [[3.0, 2.0, 9.0, 10.0], [20.0, 12.0, 20.5, 20.0], [40.0, 5.0, 50.0, 7.0]]
    )  # ok / 0.5 px wide / wholly right of the image (width 0 after clamping)
    target["boxes"][0, 2] = W + 0.4  # slightly past the border: clamped, kept
    out_image, out = DetectionTransforms([], sanitize=True)(image, target)
    assert torch.equal(out_image, image)
    assert out["boxes"].tolist() == [[3.0, 2.0, float(W), 10.0]]
    assert out["labels"].tolist() == [1]
    assert torch.equal(out["masks"], target["masks"][:1])
    assert torch.equal(out["keypoints"], target["keypoints"][:1])
    assert out["area"].tolist() == target["area"][:1].tolist()
    assert out["iscrowd"].tolist() == [0]
    assert out["image_id"].item() == 7


def test_sanitize_handles_empty_targets() -> None:
    image = torch.rand(3, H, W)
    target = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, H, W, dtype=torch.uint8),
        "image_id": torch.tensor(1),
    }
    out_image, out = detection_train_transforms(color_jitter=True)(image, target)
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)
    assert out["masks"].shape == (0, *out_image.shape[-2:])
    _, direct = sanitize_instances(*to_tv(image, target))
    assert direct["boxes"].shape == (0, 4)


def test_train_transforms_reproducible_from_torch_seed_only() -> None:
    image, target = make_sample()
    transforms = detection_train_transforms(
        hflip_prob=0.5, scale_range=(0.5, 1.5), color_jitter=True, keypoint_flip_pairs=[(1, 2)]
    )
    outputs = []
    for python_seed in (1, 2):
        torch.manual_seed(123)
        random.seed(python_seed)
        np.random.seed(python_seed)  # noqa: NPY002 - must not influence the result
        outputs.append([transforms(image, target) for _ in range(4)])
    for (image_a, target_a), (image_b, target_b) in zip(*outputs, strict=True):
        assert torch.equal(image_a, image_b)
        assert all(torch.equal(target_a[k], target_b[k]) for k in target_a)
    sizes = {tuple(out_image.shape) for out_image, _ in outputs[0]}
    assert len(sizes) > 1  # the scale really is random
    for out_image, out in outputs[0]:
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0
        # nearest-neighbour mask resampling: within one pixel of the scaled box
        assert (out["boxes"] - mask_boxes(out["masks"])).abs().max() <= 1.0


def test_eval_transforms_only_change_dtype() -> None:
    image, target = make_sample()
    uint8_image = (image * 255).round().to(torch.uint8)
    out_image, out = detection_eval_transforms()(uint8_image, target)
    assert out_image.dtype == torch.float32
    assert torch.allclose(out_image * 255, uint8_image.float())
    assert all(torch.equal(out[k], target[k]) for k in target)


def test_flow_target_rejected() -> None:
    image, target = make_sample()
    target["flow"] = torch.zeros(2, H, W)
    with pytest.raises(ValueError, match="flow"):
        detection_train_transforms()(image, target)


def test_semantic_map_moves_with_the_image() -> None:
    image, target = make_sample()
    semantic = torch.arange(H * W).reshape(H, W) % 7
    target["semantic"] = semantic
    _, flipped = RandomHorizontalFlip(p=1.0)(*to_tv(image, target))
    _, out = from_tv(image, flipped)
    assert out["semantic"].dtype == torch.int64
    assert torch.equal(out["semantic"], semantic.flip(-1))
    _, scaled = RandomScale(scale_range=(2.0, 2.0))(*to_tv(image, target))
    _, out = from_tv(image, scaled)
    assert out["semantic"].shape == (2 * H, 2 * W)
    assert set(out["semantic"].unique().tolist()) <= set(semantic.unique().tolist())  # nearest


def test_collate_detection_keeps_lists() -> None:
    sample_a = make_sample()
    sample_b = (torch.rand(3, 10, 12), {"boxes": torch.zeros(0, 4)})
    images, targets = collate_detection([sample_a, sample_b])
    assert images[0] is sample_a[0] and images[1] is sample_b[0]
    assert targets[0] is sample_a[1] and targets[1] is sample_b[1]


def test_collate_dense_stacks_and_checks_shapes() -> None:
    batch = [
        (
            torch.full((3, 4, 5), float(i)),
            {"semantic": torch.full((4, 5), i), "image_id": torch.tensor(i)},
        )
        for i in range(3)
    ]
    images, targets = collate_dense(batch)
    assert images.shape == (3, 3, 4, 5) and torch.equal(images[:, 0, 0, 0], torch.arange(3.0))
    assert targets["semantic"].shape == (3, 4, 5) and targets["image_id"].tolist() == [0, 1, 2]
    batch.append(
        (torch.zeros(3, 4, 6), {"semantic": torch.zeros(4, 6), "image_id": torch.tensor(3)})
    )
    with pytest.raises(ValueError, match=r"image of sample 3 has shape \(3, 4, 6\)"):
        collate_dense(batch)
    with pytest.raises(ValueError, match="target keys"):
        collate_dense([batch[0], (batch[1][0], {"semantic": batch[1][1]["semantic"]})])
