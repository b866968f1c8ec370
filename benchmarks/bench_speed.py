"""Speed against torchvision: ``fasterrcnn_resnet50_fpn`` (or ``maskrcnn_resnet50_fpn``,
``keypointrcnn_resnet50_fpn``) and its structvision conversion.

One process, random weights, the same 480x640 images; the models run alternately so that
machine noise hits all of them. Checks that the outputs are equal (boxes, scores, labels, and
the mask probabilities or keypoints of the instance models), then reports images/s of each and
the ratio (ours / torchvision), in eval mode for the converted model as it is and for its
inference-prepared copy (batch norm folded, channels-last trunk), and for a training step
(forward and backward) at equal settings. The box score threshold is set to 0 (random weights
give keypointrcnn's person class scores under the default 0.05), so every image keeps its 100
best detections and the mask and keypoint branches run on all of them.

    python benchmarks/bench_speed.py                      # CPU, 2 threads
    python benchmarks/bench_speed.py --model maskrcnn --rounds 2
    python benchmarks/bench_speed.py --model keypointrcnn --device cuda --rounds 20
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


#: ``--model`` -> torchvision builder
MODELS = {
    "fasterrcnn": torchvision.models.detection.fasterrcnn_resnet50_fpn,
    "maskrcnn": torchvision.models.detection.maskrcnn_resnet50_fpn,
    "keypointrcnn": torchvision.models.detection.keypointrcnn_resnet50_fpn,
}
BENCHMARK_NAMES = {
    "fasterrcnn": "faster_rcnn",
    "maskrcnn": "mask_rcnn",
    "keypointrcnn": "keypoint_rcnn",
}
#: Per-detection outputs compared beside boxes and scores: mask probabilities ``(D, 1, H, W)``,
#: keypoints ``(D, K, 3)`` and their heatmap scores ``(D, K)``.
INSTANCE_OUTPUTS = ("masks", "keypoints", "keypoints_scores")


def _max_difference(ours: list[dict], theirs: list[dict]) -> dict[str, float]:
    worst = {"boxes": 0.0, "scores": 0.0, "labels_equal": True, "counts_equal": True}
    worst.update({key: 0.0 for key in INSTANCE_OUTPUTS if key in theirs[0]})
    for a, b in zip(ours, theirs, strict=True):
        if len(a["boxes"]) != len(b["boxes"]):
            worst["counts_equal"] = False
            continue
        if len(a["boxes"]):
            for key in ("boxes", "scores", *INSTANCE_OUTPUTS):
                if key in worst:
                    worst[key] = max(worst[key], float((a[key] - b[key]).abs().max()))
        if "masks" in worst and len(a["boxes"]):
            # a box moved by a fraction of a pixel can take in or leave out a whole pixel column
            # of its pasted mask, so the max difference alone can look large: count the pixels
            # whose mask (probability > 0.5) changes
            changed = float(((a["masks"] > 0.5) != (b["masks"] > 0.5)).float().mean())
            worst["masks_changed_fraction"] = max(worst.get("masks_changed_fraction", 0.0), changed)
        worst["labels_equal"] &= bool(torch.equal(a["labels"], b["labels"]))
    return worst


def _training_targets(model: str, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Two objects per image; the masks (rectangles inside the boxes) or 17 keypoints (a grid
    inside the boxes, all visible) the model's head trains on."""
    device = images[0].device
    height, width = images[0].shape[-2:]
    boxes = torch.tensor([[50.0, 60.0, 200.0, 220.0], [300.0, 100.0, 420.0, 300.0]], device=device)
    target = {"boxes": boxes, "labels": torch.tensor([1, 2], device=device)}
    if model == "maskrcnn":
        masks = torch.zeros(2, height, width, dtype=torch.uint8, device=device)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
            mask[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10] = 1
        target["masks"] = masks
    if model == "keypointrcnn":
        target["labels"] = torch.tensor([1, 1], device=device)  # person is the only class
        fractions = torch.linspace(0.1, 0.9, 17, device=device)
        keypoints = torch.stack(
            [
                torch.stack([x1 + fractions * (x2 - x1), y1 + fractions.flip(0) * (y2 - y1)], dim=1)
                for x1, y1, x2, y2 in boxes
            ]
        )  # (2, 17, 2)
        target["keypoints"] = torch.cat([keypoints, torch.full_like(keypoints[..., :1], 2)], -1)
    return [target for _ in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="fasterrcnn")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model")
    parser.add_argument("--batch", type=int, default=2, help="images per call")
    parser.add_argument("--train-rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    tv_model = MODELS[args.model](weights=None, weights_backbone=None)
    # Random person scores of keypointrcnn stay under the default 0.05 threshold. At 0 every
    # model keeps its 100 best detections per image: for the others, whose random scores pass
    # 0.05 on more than 100 boxes, the very detections they keep at the default threshold.
    tv_model.roi_heads.score_thresh = 0.0
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

    detections_per_image = [len(r["boxes"]) for r in reference]
    targets = _training_targets(args.model, images)
    tv_model.train()
    ours.train()
    train_times = {"torchvision": [], "structvision": []}
    for round_index in range(args.train_rounds + 1):
        for name, model in (("torchvision", tv_model), ("structvision", ours)):
            torch.manual_seed(round_index)  # the same training size (keypointrcnn draws one)

            def step(model=model):
                losses = model(images, targets)
                sum(losses.values()).backward()

            train_times[name].append(_time(step, device=device))
    train_ips = {k: args.batch / (sum(v[1:]) / args.train_rounds) for k, v in train_times.items()}
    print(
        json.dumps(
            {
                "benchmark": f"{BENCHMARK_NAMES[args.model]}_resnet50_fpn_speed",
                "device": str(device),
                "threads": args.threads,
                "image_size": [480, 640],
                "batch": args.batch,
                "detections_per_image": detections_per_image,
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
