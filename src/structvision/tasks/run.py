"""What ``structvision train``, ``eval`` and ``predict`` do, as plain functions.

The command line parses arguments and prints; these functions do the work and can be called
from Python just the same.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from structvision.data.spec import build_dataset, parse_value
from structvision.data.video import VIDEO_SUFFIXES, check_video, iter_video_frames
from structvision.tasks.predictor import draw_prediction
from structvision.tasks.registry import INIT_ONLY_OPTIONS, Recipe, RecipeError, get_recipe

__all__ = ["is_rank_zero", "load_trained_model", "run_eval", "run_predict", "run_train"]

#: How many validation images get an overlay in a run's ``predictions/`` folder.
NUM_PREDICTION_OVERLAYS = 8


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, also before the process group exists (the
    processes that Fabric or torchrun start carry their rank in the environment)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    if "RANK" in os.environ:  # torchrun
        return int(os.environ["RANK"]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def _split_overrides(
    recipe: Recipe, overrides: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"model.num_classes": "7", "lr": "0.01"}`` -> ``({"num_classes": 7}, {"lr": 0.01})``.

    Training settings are checked one by one against `TrainConfig` (name, type and range), so a
    bad value is refused with its ``--set`` name before anything is built.
    """
    model_overrides, train_overrides = {}, {}
    for key, text in overrides.items():
        if key.startswith("model."):
            name = key.removeprefix("model.")
            if name not in recipe.model_options:
                options = ", ".join(f"model.{o}" for o in recipe.model_options) or "none"
                raise RecipeError(
                    f"--set {key}: recipe {recipe.name!r} has no model option {name!r} "
                    f"(model options: {options})"
                )
            model_overrides[name] = parse_value(text)
        else:
            train_overrides[key] = _checked_setting(key, parse_value(text), text=text)
    return model_overrides, train_overrides


def _checked_setting(key: str, value: Any, *, text: str | None = None) -> Any:
    """``value`` for the `TrainConfig` field ``key``, or a `RecipeError` naming ``--set key``."""
    from structvision.engine import TrainConfig
    from structvision.engine.config import describe_settings

    shown = text if text is not None else repr(value)
    if key not in describe_settings():
        known = ", ".join(sorted(describe_settings()))
        raise RecipeError(f"--set {key}={shown}: unknown setting {key!r}; settings: {known}")
    try:
        checked = TrainConfig().replace(**{key: value})
    except (TypeError, ValueError) as error:
        reason = str(error).removeprefix(f"TrainConfig.{key} ")
        raise RecipeError(f"--set {key}={shown}: {key} {reason}") from None
    return getattr(checked, key)


#: `TrainConfig` fields a resumed run may change: its length, how often it logs, evaluates and
#: saves, and the processes it runs on. Every other setting is fixed for the life of a run.
RESUMABLE_SETTINGS = (
    "max_steps",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "devices",
    "num_nodes",
    "num_workers",
    "progress",
)


@dataclass
class _RunPlan:
    """What `run_train` builds: data, model overrides, training settings and the run record."""

    data: str
    val_data: str | None
    model_overrides: dict[str, Any]
    train_overrides: dict[str, Any]
    saved: dict[str, Any] | None = None  # the run's config.json when resuming
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _read_run_record(out: Path) -> dict[str, Any]:
    """The run folder's ``config.json``, with errors that name it."""
    path = out / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {path} does not exist; {out} is not a run folder")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RecipeError(f"--resume: {path} is not readable JSON ({error})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        raise RecipeError(f"--resume: {path} has no 'train' settings; it was not written by a run")
    if not isinstance(saved.get("model"), dict):
        raise RecipeError(f"--resume: {path} has no 'model' record")
    return saved


def _plan_resume(
    recipe: Recipe,
    out: Path,
    *,
    data: str | None,
    val_data: str | None,
    model_overrides: dict[str, Any],
    train_overrides: dict[str, Any],
) -> _RunPlan:
    """Continue ``out`` with its saved settings; refuse an explicit change that cannot apply."""
    if not (out / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: run folder {out} has no checkpoints/ to resume from")
    saved = _read_run_record(out)
    saved_recipe = saved["model"].get("recipe")
    if saved_recipe not in (None, recipe.name):
        raise RecipeError(
            f"--resume: {out} was trained with recipe {saved_recipe!r}, not {recipe.name!r}"
        )
    saved_kwargs = saved["model"].get("kwargs", {})
    saved_train = saved["train"]
    refused = [
        f"model.{key}={value!r} (the run has {saved_kwargs.get(key)!r})"
        for key, value in model_overrides.items()
        if saved_kwargs.get(key) != value
    ]
    for name, value in (("--data", data), ("--val-data", val_data)):
        recorded = saved.get(name.removeprefix("--").replace("-", "_"))
        if value is not None and recorded is not None and value != recorded:
            refused.append(f"{name} {value} (the run has {recorded})")
    changes = {}
    for key, value in train_overrides.items():
        if saved_train.get(key) == value:
            continue
        if key in RESUMABLE_SETTINGS:
            changes[key] = (saved_train.get(key), value)
        else:
            refused.append(f"{key}={value!r} (the run has {saved_train.get(key)!r})")
    if refused:
        raise RecipeError(
            "--resume continues a run with its saved settings; only "
            f"{', '.join(RESUMABLE_SETTINGS)} may change. Refused: {'; '.join(refused)}. "
            "Start a new run (another --out) to change the others."
        )
    data = saved.get("data") or data
    if data is None:
        raise RecipeError(f"--resume: {out}/config.json does not record the data; pass --data")
    recorded_overrides = saved.get("overrides", {}).get("model")
    if recorded_overrides is None:  # a run from before the overrides were recorded
        recorded_overrides = {k: v for k, v in saved_kwargs.items() if k != "num_classes"}
    return _RunPlan(
        data=data,
        val_data=saved.get("val_data", val_data),
        model_overrides=dict(recorded_overrides),
        train_overrides={**saved_train, **{key: new for key, (_, new) in changes.items()}},
        saved=saved,
        changes=changes,
    )


def _without_init_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model kwargs without those that only choose initial weights (a checkpoint has them all)."""
    return {key: value for key, value in kwargs.items() if key not in INIT_ONLY_OPTIONS}


def _resumed_model_overrides(recipe: Recipe, overrides: dict[str, Any]) -> dict[str, Any]:
    """The model options a resumed run is rebuilt with: its checkpoint holds every weight, so
    no initial weights are read, not even a recipe's default pretrained trunk."""
    kept = _without_init_options(overrides)
    if "pretrained" in recipe.model_options:
        kept["pretrained"] = "none"
    return kept


def _rebuilt_as_saved(recipe: Recipe, task: Any, saved_model: dict[str, Any]) -> Any:
    """``task`` with its model rebuilt from the run's saved model options, as eval and predict
    rebuild it: defaults the recipe has gained since the run started (a head, a normalisation)
    do not apply to it. What the data decides (e.g. ``num_classes``) must still agree, else the
    data changed under the run."""
    from dataclasses import replace

    saved = _without_init_options(saved_model.get("kwargs", {}))
    built = _without_init_options(task.model_config.get("kwargs", {}))
    from_data = [k for k in built if k not in recipe.model_options and k in saved]
    changed = {k: (saved.get(k), built[k]) for k in from_data if saved.get(k) != built[k]}
    if changed:
        said = "; ".join(
            f"{k}: the run has {old!r}, the data now gives {new!r}"
            for k, (old, new) in changed.items()
        )
        raise RecipeError(f"--resume: the data no longer matches the run's model ({said})")
    return replace(task, model=recipe.build_model(**saved))


def _say(message: str) -> None:
    if is_rank_zero():
        print(message, flush=True)


def run_train(
    recipe_name: str,
    *,
    data: str | None = None,
    out: str | Path,
    val_data: str | None = None,
    max_steps: int | None = None,
    devices: int | None = None,
    num_nodes: int | None = None,
    seed: int | None = None,
    overrides: dict[str, str] | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Train ``recipe_name`` on ``data`` into the run folder ``out``; returns the final metrics.

    ``overrides`` are ``--set`` pairs: ``model.KEY`` changes the model's construction, any other
    key a `TrainConfig` field; each is checked before anything is built. ``seed`` (default 0)
    seeds every generator before the model is built, so the same command gives the same weights.
    An existing run folder is never overwritten: continue it with ``resume=True`` or choose a new
    folder. A resumed run keeps its saved data, model and settings; only `RESUMABLE_SETTINGS`
    passed explicitly change (printed, and recorded in ``config.json``'s ``history``), anything
    else passed that differs is refused before anything in the run folder is written.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM stopped the run after a checkpoint was written.
    """
    from structvision.engine import fit
    from structvision.engine.rng import seed_all

    recipe = get_recipe(recipe_name)
    out = Path(out)
    model_overrides, train_overrides = _split_overrides(recipe, overrides or {})
    flags = {"max_steps": max_steps, "devices": devices, "num_nodes": num_nodes, "seed": seed}
    for key, value in flags.items():
        if value is not None:
            train_overrides[key] = _checked_setting(key, value)
    if resume:
        plan = _plan_resume(
            recipe,
            out,
            data=data,
            val_data=val_data,
            model_overrides=model_overrides,
            train_overrides=train_overrides,
        )
    else:
        if data is None:
            raise RecipeError("--data is required to start a run (a resumed run reuses its own)")
        if out.exists() and any(out.iterdir()) and is_rank_zero():
            raise FileExistsError(
                f"run folder {out} is not empty; pass --resume to continue that run or choose a "
                "new --out"
            )
        plan = _RunPlan(data, val_data, model_overrides, train_overrides)
    seed_all(int(plan.train_overrides.get("seed", 0)))  # before the model's weights are drawn
    try:
        task = recipe.setup(
            data=plan.data,
            val_data=plan.val_data,
            model_overrides=_resumed_model_overrides(recipe, plan.model_overrides)
            if resume
            else plan.model_overrides,
        )
    except TypeError as error:
        raise RecipeError(f"recipe {recipe.name!r} with {plan.model_overrides}: {error}") from None
    model_config = task.model_config
    if plan.saved is not None:
        task = _rebuilt_as_saved(recipe, task, plan.saved["model"])
        model_config = plan.saved["model"]  # keeps e.g. weights_path, which the rebuild skips
    try:
        config = task.train_config.replace(**plan.train_overrides)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"training settings: {error}") from None
    for key, (old, new) in plan.changes.items():
        _say(f"resume: {key} {old} -> {new}")
    run_info = {
        "data": plan.data,
        "val_data": plan.val_data,
        "overrides": {"model": plan.model_overrides, "train": _user_train_overrides(plan)},
    }
    metrics = fit(
        model=task.model,
        train_dataset=task.train_dataset,
        val_dataset=task.val_dataset,
        config=config,
        out_dir=out,
        collate_fn=task.collate_fn,
        model_config=model_config,
        evaluator_factory=task.evaluator_factory,
        resume=resume,
        run_info=run_info,
    )
    if is_rank_zero() and task.val_dataset is not None:
        _write_run_outputs(recipe, task.model, model_config, task.val_dataset, out, metrics)
    return metrics


def _user_train_overrides(plan: _RunPlan) -> dict[str, Any]:
    """The training settings the user chose (not the recipe's defaults), for ``config.json``."""
    if plan.saved is not None:
        recorded = dict(plan.saved.get("overrides", {}).get("train", {}))
        return {**recorded, **{key: new for key, (_, new) in plan.changes.items()}}
    return dict(plan.train_overrides)


def _write_run_outputs(
    recipe: Recipe, model: nn.Module, model_config: dict, dataset: Any, out: Path, metrics: dict
) -> None:
    """Overlays of a few validation images in ``predictions/`` and ``report.html``."""
    from structvision.engine.data import move_to_device
    from structvision.viz import (
        ReportSection,
        plot_training_curves,
        read_metrics_jsonl,
        save_png,
        write_html_report,
    )

    device = next(model.parameters()).device
    model.eval()
    images = []
    with torch.no_grad():
        for index in range(min(NUM_PREDICTION_OVERLAYS, len(dataset))):
            image, target = dataset[index]
            given = image if recipe.model_input is None else recipe.model_input(image, target)
            prediction = _to_cpu(model([move_to_device(given, device)])[0])
            path = save_png(
                draw_prediction(recipe, image, prediction, model_config, target=target),
                out / "predictions" / f"val_{index:04d}.png",
            )
            images.append((path, f"validation image {index}"))
    sections = [ReportSection("Final evaluation", table=metrics)]
    metrics_file = out / "metrics.jsonl"
    if metrics_file.is_file():
        plot = plot_training_curves(read_metrics_jsonl(metrics_file), out / "loss.png")
        if plot is not None:
            sections.append(ReportSection("Training losses", images=[(plot, "loss per step")]))
    if recipe.report_sections is not None:
        sections += recipe.report_sections(model, dataset, model_config)
    sections.append(ReportSection("Predictions on validation images", images=images))
    write_html_report(out / "report.html", title=f"{recipe.name}: {out.name}", sections=sections)


def _to_cpu(prediction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in prediction.items()}


def load_trained_model(
    path: str | Path, *, backend: str | None = None
) -> tuple[Recipe, nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run or checkpoint folder, or ``zoo:NAME``:
    ``(recipe, model, model_config)``; or load an exported model (an export folder or its
    model file, see :mod:`structvision.export`) to run on ``backend`` (default: ONNX Runtime
    for ONNX files, OpenVINO for its IR), with the same call contract.

    The model is in eval mode, on the GPU when one is available.
    """
    from structvision.engine import load_model_weights, read_checkpoint_config, resolve_checkpoint
    from structvision.inference import is_export
    from structvision.zoo import is_zoo_name, zoo_path

    if not is_zoo_name(path) and is_export(path):
        from structvision.inference import load as load_exported

        exported = load_exported(path, backend=backend)
        return get_recipe(exported.recipe), exported, exported.model_config
    if backend is not None and backend != "torch":
        raise RecipeError(
            f"--backend {backend} runs exported models; {path} is a trained PyTorch model "
            "(export it first: structvision export)"
        )
    checkpoint = resolve_checkpoint(zoo_path(path) if is_zoo_name(path) else path)
    model_config = read_checkpoint_config(checkpoint)["model"]
    name = model_config.get("recipe") if isinstance(model_config, dict) else None
    if not name:
        raise RecipeError(
            f"checkpoint {checkpoint}: config.json does not name the model's recipe; for eval "
            "and predict to rebuild a model trained with fit(), its model_config must hold "
            "'recipe' (a name from 'structvision recipes') and 'kwargs' (the arguments of that "
            "recipe's model builder)"
        )
    try:
        recipe = get_recipe(name)
    except RecipeError as error:
        raise RecipeError(f"checkpoint {checkpoint} was trained with {error}") from error
    # The checkpoint holds every weight: options that only chose initial weights (a file that
    # may be gone by now) are not read again.
    model = recipe.build_model(**_without_init_options(model_config.get("kwargs", {})))
    load_model_weights(model, checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return recipe, model.to(device).eval(), model_config


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "data"


def _with_crf(model: nn.Module, recipe: Recipe, crf: dict[str, float] | None) -> nn.Module:
    """``model`` followed by the dense CRF when ``crf`` is not None (its parameters)."""
    if crf is None:
        return model
    from structvision.models.segmentation.postprocess import CRFRefiner

    if not recipe.predicts_semantic:
        raise RecipeError(
            f"--crf refines semantic segmentations; recipe {recipe.name!r} predicts none"
        )
    return CRFRefiner(model, **crf).eval()


def _with_relight(model: nn.Module, recipe: Recipe, normals: str | None) -> nn.Module:
    """An intrinsic ``model`` followed by the relighting of its shading with the normals of
    the ``normals`` model (a run or zoo entry of the ``normals`` recipe), when given."""
    if normals is None:
        return model
    from structvision.models.intrinsic import RelitIntrinsic

    if recipe.name != "intrinsic":
        raise RecipeError(
            f"--relight-normals relights an intrinsic model's shading; recipe {recipe.name!r} "
            "predicts none"
        )
    normals_recipe, normals_model, _ = load_trained_model(normals)
    if normals_recipe.name != "normals":
        raise RecipeError(
            f"--relight-normals {normals}: a normals model is needed, this is a "
            f"{normals_recipe.name!r} model"
        )
    return RelitIntrinsic(model, normals_model).eval()


def _with_tta(model: nn.Module, recipe: Recipe, model_config: dict, tta: bool) -> nn.Module:
    """``model`` averaged over each image and its mirror image when ``tta`` is true."""
    if not tta:
        return model
    from structvision.models.detection.tta import FlipTTA

    try:
        return FlipTTA(model, keypoint_flip_pairs=model_config.get("keypoint_flip_pairs"))
    except (TypeError, ValueError) as error:
        raise RecipeError(f"--tta with recipe {recipe.name!r}: {error}") from error


def run_eval(
    run: str | Path,
    *,
    data: str,
    out: str | Path | None = None,
    crf: dict[str, float] | None = None,
    tta: bool = False,
    backend: str | None = None,
    tracker_settings: dict[str, Any] | None = None,
    relight_normals: str | None = None,
) -> dict[str, float]:
    """Evaluate the model of ``run`` on ``data``; metrics are written as JSON and returned.

    Without ``out`` the JSON goes to ``RUN/eval/<data>.json`` (``<data>.crf.json`` with the
    CRF). Evaluators that can write their predictions (COCO) also write them beside it, as
    ``<name>.predictions.json`` in the COCO results format. ``crf`` (a dict of `dense_crf`
    parameters, ``{}`` for its defaults) refines semantic segmentations with the dense CRF
    before they are scored. ``tta`` averages an R-CNN over each image and its mirror image
    (:class:`~structvision.models.detection.tta.FlipTTA`; ``<data>.tta.json``). ``run`` may
    be an exported model, run on ``backend`` (see `load_trained_model`). ``tracker_settings``
    are a sint or siamfc model's tracker keyword arguments (checked as
    :func:`~structvision.tasks.tracking.tracker_for` checks them; ``<data>.<settings>.json``).
    ``relight_normals`` (a normals run or zoo entry) relights an intrinsic model's shading with
    that model's normals (:class:`~structvision.models.intrinsic.RelitIntrinsic`;
    ``<data>.relit.json``).
    """
    from structvision.engine import evaluate
    from structvision.engine.files import write_json_atomic

    recipe, model, model_config = load_trained_model(run, backend=backend)
    model = _with_tta(model, recipe, model_config, tta)
    model = _with_crf(model, recipe, crf)
    model = _with_relight(model, recipe, relight_normals)
    if tracker_settings:
        from structvision.tasks.tracking import with_tracker_settings

        model = with_tracker_settings(recipe.name, str(run), model, tracker_settings)
    dataset = build_dataset(data, split="val", modality=recipe.data_modality)
    evaluator = recipe.evaluator_for(dataset, model_config)
    metrics = evaluate(
        model=model, dataset=dataset, evaluator=evaluator, collate_fn=recipe.collate_fn
    )
    suffix = (".tta" if tta else "") + (".crf" if crf is not None else "")
    suffix += ".relit" if relight_normals is not None else ""
    if tracker_settings:
        suffix += "." + _slug(",".join(f"{k}={v}" for k, v in sorted(tracker_settings.items())))
    suffix += ".json"
    from structvision.zoo import is_zoo_name

    # a zoo entry lives inside the package: its results go to ./zoo-eval/NAME/ instead
    folder = Path("zoo-eval") / str(run).removeprefix("zoo:") if is_zoo_name(run) else Path(run)
    target = Path(out) if out is not None else folder / "eval" / f"{_slug(data)}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"data": data, "recipe": recipe.name, "metrics": metrics}
    if crf is not None:
        record["crf"] = crf
    if tta:
        record["tta"] = "flip"
    if tracker_settings:
        record["tracker_settings"] = tracker_settings
    if relight_normals is not None:
        record["relight_normals"] = relight_normals
    write_json_atomic(target, record)
    if hasattr(evaluator, "results_json"):
        evaluator.results_json(target.with_name(target.stem + ".predictions.json"))
    return metrics


#: File suffixes taken from a folder or a glob pattern.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_image_inputs(inputs: Sequence[str | Path], *, recursive: bool = False) -> list[Path]:
    """Files, folders (their images; with ``recursive`` also in sub-folders) and glob patterns
    (``**`` with ``recursive``) -> image paths, in order, each once.

    Raises:
        FileNotFoundError: an input that is no file, no folder, and no pattern matching a file.
    """
    import glob

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.glob("*")
            images = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                where = "or its sub-folders " if recursive else ""
                hint = "" if recursive else " (add --recursive to search sub-folders)"
                raise FileNotFoundError(f"folder {path} {where}holds no image files{hint}")
            paths += images
        elif path.exists():
            paths.append(path)
        elif glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(item), recursive=recursive))
            images = [Path(m) for m in matches if Path(m).is_file()]
            if not images:
                raise FileNotFoundError(f"pattern {item} matches no file")
            paths += images
        else:
            raise FileNotFoundError(f"image {path} does not exist")
    unique = list(dict.fromkeys(paths))
    return unique


@dataclass
class PredictSummary:
    """What `run_predict` wrote: ``predictions.json`` and how many images and detections."""

    predictions: Path
    num_images: int
    num_detections: int
    num_label_maps: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: frame pairs given a flow (optical-flow models; then ``num_images`` counts the pairs)
    num_flows: int = 0


def run_predict(
    run: str | Path,
    *,
    images: Sequence[str | Path],
    out: str | Path,
    score_threshold: float = 0.5,
    crf: dict[str, float] | None = None,
    tta: bool = False,
    backend: str | None = None,
    recursive: bool = False,
    skip_bad: bool = False,
    every: int = 1,
    progress: bool = False,
    batch_size: int = 1,
    relight_normals: str | None = None,
) -> PredictSummary:
    """Predict on image files, folders or glob patterns; write every task's native output.

    Videos give every ``every``-th frame; ``progress`` shows a bar (on stderr) over the images.
    The model takes ``batch_size`` images per call (images of mixed sizes are padded to the
    largest, as in training); images and frames are read as their batch comes, so a long video
    or a large folder is never held in memory.

    * ``OUT/<name>.png``: the overlay, drawn with the same ``score_threshold`` as the JSON.
    * ``OUT/predictions.json``: COCO results, a list that pycocotools' ``loadRes`` takes as it
      is: ``image_id``, ``file_name``, ``category_id`` (the training data's ids), ``score``;
      ``bbox`` (xywh pixels) for detections, plus ``segmentation`` (compressed RLE) for masks
      and ``keypoints`` (flat ``[x, y, v, ...]``) for poses; a semantic segmentation gives one
      RLE entry per image and class present (COCO's stuff-segmentation results format).
    * ``OUT/images.json``: the COCO ``images`` (id, file name, size) and ``categories`` that the
      ids refer to: ``COCO("images.json").loadRes("predictions.json")`` works as it is.
    * ``OUT/<name>_labels.png`` for a semantic segmentation: the label map as a palette PNG
      (pixel value = class index).
    * ``OUT/<name>_depth.png`` and ``OUT/<name>_depth.npy`` for a depth model: the depth in
      metres as KITTI's 16-bit PNG (value / 256 = metres, 0 = none) and as float32 numpy, and
      ``OUT/<name>_disparity.png``, the disparity colour-mapped (near bright, far dark); the
      overlay shows it under the image.
    * ``OUT/<name>_normals.png`` for a normals model (``(n + 1) / 2 * 255``, NYUv2's encoding);
      ``OUT/<name>_albedo.png``/``_shading.png`` (scaled to their maximum: the decomposition
      is up to scale) and ``.npy`` (as predicted) for an intrinsic model.
    * a video file (``VIDEO_SUFFIXES``) gives its frames, named ``<stem>_00000`` and on.
    * for an optical-flow model the images are frames, in the order given (a folder's in name
      order, a video file's in time): for each frame and the next, ``OUT/<name>.flo`` (the
      flow, Middlebury format), ``OUT/<name>_flow.png`` (Middlebury colours) and the overlay;
      ``predictions.json`` lists the pairs with their files and mean flow.

    Every image is read (and every video's first frame decoded) before anything is written: the
    first unreadable one is named and nothing is written, unless ``skip_bad``, which skips and
    lists them. With ``crf`` (dense-CRF
    parameters, ``{}`` for the defaults) a semantic segmentation is refined by the fully
    connected CRF; with ``tta`` an R-CNN is averaged over each image and its mirror image;
    with ``relight_normals`` (a normals run or zoo entry) an intrinsic model's shading is relit
    with that model's normals, which are written too.
    """
    from structvision.engine.files import write_json_atomic
    from structvision.tasks.predictor import as_image, load
    from structvision.viz import colorize_values, save_depth_png, save_label_png, save_png

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    paths = expand_image_inputs(images, recursive=recursive)
    if not paths:
        raise ValueError("predict needs at least one image")
    sources, skipped, expected = [], [], 0
    for path in paths:  # fails on a bad file before writing anything
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                expected += check_video(path, every=every)
            else:
                as_image(path)  # read again when its turn comes: images are not held
                expected += 1
            sources.append(path)
        except (OSError, ValueError) as error:
            if not skip_bad:
                raise ValueError(f"{error} (pass --skip-bad to skip unreadable images)") from None
            skipped.append((path, str(error)))
    if not sources:
        raise ValueError(f"none of the {len(paths)} image(s) could be read")
    frames = _frames_of(sources, every)
    predictor = load(
        run, score_threshold=score_threshold, tta=tta, crf=crf, relight_normals=relight_normals
    )
    if predictor.recipe.data_modality == "tracking":
        raise RecipeError(
            f"{run} is a tracker ({predictor.recipe.name}): it follows one target through a "
            "video; give --track --init x,y,w,h and one video or folder of frames"
        )
    if predictor.recipe.data_modality == "flow":
        return _predict_flow(predictor, frames, Path(out), skipped, _namer(sources))
    model_config = predictor.model_config
    to_category = {int(k): v for k, v in model_config.get("label_to_category_id", {}).items()}
    out = Path(out)
    name_of = _namer(sources)
    results, image_records, num_detections = [], [], 0
    from structvision.engine.progress import ProgressBar

    bar = ProgressBar(description="predict", total=expected, enabled=progress)
    with bar:
        for index, (path, image, prediction) in enumerate(_batched(predictor, frames, batch_size)):
            bar.update(completed=index)
            name = name_of(path, index)
            save_png(predictor.draw(image, prediction), out / f"{name}.png")
            image_id = index + 1
            record = {
                "id": image_id,
                "file_name": str(path),
                "height": int(image.shape[-2]),
                "width": int(image.shape[-1]),
            }
            if "depth" in prediction:
                depth = prediction["depth"].float()
                np.save(out / f"{name}_depth.npy", depth.numpy())
                record["depth"] = save_depth_png(depth, out / f"{name}_depth.png").name
                record["depth_npy"] = f"{name}_depth.npy"
                if "disparity" in prediction:
                    colored = colorize_values(prediction["disparity"], vmin=0.0)
                    record["disparity"] = save_png(colored, out / f"{name}_disparity.png").name
            if "normals" in prediction:
                from structvision.data.intrinsic import write_normal_png

                record["normals"] = write_normal_png(
                    out / f"{name}_normals.png", prediction["normals"]
                ).name
            for layer in ("albedo", "shading"):
                if layer in prediction:
                    values = prediction[layer].float()
                    np.save(out / f"{name}_{layer}.npy", values.numpy())
                    picture = values.expand(3, -1, -1) if values.shape[0] == 1 else values
                    picture = (
                        (picture / picture.max().clamp(min=1e-6) * 255).round().to(torch.uint8)
                    )
                    record[layer] = save_png(picture, out / f"{name}_{layer}.png").name
            if "semantic" in prediction:
                record["label_map"] = save_label_png(
                    prediction["semantic"], out / f"{name}_labels.png"
                ).name
                results += _semantic_results(image_id, path, prediction["semantic"], to_category)
            instances = _instance_results(path.name, prediction, to_category)
            for result in instances:
                result["image_id"] = image_id
            num_detections += len(instances)
            results += instances
            image_records.append(record)
        bar.update(total=len(image_records), completed=len(image_records))
    categories = [
        {"id": to_category.get(label, label), "name": name}
        for label, name in enumerate(predictor.class_names)
        if label > 0
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "images.json", {"images": image_records, "categories": categories})
    target = out / "predictions.json"
    write_json_atomic(target, results)
    num_label_maps = sum("label_map" in record for record in image_records)
    return PredictSummary(target, len(image_records), num_detections, num_label_maps, skipped)


def _frames_of(sources: list[Path], every: int) -> Iterator[tuple[Path, torch.Tensor]]:
    """The images and video frames of ``sources``, read as they are asked for."""
    from structvision.tasks.predictor import as_image

    for path in sources:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            yield from iter_video_frames(path, every=every)
        else:
            yield path, as_image(path)


def _namer(sources: list[Path]) -> Callable[[Path, int], str]:
    """Output names: a file's stem, with its position appended where files from different
    folders share the stem (or a name was already given in this run)."""
    shared = {stem for stem, count in Counter(p.stem for p in sources).items() if count > 1}
    given: set[str] = set()

    def name_of(path: Path, index: int) -> str:
        name = path.stem
        if name in shared or name in given:
            name = f"{path.stem}_{index}"
        given.add(name)
        return name

    return name_of


def _batched(
    predictor: Any, frames: Iterator[tuple[Path, torch.Tensor]], batch_size: int
) -> Iterator[tuple[Path, torch.Tensor, dict]]:
    """``(path, image, prediction)`` for each frame, the model called on ``batch_size`` images
    at a time."""
    while chunk := list(itertools.islice(frames, batch_size)):
        predictions = predictor([image for _, image in chunk], batch_size=batch_size)
        for (path, image), prediction in zip(chunk, predictions, strict=True):
            yield path, image, prediction


def _predict_flow(
    predictor: Any,
    frames: Iterator[tuple[Path, torch.Tensor]],
    out: Path,
    skipped: list,
    name_of: Callable[[Path, int], str],
) -> PredictSummary:
    """Flow between consecutive frames (see `run_predict`)."""
    from structvision.data.flow_io import write_flo
    from structvision.engine.files import write_json_atomic
    from structvision.viz import flow_to_image, save_png

    frames = iter(frames)
    pair = list(itertools.islice(frames, 2))
    if len(pair) < 2:
        raise ValueError(
            f"optical flow needs at least two frames; got {len(pair)} image(s) (give two "
            "images, a folder of frames or a video file)"
        )
    records = []
    pairs = itertools.pairwise(itertools.chain(pair, frames))
    for index, ((path, first), (next_path, second)) in enumerate(pairs):
        prediction = predictor.flow([first, second])[0]
        name = name_of(path, index)
        flow = prediction["flow"].float()
        save_png(predictor.draw(first, prediction), out / f"{name}.png")
        records.append(
            {
                "image_id": index + 1,
                "file_name": str(path),
                "next_file_name": str(next_path),
                "flo": write_flo(out / f"{name}.flo", flow).name,
                "flow_png": save_png(flow_to_image(flow), out / f"{name}_flow.png").name,
                "mean_flow": [round(float(v), 4) for v in flow.mean(dim=(1, 2))],
            }
        )
    target = out / "predictions.json"
    write_json_atomic(target, records)
    return PredictSummary(target, len(records), 0, 0, skipped, num_flows=len(records))


def _semantic_results(
    image_id: int, path: Path, semantic: torch.Tensor, to_category: dict[int, int]
) -> list[dict]:
    """One COCO stuff-segmentation result per class present in ``semantic (H, W)``, the
    background (0) and ignored pixels (255) excluded: ``image_id``, ``category_id``,
    ``segmentation`` as compressed RLE."""
    from structvision.structures import mask_to_rle

    results = []
    for label in semantic.unique().tolist():
        if label in (0, 255):
            continue
        results.append(
            {
                "image_id": image_id,
                "file_name": path.name,
                "category_id": to_category.get(label, label),
                "segmentation": mask_to_rle(semantic == label),
                "score": 1.0,
            }
        )
    return results


def _instance_results(file_name: str, prediction: dict, to_category: dict[int, int]) -> list[dict]:
    """COCO results entries of one image's instances (none when it predicts no ``boxes``).

    Every entry has ``file_name``, ``category_id``, ``bbox`` (xywh pixels) and ``score``; a
    prediction with ``masks`` (``(D, 1, H, W)`` probabilities or ``(D, H, W)`` binary) adds
    ``segmentation`` as compressed RLE of the mask above 0.5, one with ``keypoints (D, K, 3)``
    adds ``keypoints`` as the flat ``[x1, y1, v1, ...]`` list.
    """
    if "boxes" not in prediction:
        return []
    boxes = prediction["boxes"].tolist()
    labels = prediction["labels"].tolist()
    scores = prediction.get("scores", torch.ones(len(boxes))).tolist()
    results = [
        {
            "file_name": file_name,
            "category_id": to_category.get(label, label),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score,
        }
        for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores, strict=True)
    ]
    if "masks" in prediction:
        for result, rle in zip(results, _mask_rles(prediction["masks"]), strict=True):
            result["segmentation"] = rle
    if "keypoints" in prediction:
        keypoints = prediction["keypoints"].float().flatten(1).tolist()  # (D, 3K)
        for result, flat in zip(results, keypoints, strict=True):
            result["keypoints"] = flat
    return results


def _mask_rles(masks: torch.Tensor) -> list[dict]:
    """``(D, 1, H, W)`` or ``(D, H, W)`` masks -> D compressed RLEs (``counts`` as str) of the
    foreground: probabilities above 0.5, or the non-zero pixels of a binary mask."""
    from structvision.structures import mask_to_rle

    if masks.ndim == 4:
        masks = masks[:, 0]
    binary = masks > 0.5 if masks.is_floating_point() else masks != 0  # (D, H, W)
    return [mask_to_rle(mask) for mask in binary]
