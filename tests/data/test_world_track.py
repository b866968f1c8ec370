"""world-track: a target in view, look-alike distractors, exact boxes, attributes, OTB output."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.data.synthetic.world.tracking import OTB_ATTRIBUTES, attribute_names
from structvision.data.tracking import OTBDataset
from structvision.evaluation import tracking as tracking_metrics

SPEC = "world-track:num_images=2,height=48,width=96,num_frames=6"


def test_sequences_have_a_target_with_look_alikes_and_attributes():
    dataset = build_dataset(SPEC, split="val")
    frames, target = dataset[0]
    assert frames.shape == (6, 3, 48, 96)
    assert target["boxes"].shape == (6, 4) and target["visible"][0]
    first = target["boxes"][0]
    assert (first[2:] > first[:2]).all() and first[2] <= 96 and first[3] <= 48
    assert target["attributes"].dtype == torch.bool and target["attributes"].shape == (11,)
    assert not target["attributes"][OTB_ATTRIBUTES.index("DEF")]  # rigid objects
    again = build_dataset(SPEC, split="val")[0]
    assert torch.equal(again[0], frames) and torch.equal(again[1]["boxes"], target["boxes"])
    scene, _, chosen = dataset._pick_scene(0)
    same = [
        k for k in range(scene.num_objects) if k != chosen and scene.kinds[k] == scene.kinds[chosen]
    ]
    assert same, "the target has look-alikes"
    surface = 5 + chosen
    assert all(torch.equal(scene.colors_a[5 + k], scene.colors_a[surface]) for k in same)
    plain = build_dataset(SPEC + ",distractors=0", split="val")
    plain_scene, _, plain_target = plain._pick_scene(0)
    assert plain_target == chosen  # the choice does not depend on the look-alikes
    assert not torch.equal(plain_scene.colors_a, scene.colors_a)


def test_world_track_written_in_the_otb_layout_and_evaluated(tmp_path):
    out = tmp_path / "otb"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            "world-track:height=48,width=96,num_frames=6",
            "--out",
            str(out),
            "--num-images",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "OTB layout" in result.output
    sequences = OTBDataset(out)
    assert len(sequences) == 2
    generated = build_dataset(
        "world-track:height=48,width=96,num_frames=6,num_images=2", split="train"
    )
    frames, target = sequences[0]
    _, truth = generated[0]
    assert len(frames) == 6
    shown = truth["visible"]
    assert torch.allclose(target["boxes"][shown], truth["boxes"][shown].double(), atol=0.01)
    assert target["attributes"] == attribute_names(truth["attributes"])
    evaluator = tracking_metrics.TrackingEvaluator()
    evaluator.update([truth], [{"boxes": truth["boxes"]}])
    assert evaluator.compute()["success_auc"] > 0.9


def test_render_frames_equals_the_sequence_rows():
    dataset = build_dataset(SPEC, split="val")
    frames, target = dataset[1]
    some, boxes, visible = dataset.render_frames(1, [0, 4])
    assert torch.equal(some, frames[[0, 4]])
    assert torch.equal(boxes.nan_to_num(-1), target["boxes"][[0, 4]].nan_to_num(-1))
    assert torch.equal(visible, target["visible"][[0, 4]])
