"""KITTI, Middlebury and PFM readers and writers: round trips, hand-computed values, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.data.stereo import (
    KittiStereoDataset,
    MiddleburyDataset,
    StereoDataError,
    read_kitti_calibration,
    read_kitti_depth,
    read_kitti_disparity,
    read_middlebury_calibration,
    read_pfm,
    write_kitti_disparity,
    write_kitti_stereo,
    write_pfm,
)
from structvision.data.synthetic.world import WorldStereoDataset


def test_pfm_round_trip_and_byte_orders(tmp_path):
    grey = np.arange(12, dtype=np.float32).reshape(3, 4) - 2.5
    colour = np.random.default_rng(0).random((2, 5, 3)).astype(np.float32)
    assert np.array_equal(read_pfm(write_pfm(tmp_path / "g.pfm", grey)), grey)
    assert np.array_equal(read_pfm(write_pfm(tmp_path / "c.pfm", colour)), colour)
    # big-endian (positive scale), rows stored bottom-up
    (tmp_path / "b.pfm").write_bytes(b"Pf\n4 3\n1.0\n" + np.flipud(grey).astype(">f4").tobytes())
    assert np.array_equal(read_pfm(tmp_path / "b.pfm"), grey)
    (tmp_path / "bad.pfm").write_bytes(b"P6\n1 1\n255\n\0\0\0")
    with pytest.raises(StereoDataError, match=r"bad\.pfm: not a PFM"):
        read_pfm(tmp_path / "bad.pfm")
    (tmp_path / "short.pfm").write_bytes(b"Pf\n4 3\n-1.0\n" + b"\0" * 8)
    with pytest.raises(StereoDataError, match="the header says 4x3x1 = 12"):
        read_pfm(tmp_path / "short.pfm")


def test_kitti_png_encoding(tmp_path):
    disparity = torch.tensor([[0.0, 1.5], [12.25, 255.0]])
    valid = torch.tensor([[True, True], [False, True]])
    path = write_kitti_disparity(tmp_path / "d.png", disparity, valid)
    raw = np.asarray(Image.open(path))
    assert raw.dtype == np.uint16 and raw.tolist() == [[0, 384], [0, 65280]]
    read, read_valid = read_kitti_disparity(path)
    assert read.tolist() == [[0.0, 1.5], [0.0, 255.0]]
    assert read_valid.tolist() == [[False, True], [False, True]]
    depth, depth_valid = read_kitti_depth(path)  # the same encoding, in metres
    assert depth[0, 1] == 1.5 and depth_valid.sum() == 2
    with pytest.raises(StereoDataError, match=r"missing\.png does not exist"):
        read_kitti_disparity(tmp_path / "missing.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(StereoDataError, match="16-bit grey"):
        read_kitti_disparity(tmp_path / "rgb.png")


def test_kitti_calibration_of_the_real_rig(tmp_path):
    # KITTI raw 2011_09_26 calib_cam_to_cam.txt, the two rectified colour cameras
    path = tmp_path / "calib_cam_to_cam.txt"
    path.write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 "
        "7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 "
        "2.745884e-03\n"
        "P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 "
        "7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 "
        "2.729905e-03\n"
    )
    calibration = read_kitti_calibration(path)
    assert calibration["focal"] == pytest.approx(721.5377)
    assert calibration["baseline"] == pytest.approx((44.85728 + 339.5242) / 721.5377)  # 0.5327 m
    path.write_text("P_rect_02: 1 2 3\n")
    with pytest.raises(StereoDataError, match="line 1: P_rect_02 must hold 12 numbers"):
        read_kitti_calibration(path)


def test_world_stereo_written_as_kitti_reads_back(tmp_path):
    dataset = WorldStereoDataset(split="val", num_images=2, height=32, width=64)
    write_kitti_stereo(dataset, tmp_path / "kitti")
    read = build_dataset(str(tmp_path / "kitti"), split="val")
    assert isinstance(read, KittiStereoDataset) and len(read) == 2
    for index in range(2):
        image, target = dataset[index]
        image_read, target_read = read[index]
        assert (image_read - image).abs().max() <= 0.5 / 255 + 1e-6
        assert (target_read["image_right"] - target["image_right"]).abs().max() <= 0.5 / 255 + 1e-6
        assert (target_read["disparity"] - target["disparity"]).abs().max() <= 0.5 / 256 + 1e-6
        assert torch.equal(target_read["valid_noc"], target["valid"])
        assert target_read["focal"] == pytest.approx(float(target["focal"]))
        assert target_read["baseline"] == pytest.approx(float(target["baseline"]))
        assert torch.allclose(target_read["depth"], target["depth"], rtol=0.01)
    (tmp_path / "kitti" / "image_3" / "000001_10.png").unlink()
    with pytest.raises(
        StereoDataError, match=r"image_3 lacks the right images \['000001_10.png'\]"
    ):
        KittiStereoDataset(tmp_path / "kitti")


def test_data_synth_world_stereo_writes_the_kitti_layout(tmp_path):
    out = tmp_path / "stereo"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            "world-stereo:height=32,width=64",
            "--out",
            str(out),
            "--num-images",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    for folder in ("image_2", "image_3", "disp_occ_0", "disp_noc_0"):
        assert sorted(p.name for p in (out / folder).iterdir()) == [
            "000000_10.png",
            "000001_10.png",
        ]
    assert read_kitti_calibration(out / "calib_cam_to_cam" / "000001.txt")[
        "baseline"
    ] == pytest.approx(0.54)


def _middlebury_scene(folder, disparity):
    folder.mkdir(parents=True)
    for name in ("im0.png", "im1.png"):
        Image.fromarray(np.full((2, 3, 3), 100, np.uint8)).save(folder / name)
    write_pfm(folder / "disp0.pfm", disparity)
    (folder / "calib.txt").write_text(
        "cam0=[1000 0 1.5; 0 1000 1; 0 0 1]\ncam1=[1000 0 11.5; 0 1000 1; 0 0 1]\n"
        "doffs=10\nbaseline=200.0\nwidth=3\nheight=2\nndisp=64\n"
    )


def test_middlebury_scene_depth_is_baseline_focal_over_disparity_plus_doffs(tmp_path):
    disparity = np.array([[40.0, np.inf, 90.0], [0.0, 190.0, 15.0]], dtype=np.float32)
    _middlebury_scene(tmp_path / "mb" / "Adirondack", disparity)
    calibration = read_middlebury_calibration(tmp_path / "mb" / "Adirondack" / "calib.txt")
    assert calibration == {"focal": 1000.0, "cx": 1.5, "cy": 1.0, "doffs": 10.0, "baseline": 0.2}
    dataset = build_dataset(str(tmp_path / "mb"), split="val")
    assert isinstance(dataset, MiddleburyDataset) and len(dataset) == 1
    _, target = dataset[0]
    assert target["valid"].tolist() == [[True, False, True], [False, True, True]]
    assert target["depth"][0, 0] == pytest.approx(0.2 * 1000 / 50)  # 4 m
    assert target["depth"][1, 1] == pytest.approx(0.2 * 1000 / 200)  # 1 m
    assert target["depth"][0, 1] == 0
    (tmp_path / "mb" / "Adirondack" / "calib.txt").write_text("doffs=1\n")
    with pytest.raises(StereoDataError, match=r"calib\.txt: malformed"):
        dataset[0]


def test_data_synth_world_writes_coco_and_every_layer(tmp_path):
    from structvision.data.coco import CocoDataset, check_coco
    from structvision.data.synthetic.world import WorldDataset

    out = tmp_path / "world"
    result = CliRunner().invoke(
        app, ["data", "synth", "world:height=32,width=64", "--out", str(out), "--num-images", "2"]
    )
    assert result.exit_code == 0, result.output
    assert check_coco(out / "annotations.json") == []
    assert len(CocoDataset(out / "annotations.json")) == 2
    _, target = WorldDataset(split="train", num_images=2, height=32, width=64)[1]
    depth, valid = read_kitti_depth(out / "depth" / "000001.png")
    assert valid.all() and (depth - target["depth"]).abs().max() <= 0.5 / 256 + 1e-4
    normals = np.asarray(Image.open(out / "normals" / "000001.png")) / 255 * 2 - 1
    assert np.abs(normals.transpose(2, 0, 1) - target["normals"].numpy()).max() <= 1 / 255 + 1e-6
    for folder in ("albedo", "shading"):
        assert (out / folder / "000001.png").is_file()
    assert (out / "cameras.json").is_file()
