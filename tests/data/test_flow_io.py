"""Flow files: round trips, torchvision's own readers, and named errors for broken files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.datasets._optical_flow import _read_16bits_png_with_flow_and_valid_mask, _read_flo

from structvision.data.flow_io import (
    FlowDataError,
    read_flo,
    read_flow,
    read_kitti_flow,
    write_flo,
    write_flow_pfm,
    write_kitti_flow,
)


def _flow(height=5, width=7, seed=0) -> torch.Tensor:
    return torch.randn(2, height, width, generator=torch.Generator().manual_seed(seed)) * 30


def test_flo_round_trip_and_torchvision_reads_ours(tmp_path):
    flow = _flow()
    path = write_flo(tmp_path / "a.flo", flow)
    assert path.read_bytes()[:4] == b"PIEH" and path.stat().st_size == 12 + 8 * 5 * 7
    assert torch.equal(read_flo(path), flow)
    assert np.array_equal(_read_flo(str(path)), flow.numpy())


def test_flo_layout_by_hand(tmp_path):
    # width 2, height 1: pixel (0, 0) moves (1, 2), pixel (1, 0) moves (3, 4)
    raw = np.array([202021.25], "<f4").tobytes() + np.array([2, 1], "<i4").tobytes()
    raw += np.array([1, 2, 3, 4], "<f4").tobytes()
    (tmp_path / "h.flo").write_bytes(raw)
    assert read_flo(tmp_path / "h.flo").tolist() == [[[1.0, 3.0]], [[2.0, 4.0]]]


def test_kitti_round_trip_to_a_64th_of_a_pixel_and_torchvision_reads_ours(tmp_path):
    flow = _flow(6, 9)
    valid = torch.rand(6, 9, generator=torch.Generator().manual_seed(1)) > 0.3
    path = write_kitti_flow(tmp_path / "000000_10.png", flow, valid)
    read, read_valid = read_kitti_flow(path)
    assert torch.equal(read_valid, valid)
    assert (read[:, valid] - flow[:, valid]).abs().max() <= 1 / 128 + 1e-6
    assert (read[:, ~valid] == 0).all()
    theirs, their_valid = _read_16bits_png_with_flow_and_valid_mask(str(path))
    assert np.array_equal(their_valid, valid.numpy())
    assert np.allclose(theirs[:, valid.numpy()], read[:, valid].numpy())


def test_kitti_encoding_by_hand(tmp_path):
    flow = torch.tensor([[[1.5]], [[-2.0]]])
    path = write_kitti_flow(tmp_path / "one.png", flow)
    import cv2

    b, g, r = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[0, 0].tolist()
    assert (r, g, b) == (2**15 + 96, 2**15 - 128, 1)


def test_kitti_refuses_flow_it_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="exceeds the KITTI PNG's range"):
        write_kitti_flow(tmp_path / "x.png", torch.full((2, 2, 2), 600.0))
    assert not (tmp_path / "x.png").exists()


def test_pfm_flow_and_unknown_flo_values(tmp_path):
    flow = _flow(4, 3)
    read, valid = read_flow(write_flow_pfm(tmp_path / "f.pfm", flow))
    assert torch.equal(read, flow) and valid.all()
    flow[0, 1, 2] = 1e10  # Middlebury's "unknown"
    read, valid = read_flow(write_flo(tmp_path / "u.flo", flow))
    assert not valid[1, 2] and valid.sum() == 11 and read[0, 1, 2] == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: b"XXXX" + raw[4:], "not a .flo file"),
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: raw + b"\0" * 8, "longer than its header says"),
        (lambda raw: raw[:7], "too short"),
    ],
)
def test_broken_flo_files_are_named(tmp_path, damage, message):
    raw = write_flo(tmp_path / "good.flo", _flow()).read_bytes()
    bad = tmp_path / "bad.flo"
    bad.write_bytes(damage(raw))
    with pytest.raises(FlowDataError, match=message) as caught:
        read_flo(bad)
    assert str(bad) in str(caught.value)


def test_broken_kitti_files_are_named(tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(grey)
    with pytest.raises(FlowDataError, match="16-bit with 3 channels") as caught:
        read_kitti_flow(grey)
    assert str(grey) in str(caught.value)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(FlowDataError, match="cannot decode"):
        read_kitti_flow(junk)
    with pytest.raises(FlowDataError, match="does not exist"):
        read_flow(tmp_path / "missing.flo")
    with pytest.raises(FlowDataError, match="unknown flow file type"):
        read_flow(tmp_path / "x.txt")
