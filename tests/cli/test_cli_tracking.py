"""Tracking from the command line: SINT and SiamFC train on world-track pairs, are evaluated
one-pass on generated sequences and on an OTB folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from structvision.cli import app

runner = CliRunner()

DATA = "world-track:height=64,width=96,num_frames=6,num_images=8"
VAL = "world-track:height=64,width=96,num_frames=6,num_images=1"
QUICK = ["--max-steps", "2", "--set", "batch_size=2", "--set", "progress=false"]


@pytest.mark.parametrize(
    ("recipe", "options"),
    [("sint", ["--set", "model.width=8"]), ("siamfc", ["--set", "model.width=0.1"])],
)
def test_trackers_train_and_are_evaluated_on_sequences_and_otb_folders(tmp_path, recipe, options):
    run = tmp_path / "run"
    trained = runner.invoke(
        app,
        ["train", recipe, "--data", DATA, "--val-data", VAL, "--out", str(run), *QUICK, *options],
    )
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"success_auc", "precision", "norm_precision", "ao", "fps"} <= set(metrics)
    assert 0 <= metrics["success_auc"] <= 1
    assert (run / "predictions" / "val_0000.png").is_file()
    otb = tmp_path / "otb"
    synth = ["data", "synth", "world-track:height=64,width=96,num_frames=6", "--out", str(otb)]
    assert runner.invoke(app, [*synth, "--num-images", "1", "--split", "val"]).exit_code == 0
    on_disk = runner.invoke(
        app, ["eval", str(run), "--data", str(otb), "--out", str(tmp_path / "e.json")]
    )
    assert on_disk.exit_code == 0, on_disk.output
    scored = json.loads((tmp_path / "e.json").read_text())["metrics"]
    # the same sequence, written as JPEG frames: close to the generated one's score
    assert abs(scored["success_auc"] - metrics["success_auc"]) < 0.2
