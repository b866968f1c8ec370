"""Proposal recall: Selective Search versus a trained RPN, on ``shapes`` validation images.

Recall at IoU 0.5 and 0.7 for the top 100, 300 and 1000 proposals of each source, and the
milliseconds per image each source takes (Selective Search: OpenCV on the CPU; RPN: the
backbone + RPN forward of the trained Faster R-CNN). Writes a recall-curve plot.

    python benchmarks/bench_proposals.py --run runs/bench_detection/faster_rcnn --num-images 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structvision.data.spec import build_dataset
from structvision.models.detection.proposals import (
    plot_recall,
    proposal_recall,
    recall_curve,
    selective_search,
)
from structvision.tasks import load_trained_model


def rpn_proposals(model, image: torch.Tensor, *, top_n: int) -> torch.Tensor:
    """The RPN's proposals for one image, in its own pixels, at most ``top_n``."""
    model.rpn.pre_nms_top_n["testing"] = max(top_n, model.rpn.pre_nms_top_n["testing"])
    model.rpn.post_nms_top_n["testing"] = top_n
    batch, _ = model.transform([image], None)
    features = model.backbone(batch.tensors)
    proposals, _ = model.rpn(batch, features)
    (height, width), (new_h, new_w) = image.shape[-2:], batch.image_sizes[0]
    scale = torch.tensor([width / new_w, height / new_h, width / new_w, height / new_h])
    return proposals[0] * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained faster_rcnn run")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--mode", default="fast", help="Selective Search mode: fast or quality")
    parser.add_argument("--out", type=Path, default=None, help="plot path (default RUN/recall.png)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = build_dataset(f"shapes:num_images={args.num_images}", split="val")
    _, model, _ = load_trained_model(args.run)
    model = model.cpu().eval()
    sources = {"selective_search": [], "rpn": []}
    seconds = {"selective_search": 0.0, "rpn": 0.0}
    gt_boxes = []
    with torch.no_grad():
        for index in range(len(dataset)):
            image, target = dataset[index]
            gt_boxes.append(target["boxes"])
            start = time.perf_counter()
            sources["selective_search"].append(
                selective_search(image, mode=args.mode, max_proposals=1000)
            )
            seconds["selective_search"] += time.perf_counter() - start
            start = time.perf_counter()
            sources["rpn"].append(rpn_proposals(model, image, top_n=1000))
            seconds["rpn"] += time.perf_counter() - start
    results = {
        name: {
            **{k: round(v, 4) for k, v in proposal_recall(boxes, gt_boxes).items()},
            "ms_per_image": round(1000 * seconds[name] / len(dataset), 2),
            "mean_proposals": round(sum(len(b) for b in boxes) / len(boxes), 1),
        }
        for name, boxes in sources.items()
    }
    plot = plot_recall(
        {name: recall_curve(boxes, gt_boxes) for name, boxes in sources.items()},
        args.out or args.run / "recall.png",
    )
    print(
        json.dumps(
            {
                "benchmark": "proposal_recall_shapes",
                "num_images": len(dataset),
                "selective_search_mode": args.mode,
                "plot": str(plot),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
