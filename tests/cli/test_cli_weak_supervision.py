"""Scribble-supervised FCN with the dense-CRF loss, through the recipe and the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from structvision.cli import app
from structvision.tasks import get_recipe
from structvision.tasks.run import load_trained_model

runner = CliRunner()
DATA = "shapes:image_size=64,num_images=4,max_objects=3,scribbles=true"


def test_recipe_trains_on_scribbles_and_validates_on_full_labels():
    recipe = get_recipe("fcn8s")
    for val_data in (None, "shapes:num_images=3,scribbles=true"):
        task = recipe.setup(data=DATA, val_data=val_data, model_overrides={})
        assert task.train_dataset.config.scribbles
        assert not task.val_dataset.config.scribbles
        _, target = task.val_dataset[0]
        assert "semantic_full" not in target and not (target["semantic"] == 255).any()
    _, train_target = task.train_dataset[0]
    assert (train_target["semantic"] == 255).float().mean() > 0.8


def test_crf_loss_option_trains_from_the_cli_and_round_trips_through_the_checkpoint(tmp_path):
    run = tmp_path / "weak"
    result = runner.invoke(
        app,
        [
            "train",
            "fcn8s",
            "--data",
            DATA,
            "--val-data",
            "shapes:image_size=64,num_images=2",
            "--out",
            str(run),
            "--max-steps",
            "2",
            "--set",
            "batch_size=2",
            "--set",
            "log_every=1",
            "--set",
            "progress=false",
            "--set",
            "model.width=8",
            "--set",
            "model.crf_loss_weight=0.005",
            "--set",
            "model.crf_sxy=30",
        ],
    )
    assert result.exit_code == 0, result.output
    kwargs = json.loads((run / "config.json").read_text())["model"]["kwargs"]
    assert kwargs["crf_loss_weight"] == 0.005 and kwargs["crf_sxy"] == 30
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in logged if record["kind"] == "train"]
    assert len(steps) == 2 and all(r["loss_crf"] > 0 and r["loss_semantic"] > 0 for r in steps)
    assert {"miou", "boundary_f"} <= set(json.loads((run / "metrics.json").read_text()))
    _, model, _ = load_trained_model(run)
    assert (model.crf_loss_weight, model.crf_sxy, model.crf_srgb) == (0.005, 30.0, 15.0)

    bad = runner.invoke(
        app,
        [
            "train",
            "fcn8s",
            "--data",
            DATA,
            "--out",
            str(tmp_path / "bad"),
            "--set",
            "model.crf_loss_weight=-1",
        ],
    )
    assert bad.exit_code == 2 and "crf_loss_weight" in bad.output
