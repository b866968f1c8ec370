from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.ops.poolers import LevelMapper

from structvision.ops.multiscale import MultiScaleRoIAlign, MultiScaleRoIPool, assign_fpn_levels


def random_boxes(num: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """(num, 4) xyxy boxes inside a (height, width) image, sides log-uniform in [2, image]."""
    image_wh = torch.tensor([width, height], dtype=torch.float32)
    log_size = torch.rand(num, 2, generator=gen) * torch.log(image_wh / 2.0) + torch.log(
        torch.tensor(2.0)
    )
    size = torch.exp(log_size)  # (num, 2) width, height
    corner = torch.rand(num, 2, generator=gen) * (image_wh - size)
    return torch.cat((corner, corner + size), dim=1)


def test_assign_fpn_levels_equals_torchvision_level_mapper():
    gen = torch.Generator().manual_seed(0)
    boxes = random_boxes(500, 900, 1200, gen)
    # sides exactly at powers of two times 224 (where eps matters) and tiny / huge boxes
    sides = torch.tensor([28.0, 56.0, 112.0, 224.0, 448.0, 896.0, 0.5, 3000.0])
    exact = torch.stack((torch.zeros_like(sides), torch.zeros_like(sides), sides, sides), dim=1)
    boxes = torch.cat((boxes, exact))
    for dtype in (torch.float32, torch.float64):
        levels = assign_fpn_levels(boxes.to(dtype), min_level=2, max_level=5)
        reference = LevelMapper(2, 5)([boxes.to(dtype)]) + 2
        assert levels.dtype == torch.int64
        assert torch.equal(levels, reference)
    levels = assign_fpn_levels(exact)
    assert levels.tolist() == [2, 2, 3, 4, 5, 5, 2, 5]  # 224 -> k0 = 4, clamped to [2, 5]
    # a hair below 224 px in float64: eps keeps it on level 4, as LevelMapper does
    near = torch.tensor(
        [[0.0, 0.0, 224.0 - 1e-7, 224.0], [0.0, 0.0, 224.0 - 1e-3, 224.0]], dtype=torch.float64
    )
    assert assign_fpn_levels(near).tolist() == [4, 3]
    assert torch.equal(assign_fpn_levels(near), LevelMapper(2, 5)([near]) + 2)
    shifted = assign_fpn_levels(exact, min_level=3, max_level=6, canonical_size=112)
    assert torch.equal(shifted, LevelMapper(3, 6, canonical_scale=112)([exact]) + 3)


def make_pyramid(batch: int, channels: int, height: int, width: int, levels, gen):
    features = OrderedDict()
    for level in levels:
        stride = 2**level
        features[f"p{level}"] = torch.rand(
            batch, channels, height // stride, width // stride, generator=gen
        )
    return features


@pytest.mark.parametrize("output_size, sampling_ratio", [(7, 2), ((5, 3), -1)])
def test_multiscale_equals_torchvision(output_size, sampling_ratio):
    gen = torch.Generator().manual_seed(1)
    image_sizes = [(250, 320), (256, 300), (180, 200)]  # (H, W), padded batch is 256 x 320
    features = make_pyramid(3, 4, 256, 320, (2, 3, 4, 5), gen)
    features["pool"] = torch.rand(3, 4, 4, 5, generator=gen)  # not named: ignored
    boxes = [random_boxes(n, h, w, gen) for n, (h, w) in zip((30, 0, 25), image_sizes, strict=True)]
    names = ["p2", "p3", "p4", "p5"]
    # canonical size 64 spreads these small-image boxes over all four levels
    ours = MultiScaleRoIAlign(names, output_size, sampling_ratio, canonical_scale=64)
    ref = torchvision.ops.MultiScaleRoIAlign(names, output_size, sampling_ratio, canonical_scale=64)
    ours, ref = ours(features, boxes, image_sizes), ref(features, boxes, image_sizes)
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    assert ours.shape == ref.shape == (55, 4, out_h, out_w)
    assert torch.equal(ours, ref)
    levels = assign_fpn_levels(torch.cat(boxes), canonical_size=32)
    assert set(levels.tolist()) == {2, 3, 4, 5}  # the comparison exercised several levels
    # names out of finest-to-coarsest order are refused
    shuffled = MultiScaleRoIAlign(
        ["p4", "p2", "p5", "p3"], output_size, sampling_ratio, canonical_scale=64
    )
    with pytest.raises(ValueError, match="finest to the coarsest"):
        shuffled(features, boxes, image_sizes)


@pytest.mark.parametrize("levels", [(5, 5), (2, 4)])
def test_multiscale_equals_torchvision_on_unusual_pyramids(levels):
    # (5, 5): MobileNetV3's FPN gives two maps of one stride; torchvision pools all boxes from
    # the first. (2, 4): a gap; boxes of the missing level stay zero, as in torchvision.
    gen = torch.Generator().manual_seed(2)
    features = OrderedDict(
        (f"m{i}", torch.rand(2, 3, 256 // 2**level, 256 // 2**level, generator=gen))
        for i, level in enumerate(levels)
    )
    names = list(features)
    boxes = [random_boxes(20, 256, 256, gen), random_boxes(7, 200, 256, gen)]
    image_sizes = [(256, 256), (200, 256)]
    ours = MultiScaleRoIAlign(names, 7, 2, canonical_scale=64)(features, boxes, image_sizes)
    ref = torchvision.ops.MultiScaleRoIAlign(names, 7, 2, canonical_scale=64)(
        features, boxes, image_sizes
    )
    assert torch.equal(ours, ref)


def test_multiscale_single_level_and_canonical_settings():
    gen = torch.Generator().manual_seed(2)
    image_sizes = [(128, 96), (120, 90)]
    features = make_pyramid(2, 3, 128, 96, (3,), gen)
    boxes = [random_boxes(n, h, w, gen) for n, (h, w) in zip((7, 5), image_sizes, strict=True)]
    ours = MultiScaleRoIAlign(["p3"], 4, 2)(features, boxes, image_sizes)
    ref = torchvision.ops.MultiScaleRoIAlign(["p3"], 4, 2)(features, boxes, image_sizes)
    assert torch.equal(ours, ref)

    features = make_pyramid(2, 3, 128, 96, (1, 2, 3), gen)
    kwargs = dict(canonical_scale=32, canonical_level=2)
    ours = MultiScaleRoIAlign(["p1", "p2", "p3"], 3, 0, **kwargs)(features, boxes, image_sizes)
    ref = torchvision.ops.MultiScaleRoIAlign(["p1", "p2", "p3"], 3, 0, **kwargs)(
        features, boxes, image_sizes
    )
    assert torch.equal(ours, ref)


def test_multiscale_empty_boxes():
    gen = torch.Generator().manual_seed(3)
    features = make_pyramid(2, 5, 64, 64, (2, 3), gen)
    boxes = [torch.zeros(0, 4), torch.zeros(0, 4)]
    pooler = MultiScaleRoIAlign(["p2", "p3"], (2, 3), 2)
    pooled = pooler(features, boxes, [(64, 64), (64, 64)])
    assert pooled.shape == (0, 5, 2, 3)
    ref = torchvision.ops.MultiScaleRoIAlign(["p2", "p3"], (2, 3), 2)(
        features, boxes, [(64, 64), (64, 64)]
    )
    assert torch.equal(pooled, ref)


def test_multiscale_bad_inputs():
    gen = torch.Generator().manual_seed(4)
    features = make_pyramid(1, 2, 64, 64, (2, 4), gen)
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    with pytest.raises(ValueError, match="missing"):
        MultiScaleRoIAlign(["p2", "p3"], 2, 2)(features, boxes, [(64, 64)])
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        MultiScaleRoIAlign(["p2"], 2, 2)(features, [torch.zeros(3, 5)], [(64, 64)])


def test_multiscale_roi_pool_pools_each_box_on_its_level():
    gen = torch.Generator().manual_seed(3)
    image_sizes = [(100, 120), (128, 96)]
    features = OrderedDict(
        (f"p{level}", torch.randn(2, 4, 128 // 2**level, 128 // 2**level, generator=gen))
        for level in (2, 3, 4, 5)
    )
    boxes = [random_boxes(40, h, w, gen) for h, w in image_sizes]
    boxes[1] = torch.cat((boxes[1], torch.tensor([[0.0, 0.0, 127.0, 95.0]])))  # a large one
    pooler = MultiScaleRoIPool(["p2", "p3", "p4", "p5"], 5, canonical_scale=32)
    pooled = pooler(features, boxes, image_sizes)  # (81, 4, 5, 5)
    levels = assign_fpn_levels(torch.cat(boxes), canonical_size=32)
    assert set(levels.tolist()) == {2, 3, 4, 5}
    image_idxs = torch.tensor([0] * 40 + [1] * 41)
    for k, (box, level) in enumerate(zip(torch.cat(boxes), levels.tolist(), strict=True)):
        roi = torch.cat((image_idxs[k : k + 1].float(), box))[None]  # (1, 5)
        expected = torchvision.ops.roi_pool(features[f"p{level}"], roi, 5, 2.0**-level)
        assert torch.equal(pooled[k : k + 1], expected)
