"""Speed against torchvision: ``fasterrcnn_resnet50_fpn`` and its structvision conversion.

One process, random weights, the same 480x640 images; the models run alternately so that
machine noise hits all of them. Checks that the outputs are equal, then reports images/s of
each and the ratio (ours / torchvision), in eval mode for the converted model as it is and for
its inference-prepared copy (batch norm folded, channels-last trunk), and for a training step
at equal settings.

    python benchmarks/bench_speed.py                      # CPU, 2 threads
    python benchmarks/bench_speed.py --device cuda --rounds 20
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision

from structvision.convert import from_torchvision
from structvision.models.inference import prepare_for_inference


def _time(fn, *, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _max_difference(ours: list[dict], theirs: list[dict]) -> dict[str, float]:
    worst = {"boxes": 0.0, "scores": 0.0, "labels_equal": True, "counts_equal": True}
    for a, b in zip(ours, theirs, strict=True):
        if len(a["boxes"]) != len(b["boxes"]):
            worst["counts_equal"] = False
            continue
        if len(a["boxes"]):
            worst["boxes"] = max(worst["boxes"], float((a["boxes"] - b["boxes"]).abs().max()))
            worst["scores"] = max(worst["scores"], float((a["scores"] - b["scores"]).abs().max()))
        worst["labels_equal"] &= bool(torch.equal(a["labels"], b["labels"]))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model")
    parser.add_argument("--batch", type=int, default=2, help="images per call")
    parser.add_argument("--train-rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    tv_model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None
    )
    tv_model.eval().to(device)
    ours = from_torchvision(tv_model).eval()
    prepared = prepare_for_inference(ours)
    images = [torch.rand(3, 480, 640, device=device) for _ in range(args.batch)]
    models = {"torchvision": tv_model, "structvision": ours, "structvision_prepared": prepared}

    with torch.no_grad():
        reference = tv_model(images)
        check = {
            name: _max_difference(models[name](images), reference) for name in list(models)[1:]
        }
        times = {name: [] for name in models}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, model in models.items():
                times[name].append(_time(lambda model=model: model(images), device=device))
    eval_ips = {k: args.batch / (sum(v[1:]) / args.rounds) for k, v in times.items()}

    targets = [
        {
            "boxes": torch.tensor(
                [[50.0, 60.0, 200.0, 220.0], [300.0, 100.0, 420.0, 300.0]], device=device
            ),
            "labels": torch.tensor([1, 2], device=device),
        }
        for _ in images
    ]
    tv_model.train()
    ours.train()
    train_times = {"torchvision": [], "structvision": []}
    for _ in range(args.train_rounds + 1):
        for name, model in (("torchvision", tv_model), ("structvision", ours)):

            def step(model=model):
                losses = model(images, targets)
                sum(losses.values()).backward()

            train_times[name].append(_time(step, device=device))
    train_ips = {k: args.batch / (sum(v[1:]) / args.train_rounds) for k, v in train_times.items()}
    print(
        json.dumps(
            {
                "benchmark": "faster_rcnn_resnet50_fpn_speed",
                "device": str(device),
                "threads": args.threads,
                "image_size": [480, 640],
                "batch": args.batch,
                "outputs": check,
                "eval_images_per_s": {k: round(v, 3) for k, v in eval_ips.items()},
                "eval_ratio_ours_over_torchvision": round(
                    eval_ips["structvision"] / eval_ips["torchvision"], 3
                ),
                "train_images_per_s": {k: round(v, 3) for k, v in train_ips.items()},
                "train_ratio_ours_over_torchvision": round(
                    train_ips["structvision"] / train_ips["torchvision"], 3
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
