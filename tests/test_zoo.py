"""The model zoo: every shipped entry loads by name and still scores what it recorded."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import structvision.zoo
from structvision.cli import app
from structvision.tasks import run_eval
from structvision.zoo import zoo_entries, zoo_path

runner = CliRunner()


@pytest.mark.parametrize("name", sorted(zoo_entries()))
def test_every_zoo_entry_scores_its_recorded_check(name, tmp_path):
    entry = zoo_entries()[name]
    assert entry.check, f"zoo entry {name} has no check"
    metrics = run_eval(f"zoo:{name}", data=entry.check["data"], out=tmp_path / "m.json")
    for key, expected in entry.check["metrics"].items():
        assert metrics[key] == pytest.approx(expected, abs=entry.check["tolerance"]), key
    assert entry.size_bytes < 40e6


def test_the_whole_zoo_fits_in_40_mb():
    assert sum(entry.size_bytes for entry in zoo_entries().values()) < 40e6


def test_zoo_entries_ship_their_weights_config_and_record_only():
    for name in zoo_entries():
        files = sorted(p.name for p in zoo_path(name).iterdir())
        assert files == ["config.json", "model.safetensors", "zoo.json"], name


def test_zoo_names_resolve_and_list(tmp_path, monkeypatch):
    # a zoo of one entry made from a tiny run
    run = tmp_path / "run"
    data = "world-stereo:num_images=2,height=32,width=64"
    args = ["train", "monodepth", "--data", data, "--out", str(run), "--max-steps", "1"]
    sets = ["--set", "batch_size=1", "--set", "model.width=8", "--set", "progress=false"]
    assert runner.invoke(app, [*args, *sets]).exit_code == 0
    weights = tmp_path / "weights"
    entry = weights / "tiny_depth"
    shutil.copytree(run / "checkpoints" / "step_000001", entry)
    (entry / "trainer.pt").unlink()
    (entry / "zoo.json").write_text(
        json.dumps(
            {
                "recipe": "monodepth",
                "task": "monocular depth",
                "description": "a test entry",
                "metrics": {"abs_rel": 0.5},
                "command": "structvision train monodepth ...",
            }
        )
    )
    monkeypatch.setattr(structvision.zoo, "WEIGHTS_DIR", weights)
    assert zoo_path("zoo:tiny_depth") == entry
    listed = runner.invoke(app, ["zoo"], terminal_width=200)
    assert listed.exit_code == 0 and "zoo:tiny" in listed.output  # the table may wrap the name
    monkeypatch.chdir(tmp_path)
    evaluated = runner.invoke(app, ["eval", "zoo:tiny_depth", "--data", data])
    assert evaluated.exit_code == 0, evaluated.output
    assert list((tmp_path / "zoo-eval" / "tiny_depth" / "eval").glob("*.json"))
    assert not (entry / "eval").exists()  # nothing written into the zoo
    unknown = runner.invoke(app, ["eval", "zoo:nope", "--data", data])
    assert unknown.exit_code == 2 and "tiny_depth" in unknown.output
