"""Stick figures with keypoints: ``shapes-pose`` and ``shapes:figures=true``."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.coco import CocoDataset, check_coco, keypoint_flip_pairs_from_names
from structvision.data.export import write_coco
from structvision.data.spec import build_dataset, parse_spec
from structvision.data.synthetic import (
    FLIP_PAIRS,
    GENERATORS,
    KEYPOINT_NAMES,
    KEYPOINT_SIGMAS,
    SKELETON,
    Background,
    Scene,
    ShapeObject,
    ShapesDataset,
    ShapesPoseDataset,
    StickFigure,
    keypoint_targets,
    render_scene,
)
from structvision.data.synthetic.figures import FLIP_INDEX, WIDTH_TO_SIGMA, person_category
from structvision.data.synthetic.geometry import rasterize_object, stroke_mask
from structvision.data.transforms import DetectionTransforms, RandomHorizontalFlip
from structvision.evaluation import COCOEvaluator

# pycocotools' decode warns under numpy 2 (its own __array__ signature); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

K = len(KEYPOINT_NAMES)
NECK, LEFT_SHOULDER, PELVIS = (KEYPOINT_NAMES.index(n) for n in ("neck", "left_shoulder", "pelvis"))


def _full_mask(obj, image_size: tuple[int, int]) -> np.ndarray:
    y0, x0, crop = rasterize_object(obj, image_size=image_size)
    full = np.zeros(image_size, dtype=bool)
    full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return full


def _reference_visible_masks(scene: Scene) -> list[np.ndarray]:
    """Slow compositing: a pixel of object k is visible unless a later object or a stroke
    drawn above it covers it."""
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
    return visible


def _distance_to_segment(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of points ``(..., 2)`` to the segment ``a``-``b``."""
    ab = b - a
    t = np.clip(((px - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(px - (a + t[..., None] * ab), axis=-1)


def _chirality(keypoints: torch.Tensor) -> torch.Tensor:
    """Sign of cross(pelvis - neck, left_shoulder - neck) per instance ``(N,)``."""
    neck = keypoints[:, NECK, :2]
    down = keypoints[:, PELVIS, :2] - neck
    left = keypoints[:, LEFT_SHOULDER, :2] - neck
    return torch.sign(down[:, 0] * left[:, 1] - down[:, 1] * left[:, 0])


@pytest.fixture(scope="module")
def pose_dataset():
    return ShapesPoseDataset(num_images=24, seed=5, clutter=6, clutter_over_objects=0.5)


# ----------------------------------------------------------------------------- layout


def test_skeleton_is_a_tree_over_all_keypoints_and_flip_pairs_follow_the_names():
    assert len(KEYPOINT_NAMES) == len(set(KEYPOINT_NAMES)) == 15
    assert len(SKELETON) == K - 1
    reached, frontier = {0}, [0]
    while frontier:  # breadth-first search over the undirected limbs
        node = frontier.pop()
        for a, b in SKELETON:
            for here, there in ((a, b), (b, a)):
                if here == node and there not in reached:
                    reached.add(there)
                    frontier.append(there)
    assert reached == set(range(K))  # connected with K - 1 edges: a tree
    assert list(FLIP_PAIRS) == keypoint_flip_pairs_from_names(KEYPOINT_NAMES)
    assert [FLIP_INDEX[FLIP_INDEX[k]] for k in range(K)] == list(range(K))
    for i, j in FLIP_PAIRS:
        assert KEYPOINT_NAMES[i].replace("left", "right") == KEYPOINT_NAMES[j]
    assert len(KEYPOINT_SIGMAS) == K and all(0.02 < s < 0.11 for s in KEYPOINT_SIGMAS)
    for i, j in FLIP_PAIRS:  # a joint and its mirror image are equally hard to place
        assert KEYPOINT_SIGMAS[i] == KEYPOINT_SIGMAS[j]
    category = person_category(3)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]


def test_dataset_attributes_and_categories():
    pose = GENERATORS["shapes-pose"](num_images=2)
    assert isinstance(pose, ShapesPoseDataset)
    assert pose.class_names == ("__background__", "person")
    assert pose.categories == [person_category(1)]
    assert pose.keypoint_names == KEYPOINT_NAMES and pose.num_keypoints == K
    assert pose.skeleton == SKELETON and pose.keypoint_flip_pairs == FLIP_PAIRS
    assert pose.keypoint_sigmas == KEYPOINT_SIGMAS
    mixed = build_dataset("shapes:figures=true,num_images=3")
    assert mixed.class_names[-1] == "person" and len(mixed.class_names) == 8
    assert mixed.categories[-1] == person_category(7)
    plain = ShapesDataset(num_images=1)
    assert plain.num_keypoints == 0 and plain.skeleton == () and "keypoints" not in plain[0][1]
    spec = parse_spec("shapes-pose:max_objects=2,seed=4")
    assert (spec.kind, spec.name) == ("generator", "shapes-pose")
    built = build_dataset(spec, split="val")
    assert isinstance(built, ShapesPoseDataset) and built.config.max_objects == 2
    assert "ShapesPoseDataset(" in repr(built)


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"figures": "yes"}, "figures"),
        ({"classes": (), "figures": False}, "classes"),
        ({"min_figure_size": 0.9, "max_figure_size": 0.5}, "min_figure_size"),
        ({"max_figure_size": 1.5}, "max_figure_size"),
        ({"figure_truncation": 2.0}, "figure_truncation"),
    ],
)
def test_bad_figure_settings_name_the_argument(overrides, argument):
    with pytest.raises(ValueError, match=argument):
        ShapesPoseDataset(num_images=1, **overrides)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_split_index_gives_identical_samples_whatever_the_global_rng():
    first = ShapesPoseDataset(num_images=6, seed=2)
    torch.manual_seed(123)
    np.random.seed(7)  # noqa: NPY002 - the legacy global generator must not matter
    second = ShapesPoseDataset(num_images=6, seed=2)
    for index in (0, 3, 5):
        image_a, target_a = first[index]
        image_b, target_b = second[index]
        assert torch.equal(image_a, image_b)
        assert target_a.keys() == target_b.keys()
        for key in target_a:
            assert torch.equal(target_a[key], target_b[key]), key
    other_split = ShapesPoseDataset(num_images=6, seed=2, split="val")[0][1]["keypoints"]
    other_seed = ShapesPoseDataset(num_images=6, seed=3)[0][1]["keypoints"]
    for other in (other_split, other_seed):
        assert other.shape != first[0][1]["keypoints"].shape or not torch.equal(
            other, first[0][1]["keypoints"]
        )


# ----------------------------------------------------------------------------- ground truth


def test_figure_rasterisation_matches_capsules_and_head_disc():
    """Slow reference: pixel centres inside a limb capsule or the head disc are painted (the
    caps are inscribed 16-gons, 2% inside the circle); cv2's LINE_8 fill may add the pixels
    its outline passes through, whose centres are at most 0.71 pixels outside, never more."""
    size = (96, 96)
    dataset = ShapesPoseDataset(num_images=10, seed=8, image_size=size[0])
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]] + 0.5
    centres = np.stack([xs, ys], axis=-1)  # (H, W, 2)
    for index in range(len(dataset)):
        for figure in dataset.scene(index).objects:
            joints = np.asarray(figure.keypoints)
            distance = np.linalg.norm(centres - joints[0], axis=-1) - figure.head_radius
            radius = 0.5 * figure.limb_width
            for a, b in SKELETON:
                limb = _distance_to_segment(centres, joints[a], joints[b]) - radius
                distance = np.minimum(distance, limb)
            mask = _full_mask(figure, size)
            assert mask[distance < -0.03 * radius - 0.1].all()
            assert not mask[distance > 0.5 * math.sqrt(2.0) + 0.01].any()


def test_keypoints_visibility_follows_coco_on_generated_scenes(pose_dataset):
    counts = np.zeros(3, dtype=int)
    for index in range(len(pose_dataset)):
        scene = pose_dataset.scene(index)
        image, target = pose_dataset[index]
        height, width = image.shape[-2:]
        visible = _reference_visible_masks(scene)
        assert target["keypoints"].shape == (len(scene.objects), K, 3)
        assert target["keypoints"].dtype == torch.float32
        for row, figure in enumerate(scene.objects):  # every figure here keeps visible pixels
            np.testing.assert_array_equal(target["masks"][row].numpy(), visible[row])
            full = _full_mask(figure, (height, width))
            points = target["keypoints"][row].numpy()  # (K, 2)
            truth = np.asarray(figure.keypoints, dtype=np.float32)  # (K, 2)
            inside = (
                (truth[:, 0] >= 0)
                & (truth[:, 0] < width)
                & (truth[:, 1] >= 0)
                & (truth[:, 1] < height)
            )
            np.testing.assert_array_equal(points[~inside], 0.0)  # v = 0 stored as (0, 0, 0)
            np.testing.assert_array_equal(points[inside, :2], truth[inside])
            cols, rows = np.floor(truth[inside]).astype(int).T
            assert full[rows, cols].all()  # every keypoint in the image is on its figure
            shows_figure = visible[row][rows, cols]
            np.testing.assert_array_equal(points[inside, 2], np.where(shows_figure, 2.0, 1.0))
            counts += np.bincount(points[:, 2].astype(int), minlength=3)
    assert (counts > 0).all(), counts  # the scenes exercised v = 0, 1 and 2


def test_a_shape_on_a_wrist_occludes_it_and_a_foot_outside_is_unlabelled():
    joints = [
        (32.0, 10.0), (32.0, 18.0), (38.0, 20.0), (26.0, 20.0), (44.0, 30.0), (20.0, 30.0),
        (50.0, 40.0), (14.0, 40.0), (32.0, 44.0), (36.0, 44.0), (28.0, 44.0), (38.0, 56.0),
        (26.0, 56.0), (40.0, 70.0), (24.0, 62.0),
    ]  # fmt: skip
    figure = StickFigure(
        label=1, keypoints=tuple(joints), limb_width=3.0, head_radius=4.0, color=(200, 0, 0)
    )
    square = ShapeObject(
        shape="square", label=2, center=(50.0, 40.0), size=8.0, rotation=0.0, color=(0, 0, 200)
    )
    scene = Scene(
        image_size=(64, 64),
        background=Background(kind="plain", color_a=(0, 0, 0), color_b=(0, 0, 0)),
        objects=(figure, square),
    )
    rendered = render_scene(scene)
    keypoints = keypoint_targets(
        scene.objects, rendered.instance_map, object_index=np.array([0, 1])
    )  # (2, K, 3)
    expected = np.full(K, 2.0)
    expected[KEYPOINT_NAMES.index("left_wrist")] = 1.0
    expected[KEYPOINT_NAMES.index("left_ankle")] = 0.0  # y = 70 is below the 64-pixel image
    np.testing.assert_array_equal(keypoints[0, :, 2], expected)
    np.testing.assert_array_equal(keypoints[0, KEYPOINT_NAMES.index("left_ankle")], 0.0)
    np.testing.assert_array_equal(keypoints[1], 0.0)  # not a figure: no keypoints
    assert (rendered.image[44, 32] == (200, 0, 0)).all()  # the pelvis pixel has its colour


def test_mixed_scenes_give_zero_keypoints_to_shapes_and_exact_masks():
    dataset = ShapesDataset(num_images=16, seed=4, figures=True, max_objects=8)
    person = dataset.class_names.index("person")
    num_people = 0
    for index in range(len(dataset)):
        scene = dataset.scene(index)
        image, target = dataset[index]
        visible_all = _reference_visible_masks(scene)
        visible = [m for m in visible_all if m.any()]
        np.testing.assert_array_equal(target["masks"].numpy(), np.array(visible, dtype=np.uint8))
        is_person = target["labels"] == person
        assert (target["keypoints"][~is_person] == 0).all()
        num_people += int((target["keypoints"][is_person, :, 2] > 0).any(dim=1).sum())
        pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        shown = [obj for obj, m in zip(scene.objects, visible_all, strict=True) if m.any()]
        for mask, obj in zip(target["masks"].numpy().astype(bool), shown, strict=True):
            assert (pixels[mask] == np.array(obj.color)).all()
    assert num_people >= 4  # people with labelled keypoints among the shapes


def test_sigma_derivation_matches_the_drawn_figures():
    """KEYPOINT_SIGMAS assume limb_width / (2 sqrt(area)) ~ WIDTH_TO_SIGMA (module docstring)."""
    dataset = ShapesPoseDataset(num_images=60, seed=1, image_size=256, figure_truncation=0.0)
    ratios = [
        figure.limb_width / (2.0 * math.sqrt(_full_mask(figure, (256, 256)).sum()))
        for index in range(len(dataset))
        for figure in dataset.scene(index).objects
    ]
    assert abs(np.median(ratios) / WIDTH_TO_SIGMA - 1.0) < 0.1


# ----------------------------------------------------------------------------- transforms


def test_horizontal_flip_mirrors_x_and_swaps_left_and_right(pose_dataset):
    flip = DetectionTransforms(
        [RandomHorizontalFlip(p=1.0, keypoint_flip_pairs=pose_dataset.keypoint_flip_pairs)],
        sanitize=False,
    )
    for index in range(8):
        image, target = pose_dataset[index]
        width = image.shape[-1]
        flipped_image, flipped = flip(image, target)
        assert torch.equal(flipped_image, image.flip(-1))
        original = target["keypoints"]  # (N, K, 3)
        mirrored = flipped["keypoints"][:, list(FLIP_INDEX)]  # undo the left/right swap
        labelled = original[..., 2] > 0
        assert torch.equal(mirrored[..., 2], original[..., 2])
        assert torch.equal(mirrored[..., 1], original[..., 1])
        assert torch.allclose(mirrored[..., 0][labelled], width - original[..., 0][labelled])
        assert (mirrored[~labelled] == 0).all()
        # the flipped masks still show the figure at its visible keypoints
        for n, points in enumerate(flipped["keypoints"]):
            shown = points[points[:, 2] == 2]
            cols, rows = shown[:, 0].floor().long(), shown[:, 1].floor().long()
            assert (flipped["masks"][n, rows, cols] == 1).all()
        # a figure keeps its chirality (left shoulder on the same side of the spine)
        whole = labelled[:, [NECK, LEFT_SHOULDER, PELVIS]].all(dim=1)
        if whole.any():
            before = _chirality(original[whole])
            assert (before == before[0]).all()
            assert torch.equal(_chirality(flipped["keypoints"][whole]), before)
            assert torch.equal(_chirality(mirrored[whole]), -before)  # without the swap


# ----------------------------------------------------------------------------- COCO


@pytest.fixture(scope="module")
def pose_export(tmp_path_factory):
    dataset = ShapesPoseDataset(num_images=8, seed=9, image_size=96)
    path = write_coco(dataset, tmp_path_factory.mktemp("pose"))
    return dataset, path


def _keypoint_ap(coco_gt: COCO, detections: list[dict]) -> float:
    coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
    evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
    evaluator.params.kpt_oks_sigmas = np.asarray(KEYPOINT_SIGMAS)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


def test_export_writes_coco_keypoints_and_reads_them_back_exactly(pose_export):
    dataset, path = pose_export
    data = json.loads(path.read_text())
    assert data["categories"] == [person_category(1)]
    assert data["categories"][0]["skeleton"][0] == [2, 1]  # 1-based: neck - head
    for ann in data["annotations"]:
        assert len(ann["keypoints"]) == 3 * K
        assert ann["num_keypoints"] == sum(1 for v in ann["keypoints"][2::3] if v > 0)
    assert check_coco(path) == []
    reread = CocoDataset(path)
    assert reread.keypoint_names == list(KEYPOINT_NAMES)
    assert reread.skeleton == list(SKELETON)
    assert reread.keypoint_flip_pairs == list(FLIP_PAIRS)
    for index in range(len(dataset)):
        _, target = dataset[index]
        _, back = reread[index]
        assert torch.equal(back["keypoints"], target["keypoints"])
        assert torch.equal(back["masks"], target["masks"])
        assert torch.equal(back["labels"], target["labels"])


def test_pycocotools_keypoint_ap_is_one_for_ground_truth_against_itself(pose_export, capsys):
    _, path = pose_export
    coco_gt = COCO(str(path))
    detections = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in coco_gt.dataset["annotations"]
    ]
    assert _keypoint_ap(coco_gt, detections) == pytest.approx(1.0)
    shifted = copy.deepcopy(detections)
    for det in shifted:  # 3 pixels off in x: several sigmas for these small figures
        det["keypoints"][0::3] = [x + 3.0 for x in det["keypoints"][0::3]]
    assert 0.0 <= _keypoint_ap(coco_gt, shifted) < 0.9
    capsys.readouterr()


def test_mixed_export_and_our_evaluator_score_keypoints_with_the_dataset_sigmas(tmp_path):
    dataset = ShapesDataset(num_images=10, seed=2, figures=True, image_size=96)
    path = write_coco(dataset, tmp_path)
    assert check_coco(path) == []
    evaluator = COCOEvaluator(
        iou_types=("bbox", "keypoints"), coco_gt=path, keypoint_sigmas=dataset.keypoint_sigmas
    )
    for index in range(len(dataset)):
        _, target = dataset[index]
        prediction = {**target, "scores": torch.ones(len(target["labels"]))}
        evaluator.update([target], [prediction])
    metrics = evaluator.compute()
    assert metrics["keypoints/AP"] == pytest.approx(1.0)
    assert metrics["bbox/AP"] == pytest.approx(1.0)


def test_data_synth_writes_shapes_pose_and_generator_settings(tmp_path):
    runner = CliRunner()
    out = tmp_path / "pose"
    result = runner.invoke(
        app, ["data", "synth", "shapes-pose", "--out", str(out), "--num-images", "3"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["person"]
    assert all(len(a["keypoints"]) == 3 * K for a in data["annotations"])
    mixed = tmp_path / "mixed"
    result = runner.invoke(
        app, ["data", "synth", "shapes:figures=true", "--out", str(mixed), "--num-images", "2"]
    )
    assert result.exit_code == 0, result.output
    names = [c["name"] for c in json.loads((mixed / "annotations.json").read_text())["categories"]]
    assert names[-1] == "person" and len(names) == 7
    bad = runner.invoke(
        app, ["data", "synth", "shapes:figures=maybe", "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code != 0 and "figures" in bad.output


# ----------------------------------------------------------------------------- torchvision


def test_torchvision_keypoint_rcnn_trains_on_a_batch():
    """The targets are what torchvision's KeypointRCNN expects: one step gives finite losses
    and a non-zero keypoint loss."""
    from torch import nn
    from torchvision.models.detection import KeypointRCNN
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    model = KeypointRCNN(
        backbone,
        num_classes=2,
        num_keypoints=K,
        min_size=64,
        max_size=64,
        rpn_anchor_generator=AnchorGenerator(sizes=((16, 32, 64),), aspect_ratios=((0.5, 1.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        keypoint_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
    )
    dataset = ShapesPoseDataset(num_images=2, seed=0, image_size=64)
    images, targets = zip(*(dataset[i] for i in range(2)), strict=True)
    losses = model(list(images), list(targets))
    assert all(torch.isfinite(loss) for loss in losses.values())
    assert losses["loss_keypoint"] > 0
