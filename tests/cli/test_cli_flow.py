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
