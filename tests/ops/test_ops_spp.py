import pytest
import torch
import torch.nn.functional as F

from structvision.ops.roi import roi_pool
from structvision.ops.spp import (
    RoISpatialPyramidPool,
    roi_spatial_pyramid_pool,
    spatial_pyramid_pool,
)


def ramp(channels: int = 1) -> torch.Tensor:
    """(1, C, 5, 5) input; channel c has value 5 * y + x + 100 * c at cell (y, x)."""
    base = torch.arange(25.0).reshape(1, 1, 5, 5)
    return torch.cat([base + 100.0 * c for c in range(channels)], dim=1)


def test_roi_spp_hand_case_two_channels():
    # box (0, 0, 3, 3) covers 4 x 4 cells (x2 inclusive); level 2 has 2 x 2 cells per bin
    boxes = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    pooled = roi_spatial_pyramid_pool(ramp(2), boxes, levels=(1, 2))
    expected = torch.tensor(
        [[18.0, 118.0, 6.0, 8.0, 16.0, 18.0, 106.0, 108.0, 116.0, 118.0]]
    )  # level 1 (c0, c1), then level 2 channel-major
    assert torch.equal(pooled, expected)
    # spatial_scale 0.5 with doubled box coordinates reads the same cells
    scaled_rows = torch.tensor([[0.0, 0.0, 0.0, 6.0, 6.0]])
    scaled = roi_spatial_pyramid_pool(ramp(2), scaled_rows, levels=(1, 2), spatial_scale=0.5)
    assert torch.equal(scaled, expected)


def test_output_length_independent_of_box_size_and_list_form():
    gen = torch.Generator().manual_seed(0)
    features = torch.rand(2, 3, 12, 16, generator=gen)
    boxes0 = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 3.0, 15.0, 11.0]])
    boxes1 = torch.tensor([[4.0, 4.0, 5.0, 9.0]])
    pooled = roi_spatial_pyramid_pool(features, [boxes0, boxes1], levels=(1, 2, 4))
    assert pooled.shape == (3, 3 * (1 + 4 + 16))
    rows = torch.tensor(
        [[0, 0.0, 0.0, 1.0, 1.0], [0, 2.0, 3.0, 15.0, 11.0], [1, 4.0, 4.0, 5.0, 9.0]]
    )
    assert torch.equal(pooled, roi_spatial_pyramid_pool(features, rows, levels=(1, 2, 4)))
    module = RoISpatialPyramidPool(levels=(1, 2, 4))
    assert module.bins_per_channel == 21
    assert torch.equal(module(features, rows), pooled)
    # each level block equals roi_pool at that level, flattened
    level4 = roi_pool(features, rows, (4, 4)).flatten(1)
    assert torch.equal(pooled[:, 3 * 5 :], level4)


def test_level_one_is_max_over_box_region():
    gen = torch.Generator().manual_seed(1)
    features = torch.rand(2, 4, 10, 12, generator=gen)
    for _ in range(20):
        batch_idx = int(torch.randint(0, 2, (1,), generator=gen))
        x1, x2 = sorted(torch.randint(0, 12, (2,), generator=gen).tolist())
        y1, y2 = sorted(torch.randint(0, 10, (2,), generator=gen).tolist())
        rows = torch.tensor([[batch_idx, x1, y1, x2, y2]], dtype=torch.float32)
        pooled = roi_spatial_pyramid_pool(features, rows, levels=(1,))
        region = features[batch_idx, :, y1 : y2 + 1, x1 : x2 + 1]  # x2, y2 inclusive
        assert torch.equal(pooled[0], region.amax(dim=(1, 2)))


def test_avg_mode_level_one_on_linear_ramp_is_mean():
    # bilinear samples placed symmetrically in the box average to the ramp's centre value
    box = torch.tensor([[0.0, 0.0, 0.0, 5.0, 5.0]])
    pooled = roi_spatial_pyramid_pool(ramp(), box, levels=(1,), mode="avg")
    assert pooled.item() == pytest.approx(12.0)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(2)
    features = torch.rand(1, 2, 6, 7, generator=gen, dtype=torch.float64).requires_grad_()
    rows = torch.tensor([[0, 0.0, 0.0, 5.0, 4.0], [0, 1.0, 2.0, 4.0, 5.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: roi_spatial_pyramid_pool(x, rows, levels=(1, 2, 3)), (features,)
    )
    assert torch.autograd.gradcheck(lambda x: spatial_pyramid_pool(x, (1, 2, 3)), (features,))


def test_whole_image_spp():
    features = ramp(2)
    pooled = spatial_pyramid_pool(features, (1, 2))
    # adaptive 2 x 2 bins on 5 cells: rows/cols 0..2 and 2..4
    expected = torch.tensor([[24.0, 124.0, 12.0, 14.0, 22.0, 24.0, 112.0, 114.0, 122.0, 124.0]])
    assert torch.equal(pooled, expected)
    avg = spatial_pyramid_pool(features, (1, 3), mode="avg")
    assert avg.shape == (1, 2 * 10)
    assert torch.equal(avg[:, :2], F.adaptive_avg_pool2d(features, 1).flatten(1))


def test_bad_arguments():
    with pytest.raises(ValueError, match="levels"):
        roi_spatial_pyramid_pool(ramp(), torch.zeros(1, 5), levels=(1, 0))
    with pytest.raises(ValueError, match="mode"):
        spatial_pyramid_pool(ramp(), (1,), mode="sum")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        spatial_pyramid_pool(torch.zeros(3, 4, 4), (1,))
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_spatial_pyramid_pool(ramp(), torch.zeros(1, 4))
