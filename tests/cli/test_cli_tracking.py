"""Tracking from the command line: SINT and SiamFC train on world-track pairs, are evaluated
one-pass on generated sequences and on an OTB folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.evaluation.tracking import TrackingEvaluator
from structvision.tasks.tracking import tracker_for

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
    if recipe == "sint":  # the recipe's measured defaults: the head's loss trains the trunk too
        kwargs = json.loads((run / "config.json").read_text())["model"]["kwargs"]
        assert kwargs["regression_head"] is True and kwargs["regression_trains_trunk"] is True
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
    # tracker settings: scored as the Python tracker with them scores; SINT's pin the box
    pin = {
        "sint": {"refine_steps": 0, "search_radius": 0.0, "scales": (1.0,)},
        "siamfc": {"window_influence": 1.0, "scale_step": 1.0},
    }[recipe]
    sets = [part for key, value in pin.items() for part in ("--set", f"{key}={value}")]
    pinned = runner.invoke(
        app, ["eval", str(run), "--data", VAL, "--out", str(tmp_path / "p.json"), *sets]
    )
    assert pinned.exit_code == 0, pinned.output
    record = json.loads((tmp_path / "p.json").read_text())
    assert set(record["tracker_settings"]) == set(pin)
    frames, target = build_dataset(VAL, split="val", modality="tracking")[0]
    boxes, _ = tracker_for(run, **pin).track(frames, target["boxes"][0])
    expected = [boxes] + ([target["boxes"][:1].expand(len(frames), 4)] if recipe == "sint" else [])
    for predicted in expected:
        evaluator = TrackingEvaluator()
        evaluator.update([target], [{"boxes": predicted}])
        for key in ("success_auc", "precision", "ao"):
            assert record["metrics"][key] == pytest.approx(evaluator.compute()[key], abs=1e-6)
    wrong = runner.invoke(app, ["eval", str(run), "--data", VAL, "--set", "refine_step=2"])
    assert wrong.exit_code == 2 and "refine_step" in wrong.output, wrong.output


def test_track_a_video_with_opencv_and_a_trained_sint(tmp_path):
    import cv2
    import numpy as np

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    rng = np.random.default_rng(0)
    background = (rng.random((96, 128, 3)) * 80).astype(np.uint8)
    patch = (rng.random((20, 20, 3)) * 120 + 120).astype(np.uint8)
    for t in range(8):
        frame = background.copy()
        frame[30 + t : 50 + t, 20 + 3 * t : 40 + 3 * t] = patch
        writer.write(frame)
    writer.release()
    out = tmp_path / "csrt"
    # OTB's 1-based x,y,w,h of the patch in frame 1: column 21, row 31
    result = runner.invoke(
        app, ["track", "opencv:csrt", str(video), "--init", "21,31,20,20", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "tracked 8 frames" in result.output
    lines = (out / "boxes.txt").read_text().split()
    assert len(lines) == 8 and lines[0] == "21.00,31.00,20.00,20.00"
    x, y = (float(v) for v in lines[-1].split(",")[:2])
    assert abs(x - (21 + 21)) < 4 and abs(y - (31 + 7)) < 4  # moved 3 px and 1 px per frame
    assert len(list((out / "frames").iterdir())) == 8 and (out / "track.avi").is_file()
    bad = runner.invoke(
        app, ["track", "opencv:csrt", str(video), "--init", "1,2,3", "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code == 2 and "x,y,w,h" in bad.output
    run = tmp_path / "sint"
    trained = runner.invoke(
        app,
        [
            "train",
            "sint",
            "--data",
            DATA,
            "--val-data",
            VAL,
            "--out",
            str(run),
            *QUICK,
            "--set",
            "model.width=8",
        ],
    )
    assert trained.exit_code == 0, trained.output
    with_sint = runner.invoke(
        app,
        [
            "track",
            str(run),
            str(video),
            "--init",
            "21,31,20,20",
            "--out",
            str(tmp_path / "s"),
            "--no-video",
        ],
    )
    assert with_sint.exit_code == 0, with_sint.output
    assert len((tmp_path / "s" / "boxes.txt").read_text().split()) == 8
    # tracker settings: no refinement pass and no search radius pin the box to the first one
    track_sint = ["track", str(run), str(video), "--init", "21,31,20,20", "--no-video"]
    pinned = runner.invoke(
        app,
        [
            *(*track_sint, "--out", str(tmp_path / "p"), "--set", "refine_steps=0"),
            *("--set", "search_radius=0.0", "--set", "scales=(1.0,)"),
        ],
    )
    assert pinned.exit_code == 0, pinned.output
    assert set((tmp_path / "p" / "boxes.txt").read_text().split()) == {"21.00,31.00,20.00,20.00"}
    for setting, named in [("refine_step=2", "refine_step"), ("top_k=0", "top_k")]:
        wrong = runner.invoke(app, [*track_sint, "--out", str(tmp_path / "w"), "--set", setting])
        assert wrong.exit_code == 2 and named in wrong.output, wrong.output
    not_a_tracker = runner.invoke(
        app, ["eval", "zoo:fcn32s_shapes", "--data", "shapes:num_images=1", "--set", "top_k=2"]
    )
    assert not_a_tracker.exit_code == 2 and "not a tracker" in not_a_tracker.output
    opencv = ["track", "opencv:csrt", str(video), "--init", "21,31,20,20", "--no-video"]
    wrong = runner.invoke(app, [*opencv, "--out", str(tmp_path / "w"), "--set", "top_k=2"])
    assert wrong.exit_code == 2 and "takes no tracker settings" in wrong.output
    # predict --track does what track does; predict without it names the option
    predicted = runner.invoke(
        app,
        [
            *("predict", str(run), str(video), "--track", "--init", "21,31,20,20"),
            *("--out", str(tmp_path / "pt")),
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "pt" / "boxes.txt").read_text() == (tmp_path / "s" / "boxes.txt").read_text()
    untracked = runner.invoke(app, ["predict", str(run), str(video), "--out", str(tmp_path / "u")])
    assert untracked.exit_code == 2 and "--track --init" in untracked.output
    half = runner.invoke(app, ["predict", str(run), str(video), "--track", "--out", str(tmp_path)])
    assert half.exit_code == 2 and "give both" in half.output
