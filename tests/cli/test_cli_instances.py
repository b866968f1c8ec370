"""`structvision train / eval / predict` for ``mask_rcnn`` and ``keypoint_rcnn``, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.data.synthetic import FLIP_PAIRS, KEYPOINT_SIGMAS, SKELETON
from structvision.data.transforms import hflip_keypoints
from structvision.models.detection.tta import FlipTTA
from structvision.structures import rle_to_mask
from structvision.tasks import RecipeError, get_recipe
from structvision.tasks.instances import keypoint_evaluator
from structvision.tasks.run import _instance_results, _split_overrides, load_trained_model
from structvision.viz import save_png

runner = CliRunner()
MASK_DATA = "shapes:image_size=64,num_images=4,max_objects=2"
POSE_DATA = "shapes-pose:image_size=64,num_images=4,max_objects=2"
TINY_MODEL = [
    "--set", "batch_size=2", "--set", "model.width=8", "--set", "model.fpn_channels=16",
    "--set", "model.min_size=64", "--set", "model.max_size=64", "--set", "progress=false",
]  # fmt: skip


def _train(recipe: str, data: str, run: Path, *extra: str, steps: int = 2):
    args = ["train", recipe, "--data", data, "--out", str(run), "--max-steps", str(steps)]
    return runner.invoke(app, [*args, *TINY_MODEL, *extra])


def _predict(run: Path, image: Path, out: Path, *extra: str) -> list[dict]:
    result = runner.invoke(
        app,
        ["predict", str(run), str(image), "--out", str(out), "--score-threshold", "0", *extra],
    )
    assert result.exit_code == 0, result.output
    assert (out / f"{image.stem}.png").is_file()
    return json.loads((out / "predictions.json").read_text())


def _synth(name: str, folder: Path, *extra: str) -> Path:
    result = runner.invoke(
        app,
        [
            "data",
            "synth",
            name,
            "--out",
            str(folder),
            "--num-images",
            "4",
            "--image-size",
            "64",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return folder


def test_recipes_are_listed():
    listed = runner.invoke(app, ["recipes"], terminal_width=200)
    assert listed.exit_code == 0
    assert "mask_rcnn" in listed.output and "keypoint_rcnn" in listed.output


def test_mask_rcnn_trains_evaluates_and_predicts_masks(tmp_path):
    run = tmp_path / "mask"
    result = _train("mask_rcnn", MASK_DATA, run, "--set", "model.mask_pooler=pool")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50", "segm/AP75"} <= set(metrics)
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["recipe"] == "mask_rcnn"
    assert config["kwargs"]["arch"] == "small_fpn" and config["kwargs"]["mask_pooler"] == "pool"
    assert len(list((run / "predictions").glob("*.png"))) == 4

    evaluated = runner.invoke(app, ["eval", str(run), "--data", MASK_DATA])
    assert evaluated.exit_code == 0, evaluated.output
    written = json.loads(next((run / "eval").glob("*[0-9].json")).read_text())
    assert written["recipe"] == "mask_rcnn" and "segm/AP" in written["metrics"]

    image, _ = build_dataset(MASK_DATA, split="val")[0]
    save_png(image, tmp_path / "x.png")
    results = _predict(run, tmp_path / "x.png", tmp_path / "p")
    _, model, _ = load_trained_model(run)
    with torch.no_grad():
        prediction = model([image])[0]
    assert len(results) == len(prediction["boxes"]) > 0
    for result, probabilities in zip(results, prediction["masks"][:, 0], strict=True):
        decoded = rle_to_mask(result["segmentation"])  # (H, W) uint8
        assert decoded.shape == (64, 64)
        assert torch.equal(decoded, (probabilities > 0.5).to(torch.uint8))

    # flip test-time augmentation: eval writes its own JSON, predict gives FlipTTA's masks
    evaluated = runner.invoke(app, ["eval", str(run), "--data", MASK_DATA, "--tta"])
    assert evaluated.exit_code == 0, evaluated.output
    written = json.loads(next((run / "eval").glob("*.tta.json")).read_text())
    assert written["tta"] == "flip" and "segm/AP" in written["metrics"]
    results = _predict(run, tmp_path / "x.png", tmp_path / "p_tta", "--tta")
    prediction = FlipTTA(model)([image])[0]
    assert len(results) == len(prediction["boxes"]) > 0
    for result, probabilities in zip(results, prediction["masks"][:, 0], strict=True):
        assert torch.equal(rle_to_mask(result["segmentation"]), (probabilities > 0.5).byte())


def test_keypoint_rcnn_trains_evaluates_and_predicts_keypoints(tmp_path):
    run = tmp_path / "pose"
    result = _train("keypoint_rcnn", POSE_DATA, run)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"bbox/AP", "keypoints/AP", "keypoints/AP50", "keypoints/AR"} <= set(metrics)
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["kwargs"]["num_keypoints"] == 15 and config["class_names"][1] == "person"
    assert config["keypoint_sigmas"] == list(KEYPOINT_SIGMAS)
    assert config["skeleton"] == [list(limb) for limb in SKELETON]
    assert config["keypoint_flip_pairs"] == [list(pair) for pair in FLIP_PAIRS]

    evaluated = runner.invoke(app, ["eval", str(run), "--data", "shapes-pose:num_images=3"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "keypoints/AP" in evaluated.output

    image, _ = build_dataset(POSE_DATA, split="val")[0]
    save_png(image, tmp_path / "x.png")
    results = _predict(run, tmp_path / "x.png", tmp_path / "p")
    _, model, _ = load_trained_model(run)
    with torch.no_grad():
        prediction = model([image])[0]
    assert len(results) == len(prediction["boxes"]) > 0
    flat = prediction["keypoints"].flatten(1)  # (D, 45)
    assert torch.allclose(torch.tensor([r["keypoints"] for r in results]), flat)

    # flip test-time augmentation swaps left and right with the run's own flip pairs
    results = _predict(run, tmp_path / "x.png", tmp_path / "p_tta", "--tta")
    prediction = FlipTTA(model, keypoint_flip_pairs=FLIP_PAIRS)([image])[0]
    flat = prediction["keypoints"].flatten(1)
    assert torch.allclose(torch.tensor([r["keypoints"] for r in results]), flat)


def test_instance_models_train_on_coco_folders_from_data_synth(tmp_path):
    masks = _synth("shapes", tmp_path / "shapes", "--mask-format", "polygon")
    run = tmp_path / "mask"
    result = _train("mask_rcnn", str(masks), run, "--val-data", str(masks), steps=1)
    assert result.exit_code == 0, result.output
    assert "segm/AP" in json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["label_to_category_id"] == {str(i): i for i in range(1, 7)}

    poses = _synth("shapes-pose", tmp_path / "pose")
    run = tmp_path / "pose_run"
    result = _train("keypoint_rcnn", str(poses), run, "--val-data", str(poses), steps=1)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())["model"]
    # the file has no sigmas: the stick figures' are found from the keypoint names
    assert config["keypoint_sigmas"] == list(KEYPOINT_SIGMAS)
    assert config["keypoint_flip_pairs"] == [list(pair) for pair in FLIP_PAIRS]
    evaluated = runner.invoke(app, ["eval", str(run), "--data", str(poses)])
    assert evaluated.exit_code == 0, evaluated.output
    refused = runner.invoke(app, ["eval", str(run), "--data", "shapes:num_images=2"])
    assert refused.exit_code == 2 and "no keypoints" in refused.output


def _renamed_keypoints(folder: Path) -> Path:
    """The COCO file of ``folder`` with its keypoints renamed k0..k14 (an unknown layout)."""
    data = json.loads((folder / "annotations.json").read_text())
    for category in data["categories"]:
        category["keypoints"] = [f"k{i}" for i in range(len(category["keypoints"]))]
    path = folder / "renamed.json"
    path.write_text(json.dumps(data))
    return path


def test_keypoint_evaluator_takes_sigmas_from_the_model_for_an_unknown_layout(tmp_path):
    folder = _synth("shapes-pose", tmp_path / "pose")
    dataset = build_dataset(str(_renamed_keypoints(folder)), split="val")
    with pytest.raises(RecipeError, match=r"model\.keypoint_sigmas"):
        keypoint_evaluator(dataset)
    sigmas = [0.05] * 15
    evaluator = keypoint_evaluator(
        dataset, model_config={"kwargs": {"num_keypoints": 15}, "keypoint_sigmas": sigmas}
    )
    assert evaluator.keypoint_sigmas.tolist() == sigmas
    # the ground truth as predictions scores perfectly
    for index in range(len(dataset)):
        _, target = dataset[index]
        prediction = {**target, "scores": torch.ones(len(target["boxes"]))}
        evaluator.update([target], [prediction])
    metrics = evaluator.compute()
    assert metrics["keypoints/AP"] == pytest.approx(1.0) and metrics["bbox/AP"] == 1.0
    with pytest.raises(RecipeError, match="predicts 17 keypoints"):
        keypoint_evaluator(dataset, model_config={"kwargs": {"num_keypoints": 17}})


def test_keypoint_sigmas_set_for_a_run_are_stored_and_used_by_its_evaluator():
    sigmas = tuple(0.01 * (k + 1) for k in range(15))
    task = get_recipe("keypoint_rcnn").setup(
        data=POSE_DATA, val_data=None, model_overrides={"width": 8, "keypoint_sigmas": sigmas}
    )
    assert task.model_config["keypoint_sigmas"] == list(sigmas)
    assert "keypoint_sigmas" not in task.model_config["kwargs"]  # not a network setting
    assert task.evaluator_factory().keypoint_sigmas.tolist() == list(sigmas)
    stored = keypoint_evaluator(task.val_dataset, model_config=task.model_config)
    assert stored.keypoint_sigmas.tolist() == list(sigmas)
    assert keypoint_evaluator(task.val_dataset).keypoint_sigmas.tolist() == list(KEYPOINT_SIGMAS)


def test_keypoint_head_widths_are_a_model_option_kept_in_the_run_config():
    recipe = get_recipe("keypoint_rcnn")
    sets = {"model.width": "8", "model.keypoint_layers": "(16,16,16)"}  # as --set gives them
    overrides, _ = _split_overrides(recipe, sets)
    task = recipe.setup(data=POSE_DATA, val_data=None, model_overrides=overrides)
    saved = json.loads(json.dumps(task.model_config))  # as config.json holds it
    rebuilt = recipe.build_model(**saved["kwargs"])
    for model in (task.model, rebuilt):
        convs = [m for m in model.keypoint_branch.head if isinstance(m, torch.nn.Conv2d)]
        assert [conv.out_channels for conv in convs] == [16, 16, 16]
    rebuilt.load_state_dict(task.model.state_dict())  # the same tensors, name for name


def test_a_new_keypoint_run_names_its_eight_layer_head_and_older_configs_keep_four():
    recipe = get_recipe("keypoint_rcnn")
    task = recipe.setup(data=POSE_DATA, val_data=None, model_overrides={"fpn_channels": 16})
    assert list(task.model_config["kwargs"]["keypoint_layers"]) == [32] * 8
    convs = [m for m in task.model.keypoint_branch.head if isinstance(m, torch.nn.Conv2d)]
    assert [conv.out_channels for conv in convs] == [32] * 8
    older = {k: v for k, v in task.model_config["kwargs"].items() if k != "keypoint_layers"}
    older.pop("pretrained")
    rebuilt = recipe.build_model(**older)  # a run from before the default changed
    convs = [m for m in rebuilt.keypoint_branch.head if isinstance(m, torch.nn.Conv2d)]
    assert [conv.out_channels for conv in convs] == [32] * 4
    without = recipe.setup(data=POSE_DATA, val_data=None, model_overrides={"width": 8})
    assert list(without.model_config["kwargs"]["keypoint_layers"]) == [128] * 8  # builder's 64
    with pytest.raises(RecipeError, match=r"model\.fpn_channels"):
        recipe.setup(data=POSE_DATA, val_data=None, model_overrides={"fpn_channels": "wide"})


def test_keypoint_recipe_flips_with_the_data_s_left_right_pairs():
    task = get_recipe("keypoint_rcnn").setup(
        data=POSE_DATA, val_data=None, model_overrides={"width": 8}
    )
    plain = build_dataset(POSE_DATA, split="train")
    image, target = plain[0]
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        augmented, augmented_target = task.train_dataset[0]
        flipped = not torch.equal(augmented, image)
        seen.add(flipped)
        expected = target["keypoints"]
        if flipped:
            assert torch.equal(augmented, image.flip(-1))
            expected = hflip_keypoints(expected, image_width=64, flip_pairs=FLIP_PAIRS)
        assert torch.equal(augmented_target["keypoints"], expected)
    assert seen == {True, False}


def test_instance_results_encode_masks_and_keypoints():
    probabilities = torch.zeros(2, 1, 5, 6)
    probabilities[0, 0, 1:3, 2:5] = 0.9
    probabilities[1, 0, 4, 0] = 0.51
    probabilities[1, 0, 0, 0] = 0.5  # not above the threshold
    prediction = {
        "boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 4.0, 1.0, 5.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.6]),
        "masks": probabilities,
        "keypoints": torch.arange(12.0).reshape(2, 2, 3),
    }
    results = _instance_results("a.png", prediction, {1: 7, 2: 9})
    assert [r["category_id"] for r in results] == [7, 9]
    assert results[0]["bbox"] == [2.0, 1.0, 3.0, 2.0]
    assert results[1]["keypoints"] == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    for result, probability in zip(results, probabilities[:, 0], strict=True):
        decoded = rle_to_mask(result["segmentation"])
        assert torch.equal(decoded, (probability > 0.5).to(torch.uint8))
        assert isinstance(result["segmentation"]["counts"], str)  # JSON-ready
    binary = _instance_results("a.png", {**prediction, "masks": (probabilities[:, 0] > 0.5)}, {})
    assert binary[0]["segmentation"] == results[0]["segmentation"]
    boxes_only = {k: prediction[k] for k in ("boxes", "labels", "scores")}
    assert set(_instance_results("a.png", boxes_only, {})[0]) == {
        "file_name",
        "category_id",
        "bbox",
        "score",
    }


@pytest.mark.parametrize(
    ("recipe", "data", "setting", "message"),
    [
        ("mask_rcnn", MASK_DATA, "model.mask_pooler=bilinear", "model.mask_pooler 'bilinear'"),
        ("mask_rcnn", MASK_DATA, "model.arch=yolo", "model.arch 'yolo' is unknown"),
        ("mask_rcnn", MASK_DATA, "model.keypoint_sigmas=(0.1,)", "no model option"),
        ("keypoint_rcnn", POSE_DATA, "model.mask_pooler=pool", "no model option"),
        ("keypoint_rcnn", POSE_DATA, "model.keypoint_sigmas=(0.1,0.2)", "must list 15 sigmas"),
        ("keypoint_rcnn", POSE_DATA, "model.keypoint_sigmas=0.1", "must list 15 sigmas"),
        ("keypoint_rcnn", "shapes:num_images=2", "model.width=8", "has no keypoints"),
    ],
)
def test_bad_options_and_data_are_refused_before_training(tmp_path, recipe, data, setting, message):
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", recipe, "--data", data, "--out", str(run), "--set", setting]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not run.exists()


def test_mask_rcnn_refuses_a_coco_file_without_segmentations(tmp_path):
    from structvision.data.export import write_coco

    write_coco(build_dataset(MASK_DATA, split="train"), tmp_path / "boxes", mask_format="none")
    boxes = str(tmp_path / "boxes")
    result = runner.invoke(
        app,
        ["train", "mask_rcnn", "--data", boxes, "--val-data", boxes, "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2 and "'segmentation'" in result.output, result.output
    with pytest.raises(RecipeError, match="no segmentations"):
        get_recipe("mask_rcnn").build_evaluator(build_dataset(boxes))
