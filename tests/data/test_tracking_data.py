"""Tracking sequences on disk: OTB (separators, two targets, frame windows), GOT-10k, LaSOT,
the OTB writer, a video with a first box; broken files are named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from structvision.data.tracking import (
    GOT10kDataset,
    LaSOTDataset,
    OTBDataset,
    TrackingDataError,
    video_sequence,
    write_otb_sequence,
)


def _frames(folder, numbers, digits=4):
    folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        Image.fromarray(np.full((12, 16, 3), number % 255, np.uint8)).save(
            folder / f"{number:0{digits}d}.jpg"
        )


def test_otb_separators_two_targets_and_windows(tmp_path):
    _frames(tmp_path / "Walk" / "img", [1, 2, 3])
    (tmp_path / "Walk" / "groundtruth_rect.txt").write_text("1,2,3,4\n2\t3\t3\t4\n3 4 3 4\n")
    _frames(tmp_path / "Jogging" / "img", [1, 2])
    (tmp_path / "Jogging" / "groundtruth_rect.1.txt").write_text("1,1,2,2\n1,1,2,2\n")
    (tmp_path / "Jogging" / "groundtruth_rect.2.txt").write_text("5,5,2,2\n6,5,2,2\n")
    (tmp_path / "Jogging" / "groundtruth_rect1.txt").write_text("")  # Human4's empty file
    _frames(tmp_path / "David" / "img", [298, 299, 300, 301])
    (tmp_path / "David" / "groundtruth_rect.txt").write_text("1,1,4,4\n2,1,4,4\n")
    dataset = OTBDataset(tmp_path)
    assert dataset.names == ["David", "Jogging.1", "Jogging.2", "Walk"]
    frames, target = dataset[dataset.names.index("Walk")]
    assert len(frames) == 3 and frames[0].shape == (3, 12, 16)
    assert target["boxes"].tolist() == [[0, 1, 3, 5], [1, 2, 4, 6], [2, 3, 5, 7]]  # 1-based in
    assert target["visible"].all()
    david_frames, david = dataset[0]
    assert [p.name for p in david_frames.paths] == ["0300.jpg", "0301.jpg"]
    assert david["boxes"][1].tolist() == [1, 0, 5, 4]


def test_otb_writer_round_trip_with_hidden_frames(tmp_path):
    ramp = torch.linspace(0, 1, 30).expand(3, 20, 30)
    frames = [ramp * (0.5 + 0.2 * t) for t in range(3)]  # smooth: JPEG keeps it
    boxes = torch.tensor([[2.5, 3.0, 12.0, 9.5], [3.0, 3.0, 13.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    visible = torch.tensor([True, True, False])
    write_otb_sequence(tmp_path / "seq", frames, boxes, attributes=("OCC", "SV"), visible=visible)
    read_frames, target = OTBDataset(tmp_path)[0]
    assert target["attributes"] == ("OCC", "SV") and target["visible"].tolist() == [
        True,
        True,
        False,
    ]
    assert torch.allclose(target["boxes"][:2], boxes[:2].double(), atol=0.01)
    assert all(math.isnan(v) for v in target["boxes"][2].tolist())
    assert (read_frames[2] - frames[2]).abs().max() < 0.05


def test_got10k_absence_cover_and_the_test_split(tmp_path):
    seq = tmp_path / "GOT-10k_Val_000001"
    _frames(seq, [1, 2, 3], digits=8)
    (seq / "groundtruth.txt").write_text("0,0,4,4\n1,1,4,4\n2,2,4,4\n")
    (seq / "absence.label").write_text("0\n0\n1\n")
    (seq / "cover.label").write_text("8\n0\n5\n")
    test = tmp_path / "GOT-10k_Test_000001"
    _frames(test, [1, 2, 3], digits=8)
    (test / "groundtruth.txt").write_text("3,3,5,5\n")
    dataset = GOT10kDataset(tmp_path)
    _, target = dataset[dataset.names.index("GOT-10k_Val_000001")]
    assert target["visible"].tolist() == [True, False, False]
    assert target["boxes"][1].tolist() == [1, 1, 5, 5]  # 0-based as stored
    _, first_only = dataset[dataset.names.index("GOT-10k_Test_000001")]
    assert first_only["visible"].tolist() == [True, False, False]


def test_lasot_occlusion_and_out_of_view(tmp_path):
    seq = tmp_path / "airplane" / "airplane-1"
    _frames(seq / "img", [1, 2, 3], digits=8)
    (seq / "groundtruth.txt").write_text("1,1,4,4\n2,2,4,4\n3,3,4,4\n")
    (seq / "full_occlusion.txt").write_text("0,1,0")
    (seq / "out_of_view.txt").write_text("0,0,1")
    _, target = LaSOTDataset(tmp_path)[0]
    assert target["name"] == "airplane-1" and target["visible"].tolist() == [True, False, False]


def test_broken_sequences_are_named(tmp_path):
    _frames(tmp_path / "A" / "img", [1, 2])
    (tmp_path / "A" / "groundtruth_rect.txt").write_text("1,1,2,2\n")
    with pytest.raises(TrackingDataError, match=r"1 boxes for the 2 frames"):
        OTBDataset(tmp_path)
    (tmp_path / "A" / "groundtruth_rect.txt").write_text("1,1,2,2\n1,x,2,2\n")
    with pytest.raises(TrackingDataError, match=r"groundtruth_rect.txt, line 2: not numbers"):
        OTBDataset(tmp_path)
    with pytest.raises(TrackingDataError, match="holds no GOT-10k sequence"):
        GOT10kDataset(tmp_path)


def test_video_with_a_first_box(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for index in range(4):
        writer.write(np.full((24, 32, 3), 30 * index, np.uint8))
    writer.release()
    frames, target = video_sequence(path, [2, 3, 10, 12])
    assert len(frames) == 4 and frames[0].shape == (3, 24, 32)
    assert target["boxes"][0].tolist() == [2, 3, 10, 12] and target["visible"].sum() == 1
    with pytest.raises(TrackingDataError, match="x2 > x1"):
        video_sequence(path, [5, 5, 1, 9])
