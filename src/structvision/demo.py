"""``structvision demo``: a guided tour on built-in data.

Each stage writes its pictures and numbers into the demo folder and adds a section to
``index.html``. Today the tour covers the data side of the library (generator, COCO export,
validation, evaluation); the model stages join as their recipes land.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from structvision.viz import (
    ReportSection,
    colorize_semantic,
    draw_instances,
    save_png,
    tile_images,
    write_html_report,
)

__all__ = ["ROADMAP", "DemoSettings", "run_demo"]

_MARKER = ".structvision-demo"

#: Faster R-CNN training steps of the full tour (about 10 minutes on a 2-core CPU) and of
#: ``--quick`` (about 2 minutes).
FULL_TRAIN_STEPS = 1200
QUICK_TRAIN_STEPS = 400

#: The systems structvision implements and where each one stands.
ROADMAP = (
    ("shapes data, COCO I/O, evaluation, engine", "ready"),
    ("Selective Search proposals; RoI pool, SPP, RoIAlign, FPN pooling ops", "ready"),
    ("Fast R-CNN on Selective Search proposals", "ready"),
    ("Faster R-CNN with RPN and FPN, torchvision weights", "ready"),
    ("Mask R-CNN masks and keypoints", "planned"),
    ("FCN-32s/16s/8s recipes and the dense CRF (benchmarks next)", "ready"),
    ("SINT tracking, depth, optical flow", "planned"),
)


@dataclass(frozen=True)
class DemoSettings:
    """How much work each stage does; ``quick`` halves everything."""

    num_samples: int
    num_speed_images: int
    num_coco_images: int
    train_steps: int
    batch_size: int
    val_images: int

    @classmethod
    def make(cls, quick: bool) -> DemoSettings:
        if quick:
            return cls(
                num_samples=8,
                num_speed_images=100,
                num_coco_images=16,
                train_steps=QUICK_TRAIN_STEPS,
                batch_size=4,
                val_images=50,
            )
        return cls(
            num_samples=12,
            num_speed_images=400,
            num_coco_images=50,
            train_steps=FULL_TRAIN_STEPS,
            batch_size=8,
            val_images=200,
        )


def _prepare_folder(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise FileExistsError(
            f"demo folder {out} exists and was not written by the demo; "
            "pass --out with a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("written by structvision demo\n")


def _samples_stage(out: Path, settings: DemoSettings, console: Console) -> ReportSection:
    from structvision.data.synthetic import ShapesDataset

    dataset = ShapesDataset(split="train", num_images=settings.num_speed_images, seed=0)
    start = time.perf_counter()
    samples = [dataset[i] for i in range(settings.num_speed_images)]
    images_per_second = settings.num_speed_images / (time.perf_counter() - start)

    shown = samples[: settings.num_samples]
    overlays = [
        draw_instances(image, target, class_names=dataset.class_names, scale=2)
        for image, target in shown
    ]
    semantic = [
        torch.nn.functional.interpolate(
            colorize_semantic(target["semantic"])[None].float(), scale_factor=2, mode="nearest"
        )[0].to(torch.uint8)
        for _, target in shown
    ]
    save_png(tile_images(overlays), out / "samples.png")
    save_png(tile_images(semantic), out / "semantic.png")
    num_objects = sum(len(target["boxes"]) for _, target in samples)
    console.print(
        f"  generated {settings.num_speed_images} scenes ({num_objects} objects) at "
        f"{images_per_second:.0f} images/s; classes: {', '.join(dataset.class_names[1:])}"
    )
    return ReportSection(
        title="Built-in data: shapes",
        paragraphs=(
            "Procedural scenes whose classes differ by shape, not colour: random colours, sizes "
            "and rotations over textured, cluttered backgrounds, with occlusion. Ground truth is "
            "exact: boxes, labels, instance masks and a semantic label map, fixed by "
            "(seed, split, index).",
        ),
        table={
            "images/s (one process)": round(images_per_second, 1),
            "objects per image": round(num_objects / len(samples), 2),
            "classes": ", ".join(dataset.class_names[1:]),
        },
        images=(
            (out / "samples.png", "instances: boxes, labels, masks"),
            (out / "semantic.png", "semantic label maps"),
        ),
    )


def _coco_stage(out: Path, settings: DemoSettings, console: Console) -> tuple[ReportSection, dict]:
    from structvision.data.coco import CocoDataset, check_coco
    from structvision.data.export import write_coco
    from structvision.data.synthetic import ShapesDataset
    from structvision.evaluation.coco import COCOEvaluator

    folder = out / "shapes-coco"
    if folder.exists():  # written by an earlier demo run (the folder carries the demo marker)
        import shutil

        shutil.rmtree(folder)
    dataset = ShapesDataset(split="val", num_images=settings.num_coco_images, seed=0)
    annotations = write_coco(dataset, folder, num_images=settings.num_coco_images)
    problems = check_coco(annotations)
    console.print(f"  wrote {annotations}: {len(problems)} problem(s) found by 'data check'")

    reread = CocoDataset(annotations)
    evaluator = COCOEvaluator(
        iou_types=("bbox", "segm"),
        coco_gt=annotations,
        label_to_category_id=reread.label_to_category_id,
    )
    for index in range(len(reread)):
        _, target = reread[index]
        prediction = {key: target[key] for key in ("boxes", "labels", "masks")}
        prediction["scores"] = torch.ones(len(target["boxes"]))
        evaluator.update([target], [prediction])
    metrics = evaluator.compute()
    console.print(
        f"  ground truth scored against itself: bbox/AP {metrics['bbox/AP']:.3f}, "
        f"segm/AP {metrics['segm/AP']:.3f}"
    )
    section = ReportSection(
        title="COCO round trip",
        paragraphs=(
            f"'structvision data synth shapes' wrote {settings.num_coco_images} images and a "
            "standard COCO annotations.json (exact RLE masks); 'structvision data check' "
            "validated it, the COCO reader loaded it back, and pycocotools scored the ground "
            "truth against itself — every number must be 1.0.",
        ),
        table={
            "problems found": len(problems),
            "bbox/AP": metrics["bbox/AP"],
            "segm/AP": metrics["segm/AP"],
        },
    )
    return section, metrics


def _detection_stage(
    out: Path, settings: DemoSettings, console: Console
) -> tuple[ReportSection, dict]:
    import shutil

    from structvision.tasks import run_train

    run = out / "faster_rcnn"
    if run.exists():  # written by an earlier demo run (the folder carries the demo marker)
        shutil.rmtree(run)
    console.print(
        f"  training a small Faster R-CNN on shapes from scratch: {settings.train_steps} steps of "
        f"{settings.batch_size} images, then COCO evaluation on {settings.val_images} images"
    )
    metrics = run_train(
        "faster_rcnn",
        data="shapes",
        val_data=f"shapes:num_images={settings.val_images}",
        out=run,
        max_steps=settings.train_steps,
        overrides={
            "batch_size": str(settings.batch_size),
            "warmup_steps": str(min(200, settings.train_steps // 5)),
            "eval_every": "0",
            "checkpoint_every": "0",
            "log_every": "10",
        },
    )
    console.print(
        f"  bbox/AP {metrics['bbox/AP']:.3f}, bbox/AP50 {metrics['bbox/AP50']:.3f} — run in {run}"
    )
    overlays = sorted((run / "predictions").glob("*.png"))[: settings.num_samples]
    images = [(path, f"detections on validation image {i}") for i, path in enumerate(overlays)]
    if (run / "loss.png").is_file():
        images.insert(0, (run / "loss.png", "training losses"))
    section = ReportSection(
        title="Faster R-CNN on shapes",
        paragraphs=(
            f"A small Faster R-CNN (FPN over a small convolutional backbone, RPN, RoIAlign box "
            f"head) trained from scratch for {settings.train_steps} steps on this machine; "
            f"the full run with its checkpoints and report is in {run.name}/.",
        ),
        table={
            k: metrics[k] for k in ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APl")
        },
        images=images,
    )
    return section, metrics


def run_demo(*, out: Path, quick: bool = False, console: Console | None = None) -> dict:
    """Run the tour into ``out``; returns the numbers it printed (also in ``demo.json``)."""
    console = console or Console()
    settings = DemoSettings.make(quick)
    _prepare_folder(out)
    started = time.perf_counter()

    console.rule("[bold]structvision demo")
    console.print("[bold]1. built-in data[/]")
    sections = [_samples_stage(out, settings, console)]
    console.print("[bold]2. COCO export, validation and evaluation[/]")
    coco_section, coco_metrics = _coco_stage(out, settings, console)
    sections.append(coco_section)

    from structvision import tasks

    console.print("[bold]3. models[/]")
    detection_metrics: dict = {}
    if "faster_rcnn" in tasks.RECIPES:
        detection_section, detection_metrics = _detection_stage(out, settings, console)
        sections.append(detection_section)
    else:
        console.print("  " + tasks.no_recipes_message())
    roadmap = Table(title="what structvision has and what comes next", header_style="bold")
    roadmap.add_column("system")
    roadmap.add_column("status")
    for system, status in ROADMAP:
        roadmap.add_row(system, status)
    console.print(roadmap)
    sections.append(
        ReportSection(
            title="Models",
            paragraphs=(
                "The tour trains a small Faster R-CNN on shapes; Mask R-CNN, FCNs with the dense "
                "CRF, tracking and dense regression join it as their recipes and benchmarks land.",
            ),
            table=dict(ROADMAP),
        )
    )

    summary = {
        "seconds": round(time.perf_counter() - started, 1),
        **{f"coco_roundtrip/{key}": value for key, value in coco_metrics.items()},
        **{f"faster_rcnn/{key}": value for key, value in detection_metrics.items()},
    }
    tmp = out / "demo.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "demo.json")
    page = write_html_report(out / "index.html", title="structvision demo", sections=sections)
    console.print(f"done in {summary['seconds']} s — open {page}")
    return summary
