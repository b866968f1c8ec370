"""R-CNNs exported by parts: the networks on ONNX Runtime, the host code around them; the
structure flattening the parts rely on."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.export import export_model
from structvision.export.parts import flatten, part_paths, unflatten
from structvision.inference import load
from structvision.tasks import load_trained_model

runner = CliRunner()
MASK_DATA = "shapes:image_size=64,num_images=3,max_objects=2"
TINY_MODEL = [
    "--set", "batch_size=2", "--set", "model.width=8", "--set", "model.fpn_channels=16",
    "--set", "model.min_size=64", "--set", "model.max_size=64", "--set", "progress=false",
]  # fmt: skip


def test_flatten_and_unflatten_round_trip_nested_structures():
    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    value = (OrderedDict([("p2", a), ("pool", b)]), [c, (d,)])
    tensors, spec = flatten(value)
    assert [float(t) for t in tensors] == [0.0, 1.0, 2.0, 3.0]
    rebuilt = unflatten(json.loads(json.dumps(spec)), tensors)  # the spec survives JSON
    assert list(rebuilt[0]) == ["p2", "pool"] and rebuilt[0]["pool"] is b
    assert isinstance(rebuilt[1], list) and isinstance(rebuilt[1][1], tuple)
    assert rebuilt[1][1][0] is d
    with pytest.raises(TypeError, match="only tensors"):
        flatten((a, 3))


def test_a_parameter_outside_the_parts_is_refused():
    class Loose(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Conv2d(3, 4, 1)
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match=r"outside the exported parts.*scale"):
        part_paths(Loose())


@pytest.mark.slow
def test_mask_rcnn_exported_by_parts_predicts_like_the_model(tmp_path):
    from structvision.viz import save_png

    run = tmp_path / "run"
    args = ["train", "mask_rcnn", "--data", MASK_DATA, "--out", str(run), "--max-steps", "2"]
    trained = runner.invoke(app, [*args, *TINY_MODEL])
    assert trained.exit_code == 0, trained.output
    exported = tmp_path / "exported"
    report = export_model(run, out=exported, data=MASK_DATA, num_images=1, check=True)
    record = json.loads((exported / "export.json").read_text())
    assert record["kind"] == "parts"
    assert set(record["parts"]) == {
        "backbone",
        "rpn.head",
        "roi_heads.box_head",
        "roi_heads.box_predictor",
        "mask_branch.head",
        "mask_branch.predictor",
    }
    assert {"boxes", "scores", "labels"} <= set(report.differences)
    _, model, _ = load_trained_model(run)
    model = model.cpu()
    generator = torch.Generator().manual_seed(4)
    images = [torch.rand(3, 70, 90, generator=generator), torch.zeros(3, 50, 64)]
    model.roi_heads.score_thresh = 0.0  # many detections, so that masks are compared
    with torch.no_grad():
        expected = model(images)
    assert len(expected[0]["boxes"]) > 0
    for backend in ("onnxruntime", "openvino"):
        onnx_model = load(exported, backend=backend)
        assert not list(onnx_model.parameters())  # every weight comes from the ONNX files
        onnx_model.roi_heads.score_thresh = 0.0
        with torch.no_grad():
            got = onnx_model(images)
        for want, have in zip(expected, got, strict=True):
            assert set(want) == set(have)
            for key, value in want.items():
                assert have[key].shape == value.shape, (backend, key)
                assert torch.allclose(have[key].float(), value.float(), atol=1e-3), (backend, key)
    # TorchScript parts: traced from the same inputs, run by PyTorch, the same predictions
    scripted = tmp_path / "scripted"
    export_model(run, out=scripted, data=MASK_DATA, num_images=1, check=True, format="torchscript")
    record = json.loads((scripted / "export.json").read_text())
    assert {part["file"] for part in record["parts"].values()} == {
        f"{path}.pt" for path in record["parts"]
    }
    scripted_model = load(scripted)
    assert not list(scripted_model.parameters())
    scripted_model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        got = scripted_model(images)
    for want, have in zip(expected, got, strict=True):
        for key, value in want.items():
            assert torch.allclose(have[key].float(), value.float(), atol=1e-4), key
    # the exported folder through eval and predict (COCO results that pycocotools loads)
    evaluated = runner.invoke(
        app, ["eval", str(exported), "--data", MASK_DATA, "--out", str(tmp_path / "e.json")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    reference = runner.invoke(
        app, ["eval", str(run), "--data", MASK_DATA, "--out", str(tmp_path / "r.json")]
    )
    assert reference.exit_code == 0, reference.output
    scores = [json.loads((tmp_path / n).read_text())["metrics"] for n in ("e.json", "r.json")]
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)
    image, _ = build_dataset(MASK_DATA, split="val")[0]
    save_png((image * 255).round().byte(), tmp_path / "x.png")
    predicted = runner.invoke(
        app,
        [
            *("predict", str(exported), str(tmp_path / "x.png")),
            *("--out", str(tmp_path / "p"), "--score-threshold", "0"),
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    results = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert results and all("segmentation" in result for result in results)
    # int8: the networks quantised from inputs recorded as the exported model runs, the final
    # predictors left float; the quantised model still gives every output
    import onnx

    quantised = tmp_path / "int8"
    export_model(run, out=quantised, data=MASK_DATA, num_images=1, int8=True, calibration_images=1)
    record = json.loads((quantised / "export.json").read_text())["int8"]
    assert set(record["float"]) == {"roi_heads.box_predictor.onnx", "mask_branch.predictor.onnx"}
    assert set(record["quantized"]) == {
        "backbone.onnx",
        "rpn.head.onnx",
        "roi_heads.box_head.onnx",
        "mask_branch.head.onnx",
    }
    for name in (*record["float"], *record["quantized"]):
        ops = {node.op_type for node in onnx.load(str(quantised / name)).graph.node}
        assert ("QuantizeLinear" in ops) == (name in record["quantized"]), name
    int8_model = load(quantised)
    int8_model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        got = int8_model(images)
    assert set(got[0]) == set(expected[0]) and len(got[0]["boxes"]) > 0


TRACK_DATA = "world-track:height=64,width=96,num_frames=6,num_images=4"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "options", "parts"),
    [
        ("sint", ["--set", "model.width=8"], {"trunk", "fc", "regression_head"}),
        ("siamfc", ["--set", "model.width=0.1"], {"embedding"}),
    ],
)
def test_trackers_exported_by_parts_track_like_the_model(tmp_path, recipe, options, parts):
    run = tmp_path / "run"
    args = ["train", recipe, "--data", TRACK_DATA, "--out", str(run), "--max-steps", "2"]
    quick = ["--set", "batch_size=2", "--set", "progress=false", "--set", "eval_every=0"]
    trained = runner.invoke(app, [*args, *quick, *options, "--val-data", TRACK_DATA])
    assert trained.exit_code == 0, trained.output
    exported = tmp_path / "exported"
    report = export_model(run, out=exported, data=TRACK_DATA, num_images=1, check=True)
    assert set(json.loads((exported / "export.json").read_text())["parts"]) == parts
    assert set(report.differences) == {"boxes"}  # the seconds per frame are not compared
    assert any("resized" in what for what in report.checked_inputs)
    # the exported tracker, parameter-free, follows the same boxes as the run's
    frames, target = build_dataset(TRACK_DATA, split="val")[1]
    from structvision.tasks.tracking import tracker_for

    tracker = tracker_for(exported)
    assert not list(tracker.network.parameters())
    got, _ = tracker.track(frames, target["boxes"][0])
    want, _ = tracker_for(run).track(frames, target["boxes"][0])
    assert torch.allclose(got, want, atol=1e-2)
    evaluated = runner.invoke(
        app, ["eval", str(exported), "--data", TRACK_DATA, "--out", str(tmp_path / "e.json")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "success_auc" in json.loads((tmp_path / "e.json").read_text())["metrics"]
