"""Fine-tuning from torchvision COCO-trained detectors: ``--set model.init=FILE``.

The state dicts are built here (random weights, COCO's 91 classes and 17 keypoints), saved as
torchvision would, and must arrive unchanged in every layer that does not depend on the data's
classes.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.models.detection as tvd
from typer.testing import CliRunner

from structvision.cli import app
from structvision.convert import from_torchvision, init_from_torchvision_detection
from structvision.tasks.detection import build_detector
from structvision.tasks.instances import build_keypoint_rcnn, build_mask_rcnn
from structvision.tasks.registry import RecipeError


def _coco_state(builder, **kwargs):
    torch.manual_seed(0)
    return builder(weights=None, weights_backbone=None, **kwargs).state_dict()


@pytest.mark.parametrize(
    ("tv_builder", "build", "kwargs", "fresh"),
    [
        (tvd.fasterrcnn_resnet50_fpn, build_detector, {}, {"cls_score", "bbox_pred"}),
        (tvd.fasterrcnn_resnet50_fpn_v2, build_detector, {}, {"cls_score", "bbox_pred"}),
        (
            tvd.maskrcnn_resnet50_fpn,
            build_mask_rcnn,
            {},
            {"cls_score", "bbox_pred", "mask_fcn_logits"},
        ),
        (
            tvd.keypointrcnn_resnet50_fpn,
            build_keypoint_rcnn,
            {"num_keypoints": 5},
            {"kps_score_lowres"},
        ),
    ],
)
def test_coco_weights_arrive_in_every_shared_layer(tv_builder, build, kwargs, fresh):
    state = _coco_state(tv_builder)
    num_classes = 2 if "num_keypoints" in kwargs else 4
    arch = "resnet50_fpn_v2" if tv_builder.__name__.endswith("_v2") else "resnet50_fpn"
    model = build(arch=arch, num_classes=num_classes, **kwargs)
    left = init_from_torchvision_detection(model, state)
    assert {name.rsplit(".", 2)[-2] for name in left} == fresh
    tv_model = tv_builder(weights=None, weights_backbone=None)
    tv_model.load_state_dict(state)
    reference = from_torchvision(tv_model).state_dict()
    ours = model.state_dict()
    shared = [name for name in ours if name not in left]
    assert len(shared) > 250
    assert all(torch.equal(ours[name], reference[name]) for name in shared)


def test_wrong_files_are_refused_by_name(tmp_path):
    model = build_detector(arch="resnet50_fpn", num_classes=3)
    with pytest.raises(ValueError, match="not a torchvision"):
        init_from_torchvision_detection(model, {"conv.weight": torch.zeros(1)})
    with pytest.raises(RecipeError, match="resnet50_fpn"):
        build_detector(arch="small_fpn", num_classes=3, init=str(tmp_path / "x.pt"))
    with pytest.raises(FileNotFoundError, match=r"model\.init"):
        build_detector(arch="resnet50_fpn", num_classes=3, init=str(tmp_path / "missing.pt"))


@pytest.mark.slow
def test_finetune_from_coco_on_a_coco_folder_from_the_command_line(tmp_path):
    from structvision.data.export import write_coco
    from structvision.data.synthetic import ShapesDataset

    weights = tmp_path / "fasterrcnn_resnet50_fpn_coco.pth"
    torch.save(_coco_state(tvd.fasterrcnn_resnet50_fpn), weights)  # what torchvision caches
    folder = tmp_path / "coco"
    write_coco(ShapesDataset(split="train", num_images=2, seed=1, image_size=64), folder)
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train", "faster_rcnn", "--data", str(folder), "--val-data", str(folder), "--out",
         str(run), "--max-steps", "1", "--set", "batch_size=1", "--set", "model.arch=resnet50_fpn",
         "--set", f"model.init={weights}", "--set", "model.min_size=64",
         "--set", "model.max_size=64", "--set", "progress=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((run / "config.json").read_text())
    assert record["model"]["kwargs"]["init"] == str(weights)
    weights.unlink()  # the run's checkpoint is all that evaluation needs
    evaluated = CliRunner().invoke(app, ["eval", str(run), "--data", str(folder)])
    assert evaluated.exit_code == 0, evaluated.output


def test_init_from_a_structvision_model_copies_every_weight(tmp_path):
    # zoo:NAME (and any run or checkpoint folder) is a model to fine-tune: all weights copied
    from structvision.engine import load_model_weights
    from structvision.zoo import zoo_path

    kwargs = json.loads((zoo_path("zoo:keypoint_rcnn_shapes_pose") / "config.json").read_text())
    kwargs = {k: v for k, v in kwargs["model"]["kwargs"].items() if k != "pretrained"}
    expected = build_keypoint_rcnn(**kwargs)
    load_model_weights(expected, zoo_path("zoo:keypoint_rcnn_shapes_pose"))
    started = build_keypoint_rcnn(**kwargs, init="zoo:keypoint_rcnn_shapes_pose")
    for name, tensor in expected.state_dict().items():
        assert torch.equal(started.state_dict()[name], tensor), name
    # settings that only change training or decoding do not matter; the layers must match
    build_keypoint_rcnn(**kwargs, keypoint_target_sigma=1.5, init="zoo:keypoint_rcnn_shapes_pose")
    with pytest.raises(RecipeError, match=r"model\.init zoo:keypoint_rcnn_shapes_pose"):
        build_keypoint_rcnn(**{**kwargs, "fpn_channels": 32}, init="zoo:keypoint_rcnn_shapes_pose")
    with pytest.raises(RecipeError, match=r"model\.init zoo:no_such_entry.*no entry"):
        build_keypoint_rcnn(**kwargs, init="zoo:no_such_entry")
    with pytest.raises(RecipeError, match=r"model\.init .*no checkpoint"):
        build_keypoint_rcnn(**kwargs, init=str(tmp_path))  # a folder without a model
