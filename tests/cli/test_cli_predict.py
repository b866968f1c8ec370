"""`structvision predict` and `structvision.load`: complete, loadable predictions.

Each test guards a defect of issue 22 that it reproduced on the code before the fix.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_toys import DATA
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

import structvision
from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.viz import save_png

runner = CliRunner()


@pytest.fixture
def trained(init_net_recipe, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "init_net", "--data", DATA, "--out", str(run)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "images"
    for index in range(3):
        image, _ = build_dataset(DATA, split="val")[index]
        save_png(image, folder / ("sub" if index == 2 else "") / f"im{index}.png")
    return run, folder


def _predict(run, *inputs, out, extra=()):
    return runner.invoke(app, ["predict", str(run), *map(str, inputs), "--out", str(out), *extra])


def test_predictions_load_in_pycocotools_as_written(trained, tmp_path):
    run, folder = trained
    out = tmp_path / "p"
    result = _predict(
        run, folder / "im0.png", folder / "im1.png", out=out, extra=["--score-threshold", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "2 images, 2 detections scoring >= 0" in result.output
    ground = COCO(str(out / "images.json"))
    loaded = ground.loadRes(str(out / "predictions.json"))
    assert sorted(loaded.getImgIds()) == [1, 2]
    assert len(loaded.getAnnIds()) == 2
    files = {image["id"]: image["file_name"] for image in ground.dataset["images"]}
    assert files == {1: str(folder / "im0.png"), 2: str(folder / "im1.png")}
    assert ground.dataset["images"][0]["width"] == 48


def test_overlays_follow_the_score_threshold(trained, tmp_path):
    run, folder = trained
    shown = _predict(
        run, folder / "im0.png", out=tmp_path / "low", extra=["--score-threshold", "0"]
    )
    hidden = _predict(
        run, folder / "im0.png", out=tmp_path / "high", extra=["--score-threshold", "1"]
    )
    assert shown.exit_code == 0 and hidden.exit_code == 0
    low = np.asarray(Image.open(tmp_path / "low" / "im0.png"))
    high = np.asarray(Image.open(tmp_path / "high" / "im0.png"))
    assert (low != high).any()  # the toy scores about 1/6: drawn at 0, not at 1
    assert json.loads((tmp_path / "high" / "predictions.json").read_text()) == []
    # (before the fix the drawing kept its own 0.5 cut-off, so both overlays were the same)


def test_folders_patterns_and_recursion(trained, tmp_path):
    run, folder = trained
    flat = _predict(run, folder, out=tmp_path / "a")
    assert flat.exit_code == 0, flat.output
    assert "2 images" in flat.output
    deep = _predict(run, folder, out=tmp_path / "b", extra=["--recursive"])
    assert "3 images" in deep.output
    pattern = _predict(run, f"{folder}/*.png", out=tmp_path / "c")
    assert "2 images" in pattern.output
    nothing = _predict(run, f"{folder}/*.jpg", out=tmp_path / "d")
    assert nothing.exit_code == 2 and "matches no file" in nothing.output


def test_a_bad_image_is_named_or_skipped(trained, tmp_path):
    run, folder = trained
    (folder / "bad.png").write_bytes(b"not an image")
    refused = _predict(run, folder, out=tmp_path / "p")
    assert refused.exit_code == 2 and "bad.png" in refused.output
    assert not (tmp_path / "p").exists()  # nothing written
    skipped = _predict(run, folder, out=tmp_path / "q", extra=["--skip-bad"])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped" in skipped.output and "bad.png" in skipped.output
    assert "2 images" in skipped.output and "1 skipped" in skipped.output


def test_load_gives_a_predictor_for_paths_tensors_and_arrays(trained, tmp_path):
    run, folder = trained
    predictor = structvision.load(run, score_threshold=0.0)
    path = folder / "im0.png"
    from_path = predictor(path)
    assert len(from_path) == 1 and from_path[0]["boxes"].shape == (1, 4)
    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    variants = [
        predictor(str(path))[0],
        predictor(image)[0],  # uint8
        predictor(image.float() / 255)[0],
        predictor(np.asarray(Image.open(path)))[0],
        predictor(Image.open(path))[0],
        predictor([path, path])[1],
    ]
    for prediction in variants:
        assert torch.allclose(prediction["boxes"], from_path[0]["boxes"], atol=1e-5)
    overlay = predictor.draw(path)
    assert overlay.dtype == torch.uint8 and overlay.shape[0] == 3
    _predict(run, path, out=tmp_path / "p", extra=["--score-threshold", "0"])
    written = torch.from_numpy(np.asarray(Image.open(tmp_path / "p" / "im0.png")).copy())
    assert torch.equal(overlay.permute(1, 2, 0), written)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.png"):
        predictor(tmp_path / "nowhere.png")
    strict = structvision.load(run, score_threshold=1.0)
    assert strict(path)[0]["boxes"].shape == (0, 4)


def test_a_video_gives_every_nth_frame_with_its_index(trained, tmp_path):
    import cv2

    run, _ = trained
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (48, 48))
    for index in range(7):
        writer.write(np.full((48, 48, 3), 30 * index, np.uint8))
    writer.release()
    out = tmp_path / "v"
    result = _predict(run, video, out=out, extra=["--every", "3", "--score-threshold", "0"])
    assert result.exit_code == 0, result.output
    assert "3 images" in result.output  # frames 0, 3 and 6
    names = [
        record["file_name"] for record in json.loads((out / "images.json").read_text())["images"]
    ]
    assert [name.rsplit("_", 1)[1] for name in names] == ["00000", "00003", "00006"]
    assert (out / "clip_00003.png").is_file()
    loaded = COCO(str(out / "images.json")).loadRes(str(out / "predictions.json"))
    assert sorted(loaded.getImgIds()) == [1, 2, 3]
    refused = _predict(run, video, out=tmp_path / "w", extra=["--every", "0"])
    assert refused.exit_code == 2


def _video(path, frames=7, size=48):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (size, size))
    for index in range(frames):
        writer.write(np.full((size, size, 3), 30 * index, np.uint8))
    writer.release()
    return path


def test_batches_give_the_same_predictions_and_frames_stream(trained, tmp_path, monkeypatch):
    import structvision.tasks.run as run_module

    run, folder = trained
    video = _video(tmp_path / "clip.avi")
    outputs = {}
    for batch in (1, 3):
        out = tmp_path / f"b{batch}"
        extra = ["--score-threshold", "0", "--batch-size", str(batch), "--recursive"]
        result = _predict(run, folder, video, out=out, extra=extra)
        assert result.exit_code == 0, result.output
        assert "10 images" in result.output  # 3 files and 7 frames
        outputs[batch] = json.loads((out / "predictions.json").read_text())
    assert len(outputs[1]) == len(outputs[3]) == 10
    for one, three in zip(outputs[1], outputs[3], strict=True):
        assert one["image_id"] == three["image_id"] and one["category_id"] == three["category_id"]
        assert one["bbox"] == pytest.approx(three["bbox"], abs=1e-3)
        assert one["score"] == pytest.approx(three["score"], abs=1e-5)
    # frames are decoded as their batch comes, never all at once
    decoded, calls = [], []
    real_frames = run_module.iter_video_frames

    def counting(path, *, every=1):
        for item in real_frames(path, every=every):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(run_module, "iter_video_frames", counting)
    real_call = structvision.tasks.predictor.Predictor.__call__

    def watching(self, images, batch_size=1):
        calls.append((len(images), len(decoded)))
        return real_call(self, images, batch_size=batch_size)

    monkeypatch.setattr(structvision.tasks.predictor.Predictor, "__call__", watching)
    result = _predict(run, video, out=tmp_path / "s", extra=["--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert [size for size, _ in calls] == [2, 2, 2, 1]
    assert [seen for _, seen in calls] == [2, 4, 6, 7]  # decoded up to the batch, no further
    refused = _predict(run, video, out=tmp_path / "z", extra=["--batch-size", "0"])
    assert refused.exit_code == 2


def test_a_broken_video_is_named_before_anything_is_written(trained, tmp_path):
    run, folder = trained
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 512)
    out = tmp_path / "out"
    result = _predict(run, folder / "im0.png", broken, out=out)
    assert result.exit_code != 0 and "broken.mp4" in result.output
    assert not out.exists()


def test_a_predictor_calls_its_model_batch_size_images_at_a_time(trained):
    run, folder = trained
    predictor = structvision.load(run, score_threshold=0.0)
    images = [folder / "im0.png", folder / "im1.png", folder / "sub" / "im2.png"]
    model, sizes = predictor.model, []

    def counting(pictures, *args):
        sizes.append(len(pictures))
        return model(pictures, *args)

    predictor.model = counting
    one_by_one = predictor(images)  # the default: each image alone, as before batching
    batched = predictor(images, batch_size=2)
    assert sizes == [1, 1, 1, 2, 1]
    for alone, together in zip(one_by_one, batched, strict=True):
        assert torch.allclose(alone["boxes"], together["boxes"], atol=1e-4)
    with pytest.raises(ValueError, match="batch_size"):
        predictor(images, batch_size=0)


def test_files_of_one_name_in_two_folders_keep_both_outputs(trained, tmp_path):
    import shutil

    run, folder = trained
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(folder / "im0.png", other / "im0.png")
    out = tmp_path / "p"
    result = _predict(run, folder / "im0.png", folder / "im1.png", other / "im0.png", out=out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.glob("*.png")} == {"im0_0.png", "im1.png", "im0_2.png"}
