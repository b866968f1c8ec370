"""Scribble labels drawn from exact ``shapes`` ground truth (``shapes:scribbles=true``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from structvision.data.spec import build_dataset
from structvision.data.synthetic import ShapesDataset
from structvision.data.synthetic.scribbles import (
    labelled_fraction,
    scribble_labels,
    scribble_rng,
)
from structvision.data.transforms import detection_train_transforms

IGNORE = 255


def _region_ids(target: dict) -> np.ndarray:
    """``(H, W)`` region of every pixel of the exact map: object ``k`` -> ``k + 1`` where its
    class is visible, background -> 0, ignore band -> -1."""
    full = target["semantic_full"].numpy()
    regions = np.where(full == 0, 0, -1)
    for k, (mask, label) in enumerate(zip(target["masks"], target["labels"], strict=True)):
        regions[(mask.numpy() != 0) & (full == int(label))] = k + 1
    return regions


def _all_neighbours_inside(region: np.ndarray) -> np.ndarray:
    """Bool ``(H, W)``: pixels of ``region`` whose 8 neighbours are all in ``region`` (pixels on
    the image border have neighbours outside). The slow, obvious way."""
    height, width = region.shape
    out = np.zeros_like(region)
    for row in range(1, height - 1):
        for col in range(1, width - 1):
            out[row, col] = region[row - 1 : row + 2, col - 1 : col + 2].all()
    return out


def _samples(**overrides) -> list[tuple[torch.Tensor, dict]]:
    settings = {"image_size": 64, "max_objects": 6, **overrides}
    dataset = ShapesDataset(split="train", num_images=24, seed=5, scribbles=True, **settings)
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("ignore_band", [0, 1])
def test_scribbles_are_a_subset_of_the_full_map_and_stay_inside_their_region(ignore_band):
    for _, target in _samples(ignore_band=ignore_band, min_object_size=0.1):
        scribbles, full = target["semantic"].numpy(), target["semantic_full"].numpy()
        labelled = scribbles != IGNORE
        assert labelled.any()
        assert np.array_equal(scribbles[labelled], full[labelled])
        regions = _region_ids(target)
        assert (regions[labelled] >= 0).all()  # never on the ignore band
        # no labelled pixel has an 8-neighbour in another region (or beyond the image border)
        for region_id in np.unique(regions[labelled]):
            on_stroke = labelled & (regions == region_id)
            inside = _all_neighbours_inside(regions == region_id)
            assert not (on_stroke & ~inside).any()


def test_every_object_with_a_safe_pixel_gets_a_stroke_with_its_label():
    checked = 0
    for _, target in _samples(max_objects=8):
        scribbles = target["semantic"].numpy()
        regions = _region_ids(target)
        for k, label in enumerate(target["labels"].tolist()):
            region = regions == k + 1
            if _all_neighbours_inside(region).any():
                assert (scribbles[region] == label).any(), f"object {k} has no stroke"
                checked += 1
    assert checked > 50


def test_thin_regions_get_no_stroke_and_a_rectangle_gets_one_inside():
    semantic = np.zeros((32, 40), dtype=np.int64)
    semantic[5:17, 4:30] = 3  # a 12 x 26 rectangle
    semantic[25:27, 2:38] = 5  # a 2-pixel-thin bar: no pixel has all 8 neighbours inside
    masks = np.stack([semantic == 3, semantic == 5]).astype(np.uint8)
    scribbles = scribble_labels(
        semantic, masks=masks, labels=np.array([3, 5]), rng=np.random.default_rng(0)
    )
    rows, cols = np.nonzero(scribbles == 3)
    assert rows.size > 0 and rows.min() >= 6 and rows.max() <= 15
    assert cols.min() >= 5 and cols.max() <= 28
    assert not (scribbles == 5).any()
    assert set(np.unique(scribbles).tolist()) <= {0, 3, IGNORE}
    assert (scribbles == 0).any()


def test_object_strokes_are_at_most_three_pixels_wide():
    # The centre of a 3-pixel-wide line is 2 pixels from the nearest unlabelled pixel (Euclidean
    # distance transform); a wider stroke has deeper pixels. Background strokes may cross.
    for _, target in _samples(image_size=96):
        scribbles = target["semantic"].numpy()
        for label in set(np.unique(scribbles).tolist()) - {0, IGNORE}:
            stroke = np.pad((scribbles == label).astype(np.uint8), 1)
            depth = cv2.distanceTransform(stroke, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            assert depth.max() <= 2.0


def test_same_seed_split_index_give_the_same_scribbles_and_images_do_not_change():
    first = ShapesDataset(split="train", num_images=4, seed=3, scribbles=True)
    again = ShapesDataset(split="train", num_images=4, seed=3, scribbles=True)
    plain = ShapesDataset(split="train", num_images=4, seed=3)
    torch.manual_seed(123)
    for index in range(4):
        image, target = first[index]
        image_again, target_again = again[index]
        image_plain, target_plain = plain[index]
        assert torch.equal(target["semantic"], target_again["semantic"])
        assert torch.equal(image, image_again) and torch.equal(image, image_plain)
        assert torch.equal(target["semantic_full"], target_plain["semantic"])
        assert torch.equal(target["masks"], target_plain["masks"])
        assert "semantic_full" not in target_plain
    other_index = [first[i][1]["semantic"] for i in range(4)]
    assert not torch.equal(other_index[0], other_index[1])
    rng_a = scribble_rng(seed=0, split="train", index=0).random(4)
    assert not np.array_equal(rng_a, scribble_rng(seed=0, split="val", index=0).random(4))
    assert not np.array_equal(rng_a, scribble_rng(seed=1, split="train", index=0).random(4))


def test_labelled_fraction_is_a_few_percent_like_real_scribbles():
    dataset = ShapesDataset(split="val", num_images=60, scribbles=True)
    fractions = [labelled_fraction(dataset[i][1]["semantic"].numpy()) for i in range(60)]
    assert 0.015 < float(np.mean(fractions)) < 0.05  # Tang et al.'s scribbles: about 3%
    assert min(fractions) > 0.002 and max(fractions) < 0.1


def test_spec_option_and_flips_move_both_label_maps():
    dataset = build_dataset(
        "shapes:image_size=48,num_images=6,scribbles=true",
        split="train",
        transforms=detection_train_transforms(hflip_prob=1.0, scale_range=(0.6, 0.6)),
    )
    for index in range(len(dataset)):
        _, target = dataset[index]
        scribbles, full = target["semantic"], target["semantic_full"]
        assert scribbles.shape == full.shape == (29, 29)  # round(48 * 0.6)
        assert scribbles.dtype == full.dtype == torch.int64
        labelled = scribbles != IGNORE
        assert torch.equal(scribbles[labelled], full[labelled])
    with pytest.raises(ValueError, match="scribbles"):
        build_dataset("shapes:scribbles=3", split="train")


def test_bad_arguments_raise():
    semantic = np.zeros((8, 8), dtype=np.int64)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="semantic"):
        scribble_labels(semantic[0], masks=np.zeros((0, 8)), labels=np.zeros(0), rng=rng)
    with pytest.raises(ValueError, match="disagree"):
        scribble_labels(semantic, masks=np.zeros((2, 8, 8)), labels=np.array([1]), rng=rng)
    with pytest.raises(ValueError, match="max_width"):
        scribble_labels(
            semantic, masks=np.zeros((0, 8, 8)), labels=np.zeros(0), rng=rng, max_width=0
        )
