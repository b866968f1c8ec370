"""All five segmentation rows in one go, with one equal step budget sized to a time budget.

FCN-8s, FCN-32s, FCN-16s on full labels, then FCN-8s on scribbles (partial cross-entropy) and
on scribbles + the dense-CRF loss (Tang et al. 2018), one after another. The step budget is
chosen from a timing of a plain and of a CRF-loss step so that the five trainings fit in
TRAIN_BUDGET_S seconds (at least MIN_STEPS, at most 12000). Each run is evaluated on 500
validation images with full labels; OUT/seg_results.json and OUT/run_<row>.tar (the final
weights and metrics) are written as rows finish. This is how the 1000-step rows of
BENCHMARKS.md were run on a borrowed GPU:

    OUT=out DEV=cuda TRAIN_BUDGET_S=190 WORKERS=4 python benchmarks/bench_segmentation_rows.py

CRF post-processing of the trained FCNs is scored by `bench_segmentation.py --skip-training`.
"""

import json
import os
import tarfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from structvision.data.spec import parse_value
from structvision.tasks import RECIPES, run_train

OUT = Path(os.environ["OUT"])
BUDGET = float(os.environ.get("TRAIN_BUDGET_S", "200"))
WORKERS = int(os.environ.get("WORKERS", "4"))
DEV = torch.device(os.environ.get("DEV", "cuda"))
MIN_STEPS = int(os.environ.get("MIN_STEPS", "1000"))
VAL = os.environ.get("VAL", "shapes:num_images=500")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


TRAIN = "shapes:num_images=4000"
CRF = {
    "model.crf_loss_weight": "0.01",
    "model.crf_sxy": "50",
    "model.crf_srgb": "15",
    "model.crf_scale": "0.5",
}
#: The settings the FCN rows start from: the recipes' defaults when these tables were measured
#: (SGD at lr 0.01, batch norm, from scratch), so that the commands in BENCHMARKS.md keep giving
#: them now that the recipes default to AdamW and the pretrained group-norm trunk.
PINNED = {"optimizer": "sgd", "lr": "0.01", "model.norm": "batch", "model.pretrained": "none"}

ROWS = {
    "fcn8s": ("fcn8s", TRAIN, {}),
    "fcn32s": ("fcn32s", TRAIN, {}),
    "fcn16s": ("fcn16s", TRAIN, {}),
    "partial": ("fcn8s", TRAIN + ",scribbles=true", {}),
    "crf": ("fcn8s", TRAIN + ",scribbles=true", CRF),
}


def step_seconds(recipe, data, overrides, n=50):
    model_overrides = {
        k[6:]: parse_value(v) for k, v in overrides.items() if k.startswith("model.")
    }
    task = RECIPES[recipe].setup(data=data, val_data=None, model_overrides=model_overrides)
    model = task.model.to(DEV).train()
    loader = DataLoader(
        task.train_dataset,
        batch_size=8,
        shuffle=True,
        collate_fn=task.collate_fn,
        num_workers=WORKERS,
    )
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batches = iter(loader)
    for i in range(n):
        images, targets = next(batches)
        images = [im.to(DEV) for im in images]
        targets = [{k: v.to(DEV) for k, v in t.items()} for t in targets]
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i == 9:
            sync()
            start = time.perf_counter()
    sync()
    return (time.perf_counter() - start) / (n - 10)


def main() -> None:
    t0 = time.perf_counter()
    fcn_s = step_seconds("fcn8s", TRAIN, PINNED)
    crf_s = step_seconds("fcn8s", TRAIN + ",scribbles=true", {**PINNED, **CRF})
    per_round = 4 * fcn_s + crf_s
    steps = int(BUDGET / (1.35 * per_round) // 500 * 500)
    steps = max(MIN_STEPS, min(steps, 12000))
    info = {
        "fcn_step_s": round(fcn_s, 4),
        "crf_step_s": round(crf_s, 4),
        "steps": steps,
        "timing_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(info), flush=True)
    results = {"info": info}
    for name, (recipe, data, overrides) in ROWS.items():
        started = time.perf_counter()
        settings = {
            "batch_size": "8",
            "eval_every": "0",
            "checkpoint_every": "0",
            "progress": "false",
            "num_workers": str(WORKERS),
            "seed": "0",
            **PINNED,
            **overrides,
        }
        metrics = run_train(
            recipe,
            data=data,
            val_data=VAL,
            out=Path("runs") / name,
            max_steps=steps,
            overrides=settings,
        )
        results[name] = {
            "recipe": recipe,
            "data": data,
            "settings": settings,
            "seconds": round(time.perf_counter() - started, 1),
            **{k: round(v, 4) for k, v in metrics.items()},
        }
        print(json.dumps({name: results[name]}), flush=True)
        (OUT / "seg_results.json").write_text(json.dumps(results, indent=1))
        with tarfile.open(OUT / f"run_{name}.tar", "w") as tar:
            run = Path("runs") / name
            latest = (run / "checkpoints" / "LATEST").read_text().strip()
            for path in [
                run / "config.json",
                run / "metrics.json",
                run / "metrics.jsonl",
                run / "checkpoints" / "LATEST",
                run / "checkpoints" / latest / "model.safetensors",
                run / "checkpoints" / latest / "config.json",
            ]:
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to("runs")))
    print("total", round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    main()
