"""`structvision data synth / check` and `structvision demo`, as a user runs them."""

from __future__ import annotations

import json
import shutil

import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "shapes"
    result = runner.invoke(
        app, ["data", "synth", "shapes", "--out", str(out), "--num-images", "200", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_synth_writes_a_dataset_pycocotools_loads_and_check_passes(synth_dir):
    coco = COCO(str(synth_dir / "annotations.json"))
    assert len(coco.getImgIds()) == 200
    assert len(list((synth_dir / "images").glob("*.png"))) == 200
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())][:2] == ["circle", "square"]
    result = runner.invoke(app, ["data", "check", str(synth_dir / "annotations.json")])
    assert result.exit_code == 0, result.output
    assert "no problems" in " ".join(result.output.split())  # rich may wrap long paths


def test_synth_refuses_to_overwrite_and_names_bad_arguments(synth_dir, tmp_path):
    before = (synth_dir / "annotations.json").read_bytes()
    result = runner.invoke(app, ["data", "synth", "shapes", "--out", str(synth_dir)])
    assert result.exit_code == 2 and "not empty" in result.output
    assert (synth_dir / "annotations.json").read_bytes() == before
    unknown = runner.invoke(app, ["data", "synth", "blobs", "--out", str(tmp_path / "x")])
    assert unknown.exit_code == 2 and "shapes" in unknown.output


def test_check_reports_a_hand_broken_copy_record_by_record(synth_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(synth_dir, broken)
    data = json.loads((broken / "annotations.json").read_text())
    data["annotations"][0]["bbox"][2] = -5.0  # negative width
    data["annotations"][1]["category_id"] = 99  # unknown category
    data["annotations"][3]["id"] = data["annotations"][2]["id"]  # duplicate id
    (broken / "images" / data["images"][5]["file_name"]).unlink()  # missing image file
    (broken / "images" / data["images"][6]["file_name"]).write_bytes(b"garbage")  # corrupt image
    (broken / "annotations.json").write_text(json.dumps(data))

    result = runner.invoke(app, ["data", "check", str(broken)], terminal_width=200)
    assert result.exit_code == 1
    out = result.output
    assert "5 problem(s)" in out
    assert f"annotation id {data['annotations'][0]['id']}" in out
    assert "99" in out
    assert "duplicate" in out.lower()
    assert data["images"][5]["file_name"] in out and data["images"][6]["file_name"] in out

    # Training data refuses the broken copy with the same list, or skips bad records when asked.
    with pytest.raises(ValueError, match="99"):
        build_dataset(str(broken), split="train")
    with pytest.warns(UserWarning):
        skipping = build_dataset(f"{broken}:skip_invalid=true", split="train")
    assert 190 <= len(skipping) < 200 and skipping.skipped


def test_check_on_missing_file_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_quick_demo_writes_its_outputs(tmp_path, monkeypatch):
    import structvision.demo
    from structvision.demo import DemoSettings
    from structvision.zoo import zoo_entries

    # the tour's shape, not its length
    tiny = DemoSettings(
        num_samples=2,
        num_speed_images=4,
        num_coco_images=4,
        zoo_images=6,
        num_shown=2,
        num_sequences=1,
        train_steps=2,
        batch_size=2,
        val_images=2,
    )
    monkeypatch.setattr(structvision.demo.DemoSettings, "make", classmethod(lambda cls, q: tiny))
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = ["samples.png", "semantic.png", "index.html", "demo.json"]
    names += ["shapes-coco/annotations.json", "faster_rcnn/report.html"]
    names += [f"zoo/{name}.png" for name in zoo_entries()]
    for name in names:
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text()
    summary = json.loads((out / "demo.json").read_text())
    assert summary["coco_roundtrip/bbox/AP"] == 1.0 and summary["coco_roundtrip/segm/AP"] == 1.0
    for name in zoo_entries():  # every shipped model is shown, with its numbers
        assert f"zoo:{name}" in page and any(k.startswith(f"zoo/{name}/") for k in summary)
    assert summary["zoo/monodepth_world/a1"] > 0.7  # the shipped models are trained
    assert summary["zoo/classifier_shapes/top1"] > 0.5
    assert 0.0 <= summary["training/faster_rcnn/bbox/AP50"] <= 1.0
    # Running it again reuses its own folder (the folder check, without a second tour); a
    # foreign non-empty folder is refused.
    structvision.demo._prepare_folder(out)
    assert (out / "index.html").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    refused = runner.invoke(app, ["demo", "--quick", "--out", str(foreign)])
    assert refused.exit_code == 2 and (foreign / "thesis.tex").read_text() == "precious"


def test_demo_shows_flow_and_tracking_zoo_entries(tmp_path, monkeypatch):
    import shutil

    from rich.console import Console

    import structvision.demo
    import structvision.zoo
    from structvision.demo import DemoSettings, _zoo_stage

    weights = tmp_path / "weights"
    runs = {
        "raft_small": (
            "world-flow:height=128,width=128",
            ["--set", "model.train_updates=2", "--set", "model.num_updates=2"],
        ),
        "sint": ("world-track:height=64,width=96,num_frames=6", ["--set", "model.width=8"]),
    }
    for recipe, (data, options) in runs.items():
        run = tmp_path / recipe
        trained = runner.invoke(
            app,
            [
                "train",
                recipe,
                "--data",
                f"{data},num_images=4",
                "--val-data",
                f"{data},num_images=1",
                "--out",
                str(run),
                "--max-steps",
                "1",
                "--set",
                "batch_size=2",
                "--set",
                "progress=false",
                *options,
            ],
        )
        assert trained.exit_code == 0, trained.output
        entry = weights / f"{recipe}_test"
        shutil.copytree(
            run / "checkpoints" / "step_000001", entry, ignore=shutil.ignore_patterns("trainer.pt")
        )
        record = {
            "recipe": recipe,
            "task": recipe,
            "description": "a test entry",
            "metrics": {},
            "command": "test",
            "check": {"data": f"{data},num_images=1"},
        }
        (entry / "zoo.json").write_text(json.dumps(record))
    monkeypatch.setattr(structvision.zoo, "WEIGHTS_DIR", weights)
    settings = DemoSettings(
        num_samples=2,
        num_speed_images=2,
        num_coco_images=2,
        zoo_images=6,
        num_shown=2,
        num_sequences=2,
        train_steps=1,
        batch_size=2,
        val_images=1,
    )
    shown = (("raft_small_test", ("epe", "fl_all"), 6), ("sint_test", ("success_auc", "fps"), 2))
    for name, keys, count in shown:  # a tracking sample is a whole sequence: fewer of them
        entry = structvision.zoo.zoo_entries()[name]
        quiet = Console(file=None, quiet=True)
        section, summary = _zoo_stage(entry, tmp_path / "demo", settings, quiet)
        assert all(f"zoo/{name}/{key}" in summary for key in keys)
        assert (tmp_path / "demo" / "zoo" / f"{name}.png").is_file()
        assert f"{keys[0]} (these {count} samples)" in section.table
