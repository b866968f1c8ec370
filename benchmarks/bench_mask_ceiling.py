"""How much mask AP does Mask R-CNN's mask representation allow on ``shapes``? Oracles.

Each row scores an oracle that detects every object with its true box (score 1) and gives it
a mask of one kind, on held-out images, so the row's segm/AP is a ceiling for any model whose
masks are of that kind:

- ``exact``: the true masks (a check of the evaluation: AP 1).
- ``targets_torchvision_paste``: each true mask as Mask R-CNN's training target at its box
  (``mask_targets``: RoIAlign to ``--cells`` x ``--cells``), pasted back as torchvision does
  (``paste_masks_in_image``). A model that predicted its targets perfectly would score this
  with torchvision's paste.
- ``targets_pasted_where_sampled``: the same targets pasted where they were sampled
  (``paste_masks_where_sampled``, the small models' ``mask_paste`` default).

Also prints the objects' sizes (square root of the box area, 10th / 50th / 90th percentile).

    python benchmarks/bench_mask_ceiling.py                      # 500 images, 28 cells
    python benchmarks/bench_mask_ceiling.py --data shapes:image_size=256
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import torch

from structvision.data.spec import build_dataset
from structvision.models.detection.mask_rcnn import mask_targets
from structvision.structures import paste_masks_in_image, paste_masks_where_sampled
from structvision.tasks.instances import mask_evaluator

KEYS = ("segm/AP", "segm/AP50", "segm/AP75", "segm/APs", "segm/APm")


def _oracle(dataset, samples, place) -> dict[str, float]:
    evaluator = mask_evaluator(dataset)
    predictions = []
    for image, target in samples:
        boxes = target["boxes"].float()
        masks = place(target["masks"], boxes, tuple(image.shape[-2:]))
        predictions.append(
            {
                "boxes": boxes,
                "labels": target["labels"],
                "scores": torch.ones(len(boxes)),
                "masks": masks[:, None],
            }
        )
    evaluator.update([target for _, target in samples], predictions)
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluator.compute()
    return {key: round(metrics[key], 4) for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--cells", type=int, default=28, help="the mask head's output side")
    args = parser.parse_args()
    dataset = build_dataset(f"{args.data}:num_images={args.num_images}", split="val")
    samples = [dataset[index] for index in range(len(dataset))]
    boxes = torch.cat([target["boxes"] for _, target in samples]).float()
    sides = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()  # sqrt(area)
    deciles = sides.quantile(torch.tensor([0.1, 0.5, 0.9])).tolist()
    print(
        json.dumps({"objects": len(sides), "side_px_p10_p50_p90": [round(v, 1) for v in deciles]})
    )

    def targets(masks, boxes):
        return mask_targets(masks, boxes, torch.arange(len(boxes)), args.cells)

    rows = {
        "exact": lambda masks, boxes, size: masks.float(),
        "targets_torchvision_paste": lambda masks, boxes, size: paste_masks_in_image(
            targets(masks, boxes), boxes, size
        ),
        "targets_pasted_where_sampled": lambda masks, boxes, size: paste_masks_where_sampled(
            targets(masks, boxes), boxes, size
        ),
    }
    for name, place in rows.items():
        print(json.dumps({name: _oracle(dataset, samples, place)}), flush=True)


if __name__ == "__main__":
    main()
