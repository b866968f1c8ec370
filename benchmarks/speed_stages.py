"""Where torchvision's ``fasterrcnn_resnet50_fpn`` spends its inference time, and what that
leaves for a faster model with equal outputs.

Random weights, eval mode, box score threshold 0, the 480x640 images of ``bench_speed.py``.

1. Stages: each stage of the model is called by hand, in order, and timed (median over
   ``--rounds``; the script checks that the hand-called stages give ``model(images)``'s
   boxes): resize and normalisation, the ResNet-50 trunk, the FPN, the RPN head (its convs on
   every level), anchor decoding and proposal selection, the box branch's RoIAlign, its two
   fully connected layers, the predictor, and the per-class NMS with the resize back.
2. Operators: ``torch.profiler`` self time of one ``model(images)`` call by operator, with the
   convolutions (whichever kernel runs them) and the fully connected layers' matrix products in
   two groups. Any other memory layout or kernel for these (channels-last, folded batch norm)
   changes their float rounding, so a model whose outputs must stay bit-equal can only speed up
   the rest: at most ``total / (convolutions + matrix products)`` (Amdahl).
3. Rounding: how far the converted model and its ``prepare_for_inference`` variants (batch
   norm folded, channels-last trunk, both) move the detections against torchvision's.

    python benchmarks/speed_stages.py --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile
from torchvision.models.detection.rpn import concat_box_prediction_layers

from structvision.convert import from_torchvision
from structvision.models.inference import prepare_for_inference

#: ``torch.profiler`` operator -> group: the convolutions (whichever kernel runs them) and the
#: fully connected layers' matrix products; every other operator is its own group.
OPERATOR_GROUPS = {
    **dict.fromkeys(
        ("convolution", "_convolution", "conv2d", "mkldnn_convolution", "_slow_conv2d_forward"),
        "convolution",
    ),
    **dict.fromkeys(("addmm", "mm", "linear"), "matrix product"),
}


def _stages(model, images: list[torch.Tensor]) -> tuple[dict[str, float], list[dict]]:
    seconds: dict[str, float] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        seconds[name] = time.perf_counter() - start
        return out

    original_sizes = [tuple(image.shape[-2:]) for image in images]
    image_list, _ = timed("transform (resize, normalise, batch)", model.transform, images)
    body = timed("trunk (ResNet-50)", model.backbone.body, image_list.tensors)
    features = timed("FPN", model.backbone.fpn, body)
    rpn = model.rpn
    levels = list(features.values())
    objectness, deltas = timed("RPN head (convs)", rpn.head, levels)

    def select():
        anchors = rpn.anchor_generator(image_list, levels)
        num_images = len(anchors)
        per_level = [o[0].numel() for o in objectness]
        flat_objectness, flat_deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(flat_deltas.detach(), anchors).view(num_images, -1, 4)
        boxes, _ = rpn.filter_proposals(
            proposals, flat_objectness, image_list.image_sizes, per_level
        )
        return boxes

    proposals = timed("RPN anchors + proposal selection", select)
    heads = model.roi_heads
    pooled = timed(
        "RoIAlign (box branch)",
        heads.box_roi_pool,
        features,
        proposals,
        image_list.image_sizes,
    )
    head_features = timed("box head (2 FC)", heads.box_head, pooled)
    class_logits, box_regression = timed("box predictor", heads.box_predictor, head_features)

    def finish():
        boxes, scores, labels = heads.postprocess_detections(
            class_logits, box_regression, proposals, image_list.image_sizes
        )
        detections = [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(boxes, scores, labels, strict=True)
        ]
        return model.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    detections = timed("per-class NMS + resize back", finish)
    return seconds, detections


def _operator_seconds(model, images: list[torch.Tensor]) -> dict[str, float]:
    """Self time of one profiled ``model(images)`` call by operator; convolutions and the
    matrix products of the fully connected layers are summed into two groups."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(images)
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::")
        group = OPERATOR_GROUPS.get(name, name)
        seconds[group] += event.self_cpu_time_total / 1e6
    return dict(seconds)


def _differences(model, images: list[torch.Tensor], reference: list[dict]) -> dict[str, dict]:
    """How far each inference-prepared variant of the converted model moves the detections."""
    converted = from_torchvision(model).eval()
    variants = {
        "converted": converted,
        "batch norm folded": prepare_for_inference(converted, channels_last=False),
        "channels-last trunk": prepare_for_inference(converted, fold_bn=False),
        "folded + channels-last": prepare_for_inference(converted),
    }
    result = {}
    for name, variant in variants.items():
        outputs = variant(images)
        same = all(
            len(a["boxes"]) == len(b["boxes"]) and torch.equal(a["labels"], b["labels"])
            for a, b in zip(outputs, reference, strict=True)
        )
        boxes = scores = None  # not comparable when the detections differ
        if same:
            boxes = max(
                float((a["boxes"] - b["boxes"]).abs().max())
                for a, b in zip(outputs, reference, strict=True)
            )
            scores = max(
                float((a["scores"] - b["scores"]).abs().max())
                for a, b in zip(outputs, reference, strict=True)
            )
        result[name] = {"same_labels": same, "max_box_px": boxes, "max_score": scores}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="images per call")
    args = parser.parse_args()
    for name in ("threads", "rounds", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0
    ).eval()
    images = [torch.rand(3, 480, 640) for _ in range(args.batch)]
    with torch.no_grad():
        reference = model(images)
        _stages(model, images)  # warm-up
        runs = [_stages(model, images) for _ in range(args.rounds)]
        whole = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            model(images)
            whole.append(time.perf_counter() - start)
        operators = _operator_seconds(model, images)
        differences = _differences(model, images, reference)
    for ours, theirs in zip(runs[-1][1], reference, strict=True):  # the hand-called stages
        if not torch.equal(ours["boxes"], theirs["boxes"]):  # are the model, not an approximation
            raise RuntimeError("stage-by-stage detections differ from model(images)")
    median = {name: statistics.median(r[0][name] for r in runs) for name in runs[0][0]}
    total = sum(median.values())
    whole_seconds = statistics.median(whole)
    print(f"{args.batch} images of 480x640, {args.threads} threads, median of {args.rounds}")
    print(f"model(images): {whole_seconds:.3f} s; sum of stages: {total:.3f} s\n")
    print(f"{'stage':40s} {'seconds':>8s} {'share':>7s}")
    for name, value in median.items():
        print(f"{name:40s} {value:8.3f} {value / total:7.1%}")
    trunk_fpn = median["trunk (ResNet-50)"] + median["FPN"]
    print(f"\ntrunk + FPN: {trunk_fpn / total:.1%} of the stages' time")
    profiled = sum(operators.values())
    print(f"\nself time by operator (one profiled model(images) call, {profiled:.3f} s)")
    for name, value in sorted(operators.items(), key=lambda item: -item[1])[:10]:
        print(f"  {name:38s} {value:8.3f} {value / profiled:7.1%}")
    fixed = operators.get("convolution", 0.0) + operators.get("matrix product", 0.0)
    print(
        f"convolutions + matrix products: {fixed / profiled:.1%} -> at most "
        f"{profiled / fixed:.2f}x from everything else while their results stay bit-equal"
    )
    print("\nconverted model and prepared variants against torchvision's detections")
    for name, values in differences.items():
        print(
            f"  {name:24s} same labels and counts: {values['same_labels']!s:5s} "
            f"max box difference {values['max_box_px']} px, "
            f"max score difference {values['max_score']}"
        )
    result = {
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "model_seconds": round(whole_seconds, 4),
        "stage_seconds": {name: round(value, 4) for name, value in median.items()},
        "operator_seconds": {name: round(value, 4) for name, value in operators.items()},
        "differences": differences,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
