"""Overlays, colour maps, plots and the HTML run report."""

from structvision.viz.draw import (
    COCO_PERSON_SKELETON,
    colorize_semantic,
    colorize_values,
    default_skeleton,
    draw_instances,
    draw_legend,
    draw_skeletons,
    instance_colors,
    save_depth_png,
    save_label_png,
    save_png,
    semantic_palette,
    tile_images,
)
from structvision.viz.flow import color_wheel, draw_flow_arrows, flow_to_image
from structvision.viz.report import (
    ReportSection,
    plot_tracking_curves,
    plot_training_curves,
    read_metrics_jsonl,
    write_html_report,
)

__all__ = [
    "COCO_PERSON_SKELETON",
    "ReportSection",
    "color_wheel",
    "colorize_semantic",
    "colorize_values",
    "default_skeleton",
    "draw_flow_arrows",
    "draw_instances",
    "draw_legend",
    "draw_skeletons",
    "flow_to_image",
    "instance_colors",
    "plot_tracking_curves",
    "plot_training_curves",
    "read_metrics_jsonl",
    "save_depth_png",
    "save_label_png",
    "save_png",
    "semantic_palette",
    "tile_images",
    "write_html_report",
]
