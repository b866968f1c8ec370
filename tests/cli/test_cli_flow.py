"""Optical flow from the command line."""

from __future__ import annotations

from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.flow import KittiFlowDataset
from structvision.data.spec import build_dataset

runner = CliRunner()


def test_data_synth_world_flow_writes_the_kitti_flow_layout(tmp_path):
    out = tmp_path / "kitti"
    result = runner.invoke(
        app,
        ["data", "synth", "world-flow:height=32,width=64", "--out", str(out), "--num-images", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "KITTI flow 2015 layout" in result.output
    for folder, count in (("image_2", 4), ("flow_occ", 2), ("flow_noc", 2), ("flo", 2)):
        assert len(list((out / folder).iterdir())) == count
    dataset = build_dataset(str(out), split="val")
    assert isinstance(dataset, KittiFlowDataset) and len(dataset) == 2
    image, target = dataset[1]
    assert image.shape == (3, 32, 64) and target["flow"].shape == (2, 32, 64)


DATA = "world-flow:height=128,width=128,num_images=4"
VAL = "world-flow:height=128,width=128,num_images=2"
QUICK = ["--max-steps", "2", "--set", "batch_size=2", "--set", "progress=false"]


def _frames_on_disk(folder):
    from structvision.viz import save_png

    image, target = build_dataset(VAL, split="val")[0]
    first = save_png((image * 255).round().byte(), folder / "f0.png")
    second = save_png((target["image_2"] * 255).round().byte(), folder / "f1.png")
    return first, second


def test_raft_small_trains_evaluates_and_predicts_pairs_and_videos(tmp_path):
    import json

    import cv2
    import numpy as np
    import torch

    import structvision
    from structvision.data.flow_io import read_flo

    run = tmp_path / "run"
    settings = ["--set", "model.train_updates=2", "--set", "model.num_updates=2"]
    trained = runner.invoke(
        app,
        [
            "train",
            "raft_small",
            "--data",
            DATA,
            "--val-data",
            VAL,
            "--out",
            str(run),
            *QUICK,
            *settings,
        ],
    )
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"epe", "epe_noc", "epe_occ", "px1", "fl_all"} <= set(metrics)
    assert (run / "predictions" / "val_0000.png").is_file()
    evaluated = runner.invoke(app, ["eval", str(run), "--data", VAL])
    assert evaluated.exit_code == 0 and "epe_noc" in evaluated.output
    kitti = tmp_path / "kitti"
    synth = ["data", "synth", "world-flow:height=128,width=128", "--out", str(kitti)]
    assert runner.invoke(app, [*synth, "--num-images", "2", "--split", "val"]).exit_code == 0
    on_disk = runner.invoke(
        app, ["eval", str(run), "--data", str(kitti), "--out", str(tmp_path / "k.json")]
    )
    assert on_disk.exit_code == 0, on_disk.output
    scored = json.loads((tmp_path / "k.json").read_text())["metrics"]
    assert abs(scored["epe"] - json.loads((run / "metrics.json").read_text())["epe"]) < 0.05

    first, second = _frames_on_disk(tmp_path)
    out = tmp_path / "pred"
    predicted = runner.invoke(
        app, ["predict", str(run), str(first), str(second), "--out", str(out)]
    )
    assert predicted.exit_code == 0, predicted.output
    assert "1 frame pairs" in predicted.output
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 1 and records[0]["next_file_name"] == str(second)
    flow = read_flo(out / records[0]["flo"])
    assert flow.shape == (2, 128, 128) and (out / "f0_flow.png").is_file()
    in_python = structvision.load(run)([str(first), str(second)])
    assert torch.allclose(in_python[0]["flow"], flow, atol=1e-4)

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 128))
    for index in range(3):
        frame = np.full((128, 128, 3), 40 * index, np.uint8)
        frame[32 + 4 * index : 64 + 4 * index, 40:80] = 255
        writer.write(frame)
    writer.release()
    from_video = runner.invoke(app, ["predict", str(run), str(video), "--out", str(tmp_path / "v")])
    assert from_video.exit_code == 0, from_video.output
    assert "2 frame pairs" in from_video.output
    assert (tmp_path / "v" / "clip_00000.flo").is_file() and (
        tmp_path / "v" / "clip_00001.flo"
    ).is_file()


def test_flownet_s_trains_and_one_frame_is_refused(tmp_path):
    run = tmp_path / "run"
    trained = runner.invoke(
        app,
        [
            "train",
            "flownet_s",
            "--data",
            DATA,
            "--val-data",
            VAL,
            "--out",
            str(run),
            "--set",
            "model.width=8",
            *QUICK,
        ],
    )
    assert trained.exit_code == 0, trained.output
    first, _ = _frames_on_disk(tmp_path)
    refused = runner.invoke(app, ["predict", str(run), str(first), "--out", str(tmp_path / "p")])
    assert refused.exit_code == 2 and "at least two frames" in refused.output
    wrong = runner.invoke(
        app, ["train", "flownet_s", "--data", "shapes:num_images=4", "--out", str(tmp_path / "w")]
    )
    assert wrong.exit_code == 2 and "frame pairs with true flow" in " ".join(wrong.output.split())


def test_bf16_training_evaluates_on_data_rendered_in_full_precision(tmp_path):
    # the evaluation used to render world-flow pairs inside the model's autocast and crash
    settings = ["--set", "model.train_updates=2", "--set", "model.num_updates=2"]
    trained = runner.invoke(
        app,
        [
            "train",
            "raft_small",
            "--data",
            DATA,
            "--val-data",
            VAL,
            "--out",
            str(tmp_path / "r"),
            *QUICK,
            *settings,
            "--set",
            "precision=bf16-mixed",
        ],
    )
    assert trained.exit_code == 0, trained.output
