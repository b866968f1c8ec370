"""Starting the small backbones of detectors and segmenters from a trained classifier."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from structvision.cli import app
from structvision.models.classification import classifier_small
from structvision.models.pretrained import init_small_backbone, read_trunk_state_dict
from structvision.tasks.detection import build_detector
from structvision.tasks.instances import build_mask_rcnn
from structvision.tasks.segmentation import build_segmenter


def _classifier_file(tmp_path, *, width=8, norm="group", name="cls.safetensors"):
    torch.manual_seed(123)
    classifier = classifier_small(num_classes=7, width=width, norm=norm)
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(path))
    return classifier, path


def _trunk(model):
    from structvision.models.backbones import SmallBackbone

    (trunk,) = [m for m in model.modules() if isinstance(m, SmallBackbone)]
    return trunk


def test_detector_trunk_equals_the_classifiers_and_the_rest_is_untouched(tmp_path):
    classifier, path = _classifier_file(tmp_path)
    torch.manual_seed(0)
    scratch = build_detector(arch="small_fpn", num_classes=4, width=8)
    torch.manual_seed(0)
    started = build_detector(arch="small_fpn", num_classes=4, width=8, pretrained=str(path))
    expected = classifier.backbone.state_dict()
    trunk = _trunk(started).state_dict()
    assert trunk.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(trunk[key], value), key
        assert not torch.equal(_trunk(scratch).state_dict()[key], value) or value.ndim == 1
    (prefix,) = [name for name, m in started.named_modules() if m is _trunk(started)]
    scratch_rest = {k: v for k, v in scratch.state_dict().items() if not k.startswith(prefix)}
    started_rest = {k: v for k, v in started.state_dict().items() if not k.startswith(prefix)}
    assert scratch_rest.keys() == started_rest.keys() and len(scratch_rest) > 20
    assert all(torch.equal(scratch_rest[k], started_rest[k]) for k in scratch_rest)


def test_c4_model_and_fcn_take_the_stages_they_build(tmp_path):
    classifier, path = _classifier_file(tmp_path)
    c4 = build_detector(arch="small_c4", num_classes=4, width=8, pretrained=str(path))
    weight = classifier.backbone.stages[2][0][0].weight
    assert torch.equal(_trunk(c4).stages[2][0][0].weight, weight)
    assert len(_trunk(c4).stages) == 3  # c5 is not built, and its weights are ignored
    fcn = build_segmenter(
        arch="small", variant="8s", num_classes=4, width=8, norm="group", pretrained=str(path)
    )
    assert torch.equal(_trunk(fcn).stages[2][0][0].weight, weight)
    mask = build_mask_rcnn(arch="small_fpn", num_classes=4, width=8, pretrained=str(path))
    assert torch.equal(_trunk(mask).stem[0].weight, classifier.backbone.stem[0].weight)


def test_a_trunk_of_another_width_or_norm_is_refused_by_name(tmp_path):
    _, wide = _classifier_file(tmp_path, width=16, name="wide.safetensors")
    with pytest.raises(ValueError, match=r"model\.pretrained .*wide\.safetensors.*model\.width"):
        build_detector(arch="small_fpn", num_classes=4, width=8, pretrained=str(wide))
    _, batch = _classifier_file(tmp_path, norm="batch", name="bn.safetensors")
    model = build_detector(arch="small_fpn", num_classes=4, width=8)
    with pytest.raises(ValueError, match=r"model\.norm"):
        # batch norm's running statistics are no group-norm weights, and vice versa
        build_segmenter(arch="small", variant="8s", num_classes=4, width=8,
                        norm="group", pretrained=str(batch))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"model\.norm"):
        init_small_backbone(model, batch)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        read_trunk_state_dict(tmp_path / "nowhere.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 3, 1, 1)}, str(other))
    with pytest.raises(ValueError, match=r"other\.safetensors holds no small-backbone"):
        read_trunk_state_dict(other)
    with pytest.raises(FileNotFoundError, match="zoo has no entry"):
        read_trunk_state_dict("zoo:no_such_entry")
    _, path = _classifier_file(tmp_path)
    with pytest.raises(ValueError, match=r"model\.pretrained .*'resnet50_fpn'"):
        build_detector(arch="resnet50_fpn", num_classes=4, pretrained=str(path))
    with pytest.raises(ValueError, match=r"model\.pretrained .*'vgg'"):
        build_segmenter(arch="vgg", variant="8s", num_classes=4, pretrained=str(path))
    # "none" is from scratch
    build_detector(arch="small_fpn", num_classes=4, width=8, pretrained="none")


def test_cli_detector_from_a_classifier_run_never_rereads_it(tmp_path):
    runner = CliRunner()
    classifier_run = tmp_path / "cls"
    result = runner.invoke(
        app,
        ["train", "classifier", "--data", "shapes-cls:num_images=8", "--out",
         str(classifier_run), "--max-steps", "1", "--set", "batch_size=4",
         "--set", "model.width=8", "--set", "progress=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tmp_path / "det"
    result = runner.invoke(
        app,
        ["train", "faster_rcnn", "--data", "shapes:num_images=4", "--out", str(run),
         "--max-steps", "1", "--set", "batch_size=2", "--set", "model.width=8",
         "--set", f"model.pretrained={classifier_run}", "--set", "progress=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["kwargs"]["pretrained"] == str(classifier_run)
    import shutil

    shutil.rmtree(classifier_run)  # a trained model holds every weight it needs
    result = runner.invoke(app, ["eval", str(run), "--data", "shapes:num_images=2"])
    assert result.exit_code == 0, result.output


def test_the_zoo_classifier_starts_the_default_detector():
    from structvision.zoo import zoo_path

    model = build_detector(arch="small_fpn", num_classes=7, pretrained="zoo:classifier_shapes")
    shipped = read_trunk_state_dict(zoo_path("classifier_shapes") / "model.safetensors")
    trunk = _trunk(model).state_dict()
    assert trunk.keys() <= shipped.keys()
    assert all(torch.equal(trunk[k], shipped[k].float()) for k in trunk)


@pytest.mark.parametrize(
    ("recipe", "data"),
    [("faster_rcnn", "shapes"), ("mask_rcnn", "shapes"), ("fcn8s", "shapes"),
     ("keypoint_rcnn", "shapes-pose"), ("fast_rcnn", "shapes")],
)  # fmt: skip
def test_recipes_start_from_the_zoo_trunk_unless_told_otherwise(recipe, data):
    from structvision.tasks.registry import RECIPES

    setup = RECIPES[recipe].setup
    task = setup(data=f"{data}:num_images=2", val_data=None, model_overrides={})
    kwargs = task.model_config["kwargs"]
    assert kwargs["pretrained"] == "zoo:classifier_shapes"
    shipped = read_trunk_state_dict("zoo:classifier_shapes")
    first = _trunk(task.model).stem[0].weight
    assert torch.equal(first, shipped["stem.0.weight"].float())
    if recipe != "fcn8s" and recipe != "fast_rcnn":
        assert kwargs["box_head"] == "conv"
    scratch = setup(
        data=f"{data}:num_images=2", val_data=None, model_overrides={"pretrained": "none"}
    )
    assert not torch.equal(_trunk(scratch.model).stem[0].weight, first)
    # a width or norm the zoo trunk does not have trains from scratch, as asked
    other = {"norm": "batch"} if recipe == "fcn8s" else {"width": 8}
    task = setup(data=f"{data}:num_images=2", val_data=None, model_overrides=other)
    assert "pretrained" not in task.model_config["kwargs"]


def test_a_resumed_run_does_not_read_the_default_trunk_again(tmp_path, monkeypatch):
    from structvision.tasks import run_train

    run = tmp_path / "run"
    settings = {"batch_size": "1", "progress": "false", "eval_every": "0"}
    run_train("faster_rcnn", data="shapes:num_images=2", out=run, max_steps=1, overrides=settings)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["kwargs"]["pretrained"] == "zoo:classifier_shapes"

    def refuse(*args, **kwargs):
        raise AssertionError("the trunk was read again")

    monkeypatch.setattr("structvision.models.pretrained.read_trunk_state_dict", refuse)
    run_train("faster_rcnn", out=run, max_steps=2, resume=True)
    assert json.loads((run / "config.json").read_text())["model"] == config["model"]
