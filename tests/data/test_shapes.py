"""Tests of the built-in ``shapes`` generator: exact ground truth, determinism, knobs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from matplotlib.path import Path as PolygonPath
from torchvision.ops import masks_to_boxes

from structvision.data.synthetic import (
    CLASS_NAMES,
    GENERATORS,
    SHAPE_POLYGONS,
    Background,
    Scene,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    Stroke,
    instance_targets,
    object_polygon,
    render_scene,
    sample_rng,
    sample_scene,
)
from structvision.data.synthetic.geometry import rasterize_object, stroke_mask
from structvision.data.synthetic.textures import render_background


def _full_mask(obj: ShapeObject, image_size: tuple[int, int]) -> np.ndarray:
    y0, x0, crop = rasterize_object(obj, image_size=image_size)
    full = np.zeros(image_size, dtype=bool)
    full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return full


def _reference_visible_masks(scene: Scene) -> np.ndarray:
    """Slow, obvious compositing: an object's pixel is visible unless a later object or a
    stroke drawn above it covers it."""
    size = scene.image_size
    full = [_full_mask(obj, size) for obj in scene.objects]
    visible = []
    for k, mask in enumerate(full):
        hidden = np.zeros(size, dtype=bool)
        for later in full[k + 1 :]:
            hidden |= later
        for stroke in scene.strokes:
            if stroke.z > k:
                hidden |= stroke_mask(stroke, image_size=size)
        visible.append(mask & ~hidden)
    return np.array(visible, dtype=np.uint8).reshape(-1, *size)


# ----------------------------------------------------------------------------- ground truth


def test_masks_match_slow_compositing_reference_and_image_colours():
    dataset = ShapesDataset(num_images=12, seed=3, clutter=8, clutter_over_objects=0.5)
    for index in range(len(dataset)):
        scene = dataset.scene(index)
        image, target = dataset[index]
        expected = _reference_visible_masks(scene)
        np.testing.assert_array_equal(target["masks"].numpy(), expected)
        pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        for mask, obj in zip(target["masks"].numpy().astype(bool), scene.objects, strict=True):
            assert (pixels[mask] == np.array(obj.color)).all()


def test_boxes_areas_semantic_consistent_with_masks():
    dataset = ShapesDataset(num_images=20, seed=1, max_objects=8)
    for index in range(len(dataset)):
        _, target = dataset[index]
        masks, labels = target["masks"], target["labels"]
        num = masks.shape[0]
        assert target["boxes"].shape == (num, 4) and target["boxes"].dtype == torch.float32
        assert labels.dtype == torch.int64 and masks.dtype == torch.uint8
        assert target["area"].dtype == torch.float32 and target["iscrowd"].dtype == torch.int64
        assert int(target["image_id"]) == index and target["image_id"].dtype == torch.int64
        assert torch.equal(target["iscrowd"], torch.zeros(num, dtype=torch.int64))
        if num:
            expected_boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
            torch.testing.assert_close(target["boxes"], expected_boxes, rtol=0, atol=0)
        torch.testing.assert_close(target["area"], masks.sum(dim=(1, 2)).float())
        assert int(masks.sum(dim=0).max()) <= 1  # each pixel in at most one instance
        label_map = (masks.long() * labels[:, None, None]).sum(dim=0)  # (H, W)
        assert torch.equal(target["semantic"], label_map)
        assert target["semantic"].dtype == torch.int64
        assert set(labels.tolist()) <= set(range(1, len(CLASS_NAMES) + 1))


def test_every_object_keeps_enough_visible_pixels():
    config = ShapesConfig(max_objects=10, max_occlusion=0.3, min_visible_area=10, clutter=6)
    for index in range(40):
        scene = sample_scene(sample_rng(seed=0, split="train", index=index), config)
        rendered = render_scene(scene)
        for k, obj in enumerate(scene.objects):
            full_area = int(_full_mask(obj, scene.image_size).sum())
            visible_area = int((rendered.instance_map == k + 1).sum())
            assert visible_area >= max(10, 0.7 * full_area - 1e-9)


def test_rasterised_shapes_match_their_polygons():
    """The pixel mask of a big unoccluded shape agrees with a point-in-polygon test of the
    pixel centres (cv2's LINE_8 fill may add a boundary pixel, never more)."""
    for rotation, shape in enumerate(CLASS_NAMES):
        obj = ShapeObject(
            shape=shape, label=1, center=(40.3, 38.7), size=50.0, rotation=0.4 * rotation,
            color=(255, 0, 0), aspect=0.85,
        )  # fmt: skip
        mask = _full_mask(obj, (80, 80))
        ys, xs = np.mgrid[0:80, 0:80]
        centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
        inside = PolygonPath(object_polygon(obj)).contains_points(centres).reshape(80, 80)
        assert (mask | ~inside).all(), shape  # every pixel whose centre is inside is filled
        extra = mask & ~inside
        assert extra.sum() <= 0.15 * inside.sum(), shape


def test_shape_table_is_normalised():
    for name, vertices in SHAPE_POLYGONS.items():
        assert vertices.ndim == 2 and vertices.shape[1] == 2 and vertices.shape[0] >= 3, name
        assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(1.0), name
        assert np.abs(vertices.mean(axis=0)).max() < 0.05, name
    assert tuple(SHAPE_POLYGONS) == CLASS_NAMES


# ----------------------------------------------------------------------------- determinism


def _assert_samples_equal(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key


def test_same_seed_split_index_gives_identical_samples_whatever_the_global_rng():
    first = ShapesDataset(split="train", num_images=5, seed=7)
    second = ShapesDataset(split="train", num_images=5, seed=7)
    for index in (0, 4, 2):
        np.random.seed(index)  # noqa: NPY002 -- the global RNG must not matter
        torch.manual_seed(index)
        sample_a = first[index]
        np.random.seed(1000 + index)  # noqa: NPY002
        torch.manual_seed(1000 + index)
        _assert_samples_equal(sample_a, second[index])
        assert first.scene(index) == second.scene(index)


def test_splits_seeds_and_indices_give_different_samples():
    train = ShapesDataset(split="train", num_images=4, seed=0)
    val = ShapesDataset(split="val", num_images=4, seed=0)
    other_seed = ShapesDataset(split="train", num_images=4, seed=1)
    for index in range(4):
        image = train[index][0]
        assert not torch.equal(image, val[index][0])
        assert not torch.equal(image, other_seed[index][0])
        assert train.scene(index) != val.scene(index)
    assert not torch.equal(train[0][0], train[1][0])


def test_image_is_float_rgb_in_unit_range():
    image, _ = ShapesDataset(num_images=1)[0]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert image.is_contiguous()
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert torch.equal((image * 255).round() / 255, image)  # exactly k / 255


# ----------------------------------------------------------------------------- knobs


def test_object_count_within_range_and_all_classes_appear():
    config = ShapesConfig(min_objects=2, max_objects=5)
    counts, labels = [], set()
    for index in range(200):
        scene = sample_scene(sample_rng(seed=0, split="train", index=index), config)
        counts.append(len(scene.objects))
        labels.update(obj.label for obj in scene.objects)
    assert min(counts) >= 2 and max(counts) <= 5
    assert set(counts) == {2, 3, 4, 5}
    assert labels == set(range(1, len(CLASS_NAMES) + 1))


def test_exact_object_count_and_empty_images():
    dataset = ShapesDataset(num_images=5, min_objects=3, max_objects=3)
    assert all(len(dataset[i][1]["labels"]) == 3 for i in range(5))
    _, target = ShapesDataset(num_images=1, min_objects=0, max_objects=0)[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 128, 128) and target["area"].shape == (0,)
    assert int(target["semantic"].max()) == 0


def test_object_sizes_honour_the_range():
    config = ShapesConfig(
        min_object_size=0.1, max_object_size=0.4, max_occlusion=0.0, clutter=0, max_objects=4
    )
    low, high = 0.1 * 128, 0.4 * 128
    sizes = []
    for index in range(150):
        scene = sample_scene(sample_rng(seed=2, split="train", index=index), config)
        rendered = render_scene(scene)
        arrays = instance_targets(rendered.instance_map, labels=[o.label for o in scene.objects])
        widths = arrays["boxes"][:, 2:] - arrays["boxes"][:, :2]  # (N, 2)
        for obj, (w, h) in zip(scene.objects, widths, strict=True):
            assert low - 1e-9 <= obj.size <= high + 1e-9
            assert max(w, h) <= math.ceil(obj.size) + 1  # fits in its circumscribed circle
            assert max(w, h) >= 0.5 * obj.size  # nothing hides it (max_occlusion=0)
            sizes.append(obj.size)
    assert min(sizes) < 1.3 * low and max(sizes) > 0.8 * high


def test_colours_are_independent_of_class():
    config = ShapesConfig(max_objects=6)
    colors: dict[int, list] = {}
    for index in range(150):
        for obj in sample_scene(sample_rng(seed=5, split="train", index=index), config).objects:
            colors.setdefault(obj.label, []).append(obj.color)
    for label, values in colors.items():
        assert np.asarray(values, dtype=float).std(axis=0).min() > 40, label


def test_ignore_band_marks_pixels_near_a_different_instance():
    width = 2
    dataset = ShapesDataset(num_images=4, seed=4, ignore_band=width)
    plain = ShapesDataset(num_images=4, seed=4)
    for index in range(4):
        scene = dataset.scene(index)
        ids = render_scene(scene).instance_map.astype(int)
        height_px, width_px = ids.shape
        expected = np.zeros(ids.shape, dtype=bool)
        for dy in range(-width, width + 1):
            for dx in range(-width, width + 1):
                ys = slice(max(0, -dy), min(height_px, height_px - dy))
                xs = slice(max(0, -dx), min(width_px, width_px - dx))
                shifted_ys = slice(ys.start + dy, ys.stop + dy)
                shifted_xs = slice(xs.start + dx, xs.stop + dx)
                expected[ys, xs] |= ids[ys, xs] != ids[shifted_ys, shifted_xs]
        semantic = dataset[index][1]["semantic"].numpy()
        np.testing.assert_array_equal(semantic == 255, expected)
        base = plain[index][1]["semantic"].numpy()
        np.testing.assert_array_equal(semantic[~expected], base[~expected])


def test_class_subset_relabels_in_given_order():
    dataset = ShapesDataset(num_images=30, classes=("star", "circle"), min_objects=2)
    assert dataset.class_names == ("__background__", "star", "circle")
    assert dataset.categories == [
        {"id": 1, "name": "star", "supercategory": "shape"},
        {"id": 2, "name": "circle", "supercategory": "shape"},
    ]
    for index in range(30):
        for obj in dataset.scene(index).objects:
            assert dataset.class_names[obj.label] == obj.shape


def test_non_square_images_and_plain_background():
    dataset = ShapesDataset(num_images=2, image_size=(96, 160), background="plain", clutter=0)
    image, target = dataset[1]
    assert image.shape == (3, 96, 160)
    assert target["masks"].shape[1:] == (96, 160) and target["semantic"].shape == (96, 160)
    background = image[:, target["semantic"] == 0]  # (3, M) plain: one colour
    assert torch.equal(background.min(dim=1).values, background.max(dim=1).values)


def test_transforms_receive_image_and_target():
    calls = []

    def flip(image, target):
        calls.append(image.shape)
        return image.flip(-1), {**target, "flipped": torch.tensor(True)}

    plain_image, _ = ShapesDataset(num_images=1)[0]
    image, target = ShapesDataset(num_images=1, transforms=flip)[0]
    assert calls == [(3, 128, 128)] and bool(target["flipped"])
    assert torch.equal(image, plain_image.flip(-1))


def test_generators_registry_and_categories():
    dataset = GENERATORS["shapes"](num_images=3)
    assert isinstance(dataset, ShapesDataset) and len(dataset) == 3
    assert [c["id"] for c in dataset.categories] == list(range(1, len(CLASS_NAMES) + 1))
    assert dataset.class_names == ("__background__", *CLASS_NAMES)


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"min_objects": 5, "max_objects": 2}, "min_objects"),
        ({"max_objects": 300}, "max_objects"),
        ({"min_object_size": 0.5, "max_object_size": 0.2}, "min_object_size"),
        ({"max_object_size": 1.5}, "max_object_size"),
        ({"background": "wood"}, "background"),
        ({"image_size": 8}, "image_size"),
        ({"image_size": (64, 64, 3)}, "image_size"),
        ({"image_size": "128"}, "image_size"),
        ({"classes": ("circle", "blob")}, "classes"),
        ({"max_occlusion": 1.5}, "max_occlusion"),
        ({"ignore_band": -1}, "ignore_band"),
        ({"clutter": -2}, "clutter"),
        ({"colour": 3}, "unknown"),
    ],
)
def test_bad_config_raises_value_error_naming_the_argument(overrides, argument):
    with pytest.raises(ValueError, match=argument):
        ShapesDataset(num_images=1, **overrides)


def test_bad_dataset_arguments_and_indices():
    with pytest.raises(ValueError, match="seed"):
        ShapesDataset(seed=-1)
    with pytest.raises(ValueError, match="num_images"):
        ShapesDataset(num_images=-5)
    dataset = ShapesDataset(num_images=2)
    with pytest.raises(IndexError):
        dataset[2]
    with pytest.raises(IndexError):
        dataset[-1]
    assert len(list(iter(dataset))) == 2
    with pytest.raises(ValueError, match=r"stroke\.z"):
        render_scene(
            replace(dataset.scene(0), strokes=(Stroke(((0, 0), (5, 5)), 1, (0, 0, 0), 9),))
        )


# ----------------------------------------------------------------------------- backgrounds


def test_stripes_background_hand_computed():
    background = Background(kind="stripes", color_a=(10, 20, 30), color_b=(200, 100, 0), period=4)
    image = render_background(background, image_size=(3, 16))
    # along = x_centre - 8: columns 0-3 -> floor(-1.9..-1.1) = -2 (even) -> a; 4-7 -> -1 -> b
    expected_a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    for row in image:
        np.testing.assert_array_equal(row[expected_a], np.tile([10, 20, 30], (8, 1)))
        np.testing.assert_array_equal(row[~expected_a], np.tile([200, 100, 0], (8, 1)))


def test_backgrounds_blend_between_their_two_colours():
    color_a, color_b = (0, 50, 200), (100, 250, 0)
    for kind in ("gradient", "checker", "noise", "plain"):
        background = Background(kind=kind, color_a=color_a, color_b=color_b, angle=0.3, period=5)
        image = render_background(background, image_size=(40, 50)).astype(int)
        low, high = np.minimum(color_a, color_b), np.maximum(color_a, color_b)
        assert ((image >= low) & (image <= high)).all(), kind
        if kind == "gradient":  # monotone along +x for a small angle
            assert (np.diff(image[20, :, 0]) >= 0).all()
    with pytest.raises(ValueError, match="kind"):
        render_background(replace(background, kind="marble"), image_size=(8, 8))
