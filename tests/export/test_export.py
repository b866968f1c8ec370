"""ONNX export: each family's round trip on a tiny trained model (the exported model against
the PyTorch one, on images of other sizes than the export's and on mixed-size batches), the
exported model through eval and predict, and the errors (bad files, a missing extra, a failed
check that must not touch an earlier export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.export import (
    ExportCheckError,
    ExportError,
    ExportTolerance,
    export_model,
    require,
)
from structvision.inference import load
from structvision.models.intrinsic import relight_shading
from structvision.tasks import load_trained_model

pytestmark = pytest.mark.slow  # each export traces a model: 10-30 s

runner = CliRunner()
QUICK = ["--max-steps", "2", "--set", "batch_size=2", "--set", "progress=false"]
SHAPES = "shapes:image_size=48,num_images=3"


def _train(out, recipe, data, *settings):
    result = runner.invoke(
        app, ["train", recipe, "--data", data, "--out", str(out), *QUICK, *settings]
    )
    assert result.exit_code == 0, result.output
    return out


def _assert_same(eager, exported, *, atol=1e-4):
    assert len(eager) == len(exported)
    for expected, got in zip(eager, exported, strict=True):
        assert set(expected) == set(got)
        for key, value in expected.items():
            assert got[key].shape == value.shape, key
            if value.is_floating_point():
                scale = float(value.abs().max())
                assert torch.allclose(got[key], value, atol=atol + 1e-4 * scale), key
            else:
                assert (got[key] != value).float().mean() <= 1e-3, key


@pytest.fixture(scope="module")
def fcn(tmp_path_factory):
    """A tiny FCN-8s run and its export (through the command line, with --check)."""
    root = tmp_path_factory.mktemp("fcn")
    run = _train(root / "run", "fcn8s", SHAPES, "--set", "model.width=8")
    exported = root / "exported"
    result = runner.invoke(
        app,
        ["export", str(run), "--out", str(exported), "--check", "--data", SHAPES, "--images", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "fcn8s exported to" in result.output and "resized sample" in result.output
    return run, exported


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fcn_export_matches_the_model_on_mixed_sizes(fcn, backend):
    run, exported = fcn
    record = json.loads((exported / "export.json").read_text())
    assert record["recipe"] == "fcn8s" and record["outputs"] == ["semantic", "semantic_logits"]
    _, model, _ = load_trained_model(run)
    model = model.cpu()
    onnx_model = load(exported / "model.onnx", backend=backend)
    if backend == "onnxruntime":  # its threads sleep between runs (host code runs between)
        options = onnx_model.runtime.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    else:  # float32 even where the CPU has bfloat16 instructions (OpenVINO's default there)
        precision = onnx_model.runtime.compiled.get_property("INFERENCE_PRECISION_HINT")
        assert precision == pytest.importorskip("openvino").Type.f32, precision
    generator = torch.Generator().manual_seed(3)
    # sizes the export never saw, in one padded batch (and a single image of a third size)
    images = [
        torch.rand(3, 37, 61, generator=generator),
        torch.rand(3, 50, 44, generator=generator),
    ]
    with torch.no_grad():
        _assert_same(model(images), onnx_model(images))
        single = [torch.rand(3, 70, 33, generator=generator)]
        _assert_same(model(single), onnx_model(single))


def test_exported_fcn_evaluates_and_predicts_like_its_run(fcn, tmp_path):
    from structvision.viz import save_png

    run, exported = fcn
    scores = {}
    for name, source in (("run", run), ("exported", exported)):
        result = runner.invoke(
            app, ["eval", str(source), "--data", SHAPES, "--out", str(tmp_path / f"{name}.json")]
        )
        assert result.exit_code == 0, result.output
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    assert scores["exported"] == pytest.approx(scores["run"], abs=1e-6)
    on_openvino = runner.invoke(
        app,
        [
            *("eval", str(exported), "--data", SHAPES),
            *("--backend", "openvino", "--out", str(tmp_path / "ov.json")),
        ],
    )
    assert on_openvino.exit_code == 0, on_openvino.output
    ov_metrics = json.loads((tmp_path / "ov.json").read_text())["metrics"]
    assert ov_metrics == pytest.approx(scores["run"], abs=1e-6)
    image, _ = build_dataset(SHAPES, split="val")[0]
    save_png((image * 255).round().byte(), tmp_path / "x.png")
    predicted = runner.invoke(
        app,
        ["predict", str(exported), str(tmp_path / "x.png"), "--out", str(tmp_path / "p"), "--crf"],
    )
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "p" / "x_labels.png").is_file()
    wrong = runner.invoke(app, ["eval", str(run), "--data", SHAPES, "--backend", "onnxruntime"])
    assert wrong.exit_code == 2 and "export it first" in wrong.output


def test_dense_heads_export_runs_mixed_sizes_one_size_at_a_time(tmp_path):
    data = "world:height=32,width=64,num_images=2"
    run = _train(
        tmp_path / "run",
        "normals",
        data,
        "--set",
        "model.width=8",
        "--set",
        "model.with_depth=true",
    )
    report = export_model(run, out=tmp_path / "exported", data=data, num_images=1, check=True)
    assert set(report.differences) == {"normals", "depth"} and not report.failures()
    _, model, _ = load_trained_model(run)
    model = model.cpu()
    onnx_model = load(tmp_path / "exported")
    generator = torch.Generator().manual_seed(5)
    first, second = (torch.rand(3, 40, 52, generator=generator) for _ in range(2))
    large = torch.rand(3, 64, 96, generator=generator)
    with torch.no_grad():
        got = onnx_model([first, large, second])  # two sizes: back in the order given
        expected = model([first, second])
        _assert_same([expected[0], model([large])[0], expected[1]], got)


def test_intrinsic_export_gives_the_albedo_of_eval_mode(tmp_path):
    data = "world:height=32,width=64,num_images=2"
    run = _train(tmp_path / "run", "intrinsic", data, "--set", "model.width=8")
    report = export_model(run, out=tmp_path / "exported", data=data, num_images=1, check=True)
    assert set(report.differences) == {"albedo", "shading"} and not report.failures()
    _, model, _ = load_trained_model(run)
    image = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = model.cpu()([image]), load(tmp_path / "exported")([image])
    _assert_same(expected, got)
    torch.testing.assert_close(got[0]["albedo"] * got[0]["shading"], image)


def test_depth_export_takes_the_camera_from_the_targets(tmp_path):
    data = "world-stereo:num_images=2,height=64,width=128"
    run = _train(tmp_path / "run", "monodepth", data, "--set", "model.width=8")
    report = export_model(run, out=tmp_path / "exported", data=data, num_images=1, check=True)
    assert {"disparity", "disparity_right", "depth"} <= set(report.differences)
    _, model, _ = load_trained_model(run)
    model = model.cpu()
    onnx_model = load(tmp_path / "exported")
    images = [torch.rand(3, 70, 150, generator=torch.Generator().manual_seed(1))]
    camera = [{"focal": torch.tensor(100.0), "baseline": torch.tensor(0.3)}]
    with torch.no_grad():
        expected, got = model(images, camera), onnx_model(images, camera)
        _assert_same(expected, got, atol=1e-3)
        # depth = focal * baseline / disparity with the given camera, not the model's default
        assert torch.allclose(
            got[0]["depth"] * got[0]["disparity"].clamp_min(1e-3), torch.tensor(30.0)
        )


def test_flow_export_takes_two_frames(tmp_path):
    data = "world-flow:height=128,width=128,num_images=2"
    run = _train(tmp_path / "run", "flownet_s", data, "--set", "model.width=8")
    report = export_model(run, out=tmp_path / "exported", data=data, num_images=1, check=True)
    assert set(report.differences) == {"flow"}
    _, model, _ = load_trained_model(run)
    model = model.cpu()
    pair = [torch.rand(6, 100, 140, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        _assert_same(model(pair), load(tmp_path / "exported")(pair), atol=1e-3)


def test_a_failed_check_leaves_an_earlier_export_untouched(fcn, tmp_path, monkeypatch):
    import structvision.export

    run, exported = fcn
    copy = tmp_path / "exported"
    shutil.copytree(exported, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}

    def reuse_the_export(graph, family, outputs, path):  # the fixture's graph, not traced again
        import onnx

        model = onnx.load(str(exported / "model.onnx"))
        model.doc_string = "another export"  # other bytes, the same computation
        onnx.save(model, str(path))

    monkeypatch.setattr(structvision.export, "_export_onnx", reuse_the_export)
    strict = ExportTolerance(atol=0.0, rtol=0.0, label_fraction=0.0)
    # logits of an export are never bit-equal to PyTorch's, so nothing passes a zero tolerance
    with pytest.raises(ExportCheckError, match=r"semantic_logits.*nothing was written"):
        export_model(run, out=copy, data=SHAPES, num_images=1, check=True, tolerance=strict)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    # killed between renaming the old export aside and the new one into place: the old one is
    # whole in its hidden folder, never mixed with the new one, and no scratch folder is left
    real_replace = structvision.export.os.replace

    def killed_at_the_second_rename(source, target):
        if Path(target) == copy:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(structvision.export.os, "replace", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        export_model(run, out=copy, data=SHAPES, num_images=1)
    monkeypatch.setattr(structvision.export.os, "replace", real_replace)
    assert not copy.exists()
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert aside.name.startswith(".exported.old-")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before
    # an export that completes replaces the folder as a whole, leaving nothing beside it
    shutil.copytree(aside, copy)
    shutil.rmtree(aside)
    export_model(run, out=copy, data=SHAPES, num_images=1)
    assert sorted(p.name for p in copy.iterdir()) == ["export.json", "model.onnx"]
    assert b"another export" in (copy / "model.onnx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]
    # a folder that is not an export is refused before anything is done
    other = tmp_path / "results"
    other.mkdir()
    (other / "metrics.json").write_text("{}")
    with pytest.raises(ExportError, match="not an export folder"):
        export_model(run, out=other, check=True)
    assert [p.name for p in other.iterdir()] == ["metrics.json"]


def test_bad_exported_files_are_named(fcn, tmp_path):
    _, exported = fcn
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(exported / "export.json", broken / "export.json")
    (broken / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match=r"broken/model.onnx: not a readable ONNX model"):
        load(broken)
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(exported / "model.onnx", lonely)
    with pytest.raises(ExportError, match=r"export\.json is missing"):
        load(lonely)
    (broken / "export.json").write_text("{")
    result = runner.invoke(app, ["eval", str(broken), "--data", SHAPES])
    assert result.exit_code == 2 and "not a valid export record" in result.output
    (broken / "model.onnx").unlink()
    with pytest.raises(ExportError, match="no such exported model"):
        load(broken / "model.onnx")


def test_a_missing_runtime_names_the_extra(monkeypatch):
    import importlib

    real = importlib.import_module

    def without_onnxruntime(name, *args):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_onnxruntime)
    with pytest.raises(ExportError, match=r"'onnxruntime'.*structvision\[deploy\]"):
        require("onnxruntime")
    assert require("json") is json


def test_benchmark_measures_each_format(fcn, tmp_path):
    run, exported = fcn
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            *("benchmark", str(run), "--data", SHAPES, "--threads", "1", "--speed-images", "2"),
            *("--export", str(exported), "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {row["format"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch", "onnx", "openvino"}
    assert rows["torch"]["metric"] == rows["onnx"]["metric"] == "miou"
    assert rows["onnx"]["metrics"] == pytest.approx(rows["torch"]["metrics"], abs=1e-6)
    assert rows["openvino"]["metrics"] == pytest.approx(rows["torch"]["metrics"], abs=1e-6)
    assert rows["onnx"]["file_mb"] == pytest.approx(
        (exported / "model.onnx").stat().st_size / 1e6, abs=0.01
    )
    assert rows["torch"]["speedup"] == 1.0
    ratio = rows["onnx"]["images_per_second"] / rows["torch"]["images_per_second"]
    assert rows["onnx"]["speedup"] == pytest.approx(ratio, rel=0.01)
    for row in rows.values():  # the default three rounds, the fastest reported
        assert len(row["ms_rounds"]) == 3
        assert row["ms_per_image"] == pytest.approx(min(row["ms_rounds"]), abs=0.01)
    refused = runner.invoke(app, ["benchmark", str(exported), "--data", SHAPES])
    assert refused.exit_code == 2 and "--formats onnx" in refused.output
    refused = runner.invoke(app, ["benchmark", str(run), "--data", SHAPES, "--formats", "tflite"])
    assert refused.exit_code == 2 and "choose from" in refused.output
    twice = ["--formats", "torch,onnx,torch"]
    refused = runner.invoke(app, ["benchmark", str(run), "--data", SHAPES, *twice])
    assert refused.exit_code == 2 and "each format once" in refused.output


def test_benchmark_formats_take_turns_in_each_round():
    """Every format is warmed up, then timed once per round, the order rotated each round;
    the times come from the clock around each format's own pass."""
    from structvision.export.benchmark import alternating_milliseconds

    calls, now = [], [0.0]

    def model(name, seconds_per_image):
        def call(batch):
            calls.append(name)
            now[0] += seconds_per_image * len(batch)

        return call

    models = {"a": model("a", 0.010), "b": model("b", 0.020), "c": model("c", 0.005)}
    timings = alternating_milliseconds(models, [0, 1], rounds=3, clock=lambda: now[0])
    passes = calls[6:][::2]  # after the warm-up (3 models x 2 inputs), one name per pass
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]
    assert passes == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert timings == {
        "a": pytest.approx([10.0] * 3),
        "b": pytest.approx([20.0] * 3),
        "c": pytest.approx([5.0] * 3),
    }
    with pytest.raises(ValueError, match="at least one round"):
        alternating_milliseconds(models, [0], rounds=0)


def test_an_old_torch_is_named(monkeypatch):
    from structvision.export import require_exporter

    class OldDim:  # torch.export.Dim before torch 2.6 had no AUTO
        pass

    monkeypatch.setattr(torch.export, "Dim", OldDim)
    with pytest.raises(ExportError, match=r"torch 2\.6 or newer"):
        require_exporter()


def _initializers(path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return graph, {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def test_int8_export_quantises_each_weight_per_channel(fcn, tmp_path):
    import numpy as np

    run, exported = fcn
    quantised = tmp_path / "int8"
    result = runner.invoke(
        app,
        [
            *("export", str(run), "--out", str(quantised), "--data", SHAPES, "--images", "1"),
            *("--int8", "--calibration-images", "2", "--check"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "int8 model" in result.output
    record = json.loads((quantised / "export.json").read_text())
    assert record["int8"]["quantized"] == ["model.onnx"]
    assert record["int8"]["calibration_images"] == 2
    _, floats = _initializers(exported / "model.onnx")
    graph, values = _initializers(quantised / "model.onnx")
    checked = 0
    for node in graph.node:  # every int8 weight dequantises to the float one within half a step
        if node.op_type != "DequantizeLinear" or values.get(node.input[0]) is None:
            continue
        weight = values[node.input[0]]
        if weight.dtype != np.int8:
            continue
        original = floats[node.input[0].removesuffix("_quantized")]
        scale = values[node.input[1]]
        assert scale.shape == (original.shape[0],)  # one scale per output channel
        shape = (-1,) + (1,) * (original.ndim - 1)
        error = np.abs(weight.astype(np.float32) * scale.reshape(shape) - original)
        assert (error <= scale.reshape(shape) / 2 + 1e-7).all(), node.input[0]
        checked += 1
    assert checked >= 10  # every convolution of the FCN
    small = (quantised / "model.onnx").stat().st_size  # a tiny net: the graph is half the file
    assert small < 0.6 * (exported / "model.onnx").stat().st_size
    # the int8 model keeps the float one's answers on most pixels
    image = build_dataset(SHAPES, split="val")[0][0]
    with torch.no_grad():
        want = load(exported)([image])[0]
        for backend in ("onnxruntime", "openvino"):
            got = load(quantised, backend=backend)([image])[0]
            assert (got["semantic"] == want["semantic"]).float().mean() > 0.9, backend
    # a bad calibration SPEC is named before anything is written
    with pytest.raises(ValueError, match="no-such-data"):
        export_model(run, out=tmp_path / "never", int8=True, calibration_data="no-such-data")
    assert not (tmp_path / "never").exists()


def test_openvino_ir_export_runs_like_the_onnx_one(fcn, tmp_path):
    run, exported = fcn
    ir = tmp_path / "ir"
    args = ["export", str(run), "--out", str(ir), "--data", SHAPES, "--images", "1"]
    result = runner.invoke(app, [*args, "--format", "openvino", "--check"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in ir.iterdir()) == ["export.json", "model.bin", "model.xml"]
    assert json.loads((ir / "export.json").read_text())["file"] == "model.xml"
    image = build_dataset(SHAPES, split="val")[0][0]
    with torch.no_grad():
        _assert_same(load(exported)([image]), load(ir)([image]))  # OpenVINO by default
    with pytest.raises(ExportError, match="--backend openvino"):
        load(ir, backend="onnxruntime")
    scores = []
    for folder in (exported, ir):
        out = tmp_path / f"{folder.name}.json"
        evaluated = runner.invoke(app, ["eval", str(folder), "--data", SHAPES, "--out", str(out)])
        assert evaluated.exit_code == 0, evaluated.output
        scores.append(json.loads(out.read_text())["metrics"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)
    broken = tmp_path / "broken"
    shutil.copytree(ir, broken)
    # the ONNX export written over it leaves no IR file behind
    assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in ir.iterdir()) == ["export.json", "model.onnx"]
    (broken / "model.bin").unlink()
    with pytest.raises(ExportError, match=r"model\.bin: the IR's weights file is missing"):
        load(broken)


def test_torchscript_export_runs_like_the_model(fcn, tmp_path):
    run, onnx_export = fcn
    scripted = tmp_path / "ts"
    args = ["export", str(run), "--out", str(scripted), "--data", SHAPES, "--images", "1"]
    result = runner.invoke(app, [*args, "--format", "torchscript", "--check"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in scripted.iterdir()) == ["export.json", "model.pt"]
    record = json.loads((scripted / "export.json").read_text())
    assert record["format"] == "torchscript" and record["file"] == "model.pt"
    _, model, _ = load_trained_model(run)
    generator = torch.Generator().manual_seed(5)
    images = [
        torch.rand(3, 37, 61, generator=generator),
        torch.rand(3, 50, 44, generator=generator),
    ]
    scripted_model = load(scripted / "model.pt")  # PyTorch's TorchScript runtime by default
    with torch.no_grad():
        _assert_same(model.cpu()(images), scripted_model(images), atol=1e-5)
    # the archive is self-contained: plain torch.jit.load runs it without structvision's code
    names = {"io.json": ""}
    module = torch.jit.load(str(scripted / "model.pt"), _extra_files=names)
    assert json.loads(names["io.json"]) == {"inputs": ["images"], "outputs": record["outputs"]}
    labels, _ = module(images[0][None])
    assert torch.equal(labels[0], model(images[:1])[0]["semantic"])
    # each format runs on its own backends only
    with pytest.raises(ExportError, match="torchscript export"):
        load(scripted, backend="onnxruntime")
    with pytest.raises(ExportError, match="onnx export"):
        load(onnx_export, backend="torchscript")
    out = tmp_path / "e.json"
    evaluated = runner.invoke(app, ["eval", str(scripted), "--data", SHAPES, "--out", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    reference = runner.invoke(
        app, ["eval", str(run), "--data", SHAPES, "--out", str(tmp_path / "r")]
    )
    assert reference.exit_code == 0, reference.output
    expected = json.loads((tmp_path / "r").read_text())["metrics"]
    assert json.loads(out.read_text())["metrics"] == pytest.approx(expected, abs=1e-6)
    refused = runner.invoke(
        app, [*args[:3], str(tmp_path / "q"), "--format", "torchscript", "--int8"]
    )
    assert refused.exit_code == 2 and "--int8 quantises ONNX graphs" in refused.output
    (scripted / "model.pt").write_bytes(b"not an archive")
    with pytest.raises(ExportError, match=r"ts/model\.pt: not a TorchScript archive"):
        load(scripted)
    bench = tmp_path / "bench.json"
    measured = runner.invoke(
        app,
        [
            *("benchmark", str(run), "--data", SHAPES, "--threads", "1", "--speed-images", "1"),
            *("--formats", "torch,torchscript", "--out", str(bench)),
        ],
    )
    assert measured.exit_code == 0, measured.output
    rows = {row["format"]: row for row in json.loads(bench.read_text())["rows"]}
    assert rows["torchscript"]["metrics"] == pytest.approx(rows["torch"]["metrics"], abs=1e-6)
    assert rows["torchscript"]["file_mb"] > 0


def test_only_detections_may_differ_in_count():
    """Detections are compared over the rows both models kept (the rest reported as
    ``detections``); a dense output or a tracker's boxes of another length is a shape error."""
    from structvision.export import ExportCheckError, ExportReport, compare_predictions

    def report():
        return ExportReport(path=Path("x"), recipe="r", format="onnx", seconds=0, file_bytes=0)

    boxes = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6], [3, 3, 7, 7]])
    eager = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6])}]
    exported = [{"boxes": boxes[:3] + 0.01, "scores": torch.tensor([0.9, 0.8, 0.7])}]
    detections = report()
    compare_predictions(eager, exported, detections, "sample")
    assert detections.differences["detections"] == pytest.approx(0.25)
    assert detections.differences["boxes"] == pytest.approx(0.01, abs=1e-6)
    semantic = torch.zeros(6, 8, dtype=torch.long)
    with pytest.raises(ExportCheckError, match="'semantic' has shape \\(5, 8\\)"):
        compare_predictions([{"semantic": semantic}], [{"semantic": semantic[:5]}], report(), "s")
    track = {"boxes": boxes}  # a tracker's boxes: one per frame, no scores
    with pytest.raises(ExportCheckError, match="'boxes' has shape \\(3, 4\\)"):
        compare_predictions([track], [{"boxes": boxes[:3]}], report(), "sequence")


def test_intrinsic_export_relights_on_the_host_as_eval_mode_does(tmp_path):
    data = "world:height=32,width=64,num_images=2"
    run = _train(
        tmp_path / "run",
        "intrinsic",
        data,
        *("--set", "model.width=8", "--set", "model.with_normals=true"),
        *("--set", "model.relight=true"),
    )
    report = export_model(run, out=tmp_path / "exported", data=data, num_images=1, check=True)
    assert set(report.differences) == {"albedo", "shading", "normals"} and not report.failures()
    exported = load(tmp_path / "exported")
    image = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = exported([image])[0]
        exported.record["host"]["relight"] = False
        plain = exported([image])[0]
    # the host relights the graph's shading with its normals, as eval mode does
    expected = relight_shading(plain["shading"], plain["normals"], num_lights=1)
    torch.testing.assert_close(got["shading"], expected)
    torch.testing.assert_close(got["albedo"] * got["shading"], image)
    assert not torch.allclose(got["shading"], plain["shading"], atol=1e-3)
