"""``shapes-cls`` crops, the classification evaluator and the ``classifier`` recipe."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.data.synthetic import ShapesClassificationDataset, ShapesDataset
from structvision.evaluation import ClassificationEvaluator


def test_object_crops_hold_their_object_and_background_crops_do_not():
    crops = ShapesClassificationDataset(split="val", num_images=60, seed=0, crop_size=32)
    scenes = ShapesDataset(split="val", num_images=60, seed=0)
    labels = []
    for index in range(60):
        image, target = crops[index]
        assert image.shape == (3, 32, 32) and image.min() >= 0 and image.max() <= 1
        label = int(target["label"])
        labels.append(label)
        scene = scenes[index][1]
        if label > 0:
            assert label in set(scene["labels"].tolist())  # an object of its scene
            sides = (scene["boxes"][:, 2:] - scene["boxes"][:, :2]).amax(1)[
                scene["labels"] == label
            ]
            assert torch.isclose(sides, target["object_size"]).any()  # ... and its size
        else:
            assert target["object_size"] == 0
    assert 0 in labels and len(set(labels)) >= 5  # background and most classes occur
    again = ShapesClassificationDataset(split="val", num_images=60, seed=0, crop_size=32)
    assert torch.equal(again[7][0], crops[7][0])
    other = ShapesClassificationDataset(split="train", num_images=60, seed=0, crop_size=32)
    assert not torch.equal(other[7][0], crops[7][0])
    with pytest.raises(ValueError, match="crop_size"):
        ShapesClassificationDataset(crop_size=4)


def test_background_crops_avoid_objects():
    only_background = ShapesClassificationDataset(
        split="val", num_images=30, seed=1, background_fraction=1.0
    )
    assert all(int(only_background[i][1]["label"]) == 0 for i in range(30))


def test_classification_evaluator_hand_computed():
    evaluator = ClassificationEvaluator(num_classes=3)
    targets = [{"label": t, "image_id": i} for i, t in enumerate([0, 0, 1, 2, 2, 2])]
    predictions = [{"label": p} for p in [0, 1, 1, 2, 2, 0]]
    evaluator.update(targets, predictions)
    evaluator.update(targets[:1], [{"label": 2}])  # a repeated image is ignored
    metrics = evaluator.compute()
    assert metrics["top1"] == pytest.approx(4 / 6)
    assert metrics["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert evaluator.confusion_matrix().tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError, match="outside"):
        evaluator.update([{"label": 3}], [{"label": 0}])


def test_classifier_recipe_trains_and_evaluates(tmp_path):
    run = tmp_path / "run"
    data = "shapes-cls:num_images=16"
    result = CliRunner().invoke(
        app,
        ["train", "classifier", "--data", data, "--out", str(run), "--max-steps", "3",
         "--set", "batch_size=8", "--set", "model.width=8", "--set", "progress=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["top1"] <= 1 and metrics["num_images"] == 16
    assert len(list((run / "predictions").glob("*.png"))) == 8
    report = (run / "report.html").read_text()
    assert "Confusion matrix" in report and "true \\ predicted" in report
    assert report.count("<th>background</th>") == 2  # a column and a row
    dataset = build_dataset(data, split="val")
    import structvision

    predictor = structvision.load(run)
    prediction = predictor(dataset[0][0])[0]
    assert prediction["probabilities"].shape == (7,)
    assert prediction["probabilities"].sum() == pytest.approx(1.0, abs=1e-5)


def test_convolutionalised_classifier_gives_the_classifier_logits():
    from structvision.models.classification import classifier_small, convolutionalize

    torch.manual_seed(0)
    classifier = classifier_small(num_classes=7, width=8, norm="batch").eval()
    with torch.no_grad():
        for module in classifier.modules():  # non-trivial batch-norm statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    dense = convolutionalize(classifier).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        scores = dense(images)  # (2, 7, 2, 2): the classifier slid over the image
        assert scores.shape == (2, 7, 2, 2)
        assert torch.allclose(scores.mean(dim=(2, 3)), classifier.logits(images), atol=1e-5)
        larger = dense(torch.rand(1, 3, 128, 96))
    assert larger.shape == (1, 7, 4, 3)
