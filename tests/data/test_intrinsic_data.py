"""Normal-map PNGs, MIT intrinsic folders and IIW judgements, on tiny files written here."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from structvision.data.intrinsic import (
    IIWDataset,
    IntrinsicDataError,
    MITIntrinsicDataset,
    read_normal_png,
    write_normal_png,
)
from structvision.evaluation.intrinsic import whdr


def test_normal_png_round_trip_to_8_bits_and_invalid_pixels(tmp_path):
    normals = torch.nn.functional.normalize(
        torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(0)), dim=0
    )
    valid = torch.ones(5, 6, dtype=torch.bool)
    valid[0, 0] = False
    read, read_valid = read_normal_png(write_normal_png(tmp_path / "n.png", normals, valid))
    assert torch.equal(read_valid, valid)
    angle = torch.rad2deg(torch.acos((read * normals).sum(0)[valid].clamp(-1, 1)))
    assert angle.max() < 1.0  # 8-bit quantisation
    raw = cv2.imread(str(tmp_path / "n.png"))
    assert raw[0, 0].tolist() == [0, 0, 0]
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(IntrinsicDataError, match="cannot decode"):
        read_normal_png(tmp_path / "bad.png")


def test_mit_intrinsic_folder_16_bit(tmp_path):
    folder = tmp_path / "apple"
    folder.mkdir()
    albedo = np.full((4, 6, 3), 30000, np.uint16)
    shading = np.full((4, 6), 20000, np.uint16)
    image = (albedo.astype(np.float64) * (shading[..., None] / 65535)).astype(np.uint16)
    for name, array in (("original", image), ("reflectance", albedo), ("shading", shading)):
        cv2.imwrite(str(folder / f"{name}.png"), array)
    cv2.imwrite(str(folder / "mask.png"), np.full((4, 6), 255, np.uint8))
    sample, target = MITIntrinsicDataset(tmp_path)[0]
    assert sample.shape == (3, 4, 6) and target["shading"].shape == (1, 4, 6)
    assert torch.allclose(sample, target["albedo"] * target["shading"], atol=1e-4)
    assert target["mask"].all()


def test_iiw_judgements_in_pixels_skip_non_opaque_points(tmp_path):
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :10] = 50
    image[:, 10:] = 200
    cv2.imwrite(str(tmp_path / "12.png"), image)
    record = {
        "intrinsic_points": [
            {"id": 1, "x": 0.1, "y": 0.5, "opaque": True},
            {"id": 2, "x": 0.9, "y": 0.5, "opaque": True},
            {"id": 3, "x": 0.5, "y": 0.5, "opaque": False},
        ],
        "intrinsic_comparisons": [
            {"point1": 1, "point2": 2, "darker": "1", "darker_score": 0.9},
            {"point1": 2, "point2": 1, "darker": "1", "darker_score": 0.5},
            {"point1": 1, "point2": 3, "darker": "E", "darker_score": 1.0},
        ],
    }
    (tmp_path / "12.json").write_text(json.dumps(record))
    picture, target = IIWDataset(tmp_path)[0]
    judgements = target["judgements"]
    assert len(judgements) == 2 and judgements[0]["x1"] == 2 and judgements[0]["x2"] == 18
    # "albedo = image": agrees with the first judgement, not the second
    assert whdr(picture, judgements) == pytest.approx(0.5 / 1.4)
