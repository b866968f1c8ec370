import json

import pytest
import torch

from structvision.data.synthetic import SKELETON
from structvision.viz import (
    COCO_PERSON_SKELETON,
    ReportSection,
    colorize_semantic,
    default_skeleton,
    draw_instances,
    draw_skeletons,
    plot_training_curves,
    read_metrics_jsonl,
    save_png,
    semantic_palette,
    tile_images,
    write_html_report,
)


def test_palette_matches_pascal_voc_colours():
    palette = semantic_palette()
    # VOC: background, aeroplane, bicycle, ..., person (15), ..., tvmonitor (20)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[15].tolist() == [192, 128, 128]
    assert palette[20].tolist() == [0, 64, 128]
    assert len({tuple(c) for c in palette.tolist()}) == 256


def test_colorize_semantic_maps_labels_and_ignore():
    semantic = torch.tensor([[0, 1], [2, 255]])
    colored = colorize_semantic(semantic)
    assert colored.shape == (3, 2, 2) and colored.dtype == torch.uint8
    assert colored[:, 0, 1].tolist() == [128, 0, 0]
    assert colored[:, 1, 1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        colorize_semantic(torch.zeros(1, 2, 2))


def test_draw_instances_paints_mask_and_box_only_where_asked():
    image = torch.zeros(3, 20, 20)
    masks = torch.zeros(2, 20, 20, dtype=torch.uint8)
    masks[0, 5:10, 5:10] = 1
    masks[1, 12:15, 12:15] = 1
    instances = {
        "boxes": torch.tensor([[5.0, 5.0, 10.0, 10.0], [12.0, 12.0, 15.0, 15.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.1]),
        "masks": masks,
    }
    drawn = draw_instances(image, instances, class_names=["bg", "a", "b"], score_threshold=0.5)
    assert drawn.shape == (3, 20, 20) and drawn.dtype == torch.uint8
    assert drawn[:, 7, 7].sum() > 0  # inside the kept mask
    assert drawn[:, 13, 13].sum() == 0  # the low-score instance is not drawn
    assert drawn[:, 0, 19].sum() == 0  # far from everything


def test_draw_instances_scales_and_draws_keypoints():
    image = torch.zeros(3, 10, 10)
    instances = {
        "boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]),
        "labels": torch.tensor([1]),
        "keypoints": torch.tensor([[[3.0, 3.0, 2.0], [7.0, 7.0, 0.0]]]),
    }
    drawn = draw_instances(image, instances, scale=3, skeleton=[(0, 1)])
    assert drawn.shape == (3, 30, 30)
    assert drawn[:, 9, 9].sum() > 0  # the visible keypoint, at 3x
    with pytest.raises(ValueError, match="boxes"):
        draw_instances(image, {"boxes": torch.zeros(3)})


def test_draw_skeletons_joins_labelled_points_in_each_instance_colour():
    image = torch.zeros(3, 20, 20, dtype=torch.uint8)
    keypoints = torch.tensor(
        [
            [[2.5, 2.5, 2.0], [16.5, 2.5, 1.0], [16.5, 16.5, 0.0]],  # limb 0-1; point 2 unlabelled
            [[2.5, 10.5, 2.0], [2.5, 18.5, 2.0], [0.0, 0.0, 0.0]],
        ]
    )
    colors = [(255, 0, 0), (0, 255, 0)]
    drawn = draw_skeletons(
        image, keypoints, skeleton=[(0, 1), (1, 2)], colors=colors, radius=1, width=1
    )
    assert drawn.shape == (3, 20, 20) and drawn.dtype == torch.uint8
    assert drawn[:, 2, 9].tolist() == [255, 0, 0]  # middle of the first instance's limb
    assert drawn[:, 9, 16].sum() == 0  # no limb to the unlabelled point
    assert drawn[:, 16, 16].sum() == 0  # nor a dot on it
    assert drawn[:, 14, 2].tolist() == [0, 255, 0]  # the second instance in its own colour
    with pytest.raises(ValueError, match="skeleton"):
        draw_skeletons(image, keypoints, skeleton=[(0, 3)])
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        draw_skeletons(image, keypoints[0])


def test_draw_instances_uses_the_known_skeleton_for_the_keypoint_count():
    assert default_skeleton(15) == SKELETON
    assert default_skeleton(17) == COCO_PERSON_SKELETON and len(COCO_PERSON_SKELETON) == 19
    assert default_skeleton(4) == ()
    keypoints = torch.zeros(1, 15, 3)
    keypoints[0, 1] = torch.tensor([5.5, 5.5, 2.0])  # neck
    keypoints[0, 8] = torch.tensor([5.5, 25.5, 2.0])  # pelvis: SKELETON joins them
    instances = {"boxes": torch.tensor([[0.0, 0.0, 30.0, 30.0]]), "labels": torch.tensor([1])}
    image = torch.zeros(3, 30, 30)
    spine = draw_instances(image, {**instances, "keypoints": keypoints})
    assert spine[:, 15, 5].sum() > 0
    no_lines = draw_instances(image, {**instances, "keypoints": keypoints}, skeleton=())
    assert no_lines[:, 15, 5].sum() == 0


def test_tile_and_save_png_round_trip(tmp_path):
    from PIL import Image

    tiles = [torch.full((3, 8, 8), 50 * i, dtype=torch.uint8) for i in range(3)]
    grid = tile_images(tiles, columns=2, padding=1)
    assert grid.shape == (3, 2 * 8 + 3, 2 * 8 + 3)
    path = save_png(grid, tmp_path / "sub" / "grid.png")
    assert torch.equal(
        torch.from_numpy(__import__("numpy").array(Image.open(path))).permute(2, 0, 1), grid
    )


def test_html_report_and_curves(tmp_path):
    lines = [
        {"kind": "train", "step": s, "total_loss": 1.0 / s, "loss_box": 0.5 / s}
        for s in range(1, 6)
    ]
    lines.append({"kind": "eval", "step": 5, "bbox/AP": 0.5})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    records = read_metrics_jsonl(tmp_path / "metrics.jsonl")
    assert records == lines
    plot = plot_training_curves(records, tmp_path / "plots" / "loss.png")
    assert plot is not None and plot.stat().st_size > 0
    assert plot_training_curves([{"step": 1}], tmp_path / "none.png") is None
    page = write_html_report(
        tmp_path / "report.html",
        title="run <1>",
        sections=[ReportSection("metrics", table={"bbox/AP": 0.5}, images=[(plot, "loss")])],
    )
    text = page.read_text()
    assert "run &lt;1&gt;" in text and "0.5000" in text and 'src="plots/loss.png"' in text


def test_read_metrics_jsonl_names_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics_jsonl(path)
