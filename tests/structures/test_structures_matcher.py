import pytest
import torch
from torchvision.models.detection import _utils as tv_det_utils

from structvision.structures import Matcher


def test_constants():
    assert Matcher.BELOW_LOW_THRESHOLD == -1
    assert Matcher.BETWEEN_THRESHOLDS == -2


def test_hand_built_case():
    # 2 ground truths x 5 predictions.
    quality = torch.tensor(
        [
            [0.9, 0.5, 0.2, 0.1, 0.0],
            [0.1, 0.6, 0.3, 0.35, 0.0],
        ]
    )
    matcher = Matcher(0.7, 0.3)
    # pred 0 -> gt 0 (0.9); pred 1 best 0.6 is between; pred 2 best 0.3 is between (>= low);
    # pred 3 best 0.35 is between; pred 4 best 0.0 is below.
    assert torch.equal(matcher(quality), torch.tensor([0, -2, -2, -2, -1]))

    low_quality = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    # gt 1's highest quality is 0.6 at pred 1, so pred 1 is matched (to its own best gt, 1).
    assert torch.equal(low_quality(quality), torch.tensor([0, 1, -2, -2, -1]))
    assert low_quality(quality).dtype == torch.int64


def test_low_quality_tie_goes_to_predictions_own_best_gt():
    quality = torch.tensor(
        [
            [0.2, 0.2, 0.1],  # gt 0: tie between preds 0 and 1
            [0.25, 0.1, 0.1],  # gt 1: pred 0
        ]
    )
    matched_idxs = Matcher(0.5, 0.4, allow_low_quality_matches=True)(quality)
    # pred 0 is gt 0's (tied) and gt 1's best, and its own best is gt 1; pred 1 -> gt 0.
    assert torch.equal(matched_idxs, torch.tensor([1, 0, -1]))


@pytest.mark.parametrize("allow_low_quality_matches", [False, True])
@pytest.mark.parametrize("quantised", [False, True])
def test_equals_torchvision_on_random_matrices(allow_low_quality_matches, quantised):
    gen = torch.Generator().manual_seed(3)
    ours = Matcher(0.5, 0.25, allow_low_quality_matches=allow_low_quality_matches)
    theirs = tv_det_utils.Matcher(0.5, 0.25, allow_low_quality_matches)
    for trial in range(40):
        num_gt = int(torch.randint(1, 8, (), generator=gen))
        num_preds = int(torch.randint(1, 60, (), generator=gen))
        quality = torch.rand(num_gt, num_preds, generator=gen)
        if quantised:  # many exact ties, also exactly at the thresholds
            quality = torch.randint(0, 5, (num_gt, num_preds), generator=gen).float() / 8
        expected = theirs(quality.clone())
        matched_idxs = ours(quality)
        assert torch.equal(matched_idxs, expected), f"trial {trial}"


def test_empty_ground_truth_and_predictions():
    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    no_gt = matcher(torch.zeros(0, 6))
    assert torch.equal(no_gt, torch.full((6,), Matcher.BELOW_LOW_THRESHOLD))
    assert no_gt.dtype == torch.int64
    no_preds = matcher(torch.zeros(3, 0))
    assert no_preds.shape == (0,) and no_preds.dtype == torch.int64


def test_does_not_modify_input_and_validates():
    quality = torch.rand(3, 10, generator=torch.Generator().manual_seed(0))
    before = quality.clone()
    Matcher(0.5, 0.3, allow_low_quality_matches=True)(quality)
    assert torch.equal(quality, before)
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.5)
    with pytest.raises(ValueError, match=r"\(M, N\)"):
        Matcher(0.5, 0.3)(torch.rand(5))
