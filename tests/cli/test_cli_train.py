"""`structvision train / eval / predict` end to end, with a tiny recipe registered by the test."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from typer.testing import CliRunner

from structvision import tasks
from structvision.cli import app
from structvision.data.collate import collate_detection
from structvision.data.spec import build_dataset
from structvision.engine import TrainConfig
from structvision.evaluation import COCOEvaluator

runner = CliRunner()
DATA = "shapes:image_size=48,num_images=6,max_objects=2"


class OneBoxNet(nn.Module):
    """Predicts one box and one class per image from pooled features (a contract-following toy)."""

    def __init__(self, *, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1)
        self.box_head = nn.Linear(width, 4)
        self.cls_head = nn.Linear(width, num_classes + 1)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        x = torch.stack([F.interpolate(im[None], size=(32, 32)) for im in images])[:, 0]
        features = F.relu(self.conv(x)).mean(dim=(2, 3))  # (B, width)
        sizes = torch.tensor([[im.shape[2], im.shape[1]] * 2 for im in images], dtype=x.dtype)
        corners = torch.sigmoid(self.box_head(features)).view(-1, 2, 2)  # (B, 2 corners, xy)
        relative = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
        pred_boxes = relative * sizes  # (B, 4) xyxy pixels
        logits = self.cls_head(features)  # (B, K + 1)
        if not self.training:
            scores, labels = logits[:, 1:].softmax(dim=1).max(dim=1)
            return [
                {
                    "boxes": pred_boxes[i : i + 1],
                    "labels": labels[i : i + 1] + 1,
                    "scores": scores[i : i + 1],
                }
                for i in range(len(images))
            ]
        gt_labels = torch.stack(
            [t["labels"][0] if len(t["labels"]) else torch.tensor(0) for t in targets]
        )
        has_box = torch.tensor([len(t["boxes"]) > 0 for t in targets])
        gt_boxes = torch.stack(
            [t["boxes"][0] if len(t["boxes"]) else torch.zeros(4) for t in targets]
        )
        loss_box = F.smooth_l1_loss(relative[has_box], (gt_boxes / sizes)[has_box], reduction="sum")
        return {
            "loss_cls": F.cross_entropy(logits, gt_labels),
            "loss_box": loss_box / max(len(targets), 1),
        }


def _setup(*, data: str, val_data: str | None, model_overrides: dict) -> tasks.Task:
    train_dataset = build_dataset(data, split="train")
    kwargs = {"num_classes": len(train_dataset.categories), **model_overrides}
    return tasks.Task(
        model=OneBoxNet(**kwargs),
        model_config={
            "recipe": "one_box",
            "kwargs": kwargs,
            "class_names": ["__background__", *(c["name"] for c in train_dataset.categories)],
        },
        train_dataset=train_dataset,
        val_dataset=build_dataset(val_data or data, split="val"),
        collate_fn=collate_detection,
        evaluator_factory=lambda: COCOEvaluator(iou_types=("bbox",)),
        train_config=TrainConfig(
            max_steps=4, batch_size=2, lr=0.05, log_every=1, checkpoint_every=2, progress=False
        ),
    )


def test_evaluator_for_passes_the_model_config_only_to_recipes_that_take_it():
    calls = []

    def build_evaluator(dataset, **kwargs):
        calls.append((dataset, kwargs))

    plain = tasks.Recipe(
        name="plain",
        summary="",
        setup=_setup,
        build_model=OneBoxNet,
        build_evaluator=build_evaluator,
        collate_fn=collate_detection,
    )
    config = {"kwargs": {"width": 4}}
    plain.evaluator_for("data", config)
    dataclasses.replace(plain, takes_model_config=True).evaluator_for("data", config)
    assert calls == [("data", {}), ("data", {"model_config": config})]


@pytest.fixture
def one_box_recipe(monkeypatch):
    recipe = tasks.Recipe(
        name="one_box",
        summary="one box per image (test toy)",
        setup=_setup,
        build_model=OneBoxNet,
        build_evaluator=lambda dataset: COCOEvaluator(iou_types=("bbox",)),
        collate_fn=collate_detection,
        model_options=("width",),
    )
    monkeypatch.setitem(tasks.RECIPES, "one_box", recipe)
    return recipe


def test_unknown_recipe_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["train", "nope", "--data", "shapes", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "unknown recipe 'nope'" in result.output
    assert not (tmp_path / "r").exists()


def test_train_eval_predict_resume(one_box_recipe, tmp_path):
    run = tmp_path / "run"
    args = ["train", "one_box", "--data", DATA, "--out", str(run), "--set", "model.width=4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bbox/AP" in result.output
    for name in ("config.json", "metrics.jsonl", "metrics.json", "report.html", "loss.png"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [
        "step_000002",
        "step_000004",
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"bbox/AP", "bbox/AP50", "bbox/ARl"}
    assert len(list((run / "predictions").glob("*.png"))) == 6  # the 6 validation images
    config = json.loads((run / "checkpoints" / "step_000004" / "config.json").read_text())
    assert config["model"]["kwargs"] == {"num_classes": 6, "width": 4}

    # The same folder again is refused, and nothing in it changes.
    before = (run / "metrics.json").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    assert (run / "metrics.json").read_bytes() == before

    # Resume to more steps continues from step 4.
    resumed = runner.invoke(app, [*args, "--resume", "--max-steps", "6"])
    assert resumed.exit_code == 0, resumed.output
    assert (run / "checkpoints" / "step_000006").is_dir()
    steps = [
        r["step"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r.get("kind") == "train"
    ]
    assert steps == [1, 2, 3, 4, 5, 6]

    # eval: prints and writes JSON
    out_json = tmp_path / "eval.json"
    evaluated = runner.invoke(app, ["eval", str(run), "--data", DATA, "--out", str(out_json)])
    assert evaluated.exit_code == 0, evaluated.output
    written = json.loads(out_json.read_text())
    assert written["recipe"] == "one_box" and "bbox/AP" in written["metrics"]
    results = json.loads((tmp_path / "eval.predictions.json").read_text())
    assert len(results) == 6 and {"image_id", "category_id", "bbox", "score"} <= set(results[0])

    # predict: overlays + COCO-style JSON; a bad image fails before anything is written
    from structvision.viz import save_png

    image, _ = build_dataset(DATA, split="val")[0]
    save_png(image, tmp_path / "in" / "a.png")
    (tmp_path / "in" / "bad.png").write_bytes(b"not an image")
    bad = runner.invoke(
        app, ["predict", str(run), str(tmp_path / "in" / "bad.png"), "--out", str(tmp_path / "p1")]
    )
    assert bad.exit_code == 2 and "bad.png" in bad.output and not (tmp_path / "p1").exists()
    predicted = runner.invoke(
        app,
        [
            "predict",
            str(run),
            str(tmp_path / "in" / "a.png"),
            "--out",
            str(tmp_path / "p"),
            "--score-threshold",
            "0",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    results = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(results) == 1 and results[0]["file_name"] == "a.png" and len(results[0]["bbox"]) == 4
    assert (tmp_path / "p" / "a.png").is_file()


def test_set_rejects_unknown_model_option(one_box_recipe, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "one_box",
            "--data",
            DATA,
            "--out",
            str(tmp_path / "r"),
            "--set",
            "model.depth=3",
        ],
    )
    assert result.exit_code == 2 and "model.width" in result.output
    bad_key = runner.invoke(
        app, ["train", "one_box", "--data", DATA, "--out", str(tmp_path / "r2"), "--set", "lrr=3"]
    )
    assert bad_key.exit_code == 2 and "lrr" in bad_key.output


def test_detection_recipes_train_eval_predict_from_the_cli(tmp_path):
    from structvision.viz import save_png

    listed = runner.invoke(app, ["recipes"], terminal_width=200)
    assert listed.exit_code == 0 and "faster_rcnn" in listed.output and "fast_rcnn" in listed.output
    data = "shapes:image_size=64,num_images=4,max_objects=2"
    run = tmp_path / "frcnn"
    result = runner.invoke(
        app,
        [
            "train",
            "faster_rcnn",
            "--data",
            data,
            "--out",
            str(run),
            "--max-steps",
            "2",
            "--set",
            "batch_size=2",
            "--set",
            "model.width=8",
            "--set",
            "model.min_size=64",
            "--set",
            "model.max_size=64",
            "--set",
            "model.box_head=conv",
            "--set",
            "progress=false",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["recipe"] == "faster_rcnn" and config["model"]["kwargs"]["width"] == 8
    assert config["model"]["kwargs"]["box_head"] == "conv"  # eval and predict rebuild it
    assert config["model"]["class_names"][0] == "__background__"
    evaluated = runner.invoke(app, ["eval", str(run), "--data", data])
    assert evaluated.exit_code == 0, evaluated.output
    assert list((run / "eval").glob("*.json"))
    image, _ = build_dataset(data, split="val")[0]
    save_png(image, tmp_path / "x.png")
    predicted = runner.invoke(
        app, ["predict", str(run), str(tmp_path / "x.png"), "--out", str(tmp_path / "p")]
    )
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "p" / "predictions.json").is_file()
    bad_arch = runner.invoke(
        app,
        [
            "train",
            "faster_rcnn",
            "--data",
            data,
            "--out",
            str(tmp_path / "r2"),
            "--set",
            "model.arch=yolo",
        ],
    )
    assert bad_arch.exit_code == 2 and "small_fpn" in bad_arch.output


def test_fcn_recipe_trains_and_predicts_with_the_crf(tmp_path):
    from structvision.viz import save_png

    data = "shapes:image_size=48,num_images=4"
    run = tmp_path / "fcn"
    result = runner.invoke(
        app,
        [
            "train",
            "fcn8s",
            "--data",
            data,
            "--out",
            str(run),
            "--max-steps",
            "2",
            "--set",
            "batch_size=2",
            "--set",
            "model.width=8",
            "--set",
            "progress=false",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {"miou", "boundary_f", "pixel_accuracy"} <= set(
        json.loads((run / "metrics.json").read_text())
    )
    image, _ = build_dataset(data, split="val")[0]
    save_png(image, tmp_path / "x.png")
    predicted = runner.invoke(
        app, ["predict", str(run), str(tmp_path / "x.png"), "--out", str(tmp_path / "p"), "--crf"]
    )
    assert predicted.exit_code == 0, predicted.output
    from PIL import Image

    width, height = Image.open(tmp_path / "p" / "x.png").size
    assert width == 2 * 48 * 5 and height > 48 * 5  # image and labels side by side, legend below
    label_map = Image.open(tmp_path / "p" / "x_labels.png")
    assert label_map.mode == "P" and label_map.size == (48, 48)
    plain = runner.invoke(app, ["eval", str(run), "--data", data])
    refined = runner.invoke(
        app,
        [
            "eval",
            str(run),
            "--data",
            data,
            "--crf-set",
            "bilateral_sxy=10",
            "--crf-set",
            "iterations=3",
        ],
    )
    assert plain.exit_code == 0 and refined.exit_code == 0, plain.output + refined.output
    written = json.loads(
        (run / "eval" / f"{data.replace(':', '_').replace(',', '_')}.crf.json").read_text()
    )
    assert written["crf"] == {"bilateral_sxy": 10.0, "iterations": 3}
    assert 0.0 <= written["metrics"]["miou"] <= 1.0
    unknown = runner.invoke(app, ["eval", str(run), "--data", data, "--crf-set", "sxy=3"])
    assert unknown.exit_code == 2 and "'sxy' is unknown" in unknown.output
    mirrored = runner.invoke(app, ["eval", str(run), "--data", data, "--tta"])
    assert mirrored.exit_code == 2 and "--tta with recipe 'fcn8s'" in mirrored.output
    detector = runner.invoke(
        app, ["train", "fcn8s", "--data", str(tmp_path), "--out", str(tmp_path / "r2")]
    )
    assert detector.exit_code == 2


def test_faster_rcnn_trains_on_a_coco_folder(tmp_path):
    from structvision.data.export import write_coco
    from structvision.data.synthetic import ShapesDataset

    folder = tmp_path / "coco"
    write_coco(ShapesDataset(split="train", num_images=4, seed=1, image_size=64), folder)
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "faster_rcnn",
            "--data",
            str(folder),
            "--val-data",
            str(folder),
            "--out",
            str(run),
            "--max-steps",
            "1",
            "--set",
            "batch_size=2",
            "--set",
            "model.width=8",
            "--set",
            "model.min_size=64",
            "--set",
            "model.max_size=64",
            "--set",
            "progress=false",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["label_to_category_id"] == {str(i): i for i in range(1, 7)}
    assert "bbox/AP" in json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_train_on_two_cpu_processes_from_the_command_line(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "ddp"
    data = "shapes:image_size=64,num_images=8"
    command = [
        sys.executable, "-m", "structvision.cli", "train", "faster_rcnn", "--data", data,
        "--val-data", data, "--out", str(run), "--max-steps", "2", "--devices", "2",
        "--set", "batch_size=2", "--set", "model.width=8", "--set", "model.min_size=64",
        "--set", "model.max_size=64", "--set", "progress=false", "--set", "accelerator=cpu",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert result.stdout.count("run written to") == 1  # only rank 0 prints
    assert result.stdout.count("bbox/AP50") == 1
    assert result.stdout.count("parameters (") == 1
    assert (run / "checkpoints" / "step_000002" / "model.safetensors").is_file()
    assert "bbox/AP" in json.loads((run / "metrics.json").read_text())
