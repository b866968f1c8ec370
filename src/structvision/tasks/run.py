"""What ``structvision train``, ``eval`` and ``predict`` do, as plain functions.

The command line parses arguments and prints; these functions do the work and can be called
from Python just the same.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from structvision.data.spec import build_dataset, parse_value
from structvision.tasks.registry import Recipe, RecipeError, get_recipe

__all__ = ["load_trained_model", "run_eval", "run_predict", "run_train"]

#: How many validation images get an overlay in a run's ``predictions/`` folder.
NUM_PREDICTION_OVERLAYS = 8


def _is_rank_zero() -> bool:
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
    """``{"model.num_classes": "7", "lr": "0.01"}`` -> ``({"num_classes": 7}, {"lr": 0.01})``."""
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
            train_overrides[key] = parse_value(text)
    return model_overrides, train_overrides


def run_train(
    recipe_name: str,
    *,
    data: str,
    out: str | Path,
    val_data: str | None = None,
    max_steps: int | None = None,
    devices: int | None = None,
    num_nodes: int | None = None,
    overrides: dict[str, str] | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Train ``recipe_name`` on ``data`` into the run folder ``out``; returns the final metrics.

    ``overrides`` are ``--set`` pairs: ``model.KEY`` changes the model's construction,
    any other key a `TrainConfig` field. An existing run folder is never overwritten: continue
    it with ``resume=True`` or choose a new folder.
    """
    from structvision.engine import fit

    recipe = get_recipe(recipe_name)
    model_overrides, train_overrides = _split_overrides(recipe, overrides or {})
    out = Path(out)
    if resume and not (out / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: run folder {out} has no checkpoints/ to resume from")
    if not resume and out.exists() and any(out.iterdir()) and _is_rank_zero():
        raise FileExistsError(
            f"run folder {out} is not empty; pass --resume to continue that run or choose a new --out"
        )
    task = recipe.setup(data=data, val_data=val_data, model_overrides=model_overrides)
    for key, value in (("max_steps", max_steps), ("devices", devices), ("num_nodes", num_nodes)):
        if value is not None:
            train_overrides[key] = value
    config = task.train_config.replace(**train_overrides)
    metrics = fit(
        model=task.model,
        train_dataset=task.train_dataset,
        val_dataset=task.val_dataset,
        config=config,
        out_dir=out,
        collate_fn=task.collate_fn,
        model_config=task.model_config,
        evaluator_factory=task.evaluator_factory,
        resume=resume,
    )
    if _is_rank_zero() and task.val_dataset is not None:
        _write_run_outputs(recipe, task.model, task.model_config, task.val_dataset, out, metrics)
    return metrics


def _write_run_outputs(
    recipe: Recipe, model: nn.Module, model_config: dict, dataset: Any, out: Path, metrics: dict
) -> None:
    """Overlays of a few validation images in ``predictions/`` and ``report.html``."""
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
            image, _ = dataset[index]
            prediction = _to_cpu(model([image.to(device)])[0])
            path = save_png(
                _draw(recipe, image, prediction, model_config),
                out / "predictions" / f"val_{index:04d}.png",
            )
            images.append((path, f"validation image {index}"))
    sections = [ReportSection("Final evaluation", table=metrics)]
    metrics_file = out / "metrics.jsonl"
    if metrics_file.is_file():
        plot = plot_training_curves(read_metrics_jsonl(metrics_file), out / "loss.png")
        if plot is not None:
            sections.append(ReportSection("Training losses", images=[(plot, "loss per step")]))
    sections.append(ReportSection("Predictions on validation images", images=images))
    write_html_report(out / "report.html", title=f"{recipe.name}: {out.name}", sections=sections)


def _to_cpu(prediction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in prediction.items()}


def _draw(recipe: Recipe, image: torch.Tensor, prediction: dict, model_config: dict):
    """The recipe's overlay of ``prediction`` on ``image``, ``(3, H', W')`` uint8."""
    class_names = model_config.get("class_names", ())
    if recipe.draw is not None and recipe.takes_model_config:
        return recipe.draw(image, prediction, class_names, model_config=model_config)
    if recipe.draw is not None:
        return recipe.draw(image, prediction, class_names)
    from structvision.viz import draw_instances

    scale = max(1, 256 // max(image.shape[-2:]))
    return draw_instances(image, prediction, class_names=class_names, scale=scale)


def load_trained_model(path: str | Path) -> tuple[Recipe, nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run or checkpoint folder: ``(recipe, model, model_config)``.

    The model is in eval mode, on the GPU when one is available.
    """
    from structvision.engine import load_model_weights, read_checkpoint_config, resolve_checkpoint

    checkpoint = resolve_checkpoint(path)
    model_config = read_checkpoint_config(checkpoint)["model"]
    name = model_config.get("recipe") if isinstance(model_config, dict) else None
    if not name:
        raise RecipeError(f"checkpoint {checkpoint}: config.json does not name the model's recipe")
    try:
        recipe = get_recipe(name)
    except RecipeError as error:
        raise RecipeError(f"checkpoint {checkpoint} was trained with {error}") from error
    model = recipe.build_model(**model_config.get("kwargs", {}))
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
) -> dict[str, float]:
    """Evaluate the model of ``run`` on ``data``; metrics are written as JSON and returned.

    Without ``out`` the JSON goes to ``RUN/eval/<data>.json`` (``<data>.crf.json`` with the
    CRF). Evaluators that can write their predictions (COCO) also write them beside it, as
    ``<name>.predictions.json`` in the COCO results format. ``crf`` (a dict of `dense_crf`
    parameters, ``{}`` for its defaults) refines semantic segmentations with the dense CRF
    before they are scored. ``tta`` averages an R-CNN over each image and its mirror image
    (:class:`~structvision.models.detection.tta.FlipTTA`; ``<data>.tta.json``).
    """
    from structvision.engine import evaluate
    from structvision.engine.files import write_json_atomic

    recipe, model, model_config = load_trained_model(run)
    model = _with_tta(model, recipe, model_config, tta)
    model = _with_crf(model, recipe, crf)
    dataset = build_dataset(data, split="val")
    evaluator = recipe.evaluator_for(dataset, model_config)
    metrics = evaluate(
        model=model, dataset=dataset, evaluator=evaluator, collate_fn=recipe.collate_fn
    )
    suffix = (".tta" if tta else "") + (".crf" if crf is not None else "") + ".json"
    target = Path(out) if out is not None else Path(run) / "eval" / f"{_slug(data)}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"data": data, "recipe": recipe.name, "metrics": metrics}
    if crf is not None:
        record["crf"] = crf
    if tta:
        record["tta"] = "flip"
    write_json_atomic(target, record)
    if hasattr(evaluator, "results_json"):
        evaluator.results_json(target.with_name(target.stem + ".predictions.json"))
    return metrics


def _read_image(path: Path) -> torch.Tensor:
    """``(3, H, W)`` float in [0, 1]; a missing or unreadable file raises naming it."""
    from structvision.data.coco import read_rgb_image

    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    return read_rgb_image(path)


def run_predict(
    run: str | Path,
    *,
    images: Sequence[str | Path],
    out: str | Path,
    score_threshold: float = 0.5,
    crf: dict[str, float] | None = None,
    tta: bool = False,
) -> Path:
    """Predict on image files: overlays ``OUT/<name>.png`` and ``OUT/predictions.json``.

    ``predictions.json`` lists instance predictions in the COCO results format
    (``bbox`` as xywh pixels, ``category_id`` mapped back to the training data's ids, and for
    instance models ``segmentation`` as compressed RLE and ``keypoints`` as flat
    ``[x, y, v, ...]``) with a ``file_name`` field naming the input image. Every image is read
    before anything is written. With ``crf`` (a dict of `dense_crf` parameters, ``{}`` for its
    defaults) a semantic segmentation is refined by the fully connected CRF before it is drawn;
    with ``tta`` an R-CNN is averaged over each image and its mirror image.
    """
    from structvision.engine.files import write_json_atomic
    from structvision.viz import save_png

    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("predict needs at least one image")
    loaded = [_read_image(p) for p in paths]  # fails on a bad file before writing anything
    recipe, model, model_config = load_trained_model(run)
    device = next(model.parameters()).device
    model = _with_tta(model, recipe, model_config, tta)
    model = _with_crf(model, recipe, crf)
    to_category = {int(k): v for k, v in model_config.get("label_to_category_id", {}).items()}
    out = Path(out)
    paths_stems = [p.stem for p in paths]  # equal names from different folders get an index
    results = []
    with torch.no_grad():
        for index, (path, image) in enumerate(zip(paths, loaded, strict=True)):
            prediction = _to_cpu(model([image.to(device)])[0])
            if "scores" in prediction:
                keep = prediction["scores"] >= score_threshold
                prediction = {
                    k: v[keep] if torch.is_tensor(v) and v.ndim and len(v) == len(keep) else v
                    for k, v in prediction.items()
                }
            name = path.stem if paths_stems.count(path.stem) == 1 else f"{path.stem}_{index}"
            save_png(_draw(recipe, image, prediction, model_config), out / f"{name}.png")
            results += _instance_results(path.name, prediction, to_category)
    target = out / "predictions.json"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target, results)
    return target


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
