import json

import pytest
import torch

from structvision.viz import (
    ReportSection,
    colorize_semantic,
    draw_instances,
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
