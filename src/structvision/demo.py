"""``structvision demo``: a guided tour on built-in data.

Each stage writes its pictures and numbers into the demo folder and adds a section to
``index.html``: the built-in data and its COCO round trip, then three models trained from
scratch on this machine — Mask R-CNN (a Faster R-CNN with a mask branch: boxes and instance
masks), Keypoint R-CNN on stick figures (pose), FCN-8s semantic segmentation before and
after the dense CRF, and Monodepth learning depth from ray-cast stereo pairs. The budgets are small: the tour shows the pipeline end to end, the
benchmarks (``benchmarks/``, ``BENCHMARKS.md``) measure quality.
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

#: Training steps of the full tour (about 10 minutes on a 2-core CPU) and of ``--quick``
#: (about 2 minutes), per model: Mask R-CNN, Keypoint R-CNN, FCN-8s.
FULL_TRAIN_STEPS = {"mask_rcnn": 500, "keypoint_rcnn": 300, "fcn8s": 600, "monodepth": 150}
QUICK_TRAIN_STEPS = {"mask_rcnn": 120, "keypoint_rcnn": 60, "fcn8s": 150, "monodepth": 40}

#: Dense-CRF parameters for the demo's 128-pixel images (pydensecrf's defaults are meant for
#: ~500x375 photographs: a 80-pixel bilateral window would span most of a 128-pixel image).
DEMO_CRF = {
    "bilateral_sxy": 10.0,
    "bilateral_srgb": 13.0,
    "bilateral_weight": 5.0,
    "gaussian_sxy": 1.0,
    "gaussian_weight": 3.0,
    "iterations": 5,
}

#: The systems structvision implements and where each one stands.
ROADMAP = (
    ("shapes data, COCO I/O, evaluation, engine", "ready"),
    ("Selective Search proposals; RoI pool, SPP, RoIAlign, FPN pooling ops", "ready"),
    ("Fast R-CNN on Selective Search proposals", "ready"),
    ("Faster R-CNN with RPN and FPN, torchvision weights", "ready"),
    ("Mask R-CNN masks and keypoints (RoIAlign / RoIPool), torchvision weights", "ready"),
    (
        "FCN-32s/16s/8s, DeepLabV3/FCN-ResNet conversion, dense CRF (inference, layer, loss)",
        "ready",
    ),
    ("3D world renderer (stereo, depth, flow, normals); Monodepth from stereo", "in progress"),
    ("SINT tracking, optical flow, normals and reflectance", "planned"),
)


@dataclass(frozen=True)
class DemoSettings:
    """How much work each stage does; ``quick`` halves everything."""

    num_samples: int
    num_speed_images: int
    num_coco_images: int
    train_steps: dict[str, int]
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
                val_images=30,
            )
        return cls(
            num_samples=12,
            num_speed_images=400,
            num_coco_images=50,
            train_steps=FULL_TRAIN_STEPS,
            batch_size=8,
            val_images=100,
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


def _train(recipe: str, run: Path, *, data: str, val_data: str, steps: int, settings: DemoSettings):
    """Train ``recipe`` into ``run`` (replacing an earlier demo run) with the demo's budget."""
    import shutil

    from structvision.tasks import run_train

    if run.exists():  # written by an earlier demo run (the folder carries the demo marker)
        shutil.rmtree(run)
    return run_train(
        recipe,
        data=data,
        val_data=val_data,
        out=run,
        max_steps=steps,
        overrides={
            "batch_size": str(settings.batch_size),
            "warmup_steps": str(min(200, steps // 5)),
            "eval_every": "0",
            "checkpoint_every": "0",
            "log_every": "10",
        },
    )


def _run_images(run: Path, count: int, what: str) -> list[tuple[Path, str]]:
    overlays = sorted((run / "predictions").glob("*.png"))[:count]
    images = [(path, f"{what} on validation image {i}") for i, path in enumerate(overlays)]
    if (run / "loss.png").is_file():
        images.insert(0, (run / "loss.png", "training losses"))
    return images


def _instances_stage(
    out: Path, settings: DemoSettings, console: Console
) -> tuple[ReportSection, dict]:
    steps = settings.train_steps["mask_rcnn"]
    run = out / "mask_rcnn"
    console.print(
        f"  Mask R-CNN (Faster R-CNN + mask branch) on shapes from scratch: {steps} steps of "
        f"{settings.batch_size} images, then COCO box and mask AP on {settings.val_images} images"
    )
    metrics = _train(
        "mask_rcnn",
        run,
        data="shapes",
        val_data=f"shapes:num_images={settings.val_images}",
        steps=steps,
        settings=settings,
    )
    console.print(
        f"  bbox/AP {metrics['bbox/AP']:.3f}, bbox/AP50 {metrics['bbox/AP50']:.3f}, "
        f"segm/AP {metrics['segm/AP']:.3f}, segm/AP50 {metrics['segm/AP50']:.3f} — run in {run}"
    )
    section = ReportSection(
        title="Faster R-CNN with a mask branch (Mask R-CNN) on shapes",
        paragraphs=(
            f"A small Mask R-CNN — FPN over a small convolutional backbone, RPN, RoIAlign box "
            f"head (the Faster R-CNN part) and a 28x28 per-class mask head — trained from "
            f"scratch for {steps} steps on this machine; the full run with its report is in "
            f"{run.name}/. A short budget: see BENCHMARKS.md for trained numbers.",
        ),
        table={
            k: metrics[k]
            for k in ("bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75")
        },
        images=_run_images(run, settings.num_samples, "boxes and masks"),
    )
    return section, metrics


def _pose_stage(out: Path, settings: DemoSettings, console: Console) -> tuple[ReportSection, dict]:
    steps = settings.train_steps["keypoint_rcnn"]
    run = out / "keypoint_rcnn"
    val_images = max(20, settings.val_images // 2)
    console.print(
        f"  Keypoint R-CNN on shapes-pose (stick figures, 15 keypoints): {steps} steps, then "
        f"COCO keypoint AP (OKS) on {val_images} images"
    )
    metrics = _train(
        "keypoint_rcnn",
        run,
        data="shapes-pose",
        val_data=f"shapes-pose:num_images={val_images}",
        steps=steps,
        settings=settings,
    )
    console.print(
        f"  keypoints/AP {metrics['keypoints/AP']:.3f}, bbox/AP {metrics['bbox/AP']:.3f} "
        f"— run in {run}"
    )
    section = ReportSection(
        title="Keypoint R-CNN on stick figures",
        paragraphs=(
            f"The keypoint branch (8 convolutions, 56x56 heatmaps, one per keypoint) on "
            f"articulated figures with occlusion-aware visibility, trained for {steps} steps; "
            f"evaluated with COCO's OKS using the stick figure's sigmas.",
        ),
        table={k: metrics[k] for k in ("keypoints/AP", "keypoints/AP50", "bbox/AP", "bbox/AP50")},
        images=_run_images(run, settings.num_samples, "skeletons"),
    )
    return section, metrics


def _segmentation_stage(
    out: Path, settings: DemoSettings, console: Console
) -> tuple[ReportSection, dict]:
    from structvision.data.spec import build_dataset
    from structvision.models.segmentation.postprocess import refine_with_crf
    from structvision.tasks import run_eval
    from structvision.tasks.run import load_trained_model

    steps = settings.train_steps["fcn8s"]
    run = out / "fcn8s"
    val = f"shapes:num_images={settings.val_images}"
    console.print(
        f"  FCN-8s semantic segmentation on shapes: {steps} steps, then mIoU and boundary F "
        f"on {settings.val_images} images, before and after the dense CRF"
    )
    plain = _train("fcn8s", run, data="shapes", val_data=val, steps=steps, settings=settings)
    refined = run_eval(run, data=val, crf=DEMO_CRF)
    console.print(
        f"  mIoU {plain['miou']:.3f} -> {refined['miou']:.3f} with the CRF, boundary F "
        f"{plain['boundary_f']:.3f} -> {refined['boundary_f']:.3f} — run in {run}"
    )
    _, model, _ = load_trained_model(run)
    dataset = build_dataset(val, split="val")
    rows = []
    with torch.no_grad():
        for index in range(min(settings.num_samples // 2, len(dataset))):
            image, target = dataset[index]
            device = next(model.parameters()).device
            prediction = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
            after = refine_with_crf(image, prediction, **DEMO_CRF)
            picture = (image * 255).round().to(torch.uint8)
            rows.append(
                torch.cat(
                    [
                        picture,
                        colorize_semantic(prediction["semantic"]),
                        colorize_semantic(after["semantic"]),
                        colorize_semantic(target["semantic"]),
                    ],
                    dim=2,
                )
            )
    save_png(tile_images(rows, columns=1), out / "segmentation_crf.png")
    metrics = {
        **{f"fcn/{k}": plain[k] for k in ("miou", "boundary_f", "pixel_accuracy")},
        **{f"fcn+crf/{k}": refined[k] for k in ("miou", "boundary_f", "pixel_accuracy")},
    }
    section = ReportSection(
        title="FCN-8s and the dense CRF",
        paragraphs=(
            f"FCN-8s (small backbone, learned bilinear-initialised upsampling, pool3/pool4 "
            f"skips) trained for {steps} steps, then refined by the fully connected CRF "
            f"(mean field on the permutohedral lattice; parameters {DEMO_CRF}). Columns: image, "
            f"FCN-8s, FCN-8s + CRF, ground truth. This small FCN needs far longer training "
            f"than the tour can give (about 15000 steps: BENCHMARKS.md has that run, where the "
            f"CRF lifts boundary F from 0.47 to 0.58), so here it may still label nearly "
            f"everything background; the stage shows the pipeline.",
        ),
        table=metrics,
        images=[(out / "segmentation_crf.png", "image | FCN-8s | + dense CRF | truth")],
    )
    return section, metrics


def _depth_stage(out: Path, settings: DemoSettings, console: Console) -> tuple[ReportSection, dict]:
    from structvision.data.spec import build_dataset
    from structvision.tasks import run_eval
    from structvision.tasks.run import load_trained_model
    from structvision.viz import colorize_values

    steps = settings.train_steps["monodepth"]
    run = out / "monodepth"
    cache = out / "world-cache"  # each pair is rendered once, then read back
    data = f"world-stereo:num_images={25 * settings.batch_size},cache={cache}"
    val = f"world-stereo:num_images={max(10, settings.val_images // 5)},cache={cache}"
    console.print(
        f"  Monodepth on ray-cast stereo pairs: {steps} steps learning depth from the left image "
        "alone, with the right image as the only supervision; then abs_rel and a1 against the "
        "exact depth"
    )
    metrics = _train("monodepth", run, data=data, val_data=val, steps=steps, settings=settings)
    console.print(
        f"  abs_rel {metrics['abs_rel']:.3f}, a1 {metrics['a1']:.3f}, rmse {metrics['rmse']:.2f} m "
        f"— run in {run}"
    )
    # the shipped, longer-trained model on the same pairs: what training for longer gives
    zoo_metrics = run_eval("zoo:monodepth_world", data=val, out=run / "eval" / "zoo.json")
    console.print(
        f"  the zoo's monodepth_world (3000 steps) on the same pairs: abs_rel "
        f"{zoo_metrics['abs_rel']:.3f}, a1 {zoo_metrics['a1']:.3f}"
    )
    _, model, _ = load_trained_model(run)
    _, zoo_model, _ = load_trained_model("zoo:monodepth_world")
    dataset = build_dataset(val, split="val")
    rows = []
    with torch.no_grad():
        for index in range(min(3, len(dataset))):
            image, target = dataset[index]
            device = next(model.parameters()).device
            predicted = model([image.to(device)])[0]["disparity"].cpu()
            trained = zoo_model([image.to(device)])[0]["disparity"].cpu()
            true = target["disparity"]
            high = float(true.quantile(0.99))
            rows.append(
                torch.cat(
                    [
                        (image * 255).round().to(torch.uint8),
                        colorize_values(predicted, vmin=0.0, vmax=high),
                        colorize_values(trained, vmin=0.0, vmax=high),
                        colorize_values(true, vmin=0.0, vmax=high),
                    ],
                    dim=2,
                )
            )
    save_png(tile_images(rows, columns=1), out / "depth.png")
    section = ReportSection(
        title="Monodepth: depth from one image, learned from stereo",
        paragraphs=(
            f"Scenes of spheres, boxes and cylinders in a walled world, ray-cast exactly "
            f"(depth, disparity, occlusion). A small Monodepth network sees only the left image "
            f"and predicts disparities for both views; the right image, warped with them, is "
            f"its only supervision (appearance, smoothness and left-right consistency losses). "
            f"Trained for {steps} steps here, beside the zoo's monodepth_world (the same "
            f"network after 3000 steps on 2000 pairs); columns: image, this run's disparity, "
            f"the zoo model's, the true disparity (bright is near). BENCHMARKS.md has the "
            f"ablation and the baselines.",
        ),
        table={
            **{f"this run: {k}": metrics[k] for k in ("abs_rel", "rmse", "a1")},
            **{f"zoo:monodepth_world: {k}": zoo_metrics[k] for k in ("abs_rel", "rmse", "a1")},
        },
        images=[(out / "depth.png", "image | this run | zoo:monodepth_world | truth")],
    )
    return section, {
        **{f"monodepth/{k}": metrics[k] for k in ("abs_rel", "rmse", "a1")},
        **{f"zoo_monodepth/{k}": zoo_metrics[k] for k in ("abs_rel", "rmse", "a1")},
    }


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

    console.print("[bold]3. instances: boxes and masks[/]")
    instance_section, instance_metrics = _instances_stage(out, settings, console)
    sections.append(instance_section)
    console.print("[bold]4. pose: keypoints[/]")
    pose_section, pose_metrics = _pose_stage(out, settings, console)
    sections.append(pose_section)
    console.print("[bold]5. semantic segmentation and the dense CRF[/]")
    segmentation_section, segmentation_metrics = _segmentation_stage(out, settings, console)
    sections.append(segmentation_section)
    console.print("[bold]6. depth from one image, learned from stereo[/]")
    depth_section, depth_metrics = _depth_stage(out, settings, console)
    sections.append(depth_section)
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
                "Every model above is also a recipe of 'structvision train' with its benchmark in "
                "benchmarks/; optical flow and tracking come next.",
            ),
            table=dict(ROADMAP),
        )
    )

    summary = {
        "seconds": round(time.perf_counter() - started, 1),
        **{f"coco_roundtrip/{key}": value for key, value in coco_metrics.items()},
        **{f"mask_rcnn/{key}": value for key, value in instance_metrics.items()},
        **{f"keypoint_rcnn/{key}": value for key, value in pose_metrics.items()},
        **segmentation_metrics,
        **depth_metrics,
    }
    tmp = out / "demo.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "demo.json")
    page = write_html_report(out / "index.html", title="structvision demo", sections=sections)
    console.print(f"done in {summary['seconds']} s — open {page}")
    return summary
