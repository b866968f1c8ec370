import pytest
import torch
from torchvision.models.detection import _utils as tv_det_utils

from structvision.structures import BalancedPositiveNegativeSampler


def make_labels(num_pos: int, num_neg: int, num_ignored: int, *, seed: int) -> torch.Tensor:
    """(N,) labels with the given counts of positives (classes 1..3), negatives and ignored."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat(
        (
            torch.randint(1, 4, (num_pos,), generator=gen),
            torch.zeros(num_neg, dtype=torch.int64),
            torch.full((num_ignored,), -1),
        )
    )
    return labels[torch.randperm(labels.numel(), generator=gen)]


def test_caps_and_ratio():
    sampler = BalancedPositiveNegativeSampler(256, 0.25)
    labels = make_labels(100, 1000, 50, seed=0)
    (pos_mask,), (neg_mask,) = sampler([labels])
    assert pos_mask.dtype == torch.bool and pos_mask.shape == labels.shape
    assert int(pos_mask.sum()) == 64 and int(neg_mask.sum()) == 192
    assert bool((labels[pos_mask] >= 1).all()) and bool((labels[neg_mask] == 0).all())


def test_negatives_fill_when_positives_are_few_and_counts_are_capped():
    sampler = BalancedPositiveNegativeSampler(256, 0.5)
    (pos_mask,), (neg_mask,) = sampler([make_labels(10, 1000, 0, seed=1)])
    assert (int(pos_mask.sum()), int(neg_mask.sum())) == (10, 246)
    (pos_mask,), (neg_mask,) = sampler([make_labels(300, 20, 5, seed=2)])
    assert (int(pos_mask.sum()), int(neg_mask.sum())) == (128, 20)


def test_ignored_never_sampled_and_masks_disjoint():
    sampler = BalancedPositiveNegativeSampler(64, 0.5)
    labels = make_labels(30, 30, 200, seed=3)
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        (pos_mask,), (neg_mask,) = sampler([labels], generator=gen)
        assert not bool((pos_mask | neg_mask)[labels == -1].any())
        assert not bool((pos_mask & neg_mask).any())
        assert (int(pos_mask.sum()), int(neg_mask.sum())) == (30, 30)


def test_same_draws_as_torchvision_with_the_global_generator():
    ours = BalancedPositiveNegativeSampler(128, 0.25)
    theirs = tv_det_utils.BalancedPositiveNegativeSampler(128, 0.25)
    labels = [make_labels(50, 400, 30, seed=4), make_labels(3, 90, 0, seed=5)]
    torch.manual_seed(123)
    expected_pos, expected_neg = theirs(labels)
    torch.manual_seed(123)
    pos_masks, neg_masks = ours(labels)
    for ours_mask, their_mask in zip(
        pos_masks + neg_masks, expected_pos + expected_neg, strict=True
    ):
        assert torch.equal(ours_mask, their_mask.bool())


def test_generator_makes_draws_reproducible_and_uniform():
    sampler = BalancedPositiveNegativeSampler(10, 0.5)
    labels = make_labels(20, 0, 0, seed=6)
    first = sampler([labels], generator=torch.Generator().manual_seed(7))[0][0]
    again = sampler([labels], generator=torch.Generator().manual_seed(7))[0][0]
    other = sampler([labels], generator=torch.Generator().manual_seed(8))[0][0]
    assert torch.equal(first, again) and not torch.equal(first, other)

    gen = torch.Generator().manual_seed(9)
    counts = sum(sampler([labels], generator=gen)[0][0].long() for _ in range(400))
    # each positive is drawn with probability 5 / 20: expected 100 of 400, sd ~ 8.7
    assert int(counts.min()) > 60 and int(counts.max()) < 140


def test_empty_inputs():
    sampler = BalancedPositiveNegativeSampler(16, 0.25)
    assert sampler([]) == ([], [])
    (pos_mask,), (neg_mask,) = sampler([torch.zeros(0, dtype=torch.int64)])
    assert pos_mask.shape == (0,) and neg_mask.shape == (0,)
    (pos_mask,), (neg_mask,) = sampler([torch.full((7,), -1)])
    assert not bool(pos_mask.any()) and not bool(neg_mask.any())


def test_validation():
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(16, 1.5)
    with pytest.raises(ValueError, match=r"matched_labels\[1\]"):
        BalancedPositiveNegativeSampler(16, 0.5)([torch.zeros(3), torch.zeros(2, 2)])
