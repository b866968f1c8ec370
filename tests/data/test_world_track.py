"""world-track: a target in view, look-alike distractors, exact boxes, attributes, OTB output."""

from __future__ import annotations

import math

import torch
from typer.testing import CliRunner

from structvision.cli import app
from structvision.data.spec import build_dataset
from structvision.data.synthetic.world.raycast import project
from structvision.data.synthetic.world.scene import camera_at
from structvision.data.synthetic.world.tracking import (
    OTB_ATTRIBUTES,
    _look_alike_near,
    attribute_names,
)
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
    counts = [len(dataset._pick_scene(i).look_alikes) for i in range(len(dataset))]
    assert all(0 <= c <= 2 for c in counts)


def test_look_alikes_copy_the_target_and_leave_its_choice_alone():
    dataset = build_dataset("world-track:num_images=8,height=48,width=96,num_frames=6", split="val")
    sequences = [dataset._pick_scene(i) for i in range(len(dataset))]
    assert len({len(s.look_alikes) for s in sequences}) > 1, "the number of look-alikes varies"
    index = next(i for i, s in enumerate(sequences) if s.look_alikes)
    sequence = sequences[index]
    scene, chosen = sequence.scene, sequence.target
    surface = 5 + chosen
    for k in sequence.look_alikes:
        assert k != chosen and scene.kinds[k] == scene.kinds[chosen]
        assert torch.equal(scene.colors_a[5 + k], scene.colors_a[surface])
    plain = build_dataset(
        "world-track:num_images=8,height=48,width=96,num_frames=6,distractors=0", split="val"
    )
    plain_sequence = plain._pick_scene(index)
    assert plain_sequence.target == chosen  # the choice does not depend on the look-alikes
    assert plain_sequence.look_alikes == ()
    assert not torch.equal(plain_sequence.scene.colors_a, scene.colors_a)


def test_the_camera_rolls_about_its_optical_axis_and_shakes_per_frame():
    spec = "world-track:num_images=6,height=48,width=96,num_frames=6,roll=5,shake=3"
    dataset = build_dataset(spec, split="val")
    sequence = next(s for s in map(dataset._pick_scene, range(6)) if s.shake is None)
    smooth = camera_at(dataset.camera, sequence.motion, 3.0)
    rolled = dataset._camera(sequence, 3.0, 3)
    assert abs(sequence.roll_rate) <= math.radians(5)
    point = smooth.center + smooth.rotation @ torch.tensor([0.4, -0.3, 3.0])
    (u, v), _ = project(smooth, point)
    (u_r, v_r), _ = project(rolled, point)
    angle = sequence.roll_rate * 3
    du, dv = float(u - smooth.cx), float(v - smooth.cy)
    # the image turns about the principal point by the roll (in the opposite sense)
    expected = (
        math.cos(angle) * du + math.sin(angle) * dv,
        -math.sin(angle) * du + math.cos(angle) * dv,
    )
    assert math.isclose(float(u_r - smooth.cx), expected[0], abs_tol=1e-3)
    assert math.isclose(float(v_r - smooth.cy), expected[1], abs_tol=1e-3)
    shaky = build_dataset(spec.replace("roll=5", "roll=0"), split="val")
    offsets = [s.shake for s in map(shaky._pick_scene, range(6)) if s.shake is not None]
    assert offsets, "some sequences shake"
    assert offsets[0].shape == (6, 2) and offsets[0].abs().max() <= math.radians(3)
    steady = build_dataset(
        spec.replace("roll=5", "roll=0").replace("shake=3", "shake=0"), split="val"
    )
    still = steady._pick_scene(0)
    assert still.shake is None and still.roll_rate == 0.0
    assert torch.equal(
        steady._camera(still, 2.0, 2).rotation, camera_at(steady.camera, still.motion, 2.0).rotation
    )


def test_attributes_follow_the_sequence():
    dataset = build_dataset(
        "world-track:num_images=6,height=48,width=96,num_frames=4,roll=20", split="val"
    )
    ipr = OTB_ATTRIBUTES.index("IPR")
    seen = set()
    for index in range(len(dataset)):
        _, target = dataset[index]
        sequence = dataset._pick_scene(index)
        expected = abs(sequence.roll_rate) * 3 > math.radians(30)
        assert bool(target["attributes"][ipr]) == expected
        seen.add(expected)
        if not sequence.look_alikes:
            assert not target["attributes"][OTB_ATTRIBUTES.index("BC")]
    assert seen == {True, False}


def test_background_clutter_means_a_look_alike_near_the_target():
    surface = torch.zeros(20, 30, dtype=torch.int64)
    box = torch.tensor([10.0, 8.0, 14.0, 12.0])  # 4x4, grown: x 8..16, y 6..14
    surface[6, 15] = 5 + 3
    assert _look_alike_near(surface, box, (3,))
    assert not _look_alike_near(surface, box, (2,))
    surface[6, 15] = 0
    for row, column in ((6, 16), (14, 12), (5, 12), (10, 7), (15, 20)):  # just outside, or far
        surface[row, column] = 5 + 3
        assert not _look_alike_near(surface, box, (3,)), (row, column)
        surface[row, column] = 0
    for row, column in ((6, 8), (13, 15), (13, 8)):  # the grown box's corner pixels
        surface[row, column] = 5 + 3
        assert _look_alike_near(surface, box, (3,)), (row, column)
        surface[row, column] = 0


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
