"""The ``monodepth`` recipe from the command line: train, evaluate, predict depth outputs."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.viz import save_png

runner = CliRunner()
DATA = "world-stereo:num_images=4,height=64,width=128"


def test_monodepth_trains_evaluates_and_predicts_depth(tmp_path):
    run = tmp_path / "run"
    args = ["train", "monodepth", "--data", DATA, "--out", str(run), "--max-steps", "2"]
    sets = ["--set", "batch_size=2", "--set", "model.width=8", "--set", "progress=false"]
    result = runner.invoke(app, [*args, *sets])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    report_image = Image.open(sorted((run / "predictions").glob("*.png"))[0])
    assert report_image.size == (128, 3 * 64)  # image, predicted and true disparity
    assert {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"} <= set(metrics)
    evaluated = runner.invoke(app, ["eval", str(run), "--data", DATA])
    assert evaluated.exit_code == 0, evaluated.output
    # the same pairs written in the KITTI stereo layout evaluate alike (8-bit images, 16-bit
    # disparities: close, not equal)
    kitti = tmp_path / "kitti"
    synth = ["data", "synth", "world-stereo:height=64,width=128", "--out", str(kitti)]
    assert runner.invoke(app, [*synth, "--num-images", "2", "--split", "val"]).exit_code == 0
    on_kitti = runner.invoke(
        app, ["eval", str(run), "--data", str(kitti), "--out", str(tmp_path / "k.json")]
    )
    assert on_kitti.exit_code == 0, on_kitti.output
    direct = runner.invoke(
        app,
        [
            "eval",
            str(run),
            "--data",
            f"{DATA.replace('4', '2')}",
            "--out",
            str(tmp_path / "w.json"),
        ],
    )
    kitti_metrics = json.loads((tmp_path / "k.json").read_text())["metrics"]
    world_metrics = json.loads((tmp_path / "w.json").read_text())["metrics"]
    assert direct.exit_code == 0
    assert abs(kitti_metrics["abs_rel"] - world_metrics["abs_rel"]) < 0.05
    image, target = build_dataset(DATA, split="val")[0]
    save_png(image, tmp_path / "x.png")
    out = tmp_path / "p"
    predicted = runner.invoke(
        app, ["predict", str(run), str(tmp_path / "x.png"), "--out", str(out)]
    )
    assert predicted.exit_code == 0, predicted.output
    depth = np.load(out / "x_depth.npy")
    assert depth.shape == (64, 128) and (depth > 0).all()
    png = np.asarray(Image.open(out / "x_depth.png"))
    assert png.dtype == np.uint16
    assert np.allclose(png / 256.0, np.minimum(depth, 255.99), atol=1 / 256)  # KITTI's encoding
    assert Image.open(out / "x_disparity.png").size == (128, 64)
    overlay = Image.open(out / "x.png")
    assert overlay.size == (128, 128)  # the image above its colour-mapped disparity
    refused = runner.invoke(
        app, ["train", "monodepth", "--data", "shapes:num_images=2", "--out", str(tmp_path / "r")]
    )
    assert refused.exit_code == 2 and "image_right" in refused.output
    assert torch.is_tensor(target["disparity"])
