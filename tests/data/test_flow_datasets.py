"""Flow data sets on disk: tiny Sintel, KITTI, FlyingChairs and Middlebury folders written here,
read back by our readers and, where torchvision has one, by torchvision's too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tv_datasets

from structvision.data.flow import (
    FlowDataError,
    FlyingChairsDataset,
    KittiFlowDataset,
    MiddleburyFlowDataset,
    SintelDataset,
    write_kitti_flow_folder,
)
from structvision.data.flow_io import write_flo, write_kitti_flow
from structvision.data.spec import build_dataset, parse_spec

H, W = 6, 8


def _image(path, seed, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def _flow(seed):
    return torch.randn(2, H, W, generator=torch.Generator().manual_seed(seed)) * 4


def _mask(path, mask):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(path)


def test_sintel_pairs_occlusions_and_torchvision_agree(tmp_path):
    root = tmp_path / "Sintel" / "training"
    frames = [_image(root / "clean" / "alley" / f"frame_{i:04d}.png", i) for i in (1, 2, 3)]
    flows = [write_flo(root / "flow" / "alley" / f"frame_{i:04d}.flo", _flow(i)) for i in (1, 2)]
    occluded = torch.zeros(H, W, dtype=torch.bool)
    occluded[2:4, 3:6] = True
    _mask(root / "occlusions" / "alley" / "frame_0001.png", occluded)
    dataset = build_dataset(str(tmp_path / "Sintel"), split="val", modality="flow")
    assert isinstance(dataset, SintelDataset) and len(dataset) == 2
    image, target = dataset[0]
    assert torch.equal(image, frames[0]) and torch.equal(target["image_2"], frames[1])
    assert torch.equal(target["flow"], _flow(1))
    assert torch.equal(target["valid"], ~occluded)
    assert "valid" not in dataset[1][1]  # no occlusion mask for frame 2
    theirs = tv_datasets.Sintel(str(tmp_path), split="train", pass_name="clean")
    for index in range(2):
        _, _, their_flow = theirs[index]
        assert np.array_equal(their_flow, dataset[index][1]["flow"].numpy())
    assert flows[0].is_file()


def test_kitti_flow_occ_noc_and_torchvision_agree(tmp_path):
    root = tmp_path / "KittiFlow" / "training"
    first = _image(root / "image_2" / "000000_10.png", 0)
    _image(root / "image_2" / "000000_11.png", 1)
    flow = _flow(0)
    known = torch.ones(H, W, dtype=torch.bool)
    known[0, :3] = False
    visible = known.clone()
    visible[4:, 5:] = False
    write_kitti_flow(root / "flow_occ" / "000000_10.png", flow, known)
    write_kitti_flow(root / "flow_noc" / "000000_10.png", flow, visible)
    assert parse_spec(str(root)).kind == "kitti_flow"
    dataset = build_dataset(str(root), split="val")
    assert isinstance(dataset, KittiFlowDataset)
    image, target = dataset[0]
    assert torch.equal(image, first)
    assert torch.equal(target["flow_valid"], known) and torch.equal(target["valid"], visible)
    assert (target["flow"][:, known] - flow[:, known]).abs().max() <= 1 / 128 + 1e-6
    _, _, their_flow, their_valid = tv_datasets.KittiFlow(str(tmp_path), split="train")[0]
    assert np.array_equal(their_valid, known.numpy())
    assert np.allclose(their_flow[:, known.numpy()], target["flow"][:, known].numpy())


def test_kitti_folder_with_stereo_too_reads_flow_when_asked(tmp_path):
    root = tmp_path / "training"
    _image(root / "image_2" / "000000_10.png", 0)
    _image(root / "image_2" / "000000_11.png", 1)
    _image(root / "image_3" / "000000_10.png", 2)
    write_kitti_flow(root / "flow_occ" / "000000_10.png", _flow(0))
    assert parse_spec(str(root)).kind == "kitti_stereo"
    assert isinstance(build_dataset(str(root), modality="flow"), KittiFlowDataset)


def test_flying_chairs_split_file_and_torchvision_agree(tmp_path):
    data = tmp_path / "FlyingChairs" / "data"
    for i in (1, 2, 3):
        _image(data / f"{i:05d}_img1.ppm", 10 * i, fmt="PPM")
        _image(data / f"{i:05d}_img2.ppm", 10 * i + 1, fmt="PPM")
        write_flo(data / f"{i:05d}_flow.flo", _flow(i))
    (tmp_path / "FlyingChairs" / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n")
    train = build_dataset(str(tmp_path / "FlyingChairs"), split="train", modality="flow")
    val = build_dataset(str(tmp_path / "FlyingChairs"), split="val", modality="flow")
    assert isinstance(train, FlyingChairsDataset) and (len(train), len(val)) == (2, 1)
    assert torch.equal(val[0][1]["flow"], _flow(2))
    theirs = tv_datasets.FlyingChairs(str(tmp_path), split="train")
    assert len(theirs) == 2
    for index in range(2):
        img1, _, their_flow = theirs[index]
        assert np.array_equal(their_flow, train[index][1]["flow"].numpy())
        assert np.array_equal(
            np.asarray(img1), (train[index][0] * 255).round().byte().permute(1, 2, 0).numpy()
        )


def test_middlebury_unknown_flow_is_not_valid(tmp_path):
    _image(tmp_path / "other-data" / "Urban2" / "frame10.png", 0)
    _image(tmp_path / "other-data" / "Urban2" / "frame11.png", 1)
    flow = _flow(5)
    flow[:, 1, 1] = 1e9
    write_flo(tmp_path / "other-gt-flow" / "Urban2" / "flow10.flo", flow)
    dataset = build_dataset(str(tmp_path), split="val")
    assert isinstance(dataset, MiddleburyFlowDataset)
    target = dataset[0][1]
    assert not target["flow_valid"][1, 1] and target["flow_valid"].sum() == H * W - 1
    assert target["flow"][0, 1, 1] == 0


def test_broken_folders_are_named(tmp_path):
    root = tmp_path / "k"
    _image(root / "image_2" / "000000_10.png", 0)
    (root / "flow_occ").mkdir()
    with pytest.raises(FlowDataError, match=r"not its next frame 000000_11\.png"):
        KittiFlowDataset(root)
    _image(root / "image_2" / "000000_11.png", 1)
    write_kitti_flow(root / "flow_occ" / "000000_10.png", torch.zeros(2, H + 1, W))
    with pytest.raises(FlowDataError, match=r"flow_occ/000000_10.png: size \(7, 8\) differs"):
        KittiFlowDataset(root)[0]
    chairs = tmp_path / "chairs"
    write_flo(chairs / "00001_flow.flo", _flow(0))
    (chairs / "FlyingChairs_train_val.txt").write_text("1\n1\n")
    with pytest.raises(FlowDataError, match="2 labels for 1 samples"):
        FlyingChairsDataset(chairs)
    with pytest.raises(ValueError, match="not an optical-flow folder"):
        build_dataset(str(tmp_path / "k" / "image_2"), modality="flow")


def test_world_flow_written_in_the_kitti_layout_reads_back(tmp_path):
    world = build_dataset("world-flow:num_images=2,image_size=(32,64)", split="val")
    out = write_kitti_flow_folder(world, tmp_path / "kitti")
    assert sorted(p.name for p in (out / "image_2").iterdir()) == [
        "000000_10.png",
        "000000_11.png",
        "000001_10.png",
        "000001_11.png",
    ]
    read = KittiFlowDataset(out)
    for index in range(2):
        image, target = world[index]
        back_image, back = read[index]
        assert (back_image - image).abs().max() <= 0.5 / 255 + 1e-6
        assert (back["flow"] - target["flow"]).abs().max() <= 1 / 128 + 1e-6
        assert back["flow_valid"].all() and torch.equal(back["valid"], target["valid"])
        from structvision.data.flow_io import read_flo

        assert torch.allclose(read_flo(out / "flo" / f"{index:06d}_10.flo"), target["flow"])
