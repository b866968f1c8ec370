"""The ``structvision`` command line.

    structvision demo [--quick]
    structvision data synth NAME --out DIR [--num-images N] [--seed S] [--image-size PX]
    structvision data check ANNOTATIONS [--images DIR]
    structvision train RECIPE --data SPEC --out RUN [--max-steps N] [--devices N] [--set k=v ...]
    structvision eval RUN_OR_CHECKPOINT_OR_EXPORT --data SPEC [--backend onnxruntime]
    structvision predict RUN_OR_CHECKPOINT_OR_EXPORT IMAGE... --out DIR
    structvision track RUN_OR_ZOO VIDEO_OR_FOLDER --init x,y,w,h --out DIR
    structvision export RUN_OR_ZOO --format onnx --out DIR [--check] [--int8]
    structvision benchmark RUN_OR_ZOO --data SPEC [--formats torch,onnx,int8] [--threads N]

Commands print a table of results and write JSON; errors are one clear line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from structvision import __version__

app = typer.Typer(
    name="structvision",
    help="Structured prediction in computer vision: detection, instance masks, keypoints, "
    "dense CRFs, tracking, depth and flow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate, convert and validate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    """Print a two-column table of metric names and values."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, text)
    console.print(table)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"structvision {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """structvision command line."""


# ----------------------------------------------------------------------------------- data


@data_app.command("synth")
def data_synth(
    name: Annotated[
        str,
        typer.Argument(
            help="Built-in generator with optional settings: 'shapes', 'shapes-pose', "
            "'shapes:figures=true,max_objects=8', 'world-stereo' (written in the KITTI stereo "
            "2015 layout), 'world-flow' (the KITTI flow 2015 layout plus .flo files), 'world-track' (OTB "
            "sequence folders)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (images/ + annotations.json).")],
    num_images: Annotated[int, typer.Option("--num-images", min=1, help="Number of images.")] = 200,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed; (seed, split, index) fixes a sample.")
    ] = 0,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=16, help="Square image size in pixels.")
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="'train' or 'val' sample stream.")
    ] = "train",
    mask_format: Annotated[
        str, typer.Option("--mask-format", help="'rle' (exact, uncompressed) or 'polygon'.")
    ] = "rle",
) -> None:
    """Write a built-in generator's images and a standard COCO annotations.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from structvision.data.export import write_coco
    from structvision.data.spec import parse_spec
    from structvision.data.synthetic import GENERATORS

    generator = name.partition(":")[0]
    if generator not in GENERATORS:
        _fail(
            f"unknown generator {generator!r}; built-in generators: {', '.join(sorted(GENERATORS))}"
        )
    if split not in ("train", "val"):
        _fail(f"--split must be 'train' or 'val', got {split!r}")
    if mask_format not in ("rle", "polygon"):
        _fail(f"--mask-format must be 'rle' or 'polygon', got {mask_format!r}")
    if out.exists() and any(out.iterdir()):
        _fail(f"output folder {out} is not empty; choose a new folder so nothing is overwritten")
    try:
        options = parse_spec(name).options
        if image_size is not None:
            options["image_size"] = image_size
        dataset = GENERATORS[generator](split=split, num_images=num_images, seed=seed, **options)
    except (TypeError, ValueError) as error:
        _fail(f"generator {generator!r}: {error}")
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(f"writing {name}", total=num_images)
        if generator == "world-stereo":
            from structvision.data.stereo import write_kitti_stereo

            path = write_kitti_stereo(
                dataset,
                out,
                num_images=num_images,
                progress=lambda done, total: progress.update(bar, completed=done),
            )
            console.print(
                f"wrote {num_images} stereo pairs in the KITTI stereo 2015 layout to {path}"
            )
            return
        if generator == "world-track":
            from structvision.data.synthetic.world.tracking import attribute_names
            from structvision.data.tracking import write_otb_sequence

            for index in range(num_images):
                frames, target = dataset[index]
                write_otb_sequence(
                    out / f"world_{index:04d}",
                    frames,
                    target["boxes"],
                    attributes=attribute_names(target["attributes"]),
                    visible=target["visible"],
                )
                progress.update(bar, completed=index + 1)
            console.print(f"wrote {num_images} tracking sequences in the OTB layout to {out}")
            return
        if generator == "world-flow":
            from structvision.data.flow import write_kitti_flow_folder

            path = write_kitti_flow_folder(
                dataset,
                out,
                num_images=num_images,
                progress=lambda done, total: progress.update(bar, completed=done),
            )
            console.print(
                f"wrote {num_images} frame pairs in the KITTI flow 2015 layout (and flo/) to {path}"
            )
            return
        if generator == "world":
            from structvision.data.synthetic.world.export import write_world

            path = write_world(
                dataset,
                out,
                num_images=num_images,
                mask_format=mask_format,
                progress=lambda done, total: progress.update(bar, completed=done),
            )
            console.print(
                f"wrote {num_images} images, {path} and the depth/, normals/, albedo/ and "
                "shading/ layers"
            )
            return
        path = write_coco(
            dataset,
            out,
            num_images=num_images,
            mask_format=mask_format,
            progress=lambda done, total: progress.update(bar, completed=done),
        )
    console.print(f"wrote {num_images} images and {path}")


@data_app.command("check")
def data_check(
    annotations: Annotated[Path, typer.Argument(help="COCO annotation file (or its folder).")],
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Image folder (found automatically if omitted)."),
    ] = None,
    skip_images: Annotated[
        bool, typer.Option("--skip-images", help="Do not open every image file.")
    ] = False,
) -> None:
    """Validate a COCO-format dataset and list every problem with the record it is in."""
    from structvision.data.coco import check_coco

    if annotations.is_dir():
        annotations = annotations / "annotations.json"
    if not annotations.exists():
        _fail(f"annotation file {annotations} does not exist")
    problems = check_coco(annotations, images, check_images=not skip_images)
    if not problems:
        console.print(f"[green]ok[/]: {annotations} has no problems")
        return
    table = Table(title=f"{len(problems)} problem(s) in {annotations}", header_style="bold")
    table.add_column("record")
    table.add_column("problem")
    for problem in problems:
        table.add_row(problem.record, problem.message)
    console.print(table)
    raise typer.Exit(code=1)


# ------------------------------------------------------------------- train / eval / predict


def _parse_sets(values: list[str]) -> dict[str, str]:
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--set {item!r} is not of the form key=value")
        overrides[key.strip()] = value.strip()
    return overrides


@app.command()
def train(
    recipe: Annotated[str, typer.Argument(help="Recipe name (see 'structvision recipes').")],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder to create (or, with --resume, to continue).")
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Training data SPEC: a generator ('shapes', 'shapes:image_size=96') or a path "
            "to COCO/VOC data. Required for a new run; a resumed run reuses its own.",
        ),
    ] = None,
    val_data: Annotated[
        str | None,
        typer.Option(
            "--val-data", help="Validation data SPEC (default: the 'val' split of --data)."
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps", min=1, help="Optimizer steps to train for (default: the recipe's)."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            min=0,
            help="Seeds the initial weights, data order and augmentation; the same command "
            "gives the same weights (default: 0; a resumed run keeps its own).",
        ),
    ] = None,
    devices: Annotated[
        int | None,
        typer.Option("--devices", min=1, help="Processes (devices) per machine (default: 1)."),
    ] = None,
    num_nodes: Annotated[
        int | None, typer.Option("--num-nodes", min=1, help="Machines (default: 1).")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change a setting: lr=0.01, optimizer=adamw, model.width=32, ... "
            "('structvision recipes RECIPE' lists them with their defaults).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out with its saved settings; only max_steps, the "
            "intervals and devices may change.",
        ),
    ] = False,
) -> None:
    """Train a recipe; writes config, metrics, checkpoints, predictions and report.html.

    Ctrl-C or SIGTERM: the step ends, a checkpoint is written, the resume command printed.
    """
    from structvision import tasks
    from structvision.engine import TrainingInterrupted

    try:
        metrics = tasks.run_train(
            recipe,
            data=data,
            val_data=val_data,
            out=out,
            max_steps=max_steps,
            devices=devices,
            num_nodes=num_nodes,
            seed=seed,
            overrides=_parse_sets(sets or []),
            resume=resume,
        )
    except TrainingInterrupted as stopped:
        if tasks.is_rank_zero():
            err_console.print(
                f"stopped after step {stopped.step}; checkpoint {stopped.checkpoint}\n"
                f"resume with: structvision train {recipe} --out {out} --resume",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(code=stopped.exit_code) from None
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, keep what is complete
        if tasks.is_rank_zero():
            err_console.print(
                f"stopped at once; the newest complete checkpoint in {out}/checkpoints is kept "
                f"(a save cut short is never read)\nresume with: structvision train {recipe} "
                f"--out {out} --resume",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(code=130) from None
    except (tasks.RecipeError, ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(str(error))
    if not tasks.is_rank_zero():
        return
    if metrics:
        print_metrics(f"{recipe}: final evaluation", metrics)
    console.print(f"run written to {out}")


CrfFlag = Annotated[
    bool, typer.Option("--crf", help="Refine a semantic segmentation with the dense CRF.")
]
CrfSets = Annotated[
    list[str] | None,
    typer.Option(
        "--crf-set",
        help="A dense-CRF parameter (implies --crf): bilateral_sxy=20, iterations=5, ...",
    ),
]


TtaFlag = Annotated[
    bool,
    typer.Option(
        "--tta",
        help="Average an R-CNN over each image and its mirror image (flip test-time "
        "augmentation; about twice the inference time).",
    ),
]
RelightNormalsOption = Annotated[
    str | None,
    typer.Option(
        "--relight-normals",
        help="An intrinsic model's shading relit under a global light fitted with the normals "
        "of this normals run or zoo entry, e.g. zoo:normals_world (predict writes them too).",
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="Runtime of an exported model (structvision export): onnxruntime (default for "
        "ONNX files), openvino (default for --format openvino) or torchscript (for --format "
        "torchscript).",
    ),
]


def _model_errors() -> tuple[type[Exception], ...]:
    """The errors a bad run, checkpoint, exported model or argument raises: one clear line."""
    from structvision import tasks
    from structvision.export import ExportError

    return (tasks.RecipeError, ValueError, FileNotFoundError, ExportError)


def _crf_parameters(crf: bool, crf_sets: list[str] | None) -> dict[str, float] | None:
    """``None`` (no CRF) or the CRF's keyword arguments from ``--crf-set name=value``."""
    from structvision.models.segmentation.postprocess import check_crf_parameters

    if not crf and not crf_sets:
        return None
    try:
        return check_crf_parameters(_name_values(crf_sets, "--crf-set"))
    except ValueError as error:
        _fail(f"--crf-set: {error}")


def _name_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["name=value", ...]`` from a repeated ``option`` -> ``{name: parsed value}``."""
    from structvision.data.spec import parse_value

    values = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"{option} {item!r} is not of the form name=value")
        values[key.strip()] = parse_value(value.strip())
    return values


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder, checkpoint folder or zoo:NAME.")],
    data: Annotated[str, typer.Option("--data", help="Evaluation data SPEC.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write metrics JSON (optional).")
    ] = None,
    crf: CrfFlag = False,
    crf_sets: CrfSets = None,
    tta: TtaFlag = False,
    backend: BackendOption = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A tracker setting of a sint or siamfc model: refine_steps=2, scale_lr=0.5, "
            "... (as for structvision track).",
        ),
    ] = None,
    relight_normals: RelightNormalsOption = None,
) -> None:
    """Evaluate a trained or exported model on a dataset; prints a table and writes JSON."""
    from structvision import tasks

    crf_parameters = _crf_parameters(crf, crf_sets)
    settings = _name_values(sets, "--set")
    try:
        metrics = tasks.run_eval(
            run,
            data=data,
            out=out,
            crf=crf_parameters,
            tta=tta,
            backend=backend,
            tracker_settings=settings,
            relight_normals=relight_normals,
        )
    except _model_errors() as error:
        _fail(str(error))
    title = f"evaluation of {run}" + (" with flip TTA" if tta else "")
    title += f" relit with the normals of {relight_normals}" if relight_normals else ""
    title += " with the dense CRF" if crf_parameters is not None else ""
    title += f" with tracker settings {settings}" if settings else ""
    print_metrics(title, metrics)


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder, checkpoint folder or zoo:NAME.")],
    images: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders, glob patterns ('photos/*.jpg') or videos; a flow model "
            "predicts from each frame to the next, in the order given."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for overlays, predictions.json, images.json and label maps."
        ),
    ],
    score_threshold: Annotated[
        float,
        typer.Option(
            "--score-threshold",
            min=0.0,
            max=1.0,
            help="Keep (and draw) instances scoring at least this much.",
        ),
    ] = 0.5,
    recursive: Annotated[
        bool,
        typer.Option("--recursive", help="Also take images in sub-folders ('**' in patterns)."),
    ] = False,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Skip unreadable images and name them (default: stop at the first, writing "
            "nothing).",
        ),
    ] = False,
    crf: CrfFlag = False,
    crf_sets: CrfSets = None,
    tta: TtaFlag = False,
    backend: BackendOption = None,
    every: Annotated[
        int, typer.Option("--every", min=1, help="Of a video, take every N-th frame.")
    ] = 1,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, help="Images per model call (mixed sizes are padded)."),
    ] = 1,
    track: Annotated[
        bool,
        typer.Option(
            "--track",
            help="A tracker (sint, siamfc, opencv:NAME) follows --init through one video or "
            "folder of frames (what 'structvision track' does).",
        ),
    ] = False,
    init: Annotated[
        str | None,
        typer.Option("--init", help="--track: the target in the first frame, x,y,w,h (OTB)."),
    ] = None,
    relight_normals: RelightNormalsOption = None,
) -> None:
    """Run a trained or exported model on images and videos; writes overlays and COCO-format
    predictions.json (with --track, a tracker's boxes.txt and frames)."""
    from structvision import tasks

    if track or init is not None:
        if not track or init is None or len(images) != 1:
            _fail("--track follows one video or folder of frames from --init x,y,w,h: give both")
        _track(run, Path(images[0]), init=init, out=out, video=True)
        return
    crf_parameters = _crf_parameters(crf, crf_sets)
    try:
        summary = tasks.run_predict(
            run,
            images=images,
            out=out,
            score_threshold=score_threshold,
            crf=crf_parameters,
            tta=tta,
            recursive=recursive,
            skip_bad=skip_bad,
            backend=backend,
            every=every,
            batch_size=batch_size,
            progress=sys.stderr.isatty(),
            relight_normals=relight_normals,
        )
    except _model_errors() as error:
        _fail(str(error))
    for path, reason in summary.skipped:
        err_console.print(f"skipped {path}: {reason}", highlight=False, soft_wrap=True)
    detections = (
        f", {summary.num_label_maps} label maps"
        if summary.num_label_maps
        else f", {summary.num_detections} detections scoring >= {score_threshold:g}"
    )
    if summary.num_flows:
        console.print(
            f"{summary.num_flows} frame pairs, flow as .flo and _flow.png"
            + (f", {len(summary.skipped)} skipped" if summary.skipped else "")
            + f"; predictions written to {summary.predictions}",
            highlight=False,
            soft_wrap=True,
        )
        return
    console.print(
        f"{summary.num_images} images{detections}"
        + (f", {len(summary.skipped)} skipped" if summary.skipped else "")
        + f"; predictions written to {summary.predictions}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def track(
    run: Annotated[
        str,
        typer.Argument(
            help="A sint or siamfc run, checkpoint or zoo:NAME; or opencv:csrt|kcf|mil."
        ),
    ],
    source: Annotated[Path, typer.Argument(help="A video file or a folder of frames.")],
    init: Annotated[
        str, typer.Option("--init", help="The target in the first frame: x,y,w,h (OTB, 1-based).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for boxes.txt, frames/ and track.avi.")
    ],
    no_video: Annotated[bool, typer.Option("--no-video", help="Write no track.avi.")] = False,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A tracker setting: refine_steps=2, motion_penalty=0.1, scale_lr=0.5, ... "
            "(the SINTTracker's or SiamFCTracker's keyword arguments).",
        ),
    ] = None,
) -> None:
    """Follow one object through a video: boxes as OTB text, the frames with their box."""
    settings = _name_values(sets, "--set")
    _track(run, source, init=init, out=out, video=not no_video, settings=settings)


def _track(
    run: str | Path,
    source: Path,
    *,
    init: str,
    out: Path,
    video: bool,
    settings: dict[str, Any] | None = None,
) -> None:
    from structvision import tasks
    from structvision.export import ExportError
    from structvision.tasks.tracking import run_track

    try:
        result = run_track(run, source, init=init, out=out, video=video, settings=settings)
    except (tasks.RecipeError, ExportError, ValueError, FileNotFoundError) as error:
        _fail(str(error))
    console.print(
        f"tracked {result['frames']} frames at {result['fps']:.1f} fps; boxes in {out / 'boxes.txt'}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def recipes(
    name: Annotated[
        str | None,
        typer.Argument(help="A recipe to describe: its model options and training settings."),
    ] = None,
) -> None:
    """List the trainable recipes, or one recipe's settings with their defaults and meaning."""
    from structvision import tasks
    from structvision.engine.config import describe_settings

    if not tasks.RECIPES:
        console.print(tasks.no_recipes_message())
        return
    if name is None:
        table = Table(title="recipes", header_style="bold")
        table.add_column("name")
        table.add_column("what it trains")
        for recipe_name, recipe in sorted(tasks.RECIPES.items()):
            table.add_row(recipe_name, recipe.summary)
        console.print(table)
        console.print("'structvision recipes NAME' lists a recipe's settings.")
        return
    try:
        recipe = tasks.get_recipe(name)
    except tasks.RecipeError as error:
        _fail(str(error))
    console.print(f"[bold]{recipe.name}[/]: {recipe.summary}", highlight=False)
    options = Table(title="model options (--set model.NAME=VALUE)", header_style="bold")
    options.add_column("option")
    options.add_column("meaning")
    for option in recipe.model_options:
        options.add_row(f"model.{option}", tasks.MODEL_OPTION_HELP.get(option, ""))
    console.print(options)
    table = Table(title="training settings (--set NAME=VALUE)", header_style="bold")
    table.add_column("setting")
    table.add_column("default", justify="right")
    table.add_column("meaning")
    for setting, (default, meaning) in describe_settings(recipe.train_defaults).items():
        table.add_row(setting, repr(default), meaning.replace("``", ""))
    console.print(table)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder, checkpoint folder or zoo:NAME.")],
    out: Annotated[Path, typer.Option("--out", help="The export folder to write.")],
    format: Annotated[
        str,
        typer.Option(
            "--format", help="Export format: onnx, openvino (its IR) or torchscript (libtorch)."
        ),
    ] = "onnx",
    data: Annotated[
        str | None,
        typer.Option("--data", help="Data SPEC the export is checked on (default: built-in)."),
    ] = None,
    num_images: Annotated[
        int, typer.Option("--images", min=1, help="Samples the export is checked on.")
    ] = 3,
    check: Annotated[
        bool,
        typer.Option("--check", help="Fail (writing nothing) when the exported model disagrees."),
    ] = False,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Quantise the checked graphs to int8 (ONNX Runtime static quantisation).",
        ),
    ] = False,
    calibration_data: Annotated[
        str | None,
        typer.Option("--calibration-data", help="--int8: training data SPEC (default: --data's)."),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, help="--int8: calibration samples.")
    ] = 16,
    calibration_method: Annotated[
        str,
        typer.Option("--calibration-method", help="--int8: minmax, percentile or entropy."),
    ] = "minmax",
) -> None:
    """Export a trained model (ONNX, optionally int8) and compare it with the PyTorch model."""
    from structvision.export import export_model

    try:
        report = export_model(
            str(run),
            out=out,
            format=format,
            data=data,
            num_images=num_images,
            check=check,
            int8=int8,
            calibration_data=calibration_data,
            calibration_images=calibration_images,
            calibration_method=calibration_method,
        )
    except _model_errors() as error:
        _fail(str(error))
    table = Table(
        title=f"{report.recipe} exported to {report.path} ({report.format}, "
        f"{report.file_bytes / 1e6:.1f} MB, {report.seconds:.1f} s)",
        header_style="bold",
    )
    for column in ("output", "largest difference", "of values up to", "within tolerance"):
        table.add_column(column)
    failures = {line.split(":")[0] for line in report.failures()}
    for key, value in report.differences.items():
        kind = "labels differing" if key in report.integer_outputs else "abs"
        scale = "" if key in report.integer_outputs else f"{report.scales.get(key, 0.0):.3g}"
        table.add_row(key, f"{value:.3g} ({kind})", scale, "no" if key in failures else "yes")
    console.print(table)
    console.print("compared on: " + "; ".join(report.checked_inputs), highlight=False)
    if report.int8_differences is not None:
        differences = ", ".join(f"{k} {v:.3g}" for k, v in report.int8_differences.items())
        console.print(
            f"int8 model (checked as float above): largest differences {differences}; its "
            "accuracy cost: structvision benchmark RUN --formats torch,int8 --data SPEC",
            highlight=False,
        )


@app.command()
def benchmark(
    run: Annotated[
        Path, typer.Argument(help="Run folder, checkpoint folder, zoo:NAME or export folder.")
    ],
    data: Annotated[str, typer.Option("--data", help="Data SPEC the metric is measured on.")],
    formats: Annotated[
        str,
        typer.Option(
            "--formats",
            help="Comma-separated formats: torch, onnx, openvino, int8, openvino-int8.",
        ),
    ] = "torch,onnx,openvino",
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads.")] = 2,
    speed_images: Annotated[
        int, typer.Option("--speed-images", min=1, help="Images the speed is timed on.")
    ] = 10,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            min=1,
            help="Timing rounds; the formats take turns in each, and each keeps its fastest.",
        ),
    ] = 3,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the rows as JSON (optional).")
    ] = None,
    exported: Annotated[
        Path | None,
        typer.Option("--export", help="An export folder of this model to time (default: export)."),
    ] = None,
) -> None:
    """Each format's file size, metric and milliseconds per image, against PyTorch eager
    (formats timed in alternating rounds, so that a change of load hits them all alike)."""
    from structvision.engine.files import write_json_atomic
    from structvision.export.benchmark import benchmark as run_benchmark

    try:
        rows = run_benchmark(
            str(run),
            data=data,
            formats=tuple(name.strip() for name in formats.split(",") if name.strip()),
            threads=threads,
            speed_images=speed_images,
            rounds=rounds,
            exported=exported,
        )
    except _model_errors() as error:
        _fail(str(error))
    table = Table(title=f"benchmark of {run} on {data} ({threads} threads)", header_style="bold")
    for column in ("format", "size (MB)", "metric", "ms / image", "images / s", "vs torch"):
        table.add_column(column)
    for row in rows:
        speedup = "" if row.speedup is None else f"{row.speedup:.2f}x"
        table.add_row(
            row.format,
            f"{row.file_mb:.1f}",
            f"{row.metric} {row.value:.4f}",
            f"{row.ms_per_image:.1f}",
            f"{row.images_per_second:.1f}",
            speedup,
        )
    console.print(table)
    if out is not None:
        write_json_atomic(out, {"data": data, "rows": [row.as_dict() for row in rows]})


@app.command()
def zoo() -> None:
    """List the trained models shipped with the package (use them as zoo:NAME)."""
    from structvision.zoo import zoo_entries

    entries = zoo_entries()
    if not entries:
        console.print("the zoo has no entries yet")
        return
    table = Table(title="model zoo (eval / predict zoo:NAME)", header_style="bold")
    for column in ("name", "task", "recipe", "size", "metrics", "trained with"):
        table.add_column(column)
    for entry in entries.values():
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in entry.metrics.items())
        size = f"{entry.size_bytes / 1e6:.1f} MB"
        table.add_row(f"zoo:{entry.name}", entry.task, entry.recipe, size, metrics, entry.command)
    console.print(table)


@app.command()
def demo(
    quick: Annotated[
        bool, typer.Option("--quick", help="A shorter tour (about 2 minutes).")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's outputs.")] = Path(
        "structvision-demo"
    ),
) -> None:
    """A guided tour on built-in data: writes PNGs, JSON and an HTML page."""
    from structvision.demo import run_demo

    try:
        run_demo(out=out, quick=quick, console=console)
    except (ValueError, FileExistsError) as error:
        _fail(str(error))


def main() -> None:
    """Entry point of the ``structvision`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
