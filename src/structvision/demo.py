"""``structvision demo``: a guided tour on built-in data.

Each stage writes its pictures and numbers into the demo folder and adds a section to
``index.html``: the built-in data and its COCO round trip; then every trained model of the zoo
(``structvision zoo``) on fresh samples of its generator, with its metrics there beside the
recorded ones (the FCN before and after the dense CRF); then one short training run with its
progress bar, so that the user sees training work. The full tour takes under 5 minutes on a
2-core CPU, ``--quick`` under 1 minute; the benchmarks (``benchmarks/``, ``BENCHMARKS.md``)
measure quality.
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
from structvision.zoo import ZooEntry

__all__ = ["ROADMAP", "DemoSettings", "run_demo"]

_MARKER = ".structvision-demo"

#: Seed of the demo's samples: the benchmarks, the zoo checks and training use seed 0.
DEMO_SEED = 7

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
    ("3D world renderer (stereo, depth, flow, normals); Monodepth from stereo", "ready"),
    (
        "classifier pretraining on built-in data, recipes from the pretrained trunk, model zoo",
        "in progress",
    ),
    ("optical flow: RAFT, FlowNetS, OpenCV baselines, flow files and benchmarks", "ready"),
    ("tracking: SINT, SiamFC, OpenCV trackers, OTB / GOT-10k / LaSOT", "in progress"),
    ("surface normals and intrinsic images (albedo, shading)", "in progress"),
    ("export to ONNX / OpenVINO, fast CPU inference", "in progress"),
)


@dataclass(frozen=True)
class DemoSettings:
    """How much work each stage does: the full tour within 5 minutes on a 2-core CPU,
    ``--quick`` within 1 minute."""

    num_samples: int  #: scenes drawn in the data stage
    num_speed_images: int  #: scenes generated to time the generator
    num_coco_images: int  #: images of the COCO round trip
    zoo_images: int  #: fresh images each zoo model is scored on
    num_shown: int  #: predictions drawn per zoo model
    num_sequences: int  #: fresh sequences each tracker is scored on (one is drawn)
    train_steps: int  #: steps of the one training run
    batch_size: int
    val_images: int  #: images the training run is scored on
    sequence_frames: int | None = None  #: frames of each tracking sequence (None: the check's)

    @classmethod
    def make(cls, quick: bool) -> DemoSettings:
        if quick:
            return cls(
                num_samples=8,
                num_speed_images=30,
                num_coco_images=12,
                zoo_images=8,
                num_shown=4,
                num_sequences=1,
                sequence_frames=20,
                train_steps=12,
                batch_size=2,
                val_images=8,
            )
        return cls(
            num_samples=12,
            num_speed_images=200,
            num_coco_images=50,
            zoo_images=60,
            num_shown=8,
            num_sequences=2,
            sequence_frames=None,
            train_steps=120,
            batch_size=4,
            val_images=60,
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


def _fresh_samples(spec: str, count: int, **changes: object) -> str:
    """``spec`` (a generator SPEC) with ``count`` images of another seed than the benchmarks'
    and the zoo checks': samples no shipped model was trained, tuned or checked on
    (``changes``: other settings of the generator)."""
    from structvision.data.spec import parse_spec

    parsed = parse_spec(spec)
    options = {**parsed.options, **changes, "num_images": count, "seed": DEMO_SEED}
    return parsed.name + ":" + ",".join(f"{key}={value}" for key, value in options.items())


def _overlays(name: str, data: str, count: int, out: Path, *, crf: dict | None = None) -> Path:
    """Predictions of ``zoo:NAME`` on the first ``count`` images of ``data``, tiled, with the
    ground truth where the recipe draws it (and the CRF-refined labels for segmenters)."""
    from structvision.data.spec import build_dataset
    from structvision.engine.data import move_to_device
    from structvision.models.segmentation.postprocess import refine_with_crf
    from structvision.tasks.predictor import draw_prediction
    from structvision.tasks.run import load_trained_model

    recipe, model, model_config = load_trained_model(f"zoo:{name}")
    dataset = build_dataset(data, split="val", modality=recipe.data_modality)
    device = next(model.parameters()).device
    pictures = []
    with torch.no_grad():
        for index in range(min(count, len(dataset))):
            image, target = dataset[index]
            given = image if recipe.model_input is None else recipe.model_input(image, target)
            prediction = {
                k: v.cpu() if torch.is_tensor(v) else v
                for k, v in model([move_to_device(given, device)])[0].items()
            }
            if crf is not None and "semantic" in prediction:
                refined = refine_with_crf(image, prediction, **crf)
                picture = (image * 255).round().to(torch.uint8)
                pictures.append(
                    torch.cat(
                        [
                            picture,
                            colorize_semantic(prediction["semantic"]),
                            colorize_semantic(refined["semantic"]),
                            colorize_semantic(target["semantic"]),
                        ],
                        dim=2,
                    )
                )
            else:
                pictures.append(
                    draw_prediction(recipe, image, prediction, model_config, target=target)
                )
    path = out / f"{name}.png"
    save_png(tile_images(pictures, columns=1 if crf is not None else 4), path)
    return path


#: How the demo shows each kind of zoo model: the metrics it prints, and a caption.
_SHOWN_METRICS = {
    "classifier": ("top1", "mean_class_accuracy"),
    "faster_rcnn": ("bbox/AP", "bbox/AP50", "bbox/AP75"),
    "fast_rcnn": ("bbox/AP", "bbox/AP50", "bbox/AP75"),
    "mask_rcnn": ("segm/AP", "segm/AP50", "bbox/AP", "bbox/AP50"),
    "keypoint_rcnn": ("keypoints/AP", "keypoints/AP50", "bbox/AP", "bbox/AP50"),
    "fcn8s": ("miou", "boundary_f", "pixel_accuracy"),
    "monodepth": ("abs_rel", "rmse", "a1"),
    "raft_small": ("epe", "epe_noc", "fl_all"),
    "flownet_s": ("epe", "epe_noc", "fl_all"),
    "sint": ("success_auc", "precision", "fps"),
    "siamfc": ("success_auc", "precision", "fps"),
    "normals": ("mean", "median", "a11"),
    "intrinsic": ("lmse", "whdr"),
}

#: Samples the slower kinds of zoo model are shown on.
_SAMPLES_AT_MOST = {"raft_small": 20, "flownet_s": 20}

#: Recipes whose sample is a whole sequence (``DemoSettings.num_sequences`` of them).
_TRACKERS = ("sint", "siamfc")


def _zoo_stage(
    entry: ZooEntry, out: Path, settings: DemoSettings, console: Console
) -> tuple[ReportSection, dict]:
    """One shipped model on fresh samples of its generator: its metrics there (beside those
    recorded when it was trained) and its predictions."""
    from structvision.tasks import run_eval

    count = min(settings.zoo_images, _SAMPLES_AT_MOST.get(entry.recipe, settings.zoo_images))
    num_drawn = min(settings.num_shown, count)
    changes = {}
    if entry.recipe in _TRACKERS:
        count, num_drawn = settings.num_sequences, 1
        if settings.sequence_frames is not None:
            changes["num_frames"] = settings.sequence_frames
    data = _fresh_samples(entry.check["data"], count, **changes)
    folder = out / "zoo"
    keys = _SHOWN_METRICS.get(entry.recipe) or tuple(entry.metrics)
    started = time.perf_counter()
    metrics = run_eval(f"zoo:{entry.name}", data=data, out=folder / f"{entry.name}.json")
    table = {f"{key} (these {count} samples)": metrics[key] for key in keys}
    table |= {f"{key} (recorded)": entry.metrics[key] for key in keys if key in entry.metrics}
    summary = {f"zoo/{entry.name}/{key}": metrics[key] for key in keys}
    caption = "predictions (and the truth, where drawn)"
    crf = None
    if entry.recipe.startswith("fcn"):
        crf = DEMO_CRF
        refined = run_eval(
            f"zoo:{entry.name}", data=data, out=folder / f"{entry.name}.crf.json", crf=crf
        )
        for key in ("miou", "boundary_f"):
            table[f"{key} + dense CRF (these images)"] = refined[key]
            summary[f"zoo/{entry.name}+crf/{key}"] = refined[key]
        caption = "image | FCN | + dense CRF | truth"
    picture = _overlays(entry.name, data, num_drawn, folder, crf=crf)
    seconds = time.perf_counter() - started
    shown = ", ".join(f"{key} {metrics[key]:.3f}" for key in keys)
    console.print(f"  zoo:{entry.name} ({entry.task}): {shown}  [{seconds:.1f} s]")
    section = ReportSection(
        title=f"zoo:{entry.name} — {entry.task}",
        paragraphs=(
            f"{entry.description}. Scored here on {count} fresh samples of "
            f"{data.split(':')[0]} (seed {DEMO_SEED}, never seen in training or benchmarks); "
            f"'recorded' is the benchmark's number on its 500 held-out images. Trained by: "
            f"{entry.command}",
        ),
        table=table,
        images=[(picture, caption)],
    )
    return section, summary


def _training_stage(
    out: Path, settings: DemoSettings, console: Console
) -> tuple[ReportSection, dict]:
    """One short training run with its progress bar: Faster R-CNN from the pretrained trunk."""
    import shutil

    from structvision.tasks import run_train

    run = out / "faster_rcnn"
    if run.exists():  # written by an earlier demo run (the folder carries the demo marker)
        shutil.rmtree(run)
    steps = settings.train_steps
    val = f"shapes:num_images={settings.val_images}"
    console.print(
        f"  Faster R-CNN on shapes, starting from the zoo's pretrained trunk: {steps} steps of "
        f"{settings.batch_size} images, then COCO box AP on {settings.val_images} images"
    )
    metrics = run_train(
        "faster_rcnn",
        data="shapes",
        val_data=val,
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
    console.print(
        f"  bbox/AP {metrics['bbox/AP']:.3f}, bbox/AP50 {metrics['bbox/AP50']:.3f} — run in {run}"
    )
    images = sorted((run / "predictions").glob("*.png"))[: settings.num_shown]
    shown = [(run / "loss.png", "training losses")] if (run / "loss.png").is_file() else []
    shown += [(path, f"validation image {i}") for i, path in enumerate(images)]
    section = ReportSection(
        title="Training on this machine: Faster R-CNN",
        paragraphs=(
            f"The recipe's defaults (AdamW, the conv box head, the trunk of zoo:classifier_shapes) "
            f"for only {steps} steps, so that the tour stays short: the losses fall, the boxes "
            f"start to come. The full recipe ('structvision train faster_rcnn --data shapes') "
            f"trains the zoo model above; its run report is in {run.name}/report.html.",
        ),
        table={k: metrics[k] for k in ("bbox/AP", "bbox/AP50", "bbox/AP75")},
        images=shown,
    )
    return section, {f"training/faster_rcnn/{k}": metrics[k] for k in ("bbox/AP", "bbox/AP50")}


#: The order the zoo's models are shown in; entries not listed follow by name.
_ZOO_ORDER = ("classifier", "faster_rcnn", "fast_rcnn", "mask_rcnn", "keypoint_rcnn", "fcn8s")


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

    from structvision.zoo import zoo_entries

    console.print("[bold]3. trained models from the zoo, on fresh samples[/]")
    entries = sorted(
        zoo_entries().values(),
        key=lambda e: (
            _ZOO_ORDER.index(e.recipe) if e.recipe in _ZOO_ORDER else len(_ZOO_ORDER),
            e.name,
        ),
    )
    zoo_metrics: dict = {}
    for entry in entries:
        section, numbers = _zoo_stage(entry, out, settings, console)
        sections.append(section)
        zoo_metrics |= numbers
    console.print("[bold]4. training on this machine[/]")
    training_section, training_metrics = _training_stage(out, settings, console)
    sections.append(training_section)
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
                "benchmarks/; the table says what is ready and what is still in progress.",
            ),
            table=dict(ROADMAP),
        )
    )

    summary = {
        "seconds": round(time.perf_counter() - started, 1),
        **{f"coco_roundtrip/{key}": value for key, value in coco_metrics.items()},
        **zoo_metrics,
        **training_metrics,
    }
    tmp = out / "demo.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "demo.json")
    page = write_html_report(out / "index.html", title="structvision demo", sections=sections)
    console.print(f"done in {summary['seconds']} s — open {page}")
    return summary
