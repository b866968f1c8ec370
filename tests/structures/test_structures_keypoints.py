"""Keypoint heatmap targets and decoding: hand cases, round trips, torchvision's reference."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import roi_heads as tv_roi_heads

from structvision.structures import (
    heatmaps_to_keypoints,
    keypoints_to_heatmap_distributions,
    keypoints_to_heatmap_targets,
)


def test_heatmap_targets_hand_case():
    # RoI (10, 20)-(30, 60): 20 px wide, 40 px high; with S = 4 a cell is 5 x 10 px
    rois = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    keypoints = torch.tensor(
        [
            [
                [10.0, 20.0, 2.0],  # top-left corner -> cell (0, 0)
                [17.0, 45.0, 1.0],  # labelled but hidden still counts -> (row 2, col 1)
                [30.0, 60.0, 2.0],  # exactly on the right/bottom edge -> last cell (3, 3)
                [29.9, 59.9, 2.0],  # just inside -> (3, 3)
                [17.0, 45.0, 0.0],  # not labelled -> invalid
                [9.9, 30.0, 2.0],  # left of the RoI -> invalid
                [20.0, 61.0, 2.0],  # below the RoI -> invalid
            ]
        ]
    )
    target_idxs, valid = keypoints_to_heatmap_targets(keypoints, rois, 4)
    assert valid.tolist() == [[True, True, True, True, False, False, False]]
    assert target_idxs.tolist() == [[0, 2 * 4 + 1, 15, 15, 0, 0, 0]]
    assert target_idxs.dtype == torch.int64 and valid.dtype == torch.bool


def test_heatmap_targets_and_decoding_equal_torchvision():
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(30, 2, generator=gen) * 200
    rois = torch.cat((corners, corners + 3 + torch.rand(30, 2, generator=gen) * 150), dim=1)
    keypoints = torch.cat(
        (
            torch.rand(30, 17, 2, generator=gen) * 400 - 20,
            torch.randint(0, 3, (30, 17, 1), generator=gen).float(),
        ),
        dim=2,
    )
    keypoints[0, 0, :2] = rois[0, 2:]  # a point on the corner exercises the edge rule
    target_idxs, valid = keypoints_to_heatmap_targets(keypoints, rois, 56)
    tv_heatmaps, tv_valid = tv_roi_heads.keypoints_to_heatmap(keypoints, rois, 56)
    assert torch.equal(valid, tv_valid.bool())
    assert torch.equal(target_idxs, tv_heatmaps)

    heatmaps = torch.randn(30, 17, 56, 56, generator=gen)
    points, scores = heatmaps_to_keypoints(heatmaps, rois)
    tv_points, tv_scores = tv_roi_heads.heatmaps_to_keypoints(heatmaps, rois)
    assert torch.equal(points, tv_points)
    assert torch.equal(scores, tv_scores)
    assert points.shape == (30, 17, 3) and torch.all(points[..., 2] == 1)


@pytest.mark.parametrize("heatmap_size", [56, 28])
def test_encode_decode_round_trip_within_one_cell(heatmap_size):
    gen = torch.Generator().manual_seed(1)
    num_rois, num_keypoints = 20, 9
    corners = torch.rand(num_rois, 2, generator=gen) * 300
    sizes = 60 + torch.rand(num_rois, 2, generator=gen) * 240  # boxes of 60 to 300 px
    rois = torch.cat((corners, corners + sizes), dim=1)
    inside = (
        corners[:, None] + torch.rand(num_rois, num_keypoints, 2, generator=gen) * sizes[:, None]
    )
    keypoints = torch.cat((inside, torch.full((num_rois, num_keypoints, 1), 2.0)), dim=2)
    target_idxs, valid = keypoints_to_heatmap_targets(keypoints, rois, heatmap_size)
    assert valid.all()
    # a one-hot logit map at each target cell decodes back into that cell
    heatmaps = torch.zeros(num_rois * num_keypoints, heatmap_size * heatmap_size)
    heatmaps[torch.arange(num_rois * num_keypoints), target_idxs.reshape(-1)] = 10.0
    heatmaps = heatmaps.reshape(num_rois, num_keypoints, heatmap_size, heatmap_size)
    decoded, scores = heatmaps_to_keypoints(heatmaps, rois)
    cell_size = sizes / heatmap_size  # (N, 2) cell width and height in pixels
    error = (decoded[..., :2] - keypoints[..., :2]).abs()  # (N, K, 2)
    assert torch.all(error <= cell_size[:, None, :])
    assert torch.all(scores > 5.0)  # the peak of the resized map


def test_empty_inputs_and_validation():
    target_idxs, valid = keypoints_to_heatmap_targets(torch.zeros(0, 17, 3), torch.zeros(0, 4), 56)
    assert target_idxs.shape == valid.shape == (0, 17)
    points, scores = heatmaps_to_keypoints(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4))
    assert points.shape == (0, 17, 3) and scores.shape == (0, 17)
    with pytest.raises(ValueError, match="keypoints must have shape"):
        keypoints_to_heatmap_targets(torch.zeros(2, 17), torch.zeros(2, 4), 56)
    with pytest.raises(ValueError, match="rois must have shape"):
        keypoints_to_heatmap_targets(torch.zeros(2, 17, 3), torch.zeros(3, 4), 56)
    with pytest.raises(ValueError, match="rois must have shape"):
        heatmaps_to_keypoints(torch.zeros(2, 17, 56, 56), torch.zeros(2, 5))


def test_subpixel_decoding_finds_a_quadratic_peak_between_pixels():
    size = 16  # a 16 x 16 px RoI: the resize to the RoI's pixels keeps the map as it is
    rois = torch.tensor([[20.0, 40.0, 36.0, 56.0]])
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    peaks = [(7.3, 4.8), (10.6, 12.45), (0.2, 9.0)]  # (x, y) in cell units; the last at a border
    maps = [-((xs - x) ** 2) - 2 * (ys - y) ** 2 for x, y in peaks] + [torch.zeros(size, size)]
    heatmaps = torch.stack(maps)[None]  # (1, 4, 16, 16)
    coarse, coarse_scores = heatmaps_to_keypoints(heatmaps, rois)
    fine, fine_scores = heatmaps_to_keypoints(heatmaps, rois, subpixel=True)
    expected = torch.tensor([[7.3, 4.8], [10.6, 12.45], [0.0, 9.0], [0.0, 0.0]]) + 0.5
    expected += rois[0, :2]
    torch.testing.assert_close(fine[0, :, :2], expected, rtol=0, atol=1e-4)
    # without refinement: the pixel centres; the border and the flat map are not moved either way
    assert torch.equal(
        coarse[0, :, :2],
        torch.tensor([[7.0, 5.0], [11.0, 12.0], [0.0, 9.0], [0.0, 0.0]]) + 0.5 + rois[0, :2],
    )
    # scores from the smoothed maps: the binomial kernel's variance (1/2 per axis) lowers an
    # interior quadratic peak -(dx^2) - 2 (dy^2) by 1/2 + 1; a flat map stays flat
    shift = torch.tensor([-1.5, -1.5, 0.0])
    torch.testing.assert_close(fine_scores[0, [0, 1, 3]], coarse_scores[0, [0, 1, 3]] + shift)


def test_gaussian_targets_are_centred_exactly_on_the_keypoint():
    gen = torch.Generator().manual_seed(0)
    rois = torch.tensor([[10.0, 20.0, 80.0, 110.0]]).repeat(40, 1)
    keypoints = torch.rand(40, 3, 3, generator=gen) * torch.tensor([50.0, 60.0, 0.0])
    keypoints += torch.tensor([20.0, 35.0, 2.0])  # inside, away from the border
    keypoints[0, 2, 2] = 0  # not labelled
    size = 56
    targets, valid = keypoints_to_heatmap_distributions(keypoints, rois, size, 1.5)
    idxs, expected_valid = keypoints_to_heatmap_targets(keypoints, rois, size)
    assert torch.equal(valid, expected_valid) and not valid[0, 2]
    assert targets[0, 2].abs().sum() == 0
    torch.testing.assert_close(targets[valid].sum(dim=(-1, -2)), torch.ones(int(valid.sum())))
    # the distribution's mean is the keypoint, in continuous heatmap units (cell centres j + 0.5)
    centres = torch.arange(size) + 0.5
    mean_x = (targets.sum(dim=-2) * centres).sum(dim=-1)  # (N, K)
    mean_y = (targets.sum(dim=-1) * centres).sum(dim=-1)
    u = (keypoints[..., 0] - 10.0) * size / 70.0
    v = (keypoints[..., 1] - 20.0) * size / 90.0
    torch.testing.assert_close(mean_x[valid], u[valid], rtol=0, atol=1e-4)
    torch.testing.assert_close(mean_y[valid], v[valid], rtol=0, atol=1e-4)
    # and its mode is the one-hot target's cell
    assert torch.equal(targets.flatten(2).argmax(dim=-1)[valid], idxs[valid])
    with pytest.raises(ValueError, match="sigma must be a positive"):
        keypoints_to_heatmap_distributions(keypoints, rois, size, 0.0)


def test_gaussian_targets_decode_to_their_keypoint_between_pixels():
    # a network that matched the targets exactly: its logits are log q (a paraboloid); the
    # sub-pixel decoding then finds the keypoint far better than the best cell's centre does
    gen = torch.Generator().manual_seed(3)
    rois = torch.tensor([[10.0, 20.0, 80.0, 110.0]]).repeat(30, 1)
    keypoints = torch.rand(30, 5, 3, generator=gen) * torch.tensor([60.0, 80.0, 0.0])
    keypoints += torch.tensor([15.0, 25.0, 2.0])
    targets, _ = keypoints_to_heatmap_distributions(keypoints, rois, 56, 1.5)
    logits = targets.clamp_min(1e-30).log()
    errors = {}
    for subpixel in (False, True):
        decoded, _ = heatmaps_to_keypoints(logits, rois, subpixel=subpixel)
        errors[subpixel] = (decoded[..., :2] - keypoints[..., :2]).norm(dim=-1)
    assert errors[True].max() < 0.25 and errors[True].mean() < 0.12
    assert errors[False].mean() > 3 * errors[True].mean()
