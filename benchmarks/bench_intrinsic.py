"""Surface normals and intrinsic images on held-out ``world`` images: the networks trained here
against the baselines.

Normal rows (Fouhey's protocol, every pixel of the set pooled): ``normals`` (recipe defaults),
``normals_joint`` (the same network also predicting depth: Eigen & Fergus's joint model, same
budget), ``from_true_depth`` (finite differences of the exact depth: the geometry's bound at
this resolution), ``from_monodepth`` (of the zoo's Monodepth prediction). Intrinsic rows (MSE,
LMSE, WHDR on 300 pairs per image drawn from the true albedo): ``intrinsic``, ``retinex``,
``albedo_is_image``, oracles ``true_albedo_noise_P``: the true albedo with every pixel
multiplied by ``exp(P% * N(0, 1))`` (what WHDR asks of a prediction's precision),
``true_shading_blur_F``: the albedo as the image over the true shading averaged over FxF
blocks and upsampled bilinearly (what a shading exact but coarse gives), and the
shipped ``zoo:intrinsic_world`` with its albedo as the image over its shading (``zoo_intrinsic``,
the default) or from its albedo head (``zoo_intrinsic_head``); its shading relit under a global Lambertian
light fitted to it (``relight_shading``) with the normals of ``zoo:normals_world``, one light
(``zoo_intrinsic_relit``) or two (``zoo_intrinsic_relit_2``), or with the true normals
(``zoo_intrinsic_relit_true_normals``); the true shading relit the same way, two lights, true
normals (``true_shading_relit``: what the lighting model itself loses). ``intrinsic_model`` scores
``--intrinsic-model`` (a run or zoo entry) without relighting, ``intrinsic_model_relit`` relit
with its own normals head (``model.with_normals``).

    python benchmarks/bench_intrinsic.py --rows from_true_depth,from_monodepth,retinex,albedo_is_image
    python benchmarks/bench_intrinsic.py --rows true_albedo_noise_2,true_albedo_noise_5,true_albedo_noise_10
    python benchmarks/bench_intrinsic.py --rows true_shading_blur_2,true_shading_blur_4,true_shading_blur_8
    python benchmarks/bench_intrinsic.py --rows zoo_intrinsic,zoo_intrinsic_head
    python benchmarks/bench_intrinsic.py --rows zoo_intrinsic_relit,zoo_intrinsic_relit_2
    python benchmarks/bench_intrinsic.py --rows intrinsic_model,intrinsic_model_relit --intrinsic-model RUN
    python benchmarks/bench_intrinsic.py --rows normals,normals_joint,intrinsic --out runs/bench_intrinsic
    python benchmarks/bench_intrinsic.py --rows normals --resume   # after a SIGTERM
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from structvision.data.spec import build_dataset
from structvision.engine.signals import TrainingInterrupted
from structvision.evaluation.intrinsic import IntrinsicEvaluator, NormalEvaluator
from structvision.models.intrinsic import normals_from_depth, relight_shading, retinex
from structvision.tasks import load_trained_model, run_train

NORMAL_ROWS = ("normals", "normals_joint", "from_true_depth", "from_monodepth")
ORACLE_NOISE = {
    "true_albedo_noise_2": 0.02,
    "true_albedo_noise_5": 0.05,
    "true_albedo_noise_10": 0.10,
}
SHADING_BLUR = {"true_shading_blur_2": 2, "true_shading_blur_4": 4, "true_shading_blur_8": 8}
ZOO_ROWS = ("zoo_intrinsic", "zoo_intrinsic_head")
# --intrinsic-model as it is, or relit with its own normals head
MODEL_ROWS = ("intrinsic_model", "intrinsic_model_relit")
# shading relit under a fitted global light: (lights, normals from, shading from)
RELIT = {
    "zoo_intrinsic_relit": (1, "zoo:normals_world", "zoo:intrinsic_world"),
    "zoo_intrinsic_relit_2": (2, "zoo:normals_world", "zoo:intrinsic_world"),
    "zoo_intrinsic_relit_true_normals": (1, "true", "zoo:intrinsic_world"),
    "true_shading_relit": (2, "true", "true"),
}
INTRINSIC_ROWS = (
    "intrinsic",
    "retinex",
    "albedo_is_image",
    *ORACLE_NOISE,
    *SHADING_BLUR,
    *ZOO_ROWS,
    *RELIT,
    *MODEL_ROWS,
)


def _baseline(name: str, dataset, args: argparse.Namespace) -> dict:
    evaluator = IntrinsicEvaluator() if name in INTRINSIC_ROWS else NormalEvaluator()
    depth_model = load_trained_model("zoo:monodepth_world")[1] if name == "from_monodepth" else None
    _, normals_from, shading_from = RELIT.get(name, (0, "true", "true"))
    uses_zoo = name in ZOO_ROWS or shading_from == "zoo:intrinsic_world"
    intrinsic_model = load_trained_model("zoo:intrinsic_world")[1] if uses_zoo else None
    normals_model = None if normals_from == "true" else load_trained_model(normals_from)[1]
    if intrinsic_model is not None:
        intrinsic_model.albedo_from_image = name == "zoo_intrinsic"
    if name in MODEL_ROWS:
        intrinsic_model = load_trained_model(args.intrinsic_model)[1]
        if name == "intrinsic_model_relit" and not getattr(intrinsic_model, "with_normals", False):
            raise SystemExit(
                f"row {name}: {args.intrinsic_model} has no normals head to relight with"
            )
        intrinsic_model.relight = name == "intrinsic_model_relit"
    started = time.perf_counter()
    with torch.inference_mode():
        for index in range(len(dataset)):
            image, target = dataset[index]
            if name == "from_true_depth":
                prediction = {
                    "normals": normals_from_depth(target["depth"], target["intrinsics"])[0]
                }
            elif name == "from_monodepth":
                depth = depth_model([image])[0]["depth"].float().cpu()
                prediction = {"normals": normals_from_depth(depth, target["intrinsics"])[0]}
            elif name in ORACLE_NOISE:  # the true albedo, each pixel off by a random factor
                generator = torch.Generator().manual_seed(index)
                noise = torch.randn(target["albedo"].shape[-2:], generator=generator)
                albedo = target["albedo"] * torch.exp(ORACLE_NOISE[name] * noise)
                prediction = {"albedo": albedo, "shading": target["shading"]}
            elif name in SHADING_BLUR:  # the true shading, coarse: block means, upsampled
                blocks = F.avg_pool2d(target["shading"][None], SHADING_BLUR[name])
                shading = F.interpolate(
                    blocks, size=image.shape[-2:], mode="bilinear", align_corners=False
                )[0]
                prediction = {"albedo": image / shading, "shading": shading}
            elif name in RELIT:  # a predicted (or the true) shading, relit
                lights = RELIT[name][0]
                shading = (
                    target["shading"]
                    if shading_from == "true"
                    else intrinsic_model([image])[0]["shading"].cpu()
                )
                normals = (
                    target["normals"]
                    if normals_model is None
                    else normals_model([image])[0]["normals"].cpu()
                )
                shading = relight_shading(shading, normals, num_lights=lights)
                prediction = {"albedo": image / shading, "shading": shading}
            elif intrinsic_model is not None:
                prediction = {k: v.cpu() for k, v in intrinsic_model([image])[0].items()}
            elif name == "retinex":
                albedo, shading = retinex(image)
                prediction = {"albedo": albedo, "shading": shading.expand(3, -1, -1)}
            else:  # albedo = image, shading = 1
                prediction = {"albedo": image, "shading": torch.ones_like(image)}
            evaluator.update([target], [prediction])
    seconds = (time.perf_counter() - started) / len(dataset)
    return {
        **{k: round(v, 4) for k, v in evaluator.compute().items()},
        "ms_per_image": round(1000 * seconds, 1),
    }


def _trained(name: str, args: argparse.Namespace) -> dict:
    recipe = "intrinsic" if name == "intrinsic" else "normals"
    overrides = {
        "progress": "false",
        **({"model.with_depth": "true"} if name == "normals_joint" else {}),
    }
    out = args.out / name
    started = time.perf_counter()
    if args.resume and (out / "checkpoints").is_dir():  # the run keeps its own settings
        metrics = run_train(recipe, out=out, resume=True, overrides={"progress": "false"})
        minutes = None  # only this part's wall time would be known
    else:
        metrics = run_train(
            recipe,
            data=args.train_data,
            val_data=f"world:num_images={args.images},cache=true",
            out=out,
            max_steps=args.steps,
            overrides=overrides,
        )
        minutes = round((time.perf_counter() - started) / 60, 1)
    config = json.loads((out / "config.json").read_text())
    return {
        "recipe": recipe,
        "steps": config["train"]["max_steps"],
        "train_minutes": minutes,
        **{k: round(v, 4) for k, v in metrics.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rows_help = ", ".join(NORMAL_ROWS + INTRINSIC_ROWS)
    parser.add_argument("--rows", required=True, help=f"comma-separated: {rows_help}")
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_intrinsic"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--intrinsic-model",
        default="zoo:intrinsic_world",
        help="run folder or zoo entry of the rows intrinsic_model and intrinsic_model_relit",
    )
    parser.add_argument(
        "--train-data",
        default="world",
        help="training SPEC (default: the recipe's, 100000 images rendered as they are read; "
        "the render cache would need about 2.3 MB per image)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue trained rows whose run was stopped (SIGTERM) from their last checkpoint",
    )
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in NORMAL_ROWS + INTRINSIC_ROWS]
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {rows_help}")
    torch.set_num_threads(args.threads)
    dataset = build_dataset(f"world:num_images={args.images}", split="val")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in rows:
        trained = name in ("normals", "normals_joint", "intrinsic")
        try:
            result = _trained(name, args) if trained else _baseline(name, dataset, args)
        except TrainingInterrupted as stopped:
            raise SystemExit(f"row {name}: {stopped}; continue it with --resume") from None
        print(json.dumps({name: result}), flush=True)
        path = args.out / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[name] = result
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
